//! End-of-recording material: JIT maps, symbols of the objects the stacks
//! use, kernel symbols, and what was lost.

use profcap_format::Lost;

use super::{Loss, Session};
use crate::elf::{self, EmbedMode};
use crate::{kallsyms, procfs, Result};

impl Session {
    /// A symbol blob of a process's own addresses (no object, no build id):
    /// its JIT map, or the classes of its JVM allocation samples.
    pub(super) fn push_named_addresses(
        &mut self,
        path: String,
        symbols: Vec<profcap_format::Symbol>,
    ) -> Result<()> {
        let r = self.writer.push_symbols(profcap_format::SymbolBlob { path, symbols, ..Default::default() });
        self.write(r)
    }

    /// Writes the end-of-recording material: symbols, kernel symbols, and
    /// what was lost (see [`super::losses`]).
    pub(super) fn finish_material(&mut self, embed: EmbedMode, losses: &[Loss]) -> Result<()> {
        log::debug!("end material: JIT maps of {} processes", self.seen_pids.len());
        // JIT symbol maps, read last because JITs append to them while running.
        let mut pids: Vec<u32> = self.seen_pids.iter().copied().collect();
        pids.sort_unstable();
        for pid in pids {
            if let Some(symbols) = procfs::read_perf_map(pid) {
                log::info!("pid {pid}: {} JIT symbols", symbols.len());
                self.push_named_addresses(profcap_format::perf_map_path(pid), symbols)?;
            }
        }
        self.write_java_classes()?;
        let used: Vec<usize> = (0..self.objects.len()).filter(|&i| self.objects[i].used).collect();
        log::info!("embedding material for {} objects", used.len());
        let vdso = elf::own_vdso();
        for i in used {
            let o = &self.objects[i];
            let data = match (&o.file, o.path.as_str()) {
                (Some(f), _) => f.bytes(),
                (None, "[vdso]") => vdso.as_deref().unwrap_or_default(),
                (None, _) => continue,
            };
            // The vDSO exists on no disk, so its whole image goes in.
            let mode =
                if o.path == "[vdso]" && embed == EmbedMode::None { EmbedMode::Symbols } else { embed };
            let mut blob = elf::extract_blob(data, &o.path, &o.build_id, mode);
            add_debug_file(&mut blob, data, &o.path, &o.build_id, mode, &self.debug_dirs);
            let all = blob.symbols.len();
            elf::prune_symbols(&mut blob, &o.offsets);
            // .eh_frame_hdr only indexes .eh_frame (an unwinder rebuilds it)
            // and compresses poorly: not worth its bytes in the capture. The
            // unwind sections only serve to unwind kept raw stacks again
            // offline: without --keep-stacks they would be most of each
            // file (99% of a 2 s file of a continuous recording).
            if self.keep_stacks {
                blob.sections.retain(|s| s.name != ".eh_frame_hdr");
            } else {
                unwind_sections_to_functions(&mut blob, &o.offsets);
            }
            log::debug!("{}: {} of {all} symbols name the recorded frames", o.path, blob.symbols.len());
            let r = self.writer.push_symbols(blob);
            self.write(r)?;
        }
        log::debug!("material embedded; kernel symbols next");
        let kallsyms = std::fs::read_to_string("/proc/kallsyms").unwrap_or_default();
        let r = self.writer.push_kernel_symbols(kallsyms::needed_symbols(&kallsyms, &self.kernel_addrs));
        self.write(r)?;
        for &(source, reason, count) in losses {
            let r = self.writer.push_lost(Lost {
                source: source.into(),
                reason: reason.into(),
                count,
                ..Default::default()
            });
            self.write(r)?;
        }
        Ok(())
    }
}

/// Replaces the blob's unwind sections by the ranges of the functions its
/// unnamed frames lie in (from their FDEs): what the analyzer needs to give
/// a stripped function one frame, in a few bytes instead of the whole
/// `.eh_frame`.
fn unwind_sections_to_functions(
    blob: &mut profcap_format::SymbolBlob,
    offsets: &std::collections::BTreeSet<u64>,
) {
    use profcap_format::rules::{file_offset_to_vaddr, pick_symbol};
    let info = profcap_format::unwind::UnwindInfo::from_sections(&blob.sections, blob.segments.clone());
    let mut ranges = std::collections::BTreeSet::new();
    if info.has_rules() {
        for &off in offsets {
            let a = file_offset_to_vaddr(&blob.segments, off).unwrap_or(off);
            // As the analyzer probes: the address, and a return address minus one.
            for probe in [a, a.saturating_sub(1)] {
                if pick_symbol(&blob.symbols, probe).is_none() {
                    ranges.extend(info.function_range(probe));
                }
            }
        }
    }
    blob.sections.clear();
    if !ranges.is_empty() {
        let ranges: Vec<(u64, u64)> = ranges.into_iter().collect();
        blob.sections.push(profcap_format::unwind::functions_section(&ranges));
    }
}

/// With a detached debug file on this host (see [`elf::debug_file`]): its
/// full symbol table joins the object's (stripped objects name their static
/// functions too), and `--embed full` embeds the debug file, DWARF and all,
/// in place of the stripped image (unwind sections and segments stay the
/// object's own).
fn add_debug_file(
    blob: &mut profcap_format::SymbolBlob,
    data: &[u8],
    path: &str,
    build_id: &[u8],
    mode: EmbedMode,
    dirs: &[std::path::PathBuf],
) {
    if mode == EmbedMode::None {
        return;
    }
    let Some(debug) = elf::debug_file(data, path, build_id, dirs) else { return };
    if mode == EmbedMode::Full {
        blob.elf = debug.bytes().to_vec();
        return;
    }
    let extra = elf::extract_blob(debug.bytes(), path, build_id, EmbedMode::Symbols).symbols;
    let mut seen: std::collections::HashSet<(u64, String)> =
        blob.symbols.iter().map(|s| (s.addr, s.name.clone())).collect();
    blob.symbols.extend(extra.into_iter().filter(|s| seen.insert((s.addr, s.name.clone()))));
}
