//! Unwinding copied user stacks with DWARF call-frame information: the one
//! unwinder that `profrec` runs on the box and `profanalyze` runs offline on
//! the raw stacks a capture keeps, so both give the same frames.
//!
//! The rules come from an object's `.eh_frame` (indexed by `.eh_frame_hdr`
//! when present) or `.debug_frame` (Go); where none covers an address the
//! walk follows the frame pointer. The work is done by framehop, which keeps
//! a per-address cache of rules and only recovers rip, rsp and rbp.
//!
//! Nothing here trusts its input: stack bytes are read only inside the copy,
//! a walk is bounded in depth, and corrupt sections end the walk (or fall
//! back to the frame pointer) instead of panicking.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64};
use framehop::{Error as WalkError, ExplicitModuleSectionInfo, FrameAddress, Module, Unwinder};

use crate::{Section, Segment, StackEnd, SymbolBlob};

/// Bytes shared between the objects' tables and every process's modules.
type Bytes = Arc<[u8]>;

/// Most frames one walk returns; deeper stacks end with [`StackEnd::Depth`].
pub const MAX_FRAMES: usize = 512;

/// The unwind sections of one ELF object, by stated (link-time) address.
#[derive(Debug, Clone, Default)]
pub struct UnwindInfo {
    eh_frame: Option<(Range<u64>, Bytes)>,
    eh_frame_hdr: Option<(Range<u64>, Bytes)>,
    debug_frame: Option<Bytes>,
    segments: Vec<Segment>,
    /// The ELF entry point (0 = unknown).
    entry: u64,
    /// Function ranges (start, end) from [`FUNCTIONS_SECTION`], sorted.
    functions: Vec<(u64, u64)>,
}

/// A section a recorder writes in place of the unwind sections when it keeps
/// no raw stacks: the (start, length) of each function, from its FDE, that
/// unnamed frames of the capture lie in, as little-endian u64 pairs. It lets
/// the analyzer group a stripped function's addresses into one frame
/// without the object's whole `.eh_frame`.
pub const FUNCTIONS_SECTION: &str = ".profcap.functions";

/// Most entries read from a [`FUNCTIONS_SECTION`] (the rest is ignored).
const MAX_FUNCTIONS: usize = 1 << 20;

/// The [`FUNCTIONS_SECTION`] of these function ranges.
pub fn functions_section(ranges: &[(u64, u64)]) -> Section {
    let mut data = Vec::with_capacity(ranges.len() * 16);
    for &(start, len) in ranges {
        data.extend_from_slice(&start.to_le_bytes());
        data.extend_from_slice(&len.to_le_bytes());
    }
    Section { name: FUNCTIONS_SECTION.into(), addr: 0, data }
}

/// The ranges of a [`FUNCTIONS_SECTION`], sorted; a damaged one gives what it can.
fn parse_functions(data: &[u8]) -> Vec<(u64, u64)> {
    let word = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
    let mut v: Vec<(u64, u64)> = data
        .chunks_exact(16)
        .take(MAX_FUNCTIONS)
        .map(|c| (word(&c[..8]), word(&c[8..])))
        .filter(|&(_, len)| len > 0)
        .map(|(start, len)| (start, start.saturating_add(len)))
        .collect();
    v.sort_unstable();
    v
}

/// Bytes of entry code after the entry point within which a walk that can
/// go no further is at the process's root: the dynamic loader's `_start`
/// calls `_dl_start` at once and has no unwind rule of its own.
const ENTRY_CODE: u64 = 64;

impl UnwindInfo {
    /// Reads the unwind sections of an ELF image (`.debug_frame`
    /// decompressed); `None` if it is not ELF.
    pub fn from_elf(data: &[u8]) -> Option<UnwindInfo> {
        let obj = object::File::parse(data).ok()?;
        // Exactly what a capture embeds, so that unwinding on the box and
        // offline from the capture give the same frames.
        let mut info =
            UnwindInfo::from_sections(&crate::elf::unwind_sections(&obj), crate::elf::segments(&obj));
        info.entry = object::Object::entry(&obj);
        Some(info)
    }

    /// The unwind information a capture embeds for an object: its unwind
    /// sections, or those of the whole ELF file where only that was embedded.
    pub fn from_blob(blob: &SymbolBlob) -> UnwindInfo {
        let mut info = UnwindInfo::from_sections(&blob.sections, blob.segments.clone());
        info.entry = blob.entry;
        if info.has_rules() || blob.elf.is_empty() {
            return info;
        }
        UnwindInfo::from_elf(&blob.elf).unwrap_or(info)
    }

    /// From raw sections (those named in [`crate::elf::UNWIND_SECTIONS`]) and segments.
    pub fn from_sections(sections: &[Section], segments: Vec<Segment>) -> UnwindInfo {
        let find = |name: &str| sections.iter().find(|s| s.name == name && !s.data.is_empty());
        let ranged =
            |s: &Section| (s.addr..s.addr.saturating_add(s.data.len() as u64), Bytes::from(&s.data[..]));
        UnwindInfo {
            eh_frame: find(".eh_frame").map(ranged),
            eh_frame_hdr: find(".eh_frame_hdr").map(ranged),
            debug_frame: find(".debug_frame").map(|s| Bytes::from(&s.data[..])),
            segments,
            entry: 0,
            functions: find(FUNCTIONS_SECTION).map(|s| parse_functions(&s.data)).unwrap_or_default(),
        }
    }

    /// Whether function ranges are known (rules, or a [`FUNCTIONS_SECTION`]).
    pub fn has_function_ranges(&self) -> bool {
        self.has_rules() || !self.functions.is_empty()
    }

    /// Whether there are any rules at all (else only frame pointers help).
    pub fn has_rules(&self) -> bool {
        self.eh_frame.is_some() || self.debug_frame.is_some()
    }

    /// The segments, to turn a mapping's file offset into an address.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The start of the function whose rules cover `vaddr`, from its FDE
    /// (or a recorder's [`FUNCTIONS_SECTION`]): a stripped object's frames
    /// are grouped by it.
    pub fn function_start(&self, vaddr: u64) -> Option<u64> {
        if let Some((start, _)) = self.function_range(vaddr) {
            return Some(start);
        }
        let i = self.functions.partition_point(|&(start, _)| start <= vaddr).checked_sub(1)?;
        let (start, end) = self.functions[i];
        (vaddr < end).then_some(start)
    }

    /// The (start, length) of the function whose FDE covers `vaddr`.
    pub fn function_range(&self, vaddr: u64) -> Option<(u64, u64)> {
        use gimli::{BaseAddresses, DebugFrame, EhFrame, LittleEndian, UnwindSection};
        if let Some((range, data)) = &self.eh_frame {
            let eh = EhFrame::new(data, LittleEndian);
            let bases = BaseAddresses::default().set_eh_frame(range.start);
            if let Ok(fde) = eh.fde_for_address(&bases, vaddr, EhFrame::cie_from_offset) {
                return Some((fde.initial_address(), fde.len()));
            }
        }
        let data = self.debug_frame.as_ref()?;
        let mut df = DebugFrame::new(data, LittleEndian);
        df.set_address_size(8);
        let fde = df.fde_for_address(&BaseAddresses::default(), vaddr, DebugFrame::cie_from_offset).ok()?;
        Some((fde.initial_address(), fde.len()))
    }

    fn module(&self, name: &str, avma: Range<u64>, base_avma: u64) -> Module<Bytes> {
        let info = ExplicitModuleSectionInfo {
            base_svma: 0,
            eh_frame_svma: self.eh_frame.as_ref().map(|(r, _)| r.clone()),
            eh_frame: self.eh_frame.as_ref().map(|(_, d)| d.clone()),
            eh_frame_hdr_svma: self.eh_frame_hdr.as_ref().map(|(r, _)| r.clone()),
            eh_frame_hdr: self.eh_frame_hdr.as_ref().map(|(_, d)| d.clone()),
            debug_frame: self.debug_frame.clone(),
            ..Default::default()
        };
        Module::new(name.to_owned(), avma, base_avma, info)
    }
}

/// The registers a walk starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Regs {
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
}

/// The code mappings of one process, with the unwind rules of their objects.
#[derive(Default)]
pub struct Space {
    unwinder: UnwinderX86_64<Bytes>,
    /// Mapping start -> (end, base address, entry point's address or 0),
    /// for the modules added.
    mapped: BTreeMap<u64, (u64, u64, u64)>,
}

impl std::fmt::Debug for Space {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Space").field("mapped", &self.mapped).finish_non_exhaustive()
    }
}

impl Space {
    pub fn new() -> Space {
        Space::default()
    }

    /// Adds a mapping of `info`'s object at `start..end` from `file_offset`;
    /// false (and nothing added) if no segment maps that offset.
    pub fn map(&mut self, name: &str, start: u64, end: u64, file_offset: u64, info: &UnwindInfo) -> bool {
        let Some(base) = load_bias(&info.segments, start, end, file_offset) else {
            return false;
        };
        let entry = Some(info.entry)
            .filter(|&e| e != 0)
            .and_then(|e| base.checked_add(e))
            .filter(|e| (start..end).contains(e))
            .unwrap_or(0);
        if start >= end || self.mapped.get(&start) == Some(&(end, base, entry)) {
            return start < end;
        }
        self.unmap(start);
        self.unwinder.add_module(info.module(name, start..end, base));
        self.mapped.insert(start, (end, base, entry));
        true
    }

    /// Removes the mapping that starts at `start`, if any.
    pub fn unmap(&mut self, start: u64) {
        if self.mapped.remove(&start).is_some() {
            self.unwinder.remove_module(start);
        }
    }

    /// Whether `addr` lies in the entry code of the object mapped there.
    fn in_entry_code(&self, addr: u64) -> bool {
        let Some((_, &(end, _, entry))) = self.mapped.range(..=addr).next_back() else { return false };
        addr < end && entry != 0 && (entry..entry.saturating_add(ENTRY_CODE)).contains(&addr)
    }
}

/// The load bias of a mapping of file offsets `file_offset..` at
/// `start..end`: address minus stated address, through the segment the
/// mapping holds (the executable one if several). A mapping starts at a page
/// boundary, often before its segment's first byte, so the mapping's own
/// offset may lie in the segment before.
fn load_bias(segments: &[Segment], start: u64, end: u64, file_offset: u64) -> Option<u64> {
    let len = end.checked_sub(start)?;
    let mapped_end = file_offset.checked_add(len)?;
    let overlaps =
        |s: &&Segment| s.file_offset < mapped_end && file_offset < s.file_offset.saturating_add(s.file_size);
    let seg =
        segments.iter().filter(overlaps).find(|s| s.executable).or_else(|| segments.iter().find(overlaps))?;
    // The address of the segment's first byte, minus its stated address.
    let seg_start = if seg.file_offset >= file_offset {
        start.checked_add(seg.file_offset - file_offset)?
    } else {
        start.checked_sub(file_offset - seg.file_offset)?
    };
    seg_start.checked_sub(seg.vaddr)
}

/// A walk's rule cache, shared by every process (framehop keys it by the
/// modules' generation).
pub struct Walker {
    cache: CacheX86_64,
    /// The address just past the highest stack word the last walk read.
    pub read_end: u64,
}

impl std::fmt::Debug for Walker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Walker").finish_non_exhaustive()
    }
}

impl Default for Walker {
    fn default() -> Self {
        Walker { cache: CacheX86_64::new(), read_end: 0 }
    }
}

impl Walker {
    pub fn new() -> Walker {
        Walker::default()
    }

    /// Unwinds from `regs` through `stack`, the bytes copied from `regs.sp`
    /// up: appends the frames to `out` (the instruction pointer, then return
    /// addresses) and says why the walk ended.
    pub fn unwind(&mut self, space: &Space, regs: Regs, stack: &[u8], out: &mut Vec<u64>) -> StackEnd {
        if regs.ip == 0 {
            return StackEnd::NoStack;
        }
        let top = regs.sp.saturating_add(stack.len() as u64);
        self.read_end = regs.sp;
        let read_end = &mut self.read_end;
        let mut read = |addr: u64| -> Result<u64, ()> {
            *read_end = (*read_end).max(addr.saturating_add(8));
            let at = usize::try_from(addr.checked_sub(regs.sp).ok_or(())?).map_err(|_| ())?;
            let bytes = stack.get(at..at.checked_add(8).ok_or(())?).ok_or(())?;
            Ok(u64::from_le_bytes(bytes.try_into().map_err(|_| ())?))
        };
        let start = out.len();
        let mut frames = space.unwinder.iter_frames(
            regs.ip,
            UnwindRegsX86_64::new(regs.ip, regs.sp, regs.bp),
            &mut self.cache,
            &mut read,
        );
        loop {
            if out.len() - start >= MAX_FRAMES {
                return StackEnd::Depth;
            }
            match frames.next() {
                Ok(Some(FrameAddress::InstructionPointer(a))) => out.push(a),
                Ok(Some(FrameAddress::ReturnAddress(a))) => out.push(a.get()),
                Ok(None) => return StackEnd::Root,
                Err(WalkError::CouldNotReadStack(a)) if a >= top || stack.is_empty() => {
                    return StackEnd::StackBytes
                }
                // The entry code (the dynamic loader's _start) has no rule
                // to go on with, and nothing above it to go to.
                Err(_) if out.last().is_some_and(|&a| space.in_entry_code(a)) => return StackEnd::Root,
                Err(e) => {
                    log::trace!("unwinding stopped after {} frames: {e}", out.len() - start);
                    return StackEnd::Broken;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own_exe() -> Vec<u8> {
        std::fs::read(std::env::current_exe().expect("test binary path")).expect("read test binary")
    }

    fn seg(file_offset: u64, vaddr: u64, file_size: u64, executable: bool) -> Segment {
        Segment { file_offset, vaddr, file_size, executable }
    }

    #[test]
    fn a_recorders_function_ranges_group_addresses_without_unwind_sections() {
        let section = functions_section(&[(0x2000, 0x40), (0x1000, 0x20)]);
        let info = UnwindInfo::from_sections(&[section], Vec::new());
        assert!(!info.has_rules() && info.has_function_ranges());
        assert_eq!(info.function_start(0x1000), Some(0x1000));
        assert_eq!(info.function_start(0x101f), Some(0x1000));
        assert_eq!(info.function_start(0x1020), None, "past its end");
        assert_eq!(info.function_start(0x2030), Some(0x2000));
        assert_eq!(info.function_start(0x10), None);
        // A damaged section gives what it can, never a panic.
        let bad = Section { name: FUNCTIONS_SECTION.into(), addr: 0, data: vec![0xff; 23] };
        let info = UnwindInfo::from_sections(&[bad], Vec::new());
        assert_eq!(info.function_start(u64::MAX - 1), None);
        assert_eq!(info.function_start(u64::MAX), None);
    }

    #[test]
    fn load_bias_goes_through_the_segment_a_page_aligned_mapping_holds() {
        // As rustc lays out a PIE: text at file offset 0x16a50, address
        // 0x17a50; the r-x mapping starts at the page boundary 0x16000.
        let segments = [seg(0, 0, 0x16a50, false), seg(0x16a50, 0x17a50, 0x30000, true)];
        let base = 0x5555_0000_0000;
        let bias = load_bias(&segments, base + 0x17000, base + 0x48000, 0x16000);
        assert_eq!(bias, Some(base));
        // The usual C layout: offset == address.
        let c = [seg(0, 0, 0x1000, false), seg(0x1000, 0x1000, 0x2000, true)];
        assert_eq!(load_bias(&c, base + 0x1000, base + 0x3000, 0x1000), Some(base));
        // Nothing maps the range: no module rather than a wrong one.
        assert_eq!(load_bias(&c, base, base + 0x1000, 0x9000), None);
        assert_eq!(load_bias(&c, base + 0x1000, base, 0x1000), None, "end before start");
    }

    #[test]
    fn function_starts_come_from_the_fdes() {
        use object::{Object, ObjectSymbol};
        let exe = own_exe();
        let info = UnwindInfo::from_elf(&exe).expect("ELF");
        assert!(info.has_rules());
        let obj = object::File::parse(&exe[..]).expect("ELF");
        let sym = obj
            .symbols()
            .find(|s| {
                s.name().is_ok_and(|n| n.contains("function_starts_come_from_the_fdes")) && s.size() > 16
            })
            .expect("this test's own symbol");
        for inside in [0, 1, sym.size() / 2, sym.size() - 1] {
            assert_eq!(info.function_start(sym.address() + inside), Some(sym.address()), "+{inside}");
        }
        assert_eq!(info.function_start(0x10), None, "no function starts at the ELF header");
    }

    /// Stack contents no unwinder can trust: every walk ends (bounded), and
    /// never panics, whatever the bytes, registers and tables.
    #[test]
    fn hostile_stacks_and_tables_end_the_walk_without_panicking() {
        let exe = own_exe();
        let good = UnwindInfo::from_elf(&exe).expect("ELF");
        let mut corrupt = good.clone();
        if let Some((range, data)) = &corrupt.eh_frame {
            let mut bytes = data.to_vec();
            for (i, b) in bytes.iter_mut().enumerate() {
                *b = (*b).wrapping_mul(31).wrapping_add(i as u8);
            }
            corrupt.eh_frame = Some((range.clone(), Bytes::from(bytes)));
        }
        corrupt.eh_frame_hdr = None;
        let none = UnwindInfo::from_sections(&[], good.segments.clone());
        assert!(!none.has_rules());
        let text = *good.segments.iter().find(|s| s.executable).expect("text segment");
        let base = 0x5555_0000_0000u64;
        let start = base + (text.vaddr & !0xfff);
        let end = base + text.vaddr + text.file_size;
        let mut walker = Walker::new();
        let mut seed = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for info in [&good, &corrupt, &none] {
            let mut space = Space::new();
            assert!(space.map("self", start, end, text.file_offset & !0xfff, info));
            for round in 0..300 {
                let sp = 0x7ffd_0000_0000 + (next() % 4096) * 8;
                let mut stack = vec![0u8; (next() % 2048) as usize * 8];
                for w in stack.chunks_mut(8) {
                    // Mostly code addresses and stack addresses, as real stacks hold.
                    let v = match next() % 4 {
                        0 => start + next() % (end - start),
                        1 => sp + next() % 0x4000,
                        2 => 0,
                        _ => next(),
                    };
                    w.copy_from_slice(&v.to_le_bytes());
                }
                let ip = if round % 3 == 0 { next() } else { start + next() % (end - start) };
                let bp = if round % 2 == 0 { sp + next() % 0x4000 } else { next() };
                let mut out = Vec::new();
                let why = walker.unwind(&space, Regs { ip, sp, bp }, &stack, &mut out);
                assert!(out.len() <= MAX_FRAMES, "{why:?} after {} frames", out.len());
                assert!(!out.is_empty(), "the first frame is the ip");
                assert_eq!(out[0], ip);
            }
        }
        // No copied bytes and no ip: nothing to walk, said so.
        assert_eq!(walker.unwind(&Space::new(), Regs::default(), &[], &mut Vec::new()), StackEnd::NoStack);
    }

    #[test]
    fn a_stack_pointer_outside_the_copy_stops_at_the_first_frame() {
        let mut walker = Walker::new();
        let mut out = Vec::new();
        // No module: the frame-pointer rule reads [bp], which lies outside
        // the 64 copied bytes.
        let regs = Regs { ip: 0x1000, sp: 0x7000_0000, bp: 0x1 };
        let why = walker.unwind(&Space::new(), regs, &[0u8; 64], &mut out);
        assert_eq!(out, vec![0x1000]);
        assert!(why.is_truncated(), "{why:?}");
    }
}
