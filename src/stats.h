/* Statistics of the heap this process maps (stats.c). */
#ifndef SHMHEAP_STATS_H
#define SHMHEAP_STATS_H

#include "pages.h"

struct stats_totals {
  uint64_t in_use;     /* bytes in blocks handed out and not freed */
  uint64_t heap_bytes; /* bytes of the heap area carved so far */
  uint64_t nmalloc, nfree;
};

/* Summed from the per-heap counters (each thread updates only its own,
 * without atomics) and the page allocator's; zero before the heap exists. */
SH_HIDDEN void stats_totals(struct stats_totals *t);
/* Blocks in use per size class, from the span descriptors. */
SH_HIDDEN void stats_class_counts(uint64_t count[SH_NCLASS + 1]);

#endif
