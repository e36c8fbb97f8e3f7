//! Gzipped profile.proto, as `go tool pprof` reads it.
//!
//! The messages are declared here with prost derives (field numbers from
//! github.com/google/pprof/proto/profile.proto), which saves a protoc step.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;

use flate2::write::GzEncoder;
use profcap_format::SampleKind;
use prost::Message;

use crate::capture::Material;
use crate::profile::{selected_samples, Profile, ProfileOptions, SampleStacks};
use crate::requests::{capture_spans, SpanIndex};
use crate::symbolize::{Frame, Symbolizer};
use crate::{Error, Result};

#[derive(Clone, PartialEq, Message)]
pub(super) struct PbProfile {
    #[prost(message, repeated, tag = "1")]
    pub(super) sample_type: Vec<PbValueType>,
    #[prost(message, repeated, tag = "2")]
    pub(super) sample: Vec<PbSample>,
    #[prost(message, repeated, tag = "3")]
    pub(super) mapping: Vec<PbMapping>,
    #[prost(message, repeated, tag = "4")]
    pub(super) location: Vec<PbLocation>,
    #[prost(message, repeated, tag = "5")]
    pub(super) function: Vec<PbFunction>,
    #[prost(string, repeated, tag = "6")]
    pub(super) string_table: Vec<String>,
    #[prost(int64, tag = "9")]
    pub(super) time_nanos: i64,
    #[prost(int64, tag = "10")]
    pub(super) duration_nanos: i64,
    #[prost(message, optional, tag = "11")]
    pub(super) period_type: Option<PbValueType>,
    #[prost(int64, tag = "12")]
    pub(super) period: i64,
}

#[derive(Clone, PartialEq, Message)]
pub(super) struct PbValueType {
    #[prost(int64, tag = "1")]
    r#type: i64,
    #[prost(int64, tag = "2")]
    unit: i64,
}

#[derive(Clone, PartialEq, Message)]
pub(super) struct PbSample {
    #[prost(uint64, repeated, tag = "1")]
    location_id: Vec<u64>,
    #[prost(int64, repeated, tag = "2")]
    value: Vec<i64>,
    #[prost(message, repeated, tag = "3")]
    label: Vec<PbLabel>,
}

#[derive(Clone, PartialEq, Message)]
pub(super) struct PbLabel {
    #[prost(int64, tag = "1")]
    key: i64,
    #[prost(int64, tag = "2")]
    str: i64,
    #[prost(int64, tag = "3")]
    num: i64,
}

#[derive(Clone, PartialEq, Message)]
pub(super) struct PbMapping {
    #[prost(uint64, tag = "1")]
    pub(super) id: u64,
    #[prost(uint64, tag = "2")]
    pub(super) memory_start: u64,
    #[prost(uint64, tag = "3")]
    pub(super) memory_limit: u64,
    #[prost(uint64, tag = "4")]
    pub(super) file_offset: u64,
    #[prost(int64, tag = "5")]
    pub(super) filename: i64,
    #[prost(int64, tag = "6")]
    pub(super) build_id: i64,
    #[prost(bool, tag = "7")]
    pub(super) has_functions: bool,
    #[prost(bool, tag = "8")]
    pub(super) has_filenames: bool,
    #[prost(bool, tag = "9")]
    pub(super) has_line_numbers: bool,
}

#[derive(Clone, PartialEq, Message)]
pub(super) struct PbLocation {
    #[prost(uint64, tag = "1")]
    pub(super) id: u64,
    #[prost(uint64, tag = "2")]
    pub(super) mapping_id: u64,
    #[prost(uint64, tag = "3")]
    pub(super) address: u64,
    #[prost(message, repeated, tag = "4")]
    pub(super) line: Vec<PbLine>,
}

#[derive(Clone, PartialEq, Message)]
pub(super) struct PbLine {
    #[prost(uint64, tag = "1")]
    pub(super) function_id: u64,
    #[prost(int64, tag = "2")]
    pub(super) line: i64,
}

#[derive(Clone, PartialEq, Message)]
pub(super) struct PbFunction {
    #[prost(uint64, tag = "1")]
    pub(super) id: u64,
    #[prost(int64, tag = "2")]
    pub(super) name: i64,
    #[prost(int64, tag = "3")]
    pub(super) system_name: i64,
    #[prost(int64, tag = "4")]
    pub(super) filename: i64,
}

#[derive(Default)]
struct Builder {
    p: PbProfile,
    strings: HashMap<String, i64>,
    /// By (name, module): a kernel and a user function may share a name.
    functions: HashMap<(String, String), u64>,
    mappings: HashMap<String, u64>,
    locations: HashMap<Frame, u64>,
}

impl Builder {
    fn string(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.strings.get(s) {
            return i;
        }
        let i = self.p.string_table.len() as i64;
        self.p.string_table.push(s.to_owned());
        self.strings.insert(s.to_owned(), i);
        i
    }

    fn value_type(&mut self, t: &str, unit: &str) -> PbValueType {
        PbValueType { r#type: self.string(t), unit: self.string(unit) }
    }

    fn location(&mut self, f: &Frame) -> u64 {
        if let Some(&id) = self.locations.get(f) {
            return id;
        }
        let key = (f.name.to_string(), f.module.to_string());
        let fid = match self.functions.get(&key) {
            Some(&id) => id,
            None => {
                let id = self.p.function.len() as u64 + 1;
                // The plain name: folded output's kind suffixes (_[k]) are
                // for flame graph tools, not pprof; the object is the file.
                let name = self.string(&f.name);
                let filename = self.string(&f.module);
                self.p.function.push(PbFunction { id, name, system_name: name, filename });
                self.functions.insert(key, id);
                id
            }
        };
        let mid = match self.mappings.get(&*f.module) {
            Some(&id) => id,
            None => {
                let id = self.p.mapping.len() as u64 + 1;
                let filename = self.string(&f.module);
                self.p.mapping.push(PbMapping { id, filename, has_functions: true, ..PbMapping::default() });
                self.mappings.insert(f.module.to_string(), id);
                id
            }
        };
        let id = self.p.location.len() as u64 + 1;
        self.p.location.push(PbLocation {
            id,
            mapping_id: mid,
            address: 0,
            line: vec![PbLine { function_id: fid, line: 0 }],
        });
        self.locations.insert(f.clone(), id);
        id
    }
}

impl Builder {
    fn label_str(&mut self, key: &str, value: &str) -> PbLabel {
        PbLabel { key: self.string(key), str: self.string(value), num: 0 }
    }

    fn label_num(&mut self, key: &str, value: i64) -> PbLabel {
        PbLabel { key: self.string(key), str: 0, num: value }
    }

    fn finish(self, out: impl Write) -> Result<()> {
        let mut gz = GzEncoder::new(out, flate2::Compression::default());
        gz.write_all(&self.p.encode_to_vec()).map_err(Error::Output)?;
        gz.finish().map_err(Error::Output)?;
        Ok(())
    }
}

/// What a pprof export covers: the capture's wall-clock start and length,
/// and the main program's file name (pprof's first mapping names the
/// profile's `File:`).
#[derive(Debug, Clone, Default)]
pub struct PprofTimes {
    pub start_wall_ns: u64,
    pub duration_ns: u64,
    pub main: Option<String>,
}

/// The sample types of a kind, as the Go runtime names them.
fn sample_types(kind: SampleKind, wall: bool) -> Vec<(&'static str, &'static str)> {
    match kind {
        _ if wall => vec![("wall", "nanoseconds")],
        SampleKind::Cpu => vec![("samples", "count"), ("cpu", "nanoseconds")],
        SampleKind::OffCpu => vec![("off_cpu", "nanoseconds")],
        SampleKind::Alloc => vec![("alloc_objects", "count"), ("alloc_space", "bytes")],
        SampleKind::Inuse => vec![("inuse_objects", "count"), ("inuse_space", "bytes")],
        SampleKind::Unknown(_) => vec![("samples", "count")],
    }
}

fn header(b: &mut Builder, kind: SampleKind, wall: bool, ns_per_sample: Option<f64>, times: &PprofTimes) {
    b.string("");
    if let Some(main) = &times.main {
        let filename = b.string(main);
        b.p.mapping.push(PbMapping { id: 1, filename, has_functions: true, ..PbMapping::default() });
        b.mappings.insert(main.clone(), 1);
    }
    b.p.sample_type = sample_types(kind, wall).iter().map(|(t, u)| b.value_type(t, u)).collect();
    if kind == SampleKind::Cpu && !wall {
        b.p.period_type = Some(b.value_type("cpu", "nanoseconds"));
        b.p.period = ns_per_sample.unwrap_or(0.0) as i64;
    }
    b.p.time_nanos = i64::try_from(times.start_wall_ns).unwrap_or(0);
    b.p.duration_nanos = i64::try_from(times.duration_ns).unwrap_or(i64::MAX);
}

/// Writes an aggregated profile `p` as a gzipped pprof profile: one sample
/// per stack, without labels. For memory kinds `objects` is the same
/// selection counted in allocations (`--counts`), for the `*_objects` value.
pub fn write_pprof(p: &Profile, objects: Option<&Profile>, times: PprofTimes, out: impl Write) -> Result<()> {
    let mut b = Builder::default();
    let ns = p.ns_per_unit();
    header(&mut b, p.kind, p.wall, ns, &times);
    let counts: HashMap<&[Frame], i64> =
        objects.map(|o| o.stacks.iter().map(|(f, v)| (f.as_slice(), *v)).collect()).unwrap_or_default();
    for (frames, v) in &p.stacks {
        let location_id: Vec<u64> = frames.iter().rev().map(|f| b.location(f)).collect();
        let value = match p.kind {
            _ if p.wall => vec![*v],
            SampleKind::Cpu => vec![*v, (*v as f64 * ns.unwrap_or(0.0)) as i64],
            SampleKind::Alloc | SampleKind::Inuse => {
                vec![counts.get(frames.as_slice()).copied().unwrap_or(0), *v]
            }
            _ => vec![*v],
        };
        b.p.sample.push(PbSample { location_id, value, label: Vec::new() });
    }
    b.finish(out)
}

/// One labelled sample of a per-sample export: who (pid, tid, names), in
/// which request (its trace id, and the caller's span id the request
/// carried), with which stack.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LabelledKey {
    pub pid: u32,
    pub tid: u32,
    pub process_name: Arc<str>,
    pub thread_name: Arc<str>,
    pub trace_id: Option<String>,
    pub parent_span_id: Option<String>,
    /// The stack: its capture id and the mapping generation it is read in.
    pub stack_id: u64,
    pub generation: u64,
}

/// Writes on-CPU or off-CPU samples grouped by [`LabelledKey`] (summed
/// values) as a gzipped pprof profile with labels `pid`, `tid`,
/// `process_name`, `thread_name`, and `trace_id`/`parent_span_id` where a
/// sample is joined to a request. Locations are per address, each with its
/// mapping (range, file offset, build id) and its functions' source lines,
/// inlined ones first; Python frames take the place of the eval loop.
pub fn write_pprof_labelled(
    m: &Material,
    opts: &ProfileOptions,
    kind: SampleKind,
    groups: &[(LabelledKey, i64)],
    times: PprofTimes,
    out: impl Write,
) -> Result<()> {
    let ns_per_sample = crate::units::sample_period_ns(m.freq());
    let mut a = AddrBuilder {
        b: Builder::default(),
        sym: Symbolizer::new(m, opts.symbolize.clone()),
        m,
        ..AddrBuilder::empty(m)
    };
    // Real mappings here: the main program's is moved first (pprof's `File:`).
    let main = times.main.clone();
    header(&mut a.b, kind, false, ns_per_sample, &PprofTimes { main: None, ..times });
    let kernel = !opts.filter.no_kernel;
    for (k, v) in groups {
        let location_id = a.stack(k.pid, k.generation, k.stack_id, kernel);
        let value = match kind {
            SampleKind::Cpu => vec![*v, (*v as f64 * ns_per_sample.unwrap_or(0.0)) as i64],
            _ => vec![*v],
        };
        let b = &mut a.b;
        let mut label = vec![
            b.label_num("pid", i64::from(k.pid)),
            b.label_num("tid", i64::from(k.tid)),
            b.label_str("process_name", &k.process_name),
            b.label_str("thread_name", &k.thread_name),
        ];
        if let Some(t) = &k.trace_id {
            label.push(b.label_str("trace_id", t));
        }
        if let Some(sp) = &k.parent_span_id {
            label.push(b.label_str("parent_span_id", sp));
        }
        b.p.sample.push(PbSample { location_id, value, label });
    }
    if let Some(main) = main {
        let strings = &a.b.p.string_table;
        let is_main = |mp: &PbMapping| {
            let file = usize::try_from(mp.filename).ok().and_then(|i| strings.get(i));
            file.is_some_and(|f| f.rsplit('/').next() == Some(main.as_str()))
        };
        if let Some(i) = a.b.p.mapping.iter().position(is_main) {
            a.b.p.mapping.swap(0, i);
        }
    }
    a.b.finish(out)
}

/// Locations per address, functions per (name, source file), mappings per
/// process mapping.
pub(super) struct AddrBuilder<'a> {
    b: Builder,
    sym: Symbolizer<'a>,
    m: &'a Material,
    mappings: HashMap<(u32, u64, u64), u64>,
    pub(super) kernel_mapping: Option<u64>,
    funcs: HashMap<(Arc<str>, Arc<str>), u64>,
    native: HashMap<(u64, u64, bool), (u64, bool)>,
    kernel: HashMap<u64, u64>,
    python: HashMap<(Arc<str>, u32), u64>,
    stacks: HashMap<(u32, u64, u64), Vec<u64>>,
}

impl<'a> AddrBuilder<'a> {
    /// For other exporters: the tables alone (string 0 is ""), symbolized
    /// as `opts` says.
    pub(super) fn new(m: &'a Material, opts: &ProfileOptions) -> AddrBuilder<'a> {
        let mut a = AddrBuilder { sym: Symbolizer::new(m, opts.symbolize.clone()), ..AddrBuilder::empty(m) };
        a.b.string("");
        a
    }

    /// The tables built so far: strings, mappings, locations, functions.
    pub(super) fn tables(&self) -> &PbProfile {
        &self.b.p
    }

    fn empty(m: &'a Material) -> AddrBuilder<'a> {
        AddrBuilder {
            b: Builder::default(),
            sym: Symbolizer::new(m, Default::default()),
            m,
            mappings: HashMap::new(),
            kernel_mapping: None,
            funcs: HashMap::new(),
            native: HashMap::new(),
            kernel: HashMap::new(),
            python: HashMap::new(),
            stacks: HashMap::new(),
        }
    }

    fn function(&mut self, name: &Arc<str>, file: &Arc<str>) -> u64 {
        if let Some(&id) = self.funcs.get(&(Arc::clone(name), Arc::clone(file))) {
            return id;
        }
        let id = self.b.p.function.len() as u64 + 1;
        let (n, f) = (self.b.string(name), self.b.string(file));
        self.b.p.function.push(PbFunction { id, name: n, system_name: n, filename: f });
        self.funcs.insert((Arc::clone(name), Arc::clone(file)), id);
        id
    }

    fn location(&mut self, mapping_id: u64, address: u64, line: Vec<PbLine>) -> u64 {
        let id = self.b.p.location.len() as u64 + 1;
        self.b.p.location.push(PbLocation { id, mapping_id, address, line });
        id
    }

    fn mapping(&mut self, pid: u32, map: &profcap_format::Mapping) -> u64 {
        let key = (pid, map.start, map.seen_ns);
        if let Some(&id) = self.mappings.get(&key) {
            return id;
        }
        let id = self.b.p.mapping.len() as u64 + 1;
        let (filename, build_id) =
            (self.b.string(&map.path), self.b.string(&crate::symbolize::hex(&map.build_id)));
        self.b.p.mapping.push(PbMapping {
            id,
            memory_start: map.start,
            memory_limit: map.end,
            file_offset: map.file_offset,
            filename,
            build_id,
            has_functions: true,
            has_filenames: true,
            has_line_numbers: true,
        });
        self.mappings.insert(key, id);
        id
    }

    /// A user address's location, and whether it is the eval loop's.
    fn native(&mut self, pid: u32, generation: u64, addr: u64, leaf: bool) -> (u64, bool) {
        if let Some(&l) = self.native.get(&(u64::from(pid) << 32 ^ generation, addr, leaf)) {
            return l;
        }
        let (mapping, lines) = self.sym.source_lines(pid, generation, addr, leaf);
        let mapping_id = mapping.as_ref().map_or(0, |map| self.mapping(pid, map));
        let module: Arc<str> = mapping.as_ref().map_or(Arc::from("[unknown]"), |map| {
            Arc::from(map.path.rsplit('/').next().unwrap_or(&map.path))
        });
        let eval = lines.iter().any(|l| Symbolizer::is_eval_loop(&l.function));
        let line: Vec<PbLine> = if lines.is_empty() {
            let at = mapping.as_ref().map_or(addr, |map| addr - map.start + map.file_offset);
            let name: Arc<str> = Arc::from(format!("{module}+0x{at:x}"));
            vec![PbLine { function_id: self.function(&name, &module), line: 0 }]
        } else {
            lines
                .iter()
                .map(|l| {
                    let file = l.file.clone().unwrap_or_else(|| Arc::clone(&module));
                    PbLine { function_id: self.function(&l.function, &file), line: i64::from(l.line) }
                })
                .collect()
        };
        let id = self.location(mapping_id, addr, line);
        self.native.insert((u64::from(pid) << 32 ^ generation, addr, leaf), (id, eval));
        (id, eval)
    }

    fn kernel(&mut self, addr: u64) -> u64 {
        if let Some(&id) = self.kernel.get(&addr) {
            return id;
        }
        let mapping = match self.kernel_mapping {
            Some(id) => id,
            None => {
                let id = self.b.p.mapping.len() as u64 + 1;
                let filename = self.b.string("[kernel]");
                self.b.p.mapping.push(PbMapping {
                    id,
                    filename,
                    has_functions: true,
                    ..PbMapping::default()
                });
                self.kernel_mapping = Some(id);
                id
            }
        };
        let f = self.sym.kernel_frame(addr);
        let function_id = self.function(&f.name, &f.module);
        let id = self.location(mapping, addr, vec![PbLine { function_id, line: 0 }]);
        self.kernel.insert(addr, id);
        id
    }

    fn python(&mut self, f: &Frame, line: u32) -> u64 {
        if let Some(&id) = self.python.get(&(Arc::clone(&f.name), line)) {
            return id;
        }
        // The name without its `(file:line)`: pprof has fields for those.
        let name: Arc<str> = Arc::from(f.name.split(" (").next().unwrap_or(&f.name));
        let function_id = self.function(&name, &f.module);
        let id = self.location(0, 0, vec![PbLine { function_id, line: i64::from(line) }]);
        self.python.insert((Arc::clone(&f.name), line), id);
        id
    }

    /// A stack's location ids, leaf first: kernel, then user addresses with
    /// the Python runs in place of the eval loops (innermost run for the
    /// innermost loop; runs left over at the root), `[truncated]` last.
    pub(super) fn stack(&mut self, pid: u32, generation: u64, stack_id: u64, kernel: bool) -> Vec<u64> {
        if let Some(s) = self.stacks.get(&(pid, generation, stack_id)) {
            return s.clone();
        }
        let Some(stack) = self.m.stacks.get(&stack_id) else { return Vec::new() };
        let mut out = Vec::new();
        if kernel {
            out.extend(stack.kernel.iter().map(|&a| self.kernel(a)));
        }
        let mut runs = self.sym.python_runs(stack_id);
        runs.reverse(); // innermost first
        let mut runs = runs.into_iter();
        for (i, &addr) in stack.user.iter().enumerate() {
            let (id, eval) = self.native(pid, generation, addr, i == 0);
            match if eval { runs.next() } else { None } {
                Some(run) => {
                    out.extend(run.iter().rev().map(|(f, l)| self.python(f, *l)).collect::<Vec<_>>())
                }
                None => out.push(id),
            }
        }
        for run in runs {
            out.extend(run.iter().rev().map(|(f, l)| self.python(f, *l)).collect::<Vec<_>>());
        }
        if stack.end.is_truncated() {
            let name: Arc<str> = Arc::from(crate::symbolize::TRUNCATED);
            let function_id = self.function(&name, &name);
            out.push(self.location(0, 0, vec![PbLine { function_id, line: 0 }]));
        }
        self.stacks.insert((pid, generation, stack_id), out.clone());
        out
    }
}

/// Calls `each(key, value, time_ns)` for every on-CPU or off-CPU sample
/// `opts` selects (`--focus`/`--exclude` apply), with who took it, the
/// request it belongs to and its stack; returns the kind.
pub fn for_each_labelled(
    m: &Material,
    opts: &ProfileOptions,
    mut each: impl FnMut(LabelledKey, i64, u64),
) -> Result<SampleKind> {
    let (kind, samples) = selected_samples(m, opts)?;
    let spans = if m.io.is_empty() { Vec::new() } else { capture_spans(m, Vec::new()) };
    let index = SpanIndex::new(&spans);
    let mut stacks = SampleStacks::new(m, opts);
    // Names once per process and thread, not per sample.
    let mut processes: HashMap<u32, Arc<str>> = HashMap::new();
    let mut threads: HashMap<u32, Arc<str>> = HashMap::new();
    for (s, value) in samples {
        let Some((g, _)) = stacks.kept(&s) else { continue };
        let span =
            index.overlapping(s.pid, s.tid, s.time_ns, s.time_ns).first().and_then(|&(i, _)| spans.get(i));
        let trace = span.and_then(|sp| sp.trace.as_ref());
        let key = LabelledKey {
            pid: s.pid,
            tid: s.tid,
            process_name: Arc::clone(
                processes.entry(s.pid).or_insert_with(|| Arc::from(m.process_name(s.pid))),
            ),
            thread_name: Arc::clone(
                threads
                    .entry(s.tid)
                    .or_insert_with(|| Arc::from(m.threads.get(&s.tid).map_or("", |t| t.as_str()))),
            ),
            trace_id: trace.map(|t| t.trace_id.clone()),
            parent_span_id: trace.and_then(|t| t.parent_span_id.clone()),
            stack_id: s.stack_id,
            generation: g,
        };
        each(key, value, s.time_ns);
    }
    Ok(kind)
}

/// The on-CPU or off-CPU samples `opts` selects, grouped by who took them,
/// the request they belong to and their stack (`--focus`/`--exclude` apply).
pub fn labelled_groups(m: &Material, opts: &ProfileOptions) -> Result<(SampleKind, Vec<(LabelledKey, i64)>)> {
    let mut groups: HashMap<LabelledKey, i64> = HashMap::new();
    let kind = for_each_labelled(m, opts, |key, value, _| *groups.entry(key).or_default() += value)?;
    let mut groups: Vec<_> = groups.into_iter().collect();
    groups.sort_by_key(|(k, _)| (k.pid, k.tid, k.stack_id, k.generation));
    Ok((kind, groups))
}
