/* shmheap_check(): the allocator's invariants hold after real workloads, in
 * this process and in forked children, and a problem is reported. */
#include <check.h>
#include <pthread.h>
#include <shmheap.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "format.h"

static void sleep_ms(unsigned ms) {
  struct timespec t = {ms / 1000, (long)(ms % 1000) * 1000000};
  while (nanosleep(&t, &t) != 0) {
  }
}

static int reports;
static char first_report[256];

static void collect(void *ctx, const char *problem) {
  (void)ctx;
  if (!reports++) snprintf(first_report, sizeof first_report, "%s", problem);
}

static int check_heap(void) {
  reports = 0;
  first_report[0] = 0;
  return shmheap_check(collect, NULL);
}

#define SLOTS 2048
static _Atomic(char *) slot[SLOTS];
static atomic_int stop_flag;

static uint32_t xs(uint32_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 17;
  *s ^= *s << 5;
  return *s;
}

/* Random sizes of every class and large ones, realloc, aligned blocks,
 * blocks freed by a thread other than the one that allocated them. */
static void *churn(void *arg) {
  uint32_t s = (uint32_t)(uintptr_t)arg * 2654435761u + 1;
  for (int n = 0; n < 60000 && !atomic_load(&stop_flag); n++) {
    unsigned i = xs(&s) % SLOTS;
    size_t sz = xs(&s) % 100 < 90 ? xs(&s) % 2048 + 1 : xs(&s) % (256 << 10) + 1;
    char *p;
    switch (xs(&s) % 4) {
    case 0: p = malloc(sz); break;
    case 1: p = calloc(1, sz); break;
    case 2: p = aligned_alloc(64, (sz + 63) & ~(size_t)63); break;
    default:
      p = atomic_exchange(&slot[i], NULL);
      p = realloc(p, sz);
      break;
    }
    if (!p) abort();
    p[0] = 1;
    free(atomic_exchange(&slot[i], p));
  }
  return NULL;
}

static void run_churn(int nthreads) {
  pthread_t t[8];
  atomic_store(&stop_flag, 0);
  for (int i = 0; i < nthreads; i++) pthread_create(&t[i], NULL, churn, (void *)(uintptr_t)(i + 1));
  for (int i = 0; i < nthreads; i++) pthread_join(t[i], NULL);
}

static void free_all(void) {
  for (int i = 0; i < SLOTS; i++) free(atomic_exchange(&slot[i], NULL));
}

START_TEST(t_consistent_after_threads) {
  ck_assert_int_eq(check_heap(), 0);
  run_churn(4);
  int n = check_heap();
  ck_assert_msg(n == 0, "%d problems with blocks live, first: %s", n, first_report);
  free_all();
  n = check_heap();
  ck_assert_msg(n == 0, "%d problems after freeing everything, first: %s", n, first_report);
  ck_assert_int_eq(reports, 0);
}
END_TEST

START_TEST(t_consistent_in_fork_children) {
  run_churn(2);
  for (int mode = 0; mode < 2; mode++) {
    pid_t pid = shmheap_fork(mode ? SHMHEAP_FORK_SHARE : SHMHEAP_FORK_COPY);
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
      if (check_heap() != 0) {
        fprintf(stderr, "%s child: %d problem(s) at the fork, first: %s\n", mode ? "share" : "copy", reports, first_report);
        _exit(10);
      }
      /* Sharing, the parent's blocks are the parent's: the child forgets
       * them (freeing them here would make the parent's free a double free). */
      if (mode)
        for (int i = 0; i < SLOTS; i++) atomic_store(&slot[i], NULL);
      run_churn(2); /* the copy (or the shared heap) keeps working */
      int bad = check_heap();
      if (bad) fprintf(stderr, "%s child: %d problem(s) after its churn, first: %s\n", mode ? "share" : "copy", reports, first_report);
      if (mode) free_all();
      _exit(bad == 0 ? 0 : 11);
    }
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s child: status 0x%x", mode ? "share" : "copy", st);
  }
  int n = check_heap();
  ck_assert_msg(n == 0, "%d problems in the parent after a sharing child, first: %s", n, first_report);
  free_all();
}
END_TEST

/* A descriptor counter the walk verifies: break it, expect a report, restore. */
START_TEST(t_reports_a_problem) {
  char *keep = malloc(100000); /* a large block */
  ck_assert_ptr_nonnull(keep);
  struct shmheap_info in;
  ck_assert_int_eq(shmheap_get_info(&in), 0);
  struct shm_header *h = in.base;
  h->large_count += 7;
  int n = check_heap();
  h->large_count -= 7;
  ck_assert_msg(n >= 1 && strstr(first_report, "large"), "%d problems, first: %s", n, first_report);
  ck_assert_int_eq(check_heap(), 0);
  free(keep);
}
END_TEST

/* ---- purge order (I8): free pages go back oldest first -------------------- */

static uint64_t ms_now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000 + (uint64_t)t.tv_nsec / 1000000;
}

static struct shmheap_info info_now(void) {
  struct shmheap_info in;
  ck_assert_int_eq(shmheap_get_info(&in), 0);
  return in;
}

/* Makes the allocator look at its dirty pages (page_purge_due runs after
 * every locked edit): a 3 MiB block fits none of the tests' free spans,
 * so it comes from fresh pages and leaves the free ones alone. */
static void *poke(void) {
  void *p = malloc(3 << 20);
  ck_assert_ptr_nonnull(p);
  return p;
}

#define GROUP 40 /* blocks of 1 MiB in each group: both together are far over the 8 MiB floor */

/* Two groups of free spans, one freed 500 ms before the other: once the
 * first is a second old and the second is not, a purge gives back the
 * first and keeps the second.  A dirty list out of age order would stop
 * at a young span before it reached the old ones. */
START_TEST(t_purge_oldest_first) {
  for (int attempt = 0;; attempt++) {
    static char *b[4 * GROUP];
    for (int i = 0; i < 4 * GROUP; i++) ck_assert_ptr_nonnull(b[i] = malloc(1 << 20));
    for (int i = 0; i < 4 * GROUP; i++) memset(b[i], 0x5a, 1 << 20);
    /* b[4k] old, b[4k + 2] young; the odd ones keep them apart.  The
     * background thread may purge before poke() does: counted from here. */
    uint64_t before = info_now().purged_bytes;
    for (int i = 0; i < 4 * GROUP; i += 4) free(b[i]);
    sleep_ms(500);
    uint64_t young_from = ms_now();
    for (int i = 2; i < 4 * GROUP; i += 4) free(b[i]);
    sleep_ms(650);
    void *p = poke();
    uint64_t young_age = ms_now() - young_from;
    struct shmheap_info in = info_now();
    free(p);
    for (int i = 1; i < 4 * GROUP; i += 2) free(b[i]);
    ck_assert_int_eq(check_heap(), 0);
    /* A stall of more than 300 ms made the young ones old too: again. */
    if (young_age >= 950 && attempt < 4) {
      sleep_ms(1200);
      continue;
    }
    ck_assert_msg(young_age < 950, "the machine stalled in every attempt");
    /* Less a page or two: a small span the process needed meanwhile may
     * have been cut from a free span of either group. */
    size_t group = (size_t)GROUP << 20, slack = 1 << 20;
    ck_assert_msg(in.purged_bytes - before >= group - slack,
                  "%llu bytes purged since the old group's free, which alone is %zu",
                  (unsigned long long)(in.purged_bytes - before), group);
    ck_assert_msg(in.free_dirty >= group - slack, "%zu dirty bytes left: the young group (%zu) was purged too", in.free_dirty, group);
    ck_assert_msg(in.free_dirty < group + (8u << 20), "%zu dirty bytes left, the young group is %zu", in.free_dirty, group);
    break;
  }
}
END_TEST

/* A big free span that small blocks are cut from and freed again keeps its
 * age (the merged span takes its majority part's): it is purged a second
 * after its own free, not never. */
START_TEST(t_purge_keeps_majority_age) {
  char *lo = malloc(1 << 20), *big = malloc(32 << 20), *hi = malloc(1 << 20);
  ck_assert(lo && big && hi);
  memset(big, 0x5a, 32 << 20);
  uint64_t before = info_now().purged_bytes;
  uintptr_t big_lo = (uintptr_t)big, big_hi = big_lo + (32 << 20);
  uint64_t t0 = ms_now();
  free(big);
  int cut = 0;
  while (ms_now() - t0 < 1400) {
    char *p = malloc(512 << 10);
    ck_assert_ptr_nonnull(p);
    cut += (uintptr_t)p >= big_lo && (uintptr_t)p < big_hi;
    memset(p, 1, 512 << 10);
    free(p);
    sleep_ms(20);
  }
  free(poke());
  struct shmheap_info in = info_now();
  free(lo);
  free(hi);
  ck_assert_int_eq(check_heap(), 0);
  ck_assert_msg(cut > 0, "no block was cut from the freed 32 MiB span: the test's premise fails");
  ck_assert_msg(in.purged_bytes - before >= (31u << 20), "%llu bytes purged after 1.4 s: the 32 MiB span kept getting younger",
                (unsigned long long)(in.purged_bytes - before));
}
END_TEST

/* The check walks the dirty list: a header that says it ends elsewhere is reported. */
START_TEST(t_reports_a_broken_dirty_list) {
  char *a = malloc(1 << 20), *sep = malloc(1 << 20);
  ck_assert(a && sep);
  memset(a, 1, 1 << 20);
  free(a);
  struct shm_header *h = info_now().base;
  ck_assert_msg(h->dirty_tail != 0, "a freed 1 MiB block is not on the dirty list");
  uint32_t keep = h->dirty_tail;
  h->dirty_tail = keep == 1 ? 2 : 1;
  int n = check_heap();
  h->dirty_tail = keep;
  ck_assert_msg(n >= 1 && strstr(first_report, "dirty list"), "%d problems, first: %s", n, first_report);
  ck_assert_int_eq(check_heap(), 0);
  free(sep);
}
END_TEST

/* The descriptor of the small span a block is in, from the heap's own
 * tables (format.h). */
static struct span *span_of(const void *p) {
  char *base = info_now().base;
  const struct shm_header *h = (const struct shm_header *)base;
  uint64_t page = ((uint64_t)((const char *)p - base) - h->heap_off) >> SH_PAGE_SHIFT;
  struct span *s = (struct span *)(base + h->spans_off) + ((const uint32_t *)(base + h->pagemap_off))[page];
  ck_assert_int_eq(s->state, SPAN_SMALL);
  return s;
}

/* A parked (full) span that a quarter of its blocks come back to waits
 * behind the current span, which serves until it runs dry: made current
 * at once, it would be dry again after those few blocks (a park and a
 * refill for every few).  Then its freed blocks are used, not lost. */
START_TEST(t_unparked_span_waits) {
  enum { RB = 1000, N = 128 };
  static char *p[N + 1];
  int n = N;
  for (int i = 0; i < n; i++) ck_assert_ptr_nonnull(p[i] = malloc(RB));
  struct span *cur = span_of(p[n - 1]);
  if (cur->used == cur->capacity) {
    ck_assert_ptr_nonnull(p[n] = malloc(RB));
    cur = span_of(p[n++]);
  }
  /* A span full of this test's blocks only, other than the current one. */
  struct span *full = NULL;
  for (int i = 0; i < n && !full; i++) {
    struct span *s = span_of(p[i]);
    int mine = 0;
    for (int k = 0; k < n; k++) mine += span_of(p[k]) == s;
    if (s != cur && s->used == s->capacity && mine == s->capacity) full = s;
  }
  ck_assert_msg(full != NULL, "no span full of this test's %d blocks: the premise fails", n);
  ck_assert_int_ge(full->capacity, 8);
  unsigned quarter = full->capacity / 4, freed = 0;
  for (int i = 0; i < n && freed < quarter; i++)
    if (span_of(p[i]) == full) {
      free(p[i]);
      p[i] = NULL;
      freed++;
    }
  int room = cur->capacity - cur->used;
  static char *q[64];
  ck_assert_int_le(room + 1, 64);
  for (int k = 0; k < room; k++) {
    ck_assert_ptr_nonnull(q[k] = malloc(RB));
    ck_assert_msg(span_of(q[k]) == cur, "block %d of the current span's room of %d came from another span: the unparked one displaced it", k, room);
  }
  /* Dry: the freed blocks come back. */
  ck_assert_ptr_nonnull(q[room] = malloc(RB));
  ck_assert_msg(span_of(q[room]) == full, "after the current span ran dry, a block from another span than the one with %u free", quarter);
  for (int k = 0; k <= room; k++) free(q[k]);
  for (int i = 0; i < n; i++) free(p[i]);
  ck_assert_int_eq(check_heap(), 0);
}
END_TEST

int main(void) {
  Suite *s = suite_create("heap");
  TCase *tc = tcase_create("check");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, t_consistent_after_threads);
  tcase_add_test(tc, t_consistent_in_fork_children);
  tcase_add_test(tc, t_reports_a_problem);
  suite_add_tcase(s, tc);
  TCase *tp = tcase_create("purge");
  tcase_set_timeout(tp, 60);
  tcase_add_test(tp, t_purge_oldest_first);
  tcase_add_test(tp, t_purge_keeps_majority_age);
  tcase_add_test(tp, t_reports_a_broken_dirty_list);
  suite_add_tcase(s, tp);
  TCase *tr = tcase_create("reuse");
  tcase_add_test(tr, t_unparked_span_waits);
  suite_add_tcase(s, tr);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
