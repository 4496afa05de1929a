/* For tests/malloc_info.sh, run with and without the library (not linked
 * with it): 1000 blocks of 100 bytes, every other one freed, and three of
 * 100,000; then malloc_info(0, stdout) and malloc_stats() (on stderr). */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>

int main(void) {
  static void *small[1000], *large[3];
  for (int i = 0; i < 1000; i++)
    if (!(small[i] = malloc(100))) return 3;
  for (int i = 0; i < 1000; i += 2) free(small[i]);
  for (int i = 0; i < 3; i++)
    if (!(large[i] = malloc(100000))) return 3;
  if (malloc_info(0, stdout) != 0) return 3;
  fflush(stdout);
  malloc_stats();
  return 0;
}
