//! Symbol sources of one object.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use profcap_format::unwind::UnwindInfo;
use profcap_format::{elf, rules, BlobContent, Mapping, Segment, Symbol};

use super::{demangle, hex, Frame, FrameKind, SymbolizeOptions};
use crate::capture::{blob_key, Material};

/// What is known to symbolize one object.
/// A function at an address, and where in its source the address is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SourceLine {
    pub function: Arc<str>,
    pub file: Option<Arc<str>>,
    pub line: u32,
}

pub(super) struct ObjectSyms {
    /// Sorted by address.
    symbols: Vec<Symbol>,
    segments: Vec<Segment>,
    dwarf: Option<addr2line::Loader>,
    /// Unwind tables: where no symbol names an address, the function start
    /// its FDE gives groups a stripped function's addresses into one frame.
    unwind: Option<profcap_format::unwind::UnwindInfo>,
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

/// A path from a capture as a relative path of plain components, or `None`
/// if it has any `..` (or is empty): joined to `--sysroot` or a debug
/// directory it must stay inside it.
fn contained(path: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in Path::new(path).components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// Candidate files for an object, best first. Under `--sysroot` and the
/// debug directories only a plain path is looked for (no `..`); the local
/// file itself, where allowed, is the path as recorded.
fn candidates(mapping: &Mapping, opts: &SymbolizeOptions) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let id = hex(&mapping.build_id);
    let system_debug = opts.local_files.then(|| PathBuf::from(SYSTEM_DEBUG_DIR));
    let rel = contained(&mapping.path);
    if rel.is_none() {
        log::debug!("{:?}: not a plain path; not looked for under --sysroot or debug dirs", mapping.path);
    }
    for dir in opts.debug_dirs.iter().chain(system_debug.as_ref()) {
        if id.len() > 2 {
            out.push(dir.join(".build-id").join(&id[..2]).join(format!("{}.debug", &id[2..])));
        }
        out.extend(rel.as_ref().map(|r| dir.join(r)));
    }
    if let (Some(root), Some(rel)) = (&opts.sysroot, &rel) {
        out.push(root.join(rel));
    }
    if opts.local_files && mapping.path.starts_with('/') {
        out.push(PathBuf::from(&mapping.path));
    }
    out
}

/// Local files larger than this are not ELF objects worth reading.
const MAX_LOCAL_FILE: u64 = 4 << 30;

/// Opens `path` if it is a regular file (opened without blocking, so a FIFO
/// named in a capture cannot hang us, and checked on the open descriptor)
/// and its build id, read from its ELF notes alone, is the recorded one.
fn matching_file(path: &Path, build_id: &[u8]) -> Option<memmap2::Mmap> {
    use std::os::unix::fs::OpenOptionsExt;
    const O_NONBLOCK: i32 = 0o4000;
    const O_NOCTTY: i32 = 0o400;
    let file = std::fs::OpenOptions::new().read(true).custom_flags(O_NONBLOCK | O_NOCTTY).open(path).ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() || meta.len() == 0 || meta.len() > MAX_LOCAL_FILE {
        log::debug!("{}: not a regular file of a plausible size; not used", path.display());
        return None;
    }
    // SAFETY: a read-only private map of a regular file; if someone truncates
    // it meanwhile we may read zeros or fault, the risk every symbolizer that
    // maps binaries takes.
    let map = unsafe { memmap2::Mmap::map(&file) }.ok()?;
    let id = elf::build_id(&map).unwrap_or_default();
    if id != build_id {
        log::debug!(
            "{}: build id {} differs from recorded {}; not used",
            path.display(),
            hex(&id),
            hex(build_id)
        );
        return None;
    }
    Some(map)
}

/// The local files of `mapping`'s object (matching build id), best first.
pub(crate) fn local_files<'a>(
    mapping: &'a Mapping,
    opts: &SymbolizeOptions,
) -> impl Iterator<Item = memmap2::Mmap> + 'a {
    candidates(mapping, opts).into_iter().filter_map(|p| matching_file(&p, &mapping.build_id))
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
        let mut syms =
            ObjectSyms { symbols: Vec::new(), segments: Vec::new(), dwarf: None, unwind: None, _temp: None };
        if let Some(b) = blob {
            syms.symbols = b.symbols.clone();
            syms.segments = b.segments.clone();
            // An embedded image without DWARF (a stripped binary) must not
            // stand in the way of the debug files found below.
            if b.content == BlobContent::FullElf && syms.symbols.is_empty() {
                syms.symbols = local_tables(&b.elf).0;
            }
            if b.content == BlobContent::FullElf && elf::has_dwarf(&b.elf) {
                if let Ok(mut tmp) = tempfile::NamedTempFile::new() {
                    if std::io::Write::write_all(&mut tmp, &b.elf).is_ok() {
                        syms.dwarf = loader(tmp.path());
                        syms._temp = Some(tmp);
                    }
                }
            }
        }
        if syms.dwarf.is_none() && !mapping.build_id.is_empty() {
            for path in candidates(mapping, opts) {
                let Some(local) = matching_file(&path, &mapping.build_id) else {
                    continue;
                };
                let (symbols, segments) = local_tables(&local);
                // A debug file's full table names what a stripped object's
                // embedded (dynamic) symbols cannot.
                if symbols.len() > syms.symbols.len() {
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
        syms.unwind = blob.map(UnwindInfo::from_blob).filter(UnwindInfo::has_function_ranges);
        let usable = !syms.symbols.is_empty() || syms.dwarf.is_some() || syms.unwind.is_some();
        usable.then_some(syms)
    }

    /// Whether anything names functions (symbols or DWARF), not just
    /// unwind tables.
    pub(super) fn has_names(&self) -> bool {
        !self.symbols.is_empty() || self.dwarf.is_some()
    }

    /// The file offset of the start of the function at `file_offset`, from
    /// the unwind tables (for objects without symbols).
    pub(super) fn function_start(&self, file_offset: u64, leaf: bool) -> Option<u64> {
        let vaddr = self.vaddr(file_offset);
        let probe = if leaf { vaddr } else { vaddr.saturating_sub(1) };
        let start = self.unwind.as_ref()?.function_start(probe)?;
        rules::vaddr_to_file_offset(&self.segments, start)
    }

    /// Object-relative virtual address of a file offset.
    fn vaddr(&self, file_offset: u64) -> u64 {
        rules::file_offset_to_vaddr(&self.segments, file_offset).unwrap_or(file_offset)
    }

    fn symbol(&self, probe: u64) -> Option<&Symbol> {
        rules::pick_symbol(&self.symbols, probe).map(|i| &self.symbols[i])
    }

    /// The functions at an address with their source file and line, innermost
    /// (inlined) first: from DWARF where there is some, else the symbol with
    /// no file (line 0).
    pub(super) fn source_lines(&self, file_offset: u64, leaf: bool) -> Vec<SourceLine> {
        let vaddr = self.vaddr(file_offset);
        let probe = if leaf { vaddr } else { vaddr.saturating_sub(1) };
        let mut out = Vec::new();
        if let Some(dwarf) = &self.dwarf {
            if let Ok(mut iter) = dwarf.find_frames(probe) {
                while let Ok(Some(f)) = iter.next() {
                    let Some(Ok(raw)) = f.function.as_ref().map(|func| func.raw_name()) else { continue };
                    let (file, line) = f
                        .location
                        .as_ref()
                        .map_or((None, 0), |l| (l.file.map(Arc::from), l.line.unwrap_or(0)));
                    out.push(SourceLine { function: Arc::from(demangle(&raw)), file, line });
                }
            }
        }
        if out.is_empty() {
            if let Some(sym) = self.symbol(probe) {
                out.push(SourceLine { function: Arc::from(demangle(&sym.name)), file: None, line: 0 });
            }
        }
        out
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
        let mut out: Vec<Frame> = self
            .source_lines(file_offset, leaf)
            .into_iter()
            .map(|l| {
                let name = match &l.file {
                    Some(file) if opts.lines && l.line > 0 => Arc::from(format!(
                        "{} ({}:{})",
                        l.function,
                        file.rsplit('/').next().unwrap_or(file),
                        l.line
                    )),
                    _ => l.function,
                };
                Frame { name, module: Arc::clone(module), kind: FrameKind::Inlined }
            })
            .collect();
        if let Some(last) = out.last_mut() {
            last.kind = FrameKind::User;
        }
        if !opts.inlines && out.len() > 1 {
            out.drain(..out.len() - 1);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(path: &str) -> Mapping {
        Mapping { path: path.into(), build_id: vec![0xab; 20], ..Mapping::default() }
    }

    #[test]
    fn paths_from_a_capture_never_leave_the_sysroot_or_debug_dirs() {
        let opts = SymbolizeOptions {
            local_files: false,
            sysroot: Some(PathBuf::from("/srv/root")),
            debug_dirs: vec![PathBuf::from("/srv/debug")],
            ..SymbolizeOptions::default()
        };
        for evil in ["/../../etc/shadow", "/usr/lib/../../../etc/shadow", "..", ""] {
            let c = candidates(&mapping(evil), &opts);
            // Only the build-id path under the debug dir (hex digits) is left.
            assert_eq!(c.len(), 1, "{evil}: {c:?}");
            assert!(c[0].starts_with("/srv/debug/.build-id"), "{evil}: {c:?}");
        }
        let ok = candidates(&mapping("/usr/lib/libx.so"), &opts);
        assert!(ok.iter().all(|p| p.starts_with("/srv/root") || p.starts_with("/srv/debug")), "{ok:?}");
        assert!(ok.contains(&PathBuf::from("/srv/root/usr/lib/libx.so")));
    }

    #[test]
    fn devices_and_fifos_named_in_a_capture_are_not_read() {
        let started = std::time::Instant::now();
        assert!(matching_file(Path::new("/dev/zero"), &[1, 2, 3]).is_none());
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        assert!(matching_file(&fifo, &[1, 2, 3]).is_none());
        assert!(matching_file(dir.path(), &[1, 2, 3]).is_none(), "a directory");
        // Opening a FIFO with no writer would block for ever without O_NONBLOCK.
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn a_local_file_is_used_only_with_the_recorded_build_id() {
        let exe = std::env::current_exe().unwrap();
        let data = std::fs::read(&exe).unwrap();
        let id = elf::build_id(&data).unwrap_or_default();
        if id.is_empty() {
            return; // test binaries are linked with a build id on Debian; nothing to compare otherwise
        }
        assert!(matching_file(&exe, &id).is_some());
        assert!(matching_file(&exe, &[0; 20]).is_none());
    }
}
