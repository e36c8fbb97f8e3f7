//! From samples to symbolized, aggregated stacks.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use rustc_hash::FxHashMap;
use std::sync::Arc;

use profcap_format::{Sample, SampleKind, ValueUnit};

use crate::capture::Material;
use crate::memory::{self, InuseAt, MemEvent};
use crate::requests::SpanIndex;
use crate::symbolize::{Frame, FrameKind, SymbolizeOptions, Symbolizer};
use crate::units::{format_bytes, format_ns};
use crate::{Error, Result};

/// Which samples to keep. Every field's default keeps everything.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Filter {
    /// Keep these processes only. Default: all.
    pub pids: Vec<u32>,
    /// Keep these threads only. Default: all.
    pub tids: Vec<u32>,
    /// Keep processes or threads with these names only. Default: all.
    pub comms: Vec<String>,
    /// Sample kind. Default: on-CPU if the capture has any, else the first kind found.
    pub kind: Option<SampleKind>,
    /// Seconds after the first sample to start at. Default: the beginning.
    pub from_s: Option<f64>,
    /// Seconds after the first sample to end at. Default: the end.
    pub to_s: Option<f64>,
    /// Leave out kernel frames. Default: false (kernel frames are shown).
    pub no_kernel: bool,
    /// Wall-clock view: on-CPU and off-CPU samples together, in time, per
    /// thread, under `[on-CPU]` / `[off-CPU]` frames. Default: false.
    pub wall: bool,
    /// Off-CPU: show who woke each thread above the blocked stack (needs a
    /// capture recorded with --wakers). Default: false.
    pub wakers: bool,
    /// Only samples inside these requests (see [`crate::requests`]); an
    /// off-CPU sample counts with its blocked time inside them. Default: all.
    pub spans: Option<Arc<SpanIndex>>,
    /// `inuse`: the moment to show. Default: the end of the recording.
    pub inuse_at: InuseAt,
    /// `alloc`/`inuse`: count allocations instead of bytes. Default: false.
    pub alloc_counts: bool,
    /// `alloc`/`inuse`: which memory: the host's (malloc and co.) or GPU
    /// device memory (`profrec --hbm`). Default: host.
    pub space: profcap_format::MemSpace,
}

/// Extra root frames. Default: none.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct Grouping {
    /// A root frame per process (`name (pid)`).
    pub process: bool,
    /// A root frame per thread (`name (tid)`), below the process one.
    pub thread: bool,
}

/// How to build a profile.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ProfileOptions {
    pub filter: Filter,
    pub grouping: Grouping,
    pub symbolize: SymbolizeOptions,
    /// Stacks kept, left out or turned around after symbolization.
    pub shape: Shape,
    /// Fail on a damaged capture instead of skipping damaged chunks. Default: false.
    pub strict: bool,
}

/// What is done to the symbolized stacks (as pprof's `--focus`/`--ignore`
/// and inferno's `--reverse`). Default: nothing.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Shape {
    /// Keep only the stacks with a frame whose name matches one of these.
    pub focus: Vec<regex::Regex>,
    /// Leave out the stacks with a frame whose name matches one of these.
    pub exclude: Vec<regex::Regex>,
    /// Leaf first: a bottom-up view (who calls the hot functions).
    pub reverse: bool,
}

impl Shape {
    /// Whether a stack is kept.
    pub(crate) fn keeps(&self, frames: &[Frame]) -> bool {
        let any = |res: &[regex::Regex]| frames.iter().any(|f| res.iter().any(|r| r.is_match(&f.name)));
        (self.focus.is_empty() || any(&self.focus)) && !any(&self.exclude)
    }
}

/// Symbolized stacks with their summed values.
#[derive(Debug, Clone)]
pub struct Profile {
    pub kind: SampleKind,
    pub unit: ValueUnit,
    /// Stacks root first, each with its value; sorted, no duplicates.
    pub stacks: Vec<(Vec<Frame>, i64)>,
    /// Samples that passed the filter.
    pub samples: u64,
    /// Sum of the values.
    pub total: i64,
    /// On-CPU sampling frequency (0 if unknown).
    pub freq: u32,
    /// Objects that could not be symbolized, as "path (build id)".
    pub missing: BTreeSet<String>,
    /// The wall-clock view (on-CPU and off-CPU time together).
    pub wall: bool,
}

impl Profile {
    /// Nanoseconds one unit of value stands for (time kinds), or `None`.
    pub fn ns_per_unit(&self) -> Option<f64> {
        match (self.kind, self.unit) {
            (_, ValueUnit::Nanoseconds) => Some(1.0),
            (SampleKind::Cpu, ValueUnit::Count) => crate::units::sample_period_ns(self.freq),
            _ => None,
        }
    }

    /// A human form of a value: time for time kinds, bytes for memory.
    pub fn format_value(&self, v: i64) -> String {
        match (self.ns_per_unit(), self.unit) {
            (Some(ns), _) => format_ns(v as f64 * ns),
            (None, ValueUnit::Bytes) => format_bytes(v),
            _ => format!("{v}"),
        }
    }
}

impl Profile {
    /// The sum of two profiles of the same kind (captures of a fleet, or the
    /// files of a continuous recording): values of equal stacks add up.
    pub fn merge(self, other: Profile) -> Result<Profile> {
        if (self.kind, self.unit, self.wall) != (other.kind, other.unit, other.wall) {
            return Err(Error::NoSamples(format!(
                "cannot add up {} and {} profiles",
                self.kind.name(),
                other.kind.name()
            )));
        }
        let freq = match (self.freq, other.freq) {
            (a, b) if a == b || b == 0 => a,
            (0, b) => b,
            (a, b) if self.kind == SampleKind::Cpu && self.unit == ValueUnit::Count => {
                return Err(Error::NoSamples(format!(
                    "the captures were sampled at different frequencies ({a} Hz and {b} Hz): \
                     their sample counts do not add up to time; analyze them apart"
                )));
            }
            (a, _) => a,
        };
        let mut stacks: std::collections::BTreeMap<Vec<Frame>, i64> = self.stacks.into_iter().collect();
        for (frames, v) in other.stacks {
            *stacks.entry(frames).or_default() += v;
        }
        let mut missing = self.missing;
        missing.extend(other.missing);
        Ok(Profile {
            kind: self.kind,
            unit: self.unit,
            stacks: stacks.into_iter().collect(),
            samples: self.samples + other.samples,
            total: self.total.saturating_add(other.total),
            freq,
            missing,
            wall: self.wall,
        })
    }
}

/// The kind to show when none was asked for.
pub fn default_kind(m: &Material) -> SampleKind {
    if m.kind_counts.contains_key("cpu") || m.kind_counts.is_empty() {
        return SampleKind::Cpu;
    }
    [SampleKind::OffCpu, SampleKind::Alloc, SampleKind::Inuse]
        .into_iter()
        .find(|k| m.kind_counts.contains_key(k.name()))
        .unwrap_or(SampleKind::Cpu)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    pid: u32,
    tid: u32,
    generation: u64,
    stack_id: u64,
    /// Wall view: whether this is off-CPU time.
    offcpu: bool,
    waker: Option<WakerKey>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct WakerKey {
    pid: u32,
    tid: u32,
    generation: u64,
    stack_id: u64,
}

/// Which samples pass the filter; name matches are decided once per process
/// and thread from the first pass, not per sample.
struct Keep<'a> {
    filter: &'a Filter,
    kind: SampleKind,
    first_ns: u64,
    named: Option<(HashSet<u32>, HashSet<u32>)>,
}

impl<'a> Keep<'a> {
    fn new(m: &Material, filter: &'a Filter, kind: SampleKind) -> Self {
        let named = (!filter.comms.is_empty()).then(|| {
            let matches = |name: &str| filter.comms.iter().any(|c| c == name);
            let pids = m.processes.keys().copied().filter(|&p| matches(&m.process_name(p))).collect();
            let tids = m.threads.iter().filter(|(_, n)| matches(n)).map(|(&t, _)| t).collect();
            (pids, tids)
        });
        Keep { filter, kind, first_ns: m.first_ns, named }
    }

    /// The sample's value if it passes the filter (with a request filter,
    /// the part inside the requests), else `None`.
    fn value(&self, s: &Sample) -> Option<i64> {
        let f = self.filter;
        let rel_s = s.time_ns.saturating_sub(self.first_ns) as f64 / 1e9;
        let kind_ok =
            if f.wall { matches!(s.kind, SampleKind::Cpu | SampleKind::OffCpu) } else { s.kind == self.kind };
        let passes = kind_ok
            && (f.pids.is_empty() || f.pids.contains(&s.pid))
            && (f.tids.is_empty() || f.tids.contains(&s.tid))
            && f.from_s.is_none_or(|from| rel_s >= from)
            && f.to_s.is_none_or(|to| rel_s <= to)
            && self.named.as_ref().is_none_or(|(p, t)| p.contains(&s.pid) || t.contains(&s.tid));
        if !passes {
            return None;
        }
        match self.in_spans(s) {
            None => Some(s.value),
            Some(v) => (v > 0).then_some(v),
        }
    }

    /// With a request filter: the sample's value inside the requests
    /// (blocked time is clipped to them); `None` without one.
    fn in_spans(&self, s: &Sample) -> Option<i64> {
        let spans = self.filter.spans.as_ref()?;
        if s.kind != SampleKind::OffCpu {
            return Some(if spans.covers(s.pid, s.tid, s.time_ns) { s.value } else { 0 });
        }
        let end = s.time_ns.saturating_add(u64::try_from(s.value).unwrap_or(0));
        let inside: u64 = spans.overlapping(s.pid, s.tid, s.time_ns, end).iter().map(|(_, ns)| ns).sum();
        Some(i64::try_from(inside.min(u64::try_from(s.value).unwrap_or(0))).unwrap_or(i64::MAX))
    }
}

/// Per-thread aggregation state of the second pass.
#[derive(Default)]
struct Agg {
    /// Per key: the summed value and the number of samples.
    values: FxHashMap<Key, (i64, u64)>,
    samples: u64,
    total: i64,
    unit: Option<ValueUnit>,
}

impl Agg {
    fn merge(mut self, other: Agg) -> Agg {
        let (mut big, small) = if self.values.len() >= other.values.len() {
            (self.values, other.values)
        } else {
            (other.values, self.values)
        };
        for (k, (v, n)) in small {
            let e = big.entry(k).or_default();
            e.0 += v;
            e.1 += n;
        }
        self.values = big;
        self.samples += other.samples;
        self.total = self.total.saturating_add(other.total);
        self.unit = self.unit.or(other.unit);
        self
    }
}

/// Builds the profile of one kind from a loaded capture.
pub fn build(m: &Material, opts: &ProfileOptions) -> Result<Profile> {
    let kind = opts.filter.kind.unwrap_or_else(|| default_kind(m));
    let wall = opts.filter.wall;
    let memory = matches!(kind, SampleKind::Alloc | SampleKind::Inuse) && !wall;
    let started = std::time::Instant::now();
    let Agg { values, mut samples, mut total, unit } = aggregate(m, opts, kind)?;
    if samples == 0 && m.sample_count > 0 && !wall && !memory && !m.kind_counts.contains_key(kind.name()) {
        let kinds: Vec<_> = m.kind_counts.keys().copied().collect();
        return Err(Error::NoSamples(format!(
            "the capture has no {} samples (it has: {})",
            kind.name(),
            kinds.join(", ")
        )));
    }
    let secs = started.elapsed().as_secs_f64();
    log::info!(
        "aggregated {} samples into {} keys in {:.3}s ({:.1} M samples/s)",
        m.sample_count,
        values.len(),
        secs,
        m.sample_count as f64 / secs.max(1e-9) / 1e6
    );
    let started = std::time::Instant::now();
    let shaping = !opts.shape.focus.is_empty() || !opts.shape.exclude.is_empty();
    let Symbolized { merged, missing, kept } = symbolize_keys(m, opts, values);
    log::info!("symbolized {} stacks in {:.3}s", merged.len(), started.elapsed().as_secs_f64());
    if shaping {
        // Percentages are of what --focus and --exclude keep.
        (samples, total) = kept;
    }
    Ok(Profile {
        kind,
        unit: unit.unwrap_or(match kind {
            SampleKind::OffCpu => ValueUnit::Nanoseconds,
            SampleKind::Alloc | SampleKind::Inuse => ValueUnit::Bytes,
            _ => ValueUnit::Count,
        }),
        stacks: merged.into_iter().collect(),
        samples,
        total,
        freq: m.freq(),
        missing,
        wall,
    })
}

/// The selected samples' values summed per key (process, thread when
/// grouped, mapping generation, stack, and in the wall view on/off-CPU and
/// waker), in one parallel pass over the samples (or the memory replay).
fn aggregate(m: &Material, opts: &ProfileOptions, kind: SampleKind) -> Result<Agg> {
    let stream = SampleStream::of_kind(m, opts, kind);
    let generations = m.generations();
    let wall = opts.filter.wall;
    let by_thread = opts.grouping.thread || wall;
    let wakers = opts.filter.wakers;
    if matches!(kind, SampleKind::Alloc | SampleKind::Inuse) && !wall {
        return memory_agg(m, opts, &stream.keep, kind, by_thread);
    }
    // In the wall view an on-CPU sample stands for one sampling period.
    let cpu_ns = crate::units::sample_period_ns(m.freq()).unwrap_or(0.0);
    stream.fold(
        Agg::default,
        |a, s, value| {
            let value =
                if wall && s.kind == SampleKind::Cpu { (value as f64 * cpu_ns) as i64 } else { value };
            a.unit.get_or_insert(if wall { ValueUnit::Nanoseconds } else { s.unit });
            a.samples += 1;
            a.total = a.total.saturating_add(value);
            let generation_of = |pid: u32| {
                Material::generation_at(generations.get(&pid).map_or(&[][..], Vec::as_slice), s.time_ns)
            };
            let key = Key {
                pid: s.pid,
                tid: if by_thread { s.tid } else { 0 },
                generation: generation_of(s.pid),
                stack_id: s.stack_id,
                offcpu: wall && s.kind == SampleKind::OffCpu,
                waker: s.waker.filter(|_| wakers).map(|w| WakerKey {
                    pid: w.pid,
                    tid: w.tid,
                    generation: generation_of(w.pid),
                    stack_id: w.stack_id,
                }),
            };
            let e = a.values.entry(key).or_default();
            e.0 += value;
            e.1 += 1;
        },
        Agg::merge,
    )
}

/// Each key's frames, root first (grouping frames, markers, the stack and
/// its waker's), merged where they name the same frames; and the objects
/// that had nothing to symbolize with.
/// Also the samples and the value the shape kept.
fn symbolize_keys(m: &Material, opts: &ProfileOptions, values: FxHashMap<Key, (i64, u64)>) -> Symbolized {
    let wall = opts.filter.wall;
    let mut sym = Symbolizer::new(m, opts.symbolize.clone());
    let mut merged: BTreeMap<Vec<Frame>, i64> = BTreeMap::new();
    let mut keys: Vec<_> = values.into_iter().collect();
    keys.sort_by_key(|(k, _)| (k.pid, k.tid, k.generation, k.stack_id));
    let mut grouping = opts.grouping;
    grouping.thread = opts.grouping.thread || wall;
    let mut kept = (0u64, 0i64);
    for (key, (value, count)) in keys {
        let mut frames = root_frames(m, grouping, key);
        if wall {
            frames.push(marker(if key.offcpu { "[off-CPU]" } else { "[on-CPU]" }));
        }
        frames.extend(sym.stack_frames(key.pid, key.generation, key.stack_id, !opts.filter.no_kernel));
        if let Some(w) = key.waker {
            let name = m.threads.get(&w.tid).cloned().unwrap_or_else(|| m.process_name(w.pid));
            frames.push(marker(&format!("[woken by {name} ({})]", w.tid)));
            let mut waker = sym.stack_frames(w.pid, w.generation, w.stack_id, !opts.filter.no_kernel);
            waker.reverse(); // leaf first: the wakeup call sits next to the blocked stack
            frames.extend(waker);
        }
        if !opts.shape.keeps(&frames) {
            continue;
        }
        if opts.shape.reverse {
            frames.reverse();
        }
        kept = (kept.0 + count, kept.1.saturating_add(value));
        *merged.entry(frames).or_default() += value;
    }
    Symbolized { merged, missing: sym.missing, kept }
}

/// What [`symbolize_keys`] gives.
struct Symbolized {
    merged: BTreeMap<Vec<Frame>, i64>,
    missing: BTreeSet<String>,
    /// Samples and value the shape kept.
    kept: (u64, i64),
}

/// Whether the capture has the memory events `kind` in `space` needs,
/// with what to record otherwise.
fn memory_recorded(m: &Material, kind: SampleKind, space: profcap_format::MemSpace) -> Result<()> {
    let device = space == profcap_format::MemSpace::Device;
    if device && m.device_allocs == 0 {
        return Err(Error::NoSamples(format!(
            "{} has no GPU memory events: record with `profrec --hbm`",
            m.path.display()
        )));
    }
    if !device && m.alloc_count == m.device_allocs {
        return Err(Error::NoSamples(format!(
            "{} has no allocation events: record with `profrec --mem` (or --mem --preload){}",
            m.path.display(),
            if m.device_allocs > 0 { "; it has GPU memory: --kind hbm-alloc|hbm-inuse" } else { "" }
        )));
    }
    if kind == SampleKind::Inuse && !device && m.untracked_allocs > 0 && m.untracked_allocs == m.alloc_count {
        return Err(Error::NoSamples(format!(
            "{}: its allocations have no frees to follow (Go's and Java's garbage collectors free them unseen), \
             so nothing is known to be in use; use --kind alloc",
            m.path.display()
        )));
    }
    Ok(())
}

/// Aggregates allocations (`alloc`) or live blocks (`inuse`) by stack.
fn memory_agg(
    m: &Material,
    opts: &ProfileOptions,
    keep: &Keep<'_>,
    kind: SampleKind,
    by_thread: bool,
) -> Result<Agg> {
    let space = opts.filter.space;
    memory_recorded(m, kind, space)?;
    let generations = m.generations();
    // Allocations pass the filters as a sample of their kind would; frees
    // always apply (they only end blocks that passed).
    let pass = |e: &MemEvent| match e {
        _ if e.space() != space => false,
        MemEvent::Alloc(a) => keep
            .value(&Sample {
                kind,
                time_ns: a.time_ns,
                pid: a.pid,
                tid: a.tid,
                stack_id: a.stack_id,
                value: 1,
                ..Sample::default()
            })
            .is_some(),
        MemEvent::Free(_) => true,
    };
    let counts = opts.filter.alloc_counts;
    let mut agg =
        Agg { unit: Some(if counts { ValueUnit::Count } else { ValueUnit::Bytes }), ..Agg::default() };
    let mut add = |a: &profcap_format::Alloc| {
        let value =
            i64::try_from(if counts { a.weight.max(1) } else { memory::bytes(a) }).unwrap_or(i64::MAX);
        let key = Key {
            pid: a.pid,
            tid: if by_thread { a.tid } else { 0 },
            generation: Material::generation_at(
                generations.get(&a.pid).map_or(&[][..], Vec::as_slice),
                a.time_ns,
            ),
            stack_id: a.stack_id,
            offcpu: false,
            waker: None,
        };
        let e = agg.values.entry(key).or_default();
        e.0 += value;
        e.1 += 1;
        agg.samples += 1;
        agg.total = agg.total.saturating_add(value);
    };
    if kind == SampleKind::Alloc {
        memory::for_each_event(m, opts.strict, |e| {
            if let MemEvent::Alloc(a) = e {
                if pass(e) {
                    add(a);
                }
            }
        })?;
        return Ok(agg);
    }
    let until = match opts.filter.inuse_at {
        InuseAt::End => u64::MAX,
        InuseAt::Peak => memory::peak(m, opts.strict, pass)?.0,
        InuseAt::Seconds(s) => m.mem_first_ns.saturating_add((s.max(0.0) * 1e9) as u64),
    };
    let live = memory::live_at(m, opts.strict, until, pass)?;
    let mut blocks: Vec<_> = live.live.values().copied().collect();
    blocks.sort_unstable_by_key(|a| (a.pid, a.addr));
    blocks.iter().for_each(&mut add);
    Ok(agg)
}

/// A frame that labels part of a stack rather than naming code.
fn marker(name: &str) -> Frame {
    Frame { name: Arc::from(name), module: Arc::from(""), kind: FrameKind::User }
}

fn root_frames(m: &Material, g: Grouping, key: Key) -> Vec<Frame> {
    let module: Arc<str> = Arc::from("");
    let mut out = Vec::new();
    if g.process {
        let name = format!("{} ({})", m.process_name(key.pid), key.pid);
        out.push(Frame { name: Arc::from(name), module: Arc::clone(&module), kind: FrameKind::User });
    }
    if g.thread {
        let tname = m.threads.get(&key.tid).cloned().unwrap_or_else(|| "?".into());
        let name = format!("{tname} ({})", key.tid);
        out.push(Frame { name: Arc::from(name), module, kind: FrameKind::User });
    }
    out
}

/// One sample as [`list_samples`] gives it.
#[derive(Debug, Clone)]
pub struct ListedSample {
    pub sample: Sample,
    /// Its value inside the selected requests (the value, without a request filter).
    pub value: i64,
    /// The innermost frame of its stack, if it has one.
    pub leaf: Option<Frame>,
}

/// The per-sample stream every profile and export is built from: the
/// samples of one kind (both time kinds in the wall view) that the filters
/// keep, each with its value (inside the selected requests where a request
/// filter is set), in one parallel pass over the capture.
pub struct SampleStream<'a> {
    m: &'a Material,
    keep: Keep<'a>,
    strict: bool,
}

impl std::fmt::Debug for SampleStream<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SampleStream").field("kind", &self.keep.kind).finish()
    }
}

impl<'a> SampleStream<'a> {
    /// The stream of `opts`' kind (by default the capture's main one).
    pub fn new(m: &'a Material, opts: &'a ProfileOptions) -> SampleStream<'a> {
        SampleStream::of_kind(m, opts, opts.filter.kind.unwrap_or_else(|| default_kind(m)))
    }

    fn of_kind(m: &'a Material, opts: &'a ProfileOptions, kind: SampleKind) -> SampleStream<'a> {
        SampleStream { m, keep: Keep::new(m, &opts.filter, kind), strict: opts.strict }
    }

    pub fn kind(&self) -> SampleKind {
        self.keep.kind
    }

    /// Folds the kept samples with their values: `each` per sample into
    /// accumulators made by `init`, which `merge` joins (in parallel).
    pub fn fold<A, I, F, M>(&self, init: I, each: F, merge: M) -> Result<A>
    where
        A: Send,
        I: Fn() -> A + Sync + Send,
        F: Fn(&mut A, &Sample, i64) + Sync + Send,
        M: Fn(A, A) -> A + Sync + Send,
    {
        let keep = &self.keep;
        self.m.fold_samples(
            self.strict,
            init,
            |a, s| {
                if let Some(value) = keep.value(s) {
                    each(a, s, value);
                }
            },
            merge,
        )
    }

    /// The kept samples with their values, in file order.
    pub fn collect(&self) -> Result<Vec<(Sample, i64)>> {
        self.fold(
            Vec::new,
            |v: &mut Vec<(Sample, i64)>, s, value| v.push((*s, value)),
            |mut a, b| {
                a.extend(b);
                a
            },
        )
    }
}

/// The samples `opts` selects, with their values: [`SampleStream::collect`].
pub fn selected_samples(m: &Material, opts: &ProfileOptions) -> Result<(SampleKind, Vec<(Sample, i64)>)> {
    let stream = SampleStream::new(m, opts);
    Ok((stream.kind(), stream.collect()?))
}

/// The stacks of the per-sample stream: each (pid, mapping generation,
/// stack) symbolized once, with whether `--focus`/`--exclude` keep it.
#[derive(Debug)]
pub struct SampleStacks<'a> {
    sym: Symbolizer<'a>,
    generations: FxHashMap<u32, Vec<u64>>,
    kernel: bool,
    shape: Shape,
    /// By (pid, generation, stack id): the frames, and whether they are kept.
    cache: FxHashMap<(u32, u64, u64), KeptFrames>,
}

type KeptFrames = (Arc<[Frame]>, bool);

impl<'a> SampleStacks<'a> {
    pub fn new(m: &'a Material, opts: &ProfileOptions) -> SampleStacks<'a> {
        SampleStacks {
            sym: Symbolizer::new(m, opts.symbolize.clone()),
            generations: m.generations(),
            kernel: !opts.filter.no_kernel,
            shape: opts.shape.clone(),
            cache: FxHashMap::default(),
        }
    }

    /// The mapping generation a sample's addresses are read in.
    pub fn generation(&self, s: &Sample) -> u64 {
        Material::generation_at(self.generations.get(&s.pid).map_or(&[][..], Vec::as_slice), s.time_ns)
    }

    /// A sample's generation, frames (root first) and whether the shape keeps them.
    pub fn frames(&mut self, s: &Sample) -> (u64, Arc<[Frame]>, bool) {
        let g = self.generation(s);
        let (sym, kernel, shape) = (&mut self.sym, self.kernel, &self.shape);
        let (f, keep) = self.cache.entry((s.pid, g, s.stack_id)).or_insert_with(|| {
            let f = sym.stack_frames(s.pid, g, s.stack_id, kernel);
            let keep = shape.keeps(&f);
            (Arc::from(f), keep)
        });
        (g, Arc::clone(f), *keep)
    }

    /// A sample's generation and frames, if the shape keeps them.
    pub fn kept(&mut self, s: &Sample) -> Option<(u64, Arc<[Frame]>)> {
        let (g, f, keep) = self.frames(s);
        keep.then_some((g, f))
    }

    /// Objects that could not be symbolized, as "path (build id)".
    pub fn missing(self) -> BTreeSet<String> {
        self.sym.missing
    }
}

/// The samples `opts` selects in time order, thread by thread, for a flame
/// chart: a root frame per thread, runs of samples with the same stack as
/// one entry (so `stacks` is in time order and not merged across time).
pub fn time_ordered(m: &Material, opts: &ProfileOptions) -> Result<Profile> {
    let (kind, mut samples) = selected_samples(m, opts)?;
    if matches!(kind, SampleKind::Alloc | SampleKind::Inuse) || opts.filter.wall {
        return Err(Error::NoSamples("a flame chart takes on-CPU or off-CPU samples".into()));
    }
    samples.sort_unstable_by_key(|(s, _)| (s.tid, s.time_ns, s.id));
    let mut sample_stacks = SampleStacks::new(m, opts);
    let mut grouping = opts.grouping;
    grouping.thread = true;
    let mut cache: FxHashMap<(u32, u32, u64, u64), Option<Vec<Frame>>> = FxHashMap::default();
    let mut stacks: Vec<(Vec<Frame>, i64)> = Vec::new();
    let (mut kept, mut total, mut unit) = (0u64, 0i64, None);
    for (s, value) in samples {
        let g = sample_stacks.generation(&s);
        let frames = cache.entry((s.pid, s.tid, g, s.stack_id)).or_insert_with(|| {
            let key = Key {
                pid: s.pid,
                tid: s.tid,
                generation: g,
                stack_id: s.stack_id,
                offcpu: false,
                waker: None,
            };
            // The shape sees the thread's root frame too, as in `build`.
            let mut f = root_frames(m, grouping, key);
            f.extend(sample_stacks.frames(&s).1.iter().cloned());
            opts.shape.keeps(&f).then_some(f)
        });
        let Some(frames) = frames else { continue };
        unit.get_or_insert(s.unit);
        kept += 1;
        total = total.saturating_add(value);
        match stacks.last_mut() {
            Some((last, v)) if last == frames => *v += value,
            _ => stacks.push((frames.clone(), value)),
        }
    }
    Ok(Profile {
        kind,
        unit: unit.unwrap_or(if kind == SampleKind::OffCpu {
            ValueUnit::Nanoseconds
        } else {
            ValueUnit::Count
        }),
        stacks,
        samples: kept,
        total,
        freq: m.freq(),
        missing: sample_stacks.missing(),
        wall: false,
    })
}

/// The first `limit` samples (by id) that pass the filter, each with its leaf frame.
pub fn list_samples(m: &Material, opts: &ProfileOptions, limit: usize) -> Result<Vec<ListedSample>> {
    let kind = opts.filter.kind.unwrap_or_else(|| default_kind(m));
    let keep = Keep::new(m, &opts.filter, kind);
    let trim = |mut v: Vec<(Sample, i64)>| {
        if v.len() > limit.saturating_mul(2).max(1024) {
            v.sort_unstable_by_key(|(s, _)| s.id);
            v.truncate(limit);
        }
        v
    };
    let mut kept = m.fold_samples(
        opts.strict,
        Vec::new,
        |v: &mut Vec<(Sample, i64)>, s| {
            if let Some(value) = keep.value(s) {
                v.push((*s, value));
                if v.len() > limit.saturating_mul(2).max(1024) {
                    *v = trim(std::mem::take(v));
                }
            }
        },
        |mut a, b| {
            a.extend(b);
            trim(a)
        },
    )?;
    kept.sort_unstable_by_key(|(s, _)| s.id);
    kept.truncate(limit);
    let generations = m.generations();
    let mut sym = Symbolizer::new(m, opts.symbolize.clone());
    Ok(kept
        .into_iter()
        .map(|(s, value)| {
            let g =
                Material::generation_at(generations.get(&s.pid).map_or(&[][..], Vec::as_slice), s.time_ns);
            let leaf = sym.stack_frames(s.pid, g, s.stack_id, !opts.filter.no_kernel).pop();
            ListedSample { value, sample: s, leaf }
        })
        .collect())
}
