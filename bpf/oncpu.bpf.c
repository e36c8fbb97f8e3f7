// SPDX-License-Identifier: GPL-2.0 OR MIT
/* On-CPU sampling and process tracking for profrec.
 *
 * on_cpu_sample runs on every tick of the software cpu-clock perf event and
 * sends the interrupted task's kernel and user stacks (frame-pointer unwound
 * by the kernel) to user space through one ring buffer. Nothing is aggregated
 * here: user space keeps every sample with its time, thread and CPU.
 * The sched tracepoints keep the set of target processes current (children
 * are followed) and tell user space when to re-read a process's mappings. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "common.h"
#include "python.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* Settings, written by profrec before load (filter_pids is in common.h). */
const volatile bool follow_children = true;

static __always_inline void fill_header(struct profrec_event_header *h, __u32 type, __u32 pid, __u32 tid)
{
	h->type = type;
	h->pid = pid;
	h->tid = tid;
	h->cpu = bpf_get_smp_processor_id();
	h->time_ns = bpf_ktime_get_ns();
}

/* The privilege level of the interrupted code: CPL 3 is user mode. The
 * 8-byte load covers cs and its padding (perf_event contexts only allow
 * 8-byte loads of registers). */
static __always_inline bool user_mode(struct bpf_perf_event_data *ctx)
{
	__u64 cs = *(__u64 *)((void *)ctx + __builtin_offsetof(struct bpf_perf_event_data, regs) +
			      __builtin_offsetof(struct pt_regs, cs));
	return (cs & 3) == 3;
}

/* A sample, its Python frames and its stack bytes are built here (too
 * large for the BPF stack), then only the used part goes into the ring. */
struct sample_with_stack {
	struct profrec_sample_event e;
	struct profrec_py_frame py[MAX_PY_FRAMES];
	__u8 stack[MAX_STACK_COPY];
};

/* One per CPU, indexed by CPU (a per-CPU array cannot hold 64 KiB values);
 * profrec sets max_entries to the number of possible CPUs. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sample_with_stack);
} sample_scratch SEC(".maps");

SEC("perf_event")
int on_cpu_sample(struct bpf_perf_event_data *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32, tid = (__u32)id;

	if (tid == 0) /* the idle task */
		return 0;
	if (!is_target(tgid))
		return 0;
	__u32 cpu = bpf_get_smp_processor_id();
	struct sample_with_stack *buf = bpf_map_lookup_elem(&sample_scratch, &cpu);
	if (!buf)
		return 0;
	struct profrec_sample_event *e = &buf->e;
	fill_header(&e->h, EVENT_SAMPLE, tgid, tid);
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	/* A sample taken in user mode has no kernel stack: skip the unwinder. */
	if (user_mode(ctx))
		e->kstack_bytes = 0;
	else
		e->kstack_bytes = bpf_get_stack(ctx, e->kstack, sizeof(e->kstack), 0);
	/* With stack bytes profrec unwinds those (and follows frame pointers
	 * through them where no rule covers an address): no walk here. */
	e->ustack_bytes = stack_bytes ? 0 : bpf_get_stack(ctx, e->ustack, sizeof(e->ustack), BPF_F_USER_STACK);
	read_user_regs(&e->user);
	__u16 py_status = PY_NOT_PYTHON;
	__u32 py_n = py_walk(tgid, tid, buf->py, &py_status);
	if (py_n > MAX_PY_FRAMES)
		py_n = MAX_PY_FRAMES;
	e->py.frames = py_n;
	e->py.slots = py_n;
	e->py.status = py_status;
	e->py.pad = 0;
	/* The stack bytes go right after the frames used. */
	__u8 *stack = (__u8 *)buf->py + py_n * sizeof(struct profrec_py_frame);
	__u64 n = copy_user_stack(&e->user, stack, MAX_STACK_COPY);
	if (n > MAX_STACK_COPY)
		n = MAX_STACK_COPY;
	__u64 size = sizeof(*e) + py_n * sizeof(struct profrec_py_frame) + n;
	if (size > sizeof(*buf))
		return 0;
	if (bpf_ringbuf_output(&events, buf, size, sample_wakeup_flag()))
		count_drop(DROP_RINGBUF_FULL);
	return 0;
}

static __always_inline void send_proc_event(__u32 type, __u32 pid, __u32 ppid)
{
	struct profrec_proc_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count_drop(DROP_RINGBUF_FULL);
		return;
	}
	fill_header(&e->h, type, pid, pid);
	e->ppid = ppid;
	e->pad = 0;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	/* Process events always wake profrec: it must read /proc while the
	 * process still exists. */
	bpf_ringbuf_submit(e, BPF_RB_FORCE_WAKEUP);
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(on_fork, struct task_struct *parent, struct task_struct *child)
{
	__u32 ptgid = BPF_CORE_READ(parent, tgid);
	__u32 cpid = BPF_CORE_READ(child, pid), ctgid = BPF_CORE_READ(child, tgid);

	if (cpid != ctgid) /* a new thread: its samples carry the tgid already */
		return 0;
	if (!is_target(ptgid))
		return 0;
	if (filter_pids) {
		if (!follow_children)
			return 0;
		__u8 one = 1;
		if (bpf_map_update_elem(&targets, &ctgid, &one, BPF_ANY))
			count_drop(DROP_TARGETS_FULL);
	}
	send_proc_event(EVENT_FORK, ctgid, ptgid);
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(on_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	__u32 tgid = BPF_CORE_READ(p, tgid);

	if (is_target(tgid))
		send_proc_event(EVENT_EXEC, tgid, 0);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(on_exit, struct task_struct *p)
{
	__u32 pid = BPF_CORE_READ(p, pid), tgid = BPF_CORE_READ(p, tgid);

	/* Each thread's end: its stack top must not serve a thread that reuses its tid. */
	bpf_map_delete_elem(&stack_tops, &pid);
	if (pid != tgid || !is_target(tgid)) /* only the group leader ends a process */
		return 0;
	send_proc_event(EVENT_EXIT, tgid, 0);
	if (filter_pids)
		bpf_map_delete_elem(&targets, &tgid);
	return 0;
}
