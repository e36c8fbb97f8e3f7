//! Access to the ELF objects of target processes. The extraction of what to
//! embed lives in `profcap_format::elf`; the recorder never symbolizes.

use std::fs::File;
use std::path::Path;

use memmap2::Mmap;
pub use profcap_format::elf::{build_id, extract_blob, EmbedMode};

use crate::{Error, Result};

/// A file mapped read-only into memory.
#[derive(Debug)]
pub struct MappedFile {
    map: Mmap,
}

impl MappedFile {
    /// Maps `path` (often a /proc/PID/root/... or /proc/PID/map_files/... path).
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|source| Error::Io { path: path.to_owned(), source })?;
        // SAFETY: the mapping is read-only and private; if another process
        // truncates the file we may read zeros or get SIGBUS, the same risk every
        // profiler reading binaries takes. Files are executables mapped by the
        // target, which the loader also keeps mapped.
        let map =
            unsafe { Mmap::map(&file) }.map_err(|source| Error::Io { path: path.to_owned(), source })?;
        Ok(MappedFile { map })
    }

    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }
}

/// The vDSO image of this process: the kernel maps the same one into every
/// process, so ours stands for the targets'.
pub fn own_vdso() -> Option<Vec<u8>> {
    // SAFETY: getauxval has no preconditions.
    let base = unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) };
    if base == 0 {
        return None;
    }
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let entry = maps
        .lines()
        .filter_map(crate::procfs::parse_maps_line)
        .find(|m| m.start == base && m.path == "[vdso]")?;
    let len = usize::try_from(entry.end - entry.start).ok()?;
    // SAFETY: [start, end) is the vDSO mapping of this very process, readable
    // for its whole lifetime, and we copy it out at once.
    let bytes = unsafe { std::slice::from_raw_parts(base as *const u8, len) };
    Some(bytes.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_symbols_from_this_test_binary() {
        let exe = std::env::current_exe().unwrap();
        let file = MappedFile::open(&exe).unwrap();
        let id = build_id(file.bytes()).unwrap_or_default();
        let blob = extract_blob(file.bytes(), "self", &id, EmbedMode::Symbols);
        assert!(blob.symbols.len() > 100, "only {} symbols", blob.symbols.len());
        assert!(blob.symbols.windows(2).all(|w| w[0].addr <= w[1].addr));
        assert!(blob.segments.iter().any(|s| s.executable));
        assert!(blob.sections.iter().any(|s| s.name == ".eh_frame" && !s.data.is_empty()));
        assert!(blob.symbols.iter().any(|s| s.name.contains("extracts_symbols_from_this_test_binary")));
    }

    #[test]
    fn vdso_has_a_build_id_and_clock_gettime() {
        let vdso = own_vdso().expect("x86-64 Linux maps a vDSO");
        let blob = extract_blob(&vdso, "[vdso]", &build_id(&vdso).unwrap_or_default(), EmbedMode::Symbols);
        assert!(blob.symbols.iter().any(|s| s.name.contains("clock_gettime")), "{:?}", blob.symbols);
    }
}
