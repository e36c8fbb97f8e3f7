//! Recovering the frames a frame-pointer walk misses at the top of a stack.
//!
//! The kernel unwinds user stacks through the rbp chain. A function without a
//! frame pointer (most of libc here) leaves no link in that chain, so the
//! function that called it — the one a user wants to see — is lost. With the
//! top of the stack (`Leaf`, copied by the BPF program) and the object's
//! `.eh_frame`, the return addresses of such frameless frames are read back:
//! walk while the CFA is rsp-based, then continue with the rbp chain.
//!
//! This runs on the box, but only as a cached table lookup per distinct code
//! address and a read from the 256 copied bytes per sample; shipping those
//! bytes in the capture instead would defeat stack deduplication.

use gimli::{
    BaseAddresses, CfaRule, EhFrame, EhFrameHdr, LittleEndian, RegisterRule, UnwindContext, UnwindSection,
    X86_64,
};
use profcap_format::elf::{extract_blob, EmbedMode};
use profcap_format::Segment;

use crate::probes::Leaf;

/// The unwind sections and segments of one object.
#[derive(Debug)]
pub struct UnwindTable {
    eh_frame: Vec<u8>,
    eh_frame_addr: u64,
    hdr: Option<(Vec<u8>, u64)>,
    segments: Vec<Segment>,
}

impl UnwindTable {
    /// Reads the tables of an ELF image; `None` without `.eh_frame`.
    pub fn from_elf(data: &[u8]) -> Option<UnwindTable> {
        let blob = extract_blob(data, "", &[], EmbedMode::Symbols);
        let section = |name: &str| blob.sections.iter().find(|s| s.name == name);
        let eh = section(".eh_frame")?;
        Some(UnwindTable {
            eh_frame: eh.data.clone(),
            eh_frame_addr: eh.addr,
            hdr: section(".eh_frame_hdr").map(|h| (h.data.clone(), h.addr)),
            segments: blob.segments,
        })
    }

    /// Object-relative address of a file offset.
    pub fn vaddr(&self, file_offset: u64) -> Option<u64> {
        profcap_format::rules::file_offset_to_vaddr(&self.segments, file_offset)
    }

    /// At `vaddr`, the CFA's offset from rsp if the CFA is rsp-based and the
    /// return address sits just below it (the frameless case); else `None`.
    pub fn rsp_cfa_offset(&self, vaddr: u64) -> Option<u64> {
        let eh = EhFrame::new(&self.eh_frame, LittleEndian);
        let mut bases = BaseAddresses::default().set_eh_frame(self.eh_frame_addr);
        let fde = match &self.hdr {
            Some((hdr, hdr_addr)) => {
                bases = bases.set_eh_frame_hdr(*hdr_addr);
                let parsed = EhFrameHdr::new(hdr, LittleEndian).parse(&bases, 8).ok()?;
                parsed.table()?.fde_for_address(&eh, &bases, vaddr, EhFrame::cie_from_offset).ok()?
            }
            None => eh.fde_for_address(&bases, vaddr, EhFrame::cie_from_offset).ok()?,
        };
        let mut ctx = Box::new(UnwindContext::new());
        let row = fde.unwind_info_for_address(&eh, &bases, &mut ctx, vaddr).ok()?;
        match (row.cfa(), row.register(X86_64::RA)) {
            (CfaRule::RegisterAndOffset { register, offset }, RegisterRule::Offset(-8))
                if *register == X86_64::RSP =>
            {
                u64::try_from(*offset).ok()
            }
            _ => None,
        }
    }
}

/// Where a code address lies: which object, and at what file offset.
pub trait Locate {
    /// The object and file offset of `addr` in `pid`, if mapped.
    fn locate(&mut self, pid: u32, addr: u64) -> Option<(usize, u64)>;
    /// The rsp-based CFA offset at a file offset of an object (cached).
    fn rsp_cfa_offset(&mut self, object: usize, file_offset: u64) -> Option<u64>;
}

/// The most frameless frames recovered in a row.
const MAX_FRAMELESS: usize = 8;

/// Inserts the return addresses of frameless frames at the top of `user`
/// (leaf first), read from `leaf` with the unwind rules `at` provides.
pub fn fix_leaf_frames(at: &mut impl Locate, pid: u32, user: &mut Vec<u64>, leaf: &Leaf) {
    if user.is_empty() || leaf.window.is_empty() {
        return;
    }
    let (mut ip, mut sp) = (user[0], leaf.sp);
    let mut found = Vec::new();
    for depth in 0..MAX_FRAMELESS {
        let Some((object, file_offset)) = at.locate(pid, ip) else { break };
        // Above the leaf, ip is a return address: the call is the byte before.
        let probe = if depth == 0 { file_offset } else { file_offset.saturating_sub(1) };
        let Some(offset) = at.rsp_cfa_offset(object, probe) else { break };
        let cfa = sp.saturating_add(offset);
        let Some(at_window) = cfa.checked_sub(8).and_then(|a| a.checked_sub(leaf.sp)) else { break };
        let Some(bytes) = leaf.window.get(at_window as usize..at_window as usize + 8) else { break };
        let ra = u64::from_ne_bytes(bytes.try_into().unwrap_or([0; 8]));
        if ra == 0 {
            break;
        }
        found.push(ra);
        ip = ra;
        sp = cfa;
    }
    if found.is_empty() {
        return;
    }
    let rest = &user[1..];
    let skip = usize::from(rest.first() == found.last());
    let mut fixed = Vec::with_capacity(user.len() + found.len());
    fixed.push(user[0]);
    fixed.extend_from_slice(&found);
    fixed.extend_from_slice(&rest[skip..]);
    *user = fixed;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two objects: 0 is frameless everywhere with CFA = rsp + 8 (a leaf
    /// that pushed nothing); 1 uses frame pointers.
    struct Fake;
    impl Locate for Fake {
        fn locate(&mut self, _pid: u32, addr: u64) -> Option<(usize, u64)> {
            match addr {
                0x1000..=0x1fff => Some((0, addr - 0x1000)),
                0x2000..=0x2fff => Some((1, addr - 0x2000)),
                _ => None,
            }
        }
        fn rsp_cfa_offset(&mut self, object: usize, _file_offset: u64) -> Option<u64> {
            (object == 0).then_some(8)
        }
    }

    #[test]
    fn recovers_the_callers_of_frameless_functions() {
        // Leaf in frameless code, called from frameless code (RA 0x1500),
        // called from a frame-pointer function (RA 0x2100); the rbp chain then
        // gave 0x2200 (the FP function's own return address).
        let mut window = Vec::new();
        window.extend_from_slice(&0x1500u64.to_ne_bytes()); // [sp] = RA of the leaf
        window.extend_from_slice(&0x2100u64.to_ne_bytes()); // [sp+8] = RA of the next
        let leaf = Leaf { sp: 0x7000, window };
        let mut user = vec![0x1010, 0x2200, 0x2300];
        fix_leaf_frames(&mut Fake, 1, &mut user, &leaf);
        assert_eq!(user, vec![0x1010, 0x1500, 0x2100, 0x2200, 0x2300]);
    }

    #[test]
    fn leaves_frame_pointer_stacks_alone() {
        let leaf = Leaf { sp: 0x7000, window: 0x1500u64.to_ne_bytes().to_vec() };
        let mut user = vec![0x2010, 0x2200];
        fix_leaf_frames(&mut Fake, 1, &mut user, &leaf);
        assert_eq!(user, vec![0x2010, 0x2200]);
        // No window, no change; a window too short stops the walk.
        let mut user = vec![0x1010, 0x2200];
        fix_leaf_frames(&mut Fake, 1, &mut user, &Leaf::default());
        assert_eq!(user, vec![0x1010, 0x2200]);
    }

    #[test]
    fn reads_real_unwind_rules_from_this_binary() {
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let table = UnwindTable::from_elf(&exe).expect(".eh_frame");
        // At a function's first instruction the CFA is rsp + 8 on x86-64.
        let blob = extract_blob(&exe, "", &[], EmbedMode::Symbols);
        let f = blob.symbols.iter().find(|s| s.name.contains("fix_leaf_frames") && s.size > 0).unwrap();
        assert_eq!(table.rsp_cfa_offset(f.addr), Some(8));
    }
}
