//! Several captures at once: directories, sets, wall-clock ranges that
//! select files, and the commands that read one capture saying so.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures").join(case).join("capture.cap")
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_profanalyze")).args(args).output().unwrap()
}

fn ok(args: &[&str]) -> String {
    let o = run(args);
    assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn fails(args: &[&str]) -> String {
    let o = run(args);
    assert!(!o.status.success(), "{args:?} should fail");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Folded output as stack -> value.
fn folded(text: &str) -> BTreeMap<String, i64> {
    let mut m = BTreeMap::new();
    for line in text.lines() {
        let (stack, v) = line.rsplit_once(' ').unwrap();
        *m.entry(stack.to_owned()).or_default() += v.parse::<i64>().unwrap();
    }
    m
}

/// A directory holding these fixtures' captures, named apart.
fn directory(cases: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (i, case) in cases.iter().enumerate() {
        std::fs::copy(fixture(case), dir.path().join(format!("{i}-{case}.cap"))).unwrap();
    }
    // Not captures: skipped.
    std::fs::write(dir.path().join("notes.txt"), "not a capture").unwrap();
    std::fs::write(dir.path().join(".hidden.cap"), "").unwrap();
    dir
}

#[test]
fn a_directory_or_several_files_add_up_stack_by_stack() {
    let (a, b) = (fixture("cpu_split"), fixture("threads"));
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    let fa = folded(&ok(&["folded", a]));
    let fb = folded(&ok(&["folded", b]));
    let mut want = fa.clone();
    for (k, v) in &fb {
        *want.entry(k.clone()).or_default() += v;
    }
    assert_eq!(folded(&ok(&["folded", a, b])), want, "two files: the sum of each");
    let dir = directory(&["cpu_split", "threads"]);
    assert_eq!(folded(&ok(&["folded", dir.path().to_str().unwrap()])), want, "a directory: its captures");
    // The same capture twice: every stack doubled.
    let twice = folded(&ok(&["folded", a, a]));
    assert_eq!(twice, fa.iter().map(|(k, v)| (k.clone(), 2 * v)).collect::<BTreeMap<_, _>>());
    let top = ok(&["top", a, a, "-n", "3"]);
    let samples: i64 = fa.values().sum();
    assert!(top.contains(&format!("{} samples", 2 * samples)), "{top}");
    // A flame graph and pprof of the set.
    let out = tempfile::tempdir().unwrap();
    let svg = out.path().join("set.svg");
    ok(&["flame", dir.path().to_str().unwrap(), "-o", svg.to_str().unwrap()]);
    assert!(std::fs::read_to_string(&svg).unwrap().contains("work_a"));
    let pb = out.path().join("set.pb.gz");
    ok(&["pprof", a, b, "-o", pb.to_str().unwrap()]);
    assert!(std::fs::metadata(&pb).unwrap().len() > 100);
}

#[test]
fn a_wall_clock_range_reads_only_the_files_that_overlap_it() {
    // The fixtures were recorded one after the other: cpu_split from
    // 00:45:42.5 to 00:45:44.7 UTC, threads from 00:45:44.7, rust_split from 00:45:46.4.
    let dir = directory(&["cpu_split", "threads", "rust_split"]);
    let d = dir.path().to_str().unwrap();
    let only_first = ok(&["folded", d, "--from", "2026-11-25T00:45:40Z", "--to", "2026-11-25T00:45:44.5Z"]);
    assert_eq!(folded(&only_first), folded(&ok(&["folded", fixture("cpu_split").to_str().unwrap()])));
    let o = run(&["-v", "top", d, "--from", "2026-11-25T00:45:40Z", "--to", "2026-11-25T00:45:44.5Z"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("1 of 3 captures overlap"));
    // Half of cpu_split's time: about half its samples (the range becomes its own seconds).
    let all: i64 = folded(&only_first).values().sum();
    let half =
        folded(&ok(&["folded", d, "--from", "2026-11-25T00:45:42Z", "--to", "2026-11-25T00:45:43.6Z"]));
    let n: i64 = half.values().sum();
    assert!(n > all / 4 && n < all * 3 / 4, "{n} of {all}");
    // One that overlaps nothing says what the captures span.
    let err = fails(&["folded", d, "--from", "2026-11-26T00:00:00Z", "--to", "2026-11-26T01:00:00Z"]);
    assert!(err.contains("no capture overlaps") && err.contains("2026-11-25"), "{err}");
    let err = fails(&["folded", d, "--from", "2026-11-25T00:45:44Z", "--to", "3"]);
    assert!(err.contains("both"), "{err}");
    let err = fails(&["folded", d, "--from", "tomorrow"]);
    assert!(err.contains("time of day"), "{err}");
}

#[test]
fn commands_that_read_one_capture_say_how_to_narrow_the_input() {
    let dir = directory(&["cpu_split", "threads"]);
    let d = dir.path().to_str().unwrap();
    for cmd in ["heatmap", "timeline", "speedscope", "samples"] {
        let err = fails(&[cmd, d]);
        assert!(err.contains("reads one capture") && err.contains("--from/--to"), "{cmd}: {err}");
    }
    // Narrowed to one by time, it works.
    let out = tempfile::tempdir().unwrap();
    let svg = out.path().join("h.svg");
    ok(&[
        "heatmap",
        d,
        "--from",
        "2026-11-25T00:45:40Z",
        "--to",
        "2026-11-25T00:45:44.5Z",
        "-o",
        svg.to_str().unwrap(),
    ]);
    let alloc = fixture("allocs");
    let a = alloc.to_str().unwrap();
    let err = fails(&["top", a, a, "--kind", "inuse"]);
    assert!(err.contains("does not add up"), "{err}");
    ok(&["top", a, a, "--kind", "alloc"]);
    let err = fails(&["folded", out.path().to_str().unwrap()]);
    assert!(err.contains("holds no capture files"), "{err}");
}

#[test]
fn diff_compares_sets_and_info_lists_a_directory() {
    let a = fixture("cpu_split");
    let a = a.to_str().unwrap();
    let text = ok(&["diff", &format!("{a},{a}"), a]);
    let samples: i64 = folded(&ok(&["folded", a])).values().sum();
    assert!(text.contains(&format!("({} samples), B", 2 * samples)), "{text}");
    let dir = directory(&["cpu_split", "threads"]);
    let list = ok(&["info", dir.path().to_str().unwrap()]);
    assert!(list.starts_with("2 captures, 2026-11-25 00:45:42"), "{list}");
    assert!(list.contains("0-cpu_split.cap") && list.contains("1-threads.cap"), "{list}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(&["info", "--json", dir.path().to_str().unwrap()])).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 2);
    assert!(json[0]["material_bytes"].as_u64().unwrap() > 0);
}
