/* The page allocator: runs of 4 KiB pages ("spans") carved from the heap area.  Small-block spans
 * and large blocks come from here; freed spans are coalesced with their free
 * neighbours and binned by size; free pages unused for a while are handed
 * back with MADV_REMOVE (on shmem, MADV_DONTNEED only drops our mapping and
 * keeps the pages in the segment).
 *
 * Every function here runs with hdr->lock held (pages_lock), and every
 * store to the segment goes through JW(), the undo log (I6). */
#include <string.h>

#include "pages.h"

/* ---- the lock ------------------------------------------------------------- */

static SH_TLS int tl_locked;

int pages_locked(void) { return tl_locked; }

/* A dead owner's half-made edit is undone from the log before anyone reads
 * the state it guards (I6). */
int pages_lock(void) {
  enum lock_result r = lock_acquire(&G.hdr->lock, LOCK_COUNT);
  if (unlikely(r == LOCK_HELD))
    os_die(SH_EXIT_OSERR, "libshmheap: internal error: the page allocator's lock taken twice by one thread (malloc called from a signal handler that interrupted malloc?)");
  tl_locked = 1;
  if (likely(r == LOCK_TAKEN)) return 0;
  journal_rollback();
  return 1;
}

void pages_bad_list(const char *list, unsigned which, uint32_t at) {
  os_abort("libshmheap: corrupted heap metadata: the %s list %u is broken at descriptor %u (it loops or leaves the descriptors in use): a stray write into the heap's metadata; run shmheap-dump --check --shmid %d",
           list, which, at, G.shmid);
}

int pages_lock_found(uint64_t ns) {
  enum lock_result r = lock_acquire_within(&G.hdr->lock, LOCK_COUNT | LOCK_FOUND, ns);
  if (r == LOCK_BUSY) return PAGES_WAITED;
  if (r == LOCK_BROKEN) return PAGES_BAD_LOCK;
  if (unlikely(r == LOCK_HELD))
    os_die(SH_EXIT_OSERR, "libshmheap: internal error: the page allocator's lock taken twice by one thread at attach");
  tl_locked = 1;
  if (r == LOCK_TAKEN) return atomic_load_explicit(&G.hdr->ulog.n, memory_order_relaxed) ? PAGES_BAD_LOG : 0;
  journal_rollback();
  return 1;
}

void pages_unlock(void) {
  SH_ASSERT(!journal_open(), "I6");
  tl_locked = 0;
  lock_release(&G.hdr->lock, LOCK_COUNT);
}
/* When free pages go back.  A page fault on shmem costs a few microseconds
 * (the page is allocated, cleared and added to the segment's page cache), so
 * a program that frees and soon allocates again must find its pages still
 * there: free pages are handed back once they have lain unused for DECAY_MS,
 * and DIRTY_MIN_PAGES are kept whatever their age.  There is no cap below
 * that: free pages never exceed the heap's high-water mark, and a cap tied to
 * the live heap purges exactly the pages a fluctuating working set reuses
 * (bench/ large: 6.5 s and 480k faults with a cap of the live heap, 0.2 s
 * and 13k without).  The clock is read when the allocator runs; a program
 * that stops allocating has its free pages purged by the background thread
 * (background.c), which page_purge_due asks for once more than the floor
 * is dirty, as jemalloc's background thread does. */
#define DECAY_MS 1000u
#define DIRTY_MIN_PAGES 2048u /* 8 MiB */

static inline struct shm_header *H(void) { return G.hdr; }

/* ---- descriptor pool ---------------------------------------------------- */

static struct span *desc_new(void) {
  struct shm_header *h = H();
  uint32_t i = h->span_free;
  if (i) {
    if (unlikely(i >= h->span_count || G.spans[i].state != SPAN_NONE)) pages_bad_list("descriptor free", 0, i);
    JW(h->span_free) = G.spans[i].next;
  } else if (h->span_count < h->nspans) i = JW(h->span_count)++;
  else return NULL;
  struct span *s = &G.spans[i];
  for (unsigned k = 0; k < sizeof *s / 8; k++) journal_touch((uint64_t *)s + k, 8);
  memset(s, 0, sizeof *s);
  return s;
}

static void desc_release(struct span *s) {
  JW(s->state) = SPAN_NONE;
  JW(s->next) = H()->span_free;
  JW(H()->span_free) = span_index(s);
}

/* ---- bins ----------------------------------------------------------------- */

static void bin_insert(struct span *s) {
  struct shm_header *h = H();
  unsigned b = fmt_bin_of(s->npages);
  uint32_t i = span_index(s);
  JW(s->prev) = 0;
  JW(s->next) = h->bins[b];
  if (s->next) JW(G.spans[s->next].prev) = i;
  JW(h->bins[b]) = i;
  JW(h->binmap[b >> 6]) |= 1ULL << (b & 63);
}

static void bin_remove(struct span *s) {
  struct shm_header *h = H();
  unsigned b = fmt_bin_of(s->npages);
  if (s->prev) JW(G.spans[s->prev].next) = s->next;
  else JW(h->bins[b]) = s->next;
  if (s->next) JW(G.spans[s->next].prev) = s->prev;
  if (!h->bins[b]) JW(h->binmap[b >> 6]) &= ~(1ULL << (b & 63));
}

/* First non-empty bin at or above b, or -1. */
static int bin_next(unsigned b) {
  const uint64_t *m = H()->binmap;
  for (unsigned w = b >> 6; w < 2; w++) {
    uint64_t bits = m[w] & (w == (b >> 6) ? ~0ULL << (b & 63) : ~0ULL);
    if (bits) return (int)(w * 64 + (unsigned)__builtin_ctzll(bits));
  }
  return -1;
}

static inline void map_ends(struct span *s) {
  uint32_t i = span_index(s);
  SH_ASSERT(s->npages > 0 && s->first + s->npages <= H()->top, "I2");
  JW(G.pagemap[s->first]) = i;
  JW(G.pagemap[s->first + s->npages - 1]) = i; /* I3 */
}

/* The free span whose first page is pg, if pg starts one. */
static struct span *free_span_at(uint32_t pg) {
  if (pg >= H()->top || G.pagemap[pg] >= H()->span_count) return NULL;
  struct span *s = &G.spans[G.pagemap[pg]];
  return (s->state == SPAN_FREE && s->first == pg) ? s : NULL;
}

/* The free span whose last page is pg, if pg ends one. */
static struct span *free_span_ending(uint32_t pg) {
  if (G.pagemap[pg] >= H()->span_count) return NULL;
  struct span *s = &G.spans[G.pagemap[pg]];
  return (s->state == SPAN_FREE && s->first + s->npages - 1 == pg) ? s : NULL;
}

/* ---- the dirty list (I8) ------------------------------------------------------ */

static inline uint32_t span_ndirty(const struct span *s) { return s->ndirty; }
static inline void span_set_ndirty(struct span *s, uint32_t n) { JW(s->ndirty) = n; }

/* A link of the dirty list, before it is followed or written through: the
 * list is as writable by a stray store as the rest of the metadata. */
static inline struct span *dirty_at(uint32_t i) {
  if (unlikely(i >= H()->span_count)) pages_bad_list("dirty-span", 0, i);
  return &G.spans[i];
}

static void dirty_unlink(struct span *s) {
  struct shm_header *h = H();
  uint32_t nx = s->dnext, pv = s->dprev;
  if (pv) JW(dirty_at(pv)->dnext) = nx;
  else JW(h->dirty_head) = nx;
  if (nx) JW(dirty_at(nx)->dprev) = pv;
  else JW(h->dirty_tail) = pv;
}

/* Links s after the span at index after (0: at the head).  The caller
 * keeps the order: s's dirty_ms is at least after's and at most the next's. */
static void dirty_link_after(struct span *s, uint32_t after) {
  struct shm_header *h = H();
  uint32_t i = span_index(s);
  uint32_t nx = after ? dirty_at(after)->dnext : h->dirty_head;
  JW(s->dprev) = after;
  JW(s->dnext) = nx;
  if (after) JW(G.spans[after].dnext) = i;
  else JW(h->dirty_head) = i;
  if (nx) JW(dirty_at(nx)->dprev) = i;
  else JW(h->dirty_tail) = i;
}

/* ---- purging --------------------------------------------------------------- */

/* One step of its own: a crash after the madvise but before the step is
 * complete restores a dirty count that is too high, which is allowed (it is
 * an upper bound). */
static void purge(struct span *s) {
  if (!s->ndirty) return;
  char *a = span_addr(s);
  size_t len = (size_t)s->npages << SH_PAGE_SHIFT;
  if (G.hugetlb) {
    /* Only whole 2 MiB pages go back to the pool; the kernel may leave a
     * part of one as it was (older kernels do not zero it), so the parts
     * at the ends are zeroed here: after a purge the span must read as
     * zero (calloc relies on it).  A span within one huge page gives
     * nothing back: it is zeroed and counted clean, since its huge page
     * stays whole for its other part (in use, as a free neighbour would
     * have merged, or not carved yet), and a span left dirty would bring
     * the purge back to it every DECAY_MS / 8 for ever. */
    char *lo = (char *)(((uintptr_t)a + SH_HUGE_PAGE - 1) & ~(uintptr_t)(SH_HUGE_PAGE - 1));
    char *hi = (char *)(((uintptr_t)a + len) & ~(uintptr_t)(SH_HUGE_PAGE - 1));
    if (hi <= lo) {
      memset(a, 0, len);
      dirty_unlink(s);
      JW(H()->dirty_pages) -= s->ndirty;
      JW(s->ndirty) = 0;
      journal_step();
      return;
    }
    os_release_pages(lo, (size_t)(hi - lo));
    memset(a, 0, (size_t)(lo - a));
    memset(hi, 0, (size_t)(a + len - hi));
  } else
    os_release_pages(a, len);
  dirty_unlink(s);
  JW(H()->dirty_pages) -= s->ndirty;
  JW(H()->purged_pages) += s->ndirty;
  JW(s->ndirty) = 0;
  journal_step();
}

/* Milliseconds, monotonic.  The coarse clock is a few ms coarse and costs
 * no system call; decay needs no better. */
static uint64_t now_ms(void) { return os_clock_ns(CLOCK_MONOTONIC_COARSE) / 1000000; }

/* The head of the dirty list, the oldest dirty span, or NULL. */
static struct span *dirty_head(void) {
  uint32_t i = H()->dirty_head;
  if (!i) return NULL;
  struct span *s = dirty_at(i);
  if (unlikely(s->state != SPAN_FREE || !s->ndirty)) pages_bad_list("dirty-span", 0, i);
  return s;
}

/* Purges the dirty spans freed DECAY_MS or more before now, oldest first,
 * while more than DIRTY_MIN_PAGES are dirty.  A time later than now + DECAY_MS
 * is another boot's (the segment outlived a reboot) or a bad writer's: due.
 * Returns the dirty_ms of the oldest dirty span left, or UINT64_MAX. */
static uint64_t purge_older(uint64_t now) {
  struct shm_header *h = H();
  uint64_t when = now > DECAY_MS ? now - DECAY_MS : 0;
  struct span *s;
  for (uint32_t n = 0; (s = dirty_head()); purge(s)) {
    /* Each step purges the head, which leaves the list: a list that comes
     * back to it was written over. */
    if (unlikely(++n > h->span_count)) pages_bad_list("dirty-span", 0, span_index(s));
    if (h->dirty_pages <= DIRTY_MIN_PAGES || (s->dirty_ms > when && s->dirty_ms <= now + DECAY_MS))
      return s->dirty_ms;
  }
  return UINT64_MAX;
}

/* Called by the allocator after each of its locked edits: usually one
 * compare, and a clock read when more than DIRTY_MIN_PAGES are free.  The
 * bins are scanned only when a span may have come of age (purge_due_ms), at
 * most every DECAY_MS / 8. */
_Atomic int pages_purge_wanted, pages_purger_awake;

void page_purge_due(void) {
  struct shm_header *h = H();
  SH_ASSERT(pages_locked() && !journal_open(), "I6");
  if (h->dirty_pages <= DIRTY_MIN_PAGES) return;
  /* A thread in its timed sleep comes back by itself: only one that is
   * absent or asleep for good is asked for, once. */
  if (opts.background && !atomic_load_explicit(&pages_purger_awake, memory_order_relaxed) &&
      !atomic_load_explicit(&pages_purge_wanted, memory_order_relaxed))
    atomic_store_explicit(&pages_purge_wanted, 1, memory_order_relaxed);
  uint64_t now = now_ms();
  /* A due time more than a decay ahead is not this boot's clock (see
   * purge_older): it would stop purging until the clock got there. */
  if (now < h->purge_due_ms && h->purge_due_ms - now <= DECAY_MS) return;
  journal_begin();
  uint64_t oldest = purge_older(now);
  uint64_t due = oldest >= now ? now + DECAY_MS : oldest + DECAY_MS;
  JW(h->purge_due_ms) = due > now + DECAY_MS / 8 ? due : now + DECAY_MS / 8;
  journal_end();
}


uint64_t page_purge_background(void) {
  page_purge_due();
  struct shm_header *h = H();
  if (h->dirty_pages <= DIRTY_MIN_PAGES) {
    atomic_store(&pages_purger_awake, 0);
    return UINT64_MAX;
  }
  uint64_t now = now_ms(), due = h->purge_due_ms;
  /* A due time far off was written by another process's clock or a bad
   * writer: look again within one decay. */
  return due <= now ? DECAY_MS / 8 : due - now > DECAY_MS ? DECAY_MS : due - now;
}

size_t page_purge_all(void) {
  struct shm_header *h = H();
  SH_ASSERT(pages_locked() && !journal_open(), "I6");
  uint64_t before = h->purged_pages;
  journal_begin();
  struct span *s;
  for (uint32_t n = 0; (s = dirty_head()); purge(s))
    if (unlikely(++n > h->span_count)) pages_bad_list("dirty-span", 0, span_index(s));
  journal_end();
  return (size_t)(h->purged_pages - before) << SH_PAGE_SHIFT;
}

/* ---- forgetting every span ------------------------------------------------- */

void page_reset(void) {
  struct shm_header *h = H();
  SH_ASSERT(pages_locked() && journal_open(), "I6");
  const uint32_t top = h->top;
  for (unsigned b = 0; b < SH_NBINS; b++)
    if (h->bins[b]) JW(h->bins[b]) = 0;
  JW(h->binmap[0]) = 0;
  JW(h->binmap[1]) = 0;
  JW(h->dirty_head) = 0;
  JW(h->dirty_tail) = 0;
  JW(h->span_free) = 0;
  JW(h->live_pages) = 0;
  JW(h->large_in_use) = 0;
  JW(h->large_count) = 0;
  JW(h->dirty_pages) = top; /* all of them: see below */
  /* Descriptors from 2 up are unused again, though the page map still
   * names them: a lookup takes an entry only below span_count and only if
   * its descriptor covers the page (I3), and desc_new clears a descriptor
   * before it hands it out again. */
  JW(h->span_count) = top ? 2 : 1;
  if (!top) return;
  struct span *s = &G.spans[1];
  for (unsigned k = 0; k < sizeof *s / 8; k++) journal_touch((uint64_t *)s + k, 8);
  memset(s, 0, sizeof *s);
  s->first = 0;
  s->npages = top;
  s->state = SPAN_FREE;
  /* Every page counts dirty (an upper bound, I8): which of them a purge
   * left zero only a walk would tell.  As old as now: a process that
   * allocates soon finds the pages still mapped, and the purge gives back
   * what it leaves unused, a second later, in one step. */
  s->ndirty = top;
  s->dirty_ms = now_ms();
  map_ends(s);
  dirty_link_after(s, 0);
  bin_insert(s);
}

/* ---- allocation ------------------------------------------------------------ */

/* Splits the first n pages off free span s (already out of its bin) and bins
 * the rest.  The dirty count of each part is an upper bound, never less than
 * the truth: a part may be reported zeroed only if it really is. */
static int split_front(struct span *s, uint32_t n) {
  if (s->npages == n) return 0;
  struct span *r = desc_new();
  if (!r) return -1;
  uint32_t nd = span_ndirty(s);
  r->first = s->first + n; /* r is fresh from desc_new: already logged */
  r->npages = s->npages - n;
  r->state = SPAN_FREE;
  r->dirty_ms = s->dirty_ms;
  span_set_ndirty(r, nd < r->npages ? nd : r->npages);
  JW(H()->dirty_pages) += span_ndirty(r);
  JW(s->npages) = n;
  JW(H()->dirty_pages) -= nd;
  span_set_ndirty(s, nd < n ? nd : n);
  JW(H()->dirty_pages) += span_ndirty(s);
  /* Both parts dirty (nd > 0 bounds each): r is as old as s, so it goes
   * next to it (I8). */
  if (nd) dirty_link_after(r, span_index(s));
  map_ends(r);
  map_ends(s);
  bin_insert(r);
  return 0;
}

static struct span *take_from_top(uint32_t n) {
  struct shm_header *h = H();
  SH_ASSERT(h->top <= h->npages, "I2");
  if (n > h->npages - h->top) return NULL;
  struct span *s = desc_new();
  if (!s) return NULL;
  s->first = h->top;
  s->npages = n;
  JW(h->top) += n;
  map_ends(s);
  return s;
}

/* Finds a free span of at least n pages: best fit among the exact bins, first
 * fit in the logarithmic ones, then fresh pages from the top. */
static struct span *find_free(uint32_t n) {
  for (int b = bin_next(fmt_bin_of(n)); b >= 0; b = bin_next((unsigned)b + 1)) {
    for (uint32_t i = H()->bins[b], k = 0; i; i = G.spans[i].next) {
      if (unlikely(!span_step_ok(i, &k))) pages_bad_list("free-span bin", (unsigned)b, i);
      struct span *s = &G.spans[i];
      if (s->npages >= n) {
        bin_remove(s);
        return s;
      }
    }
  }
  struct span *s = take_from_top(n);
  if (s) s->state = SPAN_FREE; /* fresh: zero, not dirty (s is logged by desc_new) */
  return s;
}

struct span *page_alloc(uint32_t npages, uint32_t align_pages, int *zeroed) {
  SH_ASSERT(journal_open(), "I6");
  uint32_t extra = align_pages > 1 ? align_pages - 1 : 0;
  if (npages == 0 || npages > H()->npages || extra > H()->npages - npages) return NULL;
  struct span *s = find_free(npages + extra);
  if (!s) return NULL;
  if (extra) {
    uintptr_t addr = (uintptr_t)span_addr(s);
    uintptr_t align = (uintptr_t)align_pages << SH_PAGE_SHIFT;
    uint32_t lead = (uint32_t)(((align - (addr & (align - 1))) & (align - 1)) >> SH_PAGE_SHIFT);
    if (lead) {
      /* Give the leading pages back as a free span of their own. */
      if (split_front(s, lead) < 0) { bin_insert(s); return NULL; }
      struct span *rest = &G.spans[G.pagemap[s->first + lead]];
      bin_remove(rest);
      JW(s->state) = SPAN_FREE;
      bin_insert(s);
      s = rest;
    }
  }
  if (split_front(s, npages) < 0) { bin_insert(s); return NULL; }
  if (span_ndirty(s)) dirty_unlink(s);
  JW(H()->dirty_pages) -= span_ndirty(s);
  JW(H()->live_pages) += s->npages;
  *zeroed = s->ndirty == 0;
  span_set_ndirty(s, 0);
  return s;
}

/* Returns span s to the free pool, merging it with free neighbours. */
void page_free(struct span *s) {
  struct shm_header *h = H();
  SH_ASSERT(journal_open() && (s->state == SPAN_SMALL || s->state == SPAN_LARGE), "I6");
  struct span *l = s->first > 0 ? free_span_ending(s->first - 1) : NULL;
  struct span *r = free_span_at(s->first + s->npages);
  /* The merged span takes the age and the dirty-list place of its part
   * with the most dirty pages (the freed pages win a tie): the list stays
   * in order without a search (I8), and a big old free span that a small
   * block is cut from and freed again keeps its age (the newest part's
   * time would reset it every time, and it would never be purged).  The
   * price: a minority part is purged up to DECAY_MS early or late. */
  struct span *w = NULL;
  uint32_t wnd = s->npages, nd = s->npages;
  if (l && span_ndirty(l) > wnd) w = l, wnd = span_ndirty(l);
  if (r && span_ndirty(r) > wnd) w = r;
  JW(h->live_pages) -= s->npages;
  JW(s->state) = SPAN_FREE;
  JW(s->flags) = 0;
  if (w) {
    JW(s->dirty_ms) = w->dirty_ms;
    dirty_link_after(s, span_index(w));
  }
  if (l) {
    bin_remove(l);
    if (span_ndirty(l)) dirty_unlink(l);
    nd += span_ndirty(l);
    JW(h->dirty_pages) -= span_ndirty(l);
    JW(s->first) = l->first;
    JW(s->npages) += l->npages;
    desc_release(l);
  }
  if (r) {
    bin_remove(r);
    if (span_ndirty(r)) dirty_unlink(r);
    nd += span_ndirty(r);
    JW(h->dirty_pages) -= span_ndirty(r);
    JW(s->npages) += r->npages;
    desc_release(r);
  }
  if (!w) {
    JW(s->dirty_ms) = now_ms();
    dirty_link_after(s, h->dirty_tail);
  }
  span_set_ndirty(s, nd);
  JW(h->dirty_pages) += nd;
  map_ends(s);
  bin_insert(s);
  /* Purging is the caller's next step (page_purge_due), once its edit is
   * complete: a purge is an edit of its own. */
}

/* Grows or shrinks a large span in place.  Returns 1 on success. */
int page_resize(struct span *s, uint32_t npages) {
  struct shm_header *h = H();
  SH_ASSERT(journal_open() && s->state == SPAN_LARGE, "I6");
  uint32_t end = s->first + s->npages;
  if (npages == s->npages) return 1;
  if (npages < s->npages) {
    struct span *t = desc_new();
    if (!t) return 0;
    t->first = s->first + npages; /* fresh from desc_new: logged */
    t->npages = s->npages - npages;
    t->state = SPAN_LARGE;
    JW(s->npages) = npages;
    map_ends(s);
    map_ends(t);
    page_free(t);
    return 1;
  }
  uint32_t need = npages - s->npages;
  if (end == h->top) {
    if (need > h->npages - h->top) return 0;
    JW(h->top) += need;
  } else {
    struct span *r = free_span_at(end);
    if (!r) return 0;
    if (r->npages < need) {
      /* A free span up to the top, and fresh pages past it: a block that
       * keeps growing (a vector, a buffer) stays where it is. */
      if (r->first + r->npages != h->top || need - r->npages > h->npages - h->top) return 0;
      bin_remove(r);
      JW(h->top) += need - r->npages;
    } else {
      bin_remove(r);
      if (split_front(r, need) < 0) { bin_insert(r); return 0; }
    }
    if (span_ndirty(r)) dirty_unlink(r);
    JW(h->dirty_pages) -= span_ndirty(r);
    desc_release(r);
  }
  JW(h->live_pages) += need;
  JW(s->npages) = npages;
  map_ends(s);
  return 1;
}
