//! speedscope's file format (<https://www.speedscope.app>, the JSON schema in
//! its npm package's `dist/release/file-format-schema.json`): one sampled
//! profile per thread, its samples in time order, each a stack of indexes
//! into one shared frame table, weighted by its time.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;

use profcap_format::SampleKind;
use serde_json::json;

use crate::capture::Material;
use crate::profile::{selected_samples, ProfileOptions, SampleStacks};
use crate::symbolize::{Frame, FrameKind};
use crate::units::sample_period_ns;
use crate::{Error, Result};

/// The schema a file names (speedscope checks it).
const SCHEMA: &str = "https://www.speedscope.app/file-format-schema.json";

/// The frame table: each distinct frame once.
#[derive(Default)]
struct Frames {
    index: HashMap<Frame, usize>,
    list: Vec<serde_json::Value>,
}

impl Frames {
    fn id(&mut self, f: &Frame) -> usize {
        if let Some(&i) = self.index.get(f) {
            return i;
        }
        let i = self.list.len();
        // speedscope groups by file: the object (or Python file) a frame is in.
        let mut frame = json!({ "name": &*f.name, "file": &*f.module });
        if f.kind == FrameKind::Kernel {
            frame["file"] = json!("[kernel]");
        }
        self.list.push(frame);
        self.index.insert(f.clone(), i);
        i
    }
}

/// One thread's samples, in time order.
#[derive(Default)]
struct Track {
    samples: Vec<Vec<usize>>,
    weights: Vec<f64>,
}

/// The on-CPU or off-CPU samples `opts` selects as a speedscope file named
/// `name`: one profile per thread (`name (tid)`), weights in nanoseconds
/// (an on-CPU sample weighs its sampling period). Built whole before
/// anything is written, so a failure leaves no half-written file.
pub fn speedscope_json(m: &Material, opts: &ProfileOptions, name: &str) -> Result<serde_json::Value> {
    let (kind, mut samples) = selected_samples(m, opts)?;
    let period_ns = match kind {
        SampleKind::Cpu => sample_period_ns(m.freq()).ok_or_else(|| {
            Error::NoSamples("the capture has no sampling frequency to turn samples into time".into())
        })?,
        SampleKind::OffCpu => 1.0,
        other => {
            return Err(Error::NoSamples(format!(
                "speedscope export takes on-CPU or off-CPU samples, not {} (use flame or pprof for memory)",
                other.name()
            )))
        }
    };
    if samples.is_empty() && !m.kind_counts.contains_key(kind.name()) {
        let kinds: Vec<_> = m.kind_counts.keys().copied().collect();
        return Err(Error::NoSamples(format!(
            "the capture has no {} samples (it has: {})",
            kind.name(),
            kinds.join(", ")
        )));
    }
    samples.sort_unstable_by_key(|(s, _)| (s.tid, s.time_ns, s.id));
    let mut sample_stacks = SampleStacks::new(m, opts);
    let mut frames = Frames::default();
    let mut stacks: HashMap<(u32, u64, u64), Option<Vec<usize>>> = HashMap::new();
    let mut tracks: BTreeMap<(u32, u32), Track> = BTreeMap::new();
    for (s, value) in samples {
        let g = sample_stacks.generation(&s);
        let stack = stacks.entry((s.pid, g, s.stack_id)).or_insert_with(|| {
            let (_, f) = sample_stacks.kept(&s)?;
            let ids = f.iter().map(|x| frames.id(x));
            Some(if opts.shape.reverse { ids.rev().collect() } else { ids.collect() })
        });
        let Some(stack) = stack else { continue };
        let track = tracks.entry((s.pid, s.tid)).or_default();
        track.samples.push(stack.clone());
        track.weights.push(value as f64 * period_ns);
    }
    let profiles: Vec<serde_json::Value> = tracks
        .into_iter()
        .map(|((pid, tid), t)| {
            let thread = m.threads.get(&tid).cloned().unwrap_or_else(|| m.process_name(pid));
            let end: f64 = t.weights.iter().sum();
            json!({
                "type": "sampled",
                "name": format!("{thread} ({tid})"),
                "unit": "nanoseconds",
                "startValue": 0,
                "endValue": end,
                "samples": t.samples,
                "weights": t.weights,
            })
        })
        .collect();
    Ok(json!({
        "$schema": SCHEMA,
        "name": name,
        "exporter": concat!("profanalyze ", env!("CARGO_PKG_VERSION")),
        "activeProfileIndex": 0,
        "shared": { "frames": frames.list },
        "profiles": profiles,
    }))
}

/// Writes a file made by [`speedscope_json`].
pub fn write_speedscope(file: &serde_json::Value, out: &mut dyn Write) -> Result<()> {
    serde_json::to_writer(&mut *out, file).map_err(|e| Error::Output(e.into()))?;
    writeln!(out).map_err(Error::Output)
}
