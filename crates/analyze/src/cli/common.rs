//! The options every profile command shares, and what they turn into:
//! profile options, the selected requests, the loaded capture.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use profcap_analyze::inputs::TimeArg;
use profcap_analyze::memory::InuseAt;
use profcap_analyze::requests::{capture_spans, load_span_file, Selection, Span, SpanIndex};
use profcap_analyze::symbolize::PythonFrames;
use profcap_analyze::{build, Filter, Grouping, Material, Profile, ProfileOptions, Shape, SymbolizeOptions};
use profcap_format::SampleKind;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(super) enum PythonMode {
    Merged,
    Only,
    Native,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(super) enum Kind {
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
    /// GPU device memory allocated (profrec --hbm).
    HbmAlloc,
    /// GPU device memory in use (profrec --hbm).
    HbmInuse,
}

#[derive(Debug, Args)]
pub(super) struct Common {
    /// Sample kind. Default: cpu if recorded, else what the capture has.
    #[arg(long, value_enum, help_heading = "Samples")]
    pub(super) kind: Option<Kind>,
    /// Off-CPU: show who woke each thread (and from where) above the blocked
    /// stack; needs a capture recorded with `profrec --wakers`.
    #[arg(long, help_heading = "Samples")]
    pub(super) wakers: bool,
    /// Only these processes (comma-separated pids).
    #[arg(long, value_delimiter = ',', value_name = "PID", help_heading = "Samples")]
    pub(super) pid: Vec<u32>,
    /// Only these threads (comma-separated tids).
    #[arg(long, value_delimiter = ',', value_name = "TID", help_heading = "Samples")]
    pub(super) tid: Vec<u32>,
    /// Only processes or threads with this name (repeatable).
    #[arg(long, value_name = "NAME", help_heading = "Samples")]
    pub(super) comm: Vec<String>,
    /// Start this many seconds after the first sample (`12.5`), or at a
    /// wall-clock time: `14:05` (local time of day, its latest occurrence up
    /// to the end of the newest capture), `2026-12-01 14:05` (local) or RFC
    /// 3339 (`2026-12-01T14:05:00Z`). Of a directory (or several files), only
    /// the captures overlapping a wall-clock range are read.
    #[arg(long, value_name = "TIME", help_heading = "Samples")]
    pub(super) from: Option<TimeArg>,
    /// End this many seconds after the first sample, or at a wall-clock
    /// time (as --from).
    #[arg(long, value_name = "TIME", help_heading = "Samples")]
    pub(super) to: Option<TimeArg>,
    /// Only samples inside requests with this trace id (traceparent, B3,
    /// uber-trace-id or X-Request-Id; 8+ leading characters suffice); repeatable.
    #[arg(long, value_name = "ID", help_heading = "Requests")]
    pub(super) trace_id: Vec<String>,
    /// Only samples inside the request with this id (the ID column of
    /// `profanalyze requests`); repeatable.
    #[arg(long, value_name = "ID", help_heading = "Requests")]
    pub(super) request: Vec<u64>,
    /// Only samples inside the N slowest requests.
    #[arg(long, value_name = "N", help_heading = "Requests")]
    pub(super) slowest: Option<usize>,
    /// Also join against the spans of this OTLP JSON file (OpenTelemetry's
    /// JSON encoding; each span needs a `thread.id` attribute and a
    /// `process.pid` span or resource attribute).
    #[arg(long, value_name = "FILE", help_heading = "Requests")]
    pub(super) spans: Option<PathBuf>,
    /// --kind inuse: the moment to show: `end` (never freed), `peak` (when
    /// the most bytes were in use), or seconds after the first allocation event.
    #[arg(long, value_name = "end|peak|SECONDS", value_parser = parse_at, help_heading = "Samples")]
    pub(super) at: Option<InuseAt>,
    /// --kind alloc/inuse: count allocations instead of bytes.
    #[arg(long, help_heading = "Samples")]
    pub(super) counts: bool,
    /// Leave out kernel frames.
    #[arg(long, help_heading = "Stacks")]
    pub(super) no_kernel: bool,
    /// Add a root frame per process.
    #[arg(long, help_heading = "Stacks")]
    pub(super) per_process: bool,
    /// Keep only the stacks with a frame matching this regular expression
    /// (repeatable: any of them); percentages are then of what is kept.
    /// E.g. `--focus '^py::app\.handle'`.
    #[arg(long, value_name = "REGEX", help_heading = "Stacks")]
    pub(super) focus: Vec<String>,
    /// Leave out the stacks with a frame matching this regular expression
    /// (repeatable), e.g. `--exclude '^\[unknown\]$'`.
    #[arg(long, value_name = "REGEX", help_heading = "Stacks")]
    pub(super) exclude: Vec<String>,
    /// Turn the stacks around, leaf first: a bottom-up view of who calls the
    /// hottest functions.
    #[arg(long, help_heading = "Stacks")]
    pub(super) reverse: bool,
    /// Add a root frame per thread (below the process frame with --per-process).
    #[arg(long, help_heading = "Stacks")]
    pub(super) per_thread: bool,
    /// Directory with debug files (`.build-id/ab/cdef….debug` or the recorded
    /// paths below it); repeatable.
    #[arg(long, value_name = "DIR", help_heading = "Symbols and unwinding")]
    pub(super) debug_dir: Vec<PathBuf>,
    /// Look binaries up under this root instead of /.
    #[arg(long, value_name = "DIR", help_heading = "Symbols and unwinding")]
    pub(super) sysroot: Option<PathBuf>,
    /// Never read binaries on this machine; use only the capture's material.
    #[arg(long, help_heading = "Symbols and unwinding")]
    pub(super) no_local_files: bool,
    /// Append file:line to function names where debug info has them.
    #[arg(long, help_heading = "Symbols and unwinding")]
    pub(super) lines: bool,
    /// Fold inlined functions into their callers.
    #[arg(long, help_heading = "Symbols and unwinding")]
    pub(super) no_inline: bool,
    /// Python frames: `merged` in place of the interpreter's eval loop (native
    /// callers above them, C extensions and libraries below), `only` Python
    /// frames (stacks without any stay native), or `native` frames only.
    #[arg(long, value_enum, value_name = "HOW", default_value = "merged", help_heading = "Stacks")]
    pub(super) python: PythonMode,
    /// Fail on a damaged capture instead of skipping damaged chunks.
    #[arg(long, help_heading = "Input")]
    pub(super) strict: bool,
    /// Unwind the raw stacks kept by `profrec --keep-stacks` again here, with
    /// the capture's unwind tables or, where it has none, those of local files
    /// found like symbols (--debug-dir, --sysroot): the stacks shown are the
    /// new ones.
    #[arg(long, help_heading = "Symbols and unwinding")]
    pub(super) unwind: bool,
}

impl Common {
    /// Loads the capture, unwinding its raw stacks again with --unwind.
    pub(super) fn load(&self, path: &Path) -> Result<Material> {
        let mut m = load(path, self.strict)?;
        if self.unwind {
            let r = m.unwind_raw_stacks(self.strict, &self.profile_options()?.symbolize)?;
            log::info!("unwound {} raw stacks again; {} the same as recorded", r.samples, r.same_as_recorded);
        }
        Ok(m)
    }

    pub(super) fn profile_options(&self) -> Result<ProfileOptions> {
        let seconds = |t: Option<TimeArg>| match t {
            Some(TimeArg::Seconds(s)) => Some(s),
            _ => None,
        };
        let (from_s, to_s) = (seconds(self.from), seconds(self.to));
        if let (Some(from), Some(to)) = (from_s, to_s) {
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
            Kind::Alloc | Kind::HbmAlloc => SampleKind::Alloc,
            Kind::Inuse | Kind::HbmInuse => SampleKind::Inuse,
        });
        if matches!(self.kind, Some(Kind::HbmAlloc | Kind::HbmInuse)) {
            filter.space = profcap_format::MemSpace::Device;
        }
        filter.wall = matches!(self.kind, Some(Kind::Wall));
        filter.wakers = self.wakers;
        filter.from_s = from_s;
        filter.to_s = to_s;
        filter.no_kernel = self.no_kernel;
        if self.at.is_some() && !matches!(self.kind, Some(Kind::Inuse | Kind::HbmInuse)) {
            bail!("--at needs --kind inuse (or hbm-inuse)");
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

pub(super) fn parse_at(s: &str) -> std::result::Result<InuseAt, String> {
    match s {
        "end" => Ok(InuseAt::End),
        "peak" => Ok(InuseAt::Peak),
        _ => match s.parse::<f64>() {
            Ok(v) if v.is_finite() && v >= 0.0 => Ok(InuseAt::Seconds(v)),
            _ => Err(format!("`{s}` is not end, peak or a number of seconds")),
        },
    }
}

pub(super) fn load(path: &Path, strict: bool) -> Result<Material> {
    // The error names the file already.
    let m = Material::load(path, strict)?;
    for w in &m.warnings {
        log::warn!("{}: {w}", path.display());
    }
    Ok(m)
}

impl Common {
    pub(super) fn selection(&self) -> Selection {
        let mut sel = Selection::default();
        sel.trace_ids = self.trace_id.clone();
        sel.request_ids = self.request.clone();
        sel.slowest = self.slowest;
        sel.pids = self.pid.clone();
        sel
    }

    /// The requests of the capture (and --spans file) that the options select.
    pub(super) fn requests(&self, m: &Material) -> Result<Vec<Span>> {
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
    pub(super) fn options_for(&self, m: &Material) -> Result<ProfileOptions> {
        Ok(self.options_and_requests(m)?.0)
    }

    /// Profile options, and the requests they select (`None`: no selection
    /// and no --spans file).
    pub(super) fn options_and_requests(&self, m: &Material) -> Result<(ProfileOptions, Option<Vec<Span>>)> {
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

/// Builds the profile, with the options adjusted by `adjust` first, and
/// reports objects that could not be symbolized.
pub(super) fn profile_with(
    m: &Material,
    opts: &Common,
    adjust: impl FnOnce(&mut ProfileOptions),
) -> Result<Profile> {
    let mut o = opts.options_for(m)?;
    adjust(&mut o);
    let p = build(m, &o).with_context(|| format!("analyzing {}", m.path.display()))?;
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
