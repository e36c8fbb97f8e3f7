//! One handler per event family: samples, off-CPU blocks, requests and
//! allocations, each turned into capture records.

use std::collections::BTreeSet;
use std::rc::Rc;

use profcap_format::{MemSpace, RawStack, Sample, SampleKind, StackEnd, Thread, ValueUnit};

use super::Session;
use crate::mem::RingRecord;
use crate::mmap_events::MapEvent;
use crate::probes::{Event, Header, MemEvent, MemOp, OffCpu, Probes, PyStack, Request, RequestOp, UserStack};
use crate::Result;

/// How long after its exit a process's state is kept for events that come
/// late in the ring (taken before the exit on another CPU).
const EXIT_GRACE_NS: u64 = 10_000_000;

/// What one pass of the recording loop collected, from three sources.
///
/// A pass handles only what happened before its cut, a time taken before
/// the BPF ring was read: whatever came before a mapping record (the fork
/// that made its process) or before a sample (the mapping its code lies in)
/// is then surely at hand. The rest waits for the next pass.
#[derive(Debug, Default)]
pub(super) struct Batch {
    /// BPF events, in ring order (`None`: one that did not parse).
    pub(super) events: Vec<Option<Event>>,
    /// The kernel's exec and mapping records, by time.
    pub(super) maps: Vec<MapEvent>,
    /// The preloaded sampler's records, by time.
    pub(super) records: Vec<RingRecord>,
}

/// What came after a pass's cut, in ring and time order, for the next pass.
#[derive(Debug, Default)]
pub(super) struct HeldBack {
    events: Vec<Event>,
    maps: Vec<MapEvent>,
    records: Vec<RingRecord>,
}

impl Session {
    /// Handles what happened up to `cut` (everything, if `None`) in time
    /// order: mapping records and the sampler's records go in among the BPF
    /// events by time (after the exec that mapped their code, before the exit
    /// that ends it). `live`, where children are followed, gains forked pids
    /// and loses exited ones.
    pub(super) fn process_batch(
        &mut self,
        probes: &Probes,
        batch: Batch,
        cut: Option<u64>,
        mut live: Option<&mut BTreeSet<u32>>,
    ) -> Result<()> {
        let (events, maps, records) = self.hold_back_after(batch, cut);
        let mut maps = maps.into_iter().peekable();
        let mut records = records.into_iter().peekable();
        for event in events {
            let t = event.time_ns();
            while let Some(m) = maps.next_if(|m| m.time_ns() <= t) {
                self.on_map_event(m);
            }
            while let Some(r) = records.next_if(|r| r.time_ns <= t) {
                self.on_ring_record(r)?;
            }
            if let (Event::Fork { head, .. }, Some(live)) = (&event, live.as_deref_mut()) {
                live.insert(head.pid);
            }
            if let (Some(pid), Some(live)) = (self.on_event(probes, event)?, live.as_deref_mut()) {
                live.remove(&pid);
            }
        }
        maps.for_each(|m| self.on_map_event(m));
        records.try_for_each(|r| self.on_ring_record(r))?;
        self.reap_exited(cut);
        Ok(())
    }

    /// Forgets the processes that exited a while before `cut` (all, at the
    /// end): by then every event they had has been handled. One whose pid
    /// was taken by a new process since (its generation differs) is not
    /// touched.
    pub(super) fn reap_exited(&mut self, cut: Option<u64>) {
        let due = |t: u64| cut.is_none_or(|c| t.saturating_add(EXIT_GRACE_NS) <= c);
        let (now, later): (Vec<_>, Vec<_>) = self.exited.drain(..).partition(|&(t, _, _)| due(t));
        self.exited = later;
        for (_, pid, generation) in now {
            if self.procs.get(&pid).is_some_and(|p| p.generation_ns == generation) {
                self.procs.remove(&pid);
                self.unwinding.forget(pid);
                self.python.forget(pid);
                self.described.remove(&pid);
            }
        }
    }

    /// This pass's share of what was held back and what just came, each in
    /// time order; what came after `cut` is kept for the next pass.
    fn hold_back_after(
        &mut self,
        batch: Batch,
        cut: Option<u64>,
    ) -> (Vec<Event>, Vec<MapEvent>, Vec<RingRecord>) {
        let HeldBack { mut events, mut maps, mut records } = std::mem::take(&mut self.later);
        for e in batch.events {
            match e {
                Some(e) => events.push(e),
                None => self.malformed_events += 1,
            }
        }
        maps.extend(batch.maps);
        maps.sort_by_key(MapEvent::time_ns);
        records.extend(batch.records);
        records.sort_by_key(|r| r.time_ns);
        let due = |t: u64| cut.is_none_or(|c| t <= c);
        let (events_now, events) = events.into_iter().partition(|e| due(e.time_ns()));
        let (maps_now, maps) = maps.into_iter().partition(|m| due(m.time_ns()));
        let (records_now, records) = records.into_iter().partition(|r| due(r.time_ns));
        self.later = HeldBack { events, maps, records };
        (events_now, maps_now, records_now)
    }

    /// Notes the thread's name and makes sure its process is known.
    pub(super) fn note_task(&mut self, head: Header, comm: String) -> Result<()> {
        if self.thread_names.get(&head.tid).is_none_or(|(pid, name)| *pid != head.pid || *name != comm) {
            let thread = Thread { pid: head.pid, tid: head.tid, name: comm.clone(), seen_ns: head.time_ns };
            let r = self.writer.push_thread(thread);
            self.write(r)?;
            self.thread_names.insert(head.tid, (head.pid, comm));
        }
        self.know_process(head.pid, head.time_ns);
        Ok(())
    }

    /// Interns a stack of `pid`, noting its objects when it is new.
    pub(super) fn stack_id(&mut self, pid: u32, kernel: &[u64], user: &[u64]) -> u64 {
        self.unwound_stack_id(pid, kernel, user, StackEnd::Unknown)
    }

    /// As [`Self::stack_id`] for a user stack that ended for the reason `end`.
    pub(super) fn unwound_stack_id(&mut self, pid: u32, kernel: &[u64], user: &[u64], end: StackEnd) -> u64 {
        self.full_stack_id(pid, kernel, user, end, &[])
    }

    /// The user frames of an event: unwound from its copied stack, or the
    /// kernel's frame-pointer walk `fp` where nothing was copied (`Unknown`
    /// if nothing was asked for, `NoStack` if the copy failed).
    pub(super) fn user_frames(&mut self, pid: u32, fp: Vec<u64>, stack: &UserStack) -> (Vec<u64>, StackEnd) {
        if stack.bytes.is_empty() {
            let end = if stack.err != 0 { StackEnd::NoStack } else { StackEnd::Unknown };
            return (fp, end);
        }
        let (frames, end) = self.unwind_user(pid, stack);
        self.last_unwind = Some((end, self.unwinding.read_end()));
        (frames, end)
    }

    /// After an event's stack was unwound from its bytes: a walk that
    /// reached the root tells how far up the thread's stack copies need to
    /// go (the kernel then copies no more than that); one that ran out of
    /// bytes where a shorter copy was asked for makes the next copy whole.
    fn learn_stack_top(&mut self, probes: &Probes, tid: u32) {
        /// Room above the highest word the walk read.
        const SLACK: u64 = 256;
        match self.last_unwind.take() {
            Some((StackEnd::Root, read_end)) => {
                let want = read_end.saturating_add(SLACK + 7) & !7;
                if self.stack_tops.get(&tid).is_none_or(|&known| want > known) {
                    self.stack_tops.insert(tid, want);
                    probes.set_stack_top(tid, Some(want));
                }
            }
            Some((StackEnd::StackBytes, _)) if self.stack_tops.remove(&tid).is_some() => {
                probes.set_stack_top(tid, None);
            }
            _ => {}
        }
    }

    /// The capture form of an event's Python frames; the code objects they
    /// name that are new are written first.
    pub(super) fn python_frames(&mut self, pid: u32, python: &PyStack) -> Result<Vec<u64>> {
        let frames = self.python.frames(pid, python);
        for code in self.python.take_new_codes() {
            let r = self.writer.push_py_code(code);
            self.write(r)?;
        }
        Ok(frames)
    }

    /// Interns a stack with its Python frames, noting its objects when new.
    fn full_stack_id(
        &mut self,
        pid: u32,
        kernel: &[u64],
        user: &[u64],
        end: StackEnd,
        python: &[u64],
    ) -> u64 {
        let (id, new) = self.writer.intern_full(kernel, user, end, python);
        if new {
            self.note_new_stack(pid, kernel, user);
        }
        id
    }

    pub(super) fn on_sample(
        &mut self,
        head: Header,
        comm: String,
        kernel: &[u64],
        fp_user: Vec<u64>,
        stack: UserStack,
        python: PyStack,
    ) -> Result<()> {
        self.note_task(head, comm)?;
        let (user, end) = self.user_frames(head.pid, fp_user, &stack);
        let python = self.python_frames(head.pid, &python)?;
        let stack_id = self.full_stack_id(head.pid, kernel, &user, end, &python);
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
        let r = self.push_sample(sample, stack);
        self.write(r)
    }

    /// Writes a sample, with its raw stack under `--keep-stacks`.
    fn push_sample(&mut self, sample: Sample, stack: UserStack) -> profcap_format::Result<()> {
        if self.keep_stacks && !stack.bytes.is_empty() {
            let UserStack { regs, bytes, .. } = stack;
            let raw = RawStack { sample_id: 0, ip: regs.ip, sp: regs.sp, bp: regs.bp, bytes };
            self.writer.push_sample_raw(sample, raw)
        } else {
            self.writer.push_sample(sample)
        }
    }

    /// Frames of an off-CPU stack-map id, read from the kernel once.
    pub(super) fn offcpu_frames(&mut self, probes: &Probes, id: i32) -> Rc<[u64]> {
        if id < 0 {
            return Rc::from([]);
        }
        Rc::clone(self.offcpu_stacks.entry(id).or_insert_with(|| probes.offcpu_stack(id).into()))
    }

    pub(super) fn on_offcpu(&mut self, probes: &Probes, e: OffCpu) -> Result<()> {
        self.note_task(e.head, e.comm)?;
        let fp_user = self.offcpu_frames(probes, e.user_stack);
        let (user, end) = self.user_frames(e.head.pid, fp_user.to_vec(), &e.stack);
        let kernel = self.offcpu_frames(probes, e.kernel_stack);
        let python = self.python_frames(e.head.pid, &e.python)?;
        let stack_id = self.full_stack_id(e.head.pid, &kernel, &user, end, &python);
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
        let r = self.push_sample(sample, e.stack);
        self.write(r)
    }

    pub(super) fn on_request(&mut self, e: Request) -> Result<()> {
        self.note_task(e.head, e.comm)?;
        let mut payload = e.payload;
        if !self.payload_raw {
            crate::redact::redact_credentials(&mut payload);
        }
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
            payload,
            op,
            start_ns: e.enter_ns,
        };
        let r = self.writer.push_request(event);
        self.write(r)
    }

    /// Removes the sampler's own frames (its malloc wrappers) from the top
    /// of an allocation stack, so that the allocating code is the leaf, as
    /// in attach mode.
    pub(super) fn strip_sampler_frames(&mut self, pid: u32, frames: &mut Vec<u64>) {
        let Some(sampler) = self.sampler_path.clone() else { return };
        if frames.first().is_some_and(|&a| self.locate(pid, a).is_none()) {
            self.rescan_maps(pid); // the library may be newer than what we know
        }
        let n = self.leading_frames_in(pid, frames, |path| path == sampler);
        frames.drain(..n);
    }

    /// How many frames from the leaf lie in objects whose path `object` accepts.
    pub(super) fn leading_frames_in(&self, pid: u32, frames: &[u64], object: impl Fn(&str) -> bool) -> usize {
        let inside = |addr: u64| {
            self.locate(pid, addr).is_some_and(|(o, _)| self.objects.get(o).is_some_and(|o| object(&o.path)))
        };
        frames.iter().take_while(|&&a| inside(a)).count()
    }

    pub(super) fn on_mem(&mut self, probes: &Probes, e: MemEvent) -> Result<()> {
        let head = e.head;
        self.know_process(head.pid, head.time_ns);
        if e.op == MemOp::Java {
            return self.on_java_alloc(probes, &e);
        }
        let old = match e.op {
            MemOp::Free => e.addr,
            MemOp::Realloc => e.old_addr,
            MemOp::Alloc | MemOp::Untracked | MemOp::Java => 0,
        };
        if old != 0 {
            self.push_free(head, old, e.space)?;
        }
        if e.op == MemOp::Free || (e.addr == 0 && e.op != MemOp::Untracked) {
            return Ok(());
        }
        if !e.python.frames.is_empty() || !e.user_stack.bytes.is_empty() {
            // Python processes: the stack is the Python frames and the
            // unwound (or frame-pointer) native ones; no cache by stack id.
            let (mut user, end) = self.user_frames(head.pid, probes.mem_stack(e.stack), &e.user_stack);
            self.strip_sampler_frames(head.pid, &mut user);
            let python = self.python_frames(head.pid, &e.python)?;
            let stack_id = self.full_stack_id(head.pid, &[], &user, end, &python);
            return self.push_alloc(head, (e.addr, e.size, e.weight, e.space), stack_id);
        }
        let stack_id = match self.mem_stacks.get(&e.stack) {
            Some(&id) => id,
            None => {
                let id = self.alloc_stack_id(head.pid, probes.mem_stack(e.stack), StackEnd::Unknown);
                if e.stack >= 0 {
                    self.mem_stacks.insert(e.stack, id);
                }
                id
            }
        };
        self.push_alloc(head, (e.addr, e.size, e.weight, e.space), stack_id)
    }

    /// A picked allocation or its free, from the preloaded sampler's ring.
    pub(super) fn on_ring_record(&mut self, r: RingRecord) -> Result<()> {
        let head = Header { pid: r.pid, tid: r.tid, cpu: 0, time_ns: r.time_ns };
        // The ring is written by the command: a record may name any pid, but
        // only the command's own processes (all followed) are described.
        if !self.procs.contains_key(&r.pid) {
            self.foreign_ring_records += 1;
            return Ok(());
        }
        if !r.alloc {
            return self.push_free(head, r.addr, MemSpace::Host);
        }
        // A record without stack bytes keeps its frame-pointer frames.
        let (frames, end) = self.user_frames(r.pid, r.frames, &r.stack.unwrap_or_default());
        let stack_id = self.alloc_stack_id(r.pid, frames, end);
        self.push_alloc(head, (r.addr, r.size, r.weight, MemSpace::Host), stack_id)
    }

    /// The capture stack of an allocation's user frames, the sampler's own
    /// cut, whose walk ended for the reason `end`.
    pub(super) fn alloc_stack_id(&mut self, pid: u32, mut frames: Vec<u64>, end: StackEnd) -> u64 {
        self.strip_sampler_frames(pid, &mut frames);
        self.unwound_stack_id(pid, &[], &frames, end)
    }

    pub(super) fn push_free(&mut self, head: Header, addr: u64, space: MemSpace) -> Result<()> {
        let free = profcap_format::Free { time_ns: head.time_ns, pid: head.pid, tid: head.tid, addr, space };
        let r = self.writer.push_free(free);
        self.write(r)
    }

    /// An allocation of (address, size, weight, space).
    pub(super) fn push_alloc(
        &mut self,
        head: Header,
        (addr, size, weight, space): (u64, u64, u64, MemSpace),
        stack_id: u64,
    ) -> Result<()> {
        let alloc = profcap_format::Alloc {
            time_ns: head.time_ns,
            pid: head.pid,
            tid: head.tid,
            addr,
            size,
            stack_id,
            weight: weight.max(1),
            space,
        };
        let r = self.writer.push_alloc(alloc);
        self.write(r)
    }

    /// Gives the kernel's Python walk the processes found since the last pass.
    pub(super) fn update_python(&mut self, probes: &Probes) {
        for (pid, layout) in self.python.take_kernel_updates() {
            if let Err(e) = probes.set_python(pid, layout.as_ref()) {
                log::warn!("pid {pid}: {e}; its Python frames will be missing");
            }
        }
    }

    /// Handles one event; returns the pid of a process that exited.
    pub(super) fn on_event(&mut self, probes: &Probes, event: Event) -> Result<Option<u32>> {
        match event {
            Event::Request(e) => self.on_request(e)?,
            Event::Mem(e) => self.on_mem(probes, e)?,
            Event::OffCpu(e) => {
                let tid = e.head.tid;
                self.on_offcpu(probes, e)?;
                self.learn_stack_top(probes, tid);
            }
            Event::Sample { head, comm, kernel, user, stack, python } => {
                self.on_sample(head, comm, &kernel, user, stack, python)?;
                self.learn_stack_top(probes, head.tid);
            }
            Event::Fork { head, ppid } => self.on_fork(head.pid, ppid, head.time_ns),
            Event::Exec { head, .. } => self.on_exec(head.pid, head.time_ns),
            Event::Exit { head } => {
                // The process's state stays until the pass is done (see
                // `reap_exited`): a sample taken just before the exit on
                // another CPU can come later in the ring.
                if let Some(state) = self.procs.get(&head.pid) {
                    self.exited.push((head.time_ns, head.pid, state.generation_ns));
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
}
