//! Extracting off-box symbolization material from ELF images.
//!
//! Shared by the recorder (which embeds it in captures) and the analyzer
//! (which reads the same material from local files), so both see one truth.

use std::collections::BTreeMap;

use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol, SectionKind, SymbolKind};

use crate::{BlobContent, Section, Segment, Symbol, SymbolBlob};

/// What to embed for each object that appears in samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum EmbedMode {
    /// Symbol tables, segments and unwind sections (the default).
    #[default]
    Symbols,
    /// The whole file, debug info included.
    Full,
    /// Nothing: the analyzer finds binaries by build id.
    None,
}

/// The GNU build id of an ELF image, if it has one.
pub fn build_id(data: &[u8]) -> Option<Vec<u8>> {
    let obj = object::File::parse(data).ok()?;
    obj.build_id().ok().flatten().map(<[u8]>::to_vec)
}

/// Whether an ELF image carries DWARF debug info (a stripped binary does not).
pub fn has_dwarf(data: &[u8]) -> bool {
    object::File::parse(data).is_ok_and(|o| {
        [".debug_info", ".zdebug_info"].iter().any(|n| o.section_by_name(n).is_some_and(|s| s.size() > 0))
    })
}

/// The names of the functions an ELF image defines (.symtab and .dynsym);
/// empty if it is not readable. It reads them with the same rule as the
/// embedded symbol tables, so the recorder probes what the analyzer names.
pub fn function_names(data: &[u8]) -> std::collections::HashSet<String> {
    match object::File::parse(data) {
        Ok(obj) => function_symbols(&obj).into_iter().map(|s| s.name).collect(),
        Err(_) => std::collections::HashSet::new(),
    }
}

/// Extracts symbolization material from an ELF image.
pub fn extract_blob(data: &[u8], path: &str, build_id: &[u8], mode: EmbedMode) -> SymbolBlob {
    let mut blob = SymbolBlob { build_id: build_id.to_vec(), path: path.to_owned(), ..Default::default() };
    let Ok(obj) = object::File::parse(data) else {
        log::warn!("{path}: not a readable ELF file; its frames will show as offsets");
        return blob;
    };
    blob.segments = segments(&obj);
    blob.entry = obj.entry();
    match mode {
        EmbedMode::None => {}
        EmbedMode::Full => {
            blob.content = BlobContent::FullElf;
            blob.elf = data.to_vec();
            blob.sections = unwind_sections(&obj);
        }
        EmbedMode::Symbols => {
            blob.symbols = function_symbols(&obj);
            blob.sections = unwind_sections(&obj);
        }
    }
    blob
}

/// Sections holding call-frame information, which the analyzer unwinds
/// kept stacks with (see `unwind.rs`); `.zdebug_frame` is stored as
/// `.debug_frame`.
pub const UNWIND_SECTIONS: [&str; 3] = [".eh_frame", ".eh_frame_hdr", ".debug_frame"];

/// The call-frame sections of an object, decompressed, by their names in
/// [`UNWIND_SECTIONS`].
pub(crate) fn unwind_sections(obj: &object::File<'_>) -> Vec<Section> {
    obj.sections()
        .filter(|s| s.kind() != SectionKind::UninitializedData)
        .filter_map(|s| {
            let name = match s.name().ok()? {
                ".zdebug_frame" => ".debug_frame",
                n if UNWIND_SECTIONS.contains(&n) => n,
                _ => return None,
            };
            Some(Section {
                name: name.to_owned(),
                addr: s.address(),
                data: s.uncompressed_data().ok()?.into_owned(),
            })
        })
        .collect()
}

/// The PT_LOAD segments that map file bytes.
pub(crate) fn segments(obj: &object::File<'_>) -> Vec<Segment> {
    obj.segments()
        .filter_map(|seg| {
            let (file_offset, file_size) = seg.file_range();
            let executable = matches!(seg.flags(), object::SegmentFlags::Elf { p_flags } if p_flags & 1 != 0);
            (file_size > 0).then_some(Segment { file_offset, vaddr: seg.address(), file_size, executable })
        })
        .collect()
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
    // PLT stubs have no symbols; without these entries they would be named
    // after whatever sized-0 symbol precedes them (often `_init`).
    for section in obj.sections() {
        if let Ok(name @ (".plt" | ".plt.sec" | ".plt.got")) = section.name() {
            by_addr.insert((section.address(), format!("[{}]", &name[1..])), section.size());
        }
    }
    by_addr.into_iter().map(|((addr, name), size)| Symbol { addr, size, name }).collect()
}
