//! `profanalyze pprof`: per-sample labelled profiles of one capture, or the
//! added-up profile of several.

use anyhow::Result;

use profcap_analyze::recipes::{pprof_of_capture, pprof_of_sum};
use profcap_analyze::Profile;

use super::common::{profile_with, Common};
use super::inputs::{added_up, Chosen};

/// One capture: [`pprof_of_capture`].
pub(super) fn pprof_of_one(common: &Common, c: &Chosen) -> Result<Vec<u8>> {
    let m = common.load(&c.path)?;
    let opts = c.options(common, &m)?;
    pprof_of_capture(&m, &opts, || profile_with(&m, common, |o| c.narrow(o, &m)))
}

/// Several captures: the added-up profile, spanning all of them.
pub(super) fn pprof_added_up(common: &Common, chosen: &[Chosen]) -> Result<Vec<u8>> {
    log::info!("{} captures: one added-up profile, without per-sample labels", chosen.len());
    let p: Profile = added_up(common, chosen)?;
    let spans: Vec<(u64, u64)> = chosen
        .iter()
        .filter_map(|c| profcap_analyze::inputs::span(&c.path).ok())
        .map(|s| (s.start_wall_ns, s.end_wall_ns))
        .collect();
    Ok(pprof_of_sum(&p, &spans)?)
}
