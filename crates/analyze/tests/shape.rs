//! --focus, --exclude and --reverse on a fixture capture (no root needed).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::path::Path;

use profcap_analyze::{build, Material, Profile, ProfileOptions};

fn profile(tune: impl FnOnce(&mut ProfileOptions)) -> Profile {
    let cap = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/python/capture.cap");
    let m = Material::load(&cap, true).unwrap();
    let mut o = ProfileOptions::default();
    o.symbolize.local_files = false;
    tune(&mut o);
    build(&m, &o).unwrap()
}

fn re(s: &str) -> regex::Regex {
    regex::Regex::new(s).unwrap()
}

fn has(frames: &[profcap_analyze::symbolize::Frame], prefix: &str) -> bool {
    frames.iter().any(|f| f.name.starts_with(prefix))
}

#[test]
fn focus_keeps_the_stacks_through_a_function_and_rescales() {
    let all = profile(|_| {});
    let cold: i64 = all.stacks.iter().filter(|(f, _)| has(f, "py::pywork.cold ")).map(|(_, v)| v).sum();
    let focused = profile(|o| o.shape.focus = vec![re(r"^py::pywork\.cold ")]);
    assert!(cold > 0);
    assert_eq!(focused.total, cold, "the total is what the focus keeps");
    assert!(focused.stacks.iter().all(|(f, _)| has(f, "py::pywork.cold ")));
    // For on-CPU samples the value is the sample count.
    assert_eq!(focused.samples as i64, cold);
}

#[test]
fn exclude_leaves_out_the_stacks_through_a_function() {
    let all = profile(|_| {});
    let without = profile(|o| o.shape.exclude = vec![re(r"^py::pywork\.(hot|cold) ")]);
    assert!(without.stacks.iter().all(|(f, _)| !has(f, "py::pywork.hot ") && !has(f, "py::pywork.cold ")));
    let through: i64 = all
        .stacks
        .iter()
        .filter(|(f, _)| has(f, "py::pywork.hot ") || has(f, "py::pywork.cold "))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(without.total, all.total - through);
    let none = profile(|o| {
        o.shape.focus = vec![re(r"^py::pywork\.cold ")];
        o.shape.exclude = vec![re(r"^py::pywork\.cold ")];
    });
    assert!(none.stacks.is_empty() && none.total == 0);
}

#[test]
fn reverse_puts_the_leaf_first_and_keeps_every_value() {
    let all = profile(|_| {});
    let rev = profile(|o| o.shape.reverse = true);
    assert_eq!(rev.total, all.total);
    let mut a: Vec<(Vec<String>, i64)> =
        all.stacks.iter().map(|(f, v)| (f.iter().rev().map(|x| x.name.to_string()).collect(), *v)).collect();
    let mut r: Vec<(Vec<String>, i64)> =
        rev.stacks.iter().map(|(f, v)| (f.iter().map(|x| x.name.to_string()).collect(), *v)).collect();
    a.sort();
    r.sort();
    assert_eq!(a, r);
}

#[test]
fn a_flame_chart_keeps_time_order_and_every_value() {
    let cap = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/python/capture.cap");
    let m = Material::load(&cap, true).unwrap();
    let mut o = ProfileOptions::default();
    o.symbolize.local_files = false;
    let merged = build(&m, &o).unwrap();
    let chart = profcap_analyze::profile::time_ordered(&m, &o).unwrap();
    assert_eq!(chart.total, merged.total);
    assert_eq!(chart.samples, merged.samples);
    // Runs of one stack are one entry; the same stack comes back later.
    assert!(chart.stacks.windows(2).all(|w| w[0].0 != w[1].0));
    assert!(chart.stacks.len() > merged.stacks.len());
    // Time order: the interpreter starts up before it runs pywork's code, and
    // every stack has the thread's root frame.
    let first_work = chart.stacks.iter().position(|(f, _)| has(f, "py::pywork.spin ")).unwrap();
    assert!(chart.stacks[..first_work].iter().any(|(f, _)| has(f, "Py_InitializeFromConfig")));
    assert!(chart.stacks.iter().all(|(f, _)| f[0].name.ends_with(')')));
}
