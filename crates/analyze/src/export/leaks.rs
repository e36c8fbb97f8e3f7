//! The leak table (`profanalyze leaks`): stacks by bytes never freed.

use crate::units::format_bytes;
use crate::Profile;

/// The stacks of `bytes`, most bytes first, each with its block count from `blocks`.
fn leak_rows<'a>(bytes: &'a Profile, blocks: &'a Profile) -> Vec<(&'a [crate::symbolize::Frame], i64, i64)> {
    let counts: std::collections::HashMap<_, _> = blocks.stacks.iter().map(|(f, v)| (f, *v)).collect();
    let mut rows: Vec<_> =
        bytes.stacks.iter().map(|(f, v)| (f.as_slice(), *v, counts.get(f).copied().unwrap_or(0))).collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    rows
}

/// The leak table as JSON: `{bytes, blocks, rows: [{bytes, blocks, stack}]}`,
/// each stack innermost first and whole.
pub fn write_leaks_json(
    bytes: &Profile,
    blocks: &Profile,
    limit: usize,
    out: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    let rows: Vec<serde_json::Value> = leak_rows(bytes, blocks)
        .into_iter()
        .take(limit)
        .map(|(frames, b, n)| {
            let stack: Vec<&str> = frames.iter().rev().map(|f| &*f.name).collect();
            serde_json::json!({ "bytes": b, "blocks": n, "stack": stack })
        })
        .collect();
    let doc = serde_json::json!({ "bytes": bytes.total, "blocks": blocks.total, "rows": rows });
    serde_json::to_writer_pretty(&mut *out, &doc)?;
    writeln!(out)
}

/// The leak table: stacks by bytes never freed, with their block counts.
pub fn write_leaks(
    bytes: &Profile,
    blocks: &Profile,
    limit: usize,
    depth: usize,
    out: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    writeln!(out, "never freed: {} in {} blocks", format_bytes(bytes.total), blocks.total)?;
    writeln!(out, "{:>12} {:>8}  ALLOCATED AT (innermost first)", "BYTES", "BLOCKS")?;
    for (frames, v, n) in leak_rows(bytes, blocks).into_iter().take(limit) {
        let stack: Vec<&str> = frames.iter().rev().take(depth).map(|f| &*f.name).collect();
        writeln!(out, "{:>12} {:>8}  {}", format_bytes(v), n, stack.join(" <- "))?;
    }
    Ok(())
}
