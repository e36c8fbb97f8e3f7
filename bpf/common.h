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

/* How far up each thread's stack its walks reach (tid -> the address just
 * past the highest byte the last complete unwind read, plus slack), set by
 * profrec from its unwinds: a copy stops there instead of copying
 * stack_bytes, the rest being the stack's unused top or other data.
 * Shared like `targets`; an entry goes when its thread exits. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u64);
} stack_tops SEC(".maps");

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

/* Bytes of user stack to copy per stack (--stack-bytes), at most MAX_STACK_COPY. */
const volatile __u32 stack_bytes = 16384;

/* The current task's user registers (saved at its entry into the kernel, so
 * right whether it was interrupted in user or kernel mode). */
static __always_inline void read_user_regs(struct profrec_user_stack *u)
{
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());

	u->ip = regs ? regs->ip : 0;
	u->sp = regs ? regs->sp : 0;
	u->bp = regs ? regs->bp : 0;
	u->len = 0;
	u->err = 0;
}

#define PAGE_SIZE_4K 4096

/* How many bytes copy_user_stack will copy from u->sp (at most room): no more
 * than stack_bytes, no further than the thread's known stack top
 * (`stack_tops`), never past the end of the stack's mapping. The end is found
 * by probing one byte at each page start the copy would cross (bpf_find_vma
 * would need the mmap lock, which a program that maps memory often holds). */
static __always_inline __u32 stack_copy_len(struct profrec_user_stack *u, __u32 room)
{
	__u64 sp = u->sp, n = stack_bytes;

	if (!sp)
		return 0;
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u64 *top = bpf_map_lookup_elem(&stack_tops, &tid);
	if (top && *top > sp && *top - sp < n)
		n = *top - sp;
	if (n > room)
		n = room;
	if (n > MAX_STACK_COPY)
		n = MAX_STACK_COPY;
	__u64 page = (sp & ~(__u64)(PAGE_SIZE_4K - 1)) + PAGE_SIZE_4K;
	for (int i = 0; i < MAX_STACK_COPY / PAGE_SIZE_4K; i++, page += PAGE_SIZE_4K) {
		__u8 probe;
		if (page >= sp + n)
			break;
		if (bpf_probe_read_user(&probe, 1, (void *)page)) {
			n = page - sp;
			break;
		}
	}
	if (n > room) /* again: the verifier lost track of n in the loop */
		n = room;
	if (n > MAX_STACK_COPY)
		n = MAX_STACK_COPY;
	return n & ~7ULL;
}

/* Copies the current task's user stack from u->sp into buf (room bytes), as
 * much as stack_copy_len says; returns the bytes copied, also in u->len. */
static __always_inline __u32 copy_user_stack(struct profrec_user_stack *u, __u8 *buf, __u32 room)
{
	__u64 n = stack_copy_len(u, room);

	if (n > room)
		n = room;
	if (n > MAX_STACK_COPY)
		n = MAX_STACK_COPY;
	/* A page not present ends the copy where it is: try half as much. */
	for (int i = 0; i < 3 && n; i++) {
		long r = bpf_probe_read_user(buf, n, (void *)u->sp);
		if (r == 0) {
			u->len = n;
			return n;
		}
		u->err = r;
		n = (n / 2) & ~7ULL;
	}
	return 0;
}

/* A ring reservation needs a size known when the program is verified, so an
 * event with stack bytes reserves the smallest of these that holds what
 * stack_copy_len says it will copy (at most `room`). A thread's stack cut at
 * its known top mostly fits the first; reserving stack_bytes (16 KiB) for
 * each event filled the ring a dozen times faster than the bytes did. */
#define STACK_ROOM_SMALL 2048
#define STACK_ROOM_MEDIUM 8192

static __always_inline __u32 stack_room_for(__u32 want, __u32 room)
{
	__u32 tier = want <= STACK_ROOM_SMALL ? STACK_ROOM_SMALL : want <= STACK_ROOM_MEDIUM ? STACK_ROOM_MEDIUM : room;
	return tier < room ? tier : room;
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
