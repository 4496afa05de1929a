/* The reader: a walk over all allocator metadata that checks every
 * invariant of format.h, the live blocks, usage by class, and the processes
 * listed in a heap.  Used by the library (shmheap_check) and by shmheap-dump,
 * at any address: nothing here uses the process's own heap state, every
 * offset, index and count read from the segment is checked before it is
 * followed, so a corrupt or hostile segment cannot make the walk crash or
 * loop, and its scratch memory comes from the system, never from the heap it
 * reads.  Block lists are walked by the small-span module (small.c). */
#include <stdarg.h>
#include <string.h>

#include "small.h"
#include "view.h"

/* ---- the check ------------------------------------------------------------- */

/* What the walks after the tiling walk need of descriptor i, copied there in
 * address order (nearly index order): the list walks then hop through this
 * dense copy, a fifth the size of the descriptors, instead of through the
 * descriptors in list order, where every step was a cache and TLB miss
 * (half of the check's time on a heap of 4 million blocks).  Also the one
 * reading of each descriptor that the list checks judge, as span_read is
 * for the tiling walk.  All zero for a descriptor the walk did not reach. */
struct seen {
  uint32_t next, prev;
  uint16_t owner;
  uint8_t cls;
  uint8_t tag; /* SEEN_* */
};
_Static_assert(sizeof(struct seen) == 12, "a fifth of a descriptor");
#define SEEN_TILED 0x3u   /* 1: tiles the heap, 2: also on a list or in a bin, 3: listed by lists_sound */
#define SEEN_SMALL 0x4u   /* state SPAN_SMALL */
#define SEEN_FULL 0x8u    /* flag SPAN_FULL */
#define SEEN_DAMAGED 0x10u /* flag SPAN_DAMAGED */
#define SEEN_DIRTY 0x20u  /* on the dirty list */

static inline unsigned tiled(const struct seen *e) { return e->tag & SEEN_TILED; }
static inline void set_tiled(struct seen *e, unsigned t) { e->tag = (uint8_t)((e->tag & ~SEEN_TILED) | t); }

struct ck {
  const struct hv *v;
  hv_report rep;
  void *ctx;
  unsigned problems;
  unsigned flags;
  struct hv_faults *f;
};

/* What a problem is about, for a repair (struct hv_faults). */
enum { ON_HEAP_WHOLE, ON_SPAN, ON_HEAP_LISTS, ON_COUNTERS };

static void bad_on(struct ck *k, int what, uint32_t idx, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void bad_on(struct ck *k, int what, uint32_t idx, const char *fmt, ...) {
  k->problems++;
  struct hv_faults *f = k->f;
  if (f) {
    if (what == ON_SPAN && f->span) f->span(k->ctx, idx);
    else if (what == ON_HEAP_LISTS && f->heap) f->heap(k->ctx, idx);
    else if (what == ON_COUNTERS) f->counters++;
    else f->whole++;
  }
  if (!k->rep && !(f && what == ON_HEAP_WHOLE && !f->first[0])) return;
  char msg[256];
  va_list ap;
  va_start(ap, fmt);
  os_vfmt(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (f && what == ON_HEAP_WHOLE && !f->first[0]) memcpy(f->first, msg, sizeof f->first), f->first[sizeof f->first - 1] = 0;
  if (k->rep) k->rep(k->ctx, msg);
}

static void bad(struct ck *k, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void bad(struct ck *k, const char *fmt, ...) {
  k->problems++;
  if (k->f) k->f->whole++;
  if (!k->rep && !(k->f && !k->f->first[0])) return;
  char msg[256];
  va_list ap;
  va_start(ap, fmt);
  os_vfmt(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (k->f && !k->f->first[0]) memcpy(k->f->first, msg, sizeof k->f->first), k->f->first[sizeof k->f->first - 1] = 0;
  if (k->rep) k->rep(k->ctx, msg);
}

/* One read of descriptor i: a live process may change it while we look, and
 * a field checked must be the field used. */
static inline void span_read(const struct hv *v, uint32_t i, struct span *out) {
  memcpy(out, (const void *)&v->spans[i], sizeof *out);
}

/* Maps [p, p+len) of the segment into this process in one call: a process
 * that has just attached a heap of gigabytes would otherwise take a page
 * fault for each 4 KiB of the descriptors and the page map it walks (35 of
 * the 82 ms this check took without it on a heap of 4 million blocks, on
 * our 2-core VMs).  Only read. */
static void prefault(const void *p, size_t len) {
  uintptr_t a = (uintptr_t)p & ~(uintptr_t)(SH_PAGE - 1);
  if (len) os_populate((void *)a, len + ((uintptr_t)p - a), 0);
}

static uint64_t span_off(const struct hv *v, const struct span *s) {
  return v->heap_off + ((uint64_t)s->first << SH_PAGE_SHIFT);
}

/* Walks one block list of small span i, marking the blocks in seen.
 * Returns the number of blocks, or -1 if the list is broken. */
static long walk_blocks(struct ck *k, uint32_t i, const struct span *s, uint64_t head, struct small_marks *seen,
                        const char *which) {
  const struct hv *v = k->v;
  uint64_t start = span_off(v, s);
  struct small_walk w;
  small_walk(v->base, v->h->link_secret, s, start, head, s->reserved, seen, &w);
  if (w.why == SMALL_NOT_BLOCK) {
    bad_on(k, ON_SPAN, i, "span %u: %s list has offset 0x%llx, not a carved block of the span", i, which,
           (unsigned long long)w.at);
    return -1;
  }
  if (w.why == SMALL_TWICE) {
    bad_on(k, ON_SPAN, i, "span %u: block %llu is twice on the free lists (%s)", i,
        (unsigned long long)((w.at - start) / s->bsize), which);
    return -1;
  }
  return w.n;
}

static void check_small(struct ck *k, uint32_t i, const struct span *s) {
  const struct hv *v = k->v;
  const struct shm_header *h = v->h;
  if (s->cls < 1 || s->cls > SH_NCLASS) {
    bad_on(k, ON_SPAN, i, "span %u: size class %u", i, s->cls);
    return;
  }
  uint32_t cap = (uint32_t)((uint64_t)h->class_pages[s->cls] * SH_PAGE / h->class_size[s->cls]);
  if (s->bsize != h->class_size[s->cls] || s->npages != h->class_pages[s->cls] || s->capacity != cap ||
      s->reserved > s->capacity || s->used > s->reserved) {
    bad_on(k, ON_SPAN, i, "span %u: class %u has block size %u, %u pages, capacity %u, %u carved, %u used", i, s->cls,
        s->bsize, s->npages, s->capacity, s->reserved, s->used);
    return;
  }
  /* Flags the library never sets together, or at all: the free path and
   * the lists act on them (a span "full" on no full list would be unparked
   * from the wrong list). */
  if ((s->flags & ~(SPAN_FULL | SPAN_DAMAGED | SPAN_QUARANTINED)) ||
      (s->flags & (SPAN_DAMAGED | SPAN_QUARANTINED)) == SPAN_QUARANTINED) {
    bad_on(k, ON_SPAN, i, "span %u: flags 0x%x", i, s->flags);
    return;
  }
  if (s->owner >= SH_MAX_HEAPS || (h->max_heap && s->owner >= h->max_heap))
    bad_on(k, ON_SPAN, i, "span %u: owner heap %u does not exist", i, s->owner);
  for (uint32_t p = 0; p < s->npages; p++)
    if (v->pagemap[s->first + p] != i) {
      bad_on(k, ON_SPAN, i, "span %u: page map entry of its page %u points elsewhere", i, p);
      break;
    }
  /* The list heads are metadata: what the next pop or collect follows
   * first, so they are checked even when the blocks are not read.  The
   * bound is the capacity, not the carved count: a carve links its blocks
   * before it counts them (repair.c), and a kill may fall in between. */
  uint64_t start = span_off(v, s), tf = s->thread_free & ~TF_NOTIFY;
  int bad_local = s->free && small_index(s, s->free - start, s->capacity) < 0;
  if (bad_local || (tf && small_index(s, tf - start, s->capacity) < 0)) {
    bad_on(k, ON_SPAN, i, "span %u: its %s free list starts at 0x%llx, not a block of the span", i,
           bad_local ? "local" : "remote", (unsigned long long)(bad_local ? s->free : tf));
    return;
  }
  if (k->flags & HV_META) return; /* the blocks are not read */
  struct small_marks seen;
  small_marks_clear(&seen, s->capacity);
  long local = walk_blocks(k, i, s, s->free, &seen, "local free");
  long remote = walk_blocks(k, i, s, s->thread_free & ~TF_NOTIFY, &seen, "remote free");
  if (local < 0 || remote < 0) return;
  /* Blocks freed by other threads stay counted as used until collected. */
  if ((long)s->used != (long)s->reserved - local)
    bad_on(k, ON_SPAN, i, "span %u: %u blocks counted used, but %u carved and %ld on its local free list", i, s->used,
        s->reserved, local);
}

/* Is span i, as the tiling walk saw it, the next one of heap hi's class c
 * list (full or avail) after prev?  Tiled but not yet listed, and small. */
static inline int list_fits(const struct seen *e, uint32_t hi, unsigned c, int full, uint32_t prev) {
  return e->owner == hi && e->cls == c && e->prev == prev &&
         (e->tag & (SEEN_TILED | SEEN_SMALL | SEEN_FULL)) == (1 | SEEN_SMALL | (full ? SEEN_FULL : 0));
}

/* Walks one class list of heap hi, marking its spans listed; reports the
 * first span that does not belong, and stops there. */
static void walk_list(struct ck *k, struct seen *seen, uint32_t count, uint32_t hi, unsigned c, int full) {
  const struct theap *th = &k->v->heaps[hi];
  uint32_t prev = 0, n = 0;
  for (uint32_t i = full ? th->cls[c].full : th->cls[c].avail; i; i = seen[i].next) {
    if (i >= count || ++n > count) {
      bad_on(k, ON_HEAP_LISTS, hi, "heap %u class %u: broken %s list", hi, c, full ? "full" : "avail");
      return;
    }
    if (!list_fits(&seen[i], hi, c, full, prev)) {
      bad_on(k, ON_HEAP_LISTS, hi, "heap %u class %u: span %u on its %s list does not belong there", hi, c, i,
             full ? "full" : "avail");
      return;
    }
    set_tiled(&seen[i], 2);
    prev = i;
  }
}

/* The walk of every class list of every heap that walk_list makes, with the
 * same tests, but LANES lists at a time, round robin: each step's span is
 * prefetched one round ahead, so that LANES misses are in flight instead of
 * one (the lists run through the descriptors in no order).  Returns 1 if no
 * list broke, with every listed span marked listed (3, not walk_list's 2,
 * so that the marks can be taken back): a span on two lists or twice on
 * one is already listed on its second visit, whatever the order of visits,
 * and that fails.  So when no list breaks here none breaks in walk_list's
 * order either, and the same spans end up listed.  0 as soon as a list
 * breaks: the caller walks them all again, in order, to report. */
#define LANES 8
static int lists_sound(const struct hv *v, struct seen *seen, uint32_t count, uint32_t max_heap) {
  struct lane {
    uint32_t i, prev, n, list; /* list: (hi * SH_NCLASS + c - 1) * 2 + full */
  } ln[LANES];
  const uint32_t nlists = max_heap * SH_NCLASS * 2;
  uint32_t next_list = 0;
  unsigned busy = 0;
  for (unsigned l = 0; l < LANES; l++) ln[l].i = 0;
  do {
    busy = 0;
    for (unsigned l = 0; l < LANES; l++) {
      struct lane *a = &ln[l];
      if (!a->i) {
        while (next_list < nlists && !a->i) {
          const struct heap_class *hc = &v->heaps[next_list / (SH_NCLASS * 2)].cls[next_list / 2 % SH_NCLASS + 1];
          a->i = next_list & 1 ? hc->full : hc->avail;
          a->list = next_list++;
        }
        if (!a->i) continue;
        a->prev = a->n = 0;
      } else {
        uint32_t i = a->i;
        if (i >= count || ++a->n > count ||
            !list_fits(&seen[i], a->list / (SH_NCLASS * 2), a->list / 2 % SH_NCLASS + 1, a->list & 1, a->prev))
          return 0;
        set_tiled(&seen[i], 3);
        a->prev = i;
        if (!(a->i = seen[i].next)) continue;
      }
      if (a->i < count) __builtin_prefetch(&seen[a->i]);
      busy = 1;
    }
  } while (busy || next_list < nlists);
  return 1;
}

long hv_check(const struct hv *v, hv_report rep, void *ctx) { return hv_check_ex(v, 0, rep, ctx, NULL); }

long hv_check_ex(const struct hv *v, unsigned flags, hv_report rep, void *ctx, struct hv_faults *f) {
  struct ck k = {v, rep, ctx, 0, flags, f};
  const struct shm_header *h = v->h;
  /* One reading of the counters that bound the walk: a live heap may grow
   * meanwhile, and nothing below may index past what was sized here. */
  const uint32_t count = h->span_count, top = h->top, max_heap = h->max_heap;
  if (count == 0 || count > v->nspans || top > v->npages || max_heap > SH_MAX_HEAPS) {
    bad(&k, "header counters out of range: %u descriptors, top %u, %u heaps", count, top, max_heap);
    return k.problems;
  }
  const size_t seen_len = (size_t)count * sizeof(struct seen);
  struct seen *seen = os_scratch(seen_len);
  if (!seen) return -1;
  prefault(v->spans, (size_t)count * sizeof *v->spans);
  prefault(v->pagemap, (size_t)top * sizeof *v->pagemap);
  uint64_t dirty = 0, live = 0, large = 0, large_bytes = 0, nfree = 0, ndirtyspans = 0;
  int prev_free = 0;
  uint32_t pg = 0;
  while (pg < top) {
    uint32_t i = v->pagemap[pg];
    struct span sc;
    span_read(v, i < count ? i : 0, &sc);
    const struct span *s = &sc;
    if (i == 0 || i >= count || s->first != pg || s->npages == 0 || s->npages > top - pg) {
      bad(&k, "page %u: the page map entry (%u) does not start a span there; the heap walk stops", pg, i);
      break;
    }
    if (tiled(&seen[i])) {
      bad(&k, "span %u covers two places of the heap", i);
      break;
    }
    seen[i] = (struct seen){.next = s->next, .prev = s->prev, .owner = s->owner, .cls = s->cls,
                            .tag = (uint8_t)(1 | (s->state == SPAN_SMALL ? SEEN_SMALL : 0) |
                                             (s->flags & SPAN_FULL ? SEEN_FULL : 0) |
                                             (s->flags & SPAN_DAMAGED ? SEEN_DAMAGED : 0))};
    if (v->pagemap[pg + s->npages - 1] != i) bad(&k, "span %u: page map entry of its last page points elsewhere", i);
    switch (s->state) {
    case SPAN_FREE:
      if (prev_free) bad_on(&k, ON_COUNTERS, i, "span %u: free, next to another free span (not coalesced)", i);
      if (s->ndirty > s->npages) bad(&k, "span %u: %u dirty pages of %u", i, s->ndirty, s->npages);
      dirty += s->ndirty;
      ndirtyspans += s->ndirty != 0;
      nfree++;
      break;
    case SPAN_SMALL:
      live += s->npages;
      check_small(&k, i, s);
      break;
    case SPAN_LARGE:
      live += s->npages;
      large++;
      large_bytes += (uint64_t)s->npages << SH_PAGE_SHIFT;
      break;
    default:
      bad(&k, "span %u at page %u: state %u", i, pg, s->state);
    }
    prev_free = s->state == SPAN_FREE;
    pg += s->npages;
  }
  int walked = pg == top;
  if (walked) {
    if (f) f->walked = 1, f->dirty = dirty, f->live = live, f->large = large, f->large_bytes = large_bytes;
    if (dirty != h->dirty_pages) bad_on(&k, ON_COUNTERS, 0, "%llu dirty free pages, the header says %llu", (unsigned long long)dirty, (unsigned long long)h->dirty_pages);
    if (live != h->live_pages) bad_on(&k, ON_COUNTERS, 0, "%llu pages in use, the header says %llu", (unsigned long long)live, (unsigned long long)h->live_pages);
    if (large != h->large_count || large_bytes != h->large_in_use)
      bad_on(&k, ON_COUNTERS, 0, "%llu large blocks of %llu bytes, the header says %llu of %llu", (unsigned long long)large,
          (unsigned long long)large_bytes, (unsigned long long)h->large_count, (unsigned long long)h->large_in_use);
  }

  /* Free bins: every free span in the bin of its size, once. */
  uint64_t binned = 0;
  for (unsigned b = 0; b < SH_NBINS; b++) {
    int set = (h->binmap[b >> 6] >> (b & 63)) & 1;
    if (set != (h->bins[b] != 0)) bad(&k, "bin %u: map bit %d but the bin is %s", b, set, h->bins[b] ? "full" : "empty");
    uint32_t prev = 0, steps = 0;
    for (uint32_t i = h->bins[b]; i; i = v->spans[i].next) {
      if (i >= count || ++steps > count) {
        bad(&k, "bin %u: broken list (index %u)", b, i);
        break;
      }
      const struct span *s = &v->spans[i];
      if (s->state != SPAN_FREE || !s->npages || fmt_bin_of(s->npages) != b || s->prev != prev || tiled(&seen[i]) != 1) {
        bad(&k, "bin %u: span %u (state %u, %u pages) does not belong here", b, i, s->state, s->npages);
        break;
      }
      set_tiled(&seen[i], 2);
      binned++;
      prev = i;
    }
  }
  if (walked && binned != nfree) bad(&k, "%llu free spans, %llu of them in bins", (unsigned long long)nfree, (unsigned long long)binned);

  /* The dirty list (I8): every free span with dirty pages, once.  Its age
   * order is not judged: a span out of order is purged late, nothing worse. */
  uint64_t listed = 0;
  uint32_t dprev = 0;
  for (uint32_t i = h->dirty_head, steps = 0; i; i = v->spans[i].dnext) {
    if (i >= count || ++steps > count) {
      bad(&k, "dirty list: broken (index %u)", i);
      break;
    }
    const struct span *s = &v->spans[i];
    if (s->state != SPAN_FREE || !s->ndirty || s->dprev != dprev || tiled(&seen[i]) != 2 || (seen[i].tag & SEEN_DIRTY)) {
      bad(&k, "dirty list: span %u (state %u, %u dirty pages) does not belong here", i, s->state, s->ndirty);
      break;
    }
    seen[i].tag |= SEEN_DIRTY;
    listed++;
    dprev = i;
  }
  if (h->dirty_tail != dprev) bad(&k, "dirty list: ends at span %u, the header says %u", dprev, h->dirty_tail);
  if (walked && listed != ndirtyspans)
    bad(&k, "%llu free spans with dirty pages, %llu of them on the dirty list", (unsigned long long)ndirtyspans, (unsigned long long)listed);

  /* Descriptor free list: unused descriptors only. */
  uint32_t steps = 0;
  for (uint32_t i = h->span_free; i; i = v->spans[i].next) {
    if (i >= count || ++steps > count || v->spans[i].state != SPAN_NONE || tiled(&seen[i])) {
      bad(&k, "descriptor free list: broken at %u", i);
      break;
    }
  }

  /* Thread heaps: each small span on exactly one list of its owner. */
  if (!lists_sound(v, seen, count, max_heap)) {
    /* Something is wrong, or lists_sound gave up early: the lists are
     * walked again one by one, for what is wrong and where. */
    for (uint32_t i = 1; i < count; i++)
      if (tiled(&seen[i]) == 3) set_tiled(&seen[i], 1);
    for (uint32_t hi = 0; hi < max_heap; hi++)
      for (unsigned c = 1; c <= SH_NCLASS; c++)
        for (int full = 0; full < 2; full++) walk_list(&k, seen, count, hi, c, full);
  }
  /* Roots: a whole name, a pointer into the heap area. */
  for (unsigned r = 0; r < SH_ROOT_MAX; r++) {
    const struct root *rt = &h->roots[r];
    if (!rt->name[0]) continue;
    if (!memchr((const void *)rt->name, 0, SH_ROOT_NAME)) bad(&k, "root %u: name not terminated", r);
    uint64_t off = rt->off;
    if (off && (off < v->heap_off || off >= v->heap_off + ((uint64_t)top << SH_PAGE_SHIFT)))
      bad(&k, "root %u: offset 0x%llx is outside the heap's pages", r, (unsigned long long)off);
  }
  if (walked)
    for (uint32_t i = 1; i < count; i++)
      if ((seen[i].tag & (SEEN_TILED | SEEN_SMALL | SEEN_DAMAGED)) == (1 | SEEN_SMALL)) {
        uint16_t o = seen[i].owner;
        if (o < max_heap) bad_on(&k, ON_HEAP_LISTS, o, "span %u: small span on no list of heap %u", i, o);
        else bad_on(&k, ON_SPAN, i, "span %u: small span of heap %u, which does not exist", i, o);
      }
  os_scratch_free(seen, seen_len);
  return k.problems;
}

/* Steps through the spans in address order (they tile [0, top), I2): reads
 * the span at *pg into *out and moves *pg past it.  Returns 0 at the end or
 * where the tiling is broken. */
static int span_walk(const struct hv *v, uint32_t count, uint32_t top, uint32_t *pg, struct span *out) {
  if (*pg >= top) return 0;
  uint32_t i = v->pagemap[*pg];
  if (i == 0 || i >= count) return 0;
  span_read(v, i, out);
  if (out->first != *pg || !out->npages || out->npages > top - *pg) return 0;
  *pg += out->npages;
  return 1;
}

uint64_t hv_blocks(const struct hv *v, hv_block_fn fn, void *ctx) {
  const struct shm_header *h = v->h;
  const uint32_t count = h->span_count, top = h->top;
  uint64_t n = 0;
  if (count > v->nspans || top > v->npages) return 0;
  struct span sc;
  const struct span *s = &sc;
  for (uint32_t pg = 0; span_walk(v, count, top, &pg, &sc);) {
    if (s->state == SPAN_LARGE) {
      n++;
      if (fn && fn(ctx, span_off(v, s), (uint64_t)s->npages << SH_PAGE_SHIFT, 0)) return n;
    } else if (s->state == SPAN_SMALL && s->cls >= 1 && s->cls <= SH_NCLASS &&
               s->bsize == h->class_size[s->cls] && s->reserved <= s->capacity &&
               (uint64_t)s->reserved * s->bsize <= (uint64_t)s->npages << SH_PAGE_SHIFT) {
      int stopped = 0;
      n += small_live_blocks(v->base, v->h->link_secret, s, span_off(v, s), fn, ctx, &stopped);
      if (stopped) return n;
    }
  }
  return n;
}

uint64_t hv_block_size(const struct hv *v, uint64_t off) {
  const struct shm_header *h = v->h;
  const uint32_t count = h->span_count, top = h->top;
  if (top > v->npages || count > v->nspans) return 0;
  if (off < v->heap_off || off >= v->heap_off + ((uint64_t)top << SH_PAGE_SHIFT)) return 0;
  uint32_t pg = (uint32_t)((off - v->heap_off) >> SH_PAGE_SHIFT);
  uint32_t i = v->pagemap[pg];
  if (i == 0 || i >= count) return 0;
  struct span sc;
  span_read(v, i, &sc);
  const struct span *s = &sc;
  if (pg < s->first || pg - s->first >= s->npages) return 0;
  uint64_t rel = off - span_off(v, s);
  if (s->state == SPAN_LARGE) return rel == 0 ? (uint64_t)s->npages << SH_PAGE_SHIFT : 0;
  if (s->state == SPAN_SMALL && small_index(s, rel, s->reserved) >= 0) return s->bsize;
  return 0;
}

void hv_usage(const struct hv *v, struct hv_usage *u) {
  const struct shm_header *h = v->h;
  const uint32_t count = h->span_count, top = h->top, max_heap = h->max_heap;
  memset(u, 0, sizeof *u);
  if (count > v->nspans || top > v->npages || max_heap > SH_MAX_HEAPS) return;
  u->top_pages = top;
  struct span sc;
  const struct span *s = &sc;
  for (uint32_t pg = 0; span_walk(v, count, top, &pg, &sc);) {
    if (s->state == SPAN_FREE) {
      u->free_spans++;
      u->free_pages += s->npages;
      u->dirty_pages += s->ndirty;
    } else if (s->state == SPAN_SMALL && s->cls >= 1 && s->cls <= SH_NCLASS) {
      u->cls_spans[s->cls]++;
      u->cls_used[s->cls] += s->used;
      u->small_pages += s->npages;
    } else if (s->state == SPAN_LARGE) {
      u->large_count++;
      u->large_pages += s->npages;
    }
  }
  uint64_t in_use = 0; /* modulo 2^64, as the counters are */
  for (uint32_t hi = 0; hi < max_heap; hi++) {
    in_use += v->heaps[hi].in_use;
    u->nmalloc += v->heaps[hi].nmalloc;
    u->nfree += v->heaps[hi].nfree;
    if (v->heaps[hi].owner_pid) u->heaps_owned++;
  }
  in_use += h->large_in_use;
  u->in_use = (int64_t)in_use;
}

/* ---- the processes using a heap ----------------------------------------------- */

/* Is the process of table entry e alive?  Its pid must name a process that
 * started when it did (a reused pid does not). */
int hv_proc_alive(const struct shm_proc *e) {
  int32_t pid = atomic_load(&((struct shm_proc *)e)->pid);
  uint64_t start;
  return pid > 0 && os_proc_stat(pid, NULL, &start) && start == e->start;
}

void hv_users(const struct hv *v, struct hv_users *u) {
  memset(u, 0, sizeof *u);
  for (unsigned i = 0; i < SH_MAX_PROCS; i++) {
    const struct shm_proc *e = &v->h->procs[i];
    int32_t pid = atomic_load(&((struct shm_proc *)e)->pid);
    if (!pid) continue;
    if (hv_proc_alive(e)) {
      if (!u->alive++) u->pid = pid;
    } else {
      u->dead++;
    }
  }
}
