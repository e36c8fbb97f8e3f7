//! Build ids and off-box symbolization material from ELF objects.
//!
//! The recorder does not symbolize. It only copies, once per build id, what the
//! analyzer needs: symbol tables, PT_LOAD segments and the unwind sections.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;

use memmap2::Mmap;
use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol, SectionKind, SymbolKind};
use profcap_format::{BlobContent, Section, Segment, Symbol, SymbolBlob};

use crate::{Error, Result};

/// What to embed for each object that appears in samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EmbedMode {
    /// Symbol tables, segments and unwind sections (the default).
    #[default]
    Symbols,
    /// The whole file, debug info included.
    Full,
    /// Nothing: the analyzer finds binaries by build id.
    None,
}

/// A file mapped read-only into memory.
#[derive(Debug)]
pub struct MappedFile {
    map: Mmap,
}

impl MappedFile {
    /// Maps `path` (often a /proc/PID/root/... or /proc/PID/map_files/... path).
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        // SAFETY: the mapping is read-only and private; if another process
        // truncates the file we may read zeros or get SIGBUS, the same risk every
        // profiler reading binaries takes. Files are executables mapped by the
        // target, which the loader also keeps mapped.
        let map = unsafe { Mmap::map(&file) }.map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        Ok(MappedFile { map })
    }

    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }
}

/// The GNU build id of an ELF image, if it has one.
pub fn build_id(data: &[u8]) -> Option<Vec<u8>> {
    let obj = object::File::parse(data).ok()?;
    obj.build_id().ok().flatten().map(<[u8]>::to_vec)
}

/// Extracts symbolization material from an ELF image.
pub fn extract_blob(data: &[u8], path: &str, build_id: &[u8], mode: EmbedMode) -> SymbolBlob {
    let mut blob = SymbolBlob {
        build_id: build_id.to_vec(),
        path: path.to_owned(),
        ..Default::default()
    };
    let Ok(obj) = object::File::parse(data) else {
        log::warn!("{path}: not a readable ELF file; its frames will show as offsets");
        return blob;
    };
    blob.segments = obj
        .segments()
        .filter_map(|seg| {
            let (file_offset, file_size) = seg.file_range();
            let executable =
                matches!(seg.flags(), object::SegmentFlags::Elf { p_flags } if p_flags & 1 != 0);
            (file_size > 0).then_some(Segment {
                file_offset,
                vaddr: seg.address(),
                file_size,
                executable,
            })
        })
        .collect();
    match mode {
        EmbedMode::None => {}
        EmbedMode::Full => {
            blob.content = BlobContent::FullElf;
            blob.elf = data.to_vec();
        }
        EmbedMode::Symbols => {
            blob.symbols = function_symbols(&obj);
            blob.sections = obj
                .sections()
                .filter(|s| matches!(s.name(), Ok(".eh_frame" | ".eh_frame_hdr")))
                .filter(|s| s.kind() != SectionKind::UninitializedData)
                .filter_map(|s| {
                    Some(Section {
                        name: s.name().ok()?.to_owned(),
                        addr: s.address(),
                        data: s.data().ok()?.to_vec(),
                    })
                })
                .collect();
        }
    }
    blob
}

/// Function symbols from .symtab and .dynsym, deduplicated and sorted.
fn function_symbols(obj: &object::File<'_>) -> Vec<Symbol> {
    let mut by_addr: BTreeMap<(u64, String), u64> = BTreeMap::new();
    for sym in obj.symbols().chain(obj.dynamic_symbols()) {
        if sym.kind() != SymbolKind::Text || sym.address() == 0 || sym.is_undefined() {
            continue;
        }
        let Ok(name) = sym.name() else { continue };
        if name.is_empty() {
            continue;
        }
        let size = by_addr.entry((sym.address(), name.to_owned())).or_insert(0);
        *size = (*size).max(sym.size());
    }
    by_addr
        .into_iter()
        .map(|((addr, name), size)| Symbol { addr, size, name })
        .collect()
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
        assert!(
            blob.symbols.len() > 100,
            "only {} symbols",
            blob.symbols.len()
        );
        assert!(blob.symbols.windows(2).all(|w| w[0].addr <= w[1].addr));
        assert!(blob.segments.iter().any(|s| s.executable));
        assert!(blob
            .sections
            .iter()
            .any(|s| s.name == ".eh_frame" && !s.data.is_empty()));
        assert!(blob
            .symbols
            .iter()
            .any(|s| s.name.contains("extracts_symbols_from_this_test_binary")));
    }

    #[test]
    fn vdso_has_a_build_id_and_clock_gettime() {
        let vdso = own_vdso().expect("x86-64 Linux maps a vDSO");
        let blob = extract_blob(
            &vdso,
            "[vdso]",
            &build_id(&vdso).unwrap_or_default(),
            EmbedMode::Symbols,
        );
        assert!(
            blob.symbols
                .iter()
                .any(|s| s.name.contains("clock_gettime")),
            "{:?}",
            blob.symbols
        );
    }
}
