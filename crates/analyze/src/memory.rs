//! Memory profiles from a capture's allocation and free events: bytes
//! allocated (`alloc`), bytes in use at a point in time (`inuse`), and the
//! in-use timeline of each process.
//!
//! Events are replayed in time order. A free of an address no recorded
//! allocation returned (memory allocated before the recording began, or an
//! allocation the sampler did not pick) is ignored, so nothing is ever
//! counted negative. A sampled allocation stands for `weight` allocations of
//! its size.

use rustc_hash::FxHashMap;

use profcap_format::{Alloc, Batch, Free};

use crate::capture::Material;
use crate::Result;

/// Which moment an in-use profile shows.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub enum InuseAt {
    /// When the recording ended: what was never freed (leaks and long-lived data).
    #[default]
    End,
    /// When the most bytes were in use (over the selected processes).
    Peak,
    /// This many seconds after the capture's first event.
    Seconds(f64),
}

/// One event of the replay, in time order.
#[derive(Debug, Clone, Copy)]
pub enum MemEvent {
    Alloc(Alloc),
    Free(Free),
}

impl MemEvent {
    pub fn time_ns(&self) -> u64 {
        match self {
            MemEvent::Alloc(a) => a.time_ns,
            MemEvent::Free(f) => f.time_ns,
        }
    }

    /// Where the memory is (host, GPU).
    pub fn space(&self) -> profcap_format::MemSpace {
        match self {
            MemEvent::Alloc(a) => a.space,
            MemEvent::Free(f) => f.space,
        }
    }

    pub fn pid(&self) -> u32 {
        match self {
            MemEvent::Alloc(a) => a.pid,
            MemEvent::Free(f) => f.pid,
        }
    }
}

/// A batch's allocations and frees merged into time order (stable: at equal
/// times frees come first, as a realloc frees its old block before the new
/// one counts, even at the same address).
fn batch_events(b: &Batch) -> Vec<MemEvent> {
    let mut out: Vec<MemEvent> = Vec::with_capacity(b.allocs.len() + b.frees.len());
    out.extend(b.frees.iter().copied().map(MemEvent::Free));
    out.extend(b.allocs.iter().copied().map(MemEvent::Alloc));
    out.sort_by_key(MemEvent::time_ns);
    out
}

/// Calls `f` with every allocation and free of the capture, in time order
/// within each chunk (chunks are in time order).
pub fn for_each_event(m: &Material, strict: bool, mut f: impl FnMut(&MemEvent)) -> Result<()> {
    m.for_each_batch(strict, |b| {
        if !b.allocs.is_empty() || !b.frees.is_empty() {
            batch_events(b).iter().for_each(&mut f);
        }
    })
}

/// The bytes an allocation stands for: its size times its weight.
pub fn bytes(a: &Alloc) -> u64 {
    a.size.saturating_mul(a.weight.max(1))
}

/// The replay state: live allocations by (pid, address) and bytes in use per process.
#[derive(Debug, Default)]
pub struct Replay {
    pub live: FxHashMap<(u32, u64), Alloc>,
    pub in_use: FxHashMap<u32, u64>,
    pub total: u64,
}

impl Replay {
    /// Applies one event (the caller has filtered it).
    pub fn apply(&mut self, e: &MemEvent) {
        match e {
            // No address (Go: the garbage collector frees unseen): never in use.
            MemEvent::Alloc(a) if a.addr == 0 => {}
            MemEvent::Alloc(a) => {
                // An address handed out again without a recorded free: the
                // free was missed; the old block is gone.
                if let Some(old) = self.live.insert((a.pid, a.addr), *a) {
                    self.sub(old.pid, bytes(&old));
                }
                *self.in_use.entry(a.pid).or_default() += bytes(a);
                self.total += bytes(a);
            }
            MemEvent::Free(f) => {
                if let Some(old) = self.live.remove(&(f.pid, f.addr)) {
                    self.sub(f.pid, bytes(&old));
                }
            }
        }
    }

    fn sub(&mut self, pid: u32, bytes: u64) {
        let v = self.in_use.entry(pid).or_default();
        *v = v.saturating_sub(bytes);
        self.total = self.total.saturating_sub(bytes);
    }
}

/// When the selected processes together had the most bytes in use, and how many.
pub fn peak(m: &Material, strict: bool, keep: impl Fn(&MemEvent) -> bool) -> Result<(u64, u64)> {
    let mut r = Replay::default();
    let (mut at, mut most) = (0, 0);
    for_each_event(m, strict, |e| {
        if keep(e) {
            r.apply(e);
            if r.total > most {
                most = r.total;
                at = e.time_ns();
            }
        }
    })?;
    Ok((at, most))
}

/// The live allocations at `until_ns` (inclusive).
pub fn live_at(
    m: &Material,
    strict: bool,
    until_ns: u64,
    keep: impl Fn(&MemEvent) -> bool,
) -> Result<Replay> {
    let mut r = Replay::default();
    for_each_event(m, strict, |e| {
        if e.time_ns() <= until_ns && keep(e) {
            r.apply(e);
        }
    })?;
    Ok(r)
}

/// In-use bytes of each process over time, at most `points` points per
/// process (the largest value of each time bucket, so peaks are kept).
pub fn timeline(
    m: &Material,
    strict: bool,
    points: usize,
    keep: impl Fn(&MemEvent) -> bool,
) -> Result<FxHashMap<u32, Vec<(u64, u64)>>> {
    let (first, last) = (m.mem_first_ns, m.mem_last_ns.max(m.mem_first_ns + 1));
    let bucket_ns = ((last - first) / points.max(1) as u64).max(1);
    let mut r = Replay::default();
    let mut out: FxHashMap<u32, Vec<(u64, u64)>> = FxHashMap::default();
    for_each_event(m, strict, |e| {
        if !keep(e) {
            return;
        }
        r.apply(e);
        let pid = e.pid();
        let v = r.in_use.get(&pid).copied().unwrap_or(0);
        let t = e.time_ns();
        let series = out.entry(pid).or_default();
        let bucket = |t: u64| t.saturating_sub(first) / bucket_ns;
        match series.last_mut() {
            // Same bucket: keep the highest value, and the latest time.
            Some(lastp) if bucket(lastp.0) == bucket(t) => *lastp = (t, lastp.1.max(v)),
            _ => series.push((t, v)),
        }
    })?;
    // The value at the end, so each line runs to the end of the recording.
    for (pid, series) in out.iter_mut() {
        let v = r.in_use.get(pid).copied().unwrap_or(0);
        series.push((last, v));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alloc(t: u64, addr: u64, size: u64, weight: u64) -> MemEvent {
        MemEvent::Alloc(Alloc {
            time_ns: t,
            pid: 1,
            tid: 1,
            addr,
            size,
            stack_id: 7,
            weight,
            space: Default::default(),
        })
    }

    fn free(t: u64, addr: u64) -> MemEvent {
        MemEvent::Free(Free { time_ns: t, pid: 1, tid: 1, addr, space: Default::default() })
    }

    #[test]
    fn replay_counts_weights_and_ignores_unknown_frees() {
        let mut r = Replay::default();
        for e in [alloc(1, 0x10, 100, 1), alloc(2, 0x20, 50, 4), free(3, 0x999), free(4, 0x10)] {
            r.apply(&e);
        }
        assert_eq!((r.total, r.in_use[&1], r.live.len()), (200, 200, 1));
        // An address reused without a free replaces the old block.
        r.apply(&alloc(5, 0x20, 10, 1));
        assert_eq!(r.total, 10);
    }

    #[test]
    fn batches_are_replayed_in_time_order() {
        let mut b = Batch::default();
        b.allocs.push(Alloc {
            time_ns: 5,
            pid: 1,
            tid: 1,
            addr: 0x10,
            size: 8,
            stack_id: 1,
            weight: 1,
            space: Default::default(),
        });
        b.frees.push(Free { time_ns: 3, pid: 1, tid: 1, addr: 0x10, space: Default::default() });
        b.frees.push(Free { time_ns: 9, pid: 1, tid: 1, addr: 0x10, space: Default::default() });
        let times: Vec<u64> = batch_events(&b).iter().map(MemEvent::time_ns).collect();
        assert_eq!(times, vec![3, 5, 9]);
    }
}
