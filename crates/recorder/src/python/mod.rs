//! Python processes: finding the interpreter in a process's mappings, telling
//! the BPF frame walk (`bpf/python.h`) where to look, and reading each code
//! object the walk reports once, so the capture names Python functions with
//! nothing needed from the host later.

use std::collections::{BTreeSet, HashMap};

use object::{Object, ObjectSegment, ObjectSymbol};
use profcap_format::python::{PyCode, PyFrame, MAX_LINE_TABLE_BYTES, MAX_NAME_BYTES};

use crate::probes::{PyLayout, PyStack, PyStatus, PY_ABSENT};
use crate::procfs::MapsEntry;

mod layouts;
pub(crate) mod memory;

use layouts::{Layout, BYTES_SIZE, BYTES_SVAL, OB_TYPE, UNICODE_LENGTH, UNICODE_STATE};
use memory::Memory;

/// One Python interpreter found in a process.
#[derive(Debug, Clone, Copy)]
struct Interpreter {
    layout: Layout,
    /// Address of `PyCode_Type`: a frame's code object must have this type.
    code_type: u64,
}

/// What the Python walks gave, for the capture's loss records and `info`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PyCounts {
    /// Events (samples, blocks, allocations) with at least one Python frame.
    pub with_frames: u64,
    /// Samples of Python threads whose thread state was not found.
    pub no_thread: u64,
    /// Walks that ended at a failed read of the interpreter's memory.
    pub read_failed: u64,
    /// Walks cut at the frame limit.
    pub depth: u64,
    /// Frames whose code object could not be read (freed, or not one).
    pub unreadable_code: u64,
    /// Distinct code objects read.
    pub codes: u64,
}

/// The Python side of a recording.
#[derive(Debug, Default)]
pub struct Python {
    procs: HashMap<u32, Interpreter>,
    /// Processes looked at and found not Python (or unsupported), by
    /// (pid, object path), so each mapping is examined once.
    examined: BTreeSet<(u32, String)>,
    /// Capture code id of each (pid, code object address, tag); 0 = unreadable.
    codes: HashMap<(u32, u64, u64), u32>,
    /// Code objects read, by capture id, for every file that names them.
    known: HashMap<u32, PyCode>,
    /// Codes written into the current file.
    written: std::collections::HashSet<u32>,
    /// Code objects to write before the stacks that name them.
    new_codes: Vec<PyCode>,
    next_code: u32,
    /// `py_procs` updates for the next pass (`None`: remove).
    to_kernel: Vec<(u32, Option<PyLayout>)>,
    /// What each file offers the walk, by device and inode: read once per
    /// file, the first time it is mapped or before a started command runs.
    objects: HashMap<(u32, u32, u64), Option<Symbols>>,
    /// Unsupported interpreters already warned about.
    warned: BTreeSet<String>,
    pub counts: PyCounts,
}

/// An interpreter's symbols in its file (virtual addresses of the ELF file)
/// and the load segments that place them.
#[derive(Debug, Clone)]
struct Symbols {
    runtime: u64,
    code_type: u64,
    version: Option<(u8, u8)>,
    /// (file offset, file size, virtual address) of each load segment.
    segments: Vec<(u64, u64, u64)>,
}

impl Symbols {
    fn read(data: &[u8]) -> Option<Symbols> {
        let elf = object::File::parse(data).ok()?;
        Some(Symbols {
            runtime: symbol_address(&elf, "_PyRuntime")?,
            code_type: symbol_address(&elf, "PyCode_Type")?,
            version: version_symbol(&elf, data),
            segments: elf
                .segments()
                .map(|s| {
                    let (offset, size) = s.file_range();
                    (offset, size, s.address())
                })
                .collect(),
        })
    }

    /// Where the object is loaded: the address of virtual address 0, from a
    /// mapping of it (its start and file offset).
    fn load_bias(&self, entry: &MapsEntry) -> Option<u64> {
        self.segments.iter().find_map(|&(offset, size, address)| {
            (offset <= entry.offset && entry.offset < offset + size)
                .then(|| entry.start.wrapping_sub(address.wrapping_add(entry.offset - offset)))
        })
    }
}

/// Whether a mapped file may hold a Python interpreter (`python3.12`,
/// `libpython3.12.so.1.0`, Debian's `python3.11`).
fn looks_like_python(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.starts_with("python") || name.starts_with("libpython")
}

/// The `3.N` in a file name like `python3.12` or `libpython3.12.so.1.0`.
fn version_from_name(path: &str) -> Option<(u8, u8)> {
    let name = path.rsplit('/').next()?;
    let rest = &name[name.find("python")? + "python".len()..];
    let (major, rest) = rest.split_once('.')?;
    let minor: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((major.parse().ok()?, minor.parse().ok()?))
}

fn symbol_address(elf: &object::File<'_>, name: &str) -> Option<u64> {
    elf.symbols().chain(elf.dynamic_symbols()).find(|s| s.name() == Ok(name)).map(|s| s.address())
}

/// `Py_Version` (3.11+): the version the interpreter says it is.
fn version_symbol(elf: &object::File<'_>, data: &[u8]) -> Option<(u8, u8)> {
    let vaddr = symbol_address(elf, "Py_Version")?;
    let seg = elf.segments().find(|s| s.address() <= vaddr && vaddr < s.address() + s.size())?;
    let at = usize::try_from(seg.file_range().0 + (vaddr - seg.address())).ok()?;
    let v = u32::from_ne_bytes(data.get(at..at + 4)?.try_into().ok()?);
    Some(((v >> 24) as u8, (v >> 16) as u8))
}

impl Python {
    /// Looks at a new mapping of `pid`: if it is an interpreter profrec
    /// knows, the process is described to the walk at the next pass.
    pub fn consider_mapping(&mut self, pid: u32, entry: &MapsEntry, data: Option<&[u8]>) {
        if self.procs.contains_key(&pid) || !looks_like_python(&entry.path) {
            return;
        }
        let Some(data) = data else { return };
        if !self.examined.insert((pid, entry.path.clone())) {
            return;
        }
        let key = (entry.dev_major, entry.dev_minor, entry.inode);
        let Some(syms) = self.objects.entry(key).or_insert_with(|| Symbols::read(data)).clone() else {
            return;
        };
        let Some(bias) = syms.load_bias(entry) else { return };
        let Some(version) = syms.version.or_else(|| version_from_name(&entry.path)) else {
            return;
        };
        let (runtime, code_type) = (bias.wrapping_add(syms.runtime), syms.code_type);
        let layout = match version {
            (3, 13) => self.read_debug_offsets(pid, runtime),
            v => layouts::from_table(v).ok_or_else(|| format!("CPython {}.{} is not supported", v.0, v.1)),
        };
        match layout {
            Ok(layout) => {
                let walk = layout.walk(runtime);
                log::debug!("pid {pid}: CPython {}.{} in {}", version.0, version.1, entry.path);
                self.procs.insert(pid, Interpreter { layout, code_type: bias.wrapping_add(code_type) });
                self.to_kernel.push((pid, Some(walk)));
            }
            Err(why) => {
                if self.warned.insert(format!("{}.{} {}", version.0, version.1, entry.path)) {
                    log::warn!(
                        "pid {pid}: {why} ({}): its stacks will have native frames only \
                         (Python frames need CPython 3.8 to 3.13)",
                        entry.path
                    );
                }
            }
        }
    }

    /// Reads the interpreter symbols of files a command about to start will
    /// map, so that its interpreter is known at once when they appear (the
    /// first allocations of a Python program come within milliseconds).
    pub fn examine_ahead(&mut self, files: &[std::path::PathBuf]) {
        use std::os::unix::fs::MetadataExt;
        for path in files.iter().filter(|p| looks_like_python(&p.to_string_lossy())) {
            let Ok(meta) = std::fs::metadata(path) else { continue };
            let key = (libc::major(meta.dev()), libc::minor(meta.dev()), meta.ino());
            if self.objects.contains_key(&key) {
                continue;
            }
            let Ok(file) = crate::elf::MappedFile::open(path) else { continue };
            self.objects.insert(key, Symbols::read(file.bytes()));
        }
    }

    fn read_debug_offsets(&self, pid: u32, runtime: u64) -> Result<Layout, String> {
        let mut raw = vec![0u8; layouts::DEBUG_OFFSETS_BYTES];
        if !Memory::new(pid).read(runtime, &mut raw) {
            return Err("cannot read _Py_DebugOffsets".into());
        }
        layouts::from_debug_offsets(&raw)
    }

    /// The process exited or exec'd: its interpreter and code objects go.
    pub fn forget(&mut self, pid: u32) {
        self.examined.retain(|(p, _)| *p != pid);
        let known = &mut self.known;
        self.codes.retain(|(p, _, _), id| {
            if *p == pid {
                known.remove(id);
            }
            *p != pid
        });
        if self.procs.remove(&pid).is_some() {
            self.to_kernel.push((pid, None));
        }
    }

    /// The `py_procs` updates due, to apply to the kernel's table.
    pub fn take_kernel_updates(&mut self) -> Vec<(u32, Option<PyLayout>)> {
        std::mem::take(&mut self.to_kernel)
    }

    /// Code objects not yet in the current file that frames since the last
    /// call name, to write before the stacks that name them.
    pub fn take_new_codes(&mut self) -> Vec<PyCode> {
        std::mem::take(&mut self.new_codes)
    }

    /// A new capture file starts (rotation): each code object is written
    /// again where a stack of the new file names it.
    pub fn new_file(&mut self) {
        self.written.clear();
        self.new_codes.clear();
    }

    /// The capture form of a sample's Python frames (leaf first), reading
    /// each code object not seen before.
    pub fn frames(&mut self, pid: u32, stack: &PyStack) -> Vec<u64> {
        match stack.status {
            PyStatus::NoThread => self.counts.no_thread += 1,
            PyStatus::ReadFailed => self.counts.read_failed += 1,
            PyStatus::Depth => self.counts.depth += 1,
            _ => {}
        }
        let Some(interp) = self.procs.get(&pid).copied() else { return Vec::new() };
        if stack.frames.is_empty() {
            return Vec::new();
        }
        self.counts.with_frames += 1;
        let memory = Memory::new(pid);
        let mut out = Vec::with_capacity(stack.frames.len());
        for f in &stack.frames {
            let id = match self.codes.get(&(pid, f.code, f.tag)) {
                Some(&id) => id,
                None => {
                    let id = match read_code(&memory, &interp, f.code, f.tag) {
                        Some(mut code) => {
                            self.next_code += 1;
                            code.id = self.next_code;
                            self.counts.codes += 1;
                            log::trace!(
                                "pid {pid}: code {:#x} tag {:#x}: {} {} {}",
                                f.code,
                                f.tag,
                                code.name,
                                code.qualname,
                                code.filename
                            );
                            self.known.insert(self.next_code, code);
                            self.next_code
                        }
                        None => 0,
                    };
                    self.codes.insert((pid, f.code, f.tag), id);
                    id
                }
            };
            if id == 0 {
                self.counts.unreadable_code += 1;
            } else if self.written.insert(id) {
                if let Some(code) = self.known.get(&id) {
                    self.new_codes.push(code.clone());
                }
            }
            let offset = byte_offset(&interp.layout, f.instr);
            out.push(PyFrame { code: id, offset, entry: f.entry }.encode());
        }
        out
    }
}

/// The bytecode byte offset of a frame's raw instruction field.
fn byte_offset(layout: &Layout, instr: u32) -> u32 {
    if layout.walk(0).instr_is_pointer != 0 {
        // Pointer minus code object: subtract where the bytecode starts.
        let adaptive = u32::from(layout.code.code_adaptive);
        if (instr as i32) < 0 {
            return 0;
        }
        instr.saturating_sub(adaptive)
    } else {
        // f_lasti: -1 before the first instruction; code units from 3.10.
        let lasti = (instr as i32).max(0) as u32;
        if layout.version >= (3, 10) {
            lasti.saturating_mul(2)
        } else {
            lasti
        }
    }
}

/// Reads one code object; `None` if it cannot be read, is not a code
/// object, or is no longer the one the walk saw (`tag`: freed, and another
/// made at its address since).
fn read_code(memory: &Memory, interp: &Interpreter, addr: u64, tag: u64) -> Option<PyCode> {
    let c = &interp.layout.code;
    // Alive and a code object: a frame just popped can still point at its
    // code after that was freed (the allocator then writes its free-list
    // link over the reference count, and glibc its key over the type).
    let alive = || {
        let refs = memory.u64(addr)?;
        Some(
            (1..=u64::from(u32::MAX)).contains(&refs)
                && memory.u64(addr.checked_add(OB_TYPE)?)? == interp.code_type,
        )
    };
    if !alive()? {
        return None;
    }
    let at = |off: u16| addr.checked_add(u64::from(off));
    let tag_now = || {
        let name = memory.u64(at(c.name)?)?;
        Some(memory.u64(name.checked_add(layouts::UNICODE_HASH)?)? ^ memory.u64(at(c.tag)?)?)
    };
    if tag_now()? != tag {
        return None;
    }
    let qualname = if c.qualname == PY_ABSENT {
        String::new()
    } else {
        read_str(memory, c, memory.u64(at(c.qualname)?)?)?
    };
    let code = PyCode {
        id: 0,
        name: read_str(memory, c, memory.u64(at(c.name)?)?)?,
        qualname,
        filename: read_str(memory, c, memory.u64(at(c.filename)?)?)?,
        first_line: u32::try_from(memory.u32(at(c.firstlineno)?)? as i32).unwrap_or(0),
        line_format: c.line_format,
        line_table: read_bytes(memory, memory.u64(at(c.linetable)?)?).unwrap_or_default(),
    };
    // The process runs on while we read: if the object was freed and
    // another made in its place meanwhile, the fields may be of both.
    (tag_now()? == tag && alive()?).then_some(code)
}

/// A compact `str` object's text (at most [`MAX_NAME_BYTES`] characters).
fn read_str(memory: &Memory, c: &layouts::CodeLayout, obj: u64) -> Option<String> {
    let len = memory.u64(obj.checked_add(UNICODE_LENGTH)?)?;
    let state = memory.u32(obj.checked_add(UNICODE_STATE)?)?;
    let (kind, compact, ascii) = ((state >> 2) & 7, state >> 5 & 1 == 1, state >> 6 & 1 == 1);
    if !compact || !matches!(kind, 1 | 2 | 4) {
        return None;
    }
    let n = usize::try_from(len).ok()?.min(MAX_NAME_BYTES);
    let data = obj.checked_add(u64::from(if ascii { c.ascii_size } else { c.compact_size }))?;
    let mut raw = vec![0u8; n * kind as usize];
    if !memory.read(data, &mut raw) {
        return None;
    }
    Some(match kind {
        1 => raw.iter().map(|&b| char::from(b)).collect(),
        2 => char::decode_utf16(raw.chunks_exact(2).map(|b| u16::from_ne_bytes([b[0], b[1]])))
            .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect(),
        _ => raw
            .chunks_exact(4)
            .map(|b| {
                char::from_u32(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                    .unwrap_or(char::REPLACEMENT_CHARACTER)
            })
            .collect(),
    })
}

/// A `bytes` object's contents (at most [`MAX_LINE_TABLE_BYTES`]).
fn read_bytes(memory: &Memory, obj: u64) -> Option<Vec<u8>> {
    let len = usize::try_from(memory.u64(obj.checked_add(BYTES_SIZE)?)?).ok()?;
    if len > MAX_LINE_TABLE_BYTES {
        return None;
    }
    let mut out = vec![0u8; len];
    memory.read(obj.checked_add(BYTES_SVAL)?, &mut out).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpreter_files_are_recognised_by_name() {
        assert_eq!(version_from_name("/usr/bin/python3.11"), Some((3, 11)));
        assert_eq!(version_from_name("/x/lib/libpython3.12.so.1.0"), Some((3, 12)));
        assert_eq!(version_from_name("/usr/bin/python3"), None);
        assert!(looks_like_python("/root/.pyenv/versions/3.9.18/lib/libpython3.9.so.1.0"));
        assert!(!looks_like_python("/usr/lib/libc.so.6"));
    }

    #[test]
    fn instruction_fields_become_byte_offsets() {
        let l38 = layouts::from_table((3, 8)).unwrap();
        let l310 = layouts::from_table((3, 10)).unwrap();
        let l312 = layouts::from_table((3, 12)).unwrap();
        assert_eq!(byte_offset(&l38, 10), 10);
        assert_eq!(byte_offset(&l38, -1i32 as u32), 0, "not started yet");
        assert_eq!(byte_offset(&l310, 5), 10, "3.10 counts code units");
        assert_eq!(byte_offset(&l312, 192 + 14), 14);
        assert_eq!(byte_offset(&l312, 190), 0, "before the first instruction");
    }
}
