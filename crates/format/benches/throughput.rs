//! Write and read throughput of the capture format, and bytes per sample for
//! realistic stacks: 20-60 frames, a few hundred distinct stacks, many repeats,
//! 4 threads sampled at 99 Hz on 2 CPUs.
//!
//! `cargo bench -p profcap-format` prints bytes/sample before the timings.

use std::io::Cursor;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use profcap_format::*;

const SAMPLES: u64 = 200_000;

/// A deterministic xorshift so the workload is the same on every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn stacks() -> Vec<(Vec<u64>, Vec<u64>)> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    (0..400)
        .map(|_| {
            let depth = 20 + (rng.next() % 41) as usize;
            let user = (0..depth).map(|_| 0x5555_0000_0000 + (rng.next() % 0x20_0000)).collect();
            let kernel = if rng.next().is_multiple_of(4) {
                (0..6).map(|_| 0xffff_ffff_8100_0000 + (rng.next() % 0x10_0000)).collect()
            } else {
                Vec::new()
            };
            (kernel, user)
        })
        .collect()
}

fn write_capture(stacks: &[(Vec<u64>, Vec<u64>)]) -> Vec<u8> {
    let mut rng = Rng(42);
    let mut w = CaptureWriter::new(Vec::new(), WriteOptions::default()).expect("header");
    let mut t = 1_000_000_000u64;
    for _ in 0..SAMPLES {
        // Skewed choice: a few hot stacks dominate, as in real profiles.
        let r = rng.next();
        let pick = ((r % 400) * (r % 400) / 400) as usize;
        let (k, u) = &stacks[pick];
        let id = w.intern_stack(k, u);
        t += 2_525_252 + rng.next() % 2000;
        let tid = 1000 + (rng.next() % 4) as u32;
        let sample = Sample {
            kind: SampleKind::Cpu,
            unit: ValueUnit::Count,
            time_ns: t,
            pid: 1000,
            tid,
            cpu: (tid % 2) as u16,
            stack_id: id,
            value: 1,
            id: 0,
            waker: None,
        };
        w.push_sample(sample).expect("write");
    }
    w.finish().expect("finish").0
}

fn bench(c: &mut Criterion) {
    let stacks = stacks();
    let bytes = write_capture(&stacks);
    let frames: usize = stacks.iter().map(|(k, u)| k.len() + u.len()).sum();
    println!(
        "format: {SAMPLES} samples, {} distinct stacks ({:.1} frames avg): {} bytes, {:.2} bytes/sample",
        stacks.len(),
        frames as f64 / stacks.len() as f64,
        bytes.len(),
        bytes.len() as f64 / SAMPLES as f64
    );
    let mut g = c.benchmark_group("capture");
    g.sample_size(10);
    g.throughput(Throughput::Elements(SAMPLES));
    g.bench_function("write_samples", |b| b.iter(|| write_capture(&stacks)));
    g.bench_function("read_samples", |b| {
        b.iter(|| {
            let r = CaptureReader::new(Cursor::new(&bytes), ReadOptions::default()).expect("hdr");
            r.map(|b| b.expect("batch").samples.len()).sum::<usize>()
        })
    });
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("read_bytes", |b| {
        b.iter(|| {
            let r = CaptureReader::new(Cursor::new(&bytes), ReadOptions::default()).expect("hdr");
            r.count()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
