/* The allocator: per-thread heaps of small spans, large blocks, and the
 * fork gate that keeps a copy-mode fork from copying a heap mid-edit.
 *
 * A thread heap is edited only between heap_enter and heap_leave (I7), by
 * the thread that holds it, without a lock; heap 0 is edited under its lock
 * instead (thread.c).  Which heap a call uses is decided above this layer
 * (thread.c, interpose.c): everything here takes it as an argument. */
#ifndef SHMHEAP_ALLOC_H
#define SHMHEAP_ALLOC_H

#include <errno.h>

#include "small.h"

/* ---- the fork gate ---------------------------------------------------------- */

/* alloc_gate's bits.  One word, so a heap_enter looks once: nonzero sends
 * it to alloc_gate_pass, which fences when membarrier is missing and waits
 * while the gate is closed. */
#define GATE_CLOSED 1 /* a copy-mode fork is copying */
#define GATE_FENCE 2  /* no membarrier: every heap_enter fences for itself */
extern SH_HIDDEN _Atomic int alloc_gate;
extern SH_HIDDEN int alloc_membarrier;    /* the forker fences for us */
SH_HIDDEN void alloc_gate_register(void); /* at start and in every child */
SH_HIDDEN int alloc_gate_close(void);     /* 1 if this call closed it */
SH_HIDDEN void alloc_gate_open(void);
SH_HIDDEN void alloc_gate_pass(struct theap *h);

/* Publishes h->busy and returns the gate word.  busy must be visible
 * before any edit store, also to whoever finds this process dead (a release
 * fence: free on x86).  With membarrier the forking thread supplies the CPU
 * fence between the busy store and the look at the gate (asymmetric
 * Dekker); without it GATE_FENCE is set and alloc_gate_pass makes a real
 * one. */
static inline int heap_busy(struct theap *h) {
  atomic_store_explicit(&h->busy, 1, memory_order_relaxed);
  atomic_thread_fence(memory_order_release);
  return atomic_load_explicit(&alloc_gate, memory_order_relaxed);
}

static inline void heap_enter(struct theap *h) {
  if (unlikely(heap_busy(h))) alloc_gate_pass(h);
}

static inline void heap_leave(struct theap *h) {
  atomic_store_explicit(&h->busy, 0, memory_order_release);
}

/* ---- small blocks ---------------------------------------------------------------- */

/* Names the span whose free list and count the edit is about to change: a
 * repair after a kill walks that span's blocks, not every span's (I7).  The
 * compiler barrier keeps the store ahead of the edit. */
static inline void edit_mark(struct theap *h, uint32_t span) {
  SH_ASSERT(h->index == 0 || atomic_load_explicit(&h->busy, memory_order_relaxed), "I7");
  h->edit_span = span;
  atomic_signal_fence(memory_order_seq_cst);
}

/* heap_enter for the fast paths: 0 (and h left again) if the gate word is
 * not clear, and the caller takes its slow path, which enters with
 * heap_enter.  Nothing is edited before the look, so there is nothing to
 * undo. */
static inline int heap_enter_fast(struct theap *h) {
  if (likely(heap_busy(h) == 0)) return 1;
  heap_leave(h);
  return 0;
}

SH_HIDDEN void *heap_alloc_refill(struct theap *h, unsigned c);

/* A block of class c from the local list of its current span, or NULL if
 * that list is empty.  h is entered. */
static inline void *heap_alloc_pop(struct theap *h, unsigned c) {
  uint32_t si = h->cls[c].avail;
  struct span *s = &G.spans[si];
  if (unlikely(s->free == 0)) return NULL;
  edit_mark(h, si);
  void *p = small_pop(s);
  h->in_use += s->bsize;
  h->nmalloc++;
  return p;
}

static inline void *heap_alloc(struct theap *h, unsigned c) {
  void *p = heap_alloc_pop(h, c);
  if (likely(p != NULL)) return p;
  p = heap_alloc_refill(h, c);
  if (!p) return NULL;
  h->in_use += small_class_size[c];
  h->nmalloc++;
  return p;
}

SH_HIDDEN void heap_retire(struct theap *h, struct span *s);
SH_HIDDEN unsigned heap_reclaim(struct theap *h);
/* A parked span of h with blocks free again goes back on its class list,
 * behind the current span (small_unpark). */
SH_HIDDEN void heap_unpark(struct theap *h, struct span *s);

/* Free by the owner (I4), the part every free makes; key is p's link key
 * (small_push).  Returns 0 if the span needs heap_free_tail. */
static inline int heap_free_push(struct theap *h, struct span *s, void *p, uint64_t key) {
  SH_ASSERT(s->owner == h->index, "I4");
  edit_mark(h, span_index(s));
  small_push(s, p, key);
  h->in_use -= s->bsize;
  h->nfree++;
  return likely(s->flags == 0 && s->used != 0);
}

/* After heap_free_push said 0: a damaged span keeps the block; a parked one
 * may come back; an empty one that is not its class's current span goes
 * back to the page allocator (a malloc/free pair at a span boundary must
 * not map and unmap a span each time). */
SH_HIDDEN void heap_free_tail(struct theap *h, struct span *s);

static inline void heap_free_local(struct theap *h, struct span *s, void *p, uint64_t key) {
  if (unlikely(!heap_free_push(h, s, p, key))) heap_free_tail(h, s);
}

/* Free by another thread than the owner: h is the freeing thread's heap,
 * whose statistics count it.  The owner and size are read before the block
 * is published: once it is, the owner may collect it, retire the span and
 * reuse the descriptor. */
static inline void heap_free_remote(struct theap *h, struct span *s, void *p) {
  uint16_t owner = s->owner;
  uint32_t bsize = s->bsize;
  if (small_push_remote(s, p)) atomic_fetch_add_explicit(&G.heaps[owner].full_remote, 1, memory_order_release);
  h->in_use -= bsize;
  h->nfree++;
}

/* A small block from h, which the calling thread holds (not heap 0).  NULL
 * when the page allocator has no span for it: the caller reclaims and
 * tries again, and sets errno (thread_alloc_retry). */
static inline void *alloc_small(struct theap *h, unsigned c) {
  heap_enter(h);
  void *p = heap_alloc(h, c);
  heap_leave(h);
  return p;
}

/* ---- any block ----------------------------------------------------------------------- */

/* The span and kind of a block the caller hands back, or NULL if p is not
 * the start of a live block of ours.  Never trusts p: a pointer from another
 * allocator, an interior pointer or a stale page map entry is refused (I3).
 * Before the heap exists, heap_len is 0 and every p is refused. */
static inline struct span *alloc_block(const void *p) {
  uintptr_t off = (uintptr_t)p - G.heap_lo;
  if (unlikely(off >= G.heap_len)) return NULL;
  /* Only the entries of pages in use are kept exact (I3): the others hold
   * what was there, and a stray store may have put anything. */
  uint32_t si = G.pagemap[off >> SH_PAGE_SHIFT];
  if (unlikely(si >= G.nspans)) return NULL;
  struct span *s = &G.spans[si];
  uint64_t rel = off - ((uint64_t)s->first << SH_PAGE_SHIFT);
  if (likely(s->state == SPAN_SMALL)) return small_index_fast(s, rel) >= 0 ? s : NULL;
  if (s->state == SPAN_LARGE && rel == 0) return s;
  return NULL;
}

/* p, handed to fn (free, realloc...), is not the start of a live block
 * (alloc_block said NULL).  Outside the heap it is not ours and is ignored
 * (the dynamic loader frees what its own early allocator gave out); inside
 * it is the program's bug, and this names it and stops the process before
 * anything is changed. */
SH_HIDDEN void alloc_bad_pointer(const void *p, const char *fn) __attribute__((cold));

/* The checks of a small block handed back to fn, before anything changes:
 * a block on a free list stops the process (small_check_free).  Returns
 * p's link key, for the push that frees it. */
static inline int alloc_looks_free(const struct span *s, const void *p, uint64_t key) {
  return small_link_ok(s, small_start(s), *(const uint64_t *)p ^ key);
}
static inline uint64_t alloc_check_small(struct span *s, void *p, const char *fn) {
  uint64_t key = small_link_key(G.secret, ptr2off(p));
  if (unlikely(alloc_looks_free(s, p, key))) small_check_free(s, p, fn);
  return key;
}

static inline size_t alloc_usable(const struct span *s) {
  return s->state == SPAN_SMALL ? s->bsize : (size_t)s->npages << SH_PAGE_SHIFT;
}

/* ---- large blocks and alignment (alloc.c) ------------------------------------------------ */

/* errno ENOMEM on failure, said by nobody: the caller reclaims and tries
 * again (thread_alloc_large) */
SH_HIDDEN void *alloc_large(size_t n, size_t align, int zero);
/* The one line a process writes when the heap cannot give n bytes. */
SH_HIDDEN void alloc_out_of_heap(size_t n);
SH_HIDDEN void free_large(struct span *s);
SH_HIDDEN int alloc_resize_large(struct span *s, size_t n); /* in place; 1 on success */
/* The first class whose blocks are all aligned to align, for n bytes; 0 if none. */
SH_HIDDEN unsigned alloc_aligned_class(size_t align, size_t n);

#endif
