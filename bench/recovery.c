/* How long a restart takes: attach a multi-GiB heap left by kill -9, repair
 * it, find the roots.  Run by bench/recovery.sh under LD_PRELOAD with a key.
 *
 *   recovery fill NBLOCKS   allocate NBLOCKS blocks (16 B .. 4 KiB, a few
 *                           large) from 2 threads into a rooted table, then
 *                           churn until killed; prints "filled" first
 *   recovery attach         print what the attach found and took (the
 *                           repair, the collection of what no root reaches),
 *                           then walk the table from its root to prove it is
 *                           whole
 *   recovery unroot         remove the table's root and exit: the next start
 *                           finds a heap whose roots hold no pointer
 *   recovery empty          print what the start took to empty such a heap
 *   recovery firstread MIB  (no preload) the machine's own bound on a mark:
 *                           how fast 1 and 2 threads read MIB of shared
 *                           memory that a fresh attach populated, the first
 *                           time and again
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <time.h>

#include "shmheap.h"

static int (*p_recovered)(struct shmheap_recovery *, size_t);
static int (*p_root_remove)(const char *);
static int (*p_get_info)(struct shmheap_info *);
static int (*p_prefault)(struct shmheap_prefault *);
static int (*p_root_set)(const char *, const void *);
static void *(*p_root_get)(const char *);

struct table {
  size_t n;
  _Atomic(uint32_t *) slot[];
};

static uint32_t *block(uint64_t seed) {
  size_t sz = seed % 1000 == 0 ? 65536 + seed % 200000 : 16 + (seed >> 8) % 2000;
  uint32_t *b = malloc(sz);
  if (b) b[0] = (uint32_t)sz;
  return b;
}

struct part {
  struct table *t;
  size_t lo, hi;
};

static void *fill(void *arg) {
  struct part *p = arg;
  for (size_t i = p->lo; i < p->hi; i++) atomic_store(&p->t->slot[i], block(i * 2654435761u));
  return NULL;
}

static void *churn(void *arg) {
  struct part *p = arg;
  uint64_t s = (uint64_t)p->lo + 1;
  for (;;) {
    s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    size_t i = p->lo + (s >> 33) % (p->hi - p->lo);
    free(atomic_exchange(&p->t->slot[i], block(s >> 17)));
  }
  return NULL;
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- firstread: reading shared memory a new process has just attached ---- */

struct rd {
  const uint64_t *w;
  size_t lo, hi;
  uint64_t sum;
};

static void *read_part(void *arg) {
  struct rd *r = arg;
  uint64_t s = 0;
  for (size_t i = r->lo; i < r->hi; i++) s += r->w[i];
  r->sum = s;
  return NULL;
}

/* GB/s of threads reading len bytes at p, in equal parts. */
static double read_rate(const char *p, size_t len, int threads) {
  struct rd r[2];
  pthread_t t[2];
  size_t n = len / 8;
  double t0 = now();
  for (int i = 0; i < threads; i++) {
    r[i] = (struct rd){(const uint64_t *)p, n * i / threads, n * (i + 1) / threads, 0};
    if (i) pthread_create(&t[i], NULL, read_part, &r[i]);
  }
  read_part(&r[0]);
  for (int i = 1; i < threads; i++) pthread_join(t[i], NULL);
  return len / (now() - t0) / 1e9;
}

static int firstread(size_t mib) {
  size_t len = mib << 20;
  int id = shmget(IPC_PRIVATE, len, IPC_CREAT | 0600);
  if (id < 0) return 3;
  char *p = shmat(id, NULL, 0);
  if (p == (void *)-1) return 3;
  memset(p, 1, len); /* the pages exist, as a heap's do */
  shmdt(p);
  printf("firstread: %zu MiB of shared memory, attached anew and populated (MADV_POPULATE_READ) before each first read:", mib);
  for (int threads = 1; threads <= 2; threads++) {
    p = shmat(id, NULL, 0);
    if (p == (void *)-1) return 3;
    madvise(p, len, 22 /* MADV_POPULATE_READ */);
    double first = read_rate(p, len, threads), again = read_rate(p, len, threads);
    printf(" %d thread(s) %.2f GB/s, again %.2f;", threads, first, again);
    shmdt(p);
  }
  printf("\n");
  shmctl(id, IPC_RMID, NULL);
  return 0;
}

int main(int argc, char **argv) {
  if (argc > 2 && !strcmp(argv[1], "firstread")) return firstread(strtoull(argv[2], NULL, 0));
  *(void **)&p_recovered = dlsym(RTLD_DEFAULT, "shmheap_recovered_size");
  *(void **)&p_root_remove = dlsym(RTLD_DEFAULT, "shmheap_root_remove");
  *(void **)&p_get_info = dlsym(RTLD_DEFAULT, "shmheap_get_info");
  *(void **)&p_root_set = dlsym(RTLD_DEFAULT, "shmheap_root_set");
  *(void **)&p_root_get = dlsym(RTLD_DEFAULT, "shmheap_root_get");
  *(void **)&p_prefault = dlsym(RTLD_DEFAULT, "shmheap_prefault_status");
  if (!p_recovered || !p_root_set || !p_root_get || !p_prefault || !p_root_remove || !p_get_info || argc < 2) {
    fprintf(stderr, "recovery: run with LD_PRELOAD=libshmheap.so and SHMHEAP_KEY: recovery fill N | attach | unroot | empty\n");
    return 2;
  }
  if (!strcmp(argv[1], "fill") && argc > 2) {
    /* A table left by an earlier run is churned as it is. */
    struct table *t = p_root_get("bench.table");
    size_t n = t ? t->n : strtoull(argv[2], NULL, 0);
    struct part a = {t, 0, n / 2}, b = {t, n / 2, n};
    pthread_t ta, tb;
    if (!t) {
      t = calloc(1, sizeof *t + n * sizeof t->slot[0]);
      if (!t || n < 2) return 3;
      t->n = n;
      p_root_set("bench.table", t);
      a.t = b.t = t;
      double t0 = now();
      pthread_create(&ta, NULL, fill, &a);
      pthread_create(&tb, NULL, fill, &b);
      pthread_join(ta, NULL);
      pthread_join(tb, NULL);
      printf("filled %zu blocks in %.1f s\n", n, now() - t0);
    } else {
      printf("filled (the table of an earlier run: %zu slots)\n", n);
    }
    fflush(stdout);
    pthread_create(&ta, NULL, churn, &a);
    churn(&b);
  }
  struct shmheap_recovery r;
  struct shmheap_info info;
  if (!strcmp(argv[1], "unroot")) return p_root_remove("bench.table") == 0 ? 0 : 3;
  if (!strcmp(argv[1], "empty")) {
    int origin = p_recovered(&r, sizeof r);
    p_get_info(&info);
    printf("origin=%d recovery_us=%.0f check_us=%.0f gc_reset=%llu gc_blocks=%llu gc_mib=%llu gc_us=%.0f in_use_kib=%llu\n",
           origin, r.recovery_ns / 1e3, r.check_ns / 1e3, (unsigned long long)r.gc_reset,
           (unsigned long long)r.gc_blocks, (unsigned long long)(r.gc_bytes >> 20), r.gc_ns / 1e3,
           (unsigned long long)(info.in_use >> 10));
    return r.gc_reset ? 0 : 4;
  }
  if (!strcmp(argv[1], "attach")) {
    int origin = p_recovered(&r, sizeof r);
    /* What the collection kept: the reachable heap it marked. */
    p_get_info(&info);
    struct table *t = p_root_get("bench.table");
    if (!t) return 3;
    double t0 = now();
    uint64_t bytes = 0;
    size_t live = 0;
    for (size_t i = 0; i < t->n; i++) {
      uint32_t *b = atomic_load(&t->slot[i]);
      if (b) {
        live++;
        bytes += b[0];
      }
    }
    double walk = now() - t0;
    /* For bench/recovery.sh: from its exec of this process to here. */
    struct timespec end;
    clock_gettime(CLOCK_REALTIME, &end);
    struct shmheap_prefault pf;
    p_prefault(&pf);
    /* recovery_us is the whole attach; check_us the part of it that
     * validated the metadata before the repair trusted it; gc_ms the
     * collection (populate, mark, sweep), and mark_gib_s the heap it kept
     * (all reachable: the table's blocks) over that time.  The prefault
     * figures are as they stand at the walk's end. */
    double gc_s = r.gc_ns / 1e9;
    printf("origin=%d recovery_us=%.0f check_us=%.0f gc_ms=%.0f gc_blocks=%llu reached_mib=%llu mark_gib_s=%.2f dead=%u rebuilt=%u released=%u lock=%u quarantined=%llu live=%zu bytes=%llu walk_s=%.2f prefault=%d/%u mapped_mib=%llu of %llu%s end_ns=%lld\n",
           origin, r.recovery_ns / 1e3, r.check_ns / 1e3, gc_s * 1e3, (unsigned long long)r.gc_blocks,
           (unsigned long long)(info.in_use >> 20), gc_s > 0 ? info.in_use / gc_s / (1 << 30) : 0.0, r.dead_processes, r.heaps_repaired, r.heaps_released,
           r.lock_recovered, (unsigned long long)r.spans_quarantined, live, (unsigned long long)bytes, walk, pf.mode,
           pf.threads, (unsigned long long)(pf.bytes_mapped >> 20), (unsigned long long)(pf.bytes_planned >> 20),
           pf.finished ? " finished" : "", (long long)end.tv_sec * 1000000000LL + end.tv_nsec);
    return 0;
  }
  return 2;
}
