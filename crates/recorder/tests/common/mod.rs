//! Helpers shared by the root tests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Once;

/// True when running as root. A non-root run fails, unless the developer set
/// PROFCAP_SKIP_ROOT_TESTS, which CI refuses (scripts/test.sh).
pub fn root_or_skip() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var_os("PROFCAP_SKIP_ROOT_TESTS").is_some() {
        eprintln!("skipping: needs root (PROFCAP_SKIP_ROOT_TESTS is set)");
        return false;
    }
    panic!("this test loads BPF programs and must run as root; set PROFCAP_SKIP_ROOT_TESTS=1 to skip it");
}

/// A fixture program, built once per test binary by fixtures/build.sh.
pub fn fixture(name: &str) -> PathBuf {
    static BUILD: Once = Once::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = root.join("target/fixtures");
    BUILD.call_once(|| {
        let ok =
            Command::new(root.join("fixtures/build.sh")).arg(&out).status().expect("run fixtures/build.sh");
        assert!(ok.success(), "fixtures/build.sh failed");
    });
    out.join(name)
}
