//! Ending one capture file and starting the next: at the end of a recording,
//! and at every boundary of a continuous one (`--rotate`).
//!
//! A boundary is a time B (CLOCK_MONOTONIC, the clock of every event): the
//! events up to B go into the file that ends, the later ones into the next,
//! so consecutive files neither overlap nor leave a gap. A pass of the
//! recording loop handles events only up to its cut (see `events::Batch`);
//! with a boundary pending, no pass goes past B, and the file ends once a
//! cut is [`MARGIN`] past B, when every event up to B has surely reached
//! the ring (an event is submitted microseconds after its time is taken).
//!
//! Each file is self-contained: it starts by describing every live process,
//! its mappings and threads again, and ends with the symbols, kernel symbols
//! and losses of what it holds.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use profcap_format::rules::settings;
use profcap_format::{Meta, WriteStats};

use super::directory::Directory;
use super::output::Output;
use super::run::Sources;
use super::{losses, monotonic_ns, wall_ns, Loss, Session};
use crate::{Error, RecordOptions, Result};

/// How far past a boundary a cut must be before the file ends.
const MARGIN_NS: u64 = 1_000_000;
/// How often the status file is rewritten.
const STATUS_EVERY: Duration = Duration::from_secs(5);

/// Set by SIGHUP: end the current file now.
static HANGUP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_hangup(_: libc::c_int) {
    HANGUP.store(true, Ordering::Relaxed);
}

/// SIGHUP starts a new file (as `systemctl reload` sends it). No
/// SA_RESTART: the ring's wait returns at once.
pub(super) fn install_hangup_handler() {
    // SAFETY: the handler only stores to an atomic (async-signal-safe); the
    // sigaction struct is zeroed and then filled in.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_hangup as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGHUP, &sa, std::ptr::null_mut());
    }
}

/// A continuous recording's state beside the session.
#[derive(Debug)]
pub(super) struct Rotating {
    pub(super) directory: Directory,
    /// Where the current file ends (monotonic ns), once known.
    boundary: Option<u64>,
    /// The same in wall-clock time, where it was scheduled by it.
    boundary_wall: Option<u64>,
    /// Files written so far.
    pub(super) files: u64,
    status_at: Instant,
    started_wall_ns: u64,
    /// A message for the status file: the last deletion for lack of space.
    last_problem: String,
}

impl Rotating {
    pub(super) fn new(directory: Directory) -> Rotating {
        Rotating {
            directory,
            boundary: None,
            boundary_wall: None,
            files: 0,
            status_at: Instant::now(),
            started_wall_ns: wall_ns(),
            last_problem: String::new(),
        }
    }
}

/// Counters already reported in earlier files (each file says its own share).
#[derive(Debug, Default)]
pub(super) struct Reported {
    losses: HashMap<(&'static str, &'static str), u64>,
    unwound: u64,
    walk_ns: u64,
    python: u64,
    recovered: u64,
    cpu_ns: u64,
    /// Totals of the files finished.
    pub(super) samples: u64,
    pub(super) stacks: u64,
    pub(super) bytes: u64,
    pub(super) lost: u64,
}

/// Bursts of events the ring buffer could not take, as time ranges: each
/// pass reads the kernel's count of them; a pass whose count grew lost
/// events between the last cut and its own.
#[derive(Debug, Default)]
pub(super) struct Gaps {
    counted: u64,
    /// The gap still growing: (from, to, events).
    open: Option<(u64, u64, u64)>,
}

/// The wall-clock time of a monotonic one, by the clocks' offset now.
fn wall_of(mono_ns: u64) -> u64 {
    let (wall, mono) = (wall_ns(), monotonic_ns());
    (wall as i128 + (mono_ns as i128 - mono as i128)).clamp(0, i128::from(u64::MAX)) as u64
}

impl Session {
    /// The cut a pass may handle events up to: never past a pending boundary.
    pub(super) fn pass_cut(&self, cut: u64) -> u64 {
        match self.rotation.as_ref().and_then(|r| r.boundary) {
            Some(b) => cut.min(b),
            None => cut,
        }
    }

    /// After a pass: notes a boundary that became due (SIGHUP, size), ends
    /// the file once the cut is past it, keeps the directory in budget.
    pub(super) fn after_pass(&mut self, opts: &RecordOptions, src: &Sources<'_>, cut: u64) -> Result<()> {
        let bytes = self.writer.stats().file_bytes;
        let Some(rot) = self.rotation.as_mut() else { return Ok(()) };
        let handled = self.handled_to;
        if HANGUP.swap(false, Ordering::Relaxed) {
            log::info!("SIGHUP: ending {}", self.path.display());
            if rot.boundary.is_none_or(|b| handled < b) {
                (rot.boundary, rot.boundary_wall) = (Some(handled), None);
            }
        }
        if rot.boundary.is_none() && rot.directory.is_full(bytes) {
            rot.boundary = Some(handled);
        }
        if let Some(b) = rot.boundary.filter(|&b| cut >= b.saturating_add(MARGIN_NS)) {
            self.next_file(opts, src, b)?;
        }
        let Some(rot) = self.rotation.as_mut() else { return Ok(()) };
        for name in rot.directory.enforce(bytes, wall_ns()) {
            rot.last_problem = format!("deleted {name} to stay within the disk budget");
        }
        if rot.status_at.elapsed() >= STATUS_EVERY {
            self.write_status("recording");
        }
        Ok(())
    }

    /// Schedules the end of the current file (time rotation): the next
    /// multiple of the period in wall-clock time.
    pub(super) fn schedule_boundary(&mut self) {
        let Some(rot) = self.rotation.as_mut() else { return };
        let (wall, mono) = (wall_ns(), monotonic_ns());
        rot.boundary_wall = rot.directory.next_boundary_wall(wall);
        rot.boundary = rot.boundary_wall.map(|b| mono.saturating_add(b - wall));
    }

    /// Notes the ring's losses since the last pass (handled up to `from`,
    /// now up to `to`); a gap that stopped growing is written.
    pub(super) fn note_gaps(&mut self, src: &Sources<'_>, (from, to): (u64, u64)) -> Result<()> {
        let total = src.probes.ring_full_drops();
        let new = total.saturating_sub(self.gaps.counted);
        self.gaps.counted = total;
        match (&mut self.gaps.open, new) {
            (Some((_, end, n)), new) if new > 0 && *end >= from => {
                *end = to;
                *n += new;
                Ok(())
            }
            (_, 0) => self.close_gap(),
            (_, new) => {
                self.close_gap()?;
                self.gaps.open = Some((from, to, new));
                Ok(())
            }
        }
    }

    /// Writes the gap that was growing, if any.
    pub(super) fn close_gap(&mut self) -> Result<()> {
        let Some((from_ns, to_ns, count)) = self.gaps.open.take() else { return Ok(()) };
        log::warn!(
            "{count} events lost in {:.2} s (ring buffer full: profrec fell behind)",
            (to_ns - from_ns) as f64 / 1e9
        );
        let lost = profcap_format::Lost {
            source: profcap_format::rules::GAP_LOSS_SOURCE.into(),
            reason: "ring buffer full".into(),
            count,
            from_ns,
            to_ns,
        };
        let r = self.writer.push_lost(lost);
        self.write(r)
    }

    /// This file's share of every loss counter.
    pub(super) fn file_losses(&mut self, src: &Sources<'_>) -> Vec<Loss> {
        let counts = (self.malformed_events, self.foreign_ring_records);
        let all = losses(
            src.probes,
            src.sampling.ring.as_ref(),
            src.mmap_events.as_ref(),
            counts,
            &self.python.counts,
        );
        let mut out = Vec::new();
        for (source, reason, total) in all {
            let before = self.reported.losses.insert((source, reason), total).unwrap_or(0);
            if total > before {
                out.push((source, reason, total - before));
            }
        }
        out
    }

    /// Ends the current file's content at `end_mono`: the material its
    /// stacks need, its losses, and its final metadata. Returns the losses
    /// that count as lost.
    pub(super) fn end_file(
        &mut self,
        opts: &RecordOptions,
        src: &Sources<'_>,
        (end_mono, end_wall): (u64, u64),
    ) -> Result<u64> {
        self.note_gaps(src, (self.handled_to, end_mono))?;
        self.close_gap()?;
        let losses = self.file_losses(src);
        // The events first, in chunks of their own: the material's chunks
        // are then what `info` counts as such.
        let r = self.writer.flush();
        self.write(r)?;
        self.finish_material(opts.embed, &losses)?;
        let mut meta = self.meta.clone();
        meta.end_mono_ns = end_mono;
        meta.end_wall_ns = end_wall;
        let r = &mut self.reported;
        let mut extra = |key: &str, now: u64, before: &mut u64| {
            if now > *before {
                meta.extra.push((key.into(), (now - *before).to_string()));
            }
            *before = now;
        };
        extra(settings::OFFCPU_RECOVERED, src.probes.offcpu_recovered(), &mut r.recovered);
        let u = &self.unwinding.stats;
        extra(settings::UNWOUND_STACKS, u.stacks, &mut r.unwound);
        extra(settings::UNWIND_WALK_NS, u.walk_time.as_nanos() as u64, &mut r.walk_ns);
        extra(settings::PYTHON_EVENTS, self.python.counts.with_frames, &mut r.python);
        let (cpu, max_rss_kib) = super::own_usage();
        extra(settings::RECORDER_CPU_NS, cpu.as_nanos() as u64, &mut r.cpu_ns);
        meta.extra.push((settings::RECORDER_MAX_RSS_KIB.into(), max_rss_kib.to_string()));
        let r = self.writer.push_meta(meta);
        self.write(r)?;
        Ok(losses
            .iter()
            .filter(|(source, reason, _)| {
                !profcap_format::rules::is_filtered(reason) && *source != super::PYTHON
            })
            .map(|(_, _, n)| n)
            .sum())
    }

    /// Ends the current file at `boundary` and starts the next one.
    fn next_file(&mut self, opts: &RecordOptions, src: &Sources<'_>, boundary: u64) -> Result<()> {
        let Some(rot) = self.rotation.as_mut() else { return Ok(()) };
        let end_wall = rot.boundary_wall.take().unwrap_or_else(|| wall_of(boundary));
        let lost = self.end_file(opts, src, (boundary, end_wall))?;
        let Some(rot) = self.rotation.as_mut() else { return Ok(()) };
        let path = rot.directory.path_for(end_wall);
        let (output, file) = Output::create(&path)?;
        let writer = self.new_writer(file)?;
        let old_writer = std::mem::replace(&mut self.writer, writer);
        let old_output = std::mem::replace(&mut self.output, output);
        let old_path = std::mem::replace(&mut self.path, path);
        let stats = seal(old_writer, &old_path)?;
        self.close(old_output, &old_path, stats, lost, end_wall)?;
        let mut meta = super::base_meta(opts);
        meta.start_mono_ns = boundary;
        meta.start_wall_ns = end_wall;
        self.start_file(meta)?;
        self.schedule_boundary();
        self.write_status("recording");
        Ok(())
    }

    /// The current file's writer and output, for the end of the recording.
    /// A writer to /dev/null takes the writer's place, so the session's
    /// counters stay readable for the summary and the status file.
    pub(super) fn take_file(&mut self) -> Result<(Writer, Output)> {
        let null = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .map_err(|source| Error::Io { path: "/dev/null".into(), source })?;
        let stand_in = self.new_writer(null)?;
        let writer = std::mem::replace(&mut self.writer, stand_in);
        Ok((writer, std::mem::replace(&mut self.output, Output::done())))
    }

    /// A write that failed because the disk is full, in a continuous
    /// recording: the file being written is dropped (its events are lost,
    /// and the next file says how many), the oldest capture is deleted, and
    /// recording goes on in a new file. Any other error stops the recording.
    pub(super) fn survive_full_disk(&mut self, r: Result<()>) -> Result<()> {
        let Err(e) = r else { return Ok(()) };
        if self.rotation.is_none() || !disk_full(&e) {
            return Err(e);
        }
        let dropped = self.writer.stats().samples;
        let Some(rot) = self.rotation.as_mut() else { return Err(e) };
        let freed = rot.directory.delete_oldest("disk full");
        rot.directory.deleted_for_space += u64::from(freed.is_some());
        log::error!(
            "disk full writing {}: dropped it ({dropped} samples){}; recording goes on in a new file",
            self.path.display(),
            freed.map_or_else(String::new, |f| format!(" and deleted the oldest capture {f}"))
        );
        rot.last_problem = format!("disk full: dropped the capture being written ({dropped} samples)");
        let wall = wall_ns();
        let path = rot.directory.path_for(wall);
        let (output, file) = Output::create(&path)?;
        self.writer = self.new_writer(file)?;
        self.output = output;
        self.path = path;
        let mut meta = self.meta.clone();
        meta.start_mono_ns = self.handled_to;
        meta.start_wall_ns = wall_of(self.handled_to);
        self.start_file(meta)?;
        let lost = profcap_format::Lost {
            source: "capture".into(),
            reason: "disk full: the capture being written was dropped".into(),
            count: dropped,
            ..Default::default()
        };
        self.reported.lost += dropped;
        let r = self.writer.push_lost(lost);
        self.write(r)
    }

    /// Names a finished file and counts it.
    pub(super) fn close(
        &mut self,
        mut output: Output,
        path: &std::path::Path,
        stats: WriteStats,
        lost: u64,
        end_wall: u64,
    ) -> Result<()> {
        output.commit()?;
        let r = &mut self.reported;
        r.samples += stats.samples;
        r.stacks += stats.stacks;
        r.bytes += stats.file_bytes;
        r.lost += lost;
        if let Some(rot) = self.rotation.as_mut() {
            rot.files += 1;
            rot.directory.finished(path, stats.file_bytes, end_wall);
            log::info!(
                "wrote {} ({} samples, {:.1} MiB, {lost} lost)",
                path.display(),
                stats.samples,
                stats.file_bytes as f64 / (1 << 20) as f64
            );
        }
        Ok(())
    }

    /// Starts a file: its metadata, then every live process, mapping and
    /// thread again, so that the file can be read alone.
    pub(super) fn start_file(&mut self, meta: Meta) -> Result<()> {
        let r = self.writer.push_meta(meta.clone());
        self.write(r)?;
        self.meta = meta;
        // Processes that exited in the last file are not described again.
        self.reap_exited(None);
        self.mem_stacks.clear();
        self.java_stacks.clear();
        self.kernel_addrs.clear();
        self.requests = 0;
        self.python.new_file();
        self.seen_pids.clear();
        // Objects no live process maps any more are closed (a long
        // recording of a busy machine sees many); a later mapping reopens them.
        let mapped: HashSet<usize> =
            self.procs.values().flat_map(|p| p.maps.iter().map(|m| m.object)).collect();
        for (i, o) in self.objects.iter_mut().enumerate() {
            o.used = false;
            o.offsets.clear();
            if !mapped.contains(&i) && o.file.is_some() {
                o.file = None;
                o.retired = true;
                self.unwinding.forget_object(i);
            }
        }
        let procs = &self.procs;
        self.thread_names.retain(|_, (pid, _)| procs.contains_key(pid));
        let mut pids: Vec<u32> = self.procs.keys().copied().collect();
        pids.sort_unstable();
        for pid in pids {
            self.describe_again(pid)?;
        }
        let mut threads: Vec<_> =
            self.thread_names.iter().map(|(&tid, (pid, name))| (tid, *pid, name.clone())).collect();
        threads.sort_unstable();
        for (tid, pid, name) in threads {
            let thread = profcap_format::Thread { pid, tid, name, seen_ns: self.meta.start_mono_ns };
            let r = self.writer.push_thread(thread);
            self.write(r)?;
        }
        Ok(())
    }

    /// Writes the status file of a continuous recording (`profrec --status`).
    pub(super) fn write_status(&mut self, state: &str) {
        let samples = self.reported.samples + self.writer.stats().samples;
        let Some(rot) = self.rotation.as_mut() else { return };
        rot.status_at = Instant::now();
        let time = |ns: u64| {
            jiff::Timestamp::from_nanosecond(i128::from(ns))
                .map_or_else(|_| ns.to_string(), |t| t.to_string())
        };
        let file = self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let lines = [
            ("state", state.to_owned()),
            ("pid", std::process::id().to_string()),
            ("started", time(rot.started_wall_ns)),
            ("updated", time(wall_ns())),
            ("recording", self.meta.events.join(",")),
            ("command", self.meta.command_line.join(" ")),
            ("current_file", if state == "recording" { file } else { String::new() }),
            ("current_since", time(self.meta.start_wall_ns)),
            ("files", rot.directory.file_count().to_string()),
            ("files_written", rot.files.to_string()),
            ("bytes", rot.directory.total_bytes().to_string()),
            ("samples", samples.to_string()),
            ("lost", self.reported.lost.to_string()),
            ("deleted_for_space", rot.directory.deleted_for_space.to_string()),
            ("deleted_by_retention", rot.directory.deleted_by_retention.to_string()),
            ("problem", rot.last_problem.clone()),
        ];
        let text: String = lines.iter().map(|(k, v)| format!("{k}={}\n", v.replace('\n', " "))).collect();
        if let Err(e) = write_atomic(&rot.directory.dir.join(super::directory::STATUS_FILE), text.as_bytes())
        {
            log::warn!("cannot write the status file: {e}");
        }
    }
}

type Writer = profcap_format::CaptureWriter<std::io::BufWriter<std::fs::File>>;

/// Finishes a writer: index, trailer, and the data on disk.
pub(super) fn seal(writer: Writer, path: &std::path::Path) -> Result<WriteStats> {
    let (out, stats) = writer.finish().map_err(|source| Error::Capture { path: path.to_owned(), source })?;
    let file = out.into_inner().map_err(|e| Error::Io { path: path.to_owned(), source: e.into_error() })?;
    file.sync_all().map_err(|source| Error::Io { path: path.to_owned(), source })?;
    Ok(stats)
}

/// Whether an error is the disk (or quota) being full.
fn disk_full(e: &Error) -> bool {
    let io = match e {
        Error::Capture { source: profcap_format::Error::Write(io), .. } => io,
        Error::Io { source, .. } => source,
        _ => return false,
    };
    matches!(io.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

/// Replaces `path` with `bytes` (a new 0600 file renamed over it).
fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().map_or_else(|| PathBuf::from("."), std::path::Path::to_path_buf);
    let mut f = tempfile::Builder::new()
        .prefix(".profrec.status.")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .tempfile_in(dir)?;
    f.write_all(bytes)?;
    f.persist(path).map_err(|e| e.error)?;
    Ok(())
}
