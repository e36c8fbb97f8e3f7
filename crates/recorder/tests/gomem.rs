//! Go allocations (`profrec --mem` on a Go program): a uprobe on
//! runtime.mallocgc, exact in attach mode, sampled in the kernel with
//! unbiased totals. Root tests (they load BPF programs).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use common::{fixture, root_or_skip};
use profcap_analyze::{build, Material, ProfileOptions};
use profcap_format::SampleKind;
use profcap_recorder::{record, MemMode, RecordOptions, Target};

fn record_goalloc(cap: &Path, mode: MemMode, sample_bytes: u64) -> Material {
    let mut o =
        RecordOptions::new(cap.to_owned(), Target::Spawn(vec![fixture("goalloc").display().to_string()]));
    o.mem = mode;
    o.sample_bytes = sample_bytes;
    let summary = record(&o, Arc::new(AtomicBool::new(false))).unwrap();
    assert_eq!(summary.child_exit, Some(0));
    Material::load(cap, true).unwrap()
}

/// What `function` allocated: the frame under runtime.mallocgc (the probe
/// sits in mallocgc's prologue, where the frame-pointer walk starts from
/// the allocating runtime helper's caller): (allocations, bytes).
fn made_by(m: &Material, function: &str) -> (i64, i64) {
    let by = |counts: bool| {
        let mut o = ProfileOptions::default();
        o.filter.kind = Some(SampleKind::Alloc);
        o.filter.alloc_counts = counts;
        o.symbolize.local_files = false;
        let p = build(m, &o).unwrap();
        p.stacks
            .iter()
            .filter(|(frames, _)| {
                let n = frames.len();
                n >= 2 && &*frames[n - 1].name == "runtime.mallocgc" && &*frames[n - 2].name == function
            })
            .map(|(_, v)| v)
            .sum::<i64>()
    };
    (by(true), by(false))
}

fn total(m: &Material) -> i64 {
    let mut o = ProfileOptions::default();
    o.filter.kind = Some(SampleKind::Alloc);
    o.symbolize.local_files = false;
    build(m, &o).unwrap().total
}

#[test]
fn go_allocations_are_exact_in_attach_mode_and_unbiased_when_sampled() {
    if !root_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let m = record_goalloc(&dir.path().join("exact.cap"), MemMode::Attach, 0);
    assert_eq!(m.free_count, 0, "Go frees are the collector's: none recorded");
    // goalloc.go: 1000 x 10000 bytes, 100000 x 48, and in churn 20000 x
    // 4096 plus the 24-byte slice header each conversion to interface{}
    // makes. (A probe on mallocgc's first instruction counted 100 009-100 014
    // in makeNodes: the prologue's stack check restarts the function.)
    assert_eq!(made_by(&m, "main.makeBuffers"), (1000, 10_000_000));
    assert_eq!(made_by(&m, "main.makeNodes"), (100_000, 4_800_000));
    assert_eq!(made_by(&m, "main.churn"), (40_000, 81_920_000 + 480_000));
    let exact = total(&m);
    // In use cannot be known: a clear error, not a wrong answer.
    let mut o = ProfileOptions::default();
    o.filter.kind = Some(SampleKind::Inuse);
    let err = build(&m, &o).unwrap_err().to_string();
    assert!(err.contains("garbage collector"), "{err}");

    // Sampled in the kernel (--mem --preload: LD_PRELOAD cannot reach Go):
    // one allocation per 16 KiB on average, weighted.
    let m = record_goalloc(&dir.path().join("sampled.cap"), MemMode::Sampled, 16 << 10);
    assert!(m.alloc_count < 20_000, "{} of about 141 000 allocations sent", m.alloc_count);
    let sampled = total(&m);
    let off = (sampled - exact) as f64 / exact as f64;
    assert!(off.abs() < 0.05, "sampled total {sampled} vs exact {exact}: {:+.1}%", 100.0 * off);
    let (_, churn) = made_by(&m, "main.churn");
    let off = (churn as f64 - 82_400_000.0) / 82_400_000.0;
    assert!(off.abs() < 0.10, "churn sampled {churn}: {:+.1}%", 100.0 * off);
}
