//! Python frames from real interpreters: every CPython profrec supports that
//! is installed here (pyenv's 3.8 to 3.13 and Debian's python3.11), walked
//! in BPF and merged offline (root: these load BPF programs).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use common::{profile, root_or_skip};
use profcap_analyze::symbolize::FrameKind;
use profcap_analyze::{build, Grouping, Material, Profile, ProfileOptions};
use profcap_recorder::{record, RecordOptions, Target};

fn program(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/programs").join(name).display().to_string()
}

/// pyenv's CPython 3.`minor` (the newest patch release installed).
fn pyenv(minor: u32) -> PathBuf {
    let root = std::env::var_os("PYENV_ROOT").map_or_else(|| PathBuf::from("/root/.pyenv"), PathBuf::from);
    let mut found: Vec<PathBuf> = std::fs::read_dir(root.join("versions"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&format!("3.{minor}.")))
        .map(|e| e.path().join(format!("bin/python3.{minor}")))
        .filter(|p| p.exists())
        .collect();
    found.sort();
    found.pop().unwrap_or_else(|| panic!("CPython 3.{minor} is needed: `pyenv install 3.{minor}`"))
}

/// Every interpreter the tests run: (label, path).
fn interpreters() -> Vec<(String, PathBuf)> {
    let mut v: Vec<(String, PathBuf)> = (8..=13).map(|m| (format!("pyenv 3.{m}"), pyenv(m))).collect();
    v.push(("Debian python3.11".into(), PathBuf::from("/usr/bin/python3.11")));
    v
}

fn run(cap: &Path, argv: Vec<String>, freq: u64) {
    let mut o = RecordOptions::new(cap.to_owned(), Target::Spawn(argv));
    o.freq = freq;
    let summary = record(&o, Arc::new(AtomicBool::new(false))).unwrap();
    assert_eq!(summary.child_exit, Some(0));
}

fn names(frames: &[profcap_analyze::symbolize::Frame]) -> Vec<&str> {
    frames.iter().map(|f| &*f.name).collect()
}

/// The Python function name of a frame name: `py::mod.Cls.f (file:1)` -> `Cls.f`.
fn function(name: &str) -> Option<&str> {
    let rest = name.strip_prefix("py::")?;
    let head = rest.split(" (").next()?;
    Some(head.split_once('.').map_or(head, |(_, f)| f))
}

/// Of the samples in `spin`, the share (percent) whose Python frames are
/// the whole chain of callers, in order and nothing else between them.
fn full_chain_share(p: &Profile) -> (f64, i64) {
    let (mut full, mut all) = (0i64, 0i64);
    for (frames, v) in &p.stacks {
        let py: Vec<&str> =
            frames.iter().filter(|f| f.kind == FrameKind::Python).filter_map(|f| function(&f.name)).collect();
        if py.last() != Some(&"spin") {
            continue;
        }
        all += v;
        // Before 3.11 code objects have no qualified name: `step`, not `Worker.step`.
        let step = if py.contains(&"Worker.step") { "Worker.step" } else { "step" };
        let chain = |work| vec!["<module>", "main", "level1", "level2", step, work, "spin"];
        if py == chain("hot") || py == chain("cold") {
            full += v;
        }
    }
    (if all == 0 { 0.0 } else { 100.0 * full as f64 / all as f64 }, all)
}

/// The value of stacks with a Python frame of function `f`.
fn value_in(p: &Profile, f: &str) -> i64 {
    p.stacks
        .iter()
        .filter(|(frames, _)| frames.iter().any(|x| function(&x.name) == Some(f)))
        .map(|(_, v)| v)
        .sum()
}

#[test]
fn every_installed_cpython_names_its_functions_with_all_their_callers() {
    if !root_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (label, python) in interpreters() {
        let cap = dir.path().join("py.cap");
        run(&cap, vec![python.display().to_string(), program("pywork.py"), "1.5".into()], 499);
        let (m, p) = profile(&cap, Grouping::default());
        let (full, in_spin) = full_chain_share(&p);
        let (hot, cold) = (value_in(&p, "hot"), value_in(&p, "cold"));
        let hot_share = 100.0 * hot as f64 / (hot + cold).max(1) as f64;
        eprintln!(
            "{label}: {} of {} samples with Python frames, {in_spin} in spin, full chain {full:.1}%, hot {hot_share:.1}%",
            m.python_samples, m.sample_count
        );
        assert!(in_spin as f64 > 0.8 * m.sample_count as f64, "{label}: most samples are in spin");
        assert!(full >= 99.0, "{label}: the full Python caller chain in {full:.1}% of spin's samples");
        // 3 units of work against 1: 75%, within sampling noise of ~700 samples.
        assert!((hot_share - 75.0).abs() < 8.0, "{label}: hot {hot_share:.1}%");
        // Merged where the eval loop ran: native entry at the root, no eval
        // loop frame left where Python frames took its place.
        let merged: i64 = p
            .stacks
            .iter()
            .filter(|(f, _)| f.iter().any(|x| function(&x.name) == Some("spin")))
            .filter(|(f, _)| {
                f[0].name.as_ref() == "_start" && !names(f).contains(&"_PyEval_EvalFrameDefault")
            })
            .map(|(_, v)| v)
            .sum();
        assert!(merged as f64 >= 0.99 * in_spin as f64, "{label}: {merged} of {in_spin} merged under _start");
        // Lines come from the instruction offsets: spin's loop body.
        let source = std::fs::read_to_string(program("pywork.py")).unwrap();
        let line_of = |text: &str| source.lines().position(|l| l == text).unwrap() + 1;
        let loop_lines = [
            format!("spin (pywork.py:{})", line_of("    for i in range(n):")),
            format!("spin (pywork.py:{})", line_of("        x += i * i")),
        ];
        let mut o = ProfileOptions::default();
        o.symbolize.local_files = false;
        o.symbolize.lines = true;
        let lines = build(&m, &o).unwrap();
        let in_loop: i64 = lines
            .stacks
            .iter()
            .filter(|(f, _)| {
                f.iter()
                    .rev()
                    .find(|x| x.kind == FrameKind::Python)
                    .is_some_and(|x| loop_lines.iter().any(|l| x.name.contains(l.as_str())))
            })
            .map(|(_, v)| v)
            .sum();
        assert!(
            in_loop as f64 >= 0.9 * in_spin as f64,
            "{label}: {in_loop} of {in_spin} on spin's loop lines"
        );
    }
}

/// The capture's Python frame names, by thread.
fn python_names_by_tid(m: &Material) -> std::collections::BTreeMap<u32, std::collections::BTreeSet<String>> {
    let mut o = ProfileOptions::default();
    o.symbolize.local_files = false;
    o.grouping.thread = true;
    let p = build(m, &o).unwrap();
    let mut out: std::collections::BTreeMap<u32, std::collections::BTreeSet<String>> = Default::default();
    for (frames, _) in &p.stacks {
        // The thread root frame reads "name (tid)".
        let Some(tid) = frames[0].name.rsplit('(').next().and_then(|t| t.trim_end_matches(')').parse().ok())
        else {
            continue;
        };
        out.entry(tid).or_default().extend(
            frames
                .iter()
                .filter(|f| f.kind == FrameKind::Python)
                .filter_map(|f| function(&f.name))
                .map(String::from),
        );
    }
    out
}

#[test]
fn threads_subprocesses_freed_code_deep_recursion_and_native_threads_never_mislead() {
    if !root_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for minor in [8, 11, 12, 13] {
        let cap = dir.path().join("hostile.cap");
        run(&cap, vec![pyenv(minor).display().to_string(), program("pyhostile.py"), "3".into()], 499);
        let (m, p) = profile(&cap, Grouping::default());
        let label = format!("3.{minor}");
        // Each thread in its own function, never the other's.
        let by_tid = python_names_by_tid(&m);
        let tid_of =
            |f: &str| -> Vec<u32> { by_tid.iter().filter(|(_, n)| n.contains(f)).map(|(t, _)| *t).collect() };
        let (a, b) = (tid_of("thread_a"), tid_of("thread_b"));
        assert_eq!(a.len(), 1, "{label}: thread_a seen on one thread: {a:?}");
        assert_eq!(b.len(), 1, "{label}: thread_b seen on one thread: {b:?}");
        assert_ne!(a, b, "{label}: the threads' frames are their own");
        // The subprocess has Python frames of its own.
        assert!(value_in(&p, "child_work") > 0, "{label}: the child process's work is named");
        // Freed and re-made code objects: a churn_N frame always comes from
        // its own code object (`<churn N>`), never a dead one at its address.
        let mut churned = 0;
        for (frames, v) in &p.stacks {
            for f in frames.iter().filter(|f| f.name.contains("churn_")) {
                let n = f.name.split("churn_").nth(1).unwrap().split(' ').next().unwrap();
                assert!(
                    f.name.contains(&format!("<churn {n}>")),
                    "{label}: {} named by another code object",
                    f.name
                );
                churned += v;
            }
        }
        assert!(churned > 0, "{label}: churned functions were sampled");
        // Deeper than the walk's limit: the innermost frames are kept and
        // the cut is counted.
        let deepest = p
            .stacks
            .iter()
            .map(|(f, _)| f.iter().filter(|x| function(&x.name) == Some("deep")).count())
            .max()
            .unwrap_or(0);
        assert!((120..=128).contains(&deepest), "{label}: {deepest} deep frames");
        let cut = m
            .lost
            .iter()
            .find(|l| l.source == "python" && l.reason.contains("more than 128"))
            .map_or(0, |l| l.count);
        assert!(cut > 0, "{label}: walks cut at the limit are counted");
        // A native thread with no Python thread state: native frames only,
        // and its walks are counted as such.
        let native: Vec<&Vec<profcap_analyze::symbolize::Frame>> = p
            .stacks
            .iter()
            .map(|(f, _)| f)
            .filter(|f| {
                f.last().is_some_and(|l| l.name.contains("strlen")) && names(f).contains(&"start_thread")
            })
            .collect();
        assert!(!native.is_empty(), "{label}: the native thread was sampled");
        for f in &native {
            assert!(f.iter().all(|x| x.kind != FrameKind::Python), "{label}: {:?}", names(f));
        }
        let no_thread = m
            .lost
            .iter()
            .find(|l| l.source == "python" && l.reason == "thread state not found")
            .map_or(0, |l| l.count);
        assert!(no_thread >= native.len() as u64, "{label}: {no_thread} walks without a thread state");
        eprintln!(
            "{label}: python losses {:?}",
            m.lost.iter().filter(|l| l.source == "python").collect::<Vec<_>>()
        );
    }
}

#[test]
fn an_unsupported_python_gets_one_warning_and_keeps_its_native_stacks() {
    if !root_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cap = dir.path().join("py37.cap");
    let python = pyenv(7);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_profrec"))
        .args(["-F", "199", "-o"])
        .arg(&cap)
        .arg("--")
        .arg(&python)
        .args([program("pywork.py"), "1".into()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stderr.matches("CPython 3.7 is not supported").count(), 1, "one warning: {stderr}");
    let (m, p) = profile(&cap, Grouping::default());
    assert_eq!(m.python_samples, 0);
    let eval: i64 =
        p.stacks.iter().filter(|(f, _)| names(f).contains(&"_PyEval_EvalFrameDefault")).map(|(_, v)| v).sum();
    assert!(eval as f64 > 0.8 * p.total as f64, "native stacks through the eval loop: {eval} of {}", p.total);
}

/// The share (percent) of a profile's value whose stack has a Python frame of `f`.
fn share_in(p: &Profile, f: &str) -> f64 {
    100.0 * value_in(p, f) as f64 / p.total.max(1) as f64
}

#[test]
fn blocked_and_allocating_python_keeps_its_python_frames() {
    if !root_or_skip() {
        return;
    }
    use profcap_format::SampleKind;
    let dir = tempfile::tempdir().unwrap();
    for minor in [8, 12, 13] {
        let label = format!("3.{minor}");
        let cap = dir.path().join("blocks.cap");
        let argv = vec![pyenv(minor).display().to_string(), program("pyblocks.py"), "2".into()];
        let mut o = RecordOptions::new(cap.clone(), Target::Spawn(argv));
        o.freq = 99;
        o.offcpu = true;
        o.mem = profcap_recorder::MemMode::Sampled;
        o.sample_bytes = 64 << 10;
        let summary = record(&o, Arc::new(AtomicBool::new(false))).unwrap();
        assert_eq!(summary.child_exit, Some(0));
        let m = Material::load(&cap, true).unwrap();
        let view = |kind| {
            let mut o = ProfileOptions::default();
            o.symbolize.local_files = false;
            o.filter.kind = Some(kind);
            build(&m, &o).unwrap()
        };
        // Blocked in time.sleep's syscall (select before 3.11,
        // clock_nanosleep after): the Python caller is named.
        let off = view(SampleKind::OffCpu);
        let in_wait = share_in(&off, "wait_here");
        eprintln!("{label}: off-CPU {in_wait:.1}% in wait_here, {} blocks", off.samples);
        assert!(off.samples >= 100, "{label}: blocks were recorded");
        assert!(in_wait >= 90.0, "{label}: {in_wait:.1}% of the blocked time in wait_here");
        // Sampled allocations: the buffers are make_big's, through keep.
        let alloc = view(SampleKind::Alloc);
        let (in_make, in_keep) = (share_in(&alloc, "make_big"), share_in(&alloc, "keep"));
        eprintln!("{label}: {} allocations sampled, {in_make:.1}% of the bytes in make_big", alloc.samples);
        assert!(alloc.samples >= 20, "{label}: allocations were sampled");
        assert!(in_make >= 90.0 && in_keep >= in_make, "{label}: make_big {in_make:.1}%, keep {in_keep:.1}%");
    }
}

#[test]
fn x_perf_trampolines_are_python_frames_and_never_doubled() {
    if !root_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cap = dir.path().join("xperf.cap");
    let argv =
        vec![pyenv(12).display().to_string(), "-X".into(), "perf".into(), program("pywork.py"), "1".into()];
    run(&cap, argv, 499);
    let (m, mut merged) = profile(&cap, Grouping::default());
    // Samples taken before profrec recognized the interpreter (its first
    // tens of ms; longer with a debug build, which parses libpython
    // slowly) have no walk, only the perf map's trampolines, whose names
    // have no line: those are not the merge's to complete. They used to
    // fail this test one run in five at 98.6-99.0%.
    let walked = |frames: &[profcap_analyze::symbolize::Frame]| {
        frames.iter().any(|f| f.kind == FrameKind::Python && f.name.contains(".py:"))
    };
    let before: i64 = merged.stacks.iter().filter(|(f, _)| !walked(f)).map(|(_, v)| v).sum();
    merged.stacks.retain(|(f, _)| walked(f));
    assert!(
        (before as f64) < 0.1 * merged.total as f64,
        "{before} of {} samples before the walk",
        merged.total
    );
    // Merged: the walk's frames only (a trampoline's name has no line).
    let (full, in_spin) = full_chain_share(&merged);
    assert!(in_spin > 0 && full >= 99.0, "full chain in {full:.1}% of {in_spin}");
    let doubled = merged
        .stacks
        .iter()
        .flat_map(|(f, _)| f)
        .filter(|f| f.name.as_ref() == "py::pywork.hot (pywork.py)")
        .count();
    assert_eq!(doubled, 0, "trampoline frames left beside the walk's");
    // Native: the perf map's trampolines, shown as Python frames. (Native
    // unwinding stops at the first trampoline from the leaf: 3.12's keep no
    // frame pointer and have no unwind rules, so only the innermost shows.)
    let mut o = ProfileOptions::default();
    o.symbolize.local_files = false;
    o.symbolize.python = profcap_analyze::symbolize::PythonFrames::Native;
    let native = build(&m, &o).unwrap();
    let trampolines: i64 = native
        .stacks
        .iter()
        .filter(|(f, _)| {
            f.iter().any(|x| x.kind == FrameKind::Python && x.name.as_ref() == "py::pywork.spin (pywork.py)")
        })
        .map(|(_, v)| v)
        .sum();
    assert!(
        trampolines as f64 > 0.5 * in_spin as f64,
        "{trampolines} of {in_spin} samples in spin's trampoline"
    );
}

#[test]
fn with_mem_python_every_python_object_allocation_is_seen_and_named() {
    if !root_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Debian's python3.11 has the allocator in its executable; pyenv's in libpython (RUNPATH).
    for (label, python) in [("Debian 3.11", PathBuf::from("/usr/bin/python3.11")), ("pyenv 3.12", pyenv(12))]
    {
        let cap = dir.path().join("pyallocs.cap");
        let mut o = RecordOptions::new(
            cap.clone(),
            Target::Spawn(vec![python.display().to_string(), program("pyallocs.py")]),
        );
        o.freq = 99;
        o.mem = profcap_recorder::MemMode::Attach;
        o.mem_python = true;
        let summary = record(&o, Arc::new(AtomicBool::new(false))).unwrap();
        assert_eq!(summary.child_exit, Some(0));
        let m = Material::load(&cap, true).unwrap();
        // bytes(10000) is one PyObject_Calloc of 10033 bytes, made 1000 times in make().
        let (mut sized, mut in_make) = (0u64, 0u64);
        m.for_each_batch(true, |b| {
            for a in b.allocs.iter().filter(|a| a.size == 10033) {
                sized += a.weight.max(1);
                let names: Vec<&str> = m
                    .stacks
                    .get(&a.stack_id)
                    .map(|s| {
                        s.python
                            .iter()
                            .map(|&f| profcap_format::python::PyFrame::decode(f).code)
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|c| m.py_code.get(&c).map(|code| code.name.as_str()))
                    .collect();
                if names.first() == Some(&"make") {
                    in_make += a.weight.max(1);
                }
            }
        })
        .unwrap();
        eprintln!("{label}: {sized} allocations of 10033 bytes, {in_make} named make");
        assert_eq!(sized, 1000, "{label}: every bytes(10000) allocation, once");
        assert_eq!(in_make, 1000, "{label}: each in make()");
    }
}
