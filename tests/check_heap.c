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
#include <unistd.h>

#include "format.h"

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
      if (check_heap() != 0) _exit(10);
      /* Sharing, the parent's blocks are the parent's: the child forgets
       * them (freeing them here would make the parent's free a double free). */
      if (mode)
        for (int i = 0; i < SLOTS; i++) atomic_store(&slot[i], NULL);
      run_churn(2); /* the copy (or the shared heap) keeps working */
      int bad = check_heap();
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

int main(void) {
  Suite *s = suite_create("heap");
  TCase *tc = tcase_create("check");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, t_consistent_after_threads);
  tcase_add_test(tc, t_consistent_in_fork_children);
  tcase_add_test(tc, t_reports_a_problem);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
