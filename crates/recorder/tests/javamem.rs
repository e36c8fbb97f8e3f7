//! Java allocations (`profrec --mem` on a JVM): uprobes on HotSpot's
//! AllocTracer (the points JFR and async-profiler sample at), the class of
//! each sample read with the JVM's own vmStructs offsets, Java frames from
//! the JVM's perf map. Root tests (they load BPF programs).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use common::{fixture, root_or_skip};
use profcap_analyze::{build, Material, ProfileOptions};
use profcap_format::SampleKind;
use profcap_recorder::{record, MemMode, RecordOptions, Target};

/// JavaAlloc.java: 50 arrays `Big[1 << 20]` of 16 + 4 MiB (compressed
/// oops), each outside any TLAB; 2,000,000 `Point`s of 24 bytes in TLABs.
const BIG: i64 = 16 + 4 * 1024 * 1024;
const POINTS_BYTES: i64 = 2_000_000 * 24;

fn record_java(cap: &Path) -> Material {
    let classes = fixture("java");
    let argv = [
        "java",
        "-Xmx512m",
        "-XX:+PreserveFramePointer",
        "-XX:+UnlockDiagnosticVMOptions",
        "-XX:+DumpPerfMapAtExit",
        "-cp",
        classes.to_str().unwrap(),
        "JavaAlloc",
    ];
    let mut o =
        RecordOptions::new(cap.to_owned(), Target::Spawn(argv.iter().map(|s| s.to_string()).collect()));
    o.mem = MemMode::Attach;
    let summary = record(&o, Arc::new(AtomicBool::new(false))).unwrap();
    assert_eq!(summary.child_exit, Some(0));
    Material::load(cap, true).unwrap()
}

/// Per allocation stack (root first): (samples, bytes).
fn stacks(m: &Material) -> Vec<(Vec<String>, i64, i64)> {
    let by = |counts: bool| {
        let mut o = ProfileOptions::default();
        o.filter.kind = Some(SampleKind::Alloc);
        o.filter.alloc_counts = counts;
        o.symbolize.local_files = false;
        build(m, &o).unwrap().stacks
    };
    let (counts, bytes) = (by(true), by(false));
    bytes
        .iter()
        .map(|(frames, b)| {
            let n = counts.iter().find(|(f, _)| f == frames).map_or(0, |(_, n)| *n);
            (frames.iter().map(|f| f.name.to_string()).collect(), n, *b)
        })
        .collect()
}

#[test]
fn java_allocations_by_class_exact_outside_tlabs_and_sampled_in_them() {
    if !root_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let m = record_java(&dir.path().join("java.cap"));
    assert_eq!(m.free_count, 0, "the collector frees: no frees recorded");
    let s = stacks(&m);
    let of = |class: &str| {
        s.iter()
            .filter(|(f, _, _)| f.last().is_some_and(|l| l == class))
            .fold((0, 0), |a, x| (a.0 + x.1, a.1 + x.2))
    };
    // Outside TLABs every allocation is a sample of its own size: exact.
    assert_eq!(of("JavaAlloc$Big[]"), (50, 50 * BIG));
    // In TLABs a sample stands for the TLAB the object started: the total
    // is off by about the last TLAB (+0.1% to +0.3% in runs here).
    let (n, bytes) = of("JavaAlloc$Point");
    assert!(n >= 5, "{n} TLAB samples of Point");
    let err = (bytes - POINTS_BYTES) as f64 / POINTS_BYTES as f64;
    assert!(
        err.abs() < 0.05,
        "Point: {bytes} bytes sampled for {POINTS_BYTES} allocated ({:+.1}%)",
        err * 100.0
    );
    // The JVM's own allocation machinery is cut: the leaf's caller is Java
    // code (the compiled loop, named by the JVM's perf map) or the
    // interpreter, not libjvm.
    let in_points = s
        .iter()
        .filter(|(f, _, _)| f.last().is_some_and(|l| l == "JavaAlloc$Point"))
        .filter(|(f, _, _)| f.iter().any(|x| x.contains("JavaAlloc.points")))
        .map(|x| x.2)
        .sum::<i64>();
    assert!(in_points * 2 > bytes, "most Point bytes under JavaAlloc.points: {in_points} of {bytes}");
    for (f, _, _) in s.iter().filter(|(f, _, _)| f.last().is_some_and(|l| l.starts_with("JavaAlloc$"))) {
        let caller = &f[f.len() - 2];
        assert!(!caller.contains("AllocTracer") && !caller.contains("MemAllocator"), "{f:?}");
    }
    // In use cannot be known: the garbage collector frees unseen.
    let mut o = ProfileOptions::default();
    o.filter.kind = Some(SampleKind::Inuse);
    let err = build(&m, &o).unwrap_err().to_string();
    assert!(err.contains("garbage collector"), "{err}");
}
