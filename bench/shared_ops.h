/* The multi-process workload of make bench, shared by bench/shared.c
 * (libshmheap, SHMHEAP_FORK=share) and bench/shared_boost.cc
 * (Boost.Interprocess): one source for the operations, so both programs make
 * the same allocations and frees in the same order, and print the same
 * number of processes, allocation count and byte sum (bench/run.sh checks
 * that they do).
 *
 * SH_PROCS forked processes replace random blocks of 16..512 B in slot
 * arrays that live in the shared memory, like larson across processes: in
 * round r, process p works on array (p + r) % SH_PROCS, so most blocks it
 * frees were allocated by another process.  A barrier between rounds hands
 * the arrays on.  Every block carries its size and its slot, and is checked
 * when it is freed, so memory that is not really shared, or a block handed
 * out twice, shows up as an error instead of a fast time.
 *
 * The including file defines, before it includes this one:
 *   static inline void *sh_alloc(size_t n);   never NULL
 *   static inline void sh_free(void *p);      p is never NULL
 * and gets a control block of sizeof(struct sh_ctl) bytes in the shared
 * memory, before the fork, for sh_run.
 * Compiled as C11 and as C++17. */
#ifndef SHARED_OPS_H
#define SHARED_OPS_H

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { SH_PROCS = 4, SH_SLOTS = 1000, SH_ROUNDS = 40, SH_OPS = 50000 };

struct sh_result {
  uint64_t ops;   /* allocations made */
  uint64_t bytes; /* their sizes, summed */
  uint64_t bad;   /* blocks found with a wrong tag when freed */
};

struct sh_ctl {
  pthread_barrier_t bar;
  volatile int probe;
  void *slots[SH_PROCS][SH_SLOTS];
  struct sh_result res[SH_PROCS + 1]; /* the last one: the parent's final frees */
};

static inline uint64_t sh_rnd(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

/* The tag: the block's size and the slot that holds it (array and index) in
 * the first 8 bytes, the size's low byte in the last one.  A block handed
 * out twice would be tagged by two slots, and fail the check at one of
 * them. */
static inline void sh_tag(void *b, size_t n, int arr, size_t k) {
  uint64_t t = (uint64_t)n | (uint64_t)k << 16 | (uint64_t)arr << 32;
  memcpy(b, &t, sizeof t);
  ((unsigned char *)b)[n - 1] = (unsigned char)n;
}

static inline int sh_tag_ok(const void *b, int arr, size_t k) {
  uint64_t t;
  memcpy(&t, b, sizeof t);
  size_t n = (size_t)(t & 0xffff);
  return n >= 16 && n <= 512 && t >> 16 == ((uint64_t)arr << 16 | k) &&
         ((const unsigned char *)b)[n - 1] == (unsigned char)n;
}

static void sh_worker(struct sh_ctl *c, int p) {
  struct sh_result r = {0, 0, 0};
  uint64_t s = 0x9e3779b97f4a7c15ULL * (uint64_t)(p + 1);
  for (int round = 0; round < SH_ROUNDS; round++) {
    int arr = (p + round) % SH_PROCS;
    void **a = c->slots[arr];
    for (int i = 0; i < SH_OPS; i++) {
      uint64_t x = sh_rnd(&s);
      size_t k = x % SH_SLOTS, n = 16 + (x >> 20) % 497;
      if (a[k]) {
        r.bad += !sh_tag_ok(a[k], arr, k);
        sh_free(a[k]);
      }
      a[k] = sh_alloc(n);
      sh_tag(a[k], n, arr, k);
      r.ops++;
      r.bytes += n;
    }
    /* The barrier also orders the slot writes of one round before the
     * reads of the next, in another process. */
    pthread_barrier_wait(&c->bar);
  }
  c->res[p] = r;
}

static double sh_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sh_die(const char *what) {
  fprintf(stderr, "shared: %s: %s\n", what, strerror(errno));
  exit(1);
}

/* Waits for child pid; 0 if it exited with status 0. */
static int sh_reap(pid_t pid) {
  int st;
  while (waitpid(pid, &st, 0) < 0)
    if (errno != EINTR) sh_die("waitpid");
  if (WIFEXITED(st) && WEXITSTATUS(st) == 0) return 0;
  fprintf(stderr, "shared: worker %d %s %d\n", (int)pid, WIFEXITED(st) ? "exited with" : "killed by signal",
          WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
  return -1;
}

/* Runs the workload on control block c, prints "seconds peak_rss_kib procs
 * ops bytes" on stdout and returns the exit status.  name: the program, for
 * messages; hint: what to do when the memory turns out not to be shared. */
static int sh_run(struct sh_ctl *c, const char *name, const char *hint) {
  memset(c->slots, 0, sizeof c->slots);
  memset(c->res, 0, sizeof c->res);

  /* A barrier in memory that is not shared would hang the first round:
   * find that out first, with one child's write. */
  c->probe = 0;
  pid_t pid = fork();
  if (pid < 0) sh_die("fork");
  if (pid == 0) {
    c->probe = 1;
    exit(0);
  }
  if (sh_reap(pid) || c->probe != 1) {
    fprintf(stderr, "%s: a forked process's writes are not seen by its parent: %s\n", name, hint);
    return 1;
  }

  pthread_barrierattr_t ba;
  pthread_barrierattr_init(&ba);
  pthread_barrierattr_setpshared(&ba, PTHREAD_PROCESS_SHARED);
  if ((errno = pthread_barrier_init(&c->bar, &ba, SH_PROCS))) sh_die("pthread_barrier_init");
  pthread_barrierattr_destroy(&ba);

  pid_t pids[SH_PROCS];
  double t0 = sh_now();
  for (int p = 0; p < SH_PROCS; p++) {
    if ((pids[p] = fork()) < 0) sh_die("fork");
    if (pids[p] == 0) {
      sh_worker(c, p);
      exit(0);
    }
  }
  int failed = 0;
  for (int p = 0; p < SH_PROCS; p++) failed |= sh_reap(pids[p]);
  if (failed) return 1;
  /* The parent frees what is left: blocks of every worker. */
  struct sh_result *last = &c->res[SH_PROCS];
  for (int p = 0; p < SH_PROCS; p++)
    for (int k = 0; k < SH_SLOTS; k++)
      if (c->slots[p][k]) {
        last->bad += !sh_tag_ok(c->slots[p][k], p, (size_t)k);
        sh_free(c->slots[p][k]);
        c->slots[p][k] = NULL;
      }
  double t = sh_now() - t0;
  pthread_barrier_destroy(&c->bar);

  struct sh_result sum = {0, 0, 0};
  for (int p = 0; p <= SH_PROCS; p++) {
    sum.ops += c->res[p].ops;
    sum.bytes += c->res[p].bytes;
    sum.bad += c->res[p].bad;
  }
  if (sum.ops != (uint64_t)SH_PROCS * SH_ROUNDS * SH_OPS || sum.bad) {
    fprintf(stderr, "%s: %llu allocations (expected %llu), %llu blocks with a wrong tag\n", name,
            (unsigned long long)sum.ops, (unsigned long long)SH_PROCS * SH_ROUNDS * SH_OPS,
            (unsigned long long)sum.bad);
    return 1;
  }
  struct rusage self, kids;
  getrusage(RUSAGE_SELF, &self);
  getrusage(RUSAGE_CHILDREN, &kids);
  printf("%.4f %ld %d %llu %llu\n", t, self.ru_maxrss > kids.ru_maxrss ? self.ru_maxrss : kids.ru_maxrss,
         (int)SH_PROCS, (unsigned long long)sum.ops, (unsigned long long)sum.bytes);
  return 0;
}

#endif
