//! Java (HotSpot) allocation samples: where the JVM is, and the class of
//! each sampled object, read from the process with the offsets the JVM
//! publishes about itself (`gHotSpotVMStructs`, the table serviceability
//! agents read), never from assumptions about one JDK build.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::elf::MappedFile;
use crate::procfs;
use crate::python::memory::Memory;

/// The allocation-sampling functions of `AllocTracer` (JFR's and
/// async-profiler's points), by mangled-name prefix: the arguments after the
/// class differ between JDK versions, the third is the sample's bytes in all
/// from JDK 11 on.
pub const JAVA_ALLOC_PREFIXES: [&str; 2] =
    ["_ZN11AllocTracer27send_allocation_in_new_tlab", "_ZN11AllocTracer28send_allocation_outside_tlab"];

/// The JVM library of a command not started yet: a `java` launcher's
/// `../lib/server/libjvm.so` (found on PATH, links followed).
pub fn jvm_for_command(argv0: &str) -> Option<PathBuf> {
    let exe = super::command_path(argv0)?;
    if exe.file_name()? != "java" {
        return None;
    }
    let home = exe.parent()?.parent()?;
    ["lib/server/libjvm.so", "lib/client/libjvm.so"].iter().map(|p| home.join(p)).find(|p| p.is_file())
}

/// The JVM library a running process has mapped.
pub fn jvm_of(pid: u32) -> Option<PathBuf> {
    let maps = procfs::read_maps(pid).ok()?;
    let entry = maps.iter().find(|m| m.is_file() && m.path.ends_with("/libjvm.so"))?;
    Some(PathBuf::from(format!("/proc/{pid}/root{}", entry.path)))
}

/// The mangled names of the allocation-sampling functions `jvm` defines.
pub fn alloc_functions(jvm: &Path) -> Vec<String> {
    let names = super::function_names(jvm);
    let mut found: Vec<String> =
        names.into_iter().filter(|n| JAVA_ALLOC_PREFIXES.iter().any(|p| n.starts_with(p))).collect();
    found.sort();
    found
}

/// Where the class name is, from one JVM's own tables.
#[derive(Debug, Clone, Copy)]
struct Layout {
    klass_name: u64,
    symbol_length: u64,
    symbol_body: u64,
}

/// Class names of the sampled objects of every JVM recorded.
#[derive(Debug, Default)]
pub struct JavaClasses {
    /// Per process: its layout (`None`: could not be read, warned once).
    layouts: HashMap<u32, Option<Layout>>,
    /// (pid, Klass*) -> the class's name (Java's spelling).
    names: HashMap<(u32, u64), String>,
}

/// At most this many bytes of a name or table string are read.
const MAX_NAME: usize = 512;

impl JavaClasses {
    /// Names the class at `klass` of `pid` (read once; false if it cannot be).
    pub fn note(&mut self, pid: u32, klass: u64) -> bool {
        if self.names.contains_key(&(pid, klass)) {
            return true;
        }
        let layout = *self.layouts.entry(pid).or_insert_with(|| {
            let l = read_layout(pid);
            if l.is_none() {
                log::warn!(
                    "pid {pid}: cannot read the JVM's class layout (gHotSpotVMStructs): classes unnamed"
                );
            }
            l
        });
        let Some(name) = layout.and_then(|l| class_name(Memory::new(pid), l, klass)) else { return false };
        self.names.insert((pid, klass), name);
        true
    }

    /// The named classes of `pid`, by Klass address.
    pub fn of(&self, pid: u32) -> Vec<(u64, &str)> {
        let mut v: Vec<(u64, &str)> =
            self.names.iter().filter(|((p, _), _)| *p == pid).map(|((_, k), n)| (*k, n.as_str())).collect();
        v.sort_unstable();
        v
    }

    /// The processes with named classes.
    pub fn pids(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.names.keys().map(|(p, _)| *p).collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// A NUL-terminated string of the process, at most `MAX_NAME` bytes.
fn c_string(mem: Memory, addr: u64) -> Option<String> {
    let mut buf = [0u8; 64];
    let mut out = Vec::new();
    while out.len() < MAX_NAME {
        let at = addr.checked_add(out.len() as u64)?;
        // A read may not cross into an unmapped page: shrink to its end.
        let room = (4096 - (at % 4096)) as usize;
        let n = buf.len().min(room);
        if !mem.read(at, &mut buf[..n]) {
            return None;
        }
        if let Some(end) = buf[..n].iter().position(|&b| b == 0) {
            out.extend_from_slice(&buf[..end]);
            return String::from_utf8(out).ok();
        }
        out.extend_from_slice(&buf[..n]);
    }
    None
}

/// The offsets of `Klass::_name`, `Symbol::_length` and `Symbol::_body`,
/// from the `gHotSpotVMStructs` table of the process's libjvm.
fn read_layout(pid: u32) -> Option<Layout> {
    let maps = procfs::read_maps(pid).ok()?;
    let exec = maps.iter().find(|m| m.path.ends_with("/libjvm.so"))?;
    let file = MappedFile::open_regular(Path::new(&format!("/proc/{pid}/root{}", exec.path))).ok()?;
    let elf = object::File::parse(file.bytes()).ok()?;
    use object::{Object, ObjectSegment, ObjectSymbol};
    // Where virtual address 0 of the library is: through the load segment
    // that the executable mapping maps.
    let bias = elf.segments().find_map(|seg| {
        let (offset, size) = seg.file_range();
        (offset <= exec.offset && exec.offset < offset + size)
            .then(|| exec.start.wrapping_sub(seg.address().wrapping_add(exec.offset - offset)))
    })?;
    let sym = |name: &str| {
        elf.symbols().chain(elf.dynamic_symbols()).find(|s| s.name() == Ok(name)).map(|s| s.address() + bias)
    };
    let mem = Memory::new(pid);
    let var = |name: &str| sym(name).and_then(|a| mem.u64(a));
    log::debug!("pid {pid}: libjvm's addresses biased by {bias:#x}");
    let table = var("gHotSpotVMStructs")?;
    let stride = var("gHotSpotVMStructEntryArrayStride")?;
    let type_at = var("gHotSpotVMStructEntryTypeNameOffset")?;
    let field_at = var("gHotSpotVMStructEntryFieldNameOffset")?;
    let offset_at = var("gHotSpotVMStructEntryOffsetOffset")?;
    log::debug!(
        "pid {pid}: gHotSpotVMStructs {table:#x}, stride {stride}, at {type_at} {field_at} {offset_at}"
    );
    if !(8..=256).contains(&stride) || [type_at, field_at, offset_at].iter().any(|&o| o >= stride) {
        return None;
    }
    let (mut klass_name, mut symbol_length, mut symbol_body) = (None, None, None);
    // The table ends with an entry whose type name is null.
    for i in 0..20_000u64 {
        let entry = table.checked_add(i.checked_mul(stride)?)?;
        let type_name = mem.u64(entry + type_at)?;
        if type_name == 0 {
            break;
        }
        let (Some(t), Some(f)) =
            (c_string(mem, type_name), mem.u64(entry + field_at).and_then(|a| c_string(mem, a)))
        else {
            continue;
        };
        let slot = match (t.as_str(), f.as_str()) {
            ("Klass", "_name") => &mut klass_name,
            ("Symbol", "_length") => &mut symbol_length,
            ("Symbol", "_body" | "_body[0]") => &mut symbol_body,
            _ => continue,
        };
        *slot = mem.u64(entry + offset_at);
        if klass_name.is_some() && symbol_length.is_some() && symbol_body.is_some() {
            break;
        }
    }
    log::debug!(
        "pid {pid}: Klass::_name {klass_name:?}, Symbol::_length {symbol_length:?}, _body {symbol_body:?}"
    );
    let layout = Layout { klass_name: klass_name?, symbol_length: symbol_length?, symbol_body: symbol_body? };
    log::info!("pid {pid}: JVM class layout {layout:?}");
    Some(layout)
}

/// The name of the class at `klass`, in Java's spelling.
fn class_name(mem: Memory, l: Layout, klass: u64) -> Option<String> {
    let symbol = mem.u64(klass.checked_add(l.klass_name)?)?;
    let mut len = [0u8; 2];
    if symbol == 0 || !mem.read(symbol.checked_add(l.symbol_length)?, &mut len) {
        return None;
    }
    let len = usize::from(u16::from_ne_bytes(len)).min(MAX_NAME);
    let mut body = vec![0u8; len];
    if !mem.read(symbol.checked_add(l.symbol_body)?, &mut body) {
        return None;
    }
    Some(java_name(&String::from_utf8_lossy(&body)))
}

/// A JVM internal class name as Java writes it: `java/lang/String` ->
/// `java.lang.String`, `[B` -> `byte[]`, `[[Ljava/lang/Object;` ->
/// `java.lang.Object[][]`.
pub fn java_name(internal: &str) -> String {
    let dims = internal.bytes().take_while(|&b| b == b'[').count();
    let rest = &internal[dims..];
    let base = if dims == 0 {
        rest.replace('/', ".")
    } else {
        match rest {
            "B" => "byte".into(),
            "C" => "char".into(),
            "D" => "double".into(),
            "F" => "float".into(),
            "I" => "int".into(),
            "J" => "long".into(),
            "S" => "short".into(),
            "Z" => "boolean".into(),
            _ => rest.strip_prefix('L').and_then(|r| r.strip_suffix(';')).unwrap_or(rest).replace('/', "."),
        }
    };
    format!("{base}{}", "[]".repeat(dims))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_class_names_read_as_java_writes_them() {
        assert_eq!(java_name("java/lang/String"), "java.lang.String");
        assert_eq!(java_name("[B"), "byte[]");
        assert_eq!(java_name("[[Ljava/lang/Object;"), "java.lang.Object[][]");
        assert_eq!(java_name("[J"), "long[]");
    }
}
