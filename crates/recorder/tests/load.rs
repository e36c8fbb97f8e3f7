//! Under load: events the ring buffer could not take are recorded as time
//! ranges (gaps) that info, the heatmap and the timeline show. Root tests.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use common::{fixture, root_or_skip};
use profcap_analyze::export::{heatmap_svg, timeline_strips_svg, HeatmapOptions};
use profcap_analyze::info::info;
use profcap_analyze::{Material, ProfileOptions};
use profcap_recorder::{record, RecordOptions, Target};

#[test]
fn a_burst_the_ring_buffer_lost_is_recorded_as_a_time_range_and_shown() {
    if !root_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut busy: Vec<_> = (0..2)
        .map(|_| Command::new(fixture("cpu_split")).arg("6").stdout(Stdio::null()).spawn().unwrap())
        .collect();
    let cap = dir.path().join("gap.cap");
    let mut o = RecordOptions::new(cap.clone(), Target::All);
    o.freq = 4999;
    o.duration = Some(Duration::from_secs(4));
    // A recorder starved of CPU, as on an overloaded machine: each batch is
    // handled 3 s late, by which time 10 000 samples a second, each with
    // its copied stack, have filled the 16 MiB ring.
    o.test_handle_late = Duration::from_secs(3);
    let summary = record(&o, Arc::new(AtomicBool::new(false))).unwrap();
    for b in &mut busy {
        let _ = b.kill();
        let _ = b.wait();
    }
    assert!(summary.lost > 0, "the ring overflowed: {summary:?}");
    let m = Material::load(&cap, true).unwrap();
    let gaps = m.gaps();
    assert!(!gaps.is_empty(), "the losses have their time ranges");
    let in_gaps: u64 = gaps.iter().map(|g| g.2).sum();
    let ring_full: u64 =
        m.lost.iter().filter(|l| l.reason == "ring buffer full" && l.source != "gap").map(|l| l.count).sum();
    assert_eq!(in_gaps, ring_full, "every event the full ring dropped is in some gap");
    for &(from, to, _) in &gaps {
        assert!(from <= to && from >= m.meta.start_mono_ns && to <= m.meta.end_mono_ns, "{from}-{to}");
    }
    // info lists them (and does not count them twice); the views mark them.
    let i = info(&m, (1, 5));
    assert_eq!(i.gaps.len(), gaps.len());
    assert_eq!(i.lost.iter().map(|l| l.count).sum::<u64>(), summary.lost);
    let opts = ProfileOptions::default();
    let mut svg = Vec::new();
    timeline_strips_svg(&m, &opts, &mut svg).unwrap();
    assert!(String::from_utf8(svg).unwrap().contains("events LOST"), "the timeline marks the gap");
    let mut svg = Vec::new();
    heatmap_svg(&m, &opts, &HeatmapOptions::default(), &mut svg).unwrap();
    assert!(String::from_utf8(svg).unwrap().contains("events LOST here"), "the heatmap marks the gap");
}
