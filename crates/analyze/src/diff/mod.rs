//! Comparing two profiles: a differential flame graph and a table of the
//! functions whose share of the total changed most.
//!
//! Shares are fractions of each profile's own total, so a longer second
//! recording does not look like a regression.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;

use inferno::{differential, flamegraph};

use crate::export::{folded_lines, top_table, TopBy};
use crate::profile::Profile;
use crate::{Error, Result};

/// How one function changed between the profiles (shares in percent).
#[derive(Debug, Clone, PartialEq)]
pub struct DiffRow {
    pub name: Arc<str>,
    pub self_a: f64,
    pub self_b: f64,
    pub total_a: f64,
    pub total_b: f64,
}

impl DiffRow {
    /// Change of the self share, in percentage points.
    pub fn self_delta(&self) -> f64 {
        self.self_b - self.self_a
    }

    /// Change of the total (inclusive) share, in percentage points.
    pub fn total_delta(&self) -> f64 {
        self.total_b - self.total_a
    }
}

fn shares(p: &Profile) -> BTreeMap<Arc<str>, (f64, f64)> {
    let total = p.total.max(1) as f64;
    top_table(p, TopBy::Function)
        .into_iter()
        .map(|r| (r.name, (100.0 * r.self_value as f64 / total, 100.0 * r.total as f64 / total)))
        .collect()
}

/// Every function of either profile, largest self-share change first.
pub fn diff_table(a: &Profile, b: &Profile) -> Vec<DiffRow> {
    let (sa, sb) = (shares(a), shares(b));
    let mut names: Vec<&Arc<str>> = sa.keys().chain(sb.keys()).collect();
    names.sort();
    names.dedup();
    let mut rows: Vec<DiffRow> = names
        .into_iter()
        .map(|n| {
            let (self_a, total_a) = sa.get(n).copied().unwrap_or_default();
            let (self_b, total_b) = sb.get(n).copied().unwrap_or_default();
            DiffRow { name: Arc::clone(n), self_a, self_b, total_a, total_b }
        })
        .collect();
    rows.sort_by(|x, y| {
        y.self_delta().abs().total_cmp(&x.self_delta().abs()).then_with(|| x.name.cmp(&y.name))
    });
    rows
}

/// Functions (matching `filter`, if given) whose total share grew by more
/// than `points` percentage points.
pub fn regressions<'r>(rows: &'r [DiffRow], points: f64, filter: Option<&regex::Regex>) -> Vec<&'r DiffRow> {
    rows.iter()
        .filter(|r| filter.is_none_or(|f| f.is_match(&r.name)))
        .filter(|r| r.total_delta() > points)
        .collect()
}

/// Writes the table's first `limit` rows.
pub fn write_table(rows: &[DiffRow], limit: usize, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{:>8} {:>8} {:>8}   {:>8} {:>8} {:>8}  FUNCTION",
        "SELF A%", "SELF B%", "DELTA", "TOTAL A%", "TOTAL B%", "DELTA"
    )?;
    for r in rows.iter().take(limit) {
        writeln!(
            out,
            "{:>8.2} {:>8.2} {:>+8.2}   {:>8.2} {:>8.2} {:>+8.2}  {}",
            r.self_a,
            r.self_b,
            r.self_delta(),
            r.total_a,
            r.total_b,
            r.total_delta(),
            r.name
        )?;
    }
    Ok(())
}

/// The table's first `limit` rows as JSON, with the samples of each side
/// and, with a threshold, the functions that regressed past it (shares in
/// percent of each side's total, deltas in points).
pub fn write_table_json(
    rows: &[DiffRow],
    limit: usize,
    samples: (u64, u64),
    regressed: Option<(f64, &[&DiffRow])>,
    out: &mut impl Write,
) -> std::io::Result<()> {
    let row = |r: &DiffRow| {
        serde_json::json!({
            "name": &*r.name,
            "self_a": r.self_a,
            "self_b": r.self_b,
            "self_delta": r.self_delta(),
            "total_a": r.total_a,
            "total_b": r.total_b,
            "total_delta": r.total_delta(),
        })
    };
    let mut doc = serde_json::json!({
        "samples_a": samples.0,
        "samples_b": samples.1,
        "rows": rows.iter().take(limit).map(row).collect::<Vec<_>>(),
    });
    if let Some((points, bad)) = regressed {
        doc["threshold_points"] = serde_json::json!(points);
        doc["regressed"] = serde_json::Value::Array(bad.iter().map(|r| row(r)).collect());
    }
    serde_json::to_writer_pretty(&mut *out, &doc)?;
    writeln!(out)
}

/// A differential flame graph of `b` against `a`: shapes are `b`'s, red where
/// a frame grew and blue where it shrank, with `a` scaled to `b`'s total.
pub fn diff_flame_graph(a: &Profile, b: &Profile, title: &str, out: impl Write) -> Result<()> {
    // Values in the unit the tooltips name: time in microseconds (on-CPU
    // samples at each side's own frequency), memory in bytes.
    let (unit, scale_a, scale_b) = match (a.ns_per_unit(), b.ns_per_unit()) {
        (Some(na), Some(nb)) => ("µs", na / 1e3, nb / 1e3),
        _ if b.unit == profcap_format::ValueUnit::Bytes => ("bytes", 1.0, 1.0),
        _ => ("samples", 1.0, 1.0),
    };
    let fa = folded_lines(a, |v| (v as f64 * scale_a).round() as i64).join("\n");
    let fb = folded_lines(b, |v| (v as f64 * scale_b).round() as i64).join("\n");
    let mut diffed = Vec::new();
    let dopts = differential::Options { normalize: true, ..Default::default() };
    differential::from_readers(dopts, fa.as_bytes(), fb.as_bytes(), &mut diffed)
        .map_err(|e| Error::Render(e.to_string()))?;
    if diffed.is_empty() {
        return Err(Error::NoSamples("both profiles are empty".into()));
    }
    let mut o = flamegraph::Options::default();
    o.title = title.to_owned();
    o.deterministic = true;
    o.count_name = unit.to_owned();
    flamegraph::from_reader(&mut o, diffed.as_slice(), out).map_err(Error::Output)
}
