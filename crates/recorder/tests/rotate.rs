//! Continuous recording (`--rotate`): files that tile the recording, each
//! readable alone, retention, SIGHUP, and a directory read by time range.
//! Root tests (they load BPF programs), as record.rs.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::{fixture, profile, root_or_skip, shares};
use profcap_analyze::inputs::{expand, span, WallRange};
use profcap_analyze::Grouping;
use profcap_format::{CaptureReader, Meta, ReadOptions};
use profcap_recorder::{capture_time, record, RecordOptions, Retention, RotateEvery, Rotation, Target};

/// A directory only root can write, as profrec requires.
fn private_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

/// The captures profrec wrote into `dir`, oldest first.
fn captures(dir: &Path, host_prefix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with(host_prefix) && capture_time(&name).is_some()
        })
        .collect();
    v.sort();
    v
}

/// A capture's first metadata, last metadata and sample keys (time, tid, cpu).
fn read(path: &Path) -> (Meta, Meta, Vec<(u64, u32, u16)>) {
    let mut reader = CaptureReader::open(path, ReadOptions::strict(true)).unwrap();
    let (mut first, mut last, mut samples) = (None, None, Vec::new());
    while let Some(batch) = reader.next_batch().unwrap() {
        if let Some(m) = batch.meta {
            first.get_or_insert_with(|| m.clone());
            last = Some(m);
        }
        samples.extend(batch.samples.iter().map(|s| (s.time_ns, s.tid, s.cpu)));
    }
    (first.unwrap(), last.unwrap(), samples)
}

fn host() -> String {
    let (_, hostname) = profcap_recorder::procfs::uname();
    hostname
}

#[test]
fn rotated_files_tile_the_recording_and_each_stands_alone() {
    if !root_or_skip() {
        return;
    }
    let dir = private_dir();
    // An old capture of an earlier run, 2 MiB: over the 1.5 MiB budget, so
    // the first pass deletes it; the new files (tens of KiB) all stay.
    let old = dir.path().join("oldhost-20200101T000000.000Z.cap");
    std::fs::write(&old, vec![0u8; 2 << 20]).unwrap();
    let mut busy = Command::new(fixture("cpu_split")).arg("8").stdout(Stdio::null()).spawn().unwrap();
    let mut o = RecordOptions::new(dir.path().to_owned(), Target::Pids(vec![busy.id()]));
    o.freq = 199;
    o.duration = Some(Duration::from_millis(4500));
    let mut rotation = Rotation::new(RotateEvery::Period(Duration::from_secs(1)));
    rotation.keep = Some(Retention::Bytes(3 << 19));
    o.rotate = Some(rotation);
    let summary = record(&o, Arc::new(AtomicBool::new(false))).unwrap();
    busy.kill().unwrap();
    let _ = busy.wait();

    assert!(!old.exists(), "the oldest capture, over the --keep budget, was deleted");
    let files = captures(dir.path(), &host());
    assert!(files.len() >= 4, "4.5 s at 1 s per file: {files:?}");
    assert_eq!(files.len() as u64, summary.files);
    let mut seen = HashSet::new();
    let mut total = 0;
    let mut previous: Option<(Meta, u64)> = None;
    for f in &files {
        let (start, end, samples) = read(f);
        assert!(!samples.is_empty(), "{}: no samples", f.display());
        let (lo, hi) =
            (samples.iter().map(|s| s.0).min().unwrap(), samples.iter().map(|s| s.0).max().unwrap());
        assert!(hi <= end.end_mono_ns, "{}: a sample after the file's end", f.display());
        if let Some((prev_end, prev_last)) = &previous {
            assert_eq!(
                start.start_mono_ns,
                prev_end.end_mono_ns,
                "{}: starts where the last ended",
                f.display()
            );
            assert!(lo > start.start_mono_ns, "{}: a sample of the previous file's time", f.display());
            // A busy thread sampled at 199 Hz: consecutive files' samples
            // are a sampling period apart, not a gap (250 ms: a loaded CI machine).
            let gap = lo - prev_last;
            assert!(gap < 250_000_000, "{}: {gap} ns between files", f.display());
        }
        for s in &samples {
            assert!(seen.insert(*s), "{}: sample {s:?} is in two files", f.display());
        }
        total += samples.len() as u64;
        // Alone, each file names the program's functions from its own material.
        let (m, p) = profile(f, Grouping::default());
        assert!(m.processes.contains_key(&busy.id()), "{}: the process is described", f.display());
        let s = shares(&p, &["work_a", "work_b"]);
        assert!(s[0] > 30.0 && s[1] > 10.0, "{}: work_a {:.1}%, work_b {:.1}%", f.display(), s[0], s[1]);
        previous = Some((end, hi));
    }
    assert_eq!(total, summary.samples, "every sample is in exactly one file");
    let status = std::fs::read_to_string(dir.path().join(profcap_recorder::STATUS_FILE)).unwrap();
    assert!(status.contains("state=stopped"), "{status}");
    assert!(status.contains(&format!("files_written={}", files.len())), "{status}");
    assert!(status.contains("deleted_by_retention=1"), "{status}");
}

/// profrec's status for `dir`: its exit code and output.
fn status(dir: &Path) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_profrec")).arg("--status").arg(dir).output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn sighup_starts_a_file_retention_keeps_what_is_not_ours_and_time_ranges_select_files() {
    if !root_or_skip() {
        return;
    }
    let dir = private_dir();
    // Captures of an earlier run, ended in 2020: older than --keep 1d.
    let two_days_ago = SystemTime::now() - Duration::from_secs(2 * 86400);
    let mut old = Vec::new();
    for name in ["oldhost-20200101T000000.000Z.cap", "oldhost-20200101T000100.000Z.cap"] {
        let p = dir.path().join(name);
        std::fs::write(&p, b"old").unwrap();
        std::fs::File::options().write(true).open(&p).unwrap().set_modified(two_days_ago).unwrap();
        old.push(p);
    }
    // Not profrec's: another user's file with a capture's name, and a note.
    let foreign = dir.path().join("oldhost-20200101T000200.000Z.cap");
    std::fs::write(&foreign, b"not ours").unwrap();
    std::fs::File::options().write(true).open(&foreign).unwrap().set_modified(two_days_ago).unwrap();
    std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).unwrap();
    let note = dir.path().join("notes.txt");
    std::fs::write(&note, b"keep me").unwrap();

    let mut busy = Command::new(fixture("cpu_split")).arg("8").stdout(Stdio::null()).spawn().unwrap();
    let mut rec = Command::new(env!("CARGO_BIN_EXE_profrec"))
        .args(["-q", "-F", "199", "--rotate", "1h", "--keep", "1d", "-o"])
        .arg(dir.path())
        .args(["-p", &busy.id().to_string()])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let (code, text) = status(dir.path());
    assert_eq!(code, Some(0), "recording: {text}");
    assert!(text.contains("recording (pid"), "{text}");
    for _ in 0..2 {
        // SAFETY: signalling a child process we started.
        unsafe { libc::kill(rec.id() as i32, libc::SIGHUP) };
        std::thread::sleep(Duration::from_millis(1200));
    }
    // SAFETY: as above.
    unsafe { libc::kill(rec.id() as i32, libc::SIGTERM) };
    let exit = rec.wait().unwrap();
    busy.kill().unwrap();
    let _ = busy.wait();
    assert!(exit.success(), "profrec exited with {exit}");

    let files = captures(dir.path(), &host());
    assert_eq!(files.len(), 3, "two SIGHUPs and the stop: three files {files:?}");
    assert!(old.iter().all(|p| !p.exists()), "captures older than --keep were deleted");
    assert!(foreign.exists() && note.exists(), "files that are not profrec's stay");
    let (code, text) = status(dir.path());
    assert_eq!(code, Some(3), "stopped: {text}");
    assert!(text.contains("not running (stopped"), "{text}");
    assert!(text.contains("2 by --keep"), "{text}");

    // A directory and a wall-clock range: only the files overlapping it.
    let all = expand(&[dir.path().to_owned()]).unwrap();
    assert_eq!(all.len(), 3, "the directory's captures (the foreign file is no capture): {all:?}");
    let spans: Vec<_> = all.iter().map(|f| span(f).unwrap()).collect();
    let middle = &spans[1];
    let range = WallRange {
        from_ns: Some(i128::from(middle.start_wall_ns) + 100_000_000),
        to_ns: Some(i128::from(middle.end_wall_ns) - 100_000_000),
    };
    let chosen: Vec<_> = spans.iter().filter(|s| range.overlaps(s)).map(|s| s.path.clone()).collect();
    assert_eq!(chosen, vec![all[1].clone()], "only the middle file overlaps its own span");
    let wide = WallRange { from_ns: Some(i128::from(spans[0].end_wall_ns) - 1), to_ns: None };
    assert_eq!(spans.iter().filter(|s| wide.overlaps(s)).count(), 3);
    // The range in the middle file's seconds keeps its samples inside it.
    let (m, _) = profile(&all[1], Grouping::default());
    let (from, to) = range.seconds_in(middle, m.first_ns);
    let (from, to) = (from.unwrap(), to.unwrap());
    assert!(from > 0.0 && to > from, "{from} {to}");
}
