/* The program at the end of an exec chain (tests/exec.sh): linked with the
 * library, run under LD_PRELOAD by launchers that are not.  Prints
 *   origin=<fresh|clean|crashed> keyed=<0|1> count=N dead=D
 * where count is kept in the heap under the root "exec_prog" (so it counts
 * the runs that found the heap this one uses), then does ACTION:
 *   exit                 exit 0
 *   crash                SIGKILL itself
 *   wait                 sleep until SIGTERM, then exit 0
 *   exec PROG ARG...     execvp, environment as it is (PROG runs the library)
 *   bare PROG ARG...     execve without LD_PRELOAD (PROG does not)
 *   execl PROG           execl
 *   execlp PROG ARG      execlp (PATH search), PROG ARG
 *   execle PROG ARG      execle, PROG ARG, the environment as it is
 *   fail                 execvp a program that does not exist, then exit 0 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shmheap.h"

extern char **environ;

static volatile sig_atomic_t stop;
static void on_term(int sig) { (void)sig; stop = 1; }

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: exec_prog exit|crash|wait|fail|exec PROG...|bare PROG...|execl PROG|execlp PROG ARG|execle PROG ARG\n");
    return 2;
  }
  struct shmheap_recovery r;
  struct shmheap_info info;
  shmheap_recovered(&r);
  shmheap_get_info(&info);
  long *count = shmheap_root_get("exec_prog");
  if (!count) {
    count = calloc(1, sizeof *count);
    shmheap_root_set("exec_prog", count);
  }
  ++*count;
  static const char *const origin[] = {"fresh", "clean", "crashed"};
  printf("origin=%s keyed=%d count=%ld dead=%u\n", origin[r.origin % 3], info.key != 0, *count, r.dead_processes);
  fflush(stdout);
  const char *a = argv[1];
  if (!strcmp(a, "exit")) return 0;
  if (!strcmp(a, "crash")) raise(SIGKILL);
  if (!strcmp(a, "wait")) {
    signal(SIGTERM, on_term);
    while (!stop) pause();
    return 0;
  }
  if (!strcmp(a, "fail")) {
    execvp("exec-prog-no-such-program", argv);
    return errno == ENOENT ? 0 : 1;
  }
  if (argc < 3) return 2;
  if (!strcmp(a, "exec")) execvp(argv[2], argv + 2);
  else if (!strcmp(a, "execl")) execl(argv[2], argv[2], (char *)NULL);
  else if (!strcmp(a, "execlp") && argc > 3) execlp(argv[2], argv[2], argv[3], (char *)NULL);
  else if (!strcmp(a, "execle") && argc > 3) execle(argv[2], argv[2], argv[3], (char *)NULL, environ);
  else if (!strcmp(a, "bare")) {
    char **env = environ, **w = environ;
    for (; *env; env++)
      if (strncmp(*env, "LD_PRELOAD=", 11)) *w++ = *env;
    *w = NULL;
    execve(argv[2], argv + 2, environ);
  }
  perror("exec_prog: exec");
  return 1;
}
