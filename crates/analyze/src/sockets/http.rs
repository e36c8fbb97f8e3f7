//! HTTP/1.x message heads and trace context, from the first bytes of a
//! socket read or write.

/// The start of an HTTP/1.x message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpMessage {
    Request { method: String, target: String, trace: Option<TraceContext> },
    Response { status: u16 },
}

/// A trace identity carried by a request's headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace id as sent (lowercase hex for the standard formats; the raw
    /// value for X-Request-Id).
    pub trace_id: String,
    /// The caller's span id, where the format has one.
    pub parent_span_id: Option<String>,
    /// The header it came from.
    pub source: TraceSource,
}

/// Which header a [`TraceContext`] came from, in order of preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TraceSource {
    /// W3C `traceparent`.
    W3c,
    /// B3, single (`b3`) or multi-header (`X-B3-TraceId`).
    B3,
    /// Jaeger `uber-trace-id`.
    Jaeger,
    /// `X-Request-Id`.
    RequestId,
}

impl TraceSource {
    pub fn name(self) -> &'static str {
        match self {
            TraceSource::W3c => "traceparent",
            TraceSource::B3 => "b3",
            TraceSource::Jaeger => "uber-trace-id",
            TraceSource::RequestId => "x-request-id",
        }
    }
}

const METHODS: [&str; 9] = ["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS", "CONNECT", "TRACE"];

/// Parses the head of an HTTP/1.x request or response at the start of
/// `payload`; `None` if it is not one. A head cut short by the payload limit
/// still yields the request line and the complete header lines before the cut.
pub fn parse(payload: &[u8]) -> Option<HttpMessage> {
    let text = std::str::from_utf8(payload).unwrap_or_else(|e| {
        // The cut may fall inside a multi-byte character; keep what is valid.
        std::str::from_utf8(&payload[..e.valid_up_to()]).unwrap_or("")
    });
    let mut lines = text.split("\r\n");
    let first = lines.next()?;
    if let Some(rest) = first.strip_prefix("HTTP/1.") {
        let status = rest.get(2..5)?.parse().ok()?;
        return Some(HttpMessage::Response { status });
    }
    let mut parts = first.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if !METHODS.contains(&method) || !version.starts_with("HTTP/1.") || target.is_empty() {
        return None;
    }
    // Header lines; the last one may be cut (no CRLF after it) and is then unreliable.
    let complete = text.rfind("\r\n").map_or("", |end| &text[..end]);
    let headers = complete.split("\r\n").skip(1).take_while(|l| !l.is_empty());
    let trace = headers.filter_map(trace_header).min_by_key(|t| t.source);
    Some(HttpMessage::Request { method: method.to_owned(), target: target.to_owned(), trace })
}

fn is_hex(s: &str, lens: &[usize]) -> bool {
    lens.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit()) && s.bytes().any(|b| b != b'0')
}

/// The trace context in one header line, if it carries one.
fn trace_header(line: &str) -> Option<TraceContext> {
    let (name, value) = line.split_once(':')?;
    let value = value.trim();
    let ctx = |trace: &str, parent: Option<&str>, source| TraceContext {
        trace_id: trace.to_ascii_lowercase(),
        parent_span_id: parent.map(str::to_ascii_lowercase),
        source,
    };
    match name.trim().to_ascii_lowercase().as_str() {
        "traceparent" => {
            // version-traceid-parentid-flags
            let f: Vec<&str> = value.split('-').collect();
            (f.len() >= 4 && is_hex(f[1], &[32]) && is_hex(f[2], &[16]))
                .then(|| ctx(f[1], Some(f[2]), TraceSource::W3c))
        }
        "b3" => {
            // traceid-spanid[-sampled[-parentspanid]]
            let f: Vec<&str> = value.split('-').collect();
            (f.len() >= 2 && is_hex(f[0], &[16, 32])).then(|| ctx(f[0], Some(f[1]), TraceSource::B3))
        }
        "x-b3-traceid" => is_hex(value, &[16, 32]).then(|| ctx(value, None, TraceSource::B3)),
        "uber-trace-id" => {
            // traceid:spanid:parentid:flags, the colons maybe URL-encoded
            let v = value.replace("%3A", ":").replace("%3a", ":");
            let f: Vec<&str> = v.split(':').collect();
            (f.len() == 4 && f[0].len() <= 32 && is_hex(f[0], &(1..=32).collect::<Vec<_>>()))
                .then(|| ctx(f[0], Some(f[1]), TraceSource::Jaeger))
        }
        "x-request-id" if !value.is_empty() => Some(TraceContext {
            trace_id: value.to_owned(),
            parent_span_id: None,
            source: TraceSource::RequestId,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace_of(head: &str) -> Option<TraceContext> {
        match parse(head.as_bytes()) {
            Some(HttpMessage::Request { trace, .. }) => trace,
            other => panic!("not a request: {other:?}"),
        }
    }

    #[test]
    fn request_line_and_response_status() {
        let m = parse(b"POST /api/v1/items?x=1 HTTP/1.1\r\nHost: a\r\n\r\nbody").unwrap();
        assert_eq!(
            m,
            HttpMessage::Request { method: "POST".into(), target: "/api/v1/items?x=1".into(), trace: None }
        );
        assert_eq!(parse(b"HTTP/1.0 404 Not Found\r\n\r\n"), Some(HttpMessage::Response { status: 404 }));
        assert_eq!(parse(b"HTTP/1.1 20"), None);
        assert_eq!(parse(b"hello world"), None);
        assert_eq!(parse(b"GET / HTTP/2\r\n"), None);
        assert_eq!(parse(b""), None);
        assert_eq!(parse(&[0xff, 0xfe, 0x00]), None);
    }

    #[test]
    fn every_trace_header_format() {
        let w3c = trace_of(
            "GET / HTTP/1.1\r\ntraceparent: 00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01\r\n\r\n",
        )
        .unwrap();
        assert_eq!(w3c.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(w3c.parent_span_id.as_deref(), Some("00f067aa0ba902b7"));
        assert_eq!(w3c.source, TraceSource::W3c);
        let b3 = trace_of(
            "GET / HTTP/1.1\r\nX-B3-TraceId: 463ac35c9f6413ad\r\nX-B3-SpanId: a2fb4a1d1a96d312\r\n\r\n",
        )
        .unwrap();
        assert_eq!((b3.trace_id.as_str(), b3.source), ("463ac35c9f6413ad", TraceSource::B3));
        let single =
            trace_of("GET / HTTP/1.1\r\nb3: 80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1\r\n\r\n")
                .unwrap();
        assert_eq!(single.trace_id, "80f198ee56343ba864fe8b2a57d3eff7");
        let jaeger = trace_of("GET / HTTP/1.1\r\nuber-trace-id: 5a1b%3A6c2d%3A0%3A1\r\n\r\n").unwrap();
        assert_eq!((jaeger.trace_id.as_str(), jaeger.source), ("5a1b", TraceSource::Jaeger));
        let rid = trace_of("GET / HTTP/1.1\r\nX-Request-Id: req-77\r\n\r\n").unwrap();
        assert_eq!((rid.trace_id.as_str(), rid.source), ("req-77", TraceSource::RequestId));
    }

    #[test]
    fn the_preferred_header_wins_and_bad_ids_are_ignored() {
        let t = trace_of(
            "GET / HTTP/1.1\r\nX-Request-Id: r1\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n",
        )
        .unwrap();
        assert_eq!(t.source, TraceSource::W3c);
        // An all-zero or malformed trace id is not a trace id.
        assert_eq!(
            trace_of("GET / HTTP/1.1\r\ntraceparent: 00-00000000000000000000000000000000-b7ad6b7169203331-01\r\n\r\n"),
            None
        );
        assert_eq!(trace_of("GET / HTTP/1.1\r\ntraceparent: garbage\r\n\r\n"), None);
    }

    #[test]
    fn a_head_cut_by_the_payload_limit_keeps_its_complete_lines() {
        let full = "GET /x HTTP/1.1\r\nX-Request-Id: abc\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b71";
        let t = trace_of(full).unwrap();
        assert_eq!(t.source, TraceSource::RequestId, "the cut traceparent line must not be used");
        for cut in 0..full.len() {
            let _ = parse(&full.as_bytes()[..cut]);
        }
    }
}
