//! The allocation sampler that `profrec --mem --preload` preloads, on its own
//! (no profrec, no root): fixtures/programs/alloc_stress.c drives the whole
//! allocation family from four threads and checks every block's contents,
//! alignment, zeroing and usable size. At 256 sample bytes nearly every block
//! is picked, so most live in the sampler's arena and move in and out of it
//! on realloc.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

#[allow(dead_code)] // only fixture() is used here
mod common;

use std::process::Command;

use common::fixture;

/// The sampler as built for this profrec (crates/recorder/build.rs).
const SAMPLER: &str = concat!(env!("OUT_DIR"), "/libprofcap_sampler.so");

fn stress(args: &[&str], sample_bytes: &str, cache: &str) -> std::process::Output {
    Command::new(fixture("alloc_stress"))
        .args(args)
        .env("LD_PRELOAD", SAMPLER)
        .env("PROFCAP_SAMPLE_BYTES", sample_bytes)
        .env("PROFCAP_SAMPLER_CACHE", cache)
        .output()
        .unwrap()
}

/// With and without the sampler's per-thread cache of freed small blocks.
#[test]
fn the_whole_allocation_family_works_through_the_sampler() {
    for cache in ["1", "0"] {
        for bytes in ["256", "65536", "2097152"] {
            let out = stress(&["4", "30000"], bytes, cache);
            assert!(
                out.status.success(),
                "at {bytes} sample bytes, cache {cache}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(String::from_utf8_lossy(&out.stdout).contains("all checks held"));
        }
    }
}

/// A block freed twice while it sits in the sampler's cache aborts the
/// program, as glibc's own check would, instead of handing it out twice.
#[test]
fn a_double_free_into_the_cache_aborts() {
    use std::os::unix::process::ExitStatusExt;
    let out = stress(&["double-free"], "2097152", "1");
    assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("double free detected (profcap sampler cache)"),
        "{out:?}"
    );
}

/// The ring between the sampler and profrec, made small (4 KiB) so that it
/// wraps and fills over and over while four threads write into it and this
/// test reads it as profrec does: every record comes out whole and in order
/// per thread, and what did not fit is counted, never garbled.
#[test]
fn the_sampler_ring_survives_wrapping_and_filling() {
    use profcap_recorder::mem::SamplerRing;
    use std::collections::HashMap;

    let mut ring = SamplerRing::create(4096).unwrap();
    let mut child = Command::new(fixture("alloc_stress"))
        .args(["4", "20000"])
        .env("LD_PRELOAD", SAMPLER)
        .env("PROFCAP_SAMPLE_BYTES", "4096")
        .env("PROFCAP_RING", ring.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (mut allocs, mut frees) = (0u64, 0u64);
    let mut last_time: HashMap<u32, u64> = HashMap::new();
    let mut take = |ring: &mut SamplerRing| {
        for r in ring.drain() {
            assert_eq!(r.pid, pid, "{r:?}");
            // One thread's records are in its own order.
            let last = last_time.entry(r.tid).or_insert(0);
            assert!(r.time_ns >= *last, "{r:?} after {last}");
            *last = r.time_ns;
            if r.alloc {
                assert!(r.addr != 0 && r.weight >= 1 && !r.frames.is_empty(), "{r:?}");
                allocs += 1;
            } else {
                frees += 1;
            }
        }
    };
    let status = loop {
        take(&mut ring);
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    };
    take(&mut ring);
    assert!(status.success());
    assert_eq!(ring.malformed, 0);
    eprintln!("{allocs} allocations and {frees} frees read, {} dropped (ring full)", ring.dropped());
    assert!(allocs > 1000 && frees > 1000, "{allocs} allocations, {frees} frees");
    assert!(ring.dropped() > 0, "a 4 KiB ring never filled: the test did not test filling");
}
