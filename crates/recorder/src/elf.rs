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

    /// Maps `path` only if it is a regular file, opened without blocking
    /// (a FIFO at a path derived from a target's must not hang profrec) and
    /// checked on the open descriptor.
    pub fn open_regular(path: &Path) -> Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let io = |source| Error::Io { path: path.to_owned(), source };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)
            .map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() || meta.len() == 0 {
            return Err(io(std::io::Error::other("not a regular file")));
        }
        // SAFETY: as in `open`.
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        Ok(MappedFile { map })
    }

    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }
}

/// Where Debian's -dbg and -dbgsym packages put detached debug files.
pub const SYSTEM_DEBUG_DIR: &str = "/usr/lib/debug";

/// The host's detached debug file of an object (`data`, mapped at `path`,
/// with build id `id`), if one is there: `DIR/.build-id/ab/cdef….debug`
/// or `DIR/<object's directory>/<its .gnu_debuglink name>` under each of
/// `dirs`. Only a regular file with the object's build id is taken, so a
/// path the profiled program chose can name nothing else.
pub fn debug_file(data: &[u8], path: &str, id: &[u8], dirs: &[std::path::PathBuf]) -> Option<MappedFile> {
    use object::Object;
    use std::path::Component;
    if id.is_empty() {
        return None;
    }
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let link = object::File::parse(data)
        .ok()
        .and_then(|o| o.gnu_debuglink().ok().flatten().map(|(name, _crc)| name.to_vec()))
        .and_then(|n| String::from_utf8(n).ok())
        .filter(|n| !n.is_empty() && !n.contains('/') && n != "." && n != "..");
    let parent = Path::new(path)
        .parent()
        .filter(|p| p.components().all(|c| matches!(c, Component::RootDir | Component::Normal(_))))
        .and_then(|p| p.strip_prefix("/").ok());
    let mut candidates = Vec::new();
    for dir in dirs {
        candidates.push(dir.join(".build-id").join(&hex[..2]).join(format!("{}.debug", &hex[2..])));
        if let (Some(link), Some(parent)) = (&link, parent) {
            candidates.push(dir.join(parent).join(link));
        }
    }
    candidates.into_iter().find_map(|p| {
        let f = MappedFile::open_regular(&p).ok()?;
        (build_id(f.bytes()).as_deref() == Some(id)).then(|| {
            log::debug!("{path}: debug file {}", p.display());
            f
        })
    })
}

/// Whether an ELF image names a program interpreter (PT_INTERP): a
/// dynamically linked program, which maps libc and honours LD_PRELOAD.
/// `None` if it is not a readable 64-bit ELF image.
pub fn has_interpreter(data: &[u8]) -> Option<bool> {
    use object::read::elf::{ElfFile64, ProgramHeader};
    let elf = ElfFile64::<object::Endianness>::parse(data).ok()?;
    let endian = elf.endian();
    Some(elf.elf_program_headers().iter().any(|ph| ph.p_type(endian) == object::elf::PT_INTERP))
}

/// Keeps only the symbols the analyzer will use for the frames at `offsets`
/// (file offsets in the object), as kernel symbols are kept only for the
/// recorded kernel frames: a capture carries the names of the code it
/// recorded, not whole symbol tables. The analyzer names an address with
/// `profcap_format::rules::pick_symbol`, probing the return address minus one
/// for callers; each probe's candidate is kept, so that the pruned table
/// names every frame exactly as the whole table would.
pub fn prune_symbols(blob: &mut profcap_format::SymbolBlob, offsets: &std::collections::BTreeSet<u64>) {
    use profcap_format::rules::{file_offset_to_vaddr, symbol_candidate};
    blob.symbols.sort_by_key(|s| s.addr); // stable, as the analyzer sorts
    let mut keep = vec![false; blob.symbols.len()];
    for &off in offsets {
        let a = file_offset_to_vaddr(&blob.segments, off).unwrap_or(off);
        for probe in [a, a.saturating_sub(1)] {
            if let Some(i) = symbol_candidate(&blob.symbols, probe) {
                keep[i] = true;
            }
        }
    }
    let mut keep = keep.into_iter();
    blob.symbols.retain(|_| keep.next().unwrap_or(false));
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

/// The names of the functions the ELF object at `path` defines (dynamic
/// and static symbol tables); empty if it cannot be read.
pub fn function_names(path: &Path) -> std::collections::HashSet<String> {
    let Ok(file) = MappedFile::open(path) else { return std::collections::HashSet::new() };
    profcap_format::elf::function_names(file.bytes())
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
    fn pruning_keeps_exactly_the_symbols_that_name_the_frames() {
        use profcap_format::{Segment, Symbol, SymbolBlob};
        let sym = |addr, size, name: &str| Symbol { addr, size, name: name.into() };
        let mut blob = SymbolBlob {
            symbols: vec![
                sym(0x1000, 0x100, "a"),
                sym(0x1100, 0x10, "b"),
                sym(0x1200, 0, "c"),
                sym(0x1300, 0x50, "d"),
            ],
            segments: vec![Segment { file_offset: 0, vaddr: 0x1000, file_size: 0x1000, executable: true }],
            ..Default::default()
        };
        // A leaf inside a (file offset 0x10 = vaddr 0x1010); a return
        // address at the very start of c (its probe minus one falls in the
        // gap after b, where b is the pick and does not cover it).
        let offsets = [0x10, 0x200].into_iter().collect();
        prune_symbols(&mut blob, &offsets);
        let names: Vec<&str> = blob.symbols.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["a", "b", "c"]);
    }

    #[test]
    fn vdso_has_a_build_id_and_clock_gettime() {
        let vdso = own_vdso().expect("x86-64 Linux maps a vDSO");
        let blob = extract_blob(&vdso, "[vdso]", &build_id(&vdso).unwrap_or_default(), EmbedMode::Symbols);
        assert!(blob.symbols.iter().any(|s| s.name.contains("clock_gettime")), "{:?}", blob.symbols);
    }
}
