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
 *                              too, then waits for the child.  In share
 *                              mode the child reuses pages the parent
 *                              mapped: the parent's figure includes what
 *                              the child holds, and its time (and its
 *                              SECONDS) run from the child's last free
 *   idle_prog nofree SECONDS   fill 256 MiB and free 1 MiB of it: no more
 *                              than the floor of free pages
 * Each prints "in_use=KiB rss_after_free=KiB fell=T|never rss=KiB
 * purgers=N threads=N" (at the end: the threads named shmheap-purge, and
 * all the process's, from /proc/self). */
#include <dirent.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>

/* With open and read on a stack buffer: no allocator call (fopen's buffer
 * would come from the heap, and its free could wake the thread). */
static long rss_kib(void) {
  char buf[128];
  long pages = 0, res = -1;
  int fd = open("/proc/self/statm", O_RDONLY);
  ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof buf - 1);
  if (fd >= 0) close(fd);
  if (n > 0) {
    buf[n] = 0;
    if (sscanf(buf, "%ld %ld", &pages, &res) != 2) res = -1;
  }
  return res * (sysconf(_SC_PAGESIZE) / 1024);
}

/* Threads named shmheap-purge (the background thread), from
 * /proc/self/task/<tid>/comm. */
static int purgers(void) {
  int n = 0;
  DIR *d = opendir("/proc/self/task");
  struct dirent *e;
  while (d && (e = readdir(d))) {
    char path[300], comm[32] = "";
    snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
    FILE *f = fopen(path, "r");
    if (f && fgets(comm, sizeof comm, f) && !strcmp(comm, "shmheap-purge\n")) n++;
    if (f) fclose(f);
  }
  if (d) closedir(d);
  return n;
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

/* No allocator call while it watches (the figures of threads are read with
 * stdio only at the end).  With peer >= 0 (a share-mode parent), the pages
 * it maps include those its child reuses: the limit then also counts what
 * the child holds, and the time runs from when the child says so (it
 * writes its figure to peer after its last free). */
static void watch(const char *who, size_t held, double seconds, int peer) {
  long after = rss_kib(), limit = (long)(held >> 10) + 16 * 1024;
  double t0 = now(), tref = peer < 0 ? t0 : -1, fell = -1;
  /* SECONDS from the reference; the child's fill and free before it may
   * take long on a loaded machine (a minute at most). */
  while (tref < 0 ? now() - t0 < 60 : now() - tref < seconds) {
    size_t other;
    if (tref < 0) {
      ssize_t n = read(peer, &other, sizeof other);
      if (n == 0) break; /* the child is gone without a word */
      if (n == (ssize_t)sizeof other) {
        tref = now();
        held += other;
        limit += (long)(other >> 10);
      }
    }
    if (tref >= 0 && rss_kib() <= limit) {
      fell = now() - tref;
      break;
    }
    struct timespec ts = {0, 10000000};
    nanosleep(&ts, NULL);
  }
  long rss = rss_kib(); /* before stdio, which allocates */
  int np = purgers(), nt = threads();
  if (fell >= 0)
    printf("%sin_use=%zu rss_after_free=%ld fell=%.2f rss=%ld purgers=%d threads=%d\n", who, held >> 10, after, fell, rss, np, nt);
  else
    printf("%sin_use=%zu rss_after_free=%ld fell=never rss=%ld purgers=%d threads=%d\n", who, held >> 10, after, rss, np, nt);
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
    watch("", held, seconds, -1);
    return 0;
  }
  size_t held = fill_and_free((size_t)1 << 30, 1000);
  if (!strcmp(argv[1], "fork")) {
    const char *mode = getenv("SHMHEAP_FORK");
    int share = mode && !strcmp(mode, "share"), p[2];
    if (pipe(p) || fcntl(p[0], F_SETFL, O_NONBLOCK)) return 1;
    pid_t pid = fork();
    if (pid < 0) return 1;
    if (pid == 0) {
      size_t h = fill_and_free((size_t)512 << 20, 1000);
      if (write(p[1], &h, sizeof h) != (ssize_t)sizeof h) _exit(1);
      watch("child: ", h, seconds, -1);
      _exit(0);
    }
    close(p[1]); /* the child's word, or the end of the pipe if it dies */
    watch("parent: ", held, seconds, share ? p[0] : -1);
    int status;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status)) return 1;
    return 0;
  }
  watch("", held, seconds, -1);
  return 0;
}
