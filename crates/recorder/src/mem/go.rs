//! Go programs (`--mem` on Go): the runtime's allocation entry, where in it
//! the probe goes, and the Go version.

use std::path::{Path, PathBuf};

use crate::elf::MappedFile;
use crate::{Error, Result};

/// A Go program's allocation entry (`runtime.mallocgc`) and Go version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoRuntime {
    pub exe: PathBuf,
    /// (major, minor) from `runtime.buildVersion` (`go1.19.8`).
    pub version: Option<(u32, u32)>,
    /// Where in `runtime.mallocgc` the probe goes: past the stack check of
    /// its prologue. When the goroutine's stack must grow, or the scheduler
    /// asks it to yield (it poisons the stack guard), that check calls
    /// morestack, which later starts the function again from its first
    /// instruction: a probe there saw about 1 in 10 000 allocations twice.
    pub probe_offset: u64,
}

/// The length of a Go amd64 prologue's stack check at the start of `code`:
/// `[lea -N(%rsp),%r12;] cmp 0x10(%r14),%rsp|%r12; jbe morestack`. 0 if the
/// function does not start so (then the probe sits on its entry).
fn go_stack_check_len(code: &[u8]) -> u64 {
    let mut at = 0;
    // lea -N(%rsp),%r12: 4c 8d 64 24 disp8 | 4c 8d a4 24 disp32
    match code {
        [0x4c, 0x8d, 0x64, 0x24, ..] => at = 5,
        [0x4c, 0x8d, 0xa4, 0x24, ..] => at = 8,
        _ => {}
    }
    let rest = code.get(at..).unwrap_or_default();
    // cmp 0x10(%r14),%rsp (49 3b 66 10) or ,%r12 (4d 3b 66 10)
    if !matches!(rest, [0x49 | 0x4d, 0x3b, 0x66, 0x10, ..]) {
        return 0;
    }
    at += 4;
    match code.get(at..).unwrap_or_default() {
        [0x0f, 0x86, ..] => (at + 6) as u64, // jbe rel32
        [0x76, ..] => (at + 2) as u64,       // jbe rel8
        _ => 0,
    }
}

/// The Go runtime of an executable, if it is a Go program.
pub fn go_runtime(exe: &Path) -> Option<GoRuntime> {
    use object::{Object, ObjectSection, ObjectSymbol};
    let file = MappedFile::open(exe).ok()?;
    let data = file.bytes();
    let elf = object::File::parse(data).ok()?;
    let symbol = |name: &str| elf.symbols().find(|s| s.name() == Ok(name));
    let malloc = symbol("runtime.mallocgc")?;
    let code = |s: &object::Symbol<'_, '_>| -> Option<Vec<u8>> {
        let section = elf.section_by_index(s.section_index()?).ok()?;
        let bytes = section.data().ok()?;
        let at = usize::try_from(s.address().checked_sub(section.address())?).ok()?;
        Some(bytes.get(at..at.checked_add(16)?)?.to_vec())
    };
    let probe_offset = code(&malloc).map_or(0, |c| go_stack_check_len(&c));
    // The version string's bytes (`runtime.buildVersion.str`, read-only data).
    let version = symbol("runtime.buildVersion.str").and_then(|s| {
        let section = elf.section_by_index(s.section_index()?).ok()?;
        let bytes = section.data().ok()?;
        let at = usize::try_from(s.address().checked_sub(section.address())?).ok()?;
        let text: String = bytes.get(at..)?.iter().take(32).map(|&b| b as char).collect();
        parse_go_version(&text)
    });
    Some(GoRuntime { exe: exe.to_owned(), version, probe_offset })
}

/// `go1.19.8…` → (1, 19).
fn parse_go_version(text: &str) -> Option<(u32, u32)> {
    let rest = text.strip_prefix("go")?;
    let mut parts = rest.splitn(3, |c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The Go runtime of a command not started yet (its executable on PATH).
pub fn go_runtime_for_command(argv0: &str) -> Option<GoRuntime> {
    go_runtime(&super::command_path(argv0)?)
}

/// The Go runtime of a running process.
pub fn go_runtime_of(pid: u32) -> Option<GoRuntime> {
    go_runtime(Path::new(&format!("/proc/{pid}/exe")))
}

/// Go passes arguments in registers from 1.17 (the probe reads the size
/// from RAX); older Go is refused rather than read wrong.
pub fn check_go(go: &GoRuntime) -> Result<()> {
    match go.version {
        Some(v) if v >= (1, 17) => Ok(()),
        Some(_) => {
            Err(Error::Usage("--mem on Go needs Go 1.17 or later (older Go passes arguments on the stack)"))
        }
        None => Err(Error::Usage("--mem on Go: cannot read the program's Go version (runtime.buildVersion)")),
    }
}

#[cfg(test)]
mod go_tests {
    #[test]
    fn go_prologue_stack_checks_are_skipped() {
        let small = [0x49, 0x3b, 0x66, 0x10, 0x0f, 0x86, 0xbe, 0x08, 0, 0, 0x48, 0x83, 0xec, 0x70];
        assert_eq!(super::go_stack_check_len(&small), 10);
        let short = [0x49, 0x3b, 0x66, 0x10, 0x76, 0x20, 0x55];
        assert_eq!(super::go_stack_check_len(&short), 6);
        let large = [0x4c, 0x8d, 0x64, 0x24, 0xf8, 0x4d, 0x3b, 0x66, 0x10, 0x0f, 0x86, 1, 2, 3, 4];
        assert_eq!(super::go_stack_check_len(&large), 15);
        assert_eq!(super::go_stack_check_len(&[0x55, 0x48, 0x89, 0xe5]), 0, "not a Go prologue: the entry");
        assert_eq!(super::go_stack_check_len(&[0x49, 0x3b]), 0, "short code is not read past");
    }

    #[test]
    fn go_versions_parse() {
        assert_eq!(super::parse_go_version("go1.19.8"), Some((1, 19)));
        assert_eq!(super::parse_go_version("go1.21rc2\0junk"), Some((1, 21)));
        assert_eq!(super::parse_go_version("devel"), None);
    }
}
