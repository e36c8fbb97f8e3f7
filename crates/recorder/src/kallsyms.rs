//! Kernel symbols for the kernel frames a capture contains.

use std::collections::BTreeSet;

use profcap_format::{KernelSymbols, Symbol};

struct Entry {
    addr: u64,
    name: String,
    module: String,
}

/// Parses /proc/kallsyms text, keeping text symbols sorted by address.
fn parse(text: &str) -> Vec<Entry> {
    let mut entries: Vec<Entry> = text
        .lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let addr = u64::from_str_radix(f.next()?, 16).ok()?;
            let kind = f.next()?;
            let name = f.next()?;
            let module = f.next().map(|m| m.trim_matches(|c| c == '[' || c == ']')).unwrap_or("");
            matches!(kind, "t" | "T" | "w" | "W").then(|| Entry {
                addr,
                name: name.to_owned(),
                module: module.to_owned(),
            })
        })
        .collect();
    entries.sort_by_key(|e| e.addr);
    entries
}

/// The symbols covering `addrs`, each with its size up to the next symbol.
pub fn needed_symbols(kallsyms: &str, addrs: &BTreeSet<u64>) -> KernelSymbols {
    let entries = parse(kallsyms);
    let mut out = KernelSymbols::default();
    if entries.iter().all(|e| e.addr == 0) {
        if !addrs.is_empty() {
            log::warn!("/proc/kallsyms shows no addresses (kptr_restrict?); kernel frames stay unnamed");
        }
        return out;
    }
    let mut picked = BTreeSet::new();
    for &a in addrs {
        let i = entries.partition_point(|e| e.addr <= a);
        if i > 0 {
            picked.insert(i - 1);
        }
    }
    for i in picked {
        let e = &entries[i];
        let size = entries.get(i + 1).map_or(0, |n| n.addr.saturating_sub(e.addr));
        out.symbols.push(Symbol { addr: e.addr, size, name: e.name.clone() });
        out.modules.push(e.module.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_covering_symbols_with_sizes() {
        let text = "ffffffff81000000 T _stext\nffffffff81000100 t helper\nffffffff81000200 D data\n\
                    ffffffff81000300 T schedule\nffffffffc0000000 t modfn\t[kvm]\n";
        let addrs: BTreeSet<u64> =
            [0xffff_ffff_8100_0150, 0xffff_ffff_8100_0310, 0xffff_ffff_c000_0004].into();
        let k = needed_symbols(text, &addrs);
        let names: Vec<_> = k.symbols.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["helper", "schedule", "modfn"]);
        assert_eq!(k.symbols[0].size, 0x200, "data symbols do not end text symbols");
        assert_eq!(k.modules, ["", "", "kvm"]);
    }
}
