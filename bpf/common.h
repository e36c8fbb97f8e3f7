/* Maps, settings and helpers every profrec BPF object has. `events` and
 * `targets` are shared: profrec loads oncpu.bpf.c first and makes the other
 * objects use its two maps (bpf_map__reuse_fd). `drops` is per object. */
#ifndef PROFREC_COMMON_H
#define PROFREC_COMMON_H

#include "profrec.h"

/* false: every process (--all); true: only the tgids in `targets`. */
const volatile bool filter_pids = false;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 << 20);
} events SEC(".maps");

/* Target processes (tgid -> 1), filled by profrec and by on_fork. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u8);
} targets SEC(".maps");

/* Events dropped in the kernel, by enum drop_reason. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DROP_REASONS);
	__type(key, __u32);
	__type(value, __u64);
} drops SEC(".maps");

static __always_inline void count_drop(__u32 reason)
{
	__u64 *n = bpf_map_lookup_elem(&drops, &reason);
	if (n)
		*n += 1;
}

static __always_inline bool is_target(__u32 tgid)
{
	if (!filter_pids)
		return true;
	return bpf_map_lookup_elem(&targets, &tgid) != NULL;
}

/* Reads the current task's user stack pointer and the stack bytes above it. */
static __always_inline void read_leaf(struct profrec_leaf *l)
{
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	__u64 sp = regs ? regs->sp : 0;

	l->sp = sp;
	l->pad = 0;
	l->len = sp && bpf_probe_read_user(l->window, sizeof(l->window), (void *)sp) == 0 ? sizeof(l->window) : 0;
}

/* Samples do not wake profrec up (a wakeup per sample would preempt the very
 * workload being measured); it reads them on a timer, and is woken only when
 * this much is pending. */
#define WAKEUP_PENDING_BYTES (1 << 20)

static __always_inline __u64 sample_wakeup_flag(void)
{
	return bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= WAKEUP_PENDING_BYTES ? BPF_RB_FORCE_WAKEUP
										    : BPF_RB_NO_WAKEUP;
}

#endif
