//! Streaming capture writer with bounded memory.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use crate::container::{expansion_allowed, ChunkHeader, ChunkKind, FileHeader, FLAG_ZSTD, MAX_CHUNK_LEN};
use crate::encode::{encode_batch, encode_index, IndexEntry};
use crate::records::*;
use crate::{Error, Result};

/// Settings of a [`CaptureWriter`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WriteOptions {
    /// Flush a chunk once this many record bytes are pending. Default: 1 MiB.
    pub chunk_bytes: usize,
    /// Flush a chunk once the oldest pending record is this old, so a killed
    /// recorder loses at most this much. Default: 1 s.
    pub max_chunk_age: Duration,
    /// zstd level. Default: 3 (fast, and within a few percent of level 9 on samples).
    pub zstd_level: i32,
    /// zstd level of chunks that carry symbol blobs, written once at the end
    /// of a recording. Default: 15 (unwind tables shrink by a sixth more than
    /// at level 3, at about 4 MB/s).
    pub material_zstd_level: i32,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            chunk_bytes: 1 << 20,
            max_chunk_age: Duration::from_secs(1),
            zstd_level: 3,
            material_zstd_level: 15,
        }
    }
}

/// Totals of what a writer wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    pub chunks: u64,
    pub records: u64,
    pub samples: u64,
    pub stacks: u64,
    pub raw_bytes: u64,
    pub file_bytes: u64,
}

/// Writes a capture as a stream of compressed chunks.
///
/// Records are buffered into a [`Batch`] and written when it reaches
/// [`WriteOptions::chunk_bytes`] or [`WriteOptions::max_chunk_age`]. Stacks are
/// interned: [`CaptureWriter::intern_stack`] returns the same id for the same
/// frames and writes each distinct stack once, in the chunk of its first use.
#[derive(Debug)]
pub struct CaptureWriter<W: Write> {
    out: W,
    opts: WriteOptions,
    pending: Batch,
    pending_bytes: usize,
    pending_since: Option<Instant>,
    /// Interned stacks keyed by `[kernel_len, kernel.., user..]`.
    stacks: HashMap<Box<[u64]>, StackId>,
    scratch: Vec<u64>,
    index: Vec<IndexEntry>,
    offset: u64,
    stats: WriteStats,
}

impl<W: Write> CaptureWriter<W> {
    /// Starts a capture on `out` by writing the file header.
    pub fn new(mut out: W, opts: WriteOptions) -> Result<Self> {
        let header = FileHeader::current().to_bytes();
        out.write_all(&header).map_err(Error::Write)?;
        Ok(CaptureWriter {
            out,
            opts,
            pending: Batch::default(),
            pending_bytes: 0,
            pending_since: None,
            stacks: HashMap::new(),
            scratch: Vec::new(),
            index: Vec::new(),
            offset: header.len() as u64,
            stats: WriteStats { file_bytes: header.len() as u64, ..WriteStats::default() },
        })
    }

    /// Returns the id of the stack with these frames (leaf first), adding it to
    /// the capture on first sight. An empty stack has id 0.
    pub fn intern_stack(&mut self, kernel: &[u64], user: &[u64]) -> StackId {
        self.intern_stack_new(kernel, user).0
    }

    /// As [`Self::intern_stack`], and whether this call added the stack
    /// (the recorder then notes which objects its frames lie in).
    pub fn intern_stack_new(&mut self, kernel: &[u64], user: &[u64]) -> (StackId, bool) {
        self.intern_unwound(kernel, user, StackEnd::Unknown)
    }

    /// As [`Self::intern_stack_new`], for a user stack unwound by the
    /// recorder that ended for the reason `end` (part of the stack's identity).
    pub fn intern_unwound(&mut self, kernel: &[u64], user: &[u64], end: StackEnd) -> (StackId, bool) {
        self.intern_full(kernel, user, end, &[])
    }

    /// As [`Self::intern_unwound`], with the thread's interpreter frames
    /// (`Stack::python`, encoded by [`crate::python::PyFrame::encode`]).
    pub fn intern_full(
        &mut self,
        kernel: &[u64],
        user: &[u64],
        end: StackEnd,
        python: &[u64],
    ) -> (StackId, bool) {
        if kernel.is_empty() && user.is_empty() && python.is_empty() {
            return (0, false);
        }
        // The key is built in a reused buffer so a repeated stack allocates
        // nothing: [kernel_len | end << 32, python_len, kernel.., user.., python..].
        self.scratch.clear();
        self.scratch.push(kernel.len() as u64 | u64::from(end.code()) << 32);
        self.scratch.push(python.len() as u64);
        self.scratch.extend_from_slice(kernel);
        self.scratch.extend_from_slice(user);
        self.scratch.extend_from_slice(python);
        if let Some(&id) = self.stacks.get(self.scratch.as_slice()) {
            return (id, false);
        }
        let id = self.stacks.len() as StackId + 1;
        self.stacks.insert(self.scratch.as_slice().into(), id);
        let stack = Stack { id, kernel: kernel.to_vec(), user: user.to_vec(), end, python: python.to_vec() };
        self.pending.stacks.push(stack);
        self.note_pending(16 + 8 * (kernel.len() + user.len() + python.len()));
        self.stats.stacks += 1;
        (id, true)
    }

    /// Number of distinct stacks interned so far.
    pub fn stack_count(&self) -> usize {
        self.stacks.len()
    }

    /// Adds a sample. Its `stack_id` must come from [`Self::intern_stack`].
    pub fn push_sample(&mut self, sample: Sample) -> Result<()> {
        self.pending.samples.push(sample);
        self.stats.samples += 1;
        self.note_pending(40);
        self.flush_if_full()
    }

    /// Adds a sample with its registers and copied stack bytes
    /// (`raw.sample_id` is ignored: the raw stack belongs to this sample).
    pub fn push_sample_raw(&mut self, sample: Sample, mut raw: RawStack) -> Result<()> {
        raw.sample_id = self.pending.samples.len() as u64;
        self.note_pending(32 + raw.bytes.len());
        self.pending.raw_stacks.push(raw);
        self.push_sample(sample)
    }

    /// Adds a Python code object (before the first stack that names it is
    /// flushed, or in the same batch).
    pub fn push_py_code(&mut self, code: crate::python::PyCode) -> Result<()> {
        let size = 48 + code.name.len() + code.qualname.len() + code.filename.len() + code.line_table.len();
        self.pending.py_code.push(code);
        self.note_pending(size);
        self.flush_if_full()
    }

    /// Adds an allocation event.
    pub fn push_alloc(&mut self, alloc: Alloc) -> Result<()> {
        self.pending.allocs.push(alloc);
        self.note_pending(48);
        self.flush_if_full()
    }

    /// Adds a free event.
    pub fn push_free(&mut self, free: Free) -> Result<()> {
        self.pending.frees.push(free);
        self.note_pending(24);
        self.flush_if_full()
    }

    /// Sets the capture metadata (a later call supersedes an earlier one).
    pub fn push_meta(&mut self, meta: Meta) -> Result<()> {
        self.pending.meta = Some(meta);
        self.note_pending(256);
        self.flush_if_full()
    }

    /// Adds a process description.
    pub fn push_process(&mut self, p: Process) -> Result<()> {
        let size = 64 + p.exe.len() + p.cmdline.iter().map(String::len).sum::<usize>();
        self.pending.processes.push(p);
        self.note_pending(size);
        self.flush_if_full()
    }

    /// Adds a thread name.
    pub fn push_thread(&mut self, t: Thread) -> Result<()> {
        self.pending.threads.push(t);
        self.note_pending(48);
        self.flush_if_full()
    }

    /// Adds a memory mapping.
    pub fn push_mapping(&mut self, m: Mapping) -> Result<()> {
        let size = 96 + m.path.len();
        self.pending.mappings.push(m);
        self.note_pending(size);
        self.flush_if_full()
    }

    /// Adds a lost-events counter.
    pub fn push_lost(&mut self, l: Lost) -> Result<()> {
        self.pending.lost.push(l);
        self.note_pending(64);
        self.flush_if_full()
    }

    /// Adds symbolization material for one object. Large blobs get a chunk of
    /// their own so that they never delay the samples around them.
    pub fn push_symbols(&mut self, blob: SymbolBlob) -> Result<()> {
        let size = blob.elf.len()
            + blob.sections.iter().map(|s| s.data.len()).sum::<usize>()
            + blob.symbols.iter().map(|s| 24 + s.name.len()).sum::<usize>();
        if size as u64 >= u64::from(MAX_CHUNK_LEN) / 2 {
            return Err(Error::TooLarge { what: format!("symbols of {}", blob.path), bytes: size });
        }
        self.pending.symbols.push(blob);
        self.note_pending(size);
        self.flush_if_full()
    }

    /// Sets the kernel symbols.
    pub fn push_kernel_symbols(&mut self, k: KernelSymbols) -> Result<()> {
        let size = k.symbols.iter().map(|s| 24 + s.name.len()).sum::<usize>();
        self.pending.kernel_symbols = Some(k);
        self.note_pending(size);
        self.flush_if_full()
    }

    /// Adds a request event.
    pub fn push_request(&mut self, r: RequestEvent) -> Result<()> {
        let size = 48 + r.payload.len();
        self.pending.requests.push(r);
        self.note_pending(size);
        self.flush_if_full()
    }

    fn note_pending(&mut self, bytes: usize) {
        self.pending_bytes += bytes;
        self.pending_since.get_or_insert_with(Instant::now);
    }

    /// Writes the pending batch if it is large enough: the check of every
    /// push, which reads no clock (the age is [`Self::maybe_flush`]'s).
    fn flush_if_full(&mut self) -> Result<()> {
        if self.pending_bytes >= self.opts.chunk_bytes {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes the pending batch if it is large or old enough. Recorders call
    /// this periodically even when idle so that the age limit holds.
    pub fn maybe_flush(&mut self) -> Result<()> {
        let old = self.pending_since.is_some_and(|t| t.elapsed() >= self.opts.max_chunk_age);
        if self.pending_bytes >= self.opts.chunk_bytes || old {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes the pending batch as one chunk now (nothing if it is empty).
    pub fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.pending_bytes = 0;
        self.pending_since = None;
        let batch = &self.pending;
        let records = batch.record_count();
        let (first_ns, last_ns) = batch.time_range().unwrap_or((0, 0));
        let raw = encode_batch(batch);
        let level =
            if batch.symbols.is_empty() { self.opts.zstd_level } else { self.opts.material_zstd_level };
        // Emptied, not replaced: the next batch reuses the vectors' room.
        self.pending.clear();
        let offset = self.write_chunk(ChunkKind::Batch, &raw, records, level)?;
        self.index.push(IndexEntry {
            offset,
            kind: ChunkKind::Batch.code(),
            first_ns,
            last_ns,
            records: u32::try_from(records).unwrap_or(u32::MAX),
        });
        self.stats.records += records as u64;
        self.out.flush().map_err(Error::Write)
    }

    fn write_chunk(&mut self, kind: ChunkKind, raw: &[u8], records: usize, level: i32) -> Result<u64> {
        let too_large = |bytes| Error::TooLarge { what: "chunk".into(), bytes };
        let compressed = zstd::bulk::compress(raw, level).map_err(Error::Write)?;
        // A chunk that compresses past what readers accept is stored as is.
        let (flags, compressed) = if expansion_allowed(compressed.len() as u64, raw.len() as u64) {
            (FLAG_ZSTD, compressed)
        } else {
            (0, raw.to_vec())
        };
        let header = ChunkHeader {
            kind,
            flags,
            stored_len: u32::try_from(compressed.len())
                .ok()
                .filter(|&n| n <= MAX_CHUNK_LEN)
                .ok_or_else(|| too_large(compressed.len()))?,
            raw_len: u32::try_from(raw.len())
                .ok()
                .filter(|&n| n <= MAX_CHUNK_LEN)
                .ok_or_else(|| too_large(raw.len()))?,
            records: u32::try_from(records).unwrap_or(u32::MAX),
            payload_crc: crc32fast::hash(&compressed),
        };
        let offset = self.offset;
        self.out.write_all(&header.to_bytes()).map_err(Error::Write)?;
        self.out.write_all(&compressed).map_err(Error::Write)?;
        let written = (crate::container::CHUNK_HEADER_LEN + compressed.len()) as u64;
        self.offset += written;
        self.stats.chunks += 1;
        self.stats.raw_bytes += raw.len() as u64;
        self.stats.file_bytes += written;
        Ok(offset)
    }

    /// The output written to so far.
    pub fn get_ref(&self) -> &W {
        &self.out
    }

    /// What has been written so far.
    pub fn stats(&self) -> WriteStats {
        self.stats
    }

    /// Flushes, writes the index and trailer, and returns the output.
    pub fn finish(mut self) -> Result<(W, WriteStats)> {
        self.flush()?;
        let index = encode_index(&self.index);
        let index_offset =
            self.write_chunk(ChunkKind::Index, &index, self.index.len(), self.opts.zstd_level)?;
        // The trailer is stored uncompressed so it has a fixed size and can be
        // found from the end of the file.
        let payload = index_offset.to_le_bytes();
        let header = ChunkHeader {
            kind: ChunkKind::Trailer,
            flags: 0,
            stored_len: payload.len() as u32,
            raw_len: payload.len() as u32,
            records: 0,
            payload_crc: crc32fast::hash(&payload),
        };
        self.out.write_all(&header.to_bytes()).map_err(Error::Write)?;
        self.out.write_all(&payload).map_err(Error::Write)?;
        self.out.flush().map_err(Error::Write)?;
        self.stats.file_bytes += (crate::container::CHUNK_HEADER_LEN + payload.len()) as u64;
        Ok((self.out, self.stats))
    }
}
