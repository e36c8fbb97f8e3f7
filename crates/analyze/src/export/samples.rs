//! The `samples` table (`profanalyze samples`): one line per selected
//! sample, with its value in its unit, its request and trace id, and its
//! innermost function.

use std::io::Write;

use profcap_format::SampleKind;

use crate::capture::Material;
use crate::profile::ListedSample;
use crate::requests::{Span, SpanIndex};
use crate::units::{format_bytes, format_ns, sample_period_ns};

/// The request whose span holds the sample, if any.
fn request_of<'s>(s: &profcap_format::Sample, spans: &'s [Span], index: &SpanIndex) -> Option<&'s Span> {
    index.overlapping(s.pid, s.tid, s.time_ns, s.time_ns).first().and_then(|&(i, _)| spans.get(i))
}

/// The samples as JSON lines, one object per sample: `id`, `time_ns`
/// (CLOCK_MONOTONIC), `offset_s` (from the first sample), `pid`, `tid`,
/// `cpu`, `kind`, `value` (raw: samples, ns or bytes), `request` and
/// `trace_id` (or null) and `function` (the innermost, or null).
pub fn write_samples_json(
    m: &Material,
    rows: &[ListedSample],
    spans: &[Span],
    index: &SpanIndex,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    for r in rows {
        let s = &r.sample;
        let span = request_of(s, spans, index);
        let line = serde_json::json!({
            "id": s.id,
            "time_ns": s.time_ns,
            "offset_s": s.time_ns.saturating_sub(m.first_ns) as f64 / 1e9,
            "pid": s.pid,
            "tid": s.tid,
            "cpu": s.cpu,
            "kind": s.kind.name(),
            "value": r.value,
            "request": span.map(|sp| sp.id),
            "trace_id": span.and_then(|sp| sp.trace.as_ref()).map(|t| t.trace_id.as_str()),
            "function": r.leaf.as_ref().map(|f| &*f.name),
        });
        serde_json::to_writer(&mut *out, &line)?;
        writeln!(out)?;
    }
    Ok(())
}

/// The `samples` table: one line per sample.
pub fn write_samples(
    m: &Material,
    rows: &[ListedSample],
    spans: &[Span],
    index: &SpanIndex,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    writeln!(
        out,
        "{:>8}  {:>10}  {:>7} {:>7}  {:<6} {:>10}  {:>7}  {:<16}  FUNCTION",
        "ID", "TIME (s)", "PID", "TID", "KIND", "VALUE", "REQUEST", "TRACE ID"
    )?;
    let period_ns = sample_period_ns(m.freq()).unwrap_or(0.0);
    for r in rows {
        let s = &r.sample;
        let value = match s.kind {
            SampleKind::Cpu if period_ns > 0.0 => format_ns(r.value as f64 * period_ns),
            SampleKind::OffCpu => format_ns(r.value as f64),
            SampleKind::Alloc | SampleKind::Inuse => format_bytes(r.value),
            _ => r.value.to_string(),
        };
        let span = request_of(s, spans, index);
        let trace = span.and_then(|sp| sp.trace.as_ref()).map_or("-", |t| t.trace_id.as_str());
        writeln!(
            out,
            "{:>8}  {:>10.6}  {:>7} {:>7}  {:<6} {:>10}  {:>7}  {:<16}  {}",
            s.id,
            s.time_ns.saturating_sub(m.first_ns) as f64 / 1e9,
            s.pid,
            s.tid,
            s.kind.name(),
            value,
            span.map_or("-".to_owned(), |sp| sp.id.to_string()),
            trace.get(..16).unwrap_or(trace),
            r.leaf.as_ref().map_or("-", |f| &f.name),
        )?;
    }
    Ok(())
}
