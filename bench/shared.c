/* The multi-process workload of make bench on libshmheap: SH_PROCS forked
 * processes allocate and free small blocks in one heap, each freeing blocks
 * the others allocated (bench/shared_ops.h).  Linked with no allocator: run
 * it as
 *     LD_PRELOAD=.../libshmheap.so SHMHEAP_FORK=share bench/shared
 * Plain malloc and free are the whole interface; the slot arrays are in a
 * heap block allocated before the fork, since in share mode only the heap is
 * shared, not the globals.  Prints "seconds peak_rss_kib procs ops bytes". */
#include <stddef.h>
#include <stdlib.h>

static inline void *sh_alloc(size_t n) {
  void *p = malloc(n);
  if (!p) abort();
  return p;
}

static inline void sh_free(void *p) { free(p); }

#include "shared_ops.h"

/* Published through a global: the compiler must not assume that the fork
 * and waitpid calls leave a block it thinks no one else sees unchanged. */
struct sh_ctl *volatile ctl;

int main(void) {
  ctl = sh_alloc(sizeof *ctl);
  int st = sh_run(ctl, "shared", "run it with LD_PRELOAD=libshmheap.so SHMHEAP_FORK=share");
  free(ctl);
  return st;
}
