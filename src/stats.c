/* Statistics (stats.h), for mallinfo, malloc_info, shmheap_get_info and the
 * exit line of SHMHEAP_VERBOSE. */
#include <string.h>

#include "stats.h"

/* Summed modulo 2^64: the counters are the heap's, which a crash or a
 * stray write may have left anything in, and a signed sum could overflow.
 * A heap's in_use goes below zero when its thread frees other threads'
 * blocks, so the total is read back as signed, and below zero is 0. */
void stats_totals(struct stats_totals *t) {
  uint64_t use = 0;
  memset(t, 0, sizeof *t);
  if (!G.hdr) return;
  for (uint32_t i = 0; i < G.hdr->max_heap; i++) {
    use += G.heaps[i].in_use;
    t->nmalloc += G.heaps[i].nmalloc;
    t->nfree += G.heaps[i].nfree;
  }
  use += G.hdr->large_in_use;
  t->in_use = use <= INT64_MAX ? use : 0;
  t->heap_bytes = (uint64_t)G.hdr->top << SH_PAGE_SHIFT;
}

void stats_classes(struct stats_class c[SH_NCLASS + 1], struct stats_pages *p) {
  memset(c, 0, sizeof(struct stats_class) * (SH_NCLASS + 1));
  memset(p, 0, sizeof *p);
  pages_lock();
  for (uint32_t i = 1; i < G.hdr->span_count && i < G.hdr->nspans; i++) {
    const struct span *s = &G.spans[i];
    if (s->state == SPAN_SMALL && s->cls >= 1 && s->cls <= SH_NCLASS) {
      struct stats_class *k = &c[s->cls];
      k->spans++;
      k->used += s->used;
      if (s->capacity > s->used) k->free += s->capacity - s->used;
    } else if (s->state == SPAN_FREE) {
      p->free_runs++;
      p->free_pages += s->npages;
      if (s->npages > p->largest_run) p->largest_run = s->npages;
    }
  }
  p->dirty_pages = G.hdr->dirty_pages;
  pages_unlock();
}
