/* The CPython frame walk: which Python functions the current thread is in.
 *
 * As py-spy reads it from outside, but at sample time: _PyRuntime ->
 * first interpreter -> its thread states, the one whose thread_id is this
 * thread's pthread_self() (on x86-64 glibc, the fs base) -> its current frame
 * -> previous ... Each frame gives its code object's address and its
 * instruction; profrec reads each code object once (name, file, line table)
 * and the analyzer puts the frames in place of the eval loop's native frames.
 * The offsets come from profrec (struct profrec_py_layout), per process. */
#ifndef PROFREC_PYTHON_H
#define PROFREC_PYTHON_H

#include "profrec.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32); /* tgid */
	__type(value, struct profrec_py_layout);
} py_procs SEC(".maps");

/* The thread state last found for a thread (tid -> address), checked
 * against thread_id before use: the list walk runs once per thread. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u64);
} py_tstates SEC(".maps");

#define MAX_PY_THREADS 64
/* Steps of the frame walk: frames kept, plus the eval loops' entry frames
 * (3.12+) that are skipped. */
#define PY_WALK_STEPS (MAX_PY_FRAMES + 32)
#define PY_OWNED_BY_CSTACK 3

static __always_inline __u64 py_read_ptr(__u64 addr, __u8 *failed)
{
	__u64 v = 0;
	if (bpf_probe_read_user(&v, sizeof(v), (void *)addr)) {
		*failed = 1;
		return 0;
	}
	return v;
}

/* The loops run under bpf_loop: the verifier checks one step, not each of
 * up to 160 unrolled iterations. */
struct py_thread_search {
	__u64 ts;   /* the thread state looked at; 0 = end of the list */
	__u64 self; /* this thread's fs base */
	__u16 thread_id, next;
	__u8 found, failed;
};

static long py_thread_step(__u64 i, void *arg)
{
	struct py_thread_search *s = arg;

	if (!s->ts)
		return 1;
	if (py_read_ptr(s->ts + s->thread_id, &s->failed) == s->self) {
		s->found = 1;
		return 1;
	}
	s->ts = py_read_ptr(s->ts + s->next, &s->failed);
	return s->failed ? 1 : 0;
}

/* The thread state of the current thread, or 0. */
static __always_inline __u64 py_thread_state(const struct profrec_py_layout *l, __u32 tid, __u8 *failed)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct py_thread_search s = { .self = task->thread.fsbase, .thread_id = l->tstate_thread_id, .next = l->tstate_next };
	__u64 *cached = bpf_map_lookup_elem(&py_tstates, &tid);
	if (cached && *cached) {
		__u8 f = 0;
		if (py_read_ptr(*cached + l->tstate_thread_id, &f) == s.self && !f)
			return *cached;
	}
	__u64 interp = py_read_ptr(l->runtime + l->runtime_interp_head, failed);
	if (!interp)
		return 0;
	s.ts = py_read_ptr(interp + l->interp_threads_head, failed);
	bpf_loop(MAX_PY_THREADS, py_thread_step, &s, 0);
	if (!s.found)
		return 0;
	bpf_map_update_elem(&py_tstates, &tid, &s.ts, BPF_ANY);
	return s.ts;
}

struct py_walk_state {
	struct profrec_py_layout l;
	struct profrec_py_frame *out; /* MAX_PY_FRAMES entries */
	__u64 frame;
	__u32 n;
	__u16 status;
	__u8 failed;
};

static long py_walk_step(__u64 i, void *arg)
{
	struct py_walk_state *s = arg;
	__u64 frame = s->frame;

	if (!frame || s->failed)
		return 1;
	__u32 n = s->n;
	if (n >= MAX_PY_FRAMES) {
		s->status = PY_DEPTH;
		return 1;
	}
	if (s->l.frame_owner != PY_ABSENT) {
		__u8 owner = 0;
		if (bpf_probe_read_user(&owner, 1, (void *)(frame + s->l.frame_owner))) {
			s->failed = 1;
			return 1;
		}
		if (owner == PY_OWNED_BY_CSTACK) {
			/* An eval loop's entry frame: the frame before it ended one run. */
			if (n > 0 && n <= MAX_PY_FRAMES)
				s->out[n - 1].flags |= PY_FRAME_ENTRY;
			s->frame = py_read_ptr(frame + s->l.frame_previous, &s->failed);
			return 0;
		}
	}
	struct profrec_py_frame *f = &s->out[n];
	__u64 code = py_read_ptr(frame + s->l.frame_code, &s->failed);
	f->code = code;
	/* A tag read failing is not the walk failing: the frame is kept. */
	__u8 tag_failed = 0;
	__u64 name = py_read_ptr(code + s->l.code_name, &tag_failed);
	f->tag = py_read_ptr(name + s->l.str_hash, &tag_failed) ^ py_read_ptr(code + s->l.code_tag, &tag_failed);
	if (s->l.instr_is_pointer) {
		__u64 ip = py_read_ptr(frame + s->l.frame_instr, &s->failed);
		f->instr = (__u32)(ip - f->code);
	} else {
		__s32 lasti = 0;
		if (bpf_probe_read_user(&lasti, sizeof(lasti), (void *)(frame + s->l.frame_instr)))
			s->failed = 1;
		f->instr = (__u32)lasti;
	}
	f->flags = s->l.every_frame_entry ? PY_FRAME_ENTRY : 0;
	if (s->l.frame_is_entry != PY_ABSENT) {
		__u8 entry = 0;
		if (!bpf_probe_read_user(&entry, 1, (void *)(frame + s->l.frame_is_entry)) && entry)
			f->flags |= PY_FRAME_ENTRY;
	}
	s->n = n + 1;
	s->frame = py_read_ptr(frame + s->l.frame_previous, &s->failed);
	return 0;
}

/* Walks the current thread's Python frames into out (MAX_PY_FRAMES
 * entries, leaf first); returns how many, and why the walk ended in *status. */
static __always_inline __u32 py_walk(__u32 tgid, __u32 tid, struct profrec_py_frame *out, __u16 *status)
{
	const struct profrec_py_layout *l = bpf_map_lookup_elem(&py_procs, &tgid);
	struct py_walk_state s = { .out = out, .status = PY_OK };

	*status = PY_NOT_PYTHON;
	if (!l)
		return 0;
	__u64 ts = py_thread_state(l, tid, &s.failed);
	if (!ts) {
		*status = PY_NO_THREAD;
		return 0;
	}
	s.l = *l;
	s.frame = py_read_ptr(ts + l->tstate_frame, &s.failed);
	if (s.frame && l->cframe_current_frame != PY_ABSENT)
		s.frame = py_read_ptr(s.frame + l->cframe_current_frame, &s.failed);
	bpf_loop(PY_WALK_STEPS, py_walk_step, &s, 0);
	*status = s.failed ? PY_READ_FAILED : s.status;
	return s.n;
}

#endif
