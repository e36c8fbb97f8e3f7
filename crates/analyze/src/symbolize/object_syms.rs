//! Symbol sources of one object.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use profcap_format::{elf, BlobContent, Mapping, Segment, Symbol};

use super::{demangle, hex, Frame, FrameKind, SymbolizeOptions};
use crate::capture::{blob_key, Material};

/// What is known to symbolize one object.
pub(super) struct ObjectSyms {
    /// Sorted by address.
    symbols: Vec<Symbol>,
    segments: Vec<Segment>,
    dwarf: Option<addr2line::Loader>,
    /// Keeps an extracted embedded ELF alive while `dwarf` reads it.
    _temp: Option<tempfile::NamedTempFile>,
}

impl std::fmt::Debug for ObjectSyms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectSyms")
            .field("symbols", &self.symbols.len())
            .field("dwarf", &self.dwarf.is_some())
            .finish()
    }
}

/// Symbols and segments of a local ELF file, extracted exactly as the
/// recorder extracts them for embedding.
fn local_tables(data: &[u8]) -> (Vec<Symbol>, Vec<Segment>) {
    let blob = elf::extract_blob(data, "", &[], elf::EmbedMode::Symbols);
    (blob.symbols, blob.segments)
}

/// Where Debian's -dbg and -dbgsym packages put detached debug files; used
/// like a `--debug-dir` unless local files are turned off.
const SYSTEM_DEBUG_DIR: &str = "/usr/lib/debug";

/// Candidate files for an object, best first.
fn candidates(mapping: &Mapping, opts: &SymbolizeOptions) -> Vec<PathBuf> {
    let rel = mapping.path.trim_start_matches('/');
    let mut out = Vec::new();
    let id = hex(&mapping.build_id);
    let system_debug = opts.local_files.then(|| PathBuf::from(SYSTEM_DEBUG_DIR));
    for dir in opts.debug_dirs.iter().chain(system_debug.as_ref()) {
        if id.len() > 2 {
            out.push(dir.join(".build-id").join(&id[..2]).join(format!("{}.debug", &id[2..])));
        }
        out.push(dir.join(rel));
    }
    if let Some(root) = &opts.sysroot {
        out.push(root.join(rel));
    }
    if opts.local_files && mapping.path.starts_with('/') {
        out.push(PathBuf::from(&mapping.path));
    }
    out
}

/// Maps `path` if it exists and its build id matches the recorded one.
fn matching_file(path: &Path, build_id: &[u8]) -> Option<Vec<u8>> {
    let data = std::fs::read(path).ok()?;
    let id = elf::build_id(&data).unwrap_or_default();
    if id != build_id {
        log::debug!(
            "{}: build id {} differs from recorded {}; not used",
            path.display(),
            hex(&id),
            hex(build_id)
        );
        return None;
    }
    Some(data)
}

fn loader(path: &Path) -> Option<addr2line::Loader> {
    addr2line::Loader::new(path).map_err(|e| log::debug!("{}: no DWARF: {e}", path.display())).ok()
}

impl ObjectSyms {
    /// Gathers the sources for the object of `mapping`; `None` if there is none.
    pub(super) fn load(
        material: &Material,
        mapping: &Mapping,
        opts: &SymbolizeOptions,
    ) -> Option<ObjectSyms> {
        let blob = material.blobs.get(&blob_key(&mapping.build_id, &mapping.path));
        let mut syms = ObjectSyms { symbols: Vec::new(), segments: Vec::new(), dwarf: None, _temp: None };
        if let Some(b) = blob {
            syms.symbols = b.symbols.clone();
            syms.segments = b.segments.clone();
            if b.content == BlobContent::FullElf && !b.elf.is_empty() {
                if let Ok(mut tmp) = tempfile::NamedTempFile::new() {
                    if std::io::Write::write_all(&mut tmp, &b.elf).is_ok() {
                        syms.dwarf = loader(tmp.path());
                        if syms.symbols.is_empty() {
                            syms.symbols = local_tables(&b.elf).0;
                        }
                        syms._temp = Some(tmp);
                    }
                }
            }
        }
        if syms.dwarf.is_none() && !mapping.build_id.is_empty() {
            for path in candidates(mapping, opts) {
                let Some(data) = matching_file(&path, &mapping.build_id) else {
                    continue;
                };
                let (symbols, segments) = local_tables(&data);
                if syms.symbols.is_empty() {
                    syms.symbols = symbols;
                }
                if syms.segments.is_empty() {
                    syms.segments = segments;
                }
                syms.dwarf = loader(&path);
                break;
            }
        }
        syms.symbols.sort_by_key(|s| s.addr);
        let usable = !syms.symbols.is_empty() || syms.dwarf.is_some();
        usable.then_some(syms)
    }

    /// Object-relative virtual address of a file offset.
    fn vaddr(&self, file_offset: u64) -> u64 {
        self.segments
            .iter()
            .find(|s| s.file_offset <= file_offset && file_offset < s.file_offset + s.file_size)
            .map_or(file_offset, |s| file_offset - s.file_offset + s.vaddr)
    }

    fn symbol(&self, probe: u64) -> Option<&Symbol> {
        let i = self.symbols.partition_point(|s| s.addr <= probe);
        self.symbols.get(i.checked_sub(1)?).filter(|s| s.size == 0 || probe < s.addr + s.size)
    }

    /// Frames for the code at `file_offset`, innermost inlined first; empty
    /// when nothing names it.
    pub(super) fn frames(
        &self,
        file_offset: u64,
        leaf: bool,
        module: &Arc<str>,
        opts: &SymbolizeOptions,
    ) -> Vec<Frame> {
        let vaddr = self.vaddr(file_offset);
        let probe = if leaf { vaddr } else { vaddr.saturating_sub(1) };
        let mut out = Vec::new();
        if let Some(dwarf) = &self.dwarf {
            if let Ok(mut iter) = dwarf.find_frames(probe) {
                while let Ok(Some(f)) = iter.next() {
                    let Some(func) = f.function.as_ref() else {
                        continue;
                    };
                    let Ok(raw) = func.raw_name() else { continue };
                    let mut name = demangle(&raw);
                    if opts.lines {
                        if let Some(loc) = &f.location {
                            if let (Some(file), Some(line)) = (loc.file, loc.line) {
                                name = format!("{name} ({}:{line})", file.rsplit('/').next().unwrap_or(file));
                            }
                        }
                    }
                    out.push(Frame {
                        name: Arc::from(name),
                        module: Arc::clone(module),
                        kind: FrameKind::Inlined,
                    });
                }
            }
        }
        if out.is_empty() {
            if let Some(sym) = self.symbol(probe) {
                out.push(Frame {
                    name: Arc::from(demangle(&sym.name)),
                    module: Arc::clone(module),
                    kind: FrameKind::User,
                });
            }
        }
        if let Some(last) = out.last_mut() {
            last.kind = FrameKind::User;
        }
        if !opts.inlines && out.len() > 1 {
            out.drain(..out.len() - 1);
        }
        out
    }
}
