//! Command line of profanalyze: parsing, and conversion into library options.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use profcap_analyze::diff::{diff_flame_graph, diff_table, regressions, write_table};
use profcap_analyze::export::{
    firefox_profile, heatmap_svg, speedscope_json, timeline_strips_svg, timeline_svg, write_leaks,
    write_speedscope, HeatmapOptions,
};
use profcap_analyze::export::{flame_graph, write_folded, write_top, write_top_json, FlameOptions, TopBy};
use profcap_analyze::export::{write_info, write_requests};
use profcap_analyze::info::info;
use profcap_analyze::profile::time_ordered;
use profcap_analyze::requests::{self, join, SortBy, SpanIndex};
use profcap_analyze::{recipes, SymbolizeOptions};

mod common;
mod inputs;
mod listing;
mod pprof;
mod rows;
use common::{load, Common};
use inputs::{added_up, name_of};
use pprof::{pprof_added_up, pprof_of_one};

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
///   profanalyze flame py.cap --python only       a Python program's functions alone
///   profanalyze heatmap app.cap                  sub-second heatmap: find the spike,
///   profanalyze flame app.cap --from 12.3 --to 12.4   then draw the spike alone
///   profanalyze speedscope app.cap               threads over time, in speedscope
///   profanalyze firefox app.cap                  tracks and markers, in the Firefox Profiler
///   profanalyze flame /var/lib/profrec --from 14:05 --to 14:10
///                                                the captures of a continuous recording
///                                                (profrec --rotate) that cover 14:05-14:10
///   profanalyze top mon.cap tue.cap              several captures added up
///   profanalyze otlp app.cap -o app.otlp.pb      OTLP profiles for a collector (experimental)
///   profanalyze parquet /var/lib/profrec -o rows/   samples and frames for DuckDB, Spark…
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
        /// The capture file; a directory (or several files) lists its
        /// captures, one line each, and the state of a `profrec --rotate`
        /// writing there.
        #[arg(required = true, value_name = "CAPTURE")]
        captures: Vec<PathBuf>,
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
        /// A flame chart: time on the x axis (each thread's samples in time
        /// order, the threads one after the other), stacks not merged.
        #[arg(long)]
        flame_chart: bool,
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
    /// Write OTLP profiles (OpenTelemetry) for a collector: EXPERIMENTAL
    ///
    /// OpenTelemetry's profiles signal is still in development: this writes
    /// a `ProfilesData` message of proto v1.10.0
    /// (`opentelemetry.proto.profiles.v1development`), which collectors of
    /// another proto version may not read. A resource per process (host,
    /// pid, executable), a sample per thread, request and stack with the
    /// wall time of each sample taken there, links to the trace (and the
    /// caller's span) of the request a sample belongs to; mappings with
    /// build ids, locations per address with inlined functions and lines.
    /// On-CPU (default) or --kind offcpu; several captures go into one
    /// message. `-o -` writes to standard output.
    Otlp {
        #[command(flatten)]
        input: Input,
        /// Output file. Default: the capture's name with .otlp.pb (.otlp.json with --json).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Write OTLP/JSON (the protobuf JSON mapping) instead of protobuf.
        #[arg(long)]
        json: bool,
    },
    /// Write the samples and their stacks as Parquet tables, for DuckDB,
    /// ClickHouse, Spark…
    ///
    /// DIR/samples.parquet has a row per sample (capture, host, time, pid,
    /// tid, process, thread, kind, unit, value, stack_id, trace_id,
    /// span_id); DIR/frames.parquet a row per frame of each stack (capture,
    /// stack_id, depth 0 = leaf, function, module, frame_kind, file, line,
    /// build_id, address, inline_depth). Join on (capture, stack_id). Both
    /// on-CPU and off-CPU samples unless --kind says one. Several captures
    /// (a fleet's, a directory) go into the same two files.
    ///
    /// E.g. with DuckDB: SELECT f.function, sum(s.value) FROM
    /// 'DIR/samples.parquet' s JOIN 'DIR/frames.parquet' f USING (capture,
    /// stack_id) WHERE f.depth = 0 AND s.kind = 'cpu' GROUP BY 1 ORDER BY 2 DESC
    #[command(verbatim_doc_comment)]
    Parquet {
        #[command(flatten)]
        input: Input,
        /// The directory to write samples.parquet and frames.parquet into
        /// (made if missing; earlier files there are replaced).
        #[arg(short, long, value_name = "DIR")]
        output: PathBuf,
    },
    /// Draw a sub-second heatmap of on-CPU (or off-CPU) time (SVG)
    ///
    /// A column per second, a row per 20 ms (--rows), each cell coloured by
    /// the time in it: spikes stand out, and each cell's tooltip gives the
    /// `flame --from --to` command that draws it.
    Heatmap {
        #[command(flatten)]
        input: Input,
        /// Output file. Default: the capture's name with .heatmap.svg.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Rows per column (fractions of a second).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
        rows: u32,
    },
    /// Draw per-thread timeline strips: where each thread ran and waited (SVG)
    ///
    /// A row per thread, time across: on-CPU samples in red (darker where
    /// denser), off-CPU blocks (`profrec --off-cpu`) in blue, as long as they
    /// lasted.
    Timeline {
        #[command(flatten)]
        input: Input,
        /// Output file. Default: the capture's name with .timeline.svg.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Write a Firefox Profiler profile (JSON) for profiler.firefox.com
    ///
    /// The processed format: a track per thread with its samples over time,
    /// off-CPU blocks and HTTP requests (with trace ids) as markers, memory in
    /// use as a counter track, frames by category (native, kernel, Python…).
    Firefox {
        #[command(flatten)]
        input: Input,
        /// Output file. Default: the capture's name with .firefox.json.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Write a speedscope profile (JSON) for speedscope.app
    ///
    /// One profile per thread, its samples in time order (on-CPU, or --kind
    /// offcpu); open it at https://www.speedscope.app or with the `speedscope`
    /// npm package offline.
    Speedscope {
        #[command(flatten)]
        input: Input,
        /// Output file. Default: the capture's name with .speedscope.json.
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
    /// blocks. Needs a capture recorded with `profrec --mem` (GPU memory:
    /// `profrec --hbm` and `leaks --kind hbm-inuse`).
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
    /// Print a shell completion script
    ///
    /// E.g. `profanalyze completions bash > /usr/share/bash-completion/completions/profanalyze`.
    Completions { shell: clap_complete::Shell },
    /// Write the man pages (profanalyze.1 and one per command) into DIR.
    Man {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Compare two captures: a differential flame graph and the functions
    /// whose share changed most.
    Diff {
        /// The baseline: a capture, a directory of captures, or several
        /// (comma-separated), added up.
        #[arg(value_delimiter = ',', num_args = 1, required = true)]
        before: Vec<PathBuf>,
        /// What to compare with it (as BEFORE).
        #[arg(value_delimiter = ',', num_args = 1, required = true)]
        after: Vec<PathBuf>,
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
enum By {
    Function,
    Module,
}

/// The captures and the options every profile command shares.
#[derive(Debug, Args)]
struct Input {
    /// Capture files, or directories of captures (`profrec --rotate`). flame,
    /// folded, top and pprof add several up (read in parallel); the other
    /// commands read one. With a wall-clock --from/--to, only the captures
    /// that overlap it are read.
    #[arg(required = true, value_name = "CAPTURE")]
    captures: Vec<PathBuf>,
    #[command(flatten)]
    opts: Common,
}

impl Input {
    /// The one capture of a command that reads one.
    fn one(&self, command: &str) -> Result<inputs::Chosen> {
        self.opts.choose_one(&self.captures, command)
    }

    /// The name outputs are called after.
    fn name(&self) -> &Path {
        name_of(&self.captures)
    }
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

/// The capture's file name, to name what is made from it.
fn capture_name(capture: &Path) -> String {
    capture.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned())
}

/// profanalyze.1 and profanalyze-COMMAND.1 for each command, into `dir`.
fn write_man_pages(dir: &Path, quiet: bool) -> Result<()> {
    use clap::CommandFactory;
    let cmd = Cli::command();
    let mut pages = vec![("profanalyze.1".to_owned(), cmd.clone())];
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = format!("profanalyze-{}", sub.get_name());
        // A one-shot command: the few page names may live to the end.
        let name: &'static str = Box::leak(name.into_boxed_str());
        pages.push((format!("{name}.1"), sub.clone().name(name).bin_name(name)));
    }
    for (file, page) in pages {
        let path = dir.join(file);
        let mut out = Vec::new();
        clap_mangen::Man::new(page).render(&mut out)?;
        std::fs::write(&path, out).with_context(|| format!("writing {}", path.display()))?;
        wrote(quiet, &path, "");
    }
    Ok(())
}

/// "profanalyze: wrote FILE…" unless the output was standard output.
fn wrote(quiet: bool, output: &Path, what: &str) {
    if !quiet && output != Path::new("-") {
        eprintln!("profanalyze: wrote {}{what}", output.display());
    }
}

/// Writes an output made whole in memory (so a failure leaves no file
/// behind) to `output`, or by default the capture's name with `ext` in the
/// current directory.
fn save(quiet: bool, output: Option<PathBuf>, capture: &Path, ext: &str, bytes: &[u8]) -> Result<()> {
    let output = output.unwrap_or_else(|| default_output(capture, ext));
    let mut out = create(&output)?;
    out.write_all(bytes)?;
    out.flush()?;
    wrote(quiet, &output, "");
    Ok(())
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
            Command::Info { captures, json, strict, unwind } => {
                let dirs: Vec<&Path> = captures.iter().filter(|p| p.is_dir()).map(PathBuf::as_path).collect();
                if captures.len() > 1 || !dirs.is_empty() {
                    let files = profcap_analyze::inputs::expand(&captures)?;
                    let mut out = writer(None)?;
                    listing::list(&files, &dirs, strict, json, &mut out)?;
                    out.flush()?;
                    return Ok(ExitCode::SUCCESS);
                }
                let mut m = load(&captures[0], strict)?;
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
            Command::Flame { input, output, title, inverted, flame_chart } => {
                let p = if flame_chart {
                    let c = input.one("flame --flame-chart")?;
                    let m = input.opts.load(&c.path)?;
                    time_ordered(&m, &c.options(&input.opts, &m)?)?
                } else {
                    added_up(&input.opts, &input.opts.choose(&input.captures)?)?
                };
                let output = output.unwrap_or_else(|| default_output(input.name(), "svg"));
                let mut fo = FlameOptions::default();
                fo.title = title;
                fo.inverted = inverted;
                fo.chart = flame_chart;
                let mut out = create(&output)?;
                flame_graph(&p, &fo, &mut out)?;
                out.flush()?;
                wrote(self.quiet, &output, &format!(" ({} samples)", p.samples));
            }
            Command::Folded { input, output } => {
                let p = added_up(&input.opts, &input.opts.choose(&input.captures)?)?;
                let mut out = writer(output.as_deref())?;
                write_folded(&p, &mut out)?;
                out.flush()?;
            }
            Command::Top { input, by, limit, json } => {
                let p = added_up(&input.opts, &input.opts.choose(&input.captures)?)?;
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
                let chosen = input.opts.choose(&input.captures)?;
                let pb = if chosen.len() == 1 {
                    pprof_of_one(&input.opts, &chosen[0])?
                } else {
                    pprof_added_up(&input.opts, &chosen)?
                };
                save(self.quiet, output, input.name(), "pb.gz", &pb)?;
            }
            Command::Otlp { input, output, json } => {
                let chosen = input.opts.choose(&input.captures)?;
                let json =
                    json || output.as_ref().is_some_and(|o| o.extension().is_some_and(|e| e == "json"));
                let bytes = rows::otlp(&input.opts, &chosen, json)?;
                save(self.quiet, output, input.name(), if json { "otlp.json" } else { "otlp.pb" }, &bytes)?;
            }
            Command::Parquet { input, output } => {
                let chosen = input.opts.choose(&input.captures)?;
                rows::parquet(&input.opts, &chosen, &output, self.quiet)?;
            }
            Command::Heatmap { input, output, rows } => {
                let c = input.one("heatmap")?;
                let m = input.opts.load(&c.path)?;
                let opts = c.options(&input.opts, &m)?;
                let mut h = HeatmapOptions::default();
                h.rows = rows;
                h.capture = c.path.display().to_string();
                let mut svg = Vec::new();
                heatmap_svg(&m, &opts, &h, &mut svg)?;
                save(self.quiet, output, &c.path, "heatmap.svg", &svg)?;
            }
            Command::Timeline { input, output } => {
                let c = input.one("timeline")?;
                let m = input.opts.load(&c.path)?;
                let opts = c.options(&input.opts, &m)?;
                let mut svg = Vec::new();
                timeline_strips_svg(&m, &opts, &mut svg)?;
                save(self.quiet, output, &c.path, "timeline.svg", &svg)?;
            }
            Command::Firefox { input, output } => {
                let c = input.one("firefox")?;
                let m = input.opts.load(&c.path)?;
                let opts = c.options(&input.opts, &m)?;
                let profile = firefox_profile(&m, &opts, &capture_name(&c.path))?;
                save(self.quiet, output, &c.path, "firefox.json", &serde_json::to_vec(&profile)?)?;
            }
            Command::Speedscope { input, output } => {
                let c = input.one("speedscope")?;
                let m = input.opts.load(&c.path)?;
                let opts = c.options(&input.opts, &m)?;
                let file = speedscope_json(&m, &opts, &capture_name(&c.path))?;
                let mut json = Vec::new();
                write_speedscope(&file, &mut json)?;
                save(self.quiet, output, &c.path, "speedscope.json", &json)?;
            }
            Command::Requests { input, sort, limit, json } => {
                let m = input.opts.load(&input.one("requests")?.path)?;
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
                let c = input.one("leaks")?;
                let m = input.opts.load(&c.path)?;
                let (bytes, blocks) = recipes::leaks(&m, &c.options(&input.opts, &m)?)?;
                let mut out = writer(None)?;
                if json {
                    profcap_analyze::export::write_leaks_json(&bytes, &blocks, limit, &mut out)?;
                } else {
                    write_leaks(&bytes, &blocks, limit, depth, &mut out)?;
                }
                out.flush()?;
            }
            Command::Memtimeline { input, output } => {
                let c = input.one("memtimeline")?;
                let m = input.opts.load(&c.path)?;
                // Host memory, or with --kind hbm-alloc|hbm-inuse the GPU's.
                let space = input.opts.profile_options()?.filter.space;
                let series = recipes::memory_in_use(&m, input.opts.strict, space, &input.opts.pid, 2000)?;
                let output = output.unwrap_or_else(|| default_output(&c.path, "mem.svg"));
                let title = format!("bytes in use: {}", c.path.display());
                let svg = timeline_svg(&series, |p| m.process_name(p), m.mem_first_ns, &title);
                let mut out = create(&output)?;
                out.write_all(svg.as_bytes()).with_context(|| format!("writing {}", output.display()))?;
                out.flush()?;
                wrote(self.quiet, &output, "");
            }
            Command::Samples { input, limit, json } => {
                let c = input.one("samples")?;
                let m = input.opts.load(&c.path)?;
                // The selected requests (with --spans, the file's too) both
                // filter the samples and name each one's request.
                let (mut opts, selected) = input.opts.options_and_requests(&m)?;
                c.narrow(&mut opts, &m);
                let (rows, spans) = recipes::samples_and_requests(&m, &opts, selected, limit)?;
                let index = SpanIndex::new(&spans);
                let mut out = writer(None)?;
                if json {
                    profcap_analyze::export::write_samples_json(&m, &rows, &spans, &index, &mut out)?;
                } else {
                    profcap_analyze::export::write_samples(&m, &rows, &spans, &index, &mut out)?;
                }
                out.flush()?;
            }
            Command::Completions { shell } => {
                use clap::CommandFactory;
                let mut script = Vec::new();
                clap_complete::generate(shell, &mut Cli::command(), "profanalyze", &mut script);
                let mut out = writer(None)?;
                out.write_all(&script)?;
                out.flush()?;
            }
            Command::Man { dir } => write_man_pages(&dir, self.quiet)?,
            Command::Diff { before, after, opts, report } => {
                return run_diff(&before, &after, &opts, &report);
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

fn run_diff(before: &[PathBuf], after: &[PathBuf], opts: &Common, report: &DiffReport) -> Result<ExitCode> {
    let DiffReport { output, limit, fail_if_regressed, function, json } = report;
    let (output, limit, fail_if_regressed, json) = (output.as_deref(), *limit, *fail_if_regressed, *json);
    let filter = function
        .as_deref()
        .map(regex::Regex::new)
        .transpose()
        .context("--function is not a valid regular expression")?;
    let a = added_up(opts, &opts.choose(before)?)?;
    let b = added_up(opts, &opts.choose(after)?)?;
    let names =
        |paths: &[PathBuf]| paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(",");
    let (before, after) = (names(before), names(after));
    if let Some(path) = output {
        let title = format!("{before} → {after}");
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
        "A = {before} ({} samples), B = {after} ({} samples); shares of each total",
        a.samples, b.samples
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
