/* The price of the heap being shared memory: the first touch of a page.
 * Times a first write to every page of 160 MiB of anonymous memory (what
 * glibc, jemalloc, mimalloc and tcmalloc get from mmap) and of a SysV shared
 * memory segment made as libshmheap makes its own (SHM_NORESERVE), then the
 * same segment filled by one madvise(MADV_POPULATE_WRITE) before the writes.
 * A program that touches much fresh memory (sort's buffers, say) pays the
 * difference between the first two per page, whatever the allocator does.
 * Prints "anon_us shm_us populated_us", microseconds per page, the median
 * of RUNS rounds.  Linked with no allocator and run without a preload. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <time.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

enum { RUNS = 5 };
#define BYTES ((size_t)160 << 20)
#define PAGES (BYTES / 4096)

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Microseconds per page to write one byte of every page (after populating
 * them all first, if populate). */
static double touch(volatile char *p, int populate) {
  double t0 = now();
  if (populate && madvise((void *)p, BYTES, MADV_POPULATE_WRITE) != 0) return -1;
  for (size_t o = 0; o < BYTES; o += 4096) p[o] = 1;
  return (now() - t0) * 1e6 / PAGES;
}

static double shm_round(int populate) {
  int id = shmget(IPC_PRIVATE, BYTES, IPC_CREAT | SHM_NORESERVE | 0600);
  if (id < 0) return -1;
  char *p = shmat(id, NULL, 0);
  shmctl(id, IPC_RMID, NULL); /* gone once detached, even if we are killed */
  if (p == (void *)-1) return -1;
  double us = touch(p, populate);
  shmdt(p);
  return us;
}

static double anon_round(void) {
  char *p = mmap(NULL, BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return -1;
  double us = touch(p, 0);
  munmap(p, BYTES);
  return us;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(void) {
  double r[3][RUNS];
  for (int i = 0; i < RUNS; i++) {
    r[0][i] = anon_round();
    r[1][i] = shm_round(0);
    r[2][i] = shm_round(1);
    for (int k = 0; k < 3; k++)
      if (r[k][i] < 0) {
        perror("faults");
        return 1;
      }
  }
  for (int k = 0; k < 3; k++) qsort(r[k], RUNS, sizeof r[k][0], cmp);
  printf("%.2f %.2f %.2f\n", r[0][RUNS / 2], r[1][RUNS / 2], r[2][RUNS / 2]);
  return 0;
}
