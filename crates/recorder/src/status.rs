//! `profrec --status DIR`: what a continuous recording into DIR is doing,
//! from the status file it rewrites every few seconds.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;

/// Exit status when no recording is running (as `systemctl status`).
const NOT_RUNNING: u8 = 3;

/// Prints the status of the recording into `dir`; returns the exit status.
pub fn print(dir: &Path) -> anyhow::Result<u8> {
    let path = dir.join(profcap_recorder::STATUS_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {} (is a `profrec --rotate ... -o {}` running or was one?)",
            path.display(),
            dir.display()
        )
    })?;
    // The status file is profrec's own, but read it as untrusted: bounded lines, no panics.
    let fields: HashMap<&str, &str> =
        text.lines().take(100).filter_map(|l| l.split_once('=')).map(|(k, v)| (k, v.trim())).collect();
    let get = |k: &str| fields.get(k).copied().unwrap_or("");
    let pid: u32 = get("pid").parse().unwrap_or(0);
    let alive = pid != 0
        && std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == "profrec");
    let recording = get("state") == "recording" && alive;
    let state = match (get("state"), alive) {
        ("recording", true) => format!("recording (pid {pid})"),
        ("recording", false) => format!("not running: profrec (pid {pid}) ended without stopping cleanly"),
        (s, _) => format!("not running ({s} at {})", get("updated")),
    };
    let mib = |k: &str| {
        get(k).parse::<u64>().map_or_else(|_| "?".into(), |b| format!("{:.1} MiB", b as f64 / 1048576.0))
    };
    println!("{}: {state}", dir.display());
    println!("  events:    {} ({})", get("recording"), get("command"));
    println!("  since:     {}", get("started"));
    if recording {
        println!("  writing:   {} (since {})", get("current_file"), get("current_since"));
    }
    println!(
        "  captures:  {} in the directory, {} ({} written by this run)",
        get("files"),
        mib("bytes"),
        get("files_written")
    );
    println!("  samples:   {}, lost: {}", get("samples"), get("lost"));
    println!(
        "  deleted:   {} for disk space, {} by --keep",
        get("deleted_for_space"),
        get("deleted_by_retention")
    );
    if !get("problem").is_empty() {
        println!("  last:      {}", get("problem"));
    }
    println!("  updated:   {}", get("updated"));
    Ok(if recording { 0 } else { NOT_RUNNING })
}
