//! Real recordings of real processes. These load BPF programs and so need
//! root; as a non-root developer set PROFCAP_SKIP_ROOT_TESTS=1 to skip them.
//! In CI (root) they always run: a skip there is a failure.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{fixture, profile, root_or_skip, shares};
use profcap_analyze::{Grouping, Material, Profile};
use profcap_recorder::{record, Error, RecordOptions, Target};

fn opts(out: &Path, target: Target, freq: u64) -> RecordOptions {
    let mut o = RecordOptions::new(out.to_owned(), target);
    o.freq = freq;
    o
}

fn stop_flag() -> Arc<AtomicBool> {
    Arc::new(AtomicBool::new(false))
}

#[test]
fn cpu_split_matches_the_programs_schedule() {
    if !root_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cap = dir.path().join("split.cap");
    let exe = fixture("cpu_split").display().to_string();
    let summary = record(&opts(&cap, Target::Spawn(vec![exe, "2".into()]), 999), stop_flag()).unwrap();
    assert_eq!(summary.child_exit, Some(0));
    // The program runs for 2 s of CPU time, so ~2000 samples whatever the load.
    assert!(
        summary.samples > 1800,
        "expected ~2000 samples at 999 Hz for 2 CPU-seconds, got {}",
        summary.samples
    );
    let mode = std::fs::metadata(&cap).unwrap().permissions();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
    let (m, p) = profile(&cap, Grouping::default());
    let s = shares(&p, &["work_a", "work_b", "work_inner", "work_c", "main"]);
    eprintln!("shares work_a/b/inner/c/main: {s:?}");
    assert!((s[0] - 60.0).abs() < 5.0, "work_a {:.1}% (want 60)", s[0]);
    assert!((s[1] - 30.0).abs() < 5.0, "work_b {:.1}% (want 30)", s[1]);
    assert!((s[2] - s[1]).abs() < 1.0, "work_inner carries work_b's time");
    assert!((s[3] - 10.0).abs() < 4.0, "work_c {:.1}% (want 10)", s[3]);
    assert!(s[4] > 97.0, "main is on (nearly) every stack: {:.1}%", s[4]);
    assert!(m.lost.iter().all(|l| l.count == 0), "lost events: {:?}", m.lost);
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);
}

#[test]
fn rust_program_with_frame_pointers_is_symbolized_and_demangled() {
    if !root_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cap = dir.path().join("rust.cap");
    let exe = fixture("rust_split").display().to_string();
    record(&opts(&cap, Target::Spawn(vec![exe, "1.5".into()]), 999), stop_flag()).unwrap();
    let (_, p) = profile(&cap, Grouping::default());
    let s = shares(&p, &["rust_split::parse_records", "rust_split::render_output"]);
    eprintln!("parse/render: {s:?}");
    assert!((s[0] - 66.7).abs() < 6.0 && (s[1] - 33.3).abs() < 6.0, "{s:?}");
}

#[test]
fn short_lived_children_are_followed_and_symbolized() {
    if !root_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = fixture("spawner").display().to_string();
    let cap = dir.path().join("spawn.cap");
    check_children_named(&cap, &opts(&cap, Target::Spawn(vec![exe, "5".into()]), 999));
}

/// A recorder that handles each child's events only after the child is gone
/// (as when profrec is starved of CPU) still names every child's frames: the
/// mappings come from the kernel's records, not from /proc after the fact.
#[test]
fn short_lived_children_are_named_when_handled_after_they_exit() {
    if !root_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = fixture("spawner").display().to_string();
    let cap = dir.path().join("late.cap");
    let mut o = opts(&cap, Target::Spawn(vec![exe, "5".into()]), 999);
    o.test_handle_late = Duration::from_millis(400); // each child lives ~50 ms
    check_children_named(&cap, &o);
}

fn check_children_named(cap: &Path, o: &RecordOptions) {
    let summary = record(o, stop_flag()).unwrap();
    assert_eq!(summary.child_exit, Some(0));
    let mut g = Grouping::default();
    g.process = true;
    let (m, p) = profile(cap, g);
    // Every child lives ~50 ms, yet each must appear with its function named.
    let children: Vec<&str> = p
        .stacks
        .iter()
        .filter(|(frames, _)| frames.iter().any(|f| &*f.name == "child_burn"))
        .map(|(frames, _)| &*frames[0].name)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if children.len() != 5 {
        describe_children(&m, &p, &children);
    }
    assert_eq!(children.len(), 5, "children with child_burn samples: {children:?}");
    let exited = m.processes.values().filter(|ps| ps.iter().any(|p| p.exit_ns != 0)).count();
    assert!(exited >= 5, "exits recorded for {exited} processes");
}

/// Prints, for each process of a recording without a `child_burn` sample,
/// its samples' stacks and its mappings, so that a failure explains itself.
fn describe_children(m: &Material, p: &Profile, named: &[&str]) {
    let mut pids: Vec<_> = m.processes.keys().copied().collect();
    pids.sort_unstable();
    for pid in pids {
        let label = format!("({pid})");
        if named.iter().any(|n| n.ends_with(&label)) {
            continue;
        }
        let descs = &m.processes[&pid];
        eprintln!("process {pid} without child_burn: {descs:?}");
        for (frames, v) in p.stacks.iter().filter(|(f, _)| f[0].name.ends_with(&label)) {
            let names: Vec<&str> = frames.iter().map(|f| &*f.name).collect();
            eprintln!("  {v:>4} {}", names.join(";"));
        }
        for map in m.mappings.get(&pid).into_iter().flatten() {
            eprintln!(
                "  map {:#x}-{:#x} +{:#x} seen {} {}",
                map.start, map.end, map.file_offset, map.seen_ns, map.path
            );
        }
    }
}

#[test]
fn threads_keep_their_names_and_functions() {
    if !root_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cap = dir.path().join("threads.cap");
    let exe = fixture("threads").display().to_string();
    record(&opts(&cap, Target::Spawn(vec![exe, "1".into()]), 499), stop_flag()).unwrap();
    let mut g = Grouping::default();
    g.thread = true;
    let (_, p) = profile(&cap, g);
    for (thread, func, other) in [("alpha", "alpha_work", "beta_work"), ("beta", "beta_work", "alpha_work")] {
        let mine: Vec<_> =
            p.stacks.iter().filter(|(f, _)| f[0].name.starts_with(&format!("{thread} ("))).collect();
        let total: i64 = mine.iter().map(|(_, v)| v).sum();
        let in_func: i64 =
            mine.iter().filter(|(f, _)| f.iter().any(|x| &*x.name == func)).map(|(_, v)| v).sum();
        assert!(total > 100, "thread {thread}: {total} samples");
        assert!(in_func as f64 > 0.95 * total as f64, "thread {thread}: {in_func}/{total} in {func}");
        assert!(!mine.iter().any(|(f, _)| f.iter().any(|x| &*x.name == other)), "{other} on thread {thread}");
    }
}

#[test]
fn attaching_to_a_running_process_and_seeing_it_exit() {
    if !root_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Attach for 1 s to a process that runs on: it must survive the recording.
    let mut child = Command::new(fixture("cpu_split")).arg("3").stdout(Stdio::null()).spawn().unwrap();
    let pid = child.id();
    std::thread::sleep(Duration::from_millis(200));
    let cap = dir.path().join("attach.cap");
    let mut o = opts(&cap, Target::Pids(vec![pid]), 999);
    o.duration = Some(Duration::from_secs(1));
    let summary = record(&o, stop_flag()).unwrap();
    // Up to 999 if the target had a CPU to itself for the whole second.
    assert!(summary.samples > 300, "{} samples in 1 s at 999 Hz", summary.samples);
    assert!(child.try_wait().unwrap().is_none(), "the target must keep running");
    let (_, p) = profile(&cap, Grouping::default());
    assert!(shares(&p, &["work_a"])[0] > 50.0);

    // Attach again with a long duration: recording ends when the target exits.
    let cap2 = dir.path().join("exit.cap");
    let mut o = opts(&cap2, Target::Pids(vec![pid]), 99);
    o.duration = Some(Duration::from_secs(30));
    let started = Instant::now();
    record(&o, stop_flag()).unwrap();
    assert!(started.elapsed() < Duration::from_secs(10), "recording outlived its target");
    assert!(child.wait().unwrap().success());
    let (m, _) = profile(&cap2, Grouping::default());
    assert!(m.stats.trailer, "the file was finished properly");
    assert!(m.processes[&pid].iter().any(|p| p.exit_ns != 0), "the exit was recorded");
}

#[test]
fn clear_errors_for_bad_targets() {
    if !root_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cap = dir.path().join("x.cap");
    let err = record(&opts(&cap, Target::Pids(vec![u32::MAX - 7]), 99), stop_flag()).unwrap_err();
    assert!(matches!(err, Error::NoSuchPid { pid } if pid == u32::MAX - 7), "{err}");
    let err =
        record(&opts(&cap, Target::Spawn(vec!["/nonexistent/program".into()]), 99), stop_flag()).unwrap_err();
    assert!(
        matches!(&err, Error::Spawn { source, .. } if source.kind() == std::io::ErrorKind::NotFound),
        "{err}"
    );
}

#[test]
fn jit_code_is_named_from_the_perf_map() {
    if !root_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cap = dir.path().join("jit.cap");
    let exe = fixture("jit").display().to_string();
    record(&opts(&cap, Target::Spawn(vec![exe, "1".into()]), 999), stop_flag()).unwrap();
    let (m, p) = profile(&cap, Grouping::default());
    for pid in m.processes.keys() {
        let _ = std::fs::remove_file(format!("/tmp/perf-{pid}.map"));
    }
    let s = shares(&p, &["jit_hot", "jit_cold"]);
    eprintln!("jit_hot/jit_cold: {s:?}");
    // jit_hot loops three times as long as jit_cold.
    assert!((s[0] - 75.0).abs() < 6.0 && (s[1] - 25.0).abs() < 6.0, "{s:?}");
    let jit_kind = p
        .stacks
        .iter()
        .flat_map(|(f, _)| f)
        .filter(|f| &*f.name == "jit_hot")
        .all(|f| f.kind == profcap_analyze::symbolize::FrameKind::Jit && &*f.module == "[jit]");
    assert!(jit_kind, "JIT frames are marked as such");
}

#[test]
fn system_wide_recording_sees_every_busy_process() {
    if !root_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut busy = Command::new(fixture("cpu_split")).arg("1.5").stdout(Stdio::null()).spawn().unwrap();
    let cap = dir.path().join("all.cap");
    let mut o = opts(&cap, Target::All, 999);
    o.duration = Some(Duration::from_millis(700));
    let summary = record(&o, stop_flag()).unwrap();
    let pid = busy.id();
    assert!(busy.wait().unwrap().success());
    let mut g = Grouping::default();
    g.process = true;
    let (m, p) = profile(&cap, g);
    assert!(summary.samples > 300, "{} samples", summary.samples);
    // The busy process is there with its functions named; profrec's own
    // process and others may be too, but never the idle task.
    let root = format!("cpu_split ({pid})");
    assert!(
        p.stacks.iter().any(|(f, _)| *f[0].name == root && f.iter().any(|x| &*x.name == "work_a")),
        "{root} missing"
    );
    assert!(!m.processes.contains_key(&0), "the idle task must not be recorded");
}

#[test]
fn sigterm_stops_the_recorder_and_finishes_the_file() {
    if !root_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut target = Command::new(fixture("cpu_split")).arg("30").stdout(Stdio::null()).spawn().unwrap();
    let cap = dir.path().join("term.cap");
    let mut rec = Command::new(env!("CARGO_BIN_EXE_profrec"))
        .args(["-q", "-o", cap.to_str().unwrap(), "-p", &target.id().to_string()])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: signalling a child process we started.
    unsafe { libc::kill(rec.id() as i32, libc::SIGTERM) };
    let status = rec.wait().unwrap();
    target.kill().unwrap();
    let _ = target.wait();
    assert!(status.success(), "profrec exited with {status}");
    let (m, p) = profile(&cap, Grouping::default());
    assert!(m.stats.trailer, "the file was finished");
    assert!(p.samples > 50, "{} samples", p.samples);

    // Ctrl-C (SIGINT) stops it as cleanly, without a warning about the
    // interrupted wait (one used to be printed at every Ctrl-C).
    let cap = dir.path().join("int.cap");
    let mut rec = Command::new(env!("CARGO_BIN_EXE_profrec"))
        .args(["-o", cap.to_str().unwrap(), "--", "/bin/sleep", "31.5"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: signalling a child process we started.
    unsafe { libc::kill(rec.id() as i32, libc::SIGINT) };
    let status = rec.wait().unwrap();
    let left = processes_with("31.5");
    for &p in &left {
        // SAFETY: ending a sleep this test started, should it have survived.
        unsafe { libc::kill(p as i32, libc::SIGKILL) };
    }
    let mut err = String::new();
    std::io::Read::read_to_string(rec.stderr.as_mut().unwrap(), &mut err).unwrap();
    // The recording ended the command it started (SIGTERM: 143), and exits with its status.
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "profrec exited with {status}: {err}");
    assert!(left.is_empty(), "the started command outlived the recording: {left:?}");
    assert!(!err.contains("Interrupted"), "{err}");
}

#[test]
fn detach_leaves_the_started_command_running_when_the_recording_ends() {
    if !root_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cap = dir.path().join("detach.cap");
    let status = Command::new(env!("CARGO_BIN_EXE_profrec"))
        .args(["-q", "-d", "0.5", "--detach", "-o", cap.to_str().unwrap(), "--", "/bin/sleep", "32.5"])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    let left = processes_with("32.5");
    for &p in &left {
        // SAFETY: ending the sleep this test started.
        unsafe { libc::kill(p as i32, libc::SIGKILL) };
    }
    assert_eq!(status.code(), Some(0), "the command had not ended: no status of its own");
    assert_eq!(left.len(), 1, "--detach leaves the command running");
    // Without --detach, -d ends it.
    let status = Command::new(env!("CARGO_BIN_EXE_profrec"))
        .args(["-q", "-d", "0.5", "-o", cap.to_str().unwrap(), "--", "/bin/sleep", "33.5"])
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(128 + libc::SIGTERM));
    assert!(processes_with("33.5").is_empty());
    let m = profcap_analyze::Material::load(&cap, true).unwrap();
    assert!(m.processes.values().flatten().any(|p| p.exit_ns != 0), "its exit is in the capture");
}

/// Processes whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        if String::from_utf8_lossy(&cmdline).contains(needle) {
            out.push(pid);
        }
    }
    out
}

/// A profrec killed while it loads its probes must not leave the command it
/// holds before exec waiting forever (it used to keep its own end of the
/// gate open and run profrec's signal handlers). Each try kills profrec as
/// soon as its held child shows, so every kill lands while it is held.
#[test]
fn killing_profrec_during_start_up_leaves_no_process() {
    if !root_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for i in 0..3 {
        let cap = dir.path().join(format!("killed-{i}.cap"));
        let needle = cap.display().to_string();
        let mut rec = Command::new(env!("CARGO_BIN_EXE_profrec"))
            .args(["-q", "-o", &needle, "--", "/bin/sleep", "7.25"])
            .spawn()
            .unwrap();
        // The held child (profrec's fork before exec) has profrec's command line.
        let deadline = Instant::now() + Duration::from_secs(20);
        let held = loop {
            let held: Vec<u32> = processes_with(&needle).into_iter().filter(|&p| p != rec.id()).collect();
            if !held.is_empty() {
                break held;
            }
            assert!(Instant::now() < deadline, "try {i}: profrec never held its command");
            std::thread::sleep(Duration::from_millis(1));
        };
        // SAFETY: signalling a child process we started.
        unsafe { libc::kill(rec.id() as i32, libc::SIGKILL) };
        let _ = rec.wait();
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut left = held.clone();
        while !left.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            left.retain(|&p| std::path::Path::new(&format!("/proc/{p}")).exists() && !is_zombie(p));
        }
        // A command released just before the kill runs on; that is not the case checked.
        let released = processes_with("7.25");
        for &p in &released {
            // SAFETY: ending the sleep this test started.
            unsafe { libc::kill(p as i32, libc::SIGKILL) };
        }
        left.retain(|p| !released.contains(p));
        assert!(left.is_empty(), "try {i}: held child {left:?} still there after profrec was killed");
    }
    // Nor any file: the capture was still unnamed when profrec died.
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(names.is_empty(), "left behind: {names:?}");
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')))
        .unwrap_or(true)
}

/// The capture is a new 0600 file put in place once recording has started:
/// a symlink at the destination is replaced, not followed (root must not
/// write through a link another user planted), an existing file's mode is
/// not kept, and a start that fails leaves the old capture as it was.
#[test]
fn the_capture_file_is_never_written_through_a_link_or_clobbered_by_a_failed_start() {
    use std::os::unix::fs::PermissionsExt;
    if !root_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = fixture("cpu_split").display().to_string();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let cap = dir.path().join("linked.cap");
    std::os::unix::fs::symlink(&victim, &cap).unwrap();
    record(&opts(&cap, Target::Spawn(vec![exe.clone(), "0.2".into()]), 99), stop_flag()).unwrap();
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious", "the link was followed");
    let meta = std::fs::symlink_metadata(&cap).unwrap();
    assert!(meta.file_type().is_file(), "the link was replaced by the capture");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    let old = dir.path().join("old.cap");
    std::fs::write(&old, b"an earlier capture").unwrap();
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = record(&opts(&old, Target::Spawn(vec!["/nonexistent/program".into()]), 99), stop_flag());
    assert!(err.is_err());
    assert_eq!(std::fs::read(&old).unwrap(), b"an earlier capture", "a failed start clobbered it");
    record(&opts(&old, Target::Spawn(vec![exe, "0.2".into()]), 99), stop_flag()).unwrap();
    assert_eq!(std::fs::metadata(&old).unwrap().permissions().mode() & 0o777, 0o600, "mode kept from before");
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(names.len(), 3, "no file left beside the captures: {names:?}");
}

#[test]
fn profrec_exits_with_the_recorded_commands_status() {
    if !root_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cap = dir.path().join("status.cap");
    // As perf and heaptrack: the command's own status, 128+signal if killed.
    for (script, want) in [("exit 0", 0), ("exit 3", 3), ("kill -TERM $$", 128 + libc::SIGTERM)] {
        let status = Command::new(env!("CARGO_BIN_EXE_profrec"))
            .args(["-q", "-o", cap.to_str().unwrap(), "--", "sh", "-c", script])
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(want), "{script}");
        assert!(cap.exists(), "{script}: the capture is written whatever the command's status");
    }
}

#[test]
fn profrec_reports_its_own_cpu_time_and_memory_in_its_summary_and_the_capture() {
    if !root_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cap = dir.path().join("cost.cap");
    let out = Command::new(env!("CARGO_BIN_EXE_profrec"))
        .arg("-o")
        .arg(&cap)
        .arg("--")
        .arg(fixture("cpu_split"))
        .arg("0.5")
        .stdout(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // "... using 0.052s CPU and 31.4 MiB of memory at most ..."
    let after = |key: &str| -> f64 {
        let at = stderr.find(key).unwrap_or_else(|| panic!("no '{key}' in {stderr}"));
        let before = stderr[..at].trim_end();
        before[before.rfind(' ').map_or(0, |i| i + 1)..].trim_end_matches('s').parse().unwrap()
    };
    let (cpu_s, rss_mib) = (after("s CPU and"), after(" MiB of memory at most"));
    // profrec loads BPF objects and reads symbol tables: some CPU and a
    // few MiB at the least, and far less than the whole machine.
    assert!(cpu_s > 0.0 && cpu_s < 60.0, "{cpu_s} s CPU");
    assert!(rss_mib > 2.0 && rss_mib < 4096.0, "{rss_mib} MiB");
    let m = Material::load(&cap, true).unwrap();
    let setting = |key: &str| -> f64 {
        let v = m
            .meta
            .extra
            .iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("no {key}: {:?}", m.meta.extra));
        v.1.parse().unwrap()
    };
    let (cap_cpu_s, cap_rss_mib) =
        (setting("recorder_cpu_ns") / 1e9, setting("recorder_max_rss_kib") / 1024.0);
    // The capture's figures are taken as it is closed, the summary's after:
    // never more, and not much less.
    assert!(cap_cpu_s > 0.0 && cap_cpu_s <= cpu_s + 0.0011, "capture {cap_cpu_s} s, summary {cpu_s} s");
    assert!(
        cap_rss_mib <= rss_mib + 0.1 && cap_rss_mib > rss_mib / 2.0,
        "capture {cap_rss_mib}, summary {rss_mib}"
    );
    let mut text = Vec::new();
    profcap_analyze::export::write_info(&profcap_analyze::info::info(&m, (1, 5)), &mut text).unwrap();
    let text = String::from_utf8(text).unwrap();
    let line = text.lines().find(|l| l.starts_with("recorder:")).unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("s CPU (") && line.contains("resident at most"), "{line}");
}
