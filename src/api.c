/* The public API of <shmheap.h> that is not about roots (roots.c), fork
 * modes (fork.c) or supervision (supervise.c): what a program asks about
 * its heap. */
#include <errno.h>
#include <string.h>

#include "init.h"
#include "stats.h"
#include "view.h"

SH_API int shmheap_contains(const void *p) {
  return G.base && (uintptr_t)p - (uintptr_t)G.base < G.hdr->size;
}

SH_API int shmheap_get_info(struct shmheap_info *info) {
  if (!info) {
    errno = EINVAL;
    return -1;
  }
  memset(info, 0, sizeof *info);
  ensure_init();
  const struct shm_header *h = G.hdr;
  struct stats_totals t;
  stats_totals(&t);
  info->base = G.base;
  info->size = h->size;
  info->shmid = G.shmid;
  info->key = h->key;
  memcpy(info->name, h->name, sizeof info->name);
  info->reattached = SELF.reattached;
  info->creator_pid = h->creator_pid;
  info->in_use = t.in_use;
  info->heap_bytes = t.heap_bytes;
  info->free_dirty = h->dirty_pages << SH_PAGE_SHIFT;
  info->max_small = SH_SMALL_MAX;
  info->nmalloc = t.nmalloc;
  info->nfree = t.nfree;
  info->large_count = h->large_count;
  info->purged_bytes = h->purged_pages << SH_PAGE_SHIFT;
  info->repairs = atomic_load(&G.hdr->repairs);
  return 0;
}

SH_API int shmheap_recovered_size(struct shmheap_recovery *info, size_t size) {
  ensure_init();
  const struct shmheap_recovery *rec = recover_findings();
  if (info) memcpy(info, rec, size < sizeof *rec ? size : sizeof *rec);
  return rec->origin;
}

/* What a program built against the first release's header calls: its
 * structure ends at blocks_lost.  In parentheses: not the header's macro. */
SH_API int (shmheap_recovered)(struct shmheap_recovery *info) {
  return shmheap_recovered_size(info, offsetof(struct shmheap_recovery, gc_blocks));
}

/* ---- checking the heap from inside the process ------------------------------------ */

/* The problems found under the lock wait here, in scratch memory, and are
 * handed to the report function after it is released: a report may
 * allocate, and an allocation may need the lock. */
struct held {
  char *buf;
  size_t len, cap;
  long lost; /* problems whose text did not fit (no scratch memory) */
};

static void hold(void *c, const char *problem) {
  struct held *h = c;
  size_t n = strlen(problem) + 1;
  if (h->len + n > h->cap) {
    size_t cap = h->cap ? 2 * h->cap : 16384;
    while (cap < h->len + n) cap *= 2;
    char *b = os_scratch(cap);
    if (!b) {
      h->lost++;
      return;
    }
    if (h->buf) {
      memcpy(b, h->buf, h->len);
      os_scratch_free(h->buf, h->cap);
    }
    h->buf = b;
    h->cap = cap;
  }
  memcpy(h->buf + h->len, problem, n);
  h->len += n;
}

/* Under the page allocator's lock: the library's own threads (the purge in
 * the background) and, in a shared heap, other processes change the spans
 * and page counts under it, so they are seen whole.  Thread heaps' lists
 * are edited without it (I4), as the header says. */
SH_API int shmheap_check(shmheap_report_fn report, void *ctx) {
  ensure_init();
  struct hv v;
  char why[160];
  if (fmt_open(&v, G.base, G.hdr->size, why, sizeof why) < 0) {
    if (report) report(ctx, why);
    return 1;
  }
  struct held h = {NULL, 0, 0, 0};
  pages_lock();
  long n = hv_check(&v, hold, &h);
  pages_unlock();
  if (report) {
    for (size_t at = 0; at < h.len; at += strlen(h.buf + at) + 1) report(ctx, h.buf + at);
    if (h.lost) {
      os_fmt(why, sizeof why, "%ld more problem(s): no memory to hold their text", h.lost);
      report(ctx, why);
    }
  }
  if (h.buf) os_scratch_free(h.buf, h.cap);
  if (n < 0) {
    errno = ENOMEM;
    return -1;
  }
  return n > 0x7fffffff ? 0x7fffffff : (int)n;
}
