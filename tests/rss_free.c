/* Resident memory around a mass free, for rss.sh (run under glibc and under
 * the preload, in the same test): a million 64-byte blocks, all freed, then
 * a million 100-byte blocks (which the 64-byte ones' memory must serve),
 * all freed, then malloc_trim(0).  Prints the resident set size, in KiB,
 * after each step:
 *   filled=N freed=N refilled=N trimmed=N */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { N = 1000000 };

static long rss_kib(void) {
  FILE *f = fopen("/proc/self/statm", "re");
  long size = 0, res = -1;
  if (!f) return -1;
  if (fscanf(f, "%ld %ld", &size, &res) != 2) res = -1;
  fclose(f);
  return res < 0 ? -1 : res * (sysconf(_SC_PAGESIZE) / 1024);
}

/* Touched so that every block is resident, as a program's would be. */
static int fill(void **b, size_t size) {
  for (int i = 0; i < N; i++) {
    if (!(b[i] = malloc(size))) return -1;
    memset(b[i], 0x5a, size);
  }
  return 0;
}

int main(void) {
  void **b = calloc(N, sizeof *b);
  if (!b || fill(b, 64) < 0) return 3;
  long filled = rss_kib();
  for (int i = 0; i < N; i++) free(b[i]);
  long freed = rss_kib();
  if (fill(b, 100) < 0) return 3;
  long refilled = rss_kib();
  for (int i = 0; i < N; i++) free(b[i]);
  malloc_trim(0);
  long trimmed = rss_kib();
  free(b);
  printf("filled=%ld freed=%ld refilled=%ld trimmed=%ld\n", filled, freed, refilled, trimmed);
  return 0;
}
