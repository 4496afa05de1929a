/* The mark of a collection (mark.c): which blocks of a heap the named roots
 * reach.  Shared by the library, which frees the rest at restart
 * (collect.c), and shmheap-dump --garbage, which only counts them.  It
 * reads the segment wherever it is mapped and writes only its own scratch
 * tables: the heap is input from a possibly dead, buggy or live writer.
 *
 * The rules (shmheap(7), "What a restart frees"):
 *  - conservative and exact about what it sees: a block is reached when an
 *    8-byte-aligned word of a reached block or a root holds an address
 *    inside it (its first byte, an interior byte, or one past its end where
 *    that is not the first byte of a block in use: reach());
 *  - only live blocks are marked or scanned: a stale pointer into a free
 *    block keeps nothing alive;
 *  - a span whose free lists do not walk cleanly (a cycle, a link out of the
 *    span) is "unswept": its carved blocks all count as live;
 *  - a small span attach would take out of use (its shape not its class's,
 *    damaged, an owner that is no heap) is "opaque": one block, scanned
 *    whole, never freed.
 * Which span covers a page comes from the tiling walk of the page map
 * (never from the descriptors alone: a stray descriptor outside the tiling
 * covers nothing), and a span's block count is recounted from its lists. */
#ifndef SHMHEAP_MARK_H
#define SHMHEAP_MARK_H

#include "small.h"

/* The heap to mark, as the caller validated it. */
struct mark_view {
  const char *map;            /* where the segment is mapped here */
  const struct shm_header *h; /* roots, class tables */
  const struct span *spans;   /* descriptors [0, count): a copy if others may write them */
  const uint32_t *pagemap;
  const struct theap *heaps;  /* [0, max_heap) */
  uint64_t heap_off, secret;
  uint64_t home;              /* the first heap byte's address in the heap's users: what pointers hold */
  uint32_t top, count, max_heap;
};

struct gc {
  const struct mark_view *v;
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
  /* Called before a large block or an opaque span is scanned (heap
   * offsets from the first heap page), or NULL. */
  void (*reading)(uint64_t rel, uint64_t len);
  int failed;        /* no scratch memory for the stack: the mark is incomplete */
};

static inline int gc_bit(const uint64_t *m, uint64_t g) { return (m[g >> 6] >> (g & 63)) & 1; }
static inline void gc_bit_set(uint64_t *m, uint64_t g) { m[g >> 6] |= 1ULL << (g & 63); }

/* The tables of c for heap v, from the tiling walk: 0, or -1 with why
 * filled (no scratch memory, a page map entry that starts no span). */
SH_HIDDEN int mark_tables(struct gc *c, const struct mark_view *v, char *why, size_t whylen);
/* The live blocks of every small span that is not opaque (walks the free
 * lists: the pages are best mapped first). */
SH_HIDDEN void mark_notes(struct gc *c);
/* Marks what the named roots reach; c->failed if the stack ran out. */
SH_HIDDEN void mark_from_roots(struct gc *c);
SH_HIDDEN void mark_free(struct gc *c);
/* Is small span i, at page first, one whose blocks a collection frees? */
static inline int mark_sweepable(const struct gc *c, uint32_t i) {
  const struct span *s = &c->v->spans[i];
  return s->state == SPAN_SMALL && s->first < c->v->top && c->owner[s->first] == i && !gc_bit(c->unswept, i);
}

#endif
