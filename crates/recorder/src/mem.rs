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
    profcap_format::elf::function_names(file.bytes())
}

/// A file under the temporary directory, removed on drop.
#[derive(Debug)]
struct TempFile {
    path: PathBuf,
}

impl TempFile {
    /// Creates `profcap-WHAT-PID-N[SUFFIX]` with `mode`, never an existing
    /// file, and opens it for reading and writing.
    fn create(what: &str, suffix: &str, mode: u32) -> Result<(TempFile, std::fs::File)> {
        let dir = std::env::temp_dir();
        for attempt in 0..100u32 {
            let path = dir.join(format!("profcap-{what}-{}-{attempt}{suffix}", std::process::id()));
            let file =
                std::fs::OpenOptions::new().read(true).write(true).create_new(true).mode(mode).open(&path);
            match file {
                Ok(f) => return Ok((TempFile { path }, f)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(source) => return Err(Error::Io { path, source }),
            }
        }
        Err(Error::Io {
            path: dir,
            source: std::io::Error::other(format!("no free name for the {what} file")),
        })
    }

    fn io_error(&self, source: std::io::Error) -> Error {
        Error::Io { path: self.path.clone(), source }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The sampler library written to a private temporary file, removed on drop.
#[derive(Debug)]
pub struct SamplerFile {
    file: TempFile,
}

impl SamplerFile {
    /// Writes the embedded sampler into a new file under the temporary
    /// directory (a fresh name, never an existing file).
    pub fn create() -> Result<SamplerFile> {
        let (file, mut f) = TempFile::create("sampler", ".so", 0o644)?;
        f.write_all(SAMPLER).map_err(|e| file.io_error(e))?;
        Ok(SamplerFile { file })
    }

    pub fn path(&self) -> &Path {
        &self.file.path
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

/// The ring the preloaded sampler writes picked allocations and their frees
/// into (`struct ring_header` and `struct ring_record` in
/// crates/recorder/sampler/profcap_sampler.c; keep the layouts in step): a
/// private file that every process of the command maps, removed on drop.
#[derive(Debug)]
pub struct SamplerRing {
    file: TempFile,
    map: memmap2::MmapMut,
    /// Records that could not be read (a damaged ring), skipped.
    pub malformed: u64,
}

/// A record of the sampler's ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingRecord {
    /// An allocation (with its stack), else a free.
    pub alloc: bool,
    pub pid: u32,
    pub tid: u32,
    /// CLOCK_MONOTONIC nanoseconds, the clock of the BPF events.
    pub time_ns: u64,
    pub addr: u64,
    pub size: u64,
    pub weight: u64,
    /// Return addresses, innermost first (the sampler's own frames included).
    pub frames: Vec<u64>,
}

const RING_MAGIC: u64 = 0x3167_6e69_7270_6370; // "pcpring1"
const RING_HEADER: usize = 4096;
/// Offsets in `struct ring_header`.
const RING_DATA_BYTES: usize = 8;
const RING_HEAD: usize = 16;
const RING_TAIL: usize = 24;
const RING_DROPPED: usize = 32;
/// `struct ring_record` without its frames, and its states.
const RECORD_LEN: usize = 56;
const RING_ALLOC: u32 = 1;
const RING_FREE: u32 = 2;
const RING_PAD: u32 = 3;
const RING_MAX_FRAMES: usize = 64;

impl SamplerRing {
    /// Creates the ring file (mode 0600, a fresh name under the temporary
    /// directory) with `data_bytes` (a power of two) of room, and maps it.
    pub fn create(data_bytes: usize) -> Result<SamplerRing> {
        assert!(data_bytes.is_power_of_two() && data_bytes >= 4096, "ring size must be a power of two");
        let (file, f) = TempFile::create("ring", "", 0o600)?;
        f.set_len((RING_HEADER + data_bytes) as u64).map_err(|e| file.io_error(e))?;
        // SAFETY: the file is ours (created just now, 0600); the sampler
        // processes write it concurrently, which every access below allows
        // for (atomics for the shared words, records read only after their
        // state is published).
        let mut map = unsafe { memmap2::MmapMut::map_mut(&f) }.map_err(|e| file.io_error(e))?;
        map[RING_DATA_BYTES..RING_DATA_BYTES + 8].copy_from_slice(&(data_bytes as u64).to_ne_bytes());
        map[..8].copy_from_slice(&RING_MAGIC.to_ne_bytes());
        Ok(SamplerRing { file, map, malformed: 0 })
    }

    pub fn path(&self) -> &Path {
        &self.file.path
    }

    fn word(&self, at: usize) -> &std::sync::atomic::AtomicU64 {
        let p = self.map[at..at + 8].as_ptr() as *mut u64;
        // SAFETY: `at` is 8-aligned within the page-aligned map, which lives
        // as long as `self`; other processes access these words atomically.
        unsafe { std::sync::atomic::AtomicU64::from_ptr(p) }
    }

    fn data_bytes(&self) -> usize {
        self.map.len() - RING_HEADER
    }

    /// Records the sampler dropped because the ring was full.
    pub fn dropped(&self) -> u64 {
        self.word(RING_DROPPED).load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Takes every published record, in order, and frees their room.
    pub fn drain(&mut self) -> Vec<RingRecord> {
        use std::sync::atomic::{AtomicU32, Ordering};
        let size = self.data_bytes();
        let start = self.word(RING_TAIL).load(Ordering::Relaxed);
        let head = self.word(RING_HEAD).load(Ordering::Acquire);
        let mut tail = start;
        let mut out = Vec::new();
        while tail < head {
            let at = RING_HEADER + (tail as usize & (size - 1));
            let state_ptr = self.map[at + 4..at + 8].as_ptr() as *mut u32;
            // SAFETY: 4-aligned within the map; the producer stores it last,
            // with release ordering, after writing the record.
            let state = unsafe { AtomicU32::from_ptr(state_ptr) }.load(Ordering::Acquire);
            if state == 0 {
                break; // reserved, not yet written
            }
            let b = &self.map[at..];
            let u32_at = |o| crate::bpf::u32_at(b, o).unwrap_or(0);
            let u64_at = |o| crate::bpf::u64_at(b, o).unwrap_or(0);
            let len = u32_at(0) as usize;
            let room = size - (tail as usize & (size - 1));
            if len < 8 || len % 8 != 0 || len > room {
                // Damaged: nothing after it can be trusted; skip what was reserved.
                self.malformed += 1;
                tail = head;
                break;
            }
            if state == RING_ALLOC || state == RING_FREE {
                let nframes = u32_at(48) as usize;
                if len < RECORD_LEN || nframes > RING_MAX_FRAMES || RECORD_LEN + nframes * 8 > len {
                    self.malformed += 1;
                } else {
                    out.push(RingRecord {
                        alloc: state == RING_ALLOC,
                        pid: u32_at(8),
                        tid: u32_at(12),
                        time_ns: u64_at(16),
                        addr: u64_at(24),
                        size: u64_at(32),
                        weight: u64_at(40),
                        frames: (0..nframes).map(|i| u64_at(RECORD_LEN + 8 * i)).collect(),
                    });
                }
            } else if state != RING_PAD {
                self.malformed += 1;
            }
            tail += len as u64;
        }
        // Zero what was read (producers rely on a zero state), then release it.
        let mut pos = start;
        while pos < tail {
            let off = pos as usize & (size - 1);
            let n = ((tail - pos) as usize).min(size - off);
            self.map[RING_HEADER + off..RING_HEADER + off + n].fill(0);
            pos += n as u64;
        }
        self.word(RING_TAIL).store(tail, Ordering::Release);
        out
    }
}
