/* profcap's allocation sampler, preloaded into a target by
 * `profrec --mem --preload`. It wraps the glibc allocation functions and
 * picks allocations by bytes, like tcmalloc's heap sampler: on average one
 * allocation per PROFCAP_SAMPLE_BYTES bytes (default 2 MiB, as tcmalloc), at exponential
 * intervals, so an allocation of s bytes is picked with probability
 * 1 - exp(-s/R), and stands for weight = 1/p allocations, rounded up or
 * down at random (so totals are unbiased).
 *
 * Picked allocations and their frees, with the allocating stack (walked
 * here through frame pointers, and with PROFCAP_STACK_BYTES also the top of
 * the stack itself with the registers, which profrec unwinds with DWARF as
 * it does the BPF samples), go into a ring shared with profrec: a file
 * named by PROFCAP_RING that every process of the command maps. Nothing
 * enters the kernel for them. Without a ring (the file cannot be opened, e.g.
 * after a change of user), they are reported to profcap_sampled_alloc(ptr,
 * size, weight) and profcap_sampled_free(ptr) instead, where profrec has
 * uprobes (about 4 µs per picked allocation and its free). The allocations
 * the sampler does not pick cost a few instructions each.
 *
 * Picked blocks of up to 1 MiB live in an arena of their own, apart from
 * libc's heap, so that free knows them by address alone and libc's heap
 * keeps the shape it would have without the sampler. (Taking them from libc
 * page-aligned, as a first version did, scattered its heap: a tight
 * malloc/free loop ran 25% slower from that alone.)
 *
 * A wrapper adds a jump to every call, which on a tight malloc/free loop
 * costs more than the sampling itself (a wrapper that does nothing but jump
 * on made such a loop 5-8% slower). So the wrappers keep, per thread, a few
 * freed small blocks by size, as glibc's tcache does, and hand them out
 * again without calling into glibc at all: the common malloc/free pair then
 * costs less than glibc's own. The cache mirrors tcache's safeguards
 * (mangled links, a double-free check that aborts) and is emptied into glibc
 * when a thread exits. PROFCAP_SAMPLER_CACHE=0 turns it off.
 *
 * Built by crates/recorder/build.rs; embedded in profrec, which writes it to
 * a temporary file and sets LD_PRELOAD for the command it starts. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t size);
extern void __libc_free(void *p);
extern void *__libc_memalign(size_t align, size_t size);
extern void *__libc_valloc(size_t size);
extern void *__mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off);
extern int __munmap(void *addr, size_t len);

#define EXPORT __attribute__((visibility("default")))
/* The probe points. Never inlined or analysed away; they start with
 * `push %rbp`, an instruction the kernel's uprobes emulate cheaply. */
EXPORT __attribute__((noinline, noipa, used, optimize("O0"))) void profcap_sampled_alloc(void *ptr, size_t size, uint64_t weight)
{
	__asm__ volatile("" : : "r"(ptr), "r"(size), "r"(weight) : "memory");
}

EXPORT __attribute__((noinline, noipa, used, optimize("O0"))) void profcap_sampled_free(void *ptr)
{
	__asm__ volatile("" : : "r"(ptr) : "memory");
}

static double rate = 2 * 1024 * 1024;

#define TLS __thread __attribute__((tls_model("initial-exec")))

/* The ring shared with profrec (crates/recorder/src/mem.rs, SamplerRing,
 * reads it; keep the two layouts in step). A header page, then a data area
 * of a power-of-two size. Producers (any thread of any process of the
 * command) reserve space by compare-and-swap on `head`, write a record and
 * then publish it by storing its `state` last; profrec reads records in
 * order up to the first unpublished one, zeroes what it read, then moves
 * `tail`. A record that would not fit before the end of the area is
 * preceded by a padding record up to the end. */
#define RING_MAGIC 0x31676e6972706370ull /* "pcpring1" */
#define RING_HEADER 4096
#define RING_ALLOC 1
#define RING_FREE 2
#define RING_PAD 3
#define RING_MAX_FRAMES 64
#define RING_MAX_STACK 65536 /* largest PROFCAP_STACK_BYTES */
#define RING_HAS_STACK 1     /* ring_record.flags: a struct ring_stack follows the frames */
struct ring_header {
	uint64_t magic;
	uint64_t data_bytes;
	uint64_t head;
	uint64_t tail;
	uint64_t dropped;
};
struct ring_record {
	uint32_t len;   /* bytes, this header included; a multiple of 8 */
	uint32_t state; /* 0 while written, then RING_ALLOC/RING_FREE/RING_PAD */
	uint32_t pid;
	uint32_t tid;
	uint64_t time_ns; /* CLOCK_MONOTONIC, the clock of BPF's ktime */
	uint64_t ptr;
	uint64_t size;
	uint64_t weight;
	uint32_t nframes;
	uint32_t flags;    /* RING_HAS_STACK */
	uint64_t frames[]; /* return addresses, innermost first */
};
/* After the frames of an allocation, with RING_HAS_STACK: the registers of
 * copy_stack and `len` bytes of stack from its sp up. */
struct ring_stack {
	uint64_t ip;
	uint64_t sp;
	uint64_t bp;
	uint32_t len;
	uint32_t room; /* bytes reserved for the stack (len <= room) */
	uint8_t bytes[];
};
/* Stack bytes to copy per picked allocation (PROFCAP_STACK_BYTES; 0 = none). */
static uint32_t stack_bytes;

static struct ring_header *ring;
static char *ring_data;

static void open_ring(void)
{
	const char *path = getenv("PROFCAP_RING");
	if (!path)
		return;
	int fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return;
	struct stat st;
	void *m = MAP_FAILED;
	if (fstat(fd, &st) == 0 && st.st_size > RING_HEADER)
		m = __mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (m == MAP_FAILED)
		return;
	struct ring_header *h = m;
	uint64_t data = h->data_bytes;
	if (h->magic != RING_MAGIC || data == 0 || (data & (data - 1)) || data + RING_HEADER > (uint64_t)st.st_size) {
		__munmap(m, (size_t)st.st_size);
		return;
	}
	ring_data = (char *)m + RING_HEADER;
	ring = h;
}

static pid_t my_pid;
static TLS pid_t my_tid;
static TLS uintptr_t stack_hi;
static TLS int busy; /* inside the sampler's own bookkeeping: no picks */

/* In a forked child (its only thread is the one that forked). */
static void forget_ids(void)
{
	my_pid = getpid();
	my_tid = 0;
}

/* The top of this thread's stack, for a walk that never reads outside it. */
static uintptr_t thread_stack_hi(void)
{
	if (!stack_hi) {
		pthread_attr_t a;
		void *addr;
		size_t size;
		busy = 1; /* pthread_getattr_np allocates (and reads /proc for the main thread) */
		if (pthread_getattr_np(pthread_self(), &a) == 0) {
			if (pthread_attr_getstack(&a, &addr, &size) == 0)
				stack_hi = (uintptr_t)addr + size;
			pthread_attr_destroy(&a);
		}
		busy = 0;
		if (!stack_hi)
			stack_hi = 1; /* unknown: walk nothing */
	}
	return stack_hi;
}

/* Return addresses through the frame-pointer chain, innermost first, reading
 * only between this frame and the top of the thread's stack. */
__attribute__((noinline)) static uint32_t walk_stack(uint64_t *out, uint32_t max)
{
	uintptr_t fp = (uintptr_t)__builtin_frame_address(0), hi = thread_stack_hi();
	uint32_t n = 0;
	while (n < max && fp && (fp & 7) == 0 && fp + 16 <= hi) {
		uintptr_t next = ((uintptr_t *)fp)[0], ret = ((uintptr_t *)fp)[1];
		if (!ret)
			break;
		out[n++] = ret;
		if (next <= fp)
			break;
		fp = next;
	}
	return n;
}

/* Copies this thread's registers here and up to `room` bytes of its stack
 * from here to the top into `s`. The ip and sp are taken by one asm block,
 * so they belong to the same row of this function's unwind table. */
__attribute__((noinline)) static void copy_stack(struct ring_stack *s, uint32_t room, uintptr_t hi)
{
	uint64_t ip, sp, bp;
	__asm__ volatile("lea 0(%%rip), %0\n\tmov %%rsp, %1\n\tmov %%rbp, %2" : "=r"(ip), "=r"(sp), "=r"(bp));
	uint64_t n = hi > sp ? hi - sp : 0;
	if (n > room)
		n = room;
	n &= ~7ull;
	s->ip = ip;
	s->sp = sp;
	s->bp = bp;
	s->len = (uint32_t)n;
	s->room = room;
	memcpy(s->bytes, (const void *)(uintptr_t)sp, n);
}

/* Puts one record into the ring; false if there is no ring. A full ring
 * drops the record and counts it. */
static int ring_put(uint32_t type, void *ptr, uint64_t size, uint64_t weight)
{
	if (!ring)
		return 0;
	uint64_t frames[RING_MAX_FRAMES];
	uint32_t nframes = type == RING_ALLOC ? walk_stack(frames, RING_MAX_FRAMES) : 0;
	uint32_t len = (uint32_t)(sizeof(struct ring_record) + nframes * sizeof(uint64_t));
	/* Room for the stack from copy_stack's frame (below this one) up. */
	uint32_t room = 0;
	if (type == RING_ALLOC && stack_bytes) {
		uintptr_t here = (uintptr_t)__builtin_frame_address(0), hi = thread_stack_hi();
		uint64_t want = hi > here ? hi - here + 256 : 0;
		room = (uint32_t)((want < stack_bytes ? want : stack_bytes) & ~7ull);
		/* Stack bytes are worth less than the record itself: with the ring
		 * over a quarter full (picks faster than profrec drains), the
		 * record goes with its frame-pointer frames alone. */
		uint64_t used = __atomic_load_n(&ring->head, __ATOMIC_RELAXED) -
				__atomic_load_n(&ring->tail, __ATOMIC_RELAXED);
		if (used + room > ring->data_bytes / 4)
			room = 0;
		if (room)
			len += (uint32_t)sizeof(struct ring_stack) + room;
	}
	uint64_t data = ring->data_bytes, at, pad;
	uint64_t h = __atomic_load_n(&ring->head, __ATOMIC_RELAXED);
	for (;;) {
		uint64_t t = __atomic_load_n(&ring->tail, __ATOMIC_ACQUIRE);
		uint64_t pos = h & (data - 1);
		pad = data - pos < len ? data - pos : 0;
		if (h + pad + len - t > data) {
			__atomic_add_fetch(&ring->dropped, 1, __ATOMIC_RELAXED);
			return 1;
		}
		if (__atomic_compare_exchange_n(&ring->head, &h, h + pad + len, 1, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
			break;
	}
	if (pad) {
		struct ring_record *p = (struct ring_record *)(ring_data + (h & (data - 1)));
		p->len = (uint32_t)pad;
		__atomic_store_n(&p->state, RING_PAD, __ATOMIC_RELEASE);
		h += pad;
	}
	at = h & (data - 1);
	struct ring_record *r = (struct ring_record *)(ring_data + at);
	if (!my_tid)
		my_tid = (pid_t)syscall(SYS_gettid);
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	r->len = len;
	r->pid = (uint32_t)my_pid;
	r->tid = (uint32_t)my_tid;
	r->time_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
	r->ptr = (uint64_t)(uintptr_t)ptr;
	r->size = size;
	r->weight = weight;
	r->nframes = nframes;
	r->flags = room ? RING_HAS_STACK : 0;
	memcpy(r->frames, frames, nframes * sizeof(uint64_t));
	if (room)
		copy_stack((struct ring_stack *)&r->frames[nframes], room, thread_stack_hi());
	__atomic_store_n(&r->state, type, __ATOMIC_RELEASE);
	return 1;
}

/* A Python interpreter is in this process (set in init): its picked
 * allocations go to the probe on profcap_sampled_alloc, which walks the
 * thread's Python frames as well; the ring cannot carry those. */
static int python_process;

/* Reports a picked allocation or its free: into the ring, else to the probes. */
static void report_alloc(void *ptr, size_t size, uint64_t weight)
{
	if (python_process || !ring_put(RING_ALLOC, ptr, size, weight))
		profcap_sampled_alloc(ptr, size, weight);
}

static void report_free(void *ptr)
{
	if (!ring_put(RING_FREE, ptr, 0, 0))
		profcap_sampled_free(ptr);
}

static void cache_init(void);

__attribute__((constructor)) static void init(void)
{
	const char *v = getenv("PROFCAP_SAMPLE_BYTES");
	if (v) {
		double r = strtod(v, NULL);
		if (r >= 1)
			rate = r;
	}
	v = getenv("PROFCAP_STACK_BYTES");
	if (v) {
		unsigned long b = strtoul(v, NULL, 10);
		stack_bytes = (uint32_t)(b > RING_MAX_STACK ? RING_MAX_STACK : b) & ~7u;
	}
	my_pid = getpid();
	/* dlsym may allocate (its error message): no picks meanwhile, or the
	 * first would cache this thread's stack bounds from inside the loader. */
	busy = 1;
	python_process = dlsym(RTLD_DEFAULT, "_PyRuntime") != NULL;
	busy = 0;
	open_ring();
	pthread_atfork(NULL, NULL, forget_ids);
	cache_init();
}

/* Per thread: a xorshift generator and the bytes left before the next pick
 * (0 at thread start: the first allocation draws the first interval). */
static TLS uint64_t rng;
static TLS int64_t left;
static TLS int ready;

#define INLINE static inline __attribute__((always_inline))
#define COLD static __attribute__((noinline, cold))

static uint64_t next_random(void)
{
	if (!rng) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		rng = ((uint64_t)(uintptr_t)&rng * 0x9e3779b97f4a7c15ull) ^ (uint64_t)ts.tv_nsec ^ 1;
	}
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

/* Uniform in (0, 1). */
static double uniform(void) { return ((next_random() >> 11) + 0.5) / 9007199254740992.0; }

static int64_t draw_interval(void)
{
	double d = -log(uniform()) * rate;
	return d > 4e18 ? (int64_t)4e18 : (int64_t)d + 1;
}

/* The interval ran out at an allocation of `size` bytes (already
 * subtracted from `left`): whether to report it, and with what weight. */
static int pick_slow(size_t size, uint64_t *weight)
{
	if (!ready) {
		/* The thread's first allocation: draw the first interval. */
		ready = 1;
		left = draw_interval() - (int64_t)size;
		if (left > 0)
			return 0;
	}
	left = draw_interval();
	double p = size ? -expm1(-(double)size / rate) : 1.0;
	double w = p > 0 ? 1.0 / p : 1.0;
	uint64_t whole = (uint64_t)w;
	*weight = whole + (uniform() < w - (double)whole ? 1 : 0);
	if (*weight == 0)
		*weight = 1;
	return 1;
}

/* The sampled pointers still live: an open-addressing set under a lock, and
 * a lock-free counting filter in front of it so that frees of unsampled
 * memory (nearly all of them) never take the lock. */
#define FILTER_SIZE (1u << 16)
static uint8_t filter[FILTER_SIZE];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static uintptr_t *slots; /* 0 = empty, 1 = removed */
static size_t capacity, used;

static size_t hash(uintptr_t p) { return (size_t)((p >> 4) * 0x9e3779b97f4a7c15ull >> 20); }

static int insert_locked(uintptr_t p);

/* Rebuilds the set without its removed slots; twice as large only when the
 * live entries would fill a quarter of it, so that the removals of a long
 * run (each leaves a marker) never make it grow. */
static int rehash_locked(void)
{
	size_t old_cap = capacity, live = 0;
	uintptr_t *old = slots;
	for (size_t i = 0; i < old_cap; i++)
		live += old[i] > 1;
	size_t cap = old_cap ? old_cap : 4096;
	if ((live + 1) * 4 > cap)
		cap *= 2;
	uintptr_t *s = __libc_calloc(cap, sizeof(*s));
	if (!s)
		return -1;
	slots = s;
	capacity = cap;
	used = 0;
	for (size_t i = 0; i < old_cap; i++)
		if (old[i] > 1)
			insert_locked(old[i]);
	__libc_free(old);
	return 0;
}

/* `used` counts the slots that are not empty: live entries and removal
 * markers, both of which lengthen probes. */
static int insert_locked(uintptr_t p)
{
	if ((used + 1) * 2 > capacity && rehash_locked())
		return -1;
	for (size_t i = hash(p) & (capacity - 1);; i = (i + 1) & (capacity - 1))
		if (slots[i] <= 1) {
			used += slots[i] == 0;
			slots[i] = p;
			return 0;
		}
}

static int remove_locked(uintptr_t p)
{
	if (!capacity)
		return 0;
	for (size_t i = hash(p) & (capacity - 1), n = 0; n < capacity; i = (i + 1) & (capacity - 1), n++) {
		if (slots[i] == 0)
			return 0;
		if (slots[i] == p) {
			slots[i] = 1;
			return 1;
		}
	}
	return 0;
}

static void remember(void *ptr, size_t size, uint64_t weight)
{
	uintptr_t p = (uintptr_t)ptr;
	pthread_mutex_lock(&lock);
	int ok = insert_locked(p) == 0;
	if (ok)
		__atomic_add_fetch(&filter[hash(p) % FILTER_SIZE], 1, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&lock);
	/* If the set could not grow, the free will not be seen: still report
	 * the allocation (it then shows as never freed). */
	report_alloc(ptr, size, weight);
}

/* `ptr` may have been sampled; if so it is forgotten and its free reported. */
COLD void forget_slow(void *ptr)
{
	uintptr_t p = (uintptr_t)ptr;
	pthread_mutex_lock(&lock);
	int found = remove_locked(p);
	if (found)
		__atomic_sub_fetch(&filter[hash(p) % FILTER_SIZE], 1, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&lock);
	if (found)
		report_free(ptr);
}

/* Picked blocks too large for the arena (or when it is full) come from libc,
 * page-aligned (the waste, under a page per block, is small next to the
 * block), so that free can tell nearly every unsampled block from the pointer
 * alone, without touching memory. So do the program's own anonymous mmaps. */
#define SAMPLED_ALIGN 4096

INLINE int maybe_sampled(void *ptr)
{
	uintptr_t p = (uintptr_t)ptr;
	return __builtin_expect((p & (SAMPLED_ALIGN - 1)) == 0, 0) && ptr &&
	       __atomic_load_n(&filter[hash(p) % FILTER_SIZE], __ATOMIC_RELAXED);
}

/* The arena: address space reserved once (pages are committed only when
 * touched), cut into power-of-two slots of 32 bytes to 1 MiB, with a free
 * list per size; all under `lock`. A block is preceded by its header. */
#define ARENA_BYTES (4ull << 30)
#define ARENA_CLASSES 16 /* 32 << 15 = 1 MiB */
#define ARENA_MAX_ALIGN 4096
struct block_header {
	uint32_t class;
	uint32_t offset; /* from the slot's start to the block */
	uint64_t size;   /* as asked */
};
/* No user address is within ARENA_BYTES above a kernel address: until the
 * arena exists, in_arena() is false for every pointer, NULL included. */
static uintptr_t arena_lo = 0xffff800000000000ull;
static size_t arena_used;
static int arena_failed;
static void *arena_free[ARENA_CLASSES];

INLINE int in_arena(void *ptr)
{
	return __builtin_expect((uintptr_t)ptr - __atomic_load_n(&arena_lo, __ATOMIC_RELAXED) < ARENA_BYTES, 0);
}

INLINE struct block_header *header_of(void *ptr) { return (struct block_header *)ptr - 1; }

/* A block of `size` bytes aligned to `align` (a power of two), or NULL if it
 * does not fit; the caller holds `lock`. */
static void *arena_alloc_locked(size_t size, size_t align)
{
	if (align < 16)
		align = 16;
	if (align > ARENA_MAX_ALIGN || size > (32u << (ARENA_CLASSES - 1)))
		return NULL;
	size_t need = size + sizeof(struct block_header) + (align - 16);
	uint32_t class = 0;
	while ((32ull << class) < need)
		class++;
	if (class >= ARENA_CLASSES)
		return NULL;
	char *slot = arena_free[class];
	if (slot) {
		arena_free[class] = *(void **)slot;
	} else {
		if (arena_lo == 0xffff800000000000ull) {
			if (arena_failed)
				return NULL;
			void *a = __mmap(NULL, ARENA_BYTES, PROT_READ | PROT_WRITE,
					 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
			if (a == MAP_FAILED) {
				arena_failed = 1;
				return NULL;
			}
			__atomic_store_n(&arena_lo, (uintptr_t)a, __ATOMIC_RELAXED);
		}
		size_t bytes = 32ull << class;
		if (arena_used + bytes > ARENA_BYTES)
			return NULL;
		slot = (char *)arena_lo + arena_used;
		arena_used += bytes;
	}
	uintptr_t p = ((uintptr_t)slot + sizeof(struct block_header) + align - 1) & ~(uintptr_t)(align - 1);
	struct block_header *h = header_of((void *)p);
	h->class = class;
	h->offset = (uint32_t)(p - (uintptr_t)slot);
	h->size = size;
	return (void *)p;
}

/* Frees an arena block and reports its free. */
COLD void arena_release(void *ptr)
{
	struct block_header *h = header_of(ptr);
	char *slot = (char *)ptr - h->offset;
	uint32_t class = h->class;
	pthread_mutex_lock(&lock);
	if (class < ARENA_CLASSES) {
		*(void **)slot = arena_free[class];
		arena_free[class] = slot;
	}
	pthread_mutex_unlock(&lock);
	report_free(ptr);
}

INLINE void forget(void *ptr)
{
	if (maybe_sampled(ptr))
		forget_slow(ptr);
}

/* A picked block of `size` bytes (aligned to `align` if not 0), reported:
 * from the arena, or page-aligned from libc if it does not fit there. */
static void *sampled_block(size_t size, size_t align, uint64_t weight)
{
	pthread_mutex_lock(&lock);
	void *p = arena_alloc_locked(size, align);
	pthread_mutex_unlock(&lock);
	if (p) {
		report_alloc(p, size, weight);
		return p;
	}
	p = __libc_memalign(align > SAMPLED_ALIGN ? align : SAMPLED_ALIGN, size);
	if (p)
		remember(p, size, weight);
	return p;
}

/* The byte counter ran out: allocate `size` bytes (zeroed, or aligned, as
 * asked), from the arena and reported if the sampler picks it. */
COLD void *alloc_slow(size_t size, int zero, size_t align)
{
	uint64_t weight;
	if (busy || !pick_slow(size, &weight)) {
		if (align)
			return __libc_memalign(align, size);
		return zero ? __libc_calloc(1, size) : __libc_malloc(size);
	}
	void *p = sampled_block(size, align, weight);
	if (p && zero)
		memset(p, 0, size);
	return p;
}


/* The per-thread cache of freed small blocks (see the top of this file).
 * Blocks are glibc chunks, still allocated as far as glibc knows, filed by
 * chunk size (the size word before the block): sizes 32 to 1040 bytes, in
 * 16-byte steps, which is also the size glibc gives a request of n bytes. A
 * cached block holds the link to the next (mangled as glibc's safe-linking
 * does) and, in its second word, a per-process key that marks it as cached. */
#define CACHE_CLASSES 66 /* chunk size / 16: 2 .. 65 */
#define CACHE_MAX 8
#define CACHE_LARGEST 1024 /* requests up to this many bytes */
static TLS struct {
	void *head[CACHE_CLASSES];
	uint8_t count[CACHE_CLASSES];
	int registered; /* the thread-exit flush is set up */
} cache; /* one block of TLS: one offset to load */
static int cache_on; /* set by init() once the flush key exists */
static uint64_t cache_key;
static pthread_key_t cache_flush_key;

INLINE void *cache_link(void *at, void *next) { return (void *)(((uintptr_t)at >> 12) ^ (uintptr_t)next); }

/* Empties this thread's cache into glibc (at thread exit). */
static void cache_flush(void *unused)
{
	(void)unused;
	for (int c = 0; c < CACHE_CLASSES; c++) {
		while (cache.head[c]) {
			void **p = cache.head[c];
			cache.head[c] = cache_link(p, p[0]);
			p[1] = NULL;
			__libc_free(p);
		}
		cache.count[c] = 0;
	}
}

static void cache_init(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	cache_key = ((uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull) ^ (uint64_t)(uintptr_t)&ts ^ 0x5a5a5a5a5a5a5a5aull;
	const char *v = getenv("PROFCAP_SAMPLER_CACHE");
	if (!(v && strcmp(v, "0") == 0) && pthread_key_create(&cache_flush_key, cache_flush) == 0)
		cache_on = 1;
}

/* The block's key says it is cached: a double free, unless the key is there
 * by chance (then the block is not in the list). */
COLD void cache_check_double_free(void *ptr, size_t c)
{
	for (void **p = cache.head[c]; p; p = cache_link(p, p[0]))
		if ((void *)p == ptr) {
			static const char msg[] = "free(): double free detected (profcap sampler cache)\n";
			if (write(2, msg, sizeof(msg) - 1) < 0)
				abort();
			abort();
		}
}

COLD void cache_register(void)
{
	cache.registered = 1;
	pthread_setspecific(cache_flush_key, &cache.registered);
}

/* A block for a request of `size` bytes from the cache, or NULL. */
INLINE void *cache_take(size_t size)
{
	if (size > CACHE_LARGEST || !cache_on)
		return NULL;
	size_t c = (size + 23) >> 4;
	c = c < 2 ? 2 : c;
	void **p = cache.head[c];
	if (!p)
		return NULL;
	cache.head[c] = cache_link(p, p[0]);
	cache.count[c]--;
	p[1] = NULL;
	return p;
}

/* Keeps a freed block in the cache; false if it is not one to keep. */
INLINE int cache_put(void *ptr)
{
	if (!cache_on)
		return 0;
	size_t word = ((size_t *)ptr)[-1];
	size_t c = (word & ~(size_t)7) >> 4;
	if ((word & 2) || c >= CACHE_CLASSES || c < 2 || cache.count[c] >= CACHE_MAX)
		return 0; /* an mmapped chunk, too large, or enough of that size */
	void **p = ptr;
	if (__builtin_expect(p[1] == (void *)cache_key, 0))
		cache_check_double_free(ptr, c);
	if (__builtin_expect(!cache.registered, 0))
		cache_register();
	p[0] = cache_link(p, cache.head[c]);
	p[1] = (void *)cache_key;
	cache.head[c] = p;
	cache.count[c]++;
	return 1;
}

/* The fast path of every allocation: count the bytes down. */
#define COUNT_DOWN(size, zero, align)                                                                                  \
	do {                                                                                                           \
		left -= (int64_t)(size);                                                                               \
		if (__builtin_expect(left <= 0, 0))                                                                    \
			return alloc_slow((size), (zero), (align));                                                    \
	} while (0)

EXPORT void *malloc(size_t size)
{
	COUNT_DOWN(size, 0, 0);
	void *p = cache_take(size);
	return p ? p : __libc_malloc(size);
}

EXPORT void *calloc(size_t n, size_t size)
{
	size_t total;
	if (__builtin_mul_overflow(n, size, &total)) {
		errno = ENOMEM;
		return NULL;
	}
	COUNT_DOWN(total, 1, 0);
	return __libc_calloc(n, size);
}

EXPORT void free(void *ptr)
{
	if (in_arena(ptr)) {
		arena_release(ptr);
		return;
	}
	if (maybe_sampled(ptr))
		forget_slow(ptr);
	else if (ptr && cache_put(ptr))
		return;
	__libc_free(ptr);
}

EXPORT size_t malloc_usable_size(void *ptr)
{
	static size_t (*next)(void *);
	if (in_arena(ptr))
		return header_of(ptr)->size;
	if (!next)
		next = (size_t(*)(void *))dlsym(RTLD_NEXT, "malloc_usable_size");
	return next ? next(ptr) : 0;
}

/* realloc when the old block may be sampled or the new one is to be picked. */
COLD void *realloc_slow(void *ptr, size_t size, int counted_out)
{
	uint64_t weight = 0;
	int from_arena = in_arena(ptr);
	int picked = !busy && counted_out && size && pick_slow(size, &weight);
	if (picked || (from_arena && size)) {
		/* Moves: into the arena (or a page-aligned block) if picked,
		 * else out of the arena into libc's heap. */
		void *out = picked ? sampled_block(size, 0, weight) : __libc_malloc(size);
		if (!out)
			return NULL;
		if (ptr) {
			size_t old = malloc_usable_size(ptr);
			memcpy(out, ptr, old < size ? old : size);
			free(ptr);
		}
		return out;
	}
	if (from_arena) { /* size 0: a free */
		free(ptr);
		return NULL;
	}
	int maybe = maybe_sampled(ptr);
	void *out = __libc_realloc(ptr, size);
	/* The old block is gone unless realloc failed (NULL for a non-zero size). */
	if (maybe && (out || size == 0))
		forget_slow(ptr);
	return out;
}

EXPORT void *realloc(void *ptr, size_t size)
{
	left -= (int64_t)size;
	if (__builtin_expect(left <= 0, 0) || in_arena(ptr) || maybe_sampled(ptr))
		return realloc_slow(ptr, size, left <= 0);
	return __libc_realloc(ptr, size);
}

EXPORT void *reallocarray(void *ptr, size_t n, size_t size)
{
	size_t total;
	if (__builtin_mul_overflow(n, size, &total)) {
		errno = ENOMEM;
		return NULL;
	}
	return realloc(ptr, total);
}

EXPORT void *memalign(size_t align, size_t size)
{
	COUNT_DOWN(size, 0, align ? align : 1);
	return __libc_memalign(align, size);
}

EXPORT void *aligned_alloc(size_t align, size_t size) { return memalign(align, size); }

EXPORT void *valloc(size_t size)
{
	COUNT_DOWN(size, 0, SAMPLED_ALIGN);
	return __libc_valloc(size);
}

/* Anonymous mappings the program makes itself (malloc's own go to the
 * internal __mmap and are not seen here): always reported, weight 1. */
EXPORT void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	void *p = __mmap(addr, len, prot, flags, fd, off);
	if (p != MAP_FAILED && (flags & MAP_ANONYMOUS))
		remember(p, len, 1);
	return p;
}

EXPORT void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	return mmap(addr, len, prot, flags, fd, off);
}

EXPORT int munmap(void *addr, size_t len)
{
	forget(addr);
	return __munmap(addr, len);
}

EXPORT int posix_memalign(void **out, size_t align, size_t size)
{
	if (align < sizeof(void *) || (align & (align - 1)))
		return EINVAL;
	void *p = memalign(align, size);
	if (!p)
		return ENOMEM;
	*out = p;
	return 0;
}
