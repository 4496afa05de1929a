/* The program of tests/prefault.sh, linked with the library: a keyed heap
 * of checksummed blocks under the root "pf.table", and what a re-attach
 * does with it while the prefault maps it in.
 *
 *   fill N          N blocks (16 B .. 3 KiB, every 500th 64..200 KiB), each
 *                   holding a pattern of its slot and size; every 7th freed
 *   status          prints the prefault status as main finds it
 *   idle [FILE]     allocates nothing: waits for the prefault to finish,
 *                   then for FILE to exist
 *   supervise       shmheap_supervise: the first worker verifies and dies
 *                   by SIGKILL, the second verifies and exits 0; each
 *                   prints its own prefault's mode
 *   verify          waits for it, checks every block and shmheap_check
 *   churn           frees, reallocates and allocates slots while it runs,
 *                   then checks everything as verify does
 *   churn-forever   as churn, and prints "churning" while the prefault
 *                   runs, until killed
 *   fork copy|share forks while it runs: the child checks the blocks,
 *                   allocates and frees, runs shmheap_check; the parent
 *                   waits for it and for the prefault, then verifies
 *   hash SHMID [LIST]  (run with no key) hashes the heap pages below top
 *                   of segment SHMID, attached read-only, or the blocks
 *                   that LIST names (shmheap-dump --blocks): "hash=H ..."
 *   fork-storm N    two threads fork N times each while it runs (SHMHEAP_FORK
 *                   as set): every child has no prefault, and the parent's
 *                   maps exactly what it planned
 *   scribble        overwrites the page map, span descriptors and the
 *                   header's bounds with garbage while the threads walk them; waits for them to
 *                   finish and leaves by _exit (the heap is garbage now)
 * Every mode but fill prints "mode=M running=R finished=F threads=T
 * planned=B mapped=B" first (status at main) and exits 1 on a problem. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/shm.h>
#include <sys/wait.h>

#include "format.h"
#include "shmheap.h"

struct table {
  size_t n;
  unsigned char *slot[];
};

static uint64_t rng = 88172645463325252ULL;
static uint64_t next(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

static size_t size_of(size_t i, uint64_t salt) {
  uint64_t h = (i + 1) * 2654435761u + salt;
  return (h % 500 == 0) ? 65536 + h % 140000 : 16 + h % 3000;
}

/* A block: its size in the first 8 bytes, then bytes of (slot, size). */
static void fill_block(unsigned char *b, size_t i, size_t sz) {
  memcpy(b, &sz, sizeof sz);
  for (size_t k = sizeof sz; k < sz; k++) b[k] = (unsigned char)(i * 31 + k * 7 + sz);
}

static int block_ok(const unsigned char *b, size_t i) {
  size_t sz;
  memcpy(&sz, b, sizeof sz);
  if (sz < 16 || sz > 300000) return 0;
  for (size_t k = sizeof sz; k < sz; k++)
    if (b[k] != (unsigned char)(i * 31 + k * 7 + sz)) return 0;
  return 1;
}

static void msleep(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static int wait_finished(struct shmheap_prefault *st) {
  for (int i = 0; i < 30000; i++) {
    shmheap_prefault_status(st);
    if (st->finished || st->mode == SHMHEAP_PREFAULT_NONE) return st->finished;
    msleep(1);
  }
  return 0;
}

static void count_problem(void *ctx, const char *p) {
  ++*(int *)ctx;
  fprintf(stderr, "prefault_prog: shmheap_check: %s\n", p);
}

/* Every block whole and the heap consistent: 0, else the problems. */
static int verify(struct table *t) {
  int bad = 0;
  size_t live = 0;
  for (size_t i = 0; i < t->n; i++) {
    if (!t->slot[i]) continue;
    live++;
    if (!block_ok(t->slot[i], i)) {
      if (bad++ < 5) fprintf(stderr, "prefault_prog: slot %zu: the block's bytes changed\n", i);
    }
  }
  int probs = 0;
  shmheap_check(count_problem, &probs);
  printf("verified %zu blocks: %d bad, shmheap_check %d problem(s)\n", live, bad, probs);
  return bad + probs;
}

/* A slot holds NULL or a whole block at every instruction, for the kill
 * case: taken out before it is freed or reallocated, put back once filled.
 * The fences keep the compiler from moving the stores across the calls. */
static void publish(struct table *t, size_t i, unsigned char *b) {
  atomic_signal_fence(memory_order_seq_cst);
  t->slot[i] = b;
  atomic_signal_fence(memory_order_seq_cst);
}

static void churn_step(struct table *t, uint64_t salt) {
  size_t i = next() % t->n;
  unsigned r = (unsigned)(next() % 3);
  unsigned char *old = t->slot[i];
  publish(t, i, NULL);
  if (r == 0 || !old) {
    free(old);
    if (r == 0) return;
    size_t sz = size_of(i, salt);
    unsigned char *b = malloc(sz);
    if (b) fill_block(b, i, sz);
    publish(t, i, b);
    return;
  }
  size_t sz = size_of(i, salt ^ 0x5bd1e995);
  unsigned char *b = realloc(old, sz);
  if (!b) {
    publish(t, i, old);
    return;
  }
  fill_block(b, i, sz);
  publish(t, i, b);
}

/* fork-storm: two threads fork at once, over and over, while the prefault
 * runs; each child checks that it has no prefault and leaves. */
static int storm_n;
static _Atomic int storm_during, storm_bad;
static void *storm(void *arg) {
  (void)arg;
  for (int i = 0; i < storm_n; i++) {
    struct shmheap_prefault s;
    shmheap_prefault_status(&s);
    pid_t pid = fork();
    if (pid == 0) {
      shmheap_prefault_status(&s);
      _exit(s.mode == SHMHEAP_PREFAULT_NONE ? 0 : 1);
    }
    if (pid < 0) {
      atomic_store(&storm_bad, 1);
      return NULL;
    }
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status)) atomic_store(&storm_bad, 1);
    if (s.running) atomic_fetch_add(&storm_during, 1);
  }
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: prefault_prog fill N | status | idle | verify | churn | churn-forever | fork copy|share | scribble\n");
    return 2;
  }
  const char *m = argv[1];
  if (!strcmp(m, "fill") && argc > 2) {
    size_t n = strtoull(argv[2], NULL, 0);
    struct table *t = calloc(1, sizeof *t + n * sizeof t->slot[0]);
    if (!t) return 1;
    t->n = n;
    for (size_t i = 0; i < n; i++) {
      size_t sz = size_of(i, 0);
      if (!(t->slot[i] = malloc(sz))) return 1;
      fill_block(t->slot[i], i, sz);
    }
    /* Holes: every 7th block, and every large one, whose pages become
     * free spans that still hold memory (dirty): never to be mapped in. */
    for (size_t i = 0; i < n; i++) {
      if (i % 7 && size_of(i, 0) < 65536) continue;
      free(t->slot[i]);
      t->slot[i] = NULL;
    }
    shmheap_root_set("pf.table", t);
    printf("filled %zu\n", n);
    return 0;
  }

  if (!strcmp(m, "hash") && argc > 2) {
    const struct shm_header *h = shmat(atoi(argv[2]), NULL, SHM_RDONLY);
    if (h == (void *)-1) {
      perror("prefault_prog: shmat");
      return 1;
    }
    uint64_t x = 1469598103934665603ULL;
    if (argc > 3) { /* the blocks listed by shmheap-dump --blocks */
      FILE *f = fopen(argv[3], "r");
      if (!f) return 1;
      unsigned long long off, sz;
      size_t n = 0;
      char buf[256];
      while (fgets(buf, sizeof buf, f))
        if (sscanf(buf, "%llx %llu", &off, &sz) == 2 && off + sz <= h->size) {
          const unsigned char *b = (const unsigned char *)h + off;
          for (size_t i = 0; i < sz; i++) x = (x ^ b[i]) * 1099511628211ULL;
          n++;
        }
      fclose(f);
      printf("hash=%016llx blocks=%zu\n", (unsigned long long)x, n);
      return n ? 0 : 1;
    }
    uint32_t top = h->top;
    const uint64_t *w = (const uint64_t *)((const char *)h + h->heap_off);
    for (size_t i = 0; i < ((size_t)top << SH_PAGE_SHIFT) / 8; i++) x = (x ^ w[i]) * 1099511628211ULL;
    printf("hash=%016llx pages=%u\n", (unsigned long long)x, top);
    return 0;
  }

  /* Before anything allocates (idle allocates nothing at all). */
  struct shmheap_prefault st;
  shmheap_prefault_status(&st);
  char line[200];
  int len = snprintf(line, sizeof line, "mode=%d running=%d finished=%d threads=%u planned=%llu mapped=%llu\n",
                     st.mode, st.running, st.finished, st.threads, (unsigned long long)st.bytes_planned,
                     (unsigned long long)st.bytes_mapped);
  if (write(1, line, (size_t)len) != len) return 1;
  struct table *t = shmheap_root_get("pf.table");
  if (!strcmp(m, "status")) return 0;
  if (!t) {
    fprintf(stderr, "prefault_prog: no root pf.table\n");
    return 1;
  }

  if (!strcmp(m, "idle")) {
    int done = wait_finished(&st);
    len = snprintf(line, sizeof line, "idle: finished=%d mapped=%llu\n", done, (unsigned long long)st.bytes_mapped);
    if (write(1, line, (size_t)len) != len) return 1;
    /* Stays until FILE exists, for the caller to read its smaps. */
    for (int i = 0; argc > 2 && i < 60000 && access(argv[2], F_OK) != 0; i++) msleep(1);
    return done || st.mode == SHMHEAP_PREFAULT_NONE ? 0 : 1;
  }

  if (!strcmp(m, "supervise")) {
    struct shmheap_supervise_options o = {0, 0, 0, 0, 1};
    int deaths = shmheap_supervise(&o);
    if (deaths < 0) return 1;
    struct shmheap_prefault w;
    shmheap_prefault_status(&w);
    int done = wait_finished(&st);
    printf("worker %d: mode=%d finished=%d mapped=%llu of %llu\n", deaths, w.mode, done,
           (unsigned long long)st.bytes_mapped, (unsigned long long)st.bytes_planned);
    fflush(stdout);
    if (verify(t) || !done || w.mode == SHMHEAP_PREFAULT_NONE) return 1;
    fflush(stdout);
    if (deaths == 0) raise(SIGKILL); /* the supervisor forks the next worker */
    return 0;
  }

  if (!strcmp(m, "verify")) {
    int done = wait_finished(&st);
    printf("finished=%d mapped=%llu of %llu\n", done, (unsigned long long)st.bytes_mapped,
           (unsigned long long)st.bytes_planned);
    return verify(t) ? 1 : 0;
  }

  if (!strcmp(m, "churn") || !strcmp(m, "churn-forever")) {
    int forever = !strcmp(m, "churn-forever");
    unsigned long ops = 0, during = 0;
    for (uint64_t salt = 1;; salt++) {
      shmheap_prefault_status(&st);
      if (!st.running && !forever) break;
      for (int k = 0; k < 64; k++) churn_step(t, salt);
      ops += 64;
      if (st.running) during += 64;
      if (forever && st.running && during == 64) {
        printf("churning\n");
        fflush(stdout);
      }
    }
    printf("ops=%lu during_prefault=%lu\n", ops, during);
    if (!during) {
      fprintf(stderr, "prefault_prog: the prefault was not running while it churned (make the heap larger)\n");
      return 1;
    }
    return verify(t) ? 1 : 0;
  }

  if (!strcmp(m, "fork") && argc > 2) {
    enum shmheap_fork_mode mode = !strcmp(argv[2], "share") ? SHMHEAP_FORK_SHARE : SHMHEAP_FORK_COPY;
    for (int i = 0; i < 20000 && shmheap_prefault_status(&st) == 0 && st.bytes_mapped == 0; i++) msleep(1);
    if (!st.running) {
      fprintf(stderr, "prefault_prog: the prefault was not running before the fork (make the heap larger)\n");
      return 1;
    }
    uint64_t before = st.bytes_mapped;
    pid_t pid = shmheap_fork(mode);
    if (pid < 0) return 1;
    if (pid == 0) {
      struct shmheap_prefault c;
      shmheap_prefault_status(&c);
      int bad = c.mode != SHMHEAP_PREFAULT_NONE || c.running; /* a child has no prefault */
      if (bad) fprintf(stderr, "prefault_prog: child: the prefault says mode %d, running %d\n", c.mode, c.running);
      for (size_t i = 0; i < t->n; i++)
        if (t->slot[i] && !block_ok(t->slot[i], i)) bad++;
      void *p[1000];
      for (int r = 0; r < 20; r++) {
        for (int i = 0; i < 1000; i++) p[i] = malloc(16 + (size_t)(next() % 5000));
        for (int i = 0; i < 1000; i++) free(p[i]);
      }
      int probs = 0;
      shmheap_check(count_problem, &probs);
      printf("child: %d bad block(s), shmheap_check %d problem(s)\n", bad, probs);
      fflush(stdout);
      _exit(bad + probs ? 1 : 0);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status)) {
      fprintf(stderr, "prefault_prog: the child ended with status 0x%x\n", status);
      return 1;
    }
    int done = wait_finished(&st);
    printf("parent: mapped %llu before the fork, finished=%d mapped=%llu of %llu\n", (unsigned long long)before, done,
           (unsigned long long)st.bytes_mapped, (unsigned long long)st.bytes_planned);
    if (!done) return 1;
    if (st.bytes_mapped != st.bytes_planned) {
      fprintf(stderr, "prefault_prog: %llu bytes mapped, %llu planned\n", (unsigned long long)st.bytes_mapped,
              (unsigned long long)st.bytes_planned);
      return 1;
    }
    return verify(t) ? 1 : 0;
  }

  if (!strcmp(m, "fork-storm") && argc > 2) {
    if (!st.running) {
      fprintf(stderr, "prefault_prog: the prefault was not running at main (make the heap larger)\n");
      return 1;
    }
    storm_n = atoi(argv[2]);
    pthread_t a, b;
    pthread_create(&a, NULL, storm, NULL);
    pthread_create(&b, NULL, storm, NULL);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    int done = wait_finished(&st);
    printf("storm: %d forks, %d while it ran; finished=%d mapped=%llu of %llu\n", 2 * storm_n,
           atomic_load(&storm_during), done, (unsigned long long)st.bytes_mapped, (unsigned long long)st.bytes_planned);
    if (atomic_load(&storm_bad)) return 1;
    return done && st.bytes_mapped == st.bytes_planned && atomic_load(&storm_during) > 0 ? 0 : 1;
  }

  if (!strcmp(m, "scribble")) {
    if (!st.running) {
      fprintf(stderr, "prefault_prog: the prefault was not running at main (make the heap larger)\n");
      return 1;
    }
    struct shmheap_info info;
    shmheap_get_info(&info);
    struct shm_header *h = info.base;
    uint32_t *pagemap = (uint32_t *)((char *)info.base + h->pagemap_off);
    struct span *spans = (struct span *)((char *)info.base + h->spans_off);
    uint32_t npages = h->npages, nspans = h->nspans;
    for (uint32_t p = 0; p < npages; p++) {
      uint64_t r = next();
      /* Mostly indices of real descriptors, some far beyond them. */
      pagemap[p] = (r & 3) ? (uint32_t)((r >> 8) % nspans) : (uint32_t)(r >> 32);
    }
    for (uint32_t s = 0; s < nspans && s < 100000; s += 3) {
      spans[s].first = (uint32_t)next() % npages;
      spans[s].npages = (uint32_t)next();
      spans[s].state = (uint8_t)(next() % 4);
    }
    /* The bounds in the header too: the walk keeps those of the attach. */
    h->top = 0xffffffffu;
    h->npages = 0xffffffffu;
    h->nspans = 0xffffffffu;
    h->span_count = 0xffffffffu;
    int done = wait_finished(&st);
    len = snprintf(line, sizeof line, "scribbled: finished=%d\n", done);
    if (write(1, line, (size_t)len) != len) _exit(1);
    _exit(done ? 0 : 1);
  }
  fprintf(stderr, "prefault_prog: unknown mode %s\n", m);
  return 2;
}
