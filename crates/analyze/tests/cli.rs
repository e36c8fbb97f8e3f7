//! The profanalyze binary: commands, outputs and every kind of bad input.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures").join(case).join("capture.cap")
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_profanalyze")).args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn info_as_text_and_json() {
    let cap = fixture("cpu_split");
    let reader = profcap_format::CaptureReader::open(&cap, Default::default()).unwrap();
    let n: usize = reader.map(|b| b.unwrap().samples.len()).sum();
    let o = run(&["info", cap.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains(&format!("samples:      {n} (cpu {n})")), "{}", stdout(&o));
    let o = run(&["info", "--json", cap.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["samples"], n);
    assert_eq!(v["sample_freq_hz"], 499);
    assert!(v["bytes_per_sample"].as_f64().unwrap() > 0.0);
}

#[test]
fn flame_folded_top_and_pprof_write_what_they_say() {
    let dir = tempfile::tempdir().unwrap();
    let cap = fixture("threads");
    let svg = dir.path().join("t.svg");
    let o = run(&["flame", cap.to_str().unwrap(), "-o", svg.to_str().unwrap(), "--no-local-files"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<?xml") && text.contains("alpha_work") && text.contains("On-CPU time"));

    let o = run(&["folded", cap.to_str().unwrap(), "--per-thread", "--no-local-files", "--comm", "alpha"]);
    let folded = stdout(&o);
    assert!(!folded.is_empty() && folded.lines().all(|l| l.starts_with("alpha (")), "{folded}");

    let o = run(&["top", cap.to_str().unwrap(), "--by", "module", "--no-local-files"]);
    assert!(stdout(&o).contains("threads"), "{}", stdout(&o));

    let pb = dir.path().join("t.pb.gz");
    let o = run(&["pprof", cap.to_str().unwrap(), "-o", pb.to_str().unwrap(), "--no-local-files"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let bytes = std::fs::read(&pb).unwrap();
    assert_eq!(&bytes[..2], &[0x1f, 0x8b], "gzip magic");
}

#[test]
fn pprof_output_is_read_by_go_tool_pprof() {
    let Ok(go) = which("go") else {
        panic!("`go` is needed to check pprof output (scripts/install-deps.sh installs golang-go)");
    };
    let dir = tempfile::tempdir().unwrap();
    let pb = dir.path().join("c.pb.gz");
    let cap = fixture("cpu_split");
    let o = run(&["pprof", cap.to_str().unwrap(), "-o", pb.to_str().unwrap(), "--no-local-files"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = Command::new(go)
        .args(["tool", "pprof", "-top", "-nodecount=40", pb.to_str().unwrap()])
        .env("HOME", dir.path())
        .env("GOCACHE", dir.path().join("cache"))
        .output()
        .unwrap();
    let out = stdout(&o);
    assert!(o.status.success(), "go tool pprof failed: {}", stderr(&o));
    assert!(out.contains("work_a") && out.contains("spin"), "{out}");
}

fn which(name: &str) -> Result<PathBuf, ()> {
    let path = std::env::var_os("PATH").ok_or(())?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file()).ok_or(())
}

#[test]
fn diff_reports_and_gates_regressions() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (fixture("cpu_split"), fixture("rust_split"));
    let svg = dir.path().join("d.svg");
    let o = run(&[
        "diff",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "-o",
        svg.to_str().unwrap(),
        "--no-local-files",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(std::fs::read_to_string(&svg).unwrap().contains("<svg"));
    assert!(stdout(&o).contains("rust_split::spin"), "{}", stdout(&o));
    // Comparing a capture with itself never regresses.
    let o = run(&[
        "diff",
        a.to_str().unwrap(),
        a.to_str().unwrap(),
        "--fail-if-regressed",
        "0.01",
        "--no-local-files",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    // rust_split::spin goes from 0% to ~97%: a regression for any threshold below that.
    let o = run(&[
        "diff",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--fail-if-regressed",
        "50",
        "--function",
        "^rust_split::",
        "--no-local-files",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stdout(&o).contains("REGRESSED: rust_split::spin"), "{}", stdout(&o));
    let o = run(&[
        "diff",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--fail-if-regressed",
        "50",
        "--function",
        "^nothing$",
    ]);
    assert_eq!(o.status.code(), Some(0));
}

#[test]
fn missing_file_is_a_clear_error() {
    let o = run(&["info", "/nonexistent/x.cap"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cannot open capture /nonexistent/x.cap"), "{}", stderr(&o));
}

#[test]
fn not_a_capture_and_newer_versions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.cap");
    std::fs::write(&junk, b"this is not a capture at all").unwrap();
    let o = run(&["top", junk.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not a profcap capture"), "{}", stderr(&o));

    let mut bytes = std::fs::read(fixture("cpu_split")).unwrap();
    bytes[8] = 9; // major version 9
    let minor = u16::from_le_bytes([bytes[10], bytes[11]]);
    let newer = dir.path().join("newer.cap");
    std::fs::write(&newer, &bytes).unwrap();
    let o = run(&["info", newer.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let newer = format!("version 9.{minor} is newer");
    assert!(stderr(&o).contains(&newer) && stderr(&o).contains("upgrade"), "{}", stderr(&o));
    assert_eq!(stderr(&o).matches("upgrade").count(), 1, "said once: {}", stderr(&o));
}

#[test]
fn truncated_capture_is_analyzed_up_to_the_cut_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixture("cpu_split")).unwrap();
    let cut = dir.path().join("cut.cap");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let o = run(&["top", cut.to_str().unwrap(), "--no-local-files"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stderr(&o).matches("truncated").count(), 1, "said once: {}", stderr(&o));
    assert!(stdout(&o).contains("samples"), "{}", stdout(&o));
    let o = run(&["top", cut.to_str().unwrap(), "--strict"]);
    assert_eq!(o.status.code(), Some(2), "--strict refuses a damaged file");
}

#[test]
fn missing_binaries_are_named_with_the_way_to_supply_them() {
    // A capture recorded with --embed none: rewrite the fixture without its symbol blobs.
    use profcap_format::{CaptureReader, CaptureWriter, ReadOptions, WriteOptions};
    let dir = tempfile::tempdir().unwrap();
    let stripped = dir.path().join("nosyms.cap");
    let reader = CaptureReader::open(fixture("cpu_split"), ReadOptions::default()).unwrap();
    let mut w =
        CaptureWriter::new(std::fs::File::create(&stripped).unwrap(), WriteOptions::default()).unwrap();
    for batch in reader {
        let mut batch = batch.unwrap();
        batch.symbols.clear();
        for s in batch.stacks {
            assert_eq!(w.intern_stack(&s.kernel, &s.user), s.id, "ids are given in file order");
        }
        batch.meta.into_iter().for_each(|m| w.push_meta(m).unwrap());
        batch.processes.into_iter().for_each(|p| w.push_process(p).unwrap());
        batch.threads.into_iter().for_each(|t| w.push_thread(t).unwrap());
        batch.mappings.into_iter().for_each(|m| w.push_mapping(m).unwrap());
        batch.samples.into_iter().for_each(|s| w.push_sample(s).unwrap());
        batch.kernel_symbols.into_iter().for_each(|k| w.push_kernel_symbols(k).unwrap());
    }
    w.finish().unwrap();
    let o = run(&["top", stripped.to_str().unwrap(), "--no-local-files"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("no symbols for") && err.contains("--debug-dir") && err.contains("cpu_split"),
        "{err}"
    );
    assert!(stdout(&o).contains("cpu_split+0x"), "frames shown as module+offset: {}", stdout(&o));
}

#[test]
fn help_teaches_with_examples() {
    let o = run(&["--help"]);
    assert!(stdout(&o).contains("Examples:") && stdout(&o).contains("profanalyze diff"));
    let o = run(&["flame", "--help"]);
    assert!(stdout(&o).contains("--debug-dir"));
}

#[test]
fn requests_table_json_and_per_trace_selection() {
    let cap = fixture("httpd");
    let cap = cap.to_str().unwrap();
    let o = run(&["requests", cap, "--sort", "latency"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = stdout(&o);
    let first_row = table.lines().nth(1).unwrap();
    assert!(first_row.contains("checkout-7781"), "the slowest first: {table}");
    assert!(table.contains("4bf92f3577b34da6a3ce929d0e0e4736") && table.contains("/quit"), "{table}");

    let o = run(&["requests", cap, "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let b3 = rows.as_array().unwrap().iter().find(|r| r["trace_header"] == "b3").unwrap();
    assert_eq!(b3["trace_id"], "80f198ee56343ba864fe8b2a57d3eff7");
    assert!(!b3["event_ids"].as_array().unwrap().is_empty());
    let id = b3["id"].as_u64().unwrap().to_string();

    // The same request by trace-id prefix and by request id: the same folded profile.
    let by_trace = run(&["folded", cap, "--trace-id", "80f198ee", "--no-kernel"]);
    let by_id = run(&["folded", cap, "--request", &id, "--no-kernel"]);
    assert!(by_trace.status.success(), "{}", stderr(&by_trace));
    assert_eq!(stdout(&by_trace), stdout(&by_id));
    assert!(stdout(&by_trace).contains("parse_request_body"), "{}", stdout(&by_trace));
    assert!(!stdout(&by_trace).contains("wait_backend"), "on-CPU only: {}", stdout(&by_trace));

    // samples lists ids, the request and its trace id.
    let o = run(&["samples", cap, "--request", &id, "-n", "5"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<String> = stdout(&o).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 6, "a header and 5 samples: {lines:?}");
    assert!(
        lines[1..].iter().all(|l| l.contains(&format!(" {id} ")) && l.contains("80f198ee56343ba8")),
        "{lines:?}"
    );
}

#[test]
fn request_selection_errors_say_what_to_do() {
    let o = run(&["requests", fixture("cpu_split").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no request events") && stderr(&o).contains("--requests"), "{}", stderr(&o));

    let httpd = fixture("httpd");
    let o = run(&["flame", httpd.to_str().unwrap(), "--trace-id", "deadbeefdeadbeef", "-o", "/dev/null"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("no request") && stderr(&o).contains("profanalyze requests"),
        "{}",
        stderr(&o)
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("spans.json");
    std::fs::write(&bad, "{\"spans\": []}").unwrap();
    let o = run(&["requests", httpd.to_str().unwrap(), "--spans", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not an OTLP JSON trace file"), "{}", stderr(&o));
}

#[test]
fn external_otlp_spans_join_the_threads_they_name() {
    // A span file naming the thread and time of the fixture's b3 request.
    let cap = fixture("httpd");
    let m = profcap_analyze::Material::load(&cap, true).unwrap();
    let spans = profcap_analyze::requests::capture_spans(&m, Vec::new());
    let b3 =
        spans.iter().find(|s| s.trace.as_ref().is_some_and(|t| t.trace_id.starts_with("80f198ee"))).unwrap();
    let wall = |mono: u64| {
        (i128::from(mono) + i128::from(m.meta.start_wall_ns) - i128::from(m.meta.start_mono_ns)).to_string()
    };
    let json = serde_json::json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "process.pid", "value": {"intValue": b3.pid.to_string()}}]},
        "scopeSpans": [{"spans": [{
            "traceId": "0123456789abcdef0123456789abcdef", "spanId": "0123456789abcdef",
            "name": "GET /from-tracer",
            "startTimeUnixNano": wall(b3.start_ns), "endTimeUnixNano": wall(b3.end_ns),
            "attributes": [{"key": "thread.id", "value": {"intValue": b3.tids[0]}}]
        }]}]
    }]});
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("spans.json");
    std::fs::write(&file, json.to_string()).unwrap();
    let (cap, file) = (cap.to_str().unwrap(), file.to_str().unwrap());
    let o = run(&["requests", cap, "--spans", file, "--json", "--trace-id", "0123456789abcdef"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let ext = &rows.as_array().unwrap()[0];
    assert_eq!((ext["role"].as_str(), ext["target"].as_str()), (Some("external"), Some("/from-tracer")));
    let by_ext = run(&["folded", cap, "--spans", file, "--trace-id", "0123456789abcdef"]);
    let by_b3 = run(&["folded", cap, "--trace-id", "80f198ee"]);
    assert!(by_ext.status.success(), "{}", stderr(&by_ext));
    assert_eq!(stdout(&by_ext), stdout(&by_b3), "the tracer's span covers the same samples");
    // `samples` names the tracer's trace id on each of those samples.
    let listed = run(&["samples", cap, "--spans", file, "--trace-id", "0123456789abcdef"]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    let text = stdout(&listed);
    let rows: Vec<&str> = text.lines().skip(1).collect();
    assert!(!rows.is_empty(), "{text}");
    assert!(rows.iter().all(|r| r.contains("0123456789abcdef")), "{text}");
}

#[test]
fn memory_commands_and_their_errors() {
    let allocs = fixture("allocs");
    let allocs = allocs.to_str().unwrap();
    let o = run(&["leaks", allocs, "-n", "3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.starts_with("never freed: "), "{text}");
    assert_eq!(text.lines().count(), 2 + 3, "header lines and 3 rows: {text}");
    assert!(text.lines().nth(2).unwrap().contains("mapped"), "the biggest first: {text}");

    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("t.svg");
    let o = run(&["memtimeline", allocs, "-o", svg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(plot.starts_with("<svg") && plot.contains("allocs ("), "{}", &plot[..200.min(plot.len())]);

    let o = run(&["folded", allocs, "--kind", "inuse", "--at", "peak", "--counts"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).lines().any(|l| l.ends_with("burst 1")), "{}", stdout(&o));

    let cpu = fixture("cpu_split");
    for args in
        [vec!["leaks", cpu.to_str().unwrap()], vec!["memtimeline", cpu.to_str().unwrap(), "-o", "/dev/null"]]
    {
        let o = run(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(
            stderr(&o).contains("no allocation events") && stderr(&o).contains("--mem"),
            "{}",
            stderr(&o)
        );
    }
    let o = run(&["top", allocs, "--at", "peak"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--at needs --kind inuse"), "{}", stderr(&o));
    let o = run(&["top", allocs, "--kind", "inuse", "--at", "soon"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not end, peak or a number of seconds"), "{}", stderr(&o));
}

/// Runs profanalyze with a time limit; returns its output and peak RSS in KiB.
fn run_bounded(args: &[&str], limit: std::time::Duration) -> (Output, i64) {
    use std::process::Stdio;
    let child = Command::new(env!("CARGO_BIN_EXE_profanalyze"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let started = std::time::Instant::now();
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid out-parameter for wait4.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: waiting for our own child with valid out-pointers.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            break;
        }
        if started.elapsed() > limit {
            // SAFETY: killing our own child that ran past its limit.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("profanalyze {args:?} ran past {limit:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let mut child = child;
    let mut out = Vec::new();
    let mut err = Vec::new();
    std::io::Read::read_to_end(child.stdout.as_mut().unwrap(), &mut out).unwrap();
    std::io::Read::read_to_end(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    let status = std::os::unix::process::ExitStatusExt::from_raw(status);
    (Output { status, stdout: out, stderr: err }, usage.ru_maxrss)
}

/// Crafted captures (fixtures/hostile/) that used to need hundreds of MB:
/// every command ends quickly, in bounded memory, with a clear word and no crash.
#[test]
fn hostile_captures_are_read_in_bounded_memory_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let out = out.to_str().unwrap();
    for name in ["mapping_fanout.cap", "zstd_bomb.cap"] {
        let cap = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/hostile").join(name);
        let cap = cap.to_str().unwrap();
        let commands: [&[&str]; 7] = [
            &["info", cap],
            &["top", cap],
            &["folded", cap],
            &["flame", cap, "-o", out],
            &["pprof", cap, "-o", out],
            &["leaks", cap],
            &["requests", cap],
        ];
        for args in commands {
            let (o, peak_kib) = run_bounded(args, std::time::Duration::from_secs(30));
            eprintln!("{name} {}: exit {:?}, peak {peak_kib} KiB", args[0], o.status.code());
            let code = o.status.code();
            assert!(matches!(code, Some(0..=2)), "{args:?}: {:?} {}", o.status, stderr(&o));
            let err = stderr(&o);
            assert!(
                err.contains("refused") || err.contains("no samples") || code == Some(0),
                "{args:?}: {err}"
            );
            // The analyzer itself (code, maps, allocator) is about 10-30 MB.
            assert!(peak_kib < 150 * 1024, "{args:?}: peak {peak_kib} KiB");
        }
    }
}

/// A capture may name any path as a mapped file: a device, a FIFO, a path
/// with `..`. None is read (a FIFO would hang, /dev/zero would fill memory),
/// and `--sysroot` is never left.
#[test]
fn paths_named_by_a_capture_are_not_followed_into_devices_fifos_or_out_of_the_sysroot() {
    use profcap_format::{
        CaptureWriter, Mapping, Meta, Process, Sample, SampleKind, ValueUnit, WriteOptions,
    };
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let cap = dir.path().join("paths.cap");
    let mut w = CaptureWriter::new(std::fs::File::create(&cap).unwrap(), WriteOptions::default()).unwrap();
    w.push_meta(Meta { clock: "CLOCK_MONOTONIC".into(), sample_freq_hz: 99, ..Meta::default() }).unwrap();
    w.push_process(Process { pid: 7, comm: "victim".into(), ..Process::default() }).unwrap();
    let paths = ["/dev/zero".to_owned(), fifo.display().to_string(), "/../../../../etc/passwd".to_owned()];
    for (i, path) in paths.iter().enumerate() {
        let start = 0x10000 * (i as u64 + 1);
        let m = Mapping {
            pid: 7,
            start,
            end: start + 0x1000,
            path: path.clone(),
            build_id: vec![0xa0 + i as u8; 20],
            ..Mapping::default()
        };
        w.push_mapping(m).unwrap();
        let stack_id = w.intern_stack(&[], &[start + 0x10]);
        let s = Sample {
            kind: SampleKind::Cpu,
            unit: ValueUnit::Count,
            time_ns: 1 + i as u64,
            pid: 7,
            tid: 7,
            cpu: 0,
            stack_id,
            value: 1,
            id: 0,
            waker: None,
        };
        w.push_sample(s).unwrap();
    }
    w.finish().unwrap();
    let sysroot = dir.path().join("sysroot");
    std::fs::create_dir(&sysroot).unwrap();
    let cap = cap.to_str().unwrap();
    let (o, peak_kib) = run_bounded(
        &["top", cap, "--sysroot", sysroot.to_str().unwrap()],
        std::time::Duration::from_secs(30),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(peak_kib < 150 * 1024, "peak {peak_kib} KiB");
    for module in ["zero+0x", "fifo+0x", "passwd+0x"] {
        assert!(stdout(&o).contains(module), "{module} unnamed: {}", stdout(&o));
    }
}

#[test]
fn dash_is_standard_output_and_default_outputs_land_in_the_current_directory() {
    let cap = fixture("nofp");
    let cwd = tempfile::tempdir().unwrap();
    let in_cwd = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_profanalyze")).args(args).current_dir(cwd.path()).output().unwrap()
    };
    // -o - writes to standard output, for every command that writes a file.
    for (cmd, magic) in [("flame", &b"<?xml"[..]), ("pprof", &[0x1f, 0x8b][..]), ("folded", &b"_start;"[..])]
    {
        let o = in_cwd(&[cmd, cap.to_str().unwrap(), "-o", "-", "--no-local-files"]);
        assert!(o.status.success(), "{cmd}: {}", stderr(&o));
        assert!(o.stdout.starts_with(magic), "{cmd} wrote to stdout");
        assert!(!cwd.path().join("-").exists(), "{cmd}: no file named -");
    }
    // Without -o: the capture's name with the format's extension, here, not
    // next to the capture (as perf writes perf.data where it runs).
    let o = in_cwd(&["flame", cap.to_str().unwrap(), "--no-local-files"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(cwd.path().join("capture.svg").exists(), "{}", stderr(&o));
    assert!(!cap.with_extension("svg").exists(), "nothing written beside the fixture");
    // A reader that goes away (`| head`) ends the command quietly.
    let mut child = Command::new(env!("CARGO_BIN_EXE_profanalyze"))
        .args(["flame", cap.to_str().unwrap(), "-o", "-", "--no-local-files"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success() && stderr(&o).is_empty(), "{:?} {}", o.status, stderr(&o));
}

#[test]
fn info_says_when_the_capture_was_recorded() {
    let o = run(&["info", fixture("nofp").to_str().unwrap()]);
    let text = stdout(&o);
    let line = text.lines().find(|l| l.starts_with("recorded:  ")).unwrap_or_else(|| panic!("{text}"));
    // "recorded:     2026-12-01T11:57:57Z to 2026-12-01T11:57:59Z (UTC)"
    let times: Vec<&str> = line.split_whitespace().filter(|w| w.ends_with('Z')).collect();
    assert_eq!(times.len(), 2, "{line}");
    assert!(times.iter().all(|t| t.len() == 20 && &t[10..11] == "T"), "{line}");
    assert!(times[0] <= times[1], "{line}");
    let o = run(&["info", "--json", fixture("nofp").to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["started"].as_str(), Some(times[0]));
    assert_eq!(v["ended"].as_str(), Some(times[1]));
}

#[test]
fn top_as_json_agrees_with_the_table() {
    let cap = fixture("cpu_split");
    let o = run(&["top", "--json", "-n", "5", "--no-local-files", cap.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (v["kind"].as_str(), v["unit"].as_str(), v["by"].as_str()),
        (Some("cpu"), Some("samples"), Some("function"))
    );
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 5);
    let total = v["total"].as_i64().unwrap();
    for r in rows {
        let own = r["self"].as_i64().unwrap();
        assert!(own <= r["total"].as_i64().unwrap() && r["total"].as_i64().unwrap() <= total, "{r}");
        assert!((r["self_percent"].as_f64().unwrap() - 100.0 * own as f64 / total as f64).abs() < 1e-9);
    }
    // The same first row as the table.
    let text = stdout(&run(&["top", "-n", "1", "--no-local-files", cap.to_str().unwrap()]));
    let first = text.lines().nth(1).unwrap();
    assert!(first.ends_with(rows[0]["name"].as_str().unwrap()), "{first} vs {}", rows[0]);
}

#[test]
fn leaks_as_json_agrees_with_the_table() {
    let cap = fixture("allocs");
    let o = run(&["leaks", "--json", "--no-local-files", cap.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = v["rows"].as_array().unwrap();
    assert!(!rows.is_empty());
    let bytes: Vec<i64> = rows.iter().map(|r| r["bytes"].as_i64().unwrap()).collect();
    assert!(bytes.windows(2).all(|w| w[0] >= w[1]), "most bytes first: {bytes:?}");
    assert!(bytes.iter().sum::<i64>() <= v["bytes"].as_i64().unwrap());
    assert!(rows
        .iter()
        .all(|r| r["blocks"].as_i64().unwrap() >= 1 && !r["stack"].as_array().unwrap().is_empty()));
    // The table's first row: the same bytes and innermost frame.
    let text = stdout(&run(&["leaks", "-n", "1", "--no-local-files", cap.to_str().unwrap()]));
    let first = text.lines().nth(2).unwrap();
    let leaf = rows[0]["stack"][0].as_str().unwrap();
    assert!(first.contains(&format!("  {leaf}")), "{first} vs {}", rows[0]);
    assert_eq!(
        first.split_whitespace().nth(2).unwrap().parse::<i64>().unwrap(),
        rows[0]["blocks"].as_i64().unwrap()
    );
}

#[test]
fn diff_as_json_keeps_the_exit_status_and_names_the_regressions() {
    let (a, b) = (fixture("cpu_split"), fixture("nofp"));
    let args = |extra: &[&str]| {
        let mut v = vec!["diff", "--json", "--no-local-files", a.to_str().unwrap(), b.to_str().unwrap()];
        v.extend_from_slice(extra);
        run(&v.iter().map(|s| &**s).collect::<Vec<_>>())
    };
    let o = args(&["-n", "3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["rows"].as_array().unwrap().len(), 3);
    assert!(v["samples_a"].as_u64().unwrap() > 0 && v["samples_b"].as_u64().unwrap() > 0);
    assert!(v.get("regressed").is_none(), "no threshold, no verdict");
    // main is in every stack of both: no regression; nofp's compare_slow is new.
    let o = args(&["--fail-if-regressed", "5", "--function", "^compare_slow$"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let bad: Vec<&str> =
        v["regressed"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(bad, ["compare_slow"]);
    assert!(v["regressed"][0]["total_delta"].as_f64().unwrap() > 5.0);
    let o = args(&["--fail-if-regressed", "5", "--function", "^main$"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn samples_as_json_lines_name_their_requests() {
    let cap = fixture("httpd");
    let o = run(&["samples", "--json", "-n", "400", "--no-local-files", cap.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> =
        stdout(&o).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 400);
    let ids: Vec<u64> = lines.iter().map(|l| l["id"].as_u64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "by id");
    // Samples inside a traced request carry its trace id (fixtures/httpd/README.md).
    let traced = lines.iter().filter(|l| l["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736").count();
    assert!(traced > 10, "{traced} samples of the first traced request");
    assert!(lines
        .iter()
        .all(|l| l["request"].is_null() == l["trace_id"].is_null() || l["trace_id"].is_null()));
    // The same first sample as the table.
    let text = stdout(&run(&["samples", "-n", "1", "--no-local-files", cap.to_str().unwrap()]));
    let first: Vec<&str> = text.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(first[0].parse::<u64>().unwrap(), ids[0]);
    assert_eq!(first.last().copied(), lines[0]["function"].as_str());
}

#[test]
fn help_groups_the_shared_options() {
    let text = stdout(&run(&["flame", "--help"]));
    let headings: Vec<&str> = text.lines().filter(|l| l.ends_with(':') && !l.starts_with(' ')).collect();
    for h in ["Options:", "Samples:", "Requests:", "Stacks:", "Symbols and unwinding:", "Input:"] {
        assert!(headings.contains(&h), "{h} missing in {headings:?}");
    }
    // A filter sits under its heading, not among the command's own options.
    let samples = text.find("\nSamples:").unwrap();
    assert!(text.find("--pid").unwrap() > samples, "{text}");
}

#[test]
fn focus_exclude_and_reverse_shape_every_stack_command() {
    let cap = fixture("cpu_split");
    let cap = cap.to_str().unwrap();
    let o = run(&["folded", "--focus", "^work_b$", cap]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<String> = stdout(&o).lines().map(String::from).collect();
    assert!(!lines.is_empty() && lines.iter().all(|l| l.split(';').any(|f| f == "work_b")), "{lines:?}");
    let o = run(&["folded", "--reverse", "--exclude", "^work_b$", cap]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(!out.contains("work_b"));
    // Leaf first: no reversed stack starts at the process entry.
    assert!(out.lines().all(|l| !l.starts_with("_start;")), "{out}");
    let o = run(&["top", "--focus", "(", cap]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--focus \"(\" is not a regular expression"), "{}", stderr(&o));
}

#[test]
fn heatmap_draws_every_cell_of_the_capture_and_refuses_memory() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("h.svg");
    let cap = fixture("cpu_split");
    let o = run(&["heatmap", "--rows", "25", cap.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let svg = std::fs::read_to_string(&out).unwrap();
    // cpu_split runs 2 s: 2 or 3 one-second columns of 25 cells.
    let cells = svg.matches("<rect x=").count(); // the hatch pattern's rect aside
    assert!(cells == 50 || cells == 75, "{cells} cells");
    assert!(svg.contains("--from 0.000 --to 0.040"), "the first cell's command");
    // A CPU-bound program: no cell of its first second is empty.
    assert!(svg.matches("rgb(250,250,250)").count() < 25, "{svg}");
    let mem = dir.path().join("m.svg");
    let o = run(&[
        "heatmap",
        "--kind",
        "alloc",
        fixture("allocs").to_str().unwrap(),
        "-o",
        mem.to_str().unwrap(),
    ]);
    assert!(!o.status.success() && stderr(&o).contains("on-CPU or off-CPU"), "{}", stderr(&o));
    assert!(!mem.exists());
    let o = run(&["heatmap", "--rows", "0", cap.to_str().unwrap()]);
    assert!(!o.status.success());
}

#[test]
fn completions_and_man_pages_cover_every_command() {
    let o = run(&["completions", "bash"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let script = stdout(&o);
    for cmd in ["flame", "heatmap", "speedscope", "diff", "top"] {
        assert!(script.contains(cmd), "bash completion knows {cmd}");
    }
    assert!(!run(&["completions", "tcsh"]).status.success(), "an unknown shell is refused");
    let dir = tempfile::tempdir().unwrap();
    let o = run(&["man", dir.path().to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    for page in ["profanalyze.1", "profanalyze-flame.1", "profanalyze-heatmap.1", "profanalyze-speedscope.1"]
    {
        let text = std::fs::read_to_string(dir.path().join(page)).unwrap();
        assert!(text.contains(".TH"), "{page} is a man page");
    }
    let o = run(&["man", "/nonexistent/dir"]);
    assert!(!o.status.success() && stderr(&o).contains("/nonexistent/dir"), "{}", stderr(&o));
}

#[test]
fn progress_shows_on_a_terminal_only() {
    let cap = fixture("nofp");
    let bin = env!("CARGO_BIN_EXE_profanalyze");
    // `script` gives the command a terminal; the delay is cut to 0 so that
    // a small capture shows its bar.
    let o = Command::new("script")
        .args(["-qec", &format!("{bin} top -n 1 {}", cap.display()), "/dev/null"])
        .env("PROFCAP_PROGRESS_AFTER_MS", "0")
        .output()
        .expect("script (util-linux)");
    let tty = String::from_utf8_lossy(&o.stdout);
    assert!(tty.contains("reading ") && tty.contains("KiB"), "{tty}");
    assert!(tty.contains("compare_slow"), "the table follows: {tty}");
    // Not a terminal: never a bar, whatever the delay.
    let o = Command::new(bin)
        .args(["top", "-n", "1", cap.to_str().unwrap()])
        .env("PROFCAP_PROGRESS_AFTER_MS", "0")
        .output()
        .unwrap();
    assert!(!stderr(&o).contains("reading "), "{}", stderr(&o));
}

#[test]
fn a_flame_chart_is_drawn_and_memory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("chart.svg");
    let o =
        run(&["flame", "--flame-chart", fixture("python").to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let svg = std::fs::read_to_string(&out).unwrap();
    assert!(svg.contains("py::pywork.spin"), "a chart of the samples");
    let o =
        run(&["flame", "--flame-chart", "--kind", "alloc", fixture("allocs").to_str().unwrap(), "-o", "-"]);
    assert!(!o.status.success() && stderr(&o).contains("flame chart"), "{}", stderr(&o));
}

#[test]
fn timeline_strips_show_each_threads_runs_and_blocks() {
    let cap = fixture("blocker");
    let reader = profcap_format::CaptureReader::open(&cap, Default::default()).unwrap();
    let samples: Vec<profcap_format::Sample> = reader.flat_map(|b| b.unwrap().samples).collect();
    let offcpu = samples.iter().filter(|s| s.kind == profcap_format::SampleKind::OffCpu).count();
    let tids: std::collections::BTreeSet<u32> = samples.iter().map(|s| s.tid).collect();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.svg");
    let o = run(&["timeline", cap.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let svg = std::fs::read_to_string(&out).unwrap();
    for tid in &tids {
        assert!(svg.contains(&format!(" ({tid})</text>")), "a row for thread {tid}");
    }
    assert_eq!(svg.matches("<title>blocked ").count(), offcpu, "one bar per off-CPU block");
    assert!(svg.contains("spinner ("), "the spinning thread has its row");
    assert!(svg.contains("fill=\"rgb(230,"), "on-CPU samples are drawn");
}

#[test]
fn diff_graph_tooltips_name_the_unit_of_what_they_compare() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("blocker", &["--kind", "offcpu"][..], "µs"),
        ("cpu_split", &[][..], "µs"),
        ("allocs", &["--kind", "alloc"][..], "bytes"),
    ];
    for (case, kind, unit) in cases {
        let cap = fixture(case);
        let out = dir.path().join(format!("{case}.svg"));
        let mut args =
            vec!["diff", cap.to_str().unwrap(), cap.to_str().unwrap(), "-o", out.to_str().unwrap()];
        args.extend(kind);
        let o = run(&args);
        assert!(o.status.success(), "{case}: {}", stderr(&o));
        let svg = std::fs::read_to_string(&out).unwrap();
        assert!(
            svg.contains(&format!(" {unit}, ")) || svg.contains(&format!(" {unit})")),
            "{case}: tooltips in {unit}"
        );
        assert!(!svg.contains(" samples, "), "{case}: not called samples");
    }
}

/// `go tool pprof ARGS` on a fresh export of `case` (extra profanalyze args `more`).
fn pprof_says(case: &str, more: &[&str], args: &[&str]) -> String {
    let go = which("go")
        .expect("`go` is needed to check pprof output (scripts/install-deps.sh installs golang-go)");
    let dir = tempfile::tempdir().unwrap();
    let pb = dir.path().join("x.pb.gz");
    let cap = fixture(case);
    let mut a = vec!["pprof", cap.to_str().unwrap(), "-o", pb.to_str().unwrap(), "--no-local-files"];
    a.extend(more);
    let o = run(&a);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = Command::new(go)
        .args(["tool", "pprof"])
        .args(args)
        .arg(&pb)
        .env("HOME", dir.path())
        .env("GOCACHE", dir.path().join("cache"))
        .output()
        .unwrap();
    assert!(o.status.success(), "go tool pprof {args:?} failed: {}", stderr(&o));
    stdout(&o)
}

#[test]
fn pprof_samples_carry_labels_go_sample_types_and_plain_names() {
    // Labels: who took each sample and the request it belongs to.
    let tags = pprof_says("httpd", &[], &["-tags"]);
    for key in ["pid:", "tid:", "thread_name:", "process_name:", "trace_id:"] {
        assert!(tags.contains(key), "-tags shows {key}: {tags}");
    }
    assert!(tags.contains("4bf92f3577b34da6a3ce929d0e0e4736"), "a W3C trace id of the fixture: {tags}");
    // The program names the profile; names carry no folded-format suffix.
    let top = pprof_says("httpd", &[], &["-top", "-nodecount=200"]);
    assert!(top.starts_with("File: httpd"), "{top}");
    assert!(!top.contains("_[k]") && !top.contains("_[i]"), "{top}");
    assert!(top.contains("Time: ") && top.contains("Duration: "), "time_nanos and duration_nanos: {top}");
    // Go's sample types: objects beside bytes for memory, off-CPU in ns.
    let raw = pprof_says("allocs", &["--kind", "alloc"], &["-raw"]);
    assert!(raw.contains("alloc_objects/count alloc_space/bytes"), "{raw}");
    let raw = pprof_says("allocs", &["--kind", "inuse", "--counts"], &["-raw"]);
    assert!(raw.contains("inuse_objects/count inuse_space/bytes"), "{raw}");
    let objects = pprof_says("allocs", &["--kind", "alloc"], &["-sample_index=alloc_objects", "-top"]);
    assert!(objects.contains("Type: alloc_objects"), "{objects}");
    let raw = pprof_says("blocker", &["--kind", "offcpu"], &["-raw"]);
    assert!(raw.contains("off_cpu/nanoseconds"), "{raw}");
    let raw = pprof_says("blocker", &["--kind", "wall"], &["-raw"]);
    assert!(raw.contains("wall/nanoseconds"), "{raw}");
}

#[test]
fn pprof_locations_have_addresses_mappings_with_build_ids_and_source_lines() {
    let raw = pprof_says("cpu_split", &[], &["-raw"]);
    let mappings = raw.split("Mappings").nth(1).unwrap();
    // The program first, with its address range, file offset and build id.
    let first = mappings.lines().find(|l| l.trim_start().starts_with("1:")).unwrap();
    assert!(first.contains("/cpu_split") && !first.contains("0x0/0x0/0x0"), "{first}");
    let id = profcap_analyze::symbolize::hex(
        &profcap_format::CaptureReader::open(fixture("cpu_split"), Default::default())
            .unwrap()
            .flat_map(|b| b.unwrap().mappings)
            .find(|m| m.path.ends_with("/cpu_split"))
            .unwrap()
            .build_id,
    );
    assert!(first.contains(&id), "the recorded build id {id}: {first}");
    let locations = raw.split("Locations").nth(1).unwrap().split("Mappings").next().unwrap();
    assert!(locations.lines().filter(|l| l.contains("work_a")).all(|l| l.contains(": 0x")), "{locations}");
    // Source lines: Python frames' lines, shown by -list against the source.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/programs");
    let list = pprof_says("python", &[], &["-source_path", dir.to_str().unwrap(), "-list", "pywork.hot"]);
    assert!(list.contains("def hot(n):") && list.contains("return spin(3 * n)"), "{list}");
    let hot_line = list.lines().find(|l| l.contains("return spin(3 * n)")).unwrap();
    assert!(hot_line.contains("ms"), "time on hot's line: {list}");
}
