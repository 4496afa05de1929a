/* Worker of check_crash.  NOT linked with libshmheap: the test runs it with
 * LD_PRELOAD=$SHMHEAP_LIB, SHMHEAP_KEY=<key> and SHMHEAP_SIZE=256M and kills
 * it with SIGKILL at random moments; the library's API is reached through
 * dlsym, as a preloaded program would.
 *
 * The data: root "crash.table" points at a table of NSLOTS slots, each NULL
 * or a record { size, seed, sum, data[] } whose data is a PRNG stream of
 * seed and whose sum is a checksum of size, seed and data.  A slot only ever
 * changes by one atomic_exchange, and a record is complete before it is
 * exchanged in, so a process killed at any instruction leaves every slot NULL
 * or pointing at a complete record: whatever the next process finds wrong is
 * the allocator's doing.  What a kill can lose is only what a thread held
 * outside the table at that instant (see "in flight" below).
 *
 *   crash_worker run N [MS]  verify, start N mutating threads, print "ready";
 *                            mutate until killed, or for MS ms and exit 0
 *   crash_worker idle N      verify, start N threads that do nothing, print
 *                            "ready", sleep until killed
 *   crash_worker verify      verify, exit
 *   crash_worker count       verify, print "slots=N blocks_bytes=B" (usable
 *                            bytes of the records) and then "block=OFF", the
 *                            offset from the heap base, for the table and
 *                            each record
 *   crash_worker clean       verify, free every record and the table, remove
 *                            the root
 *   crash_worker sweep       verify, then free the blocks whose offsets from
 *                            the heap base come on stdin (native uint64_t,
 *                            binary): garbage of killed processes, which the
 *                            test found live and unreachable; refuses (exit
 *                            4) to free the table or a record
 *
 * Verify: shmheap_check finds nothing; the table, if the root exists, has its
 * magic and size; every record lies in the heap, has its checksum, and
 * overlaps no other record nor the table.
 *
 * CRASH_WORKER_SEED (optional) seeds the threads' PRNGs.
 *
 * Exit statuses: 0 ok, 2 usage, 3 shmheap_check found problems, 4 a bad
 * table or record, 5 anything else (library not preloaded, malloc failed).
 */
#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "shmheap.h"

#define ROOT "crash.table"
#define NSLOTS 4096
#define TABLE_MAGIC 0x63726173u /* "cras" */
#define MAX_THREADS 64

#define EXIT_USAGE 2
#define EXIT_CHECK 3
#define EXIT_BAD 4
#define EXIT_OTHER 5

struct rec {
  uint64_t size; /* bytes asked of malloc, this header included */
  uint64_t seed;
  uint64_t sum;
  unsigned char data[];
};

struct table {
  uint32_t magic;
  uint32_t nslots;
  _Atomic(struct rec *) slot[NSLOTS];
};

/* Record sizes: every small class the 24-byte header fits in (32 B to the
 * 32 KiB top class) and large blocks up to 1 MiB.  The 16-byte class cannot
 * hold a record; the threads exercise it with short-lived blocks instead. */
#define REC_MIN sizeof(struct rec)
#define SMALL_MAX (32u << 10)
#define LARGE_MAX (1u << 20)

static __typeof__(shmheap_contains) *p_contains;
static __typeof__(shmheap_get_info) *p_get_info;
static __typeof__(shmheap_check) *p_check;
static __typeof__(shmheap_root_get) *p_root_get;
static __typeof__(shmheap_root_set) *p_root_set;
static __typeof__(shmheap_root_remove) *p_root_remove;
static __typeof__(shmheap_recovered) *p_recovered;

static void die(int code, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));
static void die(int code, const char *fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  fprintf(stderr, "crash_worker[%d]: %s\n", (int)getpid(), buf);
  /* _exit: the other threads are still running, and atexit handlers (the
   * library's among them) have no business running in the middle of that */
  _exit(code);
}

static void *sym(const char *name) {
  void *p = dlsym(RTLD_DEFAULT, name);
  if (!p) die(EXIT_OTHER, "%s not found: libshmheap is not preloaded, or does not have it yet", name);
  return p;
}

static void need_lib(void) {
  p_contains = (__typeof__(p_contains))sym("shmheap_contains");
  p_get_info = (__typeof__(p_get_info))sym("shmheap_get_info");
  p_check = (__typeof__(p_check))sym("shmheap_check");
  p_root_get = (__typeof__(p_root_get))sym("shmheap_root_get");
  p_root_set = (__typeof__(p_root_set))sym("shmheap_root_set");
  p_root_remove = (__typeof__(p_root_remove))sym("shmheap_root_remove");
  p_recovered = (__typeof__(p_recovered))sym("shmheap_recovered");
}

/* ---- data and checksums ------------------------------------------------------ */

static inline uint64_t splitmix(uint64_t *x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

/* Word-wise FNV-style: xor and multiply by an odd constant are both
 * bijective, so any change confined to one word always changes the sum. */
static inline uint64_t mix(uint64_t h, uint64_t w) { return (h ^ w) * 0x100000001b3ULL; }

static uint64_t sum_of(uint64_t size, uint64_t seed, const unsigned char *data) {
  uint64_t h = mix(mix(0xcbf29ce484222325ULL, size), seed);
  size_t n = (size_t)size - REC_MIN, i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    memcpy(&w, data + i, 8);
    h = mix(h, w);
  }
  if (i < n) {
    uint64_t w = 0;
    memcpy(&w, data + i, n - i);
    h = mix(h, w);
  }
  return h ^ (h >> 29);
}

/* Writes the header and the data of seed, then the sum: the record is
 * complete when this returns, before anyone can see it. */
static void rec_fill(struct rec *r, uint64_t size, uint64_t seed) {
  r->size = size;
  r->seed = seed;
  size_t n = (size_t)size - REC_MIN, i = 0;
  uint64_t x = seed;
  for (; i + 8 <= n; i += 8) {
    uint64_t w = splitmix(&x);
    memcpy(r->data + i, &w, 8);
  }
  if (i < n) {
    uint64_t w = splitmix(&x);
    memcpy(r->data + i, &w, n - i);
  }
  r->sum = sum_of(size, seed, r->data);
}

/* 1 if the first n data bytes of r are those of seed (what realloc must
 * have kept). */
static int prefix_ok(const struct rec *r, uint64_t seed, size_t n) {
  uint64_t x = seed;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w = splitmix(&x);
    if (memcmp(r->data + i, &w, 8)) return 0;
  }
  if (i < n) {
    uint64_t w = splitmix(&x);
    if (memcmp(r->data + i, &w, n - i)) return 0;
  }
  return 1;
}

/* Why the pointer r cannot be a record, or NULL: checked before its size is
 * trusted, since a bad pointer may point at anything. */
static const char *rec_shape_bad(const struct rec *r) {
  if (!p_contains(r)) return "not in the heap";
  if ((uintptr_t)r % 16) return "misaligned";
  if (!p_contains((const char *)r + REC_MIN - 1)) return "header runs off the heap";
  if (r->size < REC_MIN || r->size > LARGE_MAX) return "bad size";
  if (!p_contains((const char *)r + r->size - 1)) return "runs off the heap";
  return NULL;
}

static int rec_sum_ok(const struct rec *r) { return sum_of(r->size, r->seed, r->data) == r->sum; }

/* Why record r is bad, or NULL if it is good. */
static const char *rec_bad(const struct rec *r) {
  const char *why = rec_shape_bad(r);
  return why ? why : rec_sum_ok(r) ? NULL : "checksum mismatch";
}

/* ---- verification ---------------------------------------------------------------- */

static void report_to_stderr(void *ctx, const char *problem) {
  (void)ctx;
  fprintf(stderr, "crash_worker[%d]: shmheap_check: %s\n", (int)getpid(), problem);
}

struct extent {
  uintptr_t lo, hi;
  int slot; /* -1: the table */
};

static const char *ext_name(const struct extent *e, char *buf, size_t len) {
  if (e->slot < 0) snprintf(buf, len, "the table at %#" PRIxPTR, e->lo);
  else snprintf(buf, len, "slot %d's record at %#" PRIxPTR, e->slot, e->lo);
  return buf;
}

/* Maps the pages of the records (sorted, runs merged) in a few calls: a
 * fresh process faults every page of a 40 MB table in one at a time
 * otherwise, which is half the time a worker takes to verify, and so half
 * the time of the kill loop.  Only a speed-up: errors are ignored (kernels
 * before 5.14 have no MADV_POPULATE_READ). */
static void prefault(const struct extent *ex, size_t n) {
  const uintptr_t pg = 4096;
  for (size_t k = 0; k < n;) {
    uintptr_t lo = ex[k].lo & ~(pg - 1), hi = ex[k].hi;
    for (k++; k < n && ex[k].lo <= ((hi + pg - 1) & ~(pg - 1)); k++)
      if (ex[k].hi > hi) hi = ex[k].hi;
    hi = (hi + pg - 1) & ~(pg - 1);
    if (madvise((void *)lo, hi - lo, MADV_POPULATE_READ) && errno == EINVAL) return;
  }
}

static int by_lo(const void *a, const void *b) {
  const struct extent *x = a, *y = b;
  return x->lo < y->lo ? -1 : x->lo > y->lo;
}


/* The table, NULL if the root does not exist; exits 4 if it is bad. */
static struct table *get_table(void) {
  errno = 0;
  struct table *t = p_root_get(ROOT);
  if (!t) {
    if (errno == ENOENT) return NULL;
    die(EXIT_BAD, "root %s holds a null pointer (errno %d)", ROOT, errno);
  }
  if (!p_contains(t) || !p_contains((char *)t + sizeof *t - 1))
    die(EXIT_BAD, "root %s = %p: the table is not in the heap", ROOT, (void *)t);
  if (t->magic != TABLE_MAGIC || t->nslots != NSLOTS)
    die(EXIT_BAD, "table at %p: magic 0x%x nslots %u (want 0x%x %u)", (void *)t, t->magic, t->nslots,
        TABLE_MAGIC, NSLOTS);
  return t;
}

/* Checks the heap and the table; returns the table (NULL if there is none
 * yet) or exits with 3 or 4 after saying what is wrong. */
static struct table *verify(void) {
  struct shmheap_recovery ri;
  memset(&ri, 0, sizeof ri);
  p_recovered(&ri);
  fprintf(stderr, "crash_worker[%d]: origin=%d dead=%u repaired=%u lock=%u ns=%llu\n", (int)getpid(),
          ri.origin, ri.dead_processes, ri.heaps_repaired, ri.lock_recovered,
          (unsigned long long)ri.recovery_ns);
  int problems = p_check(report_to_stderr, NULL);
  if (problems < 0) die(EXIT_OTHER, "shmheap_check: %s", strerror(errno));
  if (problems > 0) fprintf(stderr, "crash_worker[%d]: shmheap_check: %d problem(s)\n", (int)getpid(), problems);

  /* Records are checked even when the heap is not consistent: which of them
   * survived says what kind of damage it was. */
  struct table *t = get_table();
  int bad = 0;
  if (t) {
    struct extent *ex = malloc((NSLOTS + 1) * sizeof *ex);
    if (!ex) die(EXIT_OTHER, "malloc for the verification failed");
    size_t n = 0;
    ex[n++] = (struct extent){(uintptr_t)t, (uintptr_t)t + sizeof *t, -1};
    for (int i = 0; i < NSLOTS; i++) {
      struct rec *r = atomic_load_explicit(&t->slot[i], memory_order_acquire);
      if (!r) continue;
      const char *why = rec_shape_bad(r);
      if (why) {
        if (bad++ < 20)
          fprintf(stderr, "crash_worker[%d]: slot %d: record %p: %s\n", (int)getpid(), i, (void *)r, why);
        continue;
      }
      ex[n++] = (struct extent){(uintptr_t)r, (uintptr_t)r + r->size, i};
    }
    qsort(ex, n, sizeof *ex, by_lo);
    prefault(ex, n);
    char a[96], b[96];
    size_t last = 0; /* the extent that reaches furthest so far */
    for (size_t k = 0; k < n; k++) {
      if (ex[k].slot >= 0 && !rec_sum_ok((const struct rec *)ex[k].lo) && bad++ < 20)
        fprintf(stderr, "crash_worker[%d]: %s: checksum mismatch\n", (int)getpid(), ext_name(&ex[k], a, sizeof a));
      /* two live objects in the same memory: a block handed out twice */
      if (k && ex[k].lo < ex[last].hi && bad++ < 20)
        fprintf(stderr, "crash_worker[%d]: %s overlaps %s\n", (int)getpid(), ext_name(&ex[last], a, sizeof a),
                ext_name(&ex[k], b, sizeof b));
      if (ex[k].hi > ex[last].hi) last = k;
    }
    free(ex);
    if (bad) fprintf(stderr, "crash_worker[%d]: %d bad record(s)\n", (int)getpid(), bad);
  }
  if (problems) _exit(EXIT_CHECK);
  if (bad) _exit(EXIT_BAD);
  return t;
}

static struct table *table_create(void) {
  struct table *t = malloc(sizeof *t);
  if (!t) die(EXIT_OTHER, "malloc of the table failed");
  t->magic = TABLE_MAGIC;
  t->nslots = NSLOTS;
  for (int i = 0; i < NSLOTS; i++) atomic_init(&t->slot[i], NULL);
  /* the root is the publication: a kill before it loses only the table */
  if (p_root_set(ROOT, t) != 0) die(EXIT_OTHER, "shmheap_root_set: %s", strerror(errno));
  return t;
}

/* ---- mutation --------------------------------------------------------------------- */

static struct table *T;
static int nthreads;
static atomic_int stop;
static uint64_t base_seed;

struct thr {
  pthread_t tid;
  int t;
  uint64_t rng;
  uint64_t ops;
};

static uint64_t rnd(struct thr *th) { return splitmix(&th->rng); }

/* A size in [2^lo, 2^hi), log-uniform: every size class gets its share. */
static uint64_t log_uniform(struct thr *th, unsigned lo, unsigned hi) {
  uint64_t r = rnd(th);
  uint64_t base = 1ULL << (lo + r % (hi - lo));
  return base + (r >> 8) % base;
}

/* 1 in 50 large (32 KiB .. 1 MiB); of the small ones half up to 1 KiB, half
 * up to the top class.  The bias toward small keeps the table at about
 * 40 MB, which every worker checksums before it says "ready": that time is
 * most of what a kill costs. */
static uint64_t rec_size(struct thr *th) {
  uint64_t s, r = rnd(th);
  if (r % 50 == 0) {
    s = log_uniform(th, 15, 20);
    return s <= SMALL_MAX ? SMALL_MAX + 1 : s;
  }
  s = log_uniform(th, 4, r & 256 ? 10 : 15);
  return s < REC_MIN ? REC_MIN : s > SMALL_MAX ? SMALL_MAX : s;
}

/* Checks a record this thread now owns (out of the table) and frees it. */
static void retire(struct rec *r, int slot) {
  const char *why = rec_bad(r);
  if (why) die(EXIT_BAD, "slot %d: record %p taken out of the table: %s", slot, (void *)r, why);
  free(r);
}

/* Puts r into slot i (owned by this thread) and frees what was there. */
static void publish(int i, struct rec *r) {
  /* release: the record's contents are visible before its pointer */
  struct rec *old = atomic_exchange_explicit(&T->slot[i], r, memory_order_acq_rel);
  /* from here to the end of free(old), old is in flight */
  if (old) retire(old, i);
}

static struct rec *rec_new(struct thr *th, int zeroed) {
  uint64_t size = rec_size(th);
  struct rec *r = zeroed ? calloc(1, size) : malloc(size);
  if (!r) die(EXIT_OTHER, "%s(%" PRIu64 ") failed: %s", zeroed ? "calloc" : "malloc", size, strerror(errno));
  if (zeroed) {
    const unsigned char *c = (const unsigned char *)r;
    for (uint64_t k = 0; k < size; k++)
      if (c[k]) die(EXIT_BAD, "calloc(1, %" PRIu64 ") = %p: byte %" PRIu64 " is 0x%02x", size, (void *)r, k, c[k]);
  }
  rec_fill(r, size, rnd(th));
  if (!p_contains(r) || !p_contains((const char *)r + size - 1))
    die(EXIT_BAD, "%p from %s(%" PRIu64 ") is not in the heap", (void *)r, zeroed ? "calloc" : "malloc", size);
  return r;
}

/* Takes the record of owned slot i out of the table, grows or shrinks it with
 * realloc, checks that realloc kept the data, refills it and puts it back.
 * Slot i is NULL meanwhile: only this thread stores into its slots, so the
 * exchange that puts it back finds NULL. */
static void rec_realloc(struct thr *th, int i) {
  struct rec *r = atomic_exchange_explicit(&T->slot[i], NULL, memory_order_acq_rel);
  if (!r) {
    publish(i, rec_new(th, 0));
    return;
  }
  const char *why = rec_bad(r);
  if (why) die(EXIT_BAD, "slot %d: record %p taken for realloc: %s", i, (void *)r, why);
  uint64_t old_size = r->size, old_seed = r->seed, size = rec_size(th);
  uintptr_t was = (uintptr_t)r; /* for the messages only */
  /* inside realloc the old and the new block may both be in flight */
  struct rec *n = realloc(r, size);
  if (!n) die(EXIT_OTHER, "realloc(%#" PRIxPTR ", %" PRIu64 ") failed: %s", was, size, strerror(errno));
  if (!p_contains(n)) die(EXIT_BAD, "%p from realloc is not in the heap", (void *)n);
  size_t keep = (size_t)(size < old_size ? size : old_size) - REC_MIN;
  if (n->size != old_size || n->seed != old_seed || !prefix_ok(n, old_seed, keep))
    die(EXIT_BAD, "realloc(%#" PRIxPTR ", %" PRIu64 ") = %p did not keep the first %zu bytes of the record",
        was, size, (void *)n, keep + REC_MIN);
  rec_fill(n, size, rnd(th));
  publish(i, n);
}

static void *mutator(void *arg) {
  struct thr *th = arg;
  int mine = (NSLOTS - th->t + nthreads - 1) / nthreads; /* slots t, t+n, t+2n, ... */
  while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
    uint64_t r = rnd(th);
    unsigned op = (unsigned)(r % 100);
    int i = th->t + nthreads * (int)((r >> 8) % (uint64_t)mine);
    if (op < 3) {
      /* steal any slot, usually another thread's: the exchange makes the
       * record ours, and its free is (mostly) a free from a foreign thread */
      int j = (int)((r >> 8) % NSLOTS);
      struct rec *old = atomic_exchange_explicit(&T->slot[j], NULL, memory_order_acq_rel);
      if (old) retire(old, j);
    } else if (op < 6) {
      /* the 16-byte class, which no record fits in; held by nobody else */
      size_t n = 1 + (r >> 20) % 16;
      unsigned char *p = malloc(n);
      if (!p) die(EXIT_OTHER, "malloc(%zu) failed", n);
      memset(p, 0x5a, n);
      free(p);
    } else if (op < 14) {
      rec_realloc(th, i);
    } else if (op < 24) {
      publish(i, rec_new(th, 1));
    } else if (op < 30) {
      /* empty an owned slot, so slots keep changing between NULL and not */
      struct rec *old = atomic_exchange_explicit(&T->slot[i], NULL, memory_order_acq_rel);
      if (old) retire(old, i);
    } else {
      publish(i, rec_new(th, 0));
    }
    th->ops++;
  }
  return NULL;
}

static void *idler(void *arg) {
  (void)arg;
  for (;;) pause();
  return NULL;
}

static struct thr thr[MAX_THREADS];

static void start_threads(int n, void *(*fn)(void *)) {
  nthreads = n;
  for (int t = 0; t < n; t++) {
    thr[t].t = t;
    thr[t].rng = base_seed ^ (0xd1b54a32d192ed03ULL * (uint64_t)(t + 1));
    int e = pthread_create(&thr[t].tid, NULL, fn, &thr[t]);
    if (e) die(EXIT_OTHER, "pthread_create: %s", strerror(e));
  }
}

static void say_ready(void) {
  /* the test starts its kill timer on this line */
  fputs("ready\n", stdout);
  fflush(stdout);
}

static int count(struct table *t) {
  struct shmheap_info in;
  if (p_get_info(&in) != 0) die(EXIT_OTHER, "shmheap_get_info failed");
  unsigned slots = 0;
  unsigned long long bytes = 0;
  for (int i = 0; t && i < NSLOTS; i++) {
    struct rec *r = atomic_load(&t->slot[i]);
    if (!r) continue;
    slots++;
    bytes += malloc_usable_size(r);
  }
  printf("slots=%u blocks_bytes=%llu\n", slots, bytes);
  if (t) printf("block=%llu\n", (unsigned long long)((uintptr_t)t - (uintptr_t)in.base));
  for (int i = 0; t && i < NSLOTS; i++) {
    struct rec *r = atomic_load(&t->slot[i]);
    if (r) printf("block=%llu\n", (unsigned long long)((uintptr_t)r - (uintptr_t)in.base));
  }
  return fflush(stdout) == 0 ? 0 : EXIT_OTHER;
}

static int clean(struct table *t) {
  if (!t) return 0;
  for (int i = 0; i < NSLOTS; i++) {
    struct rec *r = atomic_exchange(&t->slot[i], NULL);
    free(r);
  }
  if (p_root_remove(ROOT) != 0) die(EXIT_OTHER, "shmheap_root_remove: %s", strerror(errno));
  free(t);
  return 0;
}

static int by_addr(const void *a, const void *b) {
  uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
  return x < y ? -1 : x > y;
}

/* Reads with read(), not stdio: a stdin buffer would be one more block this
 * process leaves behind, and the test counts those. */
static int sweep(struct table *t) {
  struct shmheap_info in;
  if (p_get_info(&in) != 0) die(EXIT_OTHER, "shmheap_get_info failed");
  size_t cap = 4096, n = 0, got = 0;
  uint64_t *off = malloc(cap * sizeof *off);
  uintptr_t *keep = malloc((NSLOTS + 1) * sizeof *keep);
  if (!off || !keep) die(EXIT_OTHER, "malloc for the sweep failed");
  for (;;) {
    if (got == cap * sizeof *off) {
      cap *= 2;
      off = realloc(off, cap * sizeof *off);
      if (!off) die(EXIT_OTHER, "realloc for the sweep failed");
    }
    ssize_t r = read(0, (char *)off + got, cap * sizeof *off - got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) die(EXIT_OTHER, "read: %s", strerror(errno));
    if (r == 0) break;
    got += (size_t)r;
  }
  if (got % sizeof *off) die(EXIT_USAGE, "sweep: %zu bytes on stdin, not a list of offsets", got);
  n = got / sizeof *off;
  size_t nk = 0;
  if (t) {
    keep[nk++] = (uintptr_t)t;
    for (int i = 0; i < NSLOTS; i++) {
      struct rec *r = atomic_load(&t->slot[i]);
      if (r) keep[nk++] = (uintptr_t)r;
    }
  }
  qsort(keep, nk, sizeof *keep, by_addr);
  for (size_t i = 0; i < n; i++) {
    uintptr_t a = (uintptr_t)in.base + (uintptr_t)off[i];
    if (!p_contains((void *)a) || bsearch(&a, keep, nk, sizeof *keep, by_addr))
      die(EXIT_BAD, "sweep: asked to free %#" PRIxPTR ", which is %s", a,
          p_contains((void *)a) ? "reachable from the table" : "not in the heap");
  }
  for (size_t i = 0; i < n; i++) free((char *)in.base + off[i]);
  free(keep);
  free(off);
  return 0;
}

static int usage(void) {
  fputs("usage: crash_worker run NTHREADS [MS] | idle NTHREADS | verify | count | clean | sweep\n", stderr);
  return EXIT_USAGE;
}

int main(int argc, char **argv) {
  if (argc < 2) return usage();
  const char *mode = argv[1];
  int n = 0;
  long ms = -1;
  if (!strcmp(mode, "run") || !strcmp(mode, "idle")) {
    if (argc < 3 || argc > 4 || (argc == 4 && !strcmp(mode, "idle"))) return usage();
    n = atoi(argv[2]);
    if (n < 1 || n > MAX_THREADS) return usage();
    if (argc == 4) {
      char *end;
      ms = strtol(argv[3], &end, 10);
      if (*end || ms < 0) return usage();
    }
  } else if (strcmp(mode, "verify") && strcmp(mode, "count") && strcmp(mode, "clean") && strcmp(mode, "sweep")) {
    return usage();
  } else if (argc != 2) {
    return usage();
  }

  need_lib();
  const char *s = getenv("CRASH_WORKER_SEED");
  base_seed = s ? strtoull(s, NULL, 0) : (uint64_t)time(NULL) * 1000003u + (uint64_t)getpid();

  struct table *t = verify();
  if (!strcmp(mode, "verify")) return 0;
  if (!strcmp(mode, "count")) return count(t);
  if (!strcmp(mode, "clean")) return clean(t);
  if (!strcmp(mode, "sweep")) return sweep(t);

  T = t ? t : table_create();
  if (!strcmp(mode, "idle")) {
    /* the same threads as run (glibc gives each a malloc'd TLS vector), so
     * a killed idle worker leaves what any killed worker leaves, minus what
     * was in flight */
    start_threads(n, idler);
    say_ready();
    for (;;) pause();
  }
  /* threads first, then "ready": no kill lands inside pthread_create, whose
   * allocations the idle measure would then miss */
  start_threads(n, mutator);
  say_ready();
  if (ms < 0)
    for (;;) pause();
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) && errno == EINTR) {
  }
  atomic_store(&stop, 1);
  uint64_t ops = 0;
  for (int k = 0; k < n; k++) {
    pthread_join(thr[k].tid, NULL);
    ops += thr[k].ops;
  }
  printf("done ops=%" PRIu64 "\n", ops);
  return fflush(stdout) == 0 ? 0 : EXIT_OTHER;
}
