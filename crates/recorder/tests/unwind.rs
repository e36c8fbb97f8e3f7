//! DWARF unwinding of real programs built without frame pointers (root:
//! these load BPF programs; see record.rs). Each asserts the complete chain
//! of callers a frame-pointer walk loses.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use common::{fixture, profile, root_or_skip, shares};
use profcap_analyze::symbolize::TRUNCATED;
use profcap_analyze::{Grouping, Profile};
use profcap_format::StackEnd;
use profcap_recorder::{record, RecordOptions, Target};

fn run(cap: &Path, argv: &[String], tune: impl FnOnce(&mut RecordOptions)) {
    let mut o = RecordOptions::new(cap.to_owned(), Target::Spawn(argv.to_vec()));
    o.freq = 999;
    tune(&mut o);
    let summary = record(&o, Arc::new(AtomicBool::new(false))).unwrap();
    assert_eq!(summary.child_exit, Some(0));
}

/// Share of the value (percent) whose stack has `chain` as consecutive
/// frames, among the stacks whose leaf is `chain`'s last frame.
fn chain_share(p: &Profile, chain: &[&str]) -> (f64, i64) {
    let leaf = chain[chain.len() - 1];
    let (mut with, mut all) = (0i64, 0i64);
    for (frames, v) in &p.stacks {
        let names: Vec<&str> = frames.iter().map(|f| &*f.name).collect();
        if names.last() != Some(&leaf) {
            continue;
        }
        all += v;
        if names.windows(chain.len()).any(|w| w == chain) {
            with += v;
        }
    }
    (if all == 0 { 0.0 } else { 100.0 * with as f64 / all as f64 }, all)
}

/// Share of the value (percent) whose outermost frame is one of `roots`.
fn rooted_share(p: &Profile, roots: &[&str]) -> f64 {
    let rooted: i64 = p
        .stacks
        .iter()
        .filter(|(f, _)| f.first().is_some_and(|r| roots.contains(&&*r.name)))
        .map(|(_, v)| v)
        .sum();
    100.0 * rooted as f64 / p.total as f64
}

fn nofp(args: &[&str]) -> Vec<String> {
    let mut v = vec![fixture("nofp").display().to_string()];
    v.extend(args.iter().map(|s| s.to_string()));
    v
}

#[test]
fn c_without_frame_pointers_keeps_every_caller_through_large_frames_and_libc() {
    if !root_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cap = dir.path().join("nofp.cap");
    run(&cap, &nofp(&["2"]), |_| {});
    let (m, p) = profile(&cap, Grouping::default());
    let unwound: u64 = m.stack_ends.iter().filter(|(e, _)| **e != StackEnd::Unknown).map(|(_, n)| n).sum();
    let complete = m.stack_ends.get(&StackEnd::Root).copied().unwrap_or(0);
    eprintln!("stack ends: {:?}", m.stack_ends);
    assert_eq!(unwound, m.sample_count, "every sample was unwound from copied stack bytes");
    assert!(complete as f64 >= 0.99 * unwound as f64, "complete {complete} of {unwound}");
    assert!(rooted_share(&p, &["_start"]) >= 99.0, "stacks reach the process entry");
    let s = shares(&p, &["main", "run_deep", "run_sort"]);
    eprintln!("main/run_deep/run_sort: {s:?}");
    assert!(s[0] >= 99.0, "main is on every stack: {:.1}%", s[0]);
    assert!((s[1] - 50.0).abs() < 12.0 && (s[2] - 50.0).abs() < 12.0, "the two phases take turns: {s:?}");
    let (deep, n) = chain_share(&p, &["main", "run_deep", "deep_a", "deep_b", "deep_c", "spin"]);
    assert!(n > 200 && deep >= 99.0, "spin's callers through the 2 KiB frames: {deep:.1}% of {n}");
    let callback: i64 = p
        .stacks
        .iter()
        .filter(|(f, _)| f.last().is_some_and(|l| &*l.name == "compare_slow"))
        .filter(|(f, _)| f.iter().any(|x| &*x.name == "run_sort"))
        // libc's qsort between them (named qsort_r, __qsort_r or
        // __GI___qsort_r, whichever of its aliases the symbols give)
        .filter(|(f, _)| f.iter().any(|x| x.name.contains("qsort")))
        .map(|(_, v)| v)
        .sum();
    let all_cb: i64 = p
        .stacks
        .iter()
        .filter(|(f, _)| f.last().is_some_and(|l| &*l.name == "compare_slow"))
        .map(|(_, v)| v)
        .sum();
    assert!(
        all_cb > 100 && callback as f64 >= 0.99 * all_cb as f64,
        "comparator under run_sort: {callback}/{all_cb}"
    );
}

#[test]
fn a_stack_copy_too_short_for_the_stack_ends_in_a_counted_truncated_frame() {
    if !root_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cap = dir.path().join("short.cap");
    // deep_a..deep_c alone take 6 KiB of stack.
    run(&cap, &nofp(&["1"]), |o| o.stack_bytes = 1024);
    let (m, p) = profile(&cap, Grouping::default());
    let cut = m.stack_ends.get(&StackEnd::StackBytes).copied().unwrap_or(0);
    let truncated: u64 = m.stack_ends.iter().filter(|(e, _)| e.is_truncated()).map(|(_, n)| n).sum();
    eprintln!("stack ends: {:?}", m.stack_ends);
    assert!(cut as f64 > 0.3 * m.sample_count as f64, "most deep stacks are cut: {cut}");
    let marked: i64 = p
        .stacks
        .iter()
        .filter(|(f, _)| f.first().is_some_and(|r| &*r.name == TRUNCATED))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(marked as u64, truncated, "every cut stack, and only those, starts at {TRUNCATED}");
    let info = profcap_analyze::info::info(&m, (1, 3));
    assert_eq!(info.unwinding.truncated.get("copied stack bytes ran out").copied(), Some(cut));
}

#[test]
fn blocked_threads_without_frame_pointers_keep_their_callers() {
    if !root_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cap = dir.path().join("sleep.cap");
    run(&cap, &nofp(&["1", "sleep"]), |o| {
        o.offcpu = true;
        o.cpu = false;
    });
    let (_, p) = profile(&cap, Grouping::default());
    assert!(p.samples > 200, "~450 naps of 2 ms: {}", p.samples);
    let s = shares(&p, &["main", "run_sleep", "nap", "usleep"]);
    eprintln!("off-CPU main/run_sleep/nap/usleep: {s:?}");
    assert!(s.iter().all(|&x| x >= 99.0), "the sleeping chain is complete: {s:?}");
}

#[test]
fn go_frameless_leaf_keeps_its_caller_through_debug_frame() {
    if !root_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cap = dir.path().join("go.cap");
    run(&cap, &[fixture("goleaf").display().to_string(), "1.5".into()], |_| {});
    let (_, p) = profile(&cap, Grouping::default());
    let (chain, n) = chain_share(&p, &["main.main", "main.hotA", "main.levelA", "main.spin"]);
    eprintln!("main.spin under main.hotA;main.levelA: {chain:.1}% of {n}");
    assert!(n > 500 && chain >= 99.0, "{chain:.1}% of {n}");
    assert!(rooted_share(&p, &["runtime.goexit.abi0", "runtime.clone.abi0", "runtime.rt0_go.abi0"]) >= 98.0);
}

#[test]
fn rust_release_build_without_frame_pointers_is_unwound() {
    if !root_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cap = dir.path().join("rust.cap");
    run(&cap, &[fixture("rust_split_release").display().to_string(), "1.5".into()], |_| {});
    let (_, p) = profile(&cap, Grouping::default());
    let s = shares(&p, &["rust_split::main", "rust_split::parse_records", "rust_split::render_output"]);
    eprintln!("main/parse/render: {s:?}");
    assert!(s[0] >= 99.0, "main on every stack: {s:?}");
    assert!((s[1] - 66.7).abs() < 6.0 && (s[2] - 33.3).abs() < 6.0, "{s:?}");
    assert!(rooted_share(&p, &["_start"]) >= 99.0);
}

#[test]
fn kept_raw_stacks_unwind_offline_exactly_as_on_the_box() {
    if !root_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cap = dir.path().join("keep.cap");
    run(&cap, &nofp(&["1"]), |o| o.keep_stacks = true);
    let mut m = profcap_analyze::Material::load(&cap, true).unwrap();
    // A sample whose stack could not be read (a page not present) has none to keep.
    assert!(m.raw_stacks as f64 >= 0.99 * m.sample_count as f64, "{} of {}", m.raw_stacks, m.sample_count);
    let mut opts = profcap_analyze::SymbolizeOptions::default();
    opts.local_files = false; // the capture's own unwind tables only
    let r = m.unwind_raw_stacks(true, &opts).unwrap();
    assert_eq!(r.samples, m.raw_stacks);
    assert_eq!(r.same_as_recorded, r.samples, "samples unwound differently offline: {:?}", r.differing);
}

/// A stripped copy of nofp and its detached debug file under `dir/debug`
/// (`.build-id/ab/cdef….debug`), as Debian's -dbgsym packages install them.
fn stripped_nofp(dir: &Path) -> String {
    use std::process::Command;
    let exe = dir.join("nofp-stripped");
    let debug = dir.join("nofp.debug");
    let ok = |c: &mut Command| assert!(c.status().unwrap().success(), "{c:?}");
    ok(Command::new("objcopy").arg("--only-keep-debug").arg(fixture("nofp")).arg(&debug));
    ok(Command::new("strip").arg("--strip-all").arg("-o").arg(&exe).arg(fixture("nofp")));
    let id = profcap_format::elf::build_id(&std::fs::read(&exe).unwrap()).expect("build id");
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let at = dir.join("debug/.build-id").join(&hex[..2]);
    std::fs::create_dir_all(&at).unwrap();
    std::fs::rename(&debug, at.join(format!("{}.debug", &hex[2..]))).unwrap();
    exe.display().to_string()
}

#[test]
fn stripped_objects_are_named_from_host_debug_files_or_grouped_by_function() {
    if !root_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = stripped_nofp(dir.path());
    let debug_dir = dir.path().join("debug");
    // With the debug file: its symbols are embedded, also for --embed full.
    for embed in [profcap_format::elf::EmbedMode::Symbols, profcap_format::elf::EmbedMode::Full] {
        let cap = dir.path().join(format!("{embed:?}.cap"));
        run(&cap, &[exe.clone(), "1".into()], |o| {
            o.debug_dirs = vec![debug_dir.clone()];
            o.embed = embed;
        });
        let (_, p) = profile(&cap, Grouping::default());
        let s = shares(&p, &["main", "run_deep", "deep_a", "spin"]);
        eprintln!("{embed:?}: main/run_deep/deep_a/spin {s:?}");
        assert!(
            s[0] >= 99.0 && s[1] > 30.0 && (s[2] - s[1]).abs() < 2.0 && (s[3] - s[1]).abs() < 2.0,
            "{s:?}"
        );
    }
    // Without it: no names, but one frame per function (its FDE's start),
    // not one per sampled address.
    let cap = dir.path().join("nodebug.cap");
    run(&cap, &[exe.clone(), "1".into()], |o| o.debug_dirs = Vec::new());
    let (_, p) = profile(&cap, Grouping::default());
    let leaves: std::collections::BTreeSet<&str> = p
        .stacks
        .iter()
        .filter_map(|(f, _)| f.last())
        .filter(|l| l.name.starts_with("nofp-stripped+0x"))
        .map(|l| &*l.name)
        .collect();
    eprintln!("unnamed leaf functions: {leaves:?}");
    // spin and compare_slow, give or take a frame interrupted in a caller.
    assert!(!leaves.is_empty() && leaves.len() <= 6, "{leaves:?}");
}

#[test]
fn sampled_allocations_without_frame_pointers_keep_their_callers() {
    if !root_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cap = dir.path().join("alloc.cap");
    run(&cap, &nofp(&["1", "alloc"]), |o| {
        o.mem = profcap_recorder::MemMode::Sampled;
        // A pick per MiB (some 300 a second here): each carries its stack
        // bytes (past a quarter-full ring, picks go with frame pointers only).
        o.sample_bytes = 1 << 20;
    });
    // Picks that carried stack bytes were unwound with DWARF (their stack
    // says why its walk ended); a pick made while the ring was over a
    // quarter full (a recorder starved of CPU) went with its frame-pointer
    // frames by design, and says Unknown. The DWARF claim is checked on the
    // former; the latter are counted.
    let m = profcap_analyze::Material::load(&cap, true).unwrap();
    let mut opts = profcap_analyze::SymbolizeOptions::default();
    opts.local_files = false;
    let mut sym = profcap_analyze::symbolize::Symbolizer::new(&m, opts);
    let gens = m.generations();
    let (mut unwound, mut chained, mut rooted, mut fallback) = (0u64, 0u64, 0u64, 0u64);
    m.for_each_batch(true, |b| {
        for a in &b.allocs {
            let bytes = a.size * a.weight;
            if m.stacks.get(&a.stack_id).is_none_or(|s| s.end == StackEnd::Unknown) {
                fallback += bytes;
                continue;
            }
            let generation =
                gens.get(&a.pid).map_or(0, |g| profcap_analyze::Material::generation_at(g, a.time_ns));
            let frames = sym.stack_frames(a.pid, generation, a.stack_id, false);
            let names: Vec<&str> = frames.iter().map(|f| &*f.name).collect();
            unwound += bytes;
            if names.last() == Some(&"grab") && names.windows(3).any(|w| w == ["main", "run_alloc", "grab"]) {
                chained += bytes;
            }
            if names.first() == Some(&"_start") {
                rooted += bytes;
            }
        }
    })
    .unwrap();
    let share = |x: u64| 100.0 * x as f64 / unwound.max(1) as f64;
    eprintln!(
        "DWARF-unwound picks: {unwound} bytes, {:.1}% under main;run_alloc;grab, {:.1}% from _start; \
         frame-pointer fallback: {fallback} bytes",
        share(chained),
        share(rooted)
    );
    assert!(unwound > 0, "no pick carried its stack");
    // (printf's stdio buffer is the one allocation outside grab.)
    assert!(share(chained) >= 99.0, "{:.1}%", share(chained));
    assert!(share(rooted) >= 99.0, "allocation stacks reach the process entry: {:.1}%", share(rooted));
}
