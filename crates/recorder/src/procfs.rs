//! Reading process facts from /proc. Everything here tolerates processes that
//! exit while being read: a vanished pid is `Error::Gone`, never a panic.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// One line of /proc/PID/maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapsEntry {
    pub start: u64,
    pub end: u64,
    pub readable: bool,
    pub executable: bool,
    pub offset: u64,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub inode: u64,
    pub path: String,
}

impl MapsEntry {
    /// Whether this maps a file (not anonymous memory, heap, stack, vdso).
    pub fn is_file(&self) -> bool {
        self.inode != 0 && self.path.starts_with('/')
    }
}

/// Parses one maps line; `None` for lines that do not have the known shape.
pub fn parse_maps_line(line: &str) -> Option<MapsEntry> {
    let mut fields = line.splitn(6, ' ');
    let range = fields.next()?;
    let perms = fields.next()?;
    let offset = fields.next()?;
    let dev = fields.next()?;
    let inode = fields.next()?;
    let path = fields.next().unwrap_or("").trim_start().to_owned();
    let (start, end) = range.split_once('-')?;
    let (major, minor) = dev.split_once(':')?;
    Some(MapsEntry {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        readable: perms.as_bytes().first() == Some(&b'r'),
        executable: perms.as_bytes().get(2) == Some(&b'x'),
        offset: u64::from_str_radix(offset, 16).ok()?,
        dev_major: u32::from_str_radix(major, 16).ok()?,
        dev_minor: u32::from_str_radix(minor, 16).ok()?,
        inode: inode.parse().ok()?,
        path,
    })
}

fn proc_path(pid: u32, rest: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/{rest}"))
}

fn read_proc(pid: u32, rest: &str) -> Result<String> {
    let path = proc_path(pid, rest);
    fs::read_to_string(&path).map_err(|e| proc_error(pid, &path, e))
}

fn proc_error(pid: u32, path: &Path, e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::NotFound => Error::Gone { pid },
        // Reading a zombie's files can fail with ESRCH.
        _ if e.raw_os_error() == Some(libc::ESRCH) => Error::Gone { pid },
        _ => Error::Proc { path: path.to_owned(), source: e },
    }
}

/// The executable file mappings of a process.
pub fn read_maps(pid: u32) -> Result<Vec<MapsEntry>> {
    Ok(read_proc(pid, "maps")?
        .lines()
        .filter_map(parse_maps_line)
        .filter(|m| m.executable && (m.is_file() || m.path == "[vdso]"))
        .collect())
}

/// Fields of /proc/PID/stat that profrec uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub ppid: u32,
    /// Start time in clock ticks after boot.
    pub start_ticks: u64,
}

/// Parses /proc/PID/stat; the comm field may contain spaces and parentheses.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let after_comm = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // after_comm starts at field 3 (state); ppid is field 4, starttime field 22.
    Some(Stat { ppid: fields.get(1)?.parse().ok()?, start_ticks: fields.get(19)?.parse().ok()? })
}

/// Reads /proc/PID/stat.
pub fn read_stat(pid: u32) -> Result<Stat> {
    let text = read_proc(pid, "stat")?;
    parse_stat(&text).ok_or_else(|| Error::Proc {
        path: proc_path(pid, "stat"),
        source: io::Error::new(io::ErrorKind::InvalidData, "unexpected /proc/PID/stat format"),
    })
}

/// Reads a process's description; fields that cannot be read stay empty.
pub fn read_process(pid: u32) -> Result<profcap_format::Process> {
    let stat = read_stat(pid)?;
    let ns = |name: &str| -> u64 {
        // "pid:[4026531836]" -> 4026531836
        fs::read_link(proc_path(pid, &format!("ns/{name}")))
            .ok()
            .and_then(|l| {
                let s = l.to_string_lossy().into_owned();
                s.split_once('[')?.1.trim_end_matches(']').parse().ok()
            })
            .unwrap_or(0)
    };
    let cmdline = fs::read(proc_path(pid, "cmdline")).unwrap_or_default();
    Ok(profcap_format::Process {
        pid,
        ppid: stat.ppid,
        start_ticks: stat.start_ticks,
        comm: read_proc(pid, "comm").map(|c| c.trim_end().to_owned()).unwrap_or_default(),
        exe: fs::read_link(proc_path(pid, "exe"))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default(),
        cmdline: cmdline
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
        pid_ns: ns("pid"),
        mnt_ns: ns("mnt"),
        cgroup: read_proc(pid, "cgroup")
            .map(|c| c.lines().next().unwrap_or("").to_owned())
            .unwrap_or_default(),
        seen_ns: 0,
        exit_ns: 0,
    })
}

/// Thread ids of a process.
pub fn read_tids(pid: u32) -> Result<Vec<u32>> {
    let path = proc_path(pid, "task");
    let dir = fs::read_dir(&path).map_err(|e| proc_error(pid, &path, e))?;
    Ok(dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
}

/// Whether a process exists.
pub fn exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Parses a JIT symbol map (`/tmp/perf-PID.map`, the format perf reads):
/// `START SIZE NAME` per line, START and SIZE in hex. Bad lines are skipped.
pub fn parse_perf_map(text: &str) -> Vec<profcap_format::Symbol> {
    let mut out: Vec<profcap_format::Symbol> = text
        .lines()
        .filter_map(|line| {
            let mut f = line.splitn(3, ' ');
            let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
            let addr = hex(f.next()?)?;
            let size = hex(f.next()?)?;
            let name = f.next()?.trim();
            (!name.is_empty()).then(|| profcap_format::Symbol { addr, size, name: name.to_owned() })
        })
        .collect();
    out.sort_by_key(|s| s.addr);
    out
}

/// The JIT symbol map a process wrote for profilers, if any: looked up in
/// its own root (containers) first, then in this machine's /tmp.
pub fn read_perf_map(pid: u32) -> Option<Vec<profcap_format::Symbol>> {
    [format!("/proc/{pid}/root/tmp/perf-{pid}.map"), format!("/tmp/perf-{pid}.map")]
        .iter()
        .find_map(|p| fs::read_to_string(p).ok())
        .map(|text| parse_perf_map(&text))
}

/// Kernel release and hostname, from uname.
pub fn uname() -> (String, String) {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    (release.trim().to_owned(), host.trim().to_owned())
}

/// The boot id, which names one boot of this machine.
pub fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default().trim().to_owned()
}

/// The kernel's highest perf sampling rate in Hz
/// (`/proc/sys/kernel/perf_event_max_sample_rate`), if readable.
pub fn max_sample_rate() -> Option<u64> {
    fs::read_to_string("/proc/sys/kernel/perf_event_max_sample_rate").ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_maps_lines() {
        let m = parse_maps_line(
            "7f1c2a000000-7f1c2a195000 r-xp 00028000 fd:01 1835043                    /usr/lib/x86_64-linux-gnu/libc.so.6",
        )
        .unwrap();
        assert_eq!((m.start, m.end, m.offset), (0x7f1c_2a00_0000, 0x7f1c_2a19_5000, 0x28000));
        assert_eq!((m.dev_major, m.dev_minor, m.inode), (0xfd, 1, 1835043));
        assert!(m.executable && m.readable && m.is_file());
        assert_eq!(m.path, "/usr/lib/x86_64-linux-gnu/libc.so.6");
        let anon = parse_maps_line("7ffd1000-7ffd2000 rw-p 00000000 00:00 0 ").unwrap();
        assert!(!anon.is_file() && !anon.executable);
        let deleted = parse_maps_line("1000-2000 r-xp 0 08:02 77 /tmp/a b (deleted)").unwrap();
        assert_eq!(deleted.path, "/tmp/a b (deleted)");
        assert_eq!(parse_maps_line("garbage"), None);
    }

    #[test]
    fn parses_perf_maps() {
        let syms = parse_perf_map("7f00001000 40 jitted::hot loop\nbad line\n0x7f00000000 10 stub\n");
        assert_eq!(syms.len(), 2);
        assert_eq!((syms[0].addr, syms[0].size, syms[0].name.as_str()), (0x7f_0000_0000, 0x10, "stub"));
        assert_eq!(syms[1].name, "jitted::hot loop");
    }

    #[test]
    fn parses_stat_with_awkward_comm() {
        let text = "1234 (a) b (c) S 77 1234 1234 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 987654 0 0";
        assert_eq!(parse_stat(text), Some(Stat { ppid: 77, start_ticks: 987654 }));
        assert_eq!(parse_stat("nonsense"), None);
    }

    #[test]
    fn reads_own_process() {
        let me = std::process::id();
        let p = read_process(me).unwrap();
        assert_eq!(p.pid, me);
        assert!(p.start_ticks > 0);
        assert!(!read_maps(me).unwrap().is_empty());
        assert!(read_tids(me).unwrap().contains(&me));
        assert!(matches!(read_process(u32::MAX - 1), Err(Error::Gone { .. })));
    }
}
