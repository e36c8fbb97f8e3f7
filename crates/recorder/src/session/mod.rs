//! One recording: events from the BPF ring buffer into the capture writer.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use profcap_format::rules::settings;
use profcap_format::{CaptureWriter, Meta, WriteOptions};

use crate::mem::SamplerRing;
use crate::mmap_events::{MapEvent, MmapEvents};
use crate::probes::{Probes, Targets};
use crate::procfs;
use events::HeldBack;

mod directory;
mod events;
mod java;
mod material;
mod output;
mod rotate;
mod run;
mod setup;
mod space;

pub use directory::{capture_name, capture_time, STATUS_FILE};

use crate::unwind::Unwinding;
use crate::{Error, MemMode, RecordOptions, Result, Target};
use space::{Object, ProcState};

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
    /// profrec's peak resident memory (KiB).
    pub max_rss_kib: u64,
    /// Exit code of the spawned command, if one was spawned and it ended.
    pub child_exit: Option<i32>,
    /// User stacks unwound (DWARF) and the time the walks took.
    pub unwound_stacks: u64,
    pub unwind_time: Duration,
    /// Captures written (1, or those of a continuous recording).
    pub files: u64,
}

/// How often samples are collected from the ring buffer.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the valid timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as u64)
}

fn own_cpu_time() -> Duration {
    own_usage().0
}

/// profrec's CPU time (user + system, all threads) and peak resident memory (KiB).
fn own_usage() -> (Duration, u64) {
    // SAFETY: getrusage writes into the zeroed rusage we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_SELF is always valid.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32).saturating_mul(1000));
    (tv(ru.ru_utime) + tv(ru.ru_stime), u64::try_from(ru.ru_maxrss).unwrap_or(0))
}

fn wall_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

struct Session {
    writer: CaptureWriter<BufWriter<File>>,
    path: PathBuf,
    /// The file being written, put in its place at the start (one capture)
    /// or once finished (`--rotate`).
    output: output::Output,
    /// The current file's starting metadata.
    meta: Meta,
    write_options: WriteOptions,
    /// Events are handled up to this time (the last pass's cut).
    handled_to: u64,
    /// Continuous recording (`--rotate`).
    rotation: Option<rotate::Rotating>,
    /// What earlier files reported, and their totals.
    reported: rotate::Reported,
    /// Bursts the ring buffer lost, as time ranges.
    gaps: rotate::Gaps,
    procs: HashMap<u32, ProcState>,
    /// Processes that exited, forgotten once late events can no longer
    /// come: (exit time, pid, generation).
    exited: Vec<(u64, u32, u64)>,
    /// The latest description of each live process, written again at the
    /// start of each file.
    described: HashMap<u32, profcap_format::Process>,
    objects: Vec<Object>,
    object_ids: HashMap<(u32, u32, u64, String), usize>,
    /// Each thread's process and latest name.
    thread_names: HashMap<u32, (u32, String)>,
    kernel_addrs: BTreeSet<u64>,
    malformed_events: u64,
    /// DWARF unwinding of the copied user stacks.
    unwinding: Unwinding,
    /// Keep each sample's registers and stack bytes (`--keep-stacks`).
    keep_stacks: bool,
    /// Where detached debug files are looked for.
    debug_dirs: Vec<PathBuf>,
    /// Frames of off-CPU stack-map ids already read.
    offcpu_stacks: HashMap<i32, std::rc::Rc<[u64]>>,
    /// Pending map re-reads after an exec: (when, pid).
    rescans: Vec<(Instant, u32)>,
    /// Distinct pids described in the capture.
    seen_pids: std::collections::HashSet<u32>,
    /// Request events written so far (their ids count from 1).
    requests: u64,
    /// Capture stack ids of allocation stack-map ids already read.
    mem_stacks: HashMap<i32, u64>,
    /// How the last stack unwound from bytes ended, and how far up it read.
    last_unwind: Option<(profcap_format::StackEnd, u64)>,
    /// The stack tops told to the kernel, by tid (see `learn_stack_top`).
    stack_tops: HashMap<u32, u64>,
    /// JVM allocation samples: capture stack ids by (stack-map id, Klass*).
    java_stacks: HashMap<(i32, u64), u64>,
    /// Class names of the JVMs' sampled objects.
    java: crate::mem::JavaClasses,
    /// JVM allocation samples whose class could not be read.
    java_unnamed: u64,
    /// The preloaded sampler library, whose frames are cut from allocation stacks.
    sampler_path: Option<String>,
    /// Sampler ring records that named a process not recorded (dropped).
    foreign_ring_records: u64,
    /// Keep credential header values in socket payloads (`--payload-raw`).
    payload_raw: bool,
    /// Every process is recorded (`--all`), not only the targets and their children.
    all_processes: bool,
    /// The kernel's exec and mapping records of processes not yet known, by pid.
    pending: HashMap<u32, Vec<MapEvent>>,
    pending_count: usize,
    /// What happened after the last pass's cut, handled in the next pass.
    later: HeldBack,
    /// Python interpreters, their code objects, and the walk's counts.
    python: crate::python::Python,
}

impl Session {
    fn new(opts: &RecordOptions, path: PathBuf, meta: Meta) -> Result<Session> {
        let start_mono = meta.start_mono_ns;
        let mut write_options = WriteOptions::default();
        if opts.keep_stacks {
            // Raw stacks of one thread differ little from sample to sample:
            // chunks of many of them compress far better.
            // (xz at 999 Hz: 96 instead of 102 bytes per sample.)
            write_options.chunk_bytes = 8 << 20;
        }
        let (output, file) = output::Output::create(&path)?;
        let writer = CaptureWriter::new(BufWriter::with_capacity(1 << 20, file), write_options.clone())
            .map_err(|source| Error::Capture { path: path.clone(), source })?;
        Ok(Session {
            writer,
            path,
            output,
            meta,
            write_options,
            handled_to: start_mono,
            rotation: None,
            reported: rotate::Reported::default(),
            gaps: rotate::Gaps::default(),
            procs: HashMap::new(),
            exited: Vec::new(),
            described: HashMap::new(),
            objects: Vec::new(),
            object_ids: HashMap::new(),
            thread_names: HashMap::new(),
            kernel_addrs: BTreeSet::new(),
            malformed_events: 0,
            seen_pids: Default::default(),
            rescans: Vec::new(),
            offcpu_stacks: HashMap::new(),
            unwinding: Unwinding::new(),
            keep_stacks: opts.keep_stacks,
            debug_dirs: opts.debug_dirs.clone(),
            requests: 0,
            mem_stacks: HashMap::new(),
            java_stacks: HashMap::new(),
            last_unwind: None,
            stack_tops: HashMap::new(),
            java: crate::mem::JavaClasses::default(),
            java_unnamed: 0,
            sampler_path: None,
            foreign_ring_records: 0,
            all_processes: opts.target == Target::All,
            payload_raw: opts.payload_raw,
            pending: HashMap::new(),
            pending_count: 0,
            later: HeldBack::default(),
            python: crate::python::Python::default(),
        })
    }

    /// A writer for the next file of a continuous recording.
    fn new_writer(&self, file: File) -> Result<CaptureWriter<BufWriter<File>>> {
        CaptureWriter::new(BufWriter::with_capacity(1 << 20, file), self.write_options.clone())
            .map_err(|source| Error::Capture { path: self.path.clone(), source })
    }

    fn write<T>(&mut self, r: profcap_format::Result<T>) -> Result<T> {
        r.map_err(|source| Error::Capture { path: self.path.clone(), source })
    }
}

use profcap_format::rules::PYTHON_LOSS_SOURCE as PYTHON;

/// Events lost or filtered out, by (source, reason): what the capture's
/// Lost records say and what the summary counts.
type Loss = (&'static str, &'static str, u64);

/// Every non-zero loss: dropped in the kernel, malformed on arrival, and
/// dropped or damaged in the preloaded sampler's ring.
fn losses(
    probes: &Probes,
    sampler_ring: Option<&SamplerRing>,
    mmap_events: Option<&MmapEvents>,
    (malformed_events, foreign_ring_records): (u64, u64),
    python: &crate::python::PyCounts,
) -> Vec<Loss> {
    let mut out = probes.drops();
    out.push((PYTHON, "thread state not found", python.no_thread));
    out.push((PYTHON, "read of the interpreter's memory failed", python.read_failed));
    out.push((PYTHON, "more than 128 frames, the outermost left out", python.depth));
    out.push((PYTHON, "code object not readable (freed or changed)", python.unreadable_code));
    out.push(("bpf", "malformed event", malformed_events));
    if let Some(r) = sampler_ring {
        out.push(("mem", "sampler ring full", r.dropped()));
        out.push(("mem", "sampler ring record damaged", r.malformed));
        out.push(("mem", "sampler ring record of a process not recorded", foreign_ring_records));
    }
    if let Some(m) = mmap_events {
        out.push(("maps", "mapping records lost (perf ring full)", m.lost));
        out.push(("maps", "malformed mapping record", m.malformed));
    }
    out.retain(|&(_, _, count)| count > 0);
    out
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
            (opts.hbm, "hbm"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, name)| (*name).to_owned())
        .collect(),
        extra: [
            (opts.offcpu, settings::MIN_BLOCK_NS, opts.min_block.as_nanos().to_string()),
            (opts.requests, settings::PAYLOAD_BYTES, opts.payload_bytes.to_string()),
            (opts.mem == MemMode::Sampled, settings::SAMPLE_BYTES, opts.sample_bytes.to_string()),
            (opts.stack_bytes > 0, settings::STACK_BYTES, opts.stack_bytes.to_string()),
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
    let meta = base_meta(opts);
    let directory = match &opts.rotate {
        Some(rotation) => Some(directory::Directory::open(&opts.output, rotation, &meta.hostname)?),
        None => None,
    };
    let path = directory.as_ref().map_or_else(|| opts.output.clone(), |d| d.path_for(meta.start_wall_ns));
    let mut session = Session::new(opts, path, meta.clone())?;
    let r = session.writer.push_meta(meta);
    session.write(r)?;
    if let Some(d) = directory {
        log::info!("recording into {} ({})", d.dir.display(), directory::describe(d.every()));
        session.rotation = Some(rotate::Rotating::new(d));
        session.schedule_boundary();
        rotate::install_hangup_handler();
    }
    let sampling = setup::Sampling::prepare(opts)?;
    session.sampler_path = sampling.library.as_ref().map(|s| s.mapped_as().to_owned());
    if let Target::Spawn(argv) = &opts.target {
        let files = argv.first().map(|a| crate::mem::interpreter_candidates(a)).unwrap_or_default();
        session.python.examine_ahead(&files);
    }
    let (targets, held) = setup::targets(opts, &sampling)?;
    let probes = Probes::load(&targets, &setup::probe_options(opts, &held, &sampling)?)?;
    // The command (if any) is forked already: only profrec's thread is raised.
    set_priority(opts.nice);
    // Opened before the targets' /proc is read, so no mapping falls between.
    let mmap_events = open_mmap_events();
    let started = Instant::now();
    let now = monotonic_ns();
    if let Targets::Pids { pids, .. } = &targets {
        for &pid in pids {
            session.scan_process(pid, if held.pid().is_some() { now } else { 0 }, now);
        }
    }
    // Set up before the child runs: mapping the ring buffer takes a few ms
    // of kernel time that should not compete with the target's start.
    let (ring, queue) = run::event_ring(&probes)?;
    let child = held.release()?;
    // Recording has started: only now does the capture replace what was there
    // (a continuous recording's files get their names once complete).
    if session.rotation.is_none() {
        session.output.commit()?;
    }
    session.write_status("recording");
    let mut src = run::Sources { probes: &probes, ring, queue, mmap_events, sampling, targets, child };
    session.run(opts, &mut src, &stop)?;
    session.finish(opts, src, (started, cpu_at_start))
}

/// Sets the calling thread's nice value (Linux's is per thread).
fn set_priority(nice: i32) {
    if nice == 0 {
        return;
    }
    // SAFETY: setpriority has no memory preconditions; `0` names this thread.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice.clamp(-20, 19)) } != 0 {
        log::debug!("cannot set profrec's priority: {}", std::io::Error::last_os_error());
    }
}

/// The kernel's exec and mapping records, or a warning saying what is lost without them.
fn open_mmap_events() -> Option<MmapEvents> {
    MmapEvents::open(&crate::probes::online_cpus())
        .map_err(|e| {
            log::warn!(
                "cannot open the kernel's mapping records ({e}): processes that exit within \
                 milliseconds may keep unnamed frames"
            )
        })
        .ok()
}
