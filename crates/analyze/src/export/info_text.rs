//! `profanalyze info` for people (the JSON form is `Info` serialized).

use std::io::Write;

use crate::info::{Info, LostInfo};
use crate::units::format_bytes;

/// Writes the summary for people.
pub fn write_info(i: &Info, out: &mut impl Write) -> std::io::Result<()> {
    header(i, out)?;
    unwinding(i, out)?;
    python(i, out)?;
    processes_and_symbols(i, out)?;
    recorded_events(i, out)?;
    losses(i, out)?;
    size(i, out)
}

/// Where, when, how and what was recorded.
fn header(i: &Info, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(out, "capture:      {} (format {})", i.path, i.format_version)?;
    writeln!(out, "recorded on:  {} (kernel {}) by {}", i.hostname, i.kernel_release, i.recorder)?;
    writeln!(out, "command:      {}", i.command_line.join(" "))?;
    writeln!(out, "events:       {} at {} Hz", i.events.join(", "), i.sample_freq_hz)?;
    if !i.settings.is_empty() {
        let kv: Vec<String> = i.settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
        writeln!(out, "settings:     {}", kv.join(" "))?;
    }
    match (&i.started, &i.ended) {
        (Some(s), Some(e)) => writeln!(out, "recorded:     {s} to {e} (UTC)")?,
        (Some(s), None) => writeln!(out, "recorded:     from {s} (UTC; the end was not written)")?,
        _ => {}
    }
    writeln!(out, "duration:     {:.3} s", i.duration_s)?;
    recorder_cost(i, out)?;
    let kinds: Vec<String> = i.samples_by_kind.iter().map(|(k, v)| format!("{k} {v}")).collect();
    writeln!(out, "samples:      {} ({})", i.samples, kinds.join(", "))?;
    writeln!(out, "stacks:       {} distinct", i.stacks)?;
    Ok(())
}

/// What recording cost profrec itself, where the capture says.
fn recorder_cost(i: &Info, out: &mut impl Write) -> std::io::Result<()> {
    use profcap_format::rules::settings;
    let get = |key: &str| i.settings.get(key).and_then(|v| v.parse::<u64>().ok());
    let Some(cpu_ns) = get(settings::RECORDER_CPU_NS) else { return Ok(()) };
    let cpu = cpu_ns as f64 / 1e9;
    let share = if i.duration_s > 0.0 {
        format!(" ({:.1}% of one core)", cpu / i.duration_s * 100.0)
    } else {
        String::new()
    };
    let rss = get(settings::RECORDER_MAX_RSS_KIB)
        .map(|kib| {
            format!(
                ", {} resident at most",
                format_bytes(i64::try_from(kib.saturating_mul(1024)).unwrap_or(i64::MAX))
            )
        })
        .unwrap_or_default();
    writeln!(out, "recorder:     {cpu:.3} s CPU{share}{rss}; BPF programs not included")
}

/// How complete the stacks are.
fn unwinding(i: &Info, out: &mut impl Write) -> std::io::Result<()> {
    let u = &i.unwinding;
    if u.unwound_samples > 0 {
        writeln!(
            out,
            "unwinding:    {:.1}% of {} samples unwound (DWARF) reach their root{}",
            u.complete_percent(),
            u.unwound_samples,
            if u.raw_stacks > 0 {
                format!("; {} kept with raw stack bytes", u.raw_stacks)
            } else {
                String::new()
            }
        )?;
        for (why, n) in &u.truncated {
            writeln!(out, "  [truncated] {why}: {n}")?;
        }
        if let Some(r) = &u.reunwound {
            writeln!(
                out,
                "  unwound again here: {} raw stacks, {} the same as recorded",
                r.samples, r.same_as_recorded
            )?;
        }
    } else if i.samples > 0 {
        writeln!(
            out,
            "unwinding:    frame pointers only (recorded with --stack-bytes 0 or by an older profrec)"
        )?;
    }
    Ok(())
}

/// Python frames, and why some were not read.
fn python(i: &Info, out: &mut impl Write) -> std::io::Result<()> {
    if let Some(py) = &i.python {
        writeln!(
            out,
            "python:       {} of {} samples have Python frames; {} code objects",
            py.samples, i.samples, py.code_objects
        )?;
        for l in &py.unread {
            writeln!(out, "  not read: {}: {}", l.reason, l.count)?;
        }
    }
    Ok(())
}

/// The processes (the first 20) and the embedded symbol material.
fn processes_and_symbols(i: &Info, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(out, "processes:    {}   threads: {}   mappings: {}", i.processes.len(), i.threads, i.mappings)?;
    for p in i.processes.iter().take(20) {
        let state = if p.exited { "exited" } else { "running at end" };
        writeln!(out, "  {:>7}  {:<16} {}  ({state})", p.pid, p.comm, p.exe)?;
    }
    if i.processes.len() > 20 {
        writeln!(out, "  … {} more", i.processes.len() - 20)?;
    }
    writeln!(
        out,
        "symbols:      {} objects embedded, {} kernel symbols",
        i.symbol_blobs.len(),
        i.kernel_symbols
    )?;
    for b in &i.symbol_blobs {
        let what = if b.full_elf { "full ELF".to_owned() } else { format!("{} symbols", b.symbols) };
        writeln!(out, "  {}  {}  ({what})", b.build_id, b.path)?;
    }
    Ok(())
}

/// Memory and socket events, where recorded.
fn recorded_events(i: &Info, out: &mut impl Write) -> std::io::Result<()> {
    if i.allocs + i.frees > 0 {
        writeln!(
            out,
            "memory:       {} allocations, {} frees (profanalyze leaks, --kind alloc|inuse)",
            i.allocs, i.frees
        )?;
    }
    if i.device_allocs + i.device_frees > 0 {
        writeln!(
            out,
            "GPU memory:   {} allocations, {} frees (--kind hbm-alloc|hbm-inuse)",
            i.device_allocs, i.device_frees
        )?;
    }
    if i.socket_events > 0 {
        writeln!(
            out,
            "requests:     {} socket events, {} HTTP request heads (profanalyze requests)",
            i.socket_events, i.http_requests
        )?;
    }
    Ok(())
}

/// Lost and filtered events, and the gaps of lost bursts.
fn losses(i: &Info, out: &mut impl Write) -> std::io::Result<()> {
    // Records dropped by a recording option (e.g. --min-block) are filtered, not lost.
    let (filtered, lost): (Vec<&LostInfo>, Vec<&LostInfo>) =
        i.lost.iter().partition(|l| profcap_format::rules::is_filtered(&l.reason));
    writeln!(out, "lost events:  {}", lost.iter().map(|l| l.count).sum::<u64>())?;
    for l in lost.iter().chain(&filtered) {
        writeln!(out, "  {} {}: {}", l.source, l.reason, l.count)?;
    }
    if !i.gaps.is_empty() {
        let events: u64 = i.gaps.iter().map(|g| g.events).sum();
        let secs: f64 = i.gaps.iter().map(|g| g.to_s - g.from_s).sum();
        writeln!(
            out,
            "gaps:         {} bursts of lost events ({events} events in {secs:.2} s; heatmap and timeline mark them)",
            i.gaps.len()
        )?;
        for g in i.gaps.iter().take(10) {
            writeln!(out, "  {:.2}-{:.2} s: {} events", g.from_s, g.to_s, g.events)?;
        }
        if i.gaps.len() > 10 {
            writeln!(out, "  … {} more (info --json lists all)", i.gaps.len() - 10)?;
        }
    }
    Ok(())
}

/// The file's size, compression, material share, and warnings.
fn size(i: &Info, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "size:         {} in {} chunks; {} compressed from {} (ratio {:.1}); {:.1} bytes/sample",
        format_bytes(i.file_bytes as i64),
        i.chunks,
        format_bytes(i.compressed_bytes as i64),
        format_bytes(i.uncompressed_bytes as i64),
        i.compression_ratio,
        i.bytes_per_sample
    )?;
    if i.file_bytes > 0 {
        writeln!(
            out,
            "material:     about {} ({:.1}% of the file): symbols and kernel symbols for offline analysis",
            format_bytes(i.material_bytes as i64),
            100.0 * i.material_bytes as f64 / i.file_bytes as f64
        )?;
    }
    for w in &i.warnings {
        writeln!(out, "warning:      {w}")?;
    }
    Ok(())
}
