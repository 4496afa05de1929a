/* The program of tests/background.sh, run under LD_PRELOAD: it frees most
 * of a GiB and then makes no allocator call, and watches its own resident
 * memory (/proc/self/statm) fall, or not, for SECONDS.
 *
 *   idle_prog free SECONDS     fill 1 GiB (16 B .. 2 KiB, every 100th 200 KB),
 *                              free all but one block in a thousand, then
 *                              watch: "fell=T" when RSS came within 16 MiB
 *                              of what it holds, else "fell=never"
 *   idle_prog fork SECONDS     the same, then fork (SHMHEAP_FORK as set) at
 *                              once: the child does it all again in its own
 *                              heap and watches its own; the parent watches
 *                              too, then waits for the child
 *   idle_prog nofree SECONDS   fill 256 MiB and free 1 MiB of it: no more
 *                              than the floor of free pages
 * Each prints "in_use=KiB rss_after_free=KiB fell=T|never rss=KiB threads=N"
 * (threads: the process's, from /proc/self/status, at the end). */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>

static long rss_kib(void) {
  long pages = 0, res = 0;
  FILE *f = fopen("/proc/self/statm", "r");
  if (!f || fscanf(f, "%ld %ld", &pages, &res) != 2) res = -1;
  if (f) fclose(f);
  return res * (sysconf(_SC_PAGESIZE) / 1024);
}

static int threads(void) {
  char line[256];
  int n = -1;
  FILE *f = fopen("/proc/self/status", "r");
  while (f && fgets(line, sizeof line, f))
    if (sscanf(line, "Threads: %d", &n) == 1) break;
  if (f) fclose(f);
  return n;
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + t.tv_nsec / 1e9;
}

/* Fills total bytes, frees all but one in keep blocks; returns the bytes
 * the program still holds by the allocator's count (keep 1: frees
 * nothing). */
static size_t fill_and_free(size_t total, size_t keep) {
  size_t n = total / 64, used = 0, i = 0;
  char **v = malloc(n * sizeof *v);
  if (!v) exit(3);
  for (; used < total && i < n; i++) {
    size_t sz = i % 100 == 0 ? 200000 : 16 + (i * 7919) % 2000;
    if (!(v[i] = malloc(sz))) exit(3);
    memset(v[i], (int)i, sz);
    used += sz;
  }
  for (size_t k = 0; k < i; k++)
    if (keep > 1 && k % keep != 1) free(v[k]);
  /* The last allocator call: the figure of what is held. */
  return mallinfo2().uordblks;
}

/* No allocator call from here on (fopen's buffer comes from the heap: the
 * figures are read only at the end). */
static void watch(const char *who, size_t held, double seconds) {
  long after = rss_kib(), limit = (long)(held >> 10) + 16 * 1024;
  double t0 = now(), fell = -1;
  while (now() - t0 < seconds) {
    if (rss_kib() <= limit) {
      fell = now() - t0;
      break;
    }
    struct timespec ts = {0, 10000000};
    nanosleep(&ts, NULL);
  }
  if (fell >= 0)
    printf("%sin_use=%zu rss_after_free=%ld fell=%.2f rss=%ld threads=%d\n", who, held >> 10, after, fell, rss_kib(), threads());
  else
    printf("%sin_use=%zu rss_after_free=%ld fell=never rss=%ld threads=%d\n", who, held >> 10, after, rss_kib(), threads());
  fflush(stdout);
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: idle_prog free|fork|nofree SECONDS\n");
    return 2;
  }
  double seconds = atof(argv[2]);
  if (!strcmp(argv[1], "nofree")) {
    size_t held = fill_and_free((size_t)256 << 20, 1);
    char *p = malloc(1 << 20);
    free(p);
    watch("", held, seconds);
    return 0;
  }
  size_t held = fill_and_free((size_t)1 << 30, 1000);
  if (!strcmp(argv[1], "fork")) {
    pid_t pid = fork();
    if (pid < 0) return 1;
    if (pid == 0) {
      size_t h = fill_and_free((size_t)512 << 20, 1000);
      watch("child: ", h, seconds);
      _exit(0);
    }
    watch("parent: ", held, seconds);
    int status;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status)) return 1;
    return 0;
  }
  watch("", held, seconds);
  return 0;
}
