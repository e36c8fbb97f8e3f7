//! Trace-id joins: request spans from a capture's socket events (or a span
//! file), and the samples that fall inside them.
//!
//! A sample belongs to a request when it was taken on a thread of the
//! request while the request lasted; an off-CPU sample counts with the part
//! of its blocked time that lies inside the request.

pub mod otlp;
pub mod spans;

use std::collections::HashMap;
use std::sync::Arc;

use profcap_format::SampleKind;
use rustc_hash::FxHashMap;
use serde::Serialize;

pub use crate::sockets::{http, IoAssembler, IoEvent};
pub use spans::{build_spans, Role, Span, SpanIndex};

use crate::capture::Material;
use crate::symbolize::{SymbolizeOptions, Symbolizer};
use crate::Result;

/// Which requests to look at. Every field's default keeps all.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Selection {
    /// Requests with one of these trace ids (any header format; a prefix of
    /// at least 8 characters is enough). Default: all.
    pub trace_ids: Vec<String>,
    /// Requests with one of these ids (the id of the socket event that began them).
    pub request_ids: Vec<u64>,
    /// Then keep only the N with the longest latency.
    pub slowest: Option<usize>,
    /// Only requests of these processes. Default: all.
    pub pids: Vec<u32>,
}

impl Selection {
    /// Whether this selects anything less than every request.
    pub fn is_active(&self) -> bool {
        !self.trace_ids.is_empty() || !self.request_ids.is_empty() || self.slowest.is_some()
    }

    fn trace_matches(&self, span: &Span) -> bool {
        let Some(t) = &span.trace else { return false };
        self.trace_ids.iter().any(|want| {
            let want = want.to_ascii_lowercase();
            let have = t.trace_id.to_ascii_lowercase();
            have == want || (want.len() >= 8 && have.starts_with(&want))
        })
    }

    /// The spans this selects, in time order.
    pub fn apply(&self, spans: Vec<Span>) -> Vec<Span> {
        let mut out: Vec<Span> = spans
            .into_iter()
            .filter(|s| self.pids.is_empty() || self.pids.contains(&s.pid))
            .filter(|s| self.trace_ids.is_empty() || self.trace_matches(s))
            .filter(|s| self.request_ids.is_empty() || self.request_ids.contains(&s.id))
            .collect();
        if let Some(n) = self.slowest {
            out.sort_by_key(|s| (std::cmp::Reverse(s.latency_ns()), s.id));
            out.truncate(n);
            out.sort_by_key(|s| (s.start_ns, s.id));
        }
        out
    }
}

/// The spans of a capture: those its socket events show, then `external` ones.
pub fn capture_spans(m: &Material, external: Vec<Span>) -> Vec<Span> {
    let mut spans = build_spans(&m.io);
    spans.extend(external);
    spans
}

/// An external span file's spans, on the capture's clock, numbered after
/// every socket event id of the capture.
pub fn load_span_file(m: &Material, path: &std::path::Path) -> anyhow::Result<Vec<Span>> {
    use anyhow::Context;
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let offset = i128::from(m.meta.start_wall_ns) - i128::from(m.meta.start_mono_ns);
    if m.meta.start_wall_ns == 0 {
        anyhow::bail!(
            "{}: the capture has no wall-clock start time, so spans cannot be placed on its clock",
            m.path.display()
        );
    }
    let first_id = m.io.iter().map(|e| e.id).max().unwrap_or(0) + 1;
    let (spans, skipped) = otlp::parse_spans(&text, offset, first_id)
        .with_context(|| format!("reading spans from {}", path.display()))?;
    if skipped > 0 {
        log::warn!(
            "{}: {skipped} span(s) have no thread.id attribute, process.pid or times and cannot be joined",
            path.display()
        );
    }
    Ok(spans)
}

/// A request with what its threads did while it lasted.
#[derive(Debug, Clone, Serialize)]
pub struct RequestStats {
    pub id: u64,
    pub role: &'static str,
    pub pid: u32,
    pub tids: Vec<u32>,
    pub trace_id: Option<String>,
    pub parent_span_id: Option<String>,
    pub trace_header: Option<&'static str>,
    pub method: String,
    pub target: String,
    pub status: Option<u16>,
    /// Start, relative to the capture's first sample.
    pub start_s: f64,
    pub latency_ns: u64,
    pub on_cpu_samples: u64,
    /// On-CPU samples times the sampling period.
    pub on_cpu_ns: u64,
    /// Blocked time of its threads inside it.
    pub off_cpu_ns: u64,
    /// The function with the most on-CPU samples (self), and its share of them.
    pub top_function: Option<String>,
    pub top_function_share: f64,
    /// Ids of the socket events it was built from.
    pub event_ids: Vec<u64>,
}

#[derive(Default)]
struct JoinAcc {
    cpu: FxHashMap<usize, u64>,
    offcpu_ns: FxHashMap<usize, u64>,
    /// (span, pid, generation, stack) -> on-CPU samples
    stacks: FxHashMap<(usize, u32, u64, u64), u64>,
}

impl JoinAcc {
    fn merge(mut self, o: JoinAcc) -> JoinAcc {
        for (k, v) in o.cpu {
            *self.cpu.entry(k).or_default() += v;
        }
        for (k, v) in o.offcpu_ns {
            *self.offcpu_ns.entry(k).or_default() += v;
        }
        for (k, v) in o.stacks {
            *self.stacks.entry(k).or_default() += v;
        }
        self
    }
}

/// Joins the capture's samples to `spans` (one pass over the samples).
pub fn join(
    m: &Material,
    spans: &[Span],
    symbolize: &SymbolizeOptions,
    strict: bool,
) -> Result<Vec<RequestStats>> {
    let index = SpanIndex::new(spans);
    let generations = m.generations();
    let acc = m.fold_samples(
        strict,
        JoinAcc::default,
        |a, s| match s.kind {
            SampleKind::Cpu => {
                for (i, _) in index.overlapping(s.pid, s.tid, s.time_ns, s.time_ns) {
                    *a.cpu.entry(i).or_default() += 1;
                    let g = Material::generation_at(
                        generations.get(&s.pid).map_or(&[][..], Vec::as_slice),
                        s.time_ns,
                    );
                    *a.stacks.entry((i, s.pid, g, s.stack_id)).or_default() += 1;
                }
            }
            SampleKind::OffCpu => {
                let end = s.time_ns.saturating_add(u64::try_from(s.value).unwrap_or(0));
                for (i, ns) in index.overlapping(s.pid, s.tid, s.time_ns, end) {
                    *a.offcpu_ns.entry(i).or_default() += ns;
                }
            }
            _ => {}
        },
        JoinAcc::merge,
    )?;
    // The top function of each request: the leaf user frame with the most samples.
    let mut sym = Symbolizer::new(m, symbolize.clone());
    let mut leaf_counts: HashMap<usize, HashMap<Arc<str>, u64>> = HashMap::new();
    let mut stacks: Vec<_> = acc.stacks.into_iter().collect();
    stacks.sort_unstable();
    for ((i, pid, g, stack), n) in stacks {
        let frames = sym.stack_frames(pid, g, stack, false);
        if let Some(leaf) = frames.last() {
            *leaf_counts.entry(i).or_default().entry(Arc::clone(&leaf.name)).or_default() += n;
        }
    }
    let period_ns = crate::units::sample_period_ns(m.freq()).unwrap_or(0.0);
    Ok(spans
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let cpu = acc.cpu.get(&i).copied().unwrap_or(0);
            let top = leaf_counts.get(&i).and_then(|c| {
                c.iter()
                    .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
                    .map(|(f, n)| (f.to_string(), *n))
            });
            RequestStats {
                id: s.id,
                role: s.role.name(),
                pid: s.pid,
                tids: s.tids.clone(),
                trace_id: s.trace.as_ref().map(|t| t.trace_id.clone()),
                parent_span_id: s.trace.as_ref().and_then(|t| t.parent_span_id.clone()),
                trace_header: s.trace.as_ref().map(|t| t.source.name()),
                method: s.method.clone(),
                target: s.target.clone(),
                status: s.status,
                start_s: s.start_ns.saturating_sub(m.first_ns) as f64 / 1e9,
                latency_ns: s.latency_ns(),
                on_cpu_samples: cpu,
                on_cpu_ns: (cpu as f64 * period_ns) as u64,
                off_cpu_ns: acc.offcpu_ns.get(&i).copied().unwrap_or(0),
                top_function_share: top.as_ref().map_or(0.0, |(_, n)| *n as f64 / cpu.max(1) as f64),
                top_function: top.map(|(f, _)| f),
                event_ids: s.event_ids.clone(),
            }
        })
        .collect())
}

/// How to order the request table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SortBy {
    /// When they started.
    #[default]
    Start,
    /// Longest first.
    Latency,
    /// Most on-CPU time first.
    OnCpu,
}

pub fn sort(rows: &mut [RequestStats], by: SortBy) {
    match by {
        SortBy::Start => rows.sort_by(|a, b| a.start_s.total_cmp(&b.start_s).then(a.id.cmp(&b.id))),
        SortBy::Latency => rows.sort_by_key(|r| (std::cmp::Reverse(r.latency_ns), r.id)),
        SortBy::OnCpu => rows.sort_by_key(|r| (std::cmp::Reverse(r.on_cpu_ns), r.id)),
    }
}
