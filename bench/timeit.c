/* Wall time and peak RSS of a real program run under one allocator, for
 * bench/run.sh:
 *     bench/timeit LIB PROGRAM [ARG...]
 * runs PROGRAM with LD_PRELOAD=LIB (no preload when LIB is empty) and its
 * standard output on /dev/null, and prints "seconds peak_rss_kib" as the
 * other bench programs do.  The preload is set for the child only, so this
 * process's own start-up is not counted under the allocator measured, and
 * the time has a finer resolution than /usr/bin/time's 10 ms.
 * The peak RSS is wait4's ru_maxrss: the largest of the program and of the
 * descendants it waited for (for g++, that is cc1plus). */
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: timeit LIB PROGRAM [ARG...]\n");
    return 2;
  }
  if (argv[1][0] ? setenv("LD_PRELOAD", argv[1], 1) : unsetenv("LD_PRELOAD")) {
    perror("timeit: setenv");
    return 1;
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);

  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  pid_t pid;
  int err = posix_spawn(&pid, argv[2], &fa, NULL, argv + 2, environ);
  if (err) {
    fprintf(stderr, "timeit: %s: %s\n", argv[2], strerror(err));
    return 1;
  }
  int st;
  struct rusage ru;
  while (wait4(pid, &st, 0, &ru) < 0)
    if (errno != EINTR) {
      perror("timeit: wait4");
      return 1;
    }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  if (!WIFEXITED(st) || WEXITSTATUS(st)) {
    fprintf(stderr, "timeit: %s (LD_PRELOAD=%s) %s %d\n", argv[2], argv[1],
            WIFEXITED(st) ? "exited with" : "was killed by signal", WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
    return 1;
  }
  printf("%.4f %ld\n", (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9, ru.ru_maxrss);
  return 0;
}
