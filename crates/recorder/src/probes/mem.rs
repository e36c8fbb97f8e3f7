//! Allocations: uprobes on the allocator functions, or on the preloaded
//! sampler's two report functions (`bpf/mem.bpf.c`).

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::Link;

use super::{load_error, no_rodata, object_storage, share_maps, share_python_maps, OncpuSkel, Targets};
use crate::{Error, Result};

#[allow(clippy::all, clippy::unwrap_used, missing_debug_implementations, unsafe_op_in_unsafe_fn)]
mod skel {
    include!(concat!(env!("OUT_DIR"), "/mem.skel.rs"));
}
pub(super) use skel::MemSkel;
use skel::MemSkelBuilder;

/// Where to put the allocation probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemProbes {
    /// The process (uprobes are per process; its threads are covered).
    pub pid: u32,
    /// Attach mode: objects whose allocator functions get probes (libc, an
    /// executable with its own allocator).
    pub objects: Vec<std::path::PathBuf>,
    /// Sampled mode: the preloaded sampler library, whose two report
    /// functions get probes instead.
    pub sampler: Option<std::path::PathBuf>,
    /// Attach mode: CPython's allocator functions too (`--mem-python`).
    pub python: bool,
    /// GPU memory (`--hbm`): the CUDA driver libraries (libcuda.so.1) whose
    /// allocation functions get probes.
    pub cuda: Vec<std::path::PathBuf>,
    /// A Go program: `runtime.mallocgc` in it gets a probe, every call
    /// (`None`) or one per this many bytes on average (sampled in the kernel).
    pub go: Option<GoProbe>,
    /// A JVM: its libjvm.so and the allocation-sampling functions there
    /// (`AllocTracer`'s, as JFR uses) that get probes instead of the allocator's.
    pub java: Option<(std::path::PathBuf, Vec<String>)>,
}

/// Where the Go allocation probe goes and how often it reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoProbe {
    pub exe: std::path::PathBuf,
    /// Offset into `runtime.mallocgc` (past its prologue's stack check).
    pub offset: u64,
    /// Sampled in the kernel: one allocation per this many bytes on average.
    pub sample_bytes: Option<u64>,
}

/// The CUDA driver API's allocation functions and their `enum cuda_fn`
/// cookie (`bpf/mem.bpf.c`); `_ptsz`: the per-thread default stream forms.
const CUDA_ALLOCS: [(&str, u64); 8] = [
    ("cuMemAlloc_v2", 0),
    ("cuMemAllocManaged", 0),
    ("cuMemAllocAsync", 0),
    ("cuMemAllocAsync_ptsz", 0),
    ("cuMemAllocFromPoolAsync", 0),
    ("cuMemAllocFromPoolAsync_ptsz", 0),
    ("cuMemAllocPitch_v2", 1),
    ("cuMemCreate", 2),
];
/// Their frees: device pointers, and physical allocations' handles.
const CUDA_FREES: [&str; 4] = ["cuMemFree_v2", "cuMemFreeAsync", "cuMemFreeAsync_ptsz", "cuMemRelease"];

/// Attaches the GPU memory programs to the CUDA driver's functions.
fn attach_cuda(
    mem: &MemSkel<'_>,
    libraries: &[std::path::PathBuf],
    uprobe: &Uprobe<'_>,
    links: &mut Vec<Link>,
) -> Result<()> {
    for lib in libraries {
        let names = crate::elf::function_names(lib);
        let found: Vec<&str> = CUDA_ALLOCS.iter().map(|(n, _)| *n).filter(|n| names.contains(*n)).collect();
        if !names.contains("cuMemAlloc_v2") || !names.contains("cuMemFree_v2") {
            return Err(Error::Bpf {
                what: "attach GPU memory probes".into(),
                detail: format!("{} has no cuMemAlloc_v2 and cuMemFree_v2: not a CUDA driver", lib.display()),
            });
        }
        log::info!("attaching GPU memory probes to {} functions of {}", found.len(), lib.display());
        let progs = (&mem.progs.cuda_alloc_enter, &mem.progs.cuda_alloc_exit, &mem.progs.cuda_free_enter);
        attach_family(uprobe, links, lib, &names, progs, (&CUDA_ALLOCS, &CUDA_FREES))?;
    }
    Ok(())
}

/// Allocator function names (suffixes) and their `enum alloc_fn` cookie.
const ALLOC_FNS: [(&str, u64); 9] = [
    ("malloc", 0),
    ("calloc", 1),
    ("realloc", 2),
    ("reallocarray", 3),
    ("posix_memalign", 4),
    ("aligned_alloc", 5),
    ("memalign", 6),
    ("valloc", 7),
    ("mmap", 8),
];
/// Prefixes of allocators' symbols: libc's own, jemalloc (also as Rust's
/// tikv-jemallocator builds it), mimalloc, tcmalloc.
const ALLOC_PREFIXES: [&str; 5] = ["", "je_", "_rjem_", "mi_", "tc_"];

/// CPython's object and memory domains: most Python objects never reach
/// malloc (pymalloc serves them from arenas), so these are probed as an
/// allocator of their own (nested calls into malloc count once, as ever).
const PYTHON_FNS: [(&str, u64); 6] = [
    ("PyObject_Malloc", 0),
    ("PyObject_Calloc", 1),
    ("PyObject_Realloc", 2),
    ("PyMem_Malloc", 0),
    ("PyMem_Calloc", 1),
    ("PyMem_Realloc", 2),
];
const PYTHON_FREES: [&str; 2] = ["PyObject_Free", "PyMem_Free"];

/// Attaches one allocator family's programs in `object`: (entry, return)
/// on each of its allocation functions `names` has (with its cookie), the
/// free program on each of its frees.
fn attach_family(
    uprobe: &Uprobe<'_>,
    links: &mut Vec<Link>,
    object: &std::path::Path,
    names: &std::collections::HashSet<String>,
    (enter, exit, free): (&libbpf_rs::ProgramMut<'_>, &libbpf_rs::ProgramMut<'_>, &libbpf_rs::ProgramMut<'_>),
    (allocs, frees): (&[(&str, u64)], &[&str]),
) -> Result<()> {
    let failed = |name: &str, e| load_error(&format!("attach uprobe {name} in {}", object.display()), e);
    for (name, cookie) in allocs.iter().filter(|(n, _)| names.contains(*n)) {
        for (prog, ret) in [(enter, false), (exit, true)] {
            links.push(uprobe(prog, object, name, ret, *cookie).map_err(|e| failed(name, e))?);
        }
    }
    for name in frees.iter().filter(|n| names.contains(**n)) {
        links.push(uprobe(free, object, name, false, 0).map_err(|e| failed(name, e))?);
    }
    Ok(())
}

type Uprobe<'a> =
    dyn Fn(&libbpf_rs::ProgramMut<'_>, &std::path::Path, &str, bool, u64) -> libbpf_rs::Result<Link> + 'a;

/// The probe on `runtime.mallocgc`, past its prologue's stack check.
fn attach_go(mem: &MemSkel<'_>, pid: i32, go: &GoProbe, links: &mut Vec<Link>) -> Result<()> {
    log::info!(
        "attaching the allocation probe to runtime.mallocgc+{:#x} in {} ({})",
        go.offset,
        go.exe.display(),
        go.sample_bytes
            .map_or_else(|| "every allocation".to_owned(), |r| format!("one per {r} bytes, sampled"))
    );
    let opts = libbpf_rs::UprobeOpts { func_name: Some("runtime.mallocgc".to_owned()), ..Default::default() };
    let link = mem
        .progs
        .go_malloc
        .attach_uprobe_with_opts(pid, &go.exe, go.offset as usize, opts)
        .map_err(|e| load_error(&format!("attach uprobe runtime.mallocgc in {}", go.exe.display()), e))?;
    links.push(link);
    Ok(())
}

/// An object and the functions its symbol tables name (read once for every
/// probe family that looks for its functions).
type NamedObject = (std::path::PathBuf, std::collections::HashSet<String>);

/// Probes on the malloc family (each prefix of `ALLOC_PREFIXES` with both
/// malloc and free) and libc's munmap; how many allocators.
fn attach_allocators(
    mem: &MemSkel<'_>,
    objects: &[NamedObject],
    uprobe: &Uprobe<'_>,
    links: &mut Vec<Link>,
) -> Result<usize> {
    let mut attached = 0;
    for (object, names) in objects {
        for prefix in ALLOC_PREFIXES {
            let has = |n: &str| names.contains(&format!("{prefix}{n}"));
            if !has("malloc") || !has("free") {
                continue;
            }
            log::info!("attaching allocation probes to {prefix}malloc etc. in {}", object.display());
            let allocs: Vec<(String, u64)> =
                ALLOC_FNS.iter().map(|(n, c)| (format!("{prefix}{n}"), *c)).collect();
            let allocs: Vec<(&str, u64)> = allocs.iter().map(|(n, c)| (n.as_str(), *c)).collect();
            // munmap (libc's only) ends an anonymous mapping as free ends a
            // block; one inside free, of a chunk's header address, matches nothing.
            let free = format!("{prefix}free");
            let frees: Vec<&str> =
                std::iter::once(free.as_str()).chain(prefix.is_empty().then_some("munmap")).collect();
            let progs = (&mem.progs.alloc_enter, &mem.progs.alloc_exit, &mem.progs.free_enter);
            attach_family(uprobe, links, object, names, progs, (&allocs, &frees))?;
            attached += 1;
        }
    }
    Ok(attached)
}

/// Attaches the allocation programs to CPython's allocator functions in the
/// objects that define them; how many objects had them.
fn attach_python(
    mem: &MemSkel<'_>,
    objects: &[NamedObject],
    uprobe: &Uprobe<'_>,
    links: &mut Vec<Link>,
) -> Result<usize> {
    let mut attached = 0;
    for (object, names) in objects {
        if !names.contains("PyObject_Malloc") || !names.contains("PyObject_Free") {
            continue;
        }
        log::info!("attaching allocation probes to PyObject_Malloc etc. in {}", object.display());
        let progs = (&mem.progs.alloc_enter, &mem.progs.alloc_exit, &mem.progs.free_enter);
        attach_family(uprobe, links, object, names, progs, (&PYTHON_FNS, &PYTHON_FREES))?;
        attached += 1;
    }
    Ok(attached)
}

/// Loads the allocation programs and attaches them to the allocator functions.
pub(super) fn load(
    skel: &OncpuSkel<'static>,
    targets: &Targets,
    m: &MemProbes,
    stack_bytes: u32,
    links: &mut Vec<Link>,
) -> Result<MemSkel<'static>> {
    let mut open = MemSkelBuilder::default().open(object_storage()).map_err(|e| load_error("open mem", e))?;
    let rodata = open.maps.rodata_data.as_deref_mut().ok_or_else(|| no_rodata("mem"))?;
    rodata.filter_pids = matches!(targets, Targets::Pids { .. });
    // Sampled allocations of Python processes copy stack bytes.
    rodata.stack_bytes = stack_bytes.min(super::MAX_STACK_COPY as u32);
    rodata.go_sample_bytes = m.go.as_ref().and_then(|g| g.sample_bytes).unwrap_or(0);
    share_maps(skel, &mut open.maps.targets, &mut open.maps.events, &mut open.maps.stack_tops)?;
    share_python_maps(skel, &mut open.maps.py_procs, &mut open.maps.py_tstates)?;
    let mem = open.load().map_err(|e| load_error("load mem (verifier log above)", e))?;
    let pid = m.pid as i32;
    let uprobe = |prog: &libbpf_rs::ProgramMut<'_>, path: &std::path::Path, name: &str, ret: bool, cookie| {
        let opts = libbpf_rs::UprobeOpts {
            func_name: Some(name.to_owned()),
            retprobe: ret,
            cookie,
            ..Default::default()
        };
        prog.attach_uprobe_with_opts(pid, path, 0, opts)
    };
    attach_cuda(&mem, &m.cuda, &uprobe, links)?;
    if let Some((jvm, functions)) = &m.java {
        for name in functions {
            log::info!("attaching the Java allocation probe to {name} in {}", jvm.display());
            let link = uprobe(&mem.progs.java_alloc, jvm, name, false, 0)
                .map_err(|e| load_error(&format!("attach uprobe {name} in {}", jvm.display()), e))?;
            links.push(link);
        }
        return Ok(mem);
    }
    // Read when first needed (not by the sampler, which probes its own library).
    let named = std::cell::OnceCell::new();
    let named = || -> &[NamedObject] {
        named.get_or_init(|| {
            m.objects.iter().map(|o| (o.clone(), crate::elf::function_names(o))).collect::<Vec<_>>()
        })
    };
    if let Some(go) = &m.go {
        attach_go(&mem, pid, go, links)?;
        // A Go program's own C allocations (cgo) go through libc, probed as ever.
        if named().iter().all(|(_, names)| !names.contains("malloc")) {
            return Ok(mem);
        }
    }
    if m.objects.is_empty() && m.sampler.is_none() && !m.cuda.is_empty() {
        return Ok(mem); // GPU memory only (--hbm without --mem)
    }
    if let Some(sampler) = &m.sampler {
        for (prog, name) in [
            (&mem.progs.sampled_alloc, "profcap_sampled_alloc"),
            (&mem.progs.sampled_free, "profcap_sampled_free"),
        ] {
            let link = uprobe(prog, sampler, name, false, 0)
                .map_err(|e| load_error(&format!("attach uprobe {name} in {}", sampler.display()), e))?;
            links.push(link);
        }
        return Ok(mem);
    }
    let mut attached = attach_allocators(&mem, named(), &uprobe, links)?;
    if m.python {
        attached += attach_python(&mem, named(), &uprobe, links)?;
    }
    if attached == 0 {
        return Err(Error::Bpf {
            what: "attach allocation probes".into(),
            detail: format!("no allocator (malloc and free) found in {:?}", m.objects),
        });
    }
    Ok(mem)
}
