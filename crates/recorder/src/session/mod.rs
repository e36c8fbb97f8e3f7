//! One recording: events from the BPF ring buffer into the capture writer.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use libbpf_rs::RingBufferBuilder;
use profcap_format::rules::{is_filtered, settings};
use profcap_format::{CaptureWriter, Meta, WriteOptions};

use crate::mem::{SamplerFile, SamplerRing};
use crate::mmap_events::{MapEvent, MmapEvents};
use crate::probes::{Event, MemProbes, OffCpuOptions, ProbeOptions, Probes, Targets};
use crate::procfs;
use crate::spawn::{spawn_held, RunningChild};
use events::Batch;

mod events;
mod material;
mod output;
mod space;

use crate::unwind::UnwindTable;
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
    /// Exit code of the spawned command, if one was spawned and it ended.
    pub child_exit: Option<i32>,
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
    later: Batch,
}

impl Session {
    fn write<T>(&mut self, r: profcap_format::Result<T>) -> Result<T> {
        r.map_err(|source| Error::Capture { path: self.path.clone(), source })
    }
}

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
) -> Vec<Loss> {
    let mut out = probes.drops();
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

/// Takes what the three sources hold now. The mapping records are drained
/// after the BPF ring: every mapping a consumed sample lies in was reported
/// before that sample was taken.
fn collect(
    queue: &RefCell<Vec<Option<Event>>>,
    mmap_events: Option<&mut MmapEvents>,
    sampler_ring: Option<&mut SamplerRing>,
) -> Batch {
    Batch {
        events: std::mem::take(&mut *queue.borrow_mut()),
        maps: mmap_events.map(MmapEvents::drain).unwrap_or_default(),
        records: sampler_ring.map(SamplerRing::drain).unwrap_or_default(),
    }
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
            (opts.offcpu, settings::MIN_BLOCK_NS, opts.min_block.as_nanos().to_string()),
            (opts.requests, settings::PAYLOAD_BYTES, opts.payload_bytes.to_string()),
            (opts.mem == MemMode::Sampled, settings::SAMPLE_BYTES, opts.sample_bytes.to_string()),
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
    let (mut output, file) = output::Output::create(&opts.output)?;
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
        foreign_ring_records: 0,
        all_processes: opts.target == Target::All,
        payload_raw: opts.payload_raw,
        pending: HashMap::new(),
        pending_count: 0,
        later: Batch::default(),
    };
    let mut meta = base_meta(opts);
    let r = session.writer.push_meta(meta.clone());
    session.write(r)?;

    if let (MemMode::Sampled, Target::Spawn(argv)) = (opts.mem, &opts.target) {
        crate::mem::check_preloadable(argv.first().map_or("", String::as_str))?;
    }
    let sampler = match opts.mem {
        MemMode::Sampled => Some(SamplerFile::create()?),
        _ => None,
    };
    session.sampler_path = sampler.as_ref().map(|s| s.mapped_as().to_owned());
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
    // Opened before the targets' /proc is read, so no mapping falls between.
    let mut mmap_events = match MmapEvents::open(&crate::probes::online_cpus()) {
        Ok(m) => Some(m),
        Err(e) => {
            log::warn!(
                "cannot open the kernel's mapping records ({e}): processes that exit within \
                 milliseconds may keep unnamed frames"
            );
            None
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
    // Recording has started: only now does the capture replace what was there.
    output.commit()?;
    let mut live: BTreeSet<u32> = match &targets {
        Targets::Pids { pids, .. } => pids.iter().copied().collect(),
        Targets::All => BTreeSet::new(),
    };

    let mut last_liveness_check = Instant::now();
    let follow = matches!(targets, Targets::Pids { .. });
    loop {
        // Woken at once by process events; samples are collected on this timer.
        let timeout = session.next_rescan_in().unwrap_or(POLL_INTERVAL).min(POLL_INTERVAL);
        // Only what happened before `cut` is handled in this pass (see Batch).
        let cut = monotonic_ns();
        let r = ring.poll(timeout).and_then(|()| ring.consume());
        match r {
            // A signal (Ctrl-C, SIGTERM) interrupted the wait: the stop flag says the rest.
            Err(e) if e.kind() == libbpf_rs::ErrorKind::Interrupted => {}
            Err(e) if !stop.load(Ordering::Relaxed) => log::warn!("ring buffer poll: {e}"),
            _ => {}
        }
        session.due_rescans();
        let child_done = child.as_mut().is_some_and(|c| c.try_wait().is_some());
        let out_of_time = opts.duration.is_some_and(|d| started.elapsed() >= d);
        let mut finished = stop.load(Ordering::Relaxed) || child_done || out_of_time;
        if !opts.test_handle_late.is_zero() && !queue.borrow().is_empty() {
            std::thread::sleep(opts.test_handle_late);
        }
        let batch = collect(&queue, mmap_events.as_mut(), sampler_ring.as_mut());
        session.process_batch(&probes, batch, Some(cut), follow.then_some(&mut live))?;
        if session.all_processes {
            session.prune_pending(monotonic_ns());
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
        if finished {
            break;
        }
    }
    // Take what is still in the ring buffer, the target's exit included, and
    // everything held back for a later pass.
    let _ = ring.consume();
    let batch = collect(&queue, mmap_events.as_mut(), sampler_ring.as_mut());
    session.process_batch(&probes, batch, None, follow.then_some(&mut live))?;
    drop(ring);
    if let Some(sampler) = &session.sampler_path {
        if !session.objects.iter().any(|o| &o.path == sampler) {
            log::warn!(
                "the allocation sampler was never loaded into the command (a statically linked \
                 program ignores LD_PRELOAD): no allocations were recorded; use --mem without --preload"
            );
        }
    }
    let counts = (session.malformed_events, session.foreign_ring_records);
    let losses = losses(&probes, sampler_ring.as_ref(), mmap_events.as_ref(), counts);
    session.finish_material(opts.embed, &losses)?;
    meta.end_wall_ns = wall_ns();
    meta.end_mono_ns = monotonic_ns();
    let recovered = probes.offcpu_recovered();
    if recovered > 0 {
        log::info!(
            "{recovered} off-CPU block(s) ended by a switch the tracepoint missed; rebuilt from the thread's run time"
        );
        meta.extra.push((settings::OFFCPU_RECOVERED.into(), recovered.to_string()));
    }
    let r = session.writer.push_meta(meta);
    session.write(r)?;
    // Blocks shorter than --min-block are filtered by choice, not lost.
    let lost: u64 = losses.iter().filter(|(_, reason, _)| !is_filtered(reason)).map(|(_, _, n)| n).sum();
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
