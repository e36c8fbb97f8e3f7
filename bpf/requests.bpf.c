// SPDX-License-Identifier: GPL-2.0 OR MIT
/* Socket request/response events for profrec --requests (trace-id joins).
 *
 * sys_exit sends one event for each socket syscall of a target that moves
 * request bytes (read/write and their vector and msg forms, recv/send) or
 * accepts or connects, with the result and the first `payload_bytes` bytes
 * transferred. The arguments are read at the exit, from the registers the
 * syscall was entered with (pt_regs; the kernel leaves them as they were),
 * so nothing is kept per thread between entry and exit and the entry path
 * costs nothing for every other syscall: sys_enter only handles close, whose
 * fd is gone by its exit. Only file descriptors that are sockets count: the
 * check reads the task's fd table. The entry time of a transfer is not
 * taken (enter_ns 0). Nothing is parsed here; profanalyze finds HTTP
 * messages and trace ids.
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

/* The part of an event before its payload. */
#define REQUEST_HEAD __builtin_offsetof(struct profrec_request_event, payload)

/* Ring room for an event whose payload will be `n` bytes: a reservation's
 * size must be known when the program is verified, so the smallest of these
 * that holds it. The event is built in the ring itself, not in a per-CPU
 * scratch copy: a syscall tracepoint's program can be preempted, and another
 * task's program on the same CPU would write over the copy. */
static __always_inline struct profrec_request_event *reserve_event(__u64 n, __u32 *room)
{
	if (n == 0) {
		*room = 0;
		return bpf_ringbuf_reserve(&events, REQUEST_HEAD, 0);
	}
	if (n <= 256) {
		*room = 256;
		return bpf_ringbuf_reserve(&events, REQUEST_HEAD + 256, 0);
	}
	if (n <= 1024) {
		*room = 1024;
		return bpf_ringbuf_reserve(&events, REQUEST_HEAD + 1024, 0);
	}
	*room = MAX_PAYLOAD;
	return bpf_ringbuf_reserve(&events, sizeof(struct profrec_request_event), 0);
}

/* Fills in an event's header and call. */
static __always_inline void fill_event(struct profrec_request_event *e, __u64 pid_tgid, int op, __u32 nr, __s32 fd,
				       long ret)
{
	e->h.type = EVENT_REQUEST;
	e->h.pid = pid_tgid >> 32;
	e->h.tid = (__u32)pid_tgid;
	e->h.cpu = bpf_get_smp_processor_id();
	e->h.time_ns = bpf_ktime_get_ns();
	e->enter_ns = 0;
	e->ret = ret;
	e->fd = fd;
	e->op = op;
	e->syscall_nr = nr;
	e->payload_len = 0;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
}

/* A close of a target's socket, sent as it starts (at its exit the fd is no
 * longer there to tell a socket from a file); ret 0: a failed close ends the
 * conversation all the same. */
SEC("tp_btf/sys_enter")
int BPF_PROG(on_sys_enter, struct pt_regs *regs, long id)
{
	if (id != NR_close)
		return 0;
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__s32 fd = (__s32)regs->di;
	if (!is_target(pid_tgid >> 32) || !is_socket(fd))
		return 0;
	__u32 room;
	struct profrec_request_event *e = reserve_event(0, &room);
	if (!e) {
		count_drop(DROP_RINGBUF_FULL);
		return 0;
	}
	fill_event(e, pid_tgid, REQ_CLOSE, NR_close, fd, 0);
	e->enter_ns = e->h.time_ns;
	bpf_ringbuf_submit(e, sample_wakeup_flag());
	return 0;
}

/* The user buffer and its length that a syscall's data went through (the
 * first segment only, for the vector forms). */
static __always_inline __u64 first_segment(__u32 nr, __u64 buf, __u64 *len)
{
	struct iovec iov = {};
	struct user_msghdr msg = {};

	switch (buf_kind_of(nr)) {
	case BUF_PLAIN:
		return buf;
	case BUF_MSGHDR:
		if (bpf_probe_read_user(&msg, sizeof(msg), (void *)buf))
			return 0;
		if (!msg.msg_iovlen || bpf_probe_read_user(&iov, sizeof(iov), msg.msg_iov))
			return 0;
		break;
	case BUF_IOVEC:
		if (bpf_probe_read_user(&iov, sizeof(iov), (void *)buf))
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
	/* Most syscalls are none of ours: decide that first, from the number. */
	__u32 nr = regs->orig_ax;
	int op = op_of(nr);
	if (op < 0 || op == REQ_CLOSE)
		return 0;
	/* Failed transfers and accepts carry nothing to join; a failed connect
	 * still starts a conversation attempt. */
	if (ret < 0 && (op == REQ_READ || op == REQ_WRITE || op == REQ_ACCEPT))
		return 0;
	if (ret == 0 && op == REQ_READ) /* end of stream: the peer closed */
		return 0;
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if (!is_target(pid_tgid >> 32))
		return 0;
	/* accept's argument is the listening socket; the new one is its result. */
	__s32 fd = op == REQ_ACCEPT ? (__s32)ret : (__s32)regs->di;
	if (!is_socket(fd))
		return 0;
	__u64 n = ret > 0 && (op == REQ_READ || op == REQ_WRITE) ? (__u64)ret : 0;
	if (n > payload_bytes)
		n = payload_bytes;
	__u64 buf = n ? first_segment(nr, regs->si, &n) : 0;
	if (!buf || n > MAX_PAYLOAD)
		n = 0;
	__u32 room;
	struct profrec_request_event *e = reserve_event(n, &room);
	if (!e) {
		count_drop(DROP_RINGBUF_FULL);
		return 0;
	}
	fill_event(e, pid_tgid, op, nr, fd, ret);
	/* The payload fits the room reserve_event took for it (n <= room
	 * said again for the verifier). */
	if (n > 0 && n <= room && n <= MAX_PAYLOAD && bpf_probe_read_user(e->payload, n, (void *)buf) == 0)
		e->payload_len = n;
	/* A request event wakes profrec like a sample does: on its timer, or when
	 * much is pending. */
	bpf_ringbuf_submit(e, sample_wakeup_flag());
	return 0;
}
