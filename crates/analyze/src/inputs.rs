//! What a command reads: capture files, directories of captures (the files
//! of a continuous recording, `profrec --rotate`), and a time range that is
//! either seconds into a capture or wall-clock times.
//!
//! A directory stands for the captures in it (regular files, not hidden,
//! that start with the capture magic), oldest first. With a wall-clock
//! range only the files whose time span overlaps it are read; a file's span
//! is its start (first metadata record) to its last event (the trailer
//! index), so copied files whose modification times changed still select
//! right.

use std::path::{Path, PathBuf};

use jiff::civil::{DateTime, Time};
use jiff::tz::TimeZone;
use jiff::Timestamp;

use profcap_format::{CaptureReader, ReadOptions};

use crate::{Error, Result};

/// A `--from`/`--to` value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TimeArg {
    /// Seconds after a capture's first sample (`12.5`).
    Seconds(f64),
    /// A moment: RFC 3339 (`2026-12-01T14:05:00Z`), or a local date and time
    /// (`2026-12-01 14:05`), in ns since the epoch.
    At(i128),
    /// A local time of day (`14:05`, `14:05:30`): its latest occurrence at
    /// or before the end of the newest capture read.
    TimeOfDay(Time),
}

impl std::str::FromStr for TimeArg {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<TimeArg, String> {
        let s = s.trim();
        if let Ok(v) = s.parse::<f64>() {
            return if v.is_finite() && v >= 0.0 {
                Ok(TimeArg::Seconds(v))
            } else {
                Err(format!("`{s}`: seconds must be a number, 0 or more"))
            };
        }
        if let Ok(t) = s.parse::<Timestamp>() {
            return Ok(TimeArg::At(t.as_nanosecond()));
        }
        if let Ok(dt) = s.parse::<DateTime>() {
            let t = TimeZone::system().to_timestamp(dt).map_err(|e| format!("`{s}`: {e}"))?;
            return Ok(TimeArg::At(t.as_nanosecond()));
        }
        if let Ok(t) = s.parse::<Time>() {
            return Ok(TimeArg::TimeOfDay(t));
        }
        Err(format!(
            "`{s}` is not seconds into the capture (12.5), a time of day (14:05, 14:05:30), \
             a local date and time (2026-12-01 14:05) or RFC 3339 (2026-12-01T14:05:00Z)"
        ))
    }
}

/// One capture file and its wall-clock span (ns since the epoch).
#[derive(Debug, Clone)]
pub struct CaptureSpan {
    pub path: PathBuf,
    pub start_wall_ns: u64,
    /// Its last event, or its modification time where it has no index.
    pub end_wall_ns: u64,
    /// Its first metadata record's clocks, to turn wall-clock times into its own.
    pub start_mono_ns: u64,
}

/// The capture files that `paths` name: files as given, directories by the
/// captures in them, oldest first.
pub fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if !p.is_dir() {
            out.push(p.clone());
            continue;
        }
        let entries = std::fs::read_dir(p)
            .map_err(|source| Error::Open(profcap_format::Error::Open { path: p.clone(), source }))?;
        let mut found: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.path())
            .filter(|path| is_capture(path))
            .collect();
        if found.is_empty() {
            return Err(Error::NoSamples(format!("{} holds no capture files", p.display())));
        }
        found.sort();
        out.extend(found);
    }
    Ok(out)
}

/// Whether the file starts with the capture magic.
fn is_capture(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 8];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok()
        && magic[..] == profcap_format::FILE_MAGIC[..]
}

/// The wall-clock span of a capture, from its first chunk and its index.
pub fn span(path: &Path) -> Result<CaptureSpan> {
    let err = |source| Error::Capture { path: path.to_owned(), source };
    let mut reader = CaptureReader::open(path, ReadOptions::strict(false)).map_err(|e| match e {
        e @ profcap_format::Error::Open { .. } => Error::Open(e),
        e => err(e),
    })?;
    let meta = loop {
        match reader.next_batch().map_err(err)? {
            Some(b) => {
                if let Some(m) = b.meta {
                    break m;
                }
            }
            None => return Err(Error::NoSamples(format!("{} has no metadata record", path.display()))),
        }
    };
    let file = std::fs::File::open(path).map_err(|source| err(profcap_format::Error::Read(source)))?;
    let last_mono = profcap_format::read_index(&file)
        .ok()
        .flatten()
        .and_then(|index| index.iter().map(|e| e.last_ns).filter(|&t| t > 0).max());
    let end_wall_ns = match last_mono {
        Some(last) => meta.start_wall_ns.saturating_add(last.saturating_sub(meta.start_mono_ns)),
        None => {
            let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
            let since = mtime.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
            since.map_or(meta.start_wall_ns, |d| d.as_nanos() as u64)
        }
    };
    Ok(CaptureSpan {
        path: path.to_owned(),
        start_wall_ns: meta.start_wall_ns,
        end_wall_ns: end_wall_ns.max(meta.start_wall_ns),
        start_mono_ns: meta.start_mono_ns,
    })
}

/// A wall-clock range, resolved: times of day are placed on the day of the
/// newest capture (at or before its end).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WallRange {
    pub from_ns: Option<i128>,
    pub to_ns: Option<i128>,
}

impl WallRange {
    /// Resolves `from` and `to` against the spans (`None` when both are
    /// seconds or absent: no wall-clock selection).
    pub fn resolve(
        from: Option<TimeArg>,
        to: Option<TimeArg>,
        spans: &[CaptureSpan],
    ) -> Result<Option<WallRange>> {
        let wall = |t: Option<TimeArg>| !matches!(t, None | Some(TimeArg::Seconds(_)));
        if !wall(from) && !wall(to) {
            return Ok(None);
        }
        if matches!(from, Some(TimeArg::Seconds(_))) || matches!(to, Some(TimeArg::Seconds(_))) {
            return Err(Error::NoSamples(
                "--from and --to must both be wall-clock times, or both seconds into the capture".into(),
            ));
        }
        let newest = spans.iter().map(|s| s.end_wall_ns).max().unwrap_or(0);
        let at = |t: Option<TimeArg>| -> Result<Option<i128>> {
            Ok(match t {
                Some(TimeArg::At(ns)) => Some(ns),
                Some(TimeArg::TimeOfDay(time)) => Some(latest_time_of_day(time, newest)?),
                _ => None,
            })
        };
        let range = WallRange { from_ns: at(from)?, to_ns: at(to)? };
        if let (Some(a), Some(b)) = (range.from_ns, range.to_ns) {
            if a > b {
                return Err(Error::NoSamples(format!("--from ({}) is after --to ({})", show(a), show(b))));
            }
        }
        Ok(Some(range))
    }

    /// Whether a capture's span overlaps the range.
    pub fn overlaps(&self, s: &CaptureSpan) -> bool {
        self.from_ns.is_none_or(|f| i128::from(s.end_wall_ns) >= f)
            && self.to_ns.is_none_or(|t| i128::from(s.start_wall_ns) <= t)
    }

    /// The range as seconds after `first_ns` (a capture's first sample, on
    /// its monotonic clock), as the sample filter takes it.
    pub fn seconds_in(&self, s: &CaptureSpan, first_ns: u64) -> (Option<f64>, Option<f64>) {
        // The capture's monotonic time of a wall-clock moment.
        let rel = |wall: i128| {
            let mono = wall - i128::from(s.start_wall_ns) + i128::from(s.start_mono_ns);
            (mono - i128::from(first_ns)) as f64 / 1e9
        };
        (self.from_ns.map(rel), self.to_ns.map(rel))
    }

    /// "from … to …" for messages.
    pub fn describe(&self) -> String {
        let f = self.from_ns.map_or_else(|| "the start".to_owned(), show);
        let t = self.to_ns.map_or_else(|| "the end".to_owned(), show);
        format!("{f} to {t}")
    }
}

/// A moment as local date and time.
fn show(ns: i128) -> String {
    Timestamp::from_nanosecond(ns).map_or_else(
        |_| ns.to_string(),
        |t| t.to_zoned_datetime(TimeZone::system()).strftime("%Y-%m-%d %H:%M:%S %Z").to_string(),
    )
}

/// The latest moment at or before `not_after_ns` whose local time of day is `time`.
fn latest_time_of_day(time: Time, not_after_ns: u64) -> Result<i128> {
    let tz = TimeZone::system();
    let bad = |e: jiff::Error| Error::NoSamples(format!("time of day {time}: {e}"));
    let end = Timestamp::from_nanosecond(i128::from(not_after_ns)).map_err(bad)?;
    let day = end.to_zoned_datetime(tz.clone()).date();
    let today = tz.to_timestamp(day.to_datetime(time)).map_err(bad)?;
    if today <= end {
        return Ok(today.as_nanosecond());
    }
    let yesterday = day.yesterday().map_err(bad)?;
    Ok(tz.to_timestamp(yesterday.to_datetime(time)).map_err(bad)?.as_nanosecond())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(start_s: u64, end_s: u64) -> CaptureSpan {
        CaptureSpan {
            path: PathBuf::from("x"),
            start_wall_ns: start_s * 1_000_000_000,
            end_wall_ns: end_s * 1_000_000_000,
            start_mono_ns: 5_000_000_000,
        }
    }

    #[test]
    fn time_arguments_parse() {
        assert_eq!("12.5".parse::<TimeArg>(), Ok(TimeArg::Seconds(12.5)));
        let t: Timestamp = "2026-12-01T14:05:00Z".parse().unwrap();
        assert_eq!("2026-12-01T14:05:00Z".parse::<TimeArg>(), Ok(TimeArg::At(t.as_nanosecond())));
        assert!(matches!("14:05".parse::<TimeArg>(), Ok(TimeArg::TimeOfDay(_))));
        assert!(matches!("2026-12-01 14:05".parse::<TimeArg>(), Ok(TimeArg::At(_))));
        for bad in ["-1", "nan", "yesterday", "25:00"] {
            assert!(bad.parse::<TimeArg>().is_err(), "{bad}");
        }
    }

    #[test]
    fn ranges_select_overlapping_files_and_convert_to_seconds() {
        let r = WallRange { from_ns: Some(100_000_000_000), to_ns: Some(200_000_000_000) };
        assert!(!r.overlaps(&span(0, 99)));
        assert!(r.overlaps(&span(50, 100)));
        assert!(r.overlaps(&span(150, 160)));
        assert!(r.overlaps(&span(200, 300)));
        assert!(!r.overlaps(&span(201, 300)));
        // Start at wall 150 s = mono 5 s; first sample at mono 6 s.
        let (from, to) = r.seconds_in(&span(150, 300), 6_000_000_000);
        assert_eq!((from, to), (Some(-51.0), Some(49.0)));
    }

    #[test]
    fn a_time_of_day_is_its_latest_occurrence_before_the_newest_capture() {
        let end: Timestamp = "2026-12-01T10:00:00Z".parse().unwrap();
        let end_ns = end.as_nanosecond() as u64;
        let tz = TimeZone::system();
        let local_end = end.to_zoned_datetime(tz.clone());
        let earlier = local_end.time().saturating_sub(jiff::SignedDuration::from_mins(5));
        let got = latest_time_of_day(earlier, end_ns).unwrap();
        assert_eq!(end.as_nanosecond() - got, 300_000_000_000, "five minutes before, same day");
        let later = local_end.time().saturating_add(jiff::SignedDuration::from_mins(5));
        let got = latest_time_of_day(later, end_ns).unwrap();
        assert_eq!(end.as_nanosecond() - got, (24 * 3600 - 300) * 1_000_000_000, "the day before");
    }
}
