//! Allocation tracking: where the allocator lives, and the sampler library.

use std::collections::HashSet;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::elf::MappedFile;
use crate::{Error, Result};

/// The sampler preloaded by `--mem --preload` (crates/recorder/sampler/).
const SAMPLER: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/libprofcap_sampler.so"));

/// The names of the functions the ELF object at `path` defines (dynamic
/// and static symbol tables); empty if it cannot be read.
pub fn function_names(path: &Path) -> HashSet<String> {
    let Ok(file) = MappedFile::open(path) else { return HashSet::new() };
    let blob =
        profcap_format::elf::extract_blob(file.bytes(), "", &[], profcap_format::elf::EmbedMode::Symbols);
    blob.symbols.into_iter().map(|s| s.name).collect()
}

/// The sampler library written to a private temporary file, removed on drop.
#[derive(Debug)]
pub struct SamplerFile {
    path: PathBuf,
}

impl SamplerFile {
    /// Writes the embedded sampler into a new file under the temporary
    /// directory (a fresh name, never an existing file).
    pub fn create() -> Result<SamplerFile> {
        let dir = std::env::temp_dir();
        for attempt in 0..100u32 {
            let path = dir.join(format!("profcap-sampler-{}-{attempt}.so", std::process::id()));
            let file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o644).open(&path);
            let mut file = match file {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(source) => return Err(Error::Io { path, source }),
            };
            file.write_all(SAMPLER).map_err(|source| Error::Io { path: path.clone(), source })?;
            return Ok(SamplerFile { path });
        }
        Err(Error::Io { path: dir, source: std::io::Error::other("no free name for the sampler library") })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SamplerFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The objects of a live process that may hold its allocator: its
/// executable and the libc it mapped (through /proc/PID/root, so containers work).
pub fn allocator_objects(pid: u32) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    let maps = crate::procfs::read_maps(pid).unwrap_or_default();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    for m in maps {
        let name = Path::new(&m.path).file_name().and_then(|n| n.to_str()).unwrap_or("");
        let is_exe = exe.as_deref() == Some(Path::new(&m.path));
        let wanted = is_exe
            || name.starts_with("libc.so")
            || name.starts_with("libc-")
            || ["libjemalloc", "libmimalloc", "libtcmalloc"].iter().any(|l| name.starts_with(l));
        let path = PathBuf::from(format!("/proc/{pid}/root{}", m.path));
        if wanted && !out.contains(&path) {
            out.push(path);
        }
    }
    out
}

/// Whether an ELF file is dynamically linked (unreadable files count as
/// dynamic: libc is then probed as for any other program).
fn is_dynamic(path: &Path) -> bool {
    let Ok(file) = MappedFile::open(path) else { return true };
    profcap_format::elf::has_interpreter(file.bytes()).unwrap_or(true)
}

/// For a command not started yet: its executable (found on PATH) and, if
/// it is dynamically linked, the libc this machine's programs use (profrec's own).
pub fn allocator_objects_for_command(argv0: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let exe = if argv0.contains('/') {
        Some(PathBuf::from(argv0))
    } else {
        std::env::var_os("PATH")
            .and_then(|p| std::env::split_paths(&p).map(|d| d.join(argv0)).find(|c| c.is_file()))
    };
    let exe = exe.and_then(|e| e.canonicalize().ok());
    let dynamic = exe.as_deref().is_none_or(is_dynamic);
    out.extend(exe);
    if !dynamic {
        return out;
    }
    // Our own executable is not the target's.
    let own = std::env::current_exe()
        .ok()
        .map(|e| PathBuf::from(format!("/proc/{}/root{}", std::process::id(), e.display())));
    out.extend(allocator_objects(std::process::id()).into_iter().filter(|path| Some(path) != own.as_ref()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sampler_defines_the_probe_functions_and_wrappers() {
        let f = SamplerFile::create().unwrap();
        let names = function_names(f.path());
        for name in ["profcap_sampled_alloc", "profcap_sampled_free", "malloc", "free", "posix_memalign"] {
            assert!(names.contains(name), "{name}");
        }
        let path = f.path().to_owned();
        drop(f);
        assert!(!path.exists(), "removed on drop");
    }

    #[test]
    fn static_and_dynamic_executables_are_told_apart() {
        let own = std::env::current_exe().unwrap();
        assert!(is_dynamic(&own), "the test binary links libc dynamically");
        let objects = allocator_objects_for_command(own.to_str().unwrap());
        assert!(objects.iter().any(|p| p.to_string_lossy().contains("libc.so")), "{objects:?}");
    }

    #[test]
    fn libc_is_among_our_allocator_objects() {
        let objects = allocator_objects(std::process::id());
        let libc = objects.iter().find(|p| p.to_string_lossy().contains("libc.so")).expect("libc mapped");
        let names = function_names(libc);
        assert!(names.contains("malloc") && names.contains("free"));
    }
}
