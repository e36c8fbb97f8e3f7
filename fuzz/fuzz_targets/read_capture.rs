//! Feeds arbitrary bytes to the capture reader: it must never panic, and it
//! must never allocate more than the chunk limit whatever the bytes claim.
//!
//! The first byte picks how the rest is presented, so the fuzzer reaches
//! every layer: 0 = as a whole file, 1 = after a valid file header,
//! 2 = as the payload of a checksummed uncompressed batch chunk (fuzzing the
//! flatbuffer verifier and decoder), 3 = the same, zstd-compressed.
#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use profcap_format::{read_index, CaptureReader, ChunkHeader, ChunkKind, FileHeader, ReadOptions};

fn chunk(payload: &[u8], raw_len: usize, flags: u16) -> Vec<u8> {
    ChunkHeader::encode(ChunkKind::Batch, flags, payload, raw_len, 1)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut bytes = Vec::with_capacity(rest.len() + 64);
    match mode % 4 {
        0 => bytes.extend_from_slice(rest),
        1 => {
            bytes.extend_from_slice(&FileHeader::current().to_bytes());
            bytes.extend_from_slice(rest);
        }
        2 => {
            bytes.extend_from_slice(&FileHeader::current().to_bytes());
            bytes.extend_from_slice(&chunk(rest, rest.len(), 0));
        }
        _ => {
            bytes.extend_from_slice(&FileHeader::current().to_bytes());
            let z = zstd::bulk::compress(rest, 1).unwrap_or_default();
            bytes.extend_from_slice(&chunk(&z, rest.len(), 1));
        }
    }
    if let Ok(reader) = CaptureReader::new(Cursor::new(&bytes), ReadOptions::default()) {
        for batch in reader {
            let _ = batch;
        }
    }
    let _ = read_index(Cursor::new(&bytes));
});
