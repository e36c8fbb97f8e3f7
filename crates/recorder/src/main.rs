//! profrec: record raw eBPF profiles into a profcap capture file.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use std::io::Write as _;

use clap::{ArgGroup, Parser, ValueEnum};
use profcap_recorder::{record, EmbedMode, MemMode, RecordOptions, Retention, RotateEvery, Target};

mod status;

/// Record on-CPU stacks, and off-CPU (blocked) time with its stacks, of
/// processes into a capture file, for offline analysis with `profanalyze`
/// on any machine.
///
/// profrec samples with the kernel's cpu-clock timer and keeps every sample raw
/// (time, pid, thread, CPU, kernel and user stack). It does not symbolize on
/// this host: it embeds what is needed (symbol tables, unwind tables, build ids,
/// kernel symbols) so that the capture can be analyzed elsewhere.
///
/// Examples:
///   profrec -o app.cap -- ./app --flag       start ./app and record it until it exits
///   profrec -o app.cap -p 1234 -d 30         attach to pid 1234 for 30 seconds
///   profrec -o all.cap --all -d 10 -F 999    the whole machine, 10 s at 999 Hz
///   profrec -o io.cap --off-cpu -- ./server  on-CPU and blocked time of ./server
///   profrec -o web.cap --off-cpu --requests -p 1234 -d 60
///                                            also socket requests, to join samples
///                                            to trace ids (profanalyze requests)
///   profrec -o mem.cap --mem --preload -- ./app
///                                            sampled allocations (low overhead)
///   profrec -o mem.cap --mem -- ./app        every allocation and free (exact, slow)
///   profrec --all --rotate 10m --keep 2d -o /var/lib/profrec
///                                            always on: a capture per 10 minutes, 2 days
///                                            kept (profanalyze flame /var/lib/profrec
///                                            --from 14:05 --to 14:10)
///
/// Needs root. Stops at Ctrl-C or SIGTERM and still
/// writes a complete file. Exits with the started command's status
/// (128+signal if it was killed), 2 if profrec itself fails.
#[derive(Debug, Parser)]
#[command(name = "profrec", version, verbatim_doc_comment)]
#[command(group(ArgGroup::new("target").required(true).args(["pid", "all", "command", "completions", "man", "status"])))]
struct Cli {
    /// The capture file to write: a new file (mode 0600) renamed over FILE once
    /// recording has started; a symlink there is replaced, never followed.
    /// With --rotate: the directory that receives the captures.
    #[arg(short, long, value_name = "FILE", required_unless_present_any = ["completions", "man", "status"])]
    output: Option<PathBuf>,

    /// Record continuously into the directory -o DIR: a new, complete capture
    /// every DURATION of wall-clock time (`30s`, `10m`, `1h`; files start at
    /// multiples of it, 10m at :00, :10, ...) or every SIZE (`64M`, `1G`),
    /// named HOST-YYYYMMDDTHHMMSS.mmmZ.cap (UTC start). Consecutive files
    /// neither overlap nor leave a gap; each holds the symbols of what it
    /// holds, so any one can be analyzed alone. SIGHUP ends the current file
    /// now (`systemctl reload`); the file being written has no name until it
    /// is complete. `profanalyze flame DIR --from 14:05 --to 14:10` reads
    /// the files of a time range.
    #[arg(long, value_name = "DURATION|SIZE", value_parser = parse_rotate, help_heading = "Continuous recording")]
    rotate: Option<profcap_recorder::RotateEvery>,

    /// With --rotate: delete the oldest captures of the directory (those of
    /// earlier runs too) to keep at most DURATION of them (`7d`, `12h`) or
    /// SIZE of disk (`10G`, the file being written included). Whatever the
    /// budget, when free space drops below twice the largest capture the
    /// oldest are deleted first, and each deletion is logged.
    #[arg(long, value_name = "DURATION|SIZE", value_parser = parse_keep, requires = "rotate", help_heading = "Continuous recording")]
    keep: Option<profcap_recorder::Retention>,

    /// Print the state of the continuous recording into DIR (from its
    /// profrec.status file) and exit: 0 if it is recording, 3 if not.
    #[arg(long, value_name = "DIR", help_heading = "Continuous recording")]
    status: Option<PathBuf>,

    /// Attach to these running processes (comma-separated); their threads and
    /// children are followed.
    #[arg(short, long, value_delimiter = ',', value_name = "PID")]
    pid: Vec<u32>,

    /// Record every process on the machine.
    #[arg(short, long)]
    all: bool,

    /// Stop after this many seconds (fractions allowed). Default: until the
    /// target exits, or Ctrl-C.
    #[arg(short, long, value_name = "SECONDS")]
    duration: Option<f64>,

    /// Samples per second on each CPU (1 to 20000, and at most the kernel's
    /// perf_event_max_sample_rate).
    #[arg(short = 'F', long, default_value_t = 99, value_name = "HZ")]
    freq: u64,

    /// What to record, comma-separated: `cpu` (on-CPU samples), `offcpu`
    /// (time threads spend blocked, with the stack where they blocked),
    /// `requests` (socket reads and writes, see --requests).
    #[arg(short, long, value_enum, value_delimiter = ',', default_value = "cpu")]
    events: Vec<EventKind>,

    /// Record off-CPU time too (same as adding `offcpu` to --events).
    #[arg(long)]
    off_cpu: bool,

    /// Record the target's socket traffic: every read, write, send, recv,
    /// accept, connect and close on a socket, with time, thread, fd, length and
    /// the first --payload-bytes bytes. profanalyze finds HTTP requests and
    /// their trace ids (traceparent, B3, uber-trace-id, X-Request-Id) in them.
    /// Payloads can hold sensitive data: use --payload-bytes 0 to keep none.
    #[arg(long)]
    requests: bool,

    /// With --requests: bytes of payload kept per socket read or write (the
    /// start of each; 0 to 4096). HTTP headers must fit for trace ids to be found.
    #[arg(long, default_value_t = 1024, value_name = "BYTES")]
    payload_bytes: u32,

    /// With --requests: keep payloads as they were. By default the values of
    /// HTTP credential headers (Authorization, Proxy-Authorization, Cookie,
    /// Set-Cookie, X-Api-Key) are overwritten with `*` before they are written.
    #[arg(long)]
    payload_raw: bool,

    /// Record allocations and frees of one process (a command to start, or a
    /// single -p PID), with the stacks that allocated. By itself every call of
    /// malloc, calloc, realloc, reallocarray, posix_memalign, aligned_alloc,
    /// memalign, valloc and free (also jemalloc, mimalloc and tcmalloc
    /// entry points in the executable) is traced with uprobes: exact, but each
    /// call costs about 1-3 µs more (see the user guide). Add --preload for
    /// the low-overhead sampled mode. On a Go program (1.17+): a probe on
    /// runtime.mallocgc, every allocation with its Go stack (no frees: Go's
    /// collector frees unseen).
    #[arg(long)]
    mem: bool,

    /// With --mem: preload profcap's allocation sampler into the started
    /// command; it reports one allocation per --sample-bytes bytes on average
    /// (and their frees), weighted so that totals stay unbiased. The sampled
    /// calls, with their stacks, go to profrec through shared memory; none
    /// enters the kernel. Covers the command's child processes too. The
    /// sampler also caches a few freed small blocks per thread, so that the
    /// command's malloc/free pairs stay as fast as without it;
    /// PROFCAP_SAMPLER_CACHE=0 turns that off (see the user guide). On a Go
    /// program, which LD_PRELOAD cannot reach, the sampling is done in the
    /// kernel instead.
    #[arg(long, requires = "mem")]
    preload: bool,

    /// With --mem (attach mode): also trace CPython's own allocator
    /// (PyObject_Malloc/Calloc/Realloc/Free and the PyMem_ family), where
    /// most Python objects are made without malloc. Exact, with each
    /// allocation's Python frames, but every small-object allocation then
    /// costs a uprobe: allocation-heavy Python code runs tens to hundreds of
    /// times slower. Without it, Python's allocations reach --mem only
    /// through malloc (objects over 512 bytes, arenas, buffers).
    #[arg(long, requires = "mem", conflicts_with = "preload")]
    mem_python: bool,

    /// Record GPU device memory of one process (a command to start, or a
    /// single -p PID): every allocation and free through the CUDA driver API
    /// (cuMemAlloc_v2, cuMemAllocPitch_v2, cuMemAllocManaged, cuMemAllocAsync,
    /// cuMemAllocFromPoolAsync, cuMemFree_v2, cuMemFreeAsync, and the
    /// physical allocations of virtual memory management, cuMemCreate and
    /// cuMemRelease, which PyTorch's expandable segments use), with the
    /// stacks (and Python frames) that made them. `profanalyze --kind
    /// hbm-alloc|hbm-inuse` shows them. With or without --mem.
    #[arg(long)]
    hbm: bool,

    /// With --hbm: the CUDA driver library to probe. Default: the one the
    /// process has mapped, else libcuda.so.1 on its LD_LIBRARY_PATH or in the
    /// system's library directories.
    #[arg(long, value_name = "PATH", requires = "hbm")]
    cuda_lib: Option<PathBuf>,

    /// With --mem --preload: mean bytes allocated between two sampled allocations.
    #[arg(long, default_value_t = 2 * 1024 * 1024, value_name = "BYTES", requires = "preload")]
    sample_bytes: u64,

    /// Off-CPU: drop blocks shorter than this many microseconds (counted as
    /// dropped). Short blocks are frequent and cheap; see the user guide for
    /// the measurement behind the default.
    #[arg(long, default_value_t = 10.0, value_name = "MICROSECONDS")]
    min_block: f64,

    /// Off-CPU: also record who woke each thread, and the waker's stack.
    #[arg(long)]
    wakers: bool,

    /// Off-CPU: user stacks only. Taking the kernel stack is most of the cost
    /// of each context switch of a target (see bench/offcpu_overhead.sh).
    #[arg(long)]
    no_offcpu_kernel_stacks: bool,

    /// What to embed for symbolizing elsewhere: `symbols` (symbol and unwind
    /// tables), `full` (whole binaries, debug info included), or `none` (the
    /// analyzer then needs the binaries, found by build id).
    #[arg(long, value_enum, default_value_t = Embed::Symbols)]
    embed: Embed,

    /// Bytes of user stack copied with each on-CPU sample and off-CPU block,
    /// from the stack pointer up, and unwound with the objects' DWARF unwind
    /// tables (.eh_frame, .debug_frame), so code without frame pointers keeps
    /// its callers. Deeper stacks end in a `[truncated]` frame (profanalyze
    /// info counts them). 0: the kernel's frame-pointer walk only. At most 65536.
    #[arg(long, default_value_t = profcap_recorder::DEFAULT_STACK_BYTES, value_name = "BYTES")]
    stack_bytes: u32,

    /// Also keep each sample's registers and stack bytes in the capture, so
    /// that `profanalyze --unwind` can unwind them again offline (with better
    /// unwind information, or to check this recording). Costs about
    /// --stack-bytes per sample before compression.
    #[arg(long)]
    keep_stacks: bool,

    /// Do not record children of the target processes.
    #[arg(long)]
    no_follow: bool,

    /// When the recording stops before the started command ends (-d, Ctrl-C,
    /// SIGTERM), leave the command running. By default it is ended (SIGTERM,
    /// SIGKILL 2 s later), so its exit is recorded; profrec then exits with
    /// its status (143 for SIGTERM).
    #[arg(long)]
    detach: bool,

    /// profrec's scheduling priority while it records (nice value, -20 to
    /// 19; 0 leaves it as it is). The started command keeps the priority it
    /// would have had. At the default, profrec keeps up on a machine whose
    /// CPUs are all busy (see the user guide).
    #[arg(long, default_value_t = -10, value_name = "NICE", allow_negative_numbers = true)]
    nice: i32,

    /// More log output (-v: info, -vv: debug).
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,

    /// Only errors.
    #[arg(short, long)]
    quiet: bool,

    /// Print a completion script for this shell and exit, e.g.
    /// `profrec --completions bash > /usr/share/bash-completion/completions/profrec`.
    #[arg(long, value_name = "SHELL", help_heading = "Installing")]
    completions: Option<clap_complete::Shell>,

    /// Write the man page (profrec.1) into this directory and exit.
    #[arg(long, value_name = "DIR", help_heading = "Installing")]
    man: Option<PathBuf>,

    /// The command to start and record, after `--`.
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

/// ", N stacks unwound (M per second of one core)" when any were.
fn unwound(s: &profcap_recorder::RecordSummary) -> String {
    let secs = s.unwind_time.as_secs_f64();
    if s.unwound_stacks == 0 || secs <= 0.0 {
        return String::new();
    }
    format!(
        ", {} stacks unwound ({:.0} per second of one core)",
        s.unwound_stacks,
        s.unwound_stacks as f64 / secs
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum EventKind {
    Cpu,
    Offcpu,
    Requests,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Embed {
    Symbols,
    Full,
    None,
}

/// The highest `-F`: each sample costs a timer interrupt and about 5 µs of
/// BPF work, so at 100 kHz (the kernel's usual limit) sampling alone took
/// half of every CPU here and a started command crawled (`true` ran 11 s).
const MAX_FREQ: u64 = 20_000;
/// The longest `--duration`: a year (longer recordings should rotate).
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);
/// The largest `--min-block`: an hour.
const MAX_MIN_BLOCK: Duration = Duration::from_secs(3600);

impl Cli {
    fn options(&self) -> anyhow::Result<RecordOptions> {
        self.check_freq()?;
        let output = self.output.clone().context("--output FILE is needed")?;
        let mut opts = RecordOptions::new(output, self.target());
        opts.freq = self.freq;
        let max_stack = profcap_recorder::probes::MAX_STACK_COPY as u32;
        if self.stack_bytes > max_stack {
            bail!("--stack-bytes must be at most {max_stack}, not {}", self.stack_bytes);
        }
        if self.keep_stacks && self.stack_bytes == 0 {
            bail!("--keep-stacks needs stack bytes to keep: drop --stack-bytes 0");
        }
        opts.stack_bytes = self.stack_bytes;
        opts.detach = self.detach;
        opts.keep_stacks = self.keep_stacks;
        opts.cpu = self.events.contains(&EventKind::Cpu);
        opts.offcpu = self.off_cpu || self.events.contains(&EventKind::Offcpu);
        opts.requests = self.requests || self.events.contains(&EventKind::Requests);
        if self.payload_bytes > 4096 {
            bail!("--payload-bytes must be at most 4096, not {}", self.payload_bytes);
        }
        opts.payload_bytes = self.payload_bytes;
        if self.payload_raw && !opts.requests {
            bail!("--payload-raw needs --requests (or --events requests)");
        }
        opts.payload_raw = self.payload_raw;
        opts.mem_python = self.mem_python;
        opts.hbm = self.hbm;
        opts.cuda_lib = self.cuda_lib.clone();
        opts.mem = match (self.mem, self.preload) {
            (false, _) => MemMode::Off,
            (true, false) => MemMode::Attach,
            (true, true) => MemMode::Sampled,
        };
        if self.sample_bytes == 0 {
            bail!("--sample-bytes must be at least 1");
        }
        opts.sample_bytes = self.sample_bytes;
        opts.min_block = self.min_block_duration()?;
        if self.wakers && !opts.offcpu {
            bail!("--wakers needs off-CPU recording (--off-cpu or --events offcpu)");
        }
        opts.wakers = self.wakers;
        opts.offcpu_kernel_stacks = !self.no_offcpu_kernel_stacks;
        opts.duration = self.run_duration()?;
        opts.embed = match self.embed {
            Embed::Symbols => EmbedMode::Symbols,
            Embed::Full => EmbedMode::Full,
            Embed::None => EmbedMode::None,
        };
        if !(-20..=19).contains(&self.nice) {
            bail!("--nice must be between -20 and 19, not {}", self.nice);
        }
        opts.nice = self.nice;
        opts.follow_children = !self.no_follow;
        opts.command_line = std::env::args().collect();
        if let Some(every) = self.rotate {
            let mut rotation = profcap_recorder::Rotation::new(every);
            rotation.keep = self.keep;
            opts.rotate = Some(rotation);
        }
        Ok(opts)
    }

    /// What to record: everything, some pids, or a command to start.
    fn target(&self) -> Target {
        if self.all {
            Target::All
        } else if !self.pid.is_empty() {
            Target::Pids(self.pid.clone())
        } else {
            Target::Spawn(self.command.clone())
        }
    }

    /// -F within 1..=MAX_FREQ and this kernel's limit.
    fn check_freq(&self) -> anyhow::Result<()> {
        if !(1..=MAX_FREQ).contains(&self.freq) {
            bail!("--freq must be between 1 and {MAX_FREQ} Hz, not {}", self.freq);
        }
        if let Some(max) = profcap_recorder::procfs::max_sample_rate().filter(|&max| self.freq > max) {
            bail!(
                "--freq {} is above this kernel's limit of {max} Hz \
             (/proc/sys/kernel/perf_event_max_sample_rate): use -F {max} or less",
                self.freq
            );
        }
        Ok(())
    }

    /// --min-block as a duration, bounded.
    fn min_block_duration(&self) -> anyhow::Result<Duration> {
        Ok(match Duration::try_from_secs_f64(self.min_block / 1e6) {
            Ok(d) if d <= MAX_MIN_BLOCK => d,
            _ => bail!(
                "--min-block must be between 0 and {} microseconds, not {:?}",
                MAX_MIN_BLOCK.as_micros(),
                self.min_block
            ),
        })
    }

    /// --duration as a duration, bounded (a year at most).
    fn run_duration(&self) -> anyhow::Result<Option<Duration>> {
        Ok(match self.duration.map(|d| (d, Duration::try_from_secs_f64(d))) {
            Some((_, Ok(d))) if !d.is_zero() && d <= MAX_DURATION => Some(d),
            Some((d, _)) => bail!(
                "--duration must be more than 0 and at most {} seconds (a year), not {d:?}",
                MAX_DURATION.as_secs()
            ),
            None => None,
        })
    }
}

fn init_logging(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => log::LevelFilter::Error,
        (false, 0) => log::LevelFilter::Warn,
        (false, 1) => log::LevelFilter::Info,
        _ => log::LevelFilter::Debug,
    };
    env_logger::Builder::new().filter_level(level).parse_env("PROFCAP_LOG").init();
    libbpf_rs::set_print(Some((libbpf_rs::PrintLevel::Info, |level, msg| {
        let msg = msg.trim_end();
        match level {
            libbpf_rs::PrintLevel::Warn => log::warn!(target: "libbpf", "{msg}"),
            libbpf_rs::PrintLevel::Info => log::info!(target: "libbpf", "{msg}"),
            libbpf_rs::PrintLevel::Debug => log::debug!(target: "libbpf", "{msg}"),
        }
    })));
}

/// profrec's exit status: the started command's (128+signal if it was
/// killed), as perf and heaptrack do; 0 after attaching or `--all`; 2 when
/// profrec itself fails.
fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.quiet);
    match run(&cli) {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            eprintln!("profrec: error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<u8> {
    use clap::CommandFactory;
    if let Some(shell) = cli.completions {
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "profrec", &mut script);
        // A closed pipe (`| head`) is not an error.
        let mut out = std::io::stdout();
        let _ = out.write_all(&script).and_then(|()| out.flush());
        return Ok(0);
    }
    if let Some(dir) = &cli.man {
        let path = dir.join("profrec.1");
        let mut page = Vec::new();
        clap_mangen::Man::new(Cli::command()).render(&mut page)?;
        std::fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("profrec: wrote {}", path.display());
        return Ok(0);
    }
    if let Some(dir) = &cli.status {
        return status::print(dir);
    }
    let opts = cli.options()?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed))
        .context("installing the Ctrl-C handler")?;
    let summary = record(&opts, stop).with_context(|| format!("recording into {}", opts.output.display()))?;
    if !cli.quiet && opts.rotate.is_some() {
        eprintln!(
            "profrec: wrote {} captures into {} ({} samples, {:.1} MiB, {} lost) in {:.1}s, using {:.3}s CPU and {:.1} MiB of memory at most",
            summary.files,
            opts.output.display(),
            summary.samples,
            summary.file_bytes as f64 / f64::from(1 << 20),
            summary.lost,
            summary.elapsed.as_secs_f64(),
            summary.cpu_time.as_secs_f64(),
            summary.max_rss_kib as f64 / 1024.0,
        );
    } else if !cli.quiet {
        eprintln!(
            "profrec: wrote {} ({} samples, {} stacks, {} processes, {} objects embedded, {} lost) in {:.1}s, using {:.3}s CPU and {:.1} MiB of memory at most{}",
            opts.output.display(),
            summary.samples,
            summary.stacks,
            summary.processes,
            summary.objects,
            summary.lost,
            summary.elapsed.as_secs_f64(),
            summary.cpu_time.as_secs_f64(),
            summary.max_rss_kib as f64 / 1024.0,
            unwound(&summary),
        );
    }
    if let Some(code) = summary.child_exit.filter(|&c| c != 0) {
        eprintln!("profrec: the recorded command exited with status {code}");
    }
    Ok(summary.child_exit.map_or(0, |c| u8::try_from(c).unwrap_or(u8::MAX)))
}

/// A length of time (`90`, `30s`, `10m`, `1h`, `7d`) or a size (`512K`,
/// `64M`, `1G`, `2T`, also `64MB`, `64MiB`): a lowercase `m` is minutes.
fn parse_length(s: &str) -> Result<Result<Duration, u64>, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 =
        num.parse().map_err(|_| format!("`{s}` is not a duration (30s, 10m, 1h, 7d) or a size (64M, 1G)"))?;
    if !n.is_finite() || n <= 0.0 {
        return Err(format!("`{s}` must be more than zero"));
    }
    let seconds = match unit {
        "" | "s" => Some(1.0),
        "m" | "min" => Some(60.0),
        "h" => Some(3600.0),
        "d" => Some(86400.0),
        _ => None,
    };
    if let Some(k) = seconds {
        return match Duration::try_from_secs_f64(n * k) {
            Ok(d) if d >= Duration::from_secs(1) && d <= MAX_DURATION => Ok(Ok(d)),
            _ => Err(format!("`{s}` must be between 1 second and a year")),
        };
    }
    let unit = unit.trim_end_matches("iB").trim_end_matches('B');
    let shift = match unit.to_ascii_uppercase().as_str() {
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (s, m, h, d for time; K, M, G, T for bytes)")),
    };
    let bytes = n * f64::from(1u32 << 10).powi(shift / 10);
    if bytes < f64::from(1u32 << 20) {
        return Err(format!("`{s}` is less than 1 MiB: each capture holds its own symbols"));
    }
    Ok(Err(bytes.min(u64::MAX as f64) as u64))
}

fn parse_rotate(s: &str) -> Result<RotateEvery, String> {
    Ok(match parse_length(s)? {
        Ok(d) => RotateEvery::Period(d),
        Err(b) => RotateEvery::Bytes(b),
    })
}

fn parse_keep(s: &str) -> Result<Retention, String> {
    Ok(match parse_length(s)? {
        Ok(d) => Retention::Age(d),
        Err(b) => Retention::Bytes(b),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn rotation_lengths_parse() {
        assert_eq!(parse_rotate("10m"), Ok(RotateEvery::Period(Duration::from_secs(600))));
        assert_eq!(parse_rotate("90"), Ok(RotateEvery::Period(Duration::from_secs(90))));
        assert_eq!(parse_rotate("1.5h"), Ok(RotateEvery::Period(Duration::from_secs(5400))));
        assert_eq!(parse_rotate("64M"), Ok(RotateEvery::Bytes(64 << 20)));
        assert_eq!(parse_rotate("64MiB"), Ok(RotateEvery::Bytes(64 << 20)));
        assert_eq!(parse_keep("1G"), Ok(Retention::Bytes(1 << 30)));
        assert_eq!(parse_keep("7d"), Ok(Retention::Age(Duration::from_secs(7 * 86400))));
        for bad in ["", "0", "-5m", "10x", "100K", "0.1s", "nan"] {
            assert!(parse_rotate(bad).is_err(), "{bad:?}");
        }
        let cli =
            Cli::try_parse_from(["profrec", "-o", "d", "--all", "--rotate", "1h", "--keep", "10G"]).unwrap();
        let rotation = cli.options().unwrap().rotate.unwrap();
        assert_eq!(rotation.every, RotateEvery::Period(Duration::from_secs(3600)));
        assert_eq!(rotation.keep, Some(Retention::Bytes(10 << 30)));
        assert!(Cli::try_parse_from(["profrec", "-o", "d", "--all", "--keep", "1G"]).is_err());
    }

    #[test]
    fn needs_exactly_one_target() {
        assert!(Cli::try_parse_from(["profrec", "-o", "x"]).is_err());
        assert!(Cli::try_parse_from(["profrec", "-o", "x", "--all", "-p", "1"]).is_err());
        let cli = Cli::try_parse_from(["profrec", "-o", "x", "--", "ls", "-l"]).unwrap();
        assert_eq!(cli.options().unwrap().target, Target::Spawn(vec!["ls".into(), "-l".into()]));
        let cli = Cli::try_parse_from(["profrec", "-o", "x", "-p", "1,2"]).unwrap();
        assert_eq!(cli.options().unwrap().target, Target::Pids(vec![1, 2]));
    }

    /// Every numeric option is range-checked with a message naming it, never
    /// a panic (`-d 1e20` used to overflow Duration and exit 101).
    #[test]
    fn out_of_range_options_are_clear_errors() {
        let cases: [(&[&str], &str); 7] = [
            (&["-d", "1e20"], "--duration"),
            (&["-d", "1e300"], "--duration"),
            (&["-d", "0"], "--duration"),
            (&["-d", "nan"], "--duration"),
            (&["--off-cpu", "--min-block", "1e30"], "--min-block"),
            (&["--off-cpu", "--min-block=-1"], "--min-block"),
            (&["-F", "100000"], "--freq"),
        ];
        for (args, option) in cases {
            let argv = ["profrec", "-o", "x"].iter().chain(args).chain(&["--", "true"]).copied();
            let cli = Cli::try_parse_from(argv).unwrap();
            let err = cli.options().unwrap_err().to_string();
            assert!(err.contains(option), "{args:?}: {err}");
        }
        let cli = Cli::try_parse_from(["profrec", "-o", "x", "-d", "2.5", "--", "true"]).unwrap();
        assert_eq!(cli.options().unwrap().duration, Some(Duration::from_millis(2500)));
    }
}
