//! Per-thread timeline strips (SVG): a row per thread, time across; where it
//! ran (on-CPU samples, red, darker where denser) and where it waited
//! (off-CPU blocks, blue, each as long as it lasted). The wall-clock view of
//! a capture recorded with `--off-cpu`, at a glance.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;

use profcap_format::SampleKind;

use crate::capture::Material;
use crate::profile::{selected_samples, ProfileOptions};
use crate::units::format_ns;
use crate::{Error, Result};

const WIDTH: u32 = 1000;
const LEFT: u32 = 180;
const ROW: u32 = 16;
const TOP: u32 = 50;
/// Most threads drawn (the busiest), so a `--all` capture stays readable.
pub const MAX_THREADS: usize = 64;

/// One thread's strip: samples per pixel column, and its blocks.
#[derive(Default)]
struct Strip {
    cpu: Vec<u32>,
    blocks: Vec<(u64, u64)>,
    busy: u64,
}

/// Draws the timeline of the samples `opts` selects (on-CPU, and off-CPU
/// where the capture has them), whatever `--kind` says.
pub fn timeline_strips_svg(m: &Material, opts: &ProfileOptions, out: &mut dyn Write) -> Result<()> {
    let (start, end) = (m.first_ns, m.last_ns.max(m.first_ns + 1));
    let px = |t: u64| ((t.saturating_sub(start)) as f64 / (end - start) as f64 * f64::from(WIDTH)) as usize;
    let strips = collect_strips(m, opts, &px)?;
    if strips.is_empty() {
        return Err(Error::NoSamples("no on-CPU or off-CPU samples pass the filters".into()));
    }
    let mut threads: Vec<_> = strips.into_iter().collect();
    let dropped = threads.len().saturating_sub(MAX_THREADS);
    if dropped > 0 {
        threads.sort_by_key(|(_, s)| std::cmp::Reverse(s.busy + s.blocks.len() as u64));
        threads.truncate(MAX_THREADS);
        threads.sort_by_key(|(k, _)| *k);
    }
    let peak = threads.iter().flat_map(|(_, s)| s.cpu.iter().copied()).max().unwrap_or(0).max(1);
    let height = TOP + threads.len() as u32 * ROW + 40;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<?xml version="1.0" standalone="no"?><svg version="1.1" width="{}" height="{height}" xmlns="http://www.w3.org/2000/svg" font-family="monospace" font-size="11">"#,
        LEFT + WIDTH + 50
    );
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="18" font-size="14">threads over {}: red on-CPU (darker = more samples), blue blocked{}</text>"#,
        format_ns((end - start) as f64),
        if dropped > 0 { format!("; {dropped} quieter threads not shown") } else { String::new() }
    );
    for i in 0..=10u32 {
        let x = LEFT + WIDTH * i / 10;
        let t = (end - start) as f64 * f64::from(i) / 10.0;
        let _ =
            writeln!(svg, r#"<text x="{x}" y="{}" text-anchor="middle">{}</text>"#, TOP - 6, format_ns(t));
    }
    for (row, ((pid, tid), s)) in threads.iter().enumerate() {
        let y = TOP + row as u32 * ROW;
        let name = m.threads.get(tid).cloned().unwrap_or_else(|| m.process_name(*pid));
        strip_row(&mut svg, y, &format!("{name} ({tid})"), s, peak, &px, start);
    }
    // Bursts of lost events, across every strip: nothing is known there.
    for (from, to, events) in m.gaps() {
        let (x0, x1) = (px(from), px(to).max(px(from) + 1));
        let _ = writeln!(
            svg,
            r#"<rect x="{}" y="{}" width="{}" height="{}" fill="rgb(120,120,120)" fill-opacity="0.45"><title>{events} events LOST at +{}-{} (ring buffer full: profrec fell behind)</title></rect>"#,
            LEFT as usize + x0,
            TOP - 2,
            x1 - x0,
            threads.len() as u32 * ROW + 2,
            format_ns(from.saturating_sub(start) as f64),
            format_ns(to.saturating_sub(start) as f64)
        );
    }
    svg.push_str("</svg>\n");
    out.write_all(svg.as_bytes()).map_err(Error::Output)
}

/// Each thread's strip: on-CPU samples per pixel column (`px` places a
/// time) and off-CPU blocks.
fn collect_strips(
    m: &Material,
    opts: &ProfileOptions,
    px: &dyn Fn(u64) -> usize,
) -> Result<BTreeMap<(u32, u32), Strip>> {
    let mut strips: BTreeMap<(u32, u32), Strip> = BTreeMap::new();
    for kind in [SampleKind::Cpu, SampleKind::OffCpu] {
        if !m.kind_counts.contains_key(kind.name()) {
            continue;
        }
        let mut o = opts.clone();
        o.filter.kind = Some(kind);
        o.filter.wall = false;
        let (_, samples) = selected_samples(m, &o)?;
        for (s, value) in samples {
            let strip = strips.entry((s.pid, s.tid)).or_default();
            if kind == SampleKind::Cpu {
                strip.cpu.resize(WIDTH as usize + 1, 0);
                strip.cpu[px(s.time_ns).min(WIDTH as usize)] += 1;
                strip.busy += 1;
            } else {
                strip.blocks.push((s.time_ns, u64::try_from(value).unwrap_or(0)));
            }
        }
    }
    Ok(strips)
}

/// One thread's row at `y`: its label (`name (tid)`), blocks and on-CPU columns.
fn strip_row(
    svg: &mut String,
    y: u32,
    label: &str,
    s: &Strip,
    peak: u32,
    px: &dyn Fn(u64) -> usize,
    start: u64,
) {
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
        LEFT - 6,
        y + ROW - 4,
        super::xml_escape(label)
    );
    let _ = writeln!(
        svg,
        r#"<rect x="{LEFT}" y="{y}" width="{WIDTH}" height="{}" fill="rgb(245,245,245)"/>"#,
        ROW - 2
    );
    for &(at, len) in &s.blocks {
        let (x0, x1) = (px(at), px(at.saturating_add(len)).max(px(at) + 1));
        let _ = writeln!(
            svg,
            r#"<rect x="{}" y="{}" width="{}" height="{}" fill="rgb(90,140,220)"><title>blocked {} at +{}</title></rect>"#,
            LEFT as usize + x0,
            y + 3,
            x1 - x0,
            ROW - 8,
            format_ns(len as f64),
            format_ns(at.saturating_sub(start) as f64)
        );
    }
    for (x, &n) in s.cpu.iter().enumerate().filter(|(_, &n)| n > 0) {
        let shade = 200 - (150 * n / peak).min(150);
        let _ = writeln!(
            svg,
            r#"<rect x="{}" y="{y}" width="1" height="{}" fill="rgb(230,{shade},{shade})"/>"#,
            LEFT as usize + x,
            ROW - 2
        );
    }
}
