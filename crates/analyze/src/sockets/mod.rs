//! Socket events as the capture reader keeps them: without their payloads,
//! but with the HTTP/1 message head found at the start of each (reassembled
//! when it came in several reads or left in several writes). The requests
//! analysis builds spans from these; parsing happens while the capture is
//! read, so payloads are never held.

use std::collections::HashMap;

use profcap_format::{Direction, RequestEvent, RequestOp};

pub mod http;

use http::HttpMessage;

/// A socket event without its payload: what the analysis keeps of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoEvent {
    pub id: u64,
    pub time_ns: u64,
    pub start_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub fd: i32,
    pub op: RequestOp,
    pub direction: Direction,
    pub length: u64,
    /// The HTTP message head at the start of the payload, if any.
    pub http: Option<HttpMessage>,
}

impl IoEvent {
    pub fn from_record(r: &RequestEvent) -> IoEvent {
        IoEvent {
            id: r.id,
            time_ns: r.time_ns,
            start_ns: r.start_ns,
            pid: r.pid,
            tid: r.tid,
            fd: r.fd,
            op: r.op,
            direction: r.direction,
            length: r.length,
            http: if r.op == RequestOp::Transfer { http::parse(&r.payload) } else { None },
        }
    }
}

/// Turns socket records into [`IoEvent`]s, reassembling HTTP heads that
/// arrive in several reads or leave in several writes: the head is parsed
/// from the bytes of consecutive transfers on the same socket and direction,
/// and belongs to the first of them. Feed records in file order.
#[derive(Debug, Default)]
pub struct IoAssembler {
    /// (pid, fd, direction) -> (index of the head's first event, bytes so far)
    partial: HashMap<(u32, i32, bool), (usize, Vec<u8>)>,
}

/// More than this is not an HTTP head worth waiting for.
const MAX_HEAD: usize = 16 << 10;

fn looks_like_head_start(p: &[u8]) -> bool {
    p.starts_with(b"HTTP/1.")
        || p.iter()
            .position(|&b| b == b' ')
            .is_some_and(|i| i >= 3 && p[..i].iter().all(u8::is_ascii_uppercase))
}

fn head_complete(p: &[u8]) -> bool {
    p.windows(4).any(|w| w == b"\r\n\r\n")
}

impl IoAssembler {
    /// Adds one record to `out`.
    pub fn push(&mut self, r: &RequestEvent, out: &mut Vec<IoEvent>) {
        let mut e = IoEvent::from_record(r);
        e.http = None;
        if r.op != RequestOp::Transfer {
            // The fd number starts or ends a connection: forget partial heads.
            self.partial.retain(|&(pid, fd, _), _| (pid, fd) != (r.pid, r.fd));
            out.push(e);
            return;
        }
        let key = (r.pid, r.fd, r.direction == Direction::Read);
        // The whole transfer was captured, so what follows continues it.
        let whole = r.payload.len() as u64 == r.length;
        if let Some((first, mut buf)) = self.partial.remove(&key) {
            buf.extend_from_slice(&r.payload);
            if let Some(head) = out.get_mut(first) {
                head.http = http::parse(&buf);
            }
            if whole && !head_complete(&buf) && buf.len() < MAX_HEAD {
                self.partial.insert(key, (first, buf));
            }
        } else {
            e.http = http::parse(&r.payload);
            if whole && looks_like_head_start(&r.payload) && !head_complete(&r.payload) {
                self.partial.insert(key, (out.len(), r.payload.clone()));
            }
        }
        out.push(e);
    }
}
