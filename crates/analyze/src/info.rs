//! `profanalyze info`: what a capture holds.

use serde::Serialize;

use profcap_format::rules::PYTHON_LOSS_SOURCE;

use crate::capture::Material;
use crate::symbolize::hex;

/// A summary of a capture, printable as text or JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Info {
    pub path: String,
    pub format_version: String,
    pub hostname: String,
    pub kernel_release: String,
    pub recorder: String,
    pub command_line: Vec<String>,
    pub events: Vec<String>,
    /// Recorder settings and counters (`min_block_ns`, `offcpu_recovered`, …).
    pub settings: std::collections::BTreeMap<String, String>,
    pub sample_freq_hz: u32,
    /// When the recording started and ended, UTC (RFC 3339; absent if unknown).
    pub started: Option<String>,
    pub ended: Option<String>,
    pub duration_s: f64,
    pub samples: u64,
    pub samples_by_kind: std::collections::BTreeMap<String, u64>,
    pub stacks: usize,
    /// How the samples' user stacks were unwound and whether they are complete.
    pub unwinding: UnwindInfo,
    /// Python frames (absent when no sample has any, nor failed to).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub python: Option<PythonInfo>,
    pub processes: Vec<ProcessInfo>,
    pub threads: usize,
    pub mappings: usize,
    pub symbol_blobs: Vec<BlobInfo>,
    pub kernel_symbols: usize,
    pub lost: Vec<LostInfo>,
    /// When events were lost in bursts (ring buffer full), in seconds after
    /// the first sample; their counts are among `lost`.
    pub gaps: Vec<GapInfo>,
    /// Socket events (profrec --requests), and the HTTP request heads among them.
    pub socket_events: usize,
    pub http_requests: usize,
    /// Allocation and free events (profrec --mem).
    pub allocs: u64,
    pub frees: u64,
    /// GPU device memory events (profrec --hbm).
    pub device_allocs: u64,
    pub device_frees: u64,
    pub chunks: u64,
    pub file_bytes: u64,
    pub compressed_bytes: u64,
    pub uncompressed_bytes: u64,
    pub compression_ratio: f64,
    pub bytes_per_sample: f64,
    /// File bytes of the chunks with symbol material (see [`Material::material_bytes`]).
    pub material_bytes: u64,
    pub warnings: Vec<String>,
}

/// Completeness of the user stacks.
#[derive(Debug, Clone, Serialize)]
pub struct UnwindInfo {
    /// Samples whose user stack the recorder unwound from copied stack bytes.
    pub unwound_samples: u64,
    /// Of those, the ones whose stack reaches its root (process entry or thread start).
    pub complete_samples: u64,
    /// The others, by why their stack ends (`[truncated]` in every view).
    pub truncated: std::collections::BTreeMap<String, u64>,
    /// Samples kept with raw stack bytes (`profrec --keep-stacks`).
    pub raw_stacks: u64,
    /// With `info --unwind`: what unwinding them again here gave.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reunwound: Option<crate::unwind::Reunwound>,
}

impl UnwindInfo {
    /// Share of unwound samples with a complete stack, in percent.
    pub fn complete_percent(&self) -> f64 {
        if self.unwound_samples == 0 {
            0.0
        } else {
            100.0 * self.complete_samples as f64 / self.unwound_samples as f64
        }
    }
}

fn unwinding(m: &Material) -> UnwindInfo {
    use profcap_format::StackEnd;
    let mut u = UnwindInfo {
        unwound_samples: 0,
        complete_samples: 0,
        truncated: Default::default(),
        raw_stacks: m.raw_stacks,
        reunwound: None,
    };
    for (&end, &n) in &m.stack_ends {
        match end {
            StackEnd::Unknown => {}
            StackEnd::Root => {
                u.unwound_samples += n;
                u.complete_samples += n;
            }
            other => {
                u.unwound_samples += n;
                *u.truncated.entry(other.describe().to_owned()).or_default() += n;
            }
        }
    }
    u
}

/// Python frames in the capture.
#[derive(Debug, Clone, Serialize)]
pub struct PythonInfo {
    /// Samples whose stack has Python frames.
    pub samples: u64,
    /// Distinct code objects (functions, modules) the recorder read.
    pub code_objects: usize,
    /// Frames or walks that could not be read, by why (their samples are
    /// kept, with native frames).
    pub unread: Vec<LostInfo>,
}

fn python(m: &Material) -> Option<PythonInfo> {
    let unread: Vec<LostInfo> = m
        .lost
        .iter()
        .filter(|l| l.source == PYTHON_LOSS_SOURCE)
        .map(|l| LostInfo { source: l.source.clone(), reason: l.reason.clone(), count: l.count })
        .collect();
    let seen = m.python_samples > 0 || !unread.is_empty();
    seen.then_some(PythonInfo { samples: m.python_samples, code_objects: m.py_code.len(), unread })
}

#[derive(Debug, Clone, Serialize)]
pub struct ProcessInfo {
    pub pid: u32,
    pub comm: String,
    pub exe: String,
    pub exited: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct BlobInfo {
    pub path: String,
    pub build_id: String,
    pub symbols: usize,
    pub full_elf: bool,
}

/// A burst of lost events: when (seconds after the first sample) and how many.
#[derive(Debug, Clone, Serialize)]
pub struct GapInfo {
    pub from_s: f64,
    pub to_s: f64,
    pub events: u64,
}

/// Events lost or filtered, by source and reason.
#[derive(Debug, Clone, Serialize)]
pub struct LostInfo {
    pub source: String,
    pub reason: String,
    pub count: u64,
}

/// Summarizes a loaded capture.
pub fn info(m: &Material, format_version: (u16, u16)) -> Info {
    let duration_ns = if m.meta.end_mono_ns > m.meta.start_mono_ns {
        m.meta.end_mono_ns - m.meta.start_mono_ns
    } else {
        m.last_ns.saturating_sub(m.first_ns)
    };
    let s = m.stats;
    Info {
        path: m.path.display().to_string(),
        format_version: format!("{}.{}", format_version.0, format_version.1),
        hostname: m.meta.hostname.clone(),
        kernel_release: m.meta.kernel_release.clone(),
        recorder: m.meta.recorder_version.clone(),
        command_line: m.meta.command_line.clone(),
        events: m.meta.events.clone(),
        settings: m.meta.extra.iter().cloned().collect(),
        sample_freq_hz: m.meta.sample_freq_hz,
        started: crate::units::format_utc(m.meta.start_wall_ns),
        ended: crate::units::format_utc(m.meta.end_wall_ns),
        duration_s: duration_ns as f64 / 1e9,
        samples: m.sample_count,
        samples_by_kind: m.kind_counts.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
        stacks: m.stacks.len(),
        unwinding: unwinding(m),
        python: python(m),
        processes: processes(m),
        threads: m.threads.len(),
        mappings: m.mappings.values().map(Vec::len).sum(),
        symbol_blobs: symbol_blobs(m),
        kernel_symbols: m.kernel.symbols.len(),
        gaps: gaps(m),
        lost: m
            .lost
            .iter()
            .filter(|l| l.source != PYTHON_LOSS_SOURCE && !profcap_format::rules::is_gap(&l.source))
            .map(|l| LostInfo { source: l.source.clone(), reason: l.reason.clone(), count: l.count })
            .collect(),
        allocs: m.alloc_count - m.device_allocs,
        frees: m.free_count - m.device_frees,
        device_allocs: m.device_allocs,
        device_frees: m.device_frees,
        socket_events: m.io.len(),
        http_requests: m
            .io
            .iter()
            .filter(|e| matches!(e.http, Some(crate::sockets::http::HttpMessage::Request { .. })))
            .count(),
        chunks: s.chunks,
        file_bytes: s.file_bytes,
        compressed_bytes: s.stored_bytes,
        uncompressed_bytes: s.raw_bytes,
        compression_ratio: if s.stored_bytes == 0 { 0.0 } else { s.raw_bytes as f64 / s.stored_bytes as f64 },
        material_bytes: m.material_bytes,
        bytes_per_sample: if m.sample_count == 0 { 0.0 } else { s.file_bytes as f64 / m.sample_count as f64 },
        warnings: m.warnings.clone(),
    }
}

/// The processes, by pid.
fn processes(m: &Material) -> Vec<ProcessInfo> {
    let mut processes: Vec<ProcessInfo> = m
        .processes
        .iter()
        .map(|(&pid, ps)| ProcessInfo {
            pid,
            comm: m.process_name(pid),
            exe: ps.iter().rev().find(|p| !p.exe.is_empty()).map(|p| p.exe.clone()).unwrap_or_default(),
            exited: ps.iter().any(|p| p.exit_ns != 0),
        })
        .collect();
    processes.sort_by_key(|p| p.pid);
    processes
}

/// The embedded symbol material, by path.
fn symbol_blobs(m: &Material) -> Vec<BlobInfo> {
    let mut symbol_blobs: Vec<BlobInfo> = m
        .blobs
        .values()
        .map(|b| BlobInfo {
            path: b.path.clone(),
            build_id: hex(&b.build_id),
            symbols: b.symbols.len(),
            full_elf: !b.elf.is_empty(),
        })
        .collect();
    symbol_blobs.sort_by(|a, b| a.path.cmp(&b.path));
    symbol_blobs
}

/// Bursts of lost events, in seconds from the first sample.
fn gaps(m: &Material) -> Vec<GapInfo> {
    m.gaps()
        .into_iter()
        .map(|(from, to, events)| GapInfo {
            from_s: from.saturating_sub(m.first_ns.min(from)) as f64 / 1e9,
            to_s: to.saturating_sub(m.first_ns.min(to)) as f64 / 1e9,
            events,
        })
        .collect()
}
