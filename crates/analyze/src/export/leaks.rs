//! The leak table (`profanalyze leaks`): stacks by bytes never freed.

use crate::units::format_bytes;
use crate::Profile;

/// The leak table: stacks by bytes never freed, with their block counts.
pub fn write_leaks(
    bytes: &Profile,
    blocks: &Profile,
    limit: usize,
    depth: usize,
    out: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    let counts: std::collections::HashMap<_, _> = blocks.stacks.iter().map(|(f, v)| (f, *v)).collect();
    let mut rows: Vec<_> = bytes.stacks.iter().collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    writeln!(out, "never freed: {} in {} blocks", format_bytes(bytes.total), blocks.total)?;
    writeln!(out, "{:>12} {:>8}  ALLOCATED AT (innermost first)", "BYTES", "BLOCKS")?;
    for (frames, v) in rows.into_iter().take(limit) {
        let stack: Vec<&str> = frames.iter().rev().take(depth).map(|f| &*f.name).collect();
        writeln!(
            out,
            "{:>12} {:>8}  {}",
            format_bytes(*v),
            counts.get(frames).copied().unwrap_or(0),
            stack.join(" <- ")
        )?;
    }
    Ok(())
}
