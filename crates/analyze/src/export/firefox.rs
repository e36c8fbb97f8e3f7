//! The Firefox Profiler's processed profile format (through the
//! `fxprof-processed-profile` crate, as samply writes it): a process per
//! pid, a track per thread with its on-CPU samples over time, off-CPU blocks
//! and HTTP requests (with their trace ids) as markers on their threads,
//! memory in use as a counter track per process, and frames in categories by
//! what they are (native, kernel, inlined, JIT, Python). Open it at profiler.firefox.com ("Load a profile from file").

use std::collections::HashMap;

use fxprof_processed_profile::{
    CategoryColor, CategoryHandle, CpuDelta, Frame as FxFrame, FrameFlags, FrameInfo, MarkerFieldFlags,
    MarkerFieldFormat, MarkerTiming, Profile as FxProfile, ReferenceTimestamp, SamplingInterval,
    StaticSchemaMarker, StaticSchemaMarkerField, StringHandle, ThreadHandle, Timestamp,
};
use profcap_format::SampleKind;

use crate::capture::Material;
use crate::profile::{selected_samples, ProfileOptions, SampleStacks};
use crate::requests::capture_spans;
use crate::symbolize::{Frame, FrameKind, TRUNCATED};
use crate::{Error, Result};

/// A time a thread spent blocked (an off-CPU sample), with where it blocked.
struct Blocked {
    function: StringHandle,
    category: CategoryHandle,
}

impl StaticSchemaMarker for Blocked {
    const UNIQUE_MARKER_TYPE_NAME: &'static str = "Blocked";
    const DESCRIPTION: Option<&'static str> = Some("The thread was off the CPU (profrec --off-cpu)");
    const CHART_LABEL: Option<&'static str> = Some("{marker.data.function}");
    const TOOLTIP_LABEL: Option<&'static str> = Some("blocked in {marker.data.function}");
    const FIELDS: &'static [StaticSchemaMarkerField] = &[StaticSchemaMarkerField {
        key: "function",
        label: "Blocked in",
        format: MarkerFieldFormat::String,
        flags: MarkerFieldFlags::SEARCHABLE,
    }];

    fn name(&self, profile: &mut FxProfile) -> StringHandle {
        profile.intern_string("Blocked")
    }

    fn category(&self, _: &mut FxProfile) -> CategoryHandle {
        self.category
    }

    fn string_field_value(&self, _: u32) -> StringHandle {
        self.function
    }

    fn number_field_value(&self, _: u32) -> f64 {
        0.0
    }
}

/// An HTTP request a thread served or made, with its trace id.
struct Request {
    name: StringHandle,
    trace_id: StringHandle,
    parent_span_id: StringHandle,
    category: CategoryHandle,
}

impl StaticSchemaMarker for Request {
    const UNIQUE_MARKER_TYPE_NAME: &'static str = "HttpRequest";
    const DESCRIPTION: Option<&'static str> = Some("An HTTP request (profrec --requests)");
    const CHART_LABEL: Option<&'static str> = Some("{marker.name}");
    const TABLE_LABEL: Option<&'static str> = Some("{marker.name} trace {marker.data.trace_id}");
    const FIELDS: &'static [StaticSchemaMarkerField] = &[
        StaticSchemaMarkerField {
            key: "trace_id",
            label: "Trace id",
            format: MarkerFieldFormat::String,
            flags: MarkerFieldFlags::SEARCHABLE,
        },
        StaticSchemaMarkerField {
            key: "parent_span_id",
            label: "Caller's span id",
            format: MarkerFieldFormat::String,
            flags: MarkerFieldFlags::SEARCHABLE,
        },
    ];

    fn name(&self, _: &mut FxProfile) -> StringHandle {
        self.name
    }

    fn category(&self, _: &mut FxProfile) -> CategoryHandle {
        self.category
    }

    fn string_field_value(&self, field: u32) -> StringHandle {
        if field == 0 {
            self.trace_id
        } else {
            self.parent_span_id
        }
    }

    fn number_field_value(&self, _: u32) -> f64 {
        0.0
    }
}

/// The frame categories, by what a frame is.
struct Categories {
    native: CategoryHandle,
    kernel: CategoryHandle,
    inlined: CategoryHandle,
    jit: CategoryHandle,
    python: CategoryHandle,
    unknown: CategoryHandle,
    blocked: CategoryHandle,
    request: CategoryHandle,
}

impl Categories {
    fn new(p: &mut FxProfile) -> Categories {
        Categories {
            native: p.add_category("Native", CategoryColor::Yellow),
            kernel: p.add_category("Kernel", CategoryColor::Orange),
            inlined: p.add_category("Inlined", CategoryColor::LightBlue),
            jit: p.add_category("JIT", CategoryColor::Green),
            python: p.add_category("Python", CategoryColor::Magenta),
            unknown: p.add_category("Unknown", CategoryColor::Gray),
            blocked: p.add_category("Off-CPU", CategoryColor::Blue),
            request: p.add_category("Request", CategoryColor::Purple),
        }
    }

    fn of(&self, f: &Frame) -> CategoryHandle {
        if &*f.name == TRUNCATED || f.name.starts_with("[unknown]") {
            return self.unknown;
        }
        match f.kind {
            FrameKind::User => self.native,
            FrameKind::Kernel => self.kernel,
            FrameKind::Inlined => self.inlined,
            FrameKind::Jit => self.jit,
            FrameKind::Python => self.python,
        }
    }
}

/// The processes and threads of the profile, made as samples name them.
struct Tracks {
    processes: HashMap<u32, fxprof_processed_profile::ProcessHandle>,
    threads: HashMap<(u32, u32), ThreadHandle>,
}

impl Tracks {
    fn process(
        &mut self,
        p: &mut FxProfile,
        m: &Material,
        pid: u32,
    ) -> fxprof_processed_profile::ProcessHandle {
        *self.processes.entry(pid).or_insert_with(|| {
            p.add_process(&m.process_name(pid), pid, Timestamp::from_nanos_since_reference(0))
        })
    }

    fn thread(&mut self, p: &mut FxProfile, m: &Material, pid: u32, tid: u32) -> ThreadHandle {
        if let Some(&t) = self.threads.get(&(pid, tid)) {
            return t;
        }
        let process = *self.processes.entry(pid).or_insert_with(|| {
            p.add_process(&m.process_name(pid), pid, Timestamp::from_nanos_since_reference(0))
        });
        let t = p.add_thread(process, tid, Timestamp::from_nanos_since_reference(0), tid == pid);
        let name = m.threads.get(&tid).cloned().unwrap_or_else(|| m.process_name(pid));
        p.set_thread_name(t, &name);
        self.threads.insert((pid, tid), t);
        t
    }
}

/// Memory in use per process (allocations less frees, `profrec --mem`), as
/// a counter track of each process.
fn memory_counters(
    m: &Material,
    opts: &ProfileOptions,
    p: &mut FxProfile,
    tracks: &mut Tracks,
    at: &dyn Fn(u64) -> Timestamp,
) -> Result<()> {
    if m.alloc_count == 0 {
        return Ok(());
    }
    let series = crate::memory::timeline(m, opts.strict, 2000, |_| true)?;
    let mut pids: Vec<_> = series.keys().copied().collect();
    pids.sort_unstable();
    for pid in pids {
        let process = tracks.process(p, m, pid);
        let counter = p.add_counter(
            process,
            "Memory in use",
            "Memory",
            "bytes allocated and not freed (profrec --mem)",
        );
        let mut last = 0f64;
        for &(t, bytes) in &series[&pid] {
            p.add_counter_sample(counter, at(t), bytes as f64 - last, 1);
            last = bytes as f64;
        }
    }
    Ok(())
}

/// The samples `opts` selects (on-CPU samples; off-CPU blocks as markers),
/// and the capture's HTTP requests as markers, as a Firefox Profiler profile.
pub fn firefox_profile(m: &Material, opts: &ProfileOptions, product: &str) -> Result<FxProfile> {
    let mut cpu = opts.clone();
    cpu.filter.kind = Some(SampleKind::Cpu);
    cpu.filter.wall = false;
    let mut off = cpu.clone();
    off.filter.kind = Some(SampleKind::OffCpu);
    let (_, mut samples) = selected_samples(m, &cpu)?;
    let (_, mut blocks) = if m.kind_counts.contains_key("offcpu") {
        selected_samples(m, &off)?
    } else {
        (SampleKind::OffCpu, Vec::new())
    };
    if samples.is_empty() && blocks.is_empty() && m.alloc_count == 0 {
        return Err(Error::NoSamples("no on-CPU or off-CPU samples or allocations pass the filters".into()));
    }
    samples.sort_unstable_by_key(|(s, _)| (s.time_ns, s.id));
    blocks.sort_unstable_by_key(|(s, _)| (s.time_ns, s.id));
    let origin = if m.meta.start_mono_ns > 0 { m.meta.start_mono_ns.min(m.first_ns) } else { m.first_ns };
    let at = |t: u64| Timestamp::from_nanos_since_reference(t.saturating_sub(origin));
    let reference = ReferenceTimestamp::from_millis_since_unix_epoch(m.meta.start_wall_ns as f64 / 1e6);
    let freq = m.freq().max(1);
    let mut p = FxProfile::new(product, reference, SamplingInterval::from_hz(freq as f32));
    let cats = Categories::new(&mut p);
    let mut tracks = Tracks { processes: HashMap::new(), threads: HashMap::new() };
    let mut sample_stacks = SampleStacks::new(m, opts);
    let period = CpuDelta::from_nanos(1_000_000_000 / u64::from(freq));
    for (kind, list) in [(SampleKind::Cpu, &samples), (SampleKind::OffCpu, &blocks)] {
        for (s, value) in list {
            let Some((_, frames)) = sample_stacks.kept(s) else { continue };
            let thread = tracks.thread(&mut p, m, s.pid, s.tid);
            if kind == SampleKind::Cpu {
                let infos: Vec<FrameInfo> = frames
                    .iter()
                    .map(|f| FrameInfo {
                        frame: FxFrame::Label(p.intern_string(&f.name)),
                        category_pair: cats.of(f).into(),
                        flags: FrameFlags::empty(),
                    })
                    .collect();
                let stack = p.intern_stack_frames(thread, infos.into_iter());
                p.add_sample(thread, at(s.time_ns), stack, period, i32::try_from(*value).unwrap_or(i32::MAX));
            } else {
                let leaf = frames.iter().rev().find(|f| f.kind != FrameKind::Kernel).or(frames.last());
                let function = p.intern_string(leaf.map_or("[unknown]", |f| &*f.name));
                let end = s.time_ns.saturating_add(u64::try_from(*value).unwrap_or(0));
                p.add_marker(
                    thread,
                    MarkerTiming::Interval(at(s.time_ns), at(end)),
                    Blocked { function, category: cats.blocked },
                );
            }
        }
    }
    memory_counters(m, opts, &mut p, &mut tracks, &at)?;
    for span in capture_spans(m, Vec::new()) {
        let Some(&tid) = span.tids.first() else { continue };
        let thread = tracks.thread(&mut p, m, span.pid, tid);
        let trace = span.trace.as_ref();
        let marker = Request {
            name: p.intern_string(&format!("{} {}", span.method, span.target)),
            trace_id: p.intern_string(trace.map_or("", |t| t.trace_id.as_str())),
            parent_span_id: p.intern_string(trace.and_then(|t| t.parent_span_id.as_deref()).unwrap_or("")),
            category: cats.request,
        };
        p.add_marker(thread, MarkerTiming::Interval(at(span.start_ns), at(span.end_ns)), marker);
    }
    Ok(p)
}
