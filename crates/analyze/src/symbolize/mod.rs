//! Offline symbolization of captured addresses.
//!
//! For each object (by build id) the sources are, in order: the capture's
//! embedded full ELF, a file found in `--debug-dir` (build-id layout or plain
//! path), under `--sysroot`, or at its recorded path, each used only when its
//! build id matches the recorded one; DWARF from those gives inlined frames
//! and file:line. The capture's embedded symbol table names what DWARF does
//! not. Anything unresolved is shown as `module+0xOFFSET`, never dropped.

mod demangle;
pub(crate) mod object_syms;
mod python;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

pub use demangle::demangle;
use object_syms::ObjectSyms;
pub use object_syms::SourceLine;
pub use python::PythonFrames;

use crate::capture::{blob_key, Material};
use profcap_format::Mapping;

/// Where to look for binaries and how much to resolve.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SymbolizeOptions {
    /// Directories with debug files: `DIR/.build-id/ab/cdef….debug` or
    /// `DIR/<recorded path>`. Default: none.
    pub debug_dirs: Vec<PathBuf>,
    /// A root under which recorded paths are looked up. Default: none.
    pub sysroot: Option<PathBuf>,
    /// Also try the recorded path on this machine (only with a matching build
    /// id). Default: true.
    pub local_files: bool,
    /// Append `file:line` to frame names where DWARF knows it. Default: false.
    pub lines: bool,
    /// Show inlined functions as frames of their own. Default: true.
    pub inlines: bool,
    /// Where Python frames go. Default: merged into the native stack.
    pub python: PythonFrames,
}

impl Default for SymbolizeOptions {
    fn default() -> Self {
        SymbolizeOptions {
            debug_dirs: Vec::new(),
            sysroot: None,
            local_files: true,
            lines: false,
            inlines: true,
            python: PythonFrames::Merged,
        }
    }
}

/// What kind of code a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FrameKind {
    User,
    /// A function inlined into the frame below it.
    Inlined,
    Kernel,
    /// Code generated at run time, named by the process's perf map.
    Jit,
    /// A Python function (from the interpreter's frames, or a `-X perf`
    /// trampoline in the perf map).
    Python,
}

/// One symbolized frame.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Frame {
    pub name: Arc<str>,
    /// File name of the object (`libc.so.6`, `[kernel]`).
    pub module: Arc<str>,
    pub kind: FrameKind,
}

/// Resolves addresses to frames, caching per object and address.
#[derive(Debug)]
pub struct Symbolizer<'a> {
    material: &'a Material,
    opts: SymbolizeOptions,
    objects: HashMap<Vec<u8>, Option<ObjectSyms>>,
    /// JIT symbols per pid, sorted by address (from `[perf-map:PID]` blobs).
    jit: HashMap<u32, Vec<(u64, u64, Arc<str>)>>,
    /// Class names of JVM allocation samples per pid, by `Klass*`.
    java_classes: HashMap<u32, HashMap<u64, Arc<str>>>,
    cache: HashMap<(Vec<u8>, u64, bool), Arc<[Frame]>>,
    kernel: Vec<(u64, u64, Arc<str>)>,
    kernel_module: Arc<str>,
    unknown: Arc<str>,
    python_names: python::PythonNames,
    /// Objects that had no usable symbol source, as "path (build id)".
    pub missing: BTreeSet<String>,
}

/// The root frame of a stack whose unwinding stopped short of its root.
pub const TRUNCATED: &str = "[truncated]";

/// Hex form of a build id.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

impl<'a> Symbolizer<'a> {
    /// A symbolizer for the addresses of `material`.
    pub fn new(material: &'a Material, opts: SymbolizeOptions) -> Self {
        let mut kernel: Vec<(u64, u64, Arc<str>)> =
            material.kernel.symbols.iter().map(|s| (s.addr, s.size, Arc::from(s.name.as_str()))).collect();
        kernel.sort_by_key(|k| k.0);
        Symbolizer {
            material,
            opts,
            objects: HashMap::new(),
            jit: HashMap::new(),
            java_classes: HashMap::new(),
            cache: HashMap::new(),
            kernel,
            kernel_module: Arc::from("[kernel]"),
            unknown: Arc::from("[unknown]"),
            python_names: python::PythonNames::default(),
            missing: BTreeSet::new(),
        }
    }

    /// The frames of a kernel address.
    pub fn kernel_frame(&self, addr: u64) -> Frame {
        let i = self.kernel.partition_point(|k| k.0 <= addr);
        let name = i
            .checked_sub(1)
            .map(|i| &self.kernel[i])
            .filter(|(start, size, _)| *size == 0 || addr < start + size)
            .map_or_else(|| Arc::from(format!("[kernel]+0x{addr:x}")), |k| Arc::clone(&k.2));
        Frame { name, module: Arc::clone(&self.kernel_module), kind: FrameKind::Kernel }
    }

    /// The frames of a user address of `pid` (innermost inlined first).
    /// `leaf` is true for the sampled instruction itself; other frames are
    /// return addresses and are looked up one byte earlier, at the call.
    pub fn user_frames(&mut self, pid: u32, generation: u64, addr: u64, leaf: bool) -> Arc<[Frame]> {
        let Some(mapping) = self.material.mapping_at(pid, generation, addr) else {
            let frame =
                self.java_class(pid, addr).or_else(|| self.jit_frame(pid, addr)).unwrap_or_else(|| Frame {
                    name: Arc::clone(&self.unknown),
                    module: Arc::clone(&self.unknown),
                    kind: FrameKind::User,
                });
            return Arc::from(vec![frame]);
        };
        let key = blob_key(&mapping.build_id, &mapping.path);
        let file_offset = addr - mapping.start + mapping.file_offset;
        let cache_key = (key, file_offset, leaf);
        if let Some(frames) = self.cache.get(&cache_key) {
            return Arc::clone(frames);
        }
        let (key, _, _) = &cache_key;
        if !self.objects.contains_key(key) {
            let syms = ObjectSyms::load(self.material, mapping, &self.opts);
            if !syms.as_ref().is_some_and(ObjectSyms::has_names) {
                self.missing.insert(format!("{} (build id {})", mapping.path, hex(&mapping.build_id)));
            }
            self.objects.insert(key.clone(), syms);
        }
        let module: Arc<str> = Arc::from(basename(&mapping.path));
        let obj = self.objects.get(key).and_then(Option::as_ref);
        let frames = obj.map(|o| o.frames(file_offset, leaf, &module, &self.opts)).unwrap_or_default();
        let frames: Arc<[Frame]> = if frames.is_empty() {
            // Unnamed code: one frame per function (its start, from the
            // unwind tables), else per address.
            let at = obj.and_then(|o| o.function_start(file_offset, leaf)).unwrap_or(file_offset);
            let name = Arc::from(format!("{module}+0x{at:x}"));
            Arc::from(vec![Frame { name, module, kind: FrameKind::User }])
        } else {
            Arc::from(frames)
        };
        self.cache.insert(cache_key, Arc::clone(&frames));
        frames
    }

    /// The mapping `addr` of `pid` lies in, and the functions there with their
    /// source lines, innermost first (empty where nothing names the address).
    pub fn source_lines(
        &mut self,
        pid: u32,
        generation: u64,
        addr: u64,
        leaf: bool,
    ) -> (Option<Mapping>, Vec<SourceLine>) {
        let Some(mapping) = self.material.mapping_at(pid, generation, addr) else {
            return (None, Vec::new());
        };
        let key = blob_key(&mapping.build_id, &mapping.path);
        if !self.objects.contains_key(&key) {
            let syms = ObjectSyms::load(self.material, mapping, &self.opts);
            self.objects.insert(key.clone(), syms);
        }
        let file_offset = addr - mapping.start + mapping.file_offset;
        let lines =
            self.objects.get(&key).and_then(Option::as_ref).map(|o| o.source_lines(file_offset, leaf));
        (Some(mapping.clone()), lines.unwrap_or_default())
    }

    /// Python frames of a stack in runs (root first), named, for exporters
    /// that place them themselves; empty with `--python native`.
    pub fn python_runs(&mut self, stack_id: u64) -> Vec<Vec<(Frame, u32)>> {
        let material = self.material;
        let Some(stack) = material.stacks.get(&stack_id) else { return Vec::new() };
        if stack.python.is_empty() || self.opts.python == PythonFrames::Native {
            return Vec::new();
        }
        let lines = self.opts.lines;
        python::runs(&stack.python)
            .into_iter()
            .map(|run| {
                run.into_iter()
                    .map(|f| {
                        let line = material.py_code.get(&f.code).map_or(0, |c| c.line_at(f.offset));
                        (self.python_names.frame(&material.py_code, f, lines), line)
                    })
                    .collect()
            })
            .collect()
    }

    /// Whether a function name is the interpreter's eval loop (where Python
    /// frames go).
    pub fn is_eval_loop(name: &str) -> bool {
        python::is_eval_loop(name)
    }

    /// The class of a JVM allocation sample, whose stack's leaf is the
    /// class's `Klass*` (named by the capture's `[java-classes:PID]` blob).
    fn java_class(&mut self, pid: u32, addr: u64) -> Option<Frame> {
        let material = self.material;
        let classes = self.java_classes.entry(pid).or_insert_with(|| {
            let key = blob_key(&[], &profcap_format::java_classes_path(pid));
            material
                .blobs
                .get(&key)
                .map(|b| b.symbols.iter().map(|s| (s.addr, Arc::from(s.name.as_str()))).collect())
                .unwrap_or_default()
        });
        let name = classes.get(&addr)?;
        Some(Frame { name: Arc::clone(name), module: Arc::from("[java class]"), kind: FrameKind::Jit })
    }

    /// The JIT symbol of `pid` covering `addr`, from the capture's copy of
    /// the process's `/tmp/perf-PID.map`.
    fn jit_frame(&mut self, pid: u32, addr: u64) -> Option<Frame> {
        let material = self.material;
        let syms = self.jit.entry(pid).or_insert_with(|| {
            let key = blob_key(&[], &profcap_format::perf_map_path(pid));
            let mut v: Vec<_> = material
                .blobs
                .get(&key)
                .map(|b| b.symbols.iter().map(|s| (s.addr, s.size, Arc::from(s.name.as_str()))).collect())
                .unwrap_or_default();
            v.sort_by_key(|s| s.0);
            v
        });
        let i = syms.partition_point(|s| s.0 <= addr);
        let (start, size, name) = syms.get(i.checked_sub(1)?)?;
        if addr >= start + size.max(&1) {
            return None;
        }
        // CPython's `-X perf` trampolines: one per Python function.
        if let Some(frame) = python::perf_map_frame(name) {
            return Some(frame);
        }
        Some(Frame { name: Arc::clone(name), module: Arc::from("[jit]"), kind: FrameKind::Jit })
    }

    /// All frames of a stack, root first (outermost user frame first, then
    /// down to the innermost kernel frame), as a flame graph wants them.
    pub fn stack_frames(&mut self, pid: u32, generation: u64, stack_id: u64, kernel: bool) -> Vec<Frame> {
        self.frames_with(pid, generation, stack_id, kernel, false).into_iter().map(|(f, _)| f).collect()
    }

    /// The frames of [`Symbolizer::stack_frames`], each with where its code
    /// is: address, source file and line, build id, inline depth.
    pub fn stack_details(
        &mut self,
        pid: u32,
        generation: u64,
        stack_id: u64,
        kernel: bool,
    ) -> Vec<(Frame, FrameDetail)> {
        self.frames_with(pid, generation, stack_id, kernel, true)
    }

    fn frames_with(
        &mut self,
        pid: u32,
        generation: u64,
        stack_id: u64,
        kernel: bool,
        detail: bool,
    ) -> Vec<(Frame, FrameDetail)> {
        let material = self.material;
        let unknown = |name: &str, module: &Arc<str>| {
            (
                Frame { name: Arc::from(name), module: Arc::clone(module), kind: FrameKind::User },
                FrameDetail::default(),
            )
        };
        let Some(stack) = material.stacks.get(&stack_id) else {
            return vec![unknown("[missing stack]", &self.unknown)];
        };
        let mut out = Vec::with_capacity(stack.user.len() + stack.kernel.len() + 1);
        // A user stack the recorder's unwinder could not follow to its root
        // says so at the root, so a cut stack is not read as a real caller.
        if stack.end.is_truncated() {
            out.push(unknown(TRUNCATED, &self.unknown));
        }
        let mut native: Vec<Arc<[(Frame, FrameDetail)]>> = Vec::with_capacity(stack.user.len());
        for (i, &addr) in stack.user.iter().enumerate().rev() {
            let frames = self.user_frames(pid, generation, addr, i == 0);
            // A run of addresses outside every mapping (a broken frame-pointer
            // chain, typically) is one [unknown] frame, not dozens.
            let after_unknown = native.last().is_some_and(|l| l.len() == 1 && l[0].0.name == self.unknown);
            if after_unknown && frames.len() == 1 && frames[0].name == self.unknown {
                continue;
            }
            let details = if detail {
                self.address_details(pid, generation, addr, i == 0, frames.len())
            } else {
                vec![FrameDetail::default(); frames.len()]
            };
            native.push(frames.iter().cloned().zip(details).rev().collect());
        }
        if stack.python.is_empty() || self.opts.python == PythonFrames::Native {
            out.extend(native.iter().flat_map(|f| f.iter().cloned()));
        } else {
            // `-X perf` trampolines name the same functions the walk did.
            native.retain(|f| !f.iter().all(|x| x.0.kind == FrameKind::Python));
            let lines = self.opts.lines;
            let runs: Vec<Vec<(Frame, FrameDetail)>> = python::runs(&stack.python)
                .into_iter()
                .map(|run| {
                    run.into_iter()
                        .map(|f| {
                            let frame = self.python_names.frame(&material.py_code, f, lines);
                            let code = material.py_code.get(&f.code);
                            let d = FrameDetail {
                                file: code.map(|c| Arc::from(c.filename.as_str())),
                                line: code.map_or(0, |c| c.line_at(f.offset)),
                                ..FrameDetail::default()
                            };
                            (frame, d)
                        })
                        .collect()
                })
                .collect();
            if self.opts.python == PythonFrames::Only {
                out.extend(runs.into_iter().flatten());
            } else {
                out.extend(python::merge(&native, runs, |t| &t.0));
            }
        }
        if kernel {
            out.extend(stack.kernel.iter().rev().map(|&a| {
                (self.kernel_frame(a), FrameDetail { address: Some(a), ..FrameDetail::default() })
            }));
        }
        out
    }

    /// Where the `n` frames of a user address are (innermost first): the
    /// address, its object's build id, and each function's source line
    /// where DWARF gives as many as there are frames.
    fn address_details(
        &mut self,
        pid: u32,
        generation: u64,
        addr: u64,
        leaf: bool,
        n: usize,
    ) -> Vec<FrameDetail> {
        let (mapping, lines) = self.source_lines(pid, generation, addr, leaf);
        let build_id: Option<Arc<str>> =
            mapping.filter(|m| !m.build_id.is_empty()).map(|m| Arc::from(hex(&m.build_id)));
        (0..n)
            .map(|i| {
                let line = if lines.len() == n { lines.get(i) } else { None };
                FrameDetail {
                    address: Some(addr),
                    file: line.and_then(|l| l.file.clone()),
                    line: line.map_or(0, |l| l.line),
                    build_id: build_id.clone(),
                    inline_depth: u32::try_from(n - 1 - i).unwrap_or(u32::MAX),
                }
            })
            .collect()
    }
}

/// Where a frame's code is, for exporters that carry more than names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FrameDetail {
    /// The sampled or return address (none for Python frames).
    pub address: Option<u64>,
    pub file: Option<Arc<str>>,
    /// 0 where unknown.
    pub line: u32,
    /// The object's GNU build id, in hex.
    pub build_id: Option<Arc<str>>,
    /// How many functions deep this one is inlined at its address (0: the
    /// function the address is in).
    pub inline_depth: u32,
}
