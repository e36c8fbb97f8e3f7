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

fn stress(sample_bytes: &str) -> std::process::Output {
    Command::new(fixture("alloc_stress"))
        .args(["4", "30000"])
        .env("LD_PRELOAD", SAMPLER)
        .env("PROFCAP_SAMPLE_BYTES", sample_bytes)
        .output()
        .unwrap()
}

#[test]
fn the_whole_allocation_family_works_through_the_sampler() {
    for bytes in ["256", "65536", "2097152"] {
        let out = stress(bytes);
        assert!(
            out.status.success(),
            "at {bytes} sample bytes: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("all checks held"));
    }
}
