//! A sub-second heatmap (as FlameScope draws one): a column per second (or
//! per few seconds in a long capture), a row per fraction of that second,
//! each cell coloured by how much happened in it. A spike of a few tens of
//! milliseconds stands out where a flame graph of the whole capture hides it;
//! each cell's tooltip gives the `profanalyze flame --from --to` command for
//! its time range.

use std::fmt::Write as _;
use std::io::Write;

use profcap_format::SampleKind;

use crate::capture::Material;
use crate::profile::{selected_samples, ProfileOptions};
use crate::units::{format_ns, sample_period_ns};
use crate::{Error, Result};

/// How a heatmap is cut.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HeatmapOptions {
    /// Rows per column (fractions of the column's time). Default: 50 (20 ms each).
    pub rows: u32,
    /// Most columns; a longer capture gets columns of several seconds. Default: 600.
    pub max_columns: u32,
    /// The capture's file name, for the commands in the tooltips.
    pub capture: String,
}

impl Default for HeatmapOptions {
    fn default() -> Self {
        HeatmapOptions { rows: 50, max_columns: 600, capture: "CAPTURE".into() }
    }
}

const CELL_H: u32 = 10;
const LEFT: u32 = 60;
const TOP: u32 = 50;

/// Cells of `rows` x `columns`, each the sum of the values in it; and the
/// seconds a column spans.
struct Grid {
    rows: u32,
    columns: u32,
    column_s: u64,
    cells: Vec<f64>,
    /// Events lost in each cell's time (a burst the ring buffer could not take).
    lost: Vec<u64>,
}

/// The heatmap of the samples `opts` selects, as SVG. The value of a cell is
/// the on-CPU time (samples times the period) or, with `--kind offcpu`, the
/// blocked time that started in it.
pub fn heatmap_svg(
    m: &Material,
    opts: &ProfileOptions,
    h: &HeatmapOptions,
    out: &mut dyn Write,
) -> Result<()> {
    let (kind, samples) = selected_samples(m, opts)?;
    let scale = match kind {
        SampleKind::Cpu => sample_period_ns(m.freq()).unwrap_or(1.0),
        SampleKind::OffCpu => 1.0,
        other => {
            return Err(Error::NoSamples(format!(
                "a heatmap takes on-CPU or off-CPU samples, not {} (memtimeline shows memory over time)",
                other.name()
            )))
        }
    };
    if samples.is_empty() {
        return Err(Error::NoSamples(format!("no {} samples pass the filters", kind.name())));
    }
    let span_s = m.last_ns.saturating_sub(m.first_ns) / 1_000_000_000 + 1;
    let rows = h.rows.clamp(1, 1000);
    let column_s = span_s.div_ceil(u64::from(h.max_columns.max(1))).max(1);
    let columns = u32::try_from(span_s.div_ceil(column_s)).unwrap_or(u32::MAX).max(1);
    let n = rows as usize * columns as usize;
    let mut grid = Grid { rows, columns, column_s, cells: vec![0.0; n], lost: vec![0; n] };
    let column_ns = column_s * 1_000_000_000;
    let cell_of = |t: u64| {
        let rel = t.saturating_sub(m.first_ns);
        let col = (rel / column_ns).min(u64::from(columns) - 1);
        let row = ((rel % column_ns) * u64::from(rows) / column_ns).min(u64::from(rows) - 1);
        (col * u64::from(rows) + row) as usize
    };
    for (from, to, events) in m.gaps() {
        // Spread over the cells it covers (they run in time order).
        let (a, b) = (cell_of(from), cell_of(to).max(cell_of(from)));
        let per = events.div_ceil((b - a + 1) as u64);
        for c in a..=b.min(n - 1) {
            grid.lost[c] += per;
        }
    }
    for (s, value) in &samples {
        grid.cells[cell_of(s.time_ns)] += *value as f64 * scale;
    }
    let svg = render(&grid, kind, h);
    out.write_all(svg.as_bytes()).map_err(Error::Output)
}

/// White through yellow to red, by the share of the hottest cell.
fn colour(share: f64) -> String {
    if share <= 0.0 {
        return "rgb(250,250,250)".into();
    }
    let s = share.clamp(0.0, 1.0);
    let g = (230.0 * (1.0 - s)) as u8;
    let b = (120.0 * (1.0 - s).powi(2)) as u8;
    format!("rgb(255,{g},{b})")
}

fn render(grid: &Grid, kind: SampleKind, h: &HeatmapOptions) -> String {
    let max = grid.cells.iter().copied().fold(0.0f64, f64::max);
    // Few columns get wide cells; many get narrow ones (at least 6 px).
    let cell_w = (900 / grid.columns.max(1)).clamp(6, 60);
    let width = (LEFT + grid.columns * cell_w + 20).max(760);
    let height = TOP + grid.rows * CELL_H + 40;
    let what = if kind == SampleKind::OffCpu { "off-CPU time (by when blocks began)" } else { "on-CPU time" };
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<?xml version="1.0" standalone="no"?><svg version="1.1" width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg" font-family="monospace" font-size="11">"#
    );
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="18" font-size="14">{what}: a column per {} s, a row per {} ms; hottest cell {}</text>"#,
        grid.column_s,
        1000 * grid.column_s / u64::from(grid.rows),
        format_ns(max)
    );
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="34" fill="rgb(90,90,90)">hover a cell for its time and the command that draws its flame graph</text>"#
    );
    let _ = writeln!(
        s,
        r#"<defs><pattern id="lost" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="6" height="6" fill="rgb(200,200,200)"/><line x1="0" y1="0" x2="0" y2="6" stroke="rgb(110,110,110)" stroke-width="3"/></pattern></defs>"#
    );
    if grid.lost.iter().any(|&n| n > 0) {
        let _ = writeln!(
            s,
            r#"<text x="{}" y="34" fill="rgb(90,90,90)" text-anchor="end">hatched: events lost (profrec fell behind)</text>"#,
            width - 20
        );
    }
    let row_ms = 1000.0 * grid.column_s as f64 / f64::from(grid.rows);
    for r in (0..grid.rows).step_by(((grid.rows / 10).max(1)) as usize) {
        let y = TOP + r * CELL_H + CELL_H - 1;
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{y}" text-anchor="end">{:.0} ms</text>"#,
            LEFT - 4,
            f64::from(r) * row_ms
        );
    }
    // A label at least every 50 px.
    let label_every = 50u32.div_ceil(cell_w).max(1);
    for c in 0..grid.columns {
        let x = LEFT + c * cell_w;
        if c % label_every == 0 {
            let _ = writeln!(
                s,
                r#"<text x="{x}" y="{}">{} s</text>"#,
                TOP + grid.rows * CELL_H + 14,
                u64::from(c) * grid.column_s
            );
        }
        for r in 0..grid.rows {
            let v = grid.cells[(c * grid.rows + r) as usize];
            let from = u64::from(c) as f64 * grid.column_s as f64 + f64::from(r) * row_ms / 1000.0;
            let to = from + row_ms / 1000.0;
            let lost = grid.lost[(c * grid.rows + r) as usize];
            // Cells whose time lost events are hatched grey: what is drawn
            // there is less than what ran.
            let (fill, note) = if lost > 0 {
                ("url(#lost)".to_owned(), format!("; about {lost} events LOST here (ring buffer full)"))
            } else {
                (colour(if max > 0.0 { v / max } else { 0.0 }), String::new())
            };
            let _ = writeln!(
                s,
                r#"<rect x="{x}" y="{}" width="{}" height="{}" fill="{fill}"><title>{from:.3}-{to:.3} s: {}{note}&#10;profanalyze flame {} --from {from:.3} --to {to:.3}</title></rect>"#,
                TOP + r * CELL_H,
                cell_w - 1,
                CELL_H - 1,
                format_ns(v),
                super::xml_escape(&h.capture),
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_run_from_white_to_red() {
        assert_eq!(colour(0.0), "rgb(250,250,250)");
        assert_eq!(colour(1.0), "rgb(255,0,0)");
        assert_eq!(colour(7.0), "rgb(255,0,0)", "clamped");
    }

    #[test]
    fn every_cell_is_drawn_with_its_range_and_command() {
        let grid = Grid {
            rows: 4,
            columns: 2,
            column_s: 1,
            cells: vec![0.0, 1e6, 0.0, 0.0, 2e6, 0.0, 0.0, 0.0],
            lost: vec![0; 8],
        };
        let h = HeatmapOptions { capture: "a<b>.cap".into(), ..HeatmapOptions::default() };
        let svg = render(&grid, SampleKind::Cpu, &h);
        assert_eq!(svg.matches("<rect x=").count(), 8, "one per cell (the hatch pattern aside)");
        assert!(svg.contains("1.000-1.250 s: 2.0 ms"), "{svg}");
        assert!(svg.contains("profanalyze flame a&lt;b&gt;.cap --from 0.250 --to 0.500"));
        assert!(svg.contains("fill=\"rgb(255,0,0)\""), "the hottest cell is red");
    }
}
