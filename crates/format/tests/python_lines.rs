//! The line-table decoders against what CPython itself says, for every
//! supported version: `data/python_lines.txt` was written by
//! `scripts/python-line-vectors.py` run with each interpreter.

use profcap_format::python::{line_at, PyLineTable};

fn hex(s: &str) -> Vec<u8> {
    if s == "-" {
        return Vec::new();
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
}

#[test]
fn lines_match_cpython_for_every_instruction_of_every_version() {
    let text = include_str!("data/python_lines.txt");
    let mut code: Option<(String, PyLineTable, u32, Vec<u8>)> = None;
    let (mut checked, mut versions) = (0, std::collections::BTreeSet::new());
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        match f[0] {
            "code" => {
                let format = match f[2] {
                    "lnotab" => PyLineTable::Lnotab,
                    "lines310" => PyLineTable::Lines310,
                    "locations311" => PyLineTable::Locations311,
                    other => panic!("format {other}"),
                };
                versions.insert(f[1].to_owned());
                code = Some((format!("{} {}", f[1], f[4]), format, f[3].parse().unwrap(), hex(f[5])));
            }
            "at" => {
                let (name, format, first, table) = code.as_ref().expect("an `at` before any `code`");
                let offset: u32 = f[1].parse().unwrap();
                let want: u32 = f[2].parse().unwrap();
                let got = line_at(*format, table, *first, offset).unwrap_or(0);
                assert_eq!(got, want, "{name} at offset {offset}");
                checked += 1;
            }
            other => panic!("line kind {other}"),
        }
    }
    assert_eq!(versions.len(), 6, "{versions:?}");
    assert!(checked > 3000, "only {checked} offsets checked");
}
