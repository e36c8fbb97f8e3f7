//! Reading a capture: the reference material (first pass) and a streaming
//! walk over its samples (second pass).
//!
//! Two passes keep memory bounded by distinct stacks and processes, not by
//! samples: mappings of a process may be written after its first samples, so
//! a sample can only be placed once all of them are known.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use rustc_hash::FxHashMap;

use profcap_format::{
    Batch, CaptureReader, KernelSymbols, Lost, Mapping, Meta, Process, ReadOptions, ReadStats, Sample, Stack,
    SymbolBlob,
};

use crate::progress::Progress;
use crate::sockets::{IoAssembler, IoEvent};
use crate::{Error, Result};

/// Everything in a capture except its samples.
#[derive(Debug, Default)]
pub struct Material {
    pub path: PathBuf,
    pub meta: Meta,
    /// Descriptions by pid, in file order (a later one updates an earlier one).
    pub processes: HashMap<u32, Vec<Process>>,
    /// Latest name of each thread.
    pub threads: HashMap<u32, String>,
    /// Mappings by pid, sorted by (generation, start).
    pub mappings: HashMap<u32, Vec<Mapping>>,
    pub stacks: HashMap<u64, Stack>,
    /// Symbol blobs by build id; objects without one are keyed by path.
    pub blobs: HashMap<Vec<u8>, SymbolBlob>,
    pub kernel: KernelSymbols,
    pub lost: Vec<Lost>,
    /// Damage the reader worked around, as messages.
    pub warnings: Vec<String>,
    pub stats: ReadStats,
    pub sample_count: u64,
    /// Samples per kind name.
    pub kind_counts: HashMap<&'static str, u64>,
    pub first_ns: u64,
    pub last_ns: u64,
    /// Socket events (profrec --requests), payloads parsed and dropped.
    pub io: Vec<IoEvent>,
    /// Allocation and free events, and the times they span.
    pub alloc_count: u64,
    pub free_count: u64,
    /// Of those, GPU device memory (`profrec --hbm`).
    pub device_allocs: u64,
    /// Allocations without an address (Go's: the garbage collector frees,
    /// unseen), which count as allocated but never as in use.
    pub untracked_allocs: u64,
    pub device_frees: u64,
    pub mem_first_ns: u64,
    pub mem_last_ns: u64,
    /// Samples by why their user stack ends (see [`profcap_format::StackEnd`]).
    pub stack_ends: std::collections::BTreeMap<profcap_format::StackEnd, u64>,
    /// Samples kept with their registers and stack bytes (`profrec --keep-stacks`).
    pub raw_stacks: u64,
    /// Stacks of samples unwound again offline (`--unwind`), by sample id;
    /// they replace the recorded ones.
    pub restack: HashMap<u64, u64>,
    /// Python code objects by id (`profrec` read them from the processes).
    pub py_code: HashMap<u32, profcap_format::python::PyCode>,
    /// Samples whose stack has Python frames.
    pub python_samples: u64,
    /// File bytes of the chunks that hold symbol material (symbol blobs,
    /// kernel symbols): what each file of a continuous recording repeats.
    pub material_bytes: u64,
}

/// Key of a blob (the rule lives in the format crate).
pub use profcap_format::blob_key;

/// The file bytes of a chunk (`stored` of them, `raw` decompressed) that
/// its symbol material takes, estimated by the material's share of the
/// decoded records (a chunk may hold samples beside it).
fn material_share(batch: &Batch, stored: u64, raw: u64) -> u64 {
    let symbols = |s: &[profcap_format::Symbol]| s.iter().map(|s| 16 + s.name.len() as u64).sum::<u64>();
    let blobs: u64 = batch
        .symbols
        .iter()
        .map(|b| {
            let sections: u64 = b.sections.iter().map(|s| s.data.len() as u64).sum();
            symbols(&b.symbols) + sections + b.elf.len() as u64 + 32 * b.segments.len() as u64
        })
        .sum();
    let kernel = batch
        .kernel_symbols
        .as_ref()
        .map_or(0, |k| symbols(&k.symbols) + k.modules.iter().map(|m| m.len() as u64).sum::<u64>());
    let material = blobs + kernel;
    if material == 0 || raw == 0 {
        return 0;
    }
    (stored as f64 * (material as f64 / raw as f64).min(1.0)) as u64
}

/// The file's size (0 if unknown), for progress.
fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

fn open(path: &Path, strict: bool) -> Result<CaptureReader<std::fs::File>> {
    CaptureReader::open(path, ReadOptions::strict(strict)).map_err(|source| match source {
        e @ profcap_format::Error::Open { .. } => Error::Open(e),
        source => Error::Capture { path: path.to_owned(), source },
    })
}

impl Material {
    /// First pass: reads everything but keeps only counts of the samples.
    pub fn load(path: &Path, strict: bool) -> Result<Material> {
        let mut reader = open(path, strict)?;
        let mut m = Material {
            path: path.to_owned(),
            first_ns: u64::MAX,
            mem_first_ns: u64::MAX,
            ..Material::default()
        };
        let mut heads = IoAssembler::default();
        let mut progress = Progress::new(&format!("reading {}", path.display()), file_len(path));
        let (mut read_before, mut raw_before) = (0, 0);
        while let Some(batch) = reader.next() {
            let (read, raw) = (reader.stats().file_bytes, reader.stats().raw_bytes);
            progress.set(read);
            let batch = batch.map_err(|source| Error::Capture { path: path.to_owned(), source })?;
            m.material_bytes += material_share(&batch, read - read_before, raw - raw_before);
            (read_before, raw_before) = (read, raw);
            if let Some(meta) = batch.meta {
                m.meta = meta;
            }
            for p in batch.processes {
                m.processes.entry(p.pid).or_default().push(p);
            }
            for t in batch.threads {
                m.threads.insert(t.tid, t.name);
            }
            for map in batch.mappings {
                m.mappings.entry(map.pid).or_default().push(map);
            }
            for s in batch.stacks {
                m.stacks.insert(s.id, s);
            }
            m.raw_stacks += batch.raw_stacks.len() as u64;
            for c in batch.py_code {
                m.py_code.insert(c.id, c);
            }
            for s in &batch.samples {
                if let Some(st) = m.stacks.get(&s.stack_id) {
                    *m.stack_ends.entry(st.end).or_default() += 1;
                    m.python_samples += u64::from(!st.python.is_empty());
                }
                m.sample_count += 1;
                *m.kind_counts.entry(s.kind.name()).or_default() += 1;
                m.first_ns = m.first_ns.min(s.time_ns);
                m.last_ns = m.last_ns.max(s.time_ns);
            }
            for b in batch.symbols {
                m.blobs.insert(blob_key(&b.build_id, &b.path), b);
            }
            if let Some(k) = batch.kernel_symbols {
                m.kernel.symbols.extend(k.symbols);
                m.kernel.modules.extend(k.modules);
            }
            m.lost.extend(batch.lost);
            m.alloc_count += batch.allocs.len() as u64;
            m.free_count += batch.frees.len() as u64;
            let device = profcap_format::MemSpace::Device;
            m.device_allocs += batch.allocs.iter().filter(|a| a.space == device).count() as u64;
            m.untracked_allocs += batch.allocs.iter().filter(|a| a.addr == 0).count() as u64;
            m.device_frees += batch.frees.iter().filter(|f| f.space == device).count() as u64;
            let times = batch.allocs.iter().map(|a| a.time_ns).chain(batch.frees.iter().map(|f| f.time_ns));
            for t in times {
                m.mem_first_ns = m.mem_first_ns.min(t);
                m.mem_last_ns = m.mem_last_ns.max(t);
            }
            for r in &batch.requests {
                heads.push(r, &mut m.io);
            }
        }
        for maps in m.mappings.values_mut() {
            maps.sort_by_key(|x| (x.seen_ns, x.start));
        }
        if m.sample_count == 0 {
            m.first_ns = 0;
        }
        if m.alloc_count + m.free_count == 0 {
            m.mem_first_ns = 0;
        }
        m.warnings = reader.warnings().iter().map(ToString::to_string).collect();
        m.stats = reader.stats();
        Ok(m)
    }

    /// Second pass: folds every sample into an accumulator, decoding chunks
    /// in parallel (a few at a time, so memory stays bounded) and merging the
    /// per-thread accumulators. Damaged chunks were reported by the first pass
    /// and are skipped here.
    pub fn fold_samples<A, I, F, M>(&self, strict: bool, init: I, fold: F, merge: M) -> Result<A>
    where
        A: Send,
        I: Fn() -> A + Sync + Send,
        F: Fn(&mut A, &Sample) + Sync + Send,
        M: Fn(A, A) -> A + Sync + Send,
    {
        const IN_FLIGHT: usize = 16;
        let mut reader = open(&self.path, strict)?;
        let mut progress = Progress::new(&format!("analyzing {}", self.path.display()), file_len(&self.path));
        let mut acc = init();
        let mut next_id = 0u64;
        loop {
            let mut group = Vec::with_capacity(IN_FLIGHT);
            while group.len() < IN_FLIGHT {
                let raw = reader
                    .next_raw_batch()
                    .map_err(|source| Error::Capture { path: self.path.clone(), source })?;
                match raw {
                    Some(r) => group.push(r),
                    None => break,
                }
            }
            progress.set(reader.stats().file_bytes);
            if group.is_empty() {
                return Ok(acc);
            }
            let mut decoded: Vec<Option<Batch>> = group.par_iter().map(|raw| raw.decode().ok()).collect();
            // Sample ids as the sequential reader assigns them: ordinals of
            // the readable samples, unless the recorder wrote ids.
            for s in decoded.iter_mut().flatten().flat_map(|b| b.samples.iter_mut()) {
                next_id += 1;
                if s.id == 0 {
                    s.id = next_id;
                }
            }
            if !self.restack.is_empty() {
                for s in decoded.iter_mut().flatten().flat_map(|b| b.samples.iter_mut()) {
                    if let Some(&id) = self.restack.get(&s.id) {
                        s.stack_id = id;
                    }
                }
            }
            let part = decoded
                .par_iter()
                .flatten()
                .map(|batch| {
                    let mut a = init();
                    batch.samples.iter().for_each(|s| fold(&mut a, s));
                    a
                })
                .reduce(&init, &merge);
            acc = merge(acc, part);
        }
    }

    /// Calls `f` with every readable batch, in file order (damaged chunks
    /// were reported by the first pass and are skipped).
    pub fn for_each_batch(&self, strict: bool, mut f: impl FnMut(&Batch)) -> Result<()> {
        let mut reader = open(&self.path, strict)?;
        while let Some(raw) =
            reader.next_raw_batch().map_err(|source| Error::Capture { path: self.path.clone(), source })?
        {
            if let Ok(batch) = raw.decode() {
                f(&batch);
            }
        }
        Ok(())
    }

    /// Start times of the mapping generations of every process, sorted.
    pub fn generations(&self) -> FxHashMap<u32, Vec<u64>> {
        self.mappings
            .iter()
            .map(|(&pid, maps)| {
                let mut g: Vec<u64> = maps.iter().map(|m| m.seen_ns).collect();
                g.dedup();
                (pid, g)
            })
            .collect()
    }

    /// The mapping generation in force at `time_ns`, given a process's
    /// generation starts (see [`Material::generations`]): the latest one
    /// that started at or before it, else the earliest.
    pub fn generation_at(starts: &[u64], time_ns: u64) -> u64 {
        let i = starts.partition_point(|&g| g <= time_ns);
        match i.checked_sub(1) {
            Some(i) => starts[i],
            None => starts.first().copied().unwrap_or(0),
        }
    }

    /// The mapping of `pid` in generation `gen` that contains `addr`.
    pub fn mapping_at(&self, pid: u32, generation: u64, addr: u64) -> Option<&Mapping> {
        let maps = self.mappings.get(&pid)?;
        let lo = maps.partition_point(|m| m.seen_ns < generation);
        let hi = maps.partition_point(|m| m.seen_ns <= generation);
        let gen_maps = &maps[lo..hi];
        let i = gen_maps.partition_point(|m| m.start <= addr);
        gen_maps.get(i.checked_sub(1)?).filter(|m| addr < m.end)
    }

    /// The name a process is best known by: the latest non-empty comm.
    pub fn process_name(&self, pid: u32) -> String {
        self.processes
            .get(&pid)
            .and_then(|ps| ps.iter().rev().find(|p| !p.comm.is_empty()))
            .map(|p| p.comm.clone())
            .unwrap_or_else(|| "?".to_owned())
    }

    /// Sampling frequency, or 0 when unknown.
    pub fn freq(&self) -> u32 {
        self.meta.sample_freq_hz
    }

    /// Bursts of lost events (the ring buffer was full), as monotonic time
    /// ranges with the events lost in each, in time order.
    pub fn gaps(&self) -> Vec<(u64, u64, u64)> {
        let mut v: Vec<_> = self
            .lost
            .iter()
            .filter(|l| profcap_format::rules::is_gap(&l.source) && l.to_ns >= l.from_ns)
            .map(|l| (l.from_ns, l.to_ns, l.count))
            .collect();
        v.sort_unstable();
        v
    }
}
