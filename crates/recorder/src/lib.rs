//! profrec's library: eBPF recording into a profcap capture.
//!
//! [`record`] loads the BPF programs (see `bpf/`), follows the target
//! processes, and streams raw samples, process facts and, at the end, the
//! off-box symbolization material into a capture file. It does no
//! symbolization and no aggregation beyond deduplicating stacks.

pub mod elf;
mod kallsyms;
mod layout;
pub mod mem;
mod mmap_events;
mod perf_event;
pub mod probes;
pub mod procfs;
pub mod python;
mod redact;
mod session;
mod spawn;
pub mod unwind;

use std::path::PathBuf;
use std::time::Duration;

pub use elf::EmbedMode;
pub use session::{capture_name, capture_time, record, RecordSummary, STATUS_FILE};

/// What to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Start this command (argv) and record it until it exits.
    Spawn(Vec<String>),
    /// Attach to running processes.
    Pids(Vec<u32>),
    /// Every process on the machine.
    All,
}

/// How allocations are recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemMode {
    /// Not at all.
    Off,
    /// Every allocation and free, through uprobes on the allocator (exact, costly).
    Attach,
    /// Allocations sampled by bytes in the target by a preloaded sampler
    /// (a started command only); sampled ones carry weights that keep totals unbiased.
    Sampled,
}

/// Settings of a recording.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RecordOptions {
    /// The capture file to write (created with mode 0600). No default.
    pub output: PathBuf,
    /// What to record. No default.
    pub target: Target,
    /// Record on-CPU samples. Default: true.
    pub cpu: bool,
    /// On-CPU sampling frequency per CPU in Hz. Default: 99.
    pub freq: u64,
    /// Record off-CPU time (blocked threads). Default: false.
    pub offcpu: bool,
    /// Off-CPU blocks shorter than this are dropped (and counted).
    /// Default: 10 µs (see docs/user-guide.md for the measurement behind it).
    pub min_block: Duration,
    /// With `offcpu`: also record who woke each thread, and its stack. Default: false.
    pub wakers: bool,
    /// With `offcpu`: take kernel stacks of blocked threads (and wakers). Default: true.
    pub offcpu_kernel_stacks: bool,
    /// Fault injection for tests: with `offcpu`, act as if the tracepoint
    /// program missed every n-th switch-in of a blocked thread (0 = never),
    /// so that the recovery of such blocks is exercised. Default: 0.
    #[doc(hidden)]
    pub offcpu_test_miss_switch_ins: u32,
    /// Record socket request events (reads, writes, accepts, connects,
    /// closes) for trace-id joins. Default: false.
    pub requests: bool,
    /// With `requests`: payload bytes kept per event (at most 4096; 0 = none).
    /// Default: 1024.
    pub payload_bytes: u32,
    /// Keep socket payloads as they were. By default the values of HTTP
    /// credential headers (Authorization, Proxy-Authorization, Cookie,
    /// Set-Cookie, X-Api-Key) are overwritten with `*`. Default: false.
    pub payload_raw: bool,
    /// Allocation tracking. Default: [`MemMode::Off`].
    pub mem: MemMode,
    /// With [`MemMode::Sampled`]: mean bytes between sampled allocations. Default: 2 MiB (tcmalloc's default).
    pub sample_bytes: u64,
    /// With [`MemMode::Attach`]: also probe CPython's allocator
    /// (`PyObject_Malloc` family): exact, and slow for allocation-heavy
    /// Python code. Default: false.
    pub mem_python: bool,
    /// Record GPU device memory: allocations and frees through the CUDA
    /// driver API (libcuda.so.1) of one process. Default: false.
    pub hbm: bool,
    /// With `hbm`: the CUDA driver library to probe. Default: none (found
    /// in the target's maps, its LD_LIBRARY_PATH, or the system's library
    /// directories).
    pub cuda_lib: Option<PathBuf>,
    /// Tests only: in sampled mode, give the sampler no ring, so that it
    /// reports through its uprobe functions (its fallback). Default: false.
    #[doc(hidden)]
    pub mem_test_no_ring: bool,
    /// Tests only: wait this long before handling each batch of events, as
    /// a recorder starved of CPU would, so that short-lived processes are
    /// gone from /proc before their events are handled. Default: zero.
    #[doc(hidden)]
    pub test_handle_late: Duration,
    /// Stop after this long. Default: none (until the target exits or Ctrl-C).
    pub duration: Option<Duration>,
    /// Off-box material to embed. Default: [`EmbedMode::Symbols`].
    pub embed: EmbedMode,
    /// Record children of the targets too. Default: true.
    pub follow_children: bool,
    /// The recorder's own command line, stored in the capture. Default: empty.
    pub command_line: Vec<String>,
    /// User stack bytes copied per on-CPU sample and off-CPU block and
    /// unwound with the objects' DWARF call-frame information (0 = the
    /// kernel's frame-pointer walk only). Default: [`DEFAULT_STACK_BYTES`].
    pub stack_bytes: u32,
    /// Also keep every sample's registers and stack bytes in the capture, so
    /// that `profanalyze` can unwind them again offline. Default: false.
    pub keep_stacks: bool,
    /// When the recording stops before a started command ends (`duration`,
    /// Ctrl-C, SIGTERM), leave the command running instead of ending it
    /// (SIGTERM, SIGKILL 2 s later). Default: false.
    pub detach: bool,
    /// Where to look for detached debug files (`.build-id/ab/cdef….debug`,
    /// or `.gnu_debuglink` names) whose symbols are embedded with those of
    /// the stripped objects. Default: `/usr/lib/debug`.
    pub debug_dirs: Vec<PathBuf>,
    /// The scheduling priority (nice value, -20 to 19) profrec's recording
    /// thread takes once the targets are set up (a started command keeps
    /// profrec's original one). Default: -10: on a machine whose CPUs are all
    /// busy, a profrec of normal priority fell behind, lost events and
    /// finished late (`-d 6` ended after 7.2 s; at -10, 6.4 s).
    pub nice: i32,
    /// Continuous recording: `output` is a directory that receives a new,
    /// complete capture every period or size (see [`Rotation`]). Default:
    /// none (one capture, `output` is its file).
    pub rotate: Option<Rotation>,
}

/// When a continuous recording starts its next file, and what it keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rotation {
    pub every: RotateEvery,
    /// Oldest captures deleted to stay within this. Default: none (keep all).
    pub keep: Option<Retention>,
}

impl Rotation {
    pub fn new(every: RotateEvery) -> Rotation {
        Rotation { every, keep: None }
    }
}

/// The length of each file of a continuous recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotateEvery {
    /// A new file at each multiple of this period of wall-clock time (the
    /// first file ends at the first multiple).
    Period(Duration),
    /// A new file once the current one holds this many bytes.
    Bytes(u64),
}

/// How much of a continuous recording is kept on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// Captures that ended longer ago than this are deleted.
    Age(Duration),
    /// The oldest captures are deleted while all of them (the one being
    /// written included) take more than this many bytes.
    Bytes(u64),
}

/// The default `--stack-bytes` (see docs/user-guide.md for the measurement).
pub const DEFAULT_STACK_BYTES: u32 = 16384;

impl RecordOptions {
    /// Options with the defaults above.
    pub fn new(output: PathBuf, target: Target) -> Self {
        RecordOptions {
            output,
            target,
            cpu: true,
            freq: 99,
            offcpu: false,
            min_block: Duration::from_micros(10),
            wakers: false,
            offcpu_kernel_stacks: true,
            offcpu_test_miss_switch_ins: 0,
            requests: false,
            payload_bytes: 1024,
            payload_raw: false,
            mem: MemMode::Off,
            sample_bytes: 2 * 1024 * 1024,
            mem_test_no_ring: false,
            mem_python: false,
            hbm: false,
            cuda_lib: None,
            test_handle_late: Duration::ZERO,
            duration: None,
            embed: EmbedMode::Symbols,
            follow_children: true,
            command_line: Vec::new(),
            stack_bytes: DEFAULT_STACK_BYTES,
            keep_stacks: false,
            debug_dirs: vec![PathBuf::from(elf::SYSTEM_DEBUG_DIR)],
            detach: false,
            rotate: None,
            nice: -10,
        }
    }
}

/// Errors of recording.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// profrec lacks the privileges to load BPF programs.
    #[error("profrec must run as root: {0}")]
    NotPermitted(String),
    /// A process to attach to does not exist.
    #[error("no process with pid {pid}")]
    NoSuchPid { pid: u32 },
    /// A process exited while being read.
    #[error("process {pid} exited")]
    Gone { pid: u32 },
    /// A /proc file could not be read.
    #[error("cannot read {path}")]
    Proc { path: PathBuf, source: std::io::Error },
    /// A file could not be opened, read or written.
    #[error("{path}")]
    Io { path: PathBuf, source: std::io::Error },
    /// The command to record could not be started.
    #[error("cannot start {command}")]
    Spawn { command: String, source: std::io::Error },
    /// A BPF step failed; `detail` holds libbpf's message.
    #[error("BPF {what} failed: {detail}")]
    Bpf { what: String, detail: String },
    /// The sampling event could not be opened.
    #[error("cannot open the cpu-clock perf event on CPU {cpu}")]
    PerfEvent { cpu: u32, source: std::io::Error },
    /// The directory of a continuous recording cannot be used.
    #[error("{path}: {reason}")]
    Directory { path: PathBuf, reason: String },
    /// The options cannot be used together.
    #[error("{0}")]
    Usage(&'static str),
    /// Writing the capture failed.
    #[error("writing {path}")]
    Capture { path: PathBuf, source: profcap_format::Error },
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
