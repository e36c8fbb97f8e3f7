//! What each profanalyze command computes from loaded captures, so the
//! binary only turns arguments into options and writes what comes back.

use rayon::prelude::*;
use rustc_hash::FxHashMap;

use profcap_format::{MemSpace, SampleKind};

use crate::capture::Material;
use crate::export::{labelled_groups, write_pprof, write_pprof_labelled, PprofTimes};
use crate::memory::{timeline, InuseAt, MemEvent};
use crate::profile::{build, default_kind, list_samples, ListedSample, Profile, ProfileOptions};
use crate::requests::{capture_spans, Span};
use crate::{Error, Result};

/// The profiles of several captures, made in parallel by `profile`, added
/// up. In-use memory is a state at one moment of one recording: it does not
/// add up over captures (`inuse` says whether that is what is asked).
pub fn added_up<C, E>(
    captures: &[C],
    inuse: bool,
    profile: impl Fn(&C) -> Result<Profile, E> + Sync + Send,
) -> Result<Profile, E>
where
    C: Sync,
    E: From<Error> + Send,
{
    if captures.len() > 1 && inuse {
        return Err(Error::Unsupported(format!(
            "--kind inuse is what one recording held at a moment; it does not add up over {} captures \
             (use --kind alloc, or one capture)",
            captures.len()
        ))
        .into());
    }
    let profiles: Vec<Profile> = captures.par_iter().map(&profile).collect::<Result<_, E>>()?;
    let mut iter = profiles.into_iter();
    let first = iter.next().ok_or_else(|| Error::NoSamples("no capture given".into()))?;
    let p = iter.try_fold(first, Profile::merge)?;
    if captures.len() > 1 {
        log::info!("{} captures added up: {} samples", captures.len(), p.samples);
    }
    Ok(p)
}

/// `leaks`: the bytes and the blocks in use at the end, by allocating stack.
pub fn leaks(m: &Material, opts: &ProfileOptions) -> Result<(Profile, Profile)> {
    let mut opts = opts.clone();
    opts.filter.kind = Some(SampleKind::Inuse);
    opts.filter.inuse_at = InuseAt::End;
    opts.filter.alloc_counts = false;
    let bytes = build(m, &opts)?;
    opts.filter.alloc_counts = true;
    let blocks = build(m, &opts)?;
    Ok((bytes, blocks))
}

/// `memtimeline`: bytes in use of each process (those of `pids`, or all)
/// over time, in `space` (host memory, or the GPU's), at most `points` per
/// process.
pub fn memory_in_use(
    m: &Material,
    strict: bool,
    space: MemSpace,
    pids: &[u32],
    points: usize,
) -> Result<FxHashMap<u32, Vec<(u64, u64)>>> {
    let no = |what: &str| Err(Error::NoSamples(format!("{} {what}", m.path.display())));
    if m.alloc_count == 0 {
        return no("has no allocation events: record with `profrec --mem`");
    }
    let device = space == MemSpace::Device;
    if device && m.device_allocs == 0 {
        return no("has no GPU memory events: record with `profrec --hbm`");
    }
    if !device && m.alloc_count == m.device_allocs {
        return no("has only GPU memory events: use --kind hbm-inuse");
    }
    timeline(m, strict, points, |e: &MemEvent| {
        (pids.is_empty() || pids.contains(&e.pid())) && e.space() == space
    })
}

/// `samples`: the first `limit` samples `opts` selects, and the requests
/// that name each one's (`selected`, or else every request of the capture).
pub fn samples_and_requests(
    m: &Material,
    opts: &ProfileOptions,
    selected: Option<Vec<Span>>,
    limit: usize,
) -> Result<(Vec<ListedSample>, Vec<Span>)> {
    let spans = match selected {
        Some(spans) => spans,
        None if m.io.is_empty() => Vec::new(),
        None => capture_spans(m, Vec::new()),
    };
    Ok((list_samples(m, opts, limit)?, spans))
}

/// The recorded command's program, which names a profile (the lowest pid
/// with one).
pub fn main_program(m: &Material) -> Option<String> {
    let mut pids: Vec<_> = m.processes.iter().collect();
    pids.sort_by_key(|(pid, _)| **pid);
    let main = pids.iter().find_map(|(_, ps)| ps.iter().rev().find(|p| !p.exe.is_empty()))?;
    Some(main.exe.rsplit('/').next().unwrap_or(&main.exe).to_owned())
}

fn times(m: &Material) -> PprofTimes {
    PprofTimes {
        start_wall_ns: m.meta.start_wall_ns,
        duration_ns: m.meta.end_mono_ns.saturating_sub(m.meta.start_mono_ns),
        main: main_program(m),
    }
}

/// `pprof` of one capture: per-sample labels (pid, tid, names, trace id)
/// for on-CPU and off-CPU; memory with objects beside bytes, as Go heap
/// profiles have. `profile` is the capture's profile as `opts` selects it
/// (built by the caller, which reports what could not be symbolized).
pub fn pprof_of_capture<E: From<Error>>(
    m: &Material,
    opts: &ProfileOptions,
    profile: impl FnOnce() -> Result<Profile, E>,
) -> Result<Vec<u8>, E> {
    let kind = opts.filter.kind.unwrap_or_else(|| default_kind(m));
    let mut pb = Vec::new();
    if matches!(kind, SampleKind::Cpu | SampleKind::OffCpu) && !opts.filter.wall {
        let (kind, groups) = labelled_groups(m, opts)?;
        write_pprof_labelled(m, opts, kind, &groups, times(m), &mut pb)?;
        return Ok(pb);
    }
    let p = profile()?;
    let objects = if matches!(p.kind, SampleKind::Alloc | SampleKind::Inuse) {
        let mut o = opts.clone();
        o.filter.alloc_counts = true;
        Some(build(m, &o)?)
    } else {
        None
    };
    let (bytes, objects) =
        if opts.filter.alloc_counts { (objects.unwrap_or(p.clone()), Some(p)) } else { (p, objects) };
    write_pprof(&bytes, objects.as_ref(), times(m), &mut pb)?;
    Ok(pb)
}

/// `pprof` of a profile added up over captures that span `spans` (wall
/// clock start and end of each): no per-sample labels, as samples of
/// different captures share no pid space.
pub fn pprof_of_sum(p: &Profile, spans: &[(u64, u64)]) -> Result<Vec<u8>> {
    let start = spans.iter().map(|s| s.0).min().unwrap_or(0);
    let end = spans.iter().map(|s| s.1).max().unwrap_or(start);
    let times = PprofTimes { start_wall_ns: start, duration_ns: end - start, main: None };
    let mut pb = Vec::new();
    write_pprof(p, None, times, &mut pb)?;
    Ok(pb)
}
