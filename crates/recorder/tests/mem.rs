//! Allocation recordings of fixtures/programs/allocs.c, which allocates known
//! sizes from known functions: exact in attach mode, within a stated
//! tolerance in the sampled (--preload) mode. Root only, like tests/record.rs.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use common::{fixture, root_or_skip};
use profcap_analyze::memory::InuseAt;
use profcap_analyze::{Filter, Material};
use profcap_format::SampleKind;
use profcap_recorder::{record, MemMode, RecordOptions, Target};

/// Bytes allocated by each function of allocs.c (see its header).
const ALLOCATED: [(&str, i64); 7] = [
    ("keep_small", 100_000),
    ("churn", 4_096_000),
    ("zeroed", 100_000),
    ("grow", 2_096_128),
    ("burst", 8_388_608),
    ("aligned", 163_840),
    ("mapped", 3_145_728),
];
/// Bytes each function still holds at the end.
const AT_END: [(&str, i64); 5] = [
    ("keep_small", 100_000),
    ("zeroed", 100_000),
    ("grow", 1_048_576),
    ("aligned", 163_840),
    ("mapped", 2_097_152),
];
/// Bytes each function holds at the peak (during burst).
const AT_PEAK: [(&str, i64); 4] =
    [("keep_small", 100_000), ("zeroed", 100_000), ("grow", 1_048_576), ("burst", 8_388_608)];

fn record_allocs(dir: &Path, mode: MemMode, target: Target) -> PathBuf {
    record_allocs_ring(dir, mode, target, true)
}

/// Records in `mode`; `ring` false makes the sampler report through its
/// uprobe functions, its fallback when it cannot open profrec's ring.
fn record_allocs_ring(dir: &Path, mode: MemMode, target: Target, ring: bool) -> PathBuf {
    let cap = dir.join("allocs.cap");
    let mut o = RecordOptions::new(cap.clone(), target);
    o.mem = mode;
    o.mem_test_no_ring = !ring;
    o.sample_bytes = 4096;
    let summary = record(&o, Arc::new(AtomicBool::new(false))).unwrap();
    if let Some(code) = summary.child_exit {
        assert_eq!(code, 0);
    }
    cap
}

/// Bytes (or blocks) per allocating function (the leaf of each stack).
fn by_function(m: &Material, kind: SampleKind, at: InuseAt) -> HashMap<String, i64> {
    let mut f = Filter::default();
    f.kind = Some(kind);
    f.inuse_at = at;
    common::by_leaf(m, f)
}

fn spawn_allocs() -> Target {
    Target::Spawn(vec![fixture("allocs").display().to_string()])
}

#[test]
fn attach_mode_is_exact() {
    if !root_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let m = Material::load(&record_allocs(dir.path(), MemMode::Attach, spawn_allocs()), true).unwrap();
    assert!(m.meta.events.iter().any(|e| e == "mem"), "{:?}", m.meta.events);
    let alloc = by_function(&m, SampleKind::Alloc, InuseAt::End);
    eprintln!("allocated: {alloc:?}");
    for (f, bytes) in ALLOCATED {
        assert_eq!(alloc.get(f), Some(&bytes), "{f} allocated");
    }
    let end = by_function(&m, SampleKind::Inuse, InuseAt::End);
    for (f, bytes) in AT_END {
        assert_eq!(end.get(f), Some(&bytes), "{f} in use at the end");
    }
    assert_eq!(end.get("churn"), None, "churn frees everything");
    assert_eq!(end.get("burst"), None, "burst frees its block");
    let peak = by_function(&m, SampleKind::Inuse, InuseAt::Peak);
    for (f, bytes) in AT_PEAK {
        assert_eq!(peak.get(f), Some(&bytes), "{f} in use at the peak");
    }
    assert_eq!(peak.get("aligned"), None, "aligned runs after the peak");
}

#[test]
fn memory_allocated_before_recording_never_counts_negative() {
    if !root_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(fixture("allocs"))
        .arg("late")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    let cap = record_allocs(dir.path(), MemMode::Attach, Target::Pids(vec![child.id()]));
    assert!(child.wait().unwrap().success());
    let m = Material::load(&cap, true).unwrap();
    let end = by_function(&m, SampleKind::Inuse, InuseAt::End);
    eprintln!("in use at the end: {end:?}");
    assert!(end.values().all(|&v| v > 0));
    assert_eq!(end.get("before_recording"), None);
    for (f, bytes) in AT_END {
        assert_eq!(end.get(f), Some(&bytes), "{f} in use at the end");
    }
}

#[test]
fn sampled_mode_is_unbiased_within_tolerance() {
    if !root_or_skip() {
        return;
    }
    for ring in [true, false] {
        check_sampled_allocs(ring);
    }
}

/// Sampled mode on allocs.c, with the sampler's ring (the default) or
/// without (its uprobe fallback).
fn check_sampled_allocs(ring: bool) {
    let dir = tempfile::tempdir().unwrap();
    let m = Material::load(&record_allocs_ring(dir.path(), MemMode::Sampled, spawn_allocs(), ring), true)
        .unwrap();
    assert!(m.meta.events.iter().any(|e| e == "mem-sampled"), "{:?}", m.meta.events);
    let alloc = by_function(&m, SampleKind::Alloc, InuseAt::End);
    eprintln!("allocated (sampled every 4 KiB on average, ring {ring}): {alloc:?}");
    let total: i64 = ALLOCATED.iter().map(|(f, _)| alloc.get(*f).copied().unwrap_or(0)).sum();
    let want: i64 = ALLOCATED.iter().map(|(_, b)| b).sum();
    // Tolerances are about 4 standard deviations of the sampling error.
    assert!((total - want).abs() as f64 <= 0.03 * want as f64, "total {total}, want {want}");
    let churn = alloc["churn"] as f64;
    assert!((churn - 4_096_000.0).abs() <= 0.1 * 4_096_000.0, "churn {churn}");
    // Blocks far larger than the sampling interval are always picked, with weight 1.
    assert_eq!(alloc.get("burst"), Some(&8_388_608));
    let end = by_function(&m, SampleKind::Inuse, InuseAt::End);
    assert_eq!(end.get("grow"), Some(&1_048_576));
    assert_eq!(end.get("churn"), None, "sampled blocks' frees are seen");
}

#[test]
fn an_allocator_inside_the_executable_is_found() {
    if !root_or_skip() {
        return;
    }
    // fixtures/programs/own_alloc.c defines je_malloc/je_free, as a program
    // linked with jemalloc does; libc's malloc never sees its blocks.
    let dir = tempfile::tempdir().unwrap();
    let target = Target::Spawn(vec![fixture("own_alloc").display().to_string()]);
    let m = Material::load(&record_allocs(dir.path(), MemMode::Attach, target), true).unwrap();
    let alloc = by_function(&m, SampleKind::Alloc, InuseAt::End);
    let end = by_function(&m, SampleKind::Inuse, InuseAt::End);
    eprintln!("allocated {alloc:?}, in use {end:?}");
    assert_eq!(alloc.get("use_own"), Some(&100_000));
    assert_eq!(end.get("use_own"), Some(&75_000));
}

#[test]
fn memory_options_that_cannot_work_are_clear_errors() {
    if !root_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cap = dir.path().join("x.cap");
    let me = std::process::id();
    let cases = [
        (MemMode::Attach, Target::All, "one process"),
        (MemMode::Attach, Target::Pids(vec![me, 1]), "one process"),
        (MemMode::Sampled, Target::Pids(vec![me]), "needs a command to start"),
    ];
    for (mode, target, says) in cases {
        let mut o = RecordOptions::new(cap.clone(), target.clone());
        o.mem = mode;
        let err = record(&o, Arc::new(AtomicBool::new(false))).unwrap_err();
        assert!(err.to_string().contains(says), "{mode:?} {target:?}: {err}");
    }
    // A program without any allocator: a static binary with no malloc of its own.
    let exe = dir.path().join("no_malloc");
    let src = dir.path().join("no_malloc.c");
    std::fs::write(
        &src,
        "void _start(void) { __asm__ volatile(\"mov $60, %eax; xor %edi, %edi; syscall\"); }\n",
    )
    .unwrap();
    let built = std::process::Command::new("gcc")
        .args(["-nostdlib", "-static", "-o"])
        .arg(&exe)
        .arg(&src)
        .status()
        .unwrap();
    assert!(built.success());
    let mut o = RecordOptions::new(cap.clone(), Target::Spawn(vec![exe.display().to_string()]));
    o.mem = MemMode::Attach;
    let err = record(&o, Arc::new(AtomicBool::new(false))).unwrap_err();
    assert!(err.to_string().contains("no allocator"), "{err}");
    // A static binary ignores LD_PRELOAD: refused up front, not an empty capture.
    o.mem = MemMode::Sampled;
    let err = record(&o, Arc::new(AtomicBool::new(false))).unwrap_err();
    assert!(err.to_string().contains("statically linked"), "{err}");
    assert!(!cap.exists(), "a refused recording writes no capture");
}

/// The whole allocation family through the sampler under profrec, with
/// blocks moving in and out of its arena: the program's own checks hold, and
/// since it frees everything, nothing sampled is in use at the end.
#[test]
fn sampled_mode_sees_every_free_of_the_whole_family() {
    if !root_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let target =
        Target::Spawn(vec![fixture("alloc_stress").display().to_string(), "2".into(), "20000".into()]);
    let m = Material::load(&record_allocs(dir.path(), MemMode::Sampled, target), true).unwrap();
    // run() is the threads' function; it calls the allocators directly.
    let allocated = by_function(&m, SampleKind::Alloc, InuseAt::End).get("run").copied().unwrap_or(0);
    assert!(
        allocated > 100_000_000,
        "only {allocated} bytes allocated by run() seen: {:?}",
        by_function(&m, SampleKind::Alloc, InuseAt::End)
    );
    // (stdio's buffer, allocated by printf and never freed, may remain.)
    let end = by_function(&m, SampleKind::Inuse, InuseAt::End);
    assert_eq!(end.get("run"), None, "still in use at the end: {end:?}");
}

/// The sampler's ring is shared memory the profiled program can write. A
/// program that scribbles on it (a head far ahead over padding, a misaligned
/// tail, a length longer than the ring) must not crash or wedge profrec: the
/// recording ends with the program, and the damage is counted.
#[test]
fn a_program_that_scribbles_on_the_sampler_ring_cannot_hurt_profrec() {
    if !root_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cap = dir.path().join("hostile.cap");
    let target = Target::Spawn(vec![fixture("ring_scribbler").display().to_string()]);
    let mut o = RecordOptions::new(cap.clone(), target);
    o.mem = MemMode::Sampled;
    o.sample_bytes = 4096;
    let started = std::time::Instant::now();
    let summary = record(&o, Arc::new(AtomicBool::new(false))).unwrap();
    assert_eq!(summary.child_exit, Some(0), "the scribbler found the ring and ran to its end");
    // It runs about 0.9 s; a wedged drain would never end, so this only
    // guards against one that takes the whole machine's patience.
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "took {:?}", started.elapsed());
    let m = Material::load(&cap, true).unwrap();
    assert!(m.stats.trailer, "the capture was finished");
    let damaged: u64 = m.lost.iter().filter(|l| l.reason.contains("damaged")).map(|l| l.count).sum();
    assert!(damaged >= 3, "damage counted: {:?}", m.lost);
}

/// The sampler library and its ring are anonymous memory: a profrec killed
/// mid-recording leaves nothing in the temporary directory (it used to leave
/// `profcap-ring-*` and `profcap-sampler-*.so` files, 8.4 MB per run).
#[test]
fn a_killed_sampled_recording_leaves_no_temporary_files() {
    if !root_or_skip() {
        return;
    }
    let ours = || -> Vec<String> {
        std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("profcap-"))
            .collect()
    };
    let before = ours();
    let dir = tempfile::tempdir().unwrap();
    let cap = dir.path().join("killed.cap");
    let mut rec = std::process::Command::new(env!("CARGO_BIN_EXE_profrec"))
        .args(["-q", "-o", cap.to_str().unwrap(), "--mem", "--preload", "--"])
        .arg(fixture("malloc_loop"))
        .arg("1000000000") // far longer than the 1.5 s before the kill
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(rec.try_wait().unwrap().is_none(), "profrec ended before it was killed");
    rec.kill().unwrap();
    let _ = rec.wait();
    let after: Vec<String> = ours().into_iter().filter(|n| !before.contains(n)).collect();
    assert!(after.is_empty(), "left in the temporary directory: {after:?}");
    assert!(cap.exists(), "the partial capture is the one file left");
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(names.len(), 1, "{names:?}");
    // The command profrec started runs on after profrec's death; end it.
    let _ = std::process::Command::new("pkill").args(["-f", "malloc_loop 1000000000"]).status();
}
