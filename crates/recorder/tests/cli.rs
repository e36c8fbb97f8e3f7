//! profrec's installing options (no root needed: they record nothing).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::process::Command;

fn profrec(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_profrec")).args(args).output().unwrap()
}

#[test]
fn completions_and_the_man_page_need_no_recording() {
    let o = profrec(&["--completions", "bash"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let script = String::from_utf8_lossy(&o.stdout);
    assert!(
        script.contains("--off-cpu") && script.contains("--stack-bytes"),
        "bash completion knows the options"
    );
    let dir = tempfile::tempdir().unwrap();
    let o = profrec(&["--man", dir.path().to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let page = std::fs::read_to_string(dir.path().join("profrec.1")).unwrap();
    assert!(page.contains(".TH") && page.contains("off\\-cpu"), "a man page of profrec's options");
    // --mem-python is for attach mode only.
    let o = profrec(&["-o", "/tmp/never.cap", "--mem", "--preload", "--mem-python", "--", "true"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("--mem-python"));
    let o = profrec(&["-o", "/tmp/never.cap", "--mem-python", "--", "true"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("--mem"));
    assert!(!std::path::Path::new("/tmp/never.cap").exists());
    // Recording still needs its output and target.
    let o = profrec(&["--all"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--output"));
}

/// profrec is one self-contained binary: libbpf, libelf and zlib are linked
/// in (.cargo/config.toml, libbpf-rs's `static`), so it runs on a host
/// without libelf. What it still loads is glibc's own and GCC's unwinder.
#[test]
fn profrec_needs_only_libc_level_libraries() {
    let out = Command::new("ldd").arg(env!("CARGO_BIN_EXE_profrec")).output().unwrap();
    assert!(out.status.success(), "ldd: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let allowed = [
        "linux-vdso.so",
        "libc.so",
        "ld-linux-x86-64.so",
        "libgcc_s.so",
        "libm.so",
        "libdl.so",
        "libpthread.so",
        "librt.so",
    ];
    let libs: Vec<&str> = text.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert!(libs.iter().any(|l| l.starts_with("libc.so")), "{text}");
    let other: Vec<&&str> = libs.iter().filter(|l| !allowed.iter().any(|a| l.contains(a))).collect();
    assert!(other.is_empty(), "profrec needs more than libc-level libraries: {other:?}\n{text}");
}
