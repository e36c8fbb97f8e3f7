//! Round-trip, truncation and corruption tests of the capture container.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::io::Cursor;
use std::time::Duration;

use profcap_format::*;
use proptest::prelude::*;

fn small_opts() -> WriteOptions {
    let mut o = WriteOptions::default();
    o.chunk_bytes = 2_000; // many small chunks
    o.max_chunk_age = Duration::from_secs(3600);
    o
}

/// A capture with every record kind and several chunks.
fn sample_capture() -> (Vec<u8>, Vec<Batch>) {
    let mut w = CaptureWriter::new(Vec::new(), small_opts()).unwrap();
    w.push_meta(Meta {
        hostname: "host".into(),
        kernel_release: "6.18".into(),
        clock: "CLOCK_MONOTONIC".into(),
        sample_freq_hz: 99,
        events: vec!["cpu".into()],
        command_line: vec!["profrec".into(), "-o".into(), "x.cap".into()],
        extra: vec![("k".into(), "v".into())],
        ..Meta::default()
    })
    .unwrap();
    w.push_process(Process {
        pid: 42,
        comm: "demo".into(),
        exe: "/bin/demo".into(),
        cmdline: vec!["demo".into(), "--x".into()],
        ..Process::default()
    })
    .unwrap();
    w.push_thread(Thread { pid: 42, tid: 43, name: "worker".into(), seen_ns: 5 }).unwrap();
    w.push_mapping(Mapping {
        pid: 42,
        start: 0x1000,
        end: 0x2000,
        path: "/bin/demo".into(),
        build_id: vec![1, 2, 3],
        ..Mapping::default()
    })
    .unwrap();
    w.push_symbols(SymbolBlob {
        build_id: vec![1, 2, 3],
        path: "/bin/demo".into(),
        symbols: vec![Symbol { addr: 0x1100, size: 0x20, name: "main".into() }],
        sections: vec![Section { name: ".eh_frame".into(), addr: 0x3000, data: vec![9; 40] }],
        segments: vec![Segment { file_offset: 0, vaddr: 0, file_size: 0x2000, executable: true }],
        ..SymbolBlob::default()
    })
    .unwrap();
    w.push_kernel_symbols(KernelSymbols {
        symbols: vec![Symbol { addr: 0xffff_0000, size: 0, name: "schedule".into() }],
        modules: vec![String::new()],
    })
    .unwrap();
    for i in 0..300u64 {
        let user: Vec<u64> = (0..(i % 7 + 1)).map(|f| 0x1100 + f * 16).collect();
        let id = w.intern_stack(&[0xffff_0010], &user);
        w.push_sample(Sample {
            kind: SampleKind::Cpu,
            unit: ValueUnit::Count,
            time_ns: 1_000_000 + i * 10_101_010,
            pid: 42,
            tid: 43 + (i % 2) as u32,
            cpu: (i % 2) as u16,
            stack_id: id,
            value: 1,
            id: 0,
            waker: None,
        })
        .unwrap();
    }
    let sid = w.intern_stack(&[], &[0x1100]);
    let host = MemSpace::Host;
    w.push_alloc(Alloc {
        time_ns: 7,
        pid: 42,
        tid: 43,
        addr: 0x5000,
        size: 64,
        stack_id: sid,
        weight: 1,
        space: host,
    })
    .unwrap();
    w.push_free(Free { time_ns: 8, pid: 42, tid: 43, addr: 0x5000, space: host }).unwrap();
    w.push_lost(Lost { source: "cpu".into(), reason: "ringbuf full".into(), count: 3, ..Default::default() })
        .unwrap();
    w.push_request(RequestEvent {
        id: 1,
        time_ns: 9,
        pid: 42,
        tid: 43,
        fd: 5,
        direction: Direction::Write,
        length: 12,
        payload: b"GET / HTTP/1.1".to_vec(),
        op: RequestOp::Transfer,
        start_ns: 8,
    })
    .unwrap();
    let (bytes, stats) = w.finish().unwrap();
    assert!(stats.chunks > 3, "expected several chunks, got {}", stats.chunks);
    let batches = read_all(&bytes, false).0;
    (bytes, batches)
}

fn read_all(bytes: &[u8], strict: bool) -> (Vec<Batch>, Vec<Warning>) {
    let mut r = CaptureReader::new(Cursor::new(bytes), ReadOptions::strict(strict)).unwrap();
    let batches: Vec<Batch> = r.by_ref().collect::<Result<_>>().unwrap();
    (batches, r.warnings().to_vec())
}

fn samples_of(batches: &[Batch]) -> Vec<Sample> {
    batches.iter().flat_map(|b| b.samples.iter().copied()).collect()
}

/// GPU device memory events (format 1.5) keep their space; host ones
/// write no space column at all, so older readers see nothing new.
#[test]
fn memory_spaces_round_trip() {
    let mut w = CaptureWriter::new(Vec::new(), WriteOptions::default()).unwrap();
    let sid = w.intern_stack(&[], &[0x1100]);
    let alloc = |t, addr, space| Alloc {
        time_ns: t,
        pid: 1,
        tid: 1,
        addr,
        size: 64,
        stack_id: sid,
        weight: 1,
        space,
    };
    w.push_alloc(alloc(1, 0x10, MemSpace::Host)).unwrap();
    w.push_alloc(alloc(2, 0x7e00_0000_0000, MemSpace::Device)).unwrap();
    w.push_free(Free { time_ns: 3, pid: 1, tid: 1, addr: 0x7e00_0000_0000, space: MemSpace::Device })
        .unwrap();
    let (bytes, _) = w.finish().unwrap();
    let batches = read_all(&bytes, true).0;
    let allocs: Vec<Alloc> = batches.iter().flat_map(|b| b.allocs.iter().copied()).collect();
    assert_eq!(allocs.iter().map(|a| a.space).collect::<Vec<_>>(), [MemSpace::Host, MemSpace::Device]);
    let frees: Vec<Free> = batches.iter().flat_map(|b| b.frees.iter().copied()).collect();
    assert_eq!(frees[0].space, MemSpace::Device);
    assert_eq!(MemSpace::from_code(9), MemSpace::Unknown(9), "a newer space is kept, not refused");
    assert_eq!(MemSpace::Unknown(9).code(), 9);
}

#[test]
fn every_record_kind_round_trips() {
    let (bytes, batches) = sample_capture();
    let (_, warnings) = read_all(&bytes, true);
    assert!(warnings.is_empty(), "{warnings:?}");
    let all = |f: fn(&Batch) -> usize| batches.iter().map(f).sum::<usize>();
    assert_eq!(all(|b| b.samples.len()), 300);
    assert_eq!(all(|b| b.stacks.len()), 8, "7 distinct user stacks plus the alloc stack");
    assert_eq!(all(|b| b.processes.len()), 1);
    assert_eq!(all(|b| b.threads.len()), 1);
    assert_eq!(all(|b| b.mappings.len()), 1);
    assert_eq!(all(|b| b.allocs.len()), 1);
    assert_eq!(all(|b| b.frees.len()), 1);
    assert_eq!(all(|b| b.lost.len()), 1);
    assert_eq!(all(|b| b.requests.len()), 1);
    let blob = batches.iter().flat_map(|b| &b.symbols).next().unwrap();
    assert_eq!(blob.symbols[0].name, "main");
    assert_eq!(blob.sections[0].data, vec![9; 40]);
    let meta = batches.iter().find_map(|b| b.meta.clone()).unwrap();
    assert_eq!(meta.command_line, vec!["profrec", "-o", "x.cap"]);
    assert_eq!(meta.extra, vec![("k".to_string(), "v".to_string())]);
    let samples = samples_of(&batches);
    // Reader-assigned ids are the 1-based ordinals.
    assert!(samples.iter().enumerate().all(|(i, s)| s.id == i as u64 + 1));
    assert!(samples.windows(2).all(|w| w[0].time_ns < w[1].time_ns));
    // Every sample's stack is defined in its own or an earlier chunk.
    let mut known = std::collections::HashSet::new();
    for b in &batches {
        known.extend(b.stacks.iter().map(|s| s.id));
        assert!(b.samples.iter().all(|s| known.contains(&s.stack_id)));
    }
}

#[test]
fn index_locates_every_batch_chunk() {
    let (bytes, batches) = sample_capture();
    let index = read_index(Cursor::new(&bytes)).unwrap().expect("finished file has an index");
    assert_eq!(index.len(), batches.len());
    let timed: Vec<_> = index.iter().filter(|e| e.records > 0 && e.last_ns > 0).collect();
    assert!(timed.windows(2).all(|w| w[0].offset < w[1].offset));
    for e in &index {
        assert_eq!(&bytes[e.offset as usize..e.offset as usize + 4], b"CHNK");
    }
}

#[test]
fn cut_at_every_byte_keeps_every_complete_chunk() {
    let (bytes, _) = sample_capture();
    let full = samples_of(&read_all(&bytes, true).0);
    for cut in 0..bytes.len() {
        let part = &bytes[..cut];
        let reader = CaptureReader::new(Cursor::new(part), ReadOptions::default());
        if cut < FILE_HEADER_LEN {
            assert!(reader.is_err(), "cut at {cut}: header cannot be complete");
            continue;
        }
        let mut r = reader.unwrap();
        let batches: Vec<Batch> = r.by_ref().collect::<Result<_>>().unwrap();
        let got = samples_of(&batches);
        assert_eq!(got[..], full[..got.len()], "cut at {cut}: samples must be a prefix");
        assert!(!r.warnings().is_empty(), "cut at {cut}: a cut file must warn");
        // Strict mode turns the same cut into an error.
        let strict: Result<Vec<Batch>> =
            CaptureReader::new(Cursor::new(part), ReadOptions::strict(true)).unwrap().collect();
        assert!(strict.is_err(), "cut at {cut}: strict mode must fail");
    }
}

#[test]
fn corrupt_chunk_is_reported_and_skipped() {
    let (bytes, batches) = sample_capture();
    let index = read_index(Cursor::new(&bytes)).unwrap().unwrap();
    let victim = index[1].offset as usize;
    // Flip a byte inside the second chunk's payload.
    let mut bad = bytes.clone();
    bad[victim + CHUNK_HEADER_LEN + 3] ^= 0xff;
    let (got, warnings) = read_all(&bad, false);
    assert_eq!(got.len(), batches.len() - 1);
    assert_eq!(
        warnings,
        vec![Warning::CorruptChunk { offset: victim as u64, reason: "payload checksum mismatch".into() }]
    );
    let err = CaptureReader::new(Cursor::new(&bad), ReadOptions::strict(true))
        .unwrap()
        .collect::<Result<Vec<_>>>()
        .unwrap_err();
    assert!(err.to_string().contains(&format!("byte {victim}")), "{err}");

    // A damaged header is skipped by scanning for the next chunk.
    let mut bad = bytes.clone();
    bad[victim + 1] ^= 0xff;
    let (got, warnings) = read_all(&bad, false);
    assert_eq!(got.len(), batches.len() - 1);
    assert!(matches!(warnings[0], Warning::Resynced { from, .. } if from == victim as u64));
}

#[test]
fn valid_checksum_over_garbage_flatbuffer_is_rejected_by_the_verifier() {
    let mut w = CaptureWriter::new(Vec::new(), small_opts()).unwrap();
    w.flush().unwrap();
    let mut bytes = w.finish().unwrap().0;
    // Append a well-formed chunk whose payload is not a flatbuffer, then a good tail.
    let garbage = zstd::bulk::compress(&[0xffu8; 64], 3).unwrap();
    let header = ChunkHeader {
        kind: ChunkKind::Batch,
        flags: 1,
        stored_len: garbage.len() as u32,
        raw_len: 64,
        records: 1,
        payload_crc: crc32fast::hash(&garbage),
    };
    let at = bytes.len();
    bytes.extend_from_slice(&header.to_bytes());
    bytes.extend_from_slice(&garbage);
    let (got, warnings) = read_all(&bytes, false);
    assert!(got.is_empty());
    assert!(
        matches!(&warnings[0], Warning::CorruptChunk { offset, reason }
        if *offset == at as u64 && reason.contains("verification")),
        "{warnings:?}"
    );
}

#[test]
fn unknown_chunk_kinds_are_skipped() {
    let (bytes, batches) = sample_capture();
    let payload = b"from the future".to_vec();
    let header = ChunkHeader {
        kind: ChunkKind::Unknown(77),
        flags: 0,
        stored_len: payload.len() as u32,
        raw_len: payload.len() as u32,
        records: 0,
        payload_crc: crc32fast::hash(&payload),
    };
    let mut spliced = bytes[..FILE_HEADER_LEN].to_vec();
    spliced.extend_from_slice(&header.to_bytes());
    spliced.extend_from_slice(&payload);
    spliced.extend_from_slice(&bytes[FILE_HEADER_LEN..]);
    let mut r = CaptureReader::new(Cursor::new(&spliced), ReadOptions::strict(true)).unwrap();
    let got: Vec<Batch> = r.by_ref().collect::<Result<_>>().unwrap();
    assert_eq!(got, batches);
    assert_eq!(r.stats().unknown_chunks, 1);
}

#[test]
fn a_lying_length_field_does_not_allocate_it() {
    let header = ChunkHeader {
        kind: ChunkKind::Batch,
        flags: 1,
        stored_len: MAX_CHUNK_LEN,
        raw_len: MAX_CHUNK_LEN,
        records: 0,
        payload_crc: 0,
    };
    let mut bytes = FileHeader::current().to_bytes().to_vec();
    bytes.extend_from_slice(&header.to_bytes());
    bytes.extend_from_slice(&[0u8; 100]);
    let (got, warnings) = read_all(&bytes, false);
    assert!(got.is_empty());
    assert!(matches!(warnings[0], Warning::Truncated { needed, available: 132, .. }
        if needed == u64::from(MAX_CHUNK_LEN) + 32));
}

#[test]
fn unfinished_file_warns_about_the_missing_trailer() {
    let mut w = CaptureWriter::new(Vec::new(), small_opts()).unwrap();
    let id = w.intern_stack(&[], &[1, 2, 3]);
    w.push_sample(Sample {
        kind: SampleKind::OffCpu,
        unit: ValueUnit::Nanoseconds,
        time_ns: 5,
        pid: 1,
        tid: 1,
        cpu: 0,
        stack_id: id,
        value: 1234,
        id: 0,
        waker: None,
    })
    .unwrap();
    w.flush().unwrap();
    // Never finished: like a recorder killed with SIGKILL after a flush.
    let (got, warnings) = read_all(w.get_ref(), false);
    assert_eq!(samples_of(&got).len(), 1);
    assert_eq!(samples_of(&got)[0].value, 1234);
    assert_eq!(warnings, vec![Warning::NoTrailer]);
}

proptest! {
    #[test]
    fn samples_round_trip(raw in prop::collection::vec(
        (any::<u8>(), any::<u64>(), any::<u32>(), any::<u32>(), any::<u16>(), any::<i64>(),
         prop::collection::vec(any::<u64>(), 0..8), prop::collection::vec(any::<u64>(), 0..40)),
        0..200)) {
        let mut w = CaptureWriter::new(Vec::new(), small_opts()).unwrap();
        let mut expected = Vec::new();
        let mut stacks = std::collections::HashMap::new();
        for (kind, t, pid, tid, cpu, value, k, u) in raw {
            let stack_id = w.intern_stack(&k, &u);
            if stack_id != 0 {
                prop_assert_eq!(stacks.entry(stack_id).or_insert((k.clone(), u.clone())).clone(), (k, u));
            }
            // Every third sample carries a waker (tid never 0: 0 means none).
            let waker = (pid % 3 == 0).then_some(Waker { pid: pid / 3, tid: tid | 1, stack_id });
            let s = Sample { kind: SampleKind::from_code(kind), unit: ValueUnit::Count, time_ns: t,
                pid, tid, cpu, stack_id, value, id: 0, waker };
            w.push_sample(s).unwrap();
            expected.push(s);
        }
        let bytes = w.finish().unwrap().0;
        let (batches, warnings) = read_all(&bytes, true);
        prop_assert!(warnings.is_empty());
        let got = samples_of(&batches);
        prop_assert_eq!(got.len(), expected.len());
        for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
            prop_assert_eq!(*g, Sample { id: i as u64 + 1, ..*e });
        }
        for b in &batches {
            for s in &b.stacks {
                prop_assert_eq!(&stacks[&s.id], &(s.kernel.clone(), s.user.clone()));
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(tail in prop::collection::vec(any::<u8>(), 0..2000)) {
        let mut bytes = FileHeader::current().to_bytes().to_vec();
        bytes.extend_from_slice(&tail);
        let r = CaptureReader::new(Cursor::new(&bytes), ReadOptions::default()).unwrap();
        for batch in r {
            prop_assert!(batch.is_ok());
        }
    }
}

/// Readers refuse chunks that expand more than MAX_EXPANSION times (bombs);
/// a real chunk that compresses that well (here 8 MiB of zeros) is stored
/// uncompressed by the writer, so what it writes always reads back.
#[test]
fn a_chunk_too_compressible_for_readers_is_stored_as_is() {
    let zeros = vec![0u8; 8 << 20];
    let blob = SymbolBlob {
        path: "/zeros".into(),
        sections: vec![Section { name: ".data".into(), addr: 0, data: zeros }],
        ..SymbolBlob::default()
    };
    let mut w = CaptureWriter::new(Vec::new(), WriteOptions::default()).unwrap();
    w.push_symbols(blob.clone()).unwrap();
    let bytes = w.finish().unwrap().0;
    assert!(bytes.len() > 8 << 20, "stored uncompressed: {} bytes", bytes.len());
    let (batches, warnings) = read_all(&bytes, true);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(batches.iter().flat_map(|b| b.symbols.clone()).collect::<Vec<_>>(), vec![blob]);
}

#[test]
fn interning_says_whether_a_stack_is_new() {
    let mut w = CaptureWriter::new(Vec::new(), WriteOptions::default()).unwrap();
    let (id, new) = w.intern_stack_new(&[1], &[2, 3]);
    assert!(new && id != 0);
    assert_eq!(w.intern_stack_new(&[1], &[2, 3]), (id, false));
    assert_eq!(w.intern_stack_new(&[], &[]), (0, false), "the empty stack is id 0, never added");
    assert!(w.intern_stack_new(&[], &[1, 2, 3]).1, "kernel/user split is part of the key");
}

#[test]
fn a_cleared_batch_is_empty_and_the_writer_reuses_it_without_leftovers() {
    let (_, batches) = sample_capture();
    for b in &batches {
        let mut c = b.clone();
        c.clear();
        assert_eq!(c, Batch::default(), "nothing is left of {} records", b.record_count());
    }
    // The writer clears its batch after each chunk: no record is written
    // twice, so the records read back are as many as the chunks say.
    let samples = samples_of(&batches);
    let mut ids: Vec<u64> = samples.iter().map(|s| s.time_ns).collect();
    ids.dedup();
    assert_eq!(ids.len(), samples.len(), "each sample written once");
    assert!(batches.len() > 3, "small chunks: the batch was reused {} times", batches.len());
}
