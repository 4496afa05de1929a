/* fork under stress, run with LD_PRELOAD by tests/real_fork.sh (not linked
 * with the library, so the same program runs under glibc for comparison).
 *
 *   fork_stress sig SECONDS      one thread mallocs, frees, reallocs and
 *                                memaligns up to 70,000 bytes and forks now
 *                                and then; five other processes send it
 *                                SIGUSR1, whose handler forks (glibc's
 *                                tst-mallocfork2)
 *   fork_stress threads SECONDS  four threads fork at once while two others
 *                                malloc, getline and fflush(NULL)
 *   fork_stress nested-threads SECONDS, nested-sig SECONDS
 *                                the same, and each child forks again,
 *                                three levels deep
 *
 * A child of a fork from a signal handler only checks that block (and
 * forks again): the handler may have interrupted malloc, and then only
 * async-signal-safe calls are allowed in the child, as with glibc.
 * Each runs for SECONDS and then until it has made MIN_FORKS forks (at most
 * 45 s).  Every child checks a block the parent filled before the fork,
 * allocates and frees, and exits 0.  The program exits 0 when every child did, 1 on a
 * wrong child (and says which), 2 on a failed allocation; a hang is the
 * caller's timeout.  It prints the number of forks made. */
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static _Atomic long forks, bad;
static long min_forks;   /* go on past the time until this many forks ... */
enum { MAX_MS = 45000 }; /* ... but not past this */

/* The run is over: its time is up and it made min_forks forks, or it is
 * too slow to make them (the caller sees the count). */
static int over(long long start, int seconds) {
  long long t = now_ms() - start;
  return t >= MAX_MS || (t >= seconds * 1000LL && atomic_load(&forks) >= min_forks);
}
static char *marker; /* filled with 'm' before any fork: every child checks it */
enum { MARK = 3000 };


/* What every child does: the parent's block is intact, the heap works. */
static int child_work(void) {
  for (int i = 0; i < MARK; i++)
    if (marker[i] != 'm') return 3;
  for (int i = 0; i < 50; i++) {
    size_t n = 1 + (size_t)i * 997;
    char *p = malloc(n);
    if (!p) return 4;
    memset(p, 'c', n);
    char *q = realloc(p, n * 2);
    if (!q) return 4;
    free(q);
  }
  return 0;
}

/* waitpid that outlasts signals; records a child that did not exit 0. */
static void reap(pid_t pid, const char *where) {
  int st;
  while (waitpid(pid, &st, 0) < 0)
    if (errno != EINTR) {
      atomic_fetch_add(&bad, 1);
      return;
    }
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    char msg[160];
    int n = snprintf(msg, sizeof msg, "fork_stress: a child forked %s: %s %d\n", where,
                     WIFEXITED(st) ? "exit" : "signal", WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
    if (write(2, msg, (size_t)n) < 0) {
    }
    atomic_fetch_add(&bad, 1);
  }
}

static int depth_limit = 1; /* nested: children fork again */

/* in_handler: the fork is made by a signal handler that may have
 * interrupted malloc, so the child may only do what is async-signal-safe,
 * as with glibc: read memory, fork again, _exit. */
static void fork_once(int depth, const char *where, int in_handler) {
  pid_t pid = fork();
  if (pid < 0) {
    atomic_fetch_add(&bad, 1);
    return;
  }
  if (pid == 0) {
    int r = 0;
    if (in_handler) {
      for (int i = 0; i < MARK; i++)
        if (marker[i] != 'm') r = 3;
    } else {
      r = child_work();
    }
    if (r == 0 && depth + 1 < depth_limit) {
      forks = bad = 0;
      fork_once(depth + 1, where, in_handler);
      if (bad) r = 5;
    }
    _exit(r);
  }
  atomic_fetch_add(&forks, 1);
  reap(pid, where);
}

/* ---- sig ------------------------------------------------------------------- */

/* One fork per round of the main loop, as glibc's tst-mallocfork2 does: a
 * copy-mode fork takes longer than the senders' interval, and a handler that
 * forked for every signal would leave the main loop no time at all. */
static volatile sig_atomic_t forked_this_round;

static void on_usr1(int sig) {
  (void)sig;
  if (forked_this_round) return;
  forked_this_round = 1;
  int save = errno;
  fork_once(0, "from the SIGUSR1 handler", 1);
  errno = save;
}

/* Sizes up to 70,000 through every entry point that edits the heap. */
static int churn(unsigned *seed, int rounds) {
  void *p[64] = {0};
  int fails = 0;
  for (int r = 0; r < rounds; r++) {
    int k = rand_r(seed) % 64;
    size_t n = (size_t)(rand_r(seed) % 70000) + 1;
    switch (rand_r(seed) % 4) {
    case 0:
      free(p[k]);
      p[k] = malloc(n);
      break;
    case 1: {
      void *q = realloc(p[k], n);
      if (q) p[k] = q;
      else fails++;
      break;
    }
    case 2:
      free(p[k]);
      p[k] = memalign((size_t)16 << (rand_r(seed) % 10), n);
      break;
    default:
      free(p[k]);
      p[k] = calloc(1, n);
    }
    if (!p[k]) fails++;
    else ((char *)p[k])[n - 1] = 1;
  }
  for (int k = 0; k < 64; k++) free(p[k]);
  return fails;
}

static int run_sig(int seconds) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_usr1;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGUSR1, &sa, NULL);
  pid_t self = getpid(), senders[5];
  for (int i = 0; i < 5; i++) {
    senders[i] = fork();
    if (senders[i] == 0) {
      /* The library's copy: run on no heap at all from here on. */
      struct timespec ts = {0, 200 * 1000};
      long long end = now_ms() + MAX_MS;
      while (now_ms() < end && kill(self, SIGUSR1) == 0) nanosleep(&ts, NULL);
      _exit(0);
    }
    if (senders[i] < 0) return 1;
  }
  unsigned seed = 7;
  int fails = 0;
  long long start = now_ms();
  for (int i = 0; !over(start, seconds); i++) {
    forked_this_round = 0;
    fails += churn(&seed, 200);
    if (i % 8 == 0) fork_once(0, "by the main loop", 0);
  }
  signal(SIGUSR1, SIG_IGN);
  for (int i = 0; i < 5; i++) {
    kill(senders[i], SIGKILL);
    while (waitpid(senders[i], NULL, 0) < 0 && errno == EINTR) {
    }
  }
  return fails ? 2 : 0;
}

/* ---- threads ----------------------------------------------------------------- */

static _Atomic int stop;
static int pipe_fd[2];

static void *forker(void *arg) {
  (void)arg;
  while (!atomic_load(&stop)) fork_once(0, "by a thread", 0);
  return NULL;
}

/* A share-mode child shares the parent's heap, and so every FILE that
 * fopen put there: glibc's fork resets the locks of all FILEs in the child,
 * which would reset the parent's too (shmheap(7): share mode is for
 * programs written for it).  With share, the workers read stdin (a FILE in
 * libc's own data, private to each process) and open no FILE. */
static int share_mode;

static void *worker(void *arg) {
  unsigned seed = (unsigned)(uintptr_t)arg;
  FILE *in = share_mode ? stdin : fdopen(dup(pipe_fd[0]), "r");
  FILE *out = share_mode ? NULL : tmpfile();
  char *line = NULL;
  size_t cap = 0;
  long fails = 0;
  while (!atomic_load(&stop)) {
    fails += churn(&seed, 100);
    if (out) {
      fprintf(out, "line %u\n", seed);
      fflush(NULL);
    }
    if (in && getline(&line, &cap, in) < 0) clearerr(in);
  }
  free(line);
  if (in && in != stdin) fclose(in);
  if (out) fclose(out);
  return (void *)fails;
}

static int run_threads(int seconds, int nforkers) {
  /* A pipe that always has lines: getline allocates and grows its buffer. */
  if (pipe(pipe_fd) < 0) return 1;
  pid_t feeder = fork();
  if (feeder == 0) {
    close(pipe_fd[0]);
    char buf[4096];
    for (size_t i = 0; i < sizeof buf; i++) buf[i] = i % 97 == 96 ? '\n' : 'a' + (char)(i % 26);
    while (write(pipe_fd[1], buf, sizeof buf) > 0) {
    }
    _exit(0);
  }
  close(pipe_fd[1]);
  const char *mode = getenv("SHMHEAP_FORK");
  share_mode = mode && !strcmp(mode, "share");
  if (share_mode && dup2(pipe_fd[0], 0) < 0) return 1;
  pthread_t w[2], f[4];
  for (int i = 0; i < 2; i++) pthread_create(&w[i], NULL, worker, (void *)(uintptr_t)(i + 1));
  for (int i = 0; i < nforkers; i++) pthread_create(&f[i], NULL, forker, NULL);
  struct timespec ts = {0, 50 * 1000 * 1000};
  for (long long start = now_ms(); !over(start, seconds);) nanosleep(&ts, NULL);
  atomic_store(&stop, 1);
  long fails = 0;
  for (int i = 0; i < nforkers; i++) pthread_join(f[i], NULL);
  for (int i = 0; i < 2; i++) {
    void *r;
    pthread_join(w[i], &r);
    fails += (long)r;
  }
  close(pipe_fd[0]);
  kill(feeder, SIGKILL);
  waitpid(feeder, NULL, 0);
  return fails ? 2 : 0;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: fork_stress sig|threads|nested-threads|nested-sig SECONDS MIN_FORKS\n");
    return 64;
  }
  int seconds = atoi(argv[2]);
  min_forks = atol(argv[3]);
  marker = malloc(MARK);
  if (!marker) return 2;
  memset(marker, 'm', MARK);
  int r;
  if (!strcmp(argv[1], "sig")) {
    r = run_sig(seconds);
  } else if (!strcmp(argv[1], "threads")) {
    r = run_threads(seconds, 4);
  } else if (!strcmp(argv[1], "nested-threads")) {
    depth_limit = 3;
    r = run_threads(seconds, 2);
  } else if (!strcmp(argv[1], "nested-sig")) {
    /* Not after threads in the same process: once a process has had a
     * second thread, glibc's own fork deadlocks in a signal handler that
     * interrupted a fork (its atfork lock). */
    depth_limit = 3;
    r = run_sig(seconds);
  } else {
    fprintf(stderr, "fork_stress: unknown case %s\n", argv[1]);
    return 64;
  }
  printf("%ld forks, %ld bad\n", (long)forks, (long)bad);
  free(marker);
  if (r) return r;
  return bad ? 1 : 0;
}
