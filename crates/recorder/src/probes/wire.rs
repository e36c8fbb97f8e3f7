//! The events of `bpf/profrec.h` as they arrive on the ring buffer, decoded.

use profcap_format::unwind::Regs;

use crate::layout::c_string;

/// Mirrors `MAX_STACK_DEPTH` in bpf/profrec.h.
pub const MAX_STACK_DEPTH: usize = 127;
/// Mirrors `MAX_STACK_COPY`: the most user stack bytes an event carries.
pub const MAX_STACK_COPY: usize = 65536;
/// Mirrors `MAX_PAYLOAD`: the most payload bytes a request event carries.
pub const MAX_PAYLOAD: usize = 4096;
/// Mirrors `MAX_PY_FRAMES`: the most Python frames a sample carries.
pub const MAX_PY_FRAMES: usize = 128;
/// Mirrors `PY_ABSENT`: a field a CPython version does not have.
pub const PY_ABSENT: u16 = 0xffff;
pub use raw::PyLayout;

impl PyLayout {
    /// The bytes of `struct profrec_py_layout` (field by field: no padding
    /// is read; the layout test checks there is none to fill).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = self.runtime.to_ne_bytes().to_vec();
        for v in [
            self.runtime_interp_head,
            self.interp_threads_head,
            self.tstate_next,
            self.tstate_thread_id,
            self.tstate_frame,
            self.cframe_current_frame,
            self.frame_previous,
            self.frame_code,
            self.frame_instr,
            self.frame_is_entry,
            self.frame_owner,
        ] {
            b.extend_from_slice(&v.to_ne_bytes());
        }
        b.extend_from_slice(&[self.instr_is_pointer, self.every_frame_entry]);
        b.extend_from_slice(&self.code_name.to_ne_bytes());
        b.extend_from_slice(&self.code_tag.to_ne_bytes());
        b.extend_from_slice(&self.str_hash.to_ne_bytes());
        b.extend_from_slice(&self.pad.to_ne_bytes());
        b
    }
}
/// Mirrors `TASK_COMM_LEN`.
const COMM_LEN: usize = 16;
/// `enum event_type`.
const EVENT_SAMPLE: u32 = 1;
const EVENT_FORK: u32 = 2;
const EVENT_EXEC: u32 = 3;
const EVENT_EXIT: u32 = 4;
const EVENT_OFFCPU: u32 = 5;
const EVENT_REQUEST: u32 = 6;
const EVENT_MEM: u32 = 7;

/// `#[repr(C)]` mirrors of the structs in `bpf/profrec.h`, field for field;
/// `layout_matches_the_c_header` compiles the header and compares every
/// offset and size. Decoding copies one out of the record's bytes, so no
/// offset is computed by hand.
mod raw {
    use super::{COMM_LEN, MAX_STACK_DEPTH};

    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct Header {
        pub kind: u32,
        pub pid: u32,
        pub tid: u32,
        pub cpu: u32,
        pub time_ns: u64,
    }

    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct UserStack {
        pub ip: u64,
        pub sp: u64,
        pub bp: u64,
        pub len: u32,
        pub err: i32,
    }

    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct Sample {
        pub h: Header,
        pub comm: [u8; COMM_LEN],
        pub kstack_bytes: i32,
        pub ustack_bytes: i32,
        pub kstack: [u64; MAX_STACK_DEPTH],
        pub ustack: [u64; MAX_STACK_DEPTH],
        pub user: UserStack,
        pub py: PyHead,
    }

    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct PyHead {
        pub frames: u16,
        pub status: u16,
        pub slots: u16,
        pub pad: u16,
    }

    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct PyFrame {
        pub code: u64,
        pub tag: u64,
        pub instr: u32,
        pub flags: u32,
    }

    /// `struct profrec_py_layout`, written by profrec into `py_procs`.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct PyLayout {
        pub runtime: u64,
        pub runtime_interp_head: u16,
        pub interp_threads_head: u16,
        pub tstate_next: u16,
        pub tstate_thread_id: u16,
        pub tstate_frame: u16,
        pub cframe_current_frame: u16,
        pub frame_previous: u16,
        pub frame_code: u16,
        pub frame_instr: u16,
        pub frame_is_entry: u16,
        pub frame_owner: u16,
        pub instr_is_pointer: u8,
        pub every_frame_entry: u8,
        pub code_name: u16,
        pub code_tag: u16,
        pub str_hash: u16,
        pub pad: u16,
    }

    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct Proc {
        pub h: Header,
        pub ppid: u32,
        pub pad: u32,
        pub comm: [u8; COMM_LEN],
    }

    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct OffCpu {
        pub h: Header,
        pub blocked_ns: u64,
        pub user_stack_id: i32,
        pub kernel_stack_id: i32,
        pub waker_pid: u32,
        pub waker_tid: u32,
        pub waker_user_stack_id: i32,
        pub waker_kernel_stack_id: i32,
        pub comm: [u8; COMM_LEN],
        pub user: UserStack,
        pub py: PyHead,
    }

    /// `struct profrec_request_event` up to its payload, which follows.
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct Request {
        pub h: Header,
        pub enter_ns: u64,
        pub ret: i64,
        pub fd: i32,
        pub op: u32,
        pub syscall_nr: u32,
        pub payload_len: u32,
        pub comm: [u8; COMM_LEN],
    }

    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct Mem {
        pub h: Header,
        pub op: u32,
        pub stack_id: i32,
        pub addr: u64,
        pub size: u64,
        pub old_addr: u64,
        pub weight: u64,
        pub user: UserStack,
        pub py: PyHead,
    }

    pub(super) use crate::layout::read;
    use crate::layout::Plain;

    impl Plain for Header {}
    impl Plain for Sample {}
    impl Plain for PyFrame {}
    impl Plain for PyLayout {}
    impl Plain for Proc {}
    impl Plain for OffCpu {}
    impl Plain for Request {}
    impl Plain for Mem {}
}

/// Drop reasons, the index of the `drops` maps (enum drop_reason).
pub const DROP_REASONS: [&str; 11] = [
    "ring buffer full",
    "target table full",
    "filtered: blocked less than --min-block",
    "blocked more than an hour",
    "no user frame",
    "stack map full or collision",
    "too many threads blocked at once",
    "too many threads in socket syscalls at once", // no longer counted (older profrec)
    "allocation stack map full or collision",
    "too many threads in allocator calls at once",
    "off-CPU: the switch back onto a CPU was not seen and could not be recovered",
];

/// An event from the BPF side, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Sample {
        head: Header,
        comm: String,
        kernel: Vec<u64>,
        user: Vec<u64>,
        stack: UserStack,
        python: PyStack,
    },
    Fork {
        head: Header,
        ppid: u32,
    },
    Exec {
        head: Header,
        comm: String,
    },
    Exit {
        head: Header,
    },
    /// A thread ran again after blocking.
    OffCpu(OffCpu),
    /// A socket syscall of a target thread returned.
    Request(Request),
    /// An allocation, free or reallocation.
    Mem(MemEvent),
}

impl Event {
    /// When it happened (CLOCK_MONOTONIC ns); for off-CPU time, when the
    /// thread ran again (the event is sent then).
    pub fn time_ns(&self) -> u64 {
        match self {
            Event::Sample { head, .. }
            | Event::Fork { head, .. }
            | Event::Exec { head, .. }
            | Event::Exit { head } => head.time_ns,
            Event::OffCpu(e) => e.head.time_ns.saturating_add(e.blocked_ns),
            Event::Request(e) => e.head.time_ns,
            Event::Mem(e) => e.head.time_ns,
        }
    }
}

/// What a memory event is (`enum mem_op`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemOp {
    Alloc,
    Free,
    /// `old_addr` freed (if not 0), then `addr` allocated (if not 0).
    Realloc,
    /// An allocation without an address (Go's: the garbage collector frees).
    Untracked,
    /// A JVM allocation sample (a new TLAB, or an object outside one):
    /// `old_addr` is the object's `Klass*`; no address (the GC frees).
    Java,
}

/// An allocator call of a target thread (`struct profrec_mem_event`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemEvent {
    pub head: Header,
    pub op: MemOp,
    /// Host memory, or GPU device memory (the CUDA probes).
    pub space: profcap_format::MemSpace,
    /// Id in the memory stack map (negative: none).
    pub stack: i32,
    pub addr: u64,
    pub size: u64,
    pub old_addr: u64,
    pub weight: u64,
    /// Stack bytes (sampled allocations of Python processes; else none).
    pub user_stack: UserStack,
    /// The thread's Python frames (allocations of Python processes).
    pub python: PyStack,
}

/// What a socket syscall did (`enum request_op`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestOp {
    Read,
    Write,
    Accept,
    Connect,
    Close,
}

/// A socket syscall returned; `head.time_ns` is when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub head: Header,
    pub comm: String,
    pub enter_ns: u64,
    /// Bytes transferred, the accepted fd, or a negative errno.
    pub ret: i64,
    /// The socket (for accept: the new connection).
    pub fd: i32,
    pub op: RequestOp,
    pub syscall_nr: u32,
    /// The first bytes transferred (first buffer of a vector).
    pub payload: Vec<u8>,
}

/// A thread ran again after blocking; `head.time_ns` is when it blocked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffCpu {
    pub head: Header,
    pub comm: String,
    pub blocked_ns: u64,
    /// Stack ids in the off-CPU stack map (negative: none).
    pub user_stack: i32,
    pub kernel_stack: i32,
    pub waker: Option<WakerIds>,
    pub stack: UserStack,
    /// The thread's Python frames while it blocked (blocks in a syscall).
    pub python: PyStack,
}

/// Who woke a blocked thread, with stack ids in the off-CPU stack map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WakerIds {
    pub pid: u32,
    pub tid: u32,
    pub user_stack: i32,
    pub kernel_stack: i32,
}

/// The user registers when a stack was taken and the stack bytes copied
/// after the event (`struct profrec_user_stack`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserStack {
    pub regs: Regs,
    /// From `regs.sp` up (empty if none could be read).
    pub bytes: Vec<u8>,
    /// Why fewer bytes than asked came: 0 or a negative errno.
    pub err: i32,
}

impl UserStack {
    /// The registers of `u` and its `u.len` bytes at `at` in the record;
    /// `None` if the record is shorter than it says.
    fn from_raw(u: &raw::UserStack, record: &[u8], at: usize) -> Option<UserStack> {
        let len = (u.len as usize).min(MAX_STACK_COPY);
        Some(UserStack {
            regs: Regs { ip: u.ip, sp: u.sp, bp: u.bp },
            bytes: record.get(at..at.checked_add(len)?)?.to_vec(),
            err: u.err,
        })
    }
}

/// How a Python frame walk ended (`enum py_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PyStatus {
    /// Not a Python process profrec described to the kernel.
    #[default]
    NotPython,
    Ok,
    /// No thread state is this thread's (not a Python thread, or not yet).
    NoThread,
    /// A read of the interpreter's memory failed during the walk.
    ReadFailed,
    /// More than [`MAX_PY_FRAMES`] frames: the outermost are missing.
    Depth,
    /// A status this build does not know.
    Other(u16),
}

impl PyStatus {
    fn from_raw(v: u16) -> PyStatus {
        match v {
            0 => PyStatus::NotPython,
            1 => PyStatus::Ok,
            2 => PyStatus::NoThread,
            3 => PyStatus::ReadFailed,
            4 => PyStatus::Depth,
            v => PyStatus::Other(v),
        }
    }
}

/// One Python frame as the walk read it: the code object's address and the
/// raw instruction field (see `struct profrec_py_frame`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PyRawFrame {
    pub code: u64,
    /// Identifies the code object at `code` when the sample was taken.
    pub tag: u64,
    pub instr: u32,
    /// The last frame of one eval-loop run.
    pub entry: bool,
}

/// The Python frames of a sample, leaf first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PyStack {
    pub status: PyStatus,
    pub frames: Vec<PyRawFrame>,
}

impl PyStack {
    /// The `head.frames` frames at `at` in the record, and where the
    /// `head.slots` slots end; `None` if the record is shorter.
    fn from_raw(head: &raw::PyHead, record: &[u8], at: usize) -> Option<(PyStack, usize)> {
        let slots = usize::from(head.slots).min(MAX_PY_FRAMES);
        let n = usize::from(head.frames).min(slots);
        let size = std::mem::size_of::<raw::PyFrame>();
        record.get(at..at.checked_add(slots * size)?)?;
        let bytes = record.get(at..at + n * size)?;
        let frames = bytes
            .chunks_exact(size)
            .map(|c| {
                raw::read::<raw::PyFrame>(c).map(|f| PyRawFrame {
                    code: f.code,
                    tag: f.tag,
                    instr: f.instr,
                    entry: f.flags & 1 != 0,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some((PyStack { status: PyStatus::from_raw(head.status), frames }, at + slots * size))
    }
}

/// Common fields of every event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub pid: u32,
    pub tid: u32,
    pub cpu: u32,
    pub time_ns: u64,
}

/// Frames written by bpf_get_stack: `bytes` of `frames` (negative = error).
fn frames(frames: &[u64; MAX_STACK_DEPTH], bytes: i32) -> Vec<u64> {
    let n = usize::try_from(bytes).unwrap_or(0) / 8;
    frames[..n.min(MAX_STACK_DEPTH)].to_vec()
}

impl Header {
    fn from_raw(h: &raw::Header) -> Header {
        Header { pid: h.pid, tid: h.tid, cpu: h.cpu, time_ns: h.time_ns }
    }
}

impl Event {
    /// Decodes one ring-buffer record; `None` if it is malformed.
    pub fn parse(b: &[u8]) -> Option<Event> {
        let h = raw::read::<raw::Header>(b)?;
        let head = Header::from_raw(&h);
        Some(match h.kind {
            EVENT_SAMPLE => {
                let e = raw::read::<raw::Sample>(b)?;
                let (python, at) = PyStack::from_raw(&e.py, b, std::mem::size_of::<raw::Sample>())?;
                Event::Sample {
                    head,
                    comm: c_string(&e.comm),
                    kernel: frames(&e.kstack, e.kstack_bytes),
                    user: frames(&e.ustack, e.ustack_bytes),
                    stack: UserStack::from_raw(&e.user, b, at)?,
                    python,
                }
            }
            EVENT_FORK => Event::Fork { head, ppid: raw::read::<raw::Proc>(b)?.ppid },
            EVENT_EXEC => Event::Exec { head, comm: c_string(&raw::read::<raw::Proc>(b)?.comm) },
            EVENT_EXIT => Event::Exit { head },
            EVENT_OFFCPU => Event::OffCpu(OffCpu::from_raw(head, &raw::read::<raw::OffCpu>(b)?, b)?),
            EVENT_MEM => Event::Mem(MemEvent::from_raw(head, &raw::read::<raw::Mem>(b)?, b)?),
            EVENT_REQUEST => {
                let e = raw::read::<raw::Request>(b)?;
                let at = std::mem::size_of::<raw::Request>();
                let len = (e.payload_len as usize).min(MAX_PAYLOAD);
                Event::Request(Request::from_raw(head, &e, b.get(at..at + len)?)?)
            }
            _ => return None,
        })
    }
}

impl OffCpu {
    fn from_raw(head: Header, e: &raw::OffCpu, record: &[u8]) -> Option<OffCpu> {
        let (python, at) = PyStack::from_raw(&e.py, record, std::mem::size_of::<raw::OffCpu>())?;
        Some(OffCpu {
            head,
            blocked_ns: e.blocked_ns,
            user_stack: e.user_stack_id,
            kernel_stack: e.kernel_stack_id,
            waker: (e.waker_tid != 0).then_some(WakerIds {
                pid: e.waker_pid,
                tid: e.waker_tid,
                user_stack: e.waker_user_stack_id,
                kernel_stack: e.waker_kernel_stack_id,
            }),
            comm: c_string(&e.comm),
            stack: UserStack::from_raw(&e.user, record, at)?,
            python,
        })
    }
}

impl MemEvent {
    fn from_raw(head: Header, e: &raw::Mem, record: &[u8]) -> Option<MemEvent> {
        let (python, at) = PyStack::from_raw(&e.py, record, std::mem::size_of::<raw::Mem>())?;
        use profcap_format::MemSpace;
        let (op, space) = match e.op {
            0 => (MemOp::Alloc, MemSpace::Host),
            1 => (MemOp::Free, MemSpace::Host),
            2 => (MemOp::Realloc, MemSpace::Host),
            3 => (MemOp::Alloc, MemSpace::Device),
            4 => (MemOp::Free, MemSpace::Device),
            5 => (MemOp::Untracked, MemSpace::Host),
            6 => (MemOp::Java, MemSpace::Host),
            _ => return None,
        };
        Some(MemEvent {
            head,
            op,
            space,
            stack: e.stack_id,
            addr: e.addr,
            size: e.size,
            old_addr: e.old_addr,
            weight: e.weight,
            user_stack: UserStack::from_raw(&e.user, record, at)?,
            python,
        })
    }
}

impl Request {
    fn from_raw(head: Header, e: &raw::Request, payload: &[u8]) -> Option<Request> {
        let op = match e.op {
            0 => RequestOp::Read,
            1 => RequestOp::Write,
            2 => RequestOp::Accept,
            3 => RequestOp::Connect,
            4 => RequestOp::Close,
            _ => return None,
        };
        Some(Request {
            head,
            enter_ns: e.enter_ns,
            ret: e.ret,
            fd: e.fd,
            op,
            syscall_nr: e.syscall_nr,
            comm: c_string(&e.comm),
            payload: payload.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only the --min-block drop is a filter's choice; the rule that says so
    /// (the reason's prefix) is the format crate's, shared with the analyzer.
    #[test]
    fn only_filter_drops_read_as_filtered() {
        let filtered: Vec<&str> =
            DROP_REASONS.iter().copied().filter(|r| profcap_format::rules::is_filtered(r)).collect();
        assert_eq!(filtered, ["filtered: blocked less than --min-block"]);
    }

    /// Every field offset and struct size of the mirrors, as the C compiler
    /// lays out bpf/profrec.h (compiled here with gcc for this machine).
    #[test]
    fn layout_matches_the_c_header() {
        use std::mem::{offset_of, size_of};
        macro_rules! fields {
            ($c:literal, $t:ty, [$($f:ident),*]) => {
                vec![
                    (format!("sizeof {}", $c), size_of::<$t>()),
                    $((format!("{}.{}", $c, stringify!($f)), offset_of!($t, $f)),)*
                ]
            };
        }
        let rust: Vec<(String, usize)> = [
            fields!("profrec_event_header", raw::Header, [kind, pid, tid, cpu, time_ns]),
            fields!("profrec_user_stack", raw::UserStack, [ip, sp, bp, len, err]),
            fields!(
                "profrec_sample_event",
                raw::Sample,
                [h, comm, kstack_bytes, ustack_bytes, kstack, ustack, user, py]
            ),
            fields!("profrec_py_head", raw::PyHead, [frames, status, slots, pad]),
            fields!("profrec_py_frame", raw::PyFrame, [code, tag, instr, flags]),
            fields!(
                "profrec_py_layout",
                raw::PyLayout,
                [
                    runtime,
                    runtime_interp_head,
                    interp_threads_head,
                    tstate_next,
                    tstate_thread_id,
                    tstate_frame,
                    cframe_current_frame,
                    frame_previous,
                    frame_code,
                    frame_instr,
                    frame_is_entry,
                    frame_owner,
                    instr_is_pointer,
                    every_frame_entry,
                    code_name,
                    code_tag,
                    str_hash,
                    pad
                ]
            ),
            fields!("profrec_proc_event", raw::Proc, [h, ppid, pad, comm]),
            fields!(
                "profrec_offcpu_event",
                raw::OffCpu,
                [
                    h,
                    blocked_ns,
                    user_stack_id,
                    kernel_stack_id,
                    waker_pid,
                    waker_tid,
                    waker_user_stack_id,
                    waker_kernel_stack_id,
                    comm,
                    user,
                    py
                ]
            ),
            fields!(
                "profrec_request_event",
                raw::Request,
                [h, enter_ns, ret, fd, op, syscall_nr, payload_len, comm]
            ),
            fields!("profrec_mem_event", raw::Mem, [h, op, stack_id, addr, size, old_addr, weight, user, py]),
        ]
        .concat()
        .into_iter()
        // The request mirror stops where the payload starts: its size is checked below.
        .filter(|(name, _)| name != "sizeof profrec_request_event")
        .collect();
        // C names where they differ from the mirrors' (`type` is a Rust keyword).
        let c_field = |name: &str| name.replace("profrec_event_header.kind", "profrec_event_header.type");
        let mut c = String::from("#include <stdio.h>\n#include <stddef.h>\n#include <linux/types.h>\n");
        c.push_str(&format!(
            "#include \"{}/../../bpf/profrec.h\"\nint main(void) {{\n",
            env!("CARGO_MANIFEST_DIR")
        ));
        for (name, _) in &rust {
            let expr = match name.strip_prefix("sizeof ") {
                Some(s) => format!("sizeof(struct {s})"),
                None => {
                    let n = c_field(name);
                    let (s, f) = n.split_once('.').unwrap();
                    format!("offsetof(struct {s}, {f})")
                }
            };
            c.push_str(&format!("  printf(\"%zu\\n\", (size_t){expr});\n"));
        }
        c.push_str(&format!(
            "  printf(\"%zu\\n\", (size_t)sizeof(struct profrec_request_event) - {MAX_PAYLOAD});\n"
        ));
        c.push_str("  return 0;\n}\n");
        let dir = tempfile::tempdir().unwrap();
        let (src, exe) = (dir.path().join("layout.c"), dir.path().join("layout"));
        std::fs::write(&src, c).unwrap();
        let built = std::process::Command::new("gcc").arg("-o").arg(&exe).arg(&src).status().unwrap();
        assert!(built.success(), "gcc could not compile bpf/profrec.h");
        let out = std::process::Command::new(&exe).output().unwrap();
        let got: Vec<usize> =
            String::from_utf8(out.stdout).unwrap().lines().map(|l| l.parse().unwrap()).collect();
        for ((name, want), c_value) in rust.iter().zip(&got) {
            assert_eq!(c_value, want, "{name}: C says {c_value}, the Rust mirror {want}");
        }
        assert_eq!(PyLayout::default().to_bytes().len(), size_of::<PyLayout>(), "no padding");
        // The payload follows the mirrored head of the request event directly.
        assert_eq!(got[rust.len()], size_of::<raw::Request>());
    }

    fn bytes_of<T: crate::layout::Plain>(v: &T) -> Vec<u8> {
        // SAFETY: T is Plain (integers and arrays of them, no padding that
        // matters here: the test reads back only fields it set).
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }.to_vec()
    }

    #[test]
    fn parses_a_sample_with_its_stack_bytes_and_rejects_short_records() {
        let mut e = raw::Sample {
            h: raw::Header { kind: EVENT_SAMPLE, pid: 7, tid: 8, cpu: 0, time_ns: 99 },
            comm: [0; COMM_LEN],
            kstack_bytes: -14,
            ustack_bytes: 16,
            kstack: [0; MAX_STACK_DEPTH],
            ustack: [0; MAX_STACK_DEPTH],
            user: raw::UserStack { ip: 0x1000, sp: 0x7ffd_0000, bp: 0x7ffd_0040, len: 8, err: 0 },
            py: raw::PyHead { frames: 2, status: 1, slots: 2, pad: 0 },
        };
        e.comm[..4].copy_from_slice(b"demo");
        e.ustack[..2].copy_from_slice(&[0x1234, 0x5678]);
        let mut b = bytes_of(&e);
        assert_eq!(Event::parse(&b), None, "py.frames says 2 frames that are missing");
        b.extend(bytes_of(&raw::PyFrame { code: 0x7000, tag: 1, instr: 24, flags: 0 }));
        b.extend(bytes_of(&raw::PyFrame { code: 0x8000, tag: 2, instr: 6, flags: 1 }));
        assert_eq!(Event::parse(&b), None, "user.len says 8 stack bytes that are missing");
        b.extend_from_slice(&0xabcdu64.to_ne_bytes());
        let Some(Event::Sample { head, comm, kernel, user, stack, python }) = Event::parse(&b) else {
            panic!("not a sample")
        };
        assert_eq!(python.status, PyStatus::Ok);
        let want = [
            PyRawFrame { code: 0x7000, tag: 1, instr: 24, entry: false },
            PyRawFrame { code: 0x8000, tag: 2, instr: 6, entry: true },
        ];
        assert_eq!(python.frames, want);
        assert_eq!((head.pid, head.tid, head.time_ns), (7, 8, 99));
        assert_eq!(comm, "demo");
        assert!(kernel.is_empty(), "negative length means no kernel stack");
        assert_eq!(user, vec![0x1234, 0x5678]);
        assert_eq!(stack.regs, Regs { ip: 0x1000, sp: 0x7ffd_0000, bp: 0x7ffd_0040 });
        assert_eq!(stack.bytes, 0xabcdu64.to_ne_bytes().to_vec());
        assert_eq!(Event::parse(&b[..100]), None);
        assert_eq!(Event::parse(&[]), None);
    }

    #[test]
    fn a_request_payload_must_be_there_and_is_capped() {
        let e = raw::Request {
            h: raw::Header { kind: EVENT_REQUEST, pid: 1, tid: 1, cpu: 0, time_ns: 5 },
            enter_ns: 4,
            ret: 3,
            fd: 9,
            op: 1,
            syscall_nr: 1,
            payload_len: 3,
            comm: [0; COMM_LEN],
        };
        let mut b = bytes_of(&e);
        assert_eq!(Event::parse(&b), None, "payload_len says 3 bytes that are missing");
        b.extend_from_slice(b"GET");
        let Some(Event::Request(r)) = Event::parse(&b) else { panic!("not a request") };
        assert_eq!((r.fd, r.op, r.payload.as_slice()), (9, RequestOp::Write, &b"GET"[..]));
    }
}
