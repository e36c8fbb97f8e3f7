//! Compiles the BPF programs in bpf/ into a libbpf-rs skeleton in OUT_DIR.

use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

/// Builds the allocation sampler that `profrec --mem --preload` preloads
/// into its target (embedded into profrec with include_bytes!). Frame
/// pointers everywhere, so that the stacks taken at its probe functions walk
/// through its malloc wrappers into the caller.
fn build_sampler(out: &std::path::Path) {
    let src = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"))
        .join("sampler/profcap_sampler.c");
    let cc = env::var("CC").unwrap_or_else(|_| "gcc".to_owned());
    let status = std::process::Command::new(&cc)
        .args(["-O2", "-g", "-fPIC", "-shared", "-Wall", "-Wextra", "-Werror"])
        .args(["-fno-omit-frame-pointer", "-mno-omit-leaf-frame-pointer", "-fcf-protection=none", "-fno-plt"])
        .arg("-o")
        .arg(out.join("libprofcap_sampler.so"))
        .arg(&src)
        .args(["-lm", "-pthread"])
        .status()
        .unwrap_or_else(|e| panic!("running {cc} for {}: {e}", src.display()));
    assert!(status.success(), "{cc} failed on {}", src.display());
    println!("cargo:rerun-if-changed={}", src.display());
}

const PROGRAMS: &[&str] = &["oncpu", "offcpu", "requests", "mem"];

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let bpf_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it")).join("../../bpf");
    for name in PROGRAMS {
        let src = bpf_dir.join(format!("{name}.bpf.c"));
        SkeletonBuilder::new()
            .source(&src)
            .clang_args([format!("-I{}", bpf_dir.display()), "-Wall".to_owned()])
            .build_and_generate(out.join(format!("{name}.skel.rs")))
            .unwrap_or_else(|e| panic!("building {}: {e:#}", src.display()));
        println!("cargo:rerun-if-changed={}", src.display());
    }
    build_sampler(&out);
    println!("cargo:rerun-if-changed={}", bpf_dir.join("profrec.h").display());
    println!("cargo:rerun-if-changed={}", bpf_dir.join("common.h").display());
    println!("cargo:rerun-if-changed={}", bpf_dir.join("python.h").display());
    println!("cargo:rerun-if-changed={}", bpf_dir.join("vmlinux.h").display());
}
