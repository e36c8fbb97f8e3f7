//! Request spans from socket events: which thread served (or made) which
//! HTTP request, from when to when.

use std::collections::{BTreeMap, HashMap, VecDeque};

use profcap_format::{Direction, RequestOp};

use crate::sockets::http::{HttpMessage, TraceContext};
use crate::sockets::IoEvent;

/// Which side of a request a span is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The thread read the request and wrote the response.
    Server,
    /// The thread wrote the request and read the response.
    Client,
    /// From a span file (OTLP JSON).
    External,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Client => "client",
            Role::External => "external",
        }
    }
}

/// One request, and the threads and time it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    /// The id of the socket event that began it (the request's first read or
    /// write), or a number above every event id for external spans.
    pub id: u64,
    pub role: Role,
    pub pid: u32,
    /// Threads whose samples belong to it while it lasts (sorted).
    pub tids: Vec<u32>,
    pub fd: i32,
    /// When the request was read (server) or began to be written (client).
    pub start_ns: u64,
    /// When the last byte of the response was written (server) or read (client).
    pub end_ns: u64,
    pub method: String,
    pub target: String,
    /// Status code of the response; `None` if none was seen.
    pub status: Option<u16>,
    pub trace: Option<TraceContext>,
    /// Socket event ids of the request and its response.
    pub event_ids: Vec<u64>,
}

impl Span {
    pub fn latency_ns(&self) -> u64 {
        self.end_ns.saturating_sub(self.start_ns)
    }

    /// Whether it covers thread `tid` of `pid` at `t`.
    pub fn covers(&self, pid: u32, tid: u32, t: u64) -> bool {
        pid == self.pid && self.start_ns <= t && t <= self.end_ns && self.tids.binary_search(&tid).is_ok()
    }
}

/// Conversations in progress on one socket.
#[derive(Default)]
struct Conn {
    /// Requests not answered yet, oldest first.
    open: VecDeque<Span>,
    /// The answered request whose response may still be being transferred.
    answering: Option<Span>,
}

impl Conn {
    fn finish_answering(&mut self, out: &mut Vec<Span>) {
        out.extend(self.answering.take());
    }

    fn close(&mut self, out: &mut Vec<Span>) {
        self.finish_answering(out);
        out.extend(self.open.drain(..));
    }
}

fn add_tid(span: &mut Span, tid: u32) {
    if let Err(i) = span.tids.binary_search(&tid) {
        span.tids.insert(i, tid);
    }
}

/// Builds request spans from socket events (any order; sorted here). A
/// server span runs from the read of an HTTP request to the last write of its
/// response; a client span from the start of the request's write to the last
/// read of the response. Pipelined requests are answered in order. A request
/// with no response ends at the last event seen on its socket.
pub fn build_spans(events: &[IoEvent]) -> Vec<Span> {
    let mut order: Vec<&IoEvent> = events.iter().collect();
    order.sort_by_key(|e| (e.time_ns, e.id));
    let mut conns: HashMap<(u32, i32), Conn> = HashMap::new();
    let mut out = Vec::new();
    for e in order {
        let conn = conns.entry((e.pid, e.fd)).or_default();
        match e.op {
            RequestOp::Accept | RequestOp::Connect | RequestOp::Close => {
                // A new or ended connection on this fd number.
                conn.close(&mut out);
                continue;
            }
            RequestOp::Transfer => {}
        }
        let reading = e.direction == Direction::Read;
        match &e.http {
            Some(HttpMessage::Request { method, target, trace }) => {
                conn.finish_answering(&mut out);
                conn.open.push_back(Span {
                    id: e.id,
                    role: if reading { Role::Server } else { Role::Client },
                    pid: e.pid,
                    tids: vec![e.tid],
                    fd: e.fd,
                    start_ns: if reading || e.start_ns == 0 { e.time_ns } else { e.start_ns },
                    end_ns: e.time_ns,
                    method: method.clone(),
                    target: target.clone(),
                    status: None,
                    trace: trace.clone(),
                    event_ids: vec![e.id],
                });
            }
            Some(HttpMessage::Response { status }) if (100..200).contains(status) => {
                // An interim response (100 Continue): the final one follows.
                if let Some(span) = conn.open.iter_mut().find(|s| (s.role == Role::Server) != reading) {
                    span.event_ids.push(e.id);
                }
            }
            Some(HttpMessage::Response { status }) => {
                // A response goes the other way from its request.
                let answers = |s: &Span| (s.role == Role::Server) != reading;
                if let Some(i) = conn.open.iter().position(answers) {
                    conn.finish_answering(&mut out);
                    if let Some(mut span) = conn.open.remove(i) {
                        span.status = Some(*status);
                        span.end_ns = e.time_ns;
                        span.event_ids.push(e.id);
                        add_tid(&mut span, e.tid);
                        conn.answering = Some(span);
                    }
                }
            }
            None => {
                // More of a body: of the response being sent, or of a request.
                let target = match &mut conn.answering {
                    Some(s) if (s.role == Role::Server) != reading => Some(s),
                    _ => conn.open.back_mut().filter(|s| (s.role == Role::Server) == reading),
                };
                if let Some(span) = target {
                    span.end_ns = span.end_ns.max(e.time_ns);
                    span.event_ids.push(e.id);
                    add_tid(span, e.tid);
                }
            }
        }
    }
    let mut keys: Vec<_> = conns.keys().copied().collect();
    keys.sort_unstable();
    for k in keys {
        if let Some(c) = conns.get_mut(&k) {
            c.close(&mut out);
        }
    }
    out.sort_by_key(|s| (s.start_ns, s.id));
    out
}

/// Spans by (pid, tid), for finding the spans that cover a sample.
#[derive(Debug, Default)]
pub struct SpanIndex {
    by_thread: HashMap<(u32, u32), BTreeMap<(u64, usize), u64>>,
}

impl SpanIndex {
    /// Indexes `spans`; results name spans by their position in it.
    pub fn new(spans: &[Span]) -> SpanIndex {
        let mut by_thread: HashMap<(u32, u32), BTreeMap<(u64, usize), u64>> = HashMap::new();
        for (i, s) in spans.iter().enumerate() {
            for &tid in &s.tids {
                by_thread.entry((s.pid, tid)).or_default().insert((s.start_ns, i), s.end_ns);
            }
        }
        SpanIndex { by_thread }
    }

    /// Positions of the spans covering thread `tid` of `pid` at any time in
    /// `[from, to]`, with the overlap in ns.
    pub fn overlapping(&self, pid: u32, tid: u32, from: u64, to: u64) -> Vec<(usize, u64)> {
        let Some(spans) = self.by_thread.get(&(pid, tid)) else { return Vec::new() };
        spans
            .range(..=(to, usize::MAX))
            .rev()
            .filter(|(&(start, _), &end)| end >= from && start <= to)
            .map(|(&(start, i), &end)| (i, to.min(end).saturating_sub(from.max(start))))
            .collect()
    }

    /// Whether any span covers thread `tid` of `pid` at `t`.
    pub fn covers(&self, pid: u32, tid: u32, t: u64) -> bool {
        !self.overlapping(pid, tid, t, t).is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sockets::IoAssembler;
    use profcap_format::RequestEvent;

    fn record(id: u64, t: u64, dir: Direction, payload: &str) -> RequestEvent {
        RequestEvent {
            id,
            time_ns: t,
            start_ns: t,
            pid: 10,
            tid: 7,
            fd: 5,
            direction: dir,
            length: payload.len() as u64,
            payload: payload.as_bytes().to_vec(),
            op: RequestOp::Transfer,
        }
    }

    fn ev(id: u64, t: u64, tid: u32, fd: i32, dir: Direction, payload: &str) -> IoEvent {
        IoEvent::from_record(&RequestEvent {
            id,
            time_ns: t,
            start_ns: t.saturating_sub(1),
            pid: 10,
            tid,
            fd,
            direction: dir,
            length: payload.len() as u64,
            payload: payload.as_bytes().to_vec(),
            op: RequestOp::Transfer,
        })
    }

    const REQ: &str = "GET /a HTTP/1.1\r\nX-Request-Id: r1\r\n\r\n";

    #[test]
    fn a_server_span_runs_from_request_read_to_last_response_write() {
        let events = vec![
            ev(1, 100, 7, 5, Direction::Read, REQ),
            ev(2, 300, 7, 5, Direction::Write, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n"),
            ev(3, 310, 7, 5, Direction::Write, "body"),
            ev(4, 400, 7, 5, Direction::Read, "GET /b HTTP/1.1\r\n\r\n"),
            ev(5, 450, 8, 5, Direction::Write, "HTTP/1.1 404 Not Found\r\n\r\n"),
        ];
        let spans = build_spans(&events);
        assert_eq!(spans.len(), 2);
        let a = &spans[0];
        assert_eq!((a.role, a.start_ns, a.end_ns, a.status), (Role::Server, 100, 310, Some(200)));
        assert_eq!((a.target.as_str(), a.trace.as_ref().map(|t| t.trace_id.as_str())), ("/a", Some("r1")));
        assert_eq!(a.event_ids, vec![1, 2, 3]);
        let b = &spans[1];
        assert_eq!((b.start_ns, b.end_ns, b.status, b.tids.clone()), (400, 450, Some(404), vec![7, 8]));
    }

    #[test]
    fn an_interim_response_does_not_end_the_request() {
        let events = vec![
            ev(1, 100, 7, 5, Direction::Read, "POST /upload HTTP/1.1\r\nExpect: 100-continue\r\n\r\n"),
            ev(2, 110, 7, 5, Direction::Write, "HTTP/1.1 100 Continue\r\n\r\n"),
            ev(3, 200, 7, 5, Direction::Read, "body bytes"),
            ev(4, 300, 7, 5, Direction::Write, "HTTP/1.1 201 Created\r\n\r\n"),
        ];
        let spans = build_spans(&events);
        assert_eq!(spans.len(), 1);
        assert_eq!((spans[0].status, spans[0].end_ns, spans[0].event_ids.len()), (Some(201), 300, 4));
    }

    #[test]
    fn a_client_span_and_an_unanswered_request() {
        let mut events = vec![
            ev(1, 100, 3, 9, Direction::Write, REQ),
            ev(2, 200, 3, 9, Direction::Read, "HTTP/1.1 500 Oops\r\n\r\n"),
            ev(3, 500, 4, 6, Direction::Read, REQ),
        ];
        events.push(IoEvent { op: RequestOp::Close, ..ev(4, 900, 4, 6, Direction::Write, "") });
        let spans = build_spans(&events);
        assert_eq!(spans.len(), 2);
        assert_eq!((spans[0].role, spans[0].start_ns, spans[0].end_ns), (Role::Client, 99, 200));
        assert_eq!((spans[1].status, spans[1].end_ns), (None, 500));
    }

    #[test]
    fn a_head_split_over_several_reads_is_reassembled() {
        let mut out = Vec::new();
        let mut asm = IoAssembler::default();
        let parts = ["GET ", "/split HTTP/1.1\r\nX-Request-", "Id: r9\r\n", "\r\n"];
        for (i, p) in parts.iter().enumerate() {
            asm.push(&record(i as u64 + 1, 100 + i as u64, Direction::Read, p), &mut out);
        }
        asm.push(&record(9, 200, Direction::Write, "HTTP/1.1 "), &mut out);
        asm.push(&record(10, 201, Direction::Write, "204 No Content\r\n\r\n"), &mut out);
        let spans = build_spans(&out);
        assert_eq!(spans.len(), 1);
        let s = &spans[0];
        assert_eq!((s.target.as_str(), s.status), ("/split", Some(204)));
        assert_eq!(s.trace.as_ref().unwrap().trace_id, "r9");
        assert_eq!((s.start_ns, s.end_ns), (100, 201));
    }

    #[test]
    fn the_index_finds_covering_spans_and_overlaps() {
        let events = vec![
            ev(1, 100, 7, 5, Direction::Read, REQ),
            ev(2, 300, 7, 5, Direction::Write, "HTTP/1.1 200 OK\r\n\r\n"),
        ];
        let spans = build_spans(&events);
        let idx = SpanIndex::new(&spans);
        assert!(idx.covers(10, 7, 200));
        assert!(!idx.covers(10, 7, 301));
        assert!(!idx.covers(10, 8, 200));
        assert!(!idx.covers(11, 7, 200));
        assert_eq!(idx.overlapping(10, 7, 50, 150), vec![(0, 50)]);
        assert_eq!(idx.overlapping(10, 7, 250, 1000), vec![(0, 50)]);
    }
}
