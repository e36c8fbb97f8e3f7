//! Loading the BPF programs and decoding their events.

use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, IntoRawFd, OwnedFd};

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, MapCore, MapFlags};

use crate::perf_event::{flag, open_on_cpu, PerfEventAttr, PERF_COUNT_SW_CPU_CLOCK};
use crate::{Error, Result};

#[allow(clippy::all, clippy::unwrap_used, missing_debug_implementations, unsafe_op_in_unsafe_fn)]
mod oncpu {
    include!(concat!(env!("OUT_DIR"), "/oncpu.skel.rs"));
}
pub use oncpu::OncpuSkel;
use oncpu::OncpuSkelBuilder;

#[allow(clippy::all, clippy::unwrap_used, missing_debug_implementations, unsafe_op_in_unsafe_fn)]
mod offcpu {
    include!(concat!(env!("OUT_DIR"), "/offcpu.skel.rs"));
}
use offcpu::{OffcpuSkel, OffcpuSkelBuilder};

#[allow(clippy::all, clippy::unwrap_used, missing_debug_implementations, unsafe_op_in_unsafe_fn)]
mod requests {
    include!(concat!(env!("OUT_DIR"), "/requests.skel.rs"));
}
use requests::{RequestsSkel, RequestsSkelBuilder};

#[allow(clippy::all, clippy::unwrap_used, missing_debug_implementations, unsafe_op_in_unsafe_fn)]
mod mem {
    include!(concat!(env!("OUT_DIR"), "/mem.skel.rs"));
}
use mem::{MemSkel, MemSkelBuilder};

/// Mirrors `MAX_STACK_DEPTH` in bpf/profrec.h.
pub const MAX_STACK_DEPTH: usize = 127;
const EVENT_SAMPLE: u32 = 1;
const EVENT_FORK: u32 = 2;
const EVENT_EXEC: u32 = 3;
const EVENT_EXIT: u32 = 4;
const EVENT_OFFCPU: u32 = 5;
const EVENT_REQUEST: u32 = 6;
const EVENT_MEM: u32 = 7;
/// Size of `struct profrec_mem_event`.
const MEM_LEN: usize = HEADER_LEN + 8 + 4 * 8;
/// Size of `struct profrec_event_header`.
const HEADER_LEN: usize = 24;
/// Offsets in `struct profrec_sample_event`.
const SAMPLE_COMM: usize = HEADER_LEN;
const SAMPLE_KLEN: usize = SAMPLE_COMM + 16;
const SAMPLE_ULEN: usize = SAMPLE_KLEN + 4;
const SAMPLE_KSTACK: usize = SAMPLE_ULEN + 4;
const SAMPLE_USTACK: usize = SAMPLE_KSTACK + 8 * MAX_STACK_DEPTH;
const SAMPLE_LEAF: usize = SAMPLE_USTACK + 8 * MAX_STACK_DEPTH;
/// Mirrors `LEAF_WINDOW`; `struct profrec_leaf` is 16 bytes of header and this.
pub const LEAF_WINDOW: usize = 256;
const LEAF_LEN: usize = 16 + LEAF_WINDOW;
const SAMPLE_LEN: usize = SAMPLE_LEAF + LEAF_LEN;
/// Offset of the leaf window in, and size of, `struct profrec_offcpu_event`.
const OFFCPU_LEAF: usize = HEADER_LEN + 8 + 6 * 4 + 16;
const OFFCPU_LEN: usize = OFFCPU_LEAF + LEAF_LEN;
/// Offset of the payload in `struct profrec_request_event`.
const REQUEST_PAYLOAD: usize = HEADER_LEN + 8 + 8 + 4 * 4 + 16;
/// Mirrors `MAX_PAYLOAD`: the most payload bytes a request event carries.
pub const MAX_PAYLOAD: usize = 4096;
/// Drop reasons, the index of the `drops` maps (enum drop_reason).
pub const DROP_REASONS: [&str; 11] = [
    "ring buffer full",
    "target table full",
    "filtered: blocked less than --min-block",
    "blocked more than an hour",
    "no user frame",
    "stack map full or collision",
    "too many threads blocked at once",
    "too many threads in socket syscalls at once",
    "allocation stack map full or collision",
    "too many threads in allocator calls at once",
    "off-CPU: the switch back onto a CPU was not seen and could not be recovered",
];

/// An event from the BPF side, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Sample {
        head: Header,
        comm: String,
        kernel: Vec<u64>,
        user: Vec<u64>,
        leaf: Leaf,
    },
    Fork {
        head: Header,
        ppid: u32,
    },
    Exec {
        head: Header,
        comm: String,
    },
    Exit {
        head: Header,
    },
    /// A thread ran again after blocking.
    OffCpu(OffCpu),
    /// A socket syscall of a target thread returned.
    Request(Request),
    /// An allocation, free or reallocation.
    Mem(MemEvent),
}

impl Event {
    /// When it happened (CLOCK_MONOTONIC ns); for off-CPU time, when the
    /// thread ran again (the event is sent then).
    pub fn time_ns(&self) -> u64 {
        match self {
            Event::Sample { head, .. }
            | Event::Fork { head, .. }
            | Event::Exec { head, .. }
            | Event::Exit { head } => head.time_ns,
            Event::OffCpu(e) => e.head.time_ns.saturating_add(e.blocked_ns),
            Event::Request(e) => e.head.time_ns,
            Event::Mem(e) => e.head.time_ns,
        }
    }
}

/// What a memory event is (`enum mem_op`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemOp {
    Alloc,
    Free,
    /// `old_addr` freed (if not 0), then `addr` allocated (if not 0).
    Realloc,
}

/// An allocator call of a target thread (`struct profrec_mem_event`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemEvent {
    pub head: Header,
    pub op: MemOp,
    /// Id in the memory stack map (negative: none).
    pub stack: i32,
    pub addr: u64,
    pub size: u64,
    pub old_addr: u64,
    pub weight: u64,
}

/// What a socket syscall did (`enum request_op`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestOp {
    Read,
    Write,
    Accept,
    Connect,
    Close,
}

/// A socket syscall returned; `head.time_ns` is when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub head: Header,
    pub comm: String,
    pub enter_ns: u64,
    /// Bytes transferred, the accepted fd, or a negative errno.
    pub ret: i64,
    /// The socket (for accept: the new connection).
    pub fd: i32,
    pub op: RequestOp,
    pub syscall_nr: u32,
    /// The first bytes transferred (first buffer of a vector).
    pub payload: Vec<u8>,
}

/// A thread ran again after blocking; `head.time_ns` is when it blocked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffCpu {
    pub head: Header,
    pub comm: String,
    pub blocked_ns: u64,
    /// Stack ids in the off-CPU stack map (negative: none).
    pub user_stack: i32,
    pub kernel_stack: i32,
    pub waker: Option<WakerIds>,
    pub leaf: Leaf,
}

/// Who woke a blocked thread, with stack ids in the off-CPU stack map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WakerIds {
    pub pid: u32,
    pub tid: u32,
    pub user_stack: i32,
    pub kernel_stack: i32,
}

/// The top of the user stack when a stack was taken (`struct profrec_leaf`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Leaf {
    /// The user stack pointer.
    pub sp: u64,
    /// Bytes from `sp` upwards (empty if they could not be read).
    pub window: Vec<u8>,
}

fn leaf_at(b: &[u8], at: usize) -> Leaf {
    let sp = u64_at(b, at).unwrap_or(0);
    let len = (u32_at(b, at + 8).unwrap_or(0) as usize).min(LEAF_WINDOW);
    let window = b.get(at + 16..at + 16 + len).map(<[u8]>::to_vec).unwrap_or_default();
    Leaf { sp, window }
}

/// Common fields of every event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub pid: u32,
    pub tid: u32,
    pub cpu: u32,
    pub time_ns: u64,
}

pub(crate) fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

pub(crate) fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn comm_at(b: &[u8], at: usize) -> String {
    let raw = b.get(at..at + 16).unwrap_or(&[]);
    let end = raw.iter().position(|&c| c == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

/// Frames written by bpf_get_stack: `len` bytes (negative = error) at `at`.
fn frames_at(b: &[u8], at: usize, len: i32) -> Vec<u64> {
    let n = usize::try_from(len).unwrap_or(0) / 8;
    (0..n.min(MAX_STACK_DEPTH)).filter_map(|i| u64_at(b, at + 8 * i)).collect()
}

impl Event {
    /// Decodes one ring-buffer record; `None` if it is malformed.
    pub fn parse(b: &[u8]) -> Option<Event> {
        let head =
            Header { pid: u32_at(b, 4)?, tid: u32_at(b, 8)?, cpu: u32_at(b, 12)?, time_ns: u64_at(b, 16)? };
        match u32_at(b, 0)? {
            EVENT_SAMPLE if b.len() >= SAMPLE_LEN => {
                let klen = u32_at(b, SAMPLE_KLEN)? as i32;
                let ulen = u32_at(b, SAMPLE_ULEN)? as i32;
                Some(Event::Sample {
                    head,
                    comm: comm_at(b, SAMPLE_COMM),
                    kernel: frames_at(b, SAMPLE_KSTACK, klen),
                    user: frames_at(b, SAMPLE_USTACK, ulen),
                    leaf: leaf_at(b, SAMPLE_LEAF),
                })
            }
            EVENT_FORK => Some(Event::Fork { head, ppid: u32_at(b, HEADER_LEN)? }),
            EVENT_EXEC => Some(Event::Exec { head, comm: comm_at(b, HEADER_LEN + 8) }),
            EVENT_EXIT => Some(Event::Exit { head }),
            EVENT_OFFCPU if b.len() >= OFFCPU_LEN => {
                let i32_at = |at| u32_at(b, at).map(|v| v as i32);
                let waker_tid = u32_at(b, HEADER_LEN + 20)?;
                Some(Event::OffCpu(OffCpu {
                    head,
                    blocked_ns: u64_at(b, HEADER_LEN)?,
                    user_stack: i32_at(HEADER_LEN + 8)?,
                    kernel_stack: i32_at(HEADER_LEN + 12)?,
                    waker: (waker_tid != 0).then_some(WakerIds {
                        pid: u32_at(b, HEADER_LEN + 16)?,
                        tid: waker_tid,
                        user_stack: i32_at(HEADER_LEN + 24)?,
                        kernel_stack: i32_at(HEADER_LEN + 28)?,
                    }),
                    comm: comm_at(b, HEADER_LEN + 32),
                    leaf: leaf_at(b, OFFCPU_LEAF),
                }))
            }
            EVENT_MEM if b.len() >= MEM_LEN => {
                let at = HEADER_LEN;
                let op = match u32_at(b, at)? {
                    0 => MemOp::Alloc,
                    1 => MemOp::Free,
                    2 => MemOp::Realloc,
                    _ => return None,
                };
                Some(Event::Mem(MemEvent {
                    head,
                    op,
                    stack: u32_at(b, at + 4)? as i32,
                    addr: u64_at(b, at + 8)?,
                    size: u64_at(b, at + 16)?,
                    old_addr: u64_at(b, at + 24)?,
                    weight: u64_at(b, at + 32)?,
                }))
            }
            EVENT_REQUEST if b.len() >= REQUEST_PAYLOAD => {
                let at = HEADER_LEN;
                let op = match u32_at(b, at + 20)? {
                    0 => RequestOp::Read,
                    1 => RequestOp::Write,
                    2 => RequestOp::Accept,
                    3 => RequestOp::Connect,
                    4 => RequestOp::Close,
                    _ => return None,
                };
                let len = (u32_at(b, at + 28)? as usize).min(MAX_PAYLOAD);
                Some(Event::Request(Request {
                    head,
                    enter_ns: u64_at(b, at)?,
                    ret: u64_at(b, at + 8)? as i64,
                    fd: u32_at(b, at + 16)? as i32,
                    op,
                    syscall_nr: u32_at(b, at + 24)?,
                    comm: comm_at(b, at + 32),
                    payload: b.get(REQUEST_PAYLOAD..REQUEST_PAYLOAD + len)?.to_vec(),
                }))
            }
            _ => None,
        }
    }
}

/// Which processes the programs report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Targets {
    /// Every process except the idle task.
    All,
    /// These processes, and their children when `follow` is set.
    Pids { pids: Vec<u32>, follow: bool },
}

/// What to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeOptions {
    /// On-CPU sampling at this frequency (Hz); `None` = no on-CPU samples.
    pub cpu_freq: Option<u64>,
    /// Off-CPU time; `None` = none.
    pub offcpu: Option<OffCpuOptions>,
    /// Socket request events with this many payload bytes each (at most
    /// [`MAX_PAYLOAD`]); `None` = none.
    pub request_payload: Option<u32>,
    /// Allocation tracking; `None` = none.
    pub mem: Option<MemProbes>,
}

/// Where to put the allocation probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemProbes {
    /// The process (uprobes are per process; its threads are covered).
    pub pid: u32,
    /// Attach mode: objects whose allocator functions get probes (libc, an
    /// executable with its own allocator).
    pub objects: Vec<std::path::PathBuf>,
    /// Sampled mode: the preloaded sampler library, whose two report
    /// functions get probes instead.
    pub sampler: Option<std::path::PathBuf>,
}

/// Allocator function names (suffixes) and their `enum alloc_fn` cookie.
const ALLOC_FNS: [(&str, u64); 9] = [
    ("malloc", 0),
    ("calloc", 1),
    ("realloc", 2),
    ("reallocarray", 3),
    ("posix_memalign", 4),
    ("aligned_alloc", 5),
    ("memalign", 6),
    ("valloc", 7),
    ("mmap", 8),
];
/// Prefixes of allocators' symbols: libc's own, jemalloc (also as Rust's
/// tikv-jemallocator builds it), mimalloc, tcmalloc.
const ALLOC_PREFIXES: [&str; 5] = ["", "je_", "_rjem_", "mi_", "tc_"];

/// Settings of off-CPU recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffCpuOptions {
    /// Shorter blocks are dropped (and counted) in the kernel.
    pub min_block_ns: u64,
    /// Also record who woke each thread, with the waker's stacks.
    pub wakers: bool,
    /// Take kernel stacks too (the costlier part of the switch-out path).
    pub kernel_stacks: bool,
    /// Tests only: act as if every n-th switch-in were missed (0 = never).
    pub test_miss_switch_ins: u32,
}

/// Loaded and attached programs. Dropping it detaches everything.
pub struct Probes {
    skel: OncpuSkel<'static>,
    offcpu: Option<OffcpuSkel<'static>>,
    requests: Option<RequestsSkel<'static>>,
    mem: Option<MemSkel<'static>>,
    links: Vec<Link>,
}

impl std::fmt::Debug for Probes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probes").field("links", &self.links.len()).finish()
    }
}

/// Opens a cpu-clock sampling event on `cpu` for every task.
fn open_cpu_clock(cpu: u32, freq: u64) -> std::io::Result<OwnedFd> {
    let mut attr = PerfEventAttr::software(PERF_COUNT_SW_CPU_CLOCK);
    attr.sample_freq = freq;
    attr.flags = flag::FREQ;
    open_on_cpu(&attr, cpu)
}

/// CPUs that are online, from /sys/devices/system/cpu/online ("0-3,5").
pub fn online_cpus() -> Vec<u32> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default();
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(lo), Ok(hi)) = (lo.parse::<u32>(), hi.parse::<u32>()) {
            cpus.extend(lo..=hi);
        }
    }
    if cpus.is_empty() {
        cpus.push(0);
    }
    cpus
}

fn load_error(what: &str, e: libbpf_rs::Error) -> Error {
    Error::Bpf { what: what.to_owned(), detail: format!("{e:#}") }
}

impl Probes {
    /// Loads the programs, fills the target table and attaches: the
    /// process-tracking tracepoints, sampling on every online CPU, and the
    /// off-CPU tracepoints, as `opts` asks.
    pub fn load(targets: &Targets, opts: &ProbeOptions) -> Result<Probes> {
        let mut open =
            OncpuSkelBuilder::default().open(object_storage()).map_err(|e| load_error("open", e))?;
        let rodata = open.maps.rodata_data.as_deref_mut().ok_or_else(|| no_rodata("on-CPU"))?;
        match targets {
            Targets::All => rodata.filter_pids = false,
            Targets::Pids { follow, .. } => {
                rodata.filter_pids = true;
                rodata.follow_children = *follow;
            }
        }
        let skel = open.load().map_err(|e| load_error("load (verifier log above)", e))?;
        if let Targets::Pids { pids, .. } = targets {
            for pid in pids {
                skel.maps
                    .targets
                    .update(&pid.to_ne_bytes(), &[1], MapFlags::ANY)
                    .map_err(|e| load_error("fill target table", e))?;
            }
        }
        let mut links = Vec::new();
        for (name, prog) in [
            ("sched_process_fork", &skel.progs.on_fork),
            ("sched_process_exec", &skel.progs.on_exec),
            ("sched_process_exit", &skel.progs.on_exit),
        ] {
            links.push(prog.attach().map_err(|e| load_error(&format!("attach tp_btf/{name}"), e))?);
        }
        if let Some(freq) = opts.cpu_freq {
            for cpu in online_cpus() {
                let fd = open_cpu_clock(cpu, freq).map_err(|source| Error::PerfEvent { cpu, source })?;
                let link = skel
                    .progs
                    .on_cpu_sample
                    .attach_perf_event(fd.as_raw_fd())
                    .map_err(|e| load_error(&format!("attach cpu-clock on cpu {cpu}"), e))?;
                // The link now owns the perf event and closes it when dropped.
                let _ = fd.into_raw_fd();
                links.push(link);
            }
        }
        let offcpu = match &opts.offcpu {
            Some(o) => Some(load_offcpu(&skel, targets, o, &mut links)?),
            None => None,
        };
        let requests = match opts.request_payload {
            Some(bytes) => Some(load_requests(&skel, targets, bytes, &mut links)?),
            None => None,
        };
        let mem = match &opts.mem {
            Some(m) => Some(load_mem(&skel, targets, m, &mut links)?),
            None => None,
        };
        Ok(Probes { skel, offcpu, requests, mem, links })
    }

    /// The ring buffer map the events arrive on.
    pub fn events_map(&self) -> &libbpf_rs::MapMut<'static> {
        &self.skel.maps.events
    }

    /// Adds a process to the target table (e.g. a spawned child).
    pub fn add_target(&self, pid: u32) -> Result<()> {
        self.skel
            .maps
            .targets
            .update(&pid.to_ne_bytes(), &[1], MapFlags::ANY)
            .map_err(|e| load_error("add target", e))
    }

    /// Kernel-side drop counters, summed over CPUs: (source, reason, count).
    pub fn drops(&self) -> Vec<(&'static str, &'static str, u64)> {
        let mut out: Vec<_> =
            sum_drops(&self.skel.maps.drops).into_iter().map(|(r, n)| ("cpu", r, n)).collect();
        if let Some(off) = &self.offcpu {
            out.extend(sum_drops(&off.maps.drops).into_iter().map(|(r, n)| ("offcpu", r, n)));
        }
        if let Some(m) = &self.mem {
            out.extend(sum_drops(&m.maps.drops).into_iter().map(|(r, n)| ("mem", r, n)));
        }
        if let Some(req) = &self.requests {
            out.extend(sum_drops(&req.maps.drops).into_iter().map(|(r, n)| ("requests", r, n)));
        }
        out
    }

    /// Off-CPU blocks whose end the tracepoint program missed and rebuilt
    /// from the scheduler's arrival time, summed over CPUs.
    pub fn offcpu_recovered(&self) -> u64 {
        self.offcpu.as_ref().map_or(0, |off| percpu_sum(&off.maps.recovered, 0))
    }

    /// The frames of an off-CPU stack id, leaf first; empty if unknown.
    pub fn offcpu_stack(&self, id: i32) -> Vec<u64> {
        match &self.offcpu {
            Some(off) => stack_frames(&off.maps.stacks, id),
            None => Vec::new(),
        }
    }

    /// The frames of an allocation stack id, leaf first; empty if unknown.
    pub fn mem_stack(&self, id: i32) -> Vec<u64> {
        match &self.mem {
            Some(m) => stack_frames(&m.maps.stacks, id),
            None => Vec::new(),
        }
    }
}

/// The frames of a stack-map id, leaf first; empty if unknown.
fn stack_frames(map: &dyn MapCore, id: i32) -> Vec<u64> {
    let Ok(id) = u32::try_from(id) else { return Vec::new() };
    match map.lookup(&id.to_ne_bytes(), MapFlags::ANY) {
        Ok(Some(bytes)) => bytes
            .chunks_exact(8)
            .map(|c| u64::from_ne_bytes(c.try_into().unwrap_or([0; 8])))
            .take_while(|&a| a != 0)
            .collect(),
        _ => Vec::new(),
    }
}

fn sum_drops(map: &dyn MapCore) -> Vec<(&'static str, u64)> {
    DROP_REASONS.iter().enumerate().map(|(i, reason)| (*reason, percpu_sum(map, i as u32))).collect()
}

/// Entry `key` of a per-CPU array of u64 counters, summed over CPUs.
fn percpu_sum(map: &dyn MapCore, key: u32) -> u64 {
    match map.lookup_percpu(&key.to_ne_bytes(), MapFlags::ANY) {
        Ok(Some(per_cpu)) => {
            per_cpu.iter().filter_map(|v| Some(u64::from_ne_bytes(v.get(..8)?.try_into().ok()?))).sum()
        }
        _ => 0,
    }
}

/// Storage for a skeleton's object. A skeleton borrows it for its whole life;
/// probes live as long as the recording, so leaking one small allocation per
/// object and recording is simpler than a self-referential struct.
fn object_storage() -> &'static mut MaybeUninit<libbpf_rs::OpenObject> {
    Box::leak(Box::new(MaybeUninit::uninit()))
}

/// The error for a skeleton that lacks its read-only settings.
fn no_rodata(what: &str) -> Error {
    Error::Bpf { what: format!("open {what}"), detail: "skeleton has no .rodata".into() }
}

/// Makes an object's `targets` and `events` maps the very maps of `skel`
/// (common.h): one target table and one ring buffer for every program.
fn share_maps(
    skel: &OncpuSkel<'static>,
    targets: &mut libbpf_rs::OpenMapMut<'_>,
    events: &mut libbpf_rs::OpenMapMut<'_>,
) -> Result<()> {
    targets.reuse_fd(skel.maps.targets.as_fd()).map_err(|e| load_error("share target table", e))?;
    events.reuse_fd(skel.maps.events.as_fd()).map_err(|e| load_error("share ring buffer", e))
}

/// Loads the off-CPU programs onto the target table and ring buffer of `skel`.
fn load_offcpu(
    skel: &OncpuSkel<'static>,
    targets: &Targets,
    o: &OffCpuOptions,
    links: &mut Vec<Link>,
) -> Result<OffcpuSkel<'static>> {
    let mut open =
        OffcpuSkelBuilder::default().open(object_storage()).map_err(|e| load_error("open off-CPU", e))?;
    let rodata = open.maps.rodata_data.as_deref_mut().ok_or_else(|| no_rodata("off-CPU"))?;
    rodata.filter_pids = matches!(targets, Targets::Pids { .. });
    rodata.min_block_ns = o.min_block_ns;
    rodata.track_wakers = o.wakers;
    rodata.kernel_stacks = o.kernel_stacks;
    rodata.test_miss_switch_ins = o.test_miss_switch_ins;
    share_maps(skel, &mut open.maps.targets, &mut open.maps.events)?;
    let off = open.load().map_err(|e| load_error("load off-CPU (verifier log above)", e))?;
    links.push(off.progs.on_switch.attach().map_err(|e| load_error("attach tp_btf/sched_switch", e))?);
    if o.wakers {
        links.push(off.progs.on_waking.attach().map_err(|e| load_error("attach tp_btf/sched_waking", e))?);
    }
    Ok(off)
}

/// Loads the allocation programs and attaches them to the allocator functions.
fn load_mem(
    skel: &OncpuSkel<'static>,
    targets: &Targets,
    m: &MemProbes,
    links: &mut Vec<Link>,
) -> Result<MemSkel<'static>> {
    let mut open = MemSkelBuilder::default().open(object_storage()).map_err(|e| load_error("open mem", e))?;
    let rodata = open.maps.rodata_data.as_deref_mut().ok_or_else(|| no_rodata("mem"))?;
    rodata.filter_pids = matches!(targets, Targets::Pids { .. });
    share_maps(skel, &mut open.maps.targets, &mut open.maps.events)?;
    let mem = open.load().map_err(|e| load_error("load mem (verifier log above)", e))?;
    let pid = m.pid as i32;
    let uprobe = |prog: &libbpf_rs::ProgramMut<'_>, path: &std::path::Path, name: &str, ret: bool, cookie| {
        let opts = libbpf_rs::UprobeOpts {
            func_name: Some(name.to_owned()),
            retprobe: ret,
            cookie,
            ..Default::default()
        };
        prog.attach_uprobe_with_opts(pid, path, 0, opts)
    };
    if let Some(sampler) = &m.sampler {
        for (prog, name) in [
            (&mem.progs.sampled_alloc, "profcap_sampled_alloc"),
            (&mem.progs.sampled_free, "profcap_sampled_free"),
        ] {
            let link = uprobe(prog, sampler, name, false, 0)
                .map_err(|e| load_error(&format!("attach uprobe {name} in {}", sampler.display()), e))?;
            links.push(link);
        }
        return Ok(mem);
    }
    let mut attached = 0;
    for object in &m.objects {
        let names = crate::mem::function_names(object);
        for prefix in ALLOC_PREFIXES {
            let has = |n: &str| names.contains(&format!("{prefix}{n}"));
            if !has("malloc") || !has("free") {
                continue;
            }
            log::info!("attaching allocation probes to {prefix}malloc etc. in {}", object.display());
            for (name, cookie) in ALLOC_FNS {
                let name = format!("{prefix}{name}");
                if !has(&name[prefix.len()..]) {
                    continue;
                }
                for ret in [false, true] {
                    let prog = if ret { &mem.progs.alloc_exit } else { &mem.progs.alloc_enter };
                    let link = uprobe(prog, object, &name, ret, cookie).map_err(|e| {
                        load_error(&format!("attach uprobe {name} in {}", object.display()), e)
                    })?;
                    links.push(link);
                }
            }
            // munmap (libc's only) ends an anonymous mapping as free ends a
            // block; one inside free, of a chunk's header address, matches nothing.
            let munmap = prefix.is_empty() && names.contains("munmap");
            for name in std::iter::once(format!("{prefix}free")).chain(munmap.then(|| "munmap".to_owned())) {
                let link = uprobe(&mem.progs.free_enter, object, &name, false, 0)
                    .map_err(|e| load_error(&format!("attach uprobe {name} in {}", object.display()), e))?;
                links.push(link);
            }
            attached += 1;
        }
    }
    if attached == 0 {
        return Err(Error::Bpf {
            what: "attach allocation probes".into(),
            detail: format!("no allocator (malloc and free) found in {:?}", m.objects),
        });
    }
    Ok(mem)
}

/// Loads the socket-syscall programs onto the target table and ring buffer of `skel`.
fn load_requests(
    skel: &OncpuSkel<'static>,
    targets: &Targets,
    payload_bytes: u32,
    links: &mut Vec<Link>,
) -> Result<RequestsSkel<'static>> {
    let mut open =
        RequestsSkelBuilder::default().open(object_storage()).map_err(|e| load_error("open requests", e))?;
    let rodata = open.maps.rodata_data.as_deref_mut().ok_or_else(|| no_rodata("requests"))?;
    rodata.filter_pids = matches!(targets, Targets::Pids { .. });
    rodata.payload_bytes = payload_bytes.min(MAX_PAYLOAD as u32);
    share_maps(skel, &mut open.maps.targets, &mut open.maps.events)?;
    let req = open.load().map_err(|e| load_error("load requests (verifier log above)", e))?;
    links.push(req.progs.on_sys_enter.attach().map_err(|e| load_error("attach tp_btf/sys_enter", e))?);
    links.push(req.progs.on_sys_exit.attach().map_err(|e| load_error("attach tp_btf/sys_exit", e))?);
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only the --min-block drop is a filter's choice; the rule that says so
    /// (the reason's prefix) is the format crate's, shared with the analyzer.
    #[test]
    fn only_filter_drops_read_as_filtered() {
        let filtered: Vec<&str> =
            DROP_REASONS.iter().copied().filter(|r| profcap_format::rules::is_filtered(r)).collect();
        assert_eq!(filtered, ["filtered: blocked less than --min-block"]);
    }

    #[test]
    fn layout_matches_the_c_header() {
        assert_eq!(std::mem::size_of::<PerfEventAttr>(), 112);
        assert_eq!(SAMPLE_LEN, 24 + 16 + 8 + 2 * 8 * 127 + 16 + 256);
        assert_eq!(OFFCPU_LEN, 72 + 16 + 256);
        assert_eq!(REQUEST_PAYLOAD, 72);
    }

    #[test]
    fn parses_a_sample_and_rejects_short_records() {
        let mut b = vec![0u8; SAMPLE_LEN];
        b[0..4].copy_from_slice(&EVENT_SAMPLE.to_ne_bytes());
        b[4..8].copy_from_slice(&7u32.to_ne_bytes());
        b[8..12].copy_from_slice(&8u32.to_ne_bytes());
        b[16..24].copy_from_slice(&99u64.to_ne_bytes());
        b[SAMPLE_COMM..SAMPLE_COMM + 4].copy_from_slice(b"demo");
        b[SAMPLE_KLEN..SAMPLE_KLEN + 4].copy_from_slice(&(-14i32).to_ne_bytes());
        b[SAMPLE_ULEN..SAMPLE_ULEN + 4].copy_from_slice(&16i32.to_ne_bytes());
        b[SAMPLE_USTACK..SAMPLE_USTACK + 8].copy_from_slice(&0x1234u64.to_ne_bytes());
        b[SAMPLE_USTACK + 8..SAMPLE_USTACK + 16].copy_from_slice(&0x5678u64.to_ne_bytes());
        b[SAMPLE_LEAF..SAMPLE_LEAF + 8].copy_from_slice(&0x7ffd_0000u64.to_ne_bytes());
        b[SAMPLE_LEAF + 8..SAMPLE_LEAF + 12].copy_from_slice(&8u32.to_ne_bytes());
        b[SAMPLE_LEAF + 16..SAMPLE_LEAF + 24].copy_from_slice(&0xabcdu64.to_ne_bytes());
        let Some(Event::Sample { head, comm, kernel, user, leaf }) = Event::parse(&b) else {
            panic!("not a sample")
        };
        assert_eq!((head.pid, head.tid, head.time_ns), (7, 8, 99));
        assert_eq!(comm, "demo");
        assert!(kernel.is_empty(), "negative length means no kernel stack");
        assert_eq!(user, vec![0x1234, 0x5678]);
        assert_eq!(leaf, Leaf { sp: 0x7ffd_0000, window: 0xabcdu64.to_ne_bytes().to_vec() });
        assert_eq!(Event::parse(&b[..100]), None);
        assert_eq!(Event::parse(&[]), None);
    }
}
