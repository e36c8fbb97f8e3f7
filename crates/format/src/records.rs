//! Owned, plain-Rust forms of the capture records.
//!
//! These mirror `schema/capture.fbs`. The writer turns them into flatbuffers and the
//! reader turns verified flatbuffers back into them, so neither side of the contract
//! ever touches generated code directly.

/// Identifier of a deduplicated stack within one capture. 0 means "no stack".
pub type StackId = u64;

/// What a sample measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum SampleKind {
    /// On-CPU sample from the sampling timer.
    #[default]
    Cpu,
    /// Blocked (off-CPU) time.
    OffCpu,
    /// Bytes allocated.
    Alloc,
    /// Bytes still in use.
    Inuse,
    /// A kind written by a newer recorder.
    Unknown(u8),
}

impl SampleKind {
    /// The on-disk code of this kind.
    pub fn code(self) -> u8 {
        match self {
            SampleKind::Cpu => 0,
            SampleKind::OffCpu => 1,
            SampleKind::Alloc => 2,
            SampleKind::Inuse => 3,
            SampleKind::Unknown(c) => c,
        }
    }

    /// The kind for an on-disk code; unknown codes are kept, not rejected.
    pub fn from_code(code: u8) -> Self {
        match code {
            0 => SampleKind::Cpu,
            1 => SampleKind::OffCpu,
            2 => SampleKind::Alloc,
            3 => SampleKind::Inuse,
            c => SampleKind::Unknown(c),
        }
    }

    /// Short name used on command lines and in reports.
    pub fn name(self) -> &'static str {
        match self {
            SampleKind::Cpu => "cpu",
            SampleKind::OffCpu => "offcpu",
            SampleKind::Alloc => "alloc",
            SampleKind::Inuse => "inuse",
            SampleKind::Unknown(_) => "unknown",
        }
    }
}

/// The unit of a sample's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ValueUnit {
    /// A plain count (e.g. one timer tick).
    #[default]
    Count,
    /// Nanoseconds.
    Nanoseconds,
    /// Bytes.
    Bytes,
    /// A unit written by a newer recorder.
    Unknown(u8),
}

impl ValueUnit {
    /// The on-disk code of this unit.
    pub fn code(self) -> u8 {
        match self {
            ValueUnit::Count => 0,
            ValueUnit::Nanoseconds => 1,
            ValueUnit::Bytes => 2,
            ValueUnit::Unknown(c) => c,
        }
    }

    /// The unit for an on-disk code.
    pub fn from_code(code: u8) -> Self {
        match code {
            0 => ValueUnit::Count,
            1 => ValueUnit::Nanoseconds,
            2 => ValueUnit::Bytes,
            c => ValueUnit::Unknown(c),
        }
    }
}

/// Facts about the recording as a whole.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    pub hostname: String,
    pub kernel_release: String,
    pub boot_id: String,
    /// Clock of every `*_ns` timestamp, e.g. `CLOCK_MONOTONIC`.
    pub clock: String,
    pub start_wall_ns: u64,
    pub start_mono_ns: u64,
    pub end_wall_ns: u64,
    pub end_mono_ns: u64,
    /// On-CPU sampling frequency in Hz (0 when not sampling).
    pub sample_freq_hz: u32,
    /// Enabled event sources, e.g. `cpu`, `offcpu`.
    pub events: Vec<String>,
    pub recorder_version: String,
    pub command_line: Vec<String>,
    pub page_size: u32,
    pub extra: Vec<(String, String)>,
}

/// A process as observed by the recorder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Process {
    pub pid: u32,
    pub ppid: u32,
    /// Start time in clock ticks since boot; with `pid` it names one process.
    pub start_ticks: u64,
    pub comm: String,
    pub exe: String,
    pub cmdline: Vec<String>,
    pub pid_ns: u64,
    pub mnt_ns: u64,
    pub cgroup: String,
    pub seen_ns: u64,
    /// When the process was seen to exit (0 = not seen).
    pub exit_ns: u64,
}

/// A thread's name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Thread {
    pub pid: u32,
    pub tid: u32,
    pub name: String,
    pub seen_ns: u64,
}

/// An executable file mapping of a process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mapping {
    pub pid: u32,
    pub start: u64,
    pub end: u64,
    pub file_offset: u64,
    pub path: String,
    pub build_id: Vec<u8>,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub inode: u64,
    /// Valid from this time on; replaces overlapping earlier mappings.
    pub seen_ns: u64,
    /// Start ticks of the owning process (see [`Process::start_ticks`]).
    pub start_ticks: u64,
}

/// A deduplicated stack, leaf first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stack {
    pub id: StackId,
    pub kernel: Vec<u64>,
    pub user: Vec<u64>,
    /// (1.3) Why the user part ends where it does.
    pub end: StackEnd,
    /// (1.4) Interpreter frames, leaf first ([`crate::python::PyFrame::encode`]).
    pub python: Vec<u64>,
}

/// Why an unwound user stack ends where it does (format 1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum StackEnd {
    /// Not said: a capture recorded without unwinding (frame pointers only).
    #[default]
    Unknown,
    /// At the root: the unwind rules said the stack ends here (process entry,
    /// thread start), or the frame chain ended.
    Root,
    /// The copied stack bytes ran out before the root.
    StackBytes,
    /// The walk could not go on: a rule or a frame pointer led outside the
    /// copied stack, or nowhere.
    Broken,
    /// More frames than a walk returns.
    Depth,
    /// No stack bytes were copied (the kernel could not read them).
    NoStack,
    /// A reason written by a newer recorder.
    Other(u8),
}

impl StackEnd {
    /// The on-disk code.
    pub fn code(self) -> u8 {
        match self {
            StackEnd::Unknown => 0,
            StackEnd::Root => 1,
            StackEnd::StackBytes => 2,
            StackEnd::Broken => 3,
            StackEnd::Depth => 4,
            StackEnd::NoStack => 5,
            StackEnd::Other(c) => c,
        }
    }

    /// The reason for an on-disk code; unknown codes are kept.
    pub fn from_code(code: u8) -> Self {
        match code {
            0 => StackEnd::Unknown,
            1 => StackEnd::Root,
            2 => StackEnd::StackBytes,
            3 => StackEnd::Broken,
            4 => StackEnd::Depth,
            5 => StackEnd::NoStack,
            c => StackEnd::Other(c),
        }
    }

    /// Whether the stack is known to be cut short of its root.
    pub fn is_truncated(self) -> bool {
        !matches!(self, StackEnd::Unknown | StackEnd::Root)
    }

    /// Short description for reports.
    pub fn describe(self) -> &'static str {
        match self {
            StackEnd::Unknown => "not unwound (frame pointers only)",
            StackEnd::Root => "complete",
            StackEnd::StackBytes => "copied stack bytes ran out",
            StackEnd::Broken => "unwinding failed",
            StackEnd::Depth => "too deep",
            StackEnd::NoStack => "stack not readable",
            StackEnd::Other(_) => "other reason",
        }
    }
}

/// The registers and copied stack bytes of one sample (format 1.3), kept
/// with `profrec --keep-stacks` so that the stack can be unwound again
/// offline, with the same unwinder or better unwind information.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawStack {
    /// The sample's id (see [`Sample::id`]).
    pub sample_id: u64,
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    /// The bytes from `sp` up.
    pub bytes: Vec<u8>,
}

/// Who woke a thread that was off the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Waker {
    pub pid: u32,
    pub tid: u32,
    /// The waker's stack when it woke the thread (0 = unknown).
    pub stack_id: StackId,
}

/// One profile sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sample {
    pub kind: SampleKind,
    pub unit: ValueUnit,
    pub time_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub cpu: u16,
    pub stack_id: StackId,
    pub value: i64,
    /// Unique within the capture. When the writer is given 0 the reader
    /// assigns the sample's ordinal (1-based), which is stable for a file.
    pub id: u64,
    /// For off-CPU samples recorded with waker tracking: who woke the thread.
    pub waker: Option<Waker>,
}

/// An allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Alloc {
    pub time_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub addr: u64,
    pub size: u64,
    pub stack_id: StackId,
    /// How many allocations this one stands for (1 unless sampled).
    pub weight: u64,
    /// (1.5) Where the memory is: host memory, or a GPU's.
    pub space: MemSpace,
}

/// Where allocated memory lives (format 1.5; older captures hold host memory only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum MemSpace {
    /// The process's own memory (malloc and the other host allocators).
    #[default]
    Host,
    /// GPU device memory (HBM), from the CUDA driver API.
    Device,
    /// A space written by a newer recorder.
    Unknown(u8),
}

impl MemSpace {
    /// The on-disk code.
    pub fn code(self) -> u8 {
        match self {
            MemSpace::Host => 0,
            MemSpace::Device => 1,
            MemSpace::Unknown(c) => c,
        }
    }

    /// The space of an on-disk code; unknown codes are kept.
    pub fn from_code(code: u8) -> MemSpace {
        match code {
            0 => MemSpace::Host,
            1 => MemSpace::Device,
            c => MemSpace::Unknown(c),
        }
    }
}

/// A free of an earlier allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Free {
    pub time_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub addr: u64,
    /// (1.5) The space of the freed block.
    pub space: MemSpace,
}

/// Events that were dropped, by source and reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lost {
    pub source: String,
    pub reason: String,
    pub count: u64,
    /// (1.5) When they were lost, for a gap (source [`crate::rules::GAP_LOSS_SOURCE`]):
    /// a monotonic time range; 0, 0 = not known.
    pub from_ns: u64,
    pub to_ns: u64,
}

/// A named address range.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Symbol {
    pub addr: u64,
    pub size: u64,
    pub name: String,
}

/// A raw ELF section kept for offline work.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    pub addr: u64,
    pub data: Vec<u8>,
}

/// A PT_LOAD program header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Segment {
    pub file_offset: u64,
    pub vaddr: u64,
    pub file_size: u64,
    pub executable: bool,
}

/// What a [`SymbolBlob`] holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BlobContent {
    /// Extracted symbols and sections.
    #[default]
    Symbols,
    /// The whole ELF file in `elf`.
    FullElf,
}

/// Off-box symbolization material for one ELF object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SymbolBlob {
    pub build_id: Vec<u8>,
    pub path: String,
    pub content: BlobContent,
    pub symbols: Vec<Symbol>,
    pub sections: Vec<Section>,
    pub elf: Vec<u8>,
    pub segments: Vec<Segment>,
    /// (1.3) The ELF entry point, 0 if unknown.
    pub entry: u64,
}

/// Kernel symbols needed by the capture's kernel frames.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelSymbols {
    pub symbols: Vec<Symbol>,
    /// Module of each symbol (empty string = vmlinux), same length as `symbols`.
    pub modules: Vec<String>,
}

/// Direction of a socket transfer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Direction {
    #[default]
    Read,
    Write,
}

/// What a socket event is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RequestOp {
    /// Bytes read or written (see [`RequestEvent::direction`]).
    #[default]
    Transfer,
    /// A connection was accepted; the event's fd is the new connection.
    Accept,
    /// A connect call on the event's fd.
    Connect,
    /// The event's fd was closed.
    Close,
}

/// A socket syscall of a recorded thread, for trace-id joins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestEvent {
    /// Unique within the capture (the recorder numbers them from 1).
    pub id: u64,
    /// When the syscall returned.
    pub time_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub fd: i32,
    pub direction: Direction,
    /// Bytes transferred.
    pub length: u64,
    /// The first bytes transferred (bounded by the recorder's setting).
    pub payload: Vec<u8>,
    pub op: RequestOp,
    /// When the syscall was entered (0 = unknown).
    pub start_ns: u64,
}

/// Everything one chunk carries. Readers handle the parts in field order:
/// stacks before the samples that reference them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    pub meta: Option<Meta>,
    pub processes: Vec<Process>,
    pub threads: Vec<Thread>,
    pub mappings: Vec<Mapping>,
    pub stacks: Vec<Stack>,
    pub samples: Vec<Sample>,
    pub allocs: Vec<Alloc>,
    pub frees: Vec<Free>,
    pub lost: Vec<Lost>,
    pub symbols: Vec<SymbolBlob>,
    pub kernel_symbols: Option<KernelSymbols>,
    pub requests: Vec<RequestEvent>,
    /// (1.3) Raw stacks of this batch's samples. In a decoded batch
    /// `sample_id` holds the sample's index in `samples` until the reader
    /// resolves it ([`Batch::resolve_raw_stacks`]).
    pub raw_stacks: Vec<RawStack>,
    /// (1.4) Python code objects named by this batch's stacks (or later ones).
    pub py_code: Vec<crate::python::PyCode>,
}

impl Batch {
    /// Number of records of every kind in this batch.
    pub fn record_count(&self) -> usize {
        usize::from(self.meta.is_some())
            + self.processes.len()
            + self.threads.len()
            + self.mappings.len()
            + self.stacks.len()
            + self.samples.len()
            + self.allocs.len()
            + self.frees.len()
            + self.lost.len()
            + self.symbols.len()
            + usize::from(self.kernel_symbols.is_some())
            + self.requests.len()
            + self.raw_stacks.len()
            + self.py_code.len()
    }

    /// Turns the raw stacks' sample indexes (as decoded) into the ids of
    /// those samples, once the reader has given every sample its id; raw
    /// stacks naming no sample of the batch are dropped.
    pub fn resolve_raw_stacks(&mut self) {
        let samples = &self.samples;
        self.raw_stacks.retain_mut(|r| {
            match usize::try_from(r.sample_id).ok().and_then(|i| samples.get(i)) {
                Some(s) => {
                    r.sample_id = s.id;
                    true
                }
                None => false,
            }
        });
    }

    /// True when the batch holds no record.
    pub fn is_empty(&self) -> bool {
        self.record_count() == 0
    }

    /// Removes every record, keeping the vectors' allocations.
    pub fn clear(&mut self) {
        let Batch {
            meta,
            processes,
            threads,
            mappings,
            stacks,
            samples,
            allocs,
            frees,
            lost,
            symbols,
            kernel_symbols,
            requests,
            raw_stacks,
            py_code,
        } = self;
        *meta = None;
        *kernel_symbols = None;
        processes.clear();
        threads.clear();
        mappings.clear();
        stacks.clear();
        samples.clear();
        allocs.clear();
        frees.clear();
        lost.clear();
        symbols.clear();
        requests.clear();
        raw_stacks.clear();
        py_code.clear();
    }

    /// Earliest and latest event time in the batch, if it has timed events.
    pub fn time_range(&self) -> Option<(u64, u64)> {
        let times = self
            .samples
            .iter()
            .map(|s| s.time_ns)
            .chain(self.allocs.iter().map(|a| a.time_ns))
            .chain(self.frees.iter().map(|f| f.time_ns))
            .chain(self.requests.iter().map(|r| r.time_ns));
        times.fold(None, |acc, t| match acc {
            None => Some((t, t)),
            Some((lo, hi)) => Some((lo.min(t), hi.max(t))),
        })
    }
}
