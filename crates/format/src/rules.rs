//! Rules the recorder and the analyzer must agree on, written once: how an
//! object's material is keyed, how a file offset becomes an address, which
//! symbol names an address, which losses are choices, and the names of the
//! recorder settings kept in [`Meta::extra`](crate::Meta).

use crate::{Segment, Symbol};

/// Key of a symbol blob: its build id, or `path:PATH` for objects without one.
pub fn blob_key(build_id: &[u8], path: &str) -> Vec<u8> {
    if build_id.is_empty() {
        let mut k = b"path:".to_vec();
        k.extend_from_slice(path.as_bytes());
        k
    } else {
        build_id.to_vec()
    }
}

/// The path under which a process's JIT symbols (its `/tmp/perf-PID.map`) are
/// stored: a symbol blob without build id, keyed by [`blob_key`] of this path.
pub fn perf_map_path(pid: u32) -> String {
    format!("[perf-map:{pid}]")
}

/// The path under which the classes of a JVM's allocation samples are
/// named: a symbol blob without build id whose symbols sit at each class's
/// `Klass*` address, the leaf frame of its samples' stacks.
pub fn java_classes_path(pid: u32) -> String {
    format!("[java-classes:{pid}]")
}

/// The object-relative virtual address of a file offset, through the
/// segment that maps it; `None` if no segment does.
pub fn file_offset_to_vaddr(segments: &[Segment], file_offset: u64) -> Option<u64> {
    segments
        .iter()
        .find(|s| s.file_offset <= file_offset && file_offset < s.file_offset.saturating_add(s.file_size))
        .map(|s| file_offset - s.file_offset + s.vaddr)
}

/// The file offset of an object-relative virtual address, through the
/// segment that maps it; `None` if no segment does (the inverse of
/// [`file_offset_to_vaddr`]).
pub fn vaddr_to_file_offset(segments: &[Segment], vaddr: u64) -> Option<u64> {
    segments
        .iter()
        .find(|s| s.vaddr <= vaddr && vaddr < s.vaddr.saturating_add(s.file_size))
        .map(|s| vaddr - s.vaddr + s.file_offset)
}

/// The symbol that names `vaddr` in `symbols` sorted by address (stably):
/// the last one starting at or below it, if its size (0 = unknown) covers it.
/// Callers probe a return address minus one, so a call at a function's end
/// names the caller.
pub fn pick_symbol(symbols: &[Symbol], vaddr: u64) -> Option<usize> {
    let i = symbol_candidate(symbols, vaddr)?;
    let s = &symbols[i];
    (s.size == 0 || vaddr < s.addr.saturating_add(s.size)).then_some(i)
}

/// The symbol [`pick_symbol`] looks at for `vaddr`, before its size is
/// checked. A table pruned to the candidates of some addresses picks exactly
/// as the whole table for those addresses (a candidate whose size does not
/// cover its address must stay too, or an earlier symbol would take its place).
pub fn symbol_candidate(symbols: &[Symbol], vaddr: u64) -> Option<usize> {
    symbols.partition_point(|s| s.addr <= vaddr).checked_sub(1)
}

/// Lost records whose reason starts so count events dropped by choice (a
/// filter such as `--min-block`), not lost ones.
pub const FILTERED_PREFIX: &str = "filtered";

/// Whether a loss reason is a filter's choice rather than a loss.
pub fn is_filtered(reason: &str) -> bool {
    reason.starts_with(FILTERED_PREFIX)
}

/// The source of Lost records that count Python frames not read: their
/// samples are kept (with native frames only), so they are not lost events.
pub const PYTHON_LOSS_SOURCE: &str = "python";

/// The source of a [`crate::Lost`] record that says when events were lost
/// (a burst the ring buffer could not take), with its time range. Its
/// count is part of the source's own total, which another record gives:
/// readers must not add it to the losses again.
pub const GAP_LOSS_SOURCE: &str = "gap";

/// Whether a loss record is a gap's time range (see [`GAP_LOSS_SOURCE`]).
pub fn is_gap(source: &str) -> bool {
    source == GAP_LOSS_SOURCE
}

/// Names of the recorder settings in `Meta::extra`.
pub mod settings {
    /// Off-CPU blocks shorter than this were dropped (ns).
    pub const MIN_BLOCK_NS: &str = "min_block_ns";
    /// Socket payload bytes kept per read or write.
    pub const PAYLOAD_BYTES: &str = "payload_bytes";
    /// Mean bytes between sampled allocations (`--mem --preload`).
    pub const SAMPLE_BYTES: &str = "sample_bytes";
    /// Off-CPU blocks rebuilt because their switch-in was not seen.
    pub const OFFCPU_RECOVERED: &str = "offcpu_recovered";
    /// User stack bytes copied per sample for DWARF unwinding (`--stack-bytes`).
    pub const STACK_BYTES: &str = "stack_bytes";
    /// Stacks the recorder unwound, and the nanoseconds its walks took.
    pub const UNWOUND_STACKS: &str = "unwound_stacks";
    pub const UNWIND_WALK_NS: &str = "unwind_walk_ns";
    /// Samples, off-CPU blocks and allocations that carried Python frames.
    pub const PYTHON_EVENTS: &str = "python_events";
    /// The recorder's own CPU time (user + system) while this capture was
    /// recorded, start-up included for the first; BPF programs not included
    /// (they run in the context of the tasks they observe).
    pub const RECORDER_CPU_NS: &str = "recorder_cpu_ns";
    /// The recorder's peak resident memory so far (KiB).
    pub const RECORDER_MAX_RSS_KIB: &str = "recorder_max_rss_kib";
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym(addr: u64, size: u64) -> Symbol {
        Symbol { addr, size, name: format!("f{addr:x}") }
    }

    #[test]
    fn the_last_symbol_at_or_below_names_an_address_within_its_size() {
        let syms = [sym(0x10, 0x10), sym(0x20, 0), sym(0x40, 0x8)];
        assert_eq!(pick_symbol(&syms, 0x0f), None);
        assert_eq!(pick_symbol(&syms, 0x10), Some(0));
        assert_eq!(pick_symbol(&syms, 0x3f), Some(1), "size 0: open-ended");
        assert_eq!(pick_symbol(&syms, 0x47), Some(2));
        assert_eq!(pick_symbol(&syms, 0x48), None, "past its size");
    }

    #[test]
    fn offsets_map_through_their_segment_only() {
        let segs = [Segment { file_offset: 0x1000, vaddr: 0x401000, file_size: 0x200, executable: true }];
        assert_eq!(file_offset_to_vaddr(&segs, 0x1010), Some(0x401010));
        assert_eq!(file_offset_to_vaddr(&segs, 0x1200), None);
        assert_eq!(
            file_offset_to_vaddr(&[Segment { file_offset: u64::MAX, file_size: u64::MAX, ..segs[0] }], 5),
            None
        );
    }

    #[test]
    fn keys_and_reasons() {
        assert_eq!(blob_key(&[1, 2], "/x"), vec![1, 2]);
        assert_eq!(blob_key(&[], "/x"), b"path:/x".to_vec());
        assert_eq!(perf_map_path(42), "[perf-map:42]");
        assert!(is_filtered("filtered: blocked less than --min-block"));
        assert!(!is_filtered("ring buffer full"));
    }
}
