//! Loading the BPF programs: one module per probe family, each sharing the
//! on-CPU object's target table and ring buffer (`bpf/common.h`), and
//! `wire` for the events they send.

use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, IntoRawFd, OwnedFd};

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, MapCore, MapFlags};

use crate::perf_event::{flag, open_on_cpu, PerfEventAttr, PERF_COUNT_SW_CPU_CLOCK};
use crate::{Error, Result};

mod mem;
mod offcpu;
mod requests;
mod wire;

pub use mem::{GoProbe, MemProbes};
pub use offcpu::OffCpuOptions;
pub use wire::*;

use mem::MemSkel;
use offcpu::OffcpuSkel;
use requests::RequestsSkel;

#[allow(clippy::all, clippy::unwrap_used, missing_debug_implementations, unsafe_op_in_unsafe_fn)]
mod oncpu {
    include!(concat!(env!("OUT_DIR"), "/oncpu.skel.rs"));
}
pub use oncpu::OncpuSkel;
use oncpu::OncpuSkelBuilder;

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
    /// User stack bytes copied per on-CPU sample and off-CPU block, for
    /// DWARF unwinding (at most [`MAX_STACK_COPY`]; 0 = frame pointers only).
    pub stack_bytes: u32,
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
        rodata.stack_bytes = opts.stack_bytes.min(MAX_STACK_COPY as u32);
        // One sample buffer per possible CPU (indexed by CPU id).
        let cpus = libbpf_rs::num_possible_cpus().map_err(|e| load_error("count possible CPUs", e))?;
        open.maps
            .sample_scratch
            .set_max_entries(u32::try_from(cpus).unwrap_or(u32::MAX))
            .map_err(|e| load_error("size the sample buffers", e))?;
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
            Some(o) => Some(offcpu::load(&skel, targets, o, opts.stack_bytes, &mut links)?),
            None => None,
        };
        let requests = match opts.request_payload {
            Some(bytes) => Some(requests::load(&skel, targets, bytes, &mut links)?),
            None => None,
        };
        let mem = match &opts.mem {
            Some(m) => Some(mem::load(&skel, targets, m, opts.stack_bytes, &mut links)?),
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

    /// How far up a thread's stack the copies go (`None`: all of
    /// `--stack-bytes` again).
    pub fn set_stack_top(&self, tid: u32, top: Option<u64>) {
        let map = &self.skel.maps.stack_tops;
        // A failed update only costs bytes: the copy goes to --stack-bytes.
        let _ = match top {
            Some(t) => map.update(&tid.to_ne_bytes(), &t.to_ne_bytes(), MapFlags::ANY),
            None => map.delete(&tid.to_ne_bytes()),
        };
    }

    /// Describes a Python process to the frame walk (`None`: forget it).
    pub fn set_python(&self, pid: u32, layout: Option<&PyLayout>) -> Result<()> {
        let map = &self.skel.maps.py_procs;
        match layout {
            Some(l) => map
                .update(&pid.to_ne_bytes(), &l.to_bytes(), MapFlags::ANY)
                .map_err(|e| load_error("describe a Python process", e)),
            // Already gone (never added, or pid reused) is fine.
            None => {
                let _ = map.delete(&pid.to_ne_bytes());
                Ok(())
            }
        }
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

    /// Events every object dropped so far because the ring buffer was full.
    pub fn ring_full_drops(&self) -> u64 {
        let full = |map: &dyn MapCore| percpu_sum(map, 0); // DROP_RINGBUF_FULL
        let mut n = full(&self.skel.maps.drops);
        n += self.offcpu.as_ref().map_or(0, |o| full(&o.maps.drops));
        n += self.mem.as_ref().map_or(0, |m| full(&m.maps.drops));
        n += self.requests.as_ref().map_or(0, |r| full(&r.maps.drops));
        n
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

/// Makes an object's Python tables (`bpf/python.h`) those of `skel`: one
/// table of Python processes, and of their thread states, for every walk.
fn share_python_maps(
    skel: &OncpuSkel<'static>,
    procs: &mut libbpf_rs::OpenMapMut<'_>,
    tstates: &mut libbpf_rs::OpenMapMut<'_>,
) -> Result<()> {
    procs
        .reuse_fd(skel.maps.py_procs.as_fd())
        .map_err(|e| load_error("share the Python process table", e))?;
    tstates
        .reuse_fd(skel.maps.py_tstates.as_fd())
        .map_err(|e| load_error("share the Python thread states", e))
}

/// Makes an object's `targets` and `events` maps the very maps of `skel`
/// (common.h): one target table and one ring buffer for every program.
fn share_maps(
    skel: &OncpuSkel<'static>,
    targets: &mut libbpf_rs::OpenMapMut<'_>,
    events: &mut libbpf_rs::OpenMapMut<'_>,
    stack_tops: &mut libbpf_rs::OpenMapMut<'_>,
) -> Result<()> {
    targets.reuse_fd(skel.maps.targets.as_fd()).map_err(|e| load_error("share target table", e))?;
    stack_tops.reuse_fd(skel.maps.stack_tops.as_fd()).map_err(|e| load_error("share stack tops", e))?;
    events.reuse_fd(skel.maps.events.as_fd()).map_err(|e| load_error("share ring buffer", e))
}
