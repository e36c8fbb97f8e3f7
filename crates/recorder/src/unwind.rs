//! Unwinding the user stacks the BPF programs copy, on the box.
//!
//! Each sample brings the user registers and the top of the user stack
//! (`--stack-bytes`). The walk itself is `profcap_format::unwind`, the code
//! `profanalyze --unwind` runs offline on kept stacks; this module keeps what
//! it needs between samples: one address space per process (its code
//! mappings with their objects' unwind tables), the tables read once per
//! object, and the rule cache. The session hands in mappings and objects as
//! plain data; nothing here calls back into it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use profcap_format::unwind::{Space, UnwindInfo, Walker};
use profcap_format::StackEnd;

use crate::probes::UserStack;

/// One walk in this many is timed for [`UnwindStats::walk_time`]: reading the
/// clock around every walk cost about as much as the walks themselves on a
/// load that blocks 40 000 times a second.
const TIMED_EVERY: u64 = 16;

/// One code mapping of a process, as the session knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeMap {
    pub start: u64,
    pub end: u64,
    pub file_offset: u64,
    /// The session's object index.
    pub object: usize,
}

/// Stacks unwound so far and what it cost.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnwindStats {
    pub stacks: u64,
    pub frames: u64,
    /// Stacks by why they ended, by [`StackEnd::code`].
    pub ends: [u64; 6],
    /// Time spent in walks (not counting reading unwind tables), estimated
    /// from one walk in [`TIMED_EVERY`].
    pub walk_time: Duration,
    /// Objects whose unwind tables could not be read (frame pointers only).
    pub objects_without_rules: u64,
}

#[derive(Debug)]
struct ProcSpace {
    /// Which version of the process's mappings the space was built from.
    version: (u64, usize),
    space: Space,
}

/// Per-process address spaces, per-object unwind tables and the rule cache.
#[derive(Debug, Default)]
pub struct Unwinding {
    walker: Walker,
    infos: HashMap<usize, Option<UnwindInfo>>,
    spaces: HashMap<u32, ProcSpace>,
    pub stats: UnwindStats,
}

impl Unwinding {
    pub fn new() -> Unwinding {
        Unwinding::default()
    }

    /// Unwinds `stack` of `pid`. `maps` are the process's code mappings
    /// (read only when `version`, which changes whenever they do, is new),
    /// and `load` reads an object's unwind tables (called once per object).
    pub fn unwind(
        &mut self,
        pid: u32,
        version: (u64, usize),
        maps: impl Iterator<Item = CodeMap>,
        mut load: impl FnMut(usize) -> Option<UnwindInfo>,
        stack: &UserStack,
    ) -> (Vec<u64>, StackEnd) {
        let proc_space = self
            .spaces
            .entry(pid)
            .or_insert_with(|| ProcSpace { version: (u64::MAX, 0), space: Space::new() });
        if proc_space.version != version {
            let mut space = Space::new();
            for m in maps {
                let info = self.infos.entry(m.object).or_insert_with(|| {
                    let info = load(m.object);
                    if info.as_ref().is_none_or(|i| !i.has_rules()) {
                        self.stats.objects_without_rules += 1;
                    }
                    info
                });
                if let Some(info) = info {
                    space.map("", m.start, m.end, m.file_offset, info);
                }
            }
            *proc_space = ProcSpace { version, space };
        }
        let started = self.stats.stacks.is_multiple_of(TIMED_EVERY).then(Instant::now);
        let mut frames = Vec::new();
        let end = self.walker.unwind(&proc_space.space, stack.regs, &stack.bytes, &mut frames);
        if let Some(t) = started {
            self.stats.walk_time += t.elapsed() * TIMED_EVERY as u32;
        }
        self.stats.stacks += 1;
        self.stats.frames += frames.len() as u64;
        if let Some(n) = self.stats.ends.get_mut(usize::from(end.code())) {
            *n += 1;
        }
        (frames, end)
    }

    /// The address just past the highest stack word the last walk read.
    pub fn read_end(&self) -> u64 {
        self.walker.read_end
    }

    /// Drops the unwind tables of an object no process maps any more (the
    /// address spaces built with them go too).
    pub fn forget_object(&mut self, object: usize) {
        if self.infos.remove(&object).is_some() {
            self.spaces.clear();
        }
    }

    /// Drops the address space of a process that exited.
    pub fn forget(&mut self, pid: u32) {
        self.spaces.remove(&pid);
    }
}
