//! GPU memory (`profrec --hbm`): the real CUDA probes, loaded against a
//! process that uses the stand-in driver (fixtures/programs/cuda/: these
//! machines have no GPU; scripts/verify-hbm.sh runs the same program on a
//! real driver). Root tests.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use common::{fixture, root_or_skip};
use profcap_analyze::memory::InuseAt;
use profcap_analyze::{build, Filter, Material, ProfileOptions};
use profcap_format::{MemSpace, SampleKind};
use profcap_recorder::{record, RecordOptions, Target};

const MIB: i64 = 1 << 20;
/// What gpu_user.c allocates, by function (see its header); the pitch of
/// its 1000-byte rows is 1024 with the stand-in.
const ALLOCATED: [(&str, i64); 5] = [
    ("weights", 8 * MIB),
    ("images", 1024 * 300),
    ("managed", 3 * MIB),
    ("stream", 4 * MIB),
    ("expandable", 8 * MIB),
];
const AT_END: [(&str, i64); 3] = [("weights", 6 * MIB), ("images", 1024 * 300), ("expandable", 4 * MIB)];
const AT_PEAK: [(&str, i64); 3] = [("weights", 6 * MIB), ("images", 1024 * 300), ("expandable", 8 * MIB)];

/// Bytes per allocating function of one kind and space.
fn by_function(m: &Material, kind: SampleKind, space: MemSpace, at: InuseAt) -> HashMap<String, i64> {
    let mut f = Filter::default();
    f.kind = Some(kind);
    f.space = space;
    f.inuse_at = at;
    common::by_leaf(m, f)
}

fn expect(got: &HashMap<String, i64>, want: &[(&str, i64)], what: &str) {
    let want: HashMap<String, i64> = want.iter().map(|(f, v)| ((*f).to_owned(), *v)).collect();
    assert_eq!(got, &want, "{what}");
}

fn check(cap: &Path) -> Material {
    let m = Material::load(cap, true).unwrap();
    assert_eq!(m.device_allocs, 14, "8 + 1 + 1 + 2 + 2 allocations; the failed one is not one");
    assert_eq!(m.device_frees, 6);
    let dev = MemSpace::Device;
    expect(&by_function(&m, SampleKind::Alloc, dev, InuseAt::End), &ALLOCATED, "allocated");
    expect(&by_function(&m, SampleKind::Inuse, dev, InuseAt::End), &AT_END, "in use at the end");
    expect(&by_function(&m, SampleKind::Inuse, dev, InuseAt::Peak), &AT_PEAK, "in use at the peak");
    m
}

#[test]
fn gpu_memory_through_the_cuda_driver_api_is_exact_per_stack() {
    if !root_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lib = fixture("cuda/libcuda.so.1");
    // The library given (--cuda-lib), loaded by path with dlopen, as the
    // CUDA runtime loads the driver.
    let cap = dir.path().join("gpu.cap");
    let argv = vec![fixture("gpu_user").display().to_string(), lib.display().to_string()];
    let mut o = RecordOptions::new(cap.clone(), Target::Spawn(argv));
    o.hbm = true;
    o.cuda_lib = Some(lib.clone());
    let summary = record(&o, Arc::new(AtomicBool::new(false))).unwrap();
    assert_eq!(summary.child_exit, Some(0));
    let m = check(&cap);
    assert!(m.meta.events.iter().any(|e| e == "hbm"), "{:?}", m.meta.events);

    // Found on the command's LD_LIBRARY_PATH by the CLI, with host memory
    // too (--mem): the two spaces stay apart.
    let cap = dir.path().join("both.cap");
    let out = Command::new(env!("CARGO_BIN_EXE_profrec"))
        .args(["-q", "--hbm", "--mem", "-o"])
        .arg(&cap)
        .arg("--")
        .arg(fixture("gpu_user"))
        .env("LD_LIBRARY_PATH", lib.parent().unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let m = check(&cap);
    let host = by_function(&m, SampleKind::Alloc, MemSpace::Host, InuseAt::End);
    assert!(!host.is_empty(), "host allocations (dlopen, stdio) are recorded");
    assert!(
        host.keys().all(|f| !ALLOCATED.iter().any(|(g, _)| g == f)),
        "no GPU stack among host memory: {host:?}"
    );

    // Without a driver to find, a clear error.
    let out = Command::new(env!("CARGO_BIN_EXE_profrec"))
        .args(["-q", "--hbm", "-o"])
        .arg(dir.path().join("none.cap"))
        .args(["--", "/bin/true"])
        .env("LD_LIBRARY_PATH", dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    if !Path::new("/usr/lib/x86_64-linux-gnu/libcuda.so.1").exists() {
        assert!(!out.status.success() && err.contains("--cuda-lib"), "{err}");
    }
}

/// GPU memory allocated from Python code (through ctypes, as PyTorch's
/// allocator reaches the driver) carries the Python frames that made it.
#[test]
fn gpu_memory_of_python_code_is_attributed_to_its_python_functions() {
    if !root_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lib = fixture("cuda/libcuda.so.1");
    let program = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/programs/cuda/pygpu.py");
    let cap = dir.path().join("pygpu.cap");
    let argv = vec!["/usr/bin/python3.11".into(), program.display().to_string(), lib.display().to_string()];
    let mut o = RecordOptions::new(cap.clone(), Target::Spawn(argv));
    o.hbm = true;
    o.cuda_lib = Some(lib);
    let summary = record(&o, Arc::new(AtomicBool::new(false))).unwrap();
    assert_eq!(summary.child_exit, Some(0));
    let m = Material::load(&cap, true).unwrap();
    let mut o = ProfileOptions::default();
    o.filter.kind = Some(SampleKind::Alloc);
    o.filter.space = MemSpace::Device;
    o.symbolize.local_files = false;
    let p = build(&m, &o).unwrap();
    let in_fn = |name: &str| -> i64 {
        p.stacks
            .iter()
            .filter(|(frames, _)| frames.iter().any(|f| f.name.starts_with(&format!("py::pygpu.{name} "))))
            .map(|(_, v)| v)
            .sum()
    };
    assert_eq!(p.total, 11 * MIB, "4 x 2 MiB + 3 x 1 MiB");
    assert_eq!(in_fn("load_model"), 8 * MIB);
    assert_eq!(in_fn("scratch"), 3 * MIB);
}
