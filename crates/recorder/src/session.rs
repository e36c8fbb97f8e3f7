//! One recording: events from the BPF ring buffer into the capture writer.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::io::BufWriter;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use libbpf_rs::RingBufferBuilder;
use profcap_format::{
    CaptureWriter, Lost, Mapping, Meta, Sample, SampleKind, Thread, ValueUnit, WriteOptions,
};

use crate::bpf::{
    Event, Header, Leaf, MemEvent, MemOp, MemProbes, OffCpu, OffCpuOptions, ProbeOptions, Probes, Request,
    RequestOp, Targets,
};
use crate::elf::{self, EmbedMode, MappedFile};
use crate::mem::{RingRecord, SamplerFile, SamplerRing};
use crate::procfs::{self, MapsEntry};
use crate::spawn::{spawn_held, RunningChild};
use crate::unwind::{self, Locate, UnwindTable};
use crate::{kallsyms, Error, MemMode, RecordOptions, Result, Target};

/// What a finished recording wrote.
#[derive(Debug, Clone, Default)]
pub struct RecordSummary {
    pub samples: u64,
    pub stacks: u64,
    pub processes: usize,
    pub objects: usize,
    pub lost: u64,
    pub file_bytes: u64,
    pub elapsed: Duration,
    /// CPU time profrec itself used (user + system), BPF programs excluded:
    /// those run in the context of the sampled tasks.
    pub cpu_time: Duration,
    /// Exit code of the spawned command, if one was spawned and it ended.
    pub child_exit: Option<i32>,
}

/// An ELF object seen in some process's mappings, by device and inode.
#[derive(Debug)]
struct Object {
    path: String,
    build_id: Vec<u8>,
    /// Kept open from discovery so that material can be extracted at the end
    /// even if the process has exited or the file was replaced.
    file: Option<MappedFile>,
    used: bool,
    /// File offsets of the frames the capture's stacks have in it.
    offsets: BTreeSet<u64>,
}

#[derive(Debug)]
struct KnownMap {
    start: u64,
    end: u64,
    file_offset: u64,
    object: usize,
}

/// What the recorder knows of one live process.
#[derive(Debug, Default)]
struct ProcState {
    /// Start of the current address-space generation (fork or exec time; 0 =
    /// before recording), written as `Mapping::seen_ns`.
    generation_ns: u64,
    start_ticks: u64,
    maps: Vec<KnownMap>,
}

/// How often samples are collected from the ring buffer.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// After an exec, the dynamic loader maps the libraries within milliseconds;
/// the maps are read again at these delays, so even a process that lives
/// 50 ms is known completely before it exits.
const EXEC_RESCANS: [Duration; 3] =
    [Duration::from_millis(2), Duration::from_millis(10), Duration::from_millis(40)];

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the valid timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as u64)
}

fn own_cpu_time() -> Duration {
    // SAFETY: getrusage writes into the zeroed rusage we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_SELF is always valid.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32).saturating_mul(1000));
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn wall_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

struct Session {
    writer: CaptureWriter<BufWriter<File>>,
    path: PathBuf,
    procs: HashMap<u32, ProcState>,
    objects: Vec<Object>,
    object_ids: HashMap<(u32, u32, u64, String), usize>,
    thread_names: HashMap<u32, String>,
    kernel_addrs: BTreeSet<u64>,
    malformed_events: u64,
    /// Unwind tables per object, read when first needed.
    unwind_tables: HashMap<usize, Option<UnwindTable>>,
    /// rsp-based CFA offsets per (object, file offset), `None` = not frameless.
    cfa_rules: HashMap<(usize, u64), Option<u64>>,
    /// Frames of off-CPU stack-map ids already read.
    offcpu_stacks: HashMap<i32, Vec<u64>>,
    /// Pending map re-reads after an exec: (when, pid).
    rescans: Vec<(Instant, u32)>,
    /// Distinct pids described in the capture.
    seen_pids: std::collections::HashSet<u32>,
    /// Request events written so far (their ids count from 1).
    requests: u64,
    /// Capture stack ids of allocation stack-map ids already read.
    mem_stacks: HashMap<i32, u64>,
    /// The preloaded sampler library, whose frames are cut from allocation stacks.
    sampler_path: Option<String>,
}

impl Session {
    fn write<T>(&mut self, r: profcap_format::Result<T>) -> Result<T> {
        r.map_err(|source| Error::Capture { path: self.path.clone(), source })
    }

    /// Reads a process's description and mappings for a new generation.
    fn scan_process(&mut self, pid: u32, generation_ns: u64, seen_ns: u64) {
        let mut process = match procfs::read_process(pid) {
            Ok(p) => p,
            Err(e) => {
                log::debug!("pid {pid}: {e}");
                return;
            }
        };
        process.seen_ns = seen_ns;
        let state = ProcState { generation_ns, start_ticks: process.start_ticks, maps: Vec::new() };
        self.procs.insert(pid, state);
        self.seen_pids.insert(pid);
        if let Err(e) = self.writer.push_process(process) {
            log::error!("{e}");
        }
        self.rescan_maps(pid);
    }

    /// Time until the next pending re-read of a process's maps.
    fn next_rescan_in(&self) -> Option<Duration> {
        let now = Instant::now();
        self.rescans.iter().map(|(at, _)| at.saturating_duration_since(now)).min()
    }

    /// Re-reads the maps of processes whose delayed re-read is due.
    fn due_rescans(&mut self) {
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = self.rescans.drain(..).partition(|(at, _)| *at <= now);
        self.rescans = later;
        for (_, pid) in due {
            if self.procs.contains_key(&pid) {
                self.rescan_maps(pid);
            }
        }
    }

    /// Adds mappings of `pid` not yet known (new generation or dlopen).
    fn rescan_maps(&mut self, pid: u32) {
        let entries = match procfs::read_maps(pid) {
            Ok(e) => e,
            Err(e) => {
                log::debug!("pid {pid}: {e}");
                return;
            }
        };
        for entry in entries {
            let known = self
                .procs
                .get(&pid)
                .is_some_and(|p| p.maps.iter().any(|m| m.start == entry.start && m.end == entry.end));
            if known {
                continue;
            }
            let object = self.object_for(pid, &entry);
            let Some(state) = self.procs.get_mut(&pid) else {
                return;
            };
            state.maps.push(KnownMap {
                start: entry.start,
                end: entry.end,
                file_offset: entry.offset,
                object,
            });
            let mapping = Mapping {
                pid,
                start: entry.start,
                end: entry.end,
                file_offset: entry.offset,
                path: entry.path.clone(),
                build_id: self.objects[object].build_id.clone(),
                dev_major: entry.dev_major,
                dev_minor: entry.dev_minor,
                inode: entry.inode,
                seen_ns: state.generation_ns,
                start_ticks: state.start_ticks,
            };
            if let Err(e) = self.writer.push_mapping(mapping) {
                log::error!("{e}");
            }
        }
        if let Some(state) = self.procs.get_mut(&pid) {
            state.maps.sort_by_key(|m| m.start);
        }
    }

    /// Finds or opens the object behind a mapping.
    fn object_for(&mut self, pid: u32, entry: &MapsEntry) -> usize {
        let key = (entry.dev_major, entry.dev_minor, entry.inode, entry.path.clone());
        if let Some(&id) = self.object_ids.get(&key) {
            return id;
        }
        let (file, build_id) = if entry.path == "[vdso]" {
            let id = elf::own_vdso().and_then(|v| elf::build_id(&v)).unwrap_or_default();
            (None, id)
        } else {
            // map_files works for deleted files and other mount namespaces.
            let candidates = [
                PathBuf::from(format!("/proc/{pid}/map_files/{:x}-{:x}", entry.start, entry.end)),
                PathBuf::from(format!("/proc/{pid}/root{}", entry.path)),
            ];
            let file = candidates.iter().find_map(|p| MappedFile::open(p).ok());
            if file.is_none() {
                log::warn!("pid {pid}: cannot open {}; its frames will stay unnamed", entry.path);
            }
            let id = file.as_ref().and_then(|f| elf::build_id(f.bytes())).unwrap_or_default();
            (file, id)
        };
        self.objects.push(Object {
            path: entry.path.clone(),
            build_id,
            file,
            used: false,
            offsets: BTreeSet::new(),
        });
        self.object_ids.insert(key, self.objects.len() - 1);
        self.objects.len() - 1
    }

    /// Marks the objects of a new stack as used, re-reading the maps once if
    /// a frame lies outside every known mapping (a library loaded later).
    fn note_new_stack(&mut self, pid: u32, kernel: &[u64], user: &[u64]) {
        self.kernel_addrs.extend(kernel.iter().copied());
        for pass in 0..2 {
            let Some(state) = self.procs.get(&pid) else {
                return;
            };
            let mut missing = false;
            for &addr in user {
                let i = state.maps.partition_point(|m| m.start <= addr);
                match i.checked_sub(1).map(|i| &state.maps[i]) {
                    Some(m) if addr < m.end => {
                        let o = &mut self.objects[m.object];
                        o.used = true;
                        o.offsets.insert(addr - m.start + m.file_offset);
                    }
                    _ => missing = true,
                }
            }
            if !missing || pass == 1 {
                return;
            }
            self.rescan_maps(pid);
        }
    }

    /// Reads a process seen for the first time (one that was running before
    /// the recording, or whose fork event was lost).
    fn know_process(&mut self, pid: u32, seen_ns: u64) {
        if !self.procs.contains_key(&pid) {
            self.scan_process(pid, 0, seen_ns);
        }
    }

    /// Notes the thread's name and makes sure its process is known.
    fn note_task(&mut self, head: Header, comm: String) -> Result<()> {
        if self.thread_names.get(&head.tid) != Some(&comm) {
            let thread = Thread { pid: head.pid, tid: head.tid, name: comm.clone(), seen_ns: head.time_ns };
            let r = self.writer.push_thread(thread);
            self.write(r)?;
            self.thread_names.insert(head.tid, comm);
        }
        self.know_process(head.pid, head.time_ns);
        Ok(())
    }

    /// Interns a stack of `pid`, noting its objects when it is new.
    fn stack_id(&mut self, pid: u32, kernel: &[u64], user: &[u64]) -> u64 {
        let before = self.writer.stack_count();
        let id = self.writer.intern_stack(kernel, user);
        if self.writer.stack_count() > before {
            self.note_new_stack(pid, kernel, user);
        }
        id
    }

    fn on_sample(
        &mut self,
        head: Header,
        comm: String,
        kernel: &[u64],
        mut user: Vec<u64>,
        leaf: &Leaf,
    ) -> Result<()> {
        self.note_task(head, comm)?;
        unwind::fix_leaf_frames(self, head.pid, &mut user, leaf);
        let user = user.as_slice();
        let stack_id = self.stack_id(head.pid, kernel, user);
        let sample = Sample {
            kind: SampleKind::Cpu,
            unit: ValueUnit::Count,
            time_ns: head.time_ns,
            pid: head.pid,
            tid: head.tid,
            cpu: head.cpu as u16,
            stack_id,
            value: 1,
            id: 0,
            waker: None,
        };
        let r = self.writer.push_sample(sample);
        self.write(r)
    }

    /// Frames of an off-CPU stack-map id, read from the kernel once.
    fn offcpu_frames(&mut self, probes: &Probes, id: i32) -> Vec<u64> {
        if id < 0 {
            return Vec::new();
        }
        self.offcpu_stacks.entry(id).or_insert_with(|| probes.offcpu_stack(id)).clone()
    }

    fn on_offcpu(&mut self, probes: &Probes, e: OffCpu) -> Result<()> {
        self.note_task(e.head, e.comm)?;
        let mut user = self.offcpu_frames(probes, e.user_stack);
        unwind::fix_leaf_frames(self, e.head.pid, &mut user, &e.leaf);
        let kernel = self.offcpu_frames(probes, e.kernel_stack);
        let stack_id = self.stack_id(e.head.pid, &kernel, &user);
        let waker = match e.waker {
            Some(w) => {
                let wu = self.offcpu_frames(probes, w.user_stack);
                let wk = self.offcpu_frames(probes, w.kernel_stack);
                if w.pid != 0 {
                    self.know_process(w.pid, e.head.time_ns);
                }
                let stack_id = self.stack_id(w.pid, &wk, &wu);
                Some(profcap_format::Waker { pid: w.pid, tid: w.tid, stack_id })
            }
            None => None,
        };
        let sample = Sample {
            kind: SampleKind::OffCpu,
            unit: ValueUnit::Nanoseconds,
            time_ns: e.head.time_ns,
            pid: e.head.pid,
            tid: e.head.tid,
            cpu: e.head.cpu as u16,
            stack_id,
            value: i64::try_from(e.blocked_ns).unwrap_or(i64::MAX),
            id: 0,
            waker,
        };
        let r = self.writer.push_sample(sample);
        self.write(r)
    }

    fn on_request(&mut self, e: Request) -> Result<()> {
        self.note_task(e.head, e.comm)?;
        self.requests += 1;
        let (op, direction) = match e.op {
            RequestOp::Read => (profcap_format::RequestOp::Transfer, profcap_format::Direction::Read),
            RequestOp::Write => (profcap_format::RequestOp::Transfer, profcap_format::Direction::Write),
            RequestOp::Accept => (profcap_format::RequestOp::Accept, profcap_format::Direction::Read),
            RequestOp::Connect => (profcap_format::RequestOp::Connect, profcap_format::Direction::Write),
            RequestOp::Close => (profcap_format::RequestOp::Close, profcap_format::Direction::Write),
        };
        let event = profcap_format::RequestEvent {
            id: self.requests,
            time_ns: e.head.time_ns,
            pid: e.head.pid,
            tid: e.head.tid,
            fd: e.fd,
            direction,
            length: if op == profcap_format::RequestOp::Transfer { e.ret.max(0) as u64 } else { 0 },
            payload: e.payload,
            op,
            start_ns: e.enter_ns,
        };
        let r = self.writer.push_request(event);
        self.write(r)
    }

    /// Removes the sampler's own frames (its malloc wrappers) from the top
    /// of an allocation stack, so that the allocating code is the leaf, as
    /// in attach mode.
    fn strip_sampler_frames(&mut self, pid: u32, frames: &mut Vec<u64>) {
        let Some(sampler) = self.sampler_path.clone() else { return };
        let inside = |s: &mut Self, addr: u64| {
            s.locate(pid, addr)
                .is_some_and(|(object, _)| s.objects.get(object).is_some_and(|o| o.path == sampler))
        };
        if frames.first().is_some_and(|&a| self.locate(pid, a).is_none()) {
            self.rescan_maps(pid); // the library may be newer than what we know
        }
        let n = frames.iter().take_while(|&&a| inside(self, a)).count();
        frames.drain(..n);
    }

    fn on_mem(&mut self, probes: &Probes, e: MemEvent) -> Result<()> {
        let head = e.head;
        self.know_process(head.pid, head.time_ns);
        let old = match e.op {
            MemOp::Free => e.addr,
            MemOp::Realloc => e.old_addr,
            MemOp::Alloc => 0,
        };
        if old != 0 {
            self.push_free(head, old)?;
        }
        if e.op == MemOp::Free || e.addr == 0 {
            return Ok(());
        }
        let stack_id = match self.mem_stacks.get(&e.stack) {
            Some(&id) => id,
            None => {
                let id = self.alloc_stack_id(head.pid, probes.mem_stack(e.stack));
                if e.stack >= 0 {
                    self.mem_stacks.insert(e.stack, id);
                }
                id
            }
        };
        self.push_alloc(head, e.addr, e.size, e.weight, stack_id)
    }

    /// A picked allocation or its free, from the preloaded sampler's ring.
    fn on_ring_record(&mut self, r: RingRecord) -> Result<()> {
        let head = Header { pid: r.pid, tid: r.tid, cpu: 0, time_ns: r.time_ns };
        self.know_process(r.pid, r.time_ns);
        if !r.alloc {
            return self.push_free(head, r.addr);
        }
        let stack_id = self.alloc_stack_id(r.pid, r.frames);
        self.push_alloc(head, r.addr, r.size, r.weight, stack_id)
    }

    /// The capture stack of an allocation's user frames, the sampler's own cut.
    fn alloc_stack_id(&mut self, pid: u32, mut frames: Vec<u64>) -> u64 {
        self.strip_sampler_frames(pid, &mut frames);
        self.stack_id(pid, &[], &frames)
    }

    fn push_free(&mut self, head: Header, addr: u64) -> Result<()> {
        let free = profcap_format::Free { time_ns: head.time_ns, pid: head.pid, tid: head.tid, addr };
        let r = self.writer.push_free(free);
        self.write(r)
    }

    fn push_alloc(&mut self, head: Header, addr: u64, size: u64, weight: u64, stack_id: u64) -> Result<()> {
        let alloc = profcap_format::Alloc {
            time_ns: head.time_ns,
            pid: head.pid,
            tid: head.tid,
            addr,
            size,
            stack_id,
            weight: weight.max(1),
        };
        let r = self.writer.push_alloc(alloc);
        self.write(r)
    }

    /// Handles one event; returns the pid of a process that exited.
    fn on_event(&mut self, probes: &Probes, event: Event) -> Result<Option<u32>> {
        match event {
            Event::Request(e) => self.on_request(e)?,
            Event::Mem(e) => self.on_mem(probes, e)?,
            Event::OffCpu(e) => self.on_offcpu(probes, e)?,
            Event::Sample { head, comm, kernel, user, leaf } => {
                self.on_sample(head, comm, &kernel, user, &leaf)?
            }
            Event::Fork { head, .. } => self.scan_process(head.pid, head.time_ns, head.time_ns),
            Event::Exec { head, .. } => {
                self.procs.remove(&head.pid);
                self.scan_process(head.pid, head.time_ns, head.time_ns);
                let now = Instant::now();
                self.rescans.extend(EXEC_RESCANS.iter().map(|d| (now + *d, head.pid)));
            }
            Event::Exit { head } => {
                if let Some(state) = self.procs.remove(&head.pid) {
                    let exited = profcap_format::Process {
                        pid: head.pid,
                        start_ticks: state.start_ticks,
                        seen_ns: head.time_ns,
                        exit_ns: head.time_ns,
                        ..Default::default()
                    };
                    let r = self.writer.push_process(exited);
                    self.write(r)?;
                }
                return Ok(Some(head.pid));
            }
        }
        Ok(None)
    }

    /// Writes the end-of-recording material: symbols, kernel symbols, and
    /// what was lost (see [`losses`]).
    fn finish_material(&mut self, embed: EmbedMode, losses: &[Loss]) -> Result<()> {
        // JIT symbol maps, read last because JITs append to them while running.
        let mut pids: Vec<u32> = self.seen_pids.iter().copied().collect();
        pids.sort_unstable();
        for pid in pids {
            if let Some(symbols) = procfs::read_perf_map(pid) {
                log::info!("pid {pid}: {} JIT symbols", symbols.len());
                let blob =
                    profcap_format::SymbolBlob { path: perf_map_path(pid), symbols, ..Default::default() };
                let r = self.writer.push_symbols(blob);
                self.write(r)?;
            }
        }
        let used: Vec<usize> = (0..self.objects.len()).filter(|&i| self.objects[i].used).collect();
        log::info!("embedding material for {} objects", used.len());
        let vdso = elf::own_vdso();
        for i in used {
            let o = &self.objects[i];
            let data = match (&o.file, o.path.as_str()) {
                (Some(f), _) => f.bytes(),
                (None, "[vdso]") => vdso.as_deref().unwrap_or_default(),
                (None, _) => continue,
            };
            // The vDSO exists on no disk, so its whole image goes in.
            let mode =
                if o.path == "[vdso]" && embed == EmbedMode::None { EmbedMode::Symbols } else { embed };
            let mut blob = elf::extract_blob(data, &o.path, &o.build_id, mode);
            let all = blob.symbols.len();
            elf::prune_symbols(&mut blob, &o.offsets);
            // .eh_frame_hdr only indexes .eh_frame (an unwinder rebuilds it)
            // and compresses poorly: not worth its bytes in the capture.
            blob.sections.retain(|s| s.name != ".eh_frame_hdr");
            log::debug!("{}: {} of {all} symbols name the recorded frames", o.path, blob.symbols.len());
            log::debug!("{}: {} symbols", o.path, blob.symbols.len());
            let r = self.writer.push_symbols(blob);
            self.write(r)?;
        }
        let kallsyms = std::fs::read_to_string("/proc/kallsyms").unwrap_or_default();
        let r = self.writer.push_kernel_symbols(kallsyms::needed_symbols(&kallsyms, &self.kernel_addrs));
        self.write(r)?;
        for &(source, reason, count) in losses {
            let r = self.writer.push_lost(Lost { source: source.into(), reason: reason.into(), count });
            self.write(r)?;
        }
        Ok(())
    }
}

/// Events lost or filtered out, by (source, reason): what the capture's
/// Lost records say and what the summary counts.
type Loss = (&'static str, &'static str, u64);

/// Every non-zero loss: dropped in the kernel, malformed on arrival, and
/// dropped or damaged in the preloaded sampler's ring.
fn losses(probes: &Probes, sampler_ring: Option<&SamplerRing>, malformed_events: u64) -> Vec<Loss> {
    let mut out = probes.drops();
    out.push(("bpf", "malformed event", malformed_events));
    if let Some(r) = sampler_ring {
        out.push(("mem", "sampler ring full", r.dropped()));
        out.push(("mem", "sampler ring record damaged", r.malformed));
    }
    out.retain(|&(_, _, count)| count > 0);
    out
}

/// The path under which a process's JIT symbols are stored in the capture
/// (a symbol blob without build id); the analyzer looks them up the same way.
fn perf_map_path(pid: u32) -> String {
    format!("[perf-map:{pid}]")
}

impl Locate for Session {
    fn locate(&mut self, pid: u32, addr: u64) -> Option<(usize, u64)> {
        let maps = &self.procs.get(&pid)?.maps;
        let i = maps.partition_point(|m| m.start <= addr).checked_sub(1)?;
        let m = maps.get(i).filter(|m| addr < m.end)?;
        Some((m.object, addr - m.start + m.file_offset))
    }

    fn rsp_cfa_offset(&mut self, object: usize, file_offset: u64) -> Option<u64> {
        if let Some(rule) = self.cfa_rules.get(&(object, file_offset)) {
            return *rule;
        }
        let objects = &self.objects;
        let table = self.unwind_tables.entry(object).or_insert_with(|| {
            let o = objects.get(object)?;
            match (&o.file, o.path.as_str()) {
                (Some(f), _) => UnwindTable::from_elf(f.bytes()),
                (None, "[vdso]") => elf::own_vdso().and_then(|v| UnwindTable::from_elf(&v)),
                (None, _) => None,
            }
        });
        let rule = table.as_ref().and_then(|t| t.rsp_cfa_offset(t.vaddr(file_offset)?));
        self.cfa_rules.insert((object, file_offset), rule);
        rule
    }
}

fn open_output(path: &PathBuf) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| Error::Io { path: path.clone(), source })
}

fn check_privileges() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(Error::NotPermitted("effective uid is not 0".into()));
    }
    Ok(())
}

fn base_meta(opts: &RecordOptions) -> Meta {
    let (kernel_release, hostname) = procfs::uname();
    Meta {
        hostname,
        kernel_release,
        boot_id: procfs::boot_id(),
        clock: "CLOCK_MONOTONIC".into(),
        start_wall_ns: wall_ns(),
        start_mono_ns: monotonic_ns(),
        sample_freq_hz: if opts.cpu { u32::try_from(opts.freq).unwrap_or(u32::MAX) } else { 0 },
        events: [
            (opts.cpu, "cpu"),
            (opts.offcpu, "offcpu"),
            (opts.offcpu && opts.wakers, "wakers"),
            (opts.requests, "requests"),
            (opts.mem == MemMode::Attach, "mem"),
            (opts.mem == MemMode::Sampled, "mem-sampled"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, name)| (*name).to_owned())
        .collect(),
        extra: [
            (opts.offcpu, "min_block_ns", opts.min_block.as_nanos().to_string()),
            (opts.requests, "payload_bytes", opts.payload_bytes.to_string()),
            (opts.mem == MemMode::Sampled, "sample_bytes", opts.sample_bytes.to_string()),
        ]
        .into_iter()
        .filter(|(on, _, _)| *on)
        .map(|(_, k, v)| (k.to_owned(), v))
        .collect(),
        recorder_version: concat!("profrec ", env!("CARGO_PKG_VERSION")).into(),
        command_line: opts.command_line.clone(),
        // SAFETY: sysconf has no preconditions.
        page_size: u32::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096),
        ..Meta::default()
    }
}

/// Records until the target exits, the duration passes, or `stop` is set.
pub fn record(opts: &RecordOptions, stop: Arc<AtomicBool>) -> Result<RecordSummary> {
    check_privileges()?;
    let cpu_at_start = own_cpu_time();
    if let Target::Pids(pids) = &opts.target {
        if let Some(&pid) = pids.iter().find(|&&p| !procfs::exists(p)) {
            return Err(Error::NoSuchPid { pid });
        }
    }
    let file = open_output(&opts.output)?;
    let writer = CaptureWriter::new(BufWriter::with_capacity(1 << 20, file), WriteOptions::default())
        .map_err(|source| Error::Capture { path: opts.output.clone(), source })?;
    let mut session = Session {
        writer,
        path: opts.output.clone(),
        procs: HashMap::new(),
        objects: Vec::new(),
        object_ids: HashMap::new(),
        thread_names: HashMap::new(),
        kernel_addrs: BTreeSet::new(),
        malformed_events: 0,
        seen_pids: Default::default(),
        rescans: Vec::new(),
        offcpu_stacks: HashMap::new(),
        unwind_tables: HashMap::new(),
        cfa_rules: HashMap::new(),
        requests: 0,
        mem_stacks: HashMap::new(),
        sampler_path: None,
    };
    let mut meta = base_meta(opts);
    let r = session.writer.push_meta(meta.clone());
    session.write(r)?;

    let sampler = match opts.mem {
        MemMode::Sampled => Some(SamplerFile::create()?),
        _ => None,
    };
    session.sampler_path = sampler.as_ref().map(|s| s.path().display().to_string());
    // Picked allocations come through this ring, not the kernel (8 MiB: about
    // 60 k records, far more than profrec's 100 ms polls let pile up).
    let mut sampler_ring = match (&sampler, opts.mem_test_no_ring) {
        (Some(_), false) => Some(SamplerRing::create(8 << 20)?),
        _ => None,
    };
    let (targets, held) = match &opts.target {
        Target::All => (Targets::All, None),
        Target::Pids(pids) => (Targets::Pids { pids: pids.clone(), follow: opts.follow_children }, None),
        Target::Spawn(argv) => {
            let env = match &sampler {
                Some(s) => {
                    let mut env = vec![
                        ("LD_PRELOAD".to_owned(), s.path().display().to_string()),
                        ("PROFCAP_SAMPLE_BYTES".to_owned(), opts.sample_bytes.to_string()),
                    ];
                    if let Some(r) = &sampler_ring {
                        env.push(("PROFCAP_RING".to_owned(), r.path().display().to_string()));
                    }
                    env
                }
                None => Vec::new(),
            };
            let held = spawn_held(argv, &env)?;
            (Targets::Pids { pids: vec![held.pid()], follow: opts.follow_children }, Some(held))
        }
    };
    let mem = match (opts.mem, &opts.target, &held) {
        (MemMode::Off, _, _) => None,
        (MemMode::Sampled, _, Some(h)) => Some(MemProbes {
            pid: h.pid(),
            objects: Vec::new(),
            sampler: sampler.as_ref().map(|s| s.path().to_owned()),
        }),
        (MemMode::Attach, Target::Spawn(argv), Some(h)) => Some(MemProbes {
            pid: h.pid(),
            objects: crate::mem::allocator_objects_for_command(&argv[0]),
            sampler: None,
        }),
        (MemMode::Attach, Target::Pids(pids), _) if pids.len() == 1 => {
            Some(MemProbes { pid: pids[0], objects: crate::mem::allocator_objects(pids[0]), sampler: None })
        }
        (mode, _, _) => {
            if let Some(h) = held {
                h.abort();
            }
            return Err(Error::Usage(match mode {
                MemMode::Sampled => {
                    "--mem --preload needs a command to start (profrec --mem --preload -- CMD)"
                }
                _ => "--mem records one process: a command to start or a single -p PID",
            }));
        }
    };
    let probe_opts = ProbeOptions {
        cpu_freq: opts.cpu.then_some(opts.freq),
        offcpu: opts.offcpu.then(|| OffCpuOptions {
            min_block_ns: u64::try_from(opts.min_block.as_nanos()).unwrap_or(u64::MAX),
            wakers: opts.wakers,
            kernel_stacks: opts.offcpu_kernel_stacks,
            test_miss_switch_ins: opts.offcpu_test_miss_switch_ins,
        }),
        request_payload: opts.requests.then_some(opts.payload_bytes),
        mem,
    };
    let probes = match Probes::load(&targets, &probe_opts) {
        Ok(p) => p,
        Err(e) => {
            if let Some(h) = held {
                h.abort();
            }
            return Err(e);
        }
    };
    let started = Instant::now();
    let now = monotonic_ns();
    if let Targets::Pids { pids, .. } = &targets {
        for &pid in pids {
            session.scan_process(pid, if held.is_some() { now } else { 0 }, now);
        }
    }
    // Set up before the child runs: mapping the ring buffer takes a few ms
    // of kernel time that should not compete with the target's start.
    let queue: Rc<RefCell<Vec<Option<Event>>>> = Rc::default();
    let sink = Rc::clone(&queue);
    let mut builder = RingBufferBuilder::new();
    let added = builder.add(probes.events_map(), move |data: &[u8]| {
        sink.borrow_mut().push(Event::parse(data));
        0
    });
    let ring = added.map(|_| ()).and_then(|()| builder.build());
    let ring = match ring {
        Ok(r) => r,
        Err(e) => {
            // Never let a held command run unrecorded.
            if let Some(h) = held {
                h.abort();
            }
            return Err(Error::Bpf { what: "ring buffer".into(), detail: e.to_string() });
        }
    };

    let mut child: Option<RunningChild> = match held {
        Some(h) => Some(h.release()?),
        None => None,
    };
    let mut live: BTreeSet<u32> = match &targets {
        Targets::Pids { pids, .. } => pids.iter().copied().collect(),
        Targets::All => BTreeSet::new(),
    };

    let mut last_liveness_check = Instant::now();
    let mut finished = false;
    while !finished {
        // Woken at once by process events; samples are collected on this timer.
        let timeout = session.next_rescan_in().unwrap_or(POLL_INTERVAL).min(POLL_INTERVAL);
        let r = ring.poll(timeout).and_then(|()| ring.consume());
        if let Err(e) = r {
            if !stop.load(Ordering::Relaxed) {
                log::warn!("ring buffer poll: {e}");
            }
        }
        session.due_rescans();
        let child_done = child.as_mut().is_some_and(|c| c.try_wait().is_some());
        let out_of_time = opts.duration.is_some_and(|d| started.elapsed() >= d);
        finished = stop.load(Ordering::Relaxed) || child_done || out_of_time;
        if finished {
            // Take what is still in the ring buffer, the target's exit included.
            let _ = ring.consume();
        }
        let events: Vec<Option<Event>> = std::mem::take(&mut *queue.borrow_mut());
        // The sampler's records go in among the kernel's events by time: after
        // the exec that mapped their code, before the exit that ends it.
        let mut records = sampler_ring.as_mut().map(|r| r.drain()).unwrap_or_default().into_iter().peekable();
        for event in events {
            let Some(event) = event else {
                session.malformed_events += 1;
                continue;
            };
            while let Some(r) = records.next_if(|r| r.time_ns <= event.time_ns()) {
                session.on_ring_record(r)?;
            }
            if let Event::Fork { head, .. } = &event {
                if matches!(targets, Targets::Pids { .. }) {
                    live.insert(head.pid);
                }
            }
            if let Some(pid) = session.on_event(&probes, event)? {
                live.remove(&pid);
            }
        }
        for r in records {
            session.on_ring_record(r)?;
        }
        if matches!(opts.target, Target::Pids(_)) && last_liveness_check.elapsed() > Duration::from_secs(1) {
            // Exit events can be lost when the ring buffer is full; /proc is the truth.
            live.retain(|&pid| procfs::exists(pid));
            last_liveness_check = Instant::now();
        }
        if matches!(opts.target, Target::Pids(_)) && live.is_empty() {
            log::info!("all target processes have exited");
            finished = true;
        }
        let r = session.writer.maybe_flush();
        session.write(r)?;
    }
    drop(ring);
    if let Some(sampler) = &session.sampler_path {
        if !session.objects.iter().any(|o| &o.path == sampler) {
            log::warn!(
                "the allocation sampler was never loaded into the command (a statically linked \
                 program ignores LD_PRELOAD): no allocations were recorded; use --mem without --preload"
            );
        }
    }
    let losses = losses(&probes, sampler_ring.as_ref(), session.malformed_events);
    session.finish_material(opts.embed, &losses)?;
    meta.end_wall_ns = wall_ns();
    meta.end_mono_ns = monotonic_ns();
    let recovered = probes.offcpu_recovered();
    if recovered > 0 {
        log::info!(
            "{recovered} off-CPU block(s) ended by a switch the tracepoint missed; rebuilt from the thread's run time"
        );
        meta.extra.push(("offcpu_recovered".into(), recovered.to_string()));
    }
    let r = session.writer.push_meta(meta);
    session.write(r)?;
    // Blocks shorter than --min-block are filtered by choice, not lost.
    let lost: u64 =
        losses.iter().filter(|(_, reason, _)| !reason.contains("--min-block")).map(|(_, _, n)| n).sum();
    drop(probes);
    let objects = session.objects.iter().filter(|o| o.used).count();
    let processes = session.seen_pids.len();
    let path = session.path.clone();
    let (out, stats) =
        session.writer.finish().map_err(|source| Error::Capture { path: path.clone(), source })?;
    let file = out.into_inner().map_err(|e| Error::Io { path: path.clone(), source: e.into_error() })?;
    file.sync_all().map_err(|source| Error::Io { path, source })?;
    Ok(RecordSummary {
        samples: stats.samples,
        stacks: stats.stacks,
        processes,
        objects,
        lost,
        file_bytes: stats.file_bytes,
        elapsed: started.elapsed(),
        cpu_time: own_cpu_time().saturating_sub(cpu_at_start),
        child_exit: child.and_then(|mut c| c.try_wait()),
    })
}
