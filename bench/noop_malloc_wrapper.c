/* The least an LD_PRELOAD malloc wrapper can be: malloc and free that only
 * jump to glibc's. bench/mem_overhead.sh preloads it to show the cost any
 * such wrapper adds (the floor under profcap's sampler). */
#include <stddef.h>

extern void *__libc_malloc(size_t size);
extern void __libc_free(void *p);

__attribute__((visibility("default"))) void *malloc(size_t size) { return __libc_malloc(size); }
__attribute__((visibility("default"))) void free(void *p) { __libc_free(p); }
