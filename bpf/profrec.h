/* Event layouts shared by the BPF programs and profrec (crates/recorder/src/probes/wire.rs).
 * Every event starts with struct profrec_event_header; `type` says which struct follows.
 * Changing a layout means changing the Rust mirror in the same commit. */
#ifndef PROFREC_H
#define PROFREC_H

#define MAX_STACK_DEPTH 127
#define TASK_COMM_LEN 16

enum event_type {
	EVENT_SAMPLE = 1,
	EVENT_FORK = 2,
	EVENT_EXEC = 3,
	EVENT_EXIT = 4,
	EVENT_OFFCPU = 5,
	EVENT_REQUEST = 6,
	EVENT_MEM = 7,
};

/* Why an event was dropped in the kernel; index of the `drops` map. */
enum drop_reason {
	DROP_RINGBUF_FULL = 0,
	DROP_TARGETS_FULL = 1,
	DROP_OFFCPU_SHORT = 2,      /* blocked less than min_block_ns */
	DROP_OFFCPU_LONG = 3,       /* blocked more than max_block_ns */
	DROP_OFFCPU_NO_USER = 4,    /* no user frame (kernel thread, or unwinding failed) */
	DROP_OFFCPU_STACKMAP = 5,   /* stack map full or hash collision */
	DROP_OFFCPU_TABLE_FULL = 6, /* too many threads blocked at once */
	DROP_REQUEST_TABLE_FULL = 7, /* unused since socket syscalls keep no table (the number stays) */
	DROP_MEM_STACKMAP = 8,       /* allocation stack map full or collision */
	DROP_MEM_CALLS_FULL = 9,     /* too many threads in allocator calls at once */
	DROP_OFFCPU_UNSEEN = 10,     /* the switch back onto a CPU was missed and could not be recovered */
	DROP_REASONS = 11,
};

struct profrec_event_header {
	__u32 type;
	__u32 pid;  /* tgid */
	__u32 tid;
	__u32 cpu;
	__u64 time_ns; /* CLOCK_MONOTONIC */
};

/* The user registers an unwinder starts from, and how many bytes of the user
 * stack (from sp up) follow the event that carries this. profrec unwinds
 * them with the objects' .eh_frame/.debug_frame (DWARF), so frameless code
 * (most of Debian's libraries, -O2 builds) keeps its callers. The bytes are
 * sent right after the fixed part of the event. */
#define MAX_STACK_COPY 65536 /* largest --stack-bytes */
struct profrec_user_stack {
	__u64 ip;
	__u64 sp;
	__u64 bp;
	__u32 len; /* bytes of stack that follow the event (0 = none) */
	__s32 err; /* why fewer bytes than asked were copied: 0 or a negative errno */
};

/* Python frames (bpf/python.h). profrec describes each Python process it
 * records with one struct profrec_py_layout in the `py_procs` map: where the
 * interpreter's runtime state is and the offsets of the fields the walk
 * reads, for that process's CPython version. */
#define MAX_PY_FRAMES 128
#define PY_ABSENT 0xffff /* a field this version does not have */

struct profrec_py_layout {
	__u64 runtime;                /* address of _PyRuntime */
	__u16 runtime_interp_head;    /* _PyRuntime.interpreters.head */
	__u16 interp_threads_head;    /* PyInterpreterState: first thread state */
	__u16 tstate_next;
	__u16 tstate_thread_id;       /* pthread_self() of the thread (its fs base) */
	__u16 tstate_frame;           /* frame (<= 3.10), cframe (3.11, 3.12), current_frame (3.13) */
	__u16 cframe_current_frame;   /* PY_ABSENT: tstate_frame is the frame itself */
	__u16 frame_previous;
	__u16 frame_code;
	__u16 frame_instr;            /* f_lasti (int) or the instruction pointer */
	__u16 frame_is_entry;         /* 3.11: frame starts an eval-loop run; else PY_ABSENT */
	__u16 frame_owner;            /* 3.11+; owner 3 = an eval loop's entry (C stack) frame */
	__u8 instr_is_pointer;        /* frame_instr points into the code object */
	__u8 every_frame_entry;       /* <= 3.10: one eval-loop run per frame */
	/* A code object's tag: the hash of its name (str at code_name, hash at
	 * str_hash) XOR the 8 bytes at code_tag (co_firstlineno before 3.12,
	 * co_version, unique per code object, from 3.12). A code object freed
	 * and another made at its address (with its name string at the old
	 * one's address, as a loop of compile() does) reads as a different tag,
	 * so profrec never names it by the old one. */
	__u16 code_name;
	__u16 code_tag;
	__u16 str_hash;
	__u16 pad;
};

/* Why a Python walk ended (struct profrec_py_head.status). */
enum py_status {
	PY_NOT_PYTHON = 0, /* the process is not a known Python process */
	PY_OK = 1,         /* the walk reached the thread's first frame */
	PY_NO_THREAD = 2,  /* no thread state of this thread (not a Python thread, or not yet) */
	PY_READ_FAILED = 3, /* a read of the interpreter's memory failed mid-walk */
	PY_DEPTH = 4,      /* more than MAX_PY_FRAMES frames */
};

#define PY_FRAME_ENTRY 1 /* struct profrec_py_frame.flags */
struct profrec_py_frame {
	__u64 code;  /* address of the code object */
	__u64 tag;   /* see profrec_py_layout.code_name */
	__u32 instr; /* f_lasti, or instruction pointer - code (see instr_is_pointer) */
	__u32 flags;
};

struct profrec_py_head {
	__u16 frames; /* valid struct profrec_py_frame entries, leaf first */
	__u16 status; /* enum py_status */
	__u16 slots;  /* entries that follow the event (>= frames); the stack bytes come after them */
	__u16 pad;
};

/* Followed by py.frames Python frames, then user.len stack bytes. */
struct profrec_sample_event {
	struct profrec_event_header h;
	char comm[TASK_COMM_LEN];
	/* Bytes written by bpf_get_stack, or a negative errno. */
	__s32 kstack_bytes;
	__s32 ustack_bytes;
	__u64 kstack[MAX_STACK_DEPTH];
	__u64 ustack[MAX_STACK_DEPTH];
	struct profrec_user_stack user;
	struct profrec_py_head py;
};

/* fork (new process, not thread), exec and process exit. */
struct profrec_proc_event {
	struct profrec_event_header h;
	__u32 ppid;
	__u32 pad;
	char comm[TASK_COMM_LEN];
};

/* A thread ran again after blocking: it was off the CPU for `blocked_ns`,
 * with the stacks (ids in the `stacks` map) it had when it blocked. With
 * waker tracking, who woke it and from where. A block in a syscall is sent
 * when the syscall returns, with the user stack (unchanged while it was
 * blocked) copied after the event; other blocks are sent at once, without. */
struct profrec_offcpu_event {
	struct profrec_event_header h;
	__u64 blocked_ns;
	__s32 user_stack_id;
	__s32 kernel_stack_id;
	__u32 waker_pid;
	__u32 waker_tid;
	__s32 waker_user_stack_id;
	__s32 waker_kernel_stack_id;
	char comm[TASK_COMM_LEN];
	struct profrec_user_stack user;
	struct profrec_py_head py; /* py.slots Python frames, then the stack bytes, follow the event */
};

/* What a socket syscall did (struct profrec_request_event.op). */
enum request_op {
	REQ_READ = 0,    /* read, readv, recvfrom, recvmsg */
	REQ_WRITE = 1,   /* write, writev, sendto, sendmsg */
	REQ_ACCEPT = 2,  /* accept, accept4: fd is the new connection */
	REQ_CONNECT = 3, /* connect */
	REQ_CLOSE = 4,   /* close of a socket */
};

/* Largest payload prefix a request event can carry (--payload-bytes). */
#define MAX_PAYLOAD 4096

/* One socket syscall of a target thread, sent when it returns. h.time_ns is
 * the return; enter_ns the entry. Only payload_len bytes of payload are sent. */
struct profrec_request_event {
	struct profrec_event_header h;
	__u64 enter_ns;
	__s64 ret; /* bytes transferred, the accepted fd, or a negative errno */
	__s32 fd;
	__u32 op;
	__u32 syscall_nr;
	__u32 payload_len;
	char comm[TASK_COMM_LEN];
	__u8 payload[MAX_PAYLOAD];
};

/* Which allocator function a uprobe is on (its attach cookie). */
enum alloc_fn {
	FN_MALLOC = 0,
	FN_CALLOC = 1,
	FN_REALLOC = 2,
	FN_REALLOCARRAY = 3,
	FN_POSIX_MEMALIGN = 4,
	FN_ALIGNED_ALLOC = 5,
	FN_MEMALIGN = 6,
	FN_VALLOC = 7,
	FN_MMAP = 8, /* anonymous mappings only */
};

/* What a memory event is (struct profrec_mem_event.op). */
enum mem_op {
	MEMEV_ALLOC = 0,   /* addr, size, stack, weight */
	MEMEV_FREE = 1,    /* addr */
	MEMEV_REALLOC = 2, /* old_addr freed (if not 0), then addr allocated (if not 0) */
	MEMEV_DEVICE_ALLOC = 3, /* GPU device memory (CUDA): addr, size, stack */
	MEMEV_DEVICE_FREE = 4,  /* GPU device memory: addr */
	MEMEV_ALLOC_UNTRACKED = 5, /* size, stack, weight; no address (Go: the GC frees) */
	MEMEV_JAVA_ALLOC = 6, /* a JVM allocation sample: size, old_addr = its Klass*, stack */
};

/* Followed by py.slots Python frames (allocations of Python processes),
 * then user.len stack bytes (sampled allocations). */
struct profrec_mem_event {
	struct profrec_event_header h;
	__u32 op;
	__s32 stack_id; /* in the mem object's `stacks` map; negative = none */
	__u64 addr;
	__u64 size;
	__u64 old_addr;
	__u64 weight; /* allocations this one stands for (1 unless sampled) */
	struct profrec_user_stack user;
	struct profrec_py_head py;
};

#endif
