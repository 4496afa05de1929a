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

/* Sets the heap up, or waits for the thread that is doing so.  Returns 0,
 * having done nothing, when the calling thread is that one, re-entered: a
 * signal handler, or the dynamic loader allocating for an error it reports
 * (an unresolvable symbol) while the heap is being set up. */
SH_HIDDEN int start_up(void);
/* start_up for the public API, which has nothing to answer with then: the
 * process stops with a message. */
SH_HIDDEN void start_up_or_die(void);
/* segment.c: the heap's segment, created or found, attached and checked. */
/* 0: the heap is attached; SEGMENT_INHERITED: the key names another
 * user's heap that this process inherited from it (os_shm_key_from_ancestor),
 * so it takes a private heap instead. */
#define SEGMENT_INHERITED 1
/* SEGMENT_IN_USE_UNFIT: the heap is larger than the address space ulimit -v
 * leaves this process, and attached by another process: this one could not
 * use it even if it were the heap's program, so it takes a private heap. */
#define SEGMENT_IN_USE_UNFIT 2
SH_HIDDEN int segment_open(void);
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
  if (unlikely(!started())) start_up_or_die();
}

/* For the malloc family: 0 where start_up returns 0, and the call fails
 * with ENOMEM (there is no heap to allocate from yet). */
static inline int heap_ready(void) { return likely(started()) || start_up(); }

#endif
