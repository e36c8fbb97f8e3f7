//! The process and object space: which processes are recorded, their
//! mapping generations, and the ELF objects behind those mappings.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use profcap_format::unwind::UnwindInfo;
use profcap_format::{Mapping, StackEnd};

use super::Session;
use crate::elf::{self, MappedFile};
use crate::mmap_events::MapEvent;
use crate::probes::UserStack;
use crate::procfs::{self, MapsEntry};
use crate::unwind::CodeMap;

/// An ELF object seen in some process's mappings, by device and inode.
#[derive(Debug)]
pub(super) struct Object {
    pub(super) path: String,
    /// Device and inode, as /proc/PID/maps and the kernel's records give them.
    dev: (u32, u32),
    inode: u64,
    pub(super) build_id: Vec<u8>,
    /// Kept open from discovery so that material can be extracted at the end
    /// even if the process has exited or the file was replaced.
    pub(super) file: Option<MappedFile>,
    pub(super) used: bool,
    /// File offsets of the frames the capture's stacks have in it.
    pub(super) offsets: BTreeSet<u64>,
    /// Closed at a file boundary: no live process mapped it (`--rotate`).
    pub(super) retired: bool,
}

#[derive(Debug)]
pub(super) struct KnownMap {
    pub(super) start: u64,
    pub(super) end: u64,
    pub(super) file_offset: u64,
    pub(super) object: usize,
}

/// What the recorder knows of one live process.
#[derive(Debug, Default)]
pub(super) struct ProcState {
    /// Start of the current address-space generation (fork or exec time; 0 =
    /// before recording), written as `Mapping::seen_ns`.
    pub(super) generation_ns: u64,
    pub(super) start_ticks: u64,
    pub(super) maps: Vec<KnownMap>,
    /// The current generation was started by the kernel's record of an
    /// exec, which comes before the exec tracepoint's event.
    pub(super) exec_recorded: bool,
}

/// After an exec, the dynamic loader maps the libraries within milliseconds;
/// the maps are read again at these delays, so even a process that lives
/// 50 ms is known completely before it exits.
pub(super) const EXEC_RESCANS: [Duration; 3] =
    [Duration::from_millis(2), Duration::from_millis(10), Duration::from_millis(40)];

/// Most mapping records kept for processes not (yet) known to be recorded:
/// with `--all`, a process is described once its first event arrives, and
/// its exec and mappings reported before that are kept until then.
const PENDING_LIMIT: usize = 1 << 16;
/// Pending records older than this are dropped (their process never showed).
const PENDING_AGE_NS: u64 = 5_000_000_000;

impl Session {
    /// Reads a process's description and mappings for a new generation;
    /// false if /proc no longer has it.
    pub(super) fn scan_process(&mut self, pid: u32, generation_ns: u64, seen_ns: u64) -> bool {
        let mut process = match procfs::read_process(pid) {
            Ok(p) => p,
            Err(e) => {
                log::debug!("pid {pid}: {e}");
                return false;
            }
        };
        process.seen_ns = seen_ns;
        let state = ProcState { generation_ns, start_ticks: process.start_ticks, ..ProcState::default() };
        self.procs.insert(pid, state);
        self.push_process(process);
        self.rescan_maps(pid);
        true
    }

    fn push_process(&mut self, process: profcap_format::Process) {
        self.seen_pids.insert(process.pid);
        self.described.insert(process.pid, process.clone());
        if let Err(e) = self.writer.push_process(process) {
            log::error!("{e}");
        }
    }

    /// A recorded process forked `pid`. If it is gone before /proc could be
    /// read, it still had its parent's mappings until it exec'd.
    pub(super) fn on_fork(&mut self, pid: u32, ppid: u32, time_ns: u64) {
        if self.scan_process(pid, time_ns, time_ns) {
            return;
        }
        let inherited: Vec<MapsEntry> = self
            .procs
            .get(&ppid)
            .map_or_else(Vec::new, |p| p.maps.iter().map(|m| self.objects[m.object].entry(m)).collect());
        self.procs.insert(pid, ProcState { generation_ns: time_ns, ..ProcState::default() });
        self.push_process(profcap_format::Process { pid, ppid, seen_ns: time_ns, ..Default::default() });
        for entry in &inherited {
            self.add_mapping(pid, entry);
        }
    }

    /// The exec tracepoint of a recorded process. Where the kernel's own
    /// record of that exec came first (see `mmap_events`), its generation
    /// stands and /proc only fills in what those records do not cover.
    pub(super) fn on_exec(&mut self, pid: u32, time_ns: u64) {
        let from_kernel = self.procs.get_mut(&pid).is_some_and(|p| std::mem::take(&mut p.exec_recorded));
        if from_kernel {
            self.rescan_maps(pid);
        } else {
            self.procs.remove(&pid);
            self.python.forget(pid);
            self.scan_process(pid, time_ns, time_ns);
        }
        let now = Instant::now();
        self.rescans.extend(EXEC_RESCANS.iter().map(|d| (now + *d, pid)));
    }

    /// An exec or executable mapping the kernel reported (`mmap_events`).
    pub(super) fn on_map_event(&mut self, e: MapEvent) {
        let pid = e.pid();
        if !self.procs.contains_key(&pid) {
            if self.all_processes {
                self.keep_pending(e);
            }
            return;
        }
        match e {
            MapEvent::Exec { pid, time_ns, comm } => self.new_generation(pid, time_ns, comm),
            MapEvent::Map { pid, entry, .. } => self.add_mapping(pid, &entry),
        }
    }

    /// `pid` exec'd at `time_ns`: its mappings start again.
    fn new_generation(&mut self, pid: u32, time_ns: u64, comm: String) {
        self.python.forget(pid);
        let start_ticks = self.procs.get(&pid).map_or(0, |p| p.start_ticks);
        let mut process = procfs::read_process(pid)
            .ok()
            .filter(|p| p.start_ticks == start_ticks || start_ticks == 0)
            .unwrap_or_else(|| profcap_format::Process { pid, start_ticks, comm, ..Default::default() });
        process.seen_ns = time_ns;
        let state = ProcState { generation_ns: time_ns, start_ticks, maps: Vec::new(), exec_recorded: true };
        self.procs.insert(pid, state);
        self.push_process(process);
    }

    fn keep_pending(&mut self, e: MapEvent) {
        if self.pending_count >= PENDING_LIMIT {
            return; // counted nowhere: /proc is still read when the process shows
        }
        self.pending_count += 1;
        self.pending.entry(e.pid()).or_default().push(e);
    }

    /// Forgets pending records of processes that never showed.
    pub(super) fn prune_pending(&mut self, now_ns: u64) {
        let cutoff = now_ns.saturating_sub(PENDING_AGE_NS);
        self.pending.retain(|_, records| records.last().is_some_and(|r| r.time_ns() >= cutoff));
        self.pending_count = self.pending.values().map(Vec::len).sum();
    }

    /// Time until the next pending re-read of a process's maps.
    pub(super) fn next_rescan_in(&self) -> Option<Duration> {
        let now = Instant::now();
        self.rescans.iter().map(|(at, _)| at.saturating_duration_since(now)).min()
    }

    /// Re-reads the maps of processes whose delayed re-read is due.
    pub(super) fn due_rescans(&mut self) {
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
    pub(super) fn rescan_maps(&mut self, pid: u32) {
        let entries = match procfs::read_maps(pid) {
            Ok(e) => e,
            Err(e) => {
                log::debug!("pid {pid}: {e}");
                return;
            }
        };
        for entry in &entries {
            self.add_mapping(pid, entry);
        }
    }

    /// Adds one mapping to the current generation of `pid`, unless known.
    fn add_mapping(&mut self, pid: u32, entry: &MapsEntry) {
        let known = self
            .procs
            .get(&pid)
            .is_none_or(|p| p.maps.iter().any(|m| m.start == entry.start && m.end == entry.end));
        if known {
            return;
        }
        let object = self.object_for(pid, entry);
        let data = self.objects[object].file.as_ref().map(MappedFile::bytes);
        self.python.consider_mapping(pid, entry, data);
        let Some(state) = self.procs.get_mut(&pid) else {
            return;
        };
        let at = state.maps.partition_point(|m| m.start < entry.start);
        state
            .maps
            .insert(at, KnownMap { start: entry.start, end: entry.end, file_offset: entry.offset, object });
        let mapping = self.objects[object].mapping(pid, state, &state.maps[at]);
        if let Err(e) = self.writer.push_mapping(mapping) {
            log::error!("{e}");
        }
    }

    /// Finds or opens the object behind a mapping.
    pub(super) fn object_for(&mut self, pid: u32, entry: &MapsEntry) -> usize {
        let key = (entry.dev_major, entry.dev_minor, entry.inode, entry.path.clone());
        if let Some(&id) = self.object_ids.get(&key) {
            if self.objects[id].retired {
                // Mapped again after it was closed: the same file (device,
                // inode, path) is opened again for its material.
                let (file, _) = open_object(pid, entry);
                let o = &mut self.objects[id];
                o.file = file;
                o.retired = false;
            }
            return id;
        }
        let (file, build_id) = open_object(pid, entry);
        self.objects.push(Object {
            path: entry.path.clone(),
            dev: (entry.dev_major, entry.dev_minor),
            inode: entry.inode,
            build_id,
            file,
            used: false,
            offsets: BTreeSet::new(),
            retired: false,
        });
        self.object_ids.insert(key, self.objects.len() - 1);
        self.objects.len() - 1
    }

    /// Describes a live process again at the start of a file (`--rotate`):
    /// its latest description and the mappings of its generation.
    pub(super) fn describe_again(&mut self, pid: u32) -> crate::Result<()> {
        let Some(state) = self.procs.get(&pid) else { return Ok(()) };
        let process = self.described.get(&pid).cloned().unwrap_or_else(|| profcap_format::Process {
            pid,
            start_ticks: state.start_ticks,
            seen_ns: state.generation_ns,
            ..Default::default()
        });
        let mappings: Vec<Mapping> =
            state.maps.iter().map(|m| self.objects[m.object].mapping(pid, state, m)).collect();
        self.seen_pids.insert(pid);
        let r = self.writer.push_process(process);
        self.write(r)?;
        for m in mappings {
            let r = self.writer.push_mapping(m);
            self.write(r)?;
        }
        Ok(())
    }
}

/// The file behind a mapping of `pid`, and its build id.
fn open_object(pid: u32, entry: &MapsEntry) -> (Option<MappedFile>, Vec<u8>) {
    {
        if entry.path == "[vdso]" {
            let id = elf::own_vdso().and_then(|v| elf::build_id(&v)).unwrap_or_default();
            (None, id)
        } else {
            // map_files works for deleted files and other mount namespaces.
            let candidates = [
                PathBuf::from(format!("/proc/{pid}/map_files/{:x}-{:x}", entry.start, entry.end)),
                PathBuf::from(format!("/proc/{pid}/root{}", entry.path)),
            ];
            let file =
                candidates.iter().find_map(|p| MappedFile::open(p).ok()).or_else(|| same_file_by_path(entry));
            if file.is_none() {
                log::warn!("pid {pid}: cannot open {}; its frames will stay unnamed", entry.path);
            }
            let id = file.as_ref().and_then(|f| elf::build_id(f.bytes())).unwrap_or_default();
            (file, id)
        }
    }
}

impl Session {
    /// Marks the objects of a new stack as used, re-reading the maps once if
    /// a frame lies outside every known mapping (a library loaded later).
    pub(super) fn note_new_stack(&mut self, pid: u32, kernel: &[u64], user: &[u64]) {
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
    /// the recording, or whose fork event was lost), then applies the
    /// kernel's records of it that came before this first event.
    pub(super) fn know_process(&mut self, pid: u32, seen_ns: u64) {
        if self.procs.contains_key(&pid) {
            return;
        }
        let pending = self.pending.remove(&pid).unwrap_or_default();
        self.pending_count = self.pending_count.saturating_sub(pending.len());
        if !self.scan_process(pid, 0, seen_ns) && !pending.is_empty() {
            self.procs.insert(pid, ProcState::default());
        }
        for e in pending {
            self.on_map_event(e);
        }
    }
}

impl Object {
    /// The capture record of one of this object's mappings in `pid`.
    fn mapping(&self, pid: u32, state: &ProcState, m: &KnownMap) -> Mapping {
        Mapping {
            pid,
            start: m.start,
            end: m.end,
            file_offset: m.file_offset,
            path: self.path.clone(),
            build_id: self.build_id.clone(),
            dev_major: self.dev.0,
            dev_minor: self.dev.1,
            inode: self.inode,
            seen_ns: state.generation_ns,
            start_ticks: state.start_ticks,
        }
    }

    /// The maps entry of one of this object's mappings.
    fn entry(&self, m: &KnownMap) -> MapsEntry {
        MapsEntry {
            start: m.start,
            end: m.end,
            readable: true,
            executable: true,
            offset: m.file_offset,
            dev_major: self.dev.0,
            dev_minor: self.dev.1,
            inode: self.inode,
            path: self.path.clone(),
        }
    }
}

/// The mapped file by its path in profrec's own view of the file system,
/// when its process is gone (no /proc/PID/map_files): only if it is the
/// same file, by device and inode, so a path reused since is not embedded.
fn same_file_by_path(entry: &MapsEntry) -> Option<MappedFile> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&entry.path).ok()?;
    let dev = meta.dev();
    let same = meta.is_file()
        && meta.ino() == entry.inode
        && libc::major(dev) == entry.dev_major
        && libc::minor(dev) == entry.dev_minor;
    if !same {
        return None;
    }
    MappedFile::open(std::path::Path::new(&entry.path)).ok()
}

impl Session {
    /// The object and file offset of `addr` in `pid`, if mapped.
    pub(super) fn locate(&self, pid: u32, addr: u64) -> Option<(usize, u64)> {
        let maps = &self.procs.get(&pid)?.maps;
        let i = maps.partition_point(|m| m.start <= addr).checked_sub(1)?;
        let m = maps.get(i).filter(|m| addr < m.end)?;
        Some((m.object, addr - m.start + m.file_offset))
    }

    /// The user frames of a copied stack of `pid`, unwound with the unwind
    /// tables of the objects it has mapped, and why the walk ended.
    pub(super) fn unwind_user(&mut self, pid: u32, stack: &UserStack) -> (Vec<u64>, StackEnd) {
        let Some(state) = self.procs.get(&pid) else {
            return (Vec::new(), StackEnd::Broken);
        };
        let version = (state.generation_ns, state.maps.len());
        let maps = state.maps.iter().map(|m| CodeMap {
            start: m.start,
            end: m.end,
            file_offset: m.file_offset,
            object: m.object,
        });
        let objects = &self.objects;
        let load = |object: usize| {
            let o = objects.get(object)?;
            match (&o.file, o.path.as_str()) {
                (Some(f), _) => UnwindInfo::from_elf(f.bytes()),
                (None, "[vdso]") => elf::own_vdso().and_then(|v| UnwindInfo::from_elf(&v)),
                (None, _) => None,
            }
        };
        self.unwinding.unwind(pid, version, maps, load, stack)
    }
}
