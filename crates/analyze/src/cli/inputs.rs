//! The captures a command reads: files and directories, narrowed to a
//! wall-clock range, and profiles added up over several of them.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use rayon::prelude::*;

use profcap_analyze::inputs::{self, CaptureSpan, TimeArg, WallRange};
use profcap_analyze::{recipes, Material, Profile, ProfileOptions};
use profcap_format::SampleKind;

use super::common::{profile_with, Common};

/// One capture to read; with a wall-clock range, the range and the
/// capture's span, which turn it into the capture's own seconds.
#[derive(Debug, Clone)]
pub(super) struct Chosen {
    pub(super) path: PathBuf,
    range: Option<(WallRange, CaptureSpan)>,
}

fn is_wall(t: Option<TimeArg>) -> bool {
    matches!(t, Some(TimeArg::At(_) | TimeArg::TimeOfDay(_)))
}

impl Common {
    /// The captures that `paths` (files, directories) name and the time
    /// range selects, oldest first.
    pub(super) fn choose(&self, paths: &[PathBuf]) -> Result<Vec<Chosen>> {
        let files = inputs::expand(paths)?;
        if !is_wall(self.from) && !is_wall(self.to) {
            return Ok(files.into_iter().map(|path| Chosen { path, range: None }).collect());
        }
        let spans: Vec<CaptureSpan> =
            files.par_iter().map(|f| inputs::span(f)).collect::<Result<_, profcap_analyze::Error>>()?;
        let Some(range) = WallRange::resolve(self.from, self.to, &spans)? else {
            return Ok(files.into_iter().map(|path| Chosen { path, range: None }).collect());
        };
        let total = spans.len();
        let (first, last) = (
            spans.iter().map(|s| s.start_wall_ns).min().unwrap_or(0),
            spans.iter().map(|s| s.end_wall_ns).max().unwrap_or(0),
        );
        let chosen: Vec<Chosen> = spans
            .into_iter()
            .filter(|s| range.overlaps(s))
            .map(|s| Chosen { path: s.path.clone(), range: Some((range, s)) })
            .collect();
        if chosen.is_empty() {
            let all = WallRange { from_ns: Some(i128::from(first)), to_ns: Some(i128::from(last)) };
            bail!("no capture overlaps {}; the {total} given span {}", range.describe(), all.describe());
        }
        log::info!("{} of {total} captures overlap {}", chosen.len(), range.describe());
        Ok(chosen)
    }

    /// The one capture of a command that reads one.
    pub(super) fn choose_one(&self, paths: &[PathBuf], command: &str) -> Result<Chosen> {
        let mut chosen = self.choose(paths)?;
        if chosen.len() > 1 {
            let names: Vec<String> = chosen.iter().take(4).map(|c| c.path.display().to_string()).collect();
            bail!(
                "`{command}` reads one capture; {} were given or selected ({}{}). Narrow it with \
                 --from/--to, or use flame, folded, top or pprof, which add captures up",
                chosen.len(),
                names.join(", "),
                if chosen.len() > 4 { ", …" } else { "" }
            );
        }
        chosen.pop().ok_or_else(|| anyhow::anyhow!("no capture given"))
    }
}

impl Chosen {
    /// The profile options for this capture: the range in its own seconds.
    pub(super) fn options(&self, common: &Common, m: &Material) -> Result<ProfileOptions> {
        let mut o = common.options_for(m)?;
        self.narrow(&mut o, m);
        Ok(o)
    }

    /// Puts the wall-clock range, as the capture's seconds, into `o`.
    pub(super) fn narrow(&self, o: &mut ProfileOptions, m: &Material) {
        if let Some((range, span)) = &self.range {
            (o.filter.from_s, o.filter.to_s) = range.seconds_in(span, m.first_ns);
        }
    }
}

/// The profile of all the chosen captures, each read and aggregated in
/// parallel, added up ([`recipes::added_up`]).
pub(super) fn added_up(common: &Common, chosen: &[Chosen]) -> Result<Profile> {
    recipes::added_up(chosen, common.kind_is_inuse(), |c| {
        let m = common.load(&c.path)?;
        profile_with(&m, common, |o| c.narrow(o, &m))
    })
}

/// The name outputs are called after: the first path given.
pub(super) fn name_of(paths: &[PathBuf]) -> &Path {
    paths.first().map_or(Path::new("profile"), PathBuf::as_path)
}

impl Common {
    fn kind_is_inuse(&self) -> bool {
        self.profile_options().is_ok_and(|o| o.filter.kind == Some(SampleKind::Inuse))
    }
}
