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
/* Per size class (c[1..SH_NCLASS]) and for the free page runs, from the
 * span descriptors and the free bins, under the page lock (for
 * malloc_info and malloc_stats).  A block another thread freed counts as
 * used until its span's owner collects it. */
struct stats_class {
  uint64_t spans, used, free; /* free: on the spans' free lists or not carved yet */
};
struct stats_pages {
  uint64_t free_runs, free_pages, largest_run, dirty_pages;
};
SH_HIDDEN void stats_classes(struct stats_class c[SH_NCLASS + 1], struct stats_pages *p);

#endif
