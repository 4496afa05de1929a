/* check_crash: SIGKILL at random instructions.  Runs tests/crash_worker (not
 * linked with the library) preloaded on a keyed heap, kills it at random
 * moments while its threads allocate, reallocate and free, and requires that
 * every next worker finds the heap consistent (shmheap_check) and every
 * record of its table intact.  Every sweep_every kills it counts the blocks
 * the kills lost (live according to tools/shmheap-dump --blocks, unreachable
 * from the table) and frees them, and at the end it compares their number
 * with what the kills could lose at most.  damage_detected checks that the
 * worker's verification does fail on a damaged heap.
 *
 * This suite is not linked with libshmheap: it is the harness around the
 * heap it measures and forks for every worker; it has no use for a heap of
 * its own.
 *
 * Environment: SHMHEAP_CRASH_KILLS (default 200) kills in the loop;
 * SHMHEAP_CRASH_SEED replays the delays of a failed run (printed on stdout);
 * SHMHEAP_CRASH_SWEEP_EVERY (default 25) kills between two counts of the
 * lost blocks (1: each kill is held to the bound on its own, at about
 * 0.3 s more per kill).
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/shm.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "format.h" /* struct shm_header, to damage a heap on purpose */
#include "testutil.h"

#define NTHREADS 4
#define NTHREADS_S "4"
#define DEFAULT_KILLS 200
#define MAX_DELAY_MS 30  /* a kill lands 0..30 ms after "ready" */
#define CLEAN_RUN_MS "50" /* the clean run that forms the table */
#define IDLE_KILLS 3
#define SWEEP_EVERY 25 /* default kills between two measures (and sweeps) of the lost blocks */
#define READY_TIMEOUT_MS 30000 /* attach, check, checksum ~40 MB: 0.1-0.3 s normally */
#define RUN_TIMEOUT_MS 60000


static int kills = DEFAULT_KILLS;
static int sweep_every = SWEEP_EVERY;
static unsigned seed;

static const char *worker(void) {
  static char path[4096];
  if (!path[0]) tu_bpath("tests/crash_worker", path, sizeof path);
  return path;
}

static const char *dump_tool(void) {
  static char path[4096];
  if (!path[0]) tu_bpath("tools/shmheap-dump", path, sizeof path);
  return path;
}

/* ---- processes ------------------------------------------------------------------ */

/* A child: stdout either a pipe (to wait for "ready") or a memfd; stderr
 * always a memfd, so a child that writes a lot never blocks on us. */
struct proc {
  pid_t pid;
  int out;  /* pipe read end or memfd */
  int err;  /* memfd */
  int piped;
  int status;
  char *outbuf, *errbuf; /* after finish() */
};

/* Starts argv with the caller's environment minus LD_PRELOAD and SHMHEAP_*
 * (as tu_run does), plus the library preloaded if asked, plus env_add.
 * Its stdin is in (from its start), or /dev/null if in < 0. */
static void spawn(const char *const argv[], const char *const env_add[], int preload, int piped, int in,
                  struct proc *p) {
  memset(p, 0, sizeof *p);
  char pre[4200];
  char **envp = tu_env(env_add, preload, pre, sizeof pre);
  ck_assert_ptr_nonnull(envp);

  int po[2] = {-1, -1};
  p->piped = piped;
  if (piped) ck_assert_int_eq(pipe2(po, O_CLOEXEC), 0);
  else po[0] = po[1] = memfd_create("crash-out", MFD_CLOEXEC);
  p->err = memfd_create("crash-err", MFD_CLOEXEC);
  ck_assert_msg(po[0] >= 0 && p->err >= 0, "memfd_create: %s", strerror(errno));
  pid_t parent = getpid();
  fflush(NULL);
  p->pid = fork();
  ck_assert_msg(p->pid >= 0, "fork: %s", strerror(errno));
  if (p->pid == 0) {
    /* a worker in "run" mode never ends by itself: if this test process
     * dies (a failed assertion, the Check timeout), so does the worker */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    dup2(po[1], 1);
    dup2(p->err, 2);
    int nul = in >= 0 ? in : open("/dev/null", O_RDONLY);
    if (nul >= 0) dup2(nul, 0);
    execve(argv[0], (char *const *)argv, envp);
    dprintf(2, "check_crash: exec %s: %s\n", argv[0], strerror(errno));
    _exit(127);
  }
  free(envp);
  if (piped) close(po[1]);
  p->out = po[0];
}

/* The whole content of a memfd, NUL-terminated (malloc'd). */
static char *slurp_file(int fd) {
  off_t len = lseek(fd, 0, SEEK_END);
  if (len < 0) len = 0;
  char *buf = malloc((size_t)len + 1);
  ck_assert_ptr_nonnull(buf);
  ssize_t got = pread(fd, buf, (size_t)len, 0);
  buf[got > 0 ? got : 0] = 0;
  return buf;
}

/* Waits for "ready\n" on the pipe.  1: ready; 0: the pipe closed first (the
 * worker ended); -1: timeout. */
static int wait_ready(struct proc *p, int timeout_ms) {
  char buf[64];
  size_t len = 0;
  long long end = tu_now_ms() + timeout_ms;
  for (;;) {
    long long left = end - tu_now_ms();
    if (left <= 0) return -1;
    struct pollfd pfd = {p->out, POLLIN, 0};
    int r = poll(&pfd, 1, (int)left);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    ssize_t got = read(p->out, buf + len, sizeof buf - 1 - len);
    if (got <= 0) return 0;
    len += (size_t)got;
    buf[len] = 0;
    if (strstr(buf, "ready\n")) return 1;
    if (len == sizeof buf - 1) return 0; /* not what a worker says */
  }
}

/* Reaps p (SIGKILL first if kill_it) and collects its output. */
static void finish(struct proc *p, int kill_it, int timeout_ms) {
  if (kill_it) kill(p->pid, SIGKILL);
  if (tu_wait_timeout(p->pid, &p->status, timeout_ms) < 0) p->status = -1;
  if (p->piped) {
    /* whatever followed "ready" is of no interest; the pipe only held that */
    p->outbuf = strdup("");
  } else {
    p->outbuf = slurp_file(p->out);
  }
  p->errbuf = slurp_file(p->err);
  close(p->out);
  close(p->err);
}

static void proc_free(struct proc *p) {
  free(p->outbuf);
  free(p->errbuf);
  p->outbuf = p->errbuf = NULL;
}

/* The status as the messages show it. */
static const char *status_str(int st, char *buf, size_t len) {
  if (st == -1) snprintf(buf, len, "hung (killed after the timeout)");
  else if (WIFEXITED(st)) snprintf(buf, len, "exit %d", WEXITSTATUS(st));
  else if (WIFSIGNALED(st)) snprintf(buf, len, "signal %d", WTERMSIG(st));
  else snprintf(buf, len, "status 0x%x", st);
  return buf;
}

static int exited_ok(int st) { return st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0; }

/* ---- the worker ------------------------------------------------------------------ */

struct env {
  char key[64], seed[64];
  const char *v[5];
};

static const char *const *worker_env(struct env *e, int key, uint64_t wseed) {
  snprintf(e->key, sizeof e->key, "SHMHEAP_KEY=0x%x", (unsigned)key);
  snprintf(e->seed, sizeof e->seed, "CRASH_WORKER_SEED=%" PRIu64, wseed);
  e->v[0] = e->key;
  e->v[1] = "SHMHEAP_SIZE=256M";
  e->v[2] = e->seed;
  /* What the suite measures is what the repair loses to kills, counted and
   * freed by the suite itself between phases (settle): a collection at
   * each start (tests/gc.sh) would free it first, and the sweep would free
   * it twice. */
  e->v[3] = "SHMHEAP_GC=off";
  e->v[4] = NULL;
  return e->v;
}

/* Runs crash_worker ARGS to its end; asserts exit 0 and returns the output
 * (proc_free it). */
static void worker_run(int key, const char *what, const char *const args[], int in, struct proc *p) {
  const char *argv[8] = {worker()};
  for (int i = 0; i < 6 && args[i]; i++) argv[i + 1] = args[i];
  struct env e;
  spawn(argv, worker_env(&e, key, seed), 1, 0, in, p);
  finish(p, 0, RUN_TIMEOUT_MS);
  char st[64];
  ck_assert_msg(exited_ok(p->status), "%s: crash_worker %s: %s; stderr [%s] stdout [%.2000s]", what,
                args[0], status_str(p->status, st, sizeof st), p->errbuf, p->outbuf);
}

static void worker_simple(int key, const char *what, const char *mode) {
  const char *args[] = {mode, NULL};
  struct proc p;
  worker_run(key, what, args, -1, &p);
  proc_free(&p);
}

/* Starts crash_worker MODE NTHREADS and waits for "ready": the worker has
 * verified the heap the previous one left.  Fails with its stderr if it
 * ended or hung before. */
static void worker_start(int key, const char *mode, uint64_t wseed, const char *what, struct proc *p) {
  const char *argv[] = {worker(), mode, NTHREADS_S, NULL};
  struct env e;
  spawn(argv, worker_env(&e, key, wseed), 1, 1, -1, p);
  int r = wait_ready(p, READY_TIMEOUT_MS);
  if (r == 1) return;
  finish(p, r < 0, 5000);
  char st[64];
  ck_assert_msg(0, "%s: the worker did not get ready (%s): %s; stderr [%s]", what,
                r < 0 ? "no \"ready\" in time" : "it ended first", status_str(p->status, st, sizeof st),
                p->errbuf);
}

/* What the workers said on stderr when all was well: shmheap_recovered's
 * line, when the worker is built with it. */
struct notes {
  unsigned starts, crashed, repaired, lock;
  unsigned long long max_ns;
};

static void take_notes(struct notes *nt, const char *err) {
  char line[512];
  unsigned long long v;
  if (!tu_find_line(err, "origin=", line, sizeof line)) return;
  nt->starts++;
  if (tu_field(line, "origin", &v) && v == 2) nt->crashed++;
  if (tu_field(line, "repaired", &v)) nt->repaired += (unsigned)v;
  if (tu_field(line, "lock", &v)) nt->lock += (unsigned)v;
  if (tu_field(line, "ns", &v) && v > nt->max_ns) nt->max_ns = v;
}

/* SIGKILLs a ready worker; it must not have ended on its own. */
static void worker_kill(struct proc *p, const char *what, struct notes *nt) {
  finish(p, 1, 10000);
  if (nt) take_notes(nt, p->errbuf);
  char st[64];
  int killed = p->status != -1 && WIFSIGNALED(p->status) && WTERMSIG(p->status) == SIGKILL;
  ck_assert_msg(killed, "%s: the worker ended by itself while mutating (%s); stderr [%s]", what,
                status_str(p->status, st, sizeof st), p->errbuf);
  proc_free(p);
}

/* Forms a fresh heap with key and its table: a worker that runs for a while
 * and exits cleanly.  Every measured heap starts like this. */
static void fresh_heap(int key) {
  tu_rm_key(key);
  const char *args[] = {"run", NTHREADS_S, CLEAN_RUN_MS, NULL};
  struct proc p;
  worker_run(key, "the clean first run", args, -1, &p);
  ck_assert_msg(strstr(p.outbuf, "done ops="), "clean run: [%s]", p.outbuf);
  proc_free(&p);
}

/* ---- lost blocks ------------------------------------------------------------------ */

struct block {
  uint64_t off, size;
  int reached;
};

struct figures {
  uint64_t live, live_bytes;       /* blocks the dump tool finds in use */
  uint64_t reached, reached_bytes; /* of those, the table and its records */
  uint64_t lost, lost_bytes;       /* live and not reached */
  unsigned slots;
};

static int by_off(const void *a, const void *b) {
  const struct block *x = a, *y = b;
  return x->off < y->off ? -1 : x->off > y->off;
}

/* Parses shmheap-dump --blocks --json: {"blocks": [{"offset": N, "size": N,
 * "class": N}, ...], "shown": N, "total": N}. */
static struct block *parse_blocks(const char *json, size_t *nout) {
  size_t cap = 1024, n = 0;
  struct block *b = malloc(cap * sizeof *b);
  ck_assert_ptr_nonnull(b);
  const char *s = json;
  while ((s = strstr(s, "\"offset\": ")) != NULL) {
    unsigned long long off, size;
    const char *z = strstr(s, "\"size\": ");
    ck_assert_msg(z && sscanf(s, "\"offset\": %llu", &off) == 1 && sscanf(z, "\"size\": %llu", &size) == 1,
                  "shmheap-dump --json: cannot parse [%.200s]", s);
    if (n == cap) {
      cap *= 2;
      b = realloc(b, cap * sizeof *b);
      ck_assert_ptr_nonnull(b);
    }
    b[n++] = (struct block){off, size, 0};
    s = z;
  }
  const char *sh = strstr(json, "\"shown\": "), *tot = strstr(json, "\"total\": ");
  unsigned long long shown = 0, total = 0;
  ck_assert_msg(sh && tot && sscanf(sh, "\"shown\": %llu", &shown) == 1 &&
                    sscanf(tot, "\"total\": %llu", &total) == 1,
                "shmheap-dump --json: no shown/total in [%.300s]", json);
  ck_assert_msg(shown == total && shown == n, "shmheap-dump listed %zu of %llu blocks (shown %llu)", n, total,
                shown);
  qsort(b, n, sizeof *b, by_off);
  *nout = n;
  return b;
}

/* The blocks live in the heap of key but not reachable from the table.  The
 * worker (count) says what is reachable; the dump tool, reading the segment
 * while no process has it, says what is live.  Returns the offsets of the
 * unreachable ones in *garbage (malloc'd, *ngarbage of them). */
static void measure(int key, const char *what, struct figures *f, uint64_t **garbage, size_t *ngarbage) {
  memset(f, 0, sizeof *f);
  const char *cargs[] = {"count", NULL};
  struct proc c;
  worker_run(key, what, cargs, -1, &c);

  char keys[32];
  snprintf(keys, sizeof keys, "0x%x", (unsigned)key);
  const char *argv[] = {dump_tool(), "--blocks", "--json", "--limit", "100000000", keys, NULL};
  struct proc d;
  spawn(argv, NULL, 0, 0, -1, &d);
  finish(&d, 0, RUN_TIMEOUT_MS);
  char st[64];
  ck_assert_msg(exited_ok(d.status), "%s: shmheap-dump --blocks: %s; stderr [%s]", what,
                status_str(d.status, st, sizeof st), d.errbuf);
  size_t n;
  struct block *b = parse_blocks(d.outbuf, &n);
  proc_free(&d);

  unsigned long long slots = 0;
  ck_assert_msg(tu_field(c.outbuf, "slots", &slots), "%s: count said [%.200s]", what, c.outbuf);
  f->slots = (unsigned)slots;
  /* every reachable pointer must be the start of a live block, and of its
   * own block */
  for (const char *s = c.outbuf; (s = strstr(s, "block=")) != NULL; s += 6) {
    unsigned long long off = strtoull(s + 6, NULL, 10);
    size_t lo = 0, hi = n; /* past the last block with b.off <= off */
    while (lo < hi) {
      size_t mid = (lo + hi) / 2;
      if (b[mid].off <= off) lo = mid + 1;
      else hi = mid;
    }
    ck_assert_msg(lo > 0 && off < b[lo - 1].off + b[lo - 1].size,
                  "%s: the table or a record at heap offset %llu is in no live block: it was freed", what, off);
    ck_assert_msg(b[lo - 1].off == off,
                  "%s: the table or a record at heap offset %llu is inside the block at %" PRIu64
                  ", not at its start",
                  what, off, b[lo - 1].off);
    ck_assert_msg(!b[lo - 1].reached, "%s: two reachable objects in the block at offset %" PRIu64, what,
                  b[lo - 1].off);
    b[lo - 1].reached = 1;
  }
  uint64_t *g = malloc((n + 1) * sizeof *g);
  ck_assert_ptr_nonnull(g);
  size_t ng = 0;
  for (size_t i = 0; i < n; i++) {
    f->live++;
    f->live_bytes += b[i].size;
    if (b[i].reached) {
      f->reached++;
      f->reached_bytes += b[i].size;
    } else {
      g[ng++] = b[i].off;
    }
  }
  f->lost = f->live - f->reached;
  f->lost_bytes = f->live_bytes - f->reached_bytes;
  free(b);
  proc_free(&c);
  *garbage = g;
  *ngarbage = ng;
}

/* Frees the garbage measure() found (crash_worker sweep).  Without this the
 * kills would fill the heap: a killed thread is usually in the middle of
 * filling or checking a record, and large records take most of that time,
 * so each kill loses about 2 MB that nothing will ever free. */
static void sweep(int key, const char *what, const uint64_t *off, size_t n) {
  int fd = memfd_create("crash-sweep", MFD_CLOEXEC);
  ck_assert_msg(fd >= 0, "memfd_create: %s", strerror(errno));
  size_t len = n * sizeof *off, done = 0;
  while (done < len) {
    ssize_t w = write(fd, (const char *)off + done, len - done);
    ck_assert_msg(w > 0, "write: %s", strerror(errno));
    done += (size_t)w;
  }
  lseek(fd, 0, SEEK_SET);
  const char *args[] = {"sweep", NULL};
  struct proc p;
  worker_run(key, what, args, fd, &p);
  proc_free(&p);
  close(fd);
}

/* The end of every phase: measure the heap the phase left (count verifies
 * it first) and sweep its garbage.  Every phase thus starts from a heap
 * holding the table, its records and what the last sweep process left, and
 * ends with what the phase added plus what the count process leaves: the
 * baseline (two settles after a clean run) measures the latter. */
static void settle(int key, const char *what, struct figures *f) {
  uint64_t *g;
  size_t n;
  measure(key, what, f, &g, &n);
  sweep(key, what, g, n);
  free(g);
}

static void print_figures(const char *what, const struct figures *f) {
  printf("check_crash: %s: live %" PRIu64 " blocks (%" PRIu64 " bytes), reachable %" PRIu64 " (%u records), "
         "unreachable %" PRIu64 " (%" PRIu64 " bytes)\n",
         what, f->live, f->live_bytes, f->reached, f->slots, f->lost, f->lost_bytes);
  fflush(stdout);
}

/* ---- kill9_loop ------------------------------------------------------------------ */

static unsigned lcg(unsigned *s) {
  *s = *s * 1103515245u + 12345u;
  return *s >> 16;
}

/* shmheap-dump --check on the heap a kill left, before the next worker
 * attaches it (and, with a library that repairs, repairs it).  Returns the
 * number of problems; their first lines go to buf.  Informational: a kill
 * may leave a heap that only the next attach makes consistent.  The tool
 * allocates nothing in the heap, so its view is not disturbed by its own
 * scratch memory, as shmheap_check's can be. */
static int dump_check(int key, char *buf, size_t len) {
  char keys[32];
  snprintf(keys, sizeof keys, "0x%x", (unsigned)key);
  const char *argv[] = {dump_tool(), "--check", keys, NULL};
  struct proc d;
  spawn(argv, NULL, 0, 0, -1, &d);
  finish(&d, 0, RUN_TIMEOUT_MS);
  char st[64];
  int code = d.status != -1 && WIFEXITED(d.status) ? WEXITSTATUS(d.status) : -1;
  ck_assert_msg(code == 0 || code == 1, "shmheap-dump --check: %s; stderr [%s]",
                status_str(d.status, st, sizeof st), d.errbuf);
  int n = 0;
  size_t used = 0;
  buf[0] = 0;
  for (const char *l = d.outbuf; (l = strstr(l, "problem: ")) != NULL;) {
    l += 9;
    const char *nl = strchr(l, '\n');
    int w = (int)(nl ? nl - l : (long)strlen(l));
    if (n++ < 5 && used + (size_t)w + 3 < len) used += (size_t)snprintf(buf + used, len - used, "%.*s; ", w, l);
  }
  if (used >= 2) buf[used - 2] = 0;
  proc_free(&d);
  return code == 1 && n == 0 ? 1 : n;
}

START_TEST(t_kill9_loop) {
  long long t0 = tu_now_ms();
  printf("check_crash: seed=%u kills=%d (SHMHEAP_CRASH_SEED=%u replays the kill delays)\n", seed, kills, seed);
  fflush(stdout);

  /* Baseline: what is unreachable in a heap that no kill touched: stdio
   * buffers and other allocations of libc that no process frees (the heap
   * outlives them and cannot tell them from data) of the count and sweep
   * processes that every measure involves. */
  int kb = tu_key(2);
  fresh_heap(kb);
  struct figures base;
  settle(kb, "baseline", &base);
  settle(kb, "baseline", &base);
  print_figures("baseline", &base);
  tu_rm_key(kb);

  /* A killed process that was not allocating: the same start, then idle
   * workers (same threads as run) killed right after "ready". */
  int ki = tu_key(3);
  fresh_heap(ki);
  struct figures idle;
  settle(ki, "idle kills", &idle);
  struct proc p;
  for (int i = 0; i < IDLE_KILLS; i++) {
    worker_start(ki, "idle", seed, "idle worker", &p);
    worker_kill(&p, "idle worker", NULL);
  }
  settle(ki, "idle kills", &idle);
  print_figures("idle kills", &idle);
  tu_rm_key(ki);
  double idle_per_kill = ((double)idle.lost - (double)base.lost) / IDLE_KILLS;
  /* Each kill loses at most what a killed process always leaves (the idle
   * figure: its libc allocations, never freed because it never exits) plus
   * what its threads held outside the table when the signal came.  A thread
   * holds at most one block outside the table (the record it is building,
   * or the one it took out and is freeing), except inside realloc, where
   * the old and the new block coexist: 2 per thread.  The main thread only
   * waits.  The bound holds for every kill, so for the average of any
   * stretch of kills too (SHMHEAP_CRASH_SWEEP_EVERY=1 checks each kill). */
  double bound = idle_per_kill + 2.0 * NTHREADS;

  /* The loop.  Every worker verifies the heap the previous kill left before
   * it says "ready"; a worker that does not get ready fails the test.  Every
   * sweep_every kills the lost blocks are counted and swept. */
  int key = tu_key(1);
  fresh_heap(key);
  struct figures f;
  settle(key, "the clean run", &f);
  unsigned rng = seed;
  struct notes nt = {0};
  int torn = 0; /* kills after which the dump tool found the heap inconsistent */
  char torn_what[1200] = "";
  long long t_loop = tu_now_ms(), ready_ms = 0, lost = 0, lost_bytes = 0;
  double worst = 0;
  int epoch = 0;
  for (int i = 0; i < kills || (kills == 0 && i == 0); i++) {
    if (kills) {
      char what[1400];
      if (torn_what[0])
        snprintf(what, sizeof what, "after %d kill(s) (seed %u; the last left %s)", i, seed, torn_what);
      else
        snprintf(what, sizeof what, "after %d kill(s) (seed %u; shmheap-dump --check found the heap consistent)", i,
                 seed);
      long long ts = tu_now_ms();
      worker_start(key, "run", (uint64_t)seed * 1000003u + (uint64_t)i, what, &p);
      ready_ms += tu_now_ms() - ts;
      unsigned delay = lcg(&rng) % (MAX_DELAY_MS + 1);
      struct timespec d = {0, (long)delay * 1000000L};
      while (nanosleep(&d, &d) && errno == EINTR) {
      }
      snprintf(what, sizeof what, "kill %d of %d (%u ms after ready, seed %u)", i + 1, kills, delay, seed);
      worker_kill(&p, what, &nt);
      epoch++;
      char probs[1024];
      int np = dump_check(key, probs, sizeof probs);
      torn += np > 0;
      if (np)
        snprintf(torn_what, sizeof torn_what, "a heap in which shmheap-dump --check found %d problem(s): %s", np,
                 probs);
      else
        torn_what[0] = 0;
    }
    if (epoch == sweep_every || i + 1 >= kills) {
      char what[1400];
      snprintf(what, sizeof what, "after kills %d-%d (seed %u%s%s)", i + 2 - epoch, i + 1, seed,
               torn_what[0] ? "; the last left " : "", torn_what);
      settle(key, what, &f);
      long long l = (long long)f.lost - (long long)base.lost;
      long long lb = (long long)f.lost_bytes - (long long)base.lost_bytes;
      lost += l;
      lost_bytes += lb;
      if (epoch) {
        if ((double)l / epoch > worst) worst = (double)l / epoch;
        printf("check_crash: kills %d-%d: lost %lld blocks (%.2f per kill), %lld bytes; %u records\n",
               i + 2 - epoch, i + 1, l, (double)l / epoch, lb, f.slots);
        fflush(stdout);
        ck_assert_msg((double)l / epoch <= bound,
                      "kills %d-%d (seed %u) lost %lld blocks (%lld bytes): %.2f per kill, more than %.2f (idle kill "
                      "%.2f + 2 x %d threads in flight)",
                      i + 2 - epoch, i + 1, seed, l, lb, (double)l / epoch, bound, idle_per_kill, NTHREADS);
      }
      epoch = 0;
    }
  }
  long long loop_ms = tu_now_ms() - t_loop;
  worker_simple(key, "clean", "clean");
  tu_rm_key(key);

  double per_kill = kills ? (double)lost / kills : 0;
  printf("check_crash: kills=%d lost_blocks=%lld lost_per_kill=%.2f (worst %d-kill stretch %.2f) "
         "lost_bytes=%lld (%.0f per kill); bound %.2f per kill (idle kill %.2f + 2 x %d threads)\n",
         kills, lost, per_kill, sweep_every, worst, lost_bytes, kills ? (double)lost_bytes / kills : 0.0, bound,
         idle_per_kill, NTHREADS);
  printf("check_crash: kill loop %.1f s (%.1f ms per worker to get ready), whole test %.1f s\n",
         loop_ms / 1000.0, kills ? (double)ready_ms / kills : 0.0, (tu_now_ms() - t0) / 1000.0);
  printf("check_crash: %d of %d kills left a heap that shmheap-dump --check found torn before the next process repaired it\n", torn,
         kills);
  if (nt.starts)
    printf("check_crash: shmheap_recovered: %u starts, %u found a crashed heap, %u heaps repaired, "
           "%u locks recovered, slowest recovery %.3f ms\n",
           nt.starts, nt.crashed, nt.repaired, nt.lock, nt.max_ns / 1e6);
  fflush(stdout);
  ck_assert_msg(kills == 0 || per_kill <= bound,
                "%d kills lost %lld blocks (%lld bytes): %.2f per kill, more than %.2f (idle kill %.2f + 2 x %d "
                "threads in flight)",
                kills, lost, lost_bytes, per_kill, bound, idle_per_kill, NTHREADS);
}
END_TEST

/* ---- the worker's verification can fail ------------------------------------------ */

/* The heap of key attached read-write at any address (shmdt it). */
static char *attach_rw(int key) {
  int id = shmget(key, 0, 0);
  ck_assert_msg(id >= 0, "no segment with key 0x%x", (unsigned)key);
  char *m = shmat(id, NULL, 0);
  ck_assert_msg(m != (char *)-1, "shmat: %s", strerror(errno));
  return m;
}

/* Runs crash_worker verify on a damaged heap: it must exit with code and
 * say needle. */
static void expect_verify_fails(int key, int code, const char *needle, const char *what) {
  const char *argv[] = {worker(), "verify", NULL};
  struct env e;
  struct proc p;
  spawn(argv, worker_env(&e, key, seed), 1, 0, -1, &p);
  finish(&p, 0, RUN_TIMEOUT_MS);
  char st[64];
  int ok = p.status != -1 && WIFEXITED(p.status) && WEXITSTATUS(p.status) == code && strstr(p.errbuf, needle);
  ck_assert_msg(ok, "%s: crash_worker verify: %s (want exit %d and \"%s\"); stderr [%s]", what,
                status_str(p.status, st, sizeof st), code, needle, p.errbuf);
  proc_free(&p);
}

/* A kill loop whose verification could not fail would prove nothing: damage
 * a record, then the allocator's metadata, and see the worker notice. */
START_TEST(t_damage_detected) {
  int key = tu_key(4);
  fresh_heap(key);
  const char *args[] = {"count", NULL};
  struct proc c;
  worker_run(key, "count", args, -1, &c);
  /* the table first, then the records */
  const char *b = strstr(c.outbuf, "block=");
  b = b ? strstr(b + 6, "block=") : NULL;
  ck_assert_msg(b != NULL, "no record in the table: [%.300s]", c.outbuf);
  unsigned long long off = strtoull(b + 6, NULL, 10);
  proc_free(&c);

  char *m = attach_rw(key);
  uint64_t size;
  memcpy(&size, m + off, sizeof size);
  /* the last data byte, or the seed of a record without data: the sum
   * must cover both, the odd tail of the data too */
  size_t at = size > 24 && size <= (1u << 20) ? off + size - 1 : off + 8;
  m[at] ^= 0x40;
  shmdt(m);
  expect_verify_fails(key, 4, "checksum mismatch", "a record with one bit flipped");
  m = attach_rw(key);
  m[at] ^= 0x40;
  shmdt(m);
  worker_simple(key, "the record repaired", "verify");

  /* a counter of the span allocator that the heap walk checks */
  m = attach_rw(key);
  ((struct shm_header *)m)->live_pages += 3;
  shmdt(m);
  expect_verify_fails(key, 3, "shmheap_check", "the header's count of live pages off by 3");
  char probs[1024];
  int np = dump_check(key, probs, sizeof probs);
  ck_assert_msg(np == 1 && strstr(probs, "pages in use, the header says") && !strchr(probs, '\n'),
                "shmheap-dump --check on the same heap: %d problem(s): [%s]", np, probs);
  tu_rm_key(key);
}
END_TEST

/* This process's start time (field 22 of /proc/self/stat), as the heap's
 * process table records it. */
static uint64_t self_start(void) {
  char buf[1024];
  FILE *f = fopen("/proc/self/stat", "re");
  ck_assert_msg(f && fgets(buf, sizeof buf, f), "cannot read /proc/self/stat");
  fclose(f);
  const char *p = strrchr(buf, ')');
  ck_assert_msg(p != NULL, "/proc/self/stat: [%s]", buf);
  unsigned long long v = 0;
  for (int field = 2; field < 22 && p; field++) p = strchr(p + 1, ' ');
  ck_assert_msg(p && sscanf(p + 1, "%llu", &v) == 1, "/proc/self/stat: no start time");
  return v;
}

static int dump_remove(int key, int force, char *err, size_t len) {
  char keys[32];
  snprintf(keys, sizeof keys, "0x%x", (unsigned)key);
  const char *argv[] = {dump_tool(), "--remove", keys, force ? "--force" : NULL, NULL};
  struct proc d;
  spawn(argv, NULL, 0, 0, -1, &d);
  finish(&d, 0, RUN_TIMEOUT_MS);
  int code = d.status != -1 && WIFEXITED(d.status) ? WEXITSTATUS(d.status) : -1;
  snprintf(err, len, "%s", d.errbuf ? d.errbuf : "");
  proc_free(&d);
  return code;
}

/* A process can be using a heap without having it attached for a moment
 * (between its start-up re-exec and its attach): listed alive in the heap's
 * process table, it keeps shmheap-dump --remove from removing the heap
 * unless --force. */
START_TEST(t_remove_listed_user) {
  int key = tu_key(5);
  fresh_heap(key);
  char *m = attach_rw(key);
  struct shm_header *h = (struct shm_header *)m;
  struct shm_proc *e = &h->procs[SH_MAX_PROCS - 1];
  ck_assert_msg(atomic_load(&e->pid) == 0, "the last process table entry is in use");
  e->start = self_start();
  atomic_store(&e->pid, (int32_t)getpid());
  shmdt(m);
  char err[4096];
  int rc = dump_remove(key, 0, err, sizeof err);
  int still = shmget(key, 0, 0) >= 0;
  ck_assert_msg(rc == 2 && still && strstr(err, "still using it"),
                "--remove of a heap listing a live process: exit %d, %s; stderr [%s]", rc,
                still ? "still there" : "removed", err);
  rc = dump_remove(key, 1, err, sizeof err);
  ck_assert_msg(rc == 0 && shmget(key, 0, 0) < 0, "--remove --force: exit %d; stderr [%s]", rc, err);
  tu_rm_key(key);
}
END_TEST

static int env_int(const char *name, long lo, long hi, long dflt) {
  const char *s = getenv(name);
  if (!s || !*s) return (int)dflt;
  char *end;
  long v = strtol(s, &end, 0);
  if (*end || v < lo || v > hi) {
    fprintf(stderr, "check_crash: %s=%s: want a number from %ld to %ld\n", name, s, lo, hi);
    exit(EXIT_FAILURE);
  }
  return (int)v;
}

int main(void) {
  tu_init();
  kills = env_int("SHMHEAP_CRASH_KILLS", 0, 10000000, DEFAULT_KILLS);
  sweep_every = env_int("SHMHEAP_CRASH_SWEEP_EVERY", 1, 1000, SWEEP_EVERY);
  seed = (unsigned)env_int("SHMHEAP_CRASH_SEED", 0, 0x7fffffff,
                           (long)((unsigned)time(NULL) ^ ((unsigned)getpid() << 8)) & 0x7fffffff);
  Suite *s = suite_create("crash");
  TCase *tc;
  /* 200 kills take well under a minute; a slow CI machine may take ten
   * times as long, and the long run (crash-long) scales with its kills */
  TU_TCASE(s, tc, "damage_detected", 60);
  tcase_add_test(tc, t_damage_detected);
  tcase_add_test(tc, t_remove_listed_user);
  TU_TCASE(s, tc, "kill9_loop", 600 + kills / 2);
  tcase_add_test(tc, t_kill9_loop);
  return tu_run_suite(s);
}
