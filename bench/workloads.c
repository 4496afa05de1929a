/* Allocator workloads for make bench, modelled on the classic benchmarks.
 * Linked with no allocator: bench/run.sh preloads each one in turn.  Each
 * run does a fixed amount of work and prints "seconds peak_rss_kib".
 *
 *   larson    4 threads replace random blocks (16..1024 B) in their own
 *             arrays and pass their arrays on, so blocks are freed by
 *             threads other than the one that allocated them
 *   slots2    2 threads replace random slots of one shared array of 8192
 *             blocks (16..1024 B): most frees are of the other thread's
 *   slots4    the same with 4 threads (on a 2-CPU machine: oversubscribed)
 *   xmalloc   a producer thread allocates, a consumer thread frees
 *   churn     one thread, small objects with short and long lifetimes
 *   large     64 KiB .. 4 MiB blocks allocated, every page touched, freed
 *   touch     one block of 256 MiB, each of its pages written once: the
 *             first-touch cost of fresh memory (the huge-page rows)
 *   realloc   strings and vectors grown by realloc
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static inline uint64_t rnd(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

/* Touch the block so that an allocator cannot hand out memory it never
 * maps, and so that a wrong size would show. */
static inline void touch(void *p, size_t n) {
  ((volatile char *)p)[0] = 1;
  ((volatile char *)p)[n - 1] = 1;
}

/* ---- larson ------------------------------------------------------------------------------ */

#define L_THREADS 4
#define L_SLOTS 1000
#define L_ROUNDS 40
#define L_OPS 50000

static void *l_arrays[L_THREADS][L_SLOTS];
static pthread_barrier_t l_bar;

static void *larson_thread(void *arg) {
  int t = (int)(intptr_t)arg;
  uint64_t s = 0x9e3779b97f4a7c15ULL * (uint64_t)(t + 1);
  for (int round = 0; round < L_ROUNDS; round++) {
    /* Each round works on another thread's array: the blocks it frees
     * were mostly allocated by that thread. */
    void **a = l_arrays[(t + round) % L_THREADS];
    for (int i = 0; i < L_OPS; i++) {
      uint64_t r = rnd(&s);
      size_t k = r % L_SLOTS, n = 16 + (r >> 20) % 1009;
      free(a[k]);
      a[k] = malloc(n);
      touch(a[k], n);
    }
    pthread_barrier_wait(&l_bar);
  }
  return NULL;
}

static void larson(void) {
  pthread_barrier_init(&l_bar, NULL, L_THREADS);
  pthread_t th[L_THREADS];
  for (int t = 0; t < L_THREADS; t++) pthread_create(&th[t], NULL, larson_thread, (void *)(intptr_t)t);
  for (int t = 0; t < L_THREADS; t++) pthread_join(th[t], NULL);
  for (int t = 0; t < L_THREADS; t++)
    for (int k = 0; k < L_SLOTS; k++) free(l_arrays[t][k]);
}

/* ---- shared slots ------------------------------------------------------------------------ */

/* One array that every thread writes: a slot's old block was allocated by
 * any thread, so with T threads (T-1)/T of the frees are remote, and the
 * freed blocks come back cold to the thread that reuses them.  The total
 * work is the same for any number of threads. */
#define S_SLOTS 8192
#define S_OPS 8000000

static _Atomic(void *) s_slots[S_SLOTS];
static int s_threads;

static void *slots_thread(void *arg) {
  uint64_t s = 0x2545f4914f6cdd1dULL * (uint64_t)((intptr_t)arg + 1);
  for (int i = 0; i < S_OPS / s_threads; i++) {
    uint64_t r = rnd(&s);
    size_t n = 16 + (r >> 20) % 1009;
    void *p = malloc(n);
    touch(p, n);
    free(atomic_exchange_explicit(&s_slots[r % S_SLOTS], p, memory_order_acq_rel));
  }
  return NULL;
}

static void slots(int threads) {
  s_threads = threads;
  pthread_t th[8];
  for (int t = 0; t < threads; t++) pthread_create(&th[t], NULL, slots_thread, (void *)(intptr_t)t);
  for (int t = 0; t < threads; t++) pthread_join(th[t], NULL);
  for (int k = 0; k < S_SLOTS; k++) free(atomic_load(&s_slots[k]));
}

static void slots2(void) { slots(2); }
static void slots4(void) { slots(4); }

/* ---- xmalloc: producer / consumer -------------------------------------------------------- */

#define X_RING 4096
#define X_TOTAL 1000000
static _Atomic(void *) x_ring[X_RING];

static void *x_consumer(void *arg) {
  (void)arg;
  for (long i = 0; i < X_TOTAL; i++) {
    _Atomic(void *) *slot = &x_ring[i % X_RING];
    void *p;
    while (!(p = atomic_exchange_explicit(slot, NULL, memory_order_acquire))) {
    }
    free(p);
  }
  return NULL;
}

static void xmalloc_bench(void) {
  pthread_t c;
  pthread_create(&c, NULL, x_consumer, NULL);
  uint64_t s = 42;
  for (long i = 0; i < X_TOTAL; i++) {
    size_t n = 16 + rnd(&s) % 240;
    void *p = malloc(n);
    touch(p, n);
    _Atomic(void *) *slot = &x_ring[i % X_RING];
    while (atomic_load_explicit(slot, memory_order_relaxed)) {
    }
    atomic_store_explicit(slot, p, memory_order_release);
  }
  pthread_join(c, NULL);
}

/* ---- churn: one thread, realistic lifetimes ------------------------------------------------ */

static void churn(void) {
  enum { SHORT = 64, LONG = 50000, OPS = 12000000 };
  static void *shortl[SHORT], *longl[LONG];
  uint64_t s = 7;
  for (long i = 0; i < OPS; i++) {
    uint64_t r = rnd(&s);
    /* Most objects die young; one in 16 lives long (cfrac/espresso-like). */
    void **slot = (r & 15) ? &shortl[r % SHORT] : &longl[(r >> 8) % LONG];
    size_t n = (r >> 32) % 8 ? 8 + (r >> 40) % 120 : 128 + (r >> 40) % 1900;
    free(*slot);
    *slot = malloc(n);
    touch(*slot, n);
  }
  for (int i = 0; i < SHORT; i++) free(shortl[i]);
  for (int i = 0; i < LONG; i++) free(longl[i]);
}

/* ---- large blocks -------------------------------------------------------------------------- */

static void large(void) {
  enum { LIVE = 16, OPS = 4000 };
  static void *live[LIVE];
  uint64_t s = 99;
  for (int i = 0; i < OPS; i++) {
    uint64_t r = rnd(&s);
    size_t n = (size_t)64 << 10 << (r % 7); /* 64 KiB .. 4 MiB */
    n += (r >> 8) % n;
    if (n > (size_t)4 << 20) n = (size_t)4 << 20;
    int k = (int)((r >> 40) % LIVE);
    free(live[k]);
    char *p = malloc(n);
    for (size_t o = 0; o < n; o += 4096) p[o] = 1; /* page faults count */
    live[k] = p;
  }
  for (int i = 0; i < LIVE; i++) free(live[i]);
}

/* ---- first touch ------------------------------------------------------------------------- */

/* What a program that fills fresh memory pays per page: with 4 KiB pages a
 * fault each, with huge pages one fault per 2 MiB (which zeroes all of it). */
static void first_touch(void) {
  size_t n = (size_t)256 << 20;
  volatile char *p = malloc(n); /* volatile: the writes are what is measured */
  if (!p) {
    perror("workloads: touch: malloc(256 MiB)");
    exit(1);
  }
  for (size_t o = 0; o < n; o += 4096) p[o] = 1;
  free((void *)p);
}

/* ---- realloc growth ------------------------------------------------------------------------ */

static void realloc_bench(void) {
  /* Sized so a run takes a few tenths of a second and the heap, not the
   * program's own pages, dominates peak RSS (20 MB of strings, 16 MB vectors). */
  enum { N = 50000, ROUNDS = 30 };
  static char *str[N];
  static size_t len[N];
  uint64_t s = 3;
  for (int round = 0; round < ROUNDS; round++) {
    for (int i = 0; i < N; i++) {
      /* strings grow a few bytes at a time, as an append loop does */
      size_t add = 1 + rnd(&s) % 64;
      str[i] = realloc(str[i], len[i] + add + 1);
      memset(str[i] + len[i], 'a', add);
      len[i] += add;
      str[i][len[i]] = 0;
    }
    /* vectors double */
    size_t cap = 16;
    long *v = NULL;
    for (size_t n = 0; n < 2000000; n++) {
      if (!v || n == cap) v = realloc(v, (cap = v ? cap * 2 : cap) * sizeof *v);
      v[n] = (long)n;
    }
    free(v);
    if (round % 10 == 9)
      for (int i = 0; i < N; i++) {
        free(str[i]);
        str[i] = NULL;
        len[i] = 0;
      }
  }
  for (int i = 0; i < N; i++) free(str[i]);
}

int main(int argc, char **argv) {
  static const struct {
    const char *name;
    void (*fn)(void);
  } w[] = {{"larson", larson}, {"slots2", slots2}, {"slots4", slots4}, {"xmalloc", xmalloc_bench}, {"churn", churn}, {"large", large},
           {"realloc", realloc_bench}, {"touch", first_touch}};
  if (argc < 2) {
    fprintf(stderr, "usage: workloads larson|slots2|slots4|xmalloc|churn|large|realloc|touch\n");
    return 2;
  }
  for (size_t i = 0; i < sizeof w / sizeof w[0]; i++) {
    if (strcmp(argv[1], w[i].name)) continue;
    double t0 = now();
    w[i].fn();
    double t = now() - t0;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("%.4f %ld\n", t, ru.ru_maxrss);
    return 0;
  }
  fprintf(stderr, "workloads: unknown workload %s\n", argv[1]);
  return 2;
}
