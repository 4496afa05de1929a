/* check_fork: what fork does with the heap.  Copy mode (the default) must
 * behave like fork with an ordinary heap; share mode makes parent and child
 * allocate in one segment.  Forks from busy threads and from signal handlers
 * must never deadlock. */
#include <check.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/shm.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shmheap.h"
#include "testutil.h"

/* Waits for a child; fails the test if it hangs or does not exit 0. */
static void expect_child_ok(pid_t pid, int timeout_ms, const char *what) {
  int st = 0;
  ck_assert_msg(pid > 0, "%s: fork failed: %s", what, strerror(errno));
  ck_assert_msg(tu_wait_timeout(pid, &st, timeout_ms) == 0, "%s: child %d hung (killed after %d ms)",
                what, (int)pid, timeout_ms);
  ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s: child status 0x%x (exit %d, signal %d)",
                what, st, WIFEXITED(st) ? WEXITSTATUS(st) : -1, WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

static int child_churn(int n) {
  void *p[64] = {0};
  for (int i = 0; i < n; i++) {
    int k = i % 64;
    free(p[k]);
    size_t sz = (size_t)(i * 37 % 3000) + (i % 50 == 0 ? 60000 : 1);
    p[k] = malloc(sz);
    if (!p[k] || !shmheap_contains(p[k])) return 1;
    memset(p[k], i, sz);
  }
  for (int k = 0; k < 64; k++) free(p[k]);
  return 0;
}

/* ---- copy mode ---------------------------------------------------------------- */

START_TEST(t_copy_child_write_private) {
  ck_assert_int_eq(shmheap_get_fork_mode(), SHMHEAP_FORK_COPY);
  volatile char *small = malloc(100), *large = malloc(1 << 20);
  memset((char *)small, 'A', 100);
  memset((char *)large, 'A', 1 << 20);
  int to_child[2], to_parent[2];
  ck_assert_int_eq(pipe(to_child), 0);
  ck_assert_int_eq(pipe(to_parent), 0);
  pid_t pid = fork();
  if (pid == 0) {
    /* the child can allocate at once */
    char *c = malloc(50);
    if (!c || !shmheap_contains(c)) _exit(2);
    free(c);
    if (small[0] != 'A' || large[12345] != 'A') _exit(3);
    memset((char *)small, 'B', 100);
    memset((char *)large, 'B', 1 << 20);
    if (write(to_parent[1], "w", 1) != 1) _exit(4);
    char x;
    if (read(to_child[0], &x, 1) != 1) _exit(5);
    /* the parent has written 'C' meanwhile: the child must not see it */
    if (small[0] != 'B' || large[999999] != 'B') _exit(6);
    free((char *)small); /* the child's copy only */
    free((char *)large);
    _exit(child_churn(500));
  }
  char x;
  ck_assert_int_eq(read(to_parent[0], &x, 1), 1);
  int seen = 0;
  for (int i = 0; i < 100; i++) seen |= small[i] != 'A';
  ck_assert_msg(!seen, "parent sees the child's write (small block)");
  for (int i = 0; i < (1 << 20); i += 512) seen |= large[i] != 'A';
  ck_assert_msg(!seen, "parent sees the child's write (large block)");
  memset((char *)small, 'C', 100);
  memset((char *)large, 'C', 1 << 20);
  ck_assert_int_eq(write(to_child[1], "c", 1), 1);
  expect_child_ok(pid, 10000, "copy child");
  /* the child's frees did not free the parent's blocks */
  ck_assert_uint_ge(malloc_usable_size((char *)small), 100);
  for (int i = 0; i < 100; i++) seen |= small[i] != 'C';
  ck_assert_msg(!seen, "the parent's block changed after the child freed its copy");
  char *n = malloc(100);
  ck_assert_ptr_ne(n, (char *)small);
  free(n);
  free((char *)small);
  free((char *)large);
}
END_TEST

START_TEST(t_copy_child_mallocs_immediately) {
  for (int k = 0; k < 20; k++) {
    pid_t pid = fork();
    if (pid == 0) {
      void *p = malloc(k * 1000 + 1);
      _exit(p && shmheap_contains(p) ? 0 : 1);
    }
    expect_child_ok(pid, 10000, "child malloc");
  }
}
END_TEST

START_TEST(t_copy_child_alloc_not_in_parent) {
  size_t before = mallinfo2().uordblks;
  long rss = tu_status_kb("RssShmem");
  pid_t pid = fork();
  if (pid == 0) {
    char *p[50];
    for (int i = 0; i < 50; i++) {
      p[i] = malloc(1 << 20);
      if (!p[i]) _exit(2);
      memset(p[i], i, 1 << 20);
    }
    _exit(0); /* without freeing */
  }
  expect_child_ok(pid, 10000, "child allocating 50 MB");
  ck_assert_msg(mallinfo2().uordblks == before, "the child's blocks count in the parent: %zu -> %zu", before,
                mallinfo2().uordblks);
  long now = tu_status_kb("RssShmem");
  ck_assert_msg(now - rss < 8 * 1024, "the parent's RssShmem grew by %ld kB", now - rss);
  void *q[50];
  for (int i = 0; i < 50; i++) {
    q[i] = malloc(1 << 20);
    memset(q[i], 0, 1 << 20);
  }
  for (int i = 0; i < 50; i++) free(q[i]);
}
END_TEST

START_TEST(t_copy_child_calloc_after_dirty_free) {
  /* the parent frees dirty memory; the child's calloc must still be zero */
  char *d[64];
  for (int i = 0; i < 64; i++) {
    d[i] = malloc(i % 2 ? 300000 : 3000);
    memset(d[i], 0xee, i % 2 ? 300000 : 3000);
  }
  for (int i = 0; i < 64; i++) free(d[i]);
  pid_t pid = fork();
  if (pid == 0) {
    for (int i = 0; i < 64; i++) {
      size_t n = i % 2 ? 300000 : 3000;
      unsigned char *c = calloc(1, n);
      if (!c) _exit(2);
      for (size_t j = 0; j < n; j++)
        if (c[j]) _exit(3);
      memset(c, 0xdd, n); /* dirty again, and do not free */
    }
    _exit(0);
  }
  expect_child_ok(pid, 10000, "calloc in the child after the parent's dirty frees");
}
END_TEST

START_TEST(t_copy_system_popen) {
  ck_assert_int_eq(system("exit 3") >> 8, 3);
  FILE *f = popen("echo hello", "r");
  ck_assert_ptr_nonnull(f);
  char buf[32] = "";
  ck_assert_ptr_nonnull(fgets(buf, sizeof buf, f));
  ck_assert_str_eq(buf, "hello\n");
  ck_assert_int_eq(pclose(f), 0);
}
END_TEST

/* A copy-mode child killed while it copies the heap must not leave its new
 * private segment behind (it would hold the copied pages until reboot). */
static atomic_int killer_stop;
static atomic_int killed_pid;
static pid_t forker_tid;

static void *killer(void *arg) {
  (void)arg;
  char path[64];
  snprintf(path, sizeof path, "/proc/self/task/%d/children", (int)forker_tid);
  while (!atomic_load(&killer_stop)) {
    /* no malloc here: the heap is frozen while the child copies it */
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    char buf[128];
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
    if (fd >= 0) close(fd);
    if (n > 0) {
      buf[n] = 0;
      long pid = strtol(buf, NULL, 10);
      if (pid > 0) {
        struct timespec ts = {0, 20 * 1000 * 1000}; /* let it start copying */
        nanosleep(&ts, NULL);
        kill((pid_t)pid, SIGKILL);
        atomic_store(&killed_pid, (int)pid);
        return NULL;
      }
    }
    struct timespec ts = {0, 200 * 1000};
    nanosleep(&ts, NULL);
  }
  return NULL;
}

START_TEST(t_copy_child_killed_no_leak) {
  enum { MB = 768 };
  char *big[MB];
  for (int i = 0; i < MB; i++) {
    big[i] = malloc(1 << 20);
    ck_assert_ptr_nonnull(big[i]);
    memset(big[i], i, 1 << 20);
  }
  forker_tid = (pid_t)syscall(SYS_gettid);
  atomic_store(&killer_stop, 0);
  atomic_store(&killed_pid, 0);
  pthread_t t;
  ck_assert_int_eq(pthread_create(&t, NULL, killer, NULL), 0);
  pid_t pid = fork();
  if (pid == 0)
    for (;;) pause(); /* the killer ends it, during or after the copy */
  ck_assert_int_gt(pid, 0);
  /* if the copy was too quick for the killer, the child is killed now */
  struct timespec ts = {0, 100 * 1000 * 1000};
  nanosleep(&ts, NULL);
  atomic_store(&killer_stop, 1);
  pthread_join(t, NULL);
  kill(pid, SIGKILL);
  int st;
  ck_assert_int_eq(tu_wait_timeout(pid, &st, 20000), 0);
  int left = tu_segments_by_pid(pid, 0, 1);
  for (int i = 0; i < MB; i++) free(big[i]);
  ck_assert_msg(left == 0,
                "a copy-mode child killed during fork left %d SysV segment(s) behind (removed now)", left);
}
END_TEST

/* ---- share mode ---------------------------------------------------------------- */

static void share_check(int how) {
  /* volatile: p has not escaped, so the compiler may assume fork() leaves *p alone */
  volatile char *p = malloc(64);
  memset((char *)p, 'A', 64);
  size_t before = mallinfo2().uordblks;
  int fd[2];
  ck_assert_int_eq(pipe(fd), 0);
  pid_t pid = how ? fork() : shmheap_fork(SHMHEAP_FORK_SHARE);
  if (pid == 0) {
    p[0] = 'B';
    char *q = malloc(100);
    if (!q || !shmheap_contains(q)) _exit(2);
    strcpy(q, "written by the child");
    if (write(fd[1], &q, sizeof q) != sizeof q) _exit(3);
    _exit(0);
  }
  char *q = NULL;
  ck_assert_int_eq(read(fd[0], &q, sizeof q), (int)sizeof q);
  expect_child_ok(pid, 10000, "share child");
  ck_assert_msg(p[0] == 'B', "share mode: the child's write is not visible in the parent");
  ck_assert_msg(shmheap_contains(q), "child block %p not in the heap", (void *)q);
  ck_assert_str_eq(q, "written by the child");
  ck_assert_uint_ge(malloc_usable_size(q), 100);
  /* the child's block is a live block of the shared heap */
  ck_assert_uint_ge(mallinfo2().uordblks, before + 100);
  free(q);
  char *r = malloc(100);
  ck_assert_ptr_nonnull(r);
  free(r);
  free((char *)p);
}

START_TEST(t_share_shmheap_fork) {
  share_check(0);
  /* shmheap_fork's mode is for that fork only */
  ck_assert_int_eq(shmheap_get_fork_mode(), SHMHEAP_FORK_COPY);
}
END_TEST

START_TEST(t_share_set_mode) {
  ck_assert_int_eq(shmheap_set_fork_mode(SHMHEAP_FORK_SHARE), SHMHEAP_FORK_COPY);
  share_check(1);
  ck_assert_int_eq(shmheap_set_fork_mode(SHMHEAP_FORK_COPY), SHMHEAP_FORK_SHARE);
}
END_TEST

START_TEST(t_share_concurrent_alloc) {
  /* parent and 2 children allocate and free in the shared heap at once */
  pid_t pid[2];
  for (int c = 0; c < 2; c++) {
    pid[c] = shmheap_fork(SHMHEAP_FORK_SHARE);
    if (pid[c] == 0) _exit(child_churn(20000));
  }
  ck_assert_int_eq(child_churn(20000), 0);
  for (int c = 0; c < 2; c++) expect_child_ok(pid[c], 20000, "share churn child");
}
END_TEST

START_TEST(t_copy_then_share_after_copy) {
  /* a copy-mode child can itself fork in share mode */
  pid_t pid = fork();
  if (pid == 0) {
    volatile char *p = malloc(16);
    p[0] = 'x';
    int fd[2];
    if (pipe(fd)) _exit(2);
    pid_t g = shmheap_fork(SHMHEAP_FORK_SHARE);
    if (g == 0) {
      p[0] = 'y';
      _exit(0);
    }
    int st;
    waitpid(g, &st, 0);
    _exit(WIFEXITED(st) && WEXITSTATUS(st) == 0 && p[0] == 'y' ? 0 : 1);
  }
  expect_child_ok(pid, 10000, "copy child forking shared");
}
END_TEST

START_TEST(t_share_many_children) {
  /* more share-mode children over time than the segment has thread heaps */
  for (int i = 0; i < 1500; i++) {
    pid_t pid = shmheap_fork(SHMHEAP_FORK_SHARE);
    if (pid == 0) {
      void *a = malloc(100), *b = malloc(5000);
      if (!a || !b) _exit(2);
      free(a); /* b stays: a block left in the shared heap by a process that is gone */
      _exit(0);
    }
    int st;
    ck_assert_int_gt(pid, 0);
    if (tu_wait_timeout(pid, &st, 10000) < 0) ck_abort_msg("share child %d hung", i);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "share child %d: status 0x%x", i, st);
  }
  void *p = malloc(100);
  ck_assert(shmheap_contains(p));
  free(p);
}
END_TEST

START_TEST(t_share_child_killed) {
  /* share-mode children killed at random points while they allocate: the
   * parent goes on allocating in the same heap (robust locks, no deadlock) */
  for (int round = 0; round < 20; round++) {
    pid_t pid = shmheap_fork(SHMHEAP_FORK_SHARE);
    if (pid == 0) {
      child_churn(1 << 30);
      _exit(0);
    }
    ck_assert_int_gt(pid, 0);
    struct timespec ts = {0, (2 + round * 3) * 1000 * 1000};
    nanosleep(&ts, NULL);
    kill(pid, SIGKILL);
    int st;
    ck_assert_int_eq(tu_wait_timeout(pid, &st, 5000), 0);
    pid_t chk = fork(); /* a watchdog: the parent's own allocations must not hang */
    if (chk == 0) {
      _exit(child_churn(2000));
    }
    expect_child_ok(chk, 10000, "copy child after a share child was killed");
    ck_assert_int_eq(child_churn(2000), 0);
  }
}
END_TEST

static void run_helper_forkvis(const char *fork_env, int want_visible) {
  char helper[4096];
  tu_bpath("tests/helper_env", helper, sizeof helper);
  const char *argv[] = {helper, "forkvis", NULL};
  const char *env[] = {fork_env, NULL};
  static struct tu_result r;
  int rc = tu_run(argv, fork_env ? env : NULL, 1, 20000, &r);
  ck_assert_msg(rc == 0, "helper_env forkvis with %s: exit %d, stderr: %s", fork_env ? fork_env : "(unset)",
                rc, r.err);
  char want[64];
  snprintf(want, sizeof want, "visible=%d childblock=%d mode=%d", want_visible, want_visible,
           want_visible);
  ck_assert_msg(strstr(r.out, want) != NULL, "with %s expected '%s', got '%s'",
                fork_env ? fork_env : "(unset)", want, r.out);
}

START_TEST(t_share_env) { run_helper_forkvis("SHMHEAP_FORK=share", 1); }
END_TEST

START_TEST(t_copy_env) {
  run_helper_forkvis("SHMHEAP_FORK=copy", 0);
  run_helper_forkvis(NULL, 0);
}
END_TEST

/* ---- fork while other threads allocate --------------------------------------- */

static atomic_int stop_hammer;
static atomic_int hammer_errors;

/* one block per hammer thread that a forked child frees (a block of a thread
 * heap whose thread does not exist in the child) */
#define PUB_SIZE 777
static _Atomic(char *) published[4];

static void *hammer(void *arg) {
  unsigned seed = (unsigned)(uintptr_t)arg + 1;
  int me = (int)(uintptr_t)arg;
  void *p[128] = {0};
  size_t n[128] = {0};
  while (!atomic_load_explicit(&stop_hammer, memory_order_relaxed)) {
    char *pub = malloc(PUB_SIZE);
    if (pub) {
      memset(pub, 'q', PUB_SIZE);
      free(atomic_exchange(&published[me], pub));
    }
    for (int j = 0; j < 64; j++) {
      unsigned r = rand_r(&seed);
      int k = r % 128;
      if (p[k] && r % 5 == 0) {
        size_t m = (r >> 12) % 5000 + 1;
        unsigned char *q = realloc(p[k], m);
        if (!q) {
          atomic_fetch_add(&hammer_errors, 1);
          continue;
        }
        if (q[0] != (unsigned char)k) atomic_fetch_add(&hammer_errors, 1);
        memset(q, k, m);
        p[k] = q;
        n[k] = m;
      } else if (p[k]) {
        if (((unsigned char *)p[k])[n[k] - 1] != (unsigned char)k) atomic_fetch_add(&hammer_errors, 1);
        free(p[k]);
        p[k] = NULL;
      } else {
        n[k] = (r >> 8) % 2000 + 1 + ((r % 97 == 0) ? 70000 : 0);
        p[k] = malloc(n[k]);
        if (!p[k]) atomic_fetch_add(&hammer_errors, 1);
        else memset(p[k], k, n[k]);
      }
    }
  }
  for (int k = 0; k < 128; k++) free(p[k]);
  free(atomic_exchange(&published[me], NULL));
  return NULL;
}

START_TEST(t_fork_with_busy_threads) {
  enum { NFORK = 300 };
  pthread_t t[4];
  atomic_store(&stop_hammer, 0);
  for (int i = 0; i < 4; i++) ck_assert_int_eq(pthread_create(&t[i], NULL, hammer, (void *)(uintptr_t)i), 0);
  volatile char *pre = malloc(4000);
  memset((char *)pre, 'p', 4000);
  int bad = 0, hung = 0;
  for (int i = 0; i < NFORK; i++) {
    pid_t pid = fork();
    if (pid == 0) {
      /* only this thread exists in the child; the heap must be usable */
      for (int k = 0; k < 4000; k++)
        if (pre[k] != 'p') _exit(3);
      /* free the other threads' blocks: their threads are gone here */
      for (int k = 0; k < 4; k++) {
        char *b = atomic_load(&published[k]);
        if (!b) continue;
        for (int c = 0; c < PUB_SIZE; c++)
          if (b[c] != 'q') _exit(4);
        free(b);
      }
      _exit(child_churn(300));
    }
    if (pid < 0) {
      bad++;
      continue;
    }
    int st;
    if (tu_wait_timeout(pid, &st, 10000) < 0) hung++;
    else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) bad++;
    if (hung) break;
  }
  atomic_store(&stop_hammer, 1);
  for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
  free((char *)pre);
  ck_assert_msg(hung == 0, "a child forked while 4 threads allocate hung");
  ck_assert_msg(bad == 0, "%d of %d children failed", bad, NFORK);
  ck_assert_int_eq(atomic_load(&hammer_errors), 0);
}
END_TEST

/* ---- fork from a signal handler (glibc tst-mallocfork2) ----------------------- */

static volatile sig_atomic_t sig_forks, sig_fork_bad, sig_fork_max = 1000000;

static void fork_handler(int sig) {
  (void)sig;
  if (sig_forks >= sig_fork_max) return;
  int save = errno;
  pid_t pid = fork();
  if (pid == 0) _exit(0);
  if (pid < 0) {
    sig_fork_bad++;
  } else {
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) sig_fork_bad++;
    sig_forks++;
  }
  errno = save;
}

static void malloc_loop_until(volatile sig_atomic_t *done, long long deadline_ms, int *errors) {
  void *p[32] = {0};
  unsigned seed = 99;
  while (!*done && tu_now_ms() < deadline_ms) {
    for (int j = 0; j < 256; j++) {
      int k = rand_r(&seed) % 32;
      free(p[k]);
      size_t n = (size_t)(rand_r(&seed) % 5000) + (j == 0 ? 50000 : 1);
      p[k] = malloc(n);
      if (!p[k]) (*errors)++;
      else ((char *)p[k])[n - 1] = 1;
    }
  }
  for (int k = 0; k < 32; k++) free(p[k]);
}

static volatile sig_atomic_t sender_done;
static void on_chld(int sig) { (void)sig; }

static void signal_fork_test(int share) {
  enum { NSIG_SEND = 1500 };
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = fork_handler;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  ck_assert_int_eq(sigaction(SIGUSR1, &sa, NULL), 0);
  if (share) shmheap_set_fork_mode(SHMHEAP_FORK_SHARE);
  sig_forks = sig_fork_bad = 0;
  sender_done = 0;
  pid_t parent = getpid();
  /* blocked until our fork() of the sender has returned: a fork from the
   * handler while fork() is in its atfork handlers is t_fork_in_handler_during_fork */
  sigset_t usr1, old;
  sigemptyset(&usr1);
  sigaddset(&usr1, SIGUSR1);
  sigprocmask(SIG_BLOCK, &usr1, &old);
  pid_t sender = fork();
  if (sender == 0) {
    /* another process sends signals as fast as it reasonably can */
    struct timespec ts = {0, 100 * 1000};
    for (int i = 0; i < NSIG_SEND; i++) {
      if (kill(parent, SIGUSR1) < 0) _exit(1);
      nanosleep(&ts, NULL);
    }
    _exit(0);
  }
  sigprocmask(SIG_SETMASK, &old, NULL);
  ck_assert_int_gt(sender, 0);
  /* reap the sender without blocking the malloc loop */
  int errors = 0;
  long long deadline = tu_now_ms() + 25000;
  int st = 0, reaped = 0;
  while (!reaped && tu_now_ms() < deadline) {
    malloc_loop_until(&sender_done, tu_now_ms() + 50, &errors);
    pid_t r = waitpid(sender, &st, WNOHANG);
    if (r == sender) reaped = 1;
  }
  signal(SIGUSR1, SIG_IGN);
  if (!reaped) {
    kill(sender, SIGKILL);
    waitpid(sender, &st, 0);
  }
  if (share) shmheap_set_fork_mode(SHMHEAP_FORK_COPY);
  ck_assert_msg(reaped, "signal sender not done in 25 s (%d forks from the handler so far)", (int)sig_forks);
  ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "sender status 0x%x", st);
  ck_assert_int_eq(errors, 0);
  ck_assert_int_eq(sig_fork_bad, 0);
  ck_assert_msg(sig_forks > 10, "only %d forks from the signal handler", (int)sig_forks);
  void *p = malloc(100);
  ck_assert_ptr_nonnull(p);
  free(p);
}

START_TEST(t_fork_in_signal_handler) { signal_fork_test(0); }
END_TEST

START_TEST(t_fork_in_signal_handler_share) { signal_fork_test(1); }
END_TEST

/* The handler's fork runs while a fork() of the same thread is still inside
 * its atfork handlers (its child signals the parent at once): the inner fork
 * must not clobber the outer one's state (which locks it took). */
static void nested_handler(int sig) {
  (void)sig;
  int save = errno;
  pid_t p = fork();
  if (p == 0) _exit(0);
  if (p > 0)
    while (waitpid(p, NULL, 0) < 0 && errno == EINTR) {
    }
  errno = save;
}

START_TEST(t_fork_in_handler_during_fork) {
  pid_t runner = fork(); /* the scenario runs in a child, so that a failure is an exit status */
  if (runner == 0) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = nested_handler;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &sa, NULL);
    for (int i = 0; i < 300; i++) {
      pid_t p = fork();
      if (p == 0) {
        kill(getppid(), SIGUSR1);
        _exit(0);
      }
      while (waitpid(p, NULL, 0) < 0 && errno == EINTR) {
      }
      free(malloc(100000)); /* needs the span lock */
      free(malloc(100));
    }
    _exit(0);
  }
  int st;
  ck_assert_int_gt(runner, 0);
  ck_assert_msg(tu_wait_timeout(runner, &st, 30000) == 0, "fork from a handler during a fork: hung");
  ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0,
                "fork from a signal handler while another fork is in its atfork handlers: status 0x%x (exit %d)",
                st, WIFEXITED(st) ? WEXITSTATUS(st) : -1);
}
END_TEST

static void alarm_fork_handler(int sig) { fork_handler(sig); }

START_TEST(t_fork_in_sigalrm_handler) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = alarm_fork_handler;
  sa.sa_flags = SA_RESTART;
  ck_assert_int_eq(sigaction(SIGALRM, &sa, NULL), 0);
  (void)on_chld;
  sig_forks = sig_fork_bad = 0;
  /* a copy-mode fork costs milliseconds: a shorter period only livelocks */
  sig_fork_max = 300;
  struct itimerval it = {{0, 5000}, {0, 5000}};
  ck_assert_int_eq(setitimer(ITIMER_REAL, &it, NULL), 0);
  int errors = 0;
  volatile sig_atomic_t never = 0;
  malloc_loop_until(&never, tu_now_ms() + 3000, &errors);
  struct itimerval off = {{0, 0}, {0, 0}};
  setitimer(ITIMER_REAL, &off, NULL);
  signal(SIGALRM, SIG_IGN);
  sig_fork_max = 1000000;
  ck_assert_int_eq(errors, 0);
  ck_assert_int_eq(sig_fork_bad, 0);
  ck_assert_msg(sig_forks > 10, "only %d forks from the SIGALRM handler", (int)sig_forks);
}
END_TEST

/* ------------------------------------------------------------------------------------ */

static Suite *fork_suite(void) {
  Suite *s = suite_create("fork");
  TCase *tc;

  TU_TCASE(s, tc, "copy", 20);
  tcase_add_test(tc, t_copy_child_write_private);
  tcase_add_test(tc, t_copy_child_mallocs_immediately);
  tcase_add_test(tc, t_copy_system_popen);
  tcase_add_test(tc, t_copy_child_calloc_after_dirty_free);
  tcase_add_test(tc, t_copy_child_alloc_not_in_parent);
  tcase_add_test(tc, t_copy_env);
  tcase_add_test(tc, t_copy_child_killed_no_leak);

  TU_TCASE(s, tc, "share", 30);
  tcase_add_test(tc, t_share_shmheap_fork);
  tcase_add_test(tc, t_share_set_mode);
  tcase_add_test(tc, t_share_concurrent_alloc);
  tcase_add_test(tc, t_copy_then_share_after_copy);
  tcase_add_test(tc, t_share_env);
  tcase_add_test(tc, t_share_many_children);
  tcase_add_test(tc, t_share_child_killed);

  TU_TCASE(s, tc, "threads", 50);
  tcase_add_test(tc, t_fork_with_busy_threads);

  TU_TCASE(s, tc, "signal", 35);
  tcase_add_test(tc, t_fork_in_signal_handler);
  tcase_add_test(tc, t_fork_in_signal_handler_share);
  tcase_add_test(tc, t_fork_in_sigalrm_handler);
  tcase_add_test(tc, t_fork_in_handler_during_fork);
  return s;
}

int main(void) {
  tu_init();
  return tu_run_suite(fork_suite());
}
