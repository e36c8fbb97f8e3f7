//! The directory of a continuous recording (`--rotate`): the captures'
//! names, when the next one starts, what is kept (`--keep`, free space),
//! and the status file `profrec --status` reads.
//!
//! The directory must be writable by root alone: profrec deletes files in it
//! and another user able to write there could plant names. Only regular
//! files owned by root whose names are capture names are ever deleted, and
//! only by name in the directory (no symlink is followed).

use std::collections::VecDeque;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{Error, Result, Retention, RotateEvery, Rotation};

/// The status file beside the captures.
pub const STATUS_FILE: &str = "profrec.status";
/// Captures' names end so: `HOST-YYYYMMDDTHHMMSS.mmmZ.cap`.
const SUFFIX: &str = "Z.cap";

/// A finished capture of the directory.
#[derive(Debug, Clone)]
struct Finished {
    name: String,
    bytes: u64,
    /// When it ended (wall-clock ns since the epoch; its mtime for files of earlier runs).
    end_wall_ns: u64,
}

/// The directory and the rotation schedule.
#[derive(Debug)]
pub(super) struct Directory {
    pub(super) dir: PathBuf,
    every: RotateEvery,
    keep: Option<Retention>,
    host: String,
    /// Finished captures, oldest first.
    finished: VecDeque<Finished>,
    /// Captures deleted for lack of free space, and by retention.
    pub(super) deleted_for_space: u64,
    pub(super) deleted_by_retention: u64,
}

impl Directory {
    /// Opens (or makes, mode 0700) the directory and lists the captures
    /// already there, which `--keep` counts too.
    pub(super) fn open(dir: &Path, rotation: &Rotation, host: &str) -> Result<Directory> {
        let io = |source| Error::Io { path: dir.to_owned(), source };
        match std::fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io(e)),
        }
        let meta = std::fs::metadata(dir).map_err(io)?;
        if !meta.is_dir() {
            return Err(Error::Directory { path: dir.to_owned(), reason: "is not a directory".into() });
        }
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        if meta.uid() != me || meta.permissions().mode() & 0o022 != 0 {
            return Err(Error::Directory {
                path: dir.to_owned(),
                reason: "can be written by other users (profrec deletes old captures there): \
                         use a directory only root can write, e.g. /var/lib/profrec"
                    .into(),
            });
        }
        let mut d = Directory {
            dir: dir.to_owned(),
            every: rotation.every,
            keep: rotation.keep,
            host: file_safe(host),
            finished: VecDeque::new(),
            deleted_for_space: 0,
            deleted_by_retention: 0,
        };
        d.finished = d.existing().map_err(io)?.into();
        Ok(d)
    }

    /// Captures of earlier runs, oldest first.
    fn existing(&self) -> std::io::Result<Vec<Finished>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(meta) = entry.metadata() else { continue };
            if capture_time(&name).is_none() || !ours(&meta) {
                continue;
            }
            let end_wall_ns = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
            let end_wall_ns = end_wall_ns.map_or(0, |d| d.as_nanos() as u64);
            out.push(Finished { name, bytes: meta.len(), end_wall_ns });
        }
        out.sort_by_key(|f| (capture_time(&f.name), f.name.clone()));
        Ok(out)
    }

    /// The path of a capture starting at `wall_ns`.
    pub(super) fn path_for(&self, wall_ns: u64) -> PathBuf {
        let mut path = self.dir.join(capture_name(&self.host, wall_ns));
        // A name taken already (a SIGHUP within the same millisecond): the next one.
        let mut ms = 0;
        while path.exists() && ms < 1000 {
            ms += 1;
            path = self.dir.join(capture_name(&self.host, wall_ns + ms * 1_000_000));
        }
        path
    }

    /// The boundary after `wall_ns` for a time period: the next multiple of
    /// the period in wall-clock time (files of 10 minutes start at :00, :10, …).
    pub(super) fn next_boundary_wall(&self, wall_ns: u64) -> Option<u64> {
        let RotateEvery::Period(p) = self.every else { return None };
        let p = u64::try_from(p.as_nanos()).unwrap_or(u64::MAX).max(1_000_000);
        Some((wall_ns / p).saturating_add(1).saturating_mul(p))
    }

    pub(super) fn every(&self) -> RotateEvery {
        self.every
    }

    /// Whether a file of `bytes` is full (size rotation).
    pub(super) fn is_full(&self, bytes: u64) -> bool {
        matches!(self.every, RotateEvery::Bytes(max) if bytes >= max)
    }

    /// A capture has been finished and named.
    pub(super) fn finished(&mut self, path: &Path, bytes: u64, end_wall_ns: u64) {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        self.finished.push_back(Finished { name, bytes, end_wall_ns });
    }

    /// Deletes the oldest captures that `--keep` no longer allows, and the
    /// oldest while free space is short; `current` is the size of the file
    /// being written. Returns what was deleted, for the log.
    pub(super) fn enforce(&mut self, current: u64, now_wall_ns: u64) -> Vec<String> {
        let mut gone = Vec::new();
        match self.keep {
            Some(Retention::Age(age)) => {
                let oldest_kept =
                    now_wall_ns.saturating_sub(u64::try_from(age.as_nanos()).unwrap_or(u64::MAX));
                while self.finished.front().is_some_and(|f| f.end_wall_ns < oldest_kept) {
                    gone.extend(self.delete_oldest("older than --keep"));
                    self.deleted_by_retention += 1;
                }
            }
            Some(Retention::Bytes(max)) => {
                while !self.finished.is_empty() && self.total_bytes() + current > max {
                    gone.extend(self.delete_oldest("over the --keep size"));
                    self.deleted_by_retention += 1;
                }
            }
            None => {}
        }
        let reserve = self.reserve(current);
        while !self.finished.is_empty() && free_bytes(&self.dir).is_some_and(|free| free < reserve) {
            gone.extend(self.delete_oldest("disk space low"));
            self.deleted_for_space += 1;
        }
        gone
    }

    /// Free space kept: twice the largest capture (at least 1 MiB), so that
    /// the next one fits.
    fn reserve(&self, current: u64) -> u64 {
        let largest = self.finished.iter().map(|f| f.bytes).max().unwrap_or(0).max(current);
        largest.max(1 << 20).saturating_mul(2)
    }

    /// Deletes the oldest finished capture (the disk is full: `why`).
    pub(super) fn delete_oldest(&mut self, why: &str) -> Option<String> {
        let f = self.finished.pop_front()?;
        let path = self.dir.join(&f.name);
        // By name only: a file that is not ours any more (replaced) stays.
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if ours(&meta) => match std::fs::remove_file(&path) {
                Ok(()) => log::warn!("deleted the oldest capture {} ({why})", path.display()),
                Err(e) => log::error!("cannot delete {}: {e}", path.display()),
            },
            Ok(_) => log::warn!("{} is no longer profrec's; left in place", path.display()),
            Err(_) => {}
        }
        Some(f.name)
    }

    pub(super) fn total_bytes(&self) -> u64 {
        self.finished.iter().map(|f| f.bytes).sum()
    }

    pub(super) fn file_count(&self) -> usize {
        self.finished.len()
    }
}

/// A regular file of profrec's (owned by its user).
fn ours(meta: &std::fs::Metadata) -> bool {
    // SAFETY: geteuid has no preconditions.
    meta.file_type().is_file() && meta.uid() == unsafe { libc::geteuid() }
}

/// Free bytes of the file system holding `dir`, for an unprivileged writer
/// (root may use the reserved blocks too, but should not count on them).
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes into the zeroed struct we pass; the path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// The host name with anything but letters, digits, `-`, `_` and `.` replaced.
fn file_safe(host: &str) -> String {
    let s: String = host
        .chars()
        .take(64)
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' })
        .collect();
    if s.is_empty() || s.starts_with('.') {
        format!("host{s}")
    } else {
        s
    }
}

/// `HOST-YYYYMMDDTHHMMSS.mmmZ.cap` (UTC).
pub fn capture_name(host: &str, wall_ns: u64) -> String {
    let t = jiff::Timestamp::from_nanosecond(i128::from(wall_ns)).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    format!("{host}-{}{SUFFIX}", t.strftime("%Y%m%dT%H%M%S%.3f"))
}

/// The start time in a capture name, if it is one.
pub fn capture_time(name: &str) -> Option<jiff::Timestamp> {
    let stem = name.strip_suffix(SUFFIX)?;
    let (_, time) = stem.rsplit_once('-')?;
    if time.len() != "YYYYMMDDTHHMMSS.mmm".len() {
        return None;
    }
    let civil = jiff::civil::DateTime::strptime("%Y%m%dT%H%M%S%.f", time).ok()?;
    jiff::tz::TimeZone::UTC.to_timestamp(civil).ok()
}

/// The length of `every` or `keep` for messages.
pub(super) fn describe(every: RotateEvery) -> String {
    match every {
        RotateEvery::Period(d) => format!("every {}", seconds(d)),
        RotateEvery::Bytes(b) => format!("every {:.1} MiB", b as f64 / (1 << 20) as f64),
    }
}

fn seconds(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_their_start_time() {
        let ns = 1_764_604_800_123_000_000; // 2025-12-01T16:00:00.123Z
        let name = capture_name("web-1", ns);
        assert_eq!(name, "web-1-20251201T160000.123Z.cap");
        let t = capture_time(&name).expect("a capture name");
        assert_eq!(t.as_nanosecond(), i128::from(ns));
        assert!(capture_time("web-1.cap").is_none());
        assert!(capture_time("notes-20251201T160000.123Z.txt").is_none());
    }

    #[test]
    fn host_names_cannot_make_paths() {
        assert_eq!(file_safe("a/b"), "a_b");
        assert_eq!(file_safe(".."), "host..");
        assert_eq!(file_safe(""), "host");
    }

    #[test]
    fn period_boundaries_are_wall_clock_multiples() {
        let rotation = Rotation::new(RotateEvery::Period(Duration::from_secs(600)));
        let d = Directory {
            dir: PathBuf::new(),
            every: rotation.every,
            keep: None,
            host: "h".into(),
            finished: VecDeque::new(),
            deleted_for_space: 0,
            deleted_by_retention: 0,
        };
        let s = 1_000_000_000;
        assert_eq!(d.next_boundary_wall(1234 * s), Some(1800 * s));
        assert_eq!(d.next_boundary_wall(1800 * s), Some(2400 * s));
    }
}
