/* Helper of check_free: double and invalid frees.  NOT linked with
 * libshmheap: check_free runs it with LD_PRELOAD=$SHMHEAP_LIB and a keyed
 * heap (SHMHEAP_KEY), so that what a bad free leaves behind can be checked by
 * the next process and by shmheap-dump --check.
 *
 *   helper_free ok                  allocate and free a few blocks, exit 0
 *   helper_free twice SIZE          free(p); free(p) in the thread that owns p
 *   helper_free thread SIZE         free(p) by the owner, then again by another
 *                                   thread
 *   helper_free process SIZE        free(p) by the owner, then again by a child
 *                                   forked with the heap shared (the test sets
 *                                   SHMHEAP_FORK=share); the parent prints
 *                                   "child=<status>" and exits 0
 *   helper_free realloc SIZE        free(p); realloc(p, 2 * SIZE)
 *   helper_free interior SIZE       free(p + 16) (SIZE < 1 MiB) or
 *                                   free(p + 4096): into the middle of a block
 *   helper_free uaf SIZE            free(p), then overwrite the freed block
 *                                   (its free-list link) with 0x41 bytes and
 *                                   malloc(SIZE) 16 times: the corrupt link is
 *                                   to stop the process when it is followed
 *
 * Nothing may allocate between the two frees of a block: a large block's
 * pages go back to the page allocator at the first free, and a span made for
 * any allocation in between (stdio's buffer, a new thread's first malloc) may
 * start on the same page; the second free is then a valid free of that new
 * block, which no allocator can tell from a double free.  So stdout has a
 * static buffer, and the second thread exists (and waits on a pipe) before
 * the first free.
 *
 * Before the bad call it prints "ptr=0x..." (flushed).  The library is to stop
 * the process there with SIGABRT; if the call returns, the helper says
 * "survived" on stdout and exits 0, which check_free reports as a failure.
 * The process makes itself non-dumpable first: the expected SIGABRT must not
 * leave core files.
 *
 * Exit statuses: 0 ok (or survived), 2 usage, 3 setup failed. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

/* Hides from the compiler which pointer is freed: every free goes through
 * it, so the compiler emits the second call as written and does not warn
 * about it. */
static __attribute__((noinline)) void *launder(void *p) {
  __asm__ volatile("" : "+r"(p));
  return p;
}

/* The thread of mode thread: waits until the owner has freed the block, then
 * frees it again.  read() allocates nothing. */
static int go[2];
static void *second_free(void *p) {
  char c;
  if (read(go[0], &c, 1) != 1) return NULL;
  free(launder(p));
  return NULL;
}

static void no_core(void) { prctl(PR_SET_DUMPABLE, 0, 0, 0, 0); }

static void say_ptr(const void *p) {
  printf("ptr=%p\n", p);
  fflush(stdout);
}

static int survived(void) {
  printf("survived\n");
  fflush(stdout);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  const char *mode = argv[1];
  static char outbuf[4096]; /* printf allocates nothing (see above) */
  setvbuf(stdout, outbuf, _IOFBF, sizeof outbuf);

  if (strcmp(mode, "ok") == 0) {
    void *b[64];
    for (int i = 0; i < 64; i++) {
      b[i] = malloc(i % 8 == 0 ? (size_t)1 << 20 : 16 + (size_t)i * 24);
      if (!b[i]) return 3;
      memset(b[i], i, 16);
    }
    for (int i = 0; i < 64; i++) free(b[i]);
    printf("ok\n");
    return 0;
  }

  if (argc < 3) return 2;
  size_t n = strtoul(argv[2], NULL, 0);
  if (n == 0) return 2;
  char *p = malloc(n);
  if (!p) return 3;
  memset(p, 0x5a, n);
  no_core();

  if (strcmp(mode, "twice") == 0) {
    free(launder(p));
    say_ptr(p);
    free(launder(p));
    return survived();
  }
  if (strcmp(mode, "thread") == 0) {
    pthread_t t;
    if (pipe(go) || pthread_create(&t, NULL, second_free, p)) return 3;
    free(launder(p));
    say_ptr(p);
    if (write(go[1], "g", 1) != 1) return 3;
    pthread_join(t, NULL);
    return survived();
  }
  if (strcmp(mode, "process") == 0) {
    free(launder(p));
    say_ptr(p);
    pid_t pid = fork();
    if (pid < 0) return 3;
    if (pid == 0) {
      free(launder(p));
      printf("child survived\n");
      fflush(stdout);
      _exit(0);
    }
    int st = 0;
    if (waitpid(pid, &st, 0) != pid) return 3;
    if (WIFSIGNALED(st))
      printf("child=signal:%d\n", WTERMSIG(st));
    else
      printf("child=exit:%d\n", WEXITSTATUS(st));
    return 0;
  }
  if (strcmp(mode, "realloc") == 0) {
    free(launder(p));
    say_ptr(p);
    void *q = realloc(launder(p), 2 * n);
    printf("realloc returned %p\n", q);
    return survived();
  }
  if (strcmp(mode, "interior") == 0) {
    char *mid = p + (n < ((size_t)1 << 20) ? 16 : 4096);
    say_ptr(mid);
    free(launder(mid));
    return survived();
  }
  if (strcmp(mode, "uaf") == 0) {
    char *keep = malloc(n); /* the span stays in use */
    if (!keep) return 3;
    free(launder(p));
    say_ptr(p);
    memset(launder(p), 0x41, n);
    /* launder: a malloc whose result only meets a null test may be elided
     * (clang does), and these are the calls that must follow the link. */
    for (int i = 0; i < 16; i++)
      if (!launder(malloc(n))) return 3;
    return survived();
  }
  return 2;
}
