//! The kernel's own account of execs and executable mappings.
//!
//! `/proc/PID/maps` can only be read after the fact: a process that lives a
//! few milliseconds is often gone by the time profrec handles its exec, and
//! its samples then have no mappings to be named by (issue 20). The kernel
//! writes a `PERF_RECORD_COMM` (with the exec flag) and one
//! `PERF_RECORD_MMAP2` per executable mapping into a perf ring buffer as it
//! makes them, synchronously, so reading those records loses nothing to
//! timing. One dummy software event per CPU carries them, as `perf record`
//! does; times are CLOCK_MONOTONIC, the clock of the BPF events.
//!
//! The ring is written by the kernel, but nothing read from it is trusted:
//! every length is checked against the data actually there.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::{MmapOptions, MmapRaw};

use crate::layout::{c_string, u32_at, u64_at};
use crate::perf_event::{self, flag, PerfEventAttr, PERF_COUNT_SW_DUMMY, PERF_SAMPLE_TID, PERF_SAMPLE_TIME};
use crate::procfs::MapsEntry;

/// Data pages per CPU (a power of two): 128 KiB holds about a thousand
/// mapping records (an exec makes about ten), so a CPU can exec about a
/// thousand programs a second between two 100 ms drains before records are
/// lost (and counted); the rings stay small on machines with many CPUs.
const DATA_PAGES: usize = 32;

const PERF_RECORD_LOST: u32 = 2;
const PERF_RECORD_COMM: u32 = 3;
const PERF_RECORD_MMAP2: u32 = 10;
const PERF_RECORD_MISC_COMM_EXEC: u16 = 1 << 13;
/// Offsets of `data_head` and `data_tail` in `struct perf_event_mmap_page`.
const DATA_HEAD: usize = 1024;
const DATA_TAIL: usize = 1032;
/// `sample_id_all` with TID|TIME appends {pid, tid: u32; time: u64}.
const SAMPLE_ID_LEN: usize = 16;

/// An exec or an executable mapping, as the kernel reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapEvent {
    /// `pid` replaced its image: later mappings form a new generation.
    Exec { pid: u32, time_ns: u64, comm: String },
    /// An executable file (or the vDSO) was mapped into `pid`.
    Map { pid: u32, time_ns: u64, entry: MapsEntry },
}

impl MapEvent {
    pub fn time_ns(&self) -> u64 {
        match self {
            MapEvent::Exec { time_ns, .. } | MapEvent::Map { time_ns, .. } => *time_ns,
        }
    }

    pub fn pid(&self) -> u32 {
        match self {
            MapEvent::Exec { pid, .. } | MapEvent::Map { pid, .. } => *pid,
        }
    }
}

/// One CPU's event and its mapped ring.
struct Ring {
    map: MmapRaw,
    data_offset: usize,
    data_size: usize,
    tail: u64,
    _fd: OwnedFd,
}

/// The mapping records of every CPU.
pub struct MmapEvents {
    rings: Vec<Ring>,
    /// Records the kernel dropped because a ring was full.
    pub lost: u64,
    /// Records that did not parse (counted, skipped).
    pub malformed: u64,
}

impl std::fmt::Debug for MmapEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmapEvents").field("cpus", &self.rings.len()).field("lost", &self.lost).finish()
    }
}

impl MmapEvents {
    /// Opens one dummy event per CPU that reports execs and executable mappings.
    pub fn open(cpus: &[u32]) -> std::io::Result<MmapEvents> {
        let mut attr = PerfEventAttr::software(PERF_COUNT_SW_DUMMY);
        attr.sample_type = PERF_SAMPLE_TID | PERF_SAMPLE_TIME;
        attr.flags =
            flag::MMAP | flag::MMAP2 | flag::COMM | flag::COMM_EXEC | flag::SAMPLE_ID_ALL | flag::USE_CLOCKID;
        attr.clockid = libc::CLOCK_MONOTONIC;
        let page = page_size();
        let mut rings = Vec::with_capacity(cpus.len());
        for &cpu in cpus {
            let fd = perf_event::open_on_cpu(&attr, cpu)?;
            let map = MmapOptions::new().len(page * (1 + DATA_PAGES)).map_raw(fd.as_raw_fd())?;
            rings.push(Ring { map, data_offset: page, data_size: page * DATA_PAGES, tail: 0, _fd: fd });
        }
        Ok(MmapEvents { rings, lost: 0, malformed: 0 })
    }

    /// Takes every record written so far, sorted by time.
    pub fn drain(&mut self) -> Vec<MapEvent> {
        let mut out = Vec::new();
        for ring in &mut self.rings {
            ring.drain(|kind, misc, body| match parse(kind, misc, body) {
                Parsed::Event(e) => out.push(e),
                Parsed::Lost(n) => self.lost = self.lost.saturating_add(n),
                Parsed::Skip => {}
                Parsed::Malformed => self.malformed += 1,
            });
        }
        out.sort_by_key(MapEvent::time_ns);
        out
    }
}

impl Ring {
    fn word(&self, offset: usize) -> &AtomicU64 {
        // SAFETY: the first page of the mapping is the kernel's
        // perf_event_mmap_page; data_head and data_tail are 8-byte aligned u64s
        // inside it that the kernel and we access atomically, and the mapping
        // lives as long as `self`.
        unsafe { &*(self.map.as_ptr().add(offset) as *const AtomicU64) }
    }

    /// Calls `f(type, misc, record without header)` for each complete record.
    fn drain(&mut self, mut f: impl FnMut(u32, u16, &[u8])) {
        let head = self.word(DATA_HEAD).load(Ordering::Acquire);
        if head.wrapping_sub(self.tail) > self.data_size as u64 {
            // Not a state the kernel leaves; start again from its head.
            self.tail = head;
        }
        // SAFETY: the data area lies inside the mapping; the kernel writes only
        // between data_tail and data_head, which we do not read.
        let data =
            unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(self.data_offset), self.data_size) };
        let mut record = Vec::new();
        while self.tail < head {
            let available = (head - self.tail) as usize;
            copy_wrapped(data, self.tail, 8.min(available), &mut record);
            let size = match record.as_slice() {
                [_, _, _, _, _, _, s0, s1] => usize::from(u16::from_ne_bytes([*s0, *s1])),
                _ => break,
            };
            if size < 8 || size > available {
                self.tail = head; // a broken length: skip what is there
                break;
            }
            copy_wrapped(data, self.tail, size, &mut record);
            let kind = u32::from_ne_bytes([record[0], record[1], record[2], record[3]]);
            let misc = u16::from_ne_bytes([record[4], record[5]]);
            f(kind, misc, &record[8..]);
            self.tail += size as u64;
        }
        self.word(DATA_TAIL).store(self.tail, Ordering::Release);
    }
}

/// Copies `len` bytes of the ring starting at position `at` into `out`.
fn copy_wrapped(data: &[u8], at: u64, len: usize, out: &mut Vec<u8>) {
    out.clear();
    let start = (at % data.len() as u64) as usize;
    let first = len.min(data.len() - start);
    out.extend_from_slice(&data[start..start + first]);
    out.extend_from_slice(&data[..len - first]);
}

enum Parsed {
    Event(MapEvent),
    Lost(u64),
    Skip,
    Malformed,
}

fn parse(kind: u32, misc: u16, body: &[u8]) -> Parsed {
    let r = match kind {
        PERF_RECORD_MMAP2 => parse_mmap2(body).map(|e| e.map_or(Parsed::Skip, Parsed::Event)),
        PERF_RECORD_COMM if misc & PERF_RECORD_MISC_COMM_EXEC != 0 => parse_comm(body).map(Parsed::Event),
        PERF_RECORD_COMM => Some(Parsed::Skip), // a thread renamed itself: BPF events carry names
        PERF_RECORD_LOST => u64_at(body, 8).map(Parsed::Lost),
        _ => Some(Parsed::Skip),
    };
    r.unwrap_or(Parsed::Malformed)
}

/// The time in the trailing sample id, and the body without it.
fn split_sample_id(body: &[u8]) -> Option<(&[u8], u64)> {
    let at = body.len().checked_sub(SAMPLE_ID_LEN)?;
    Some((&body[..at], u64_at(body, at + 8)?))
}

fn parse_comm(body: &[u8]) -> Option<MapEvent> {
    let (body, time_ns) = split_sample_id(body)?;
    // After an exec the thread that called it leads the process: pid == tid.
    let pid = u32_at(body, 0)?;
    Some(MapEvent::Exec { pid, time_ns, comm: c_string(body.get(8..)?) })
}

/// Layout after the header: pid, tid: u32; addr, len, pgoff: u64; maj, min:
/// u32; ino, ino_generation: u64; prot, flags: u32; filename (padded).
/// `Ok(None)` for mappings the recorder does not describe (anonymous code).
fn parse_mmap2(body: &[u8]) -> Option<Option<MapEvent>> {
    let (body, time_ns) = split_sample_id(body)?;
    let pid = u32_at(body, 0)?;
    let addr = u64_at(body, 8)?;
    let len = u64_at(body, 16)?;
    let entry = MapsEntry {
        start: addr,
        end: addr.checked_add(len)?,
        readable: true,
        executable: true,
        offset: u64_at(body, 24)?,
        dev_major: u32_at(body, 32)?,
        dev_minor: u32_at(body, 36)?,
        inode: u64_at(body, 40)?,
        path: c_string(body.get(64..)?),
    };
    let described = entry.is_file() || entry.path == "[vdso]";
    Some(described.then_some(MapEvent::Map { pid, time_ns, entry }))
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mmap2_body(pid: u32, path: &str, inode: u64, time: u64) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&pid.to_ne_bytes());
        b.extend_from_slice(&pid.to_ne_bytes());
        for v in [0x5000u64, 0x2000, 0x1000] {
            b.extend_from_slice(&v.to_ne_bytes());
        }
        b.extend_from_slice(&8u32.to_ne_bytes());
        b.extend_from_slice(&1u32.to_ne_bytes());
        b.extend_from_slice(&inode.to_ne_bytes());
        b.extend_from_slice(&0u64.to_ne_bytes());
        b.extend_from_slice(&5u32.to_ne_bytes());
        b.extend_from_slice(&2u32.to_ne_bytes());
        b.extend_from_slice(path.as_bytes());
        b.resize(b.len().next_multiple_of(8) + 8, 0);
        b.extend_from_slice(&pid.to_ne_bytes());
        b.extend_from_slice(&pid.to_ne_bytes());
        b.extend_from_slice(&time.to_ne_bytes());
        b
    }

    #[test]
    fn mmap2_records_become_mappings() {
        let Parsed::Event(MapEvent::Map { pid, time_ns, entry }) =
            parse(PERF_RECORD_MMAP2, 0, &mmap2_body(42, "/usr/bin/x", 77, 9))
        else {
            panic!("not a mapping");
        };
        assert_eq!((pid, time_ns), (42, 9));
        assert_eq!((entry.start, entry.end, entry.offset), (0x5000, 0x7000, 0x1000));
        assert_eq!(
            (entry.dev_major, entry.dev_minor, entry.inode, entry.path.as_str()),
            (8, 1, 77, "/usr/bin/x")
        );
        assert!(matches!(parse(PERF_RECORD_MMAP2, 0, &mmap2_body(42, "//anon", 0, 9)), Parsed::Skip));
    }

    #[test]
    fn short_or_truncated_records_are_malformed_not_panics() {
        let body = mmap2_body(42, "/usr/bin/x", 77, 9);
        for cut in 0..body.len() - 8 {
            let _ = parse(PERF_RECORD_MMAP2, 0, &body[..cut]);
            let _ = parse(PERF_RECORD_COMM, PERF_RECORD_MISC_COMM_EXEC, &body[..cut]);
            let _ = parse(PERF_RECORD_LOST, 0, &body[..cut]);
        }
        assert!(matches!(parse(PERF_RECORD_MMAP2, 0, &body[..20]), Parsed::Malformed));
    }

    #[test]
    fn records_that_wrap_the_ring_are_copied_whole() {
        let data: Vec<u8> = (0..16).collect();
        let mut out = Vec::new();
        copy_wrapped(&data, 30, 5, &mut out); // starts at 14
        assert_eq!(out, [14, 15, 0, 1, 2]);
    }
}
