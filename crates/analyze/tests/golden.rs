//! Golden tests: every `fixtures/<case>/capture.cap` is analyzed and the
//! outputs are compared with `fixtures/<case>/expected/`. After an intended
//! change of output, rewrite the expected files with
//! `PROFCAP_BLESS=1 cargo test -p profcap-analyze --test golden`.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::path::{Path, PathBuf};

use profcap_analyze::export::{flame_graph, write_folded, write_top, FlameOptions, TopBy};
use profcap_analyze::export::{timeline_svg, write_leaks};
use profcap_analyze::export::{write_info, write_requests};
use profcap_analyze::info::info;
use profcap_analyze::memory::{timeline, InuseAt, MemEvent};
use profcap_analyze::requests::{capture_spans, join, Selection, SpanIndex};
use profcap_analyze::{build, Material, ProfileOptions};
use profcap_format::SampleKind;
use std::sync::Arc;

const CASES: &[&str] = &[
    "cpu_split",
    "threads",
    "spawner",
    "rust_split",
    "blocker",
    "httpd",
    "allocs",
    "allocs_sampled",
    "nofp",
    "python",
];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// Options independent of this machine: only the capture's own material.
fn offline() -> ProfileOptions {
    let mut o = ProfileOptions::default();
    o.symbolize.local_files = false;
    o.strict = true;
    o
}

fn check(case: &str, name: &str, actual: &[u8]) {
    let path = fixtures().join(case).join("expected").join(name);
    if std::env::var_os("PROFCAP_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run with PROFCAP_BLESS=1 to create it", path.display()));
    if expected != actual {
        let got = path.with_extension("actual");
        std::fs::write(&got, actual).unwrap();
        panic!(
            "{} differs from the analyzer's output (written to {}); if the change is intended, \
             rerun with PROFCAP_BLESS=1",
            path.display(),
            got.display()
        );
    }
}

fn outputs(case: &str) {
    let cap = fixtures().join(case).join("capture.cap");
    let m = Material::load(&cap, true).unwrap();
    let p = build(&m, &offline()).unwrap();

    let mut folded = Vec::new();
    write_folded(&p, &mut folded).unwrap();
    check(case, "folded.txt", &folded);

    let mut top = Vec::new();
    write_top(&p, TopBy::Function, 30, &mut top).unwrap();
    write_top(&p, TopBy::Module, 10, &mut top).unwrap();
    check(case, "top.txt", &top);

    let mut svg = Vec::new();
    flame_graph(&p, &FlameOptions::default(), &mut svg).unwrap();
    check(case, "flame.svg", &svg);

    if m.kind_counts.contains_key("offcpu") {
        offcpu_outputs(case, &m);
    }
    if !m.io.is_empty() {
        request_outputs(case, &m);
    }
    if m.alloc_count > 0 {
        memory_outputs(case, &m);
    }
    if m.python_samples > 0 {
        python_outputs(case, &m);
    }

    // info without the absolute path, which differs between checkouts
    let mut i = info(&m, (1, 0));
    i.path = format!("fixtures/{case}/capture.cap");
    let mut text = Vec::new();
    write_info(&i, &mut text).unwrap();
    check(case, "info.txt", &text);
}

/// The other views of Python frames: Python only, native only, and the
/// lines being run.
fn python_outputs(case: &str, m: &Material) {
    use profcap_analyze::symbolize::PythonFrames;
    for (name, how) in
        [("python-only-folded.txt", PythonFrames::Only), ("native-folded.txt", PythonFrames::Native)]
    {
        let mut o = offline();
        o.symbolize.python = how;
        let mut folded = Vec::new();
        write_folded(&build(m, &o).unwrap(), &mut folded).unwrap();
        check(case, name, &folded);
    }
    let mut o = offline();
    o.symbolize.lines = true;
    o.symbolize.python = PythonFrames::Only;
    let mut top = Vec::new();
    write_top(&build(m, &o).unwrap(), TopBy::Function, 30, &mut top).unwrap();
    check(case, "lines-top.txt", &top);
}

/// Allocated bytes, bytes in use at the end and at the peak, the leak
/// table, and the in-use timeline.
fn memory_outputs(case: &str, m: &Material) {
    let profile = |kind, at, counts| {
        let mut o = offline();
        o.filter.kind = Some(kind);
        o.filter.inuse_at = at;
        o.filter.alloc_counts = counts;
        build(m, &o).unwrap()
    };
    for (name, kind, at) in [
        ("alloc-folded.txt", SampleKind::Alloc, InuseAt::End),
        ("inuse-end-folded.txt", SampleKind::Inuse, InuseAt::End),
        ("inuse-peak-folded.txt", SampleKind::Inuse, InuseAt::Peak),
    ] {
        let mut folded = Vec::new();
        write_folded(&profile(kind, at, false), &mut folded).unwrap();
        check(case, name, &folded);
    }
    let mut leaks = Vec::new();
    let (bytes, blocks) =
        (profile(SampleKind::Inuse, InuseAt::End, false), profile(SampleKind::Inuse, InuseAt::End, true));
    write_leaks(&bytes, &blocks, 20, 6, &mut leaks).unwrap();
    check(case, "leaks.txt", &leaks);
    let series = timeline(m, true, 500, |_: &MemEvent| true).unwrap();
    let svg = timeline_svg(&series, |p| m.process_name(p), m.mem_first_ns, "bytes in use");
    check(case, "memtimeline.svg", svg.as_bytes());
}

/// The request table, and the wall-clock folded stacks of each traced request.
fn request_outputs(case: &str, m: &Material) {
    let spans = capture_spans(m, Vec::new());
    let rows = join(m, &spans, &offline().symbolize, true).unwrap();
    let mut table = Vec::new();
    write_requests(&rows, &mut table).unwrap();
    check(case, "requests.txt", &table);
    for r in rows.iter().filter(|r| r.trace_id.is_some()) {
        let mut sel = Selection::default();
        sel.trace_ids = vec![r.trace_id.clone().unwrap()];
        let mut o = offline();
        o.filter.wall = true;
        o.filter.no_kernel = true;
        o.filter.spans = Some(Arc::new(SpanIndex::new(&sel.apply(spans.clone()))));
        let p = build(m, &o).unwrap();
        let mut folded = Vec::new();
        write_folded(&p, &mut folded).unwrap();
        check(case, &format!("trace-{}-wall-folded.txt", r.trace_id.as_deref().unwrap()), &folded);
    }
}

/// Off-CPU time per thread with wakers, and the wall-clock view.
fn offcpu_outputs(case: &str, m: &Material) {
    let mut o = offline();
    o.filter.kind = Some(profcap_format::SampleKind::OffCpu);
    o.filter.wakers = true;
    o.grouping.thread = true;
    let p = build(m, &o).unwrap();
    let mut folded = Vec::new();
    write_folded(&p, &mut folded).unwrap();
    check(case, "offcpu-wakers-folded.txt", &folded);
    let mut top = Vec::new();
    write_top(&p, TopBy::Function, 30, &mut top).unwrap();
    check(case, "offcpu-top.txt", &top);

    let mut o = offline();
    o.filter.wall = true;
    let p = build(m, &o).unwrap();
    let mut folded = Vec::new();
    write_folded(&p, &mut folded).unwrap();
    check(case, "wall-folded.txt", &folded);
    let mut svg = Vec::new();
    flame_graph(&p, &FlameOptions::default(), &mut svg).unwrap();
    check(case, "wall-flame.svg", &svg);
}

#[test]
fn golden_blocker() {
    outputs("blocker");
}

#[test]
fn golden_cpu_split() {
    outputs("cpu_split");
}

#[test]
fn golden_threads() {
    outputs("threads");
}

#[test]
fn golden_spawner() {
    outputs("spawner");
}

#[test]
fn golden_rust_split() {
    outputs("rust_split");
}

#[test]
fn golden_allocs() {
    outputs("allocs");
}

#[test]
fn golden_allocs_sampled() {
    outputs("allocs_sampled");
}

#[test]
fn golden_httpd() {
    outputs("httpd");
}

#[test]
fn golden_nofp() {
    outputs("nofp");
}

#[test]
fn golden_python() {
    outputs("python");
}

#[test]
fn fixture_nofp_raw_stacks_unwind_offline_exactly_as_recorded_on_the_box() {
    // Not golden: the replay of the unwinder itself. Every kept raw stack,
    // unwound here from the capture's embedded unwind tables alone, gives
    // the frames and the end profrec wrote for that sample.
    let mut m = Material::load(&fixtures().join("nofp/capture.cap"), true).unwrap();
    assert!(m.raw_stacks > 150, "{} raw stacks", m.raw_stacks);
    let r = m.unwind_raw_stacks(true, &offline().symbolize).unwrap();
    assert_eq!(r.samples, m.raw_stacks);
    assert_eq!(r.same_as_recorded, r.samples, "differing samples: {:?}", r.differing);
    assert_eq!(r.ends.get("complete").copied(), Some(r.samples), "{:?}", r.ends);
    // And the profile built on the new stacks is the recorded one.
    let again = build(&m, &offline()).unwrap();
    let recorded =
        build(&Material::load(&fixtures().join("nofp/capture.cap"), true).unwrap(), &offline()).unwrap();
    assert_eq!(again.stacks, recorded.stacks);
    // Every stack reaches main through the frames a frame-pointer walk loses.
    for (frames, _) in &recorded.stacks {
        let names: Vec<&str> = frames.iter().map(|f| &*f.name).collect();
        assert_eq!(names.first(), Some(&"_start"), "{names:?}");
        assert!(names.contains(&"main"), "{names:?}");
    }
}

#[test]
fn fixture_httpd_requests_show_the_work_each_asked_for() {
    // Not golden: the meaning behind requests.txt, checked directly.
    let m = Material::load(&fixtures().join("httpd/capture.cap"), true).unwrap();
    let rows = join(&m, &capture_spans(&m, Vec::new()), &offline().symbolize, true).unwrap();
    // (trace id, CPU ms asked, sleep ms asked), from fixtures/httpd/README.md
    let asked = [
        ("4bf92f3577b34da6a3ce929d0e0e4736", 120.0, 40.0),
        ("80f198ee56343ba864fe8b2a57d3eff7", 150.0, 0.0),
        ("5a1b2c3d4e5f6a7b", 20.0, 150.0),
        ("checkout-7781", 120.0, 100.0),
    ];
    for (trace, cpu, sleep) in asked {
        let r = rows.iter().find(|r| r.trace_id.as_deref() == Some(trace)).unwrap();
        let (on, off) = (r.on_cpu_ns as f64 / 1e6, r.off_cpu_ns as f64 / 1e6);
        assert!((on - cpu).abs() <= cpu * 0.1 + 3.0, "{trace}: on-CPU {on} ms, asked {cpu}");
        assert!((off - sleep).abs() <= sleep * 0.05 + 2.0, "{trace}: off-CPU {off} ms, asked {sleep}");
        assert_eq!((r.method.as_str(), r.status), ("GET", Some(200)));
    }
}

#[test]
fn fixture_allocs_shows_the_programs_exact_sizes() {
    // Not golden: the meaning behind alloc-folded.txt and inuse-*.txt,
    // checked against the table in fixtures/programs/allocs.c.
    let m = Material::load(&fixtures().join("allocs/capture.cap"), true).unwrap();
    let by_leaf = |kind, at| {
        let mut o = offline();
        o.filter.kind = Some(kind);
        o.filter.inuse_at = at;
        let p = build(&m, &o).unwrap();
        let mut out = std::collections::HashMap::new();
        for (frames, v) in &p.stacks {
            *out.entry(frames.last().unwrap().name.to_string()).or_insert(0i64) += v;
        }
        out
    };
    let alloc = by_leaf(SampleKind::Alloc, InuseAt::End);
    for (f, b) in [("keep_small", 100_000), ("churn", 4_096_000), ("zeroed", 100_000), ("grow", 2_096_128)] {
        assert_eq!(alloc[f], b, "{f}");
    }
    for (f, b) in [("burst", 8_388_608), ("aligned", 163_840), ("mapped", 3_145_728)] {
        assert_eq!(alloc[f], b, "{f}");
    }
    let end = by_leaf(SampleKind::Inuse, InuseAt::End);
    assert_eq!((end["grow"], end["mapped"], end.get("churn")), (1_048_576, 2_097_152, None));
    let peak = by_leaf(SampleKind::Inuse, InuseAt::Peak);
    assert_eq!((peak["burst"], peak.get("aligned")), (8_388_608, None));
}

#[test]
fn every_fixture_has_a_readme_and_a_golden_test() {
    for entry in std::fs::read_dir(fixtures()).unwrap() {
        let dir = entry.unwrap().path();
        if dir.join("capture.cap").exists() {
            let name = dir.file_name().unwrap().to_str().unwrap().to_owned();
            assert!(CASES.contains(&name.as_str()), "fixture {name} has no golden test");
            assert!(dir.join("README.md").exists(), "fixture {name} has no README.md");
        }
    }
}

#[test]
fn fixture_python_names_the_python_functions_under_their_callers() {
    // Not golden: the meaning, checked directly. hot gets 3 units of work, cold 1.
    let cap = fixtures().join("python/capture.cap");
    let m = Material::load(&cap, true).unwrap();
    let p = build(&m, &offline()).unwrap();
    let with = |f: &str| -> i64 {
        p.stacks.iter().filter(|(s, _)| s.iter().any(|x| x.name.starts_with(f))).map(|(_, v)| v).sum()
    };
    let (hot, cold) = (with("py::pywork.hot "), with("py::pywork.cold "));
    let share = 100.0 * hot as f64 / (hot + cold) as f64;
    assert!((share - 75.0).abs() < 8.0, "hot {share:.1}% of hot+cold");
    // Every stack in spin has the whole caller chain, rooted in the native entry.
    let chain = [
        "py::pywork.<module>",
        "py::pywork.main",
        "py::pywork.level1",
        "py::pywork.level2",
        "py::pywork.Worker.step",
    ];
    for (frames, _) in
        p.stacks.iter().filter(|(s, _)| s.iter().any(|x| x.name.starts_with("py::pywork.spin ")))
    {
        let py: Vec<&str> = frames
            .iter()
            .filter(|f| f.name.starts_with("py::"))
            .map(|f| f.name.split(' ').next().unwrap())
            .collect();
        assert_eq!(&py[..5], &chain, "{py:?}");
        assert_eq!(frames[0].name.as_ref(), "_start");
    }
    assert!(m.python_samples as f64 > 0.9 * m.sample_count as f64);
}

#[test]
fn fixture_cpu_split_shows_the_programs_schedule() {
    // Not golden: the meaning behind the golden files, checked directly.
    let cap = fixtures().join("cpu_split/capture.cap");
    let m = Material::load(&cap, true).unwrap();
    let p = build(&m, &offline()).unwrap();
    let rows = profcap_analyze::export::top_table(&p, TopBy::Function);
    let share =
        |n: &str| 100.0 * rows.iter().find(|r| &*r.name == n).map_or(0, |r| r.total) as f64 / p.total as f64;
    assert!((share("work_a") - 60.0).abs() < 5.0, "work_a {}", share("work_a"));
    assert!((share("work_b") - 30.0).abs() < 5.0, "work_b {}", share("work_b"));
    assert!((share("work_c") - 10.0).abs() < 4.0, "work_c {}", share("work_c"));
}
