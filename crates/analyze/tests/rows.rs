//! The per-sample exports for other systems: OTLP profiles (decoded with
//! the generated messages) and Parquet rows (queried with a real DuckDB,
//! the `duckdb` wheel from PyPI fetched once into target/tools), checked
//! against profanalyze's own `top` and `requests`.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::profiles::v1development as pb;
use prost::Message;

const DUCKDB: &str = "2.0.1";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixture(case: &str) -> PathBuf {
    root().join("fixtures").join(case).join("capture.cap")
}

fn profanalyze(args: &[&str]) -> Vec<u8> {
    let o = Command::new(env!("CARGO_BIN_EXE_profanalyze")).args(args).output().unwrap();
    assert!(o.status.success(), "profanalyze {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    o.stdout
}

fn json(args: &[&str]) -> serde_json::Value {
    serde_json::from_slice(&profanalyze(args)).unwrap()
}

/// `top --json`'s self value of each function (those with any).
fn top_self(cap: &Path, kind: &str) -> BTreeMap<String, i64> {
    let top = json(&["top", cap.to_str().unwrap(), "--kind", kind, "--json", "-n", "1000000"]);
    top["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["self"].as_i64().unwrap() != 0)
        .map(|r| (r["name"].as_str().unwrap().to_owned(), r["self"].as_i64().unwrap()))
        .collect()
}

/// On-CPU samples of each request with a trace id, from `requests --json`.
fn request_samples(cap: &Path) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for r in json(&["requests", cap.to_str().unwrap(), "--json"]).as_array().unwrap() {
        if let Some(t) = r["trace_id"].as_str() {
            *out.entry(t.to_owned()).or_default() += r["on_cpu_samples"].as_i64().unwrap();
        }
    }
    out.retain(|_, v| *v > 0);
    out
}

fn otlp(cap: &Path, dir: &Path) -> pb::ProfilesData {
    let out = dir.join("x.otlp.pb");
    profanalyze(&["otlp", cap.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    pb::ProfilesData::decode(&*std::fs::read(&out).unwrap()).unwrap()
}

fn string(d: &pb::ProfilesDictionary, i: i32) -> &str {
    &d.string_table[i as usize]
}

fn attribute(d: &pb::ProfilesDictionary, i: i32) -> (&str, Value) {
    let a = &d.attribute_table[i as usize];
    (string(d, a.key_strindex), a.value.clone().unwrap().value.unwrap())
}

#[test]
fn otlp_samples_add_up_to_top_with_timestamps_resources_and_build_ids() {
    let dir = tempfile::tempdir().unwrap();
    let cap = fixture("cpu_split");
    let data = otlp(&cap, dir.path());
    let d = data.dictionary.as_ref().unwrap();
    // Index 0 of each table is the zero value.
    assert_eq!(d.string_table[0], "");
    assert_eq!(d.location_table[0], pb::Location::default());
    assert_eq!(d.stack_table[0], pb::Stack::default());
    let info = json(&["info", cap.to_str().unwrap(), "--json"]);
    let mut leaf: BTreeMap<String, i64> = BTreeMap::new();
    let mut build_ids = 0;
    for rp in &data.resource_profiles {
        let res = rp.resource.as_ref().unwrap();
        let attr: HashMap<&str, &Value> = res
            .attributes
            .iter()
            .map(|kv| (&*kv.key, kv.value.as_ref().unwrap().value.as_ref().unwrap()))
            .collect();
        assert!(matches!(attr["host.name"], Value::StringValue(h) if !h.is_empty()));
        assert!(matches!(attr["process.pid"], Value::IntValue(p) if *p > 0));
        assert!(attr.contains_key("process.executable.name"));
        let p = &rp.scope_profiles[0].profiles[0];
        let st = p.sample_type.unwrap();
        assert_eq!((string(d, st.type_strindex), string(d, st.unit_strindex)), ("samples", "count"));
        let pt = p.period_type.unwrap();
        assert_eq!((string(d, pt.type_strindex), string(d, pt.unit_strindex)), ("cpu", "nanoseconds"));
        assert!(p.period > 0);
        for s in &p.samples {
            assert!(s.values.is_empty(), "on-CPU samples are counted by their timestamps");
            for &t in &s.timestamps_unix_nano {
                assert!(
                    t >= p.time_unix_nano && t <= p.time_unix_nano + p.duration_nano,
                    "{t} outside the profile"
                );
            }
            let attrs: Vec<&str> = s.attribute_indices.iter().map(|&i| attribute(d, i).0).collect();
            assert_eq!(attrs[..2], ["thread.id", "thread.name"]);
            let stack = &d.stack_table[s.stack_index as usize];
            let loc = &d.location_table[stack.location_indices[0] as usize];
            let f = &d.function_table[loc.lines[0].function_index as usize];
            *leaf.entry(string(d, f.name_strindex).to_owned()).or_default() +=
                s.timestamps_unix_nano.len() as i64;
            let m = &d.mapping_table[loc.mapping_index as usize];
            build_ids += m
                .attribute_indices
                .iter()
                .filter(|&&i| attribute(d, i).0 == "process.executable.build_id.gnu")
                .count();
        }
    }
    assert!(build_ids > 0, "mappings carry build ids");
    let total: i64 = leaf.values().sum();
    assert_eq!(Some(total), info["samples_by_kind"]["cpu"].as_i64(), "every on-CPU sample, once");
    assert_eq!(leaf, top_self(&cap, "cpu"), "leaf functions of the OTLP samples against top");
    // JSON: the same message.
    let out = dir.path().join("x.json");
    profanalyze(&["otlp", cap.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(out).unwrap()).unwrap();
    let n = v["resourceProfiles"][0]["scopeProfiles"][0]["profiles"][0]["samples"].as_array().unwrap().len();
    assert_eq!(n, data.resource_profiles[0].scope_profiles[0].profiles[0].samples.len());
}

#[test]
fn otlp_links_samples_to_their_requests_traces() {
    let dir = tempfile::tempdir().unwrap();
    let cap = fixture("httpd");
    let data = otlp(&cap, dir.path());
    let d = data.dictionary.as_ref().unwrap();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let mut linked: BTreeMap<String, i64> = BTreeMap::new();
    let mut spans = 0;
    for s in data.resource_profiles.iter().flat_map(|r| &r.scope_profiles[0].profiles[0].samples) {
        if s.link_index != 0 {
            let l = &d.link_table[s.link_index as usize];
            assert_eq!(l.trace_id.len(), 16);
            spans += usize::from(l.span_id.len() == 8);
            // B3's 64-bit trace ids are padded on the left.
            let t = hex(&l.trace_id);
            let t = t.strip_prefix("0000000000000000").unwrap_or(&t).to_owned();
            *linked.entry(t).or_default() += s.timestamps_unix_nano.len() as i64;
        }
        // Request ids that are not trace ids: as an attribute.
        for &i in &s.attribute_indices {
            if let ("profcap.request.id", Value::StringValue(id)) = attribute(d, i) {
                assert_eq!(s.link_index, 0);
                *linked.entry(id).or_default() += s.timestamps_unix_nano.len() as i64;
            }
        }
    }
    assert!(spans > 0, "traceparent requests carry the caller's span");
    assert_eq!(linked, request_samples(&cap));
}

#[test]
fn otlp_refuses_memory_kinds_clearly() {
    let o = Command::new(env!("CARGO_BIN_EXE_profanalyze"))
        .args(["otlp", fixture("allocs").to_str().unwrap(), "--kind", "alloc", "-o", "-"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--kind alloc is not exported"), "{err}");
}

/// A python3 that imports duckdb: the PyPI wheel, unpacked into target/tools.
fn duckdb_path() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = root().join(format!("target/tools/duckdb-{DUCKDB}"));
        let site = dir.join("site");
        if !site.join("duckdb").exists() {
            std::fs::create_dir_all(&dir).unwrap();
            let got = Command::new("python3")
                .args(["-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"])
                .arg(format!("duckdb=={DUCKDB}"))
                .arg("-d")
                .arg(&dir)
                .status()
                .expect("python3 with pip (scripts/install-deps.sh installs it)");
            assert!(got.success(), "pip download duckdb=={DUCKDB} failed");
            let wheel = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| p.extension().is_some_and(|e| e == "whl"))
                .expect("a duckdb wheel");
            let unpacked = Command::new("python3")
                .args(["-m", "zipfile", "-e"])
                .arg(&wheel)
                .arg(&site)
                .status()
                .unwrap();
            assert!(unpacked.success());
        }
        site
    })
}

/// Runs a DuckDB query (with `{dir}` standing for the Parquet directory);
/// rows as tab-separated lines.
fn duckdb(dir: &Path, sql: &str) -> Vec<Vec<String>> {
    let script = "import sys, duckdb\n\
                  for r in duckdb.sql(sys.argv[1]).fetchall():\n    print('\\t'.join(str(x) for x in r))";
    let sql = sql.replace("{dir}", dir.to_str().unwrap());
    let o =
        Command::new("python3").env("PYTHONPATH", duckdb_path()).args(["-c", script, &sql]).output().unwrap();
    assert!(o.status.success(), "duckdb: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap().lines().map(|l| l.split('\t').map(str::to_owned).collect()).collect()
}

#[test]
fn parquet_queried_with_duckdb_equals_top_and_requests() {
    let dir = tempfile::tempdir().unwrap();
    let rows = dir.path().join("rows");
    let cases = ["cpu_split", "httpd", "blocker", "python", "threads"];
    let caps: Vec<String> = cases.iter().map(|c| fixture(c).to_str().unwrap().to_owned()).collect();
    let mut args = vec!["parquet"];
    args.extend(caps.iter().map(String::as_str));
    args.extend(["-o", rows.to_str().unwrap()]);
    profanalyze(&args);
    let top_sql = "SELECT f.function, sum(s.value) FROM '{dir}/samples.parquet' s \
                   JOIN '{dir}/frames.parquet' f USING (capture, stack_id) \
                   WHERE f.depth = 0 AND s.kind = '{kind}' AND s.capture = '{cap}' GROUP BY 1";
    let mut checked = 0;
    for cap in &caps {
        for kind in ["cpu", "offcpu"] {
            let recorded = json(&["info", cap, "--json"])["samples_by_kind"][kind].as_i64().unwrap_or(0);
            if recorded == 0 {
                continue;
            }
            let top = top_self(Path::new(cap), kind);
            let sql = top_sql.replace("{kind}", kind).replace("{cap}", cap);
            let got: BTreeMap<String, i64> =
                duckdb(&rows, &sql).into_iter().map(|r| (r[0].clone(), r[1].parse().unwrap())).collect();
            let got: BTreeMap<String, i64> = got.into_iter().filter(|(_, v)| *v != 0).collect();
            assert_eq!(got, top, "{cap} --kind {kind}: DuckDB's top functions against profanalyze top");
            checked += usize::from(!top.is_empty());
        }
    }
    assert!(checked >= 6, "only {checked} (capture, kind) pairs had samples");
    // Samples of each request's trace, as `requests` counts them.
    let httpd = &caps[1];
    let sql = format!(
        "SELECT trace_id, count(*) FROM '{{dir}}/samples.parquet' WHERE capture = '{httpd}' \
         AND kind = 'cpu' AND trace_id IS NOT NULL GROUP BY 1"
    );
    let traces: BTreeMap<String, i64> =
        duckdb(&rows, &sql).into_iter().map(|r| (r[0].clone(), r[1].parse().unwrap())).collect();
    assert_eq!(traces, request_samples(Path::new(httpd)));
    // Frames carry source lines and build ids where the binary has them;
    // Python frames their files; times are timestamps.
    let sql = "SELECT count(*) FILTER (WHERE line IS NOT NULL AND file IS NOT NULL), \
               count(*) FILTER (WHERE build_id IS NOT NULL), \
               count(*) FILTER (WHERE frame_kind = 'python' AND file LIKE '%.py') FROM '{dir}/frames.parquet'";
    let r = &duckdb(&rows, sql)[0];
    assert!(r.iter().all(|v| v.parse::<i64>().unwrap() > 0), "lines, build ids, python files: {r:?}");
    let r = &duckdb(
        &rows,
        "SELECT typeof(time), min(time) > TIMESTAMP '2020-01-01' FROM '{dir}/samples.parquet' GROUP BY 1",
    )[0];
    assert_eq!(r, &["TIMESTAMPTZ_NS".to_owned(), "True".to_owned()]);
}
