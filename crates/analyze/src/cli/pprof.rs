//! `profanalyze pprof`: per-sample labelled profiles of one capture, or the
//! added-up profile of several.

use anyhow::Result;

use profcap_analyze::export::{labelled_groups, write_pprof, write_pprof_labelled, PprofTimes};
use profcap_analyze::{build, Material, Profile};
use profcap_format::SampleKind;

use super::common::{profile_with, Common};
use super::inputs::{added_up, Chosen};

/// The recorded command's program, which names the profile (the lowest pid with one).
fn main_program(m: &Material) -> Option<String> {
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

/// One capture: per-sample labels (pid, tid, names, trace id) for time
/// kinds; memory with objects beside bytes, as Go heap profiles have.
pub(super) fn pprof_of_one(common: &Common, c: &Chosen) -> Result<Vec<u8>> {
    let m = common.load(&c.path)?;
    let opts = c.options(common, &m)?;
    let kind = opts.filter.kind.unwrap_or_else(|| profcap_analyze::profile::default_kind(&m));
    let mut pb = Vec::new();
    if matches!(kind, SampleKind::Cpu | SampleKind::OffCpu) && !opts.filter.wall {
        let (kind, groups) = labelled_groups(&m, &opts)?;
        write_pprof_labelled(&m, &opts, kind, &groups, times(&m), &mut pb)?;
        return Ok(pb);
    }
    let p = profile_with(&m, common, |o| c.narrow(o, &m))?;
    let objects = if matches!(p.kind, SampleKind::Alloc | SampleKind::Inuse) {
        let mut o = opts.clone();
        o.filter.alloc_counts = true;
        Some(build(&m, &o)?)
    } else {
        None
    };
    let (bytes, objects) =
        if opts.filter.alloc_counts { (objects.unwrap_or(p.clone()), Some(p)) } else { (p, objects) };
    write_pprof(&bytes, objects.as_ref(), times(&m), &mut pb)?;
    Ok(pb)
}

/// Several captures: the added-up profile (no per-sample labels: samples
/// of different captures share no pid space), spanning all of them.
pub(super) fn pprof_added_up(common: &Common, chosen: &[Chosen]) -> Result<Vec<u8>> {
    log::info!("{} captures: one added-up profile, without per-sample labels", chosen.len());
    let p: Profile = added_up(common, chosen)?;
    let spans: Vec<(u64, u64)> = chosen
        .iter()
        .filter_map(|c| profcap_analyze::inputs::span(&c.path).ok())
        .map(|s| (s.start_wall_ns, s.end_wall_ns))
        .collect();
    let start = spans.iter().map(|s| s.0).min().unwrap_or(0);
    let end = spans.iter().map(|s| s.1).max().unwrap_or(start);
    let times = PprofTimes { start_wall_ns: start, duration_ns: end - start, main: None };
    let mut pb = Vec::new();
    write_pprof(&p, None, times, &mut pb)?;
    Ok(pb)
}
