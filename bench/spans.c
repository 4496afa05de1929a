/* The cost of many free spans: a heap fragmented into N free runs of
 * pages (2N blocks of 33 KiB, every other one freed, then left a second
 * and more so that they are given back), then a working set of 16 MiB
 * allocated, written and freed again and again for 3 s.  Prints the mean,
 * the 99.9th percentile and the worst time of one free() of that loop:
 *   MEAN_US P999_US WORST_US
 * An allocator that visits its free runs on the way (a purge walk over all
 * of them) shows it in the tail, where a program waits on it.
 *   bench/spans [N]   (default 100000) */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static int cmp(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return (x > y) - (x < y);
}

enum { WS = 64, WS_SIZE = 256 << 10, MAX_SAMPLES = 1 << 20 };

int main(int argc, char **argv) {
  long n = argc > 1 ? strtol(argv[1], NULL, 10) : 100000;
  if (n < 1 || n > 10000000) {
    fprintf(stderr, "spans: N must be 1 to 10000000\n");
    return 2;
  }
  char **b = malloc(sizeof *b * 2 * (size_t)n);
  uint64_t *lat = malloc(sizeof *lat * MAX_SAMPLES);
  if (!b || !lat) return 3;
  for (long i = 0; i < 2 * n; i++)
    if (!(b[i] = malloc(33 << 10))) {
      fprintf(stderr, "spans: out of memory after %ld blocks\n", i);
      return 3;
    }
  for (long i = 0; i < 2 * n; i += 2) free(b[i]);
  /* Old enough to be given back, by a thread or by the next call. */
  usleep(1300000);
  free(malloc(33 << 10));
  usleep(300000);
  char *w[WS];
  size_t k = 0;
  uint64_t t0 = now_ns();
  while (now_ns() - t0 < 3000000000u && k + WS <= MAX_SAMPLES) {
    for (int j = 0; j < WS; j++) {
      if (!(w[j] = malloc(WS_SIZE))) return 3;
      memset(w[j], 1, WS_SIZE);
    }
    for (int j = 0; j < WS; j++) {
      uint64_t a = now_ns();
      free(w[j]);
      lat[k++] = now_ns() - a;
    }
    usleep(20000);
  }
  double sum = 0;
  for (size_t i = 0; i < k; i++) sum += (double)lat[i];
  qsort(lat, k, sizeof *lat, cmp);
  printf("%.2f %.1f %.1f\n", sum / (double)k / 1e3, (double)lat[k * 999 / 1000] / 1e3, (double)lat[k - 1] / 1e3);
  for (long i = 1; i < 2 * n; i += 2) free(b[i]);
  free(b);
  free(lat);
  return 0;
}
