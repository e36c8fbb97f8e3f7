//! Top tables: self and total value by function or by module.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::sync::Arc;

use crate::profile::Profile;

/// What the rows of a top table are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TopBy {
    /// One row per function.
    #[default]
    Function,
    /// One row per object file (library, executable, kernel).
    Module,
}

/// One row: `self_value` where the name is the leaf, `total` where it is anywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopRow {
    pub name: Arc<str>,
    pub self_value: i64,
    pub total: i64,
}

/// Rows sorted by self value (then total, then name), all of them.
pub fn top_table(p: &Profile, by: TopBy) -> Vec<TopRow> {
    let mut rows: HashMap<Arc<str>, (i64, i64)> = HashMap::new();
    for (frames, v) in &p.stacks {
        let key = |f: &crate::symbolize::Frame| match by {
            TopBy::Function => Arc::clone(&f.name),
            TopBy::Module => Arc::clone(&f.module),
        };
        if let Some(leaf) = frames.last() {
            rows.entry(key(leaf)).or_default().0 += v;
        }
        // A recursive function counts once per stack in its total.
        let mut seen = HashSet::new();
        for f in frames {
            let k = key(f);
            if !k.is_empty() && seen.insert(Arc::clone(&k)) {
                rows.entry(k).or_default().1 += v;
            }
        }
    }
    let mut out: Vec<TopRow> = rows
        .into_iter()
        .filter(|(name, _)| !name.is_empty())
        .map(|(name, (self_value, total))| TopRow { name, self_value, total })
        .collect();
    out.sort_by(|a, b| b.self_value.cmp(&a.self_value).then(b.total.cmp(&a.total)).then(a.name.cmp(&b.name)));
    out
}

fn pct(v: i64, total: i64) -> f64 {
    if total == 0 {
        0.0
    } else {
        100.0 * v as f64 / total as f64
    }
}

/// Writes the first `limit` rows as an aligned text table.
pub fn write_top(p: &Profile, by: TopBy, limit: usize, out: &mut impl Write) -> std::io::Result<()> {
    let rows = top_table(p, by);
    let what = match by {
        TopBy::Function => "FUNCTION",
        TopBy::Module => "MODULE",
    };
    writeln!(out, "{:>7} {:>12} {:>7} {:>12}  {what}", "SELF%", "SELF", "TOTAL%", "TOTAL")?;
    for r in rows.iter().take(limit) {
        writeln!(
            out,
            "{:>6.2}% {:>12} {:>6.2}% {:>12}  {}",
            pct(r.self_value, p.total),
            p.format_value(r.self_value),
            pct(r.total, p.total),
            p.format_value(r.total),
            r.name
        )?;
    }
    writeln!(out, "{} samples, {} in all", p.samples, p.format_value(p.total))
}

/// The first `limit` rows as JSON: the profile's kind, unit (`samples`,
/// `ns`, `bytes`), totals and one object per row with raw values and shares
/// in percent (schema in docs/user-guide.md).
pub fn write_top_json(p: &Profile, by: TopBy, limit: usize, out: &mut impl Write) -> std::io::Result<()> {
    let rows: Vec<serde_json::Value> = top_table(p, by)
        .iter()
        .take(limit)
        .map(|r| {
            serde_json::json!({
                "name": &*r.name,
                "self": r.self_value,
                "self_percent": pct(r.self_value, p.total),
                "total": r.total,
                "total_percent": pct(r.total, p.total),
            })
        })
        .collect();
    let unit = match p.unit {
        profcap_format::ValueUnit::Nanoseconds => "ns",
        profcap_format::ValueUnit::Bytes => "bytes",
        _ => "samples",
    };
    let doc = serde_json::json!({
        "kind": p.kind.name(),
        "by": match by { TopBy::Function => "function", TopBy::Module => "module" },
        "unit": unit,
        "sample_period_ns": p.ns_per_unit(),
        "samples": p.samples,
        "total": p.total,
        "rows": rows,
    });
    serde_json::to_writer_pretty(&mut *out, &doc)?;
    writeln!(out)
}
