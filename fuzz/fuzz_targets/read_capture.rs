//! Feeds arbitrary bytes to the capture reader: it must never panic, and it
//! must never allocate more than the chunk limit whatever the bytes claim.
#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use profcap_format::{read_index, CaptureReader, FileHeader, ReadOptions};

fuzz_target!(|data: &[u8]| {
    // Half the inputs get a valid header so the fuzzer reaches the chunk code.
    let mut bytes = Vec::with_capacity(data.len() + 16);
    if data.first().is_some_and(|b| b & 1 == 1) {
        bytes.extend_from_slice(&FileHeader::current().to_bytes());
        bytes.extend_from_slice(&data[1..]);
    } else {
        bytes.extend_from_slice(data);
    }
    if let Ok(reader) = CaptureReader::new(Cursor::new(&bytes), ReadOptions::default()) {
        for batch in reader {
            let _ = batch;
        }
    }
    let _ = read_index(Cursor::new(&bytes));
});
