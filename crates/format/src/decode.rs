//! Verified flatbuffer bytes to owned records.
//!
//! Everything here runs on untrusted data: the verifier checks offsets and
//! bounds, and this module checks what the verifier cannot (column lengths).

use std::cell::Cell;

use flatbuffers::{ForwardsUOffset, Vector, VerifierOptions};

use crate::encode::IndexEntry;
use crate::fb;
use crate::records::*;

/// Why a payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

fn verifier_options() -> VerifierOptions {
    VerifierOptions {
        max_depth: 64,
        max_tables: 50_000_000,
        max_apparent_size: 1 << 31,
        ..VerifierOptions::default()
    }
}

/// A batch may decode to at most `DECODE_FACTOR` times its flatbuffer bytes
/// plus `DECODE_SLACK`. Real batches decode to 2-4 times their size; a
/// hostile one (thousands of entries pointing at one large table, which the
/// verifier allows) is refused instead of filling memory.
pub const DECODE_FACTOR: u64 = 16;
pub const DECODE_SLACK: u64 = 1 << 20;

thread_local! {
    /// Decoded bytes the batch being decoded may still take; `None` once
    /// it asked for more (helpers then return empty values, and the batch fails).
    static BUDGET: Cell<Option<u64>> = const { Cell::new(Some(u64::MAX)) };
}

/// Sets the decode budget for one payload and clears it when dropped.
struct Budget;

impl Budget {
    fn for_payload(len: usize) -> Budget {
        let bytes = (len as u64).saturating_mul(DECODE_FACTOR).saturating_add(DECODE_SLACK);
        BUDGET.with(|b| b.set(Some(bytes)));
        Budget
    }

    /// An error if the payload asked for more than its budget.
    fn check(&self, len: usize) -> Result<(), DecodeError> {
        match BUDGET.with(Cell::get) {
            Some(_) => Ok(()),
            None => Err(DecodeError(format!(
                "a {len}-byte batch decodes to more than {DECODE_FACTOR}x its size: refused"
            ))),
        }
    }
}

impl Drop for Budget {
    fn drop(&mut self) {
        BUDGET.with(|b| b.set(Some(u64::MAX)));
    }
}

/// Takes `n` items of `T` from the budget; false once it is spent.
fn charge<T>(n: usize) -> bool {
    let bytes = (n as u64).saturating_mul(std::mem::size_of::<T>().max(1) as u64);
    BUDGET.with(|b| {
        let left = b.get().and_then(|left| left.checked_sub(bytes));
        b.set(left);
        left.is_some()
    })
}

fn string(s: Option<&str>) -> String {
    let s = s.unwrap_or_default();
    if charge::<u8>(s.len()) {
        s.to_owned()
    } else {
        String::new()
    }
}

fn strings(v: Option<Vector<'_, ForwardsUOffset<&str>>>) -> Vec<String> {
    tables(v, |s| string(Some(s)))
}

fn scalars<'a, T: flatbuffers::Follow<'a>>(v: Option<Vector<'a, T>>) -> Vec<T::Inner> {
    match v {
        Some(v) if charge::<T::Inner>(v.len()) => v.iter().collect(),
        _ => Vec::new(),
    }
}

fn byte_vec(v: Option<Vector<'_, u8>>) -> Vec<u8> {
    match v {
        Some(v) if charge::<u8>(v.len()) => v.bytes().to_vec(),
        _ => Vec::new(),
    }
}

/// Checks that every column has `n` entries (optional columns may be empty).
fn check_columns(what: &str, n: usize, lens: &[(&str, usize, bool)]) -> Result<(), DecodeError> {
    for &(name, len, optional) in lens {
        if len != n && !(optional && len == 0) {
            return Err(DecodeError(format!("{what}: column {name} has {len} entries, expected {n}")));
        }
    }
    Ok(())
}

fn undelta(deltas: Vec<u64>) -> Vec<u64> {
    let mut t = 0u64;
    deltas
        .into_iter()
        .map(|d| {
            t = t.wrapping_add(d);
            t
        })
        .collect()
}

fn meta(m: fb::Meta<'_>) -> Meta {
    Meta {
        hostname: string(m.hostname()),
        kernel_release: string(m.kernel_release()),
        boot_id: string(m.boot_id()),
        clock: string(m.clock()),
        start_wall_ns: m.start_wall_ns(),
        start_mono_ns: m.start_mono_ns(),
        end_wall_ns: m.end_wall_ns(),
        end_mono_ns: m.end_mono_ns(),
        sample_freq_hz: m.sample_freq_hz(),
        events: strings(m.events()),
        recorder_version: string(m.recorder_version()),
        command_line: strings(m.command_line()),
        page_size: m.page_size(),
        extra: tables(m.extra(), |kv| (string(kv.key()), string(kv.value()))),
    }
}

fn process(p: fb::Process<'_>) -> Process {
    Process {
        pid: p.pid(),
        ppid: p.ppid(),
        start_ticks: p.start_ticks(),
        comm: string(p.comm()),
        exe: string(p.exe()),
        cmdline: strings(p.cmdline()),
        pid_ns: p.pid_ns(),
        mnt_ns: p.mnt_ns(),
        cgroup: string(p.cgroup()),
        seen_ns: p.seen_ns(),
        exit_ns: p.exit_ns(),
    }
}

fn mapping(m: fb::Mapping<'_>) -> Mapping {
    Mapping {
        pid: m.pid(),
        start: m.start(),
        end: m.end(),
        file_offset: m.file_offset(),
        path: string(m.path()),
        build_id: byte_vec(m.build_id()),
        dev_major: m.dev_major(),
        dev_minor: m.dev_minor(),
        inode: m.inode(),
        seen_ns: m.seen_ns(),
        start_ticks: m.start_ticks(),
    }
}

fn stack(s: fb::Stack<'_>) -> Stack {
    Stack {
        id: s.id(),
        kernel: scalars(s.kernel()),
        user: scalars(s.user()),
        end: StackEnd::from_code(s.end().0),
        python: scalars(s.python()),
    }
}

fn py_code(c: fb::PyCode<'_>) -> crate::python::PyCode {
    crate::python::PyCode {
        id: c.id(),
        name: string(c.name()),
        qualname: string(c.qualname()),
        filename: string(c.filename()),
        first_line: c.first_line(),
        line_format: crate::python::PyLineTable::from_code(c.line_format().0),
        line_table: byte_vec(c.line_table()),
    }
}

fn samples(s: fb::Samples<'_>) -> Result<Vec<Sample>, DecodeError> {
    let time = undelta(scalars(s.time_ns()));
    let (kind, unit, pid, tid) = (scalars(s.kind()), scalars(s.unit()), scalars(s.pid()), scalars(s.tid()));
    let (cpu, stack_id, value, id) =
        (scalars(s.cpu()), scalars(s.stack_id()), scalars(s.value()), scalars(s.id()));
    let (wpid, wtid, wstack) = (scalars(s.waker_pid()), scalars(s.waker_tid()), scalars(s.waker_stack_id()));
    let n = time.len();
    check_columns(
        "samples",
        n,
        &[
            ("kind", kind.len(), false),
            ("unit", unit.len(), false),
            ("pid", pid.len(), false),
            ("tid", tid.len(), false),
            ("cpu", cpu.len(), false),
            ("stack_id", stack_id.len(), false),
            ("value", value.len(), false),
            ("id", id.len(), true),
            ("waker_pid", wpid.len(), true),
            ("waker_tid", wtid.len(), true),
            ("waker_stack_id", wstack.len(), true),
        ],
    )?;
    if !charge::<Sample>(n) {
        return Ok(Vec::new());
    }
    let waker = |i: usize| {
        let tid = wtid.get(i).copied().unwrap_or(0);
        (tid != 0).then(|| Waker {
            pid: wpid.get(i).copied().unwrap_or(0),
            tid,
            stack_id: wstack.get(i).copied().unwrap_or(0),
        })
    };
    Ok((0..n)
        .map(|i| Sample {
            kind: SampleKind::from_code(kind[i]),
            unit: ValueUnit::from_code(unit[i]),
            time_ns: time[i],
            pid: pid[i],
            tid: tid[i],
            cpu: cpu[i],
            stack_id: stack_id[i],
            value: value[i],
            id: id.get(i).copied().unwrap_or(0),
            waker: waker(i),
        })
        .collect())
}

/// Raw stacks with `sample_id` still the sample's index in the batch.
fn raw_stacks(r: fb::RawStacks<'_>) -> Result<Vec<RawStack>, DecodeError> {
    let (sample, ip, sp, bp) = (scalars(r.sample()), scalars(r.ip()), scalars(r.sp()), scalars(r.bp()));
    let len: Vec<u32> = scalars(r.len());
    let bytes = r.bytes().map(|b| b.bytes()).unwrap_or_default();
    let n = sample.len();
    check_columns(
        "raw_stacks",
        n,
        &[
            ("ip", ip.len(), false),
            ("sp", sp.len(), false),
            ("bp", bp.len(), false),
            ("len", len.len(), false),
        ],
    )?;
    let total: u64 = len.iter().map(|&l| u64::from(l)).sum();
    if total != bytes.len() as u64 {
        return Err(DecodeError(format!(
            "raw_stacks: lengths add up to {total} bytes, but {} are stored",
            bytes.len()
        )));
    }
    if !charge::<RawStack>(n) || !charge::<u8>(bytes.len()) {
        return Ok(Vec::new());
    }
    let mut at = 0usize;
    Ok((0..n)
        .map(|i| {
            let end = at + len[i] as usize;
            let raw = RawStack {
                sample_id: u64::from(sample[i]),
                ip: ip[i],
                sp: sp[i],
                bp: bp[i],
                bytes: bytes[at..end].to_vec(),
            };
            at = end;
            raw
        })
        .collect())
}

fn allocs(a: fb::Allocs<'_>) -> Result<Vec<Alloc>, DecodeError> {
    let time = undelta(scalars(a.time_ns()));
    let (pid, tid, addr) = (scalars(a.pid()), scalars(a.tid()), scalars(a.addr()));
    let (size, stack_id, weight) = (scalars(a.size()), scalars(a.stack_id()), scalars(a.weight()));
    let space = scalars(a.space());
    let n = time.len();
    check_columns(
        "allocs",
        n,
        &[
            ("pid", pid.len(), false),
            ("tid", tid.len(), false),
            ("addr", addr.len(), false),
            ("size", size.len(), false),
            ("stack_id", stack_id.len(), false),
            ("weight", weight.len(), true),
            ("space", space.len(), true),
        ],
    )?;
    if !charge::<Alloc>(n) {
        return Ok(Vec::new());
    }
    Ok((0..n)
        .map(|i| Alloc {
            time_ns: time[i],
            pid: pid[i],
            tid: tid[i],
            addr: addr[i],
            size: size[i],
            stack_id: stack_id[i],
            weight: weight.get(i).copied().unwrap_or(1),
            space: MemSpace::from_code(space.get(i).copied().unwrap_or(0)),
        })
        .collect())
}

fn frees(f: fb::Frees<'_>) -> Result<Vec<Free>, DecodeError> {
    let time = undelta(scalars(f.time_ns()));
    let (pid, tid, addr) = (scalars(f.pid()), scalars(f.tid()), scalars(f.addr()));
    let space = scalars(f.space());
    let n = time.len();
    check_columns(
        "frees",
        n,
        &[
            ("pid", pid.len(), false),
            ("tid", tid.len(), false),
            ("addr", addr.len(), false),
            ("space", space.len(), true),
        ],
    )?;
    if !charge::<Free>(n) {
        return Ok(Vec::new());
    }
    Ok((0..n)
        .map(|i| Free {
            time_ns: time[i],
            pid: pid[i],
            tid: tid[i],
            addr: addr[i],
            space: MemSpace::from_code(space.get(i).copied().unwrap_or(0)),
        })
        .collect())
}

fn symbol_list(v: Option<Vector<'_, ForwardsUOffset<fb::Symbol<'_>>>>) -> Vec<Symbol> {
    tables(v, |s| Symbol { addr: s.addr(), size: s.size(), name: string(s.name()) })
}

fn symbol_blob(b: fb::SymbolBlob<'_>) -> SymbolBlob {
    SymbolBlob {
        build_id: byte_vec(b.build_id()),
        path: string(b.path()),
        content: if b.content() == fb::BlobContent::FullElf {
            BlobContent::FullElf
        } else {
            BlobContent::Symbols
        },
        symbols: symbol_list(b.symbols()),
        sections: tables(b.sections(), |s| Section {
            name: string(s.name()),
            addr: s.addr(),
            data: byte_vec(s.data()),
        }),
        elf: byte_vec(b.elf()),
        segments: tables(b.segments(), |s| Segment {
            file_offset: s.file_offset(),
            vaddr: s.vaddr(),
            file_size: s.file_size(),
            executable: s.executable(),
        }),
        entry: b.entry(),
    }
}

fn request(r: fb::RequestEvent<'_>) -> RequestEvent {
    RequestEvent {
        id: r.id(),
        time_ns: r.time_ns(),
        pid: r.pid(),
        tid: r.tid(),
        fd: r.fd(),
        direction: if r.direction() == fb::Direction::Write { Direction::Write } else { Direction::Read },
        length: r.length(),
        payload: byte_vec(r.payload()),
        op: match r.op() {
            fb::RequestOp::Accept => RequestOp::Accept,
            fb::RequestOp::Connect => RequestOp::Connect,
            fb::RequestOp::Close => RequestOp::Close,
            _ => RequestOp::Transfer,
        },
        start_ns: r.start_ns(),
    }
}

/// Decodes each entry of a vector of tables (or strings) with `f`, taking
/// the entries' own size from the budget first.
fn tables<'a, T: flatbuffers::Follow<'a> + 'a, U>(
    v: Option<Vector<'a, ForwardsUOffset<T>>>,
    f: impl Fn(T::Inner) -> U,
) -> Vec<U> {
    match v {
        Some(v) if charge::<U>(v.len()) => v.iter().map(f).collect(),
        _ => Vec::new(),
    }
}

/// Verifies and decodes a `Batch` flatbuffer, in at most [`DECODE_FACTOR`]
/// times its size of memory.
pub fn decode_batch(buf: &[u8]) -> Result<Batch, DecodeError> {
    let b = fb::root_as_batch_with_opts(&verifier_options(), buf)
        .map_err(|e| DecodeError(format!("flatbuffer verification failed: {e}")))?;
    let budget = Budget::for_payload(buf.len());
    let batch = decode_verified(b)?;
    budget.check(buf.len())?;
    Ok(batch)
}

fn decode_verified(b: fb::Batch<'_>) -> Result<Batch, DecodeError> {
    let kernel_symbols = b
        .kernel_symbols()
        .map(|k| KernelSymbols { symbols: symbol_list(k.symbols()), modules: strings(k.modules()) });
    if let Some(k) = &kernel_symbols {
        check_columns("kernel_symbols", k.symbols.len(), &[("modules", k.modules.len(), true)])?;
    }
    Ok(Batch {
        meta: b.meta().map(meta),
        processes: tables(b.processes(), process),
        threads: tables(b.threads(), |t| Thread {
            pid: t.pid(),
            tid: t.tid(),
            name: string(t.name()),
            seen_ns: t.seen_ns(),
        }),
        mappings: tables(b.mappings(), mapping),
        stacks: tables(b.stacks(), stack),
        samples: b.samples().map(samples).transpose()?.unwrap_or_default(),
        allocs: b.allocs().map(allocs).transpose()?.unwrap_or_default(),
        frees: b.frees().map(frees).transpose()?.unwrap_or_default(),
        lost: tables(b.lost(), |l| Lost {
            source: string(l.source()),
            reason: string(l.reason()),
            count: l.count(),
            from_ns: l.from_ns(),
            to_ns: l.to_ns(),
        }),
        symbols: tables(b.symbols(), symbol_blob),
        kernel_symbols,
        requests: tables(b.requests(), request),
        raw_stacks: b.raw_stacks().map(raw_stacks).transpose()?.unwrap_or_default(),
        py_code: tables(b.py_code(), py_code),
    })
}

/// Verifies and decodes the trailer index.
pub fn decode_index(buf: &[u8]) -> Result<Vec<IndexEntry>, DecodeError> {
    let idx = flatbuffers::root_with_opts::<fb::Index>(&verifier_options(), buf)
        .map_err(|e| DecodeError(format!("index verification failed: {e}")))?;
    let budget = Budget::for_payload(buf.len());
    let entries = tables(idx.entries(), |e| IndexEntry {
        offset: e.offset(),
        kind: e.kind(),
        first_ns: e.first_ns(),
        last_ns: e.last_ns(),
        records: e.records(),
    });
    budget.check(buf.len())?;
    Ok(entries)
}

#[cfg(test)]
mod tests {
    //! Hostile payloads that pass the flatbuffer verifier. The two captures
    //! in fixtures/hostile/ are written from these by `PROFCAP_BLESS=1 cargo
    //! test -p profcap-format hostile` and replayed by the analyzer's tests.
    use super::*;
    use crate::container::{ChunkHeader, ChunkKind, FileHeader, FLAG_ZSTD};

    /// A batch of `n` mappings that all point at one table with a
    /// `path_len`-byte path: about 4 bytes per entry, each decoding to a copy.
    fn mapping_fanout(n: usize, path_len: usize) -> Vec<u8> {
        let mut fbb = flatbuffers::FlatBufferBuilder::new();
        let path = fbb.create_string(&"p".repeat(path_len));
        let one = fb::Mapping::create(
            &mut fbb,
            &fb::MappingArgs { pid: 1, path: Some(path), ..Default::default() },
        );
        let all = fbb.create_vector(&vec![one; n]);
        let batch = fb::Batch::create(&mut fbb, &fb::BatchArgs { mappings: Some(all), ..Default::default() });
        fb::finish_batch_buffer(&mut fbb, batch);
        fbb.finished_data().to_vec()
    }

    /// A capture file of one batch chunk.
    fn capture(payload: &[u8], raw_len: usize, flags: u16) -> Vec<u8> {
        let mut out = FileHeader::current().to_bytes().to_vec();
        out.extend(ChunkHeader::encode(ChunkKind::Batch, flags, payload, raw_len, 1));
        out
    }

    fn fixture(name: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/hostile").join(name)
    }

    /// Writes the fixture when blessing; returns its committed bytes.
    fn bless_or_read(name: &str, make: impl FnOnce() -> Vec<u8>) -> Vec<u8> {
        let path = fixture(name);
        if std::env::var_os("PROFCAP_BLESS").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, make()).unwrap();
        }
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} (PROFCAP_BLESS=1 writes it)", path.display()))
    }

    #[test]
    fn hostile_fanout_of_one_table_is_refused_not_copied() {
        let payload = mapping_fanout(200_000, 4096);
        let started = std::time::Instant::now();
        let err = decode_batch(&payload).unwrap_err();
        assert!(err.0.contains("more than 16x"), "{err:?}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
        // A little sharing stays within the budget.
        assert_eq!(decode_batch(&mapping_fanout(100, 4096)).unwrap().mappings.len(), 100);
        let file = bless_or_read("mapping_fanout.cap", || {
            let z = zstd::bulk::compress(&payload, 19).unwrap();
            capture(&z, payload.len(), FLAG_ZSTD)
        });
        let mut reader =
            crate::CaptureReader::new(std::io::Cursor::new(&file), crate::ReadOptions::default()).unwrap();
        assert!(reader.by_ref().all(|b| b.is_ok_and(|b| b.mappings.is_empty())));
        let warned = reader.warnings().iter().any(|w| w.to_string().contains("more than 16x"));
        assert!(warned, "{:?}", reader.warnings());
    }

    #[test]
    fn hostile_decompression_bomb_is_refused_before_it_is_inflated() {
        let file = bless_or_read("zstd_bomb.cap", || {
            let zeros = vec![0u8; 64 << 20];
            capture(&zstd::bulk::compress(&zeros, 19).unwrap(), zeros.len(), FLAG_ZSTD)
        });
        assert!(file.len() < 64 << 10, "the bomb is small: {} bytes", file.len());
        let mut reader =
            crate::CaptureReader::new(std::io::Cursor::new(&file), crate::ReadOptions::default()).unwrap();
        assert_eq!(reader.by_ref().filter_map(Result::ok).count(), 0);
        let warned = reader.warnings().iter().any(|w| w.to_string().contains("decompression bomb"));
        assert!(warned, "{:?}", reader.warnings());
    }
}
