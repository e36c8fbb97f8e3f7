//! Helpers shared by the root tests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Once;

use profcap_analyze::export::{top_table, TopBy};
use profcap_analyze::{build, Grouping, Material, Profile, ProfileOptions};

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
#[allow(dead_code)] // not every test binary uses every helper
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

/// The capture read back strictly and its profile, symbolized from the
/// embedded material alone (no local files: that proves it suffices).
#[allow(dead_code)] // not every test binary uses every helper
pub fn profile(path: &Path, grouping: Grouping) -> (Material, Profile) {
    let m = Material::load(path, true).expect("capture reads back strictly");
    let mut o = ProfileOptions::default();
    o.grouping = grouping;
    o.symbolize.local_files = false;
    let p = build(&m, &o).expect("profile");
    (m, p)
}

/// Bytes (or blocks, or samples) per leaf function of the profile `filter`
/// selects, symbolized from the capture's own material.
#[allow(dead_code)]
pub fn by_leaf(m: &Material, filter: profcap_analyze::Filter) -> std::collections::HashMap<String, i64> {
    let mut o = ProfileOptions::default();
    o.filter = filter;
    o.symbolize.local_files = false;
    let p = build(m, &o).expect("profile");
    let mut out = std::collections::HashMap::new();
    for (frames, v) in &p.stacks {
        if let Some(leaf) = frames.last() {
            *out.entry(leaf.name.to_string()).or_insert(0) += v;
        }
    }
    out
}

/// Total (inclusive) share of each named function, in percent.
#[allow(dead_code)]
pub fn shares(p: &Profile, names: &[&str]) -> Vec<f64> {
    let rows = top_table(p, TopBy::Function);
    names
        .iter()
        .map(|n| {
            let v = rows.iter().find(|r| &*r.name == *n).map_or(0, |r| r.total);
            100.0 * v as f64 / p.total as f64
        })
        .collect()
}
