//! The capture file, created so that root writing it can be neither
//! redirected nor made to clobber anything.
//!
//! profrec writes into a new file with a fresh, unpredictable name beside
//! the destination (`O_CREAT|O_EXCL`, mode 0600: no symlink is followed and
//! no existing file is reused), and renames it over the destination once the
//! recording has started. A symlink planted at the destination is replaced,
//! never followed; a start-up that fails leaves whatever was there untouched
//! and removes the new file.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// A capture file not yet in its place.
#[derive(Debug)]
pub(super) struct Output {
    dest: PathBuf,
    /// The new file's name until it is renamed; removed on drop.
    temp: Option<tempfile::TempPath>,
}

impl Output {
    /// Creates the new file beside `dest`.
    pub(super) fn create(dest: &Path) -> Result<(Output, File)> {
        let io = |source| Error::Io { path: dest.to_owned(), source };
        if dest.is_dir() {
            return Err(io(std::io::Error::from_raw_os_error(libc::EISDIR)));
        }
        let dir = match dest.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let named = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".partial")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .tempfile_in(dir)
            .map_err(io)?;
        let (file, temp) = named.into_parts();
        Ok((Output { dest: dest.to_owned(), temp: Some(temp) }, file))
    }

    /// Puts the file in its place (recording has started).
    pub(super) fn commit(&mut self) -> Result<()> {
        if let Some(temp) = self.temp.take() {
            temp.persist(&self.dest).map_err(|e| Error::Io { path: self.dest.clone(), source: e.error })?;
        }
        Ok(())
    }
}
