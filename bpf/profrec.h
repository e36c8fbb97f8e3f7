/* Event layouts shared by the BPF programs and profrec (crates/recorder/src/bpf.rs).
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
};

/* Why an event was dropped in the kernel; index of the `drops` map. */
enum drop_reason {
	DROP_RINGBUF_FULL = 0,
	DROP_TARGETS_FULL = 1,
	DROP_REASONS = 2,
};

struct profrec_event_header {
	__u32 type;
	__u32 pid;  /* tgid */
	__u32 tid;
	__u32 cpu;
	__u64 time_ns; /* CLOCK_MONOTONIC */
};

struct profrec_sample_event {
	struct profrec_event_header h;
	char comm[TASK_COMM_LEN];
	/* Bytes written by bpf_get_stack, or a negative errno. */
	__s32 kstack_bytes;
	__s32 ustack_bytes;
	__u64 kstack[MAX_STACK_DEPTH];
	__u64 ustack[MAX_STACK_DEPTH];
};

/* fork (new process, not thread), exec and process exit. */
struct profrec_proc_event {
	struct profrec_event_header h;
	__u32 ppid;
	__u32 pad;
	char comm[TASK_COMM_LEN];
};

#endif
