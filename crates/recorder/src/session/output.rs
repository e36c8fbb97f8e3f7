//! The capture file, created so that root writing it can be neither
//! redirected nor made to clobber anything, and so that a profrec killed
//! before recording starts leaves nothing behind.
//!
//! profrec writes into a new, unnamed file in the destination's directory
//! (`O_TMPFILE`, mode 0600: no symlink is followed, no existing file is
//! reused, and a kill leaves no name behind). Once the recording has started
//! the file gets a fresh hidden name beside the destination and is renamed
//! over it, so a symlink planted there is replaced, never followed, and a
//! start-up that fails leaves whatever was there untouched. On file systems
//! without `O_TMPFILE` the hidden name is taken at once (`O_EXCL`).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// A capture file not yet in its place.
#[derive(Debug)]
pub(super) struct Output {
    dest: PathBuf,
    dir: PathBuf,
    state: State,
}

#[derive(Debug)]
enum State {
    /// An unnamed file: `file` is linked under a hidden name at commit.
    Unnamed(File),
    /// A named temporary file (no `O_TMPFILE` here), removed on drop.
    Named(tempfile::TempPath),
    Committed,
}

impl Output {
    /// Creates the new file in the destination's directory.
    pub(super) fn create(dest: &Path) -> Result<(Output, File)> {
        let io = |source| Error::Io { path: dest.to_owned(), source };
        if dest.is_dir() {
            return Err(io(std::io::Error::from_raw_os_error(libc::EISDIR)));
        }
        let dir = match dest.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        let unnamed = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new().write(true).mode(0o600).custom_flags(libc::O_TMPFILE).open(&dir)
        };
        let (state, file) = match unnamed {
            Ok(file) => {
                let writer = file.try_clone().map_err(io)?;
                (State::Unnamed(file), writer)
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)) => {
                let (file, temp) = hidden_file(dest, &dir).map_err(io)?.into_parts();
                (State::Named(temp), file)
            }
            Err(e) => return Err(io(e)),
        };
        Ok((Output { dest: dest.to_owned(), dir, state }, file))
    }

    /// An output already in its place (what stands in for one taken away).
    pub(super) fn done() -> Output {
        Output { dest: PathBuf::new(), dir: PathBuf::new(), state: State::Committed }
    }

    /// Puts the file in its place (recording has started).
    pub(super) fn commit(&mut self) -> Result<()> {
        let io = |source| Error::Io { path: self.dest.clone(), source };
        let temp = match std::mem::replace(&mut self.state, State::Committed) {
            State::Committed => return Ok(()),
            State::Named(temp) => temp,
            State::Unnamed(file) => link_hidden(&file, &self.dest, &self.dir).map_err(io)?,
        };
        temp.persist(&self.dest).map_err(|e| io(e.error))?;
        Ok(())
    }
}

/// A new hidden file beside `dest`: `.NAME.RANDOM.partial`, mode 0600.
fn hidden_file(dest: &Path, dir: &Path) -> std::io::Result<tempfile::NamedTempFile> {
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".partial")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .tempfile_in(dir)
}

/// Gives the unnamed `file` a fresh hidden name beside `dest` (linkat
/// cannot replace a name, so it links to a new one that rename then moves).
fn link_hidden(file: &File, dest: &Path, dir: &Path) -> std::io::Result<tempfile::TempPath> {
    use std::os::unix::ffi::OsStrExt;
    let from = std::ffi::CString::new(format!("/proc/self/fd/{}", file.as_raw_fd())).unwrap_or_default();
    for _ in 0..16 {
        // A fresh name, reserved and freed again: linkat fails if it is taken meanwhile.
        let candidate = hidden_file(dest, dir)?.into_temp_path();
        let path = candidate.to_path_buf();
        candidate.close()?;
        let to = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
        // SAFETY: both paths are NUL-terminated strings that live across the call.
        let r = unsafe {
            libc::linkat(libc::AT_FDCWD, from.as_ptr(), libc::AT_FDCWD, to.as_ptr(), libc::AT_SYMLINK_FOLLOW)
        };
        if r == 0 {
            return tempfile::TempPath::try_from_path(path);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::AlreadyExists {
            return Err(e);
        }
    }
    Err(std::io::Error::other("no free hidden name beside the capture"))
}
