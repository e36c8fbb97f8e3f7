//! `profanalyze info DIR` (or several captures): one line per capture, its
//! time span, samples, losses and size, and the state of a continuous
//! recording writing into the directory.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Result;
use rayon::prelude::*;
use serde::Serialize;

use profcap_analyze::units::format_bytes;
use profcap_analyze::Material;

/// One capture of the listing.
#[derive(Debug, Serialize)]
pub(super) struct Listed {
    path: PathBuf,
    start_wall_ns: u64,
    end_wall_ns: u64,
    samples: u64,
    lost: u64,
    file_bytes: u64,
    /// Bytes of symbol material (see `info`).
    material_bytes: u64,
}

fn listed(path: &Path, strict: bool) -> Result<Listed> {
    let m = Material::load(path, strict)?;
    let lost = m
        .lost
        .iter()
        .filter(|l| {
            !profcap_format::rules::is_filtered(&l.reason) && !profcap_format::rules::is_gap(&l.source)
        })
        .map(|l| l.count)
        .sum();
    let end = m.meta.start_wall_ns + m.meta.end_mono_ns.saturating_sub(m.meta.start_mono_ns);
    Ok(Listed {
        path: path.to_owned(),
        start_wall_ns: m.meta.start_wall_ns,
        end_wall_ns: end.max(m.meta.start_wall_ns),
        samples: m.sample_count,
        lost,
        file_bytes: m.stats.file_bytes,
        material_bytes: m.material_bytes,
    })
}

fn utc(ns: u64) -> String {
    jiff::Timestamp::from_nanosecond(i128::from(ns))
        .map_or_else(|_| ns.to_string(), |t| t.strftime("%Y-%m-%d %H:%M:%S%.3f").to_string())
}

/// Lists `files`; `dirs` are the directories given, whose status files
/// (`profrec --rotate`) are shown too.
pub(super) fn list(
    files: &[PathBuf],
    dirs: &[&Path],
    strict: bool,
    json: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let mut rows: Vec<Listed> = files.par_iter().map(|f| listed(f, strict)).collect::<Result<_>>()?;
    rows.sort_by_key(|r| r.start_wall_ns);
    // File names where they all share a directory, else the paths.
    let one_dir = rows.windows(2).all(|w| w[0].path.parent() == w[1].path.parent());
    if json {
        serde_json::to_writer_pretty(&mut *out, &rows)?;
        writeln!(out)?;
        return Ok(());
    }
    let bytes: u64 = rows.iter().map(|r| r.file_bytes).sum();
    let material: u64 = rows.iter().map(|r| r.material_bytes).sum();
    let first = rows.iter().map(|r| r.start_wall_ns).min().unwrap_or(0);
    let last = rows.iter().map(|r| r.end_wall_ns).max().unwrap_or(0);
    writeln!(
        out,
        "{} captures, {} to {} UTC, {} ({:.1}% symbol material)",
        rows.len(),
        utc(first),
        utc(last),
        format_bytes(bytes as i64),
        100.0 * material as f64 / bytes.max(1) as f64
    )?;
    writeln!(
        out,
        "{:<23}  {:>9}  {:>9}  {:>7}  {:>10}  {:>8}  file",
        "start (UTC)", "duration", "samples", "lost", "size", "material"
    )?;
    for r in &rows {
        writeln!(
            out,
            "{:<23}  {:>8.1}s  {:>9}  {:>7}  {:>10}  {:>7.1}%  {}",
            utc(r.start_wall_ns),
            (r.end_wall_ns - r.start_wall_ns) as f64 / 1e9,
            r.samples,
            r.lost,
            format_bytes(r.file_bytes as i64),
            100.0 * r.material_bytes as f64 / r.file_bytes.max(1) as f64,
            match r.path.file_name() {
                Some(name) if one_dir => name.to_string_lossy().into_owned(),
                _ => r.path.display().to_string(),
            }
        )?;
    }
    for dir in dirs {
        if let Ok(status) = std::fs::read_to_string(dir.join("profrec.status")) {
            let get = |k: &str| {
                status.lines().find_map(|l| l.strip_prefix(k).and_then(|v| v.strip_prefix('='))).unwrap_or("")
            };
            writeln!(
                out,
                "{}: profrec {} (pid {}, updated {}){}",
                dir.display(),
                get("state"),
                get("pid"),
                get("updated"),
                if get("state") == "recording" {
                    format!("; writing {} since {}", get("current_file"), get("current_since"))
                } else {
                    String::new()
                }
            )?;
        }
    }
    Ok(())
}
