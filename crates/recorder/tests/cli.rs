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
