/* The allocator: size classes, the per-thread fast paths, large blocks.
 *
 * malloc of a small size pops the local free list of the current span of its
 * class in the calling thread's heap; free by the owning thread pushes onto
 * it.  Neither takes a lock (I4).  A free from another thread pushes onto the
 * span's atomic thread_free list, which the owner collects when its local
 * list runs dry.  Large blocks are page runs from span.c under the lock.
 *
 * Every heap edit is bracketed by heap_enter/heap_leave, which publish
 * h->busy: a copy-mode fork waits until no thread of the process is inside
 * one, so the child copies a heap that is not being edited (fork.c). */
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <unistd.h>
#include <linux/futex.h>
#include <sys/syscall.h>

#include "internal.h"

uint32_t sh_class_size[SH_NCLASS + 1];
uint16_t sh_class_pages[SH_NCLASS + 1];
uint64_t sh_class_recip[SH_NCLASS + 1];
uint8_t sh_class_lut[65];
SH_HIDDEN int sh_have_membarrier;

/* Classes: 16..128 in steps of 16, then four per doubling up to 32 KiB, so
 * rounding wastes at most 25%.  A span is 16 KiB, or as many pages as hold 8
 * blocks of its class: one live block pins its whole span, so small spans
 * keep memory low when blocks of a size die unevenly (bench/ larson: 6.1 MB
 * peak with 16 KiB spans, 7.8 MB with 64 KiB; realloc strings: 25.8 / 28.1). */
void sh_init_classes(void) {
  unsigned c = 1;
  for (; c <= 8; c++) sh_class_size[c] = 16 * c;
  for (uint32_t base = 128; c <= SH_NCLASS; base *= 2)
    for (uint32_t k = 1; k <= 4; k++) sh_class_size[c++] = base + base / 4 * k;
  for (c = 1; c <= SH_NCLASS; c++) {
    uint32_t bytes = 16384;
    while (bytes / sh_class_size[c] < 8) bytes *= 2;
    sh_class_pages[c] = (uint16_t)(bytes >> SH_PAGE_SHIFT);
    /* block index = (offset * recip) >> 48 exactly, for offsets < 2^18 */
    sh_class_recip[c] = ((1ULL << 48) + sh_class_size[c] - 1) / sh_class_size[c];
  }
  for (unsigned i = 0; i <= 64; i++) {
    size_t n = i ? i * 16 : 1, s = n - 1;
    unsigned b = 63 - (unsigned)__builtin_clzl(s | 1);
    sh_class_lut[i] = (uint8_t)(n <= 128 ? (n + 15) / 16 : 8 + (b - 7) * 4 + ((s >> (b - 2)) & 3) + 1);
  }
}

/* ---- the fork gate ---------------------------------------------------------- */

static inline void heap_enter(struct theap *h) {
  atomic_store_explicit(&h->busy, 1, memory_order_relaxed);
  /* With membarrier the forking thread supplies the CPU fence for us
   * (asymmetric Dekker); without it we pay for a real one. */
  if (unlikely(!sh_have_membarrier)) atomic_thread_fence(memory_order_seq_cst);
  /* busy must be visible before any edit store, also to whoever finds this
   * process dead (a release fence: free on x86). */
  else atomic_thread_fence(memory_order_release);
  if (unlikely(atomic_load_explicit(&sh_fork_gate, memory_order_relaxed))) sh_heap_gate_wait(h);
}

static inline void heap_leave(struct theap *h) {
  atomic_store_explicit(&h->busy, 0, memory_order_release);
}

void sh_heap_gate_wait(struct theap *h) {
  while (atomic_load_explicit(&sh_fork_gate, memory_order_acquire)) {
    atomic_store_explicit(&h->busy, 0, memory_order_release);
    syscall(SYS_futex, &sh_fork_gate, FUTEX_WAIT_PRIVATE, 1, NULL, NULL, 0);
    atomic_store_explicit(&h->busy, 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_seq_cst);
  }
}

#define list_push sh_list_push
#define list_remove sh_list_remove

/* ---- small blocks ------------------------------------------------------------ */

/* Moves the blocks other threads freed into s onto its local list.  The
 * chain is recorded in h->pend_* before it leaves thread_free: a crash while
 * it is on neither list would otherwise lose every block in it, and the
 * repair (repair.c) puts it back. */
static int span_collect(struct theap *h, struct span *s) {
  uint64_t tf = atomic_load_explicit(&s->thread_free, memory_order_relaxed);
  if ((tf & ~TF_NOTIFY) == 0) return 0;
  h->pend_span = span_index(s);
  do {
    h->pend_head = tf & ~TF_NOTIFY; /* never 0: only the owner empties the list */
  } while (!atomic_compare_exchange_weak_explicit(&s->thread_free, &tf, 0, memory_order_acq_rel,
                                                  memory_order_relaxed));
  tf &= ~TF_NOTIFY;
  uint64_t tail = tf;
  unsigned n = 1;
  for (uint64_t nx; (nx = *(uint64_t *)off2ptr(tail)) != 0; tail = nx) n++;
  *(uint64_t *)off2ptr(tail) = s->free;
  s->free = tf;
  s->used = (uint16_t)(s->used - n);
  atomic_signal_fence(memory_order_seq_cst);
  h->pend_head = 0;
  return 1;
}

/* Carves fresh blocks off the span's untouched end, about a page at a time,
 * so a new span costs page faults only as it is used. */
static void span_carve(struct span *s) {
  uint32_t bs = s->bsize, left = (uint32_t)(s->capacity - s->reserved);
  uint32_t n = SH_PAGE / bs;
  if (n == 0) n = 1;
  if (n > left) n = left;
  char *b = span_addr(s) + (size_t)s->reserved * bs;
  uint64_t off = ptr2off(b);
  for (uint32_t k = 0; k + 1 < n; k++, off += bs) *(uint64_t *)off2ptr(off) = off + bs;
  *(uint64_t *)off2ptr(off) = s->free;
  s->free = ptr2off(b);
  s->reserved = (uint16_t)(s->reserved + n);
}

static struct span *span_new_small(struct theap *h, unsigned c) {
  int zeroed;
  sh_global_lock();
  struct span *s = span_alloc(sh_class_pages[c], 0, &zeroed);
  if (s) {
    s->cls = (uint8_t)c;
    s->bsize = sh_class_size[c];
    s->owner = h->index;
    s->capacity = (uint16_t)(((size_t)s->npages << SH_PAGE_SHIFT) / s->bsize);
    s->reserved = 0;
    s->used = 0;
    s->free = 0;
    atomic_store_explicit(&s->thread_free, 0, memory_order_relaxed);
    s->flags = 0;
    /* Only the state is logged: if it is rolled back to free, the fields
     * above and the inner page map entries are ones a free span ignores. */
    uint32_t i = span_index(s);
    for (uint32_t p = 0; p < s->npages; p++) G.pagemap[s->first + p] = i;
    atomic_thread_fence(memory_order_release);
    JW(s->state) = SPAN_SMALL;
  }
  sh_global_unlock();
  return s;
}

/* The owner parks an exhausted span on its full list.  Fails (returns 0) if
 * remote frees arrived meanwhile: then there is something to collect. */
static int span_park(struct span *s) {
  uint64_t zero = 0;
  return atomic_compare_exchange_strong_explicit(&s->thread_free, &zero, TF_NOTIFY,
                                                 memory_order_acq_rel, memory_order_relaxed);
}

static void span_unpark(struct heap_class *hc, struct span *s) {
  atomic_fetch_and_explicit(&s->thread_free, ~TF_NOTIFY, memory_order_relaxed);
  list_remove(&hc->full, s);
  s->flags &= (uint8_t)~SPAN_FULL;
  list_push(&hc->avail, s);
}

/* Remote frees landed in parked spans: bring back the ones that have blocks. */
static int rescue_full(struct theap *h, unsigned c) {
  struct heap_class *hc = &h->cls[c];
  int found = 0;
  for (uint32_t i = hc->full, nx; i; i = nx) {
    struct span *s = &G.spans[i];
    nx = s->next;
    if (atomic_load_explicit(&s->thread_free, memory_order_relaxed) & ~TF_NOTIFY) {
      span_unpark(hc, s);
      found = 1;
    }
  }
  return found;
}

/* Names the span whose free list and count the edit is about to change: a
 * repair after a kill walks that span's blocks, not every span's (I7).  The
 * compiler barrier keeps the store ahead of the edit. */
static inline void edit_mark(struct theap *h, uint32_t span) {
  h->edit_span = span;
  atomic_signal_fence(memory_order_seq_cst);
}

static __attribute__((noinline)) void *heap_alloc_refill(struct theap *h, unsigned c) {
  struct heap_class *hc = &h->cls[c];
  for (;;) {
    if (hc->avail) {
      edit_mark(h, hc->avail);
      struct span *s = &G.spans[hc->avail];
      if (!s->free) span_collect(h, s);
      if (!s->free && s->reserved < s->capacity) span_carve(s);
      if (s->free) {
        uint64_t b = s->free;
        s->free = *(uint64_t *)off2ptr(b);
        s->used++;
        return off2ptr(b);
      }
      list_remove(&hc->avail, s);
      if (span_park(s)) {
        s->flags |= SPAN_FULL;
        list_push(&hc->full, s);
      } else {
        list_push(&hc->avail, s); /* remote frees arrived: collect them next turn */
      }
      continue;
    }
    /* Exchange, not load-then-store: a notice that arrives in between must
     * not be wiped out, or its span would sit parked with blocks to give. */
    if (atomic_load_explicit(&h->full_remote, memory_order_relaxed) &&
        atomic_exchange_explicit(&h->full_remote, 0, memory_order_acq_rel)) {
      /* Each heap's full lists are scanned for every class: the counter does
       * not say which class was hit. */
      for (unsigned k = 1; k <= SH_NCLASS; k++) rescue_full(h, k);
      if (hc->avail) continue;
    }
    struct span *s = span_new_small(h, c);
    if (!s) return NULL;
    list_push(&hc->avail, s);
  }
}

static inline void *heap_alloc(struct theap *h, unsigned c) {
  uint32_t si = h->cls[c].avail;
  edit_mark(h, si);
  struct span *s = &G.spans[si];
  uint64_t b = s->free;
  void *p;
  if (likely(b != 0)) {
    s->free = *(uint64_t *)off2ptr(b);
    s->used++;
    p = off2ptr(b);
  } else {
    p = heap_alloc_refill(h, c);
    if (!p) return NULL;
  }
  h->in_use += sh_class_size[c];
  h->nmalloc++;
  return p;
}

/* Free by the owner.  A span whose last block comes back goes back to the
 * span allocator unless it is the class's current span (a malloc/free pair
 * at a span boundary must not map and unmap a span each time). */
static inline void heap_free_local(struct theap *h, struct span *s, void *p) {
  edit_mark(h, span_index(s));
  *(uint64_t *)p = s->free;
  s->free = ptr2off(p);
  s->used--;
  h->in_use -= s->bsize;
  h->nfree++;
  if (unlikely(s->flags & SPAN_FULL)) {
    /* A parked span comes back once an eighth of it is free, not at its
     * first free: otherwise a span of long-lived blocks ping-pongs between
     * the lists (park, one free, unpark, one malloc, park: two atomics and
     * a refill per block).  Blocks freed meanwhile wait at most an eighth. */
    if (s->used <= s->capacity - s->capacity / 8) span_unpark(&h->cls[s->cls], s);
  } else if (unlikely(s->used == 0) && h->cls[s->cls].avail != span_index(s)) {
    list_remove(&h->cls[s->cls].avail, s);
    int saved = errno; /* free keeps errno; purging may madvise */
    sh_global_lock();
    span_free(s);
    sh_global_unlock();
    errno = saved;
  }
}

static void heap_free_remote(struct theap *h, struct span *s, void *p) {
  /* Read before the block is published: once it is, the owner may collect
   * it, retire the span and reuse the descriptor. */
  uint16_t owner = s->owner;
  uint32_t bsize = s->bsize;
  uint64_t off = ptr2off(p);
  uint64_t old = atomic_load_explicit(&s->thread_free, memory_order_relaxed);
  do {
    *(uint64_t *)p = old & ~TF_NOTIFY;
  } while (!atomic_compare_exchange_weak_explicit(&s->thread_free, &old, off,
                                                  memory_order_release, memory_order_relaxed));
  if (old & TF_NOTIFY) atomic_fetch_add_explicit(&G.heaps[owner].full_remote, 1, memory_order_release);
  h->in_use -= bsize;
  h->nfree++;
}

/* ---- large blocks -------------------------------------------------------------- */

static void *large_alloc(size_t n, size_t align, int zero) {
  if (n > G.heap_len) {
    errno = ENOMEM;
    return NULL;
  }
  uint32_t npages = (uint32_t)((n + SH_PAGE - 1) >> SH_PAGE_SHIFT);
  uint32_t apages = align > SH_PAGE ? (uint32_t)(align >> SH_PAGE_SHIFT) : 0;
  int zeroed = 0;
  sh_global_lock();
  struct span *s = span_alloc(npages, apages, &zeroed);
  if (s) {
    JW(s->state) = SPAN_LARGE;
    JW(s->bsize) = n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
    JW(G.hdr->large_in_use) += (uint64_t)s->npages << SH_PAGE_SHIFT;
    JW(G.hdr->large_count)++;
  }
  sh_global_unlock();
  if (!s) {
    errno = ENOMEM;
    return NULL;
  }
  void *p = span_addr(s);
  if (zero && !zeroed) memset(p, 0, n);
  return p;
}

static void large_free(struct span *s) {
  sh_global_lock();
  JW(G.hdr->large_in_use) -= (uint64_t)s->npages << SH_PAGE_SHIFT;
  JW(G.hdr->large_count)--;
  span_free(s);
  sh_global_unlock();
}

/* ---- entry points ---------------------------------------------------------------- */

/* Heap 0 is edited under its lock instead of the busy flag: a dead owner of
 * the lock may have left it mid-edit, so it is rebuilt first (I7). */
SH_TLS int sh_h0_held; /* for a fork from a signal handler (fork.c) */

static void heap0_lock(struct theap *h0) {
  if (unlikely(sh_lock(&h0->lock))) {
    sh_global_lock();
    sh_heap_repair(h0);
    sh_global_unlock();
  }
  sh_h0_held = 1;
}

static void heap0_unlock(struct theap *h0) {
  sh_h0_held = 0;
  sh_unlock(&h0->lock);
}

/* Threads with no heap of their own (all slots taken, or a thread that is
 * exiting) use heap 0 under its lock. */
/* Heap 0 is guarded by its lock alone, not by the fork gate: a copy-mode
 * fork takes that lock, so its users are quiet while the child copies. */
static void *alloc_shared(unsigned c) {
  struct theap *h0 = &G.heaps[0];
  heap0_lock(h0);
  void *p = heap_alloc(h0, c);
  heap0_unlock(h0);
  return p;
}

static __attribute__((noinline)) void *alloc_class_slow(unsigned c) {
  struct theap *h = tl_heap ? tl_heap : sh_heap_acquire();
  void *p;
  if (h) {
    heap_enter(h);
    p = heap_alloc(h, c);
    heap_leave(h);
  } else {
    p = alloc_shared(c);
  }
  if (unlikely(!p)) errno = ENOMEM;
  return p;
}

/* Only after init are the class tables valid; a thread has a heap only after
 * init, so the fast path may use them. */
static inline void *alloc_class(unsigned c) {
  struct theap *h = tl_heap;
  if (likely(h != NULL)) {
    heap_enter(h);
    void *p = heap_alloc(h, c);
    heap_leave(h);
    if (unlikely(!p)) errno = ENOMEM;
    return p;
  }
  return alloc_class_slow(c);
}

static inline void ensure_init(void) {
  if (unlikely(atomic_load_explicit(&sh_ready, memory_order_acquire) != 2)) sh_init();
}

static __attribute__((noinline)) void *alloc_small_slow(size_t n) {
  ensure_init();
  return alloc_class_slow(size_class(n));
}

static inline void *alloc_small(size_t n) {
  if (likely(tl_heap != NULL)) return alloc_class(size_class(n));
  return alloc_small_slow(n);
}

void *sh_malloc(size_t n) {
  if (likely(n <= SH_SMALL_MAX)) return alloc_small(n);
  ensure_init();
  return large_alloc(n, 0, 0);
}

void *sh_calloc(size_t n, size_t m) {
  size_t total;
  if (unlikely(__builtin_mul_overflow(n, m, &total))) {
    errno = ENOMEM;
    return NULL;
  }
  if (total <= SH_SMALL_MAX) {
    void *p = alloc_small(total);
    if (p) memset(p, 0, total);
    return p;
  }
  ensure_init();
  return large_alloc(total, 0, 1);
}

/* The span and kind of a block the caller hands back, or NULL if p is not
 * the start of a live block of ours.  Never trusts p: a pointer from another
 * allocator, an interior pointer or a stale page map entry is refused. */
static inline struct span *block_span(const void *p) {
  uintptr_t off = (uintptr_t)p - G.heap_lo;
  if (unlikely(off >= G.heap_len)) return NULL;
  struct span *s = &G.spans[G.pagemap[off >> SH_PAGE_SHIFT]];
  uint64_t rel = off - ((uint64_t)s->first << SH_PAGE_SHIFT);
  if (likely(s->state == SPAN_SMALL)) {
    if (unlikely(rel >= ((uint64_t)s->npages << SH_PAGE_SHIFT))) return NULL;
    uint64_t q = (rel * sh_class_recip[s->cls]) >> 48;
    if (unlikely(q * s->bsize != rel || q >= s->reserved)) return NULL;
    return s;
  }
  if (s->state == SPAN_LARGE && rel == 0) return s;
  return NULL;
}

static __attribute__((noinline)) void free_slow(struct span *s, void *p) {
  if (s->state == SPAN_LARGE) {
    large_free(s);
    return;
  }
  struct theap *h = tl_heap ? tl_heap : sh_heap_acquire();
  if (h) {
    heap_enter(h);
    if (s->owner == h->index) heap_free_local(h, s, p);
    else heap_free_remote(h, s, p);
    heap_leave(h);
    return;
  }
  struct theap *h0 = &G.heaps[0];
  heap0_lock(h0);
  if (s->owner == 0) heap_free_local(h0, s, p);
  else heap_free_remote(h0, s, p);
  heap0_unlock(h0);
}

void sh_free(void *p) {
  struct span *s = block_span(p);
  if (unlikely(s == NULL)) return; /* NULL, or not a block of ours: ignored */
  struct theap *h = tl_heap;
  if (likely(h != NULL && s->state == SPAN_SMALL && s->owner == h->index)) {
    heap_enter(h);
    heap_free_local(h, s, p);
    heap_leave(h);
    return;
  }
  int saved = errno;
  free_slow(s, p);
  errno = saved;
}

size_t sh_usable_size(const void *p) {
  struct span *s = block_span(p);
  if (!s) return 0;
  if (s->state == SPAN_SMALL) return s->bsize;
  return (size_t)s->npages << SH_PAGE_SHIFT;
}

void *sh_realloc(void *p, size_t n) {
  if (!p) return sh_malloc(n);
  if (n == 0) {
    sh_free(p); /* glibc: realloc(p, 0) frees p and returns NULL */
    return NULL;
  }
  struct span *s = block_span(p);
  if (!s) {
    errno = EINVAL; /* not ours: we cannot know its size, so leave it alone */
    return NULL;
  }
  size_t old;
  if (s->state == SPAN_SMALL) {
    old = s->bsize;
    /* Stay put while the block fits and is not more than twice too big. */
    if (n <= old && n >= old / 2) return p;
  } else {
    old = (size_t)s->npages << SH_PAGE_SHIFT;
    if (n > SH_SMALL_MAX && n <= G.heap_len) {
      uint32_t np = (uint32_t)((n + SH_PAGE - 1) >> SH_PAGE_SHIFT);
      if (np == s->npages) return p;
      sh_global_lock();
      uint32_t before = s->npages;
      int ok = span_resize(s, np);
      if (ok) {
        JW(G.hdr->large_in_use) += ((uint64_t)s->npages - before) << SH_PAGE_SHIFT;
        JW(s->bsize) = n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
      }
      sh_global_unlock();
      if (ok) return p;
    }
  }
  void *q = sh_malloc(n);
  if (!q) return NULL; /* errno is ENOMEM; p is untouched, as C requires */
  memcpy(q, p, old < n ? old : n);
  sh_free(p);
  return q;
}

/* align is a power of two.  Small requests take the first class whose block
 * size is a multiple of align: span starts are page aligned, so every block
 * of such a class is aligned and free() needs no special case. */
void *sh_memalign(size_t align, size_t n) {
  if (align <= SH_ALIGN) return sh_malloc(n);
  ensure_init();
  if (n <= SH_SMALL_MAX && align <= SH_PAGE) {
    for (unsigned c = size_class(n); c <= SH_NCLASS; c++)
      if (sh_class_size[c] % align == 0) return alloc_class(c);
  }
  if (align > G.heap_len) {
    errno = ENOMEM;
    return NULL;
  }
  /* At least 9 pages, so a large span is never smaller than a small block's
   * limit and the descriptor pool stays within one entry per page. */
  return large_alloc(n > SH_SMALL_MAX ? n : SH_SMALL_MAX + 1, align, 0);
}
