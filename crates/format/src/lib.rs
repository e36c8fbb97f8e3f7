//! The profcap capture file: the contract between `profrec` and `profanalyze`.
//!
//! A capture is a file header followed by independent chunks, each holding one
//! zstd-compressed flatbuffer [`Batch`] of records (see `docs/format.md`).
//! [`CaptureWriter`] streams records out with bounded memory; [`CaptureReader`]
//! streams them back, skipping (and reporting) damaged or unknown chunks.
//!
//! This crate depends on nothing Linux-specific and builds on any OS.

mod container;
mod decode;
#[cfg(feature = "elf")]
pub mod elf;
mod encode;
pub mod python;
mod reader;
mod records;
pub mod rules;
#[cfg(feature = "unwind")]
pub mod unwind;
mod writer;

#[allow(clippy::all, clippy::unwrap_used, unused_imports, dead_code, missing_debug_implementations, unsafe_op_in_unsafe_fn)]
#[rustfmt::skip]
mod generated {
    include!("generated/capture_generated.rs");
}
pub(crate) use generated::profcap::fb;

pub use container::{
    ChunkHeader, ChunkKind, FileHeader, CHUNK_HEADER_LEN, FILE_HEADER_LEN, FILE_MAGIC, MAX_CHUNK_LEN,
    VERSION_MAJOR, VERSION_MINOR,
};
pub use decode::DecodeError;
pub use encode::{encode_batch, IndexEntry};
pub use reader::{read_index, CaptureReader, RawBatch, ReadOptions, ReadStats, Warning};
pub use records::*;
pub use rules::{blob_key, java_classes_path, perf_map_path};
pub use writer::{CaptureWriter, WriteOptions, WriteStats};

use std::path::PathBuf;

/// Errors of reading and writing captures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The capture could not be opened.
    #[error("cannot open capture {path}")]
    Open { path: PathBuf, source: std::io::Error },
    /// The input does not start with the capture magic.
    #[error("not a profcap capture (bad magic bytes)")]
    NotACapture,
    /// The file was written by a newer, incompatible format version.
    #[error(
        "capture format version {found_major}.{found_minor} is newer than this build supports \
         ({VERSION_MAJOR}.{VERSION_MINOR}); upgrade profcap to read it"
    )]
    NewerVersion { found_major: u16, found_minor: u16 },
    /// The file ends early (strict mode, or inside the header).
    #[error("capture is truncated at byte {offset}")]
    Truncated { offset: u64 },
    /// A chunk is damaged (strict mode).
    #[error("corrupt chunk at byte {offset}: {reason}")]
    Corrupt { offset: u64, reason: String },
    /// Reading failed.
    #[error("read error")]
    Read(#[source] std::io::Error),
    /// Writing failed (disk full, closed pipe, ...).
    #[error("write error")]
    Write(#[source] std::io::Error),
    /// A record or chunk exceeds the format's limits.
    #[error("{what} is too large for one chunk ({bytes} bytes)")]
    TooLarge { what: String, bytes: usize },
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
