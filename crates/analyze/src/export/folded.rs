//! Brendan Gregg's folded-stack format: `root;…;leaf value` per line.

use std::io::Write;

use crate::profile::Profile;
use crate::symbolize::{Frame, FrameKind};

/// A frame's name with the suffix flame graph tools use to color it:
/// `_[k]` for kernel, `_[i]` for inlined, `_[j]` for JIT frames (Python
/// frames carry their `py::` prefix instead).
pub fn frame_label(f: &Frame) -> String {
    // ';' separates frames and would split a name in two.
    let name = f.name.replace(';', ":");
    match f.kind {
        FrameKind::Kernel => format!("{name}_[k]"),
        FrameKind::Inlined => format!("{name}_[i]"),
        FrameKind::Jit => format!("{name}_[j]"),
        FrameKind::User | FrameKind::Python => name,
    }
}

/// Folded lines with each value mapped through `scale`, zero values dropped.
pub fn folded_lines(p: &Profile, scale: impl Fn(i64) -> i64) -> Vec<String> {
    p.stacks
        .iter()
        .filter_map(|(frames, v)| {
            let v = scale(*v);
            if v == 0 || frames.is_empty() {
                return None;
            }
            let names: Vec<String> = frames.iter().map(frame_label).collect();
            Some(format!("{} {v}", names.join(";")))
        })
        .collect()
}

/// Writes the profile's raw values as folded stacks.
pub fn write_folded(p: &Profile, out: &mut impl Write) -> std::io::Result<()> {
    for line in folded_lines(p, |v| v) {
        writeln!(out, "{line}")?;
    }
    Ok(())
}
