//! The byte layout around the records: file header, chunk headers, trailer.
//!
//! All integers are little-endian. See `docs/format.md` for the prose version.

use crate::{Error, Result};

/// The first eight bytes of every capture.
pub const FILE_MAGIC: [u8; 8] = *b"PROFCAP\0";
/// Size of the file header in bytes.
pub const FILE_HEADER_LEN: usize = 16;
/// Major format version: readers refuse files with a greater one.
pub const VERSION_MAJOR: u16 = 1;
/// Minor format version: additions that older readers of the same major can skip.
pub const VERSION_MINOR: u16 = 5;

/// The first four bytes of every chunk header.
pub const CHUNK_MAGIC: [u8; 4] = *b"CHNK";
/// Size of a chunk header in bytes.
pub const CHUNK_HEADER_LEN: usize = 32;
/// No chunk may claim more stored or decompressed bytes than this; a larger
/// length field is treated as corruption rather than trusted for an allocation.
pub const MAX_CHUNK_LEN: u32 = 256 << 20;

/// A compressed chunk decompresses to at most `MAX_EXPANSION` times its
/// stored bytes plus `EXPANSION_SLACK`: more is refused as a decompression
/// bomb. Real chunks compress 2-10x, up to about 40x for zero-padded ELF
/// images and past 100x for kept raw stacks (`profrec --keep-stacks`: a
/// thread's stack changes little between samples); the writer stores a
/// chunk uncompressed rather than break the rule.
pub const MAX_EXPANSION: u64 = 256;
pub const EXPANSION_SLACK: u64 = 1024;

/// Whether a chunk of `stored` compressed bytes may decompress to `raw`.
pub fn expansion_allowed(stored: u64, raw: u64) -> bool {
    raw <= stored.saturating_mul(MAX_EXPANSION).saturating_add(EXPANSION_SLACK)
}

/// Chunk flag: the payload is zstd-compressed.
pub const FLAG_ZSTD: u16 = 1;

/// What a chunk holds. Readers skip kinds they do not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkKind {
    /// A flatbuffer `Batch` of records.
    Batch,
    /// A flatbuffer `Index` of the chunks before it.
    Index,
    /// Eight bytes: the file offset of the index chunk. Always last.
    Trailer,
    /// Written by a newer writer; skipped.
    Unknown(u16),
}

impl ChunkKind {
    /// The on-disk code.
    pub fn code(self) -> u16 {
        match self {
            ChunkKind::Batch => 1,
            ChunkKind::Index => 2,
            ChunkKind::Trailer => 3,
            ChunkKind::Unknown(c) => c,
        }
    }

    /// The kind of an on-disk code.
    pub fn from_code(code: u16) -> Self {
        match code {
            1 => ChunkKind::Batch,
            2 => ChunkKind::Index,
            3 => ChunkKind::Trailer,
            c => ChunkKind::Unknown(c),
        }
    }
}

/// The file header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileHeader {
    pub version_major: u16,
    pub version_minor: u16,
    /// Reserved for future use; written as 0, ignored by readers.
    pub flags: u32,
}

impl FileHeader {
    /// The header this library writes.
    pub fn current() -> Self {
        FileHeader { version_major: VERSION_MAJOR, version_minor: VERSION_MINOR, flags: 0 }
    }

    /// Serializes the header.
    pub fn to_bytes(self) -> [u8; FILE_HEADER_LEN] {
        let mut b = [0u8; FILE_HEADER_LEN];
        b[0..8].copy_from_slice(&FILE_MAGIC);
        b[8..10].copy_from_slice(&self.version_major.to_le_bytes());
        b[10..12].copy_from_slice(&self.version_minor.to_le_bytes());
        b[12..16].copy_from_slice(&self.flags.to_le_bytes());
        b
    }

    /// Parses and checks a header: the magic must match and the major version
    /// must be one this library reads.
    pub fn parse(b: &[u8; FILE_HEADER_LEN]) -> Result<Self> {
        if b[0..8] != FILE_MAGIC {
            return Err(Error::NotACapture);
        }
        let header = FileHeader {
            version_major: u16::from_le_bytes([b[8], b[9]]),
            version_minor: u16::from_le_bytes([b[10], b[11]]),
            flags: u32::from_le_bytes([b[12], b[13], b[14], b[15]]),
        };
        if header.version_major > VERSION_MAJOR {
            return Err(Error::NewerVersion {
                found_major: header.version_major,
                found_minor: header.version_minor,
            });
        }
        Ok(header)
    }
}

/// A chunk header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHeader {
    pub kind: ChunkKind,
    pub flags: u16,
    /// Bytes of payload that follow the header in the file.
    pub stored_len: u32,
    /// Bytes of payload after decompression.
    pub raw_len: u32,
    /// Records in the chunk (informational).
    pub records: u32,
    /// CRC-32 (IEEE) of the stored payload.
    pub payload_crc: u32,
}

impl ChunkHeader {
    /// A chunk of `kind` as it is stored: its header (lengths and payload
    /// checksum computed) followed by `stored`, which decompresses to
    /// `raw_len` bytes (`flags` says how). Lengths beyond u32 are clamped;
    /// readers refuse them as over [`MAX_CHUNK_LEN`].
    pub fn encode(kind: ChunkKind, flags: u16, stored: &[u8], raw_len: usize, records: u32) -> Vec<u8> {
        let header = ChunkHeader {
            kind,
            flags,
            stored_len: u32::try_from(stored.len()).unwrap_or(u32::MAX),
            raw_len: u32::try_from(raw_len).unwrap_or(u32::MAX),
            records,
            payload_crc: crc32fast::hash(stored),
        };
        let mut out = Vec::with_capacity(CHUNK_HEADER_LEN + stored.len());
        out.extend_from_slice(&header.to_bytes());
        out.extend_from_slice(stored);
        out
    }

    /// Serializes the header, computing its own checksum.
    pub fn to_bytes(self) -> [u8; CHUNK_HEADER_LEN] {
        let mut b = [0u8; CHUNK_HEADER_LEN];
        b[0..4].copy_from_slice(&CHUNK_MAGIC);
        b[4..6].copy_from_slice(&self.kind.code().to_le_bytes());
        b[6..8].copy_from_slice(&self.flags.to_le_bytes());
        b[8..12].copy_from_slice(&self.stored_len.to_le_bytes());
        b[12..16].copy_from_slice(&self.raw_len.to_le_bytes());
        b[16..20].copy_from_slice(&self.records.to_le_bytes());
        b[20..24].copy_from_slice(&self.payload_crc.to_le_bytes());
        // 24..28 reserved, zero.
        let crc = crc32fast::hash(&b[0..28]);
        b[28..32].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Parses a header. `None` means the bytes are not a valid chunk header
    /// (wrong magic, bad header checksum, or impossible lengths).
    pub fn parse(b: &[u8; CHUNK_HEADER_LEN]) -> Option<Self> {
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        if b[0..4] != CHUNK_MAGIC || crc32fast::hash(&b[0..28]) != u32_at(28) {
            return None;
        }
        let header = ChunkHeader {
            kind: ChunkKind::from_code(u16::from_le_bytes([b[4], b[5]])),
            flags: u16::from_le_bytes([b[6], b[7]]),
            stored_len: u32_at(8),
            raw_len: u32_at(12),
            records: u32_at(16),
            payload_crc: u32_at(20),
        };
        if header.stored_len > MAX_CHUNK_LEN || header.raw_len > MAX_CHUNK_LEN {
            return None;
        }
        Some(header)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_header_round_trips_and_detects_flips() {
        let h = ChunkHeader {
            kind: ChunkKind::Batch,
            flags: FLAG_ZSTD,
            stored_len: 1234,
            raw_len: 99999,
            records: 7,
            payload_crc: 0xdead_beef,
        };
        let bytes = h.to_bytes();
        assert_eq!(ChunkHeader::parse(&bytes), Some(h));
        for i in 0..CHUNK_HEADER_LEN {
            let mut bad = bytes;
            bad[i] ^= 0x10;
            assert_eq!(ChunkHeader::parse(&bad), None, "flip at byte {i} not detected");
        }
    }

    #[test]
    fn newer_major_version_is_refused() {
        let mut h = FileHeader::current();
        h.version_major = VERSION_MAJOR + 1;
        let err = FileHeader::parse(&h.to_bytes()).unwrap_err();
        assert!(matches!(err, Error::NewerVersion { .. }), "{err}");
        assert!(matches!(FileHeader::parse(&[0u8; 16]), Err(Error::NotACapture)));
    }
}
