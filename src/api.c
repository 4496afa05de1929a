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

SH_API int shmheap_recovered(struct shmheap_recovery *info) {
  ensure_init();
  const struct shmheap_recovery *rec = recover_findings();
  if (info) *info = *rec;
  return rec->origin;
}

/* ---- checking the heap from inside the process ------------------------------------ */

struct count_ctx {
  shmheap_report_fn report;
  void *ctx;
};

static void forward(void *c, const char *problem) {
  struct count_ctx *cc = c;
  if (cc->report) cc->report(cc->ctx, problem);
}

SH_API int shmheap_check(shmheap_report_fn report, void *ctx) {
  ensure_init();
  struct hv v;
  char why[160];
  struct count_ctx cc = {report, ctx};
  if (fmt_open(&v, G.base, G.hdr->size, why, sizeof why) < 0) {
    forward(&cc, why);
    return 1;
  }
  long n = hv_check(&v, forward, &cc);
  if (n < 0) {
    errno = ENOMEM;
    return -1;
  }
  return n > 0x7fffffff ? 0x7fffffff : (int)n;
}
