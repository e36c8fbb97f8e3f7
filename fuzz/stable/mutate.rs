//! A structure-aware fuzzer that runs on the stable toolchain (libFuzzer's
//! coverage-guided path needs nightly). Seeds are the fixture captures, cut
//! into small batches of real records so that one run is cheap; each run
//! mutates one seed at one of three levels and reads the result:
//!
//! - payload: bytes of a batch's flatbuffer (flips, interesting integers,
//!   copies, insertions, cuts), re-wrapped in a chunk with a correct
//!   checksum (stored raw or zstd), so the verifier and decoder see it;
//! - container: the file's bytes themselves (headers, lengths, checksums);
//! - splice: chunks of two seeds in one file.
//!
//! Every run reads the file with the capture reader; every 64th also goes
//! through the analyzer as each profanalyze command would (material, profile,
//! folded, top, pprof, flame graph, memory replay, requests, info). A panic
//! is caught, counted and its input saved; a run over 2 s is counted as a
//! hang. Usage: mutate [RUNS] [SEED]; prints runs, runs/s, panics, hangs and
//! peak RSS. bench/fuzz.sh runs it.

use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use profcap_analyze::export::{
    labelled_groups, top_table, write_folded, write_pprof, write_pprof_labelled, PprofTimes, TopBy,
};
use profcap_analyze::{build, Material, ProfileOptions};
use profcap_format::{encode_batch, Batch, CaptureReader, ChunkHeader, ChunkKind, FileHeader, ReadOptions};

/// xorshift64*: small, fast, reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const INTERESTING: [u32; 10] = [0, 1, 2, 0x7f, 0x80, 0xff, 0xffff, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff];

/// Small batches of real records: each fixture batch cut into pieces of a
/// few records of each kind.
fn seeds(root: &Path) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let Ok(dirs) = std::fs::read_dir(root.join("fixtures")) else { return out };
    let mut caps: Vec<PathBuf> =
        dirs.flatten().map(|d| d.path().join("capture.cap")).filter(|p| p.is_file()).collect();
    caps.sort();
    for cap in caps {
        let Ok(reader) = CaptureReader::open(&cap, ReadOptions::default()) else { continue };
        for batch in reader.flatten() {
            out.extend(pieces(&batch).iter().map(encode_batch));
        }
    }
    out
}

fn pieces(b: &Batch) -> Vec<Batch> {
    const N: usize = 6;
    let most = [
        b.processes.len(),
        b.threads.len(),
        b.mappings.len(),
        b.stacks.len(),
        b.samples.len(),
        b.allocs.len(),
        b.frees.len(),
        b.requests.len(),
        b.py_code.len(),
        b.symbols.len().min(1),
    ]
    .into_iter()
    .max()
    .unwrap_or(0);
    let cut = |i: usize, len: usize| (i * N).min(len)..((i + 1) * N).min(len);
    (0..most.div_ceil(N).min(40))
        .map(|i| Batch {
            meta: if i == 0 { b.meta.clone() } else { None },
            processes: b.processes[cut(i, b.processes.len())].to_vec(),
            threads: b.threads[cut(i, b.threads.len())].to_vec(),
            mappings: b.mappings[cut(i, b.mappings.len())].to_vec(),
            stacks: b.stacks[cut(i, b.stacks.len())].to_vec(),
            samples: b.samples[cut(i, b.samples.len())].to_vec(),
            allocs: b.allocs[cut(i, b.allocs.len())].to_vec(),
            frees: b.frees[cut(i, b.frees.len())].to_vec(),
            lost: if i == 0 { b.lost.clone() } else { Vec::new() },
            // Symbol blobs are large: one, with a few symbols, in the first piece.
            symbols: if i == 0 {
                b.symbols
                    .iter()
                    .take(1)
                    .map(|s| {
                        let mut s = s.clone();
                        s.symbols.truncate(16);
                        s.sections.iter_mut().for_each(|sec| sec.data.truncate(512));
                        s.elf.truncate(512);
                        s
                    })
                    .collect()
            } else {
                Vec::new()
            },
            kernel_symbols: None,
            requests: b.requests[cut(i, b.requests.len())].to_vec(),
            // Raw stacks name samples by their index in the batch: two of
            // the first piece's, their bytes cut short.
            raw_stacks: if i == 0 {
                b.raw_stacks
                    .iter()
                    .take(2)
                    .enumerate()
                    .map(|(n, r)| {
                        let mut r = r.clone();
                        r.sample_id = n as u64;
                        r.bytes.truncate(256);
                        r
                    })
                    .collect()
            } else {
                Vec::new()
            },
            py_code: b.py_code[cut(i, b.py_code.len())].to_vec(),
        })
        .collect()
}

fn chunk(payload: &[u8], compress: bool) -> Vec<u8> {
    if compress {
        let stored = zstd::bulk::compress(payload, 1).unwrap_or_default();
        ChunkHeader::encode(ChunkKind::Batch, 1, &stored, payload.len(), 1)
    } else {
        ChunkHeader::encode(ChunkKind::Batch, 0, payload, payload.len(), 1)
    }
}

fn mutate_bytes(rng: &mut Rng, b: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(8) {
        if b.is_empty() {
            b.push(rng.next() as u8);
            continue;
        }
        let at = rng.below(b.len());
        match rng.below(7) {
            0 => b[at] ^= 1 << rng.below(8),
            1 => b[at] = rng.next() as u8,
            2 if at + 4 <= b.len() => {
                let v = INTERESTING[rng.below(INTERESTING.len())];
                b[at..at + 4].copy_from_slice(&v.to_le_bytes());
            }
            3 => {
                let len = rng.below(64).min(b.len() - at);
                let to = rng.below(b.len());
                let piece = b[at..at + len].to_vec();
                let end = (to + len).min(b.len());
                b[to..end].copy_from_slice(&piece[..end - to]);
            }
            4 => {
                let n = 1 + rng.below(16);
                let fill = rng.next() as u8;
                b.splice(at..at, std::iter::repeat_n(fill, n));
            }
            5 => {
                let n = (1 + rng.below(16)).min(b.len() - at);
                b.drain(at..at + n);
            }
            _ => b.truncate(at),
        }
    }
}

/// One mutated capture file from the seeds.
fn mutated_file(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut file = FileHeader::current().to_bytes().to_vec();
    let seed = &seeds[rng.below(seeds.len())];
    match rng.below(4) {
        0 | 1 => {
            let mut payload = seed.clone();
            mutate_bytes(rng, &mut payload);
            file.extend(chunk(&payload, rng.below(2) == 0));
        }
        2 => {
            file.extend(chunk(seed, false));
            mutate_bytes(rng, &mut file);
        }
        _ => {
            file.extend(chunk(seed, true));
            let other = &seeds[rng.below(seeds.len())];
            let mut payload = other.clone();
            mutate_bytes(rng, &mut payload);
            file.extend(chunk(&payload, false));
        }
    }
    file
}

/// The capture reader alone: every batch, then the index. Returns how many
/// batches decoded (a mutation the verifier and decoder accepted).
fn read(file: &[u8]) -> usize {
    let mut decoded = 0;
    if let Ok(reader) = CaptureReader::new(Cursor::new(file), ReadOptions::default()) {
        decoded = reader.flatten().filter(|b| b.record_count() > 0).count();
    }
    let _ = profcap_format::read_index(Cursor::new(file));
    decoded
}

/// What the profanalyze commands do with a capture.
fn analyze(path: &Path) {
    let Ok(m) = Material::load(path, false) else { return };
    let _ = profcap_analyze::info::info(&m, (1, 2));
    let mut opts = ProfileOptions::default();
    opts.symbolize.local_files = false;
    if let Ok(p) = build(&m, &opts) {
        let _ = write_folded(&p, &mut std::io::sink());
        let _ = top_table(&p, TopBy::Function);
        let _ = write_pprof(&p, None, PprofTimes::default(), std::io::sink());
        let flame = profcap_analyze::export::FlameOptions::default();
        let _ = profcap_analyze::export::flame_graph(&p, &flame, std::io::sink());
    }
    // The per-sample exports.
    if let Ok((kind, groups)) = labelled_groups(&m, &opts) {
        let _ = write_pprof_labelled(&m, &opts, kind, &groups, PprofTimes::default(), std::io::sink());
    }
    let _ = profcap_analyze::export::speedscope_json(&m, &opts, "x");
    let _ = profcap_analyze::export::firefox_profile(&m, &opts, "x");
    let _ = profcap_analyze::export::heatmap_svg(&m, &opts, &Default::default(), &mut std::io::sink());
    let _ = profcap_analyze::export::timeline_strips_svg(&m, &opts, &mut std::io::sink());
    let _ = profcap_analyze::profile::time_ordered(&m, &opts);
    let _ = profcap_analyze::memory::peak(&m, false, |_| true);
    let spans = profcap_analyze::requests::capture_spans(&m, Vec::new());
    let _ = profcap_analyze::requests::join(&m, &spans, &opts.symbolize, false);
}

fn peak_rss_kib() -> i64 {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_SELF is always valid.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    ru.ru_maxrss
}

fn main() {
    let mut args = std::env::args().skip(1);
    let runs: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let seed: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(0x5eed);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let seeds = seeds(&root);
    assert!(!seeds.is_empty(), "no fixture captures under {}", root.join("fixtures").display());
    eprintln!("{} seed batches from the fixtures; {runs} runs, seed {seed}", seeds.len());
    std::panic::set_hook(Box::new(|_| {})); // counted below, not printed
    let dir = tempfile::tempdir().expect("temporary directory");
    let artifacts = root.join("fuzz/artifacts");
    let mut rng = Rng(seed | 1);
    let (mut panics, mut hangs, mut slowest) = (0u64, 0u64, Duration::ZERO);
    let mut accepted = 0u64;
    let started = Instant::now();
    for run in 0..runs {
        let file = mutated_file(&mut rng, &seeds);
        let t = Instant::now();
        let deep = run % 64 == 0;
        let path = dir.path().join("run.cap");
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let decoded = read(&file);
            if deep && std::fs::write(&path, &file).is_ok() {
                analyze(&path);
            }
            decoded
        }));
        accepted += u64::from(outcome.as_ref().is_ok_and(|&n| n > 0));
        let took = t.elapsed();
        slowest = slowest.max(took);
        if took > Duration::from_secs(2) {
            hangs += 1;
        }
        if outcome.is_err() {
            panics += 1;
            let _ = std::fs::create_dir_all(&artifacts);
            let _ = std::fs::write(artifacts.join(format!("panic-{seed}-{run}.cap")), &file);
        }
        if run > 0 && run % 1_000_000 == 0 {
            eprintln!("{run} runs, {:.0}/s, {panics} panics", run as f64 / started.elapsed().as_secs_f64());
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "runs {runs}  runs/s {:.0}  decoded {:.0}%  panics {panics}  hangs {hangs}  slowest {:.1} ms  peak RSS {} MiB",
        runs as f64 / secs,
        100.0 * accepted as f64 / runs.max(1) as f64,
        slowest.as_secs_f64() * 1e3,
        peak_rss_kib() / 1024
    );
    if panics > 0 || hangs > 0 {
        std::process::exit(1);
    }
}
