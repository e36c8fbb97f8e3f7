//! The recording loop, and what is written once it ends.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::events::Batch;
use super::setup::Sampling;
use super::{monotonic_ns, own_cpu_time, wall_ns, RecordSummary, Session, POLL_INTERVAL};
use crate::mmap_events::MmapEvents;
use crate::probes::{Event, Probes, Targets};
use crate::spawn::RunningChild;
use crate::{procfs, Error, RecordOptions, Result, Target};

/// Events the ring's callback decoded (`None`: malformed), waiting for a pass.
pub(super) type EventQueue = Rc<RefCell<Vec<Option<Event>>>>;

/// Where a recording's input comes from, and what it follows.
pub(super) struct Sources<'a> {
    pub(super) probes: &'a Probes,
    pub(super) ring: libbpf_rs::RingBuffer<'a>,
    pub(super) queue: EventQueue,
    pub(super) mmap_events: Option<MmapEvents>,
    pub(super) sampling: Sampling,
    pub(super) targets: Targets,
    pub(super) child: Option<RunningChild>,
}

/// The ring buffer of `probes`, decoding each record into the queue.
/// How long a started command has to exit on SIGTERM when the recording
/// stops early, before it is killed.
const CHILD_GRACE: Duration = Duration::from_secs(2);

pub(super) fn event_ring(probes: &Probes) -> Result<(libbpf_rs::RingBuffer<'_>, EventQueue)> {
    let queue: EventQueue = Rc::default();
    let sink = Rc::clone(&queue);
    let mut builder = libbpf_rs::RingBufferBuilder::new();
    let added = builder.add(probes.events_map(), move |data: &[u8]| {
        sink.borrow_mut().push(Event::parse(data));
        0
    });
    let ring = added.map(|_| ()).and_then(|()| builder.build());
    let ring = ring.map_err(|e| Error::Bpf { what: "ring buffer".into(), detail: e.to_string() })?;
    Ok((ring, queue))
}

impl Sources<'_> {
    /// Takes what the three sources hold now. The mapping records are
    /// drained after the BPF ring: every mapping a consumed sample lies in
    /// was reported before that sample was taken.
    fn collect(&mut self) -> Batch {
        Batch {
            events: std::mem::take(&mut *self.queue.borrow_mut()),
            maps: self.mmap_events.as_mut().map(MmapEvents::drain).unwrap_or_default(),
            records: self.sampling.ring.as_mut().map(|r| r.drain()).unwrap_or_default(),
        }
    }

    /// Waits for the ring and reads it; the time taken before the read is
    /// the pass's cut (see [`Batch`]).
    fn poll(&self, timeout: Duration, stop: &AtomicBool) -> u64 {
        let cut = monotonic_ns();
        match self.ring.poll(timeout).and_then(|()| self.ring.consume()) {
            // A signal (Ctrl-C, SIGTERM) interrupted the wait: the stop flag says the rest.
            Err(e) if e.kind() == libbpf_rs::ErrorKind::Interrupted => {}
            Err(e) if !stop.load(Ordering::Relaxed) => log::warn!("ring buffer poll: {e}"),
            _ => {}
        }
        cut
    }
}

/// `d` rounded up to whole milliseconds. The ring's wait takes whole
/// milliseconds and cuts the rest: a rescan due in 0.4 ms made it wait 0 ms,
/// again and again until the rescan was due, and with a few hundred execs a
/// second (three rescans each) profrec spun through 170 000 passes a second.
fn whole_millis_up(d: Duration) -> Duration {
    Duration::from_millis(u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX))
}

impl Session {
    /// Records until the command exits, every target has exited, the
    /// duration passes, or `stop` is set; then handles what is left.
    pub(super) fn run(
        &mut self,
        opts: &RecordOptions,
        src: &mut Sources<'_>,
        stop: &AtomicBool,
    ) -> Result<()> {
        let started = Instant::now();
        let follow = matches!(src.targets, Targets::Pids { .. });
        let mut live: BTreeSet<u32> = match &src.targets {
            Targets::Pids { pids, .. } => pids.iter().copied().collect(),
            Targets::All => BTreeSet::new(),
        };
        let mut last_liveness_check = Instant::now();
        loop {
            // Woken at once by process events; samples are collected on this timer.
            let timeout = whole_millis_up(self.next_rescan_in().unwrap_or(POLL_INTERVAL).min(POLL_INTERVAL));
            let cut = src.poll(timeout, stop);
            self.due_rescans();
            self.update_python(src.probes);
            let child_done = src.child.as_mut().is_some_and(|c| c.try_wait().is_some());
            let out_of_time = opts.duration.is_some_and(|d| started.elapsed() >= d);
            let mut finished = stop.load(Ordering::Relaxed) || child_done || out_of_time;
            if !opts.test_handle_late.is_zero() && !src.queue.borrow().is_empty() {
                std::thread::sleep(opts.test_handle_late);
            }
            let batch = src.collect();
            let cut_now = self.pass_cut(cut);
            let r = self.process_batch(src.probes, batch, Some(cut_now), follow.then_some(&mut live));
            let r = r.and_then(|()| self.note_gaps(src, (self.handled_to, cut_now)));
            self.handled_to = cut_now;
            self.survive_full_disk(r)?;
            self.update_python(src.probes);
            if self.all_processes {
                self.prune_pending(monotonic_ns());
            }
            if matches!(opts.target, Target::Pids(_))
                && last_liveness_check.elapsed() > Duration::from_secs(1)
            {
                // Exit events can be lost when the ring buffer is full; /proc is the truth.
                live.retain(|&pid| procfs::exists(pid));
                last_liveness_check = Instant::now();
            }
            if matches!(opts.target, Target::Pids(_)) && live.is_empty() {
                log::info!("all target processes have exited");
                finished = true;
            }
            let r = self.writer.maybe_flush();
            let r = self.write(r);
            self.survive_full_disk(r)?;
            if finished {
                break;
            }
            let r = self.after_pass(opts, src, cut);
            self.survive_full_disk(r)?;
        }
        // Stopped early (-d, Ctrl-C, SIGTERM): a started command ends with
        // the recording unless --detach, so its exit is in the capture.
        if !opts.detach && matches!(opts.target, Target::Spawn(_)) {
            if let Some(child) = src.child.as_mut() {
                child.terminate(CHILD_GRACE);
            }
        }
        log::info!(
            "recording stopped after {:.2} s; writing the end of the capture",
            started.elapsed().as_secs_f64()
        );
        // Take what is still in the ring buffer, the target's exit included, and
        // everything held back for a later pass.
        let _ = src.ring.consume();
        let batch = src.collect();
        self.process_batch(src.probes, batch, None, follow.then_some(&mut live))
    }

    /// Writes the end-of-recording material and metadata, and finishes the file.
    pub(super) fn finish(
        mut self,
        opts: &RecordOptions,
        src: Sources<'_>,
        started: (Instant, std::time::Duration),
    ) -> Result<RecordSummary> {
        if let Some(sampler) = &self.sampler_path {
            if !self.objects.iter().any(|o| &o.path == sampler) {
                log::warn!(
                    "the allocation sampler was never loaded into the command (a statically linked \
                     program ignores LD_PRELOAD): no allocations were recorded; use --mem without --preload"
                );
            }
        }
        let lost = self.end_file(opts, &src, (monotonic_ns(), wall_ns()))?;
        let recovered = src.probes.offcpu_recovered();
        if recovered > 0 {
            log::info!(
                "{recovered} off-CPU block(s) ended by a switch the tracepoint missed; rebuilt from the thread's run time"
            );
        }
        let unwound = self.unwinding.stats.clone();
        if unwound.stacks > 0 {
            log::info!(
                "unwound {} stacks ({} frames; ends by StackEnd code {:?}); {} objects had no unwind tables",
                unwound.stacks,
                unwound.frames,
                unwound.ends,
                unwound.objects_without_rules
            );
        }
        let python = &self.python.counts;
        if python.with_frames > 0 {
            log::info!("Python frames in {} events ({} code objects read)", python.with_frames, python.codes);
        }
        let Sources { ring, child, .. } = src;
        drop(ring);
        let objects = self.objects.iter().filter(|o| o.used).count();
        let processes = self.seen_pids.len();
        let path = self.path.clone();
        let end_wall = wall_ns();
        let (writer, output) = self.take_file()?;
        let stats = super::rotate::seal(writer, &path)?;
        self.close(output, &path, stats, lost, end_wall)?;
        self.write_status("stopped");
        let r = &self.reported;
        Ok(RecordSummary {
            samples: r.samples,
            stacks: r.stacks,
            processes,
            objects,
            lost: r.lost,
            file_bytes: r.bytes,
            elapsed: started.0.elapsed(),
            cpu_time: own_cpu_time().saturating_sub(started.1),
            max_rss_kib: super::own_usage().1,
            child_exit: child.and_then(|mut c| c.try_wait()),
            unwound_stacks: unwound.stacks,
            unwind_time: unwound.walk_time,
            files: self.rotation.as_ref().map_or(1, |r| r.files),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_round_up_to_whole_milliseconds_so_a_short_one_is_not_none() {
        assert_eq!(whole_millis_up(Duration::from_micros(400)), Duration::from_millis(1));
        assert_eq!(whole_millis_up(Duration::from_micros(1001)), Duration::from_millis(2));
        assert_eq!(whole_millis_up(Duration::from_millis(100)), Duration::from_millis(100));
        assert_eq!(whole_millis_up(Duration::ZERO), Duration::ZERO, "a rescan due now is handled now");
    }
}
