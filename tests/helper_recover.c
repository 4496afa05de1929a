/* Helper of check_recover.  NOT linked with libshmheap: the tests run it with
 * LD_PRELOAD=$SHMHEAP_LIB and it reaches the API through dlsym, as a preloaded
 * server would.
 *
 *   helper_recover state          print what the attach found (one line)
 *   helper_recover note TEXT      state, then root "rec.note" -> a copy of TEXT
 *   helper_recover hold           state, print "ready", sleep 30 s (a live owner)
 *   helper_recover free-exit N    allocate and touch N x 1 MiB, free them, print
 *                                 "dirty=BYTES" (free pages still held), exit
 *   helper_recover system CMD     state, system(CMD), then check the note is intact
 *   helper_recover supervise N    supervised workers kill themselves while two
 *                                 threads churn the heap, until N kills have landed
 *                                 inside the allocator (repairs >= N; at most 2000
 *                                 workers); each checks everything the dead left
 *   helper_recover supervise-hold the first worker prints "dying" and kills itself;
 *                                 after a 3 s back-off the second prints "ready" and
 *                                 sleeps 30 s (a supervised live heap)
 *
 * "state" line: origin= dead= repaired= released= lock= key= note= repairs=
 * Exit statuses: 0 ok, 2 usage, 3 check failed, 10 library not preloaded.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "shmheap.h"

static int (*p_recovered)(struct shmheap_recovery *);
static int (*p_get_info)(struct shmheap_info *);
static int (*p_root_set)(const char *, const void *);
static void *(*p_root_get)(const char *);
static int (*p_check)(shmheap_report_fn, void *);
static int (*p_supervise)(const struct shmheap_supervise_options *);

#define SYM(v, name) (*(void **)&(v) = dlsym(RTLD_DEFAULT, name))

static void need_lib(void) {
  if (!SYM(p_recovered, "shmheap_recovered") || !SYM(p_get_info, "shmheap_get_info") ||
      !SYM(p_root_set, "shmheap_root_set") || !SYM(p_root_get, "shmheap_root_get") ||
      !SYM(p_check, "shmheap_check") || !SYM(p_supervise, "shmheap_supervise")) {
    fprintf(stderr, "helper_recover: libshmheap is not preloaded\n");
    exit(10);
  }
}

static void report(void *ctx, const char *problem) {
  (void)ctx;
  fprintf(stderr, "helper_recover: check: %s\n", problem);
}

static int print_state(void) {
  struct shmheap_recovery r;
  struct shmheap_info in;
  int o = p_recovered(&r);
  if (o != r.origin || p_get_info(&in) != 0) return 3;
  const char *note = p_root_get("rec.note");
  printf("origin=%d dead=%u repaired=%u released=%u lock=%u key=%d note=%s repairs=%llu\n", r.origin,
         r.dead_processes, r.heaps_repaired, r.heaps_released, r.lock_recovered, in.key,
         note ? note : "-", (unsigned long long)in.repairs);
  fflush(stdout);
  return p_check(report, NULL) == 0 ? 0 : 3;
}

/* ---- supervise ------------------------------------------------------------------ */

/* The state the workers share: a generation count and checksummed blocks. */
#define NSLOT 512
struct sup {
  unsigned gen;
  _Atomic(uint64_t *) slot[NSLOT];
};

static uint64_t sum_of(const uint64_t *b, size_t n) {
  uint64_t s = 0x9e3779b97f4a7c15ULL;
  for (size_t i = 1; i < n; i++) s = (s ^ b[i]) * 0x100000001b3ULL;
  return s;
}

/* A block: word 0 the checksum of words 1..n-1, word 1 its length in words. */
static uint64_t *make_block(unsigned seed) {
  /* Mostly small blocks, so the threads spend their time in malloc and free
   * rather than filling memory; now and then a large one (the locked path). */
  size_t n = 2 + (seed % 50 == 0 ? 4096 + seed % 8192 : seed % 64);
  uint64_t *b = malloc(n * 8);
  if (!b) return NULL;
  b[1] = n;
  for (size_t i = 2; i < n; i++) b[i] = seed * 2654435761u + i;
  b[0] = sum_of(b, n);
  return b;
}

static int block_ok(const uint64_t *b) { return b[1] >= 2 && b[1] < 100000 && b[0] == sum_of(b, b[1]); }

static void *churn(void *arg) {
  struct sup *s = arg;
  unsigned seed = (unsigned)(uintptr_t)&seed ^ (unsigned)getpid();
  for (;;) {
    seed = seed * 1103515245u + 12345u;
    unsigned i = (seed >> 8) % NSLOT;
    uint64_t *b = make_block(seed >> 4);
    if (!b) continue;
    free(atomic_exchange(&s->slot[i], b));
  }
  return NULL;
}

#define MAX_WORKERS 2000

static int supervise(unsigned n) {
  struct shmheap_supervise_options o = {MAX_WORKERS + 1, 1, 2, 60000, 1};
  struct sup *s = p_root_get("rec.sup");
  if (!s) {
    s = calloc(1, sizeof *s);
    if (!s || p_root_set("rec.sup", s)) return 3;
  }
  int deaths = p_supervise(&o);
  if (deaths < 0) return 3;
  /* A worker.  Whatever the dead one left must be whole. */
  if (p_check(report, NULL) != 0) return 3;
  for (unsigned i = 0; i < NSLOT; i++) {
    uint64_t *b = atomic_load(&s->slot[i]);
    if (b && !block_ok(b)) {
      fprintf(stderr, "helper_recover: slot %u: a block the dead worker left is corrupt\n", i);
      return 3;
    }
  }
  if ((unsigned)deaths != s->gen) {
    fprintf(stderr, "helper_recover: worker %d of %u: the generation count says %u\n", deaths, n, s->gen);
    return 3;
  }
  s->gen++;
  struct shmheap_info in;
  p_get_info(&in);
  if (in.repairs < n && s->gen < MAX_WORKERS) {
    pthread_t t[2];
    for (int k = 0; k < 2; k++) pthread_create(&t[k], NULL, churn, s);
    struct timespec ts = {0, (long)(1 + (unsigned)getpid() % 5) * 1000000L};
    nanosleep(&ts, NULL);
    raise(SIGKILL); /* wherever the churners are: now and then inside malloc/free */
  }
  printf("done gen=%u repairs=%llu\n", s->gen, (unsigned long long)in.repairs);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  const char *mode = argv[1];
  need_lib();
  if (!strcmp(mode, "state")) return print_state();
  if (!strcmp(mode, "note") && argc > 2) {
    char *t = strdup(argv[2]);
    if (!t || p_root_set("rec.note", t)) return 3;
    return print_state();
  }
  if (!strcmp(mode, "hold")) {
    int rc = print_state();
    printf("ready\n");
    fflush(stdout);
    sleep(30);
    return rc;
  }
  if (!strcmp(mode, "free-exit") && argc > 2) {
    int n = atoi(argv[2]);
    char **b = calloc((size_t)n, sizeof *b);
    if (!b) return 3;
    for (int i = 0; i < n; i++)
      if (!(b[i] = malloc(1 << 20))) return 3;
      else memset(b[i], 7, 1 << 20);
    for (int i = 0; i < n; i++) free(b[i]);
    free(b);
    struct shmheap_info in;
    if (p_get_info(&in)) return 3;
    printf("dirty=%zu\n", in.free_dirty);
    return 0;
  }
  if (!strcmp(mode, "system") && argc > 2) {
    int rc = print_state();
    char *before = p_root_get("rec.note");
    char copy[256];
    snprintf(copy, sizeof copy, "%s", before ? before : "-");
    fflush(stdout);
    int st = system(argv[2]);
    printf("system=%d\n", st);
    char *after = p_root_get("rec.note");
    if (after != before || (after && strcmp(after, copy))) {
      fprintf(stderr, "helper_recover: the note changed while %s ran\n", argv[2]);
      return 3;
    }
    return rc ? rc : p_check(report, NULL) == 0 ? 0 : 3;
  }
  if (!strcmp(mode, "supervise") && argc > 2) return supervise((unsigned)atoi(argv[2]));
  if (!strcmp(mode, "supervise-hold")) {
    struct shmheap_supervise_options o = {3, 3000, 3000, 60000, 1};
    int deaths = p_supervise(&o);
    if (deaths < 0) return 3;
    if (deaths == 0) {
      printf("dying\n");
      fflush(stdout);
      raise(SIGKILL);
    }
    printf("ready\n");
    fflush(stdout);
    sleep(30);
    return 0;
  }
  return 2;
}
