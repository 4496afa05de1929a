/* Collection at restart (shmheap(7), "What a restart frees"): a keyed heap
 * that no live process uses keeps only what its named roots reach.
 *
 * Everything a departed process had not freed (its stdio buffers, request
 * state, what a program never frees before exit) would otherwise stay
 * allocated for good, and a heap restarted daily or crash-looping would
 * fill.  The collection is a mark from the roots (mark.c, whose rules
 * mark.h states; shmheap-dump --garbage runs the same mark) and a sweep of
 * the rest.  A heap whose roots hold no pointer is emptied without either
 * (reset_rootless).
 *
 * A kill at any instruction leaves a heap the next start recovers:
 *  - small blocks go onto their span's local list the way free does (the
 *    chain linked first, the head stored once, I5), with the span's heap
 *    busy and the span named in edit_span, so an interrupted sweep is
 *    rebuilt by repair_heap (I7), which the next attach runs first
 *    (recover_attach), whether it collects or not;
 *  - large blocks and emptied spans go back to the page allocator in
 *    logged steps of one span each (I6), so no step can overflow the log.
 * Under hdr->lock, in the first malloc, with nobody else using the heap. */
#include <errno.h>
#include <string.h>

#include "mark.h"
#include "proc.h"
#include "stats.h"

/* This process's page tables are empty at its start: the mark's first read
 * of each page would be a page fault.  A populate maps runs of pages for a
 * fraction of that, and only reads (tests/gc.sh's heap, 175 MB in use: 490
 * ms to collect without, 290 ms with, here).  A kernel without
 * MADV_POPULATE_READ faults as before.  Reading a page of shared memory
 * that was never written allocates it, so what is read is only what the
 * mark reads: the carved blocks of small spans here, a large block or an
 * opaque span when it is reached (unreached ones are never read).  It
 * comes before the walk of the free lists, which would otherwise take the
 * faults one page at a time (bench/recovery, 485 MiB reachable: the
 * collection took 1.86 s with the walk first, 1.3 s after). */
static int populate(uint64_t rel, uint64_t len) {
  return !(os_populate((void *)(uintptr_t)(G.heap_lo + rel), (size_t)len, 0) < 0 && errno == EINVAL);
}

/* A populated page may still cost its first reader a fault of the host
 * (a VM with shadow page tables: 5 us a page here, against 0.4 after, so
 * that one thread reads a fresh 512 MB at 0.8 GB/s and again at 20).  The
 * first reads, one byte a page, are shared with a helper thread (the
 * heap's lock is held and malloc cannot be called: os_helper_start).
 * bench/recovery's 170K pages: 0.8-0.9 s to touch alone, 0.62 s shared;
 * the host's faults do not scale to two threads here. */
struct runs {
  struct run {
    uint64_t rel, len;
  } *r;
  size_t n, cap;
};

struct touch {
  const struct runs *runs;
  uint64_t from, to; /* the pages of the runs to touch, counted along the runs */
};

__attribute__((no_sanitize("address", "undefined"))) static int touch_runs(void *arg) {
  const struct touch *t = arg;
  const struct runs *u = t->runs;
  uint64_t at = 0;
  for (size_t r = 0; r < u->n && at < t->to; r++) {
    uint64_t n = u->r[r].len >> SH_PAGE_SHIFT;
    for (uint64_t p = at < t->from ? t->from - at : 0; p < n && at + p < t->to; p++)
      (void)*(volatile const unsigned char *)(G.heap_lo + u->r[r].rel + (p << SH_PAGE_SHIFT));
    at += n;
  }
  return 0;
}

/* The carved pages of the small spans, as runs, mapped and read once. */
static void populate_small(const struct gc *c) {
  uint64_t npages = c->len >> SH_PAGE_SHIFT, run = 0, end = 0, pages = 0;
  struct runs u = {NULL, 0, (size_t)c->v->count + 1};
  u.r = os_scratch(u.cap * sizeof *u.r);
  if (!u.r) return; /* then each page faults when read, as without this */
  for (uint64_t p = 0; p < npages;) {
    const struct span *s = &G.spans[c->owner[p]];
    if (!c->owner[p] || s->state != SPAN_SMALL || s->first != p) {
      p++;
      continue;
    }
    uint64_t at = p << SH_PAGE_SHIFT, len = ((uint64_t)s->reserved * s->bsize + SH_PAGE - 1) & ~(uint64_t)(SH_PAGE - 1);
    if (gc_bit(c->opaque, c->owner[p])) len = 0; /* read when reached, as a large block */
    p += s->npages;
    if (!len) continue;
    if (end != at) {
      if (end > run && u.n < u.cap) u.r[u.n++] = (struct run){run, end - run};
      run = at;
    }
    end = at + len;
  }
  if (end > run && u.n < u.cap) u.r[u.n++] = (struct run){run, end - run};
  for (size_t r = 0; r < u.n; r++) {
    if (!populate(u.r[r].rel, u.r[r].len)) break;
    pages += u.r[r].len >> SH_PAGE_SHIFT;
  }
  struct touch mine = {&u, 0, pages}, other = {&u, pages / 2, pages};
  struct os_helper h;
  if (os_ncpus() > 1 && pages >= 1024 && os_helper_start(&h, touch_runs, &other) == 0) {
    mine.to = pages / 2;
    touch_runs(&mine);
    os_helper_join(&h);
  } else
    touch_runs(&mine);
  os_scratch_free(u.r, u.cap * sizeof *u.r);
}

/* Large blocks and opaque spans, when the mark reaches them. */
static void populate_reached(uint64_t rel, uint64_t len) { populate(rel, len); }

/* Frees the unreached blocks of small span s (whose lists walked cleanly)
 * as free would, in one chain in front of its local list.  Returns them. */
static uint32_t sweep_small(const struct gc *c, struct span *s, uint64_t *bytes) {
  const uint64_t start = small_start(s), rel = start - G.heap_off;
  struct theap *t = &G.heaps[s->owner];
  uint64_t head = s->free;
  uint32_t n = 0;
  for (uint32_t b = s->reserved; b-- > 0;) {
    uint64_t g = (rel + (uint64_t)b * s->bsize) >> 4;
    if (!gc_bit(c->live, g) || gc_bit(c->mark, g)) continue;
    if (!n) {
      /* The span this edit changes, before any of it (I7). */
      t->edit_span = span_index(s);
      atomic_signal_fence(memory_order_seq_cst);
    }
    uint64_t off = start + (uint64_t)b * s->bsize;
    small_set_next(off, head);
    head = off;
    n++;
  }
  /* Counted, not read: a used field that a stray store lowered would reach
   * 0 here with reached blocks left, and repair_trim gives a span counted
   * empty back.  Remote-freed blocks count as used until collected.  A
   * recount is right whenever a kill lands, so it needs no edit. */
  uint16_t used = (uint16_t)(s->reserved - c->nlocal[span_index(s)] - n);
  if (!n) {
    if (s->used != used) s->used = used;
    return 0;
  }
  atomic_signal_fence(memory_order_seq_cst);
  s->free = head;
  atomic_signal_fence(memory_order_seq_cst);
  s->used = used;
  t->in_use -= (uint64_t)n * s->bsize;
  t->nfree += n;
  *bytes += (uint64_t)n * s->bsize;
  /* A parked span with blocks free again goes back on its class list. */
  if (s->flags & SPAN_FULL) small_unpark(&t->cls[s->cls], s);
  return n;
}

/* Does any named root hold a pointer? */
static int any_root(void) {
  struct shm_header *h = G.hdr;
  for (unsigned i = 0; i < SH_ROOT_MAX; i++)
    if (atomic_load_explicit(&h->roots[i].name[0], memory_order_relaxed) &&
        atomic_load_explicit(&h->roots[i].off, memory_order_relaxed))
      return 1;
  return 0;
}

/* A heap whose roots hold no pointer is all garbage: it is emptied by
 * forgetting its spans (page_reset) and the thread heaps' lists instead of
 * a walk, in time bounded by the number of thread heaps, whatever the
 * heap's size.  The figures reported come from the counters (blocks and
 * bytes the heaps handed out minus those given back).  Every heap is busy
 * from before the reset until its lists are empty (I7): a kill before the
 * reset's step is complete has the step undone (I6) and the heaps rebuilt
 * from their spans as they were, and the next start empties the heap
 * again; a kill after it has the heaps rebuilt from no spans at all.
 * Returns 0, having changed nothing, if a heap is still held. */
static int reset_rootless(struct shmheap_recovery *f) {
  struct shm_header *h = G.hdr;
  const uint32_t max = h->max_heap < SH_MAX_HEAPS ? h->max_heap : SH_MAX_HEAPS;
  for (uint32_t hi = 0; hi < max; hi++)
    if (atomic_load(&G.heaps[hi].owner_pid)) return 0;
  /* Counted as a collection would have counted them: the heaps' counters,
   * summed as mallinfo sums them. */
  struct stats_totals st;
  stats_totals(&st);
  uint64_t small = st.nmalloc - st.nfree;
  f->gc_blocks = ((int64_t)small > 0 ? small : 0) + h->large_count;
  f->gc_bytes = st.in_use;
  f->gc_reset = 1;
  for (uint32_t hi = 0; hi < max; hi++) {
    G.heaps[hi].edit_span = 0;
    atomic_store(&G.heaps[hi].busy, 1);
  }
  journal_begin();
  page_reset();
  journal_end();
  for (uint32_t hi = 0; hi < max; hi++) {
    struct theap *t = &G.heaps[hi];
    memset(t->cls, 0, sizeof t->cls);
    t->pend_head = 0;
    t->pend_span = 0;
    atomic_store(&t->full_remote, 0);
    t->in_use = 0;
    t->nfree = t->nmalloc;
    atomic_store_explicit(&t->busy, 0, memory_order_release);
  }
  return 1;
}

/* For shmheap-dump's history: statistics, each store on its own. */
static void collect_count(const struct shmheap_recovery *f) {
  struct shm_header *h = G.hdr;
  uint64_t us = f->gc_ns / 1000;
  h->gc_last_us = us < UINT32_MAX ? (uint32_t)us : UINT32_MAX;
  h->gc_last_reset = (uint32_t)f->gc_reset;
  h->gc_last_blocks = f->gc_blocks;
  h->gc_last_bytes = f->gc_bytes;
  h->gc_total_blocks += f->gc_blocks;
  h->gc_total_bytes += f->gc_bytes;
  h->gc_runs++;
}

void collect_at_restart(struct shmheap_recovery *f) {
  uint64_t t0 = os_clock_ns(CLOCK_MONOTONIC);
  struct shm_header *h = G.hdr;
  const uint32_t top = h->top <= G.hdr->npages ? h->top : G.hdr->npages;
  uint32_t count = h->span_count < G.nspans ? h->span_count : G.nspans;
  if (!top) return;
  if (!any_root() && reset_rootless(f)) {
    f->gc_ns = os_clock_ns(CLOCK_MONOTONIC) - t0;
    collect_count(f);
    return;
  }
  static struct gc c; /* not on the first malloc's stack */
  static struct mark_view v;
  static uint8_t busy[SH_MAX_HEAPS];
  memset(busy, 0, sizeof busy);
  v = (struct mark_view){G.base, h, G.spans, G.pagemap, G.heaps, G.heap_off, G.secret, G.heap_lo, top, count,
                         h->max_heap < SH_MAX_HEAPS ? h->max_heap : SH_MAX_HEAPS};
  char why[96];
  if (mark_tables(&c, &v, why, sizeof why) < 0) {
    os_say("libshmheap: SHMHEAP_KEY=%s: %s: nothing was collected", options_key_label(), why);
    mark_free(&c);
    return;
  }
  /* The free lists run through the blocks: mapped first, so that their
   * walk takes no fault per page. */
  populate_small(&c);
  mark_notes(&c);
  c.reading = populate_reached;
  mark_from_roots(&c);
  if (c.failed) {
    os_say("libshmheap: SHMHEAP_KEY=%s: no memory for the collection's mark stack: nothing was collected",
           options_key_label());
    mark_free(&c);
    return;
  }
  uint64_t blocks = 0, bytes = 0;
  for (uint32_t i = 1; i < count; i++) {
    struct span *s = &G.spans[i];
    if (!mark_sweepable(&c, i)) continue;
    struct theap *t = &G.heaps[s->owner];
    if (!busy[s->owner]) {
      busy[s->owner] = 1;
      atomic_store(&t->busy, 1);
    }
    blocks += sweep_small(&c, s, &bytes);
  }
  for (uint32_t hi = 0; hi < SH_MAX_HEAPS; hi++)
    if (busy[hi]) {
      G.heaps[hi].edit_span = 0;
      atomic_store_explicit(&G.heaps[hi].busy, 0, memory_order_release);
    }
  /* Large blocks: one logged step each. */
  journal_begin();
  for (uint32_t i = 1; i < count; i++) {
    struct span *s = &G.spans[i];
    if (s->state != SPAN_LARGE || s->first >= top || c.owner[s->first] != i) continue;
    uint64_t g = ((uint64_t)s->first << SH_PAGE_SHIFT) >> 4;
    if (gc_bit(c.mark, g)) continue;
    uint64_t len = (uint64_t)s->npages << SH_PAGE_SHIFT;
    JW(h->large_in_use) -= len;
    JW(h->large_count)--;
    page_free(s);
    journal_step();
    blocks++;
    bytes += len;
  }
  journal_end();
  mark_free(&c);
  /* The spans the sweep emptied, of heaps nobody holds. */
  for (uint32_t hi = 0; hi < SH_MAX_HEAPS; hi++)
    if (busy[hi] && atomic_load(&G.heaps[hi].owner_pid) == 0) f->spans_returned += repair_trim(&G.heaps[hi]);
  f->gc_blocks = blocks;
  f->gc_bytes = bytes;
  f->gc_ns = os_clock_ns(CLOCK_MONOTONIC) - t0;
  collect_count(f);
}
