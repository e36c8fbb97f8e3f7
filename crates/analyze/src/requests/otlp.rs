//! Spans from an OTLP JSON file (the OpenTelemetry protocol's JSON encoding,
//! as written by the collector's file exporter), to join samples against
//! spans that an application's tracer recorded.
//!
//! A span joins the samples of the thread named by its `thread.id` attribute
//! in the process named by `process.pid` (a span or resource attribute).
//! Times are wall-clock; the capture's metadata maps them onto its clock.

use serde_json::Value;

use super::spans::{Role, Span};
use crate::sockets::http::{TraceContext, TraceSource};

/// Why a span file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("no `resourceSpans` array at the top level: not an OTLP JSON trace file")]
    NotOtlp,
}

/// An attribute's value as an integer (OTLP JSON writes int64 as a string).
fn int_value(v: &Value) -> Option<i64> {
    let v = v.get("intValue").or_else(|| v.get("stringValue"))?;
    v.as_i64().or_else(|| v.as_str()?.parse().ok())
}

fn attr<'a>(attrs: Option<&'a Value>, key: &str) -> Option<&'a Value> {
    attrs?.as_array()?.iter().find(|a| a.get("key").and_then(Value::as_str) == Some(key))?.get("value")
}

fn int_attr(attrs: Option<&Value>, keys: &[&str]) -> Option<i64> {
    keys.iter().find_map(|k| attr(attrs, k).and_then(int_value))
}

fn nanos(v: Option<&Value>) -> Option<u64> {
    let v = v?;
    v.as_u64().or_else(|| v.as_str()?.parse().ok())
}

/// Spans of `json` that name a thread, with times moved onto the capture's
/// clock by `wall_to_mono` (wall ns minus this = monotonic ns). Spans without
/// a thread id or times are skipped and counted in the second result. Ids
/// count up from `first_id`.
pub fn parse_spans(json: &str, wall_to_mono: i128, first_id: u64) -> Result<(Vec<Span>, usize), OtlpError> {
    let doc: Value = serde_json::from_str(json)?;
    let resources = doc.get("resourceSpans").and_then(Value::as_array).ok_or(OtlpError::NotOtlp)?;
    let mut out = Vec::new();
    let mut skipped = 0;
    let to_mono = |wall: u64| u64::try_from(i128::from(wall) - wall_to_mono).ok();
    for rs in resources {
        let rattrs = rs.get("resource").and_then(|r| r.get("attributes"));
        let scopes = rs.get("scopeSpans").or_else(|| rs.get("instrumentationLibrarySpans"));
        let spans = scopes.and_then(Value::as_array).into_iter().flatten().filter_map(|s| s.get("spans"));
        for span in spans.filter_map(Value::as_array).flatten() {
            let attrs = span.get("attributes");
            let pid = int_attr(attrs, &["process.pid"]).or_else(|| int_attr(rattrs, &["process.pid"]));
            let tid = int_attr(attrs, &["thread.id"]);
            let start = nanos(span.get("startTimeUnixNano")).and_then(to_mono);
            let end = nanos(span.get("endTimeUnixNano")).and_then(to_mono);
            let (Some(pid), Some(tid), Some(start), Some(end)) = (pid, tid, start, end) else {
                skipped += 1;
                continue;
            };
            let (Ok(pid), Ok(tid)) = (u32::try_from(pid), u32::try_from(tid)) else {
                skipped += 1;
                continue;
            };
            let name = span.get("name").and_then(Value::as_str).unwrap_or("");
            let (method, target) = match name.split_once(' ') {
                Some((m, t)) if m.chars().all(|c| c.is_ascii_uppercase()) => (m.to_owned(), t.to_owned()),
                _ => (String::new(), name.to_owned()),
            };
            let text = |k: &str| span.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
            let status = int_attr(attrs, &["http.response.status_code", "http.status_code"])
                .and_then(|s| u16::try_from(s).ok());
            out.push(Span {
                id: first_id + out.len() as u64,
                role: Role::External,
                pid,
                tids: vec![tid],
                fd: -1,
                start_ns: start,
                end_ns: end.max(start),
                method,
                target,
                status,
                trace: text("traceId").map(|t| TraceContext {
                    trace_id: t.to_ascii_lowercase(),
                    parent_span_id: text("spanId").map(str::to_ascii_lowercase),
                    source: TraceSource::W3c,
                }),
                event_ids: Vec::new(),
            });
        }
    }
    Ok((out, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_collector_json_and_moves_times_onto_the_capture_clock() {
        let json = r#"{"resourceSpans":[{"resource":{"attributes":[
            {"key":"process.pid","value":{"intValue":"4242"}}]},
          "scopeSpans":[{"spans":[
            {"traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"EEE19B7EC3C1B174",
             "name":"GET /checkout","startTimeUnixNano":"1700000000100000000",
             "endTimeUnixNano":"1700000000250000000",
             "attributes":[{"key":"thread.id","value":{"intValue":4243}},
                           {"key":"http.response.status_code","value":{"intValue":"200"}}]},
            {"traceId":"aa","spanId":"bb","name":"no thread",
             "startTimeUnixNano":"1","endTimeUnixNano":"2"}]}]}]}"#;
        let (spans, skipped) = parse_spans(json, 1_699_999_000_000_000_000, 100).unwrap();
        assert_eq!(skipped, 1);
        let s = &spans[0];
        assert_eq!((s.id, s.pid, s.tids.clone(), s.status), (100, 4242, vec![4243], Some(200)));
        assert_eq!((s.start_ns, s.end_ns), (1_000_100_000_000, 1_000_250_000_000));
        assert_eq!((s.method.as_str(), s.target.as_str()), ("GET", "/checkout"));
        assert_eq!(s.trace.as_ref().unwrap().trace_id, "5b8efff798038103d269b633813fc60c");
    }

    #[test]
    fn other_json_is_a_clear_error() {
        assert!(matches!(parse_spans("{\"data\": []}", 0, 1), Err(OtlpError::NotOtlp)));
        assert!(matches!(parse_spans("not json", 0, 1), Err(OtlpError::Json(_))));
    }
}
