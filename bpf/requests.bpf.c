// SPDX-License-Identifier: GPL-2.0 OR MIT
/* Socket request/response events for profrec --requests (trace-id joins).
 *
 * sys_enter remembers, per thread, the arguments of the socket syscalls that
 * move request bytes (read/write and their vector and msg forms, recv/send)
 * and of accept/connect/close; sys_exit sends one event with the result and
 * the first `payload_bytes` bytes that were transferred. Only file
 * descriptors that are sockets count: the check reads the task's fd table.
 * Nothing is parsed here; profanalyze finds HTTP messages and trace ids.
 *
 * `targets` and `events` (common.h) are the maps of oncpu.bpf.c. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "common.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* x86_64 syscall numbers. */
#define NR_read 0
#define NR_write 1
#define NR_close 3
#define NR_readv 19
#define NR_writev 20
#define NR_connect 42
#define NR_accept 43
#define NR_sendto 44
#define NR_recvfrom 45
#define NR_sendmsg 46
#define NR_recvmsg 47
#define NR_accept4 288

#define S_IFMT 00170000
#define S_IFSOCK 0140000
#define EINPROGRESS 115

/* Bytes of payload to copy (0 = none), at most MAX_PAYLOAD. */
const volatile __u32 payload_bytes = 1024;

/* How the buffer argument of a syscall is found. */
enum buf_kind { BUF_NONE, BUF_PLAIN, BUF_IOVEC, BUF_MSGHDR };

struct pending {
	__u64 enter_ns;
	__u64 buf; /* user pointer: buffer, iovec array or msghdr */
	__s32 fd;
	__u32 nr;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct pending);
} in_syscall SEC(".maps");

/* Too large for the BPF stack: the event is built here. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct profrec_request_event);
} scratch SEC(".maps");

static __always_inline bool is_socket(int fd)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds;
	struct file *f = NULL;

	if (!fdt || fd < 0 || (unsigned int)fd >= BPF_CORE_READ(fdt, max_fds))
		return false;
	fds = BPF_CORE_READ(fdt, fd);
	if (bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]) || !f)
		return false;
	return (BPF_CORE_READ(f, f_inode, i_mode) & S_IFMT) == S_IFSOCK;
}

static __always_inline int op_of(__u32 nr)
{
	switch (nr) {
	case NR_read:
	case NR_readv:
	case NR_recvfrom:
	case NR_recvmsg:
		return REQ_READ;
	case NR_write:
	case NR_writev:
	case NR_sendto:
	case NR_sendmsg:
		return REQ_WRITE;
	case NR_accept:
	case NR_accept4:
		return REQ_ACCEPT;
	case NR_connect:
		return REQ_CONNECT;
	case NR_close:
		return REQ_CLOSE;
	}
	return -1;
}

static __always_inline enum buf_kind buf_kind_of(__u32 nr)
{
	switch (nr) {
	case NR_read:
	case NR_write:
	case NR_recvfrom:
	case NR_sendto:
		return BUF_PLAIN;
	case NR_readv:
	case NR_writev:
		return BUF_IOVEC;
	case NR_recvmsg:
	case NR_sendmsg:
		return BUF_MSGHDR;
	}
	return BUF_NONE;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(on_sys_enter, struct pt_regs *regs, long id)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32, tid = (__u32)pid_tgid;

	if (id < 0 || op_of(id) < 0 || !is_target(tgid))
		return 0;
	struct pending p = {
		.enter_ns = bpf_ktime_get_ns(),
		.buf = regs->si,
		.fd = (__s32)regs->di,
		.nr = id,
	};
	/* accept's fd is the listening socket; the new one is its result. */
	if (op_of(id) != REQ_ACCEPT && !is_socket(p.fd))
		return 0;
	if (bpf_map_update_elem(&in_syscall, &tid, &p, BPF_ANY))
		count_drop(DROP_REQUEST_TABLE_FULL);
	return 0;
}

/* The user buffer and its length that a syscall's data went through (the
 * first segment only, for the vector forms). */
static __always_inline __u64 first_segment(struct pending *p, __u64 *len)
{
	struct iovec iov = {};
	struct user_msghdr msg = {};

	switch (buf_kind_of(p->nr)) {
	case BUF_PLAIN:
		return p->buf;
	case BUF_MSGHDR:
		if (bpf_probe_read_user(&msg, sizeof(msg), (void *)p->buf))
			return 0;
		if (!msg.msg_iovlen || bpf_probe_read_user(&iov, sizeof(iov), msg.msg_iov))
			return 0;
		break;
	case BUF_IOVEC:
		if (bpf_probe_read_user(&iov, sizeof(iov), (void *)p->buf))
			return 0;
		break;
	default:
		return 0;
	}
	if (iov.iov_len < *len)
		*len = iov.iov_len;
	return (__u64)iov.iov_base;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(on_sys_exit, struct pt_regs *regs, long ret)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid(), zero = 0;

	/* Most syscalls are none of ours: decide that without a map lookup. */
	if (op_of(regs->orig_ax) < 0)
		return 0;
	struct pending *p = bpf_map_lookup_elem(&in_syscall, &tid);

	if (!p)
		return 0;
	struct pending call = *p;
	bpf_map_delete_elem(&in_syscall, &tid);

	int op = op_of(call.nr);
	/* Failed transfers and accepts carry nothing to join; a failed close or
	 * connect still ends or starts a conversation attempt. */
	if (ret < 0 && (op == REQ_READ || op == REQ_WRITE || op == REQ_ACCEPT))
		return 0;
	if (ret == 0 && op == REQ_READ) /* end of stream: the peer closed */
		return 0;
	struct profrec_request_event *e = bpf_map_lookup_elem(&scratch, &zero);
	if (!e)
		return 0;
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	e->h.type = EVENT_REQUEST;
	e->h.pid = pid_tgid >> 32;
	e->h.tid = tid;
	e->h.cpu = bpf_get_smp_processor_id();
	e->h.time_ns = bpf_ktime_get_ns();
	e->enter_ns = call.enter_ns;
	e->ret = ret;
	e->fd = op == REQ_ACCEPT ? (__s32)ret : call.fd;
	e->op = op;
	e->syscall_nr = call.nr;
	e->payload_len = 0;
	bpf_get_current_comm(e->comm, sizeof(e->comm));

	__u64 n = ret > 0 && (op == REQ_READ || op == REQ_WRITE) ? (__u64)ret : 0;
	if (n > payload_bytes)
		n = payload_bytes;
	__u64 buf = n ? first_segment(&call, &n) : 0;
	__u32 len = 0;
	if (buf && n > 0 && n <= MAX_PAYLOAD && bpf_probe_read_user(e->payload, n, (void *)buf) == 0)
		len = n;
	e->payload_len = len;
	__u64 size = __builtin_offsetof(struct profrec_request_event, payload) + len;
	/* A request event wakes profrec like a sample does: on its timer, or when
	 * much is pending. */
	if (bpf_ringbuf_output(&events, e, size, sample_wakeup_flag()))
		count_drop(DROP_RINGBUF_FULL);
	return 0;
}
