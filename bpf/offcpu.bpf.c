// SPDX-License-Identifier: GPL-2.0 OR MIT
/* Off-CPU time for profrec, by the rules of DeepFlow's off-CPU profiler:
 * a target thread that leaves the CPU in TASK_INTERRUPTIBLE or
 * TASK_UNINTERRUPTIBLE has its block time and stacks remembered; when it is
 * switched in again, one event with the blocked nanoseconds is sent. Threads
 * of pid 0, stacks without a user frame, and blocks longer than max_block_ns
 * or shorter than min_block_ns are dropped and counted by reason. A block
 * whose switch-in the tracepoint never reported (this kernel skips one now
 * and then) is rebuilt at the thread's next switch-out (recover_block).
 *
 * Stacks go through a BPF stack map (deduplicated in the kernel) so that the
 * switch-out path stays cheap; profrec reads each new stack id once. For
 * DWARF unwinding the switch-out keeps only the user registers: a thread
 * blocked in a syscall has the same user stack until the syscall returns, so
 * its event waits in `pending` for sys_exit, which copies the stack bytes
 * (see on_sys_exit). Blocks outside syscalls (page faults) are sent at once
 * with the frame-pointer stack alone.
 *
 * `targets` and `events` (common.h) are the maps of oncpu.bpf.c: profrec
 * makes them the same kernel maps (bpf_map__reuse_fd) before loading. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "common.h"
#include "python.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

#define TASK_INTERRUPTIBLE 0x1
#define TASK_UNINTERRUPTIBLE 0x2
#define EFAULT 14 /* bpf_get_stackid: no frames to walk */
#define EINVAL 22
/* user_stack_id of a block whose user stack is copied at its sys_exit. */
#define DEFERRED_USER_STACK (-1000)

const volatile __u64 min_block_ns = 10000;
const volatile __u64 max_block_ns = 3600ULL * 1000000000ULL;
const volatile bool kernel_stacks = true;
const volatile bool track_wakers = false;
/* Tests only (RecordOptions::offcpu_test_miss_switch_ins): act as if every n-th switch-in
 * of a blocked thread were not seen, to exercise recover_block. */
const volatile __u32 test_miss_switch_ins = 0;
__u32 test_switch_ins;

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 32768);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, MAX_STACK_DEPTH * sizeof(__u64));
} stacks SEC(".maps");

struct blocked {
	__u64 since_ns;
	__s32 user_stack_id;
	__s32 kernel_stack_id;
	__u32 in_syscall;
	__u32 pad;
	struct profrec_user_stack user; /* registers only */
};

/* A thread's finished block in a syscall, until the syscall returns. */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct profrec_offcpu_event);
} pending SEC(".maps");

/* An event is built here before it is sent or kept in `pending` (sched_switch
 * cannot preempt itself, so one per CPU is enough). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct profrec_offcpu_event);
} event_scratch SEC(".maps");

/* Each target thread's current block (since_ns 0: none), in its task's own
 * storage: no allocation or hashing per switch, as a table by tid would need. */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct blocked);
} blocked SEC(".maps");

struct waker {
	__u32 pid;
	__u32 tid;
	__s32 user_stack_id;
	__s32 kernel_stack_id;
};

/* Who last woke each blocked thread, by tid (with track_wakers). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct waker);
} wakers SEC(".maps");

/* Switch-ins the tracepoint program never saw, whose block was rebuilt from
 * the scheduler's own arrival time (see recover_block). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} recovered SEC(".maps");

/* Sends an off-CPU event without stack bytes. */
static __always_inline void send_event(struct profrec_offcpu_event *e)
{
	if (bpf_ringbuf_output(&events, e, sizeof(*e), sample_wakeup_flag()))
		count_drop(DROP_RINGBUF_FULL);
}

/* Whether the current task entered the kernel through a syscall: its user
 * ip is right after a `syscall` instruction (0f 05). A page fault's ip is the
 * faulting instruction. */
static __always_inline __u32 in_syscall(__u64 ip)
{
	__u16 insn = 0;
	return ip > 2 && bpf_probe_read_user(&insn, sizeof(insn), (void *)(ip - 2)) == 0 && insn == 0x050f;
}

/* Sends the off-CPU event of `task`, blocked from b->since_ns to end_ns, or
 * counts why it is dropped. At its switch-in (`switching_in`) a block in a
 * syscall waits in `pending` for its stack bytes instead; a block rebuilt
 * later (recover_block) goes without: its syscall has returned already. */
static __always_inline void send_block(struct task_struct *task, __u32 tid, struct blocked *b, __u64 end_ns,
				       bool switching_in)
{
	__u64 delta = end_ns - b->since_ns;
	__u32 reason = DROP_REASONS;
	if (delta < min_block_ns)
		reason = DROP_OFFCPU_SHORT;
	else if (delta > max_block_ns)
		reason = DROP_OFFCPU_LONG;
	else if (b->user_stack_id < 0 && b->user_stack_id != DEFERRED_USER_STACK)
		reason = b->user_stack_id == -EFAULT || b->user_stack_id == -EINVAL ? DROP_OFFCPU_NO_USER
										      : DROP_OFFCPU_STACKMAP;
	if (reason != DROP_REASONS) {
		count_drop(reason);
		return;
	}
	__u32 zero = 0;
	struct profrec_offcpu_event *e = bpf_map_lookup_elem(&event_scratch, &zero);
	if (!e)
		return;
	e->h.type = EVENT_OFFCPU;
	e->h.pid = BPF_CORE_READ(task, tgid);
	e->h.tid = tid;
	e->h.cpu = bpf_get_smp_processor_id();
	e->h.time_ns = b->since_ns;
	e->blocked_ns = delta;
	e->user_stack_id = b->user_stack_id;
	e->kernel_stack_id = b->kernel_stack_id;
	e->user = b->user;
	__builtin_memset(&e->py, 0, sizeof(e->py));
	e->waker_pid = 0;
	e->waker_tid = 0;
	e->waker_user_stack_id = -1;
	e->waker_kernel_stack_id = -1;
	if (track_wakers) {
		struct waker *w = bpf_map_lookup_elem(&wakers, &tid);
		if (w) {
			e->waker_pid = w->pid;
			e->waker_tid = w->tid;
			e->waker_user_stack_id = w->user_stack_id;
			e->waker_kernel_stack_id = w->kernel_stack_id;
			bpf_map_delete_elem(&wakers, &tid);
		}
	}
	BPF_CORE_READ_STR_INTO(&e->comm, task, comm);
	if (switching_in && b->in_syscall && stack_bytes) {
		struct profrec_offcpu_event *p =
			bpf_task_storage_get(&pending, task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
		if (p) {
			if (p->h.type) /* the last one never saw its sys_exit */
				send_event(p);
			__builtin_memcpy(p, e, sizeof(*e));
			return;
		}
	}
	send_event(e);
}

/* `prev` is leaving the CPU, yet its last block is still in the table: the
 * program did not run for the switch that put it back on a CPU (measured on
 * this kernel: now and then an idle-to-task switch is not seen, and no
 * recursion miss is counted). The block ended when this run began: the fair
 * scheduler keeps the task's run time at that pick (prev_sum_exec_runtime)
 * beside its total, brought up to date by __schedule before the tracepoint,
 * so the difference is how long it has been on the CPU. */
static __always_inline void recover_block(struct task_struct *prev, __u32 tid, struct blocked *b, __u64 now)
{
	__u64 ran = BPF_CORE_READ(prev, se.sum_exec_runtime) - BPF_CORE_READ(prev, se.prev_sum_exec_runtime);
	if (ran >= now || now - ran <= b->since_ns) {
		count_drop(DROP_OFFCPU_UNSEEN);
		return;
	}
	send_block(prev, tid, b, now - ran, false);
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&recovered, &zero);
	if (n)
		*n += 1;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(on_switch, bool preempt, struct task_struct *prev, struct task_struct *next,
	     unsigned int prev_state)
{
	__u64 now = bpf_ktime_get_ns();
	__u32 prev_tid = BPF_CORE_READ(prev, pid), prev_tgid = BPF_CORE_READ(prev, tgid);

	if (prev_tid == 0)
		goto switch_in;
	/* Looked up for any thread: only targets have blocks, and a target that
	 * exits is no longer a target at its last switch-out. */
	struct blocked *b = bpf_task_storage_get(&blocked, prev, 0, 0);
	if (b && b->since_ns)
		recover_block(prev, prev_tid, b, now);
	/* prev is the current task here, so its stacks can be taken. */
	if ((prev_state & (TASK_INTERRUPTIBLE | TASK_UNINTERRUPTIBLE)) && is_target(prev_tgid)) {
		if (!b)
			b = bpf_task_storage_get(&blocked, prev, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
		if (!b) {
			count_drop(DROP_OFFCPU_TABLE_FULL);
			goto switch_in;
		}
		read_user_regs(&b->user);
		b->in_syscall = in_syscall(b->user.ip);
		/* A block in a syscall has its user stack copied when the syscall
		 * returns (on_sys_exit: the same stack, as the thread did not run),
		 * and unwound from those bytes: no frame-pointer walk now. */
		b->user_stack_id = b->in_syscall && stack_bytes ? DEFERRED_USER_STACK
							       : bpf_get_stackid(ctx, &stacks, BPF_F_USER_STACK);
		/* Skip this program's own frame and the tracepoint's
		 * (bpf_trace_run4) so kernel stacks start at __schedule. */
		b->kernel_stack_id = kernel_stacks ? bpf_get_stackid(ctx, &stacks, 2) : -1;
		b->pad = 0;
		b->since_ns = now;
	} else if (b) {
		b->since_ns = 0;
	}

switch_in:;
	__u32 next_tid = BPF_CORE_READ(next, pid);
	if (next_tid == 0)
		return 0;
	struct blocked *seen = bpf_task_storage_get(&blocked, next, 0, 0);
	if (!seen || seen->since_ns == 0)
		return 0;
	if (test_miss_switch_ins && ++test_switch_ins % test_miss_switch_ins == 0)
		return 0;
	send_block(next, next_tid, seen, now, true);
	seen->since_ns = 0;
	return 0;
}

static __always_inline void note_waker(void *ctx, struct task_struct *p)
{
	__u32 tid = BPF_CORE_READ(p, pid);
	struct blocked *b = bpf_task_storage_get(&blocked, p, 0, 0);
	if (!b || !b->since_ns)
		return;
	__u64 id = bpf_get_current_pid_tgid();
	struct waker w = {
		.pid = id >> 32,
		.tid = (__u32)id,
		.user_stack_id = bpf_get_stackid(ctx, &stacks, BPF_F_USER_STACK),
		.kernel_stack_id = kernel_stacks ? bpf_get_stackid(ctx, &stacks, 2) : -1,
	};
	bpf_map_update_elem(&wakers, &tid, &w, BPF_ANY);
}

/* sched_waking, not sched_wakeup: it fires in the waker's own context at the
 * start of every wakeup, while sched_wakeup may come later from the woken
 * thread's CPU (the wake list, processed by whatever runs there, often the
 * idle task), and was not seen at all for some of the wakeups whose
 * switch-in this kernel also skipped. */
SEC("tp_btf/sched_waking")
int BPF_PROG(on_waking, struct task_struct *p)
{
	if (track_wakers)
		note_waker(ctx, p);
	return 0;
}

/* A syscall returns: if it was a block whose event waits, copy the user
 * stack (as it was while blocked) and send it. Syscall tracepoints may be
 * preempted, so the event is built in the ring itself, sized by the
 * (load-time constant) stack_bytes. */
SEC("tp_btf/sys_exit")
int BPF_PROG(on_sys_exit, struct pt_regs *regs, long ret)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct profrec_offcpu_event *p = bpf_task_storage_get(&pending, task, 0, 0);

	if (!p || !p->h.type)
		return 0;
	__u32 room = stack_bytes > MAX_STACK_COPY ? MAX_STACK_COPY : stack_bytes & ~7U;
	/* A Python process's event has room for its Python frames (as they
	 * were while it blocked: it was in this syscall) before the stack. */
	__u32 tgid = p->h.pid;
	bool python = bpf_map_lookup_elem(&py_procs, &tgid) != NULL;
	__u32 py_room = python ? MAX_PY_FRAMES * sizeof(struct profrec_py_frame) : 0;
	struct profrec_user_stack user;
	read_user_regs(&user);
	room = stack_room_for(stack_copy_len(&user, room), room);
	struct profrec_offcpu_event *e = bpf_ringbuf_reserve(&events, sizeof(*e) + py_room + room, 0);
	if (!e) {
		count_drop(DROP_RINGBUF_FULL);
		p->h.type = 0;
		return 0;
	}
	__builtin_memcpy(e, p, sizeof(*p));
	p->h.type = 0;
	e->user = user;
	e->py.frames = 0;
	e->py.slots = 0;
	e->py.status = PY_NOT_PYTHON;
	e->py.pad = 0;
	if (python) {
		__u16 status = PY_NOT_PYTHON;
		struct profrec_py_frame *out = (struct profrec_py_frame *)(e + 1);
		e->py.frames = py_walk(tgid, e->h.tid, out, &status);
		e->py.status = status;
		e->py.slots = MAX_PY_FRAMES;
		copy_user_stack(&e->user, (__u8 *)(e + 1) + MAX_PY_FRAMES * sizeof(struct profrec_py_frame), room);
	} else {
		copy_user_stack(&e->user, (__u8 *)(e + 1), room);
	}
	bpf_ringbuf_submit(e, sample_wakeup_flag());
	return 0;
}

/* A thread that ends inside a syscall: its waiting block goes without stack bytes. */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(on_thread_exit, struct task_struct *p)
{
	struct profrec_offcpu_event *e = bpf_task_storage_get(&pending, p, 0, 0);

	if (e && e->h.type) {
		send_event(e);
		e->h.type = 0;
	}
	return 0;
}
