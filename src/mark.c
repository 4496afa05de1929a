/* The mark of a collection (mark.h). */
#include <string.h>

#include "mark.h"

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
  const struct span *s = &c->v->spans[si];
  uint64_t start = (uint64_t)s->first << SH_PAGE_SHIFT, b = start;
  if (s->state == SPAN_SMALL && !gc_bit(c->opaque, si)) {
    /* Exact floor division: rel - start < 2^18 and the reciprocal rounds
     * up by less than one part in 2^30 (small.c).  (small_index_fast
     * tells a block's first byte only; this needs the block of any.) */
    uint64_t q = ((rel - start) * small_class_recip[s->cls]) >> 48;
    if (q >= s->reserved) return UINT64_MAX;
    b = start + q * s->bsize;
  }
  return gc_bit(c->live, b >> 4) ? b : UINT64_MAX;
}

/* An address read from a root or a reached block. */
static void reach(struct gc *c, uint64_t word) {
  uint64_t rel = word - c->v->home;
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
  if (b == UINT64_MAX || gc_bit(c->mark, b >> 4)) return;
  gc_bit_set(c->mark, b >> 4);
  push(c, b);
}

/* The bytes of a live block of span si to scan: all malloc_usable_size
 * says the program may use; a large block's or an opaque span's whole
 * pages. */
static uint64_t scan_len(const struct gc *c, uint32_t si) {
  const struct span *s = &c->v->spans[si];
  return s->state == SPAN_SMALL && !gc_bit(c->opaque, si) ? s->bsize : (uint64_t)s->npages << SH_PAGE_SHIFT;
}

void mark_from_roots(struct gc *c) {
  const struct mark_view *v = c->v;
  struct shm_header *h = (struct shm_header *)v->h;
  for (unsigned i = 0; i < SH_ROOT_MAX; i++)
    if (atomic_load_explicit(&h->roots[i].name[0], memory_order_relaxed)) {
      uint64_t off = atomic_load_explicit(&h->roots[i].off, memory_order_relaxed);
      if (off) reach(c, v->home - v->heap_off + off);
    }
  const char *heap = v->map + v->heap_off;
  while (c->n && !c->failed) {
    uint64_t b = c->stack[--c->n];
    const uint64_t *w = (const uint64_t *)(heap + b);
    uint32_t si = c->owner[b >> SH_PAGE_SHIFT];
    uint64_t nw = scan_len(c, si) / 8;
    if (c->reading && (v->spans[si].state == SPAN_LARGE || gc_bit(c->opaque, si))) c->reading(b, nw * 8);
    for (uint64_t i = 0; i < nw; i++) {
      uint64_t x = w[i];
      if (x - v->home <= c->len) reach(c, x);
    }
  }
}

/* The live blocks of small span s into c->live, and the length of its local
 * list into c->nlocal; 0 if its free lists do not walk cleanly (then it is
 * not swept, and all its carved blocks count as live). */
static int note_small(struct gc *c, uint32_t si, struct small_marks *m) {
  const struct mark_view *v = c->v;
  const struct span *s = &v->spans[si];
  const uint64_t rel = (uint64_t)s->first << SH_PAGE_SHIFT, start = v->heap_off + rel;
  struct small_walk w;
  const struct theap *t = &v->heaps[s->owner];
  /* A chain a collect was moving (pend_*) is on neither list, so its free
   * blocks would look in use and be freed again: such a span (none is left
   * after the repair of a busy heap) is not swept, all of it counts live. */
  int clean = !(t->pend_head && t->pend_span == si);
  small_marks_clear(m, s->reserved);
  if (clean) {
    small_walk(v->map, v->secret, s, start, s->free, s->reserved, m, &w);
    clean = w.why == SMALL_END;
    c->nlocal[si] = (uint16_t)w.n;
  }
  if (clean) {
    small_walk(v->map, v->secret, s, start,
               atomic_load_explicit(&((struct span *)s)->thread_free, memory_order_relaxed) & ~TF_NOTIFY,
               s->reserved, m, &w);
    clean = w.why == SMALL_END;
  }
  if (!clean) small_marks_clear(m, s->reserved);
  for (uint32_t b = 0; b < s->reserved; b++)
    if (!small_marked(m, b)) gc_bit_set(c->live, (rel + (uint64_t)b * s->bsize) >> 4);
  return clean;
}

void mark_notes(struct gc *c) {
  static struct small_marks m; /* not on the stack of the first malloc */
  for (uint32_t pg = 0; pg < c->v->top;) {
    const uint32_t i = c->owner[pg];
    const struct span *s = &c->v->spans[i];
    if (!i || s->first != pg) {
      pg++;
      continue;
    }
    pg += s->npages;
    if (s->state == SPAN_SMALL && !gc_bit(c->opaque, i) && !note_small(c, i, &m)) gc_bit_set(c->unswept, i);
  }
}

void mark_free(struct gc *c) {
  os_scratch_free(c->owner, (c->len >> SH_PAGE_SHIFT) * sizeof *c->owner);
  os_scratch_free(c->live, ((c->len >> 4) / 64 + 1) * 8);
  os_scratch_free(c->mark, ((c->len >> 4) / 64 + 1) * 8);
  os_scratch_free(c->stack, c->cap * sizeof *c->stack);
  os_scratch_free(c->unswept, c->nunswept);
  os_scratch_free(c->opaque, c->nunswept);
  os_scratch_free(c->nlocal, c->nnlocal);
  c->owner = NULL;
  c->live = c->mark = c->stack = c->unswept = c->opaque = NULL;
  c->nlocal = NULL;
}

int mark_tables(struct gc *c, const struct mark_view *v, char *why, size_t whylen) {
  const uint32_t top = v->top, count = v->count;
  memset(c, 0, sizeof *c);
  c->v = v;
  c->len = (uint64_t)top << SH_PAGE_SHIFT;
  size_t bits = ((c->len >> 4) / 64 + 1) * 8;
  c->owner = os_scratch((size_t)top * sizeof *c->owner);
  c->live = os_scratch(bits);
  c->mark = os_scratch(bits);
  c->nunswept = ((size_t)count / 64 + 1) * 8;
  c->nnlocal = (size_t)count * sizeof *c->nlocal + 1;
  c->unswept = os_scratch(c->nunswept);
  c->opaque = os_scratch(c->nunswept);
  c->nlocal = os_scratch(c->nnlocal);
  if (!c->owner || !c->live || !c->mark || !c->unswept || !c->opaque || !c->nlocal) {
    os_fmt(why, whylen, "no memory for the mark's tables (%zu bytes)",
           (size_t)top * 4 + 2 * bits + 2 * c->nunswept + c->nnlocal);
    return -1;
  }
  /* The spans in use, along the page map: an entry that does not start
   * its span there (attach refuses such a heap, so only a writer since)
   * stops the mark. */
  for (uint32_t pg = 0; pg < top;) {
    uint32_t i = v->pagemap[pg];
    const struct span *s = &v->spans[i < count ? i : 0];
    if (!i || i >= count || s->first != pg || !s->npages || s->npages > top - pg) {
      os_fmt(why, whylen, "page %u of the heap starts no span (page map entry %u)", pg, i);
      return -1;
    }
    pg += s->npages;
    if (s->state != SPAN_SMALL && s->state != SPAN_LARGE) continue;
    for (uint32_t p = 0; p < s->npages; p++) c->owner[s->first + p] = i;
    int opaque = s->state == SPAN_SMALL &&
                 (!small_sound(v->h, s) || s->owner >= SH_MAX_HEAPS || s->owner >= v->max_heap ||
                  (s->flags & (SPAN_DAMAGED | SPAN_QUARANTINED)));
    if (opaque) {
      gc_bit_set(c->opaque, i);
      gc_bit_set(c->unswept, i);
    }
    if (s->state == SPAN_LARGE || opaque) gc_bit_set(c->live, ((uint64_t)s->first << SH_PAGE_SHIFT) >> 4);
  }
  return 0;
}
