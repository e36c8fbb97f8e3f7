//! Owned records to flatbuffer bytes.

use flatbuffers::{FlatBufferBuilder, ForwardsUOffset, Vector, WIPOffset};

use crate::fb;
use crate::records::*;

type Fbb<'a> = FlatBufferBuilder<'a>;
type Strings<'a> = WIPOffset<Vector<'a, ForwardsUOffset<&'a str>>>;

fn opt_str<'a>(fbb: &mut Fbb<'a>, s: &str) -> Option<WIPOffset<&'a str>> {
    (!s.is_empty()).then(|| fbb.create_string(s))
}

fn strings<'a>(fbb: &mut Fbb<'a>, items: &[String]) -> Option<Strings<'a>> {
    if items.is_empty() {
        return None;
    }
    let offs: Vec<_> = items.iter().map(|s| fbb.create_string(s)).collect();
    Some(fbb.create_vector(&offs))
}

fn bytes<'a>(fbb: &mut Fbb<'a>, b: &[u8]) -> Option<WIPOffset<Vector<'a, u8>>> {
    (!b.is_empty()).then(|| fbb.create_vector(b))
}

fn column<'a, T, F>(fbb: &mut Fbb<'a>, len: usize, f: F) -> Option<WIPOffset<Vector<'a, T>>>
where
    T: flatbuffers::Push<Output = T> + Copy + 'a,
    F: Fn(usize) -> T,
{
    if len == 0 {
        return None;
    }
    let v: Vec<T> = (0..len).map(f).collect();
    Some(fbb.create_vector(&v))
}

/// The memory-space column, or none when every entry is host memory.
fn spaces<'a>(
    fbb: &mut Fbb<'a>,
    spaces: impl Iterator<Item = MemSpace> + Clone,
) -> Option<WIPOffset<Vector<'a, u8>>> {
    if spaces.clone().all(|s| s == MemSpace::Host) {
        return None;
    }
    let v: Vec<u8> = spaces.map(MemSpace::code).collect();
    Some(fbb.create_vector(&v))
}

/// Delta-encodes timestamps so equal spacing becomes a run of equal values.
fn deltas(times: impl Iterator<Item = u64>) -> Vec<u64> {
    let mut prev = 0u64;
    times
        .map(|t| {
            let d = t.wrapping_sub(prev);
            prev = t;
            d
        })
        .collect()
}

fn meta<'a>(fbb: &mut Fbb<'a>, m: &Meta) -> WIPOffset<fb::Meta<'a>> {
    let extra: Vec<_> = m
        .extra
        .iter()
        .map(|(k, v)| {
            let args = fb::KeyValueArgs { key: opt_str(fbb, k), value: opt_str(fbb, v) };
            fb::KeyValue::create(fbb, &args)
        })
        .collect();
    let args = fb::MetaArgs {
        hostname: opt_str(fbb, &m.hostname),
        kernel_release: opt_str(fbb, &m.kernel_release),
        boot_id: opt_str(fbb, &m.boot_id),
        clock: opt_str(fbb, &m.clock),
        start_wall_ns: m.start_wall_ns,
        start_mono_ns: m.start_mono_ns,
        end_wall_ns: m.end_wall_ns,
        end_mono_ns: m.end_mono_ns,
        sample_freq_hz: m.sample_freq_hz,
        events: strings(fbb, &m.events),
        recorder_version: opt_str(fbb, &m.recorder_version),
        command_line: strings(fbb, &m.command_line),
        page_size: m.page_size,
        extra: (!extra.is_empty()).then(|| fbb.create_vector(&extra)),
    };
    fb::Meta::create(fbb, &args)
}

fn process<'a>(fbb: &mut Fbb<'a>, p: &Process) -> WIPOffset<fb::Process<'a>> {
    let args = fb::ProcessArgs {
        pid: p.pid,
        ppid: p.ppid,
        start_ticks: p.start_ticks,
        comm: opt_str(fbb, &p.comm),
        exe: opt_str(fbb, &p.exe),
        cmdline: strings(fbb, &p.cmdline),
        pid_ns: p.pid_ns,
        mnt_ns: p.mnt_ns,
        cgroup: opt_str(fbb, &p.cgroup),
        seen_ns: p.seen_ns,
        exit_ns: p.exit_ns,
    };
    fb::Process::create(fbb, &args)
}

fn thread<'a>(fbb: &mut Fbb<'a>, t: &Thread) -> WIPOffset<fb::Thread<'a>> {
    let args = fb::ThreadArgs { pid: t.pid, tid: t.tid, name: opt_str(fbb, &t.name), seen_ns: t.seen_ns };
    fb::Thread::create(fbb, &args)
}

fn mapping<'a>(fbb: &mut Fbb<'a>, m: &Mapping) -> WIPOffset<fb::Mapping<'a>> {
    let args = fb::MappingArgs {
        pid: m.pid,
        start: m.start,
        end: m.end,
        file_offset: m.file_offset,
        path: opt_str(fbb, &m.path),
        build_id: bytes(fbb, &m.build_id),
        dev_major: m.dev_major,
        dev_minor: m.dev_minor,
        inode: m.inode,
        seen_ns: m.seen_ns,
        start_ticks: m.start_ticks,
    };
    fb::Mapping::create(fbb, &args)
}

fn stack<'a>(fbb: &mut Fbb<'a>, s: &Stack) -> WIPOffset<fb::Stack<'a>> {
    let args = fb::StackArgs {
        id: s.id,
        kernel: (!s.kernel.is_empty()).then(|| fbb.create_vector(&s.kernel)),
        user: (!s.user.is_empty()).then(|| fbb.create_vector(&s.user)),
        end: fb::StackEnd(s.end.code()),
        python: (!s.python.is_empty()).then(|| fbb.create_vector(&s.python)),
    };
    fb::Stack::create(fbb, &args)
}

fn py_code<'a>(fbb: &mut Fbb<'a>, c: &crate::python::PyCode) -> WIPOffset<fb::PyCode<'a>> {
    let args = fb::PyCodeArgs {
        id: c.id,
        name: opt_str(fbb, &c.name),
        qualname: opt_str(fbb, &c.qualname),
        filename: opt_str(fbb, &c.filename),
        first_line: c.first_line,
        line_format: fb::PyLineTable(c.line_format.code()),
        line_table: bytes(fbb, &c.line_table),
    };
    fb::PyCode::create(fbb, &args)
}

fn samples<'a>(fbb: &mut Fbb<'a>, s: &[Sample]) -> Option<WIPOffset<fb::Samples<'a>>> {
    if s.is_empty() {
        return None;
    }
    let times = deltas(s.iter().map(|x| x.time_ns));
    let any_id = s.iter().any(|x| x.id != 0);
    let any_waker = s.iter().any(|x| x.waker.is_some());
    let waker = |i: usize| s[i].waker.unwrap_or(Waker { pid: 0, tid: 0, stack_id: 0 });
    let args = fb::SamplesArgs {
        kind: column(fbb, s.len(), |i| s[i].kind.code()),
        unit: column(fbb, s.len(), |i| s[i].unit.code()),
        time_ns: Some(fbb.create_vector(&times)),
        pid: column(fbb, s.len(), |i| s[i].pid),
        tid: column(fbb, s.len(), |i| s[i].tid),
        cpu: column(fbb, s.len(), |i| s[i].cpu),
        stack_id: column(fbb, s.len(), |i| s[i].stack_id),
        value: column(fbb, s.len(), |i| s[i].value),
        id: if any_id { column(fbb, s.len(), |i| s[i].id) } else { None },
        waker_pid: if any_waker { column(fbb, s.len(), |i| waker(i).pid) } else { None },
        waker_tid: if any_waker { column(fbb, s.len(), |i| waker(i).tid) } else { None },
        waker_stack_id: if any_waker { column(fbb, s.len(), |i| waker(i).stack_id) } else { None },
    };
    Some(fb::Samples::create(fbb, &args))
}

fn raw_stacks<'a>(fbb: &mut Fbb<'a>, r: &[RawStack]) -> Option<WIPOffset<fb::RawStacks<'a>>> {
    if r.is_empty() {
        return None;
    }
    let all: Vec<u8> = r.iter().flat_map(|x| x.bytes.iter().copied()).collect();
    let args = fb::RawStacksArgs {
        sample: column(fbb, r.len(), |i| r[i].sample_id as u32),
        ip: column(fbb, r.len(), |i| r[i].ip),
        sp: column(fbb, r.len(), |i| r[i].sp),
        bp: column(fbb, r.len(), |i| r[i].bp),
        len: column(fbb, r.len(), |i| r[i].bytes.len() as u32),
        bytes: bytes(fbb, &all),
    };
    Some(fb::RawStacks::create(fbb, &args))
}

fn allocs<'a>(fbb: &mut Fbb<'a>, a: &[Alloc]) -> Option<WIPOffset<fb::Allocs<'a>>> {
    if a.is_empty() {
        return None;
    }
    let times = deltas(a.iter().map(|x| x.time_ns));
    let args = fb::AllocsArgs {
        time_ns: Some(fbb.create_vector(&times)),
        pid: column(fbb, a.len(), |i| a[i].pid),
        tid: column(fbb, a.len(), |i| a[i].tid),
        addr: column(fbb, a.len(), |i| a[i].addr),
        size: column(fbb, a.len(), |i| a[i].size),
        stack_id: column(fbb, a.len(), |i| a[i].stack_id),
        weight: column(fbb, a.len(), |i| a[i].weight),
        // Host-only batches (all but GPU programs') leave the column out.
        space: spaces(fbb, a.iter().map(|x| x.space)),
    };
    Some(fb::Allocs::create(fbb, &args))
}

fn frees<'a>(fbb: &mut Fbb<'a>, f: &[Free]) -> Option<WIPOffset<fb::Frees<'a>>> {
    if f.is_empty() {
        return None;
    }
    let times = deltas(f.iter().map(|x| x.time_ns));
    let args = fb::FreesArgs {
        time_ns: Some(fbb.create_vector(&times)),
        pid: column(fbb, f.len(), |i| f[i].pid),
        tid: column(fbb, f.len(), |i| f[i].tid),
        addr: column(fbb, f.len(), |i| f[i].addr),
        space: spaces(fbb, f.iter().map(|x| x.space)),
    };
    Some(fb::Frees::create(fbb, &args))
}

fn lost<'a>(fbb: &mut Fbb<'a>, l: &Lost) -> WIPOffset<fb::Lost<'a>> {
    let args = fb::LostArgs {
        source: opt_str(fbb, &l.source),
        reason: opt_str(fbb, &l.reason),
        count: l.count,
        from_ns: l.from_ns,
        to_ns: l.to_ns,
    };
    fb::Lost::create(fbb, &args)
}

fn symbol_list<'a>(
    fbb: &mut Fbb<'a>,
    syms: &[Symbol],
) -> Option<WIPOffset<Vector<'a, ForwardsUOffset<fb::Symbol<'a>>>>> {
    if syms.is_empty() {
        return None;
    }
    let offs: Vec<_> = syms
        .iter()
        .map(|s| {
            let args = fb::SymbolArgs { addr: s.addr, size: s.size, name: opt_str(fbb, &s.name) };
            fb::Symbol::create(fbb, &args)
        })
        .collect();
    Some(fbb.create_vector(&offs))
}

fn symbol_blob<'a>(fbb: &mut Fbb<'a>, b: &SymbolBlob) -> WIPOffset<fb::SymbolBlob<'a>> {
    let sections: Vec<_> = b
        .sections
        .iter()
        .map(|s| {
            let args =
                fb::SectionArgs { name: opt_str(fbb, &s.name), addr: s.addr, data: bytes(fbb, &s.data) };
            fb::Section::create(fbb, &args)
        })
        .collect();
    let segments: Vec<_> = b
        .segments
        .iter()
        .map(|s| {
            let args = fb::SegmentArgs {
                file_offset: s.file_offset,
                vaddr: s.vaddr,
                file_size: s.file_size,
                executable: s.executable,
            };
            fb::Segment::create(fbb, &args)
        })
        .collect();
    let args = fb::SymbolBlobArgs {
        build_id: bytes(fbb, &b.build_id),
        path: opt_str(fbb, &b.path),
        content: match b.content {
            BlobContent::Symbols => fb::BlobContent::Symbols,
            BlobContent::FullElf => fb::BlobContent::FullElf,
        },
        symbols: symbol_list(fbb, &b.symbols),
        sections: (!sections.is_empty()).then(|| fbb.create_vector(&sections)),
        elf: bytes(fbb, &b.elf),
        segments: (!segments.is_empty()).then(|| fbb.create_vector(&segments)),
        entry: b.entry,
    };
    fb::SymbolBlob::create(fbb, &args)
}

fn kernel_symbols<'a>(fbb: &mut Fbb<'a>, k: &KernelSymbols) -> WIPOffset<fb::KernelSymbols<'a>> {
    let args =
        fb::KernelSymbolsArgs { symbols: symbol_list(fbb, &k.symbols), modules: strings(fbb, &k.modules) };
    fb::KernelSymbols::create(fbb, &args)
}

fn request<'a>(fbb: &mut Fbb<'a>, r: &RequestEvent) -> WIPOffset<fb::RequestEvent<'a>> {
    let args = fb::RequestEventArgs {
        id: r.id,
        time_ns: r.time_ns,
        pid: r.pid,
        tid: r.tid,
        fd: r.fd,
        direction: match r.direction {
            Direction::Read => fb::Direction::Read,
            Direction::Write => fb::Direction::Write,
        },
        length: r.length,
        payload: bytes(fbb, &r.payload),
        op: match r.op {
            RequestOp::Transfer => fb::RequestOp::Transfer,
            RequestOp::Accept => fb::RequestOp::Accept,
            RequestOp::Connect => fb::RequestOp::Connect,
            RequestOp::Close => fb::RequestOp::Close,
        },
        start_ns: r.start_ns,
    };
    fb::RequestEvent::create(fbb, &args)
}

macro_rules! table_vec {
    ($fbb:expr, $items:expr, $f:ident) => {{
        let items = &$items;
        if items.is_empty() {
            None
        } else {
            let offs: Vec<_> = items.iter().map(|x| $f($fbb, x)).collect();
            Some($fbb.create_vector(&offs))
        }
    }};
}

/// Serializes a batch into a finished flatbuffer.
pub fn encode_batch(batch: &Batch) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::with_capacity(64 * 1024);
    let fbb = &mut fbb;
    let args = fb::BatchArgs {
        meta: batch.meta.as_ref().map(|m| meta(fbb, m)),
        processes: table_vec!(fbb, batch.processes, process),
        threads: table_vec!(fbb, batch.threads, thread),
        mappings: table_vec!(fbb, batch.mappings, mapping),
        stacks: table_vec!(fbb, batch.stacks, stack),
        samples: samples(fbb, &batch.samples),
        allocs: allocs(fbb, &batch.allocs),
        frees: frees(fbb, &batch.frees),
        lost: table_vec!(fbb, batch.lost, lost),
        symbols: table_vec!(fbb, batch.symbols, symbol_blob),
        kernel_symbols: batch.kernel_symbols.as_ref().map(|k| kernel_symbols(fbb, k)),
        requests: table_vec!(fbb, batch.requests, request),
        raw_stacks: raw_stacks(fbb, &batch.raw_stacks),
        py_code: table_vec!(fbb, batch.py_code, py_code),
    };
    let root = fb::Batch::create(fbb, &args);
    fb::finish_batch_buffer(fbb, root);
    fbb.finished_data().to_vec()
}

/// One entry of the trailer index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// File offset of the chunk header.
    pub offset: u64,
    /// Chunk kind code.
    pub kind: u16,
    /// Earliest event time in the chunk (0 if it has no timed events).
    pub first_ns: u64,
    /// Latest event time in the chunk.
    pub last_ns: u64,
    /// Records in the chunk.
    pub records: u32,
}

/// Serializes the trailer index.
pub fn encode_index(entries: &[IndexEntry]) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::with_capacity(entries.len() * 48 + 64);
    let offs: Vec<_> = entries
        .iter()
        .map(|e| {
            let args = fb::IndexEntryArgs {
                offset: e.offset,
                kind: e.kind,
                first_ns: e.first_ns,
                last_ns: e.last_ns,
                records: e.records,
            };
            fb::IndexEntry::create(&mut fbb, &args)
        })
        .collect();
    let entries = fbb.create_vector(&offs);
    let root = fb::Index::create(&mut fbb, &fb::IndexArgs { entries: Some(entries) });
    fbb.finish(root, None);
    fbb.finished_data().to_vec()
}
