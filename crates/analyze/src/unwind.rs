//! `--unwind`: unwinding the raw stacks a capture keeps (`profrec
//! --keep-stacks`) again, offline, with the same unwinder profrec runs on
//! the box (`profcap_format::unwind`).
//!
//! The unwind tables come from the capture's embedded sections, or, where it
//! has none for an object, from a local file with the recorded build id
//! (`--debug-dir`, `--sysroot`, the recorded path), so stacks recorded
//! without good unwind information can be repaired later. Each re-unwound
//! sample gets a stack of its own (the recorded kernel frames, the new user
//! frames); [`Material::fold_samples`] then hands out the new stack ids.

use std::collections::{BTreeMap, HashMap};

/// A stack's identity: kernel frames, user frames, why the walk ended,
/// Python frames.
type StackKey = (Vec<u64>, Vec<u64>, StackEnd, Vec<u64>);

use profcap_format::unwind::{Regs, Space, UnwindInfo, Walker};
use profcap_format::{CaptureReader, ReadOptions, Sample, Stack, StackEnd};
use serde::Serialize;

use crate::capture::{blob_key, Material};
use crate::symbolize::object_syms::local_files;
use crate::symbolize::SymbolizeOptions;
use crate::{Error, Result};

/// What re-unwinding did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Reunwound {
    /// Samples with raw stacks, unwound again.
    pub samples: u64,
    /// Of those, the ones whose new user frames and end equal the recorded ones.
    pub same_as_recorded: u64,
    /// New stacks by why they end.
    pub ends: BTreeMap<String, u64>,
    /// Sample ids whose new stack differs from the recorded one (the first 100).
    pub differing: Vec<u64>,
}

/// Address spaces per (pid, mapping generation), unwind tables per object.
struct Spaces<'a> {
    m: &'a Material,
    opts: &'a SymbolizeOptions,
    generations: HashMap<u32, Vec<u64>>,
    infos: HashMap<Vec<u8>, Option<UnwindInfo>>,
    spaces: HashMap<(u32, u64), Space>,
}

impl Spaces<'_> {
    fn info(&mut self, map: &profcap_format::Mapping) -> Option<&UnwindInfo> {
        let (m, opts) = (self.m, self.opts);
        let key = blob_key(&map.build_id, &map.path);
        self.infos
            .entry(key)
            .or_insert_with_key(|key| {
                let embedded = m.blobs.get(key).map(UnwindInfo::from_blob).filter(UnwindInfo::has_rules);
                embedded.or_else(|| {
                    if map.build_id.is_empty() {
                        return None;
                    }
                    local_files(map, opts)
                        .find_map(|f| UnwindInfo::from_elf(&f).filter(UnwindInfo::has_rules))
                })
            })
            .as_ref()
    }

    /// The address space of `pid` at `time_ns`.
    fn space(&mut self, pid: u32, time_ns: u64) -> &Space {
        let generation =
            self.generations.get(&pid).map_or(0, |starts| Material::generation_at(starts, time_ns));
        if !self.spaces.contains_key(&(pid, generation)) {
            let mut space = Space::new();
            let m = self.m;
            let maps = m.mappings.get(&pid).map(Vec::as_slice).unwrap_or_default();
            for map in maps.iter().filter(|x| x.seen_ns == generation) {
                if let Some(info) = self.info(map) {
                    space.map(&map.path, map.start, map.end, map.file_offset, info);
                }
            }
            self.spaces.insert((pid, generation), space);
        }
        &self.spaces[&(pid, generation)]
    }
}

impl Material {
    /// Unwinds every kept raw stack again and makes its sample use the new
    /// stack (see the module docs). A capture without raw stacks is an error
    /// that says how to record one.
    pub fn unwind_raw_stacks(&mut self, strict: bool, opts: &SymbolizeOptions) -> Result<Reunwound> {
        if self.raw_stacks == 0 {
            return Err(Error::NoSamples(format!(
                "{} keeps no raw stacks to unwind: record with `profrec --keep-stacks`",
                self.path.display()
            )));
        }
        let mut reader = CaptureReader::open(&self.path, ReadOptions::strict(strict))
            .map_err(|source| Error::Capture { path: self.path.clone(), source })?;
        let mut new_stacks: Vec<Stack> = Vec::new();
        let mut restack = HashMap::new();
        let mut report = Reunwound::default();
        let mut ends_delta: BTreeMap<StackEnd, i64> = BTreeMap::new();
        {
            let mut spaces = Spaces {
                m: self,
                opts,
                generations: self.generations().into_iter().collect(),
                infos: HashMap::new(),
                spaces: HashMap::new(),
            };
            let mut walker = Walker::new();
            let mut interned: HashMap<StackKey, u64> = HashMap::new();
            let mut next_id = self.stacks.keys().max().copied().unwrap_or(0);
            for batch in reader.by_ref() {
                let batch = batch.map_err(|source| Error::Capture { path: self.path.clone(), source })?;
                if batch.raw_stacks.is_empty() {
                    continue;
                }
                let by_id: HashMap<u64, &Sample> = batch.samples.iter().map(|s| (s.id, s)).collect();
                for raw in &batch.raw_stacks {
                    let Some(sample) = by_id.get(&raw.sample_id) else { continue };
                    let regs = Regs { ip: raw.ip, sp: raw.sp, bp: raw.bp };
                    let mut user = Vec::new();
                    let end =
                        walker.unwind(spaces.space(sample.pid, sample.time_ns), regs, &raw.bytes, &mut user);
                    let recorded = self.stacks.get(&sample.stack_id);
                    let kernel = recorded.map(|s| s.kernel.clone()).unwrap_or_default();
                    let python = recorded.map(|s| s.python.clone()).unwrap_or_default();
                    report.samples += 1;
                    if let Some(r) = recorded {
                        *ends_delta.entry(r.end).or_default() -= 1;
                    }
                    *ends_delta.entry(end).or_default() += 1;
                    *report.ends.entry(end.describe().to_owned()).or_default() += 1;
                    if recorded.is_some_and(|r| r.user == user && r.end == end) {
                        report.same_as_recorded += 1;
                    } else if report.differing.len() < 100 {
                        report.differing.push(sample.id);
                    }
                    let key = (kernel.clone(), user.clone(), end, python.clone());
                    let id = *interned.entry(key).or_insert_with(|| {
                        next_id += 1;
                        new_stacks.push(Stack { id: next_id, kernel, user, end, python });
                        next_id
                    });
                    restack.insert(sample.id, id);
                }
            }
        }
        for s in new_stacks {
            self.stacks.insert(s.id, s);
        }
        self.restack = restack;
        // Completeness as `info` reports it now counts the new stacks.
        for (end, delta) in ends_delta {
            let n = self.stack_ends.entry(end).or_default();
            *n = n.saturating_add_signed(delta);
        }
        self.stack_ends.retain(|_, n| *n > 0);
        Ok(report)
    }
}
