/* The exported libc names: every one of them is here.  glibc-internal
 * callers use the __libc_* names, programs call pvalloc, valloc,
 * reallocarray..., and a block from one allocator freed by another is a
 * crash far from its cause.
 *
 * The fast paths are here, inlined from alloc.h: a thread that has a heap
 * allocates and frees its small blocks without a call.  Anything else (the
 * heap not set up yet, no heap for this thread, a large block, another
 * thread's block) goes through the slow paths below. */
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "init.h"
#include "stats.h"

/* ---- malloc and free ------------------------------------------------------------ */

/* The heap is set up (or now is); if it cannot be (start_up said why, or
 * this thread is inside its own start-up), errno is ENOMEM. */
static inline int heap_usable(void) {
  if (likely(heap_ready())) return 1;
  errno = ENOMEM;
  return 0;
}

/* A thread has a heap only after start-up, so a thread with one may use the
 * class tables without asking.  Everything do_malloc does not finish comes
 * here and starts again: the refill, the fork gate, no heap, large. */
static __attribute__((noinline)) void *malloc_slow(size_t n) {
  if (unlikely(!heap_usable())) return NULL;
  if (n > SH_SMALL_MAX) return thread_alloc_large(n, 0, 0);
  return thread_alloc(size_class(n));
}

/* The fast path ends in a return or in a tail call, with nothing to keep
 * across a call: so it saves no registers (about a fifth of its
 * instructions when it did). */
static inline void *do_malloc(size_t n) {
  struct theap *h = tl_heap;
  if (likely(h != NULL && n <= SH_SMALL_MAX)) {
    unsigned c = size_class(n);
    if (likely(heap_enter_fast(h))) {
      void *p = heap_alloc_pop(h, c);
      heap_leave(h);
      if (likely(p != NULL)) return p;
    }
  }
  return malloc_slow(n);
}

/* Every free do_free does not finish: a bad pointer, a large block, another
 * thread's block, a block that may be free already, the fork gate. */
static __attribute__((noinline)) void free_slow(void *p, const char *fn) {
  struct span *s = alloc_block(p);
  if (unlikely(s == NULL)) {
    if (p) alloc_bad_pointer(p, fn);
    return;
  }
  int saved = errno;
  if (s->state == SPAN_SMALL) thread_free(s, p, alloc_check_small(s, p, fn));
  else free_large(s);
  errno = saved;
}

/* heap_retire keeps errno itself. */
static __attribute__((noinline)) void free_tail(struct theap *h, struct span *s) {
  heap_free_tail(h, s);
  heap_leave(h);
}

/* fn: the name the program called, for the message if p is bad.  The fast
 * path: a small block of this thread's heap whose first word does not
 * decode as a link (if it does, free_slow looks on the span's lists for a
 * double free). */
static inline void do_free(void *p, const char *fn) {
  struct span *s = alloc_block(p);
  struct theap *h = tl_heap;
  if (likely(s != NULL && h != NULL && s->state == SPAN_SMALL && s->owner == h->index)) {
    uint64_t key = small_link_key(G.secret, ptr2off(p));
    if (likely(!alloc_looks_free(s, p, key) && heap_enter_fast(h))) {
      if (unlikely(!heap_free_push(h, s, p, key))) {
        free_tail(h, s);
        return;
      }
      heap_leave(h);
      return;
    }
  }
  free_slow(p, fn);
}

static void *do_calloc(size_t n, size_t m) {
  size_t total;
  if (unlikely(__builtin_mul_overflow(n, m, &total))) {
    errno = ENOMEM;
    return NULL;
  }
  if (total <= SH_SMALL_MAX) {
    void *p = do_malloc(total);
    if (p) memset(p, 0, total);
    return p;
  }
  if (unlikely(!heap_usable())) return NULL;
  return thread_alloc_large(total, 0, 1);
}

static void *do_realloc(void *p, size_t n) {
  if (!p) return do_malloc(n);
  if (n == 0) {
    do_free(p, "realloc"); /* glibc: realloc(p, 0) frees p and returns NULL */
    return NULL;
  }
  struct span *s = alloc_block(p);
  if (!s) {
    alloc_bad_pointer(p, "realloc");
    errno = EINVAL; /* not ours: we cannot know its size, so leave it alone */
    return NULL;
  }
  if (s->state == SPAN_SMALL) alloc_check_small(s, p, "realloc");
  size_t old = alloc_usable(s);
  if (s->state == SPAN_SMALL) {
    /* Stay put while the block fits and is not more than twice too big. */
    if (n <= old && n >= old / 2) return p;
  } else if (alloc_resize_large(s, n)) {
    return p;
  }
  void *q = do_malloc(n);
  if (!q) return NULL; /* errno is ENOMEM; p is untouched, as C requires */
  memcpy(q, p, old < n ? old : n);
  do_free(p, "realloc");
  return q;
}

/* align is a power of two. */
static void *do_memalign(size_t align, size_t n) {
  if (align <= SH_ALIGN) return do_malloc(n);
  if (unlikely(!heap_usable())) return NULL;
  unsigned c = alloc_aligned_class(align, n);
  if (c) return thread_alloc(c);
  if (align > G.heap_len) {
    errno = ENOMEM;
    return NULL;
  }
  /* At least 9 pages, so a large span is never smaller than a small block's
   * limit and the descriptor pool stays within one entry per page. */
  return thread_alloc_large(n > SH_SMALL_MAX ? n : SH_SMALL_MAX + 1, align, 0);
}

/* After a free: free pages more than the floor wait for the background
 * thread (background.c), started or woken here, outside any heap edit.
 * One load of a word that changes only when it is asked for.  A macro: the
 * return address is the exported function's. */
#define AFTER_FREE()                                                                   \
  do {                                                                                 \
    if (unlikely(atomic_load_explicit(&pages_purge_wanted, memory_order_relaxed)))     \
      background_kick(__builtin_return_address(0));                                   \
  } while (0)

/* For the C++ operators (cxx.c). */
void *sh_malloc(size_t n) { return do_malloc(n); }
void sh_free(void *p) {
  do_free(p, "operator delete");
  AFTER_FREE();
}
void *sh_memalign(size_t align, size_t n) { return do_memalign(align, n); }

SH_API void *malloc(size_t n) { return do_malloc(n); }
SH_API void free(void *p) {
  do_free(p, "free");
  AFTER_FREE();
}
SH_API void *calloc(size_t n, size_t m) { return do_calloc(n, m); }
SH_API void *realloc(void *p, size_t n) {
  void *q = do_realloc(p, n);
  AFTER_FREE();
  return q;
}

SH_API void *reallocarray(void *p, size_t n, size_t m) {
  size_t total;
  if (__builtin_mul_overflow(n, m, &total)) {
    errno = ENOMEM;
    return NULL;
  }
  void *q = do_realloc(p, total);
  AFTER_FREE();
  return q;
}

static inline int pow2(size_t a) { return a && !(a & (a - 1)); }

SH_API int posix_memalign(void **out, size_t align, size_t n) {
  if (!pow2(align) || align % sizeof(void *)) return EINVAL;
  void *p = do_memalign(align, n);
  if (!p) return ENOMEM; /* errno is ENOMEM too, as glibc leaves it: programs test it */
  *out = p;
  return 0;
}

/* C17/C23 and glibc 2.38: a non-power-of-two alignment is invalid. */
SH_API void *aligned_alloc(size_t align, size_t n) {
  if (!pow2(align)) {
    errno = EINVAL;
    return NULL;
  }
  return do_memalign(align, n);
}

/* glibc's memalign rounds a non-power-of-two alignment up, to at most 2^63:
 * only a larger one is invalid.  2^63 itself is valid, and as impossible to
 * meet as a huge size, so ENOMEM. */
SH_API void *memalign(size_t align, size_t n) {
  if (align > SIZE_MAX / 2 + 1) {
    errno = EINVAL;
    return NULL;
  }
  if (!pow2(align)) align = align <= 1 ? 1 : (size_t)1 << (64 - __builtin_clzl(align));
  return do_memalign(align, n);
}

SH_API void *valloc(size_t n) { return do_memalign(SH_PAGE, n); }

SH_API void *pvalloc(size_t n) {
  size_t r;
  if (__builtin_add_overflow(n, SH_PAGE - 1, &r)) {
    errno = ENOMEM;
    return NULL;
  }
  r &= ~(SH_PAGE - 1);
  return do_memalign(SH_PAGE, r ? r : SH_PAGE);
}

SH_API size_t malloc_usable_size(void *p) {
  struct span *s = alloc_block(p);
  return s ? alloc_usable(s) : 0;
}

SH_API void *__libc_malloc(size_t n) { return do_malloc(n); }
SH_API void __libc_free(void *p) {
  do_free(p, "free");
  AFTER_FREE();
}
SH_API void *__libc_calloc(size_t n, size_t m) { return do_calloc(n, m); }
SH_API void *__libc_realloc(void *p, size_t n) {
  void *q = do_realloc(p, n);
  AFTER_FREE();
  return q;
}
SH_API void *__libc_memalign(size_t align, size_t n) { return memalign(align, n); }
SH_API void *__libc_valloc(size_t n) { return valloc(n); }
SH_API void *__libc_pvalloc(size_t n) { return pvalloc(n); }

/* ---- glibc's statistics and knobs ------------------------------------------------- */

static struct mallinfo2 info2(void) {
  struct mallinfo2 m;
  memset(&m, 0, sizeof m);
  struct stats_totals t;
  stats_totals(&t);
  if (!started()) t.in_use = t.nmalloc = t.nfree = 0;
  uint64_t use = t.in_use, heap = t.heap_bytes;
  m.arena = heap;
  m.uordblks = use;
  m.fordblks = heap > use ? heap - use : 0;
  if (G.hdr) {
    m.hblks = G.hdr->large_count;
    m.hblkhd = G.hdr->large_in_use;
    m.keepcost = G.hdr->dirty_pages << SH_PAGE_SHIFT;
  }
  return m;
}

SH_API struct mallinfo2 mallinfo2(void) { return info2(); }

SH_API struct mallinfo mallinfo(void) {
  struct mallinfo2 m2 = info2();
  struct mallinfo m;
  /* The int fields wrap as glibc's do; callers wanting more use mallinfo2. */
  m.arena = (int)m2.arena;
  m.ordblks = (int)m2.ordblks;
  m.smblks = (int)m2.smblks;
  m.hblks = (int)m2.hblks;
  m.hblkhd = (int)m2.hblkhd;
  m.usmblks = (int)m2.usmblks;
  m.fsmblks = (int)m2.fsmblks;
  m.uordblks = (int)m2.uordblks;
  m.fordblks = (int)m2.fordblks;
  m.keepcost = (int)m2.keepcost;
  return m;
}

/* glibc's lines first (its in-use and system bytes), then the heap's own
 * figures per size class; on stderr, as glibc writes them. */
SH_API void malloc_stats(void) {
  int saved = errno;
  struct mallinfo2 m = info2();
  fprintf(stderr,
          "Arena 0:\nsystem bytes     = %10zu\nin use bytes     = %10zu\nTotal (incl. mmap):\nsystem bytes     = %10zu\n"
          "in use bytes     = %10zu\nmax mmap regions = %10zu\nmax mmap bytes   = %10zu\n",
          m.arena, m.uordblks, m.arena, m.uordblks, (size_t)0, (size_t)0); /* no mmap: large blocks are below */
  if (started()) {
    struct stats_class c[SH_NCLASS + 1];
    struct stats_pages pg;
    stats_classes(c, &pg);
    fprintf(stderr, "libshmheap: heap of %zu bytes, %zu carved\n%10s %8s %12s %12s\n", (size_t)G.heap_len, m.arena,
            "class", "spans", "blocks used", "blocks free");
    for (unsigned k = 1; k <= SH_NCLASS; k++)
      if (c[k].spans)
        fprintf(stderr, "%10u %8llu %12llu %12llu\n", small_class_size[k], (unsigned long long)c[k].spans,
                (unsigned long long)c[k].used, (unsigned long long)c[k].free);
    fprintf(stderr, "large blocks     = %10zu (%zu bytes)\nfree page runs   = %10llu (%llu bytes, %llu not handed back)\n",
            m.hblks, m.hblkhd, (unsigned long long)pg.free_runs, (unsigned long long)(pg.free_pages << SH_PAGE_SHIFT),
            (unsigned long long)(pg.dirty_pages << SH_PAGE_SHIFT));
  }
  errno = saved;
}

static void info_totals(FILE *fp, uint64_t rest_count, uint64_t rest_size, const struct mallinfo2 *m, int all) {
  fprintf(fp, "<total type=\"fast\" count=\"0\" size=\"0\"/>\n<total type=\"rest\" count=\"%llu\" size=\"%llu\"/>\n",
          (unsigned long long)rest_count, (unsigned long long)rest_size);
  if (all) fprintf(fp, "<total type=\"mmap\" count=\"%zu\" size=\"%zu\"/>\n", m->hblks, m->hblkhd);
  fprintf(fp, "<system type=\"current\" size=\"%zu\"/>\n<system type=\"max\" size=\"%zu\"/>\n"
              "<aspace type=\"total\" size=\"%zu\"/>\n<aspace type=\"mprotect\" size=\"%zu\"/>\n",
          m->arena, m->arena, m->arena, m->arena);
}

/* glibc's shape: <sizes> lists free chunks by size (here the free blocks of
 * each size class, and the free page runs), the totals count free space
 * ("rest"; there are no fast bins) and the large blocks ("mmap"), and
 * "system" is the heap carved so far. */
SH_API int malloc_info(int options, FILE *fp) {
  if (options != 0 || !fp) {
    errno = EINVAL;
    return -1;
  }
  struct mallinfo2 m = info2();
  uint64_t rest_count = 0, rest_size = 0;
  fprintf(fp, "<malloc version=\"1\">\n<heap nr=\"0\">\n<sizes>\n");
  if (started()) {
    struct stats_class c[SH_NCLASS + 1];
    struct stats_pages pg;
    stats_classes(c, &pg);
    for (unsigned k = 1; k <= SH_NCLASS; k++) {
      if (!c[k].free) continue;
      uint64_t bytes = c[k].free * small_class_size[k];
      fprintf(fp, "  <size from=\"%u\" to=\"%u\" total=\"%llu\" count=\"%llu\"/>\n",
              k > 1 ? small_class_size[k - 1] + 1 : 1, small_class_size[k], (unsigned long long)bytes,
              (unsigned long long)c[k].free);
      rest_count += c[k].free;
      rest_size += bytes;
    }
    if (pg.free_runs) {
      uint64_t bytes = pg.free_pages << SH_PAGE_SHIFT;
      fprintf(fp, "  <size from=\"%zu\" to=\"%llu\" total=\"%llu\" count=\"%llu\"/>\n", SH_PAGE,
              (unsigned long long)(pg.largest_run << SH_PAGE_SHIFT), (unsigned long long)bytes,
              (unsigned long long)pg.free_runs);
      rest_count += pg.free_runs;
      rest_size += bytes;
    }
  }
  fprintf(fp, "</sizes>\n");
  info_totals(fp, rest_count, rest_size, &m, 0);
  fprintf(fp, "</heap>\n");
  info_totals(fp, rest_count, rest_size, &m, 1); /* of all heaps: the one */
  fprintf(fp, "</malloc>\n");
  return 0;
}

SH_API int mallopt(int param, int value) {
  (void)param;
  (void)value;
  return 1; /* accepted, as glibc's callers expect; the knobs do not apply */
}

/* glibc's trims every arena; here what other threads freed into this
 * thread's spans, heap 0's and released slots' goes back too, then every
 * free page is purged. */
SH_API int malloc_trim(size_t pad) {
  (void)pad;
  if (!started()) return 0;
  int saved = errno;
  thread_reclaim(1);
  errno = saved;
  pages_lock();
  size_t n = page_purge_all();
  pages_unlock();
  return n > 0;
}
