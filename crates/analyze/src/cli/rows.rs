//! `profanalyze otlp` and `profanalyze parquet`: per-sample outputs for
//! other systems (an OpenTelemetry collector, analytic engines), of one
//! capture or many.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rayon::prelude::*;

use profcap_analyze::export::{capture_rows, write_otlp, CaptureRows, OtlpBuilder, ParquetWriter};

use super::common::Common;
use super::inputs::Chosen;

/// OTLP `ProfilesData` of the chosen captures: as many read at once as
/// there are threads, added in order (so memory holds a batch of captures,
/// not all of them), as protobuf or JSON.
pub(super) fn otlp(common: &Common, chosen: &[Chosen], json: bool) -> Result<Vec<u8>> {
    let mut b = OtlpBuilder::new();
    for group in chosen.chunks(rayon::current_num_threads().max(1)) {
        let loaded: Vec<_> = group
            .par_iter()
            .map(|c| {
                let m = common.load(&c.path)?;
                let opts = c.options(common, &m)?;
                Ok((m, opts))
            })
            .collect::<Result<_>>()?;
        for ((m, opts), c) in loaded.iter().zip(group) {
            b.add(m, opts).with_context(|| format!("{}", c.path.display()))?;
        }
    }
    let mut out = Vec::new();
    write_otlp(&b.finish(), json, &mut out)?;
    Ok(out)
}

/// Writes DIR/samples.parquet and DIR/frames.parquet for the chosen
/// captures: as many read at once as there are threads, written in order.
/// The files are written under temporary names and renamed at the end, so
/// a failure leaves earlier ones whole.
pub(super) fn parquet(common: &Common, chosen: &[Chosen], dir: &Path, quiet: bool) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(".parquet-")
        .tempdir_in(dir)
        .with_context(|| format!("writing in {}", dir.display()))?;
    let mut w = ParquetWriter::create(tmp.path())?;
    let batch = rayon::current_num_threads().max(1);
    for group in chosen.chunks(batch) {
        let rows: Vec<CaptureRows> = group
            .par_iter()
            .map(|c| {
                let m = common.load(&c.path)?;
                let opts = c.options(common, &m)?;
                let rows = capture_rows(&m, &opts, &c.path.display().to_string())
                    .with_context(|| format!("{}", c.path.display()))?;
                Ok(rows)
            })
            .collect::<Result<_>>()?;
        for r in &rows {
            w.write(r)?;
        }
    }
    let (samples, frames) = w.written;
    w.finish()?;
    for name in ["samples.parquet", "frames.parquet"] {
        let to: PathBuf = dir.join(name);
        std::fs::rename(tmp.path().join(name), &to).with_context(|| format!("writing {}", to.display()))?;
    }
    if !quiet {
        eprintln!(
            "profanalyze: wrote {}/samples.parquet ({samples} samples) and frames.parquet ({frames} frames) \
             from {} capture(s)",
            dir.display(),
            chosen.len()
        );
    }
    Ok(())
}
