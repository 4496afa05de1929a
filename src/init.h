/* Start-up: the heap is set up by whichever comes first, the first
 * allocation or the library's constructor, and the calls of the public API
 * and the exported names that need it call ensure_init() first. */
#ifndef SHMHEAP_INIT_H
#define SHMHEAP_INIT_H

#include "proc.h"

enum start_state {
  START_NONE,      /* nothing done yet */
  START_ATTACHING, /* one thread is setting up; others wait for it */
  START_READY,     /* the heap works: G, SELF and the thread key are set */
};
extern SH_HIDDEN _Atomic int start_state;

SH_HIDDEN void start_up(void);
/* segment.c: the heap's segment, created or found, attached and checked. */
SH_HIDDEN void segment_open(void);
SH_HIDDEN void segment_close(void);

/* interpose.c's malloc, free and memalign (align a power of two), for the
 * C++ operators (cxx.c). */
SH_HIDDEN void *sh_malloc(size_t n);
SH_HIDDEN void sh_free(void *p);
SH_HIDDEN void *sh_memalign(size_t align, size_t n);

static inline int started(void) {
  return atomic_load_explicit(&start_state, memory_order_acquire) == START_READY;
}

static inline void ensure_init(void) {
  if (unlikely(!started())) start_up();
}

#endif
