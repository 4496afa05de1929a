/* The allocator (alloc.h): the slow paths of the per-thread heaps, large
 * blocks, and the fork gate.
 *
 * malloc of a small size pops the local free list of the current span of its
 * class in the calling thread's heap; free by the owning thread pushes onto
 * it.  Neither takes a lock (I4).  A free from another thread pushes onto the
 * span's atomic thread_free list, which the owner collects when its local
 * list runs dry.  Large blocks are page runs from pages.c under the lock.
 *
 * Every heap edit is bracketed by heap_enter/heap_leave, which publish
 * h->busy: a copy-mode fork closes the gate and waits until no thread of the
 * process is inside one, so the child copies a heap that is not being
 * edited (fork.c). */
#include <errno.h>
#include <string.h>

#include "alloc.h"

/* ---- the fork gate ------------------------------------------------------------ */

_Atomic int alloc_gate;
int alloc_membarrier;

void alloc_gate_register(void) {
  alloc_membarrier = os_membarrier_register();
  if (alloc_membarrier) atomic_fetch_and(&alloc_gate, ~GATE_FENCE);
  else atomic_fetch_or(&alloc_gate, GATE_FENCE);
}

/* After the gate is closed, a barrier on every CPU of the process makes each
 * thread's busy store visible, or its next heap_enter see the gate. */
int alloc_gate_close(void) {
  int closed = (atomic_fetch_or(&alloc_gate, GATE_CLOSED) & GATE_CLOSED) == 0;
  if (alloc_membarrier) os_membarrier();
  else atomic_thread_fence(memory_order_seq_cst);
  return closed;
}

void alloc_gate_open(void) {
  atomic_fetch_and(&alloc_gate, ~GATE_CLOSED);
  os_futex_wake_all(&alloc_gate);
}

void alloc_gate_pass(struct theap *h) {
  /* Without membarrier the fence between the busy store and the look at
   * the gate is ours to make (Dekker): the look that counts is this one. */
  if (!alloc_membarrier) atomic_thread_fence(memory_order_seq_cst);
  int g;
  while ((g = atomic_load_explicit(&alloc_gate, memory_order_acquire)) & GATE_CLOSED) {
    atomic_store_explicit(&h->busy, 0, memory_order_release);
    os_futex_wait(&alloc_gate, g);
    atomic_store_explicit(&h->busy, 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_seq_cst);
  }
}

/* ---- a full heap --------------------------------------------------------------------- */

/* The heap could not give n bytes.  Said once per process (a forked child
 * is another one), without allocating: the program's own message, if any,
 * says only "out of memory" (Python's MemoryError, redis's "Out Of Memory
 * allocating 23 bytes"), and nothing else would tell that the limit is
 * SHMHEAP_SIZE and not the machine's memory.  Sizes that no allocator can
 * meet (above PTRDIFF_MAX: glibc fails them too) are not the heap's fault. */
void alloc_out_of_heap(size_t n) {
  static _Atomic pid_t said;
  if (n > PTRDIFF_MAX) return;
  pid_t self = os_getpid();
  if (atomic_exchange(&said, self) == self) return;
  int saved = errno;
  const uint64_t mib = 1 << 20;
  const struct shm_header *h = G.hdr;
  if (opts.have_key)
    os_say("libshmheap: pid %d: the heap of SHMHEAP_KEY=%s is full: %llu MiB of its %llu MiB in use, and %zu bytes more do not fit: the program gets ENOMEM (or std::bad_alloc); a keyed heap keeps its size: a larger one is a new heap, formed with a larger SHMHEAP_SIZE once this one is removed (shmheap-dump --remove, or SHMHEAP_FRESH=1, which discards its data)",
           (int)self, options_key_label(), (unsigned long long)((h->live_pages << SH_PAGE_SHIFT) / mib),
           (unsigned long long)(G.heap_len / mib), n);
  else
    os_say("libshmheap: pid %d: the heap is full: %llu MiB of its %llu MiB in use, and %zu bytes more do not fit: the program gets ENOMEM (or std::bad_alloc); set SHMHEAP_SIZE larger (now %llu MiB)",
           (int)self, (unsigned long long)((h->live_pages << SH_PAGE_SHIFT) / mib),
           (unsigned long long)(G.heap_len / mib), n, (unsigned long long)(opts.size / mib));
  errno = saved;
}

/* ---- small blocks ---------------------------------------------------------------- */

static struct span *span_new_small(struct theap *h, unsigned c) {
  int zeroed;
  pages_lock();
  journal_begin();
  struct span *s = page_alloc(small_class_pages[c], 0, &zeroed);
  if (s) {
    s->cls = (uint8_t)c;
    s->bsize = small_class_size[c];
    s->owner = h->index;
    s->capacity = (uint16_t)(((size_t)s->npages << SH_PAGE_SHIFT) / s->bsize);
    s->reserved = 0;
    s->used = 0;
    /* free shares its word with the dirty-list links of a free span (the
     * union in format.h): logged, so that an edit rolled back (a kill
     * before journal_end) leaves the span on the dirty list with the links
     * it had.  Cleared unlogged, the links read 0 after the rollback; the
     * next unlink of its neighbour then wrote a dirty-list link into this
     * word once the span was small again, and the carve chained it as a
     * free block (check_fork share:t_share_child_killed, 1 run in 25). */
    JW(s->free) = 0;
    atomic_store_explicit(&s->thread_free, 0, memory_order_relaxed);
    s->flags = 0;
    /* The state is logged too: if it is rolled back to free, the other
     * fields above and the inner page map entries are ones a free span
     * ignores. */
    uint32_t i = span_index(s);
    for (uint32_t p = 0; p < s->npages; p++) G.pagemap[s->first + p] = i; /* I3 */
    atomic_thread_fence(memory_order_release);
    JW(s->state) = SPAN_SMALL;
  }
  journal_end();
  page_purge_due();
  pages_unlock();
  return s;
}

/* Remote frees landed in parked spans: bring back the ones that have blocks. */
static int rescue_full(struct theap *h, unsigned c) {
  struct heap_class *hc = &h->cls[c];
  int found = 0;
  for (uint32_t i = hc->full, nx, n = 0; i; i = nx) {
    if (unlikely(!span_step_ok(i, &n))) pages_bad_list("full-span", c, i);
    struct span *s = &G.spans[i];
    nx = s->next;
    if (atomic_load_explicit(&s->thread_free, memory_order_relaxed) & ~TF_NOTIFY) {
      small_unpark(hc, s);
      found = 1;
    }
  }
  return found;
}

__attribute__((noinline)) void *heap_alloc_refill(struct theap *h, unsigned c) {
  struct heap_class *hc = &h->cls[c];
  for (;;) {
    if (hc->avail) {
      edit_mark(h, hc->avail);
      struct span *s = &G.spans[hc->avail];
      if (!s->free) small_collect(h, s);
      if (!s->free && s->reserved < s->capacity) small_carve(s);
      if (s->free) return small_pop(s);
      small_park(hc, s);
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
    if (!s) return NULL; /* the caller reclaims what it can and tries again (thread.c) */
    small_list_push(&hc->avail, s);
  }
}

/* An empty span that is not its class's current one goes back to the page
 * allocator. */
__attribute__((noinline)) void heap_retire(struct theap *h, struct span *s) {
  small_list_remove(&h->cls[s->cls].avail, s);
  int saved = errno; /* free keeps errno; purging may madvise */
  pages_lock();
  journal_begin();
  page_free(s);
  journal_end();
  page_purge_due();
  pages_unlock();
  errno = saved;
}

/* Out of line: the free fast path stays small. */
__attribute__((noinline)) void heap_unpark(struct theap *h, struct span *s) { small_unpark(&h->cls[s->cls], s); }

__attribute__((noinline)) void heap_free_tail(struct theap *h, struct span *s) {
  if (s->flags) {
    /* Damaged (quarantined): on no list, never retired; the block stays. */
    if (s->flags & SPAN_DAMAGED) return;
    /* A parked span comes back once a quarter of it is free, not at its
     * first free: otherwise a span of long-lived blocks ping-pongs between
     * the lists (park, one free, unpark, one malloc, park: two atomics and
     * a refill per block).  Spans are small (16 KiB: 16 blocks of 1 KiB),
     * so an eighth was two blocks and still a refill every two (bench/
     * larson 0.24 s; a quarter: 0.19 s).  Blocks freed meanwhile wait, at
     * most a quarter of a parked span (churn's peak RSS: 13.4 -> 14.8 MB). */
    if ((s->flags & SPAN_FULL) && s->used <= s->capacity - s->capacity / 4) heap_unpark(h, s);
  } else if (s->used == 0 && h->cls[s->cls].avail != span_index(s)) {
    heap_retire(h, s);
  }
}

/* The page allocator is out of pages (or malloc_trim asks): every span of h
 * that blocks freed by other threads have emptied goes back to it.  Those
 * spans wait on their owner's lists until it allocates in their class again
 * (the freeing thread may not touch another thread's lists), which a thread
 * that now allocates only other sizes never does: without this, memory one
 * thread made and others freed would serve no other size.  Parked spans with
 * remote frees come back to the class list first.  Returns the number of
 * spans retired.  The caller holds h (heap_enter, or heap 0's lock). */
unsigned heap_reclaim(struct theap *h) {
  unsigned retired = 0;
  /* Every full list is looked at below.  An exchange, as in the refill: a
   * plain store could land after a look and wipe a notice given since. */
  atomic_exchange_explicit(&h->full_remote, 0, memory_order_acq_rel);
  for (unsigned c = 1; c <= SH_NCLASS; c++) {
    struct heap_class *hc = &h->cls[c];
    rescue_full(h, c);
    for (uint32_t i = hc->avail, nx, n = 0; i; i = nx) {
      if (unlikely(!span_step_ok(i, &n))) pages_bad_list("class", c, i);
      struct span *s = &G.spans[i];
      nx = s->next;
      edit_mark(h, i);
      small_collect(h, s);
      if (s->used == 0 && !s->flags) {
        heap_retire(h, s);
        retired++;
      }
    }
  }
  return retired;
}

/* ---- large blocks -------------------------------------------------------------- */

void *alloc_large(size_t n, size_t align, int zero) {
  if (n > G.heap_len) {
    errno = ENOMEM;
    return NULL;
  }
  uint32_t npages = (uint32_t)((n + SH_PAGE - 1) >> SH_PAGE_SHIFT);
  uint32_t apages = align > SH_PAGE ? (uint32_t)(align >> SH_PAGE_SHIFT) : 0;
  int zeroed = 0;
  pages_lock();
  journal_begin();
  struct span *s = page_alloc(npages, apages, &zeroed);
  if (s) {
    JW(s->state) = SPAN_LARGE;
    JW(s->bsize) = n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
    JW(G.hdr->large_in_use) += (uint64_t)s->npages << SH_PAGE_SHIFT;
    JW(G.hdr->large_count)++;
  }
  journal_end();
  page_purge_due();
  pages_unlock();
  if (!s) {
    errno = ENOMEM;
    return NULL;
  }
  void *p = span_addr(s);
  if (zero && !zeroed) memset(p, 0, n);
  return p;
}

void free_large(struct span *s) {
  pages_lock();
  journal_begin();
  JW(G.hdr->large_in_use) -= (uint64_t)s->npages << SH_PAGE_SHIFT;
  JW(G.hdr->large_count)--;
  page_free(s);
  journal_end();
  page_purge_due();
  pages_unlock();
}

int alloc_resize_large(struct span *s, size_t n) {
  if (n <= SH_SMALL_MAX || n > G.heap_len) return 0;
  uint32_t np = (uint32_t)((n + SH_PAGE - 1) >> SH_PAGE_SHIFT);
  if (np == s->npages) return 1;
  pages_lock();
  journal_begin();
  uint32_t before = s->npages;
  int ok = page_resize(s, np);
  if (ok) {
    JW(G.hdr->large_in_use) += ((uint64_t)s->npages - before) << SH_PAGE_SHIFT;
    JW(s->bsize) = n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
  }
  journal_end();
  page_purge_due();
  pages_unlock();
  return ok;
}

void alloc_bad_pointer(const void *p, const char *fn) {
  uintptr_t off = (uintptr_t)p - G.heap_lo;
  if (off >= G.heap_len) return;
  uint32_t page = (uint32_t)(off >> SH_PAGE_SHIFT), si = G.pagemap[page];
  if (page >= G.hdr->top)
    os_abort("libshmheap: %s(): invalid pointer %p: no block was ever handed out there", fn, p);
  /* The page map is exact for every page of a small span and the first
   * and last page of the others (I3): a descriptor that covers the page is
   * the one it is in; inside a large block the entries below lead to its
   * first page.  (A scan, but on the way to abort.) */
  const struct span *s = NULL;
  for (uint32_t q = page + 1; q-- > 0 && !s;) {
    si = G.pagemap[q];
    const struct span *c = si < G.hdr->span_count ? &G.spans[si] : NULL;
    if (c && c->state != SPAN_NONE && page >= c->first && page - c->first < c->npages) s = c;
  }
  if (s) {
    if (s->state == SPAN_SMALL)
      os_abort("libshmheap: %s(): invalid pointer %p: inside a %u-byte block of span %u, not at its start", fn, p,
               s->bsize, si);
    if (s->state == SPAN_LARGE)
      os_abort("libshmheap: %s(): invalid pointer %p: inside the large block at %p (%u pages), not at its start", fn, p,
               (void *)span_addr(s), s->npages);
  }
  if (off % SH_PAGE == 0)
    os_abort("libshmheap: %s(): double free of %p (a large block: its pages are free already)", fn, p);
  os_abort("libshmheap: %s(): invalid pointer %p: in free pages of the heap", fn, p);
}

/* Span starts are page aligned, so every block of a class whose size is a
 * multiple of align is aligned, and free() needs no special case. */
unsigned alloc_aligned_class(size_t align, size_t n) {
  if (n > SH_SMALL_MAX || align > SH_PAGE) return 0;
  for (unsigned c = size_class(n); c <= SH_NCLASS; c++)
    if (small_class_size[c] % align == 0) return c;
  return 0;
}
