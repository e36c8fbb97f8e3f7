//! Flame graphs (SVG) through inferno.

use std::io::Write;

use inferno::flamegraph::color::{Color, PaletteMap};
use inferno::flamegraph::{self, Options};
use profcap_format::{SampleKind, ValueUnit};

use super::folded::{folded_lines, frame_label};
use crate::profile::Profile;
use crate::symbolize::{Frame, FrameKind, TRUNCATED};
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
    /// A flame chart: the stacks in the order given (time), not merged or
    /// sorted by name; for a [`crate::profile::time_ordered`] profile.
    pub chart: bool,
}

/// The unit flame graph values are given in, the factor from raw values
/// to the integers inferno is given, and the factor inferno shows them by:
/// microseconds under, milliseconds from 10 s of total time on ("12,000 ms",
/// not "12,000,401 µs"); bytes, KiB from 10 MiB total on. Frames keep
/// microsecond (or byte) widths either way; inferno rounds what it shows and
/// takes percentages from that, so a coarser unit waits for totals large
/// enough that the rounding cannot show (a 1.1 s total in ms read 100.04%).
fn display_unit(p: &Profile) -> (&'static str, f64, f64) {
    match p.ns_per_unit() {
        Some(ns) if p.total as f64 * ns >= 1e10 => ("ms", ns / 1e3, 1e-3),
        Some(ns) => ("µs", ns / 1e3, 1.0),
        None if p.unit == ValueUnit::Bytes && p.total >= 10 << 20 => ("KiB", 1.0, 1.0 / 1024.0),
        None if p.unit == ValueUnit::Bytes => ("bytes", 1.0, 1.0),
        None => ("samples", 1.0, 1.0),
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
    let (unit, factor, shown) = display_unit(p);
    let lines = folded_lines(p, |v| (v as f64 * factor).round() as i64);
    if lines.is_empty() {
        return Err(Error::NoSamples("nothing to draw: no samples matched the filters".into()));
    }
    let mut o = Options::default();
    o.title = opts.title.clone().unwrap_or_else(|| default_title(p));
    o.subtitle = opts.subtitle.clone();
    o.count_name = unit.to_owned();
    o.factor = shown;
    o.direction =
        if opts.inverted { flamegraph::Direction::Inverted } else { flamegraph::Direction::Straight };
    o.deterministic = true;
    o.hash = true;
    o.flame_chart = opts.chart;
    let mut palette = palette(p);
    if o.subtitle.is_none() {
        let python = p.stacks.iter().any(|(frames, _)| frames.iter().any(|f| f.kind == FrameKind::Python));
        let legend = legend(p);
        // Python's colour is named only where there are Python frames.
        o.subtitle = Some(match legend.split_once(", grey") {
            Some((head, tail)) if python => format!("{head}, pink: Python, grey{tail}"),
            _ => legend.to_owned(),
        });
    }
    o.palette_map = Some(&mut palette);
    flamegraph::from_lines(&mut o, lines.iter().map(String::as_str), out)
        // The lines are ours: what fails is writing (a closed pipe too).
        .map_err(Error::Output)
}

/// What a frame is, for its colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hue {
    Kernel,
    Native,
    Inlined,
    Jit,
    Python,
    Unknown,
}

fn hue(f: &Frame) -> Hue {
    if &*f.name == TRUNCATED || f.name.starts_with("[unknown]") || f.name.starts_with("[missing") {
        return Hue::Unknown;
    }
    match f.kind {
        FrameKind::Kernel => Hue::Kernel,
        FrameKind::Inlined => Hue::Inlined,
        FrameKind::Jit => Hue::Jit,
        FrameKind::Python => Hue::Python,
        FrameKind::User => Hue::Native,
    }
}

/// A colour of `hue` for a view of `kind`, varied by the name's hash (so a
/// function keeps its colour from one graph to the next): native code is
/// warm on-CPU, blue off-CPU and green for memory; kernel orange (purple
/// off-CPU), inlined aqua, JIT green, Python pink, unknown and [truncated]
/// grey.
fn colour(hue: Hue, kind: SampleKind, name: &str) -> Color {
    let h = name.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    let v = |range: u8, shift: u32| ((h >> shift) % u32::from(range.max(1))) as u8;
    let rgb = |r: u8, g: u8, b: u8| Color { r, g, b };
    let off_cpu = kind == SampleKind::OffCpu;
    let memory = matches!(kind, SampleKind::Alloc | SampleKind::Inuse);
    match hue {
        Hue::Unknown => {
            let g = 170 + v(30, 0);
            rgb(g, g, g)
        }
        Hue::Kernel if off_cpu => rgb(130 + v(50, 0), 100 + v(40, 8), 200 + v(55, 16)),
        Hue::Kernel => rgb(225 + v(30, 0), 120 + v(50, 8), v(40, 16)),
        Hue::Inlined => rgb(60 + v(50, 0), 170 + v(50, 8), 170 + v(50, 16)),
        Hue::Jit => rgb(60 + v(50, 0), 180 + v(50, 8), 60 + v(50, 16)),
        Hue::Python => rgb(225 + v(30, 0), 90 + v(50, 8), 180 + v(50, 16)),
        Hue::Native if off_cpu => rgb(v(80, 0), 90 + v(80, 8), 200 + v(55, 16)),
        Hue::Native if memory => rgb(v(60, 0), 180 + v(60, 8), 60 + v(120, 16)),
        Hue::Native => rgb(205 + v(50, 0), v(230, 8), v(55, 16)),
    }
}

/// The colour of every frame in `p`, by what it is (see [`colour`]).
fn palette(p: &Profile) -> PaletteMap {
    let mut map = PaletteMap::default();
    for (frames, _) in &p.stacks {
        for f in frames {
            let label = frame_label(f);
            if map.get(&label).is_none() {
                map.insert(&label, colour(hue(f), p.kind, &label));
            }
        }
    }
    map
}

/// The subtitle saying what the colours mean.
fn legend(p: &Profile) -> &'static str {
    match p.kind {
        SampleKind::OffCpu => {
            "blue: code, purple: kernel, aqua: inlined, green: JIT, grey: unknown or [truncated]"
        }
        SampleKind::Alloc | SampleKind::Inuse => {
            "green: code, orange: kernel, aqua: inlined, grey: unknown or [truncated]"
        }
        _ => "red-yellow: code, orange: kernel, aqua: inlined, green: JIT, grey: unknown or [truncated]",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(kind: SampleKind, unit: ValueUnit, total: i64) -> Profile {
        Profile {
            kind,
            unit,
            stacks: Vec::new(),
            samples: 1,
            total,
            freq: 1000,
            missing: Default::default(),
            wall: false,
        }
    }

    #[test]
    fn units_grow_with_the_total() {
        // 1000 Hz: a sample is 1 ms.
        assert_eq!(display_unit(&profile(SampleKind::Cpu, ValueUnit::Count, 9_999)).0, "µs");
        assert_eq!(display_unit(&profile(SampleKind::Cpu, ValueUnit::Count, 10_000)), ("ms", 1000.0, 1e-3));
        assert_eq!(display_unit(&profile(SampleKind::OffCpu, ValueUnit::Nanoseconds, 5_000_000)).0, "µs");
        assert_eq!(display_unit(&profile(SampleKind::Alloc, ValueUnit::Bytes, 1 << 20)).0, "bytes");
        assert_eq!(display_unit(&profile(SampleKind::Alloc, ValueUnit::Bytes, 64 << 20)).0, "KiB");
    }

    #[test]
    fn colours_follow_what_a_frame_is_and_stay_put_per_name() {
        let k = colour(Hue::Kernel, SampleKind::Cpu, "schedule_[k]");
        assert!(k.r >= 225 && k.g >= 120 && k.g < 170 && k.b < 40, "kernel orange: {k:?}");
        let n = colour(Hue::Native, SampleKind::Cpu, "main");
        assert!(n.r >= 205 && n.b < 55, "native warm: {n:?}");
        let off = colour(Hue::Native, SampleKind::OffCpu, "main");
        assert!(off.b >= 200 && off.r < 80, "off-CPU blue: {off:?}");
        let i = colour(Hue::Inlined, SampleKind::Cpu, "f_[i]");
        assert!(i.g >= 170 && i.b >= 170 && i.r < 110, "inlined aqua: {i:?}");
        let py = colour(Hue::Python, SampleKind::OffCpu, "py::app.run (app.py:3)");
        assert!(py.r >= 225 && py.b >= 180 && py.g < 140, "Python pink: {py:?}");
        let u = colour(Hue::Unknown, SampleKind::Cpu, TRUNCATED);
        assert!(u.r == u.g && u.g == u.b, "grey: {u:?}");
        assert_eq!(colour(Hue::Native, SampleKind::Cpu, "main"), n, "the same name, the same colour");
    }
}
