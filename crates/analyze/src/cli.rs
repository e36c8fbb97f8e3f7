//! Command line of profanalyze: parsing, and conversion into library options.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use profcap_analyze::diff::{diff_flame_graph, diff_table, regressions, write_table};
use profcap_analyze::export::{
    flame_graph, write_folded, write_pprof, write_top, write_top_json, FlameOptions, TopBy,
};
use profcap_analyze::export::{timeline_svg, write_leaks};
use profcap_analyze::export::{write_info, write_requests};
use profcap_analyze::info::info;
use profcap_analyze::memory::{timeline, InuseAt, MemEvent};
use profcap_analyze::profile::list_samples;
use profcap_analyze::requests::{
    self, capture_spans, join, load_span_file, Selection, SortBy, Span, SpanIndex,
};
use profcap_analyze::symbolize::PythonFrames;
use profcap_analyze::{build, Filter, Grouping, Material, Profile, ProfileOptions, Shape, SymbolizeOptions};
use profcap_format::SampleKind;

/// Analyze profcap captures offline: flame graphs, folded stacks, top tables,
/// pprof, and diffs of two captures. Works on any machine, without root and
/// without access to the recorded host.
///
/// Examples:
///   profanalyze info app.cap                     what the capture holds
///   profanalyze flame app.cap -o app.svg         flame graph of on-CPU time
///   profanalyze top app.cap --by module          time per library
///   profanalyze folded app.cap | grep parse      folded stacks for other tools
///   profanalyze pprof app.cap -o app.pb.gz       for `go tool pprof`
///   profanalyze diff before.cap after.cap -o d.svg --fail-if-regressed 5
///   profanalyze flame mem.cap --kind alloc       who allocates how many bytes
///   profanalyze flame mem.cap --kind inuse --at peak   what was held at the peak
///   profanalyze leaks mem.cap                    allocated and never freed, by stack
///   profanalyze memtimeline mem.cap -o mem.svg   bytes in use over time
///   profanalyze requests web.cap --sort latency  HTTP requests, their CPU and blocked time
///   profanalyze flame web.cap --trace-id 4bf92f35 -o req.svg
///                                                one request's flame graph
#[derive(Debug, Parser)]
#[command(name = "profanalyze", version, verbatim_doc_comment)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,

    /// More log output (-v: info, -vv: debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    /// Only errors.
    #[arg(short, long, global = true)]
    quiet: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Summarize a capture: duration, record counts, processes, lost events, sizes.
    Info {
        /// The capture file.
        capture: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Fail on a damaged capture instead of skipping damaged chunks.
        #[arg(long)]
        strict: bool,
        /// Unwind the kept raw stacks (`profrec --keep-stacks`) again and
        /// report how many came out as recorded, and how complete they are.
        #[arg(long)]
        unwind: bool,
    },
    /// Render a flame graph (SVG).
    Flame {
        #[command(flatten)]
        input: Input,
        /// Output file. Default: the capture's name with .svg.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Title. Default: what was recorded, with totals.
        #[arg(long)]
        title: Option<String>,
        /// Icicle graph: roots at the top.
        #[arg(long)]
        inverted: bool,
    },
    /// Print folded stacks (`frame;frame;… value`), the input of many tools.
    Folded {
        #[command(flatten)]
        input: Input,
        /// Output file. Default: standard output.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Print the functions (or modules) with the most self and total value.
    Top {
        #[command(flatten)]
        input: Input,
        /// Rows: functions or modules (libraries, executables, kernel).
        #[arg(long, value_enum, default_value_t = By::Function)]
        by: By,
        /// How many rows.
        #[arg(short = 'n', long, default_value_t = 25)]
        limit: usize,
        /// Print JSON instead of a table (see the user guide for the fields).
        #[arg(long)]
        json: bool,
    },
    /// Write a gzipped pprof profile (profile.proto) for `go tool pprof`.
    Pprof {
        #[command(flatten)]
        input: Input,
        /// Output file. Default: the capture's name with .pb.gz.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// List the HTTP requests of a capture recorded with `profrec --requests`
    /// (or of a --spans file): trace id, method, path, status, latency, and the
    /// on-CPU and off-CPU time of the threads that served them.
    ///
    /// A server request lasts from the read of its head to the last write of
    /// its response, on the threads that did them; a client request from the
    /// write of its head to the last read of the response. Samples taken on
    /// those threads meanwhile are the request's. The ID column names the
    /// request for --request; --trace-id, --slowest and --request work on
    /// every command (flame, top, folded, pprof, samples).
    Requests {
        #[command(flatten)]
        input: Input,
        /// Order of the rows.
        #[arg(long, value_enum, default_value_t = RequestSort::Start)]
        sort: RequestSort,
        /// Rows at most. Default: all.
        #[arg(short = 'n', long)]
        limit: Option<usize>,
        /// Print JSON (with the socket event ids of each request) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Allocations never freed by the end of the recording (leaks, and data
    /// that lives as long as the program), by allocating stack: bytes and
    /// blocks. Needs a capture recorded with `profrec --mem`.
    Leaks {
        #[command(flatten)]
        input: Input,
        /// Rows at most.
        #[arg(short = 'n', long, default_value_t = 20)]
        limit: usize,
        /// Frames of each stack to show, innermost first.
        #[arg(long, default_value_t = 6)]
        depth: usize,
        /// Print JSON (whole stacks) instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Plot the bytes in use of each process over time (SVG). Needs a capture
    /// recorded with `profrec --mem`.
    Memtimeline {
        #[command(flatten)]
        input: Input,
        /// Output file. Default: the capture's name with .mem.svg.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// List individual samples with their ids, times, threads, values, the
    /// request they fall in and their innermost function, to cross-reference
    /// a sample or request seen elsewhere.
    Samples {
        #[command(flatten)]
        input: Input,
        /// Samples at most (the first ones, by id).
        #[arg(short = 'n', long, default_value_t = 100)]
        limit: usize,
        /// Print JSON lines (one object per sample) instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Compare two captures: a differential flame graph and the functions
    /// whose share changed most.
    Diff {
        /// The baseline capture.
        before: PathBuf,
        /// The capture to compare with it.
        after: PathBuf,
        #[command(flatten)]
        opts: Common,
        #[command(flatten)]
        report: DiffReport,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum RequestSort {
    /// When they started.
    Start,
    /// Slowest first.
    Latency,
    /// Most on-CPU time first.
    Cpu,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum PythonMode {
    Merged,
    Only,
    Native,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum By {
    Function,
    Module,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Kind {
    /// On-CPU samples.
    Cpu,
    /// Time threads spent blocked.
    Offcpu,
    /// On-CPU and off-CPU time together, per thread.
    Wall,
    /// Bytes allocated.
    Alloc,
    /// Bytes in use.
    Inuse,
}

/// The capture and the options every profile command shares.
#[derive(Debug, Args)]
struct Input {
    /// The capture file.
    capture: PathBuf,
    #[command(flatten)]
    opts: Common,
}

/// What `diff` writes and when it fails.
#[derive(Debug, Args)]
struct DiffReport {
    /// Write the differential flame graph here (red: grew, blue: shrank).
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Rows of the table.
    #[arg(short = 'n', long, default_value_t = 20)]
    limit: usize,
    /// Exit with status 1 if a function's total (inclusive) share grew by
    /// more than this many percentage points.
    #[arg(long, value_name = "POINTS")]
    fail_if_regressed: Option<f64>,
    /// With --fail-if-regressed: only functions matching this regex count.
    #[arg(long, value_name = "REGEX")]
    function: Option<String>,
    /// Print the table (and the regressions) as JSON; the exit status is
    /// the same.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct Common {
    /// Sample kind. Default: cpu if recorded, else what the capture has.
    #[arg(long, value_enum, help_heading = "Samples")]
    kind: Option<Kind>,
    /// Off-CPU: show who woke each thread (and from where) above the blocked
    /// stack; needs a capture recorded with `profrec --wakers`.
    #[arg(long, help_heading = "Samples")]
    wakers: bool,
    /// Only these processes (comma-separated pids).
    #[arg(long, value_delimiter = ',', value_name = "PID", help_heading = "Samples")]
    pid: Vec<u32>,
    /// Only these threads (comma-separated tids).
    #[arg(long, value_delimiter = ',', value_name = "TID", help_heading = "Samples")]
    tid: Vec<u32>,
    /// Only processes or threads with this name (repeatable).
    #[arg(long, value_name = "NAME", help_heading = "Samples")]
    comm: Vec<String>,
    /// Start this many seconds after the first sample.
    #[arg(long, value_name = "SECONDS", help_heading = "Samples")]
    from: Option<f64>,
    /// End this many seconds after the first sample.
    #[arg(long, value_name = "SECONDS", help_heading = "Samples")]
    to: Option<f64>,
    /// Only samples inside requests with this trace id (traceparent, B3,
    /// uber-trace-id or X-Request-Id; 8+ leading characters suffice); repeatable.
    #[arg(long, value_name = "ID", help_heading = "Requests")]
    trace_id: Vec<String>,
    /// Only samples inside the request with this id (the ID column of
    /// `profanalyze requests`); repeatable.
    #[arg(long, value_name = "ID", help_heading = "Requests")]
    request: Vec<u64>,
    /// Only samples inside the N slowest requests.
    #[arg(long, value_name = "N", help_heading = "Requests")]
    slowest: Option<usize>,
    /// Also join against the spans of this OTLP JSON file (OpenTelemetry's
    /// JSON encoding; each span needs a `thread.id` attribute and a
    /// `process.pid` span or resource attribute).
    #[arg(long, value_name = "FILE", help_heading = "Requests")]
    spans: Option<PathBuf>,
    /// --kind inuse: the moment to show: `end` (never freed), `peak` (when
    /// the most bytes were in use), or seconds after the first allocation event.
    #[arg(long, value_name = "end|peak|SECONDS", value_parser = parse_at, help_heading = "Samples")]
    at: Option<InuseAt>,
    /// --kind alloc/inuse: count allocations instead of bytes.
    #[arg(long, help_heading = "Samples")]
    counts: bool,
    /// Leave out kernel frames.
    #[arg(long, help_heading = "Stacks")]
    no_kernel: bool,
    /// Add a root frame per process.
    #[arg(long, help_heading = "Stacks")]
    per_process: bool,
    /// Keep only the stacks with a frame matching this regular expression
    /// (repeatable: any of them); percentages are then of what is kept.
    /// E.g. `--focus '^py::app\.handle'`.
    #[arg(long, value_name = "REGEX", help_heading = "Stacks")]
    focus: Vec<String>,
    /// Leave out the stacks with a frame matching this regular expression
    /// (repeatable), e.g. `--exclude '^\[unknown\]$'`.
    #[arg(long, value_name = "REGEX", help_heading = "Stacks")]
    exclude: Vec<String>,
    /// Turn the stacks around, leaf first: a bottom-up view of who calls the
    /// hottest functions.
    #[arg(long, help_heading = "Stacks")]
    reverse: bool,
    /// Add a root frame per thread (below the process frame with --per-process).
    #[arg(long, help_heading = "Stacks")]
    per_thread: bool,
    /// Directory with debug files (`.build-id/ab/cdef….debug` or the recorded
    /// paths below it); repeatable.
    #[arg(long, value_name = "DIR", help_heading = "Symbols and unwinding")]
    debug_dir: Vec<PathBuf>,
    /// Look binaries up under this root instead of /.
    #[arg(long, value_name = "DIR", help_heading = "Symbols and unwinding")]
    sysroot: Option<PathBuf>,
    /// Never read binaries on this machine; use only the capture's material.
    #[arg(long, help_heading = "Symbols and unwinding")]
    no_local_files: bool,
    /// Append file:line to function names where debug info has them.
    #[arg(long, help_heading = "Symbols and unwinding")]
    lines: bool,
    /// Fold inlined functions into their callers.
    #[arg(long, help_heading = "Symbols and unwinding")]
    no_inline: bool,
    /// Python frames: `merged` in place of the interpreter's eval loop (native
    /// callers above them, C extensions and libraries below), `only` Python
    /// frames (stacks without any stay native), or `native` frames only.
    #[arg(long, value_enum, value_name = "HOW", default_value = "merged", help_heading = "Stacks")]
    python: PythonMode,
    /// Fail on a damaged capture instead of skipping damaged chunks.
    #[arg(long, help_heading = "Input")]
    strict: bool,
    /// Unwind the raw stacks kept by `profrec --keep-stacks` again here, with
    /// the capture's unwind tables or, where it has none, those of local files
    /// found like symbols (--debug-dir, --sysroot): the stacks shown are the
    /// new ones.
    #[arg(long, help_heading = "Symbols and unwinding")]
    unwind: bool,
}

impl Common {
    /// Loads the capture, unwinding its raw stacks again with --unwind.
    fn load(&self, path: &Path) -> Result<Material> {
        let mut m = load(path, self.strict)?;
        if self.unwind {
            let r = m.unwind_raw_stacks(self.strict, &self.profile_options()?.symbolize)?;
            log::info!("unwound {} raw stacks again; {} the same as recorded", r.samples, r.same_as_recorded);
        }
        Ok(m)
    }

    fn profile_options(&self) -> Result<ProfileOptions> {
        if let (Some(from), Some(to)) = (self.from, self.to) {
            if from > to {
                bail!("--from ({from}) is after --to ({to})");
            }
        }
        let mut filter = Filter::default();
        filter.pids = self.pid.clone();
        filter.tids = self.tid.clone();
        filter.comms = self.comm.clone();
        filter.kind = self.kind.map(|k| match k {
            Kind::Cpu => SampleKind::Cpu,
            Kind::Offcpu | Kind::Wall => SampleKind::OffCpu,
            Kind::Alloc => SampleKind::Alloc,
            Kind::Inuse => SampleKind::Inuse,
        });
        filter.wall = matches!(self.kind, Some(Kind::Wall));
        filter.wakers = self.wakers;
        filter.from_s = self.from;
        filter.to_s = self.to;
        filter.no_kernel = self.no_kernel;
        if self.at.is_some() && !matches!(self.kind, Some(Kind::Inuse)) {
            bail!("--at needs --kind inuse");
        }
        filter.inuse_at = self.at.unwrap_or_default();
        filter.alloc_counts = self.counts;
        let mut grouping = Grouping::default();
        grouping.process = self.per_process;
        grouping.thread = self.per_thread;
        let mut symbolize = SymbolizeOptions::default();
        symbolize.debug_dirs = self.debug_dir.clone();
        symbolize.sysroot = self.sysroot.clone();
        symbolize.local_files = !self.no_local_files;
        symbolize.lines = self.lines;
        symbolize.inlines = !self.no_inline;
        symbolize.python = match self.python {
            PythonMode::Merged => PythonFrames::Merged,
            PythonMode::Only => PythonFrames::Only,
            PythonMode::Native => PythonFrames::Native,
        };
        let regexes = |what: &str, v: &[String]| -> Result<Vec<regex::Regex>> {
            v.iter()
                .map(|r| {
                    regex::Regex::new(r)
                        .map_err(|e| anyhow::anyhow!("--{what} {r:?} is not a regular expression: {e}"))
                })
                .collect()
        };
        let mut shape = Shape::default();
        shape.focus = regexes("focus", &self.focus)?;
        shape.exclude = regexes("exclude", &self.exclude)?;
        shape.reverse = self.reverse;
        let mut opts = ProfileOptions::default();
        opts.filter = filter;
        opts.grouping = grouping;
        opts.shape = shape;
        opts.symbolize = symbolize;
        opts.strict = self.strict;
        Ok(opts)
    }
}

fn parse_at(s: &str) -> std::result::Result<InuseAt, String> {
    match s {
        "end" => Ok(InuseAt::End),
        "peak" => Ok(InuseAt::Peak),
        _ => match s.parse::<f64>() {
            Ok(v) if v.is_finite() && v >= 0.0 => Ok(InuseAt::Seconds(v)),
            _ => Err(format!("`{s}` is not end, peak or a number of seconds")),
        },
    }
}

fn load(path: &Path, strict: bool) -> Result<Material> {
    // The error names the file already.
    let m = Material::load(path, strict)?;
    for w in &m.warnings {
        log::warn!("{}: {w}", path.display());
    }
    Ok(m)
}

impl Common {
    fn selection(&self) -> Selection {
        let mut sel = Selection::default();
        sel.trace_ids = self.trace_id.clone();
        sel.request_ids = self.request.clone();
        sel.slowest = self.slowest;
        sel.pids = self.pid.clone();
        sel
    }

    /// The requests of the capture (and --spans file) that the options select.
    fn requests(&self, m: &Material) -> Result<Vec<Span>> {
        let external = match &self.spans {
            Some(path) => load_span_file(m, path)?,
            None => Vec::new(),
        };
        if m.io.is_empty() && external.is_empty() {
            bail!(
                "{} has no request events: record with `profrec --requests`, or give spans with --spans FILE",
                m.path.display()
            );
        }
        let spans = self.selection().apply(capture_spans(m, external));
        if spans.is_empty() {
            bail!(
                "no request of {} matches; `profanalyze requests {}` lists them",
                m.path.display(),
                m.path.display()
            );
        }
        Ok(spans)
    }

    /// Profile options, with the request selection resolved against `m`.
    fn options_for(&self, m: &Material) -> Result<ProfileOptions> {
        Ok(self.options_and_requests(m)?.0)
    }

    /// Profile options, and the requests they select (`None`: no selection
    /// and no --spans file).
    fn options_and_requests(&self, m: &Material) -> Result<(ProfileOptions, Option<Vec<Span>>)> {
        let mut opts = self.profile_options()?;
        if !self.selection().is_active() && self.spans.is_none() {
            return Ok((opts, None));
        }
        let spans = self.requests(m)?;
        log::info!("{} request(s) selected", spans.len());
        opts.filter.spans = Some(Arc::new(SpanIndex::new(&spans)));
        Ok((opts, Some(spans)))
    }
}

/// Builds the profile and reports objects that could not be symbolized.
fn profile(m: &Material, opts: &Common) -> Result<Profile> {
    let p = build(m, &opts.options_for(m)?).with_context(|| format!("analyzing {}", m.path.display()))?;
    if !p.missing.is_empty() {
        log::warn!(
            "no symbols for {} object(s); their frames show as module+offset. Supply the binaries \
             with --debug-dir DIR or --sysroot DIR, or record with --embed full:",
            p.missing.len()
        );
        for o in &p.missing {
            log::warn!("  {o}");
        }
    }
    Ok(p)
}

/// An output file; `-` is standard output, as perf and pprof users expect.
fn create(path: &Path) -> Result<Box<dyn Write>> {
    if path == Path::new("-") {
        return Ok(Box::new(BufWriter::new(std::io::stdout().lock())));
    }
    Ok(Box::new(BufWriter::new(File::create(path).with_context(|| format!("creating {}", path.display()))?)))
}

/// `--output`, or standard output without one.
fn writer(path: Option<&Path>) -> Result<Box<dyn Write>> {
    create(path.unwrap_or(Path::new("-")))
}

/// The default output of a command that writes a file: the capture's name
/// with `extension`, in the current directory (as perf writes perf.data).
fn default_output(capture: &Path, extension: &str) -> PathBuf {
    Path::new(capture.file_name().unwrap_or(capture.as_os_str())).with_extension(extension)
}

/// "profanalyze: wrote FILE…" unless the output was standard output.
fn wrote(quiet: bool, output: &Path, what: &str) {
    if !quiet && output != Path::new("-") {
        eprintln!("profanalyze: wrote {}{what}", output.display());
    }
}

fn duration_ns(m: &Material) -> u64 {
    m.meta.end_mono_ns.saturating_sub(m.meta.start_mono_ns)
}

impl Cli {
    /// Sets up logging per -v/-q (and PROFCAP_LOG).
    pub fn init_logging(&self) {
        let level = match (self.quiet, self.verbose) {
            (true, _) => log::LevelFilter::Error,
            (false, 0) => log::LevelFilter::Warn,
            (false, 1) => log::LevelFilter::Info,
            _ => log::LevelFilter::Debug,
        };
        env_logger::Builder::new().filter_level(level).parse_env("PROFCAP_LOG").format_timestamp(None).init();
    }

    /// Runs the command.
    pub fn run(self) -> Result<ExitCode> {
        match self.command {
            Command::Info { capture, json, strict, unwind } => {
                let mut m = load(&capture, strict)?;
                let reunwound = if unwind {
                    Some(m.unwind_raw_stacks(strict, &SymbolizeOptions::default())?)
                } else {
                    None
                };
                let mut i = info(&m, (profcap_format::VERSION_MAJOR, profcap_format::VERSION_MINOR));
                i.unwinding.reunwound = reunwound;
                let mut out = writer(None)?;
                if json {
                    serde_json::to_writer_pretty(&mut out, &i)?;
                    writeln!(out)?;
                } else {
                    write_info(&i, &mut out)?;
                }
                out.flush()?;
            }
            Command::Flame { input, output, title, inverted } => {
                let m = input.opts.load(&input.capture)?;
                let p = profile(&m, &input.opts)?;
                let output = output.unwrap_or_else(|| default_output(&input.capture, "svg"));
                let mut fo = FlameOptions::default();
                fo.title = title;
                fo.inverted = inverted;
                let mut out = create(&output)?;
                flame_graph(&p, &fo, &mut out)?;
                out.flush()?;
                wrote(self.quiet, &output, &format!(" ({} samples)", p.samples));
            }
            Command::Folded { input, output } => {
                let m = input.opts.load(&input.capture)?;
                let p = profile(&m, &input.opts)?;
                let mut out = writer(output.as_deref())?;
                write_folded(&p, &mut out)?;
                out.flush()?;
            }
            Command::Top { input, by, limit, json } => {
                let m = input.opts.load(&input.capture)?;
                let p = profile(&m, &input.opts)?;
                let by = match by {
                    By::Function => TopBy::Function,
                    By::Module => TopBy::Module,
                };
                let mut out = writer(None)?;
                if json {
                    write_top_json(&p, by, limit, &mut out)?;
                } else {
                    write_top(&p, by, limit, &mut out)?;
                }
                out.flush()?;
            }
            Command::Pprof { input, output } => {
                let m = input.opts.load(&input.capture)?;
                let p = profile(&m, &input.opts)?;
                let output = output.unwrap_or_else(|| default_output(&input.capture, "pb.gz"));
                let mut out = create(&output)?;
                write_pprof(&p, duration_ns(&m), &mut out)?;
                out.flush()?;
                wrote(self.quiet, &output, "");
            }
            Command::Requests { input, sort, limit, json } => {
                let m = input.opts.load(&input.capture)?;
                let spans = input.opts.requests(&m)?;
                let symbolize = input.opts.profile_options()?.symbolize;
                let mut rows = join(&m, &spans, &symbolize, input.opts.strict)?;
                requests::sort(
                    &mut rows,
                    match sort {
                        RequestSort::Start => SortBy::Start,
                        RequestSort::Latency => SortBy::Latency,
                        RequestSort::Cpu => SortBy::OnCpu,
                    },
                );
                rows.truncate(limit.unwrap_or(usize::MAX));
                let mut out = writer(None)?;
                if json {
                    serde_json::to_writer_pretty(&mut out, &rows)?;
                    writeln!(out)?;
                } else {
                    write_requests(&rows, &mut out)?;
                }
                out.flush()?;
            }
            Command::Leaks { input, limit, depth, json } => {
                let m = input.opts.load(&input.capture)?;
                let mut opts = input.opts.options_for(&m)?;
                opts.filter.kind = Some(SampleKind::Inuse);
                opts.filter.inuse_at = InuseAt::End;
                opts.filter.alloc_counts = false;
                let bytes = build(&m, &opts)?;
                opts.filter.alloc_counts = true;
                let blocks = build(&m, &opts)?;
                let mut out = writer(None)?;
                if json {
                    profcap_analyze::export::write_leaks_json(&bytes, &blocks, limit, &mut out)?;
                } else {
                    write_leaks(&bytes, &blocks, limit, depth, &mut out)?;
                }
                out.flush()?;
            }
            Command::Memtimeline { input, output } => {
                let m = input.opts.load(&input.capture)?;
                if m.alloc_count == 0 {
                    bail!("{} has no allocation events: record with `profrec --mem`", m.path.display());
                }
                let pids = &input.opts.pid;
                let series = timeline(&m, input.opts.strict, 2000, |e: &MemEvent| {
                    pids.is_empty() || pids.contains(&e.pid())
                })?;
                let output = output.unwrap_or_else(|| default_output(&input.capture, "mem.svg"));
                let title = format!("bytes in use: {}", input.capture.display());
                let svg = timeline_svg(&series, |p| m.process_name(p), m.mem_first_ns, &title);
                let mut out = create(&output)?;
                out.write_all(svg.as_bytes()).with_context(|| format!("writing {}", output.display()))?;
                out.flush()?;
                wrote(self.quiet, &output, "");
            }
            Command::Samples { input, limit, json } => {
                let m = input.opts.load(&input.capture)?;
                // The selected requests (with --spans, the file's too) both
                // filter the samples and name each one's request.
                let (opts, selected) = input.opts.options_and_requests(&m)?;
                let spans = match selected {
                    Some(spans) => spans,
                    None if m.io.is_empty() => Vec::new(),
                    None => capture_spans(&m, Vec::new()),
                };
                let index = SpanIndex::new(&spans);
                let rows = list_samples(&m, &opts, limit)?;
                let mut out = writer(None)?;
                if json {
                    profcap_analyze::export::write_samples_json(&m, &rows, &spans, &index, &mut out)?;
                } else {
                    profcap_analyze::export::write_samples(&m, &rows, &spans, &index, &mut out)?;
                }
                out.flush()?;
            }
            Command::Diff { before, after, opts, report } => {
                return run_diff(&before, &after, &opts, &report);
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

fn run_diff(before: &Path, after: &Path, opts: &Common, report: &DiffReport) -> Result<ExitCode> {
    let DiffReport { output, limit, fail_if_regressed, function, json } = report;
    let (output, limit, fail_if_regressed, json) = (output.as_deref(), *limit, *fail_if_regressed, *json);
    let filter = function
        .as_deref()
        .map(regex::Regex::new)
        .transpose()
        .context("--function is not a valid regular expression")?;
    let (ma, mb) = (opts.load(before)?, opts.load(after)?);
    let (a, b) = (profile(&ma, opts)?, profile(&mb, opts)?);
    if let Some(path) = output {
        let title = format!("{} → {}", before.display(), after.display());
        let mut out = create(path)?;
        diff_flame_graph(&a, &b, &title, &mut out)?;
        out.flush()?;
        wrote(false, path, "");
    }
    let rows = diff_table(&a, &b);
    // With the graph on standard output (-o -), the table goes to stderr.
    let mut out: Box<dyn Write> = if output == Some(Path::new("-")) {
        Box::new(std::io::stderr().lock())
    } else {
        Box::new(std::io::stdout().lock())
    };
    if json {
        let bad = fail_if_regressed.map(|p| (p, regressions(&rows, p, filter.as_ref())));
        let regressed = bad.as_ref().map(|(p, b)| (*p, b.as_slice()));
        profcap_analyze::diff::write_table_json(&rows, limit, (a.samples, b.samples), regressed, &mut out)?;
        let failed = bad.is_some_and(|(_, b)| !b.is_empty());
        return Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS });
    }
    writeln!(
        out,
        "A = {} ({} samples), B = {} ({} samples); shares of each total",
        before.display(),
        a.samples,
        after.display(),
        b.samples
    )?;
    write_table(&rows, limit, &mut out)?;
    if let Some(points) = fail_if_regressed {
        let bad = regressions(&rows, points, filter.as_ref());
        if !bad.is_empty() {
            for r in &bad {
                writeln!(
                    out,
                    "REGRESSED: {} total share {:.2}% -> {:.2}% (+{:.2} points > {points})",
                    r.name,
                    r.total_a,
                    r.total_b,
                    r.total_delta()
                )?;
            }
            return Ok(ExitCode::from(1));
        }
        writeln!(out, "no function regressed by more than {points} points")?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }
}
