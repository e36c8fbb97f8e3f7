//! Flame graphs (SVG) through inferno.

use std::io::Write;

use inferno::flamegraph::{self, Options};
use profcap_format::{SampleKind, ValueUnit};

use super::folded::folded_lines;
use crate::profile::Profile;
use crate::{Error, Result};

/// Settings of a flame graph.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct FlameOptions {
    /// Title. Default: derived from the capture and the kind.
    pub title: Option<String>,
    /// Subtitle line. Default: none.
    pub subtitle: Option<String>,
    /// Icicle graph (root at the top). Default: false.
    pub inverted: bool,
}

/// The unit flame graph values are given in, and the factor from raw values.
fn display_unit(p: &Profile) -> (&'static str, f64) {
    match p.ns_per_unit() {
        Some(ns) => ("µs", ns / 1e3),
        None if p.unit == ValueUnit::Bytes => ("bytes", 1.0),
        None => ("samples", 1.0),
    }
}

fn default_title(p: &Profile) -> String {
    if p.wall {
        return format!(
            "Wall-clock time per thread (on-CPU and off-CPU) — {} samples, {}",
            p.samples,
            p.format_value(p.total)
        );
    }
    let what = match p.kind {
        SampleKind::Cpu => "On-CPU time",
        SampleKind::OffCpu => "Off-CPU time",
        SampleKind::Alloc => "Allocated bytes",
        SampleKind::Inuse => "In-use bytes",
        SampleKind::Unknown(_) => "Samples",
    };
    let freq =
        if p.kind == SampleKind::Cpu && p.freq > 0 { format!(" at {} Hz", p.freq) } else { String::new() };
    format!("{what} — {} samples{freq}, {}", p.samples, p.format_value(p.total))
}

/// Renders `p` as an SVG flame graph; values are shown as time for time
/// kinds (on-CPU samples at the sampling frequency) and bytes for memory.
pub fn flame_graph(p: &Profile, opts: &FlameOptions, out: impl Write) -> Result<()> {
    let (unit, factor) = display_unit(p);
    let lines = folded_lines(p, |v| (v as f64 * factor).round() as i64);
    if lines.is_empty() {
        return Err(Error::NoSamples("nothing to draw: no samples matched the filters".into()));
    }
    let mut o = Options::default();
    o.title = opts.title.clone().unwrap_or_else(|| default_title(p));
    o.subtitle = opts.subtitle.clone();
    o.count_name = unit.to_owned();
    o.direction =
        if opts.inverted { flamegraph::Direction::Inverted } else { flamegraph::Direction::Straight };
    o.deterministic = true;
    o.hash = true;
    flamegraph::from_lines(&mut o, lines.iter().map(String::as_str), out)
        .map_err(|e| Error::Render(e.to_string()))
}
