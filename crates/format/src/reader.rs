//! Streaming capture reader that survives truncation and corruption.

use std::fmt;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use crate::container::*;
use crate::decode::{decode_batch, decode_index};
use crate::encode::IndexEntry;
use crate::records::Batch;
use crate::{Error, Result};

/// Settings of a [`CaptureReader`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ReadOptions {
    /// Fail on the first corrupt or truncated chunk instead of skipping it
    /// with a warning. Default: false.
    pub strict: bool,
}

impl ReadOptions {
    /// Options with `strict` set as given.
    pub fn strict(strict: bool) -> Self {
        ReadOptions { strict }
    }
}

/// Something wrong with the file that the reader worked around.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    /// The file ends inside a chunk: everything before `offset` was read.
    Truncated { offset: u64, needed: u64, available: u64 },
    /// A chunk at `offset` could not be used and was skipped.
    CorruptChunk { offset: u64, reason: String },
    /// Bytes from `from` to `to` were not a chunk; reading went on at `to`.
    Resynced { from: u64, to: u64 },
    /// The file has no trailer: the recorder did not finish it.
    NoTrailer,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::Truncated { offset, needed, available } => write!(
                f,
                "file is truncated at byte {}: the chunk at byte {offset} needs {needed} bytes, \
                 {available} are present; every complete chunk before it was read",
                offset + available
            ),
            Warning::CorruptChunk { offset, reason } => {
                write!(f, "skipped corrupt chunk at byte {offset}: {reason}")
            }
            Warning::Resynced { from, to } => {
                write!(f, "skipped {} unreadable bytes at byte {from}", to - from)
            }
            Warning::NoTrailer => write!(
                f,
                "file has no trailer: the recording was not finished (killed?); all complete \
                 chunks were read"
            ),
        }
    }
}

/// What the reader has seen so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadStats {
    /// Chunks with a valid header, of any kind.
    pub chunks: u64,
    /// Batch chunks decoded.
    pub batches: u64,
    /// Chunks of kinds this reader does not know, skipped.
    pub unknown_chunks: u64,
    /// Payload bytes as stored (compressed) in decoded batches.
    pub stored_bytes: u64,
    /// Payload bytes after decompression in decoded batches.
    pub raw_bytes: u64,
    /// Bytes consumed from the file.
    pub file_bytes: u64,
    /// Whether the trailer was seen.
    pub trailer: bool,
}

/// Reads a capture chunk by chunk.
///
/// Iterating yields one [`Batch`] per data chunk. Damage is reported through
/// [`CaptureReader::warnings`] and skipped, unless [`ReadOptions::strict`].
/// Memory use is bounded by the largest chunk, itself capped at
/// [`MAX_CHUNK_LEN`] whatever the length fields claim.
#[derive(Debug)]
pub struct CaptureReader<R: Read> {
    input: BufReader<R>,
    header: FileHeader,
    opts: ReadOptions,
    offset: u64,
    warnings: Vec<Warning>,
    stats: ReadStats,
    index: Option<Vec<IndexEntry>>,
    next_sample_id: u64,
    done: bool,
}

impl CaptureReader<File> {
    /// Opens the capture at `path`.
    pub fn open(path: impl AsRef<Path>, opts: ReadOptions) -> Result<Self> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|source| Error::Open { path: path.to_owned(), source })?;
        CaptureReader::new(file, opts)
    }
}

/// Reads into `buf` until it is full or the input ends; returns bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

impl<R: Read> CaptureReader<R> {
    /// Reads and checks the file header.
    pub fn new(input: R, opts: ReadOptions) -> Result<Self> {
        let mut input = BufReader::with_capacity(256 * 1024, input);
        let mut buf = [0u8; FILE_HEADER_LEN];
        let n = read_full(&mut input, &mut buf).map_err(Error::Read)?;
        if n < FILE_HEADER_LEN {
            return Err(if buf[..n] == FILE_MAGIC[..n.min(8)] {
                Error::Truncated { offset: n as u64 }
            } else {
                Error::NotACapture
            });
        }
        let header = FileHeader::parse(&buf)?;
        Ok(CaptureReader {
            input,
            header,
            opts,
            offset: FILE_HEADER_LEN as u64,
            warnings: Vec::new(),
            stats: ReadStats { file_bytes: FILE_HEADER_LEN as u64, ..ReadStats::default() },
            index: None,
            next_sample_id: 1,
            done: false,
        })
    }

    /// The file header.
    pub fn header(&self) -> FileHeader {
        self.header
    }

    /// Damage worked around so far.
    pub fn warnings(&self) -> &[Warning] {
        &self.warnings
    }

    /// Counters so far.
    pub fn stats(&self) -> ReadStats {
        self.stats
    }

    /// The trailer index, once the reader has passed it.
    pub fn index(&self) -> Option<&[IndexEntry]> {
        self.index.as_deref()
    }

    fn damage(&mut self, warning: Warning) -> Result<()> {
        if self.opts.strict {
            self.done = true;
            return Err(match warning {
                Warning::Truncated { offset, available, .. } => {
                    Error::Truncated { offset: offset + available }
                }
                Warning::CorruptChunk { offset, reason } => Error::Corrupt { offset, reason },
                Warning::Resynced { from, .. } => {
                    Error::Corrupt { offset: from, reason: "not a chunk header".into() }
                }
                Warning::NoTrailer => Error::Truncated { offset: self.offset },
            });
        }
        // Kept for the caller to report once ([`Self::warnings`]); a file read
        // twice (two passes) would otherwise say the same thing twice.
        log::debug!("{warning}");
        self.warnings.push(warning);
        Ok(())
    }

    /// Reads the next chunk header, resynchronizing past garbage.
    /// `None` at the end of the input.
    fn next_header(&mut self) -> Result<Option<(u64, ChunkHeader)>> {
        let mut buf = [0u8; CHUNK_HEADER_LEN];
        let n = read_full(&mut self.input, &mut buf).map_err(Error::Read)?;
        if n == 0 {
            return Ok(None);
        }
        if n < CHUNK_HEADER_LEN {
            let (offset, needed) = (self.offset, CHUNK_HEADER_LEN as u64);
            self.offset += n as u64;
            self.damage(Warning::Truncated { offset, needed, available: n as u64 })?;
            return Ok(None);
        }
        let start = self.offset;
        let mut at = start;
        loop {
            if let Some(h) = ChunkHeader::parse(&buf) {
                if at != start {
                    self.damage(Warning::Resynced { from: start, to: at })?;
                }
                self.offset = at + CHUNK_HEADER_LEN as u64;
                return Ok(Some((at, h)));
            }
            // Slide the window by one byte looking for the next valid header.
            let mut byte = [0u8; 1];
            if read_full(&mut self.input, &mut byte).map_err(Error::Read)? == 0 {
                self.offset = at + CHUNK_HEADER_LEN as u64;
                self.damage(Warning::Resynced { from: start, to: self.offset })?;
                return Ok(None);
            }
            buf.copy_within(1.., 0);
            buf[CHUNK_HEADER_LEN - 1] = byte[0];
            at += 1;
        }
    }

    /// Reads the next batch; `None` at the end of the file.
    pub fn next_batch(&mut self) -> Result<Option<Batch>> {
        while let Some(raw) = self.next_raw_batch()? {
            match raw.decode() {
                Ok(mut batch) => {
                    for s in batch.samples.iter_mut() {
                        if s.id == 0 {
                            s.id = self.next_sample_id;
                        }
                        self.next_sample_id += 1;
                    }
                    batch.resolve_raw_stacks();
                    self.stats.batches += 1;
                    self.stats.raw_bytes += u64::from(raw.header.raw_len);
                    return Ok(Some(batch));
                }
                Err(reason) => self.damage(Warning::CorruptChunk { offset: raw.offset, reason })?,
            }
        }
        Ok(None)
    }

    /// Reads the next batch chunk without decompressing or decoding it, so
    /// that callers can decode chunks in parallel. Checksums are verified and
    /// other chunk kinds handled here. Sample ids are not assigned on this path.
    pub fn next_raw_batch(&mut self) -> Result<Option<RawBatch>> {
        while !self.done {
            let Some((offset, h)) = self.next_header()? else {
                break;
            };
            self.stats.chunks += 1;
            let mut payload = Vec::new();
            let got = (&mut self.input)
                .take(u64::from(h.stored_len))
                .read_to_end(&mut payload)
                .map_err(Error::Read)?;
            self.offset += got as u64;
            self.stats.file_bytes = self.offset;
            if got < h.stored_len as usize {
                let needed = (CHUNK_HEADER_LEN + h.stored_len as usize) as u64;
                let available = (CHUNK_HEADER_LEN + got) as u64;
                self.damage(Warning::Truncated { offset, needed, available })?;
                self.done = true;
                break;
            }
            if crc32fast::hash(&payload) != h.payload_crc {
                let reason = "payload checksum mismatch".to_owned();
                self.damage(Warning::CorruptChunk { offset, reason })?;
                continue;
            }
            if h.kind == ChunkKind::Batch {
                self.stats.stored_bytes += payload.len() as u64;
                return Ok(Some(RawBatch { offset, header: h, payload }));
            }
            if let Err(reason) = self.use_other_chunk(offset, h, payload) {
                self.damage(Warning::CorruptChunk { offset, reason })?;
            }
        }
        if !self.done {
            self.done = true;
            self.stats.file_bytes = self.offset;
            let truncated = self.warnings.iter().any(|w| matches!(w, Warning::Truncated { .. }));
            if !self.stats.trailer && !truncated {
                self.damage(Warning::NoTrailer)?;
            }
        }
        self.stats.file_bytes = self.offset;
        Ok(None)
    }

    /// Interprets a checksummed chunk that is not a batch.
    fn use_other_chunk(
        &mut self,
        offset: u64,
        h: ChunkHeader,
        payload: Vec<u8>,
    ) -> std::result::Result<(), String> {
        match h.kind {
            ChunkKind::Index => {
                let raw = if h.flags & FLAG_ZSTD != 0 { decompress(&payload, h.raw_len)? } else { payload };
                self.index = Some(decode_index(&raw).map_err(|e| e.0)?);
            }
            ChunkKind::Trailer => self.stats.trailer = true,
            ChunkKind::Unknown(kind) => {
                log::debug!("skipping chunk of unknown kind {kind} at byte {offset}");
                self.stats.unknown_chunks += 1;
            }
            ChunkKind::Batch => {}
        }
        Ok(())
    }
}

/// A checksummed batch chunk, not yet decompressed or decoded.
#[derive(Debug, Clone)]
pub struct RawBatch {
    /// File offset of the chunk header.
    pub offset: u64,
    header: ChunkHeader,
    payload: Vec<u8>,
}

impl RawBatch {
    /// Decompresses and verifies the batch; the error says what is wrong.
    pub fn decode(&self) -> std::result::Result<Batch, String> {
        let raw;
        let bytes = if self.header.flags & FLAG_ZSTD != 0 {
            raw = decompress(&self.payload, self.header.raw_len)?;
            &raw[..]
        } else {
            &self.payload[..]
        };
        decode_batch(bytes).map_err(|e| e.0)
    }
}

/// Decompresses at most `raw_len` bytes; more or fewer means corruption, and
/// so does a `raw_len` past what `payload` may expand to (a bomb).
fn decompress(payload: &[u8], raw_len: u32) -> std::result::Result<Vec<u8>, String> {
    if !crate::container::expansion_allowed(payload.len() as u64, u64::from(raw_len)) {
        return Err(format!(
            "claims {raw_len} bytes from {} compressed, more than {}x: refused as a decompression bomb",
            payload.len(),
            crate::container::MAX_EXPANSION
        ));
    }
    let decoder = zstd::stream::read::Decoder::with_buffer(payload).map_err(|e| format!("zstd: {e}"))?;
    let mut raw = Vec::new();
    decoder.take(u64::from(raw_len) + 1).read_to_end(&mut raw).map_err(|e| format!("zstd: {e}"))?;
    if raw.len() != raw_len as usize {
        return Err(format!(
            "decompressed to {} bytes, header says {raw_len}",
            raw.len().min(raw_len as usize + 1)
        ));
    }
    Ok(raw)
}

impl<R: Read> Iterator for CaptureReader<R> {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_batch().transpose()
    }
}

/// Reads the trailer index of a finished capture without reading the chunks.
/// `Ok(None)` when the file has no (valid) trailer: read it sequentially then.
pub fn read_index<R: Read + Seek>(mut input: R) -> Result<Option<Vec<IndexEntry>>> {
    let trailer_len = (CHUNK_HEADER_LEN + 8) as u64;
    let end = input.seek(SeekFrom::End(0)).map_err(Error::Read)?;
    if end < FILE_HEADER_LEN as u64 + trailer_len {
        return Ok(None);
    }
    input.seek(SeekFrom::Start(end - trailer_len)).map_err(Error::Read)?;
    let mut buf = [0u8; CHUNK_HEADER_LEN + 8];
    input.read_exact(&mut buf).map_err(Error::Read)?;
    let mut hb = [0u8; CHUNK_HEADER_LEN];
    hb.copy_from_slice(&buf[..CHUNK_HEADER_LEN]);
    let Some(h) = ChunkHeader::parse(&hb).filter(|h| h.kind == ChunkKind::Trailer) else {
        return Ok(None);
    };
    let payload = &buf[CHUNK_HEADER_LEN..];
    if crc32fast::hash(payload) != h.payload_crc {
        return Ok(None);
    }
    let mut off = [0u8; 8];
    off.copy_from_slice(payload);
    let index_offset = u64::from_le_bytes(off);
    if index_offset >= end {
        return Ok(None);
    }
    input.seek(SeekFrom::Start(index_offset)).map_err(Error::Read)?;
    input.read_exact(&mut hb).map_err(Error::Read)?;
    let Some(h) = ChunkHeader::parse(&hb).filter(|h| h.kind == ChunkKind::Index) else {
        return Ok(None);
    };
    let mut payload = Vec::new();
    input.take(u64::from(h.stored_len)).read_to_end(&mut payload).map_err(Error::Read)?;
    if crc32fast::hash(&payload) != h.payload_crc {
        return Ok(None);
    }
    let raw =
        decompress(&payload, h.raw_len).map_err(|reason| Error::Corrupt { offset: index_offset, reason })?;
    decode_index(&raw).map(Some).map_err(|e| Error::Corrupt { offset: index_offset, reason: e.0 })
}
