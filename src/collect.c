/* Collection at restart (shmheap(7), "What a restart frees"): a keyed heap
 * that no live process uses keeps only what its named roots reach.
 *
 * Everything a departed process had not freed (its stdio buffers, request
 * state, what a program never frees before exit) would otherwise stay
 * allocated for good, and a heap restarted daily or crash-looping would
 * fill.  The collection is a mark from the roots and a sweep of the rest:
 *
 *  - the mark is conservative and exact about what it sees: a block is
 *    reached when an 8-byte-aligned word of a reached block or a root holds
 *    an address inside it (its first byte, an interior byte, or one past
 *    its end where that is not the first byte of a block in use: reach());
 *  - only live blocks are marked or scanned: a stale pointer into a free
 *    block keeps nothing alive;
 *  - a span whose free lists do not walk cleanly (a cycle, a link out of the
 *    span) is not swept: its carved blocks all count as live;
 *  - a span attach took out of use (quarantined: damaged, or its shape not
 *    its class's) still holds what the program stored: it is one opaque
 *    block, scanned whole and never freed.
 *
 * The heap is input from a possibly dead or buggy writer.  Which span covers
 * a page comes from the tiling walk of the page map that attach checked
 * (view.c), never from the descriptors alone: a stray descriptor outside
 * the tiling covers nothing.  A span's block count is recounted from its
 * lists, not read.  Every table the mark uses is built in scratch memory.
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

#include "proc.h"

struct gc {
  uintptr_t lo;      /* first heap byte in this process */
  uint64_t len;      /* bytes of pages [0, top) */
  uint32_t *owner;   /* per page: the span covering it, 0 for none */
  uint64_t *live;    /* per 16-byte granule: a live block starts here */
  uint64_t *mark;    /* ... and it was reached */
  uint64_t *stack;   /* reached blocks not scanned yet: heap offsets */
  size_t n, cap;
  uint64_t *unswept; /* per descriptor: its lists did not walk cleanly */
  uint64_t *opaque;  /* per descriptor: a small span taken as one block */
  uint16_t *nlocal;  /* per descriptor: blocks on its local free list */
  size_t nunswept, nnlocal;
  struct run {
    uint64_t rel, len;
  } *runs;           /* carved pages of small spans (populate_small) */
  size_t nruns, nruns_cap;
  int failed;        /* no scratch memory for the stack: nothing may be freed */
};

static int bit_get(const uint64_t *m, uint64_t g) { return (m[g >> 6] >> (g & 63)) & 1; }
static void bit_set(uint64_t *m, uint64_t g) { m[g >> 6] |= 1ULL << (g & 63); }

static int push(struct gc *c, uint64_t rel) {
  if (c->n == c->cap) {
    size_t cap = c->cap ? c->cap * 2 : 65536;
    uint64_t *s = os_scratch(cap * sizeof *s);
    if (!s) {
      c->failed = 1;
      return 0;
    }
    if (c->n) memcpy(s, c->stack, c->n * sizeof *s);
    os_scratch_free(c->stack, c->cap * sizeof *s);
    c->stack = s;
    c->cap = cap;
  }
  c->stack[c->n++] = rel;
  return 1;
}

/* The live block that byte rel of the heap belongs to, as its heap-relative
 * start, or UINT64_MAX if it is in none. */
static uint64_t block_at(const struct gc *c, uint64_t rel) {
  if (rel >= c->len) return UINT64_MAX;
  uint32_t si = c->owner[rel >> SH_PAGE_SHIFT];
  if (!si) return UINT64_MAX;
  const struct span *s = &G.spans[si];
  uint64_t start = (uint64_t)s->first << SH_PAGE_SHIFT, b = start;
  if (s->state == SPAN_SMALL && !bit_get(c->opaque, si)) {
    /* Exact floor division: rel - start < 2^18 and the reciprocal rounds
     * up by less than one part in 2^30 (small.c). */
    uint64_t q = ((rel - start) * small_class_recip[s->cls]) >> 48;
    if (q >= s->reserved) return UINT64_MAX;
    b = start + q * s->bsize;
  }
  return bit_get(c->live, b >> 4) ? b : UINT64_MAX;
}

/* An address read from a root or a reached block. */
static void reach(struct gc *c, uint64_t word) {
  uint64_t rel = word - c->lo;
  if (rel > c->len) return;
  uint64_t b = block_at(c, rel);
  /* One past the end of a block is, at a block boundary, also the first
   * byte of the block after it.  Taken for both, every pointer to a block
   * would keep its neighbour too, and through the neighbour's pointers the
   * neighbour's neighbours: in a heap dense with small objects that keeps
   * nearly all garbage (tests/gc.sh: 98% of it).  So an address that is a
   * block's first byte reaches that block, and one past the end of the
   * block before only where no block in use starts (shmheap(7)). */
  if (b == UINT64_MAX && rel && !(rel & 15)) b = block_at(c, rel - 1);
  if (b == UINT64_MAX || bit_get(c->mark, b >> 4)) return;
  bit_set(c->mark, b >> 4);
  push(c, b);
}

/* The bytes of a live block of span si to scan: all malloc_usable_size
 * says the program may use; a large block's or an opaque span's whole
 * pages. */
static uint64_t scan_len(const struct gc *c, uint32_t si) {
  const struct span *s = &G.spans[si];
  return s->state == SPAN_SMALL && !bit_get(c->opaque, si) ? s->bsize : (uint64_t)s->npages << SH_PAGE_SHIFT;
}

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
struct touch {
  const struct gc *c;
  uint64_t from, to; /* the pages of the runs to touch, counted along the runs */
};

__attribute__((no_sanitize("address", "undefined"))) static int touch_runs(void *arg) {
  const struct touch *t = arg;
  const struct gc *c = t->c;
  uint64_t at = 0;
  for (size_t r = 0; r < c->nruns && at < t->to; r++) {
    uint64_t n = c->runs[r].len >> SH_PAGE_SHIFT;
    for (uint64_t p = at < t->from ? t->from - at : 0; p < n && at + p < t->to; p++)
      (void)*(volatile const unsigned char *)(c->lo + c->runs[r].rel + (p << SH_PAGE_SHIFT));
    at += n;
  }
  return 0;
}

/* The carved pages of the small spans, as runs, mapped and read once. */
static void populate_small(struct gc *c, uint32_t count) {
  uint64_t npages = c->len >> SH_PAGE_SHIFT, run = 0, end = 0, pages = 0;
  c->nruns_cap = (size_t)count + 1;
  c->runs = os_scratch(c->nruns_cap * sizeof *c->runs);
  if (!c->runs) return; /* then each page faults when read, as without this */
  for (uint64_t p = 0; p < npages;) {
    const struct span *s = &G.spans[c->owner[p]];
    if (!c->owner[p] || s->state != SPAN_SMALL || s->first != p) {
      p++;
      continue;
    }
    uint64_t at = p << SH_PAGE_SHIFT, len = ((uint64_t)s->reserved * s->bsize + SH_PAGE - 1) & ~(uint64_t)(SH_PAGE - 1);
    if (bit_get(c->opaque, c->owner[p])) len = 0; /* read when reached, as a large block */
    p += s->npages;
    if (!len) continue;
    if (end != at) {
      if (end > run && c->nruns < c->nruns_cap) c->runs[c->nruns++] = (struct run){run, end - run};
      run = at;
    }
    end = at + len;
  }
  if (end > run && c->nruns < c->nruns_cap) c->runs[c->nruns++] = (struct run){run, end - run};
  for (size_t r = 0; r < c->nruns; r++) {
    if (!populate(c->runs[r].rel, c->runs[r].len)) break;
    pages += c->runs[r].len >> SH_PAGE_SHIFT;
  }
  struct touch mine = {c, 0, pages}, other = {c, pages / 2, pages};
  struct os_helper h;
  if (os_ncpus() > 1 && pages >= 1024 && os_helper_start(&h, touch_runs, &other) == 0) {
    mine.to = pages / 2;
    touch_runs(&mine);
    os_helper_join(&h);
  } else
    touch_runs(&mine);
}

static void mark_from_roots(struct gc *c) {
  const struct shm_header *h = G.hdr;
  for (unsigned i = 0; i < SH_ROOT_MAX; i++)
    if (atomic_load_explicit(&((struct shm_header *)h)->roots[i].name[0], memory_order_relaxed)) {
      uint64_t off = atomic_load_explicit(&((struct shm_header *)h)->roots[i].off, memory_order_relaxed);
      if (off) reach(c, (uint64_t)(uintptr_t)G.base + off);
    }
  while (c->n && !c->failed) {
    uint64_t b = c->stack[--c->n];
    const uint64_t *w = (const uint64_t *)(c->lo + b);
    uint32_t si = c->owner[b >> SH_PAGE_SHIFT];
    uint64_t nw = scan_len(c, si) / 8;
    if (G.spans[si].state == SPAN_LARGE || bit_get(c->opaque, si)) populate(b, nw * 8);
    for (uint64_t i = 0; i < nw; i++) {
      uint64_t v = w[i];
      if (v - c->lo <= c->len) reach(c, v);
    }
  }
}

/* The live blocks of small span s into c->live, and the length of its local
 * list into c->nlocal; 0 if its free lists do not walk cleanly (then it is
 * not swept, and all its carved blocks count as live). */
static int note_small(struct gc *c, const struct span *s, struct small_marks *m) {
  const uint64_t start = small_start(s), rel = start - G.heap_off;
  struct small_walk w;
  const struct theap *t = &G.heaps[s->owner];
  /* A chain a collect was moving (pend_*) is on neither list, so its free
   * blocks would look in use and be freed again: such a span (none is left
   * after the repair of a busy heap) is not swept, all of it counts live. */
  int clean = !(t->pend_head && t->pend_span == span_index(s));
  small_marks_clear(m, s->reserved);
  if (clean) {
    small_walk(G.base, G.secret, s, start, s->free, s->reserved, m, &w);
    clean = w.why == SMALL_END;
    c->nlocal[span_index(s)] = (uint16_t)w.n;
  }
  if (clean) {
    small_walk(G.base, G.secret, s, start,
               atomic_load_explicit(&((struct span *)s)->thread_free, memory_order_relaxed) & ~TF_NOTIFY,
               s->reserved, m, &w);
    clean = w.why == SMALL_END;
  }
  if (!clean) small_marks_clear(m, s->reserved);
  for (uint32_t b = 0; b < s->reserved; b++)
    if (!small_marked(m, b)) bit_set(c->live, (rel + (uint64_t)b * s->bsize) >> 4);
  return clean;
}

/* Frees the unreached blocks of small span s (whose lists walked cleanly)
 * as free would, in one chain in front of its local list.  Returns them. */
static uint32_t sweep_small(const struct gc *c, struct span *s, uint64_t *bytes) {
  const uint64_t start = small_start(s), rel = start - G.heap_off;
  struct theap *t = &G.heaps[s->owner];
  uint64_t head = s->free;
  uint32_t n = 0;
  for (uint32_t b = s->reserved; b-- > 0;) {
    uint64_t g = (rel + (uint64_t)b * s->bsize) >> 4;
    if (!bit_get(c->live, g) || bit_get(c->mark, g)) continue;
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

static void collect_free(struct gc *c) {
  os_scratch_free(c->owner, (c->len >> SH_PAGE_SHIFT) * sizeof *c->owner);
  os_scratch_free(c->live, ((c->len >> 4) / 64 + 1) * 8);
  os_scratch_free(c->mark, ((c->len >> 4) / 64 + 1) * 8);
  os_scratch_free(c->stack, c->cap * sizeof *c->stack);
  os_scratch_free(c->unswept, c->nunswept);
  os_scratch_free(c->opaque, c->nunswept);
  os_scratch_free(c->nlocal, c->nnlocal);
  os_scratch_free(c->runs, c->nruns_cap * sizeof *c->runs);
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
  uint64_t bytes = h->large_in_use, small = 0;
  for (uint32_t hi = 0; hi < max; hi++) {
    const struct theap *t = &G.heaps[hi];
    if (atomic_load(&t->owner_pid)) return 0;
    bytes += t->in_use;
    small += t->nmalloc - t->nfree;
  }
  for (uint32_t hi = 0; hi < max; hi++) {
    G.heaps[hi].edit_span = 0;
    atomic_store(&G.heaps[hi].busy, 1);
  }
  /* Counted as a collection would have counted them: modulo 2^64, read
   * back as signed, below zero is none. */
  f->gc_blocks = ((int64_t)small > 0 ? small : 0) + h->large_count;
  f->gc_bytes = (int64_t)bytes > 0 ? bytes : 0;
  f->gc_reset = 1;
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
  static struct small_marks m;
  static uint8_t busy[SH_MAX_HEAPS];
  memset(&c, 0, sizeof c);
  memset(busy, 0, sizeof busy);
  c.lo = G.heap_lo;
  c.len = (uint64_t)top << SH_PAGE_SHIFT;
  size_t bits = ((c.len >> 4) / 64 + 1) * 8;
  c.owner = os_scratch((size_t)top * sizeof *c.owner);
  c.live = os_scratch(bits);
  c.mark = os_scratch(bits);
  c.nunswept = ((size_t)count / 64 + 1) * 8;
  c.nnlocal = (size_t)count * sizeof *c.nlocal;
  c.unswept = os_scratch(c.nunswept);
  c.opaque = os_scratch(c.nunswept);
  c.nlocal = os_scratch(c.nnlocal);
  if (!c.owner || !c.live || !c.mark || !c.unswept || !c.opaque || !c.nlocal) {
    os_say("libshmheap: SHMHEAP_KEY=%s: no memory for the collection at restart (%zu bytes): nothing was collected",
           options_key_label(), (size_t)top * 4 + 2 * bits + 2 * c.nunswept + c.nnlocal);
    collect_free(&c);
    return;
  }
  /* The spans in use, along the page map as attach walked it: a page map
   * entry that does not start its span there (attach refuses such a heap,
   * so only a writer since) stops the collection. */
  for (uint32_t pg = 0; pg < top;) {
    uint32_t i = G.pagemap[pg];
    struct span *s = &G.spans[i < count ? i : 0];
    if (!i || i >= count || s->first != pg || !s->npages || s->npages > top - pg) {
      os_say("libshmheap: SHMHEAP_KEY=%s: page %u of the heap starts no span (page map entry %u): nothing was collected",
             options_key_label(), pg, i);
      collect_free(&c);
      return;
    }
    pg += s->npages;
    if (s->state != SPAN_SMALL && s->state != SPAN_LARGE) continue;
    for (uint32_t p = 0; p < s->npages; p++) c.owner[s->first + p] = i;
    int opaque = s->state == SPAN_SMALL &&
                 (!small_sound(h, s) || s->owner >= SH_MAX_HEAPS || s->owner >= h->max_heap ||
                  (s->flags & (SPAN_DAMAGED | SPAN_QUARANTINED)));
    if (opaque) {
      bit_set(c.opaque, i);
      bit_set(c.unswept, i);
    }
    if (s->state == SPAN_LARGE || opaque) bit_set(c.live, ((uint64_t)s->first << SH_PAGE_SHIFT) >> 4);
  }
  /* The free lists run through the blocks: mapped first, so that their
   * walk below takes no fault per page. */
  populate_small(&c, count);
  for (uint32_t pg = 0; pg < top;) {
    const uint32_t i = c.owner[pg];
    const struct span *s = &G.spans[i];
    if (!i || s->first != pg) {
      pg++;
      continue;
    }
    pg += s->npages;
    if (s->state == SPAN_SMALL && !bit_get(c.opaque, i) && !note_small(&c, s, &m)) bit_set(c.unswept, i);
  }
  mark_from_roots(&c);
  if (c.failed) {
    os_say("libshmheap: SHMHEAP_KEY=%s: no memory for the collection's mark stack: nothing was collected",
           options_key_label());
    collect_free(&c);
    return;
  }
  uint64_t blocks = 0, bytes = 0;
  for (uint32_t i = 1; i < count; i++) {
    struct span *s = &G.spans[i];
    if (s->state != SPAN_SMALL || s->first >= top || c.owner[s->first] != i || bit_get(c.unswept, i)) continue;
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
    if (bit_get(c.mark, g)) continue;
    uint64_t len = (uint64_t)s->npages << SH_PAGE_SHIFT;
    JW(h->large_in_use) -= len;
    JW(h->large_count)--;
    page_free(s);
    journal_step();
    blocks++;
    bytes += len;
  }
  journal_end();
  collect_free(&c);
  /* The spans the sweep emptied, of heaps nobody holds. */
  for (uint32_t hi = 0; hi < SH_MAX_HEAPS; hi++)
    if (busy[hi] && atomic_load(&G.heaps[hi].owner_pid) == 0) f->spans_returned += repair_trim(&G.heaps[hi]);
  f->gc_blocks = blocks;
  f->gc_bytes = bytes;
  f->gc_ns = os_clock_ns(CLOCK_MONOTONIC) - t0;
  collect_count(f);
}
