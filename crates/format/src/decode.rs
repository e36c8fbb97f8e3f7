//! Verified flatbuffer bytes to owned records.
//!
//! Everything here runs on untrusted data: the verifier checks offsets and
//! bounds, and this module checks what the verifier cannot (column lengths).

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

fn string(s: Option<&str>) -> String {
    s.unwrap_or_default().to_owned()
}

fn strings(v: Option<Vector<'_, ForwardsUOffset<&str>>>) -> Vec<String> {
    v.map(|v| v.iter().map(str::to_owned).collect()).unwrap_or_default()
}

fn scalars<'a, T: flatbuffers::Follow<'a>>(v: Option<Vector<'a, T>>) -> Vec<T::Inner> {
    v.map(|v| v.iter().collect()).unwrap_or_default()
}

fn byte_vec(v: Option<Vector<'_, u8>>) -> Vec<u8> {
    v.map(|v| v.bytes().to_vec()).unwrap_or_default()
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
        extra: m
            .extra()
            .map(|v| v.iter().map(|kv| (string(kv.key()), string(kv.value()))).collect())
            .unwrap_or_default(),
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
        user_regs: scalars(s.user_regs()),
        user_stack: byte_vec(s.user_stack()),
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

fn allocs(a: fb::Allocs<'_>) -> Result<Vec<Alloc>, DecodeError> {
    let time = undelta(scalars(a.time_ns()));
    let (pid, tid, addr) = (scalars(a.pid()), scalars(a.tid()), scalars(a.addr()));
    let (size, stack_id, weight) = (scalars(a.size()), scalars(a.stack_id()), scalars(a.weight()));
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
        ],
    )?;
    Ok((0..n)
        .map(|i| Alloc {
            time_ns: time[i],
            pid: pid[i],
            tid: tid[i],
            addr: addr[i],
            size: size[i],
            stack_id: stack_id[i],
            weight: weight.get(i).copied().unwrap_or(1),
        })
        .collect())
}

fn frees(f: fb::Frees<'_>) -> Result<Vec<Free>, DecodeError> {
    let time = undelta(scalars(f.time_ns()));
    let (pid, tid, addr) = (scalars(f.pid()), scalars(f.tid()), scalars(f.addr()));
    let n = time.len();
    check_columns(
        "frees",
        n,
        &[("pid", pid.len(), false), ("tid", tid.len(), false), ("addr", addr.len(), false)],
    )?;
    Ok((0..n).map(|i| Free { time_ns: time[i], pid: pid[i], tid: tid[i], addr: addr[i] }).collect())
}

fn symbol_list(v: Option<Vector<'_, ForwardsUOffset<fb::Symbol<'_>>>>) -> Vec<Symbol> {
    v.map(|v| v.iter().map(|s| Symbol { addr: s.addr(), size: s.size(), name: string(s.name()) }).collect())
        .unwrap_or_default()
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
        sections: b
            .sections()
            .map(|v| {
                v.iter()
                    .map(|s| Section { name: string(s.name()), addr: s.addr(), data: byte_vec(s.data()) })
                    .collect()
            })
            .unwrap_or_default(),
        elf: byte_vec(b.elf()),
        segments: b
            .segments()
            .map(|v| {
                v.iter()
                    .map(|s| Segment {
                        file_offset: s.file_offset(),
                        vaddr: s.vaddr(),
                        file_size: s.file_size(),
                        executable: s.executable(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
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

fn tables<'a, T: flatbuffers::Follow<'a> + 'a, U>(
    v: Option<Vector<'a, ForwardsUOffset<T>>>,
    f: impl Fn(T::Inner) -> U,
) -> Vec<U> {
    v.map(|v| v.iter().map(f).collect()).unwrap_or_default()
}

/// Verifies and decodes a `Batch` flatbuffer.
pub fn decode_batch(buf: &[u8]) -> Result<Batch, DecodeError> {
    let b = fb::root_as_batch_with_opts(&verifier_options(), buf)
        .map_err(|e| DecodeError(format!("flatbuffer verification failed: {e}")))?;
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
        }),
        symbols: tables(b.symbols(), symbol_blob),
        kernel_symbols,
        requests: tables(b.requests(), request),
    })
}

/// Verifies and decodes the trailer index.
pub fn decode_index(buf: &[u8]) -> Result<Vec<IndexEntry>, DecodeError> {
    let idx = flatbuffers::root_with_opts::<fb::Index>(&verifier_options(), buf)
        .map_err(|e| DecodeError(format!("index verification failed: {e}")))?;
    Ok(tables(idx.entries(), |e| IndexEntry {
        offset: e.offset(),
        kind: e.kind(),
        first_ns: e.first_ns(),
        last_ns: e.last_ns(),
        records: e.records(),
    }))
}
