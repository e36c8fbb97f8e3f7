// SPDX-License-Identifier: GPL-2.0 OR MIT
/* Allocation and free events for profrec --mem.
 *
 * Attach mode: uprobes on the entry of the allocation functions (malloc,
 * calloc, realloc, ...; the attach cookie says which) remember the size per
 * thread; uretprobes send one event with the returned address and the stack
 * of the call site; free's entry sends a free event. Only the outermost
 * allocation call of a thread counts, so an allocator calling its own public
 * entry points (realloc(NULL, n) calling malloc) is not counted twice.
 *
 * Sampled mode (--preload): profcap's sampler library, preloaded into the
 * target, calls profcap_sampled_alloc(ptr, size, weight) for the few
 * allocations its byte sampler picks and profcap_sampled_free(ptr) for their
 * frees; uprobes on those two functions send the events.
 *
 * `targets` and `events` (common.h) are the maps of oncpu.bpf.c. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "common.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

#define MAP_ANONYMOUS 0x20

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 65536);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, MAX_STACK_DEPTH * sizeof(__u64));
} stacks SEC(".maps");

/* An allocation call in progress on a thread. */
struct in_alloc {
	__u32 depth; /* nested public allocator calls; only depth 1 counts */
	__u32 fn;
	__u64 size;
	__u64 arg; /* realloc: the old pointer; posix_memalign: where the result goes */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct in_alloc);
} calls SEC(".maps");

static __always_inline void send(__u32 op, __u64 addr, __u64 size, __u64 old, __u64 weight, __s32 stack)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct profrec_mem_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);

	if (!e) {
		count_drop(DROP_RINGBUF_FULL);
		return;
	}
	e->h.type = EVENT_MEM;
	e->h.pid = id >> 32;
	e->h.tid = (__u32)id;
	e->h.cpu = bpf_get_smp_processor_id();
	e->h.time_ns = bpf_ktime_get_ns();
	e->op = op;
	e->stack_id = stack;
	e->addr = addr;
	e->size = size;
	e->old_addr = old;
	e->weight = weight;
	bpf_ringbuf_submit(e, sample_wakeup_flag());
}

/* The user stack, its first `skip` frames left out (0-255). */
static __always_inline __s32 user_stack(struct pt_regs *ctx, __u64 skip)
{
	__s32 id = bpf_get_stackid(ctx, &stacks, BPF_F_USER_STACK | skip);
	if (id < 0 && id != -14 /* EFAULT: nothing to walk */)
		count_drop(DROP_MEM_STACKMAP);
	return id;
}

SEC("uprobe")
int BPF_UPROBE(alloc_enter)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct in_alloc *c = bpf_map_lookup_elem(&calls, &tid);

	if (c) { /* an allocator function called from inside another one */
		c->depth++;
		return 0;
	}
	if (!is_target(bpf_get_current_pid_tgid() >> 32))
		return 0;
	__u64 a1 = PT_REGS_PARM1(ctx), a2 = PT_REGS_PARM2(ctx), a3 = PT_REGS_PARM3(ctx);
	struct in_alloc n = { .depth = 1, .fn = bpf_get_attach_cookie(ctx) };
	switch (n.fn) {
	case FN_MALLOC:
	case FN_VALLOC:
		n.size = a1;
		break;
	case FN_CALLOC:
		n.size = a1 * a2;
		break;
	case FN_REALLOC:
		n.arg = a1;
		n.size = a2;
		break;
	case FN_REALLOCARRAY:
		n.arg = a1;
		n.size = a2 * a3;
		break;
	case FN_POSIX_MEMALIGN:
		n.arg = a1;
		n.size = a3;
		break;
	case FN_ALIGNED_ALLOC:
	case FN_MEMALIGN:
		n.size = a2;
		break;
	case FN_MMAP:
		/* mmap(addr, len, prot, flags, fd, off): anonymous memory is an
		 * allocation, a mapped file is not. (Inside malloc, this is
		 * nested and does not count.) */
		if (!(PT_REGS_PARM4(ctx) & MAP_ANONYMOUS))
			return 0;
		n.size = a2;
		break;
	default:
		return 0;
	}
	if (bpf_map_update_elem(&calls, &tid, &n, BPF_ANY))
		count_drop(DROP_MEM_CALLS_FULL);
	return 0;
}

SEC("uretprobe")
int BPF_URETPROBE(alloc_exit, long ret)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct in_alloc *c = bpf_map_lookup_elem(&calls, &tid);

	if (!c)
		return 0;
	if (c->depth > 1) {
		c->depth--;
		return 0;
	}
	struct in_alloc call = *c;
	bpf_map_delete_elem(&calls, &tid);

	__u64 addr = (__u64)ret;
	if (call.fn == FN_POSIX_MEMALIGN) {
		addr = 0;
		if (ret == 0)
			bpf_probe_read_user(&addr, sizeof(addr), (void *)call.arg);
	}
	if (call.fn == FN_REALLOC || call.fn == FN_REALLOCARRAY) {
		/* realloc(p, 0) may free p and return NULL; a failed realloc keeps p. */
		if (addr == 0 && call.size != 0)
			return 0;
		send(MEMEV_REALLOC, addr, call.size, call.arg, 1, addr ? user_stack(ctx, 0) : -1);
		return 0;
	}
	if (addr == 0 || (call.fn == FN_MMAP && ret == -1 /* MAP_FAILED */))
		return 0;
	send(MEMEV_ALLOC, addr, call.size, 0, 1, user_stack(ctx, 0));
	return 0;
}

SEC("uprobe")
int BPF_UPROBE(free_enter, __u64 ptr)
{
	if (!ptr || !is_target(bpf_get_current_pid_tgid() >> 32))
		return 0;
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	if (bpf_map_lookup_elem(&calls, &tid)) /* freed inside an allocator call: its own business */
		return 0;
	send(MEMEV_FREE, ptr, 0, 0, 0, -1);
	return 0;
}

/* Sampled mode: profcap_sampled_alloc(void *ptr, size_t size, uint64_t weight). */
SEC("uprobe")
int BPF_UPROBE(sampled_alloc, __u64 ptr, __u64 size, __u64 weight)
{
	if (!is_target(bpf_get_current_pid_tgid() >> 32))
		return 0;
	/* Leave out this function's own frame; the sampler's wrapper frames
	 * below it are cut by profrec (strip_sampler_frames in session/events.rs). */
	send(MEMEV_ALLOC, ptr, size, 0, weight, user_stack(ctx, 1 /* this function */));
	return 0;
}

/* Sampled mode: profcap_sampled_free(void *ptr). */
SEC("uprobe")
int BPF_UPROBE(sampled_free, __u64 ptr)
{
	if (!is_target(bpf_get_current_pid_tgid() >> 32))
		return 0;
	send(MEMEV_FREE, ptr, 0, 0, 0, -1);
	return 0;
}
