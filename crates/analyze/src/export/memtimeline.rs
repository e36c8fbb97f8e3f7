//! Memory in use over time as an SVG line plot (`profanalyze memtimeline`).

use rustc_hash::FxHashMap;

use crate::units::format_bytes;

/// Renders in-use bytes over time as an SVG line plot, one line per process.
pub fn timeline_svg(
    series: &FxHashMap<u32, Vec<(u64, u64)>>,
    names: impl Fn(u32) -> String,
    first_ns: u64,
    title: &str,
) -> String {
    use std::fmt::Write;
    const W: f64 = 1000.0;
    const H: f64 = 500.0;
    const LEFT: f64 = 90.0;
    const BOTTOM: f64 = 40.0;
    const TOP: f64 = 40.0;
    const RIGHT: f64 = 20.0;
    let colors = ["#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];
    let max_t =
        series.values().flatten().map(|p| p.0).max().unwrap_or(first_ns).saturating_sub(first_ns).max(1);
    let max_v = series.values().flatten().map(|p| p.1).max().unwrap_or(0).max(1);
    let x = |t: u64| LEFT + (t.saturating_sub(first_ns) as f64 / max_t as f64) * (W - LEFT - RIGHT);
    let y = |v: u64| H - BOTTOM - (v as f64 / max_v as f64) * (H - BOTTOM - TOP);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="20" text-anchor="middle" font-size="15">{}</text>"#,
        W / 2.0,
        super::xml_escape(title)
    );
    // Axes with 5 ticks each.
    let _ =
        writeln!(s, r#"<path d="M{LEFT},{TOP} V{} H{}" stroke="black" fill="none"/>"#, H - BOTTOM, W - RIGHT);
    for i in 0..=5u64 {
        let v = max_v * i / 5;
        let t = max_t * i / 5;
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            LEFT - 6.0,
            y(v) + 4.0,
            format_bytes(i64::try_from(v).unwrap_or(i64::MAX))
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">{:.2} s</text>"#,
            x(first_ns + t),
            H - BOTTOM + 18.0,
            t as f64 / 1e9
        );
    }
    let mut pids: Vec<_> = series.keys().copied().collect();
    pids.sort_unstable();
    for (i, pid) in pids.iter().enumerate() {
        let color = colors[i % colors.len()];
        let mut d = String::new();
        let mut prev: Option<u64> = None;
        for &(t, v) in &series[pid] {
            // A step plot: the value holds until the next event.
            match prev {
                None => {
                    let _ = write!(d, "M{:.1},{:.1}", x(t), y(v));
                }
                Some(_) => {
                    let _ = write!(d, " H{:.1} V{:.1}", x(t), y(v));
                }
            }
            prev = Some(v);
        }
        let _ = writeln!(s, r#"<path d="{d}" stroke="{color}" stroke-width="1.5" fill="none"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" fill="{color}">{} ({pid})</text>"#,
            LEFT + 10.0,
            TOP + 14.0 * (i as f64 + 1.0),
            super::xml_escape(&names(*pid))
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timeline_plot_is_an_svg_with_a_line_per_process() {
        let mut series = FxHashMap::default();
        series.insert(1, vec![(0, 0), (10, 1 << 20), (20, 0)]);
        series.insert(2, vec![(5, 100)]);
        let svg = timeline_svg(&series, |p| format!("p<{p}>"), 0, "in use");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("stroke-width=\"1.5\"").count(), 2);
        assert!(svg.contains("p&lt;1&gt; (1)"));
    }
}
