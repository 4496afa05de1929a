/* Checking the heap from inside the process. */
#include <errno.h>

#include "heapview.h"

struct count_ctx {
  shmheap_report_fn report;
  void *ctx;
};

static void forward(void *c, const char *problem) {
  struct count_ctx *cc = c;
  if (cc->report) cc->report(cc->ctx, problem);
}

SH_API int shmheap_check(shmheap_report_fn report, void *ctx) {
  if (atomic_load(&sh_ready) != 2) sh_init();
  struct hv v;
  char why[160];
  struct count_ctx cc = {report, ctx};
  if (hv_open(&v, G.base, G.hdr->size, why, sizeof why) < 0) {
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

