/* Small spans: a span of one size class carved into blocks.  The one place
 * that answers which block of a span an offset is, whether it is carved and
 * whether it is free, that walks a span's free lists, and that edits them.
 * The allocator (alloc.c), the repair of a dead thread's heap (repair.c) and
 * the reader (view.c, also in shmheap-dump) use it.
 *
 * A small span s of class c holds capacity blocks of bsize bytes from its
 * first page; blocks [0, reserved) are carved, the rest were never handed
 * out.  A carved block is free when it is on the local list (s->free, the
 * owner's) or on thread_free (pushed by other threads, I4), or in the chain
 * a collect is moving (theap.pend_*).  Links are offsets from the segment
 * base in the block's first 8 bytes (I1, I5), encoded with the heap's
 * secret (I8); the heads in the descriptors are plain offsets. */
#ifndef SHMHEAP_SMALL_H
#define SHMHEAP_SMALL_H

#include <string.h>

#include "pages.h"

/* ---- size classes (small.c) ------------------------------------------------ */

/* Process-local copies of the class tables a heap is formed with. */
extern SH_HIDDEN uint32_t small_class_size[SH_NCLASS + 1];
extern SH_HIDDEN uint16_t small_class_pages[SH_NCLASS + 1];
/* 256 entries: indexed by a descriptor's cls byte, zero past the classes. */
extern SH_HIDDEN uint64_t small_class_recip[256];
/* The same, for the exact test of small_index_fast: size = odd << shift. */
extern SH_HIDDEN uint64_t small_class_inv[256];
extern SH_HIDDEN uint8_t small_class_shift[256];
extern SH_HIDDEN uint8_t small_class_lut[65];
SH_HIDDEN void small_classes_init(void);

static inline unsigned size_class(size_t n) {
  if (n <= 1024) return small_class_lut[(n + 15) >> 4];
  size_t s = n - 1;
  unsigned b = 63 - (unsigned)__builtin_clzl(s);
  return 8 + (b - 7) * 4 + (unsigned)((s >> (b - 2)) & 3) + 1;
}

/* ---- which block ----------------------------------------------------------------- */

/* Block index of byte rel of small span s (rel from the span's start), or
 * -1 unless a block below limit starts there.  Any bsize (the reader's
 * spans are untrusted). */
static inline long small_index(const struct span *s, uint64_t rel, uint32_t limit) {
  if (!s->bsize || rel % s->bsize) return -1;
  uint64_t b = rel / s->bsize;
  return b < limit ? (long)b : -1;
}

/* The same for a span of this process's heap, whose class tables are known
 * (the fast paths: three times per malloc/free pair).  For size = odd <<
 * shift, multiplying by odd's inverse mod 2^64 and rotating right by shift
 * is a bijection of the 64-bit numbers that maps q * size to q for every q
 * below 2^64 / size: so the result is below reserved exactly when rel is
 * the start of a carved block, for any rel (one past a wrap included), and
 * it is the block's index.  One multiplication, no division, no range test
 * of its own. */
static inline long small_index_fast(const struct span *s, uint64_t rel) {
  unsigned r = small_class_shift[s->cls];
  uint64_t x = rel * small_class_inv[s->cls];
  uint64_t q = (x >> r) | (x << ((64 - r) & 63));
  return likely(q < s->reserved) ? (long)q : -1;
}

/* ---- links inside free blocks (I8) ------------------------------------------------- */

/* A free block's first 8 bytes hold the offset of the next one XOR a key
 * made of the heap's secret and the block's own offset (safe-linking, as in
 * glibc; mimalloc's secure mode encodes likewise).  What an overflow from
 * the block below or a write after free leaves there (zeros, text, a
 * pointer) decodes to an offset that is not a block of the span, so a walk
 * stops at it instead of following it; a link copied from another block
 * decodes wrong too.  The reader passes the secret it read from the header. */
static inline uint64_t small_link_key(uint64_t secret, uint64_t where) {
  return secret ^ (where * 0x9e3779b97f4a7c15ULL);
}
static inline uint64_t small_link_read(const char *base, uint64_t secret, uint64_t where) {
  return *(const uint64_t *)(base + where) ^ small_link_key(secret, where);
}

/* ---- marks: one bit per block (capacity fits 16 bits) ------------------------------ */

struct small_marks {
  uint8_t bit[0x10000 / 8];
};
static inline void small_marks_clear(struct small_marks *m, uint32_t nblocks) {
  memset(m->bit, 0, ((size_t)nblocks + 7) / 8);
}
static inline int small_marked(const struct small_marks *m, uint64_t b) {
  return m->bit[b >> 3] & (1u << (b & 7));
}
static inline void small_mark(struct small_marks *m, uint64_t b) {
  m->bit[b >> 3] |= (uint8_t)(1u << (b & 7));
}

/* ---- walks (small.c): at any address, bounded --------------------------------------- */

/* Why a walk stopped. */
enum small_stop { SMALL_END, SMALL_NOT_BLOCK, SMALL_TWICE };

struct small_walk {
  long n;              /* blocks marked */
  uint64_t last;       /* offset of the last block marked, 0 if none */
  uint64_t at;         /* the offending link, when stopped early */
  enum small_stop why;
};

/* Follows the list from head in the segment mapped at base, marking each
 * block; stops at the end, at a link that is not a block below limit of s
 * (whose first byte is at offset start), or at a block already marked. */
SH_HIDDEN void small_walk(const char *base, uint64_t secret, const struct span *s, uint64_t start, uint64_t head,
                          uint32_t limit, struct small_marks *m, struct small_walk *w);
/* Is off on the list from head (bounded by the span's capacity)? */
SH_HIDDEN int small_on_list(const char *base, uint64_t secret, const struct span *s, uint64_t start, uint64_t head,
                            uint64_t off);
/* Calls fn for every carved block of s that is on neither free list, in
 * address order, until fn returns nonzero; returns the blocks passed. */
typedef int (*small_block_fn)(void *ctx, uint64_t off, uint64_t size, unsigned cls);
SH_HIDDEN uint64_t small_live_blocks(const char *base, uint64_t secret, const struct span *s, uint64_t start,
                                     small_block_fn fn, void *ctx, int *stopped);
/* Has s the shape its class has (tables of the heap at h), inside the heap? */
SH_HIDDEN int small_sound(const struct shm_header *h, const struct span *s);

/* ---- edits, by the owner of the span's heap (I4) ---------------------------------------- */

/* Class lists of a thread heap (owner only, or the repairer of a dead owner). */
/* Links s after the span at index after, or at the head if after is 0. */
static inline void small_list_insert(uint32_t *head, uint32_t after, struct span *s) {
  uint32_t i = span_index(s), nx = after ? G.spans[after].next : *head;
  s->prev = after;
  s->next = nx;
  if (nx) G.spans[nx].prev = i;
  if (after) G.spans[after].next = i;
  else *head = i;
}
static inline void small_list_push(uint32_t *head, struct span *s) { small_list_insert(head, 0, s); }

static inline void small_list_remove(uint32_t *head, struct span *s) {
  if (s->prev) G.spans[s->prev].next = s->next;
  else *head = s->next;
  if (s->next) G.spans[s->next].prev = s->prev;
  s->next = s->prev = 0;
}

/* The links of this process's heap (G.secret). */
static inline uint64_t small_next(uint64_t b) { return small_link_read(G.base, G.secret, b); }
static inline void small_set_next(uint64_t b, uint64_t nx) {
  *(uint64_t *)off2ptr(b) = nx ^ small_link_key(G.secret, b);
}
static inline uint64_t small_start(const struct span *s) {
  return G.heap_off + ((uint64_t)s->first << SH_PAGE_SHIFT);
}
/* Is nx, read from a block of s, an end or a carved block of s? */
static inline int small_link_ok(const struct span *s, uint64_t start, uint64_t nx) {
  return nx == 0 || small_index_fast(s, nx - start) >= 0;
}

/* A link of s that is not a block of it: say which and stop (small.c).
 * The span is marked damaged first, so the next start quarantines it. */
SH_HIDDEN void small_bad_link(struct span *s, uint64_t block, uint64_t link, const char *list)
    __attribute__((noreturn, cold));
/* free(p) of a small block whose first word decodes as a link: if it is on
 * one of the span's free lists it is a double free, and this stops the
 * process; otherwise (the program's data happened to decode) it returns. */
SH_HIDDEN void small_check_free(struct span *s, void *p, const char *fn);

/* Pops the head of the local list (nonzero).  One store of the head (I5).
 * The link it follows is checked first, and the block handed out has its
 * link cleared, so a live block never decodes as a free one unless the
 * program wrote what the secret encodes (the double-free check, and a
 * cycle stops at the block that comes round again). */
static inline void *small_pop(struct span *s) {
  uint64_t b = s->free;
  SH_ASSERT(b % SH_ALIGN == 0, "I5");
  uint64_t nx = small_next(b);
  if (unlikely(!small_link_ok(s, small_start(s), nx))) small_bad_link(s, b, nx, "local");
  s->free = nx;
  *(uint64_t *)off2ptr(b) = 0;
  s->used++;
  return off2ptr(b);
}

/* Pushes p on the local list: the link before the head, so the list is
 * whole at every instruction (I5).  key is p's link key, small_link_key(
 * G.secret, ptr2off(p)): the free path has made it for its double-free
 * check already. */
static inline void small_push(struct span *s, void *p, uint64_t key) {
  *(uint64_t *)p = s->free ^ key;
  s->free = ptr2off(p);
  s->used--;
}

/* Links the chain head..tail in front of the local list. */
static inline void small_splice(struct span *s, uint64_t head, uint64_t tail) {
  small_set_next(tail, s->free);
  s->free = head;
}

/* Carves fresh blocks off the span's untouched end, about a page at a time,
 * so a new span costs page faults only as it is used.  The blocks are
 * linked before they are counted carved (repair.c relies on it). */
static inline void small_carve(struct span *s) {
  uint32_t bs = s->bsize, left = (uint32_t)(s->capacity - s->reserved);
  uint32_t n = SH_PAGE / bs;
  if (n == 0) n = 1;
  if (n > left) n = left;
  char *b = span_addr(s) + (size_t)s->reserved * bs;
  uint64_t off = ptr2off(b);
  for (uint32_t k = 0; k + 1 < n; k++, off += bs) small_set_next(off, off + bs);
  small_set_next(off, s->free);
  s->free = ptr2off(b);
  s->reserved = (uint16_t)(s->reserved + n);
}

/* Moves the blocks other threads freed into s onto its local list.  The
 * chain is recorded in h->pend_* before it leaves thread_free: a crash while
 * it is on neither list would otherwise lose every block in it, and the
 * repair (repair.c) puts it back.  The walk to its tail checks each link
 * and stops at used blocks: a longer chain has a cycle or a block twice.
 * Returns 0 if there was nothing. */
static inline int small_collect(struct theap *h, struct span *s) {
  uint64_t tf = atomic_load_explicit(&s->thread_free, memory_order_relaxed);
  if ((tf & ~TF_NOTIFY) == 0) return 0;
  h->pend_span = span_index(s);
  do {
    h->pend_head = tf & ~TF_NOTIFY; /* never 0: only the owner empties the list */
  } while (!atomic_compare_exchange_weak_explicit(&s->thread_free, &tf, 0, memory_order_acq_rel,
                                                  memory_order_relaxed));
  tf &= ~TF_NOTIFY;
  const uint64_t start = small_start(s);
  if (unlikely(!small_link_ok(s, start, tf) || !s->used)) small_bad_link(s, 0, tf, "remote-free");
  uint64_t tail = tf;
  unsigned n = 1;
  for (uint64_t nx; (nx = small_next(tail)) != 0; tail = nx)
    if (unlikely(!small_link_ok(s, start, nx) || ++n > s->used)) small_bad_link(s, tail, nx, "remote-free");
  small_splice(s, tf, tail);
  s->used = (uint16_t)(s->used - n);
  atomic_signal_fence(memory_order_seq_cst);
  h->pend_head = 0;
  return 1;
}

/* Another thread's free: onto thread_free with a CAS.  Returns whether the
 * owner had parked the span and asked to hear of it (TF_NOTIFY). */
static inline int small_push_remote(struct span *s, void *p) {
  uint64_t off = ptr2off(p);
  uint64_t old = atomic_load_explicit(&s->thread_free, memory_order_relaxed);
  do {
    small_set_next(off, old & ~TF_NOTIFY);
  } while (!atomic_compare_exchange_weak_explicit(&s->thread_free, &old, off, memory_order_release,
                                                  memory_order_relaxed));
  return (old & TF_NOTIFY) != 0;
}

/* The owner parks an exhausted span on its full list.  Fails (returns 0) if
 * remote frees arrived meanwhile: then there is something to collect. */
static inline int small_park(struct heap_class *hc, struct span *s) {
  uint64_t zero = 0;
  small_list_remove(&hc->avail, s);
  if (!atomic_compare_exchange_strong_explicit(&s->thread_free, &zero, TF_NOTIFY, memory_order_acq_rel,
                                               memory_order_relaxed)) {
    small_list_push(&hc->avail, s); /* remote frees arrived: collect them next turn */
    return 0;
  }
  s->flags |= SPAN_FULL;
  small_list_push(&hc->full, s);
  return 1;
}

/* The span comes back behind the current one (the head), which keeps
 * serving until it runs dry: made current at once, a span with few blocks
 * free would run dry after them and be parked again, and the current span
 * it displaced would sit unused. */
static inline void small_unpark(struct heap_class *hc, struct span *s) {
  atomic_fetch_and_explicit(&s->thread_free, ~TF_NOTIFY, memory_order_relaxed);
  small_list_remove(&hc->full, s);
  s->flags &= (uint8_t)~SPAN_FULL;
  small_list_insert(&hc->avail, hc->avail, s);
}

#endif
