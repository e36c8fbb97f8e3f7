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
#include "python.h"

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

static __always_inline void fill(struct profrec_mem_event *e, __u64 id, __u32 op, __u64 addr, __u64 size,
				 __u64 old, __u64 weight, __s32 stack)
{
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
	__builtin_memset(&e->user, 0, sizeof(e->user));
	__builtin_memset(&e->py, 0, sizeof(e->py));
}

/* An allocation event of a Python process and its Python frames are built
 * here, then only the frames used go into the ring. `busy` keeps a program
 * that preempts one on the same CPU from writing into the same buffer: that
 * one goes without Python frames. */
struct mem_with_python {
	struct profrec_mem_event e;
	struct profrec_py_frame py[MAX_PY_FRAMES];
	__u32 busy;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mem_with_python);
} mem_scratch SEC(".maps");

static __always_inline bool send_python(__u64 id, __u32 op, __u64 addr, __u64 size, __u64 old, __u64 weight,
					__s32 stack)
{
	__u32 zero = 0, tgid = id >> 32;
	if (!bpf_map_lookup_elem(&py_procs, &tgid))
		return false;
	struct mem_with_python *b = bpf_map_lookup_elem(&mem_scratch, &zero);
	if (!b || b->busy)
		return false;
	b->busy = 1;
	fill(&b->e, id, op, addr, size, old, weight, stack);
	__u16 status = PY_NOT_PYTHON;
	__u32 n = py_walk(tgid, (__u32)id, b->py, &status);
	if (n > MAX_PY_FRAMES)
		n = MAX_PY_FRAMES;
	b->e.py.frames = n;
	b->e.py.slots = n;
	b->e.py.status = status;
	if (bpf_ringbuf_output(&events, b, sizeof(b->e) + n * sizeof(struct profrec_py_frame), sample_wakeup_flag()))
		count_drop(DROP_RINGBUF_FULL);
	b->busy = 0;
	return true;
}

static __always_inline void send(__u32 op, __u64 addr, __u64 size, __u64 old, __u64 weight, __s32 stack)
{
	__u64 id = bpf_get_current_pid_tgid();
	if (op != MEMEV_FREE && op != MEMEV_DEVICE_FREE && send_python(id, op, addr, size, old, weight, stack))
		return;
	struct profrec_mem_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);

	if (!e) {
		count_drop(DROP_RINGBUF_FULL);
		return;
	}
	fill(e, id, op, addr, size, old, weight, stack);
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

/* Sampled mode: profcap_sampled_alloc(void *ptr, size_t size, uint64_t weight).
 * The sampler calls it for picks the ring cannot take, and for every pick
 * in a Python process: those get the Python frames and, for DWARF
 * unwinding, the registers and stack bytes (picks are rare: a fixed-size
 * reservation in the ring is affordable). */
SEC("uprobe")
int BPF_UPROBE(sampled_alloc, __u64 ptr, __u64 size, __u64 weight)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;

	if (!is_target(tgid))
		return 0;
	/* Leave out this function's own frame; the sampler's wrapper frames
	 * below it are cut by profrec (strip_sampler_frames in session/events.rs). */
	__s32 stack = user_stack(ctx, 1 /* this function */);
	if (!bpf_map_lookup_elem(&py_procs, &tgid)) {
		send(MEMEV_ALLOC, ptr, size, 0, weight, stack);
		return 0;
	}
	__u32 room = stack_bytes > MAX_STACK_COPY ? MAX_STACK_COPY : stack_bytes & ~7U;
	__u32 py_room = MAX_PY_FRAMES * sizeof(struct profrec_py_frame);
	struct profrec_user_stack user;
	read_user_regs(&user);
	room = stack_room_for(stack_copy_len(&user, room), room);
	struct profrec_mem_event *e = bpf_ringbuf_reserve(&events, sizeof(*e) + py_room + room, 0);
	if (!e) {
		count_drop(DROP_RINGBUF_FULL);
		return 0;
	}
	fill(e, id, MEMEV_ALLOC, ptr, size, 0, weight, stack);
	__u16 status = PY_NOT_PYTHON;
	e->py.frames = py_walk(tgid, (__u32)id, (struct profrec_py_frame *)(e + 1), &status);
	e->py.status = status;
	e->py.slots = MAX_PY_FRAMES;
	e->user = user;
	copy_user_stack(&e->user, (__u8 *)(e + 1) + py_room, room);
	bpf_ringbuf_submit(e, sample_wakeup_flag());
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

/* GPU memory: uprobes on the CUDA driver API in libcuda.so.1. Allocation
 * functions write the device pointer (or, for cuMemCreate, the physical
 * allocation's handle) through their first argument and return a CUresult
 * (0 = success): the entry keeps where it goes, the return reads it. */
enum cuda_fn {
	CU_ALLOC = 0,       /* (CUdeviceptr *dptr, size_t bytesize, ...) */
	CU_ALLOC_PITCH = 1, /* (CUdeviceptr *dptr, size_t *pitch, size_t width, size_t height, unsigned elem) */
	CU_CREATE = 2,      /* (CUmemGenericAllocationHandle *handle, size_t size, const prop *, flags) */
};

struct cuda_call {
	__u32 depth; /* driver entry points that call each other count once */
	__u32 fn;
	__u64 out;
	__u64 size; /* CU_ALLOC_PITCH: the height */
	__u64 pitch_out;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct cuda_call);
} cuda_calls SEC(".maps");

SEC("uprobe")
int BPF_UPROBE(cuda_alloc_enter)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id;
	struct cuda_call *c = bpf_map_lookup_elem(&cuda_calls, &tid);

	if (c) {
		c->depth++;
		return 0;
	}
	if (!is_target(id >> 32))
		return 0;
	/* All arguments read first: a context load chosen by a branch is
	 * compiled into one the verifier refuses. */
	__u64 a1 = PT_REGS_PARM1(ctx), a2 = PT_REGS_PARM2(ctx), a4 = PT_REGS_PARM4(ctx);
	struct cuda_call n = { .depth = 1, .fn = bpf_get_attach_cookie(ctx), .out = a1, .size = a2 };
	if (n.fn == CU_ALLOC_PITCH) {
		n.pitch_out = a2;
		n.size = a4;
	}
	if (bpf_map_update_elem(&cuda_calls, &tid, &n, BPF_ANY))
		count_drop(DROP_MEM_CALLS_FULL);
	return 0;
}

SEC("uretprobe")
int BPF_URETPROBE(cuda_alloc_exit, long ret)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct cuda_call *c = bpf_map_lookup_elem(&cuda_calls, &tid);

	if (!c)
		return 0;
	if (c->depth > 1) {
		c->depth--;
		return 0;
	}
	struct cuda_call call = *c;
	bpf_map_delete_elem(&cuda_calls, &tid);
	if ((int)ret != 0) /* CUDA_SUCCESS is 0: nothing was allocated */
		return 0;
	__u64 ptr = 0, size = call.size;
	if (bpf_probe_read_user(&ptr, sizeof(ptr), (void *)call.out) || !ptr)
		return 0;
	if (call.fn == CU_ALLOC_PITCH) {
		__u64 pitch = 0;
		if (bpf_probe_read_user(&pitch, sizeof(pitch), (void *)call.pitch_out))
			return 0;
		size = pitch * call.size;
	}
	send(MEMEV_DEVICE_ALLOC, ptr, size, 0, 1, user_stack(ctx, 0));
	return 0;
}

/* cuMemFree_v2(dptr), cuMemFreeAsync(dptr, stream), cuMemRelease(handle). */
SEC("uprobe")
int BPF_UPROBE(cuda_free_enter, __u64 ptr)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id;
	if (!ptr || !is_target(id >> 32) || bpf_map_lookup_elem(&cuda_calls, &tid))
		return 0;
	send(MEMEV_DEVICE_FREE, ptr, 0, 0, 0, -1);
	return 0;
}

/* Go: runtime.mallocgc(size uintptr, typ *_type, needzero bool), under the
 * register ABI (Go 1.17+): size in RAX. Go moves goroutine stacks, so no
 * uretprobe: the allocation has no address (MEMEV_ALLOC_UNTRACKED) and the
 * garbage collector's frees are not seen. With go_sample_bytes set, one
 * allocation per that many bytes on average is sent (a per-thread byte
 * countdown from a random start), with a weight whose expected value makes
 * the bytes unbiased. */
const volatile __u64 go_sample_bytes = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __s64);
} go_left SEC(".maps");

static __always_inline __u64 random64(void)
{
	return ((__u64)bpf_get_prandom_u32() << 32) | bpf_get_prandom_u32();
}

SEC("uprobe")
int BPF_UPROBE(go_malloc)
{
	__u64 id = bpf_get_current_pid_tgid();
	if (!is_target(id >> 32))
		return 0;
	__u64 size = PT_REGS_RC(ctx); /* RAX: the first argument under ABIInternal */
	if (!size)
		return 0;
	__u64 weight = 1, rate = go_sample_bytes;
	if (rate) {
		__u32 tid = (__u32)id;
		__s64 *p = bpf_map_lookup_elem(&go_left, &tid);
		__s64 left = p ? *p : (__s64)(random64() % rate) + 1;
		left -= (__s64)size;
		if (left > 0) {
			if (bpf_map_update_elem(&go_left, &tid, &left, BPF_ANY))
				count_drop(DROP_MEM_CALLS_FULL);
			return 0;
		}
		/* The countdown crossed `crossings` multiples of the rate: this
		 * allocation stands for crossings * rate bytes, rounded to a whole
		 * number of allocations at random (up with the remainder's odds). */
		__u64 crossings = 1 + (__u64)(-left) / rate;
		left += (__s64)(crossings * rate);
		if (bpf_map_update_elem(&go_left, &tid, &left, BPF_ANY))
			count_drop(DROP_MEM_CALLS_FULL);
		__u64 bytes = crossings * rate;
		weight = bytes / size;
		if (random64() % size < bytes % size)
			weight++;
		if (!weight)
			return 0;
	}
	send(MEMEV_ALLOC_UNTRACKED, 0, size, 0, weight, user_stack(ctx, 0));
	return 0;
}

/* Java (HotSpot): AllocTracer::send_allocation_in_new_tlab(Klass*, HeapWord*
 * obj, size_t tlab_bytes, size_t alloc_bytes, JavaThread*) when a thread
 * takes a new TLAB, and send_allocation_outside_tlab(Klass*, HeapWord*,
 * size_t alloc_bytes, JavaThread*) for an object allocated outside one: the
 * points JFR's and async-profiler's allocation samples come from. The third
 * argument is what the sample stands for in both: the new TLAB's bytes (the
 * allocations it will hold), or the object's own. The class is read from
 * the Klass* by profrec. The GC frees: no address, as for Go. */
SEC("uprobe")
int BPF_UPROBE(java_alloc, __u64 klass, __u64 obj, __u64 bytes)
{
	__u64 id = bpf_get_current_pid_tgid();
	if (!klass || !bytes || !is_target(id >> 32))
		return 0;
	send(MEMEV_JAVA_ALLOC, 0, bytes, klass, 1, user_stack(ctx, 0));
	return 0;
}
