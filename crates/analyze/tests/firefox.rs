//! The Firefox Profiler export: a track per thread with every on-CPU sample,
//! off-CPU blocks and HTTP requests (with their trace ids) as markers.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::path::Path;

use profcap_analyze::export::firefox_profile;
use profcap_analyze::{Material, ProfileOptions};
use profcap_format::SampleKind;

#[test]
fn httpd_exports_its_threads_blocks_and_requests() {
    let cap = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/httpd/capture.cap");
    let m = Material::load(&cap, true).unwrap();
    let mut o = ProfileOptions::default();
    o.symbolize.local_files = false;
    let profile = firefox_profile(&m, &o, "httpd.cap").unwrap();
    let v: serde_json::Value = serde_json::to_value(&profile).unwrap();
    assert_eq!(v["meta"]["product"], "httpd.cap");
    let categories: Vec<&str> =
        v["meta"]["categories"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    for c in ["Native", "Kernel", "Python", "Off-CPU", "Request"] {
        assert!(categories.contains(&c), "{categories:?}");
    }
    // What the capture holds, per thread.
    let reader = profcap_format::CaptureReader::open(&cap, Default::default()).unwrap();
    let (mut cpu, mut off): (BTreeMap<String, usize>, BTreeMap<String, usize>) = Default::default();
    for s in reader.flat_map(|b| b.unwrap().samples) {
        let by = if s.kind == SampleKind::Cpu { &mut cpu } else { &mut off };
        *by.entry(s.tid.to_string()).or_default() += 1;
    }
    let threads = v["threads"].as_array().unwrap();
    let mut requests = Vec::new();
    for t in threads {
        let tid = t["tid"].as_str().map(String::from).unwrap_or_else(|| t["tid"].to_string());
        let samples = t["samples"]["length"].as_u64().unwrap() as usize;
        assert_eq!(samples, cpu.get(&tid).copied().unwrap_or(0), "thread {tid}: every on-CPU sample");
        let strings = t["stringArray"].as_array().unwrap();
        let markers = &t["markers"];
        let data = markers["data"].as_array().unwrap();
        let blocked = data.iter().filter(|d| d["type"] == "Blocked").count();
        assert_eq!(blocked, off.get(&tid).copied().unwrap_or(0), "thread {tid}: a marker per off-CPU block");
        for d in data.iter().filter(|d| d["type"] == "HttpRequest") {
            requests.push(strings[d["trace_id"].as_u64().unwrap() as usize].as_str().unwrap().to_owned());
        }
        // Markers end after they start.
        let (starts, ends) =
            (markers["startTime"].as_array().unwrap(), markers["endTime"].as_array().unwrap());
        for (a, b) in starts.iter().zip(ends) {
            assert!(b.as_f64().unwrap() >= a.as_f64().unwrap());
        }
    }
    // Every request the capture has, with the trace id it carried.
    let spans = profcap_analyze::requests::capture_spans(&m, Vec::new());
    let mut want: Vec<String> = spans
        .iter()
        .filter(|s| !s.tids.is_empty())
        .map(|s| s.trace.as_ref().map_or(String::new(), |t| t.trace_id.clone()))
        .collect();
    want.sort();
    requests.sort();
    assert!(!requests.is_empty());
    assert_eq!(requests, want);
}

#[test]
fn memory_in_use_is_a_counter_track_that_ends_where_the_replay_does() {
    let cap = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/allocs/capture.cap");
    let m = Material::load(&cap, true).unwrap();
    let mut o = ProfileOptions::default();
    o.symbolize.local_files = false;
    let v: serde_json::Value = serde_json::to_value(firefox_profile(&m, &o, "allocs.cap").unwrap()).unwrap();
    let counters = v["counters"].as_array().unwrap();
    assert_eq!(counters.len(), 1, "one process, one counter");
    assert_eq!(counters[0]["name"], "Memory in use");
    // The deltas add up to what is in use at the end, by the analyzer's own replay.
    let samples = &counters[0]["samples"];
    let sum: f64 = samples["count"].as_array().unwrap().iter().map(|c| c.as_f64().unwrap()).sum();
    let end = profcap_analyze::memory::timeline(&m, true, 2000, |_| true).unwrap();
    let want = end.values().next().unwrap().last().unwrap().1 as f64;
    assert!((sum - want).abs() < 1.0, "{sum} vs {want}");
}
