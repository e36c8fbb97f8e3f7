//! The speedscope export against speedscope's own JSON schema (from its npm
//! package, fetched once into target/tools by `npm pack`), and what it says.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::Command;

const VERSION: &str = "1.25.0";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// speedscope's file-format schema, from its npm package.
fn schema() -> PathBuf {
    let dir = root().join(format!("target/tools/speedscope-{VERSION}"));
    let schema = dir.join("package/dist/release/file-format-schema.json");
    if !schema.exists() {
        std::fs::create_dir_all(&dir).unwrap();
        let packed = Command::new("npm")
            .args(["pack", "--silent", &format!("speedscope@{VERSION}")])
            .current_dir(&dir)
            .status()
            .expect("npm (scripts/install-deps.sh installs it)");
        assert!(packed.success(), "npm pack speedscope@{VERSION} failed");
        let tar = dir.join(format!("speedscope-{VERSION}.tgz"));
        let unpacked = Command::new("tar").arg("xzf").arg(&tar).current_dir(&dir).status().unwrap();
        assert!(unpacked.success() && schema.exists(), "no schema in the speedscope package");
    }
    schema
}

fn export(case: &str, args: &[&str], dir: &Path) -> (PathBuf, serde_json::Value) {
    let out = dir.join(format!("{case}.speedscope.json"));
    let cap = root().join("fixtures").join(case).join("capture.cap");
    let o = Command::new(env!("CARGO_BIN_EXE_profanalyze"))
        .arg("speedscope")
        .args(args)
        .arg(&cap)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    (out, v)
}

fn validate(file: &Path) {
    let check = "import json, sys, jsonschema\n\
                 jsonschema.validate(json.load(open(sys.argv[1])), json.load(open(sys.argv[2])))";
    let o = Command::new("python3")
        .args(["-c", check])
        .arg(file)
        .arg(schema())
        .output()
        .expect("python3 with jsonschema (scripts/install-deps.sh installs it)");
    assert!(
        o.status.success(),
        "{} does not match speedscope's schema: {}",
        file.display(),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn exports_match_speedscopes_schema_with_a_profile_per_thread_in_time() {
    let dir = tempfile::tempdir().unwrap();
    for (case, args) in [("threads", &[][..]), ("python", &[][..]), ("blocker", &["--kind", "offcpu"][..])] {
        let (file, v) = export(case, args, dir.path());
        validate(&file);
        let profiles = v["profiles"].as_array().unwrap();
        let frames = v["shared"]["frames"].as_array().unwrap();
        assert!(!profiles.is_empty() && !frames.is_empty(), "{case}");
        for p in profiles {
            let (samples, weights) = (p["samples"].as_array().unwrap(), p["weights"].as_array().unwrap());
            assert_eq!(samples.len(), weights.len());
            let sum: f64 = weights.iter().map(|w| w.as_f64().unwrap()).sum();
            assert!(
                (sum - p["endValue"].as_f64().unwrap()).abs() < 1.0,
                "{case}: endValue is the time sampled"
            );
            for s in samples {
                for i in s.as_array().unwrap() {
                    assert!((i.as_u64().unwrap() as usize) < frames.len(), "{case}: frame index in range");
                }
            }
        }
        if case == "threads" {
            // Each sampled thread its own profile, named with its tid.
            let cap = root().join("fixtures/threads/capture.cap");
            let reader = profcap_format::CaptureReader::open(&cap, Default::default()).unwrap();
            let tids: std::collections::BTreeSet<u32> =
                reader.flat_map(|b| b.unwrap().samples).map(|s| s.tid).collect();
            assert_eq!(profiles.len(), tids.len());
            for tid in tids {
                assert!(profiles.iter().any(|p| p["name"].as_str().unwrap().ends_with(&format!(" ({tid})"))));
            }
        }
        if case == "python" {
            // On-CPU at 199 Hz: each sample weighs 1/199 s.
            let w = profiles[0]["weights"][0].as_f64().unwrap();
            assert!((w - 1e9 / 199.0).abs() < 1.0, "{w}");
            assert!(frames.iter().any(|f| f["name"].as_str().unwrap().starts_with("py::pywork.hot ")));
        }
    }
}

#[test]
fn memory_kinds_are_refused_and_leave_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.json");
    let cap = root().join("fixtures/allocs/capture.cap");
    let o = Command::new(env!("CARGO_BIN_EXE_profanalyze"))
        .args(["speedscope", "--kind", "alloc"])
        .arg(&cap)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("on-CPU or off-CPU"));
    assert!(!out.exists(), "no file is written for a refused export");
}

/// Serves `dir` over HTTP on a free local port, until the test ends.
fn serve(dir: PathBuf) -> u16 {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let dir = dir.clone();
            std::thread::spawn(move || {
                let mut line = String::new();
                let mut reader = BufReader::new(&stream);
                if reader.read_line(&mut line).is_err() {
                    return;
                }
                let path = line.split(' ').nth(1).unwrap_or("/").split(['?', '#']).next().unwrap_or("/");
                let file = dir.join(path.trim_start_matches('/'));
                let (status, body) =
                    match (file.starts_with(&dir) && !path.contains(".."), std::fs::read(&file)) {
                        (true, Ok(b)) => ("200 OK", b),
                        _ => ("404 Not Found", Vec::new()),
                    };
                let kind = match file.extension().and_then(|e| e.to_str()) {
                    Some("html") => "text/html",
                    Some("js") => "text/javascript",
                    Some("json") => "application/json",
                    Some("css") => "text/css",
                    Some("wasm") => "application/wasm",
                    _ => "application/octet-stream",
                };
                let mut w = &stream;
                let _ = write!(w, "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                let _ = w.write_all(&body);
            });
        }
    });
    port
}

#[test]
fn a_fixture_export_renders_in_speedscope_in_headless_chromium() {
    let app = schema().parent().unwrap().to_path_buf();
    let dir = tempfile::tempdir().unwrap();
    // The app and the profile from one origin: speedscope fetches #profileURL.
    let site = dir.path().join("site");
    Command::new("cp").arg("-r").arg(&app).arg(&site).status().unwrap();
    let (file, v) = export("python", &[], dir.path());
    std::fs::copy(&file, site.join("profile.json")).unwrap();
    let port = serve(site);
    let url = format!(
        "http://127.0.0.1:{port}/index.html#profileURL=http%3A%2F%2F127.0.0.1%3A{port}%2Fprofile.json"
    );
    let chromium = |extra: &[&str]| {
        Command::new("chromium")
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--virtual-time-budget=10000",
            ])
            .args(extra)
            .arg(&url)
            .output()
            .expect("chromium (scripts/install-deps.sh installs it)")
    };
    let dom = chromium(&["--dump-dom"]);
    assert!(dom.status.success(), "{}", String::from_utf8_lossy(&dom.stderr));
    let dom = String::from_utf8_lossy(&dom.stdout);
    let thread = v["profiles"][0]["name"].as_str().unwrap();
    assert!(dom.contains(thread), "the thread's profile {thread:?} is shown: {dom}");
    assert!(dom.contains("capture.cap - speedscope"), "the file's name is the title: {dom}");
    // The screenshot is kept as an artifact of the run.
    let artifacts = root().join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("speedscope-python.png");
    let _ = std::fs::remove_file(&shot);
    let taken = chromium(&["--window-size=1280,720", &format!("--screenshot={}", shot.display())]);
    assert!(taken.status.success() && shot.exists(), "{}", String::from_utf8_lossy(&taken.stderr));
}
