//! Allocation tracking: where the allocator lives, and the sampler library.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::elf::MappedFile;
use crate::{Error, Result};

mod cuda;
mod go;
mod java;

pub use cuda::cuda_library;
pub use go::{check_go, go_runtime, go_runtime_for_command, go_runtime_of, GoRuntime};
pub use java::{alloc_functions as java_alloc_functions, java_name, jvm_for_command, jvm_of, JavaClasses};

/// The sampler preloaded by `--mem --preload` (crates/recorder/sampler/).
const SAMPLER: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/libprofcap_sampler.so"));

pub use crate::elf::function_names;

/// Anonymous shared memory (a memfd) that the command's processes open by a
/// path into profrec's own descriptor table, `/proc/PROFREC/fd/N`: it has no
/// name in any directory, so nobody can plant or redirect it, and nothing is
/// left behind however profrec ends. Only processes allowed to read
/// profrec's descriptors (root) can open that path.
#[derive(Debug)]
struct SharedMemory {
    file: std::fs::File,
    /// The path the command's processes open.
    path: PathBuf,
    /// The name the kernel shows for its mappings (`/proc/PID/maps`).
    mapped_as: String,
}

impl SharedMemory {
    fn create(what: &str) -> Result<SharedMemory> {
        let name = format!("profcap-{what}-{}", std::process::id());
        let cname = std::ffi::CString::new(name.clone()).unwrap_or_default();
        // SAFETY: memfd_create reads the NUL-terminated name we pass and
        // returns a new descriptor or -1.
        let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            let path = PathBuf::from(format!("memfd:{name}"));
            return Err(Error::Io { path, source: std::io::Error::last_os_error() });
        }
        // SAFETY: the descriptor is new and owned by nothing else.
        let file = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let path = PathBuf::from(format!("/proc/{}/fd/{fd}", std::process::id()));
        Ok(SharedMemory { file, path, mapped_as: format!("/memfd:{name} (deleted)") })
    }

    fn io_error(&self, source: std::io::Error) -> Error {
        Error::Io { path: self.path.clone(), source }
    }
}

/// The sampler library, in shared memory of its own (see [`SharedMemory`]).
#[derive(Debug)]
pub struct SamplerFile {
    memory: SharedMemory,
}

impl SamplerFile {
    /// Writes the embedded sampler into new anonymous memory.
    pub fn create() -> Result<SamplerFile> {
        let mut memory = SharedMemory::create("sampler")?;
        memory.file.write_all(SAMPLER).map_err(|e| memory.io_error(e))?;
        Ok(SamplerFile { memory })
    }

    /// The path to preload (and to attach the fallback uprobes to).
    pub fn path(&self) -> &Path {
        &self.memory.path
    }

    /// The path its mappings show in the command's processes.
    pub fn mapped_as(&self) -> &str {
        &self.memory.mapped_as
    }
}

/// The objects of a live process that may hold its allocator: its
/// executable and the libc it mapped (through /proc/PID/root, so containers work).
pub fn allocator_objects(pid: u32) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    let maps = crate::procfs::read_maps(pid).unwrap_or_default();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    for m in maps {
        let name = Path::new(&m.path).file_name().and_then(|n| n.to_str()).unwrap_or("");
        let is_exe = exe.as_deref() == Some(Path::new(&m.path));
        let wanted = is_exe
            || name.starts_with("libpython")
            || name.starts_with("libc.so")
            || name.starts_with("libc-")
            || ["libjemalloc", "libmimalloc", "libtcmalloc"].iter().any(|l| name.starts_with(l));
        let path = PathBuf::from(format!("/proc/{pid}/root{}", m.path));
        if wanted && !out.contains(&path) {
            out.push(path);
        }
    }
    out
}

/// Whether an ELF file is dynamically linked (unreadable files count as
/// dynamic: libc is then probed as for any other program).
fn is_dynamic(path: &Path) -> bool {
    let Ok(file) = MappedFile::open(path) else { return true };
    crate::elf::has_interpreter(file.bytes()).unwrap_or(true)
}

/// The `libpython3.X.so` an executable needs, found through its RUNPATH or
/// RPATH (`$ORIGIN` expanded), as the loader will (pyenv's builds link it so).
fn needed_libpython(exe: &Path) -> Option<PathBuf> {
    use object::read::elf::{Dyn, FileHeader};
    let file = MappedFile::open(exe).ok()?;
    let data = file.bytes();
    let elf = object::elf::FileHeader64::<object::Endianness>::parse(data).ok()?;
    let endian = elf.endian().ok()?;
    let sections = elf.sections(endian, data).ok()?;
    let (dynamic, index) = sections.dynamic(endian, data).ok()??;
    let strings = sections.strings(endian, data, index).ok()?;
    let (mut needed, mut paths) = (None, Vec::new());
    for d in dynamic {
        let tag = d.d_tag(endian) as u32;
        let Ok(value) = d.string(endian, strings) else { continue };
        let value = String::from_utf8_lossy(value).into_owned();
        match tag {
            object::elf::DT_NEEDED if value.starts_with("libpython") => needed = Some(value),
            object::elf::DT_RUNPATH | object::elf::DT_RPATH => {
                paths.extend(value.split(':').map(String::from))
            }
            _ => {}
        }
    }
    let needed = needed?;
    let origin = exe.parent()?.to_string_lossy().into_owned();
    paths.iter().map(|p| PathBuf::from(p.replace("$ORIGIN", &origin)).join(&needed)).find(|p| p.is_file())
}

/// The executable a command name starts (looked up on PATH as execvp does).
pub(crate) fn command_path(argv0: &str) -> Option<PathBuf> {
    let exe = if argv0.contains('/') {
        Some(PathBuf::from(argv0))
    } else {
        std::env::var_os("PATH")
            .and_then(|p| std::env::split_paths(&p).map(|d| d.join(argv0)).find(|c| c.is_file()))
    };
    exe.and_then(|e| e.canonicalize().ok())
}

/// Refuses `--preload` for a statically linked command, which ignores
/// `LD_PRELOAD`: the recording would hold no allocation at all.
pub fn check_preloadable(argv0: &str) -> Result<()> {
    match command_path(argv0) {
        Some(exe) if !is_dynamic(&exe) => Err(Error::Usage(
            "the command is statically linked and ignores LD_PRELOAD: --mem --preload cannot \
             sample it; use --mem without --preload (uprobes on its allocator)",
        )),
        _ => Ok(()),
    }
}

/// For a command not started yet: its executable (found on PATH) and the
/// libpython it needs, if any: the files an interpreter of it may live in.
pub fn interpreter_candidates(argv0: &str) -> Vec<PathBuf> {
    let exe = command_path(argv0);
    let lib = exe.as_deref().and_then(needed_libpython);
    exe.into_iter().chain(lib).collect()
}

/// For a command not started yet: its executable (found on PATH) and, if
/// it is dynamically linked, the libc this machine's programs use (profrec's own).
pub fn allocator_objects_for_command(argv0: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let exe = command_path(argv0);
    let dynamic = exe.as_deref().is_none_or(is_dynamic);
    // A Python built with a shared libpython allocates its objects there.
    out.extend(exe.as_deref().and_then(needed_libpython));
    out.extend(exe);
    if !dynamic {
        return out;
    }
    // Our own executable is not the target's.
    let own = std::env::current_exe()
        .ok()
        .map(|e| PathBuf::from(format!("/proc/{}/root{}", std::process::id(), e.display())));
    out.extend(allocator_objects(std::process::id()).into_iter().filter(|path| Some(path) != own.as_ref()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sampler_defines_the_probe_functions_and_wrappers() {
        let f = SamplerFile::create().unwrap();
        let names = function_names(f.path());
        for name in ["profcap_sampled_alloc", "profcap_sampled_free", "malloc", "free", "posix_memalign"] {
            assert!(names.contains(name), "{name}");
        }
        let path = f.path().to_owned();
        drop(f);
        assert!(!path.exists(), "gone on drop");
    }

    #[test]
    fn static_and_dynamic_executables_are_told_apart() {
        let own = std::env::current_exe().unwrap();
        assert!(is_dynamic(&own), "the test binary links libc dynamically");
        let objects = allocator_objects_for_command(own.to_str().unwrap());
        assert!(objects.iter().any(|p| p.to_string_lossy().contains("libc.so")), "{objects:?}");
    }

    #[test]
    fn libc_is_among_our_allocator_objects() {
        let objects = allocator_objects(std::process::id());
        let libc = objects.iter().find(|p| p.to_string_lossy().contains("libc.so")).expect("libc mapped");
        let names = function_names(libc);
        assert!(names.contains("malloc") && names.contains("free"));
    }
}

/// The ring the preloaded sampler writes picked allocations and their frees
/// into (`struct ring_header` and `struct ring_record` in
/// crates/recorder/sampler/profcap_sampler.c; keep the layouts in step): a
/// shared memory (see [`SharedMemory`]) that every process of the command
/// maps. Everything in it is written by the command and so untrusted: profrec
/// keeps its own read position, checks every length, and reads at most the
/// ring's size per drain.
#[derive(Debug)]
pub struct SamplerRing {
    memory: SharedMemory,
    /// Where profrec has read up to (never taken back from the ring).
    tail: u64,
    map: memmap2::MmapMut,
    /// Records that could not be read (a damaged ring), skipped.
    pub malformed: u64,
}

/// A record of the sampler's ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingRecord {
    /// An allocation (with its stack), else a free.
    pub alloc: bool,
    pub pid: u32,
    pub tid: u32,
    /// CLOCK_MONOTONIC nanoseconds, the clock of the BPF events.
    pub time_ns: u64,
    pub addr: u64,
    pub size: u64,
    pub weight: u64,
    /// Return addresses, innermost first (the sampler's own frames included).
    pub frames: Vec<u64>,
    /// With `PROFCAP_STACK_BYTES`: the registers and top of the allocating
    /// thread's stack, taken inside the sampler, for DWARF unwinding.
    pub stack: Option<crate::probes::UserStack>,
}

const RING_MAGIC: u64 = 0x3167_6e69_7270_6370; // "pcpring1"
const RING_HEADER: usize = 4096;
/// Offsets in `struct ring_header`.
const RING_DATA_BYTES: usize = 8;
const RING_HEAD: usize = 16;
const RING_TAIL: usize = 24;
const RING_DROPPED: usize = 32;
/// `struct ring_record` without its frames, and its states.
const RECORD_LEN: usize = 56;
const RING_ALLOC: u32 = 1;
const RING_FREE: u32 = 2;
const RING_PAD: u32 = 3;
const RING_MAX_FRAMES: usize = 64;
/// `ring_record.flags`: a `struct ring_stack` (32 bytes, then its bytes) follows the frames.
const RING_HAS_STACK: u32 = 1;
const RING_STACK_HEADER: usize = 32;

/// The `struct ring_stack` at `at` of a record: `None` if it does not fit
/// (its length over its room, its room over the record or the limit).
fn ring_stack(record: &[u8], at: usize) -> Option<crate::probes::UserStack> {
    use crate::layout::{u32_at, u64_at};
    let len = u32_at(record, at + 24)? as usize;
    let room = u32_at(record, at + 28)? as usize;
    let bytes_at = at + RING_STACK_HEADER;
    if len > room || room > crate::probes::MAX_STACK_COPY || bytes_at.checked_add(room)? > record.len() {
        return None;
    }
    let regs = profcap_format::unwind::Regs {
        ip: u64_at(record, at)?,
        sp: u64_at(record, at + 8)?,
        bp: u64_at(record, at + 16)?,
    };
    Some(crate::probes::UserStack { regs, bytes: record[bytes_at..bytes_at + len].to_vec(), err: 0 })
}

impl SamplerRing {
    /// Creates the ring in new shared memory with `data_bytes` (a power of
    /// two, at least 4 KiB) of room, and maps it.
    pub fn create(data_bytes: usize) -> Result<SamplerRing> {
        assert!(data_bytes.is_power_of_two() && data_bytes >= 4096, "ring size must be a power of two");
        let memory = SharedMemory::create("ring")?;
        memory.file.set_len((RING_HEADER + data_bytes) as u64).map_err(|e| memory.io_error(e))?;
        // SAFETY: the memory is ours (created just now); the sampler
        // processes write it concurrently, which every access below allows
        // for (atomics for the shared words, records read only after their
        // state is published, every value checked before use).
        let mut map = unsafe { memmap2::MmapMut::map_mut(&memory.file) }.map_err(|e| memory.io_error(e))?;
        map[RING_DATA_BYTES..RING_DATA_BYTES + 8].copy_from_slice(&(data_bytes as u64).to_ne_bytes());
        map[..8].copy_from_slice(&RING_MAGIC.to_ne_bytes());
        Ok(SamplerRing { memory, tail: 0, map, malformed: 0 })
    }

    pub fn path(&self) -> &Path {
        &self.memory.path
    }

    fn word(&self, at: usize) -> &std::sync::atomic::AtomicU64 {
        let p = self.map[at..at + 8].as_ptr() as *mut u64;
        // SAFETY: `at` is 8-aligned within the page-aligned map, which lives
        // as long as `self`; other processes access these words atomically.
        unsafe { std::sync::atomic::AtomicU64::from_ptr(p) }
    }

    fn data_bytes(&self) -> usize {
        self.map.len() - RING_HEADER
    }

    /// Records the sampler dropped because the ring was full.
    pub fn dropped(&self) -> u64 {
        self.word(RING_DROPPED).load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Takes every published record, in order, and frees their room. A
    /// head that is behind profrec's position or more than the ring's size
    /// ahead is damage: counted, and reading starts again at that head.
    pub fn drain(&mut self) -> Vec<RingRecord> {
        use std::sync::atomic::{AtomicU32, Ordering};
        let size = self.data_bytes();
        let start = self.tail;
        let head = self.word(RING_HEAD).load(Ordering::Acquire);
        let mut out = Vec::new();
        if head < start || head - start > size as u64 {
            self.malformed += 1;
            // Producers reserve from the head: skip to it (aligned, as
            // records are) and hand them the whole ring again.
            self.tail = head & !7;
            self.zero(0, size);
            self.word(RING_TAIL).store(self.tail, Ordering::Release);
            return out;
        }
        let mut tail = start;
        while tail < head {
            let off = tail as usize & (size - 1); // 8-aligned: every len is a multiple of 8
            let at = RING_HEADER + off;
            let state_ptr = self.map[at + 4..at + 8].as_ptr() as *mut u32;
            // SAFETY: 4-aligned within the map (off is a multiple of 8 and at
            // most size - 8); the producer stores it last, with release
            // ordering, after writing the record.
            let state = unsafe { AtomicU32::from_ptr(state_ptr) }.load(Ordering::Acquire);
            if state == 0 {
                break; // reserved, not yet written
            }
            let b = &self.map[at..];
            let u32_at = |o| crate::layout::u32_at(b, o).unwrap_or(0);
            let u64_at = |o| crate::layout::u64_at(b, o).unwrap_or(0);
            let len = u32_at(0) as usize;
            let room = size - off;
            if len < 8 || !len.is_multiple_of(8) || len > room || len as u64 > head - tail {
                // Damaged: nothing after it can be trusted; skip what was reserved.
                self.malformed += 1;
                tail = head & !7;
                break;
            }
            if state == RING_ALLOC || state == RING_FREE {
                let nframes = u32_at(48) as usize;
                let stack_at = RECORD_LEN + nframes * 8;
                let stack = (u32_at(52) & RING_HAS_STACK != 0).then(|| ring_stack(&b[..len], stack_at));
                if len < RECORD_LEN || nframes > RING_MAX_FRAMES || stack_at > len || stack == Some(None) {
                    self.malformed += 1;
                } else {
                    out.push(RingRecord {
                        alloc: state == RING_ALLOC,
                        pid: u32_at(8),
                        tid: u32_at(12),
                        time_ns: u64_at(16),
                        addr: u64_at(24),
                        size: u64_at(32),
                        weight: u64_at(40),
                        frames: (0..nframes).map(|i| u64_at(RECORD_LEN + 8 * i)).collect(),
                        stack: stack.flatten(),
                    });
                }
            } else if state != RING_PAD {
                self.malformed += 1;
            }
            tail += len as u64;
        }
        // Zero what was read (producers rely on a zero state), then release it.
        let mut pos = start;
        while pos < tail {
            let off = pos as usize & (size - 1);
            let n = ((tail - pos) as usize).min(size - off);
            self.zero(off, n);
            pos += n as u64;
        }
        self.tail = tail;
        self.word(RING_TAIL).store(tail, Ordering::Release);
        out
    }

    /// Zeroes `n` bytes of the data area from offset `off` (within it).
    fn zero(&mut self, off: usize, n: usize) {
        self.map[RING_HEADER + off..RING_HEADER + off + n].fill(0);
    }
}

#[cfg(test)]
mod ring_tests {
    //! The ring is written by the profiled program: whatever it scribbles,
    //! a drain ends quickly, panics never, and counts the damage.
    use super::*;
    use std::time::{Duration, Instant};

    const SIZE: usize = 4096;

    fn put_u32(r: &mut SamplerRing, at: usize, v: u32) {
        r.map[at..at + 4].copy_from_slice(&v.to_ne_bytes());
    }

    fn put_u64(r: &mut SamplerRing, at: usize, v: u64) {
        r.map[at..at + 8].copy_from_slice(&v.to_ne_bytes());
    }

    /// A published record of `len` bytes at ring position `pos`.
    fn record(r: &mut SamplerRing, pos: usize, len: u32, state: u32, pid: u32) {
        let at = RING_HEADER + pos % SIZE;
        put_u32(r, at, len);
        if pos % SIZE + RECORD_LEN <= SIZE {
            put_u32(r, at + 8, pid);
            put_u32(r, at + 48, 0);
        }
        put_u32(r, at + 4, state);
    }

    fn drain_timed(r: &mut SamplerRing) -> Vec<RingRecord> {
        let t = Instant::now();
        let out = r.drain();
        assert!(t.elapsed() < Duration::from_secs(1), "a drain took {:?}", t.elapsed());
        out
    }

    #[test]
    fn honest_records_are_read() {
        let mut r = SamplerRing::create(SIZE).unwrap();
        record(&mut r, 0, RECORD_LEN as u32, RING_ALLOC, 7);
        record(&mut r, RECORD_LEN, 8, RING_PAD, 0);
        put_u64(&mut r, RING_HEAD, RECORD_LEN as u64 + 8);
        let out = drain_timed(&mut r);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].pid, r.malformed), (7, 0));
    }

    #[test]
    fn an_allocation_with_its_stack_bytes_is_read_and_a_lying_one_is_not() {
        let mut r = SamplerRing::create(SIZE).unwrap();
        let len = RECORD_LEN + RING_STACK_HEADER + 16;
        for (i, (stack_len, room)) in [(16u32, 16u32), (24, 16), (8, 1 << 20)].into_iter().enumerate() {
            let pos = r.tail as usize;
            let at = RING_HEADER + pos % SIZE;
            record(&mut r, pos, len as u32, RING_ALLOC, 5);
            put_u32(&mut r, at + 52, RING_HAS_STACK);
            put_u64(&mut r, at + RECORD_LEN, 0x1111); // ip
            put_u64(&mut r, at + RECORD_LEN + 8, 0x7000); // sp
            put_u64(&mut r, at + RECORD_LEN + 16, 0x7040); // bp
            put_u32(&mut r, at + RECORD_LEN + 24, stack_len);
            put_u32(&mut r, at + RECORD_LEN + 28, room);
            put_u64(&mut r, at + RECORD_LEN + RING_STACK_HEADER, 0xabcd);
            put_u64(&mut r, RING_HEAD, (pos + len) as u64);
            let out = drain_timed(&mut r);
            if i == 0 {
                let stack = out[0].stack.as_ref().expect("stack");
                assert_eq!((stack.regs.ip, stack.regs.sp, stack.regs.bp), (0x1111, 0x7000, 0x7040));
                assert_eq!(&stack.bytes[..8], &0xabcdu64.to_ne_bytes());
                assert_eq!((stack.bytes.len(), r.malformed), (16, 0));
            } else {
                // More bytes than room, or room past the record: skipped, counted.
                assert!(out.is_empty());
                assert_eq!(r.malformed, i as u64);
            }
        }
    }

    #[test]
    fn a_head_far_ahead_with_pad_records_is_skipped_at_once() {
        let mut r = SamplerRing::create(SIZE).unwrap();
        for pos in (0..SIZE).step_by(8) {
            record(&mut r, pos, 8, RING_PAD, 0);
        }
        put_u64(&mut r, RING_HEAD, u64::MAX);
        assert!(drain_timed(&mut r).is_empty());
        assert_eq!(r.malformed, 1);
        // The next drain starts from that head and finds nothing new.
        assert!(drain_timed(&mut r).is_empty());
    }

    #[test]
    fn a_scribbled_tail_is_not_believed() {
        let mut r = SamplerRing::create(SIZE).unwrap();
        put_u64(&mut r, RING_TAIL, 3); // misaligned, and not profrec's position
        record(&mut r, 0, RECORD_LEN as u32, RING_FREE, 9);
        put_u64(&mut r, RING_HEAD, RECORD_LEN as u64);
        let out = drain_timed(&mut r);
        assert_eq!((out.len(), r.malformed), (1, 0));
    }

    #[test]
    fn a_head_behind_the_tail_or_broken_lengths_are_counted() {
        let mut r = SamplerRing::create(SIZE).unwrap();
        record(&mut r, 0, 16, RING_PAD, 0);
        put_u64(&mut r, RING_HEAD, 16);
        drain_timed(&mut r);
        put_u64(&mut r, RING_HEAD, 8); // behind what was read
        drain_timed(&mut r);
        assert_eq!(r.malformed, 1);
        for len in [0, 3, 12, SIZE as u32 * 2, u32::MAX] {
            let pos = r.tail as usize;
            record(&mut r, pos, len, RING_ALLOC, 1);
            let head = r.tail + 64;
            put_u64(&mut r, RING_HEAD, head);
            drain_timed(&mut r);
        }
        assert_eq!(r.malformed, 6);
        // Frames beyond the record, an unknown state: counted, skipped.
        let pos = r.tail as usize;
        record(&mut r, pos, RECORD_LEN as u32, RING_ALLOC, 1);
        put_u32(&mut r, RING_HEADER + pos % SIZE + 48, 1000);
        record(&mut r, pos + RECORD_LEN, 8, 77, 1);
        let head = r.tail + RECORD_LEN as u64 + 8;
        put_u64(&mut r, RING_HEAD, head);
        assert!(drain_timed(&mut r).is_empty());
        assert_eq!(r.malformed, 8);
    }
}
