//! profanalyze's symbolizer against binutils `addr2line -f -i -C` on real
//! binaries: libc (with its detached debug info from libc6-dbg, found in
//! /usr/lib/debug by build id), and a C and a Rust program built in the repo
//! with debug info. Function names must agree for
//! every address; file:line for nearly all.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Once;

use profcap_analyze::symbolize::{SymbolizeOptions, Symbolizer};
use profcap_analyze::Material;
use profcap_format::elf::{build_id, extract_blob, EmbedMode};
use profcap_format::{Mapping, SymbolBlob};

const BASE: u64 = 0x5555_0000_0000;

fn fixture(name: &str) -> PathBuf {
    static BUILD: Once = Once::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = root.join("target/fixtures");
    BUILD.call_once(|| {
        let ok = Command::new(root.join("fixtures/build.sh")).arg(&out).status().unwrap();
        assert!(ok.success(), "fixtures/build.sh failed");
    });
    out.join(name)
}

/// A material with the whole file mapped at BASE in pid 1, like a recording.
fn material_for(path: &Path) -> (Material, SymbolBlob) {
    let data = std::fs::read(path).unwrap();
    let id = build_id(&data).unwrap_or_default();
    let blob = extract_blob(&data, path.to_str().unwrap(), &id, EmbedMode::Symbols);
    let mut m = Material::default();
    m.mappings.insert(
        1,
        vec![Mapping {
            pid: 1,
            start: BASE,
            end: BASE + data.len() as u64,
            file_offset: 0,
            path: path.to_str().unwrap().to_owned(),
            build_id: id.clone(),
            ..Mapping::default()
        }],
    );
    m.blobs.insert(id, blob.clone());
    (m, blob)
}

/// About `n` addresses inside sized function symbols, spread over the file;
/// several per function when there are few functions, to reach more lines.
fn probe_addresses(blob: &SymbolBlob, n: usize) -> Vec<u64> {
    let sized: Vec<_> = blob.symbols.iter().filter(|s| s.size > 2 && !s.name.starts_with('[')).collect();
    let step = (sized.len() / n).max(1);
    let per_function = (n / sized.len().max(1)).clamp(1, 8) as u64;
    let mut v: Vec<u64> = sized
        .iter()
        .step_by(step)
        .flat_map(|s| (1..=per_function).map(move |k| s.addr + s.size * k / (per_function + 1)))
        .collect();
    v.sort();
    v.dedup();
    v
}

/// addr2line's frames per address: (function, "file:line") innermost first.
fn addr2line(path: &Path, addrs: &[u64]) -> HashMap<u64, Vec<(String, String)>> {
    let mut cmd = Command::new("addr2line");
    cmd.args(["-a", "-f", "-i", "-C", "-e"]).arg(path);
    cmd.args(addrs.iter().map(|a| format!("{a:#x}")));
    let out = cmd.output().expect("binutils addr2line (scripts/install-deps.sh installs binutils)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let mut result: HashMap<u64, Vec<(String, String)>> = HashMap::new();
    let mut lines = text.lines().peekable();
    let mut current = 0;
    while let Some(line) = lines.next() {
        if let Some(hex) = line.strip_prefix("0x") {
            current = u64::from_str_radix(hex, 16).unwrap();
            result.entry(current).or_default();
            continue;
        }
        let loc = lines.next().unwrap_or("??:0");
        let loc = loc.split(" (discriminator").next().unwrap();
        let base = loc.rsplit('/').next().unwrap().to_owned();
        result.get_mut(&current).unwrap().push((line.to_owned(), base));
    }
    result
}

/// Object-relative address to the address it has when mapped at BASE.
fn mapped(blob: &SymbolBlob, vaddr: u64) -> u64 {
    let seg = blob.segments.iter().find(|s| s.vaddr <= vaddr && vaddr < s.vaddr + s.file_size).unwrap();
    BASE + vaddr - seg.vaddr + seg.file_offset
}

struct Agreement {
    names: usize,
    names_agree: usize,
    lines: usize,
    lines_agree: usize,
    disagreements: Vec<String>,
}

fn compare(path: &Path, n: usize, with_lines: bool) -> Agreement {
    let (m, blob) = material_for(path);
    let mut aliases: HashMap<u64, HashSet<String>> = HashMap::new();
    for s in &blob.symbols {
        aliases.entry(s.addr).or_default().insert(profcap_analyze::symbolize::demangle(&s.name));
    }
    let addrs = probe_addresses(&blob, n);
    assert!(addrs.len() >= 30, "{}: only {} probe addresses", path.display(), addrs.len());
    let expected = addr2line(path, &addrs);
    let mut sym = Symbolizer::new(&m, SymbolizeOptions::default());
    let mut line_opts = SymbolizeOptions::default();
    line_opts.lines = true;
    let mut sym_lines = Symbolizer::new(&m, line_opts);
    let mut a = Agreement { names: 0, names_agree: 0, lines: 0, lines_agree: 0, disagreements: Vec::new() };
    for &addr in &addrs {
        let at = mapped(&blob, addr);
        let ours = sym.user_frames(1, 0, at, true);
        let theirs = &expected[&addr];
        // Names: every frame, innermost first.
        let our_names: Vec<String> = ours.iter().map(|f| f.name.to_string()).collect();
        let their_names: Vec<String> = theirs.iter().map(|(f, _)| f.clone()).collect();
        a.names += 1;
        let symbol_at = blob.symbols.iter().rfind(|s| s.addr <= addr).map(|s| s.addr).unwrap_or(0);
        let same = our_names == their_names
            || (our_names.len() == 1
                && their_names.len() == 1
                && aliases
                    .get(&symbol_at)
                    .is_some_and(|al| al.contains(&our_names[0]) && al.contains(&their_names[0])));
        if same {
            a.names_agree += 1;
        } else {
            a.disagreements.push(format!("{addr:#x}: ours {our_names:?} addr2line {their_names:?}"));
        }
        // Lines: only where addr2line knows a line number.
        let known = theirs[0]
            .1
            .rsplit_once(':')
            .is_some_and(|(f, l)| f != "??" && l.parse::<u32>().is_ok_and(|l| l > 0));
        if with_lines && known {
            a.lines += 1;
            let with_loc = sym_lines.user_frames(1, 0, at, true);
            let ours_loc =
                with_loc[0].name.rsplit_once(" (").map(|(_, l)| l.trim_end_matches(')').to_owned());
            if ours_loc.as_deref() == Some(theirs[0].1.as_str()) {
                a.lines_agree += 1;
            } else {
                a.disagreements.push(format!("{addr:#x}: ours {ours_loc:?} addr2line {}", theirs[0].1));
            }
        }
    }
    a
}

fn report(what: &str, a: &Agreement) {
    eprintln!(
        "{what}: names {}/{} agree, file:line {}/{} agree",
        a.names_agree, a.names, a.lines_agree, a.lines
    );
    for d in a.disagreements.iter().take(10) {
        eprintln!("  {d}");
    }
}

#[test]
fn libc_function_names_agree() {
    let libc = Path::new("/usr/lib/x86_64-linux-gnu/libc.so.6");
    let a = compare(libc, 400, true);
    report("libc", &a);
    assert_eq!(a.names_agree, a.names, "function names must always agree");
    // Where they differ, binutils names the including file (strtoul.c:106)
    // for code from an included one (strtol.c:106); gimli names the latter.
    assert!(a.lines > 0 && a.lines_agree * 100 >= a.lines * 90, "file:line agreement below 90%");
}

#[test]
fn c_program_names_and_lines_agree() {
    let a = compare(&fixture("threads"), 400, true);
    report("threads (C)", &a);
    assert_eq!(a.names_agree, a.names, "function names must always agree");
    assert!(a.lines > 0 && a.lines_agree * 100 >= a.lines * 95, "file:line agreement below 95%");
}

#[test]
fn rust_program_names_and_lines_agree() {
    let a = compare(&fixture("rust_split"), 600, true);
    report("rust_split", &a);
    assert_eq!(a.names_agree, a.names, "function names must always agree");
    assert!(a.lines > 0 && a.lines_agree * 100 >= a.lines * 95, "file:line agreement below 95%");
}
