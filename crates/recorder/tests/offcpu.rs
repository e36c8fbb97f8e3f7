//! Off-CPU recordings of a real program whose threads block in known
//! functions for known times. Root only, like tests/record.rs.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use common::{fixture, root_or_skip};
use profcap_analyze::{build, Filter, Grouping, Material, Profile, ProfileOptions};
use profcap_format::SampleKind;
use profcap_recorder::{record, RecordOptions, Target};

fn record_blocker(dir: &Path, wakers: bool) -> PathBuf {
    record_blocker_missing(dir, wakers, 0)
}

/// Records blocker, the BPF side acting as if it missed every `miss`-th
/// switch-in of a blocked thread (0: none). blocker writes the time each
/// thread spent in its blocking calls, as it measured it, to `report.txt`.
fn record_blocker_missing(dir: &Path, wakers: bool, miss: u32) -> PathBuf {
    let cap = dir.join("blocker.cap");
    let report = format!("PROFCAP_BLOCKER_REPORT={}", dir.join("report.txt").display());
    let argv = vec!["env".into(), report, fixture("blocker").display().to_string()];
    let mut o = RecordOptions::new(cap.clone(), Target::Spawn(argv));
    o.offcpu = true;
    o.wakers = wakers;
    o.offcpu_test_miss_switch_ins = miss;
    let summary = record(&o, Arc::new(AtomicBool::new(false))).unwrap();
    assert_eq!(summary.child_exit, Some(0));
    cap
}

/// What blocker measured itself: ms each thread spent in its blocking calls.
fn measured_ms(dir: &Path) -> HashMap<String, f64> {
    std::fs::read_to_string(dir.join("report.txt"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(name, ms)| (name.to_owned(), ms.parse().unwrap())))
        .collect()
}

/// Recorded off-CPU time of each blocking thread against the time blocker
/// itself measured in its blocking calls: both include the wait for a CPU
/// after the wake-up, so they agree on a busy machine too, where the nominal
/// times (500 ms of sleeps, a signal after 300 ms) do not hold.
fn check_against_measured(recorded: &HashMap<String, f64>, measured: &HashMap<String, f64>) {
    for (thread, nominal) in [("sleeper", 500.0), ("writer", 500.0), ("reader", 500.0), ("condvar", 300.0)] {
        let (got, truth) = (recorded[thread], measured[thread]);
        assert!(truth >= nominal * 0.98, "{thread}: blocker measured {truth:.1} ms, less than it asked for");
        assert!(
            within(got, truth, 2.0) || (got - truth).abs() < 2.0,
            "{thread}: recorded {got:.1} ms, measured {truth:.1}"
        );
    }
}

fn offcpu_profile(cap: &Path, wakers: bool) -> (Material, Profile) {
    let m = Material::load(cap, true).unwrap();
    let mut o = ProfileOptions::default();
    let mut f = Filter::default();
    f.kind = Some(SampleKind::OffCpu);
    f.no_kernel = true;
    f.wakers = wakers;
    o.filter = f;
    let mut g = Grouping::default();
    g.thread = true;
    o.grouping = g;
    o.symbolize.local_files = false;
    let p = build(&m, &o).unwrap();
    (m, p)
}

/// Off-CPU milliseconds per thread name.
fn per_thread_ms(p: &Profile) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for (frames, v) in &p.stacks {
        let thread = frames[0].name.rsplit_once(" (").unwrap().0.to_owned();
        *out.entry(thread).or_insert(0.0) += *v as f64 / 1e6;
    }
    out
}

fn within(got: f64, want: f64, pct: f64) -> bool {
    (got - want).abs() <= want * pct / 100.0
}

#[test]
fn blocked_time_per_thread_matches_the_program() {
    if !root_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cap = record_blocker(dir.path(), false);
    let (m, p) = offcpu_profile(&cap, false);
    let ms = per_thread_ms(&p);
    let measured = measured_ms(dir.path());
    eprintln!("off-CPU ms per thread: {ms:?}; blocker measured {measured:?}");
    check_against_measured(&ms, &measured);
    // A thread that never blocks shows no off-CPU time.
    assert!(!ms.contains_key("spinner"), "spinner blocked for {:?} ms", ms.get("spinner"));
    // The blocking functions are on the stacks (see blocker.c on why each
    // blocking call goes through a wrapper).
    for (thread, func) in [("sleeper", "sleep_wait"), ("reader", "pipe_wait")] {
        let blocked_in: f64 = p
            .stacks
            .iter()
            .filter(|(f, _)| f[0].name.starts_with(thread) && f.iter().any(|x| &*x.name == func))
            .map(|(_, v)| *v as f64 / 1e6)
            .sum();
        assert!(
            within(blocked_in, ms[thread], 1.0),
            "{thread}: {blocked_in:.1} of {:.1} ms in {func}",
            ms[thread]
        );
    }
    // Functions that call libc directly stay visible although libc has no
    // frame pointers: the recorder recovers those frames from .eh_frame.
    let called = |thread: &str, caller: &str, callee: &str| {
        p.stacks.iter().any(|(f, _)| {
            f[0].name.starts_with(thread)
                && f.windows(2).any(|w| &*w[0].name == caller && w[1].name.contains(callee))
        })
    };
    assert!(called("blocker", "main", "usleep"), "main -> usleep (main thread)");
    assert!(called("sleeper", "do_usleep", "usleep"), "do_usleep -> usleep");
    assert!(called("condvar", "do_cond_wait", "pthread_cond_wait"), "do_cond_wait -> pthread_cond_wait");
    assert!(m.meta.events.contains(&"offcpu".to_string()));
    assert!(m.lost.iter().all(|l| l.reason.starts_with("filtered") || l.count == 0), "{:?}", m.lost);
}

/// Now and then the scheduler tracepoint's program does not run for a switch
/// that puts a blocked thread back on a CPU (seen on this kernel about once
/// in 50 recordings of blocker, always an idle-to-task switch). The thread's
/// next switch-out finds its block still open and rebuilds its end from the
/// scheduler's run time. Here every other switch-in is ignored on purpose.
#[test]
fn blocks_whose_switch_in_was_missed_are_rebuilt() {
    if !root_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cap = record_blocker_missing(dir.path(), false, 2);
    let (m, p) = offcpu_profile(&cap, false);
    let ms = per_thread_ms(&p);
    eprintln!("off-CPU ms per thread, every other switch-in missed: {ms:?}");
    let recovered: u64 = m
        .meta
        .extra
        .iter()
        .find(|(k, _)| k == "offcpu_recovered")
        .map(|(_, v)| v.parse().unwrap())
        .unwrap_or(0);
    // blocker's threads block about 24 times in all: half of those are missed.
    assert!(recovered >= 8, "only {recovered} blocks rebuilt; meta extra: {:?}", m.meta.extra);
    check_against_measured(&ms, &measured_ms(dir.path()));
    assert!(!ms.contains_key("spinner"), "spinner blocked for {:?} ms", ms.get("spinner"));
    assert!(m.lost.iter().all(|l| l.reason.starts_with("filtered") || l.count == 0), "{:?}", m.lost);
}

#[test]
fn wakers_name_who_woke_each_thread() {
    if !root_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cap = record_blocker(dir.path(), true);
    let (m, p) = offcpu_profile(&cap, true);
    eprintln!("recorder settings: {:?}", m.meta.extra);
    let woken = |thread: &str, by: &str| -> f64 {
        p.stacks
            .iter()
            .filter(|(f, _)| {
                f[0].name.starts_with(thread)
                    && f.iter().any(|x| x.name.starts_with(&format!("[woken by {by} (")))
            })
            .map(|(_, v)| *v as f64 / 1e6)
            .sum()
    };
    let reader_total = per_thread_ms(&p)["reader"];
    // Every read wait ends with the writer's write.
    let reader_stacks: Vec<String> = p
        .stacks
        .iter()
        .filter(|(f, _)| f[0].name.starts_with("reader"))
        .map(|(f, v)| format!("{} {v}", f.iter().map(|x| &*x.name).collect::<Vec<_>>().join(";")))
        .collect();
    assert!(
        woken("reader", "writer") > 0.95 * reader_total,
        "reader woken by writer {:.1} of {reader_total:.1} ms; the reader's stacks:\n{}",
        woken("reader", "writer"),
        reader_stacks.join("\n")
    );
    // The main thread signals the condition variable.
    assert!(
        woken("condvar", "blocker") > 250.0,
        "condvar woken by main {:.1} ms",
        woken("condvar", "blocker")
    );
    // The writer's stack at the wakeup is there, leaf first after the marker.
    let writer_stack = p.stacks.iter().any(|(f, _)| {
        f.windows(2).any(|w| w[0].name.starts_with("[woken by writer") && w[1].name.contains("write"))
    });
    assert!(writer_stack, "no write frame next to [woken by writer]");
}
