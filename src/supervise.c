/* shmheap_supervise: the seed's recovery model.  The caller becomes a
 * supervisor that forks a worker sharing the heap (share mode) and forks a
 * new one whenever the worker dies abnormally.  The new worker starts from
 * the same image, so it finds every object the dead one left, code pointers
 * included; the supervisor makes the heap whole first (recover.c), so the
 * worker does not pay for the repair on its first malloc. */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>

#include "init.h"

static _Atomic pid_t worker;
static volatile sig_atomic_t stop_signal;

static const int forwarded[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT};
#define NFORWARD (sizeof forwarded / sizeof forwarded[0])

/* A stop request for the supervisor is meant for the service: pass it on,
 * and do not restart a worker that ends after it. */
static void forward(int sig) {
  int saved = errno;
  stop_signal = sig;
  pid_t w = atomic_load(&worker);
  if (w > 0) kill(w, sig);
  errno = saved;
}

static long long now_ms(void) { return (long long)(os_clock_ns(CLOCK_MONOTONIC) / 1000000); }

static void sleep_ms(unsigned ms) {
  struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR && !stop_signal) {
  }
}

SH_API int shmheap_supervise(const struct shmheap_supervise_options *opt) {
  ensure_init();
  struct shmheap_supervise_options o = {0, 0, 0, 0, 0};
  if (opt) o = *opt;
  if (!o.backoff_ms) o.backoff_ms = 100;
  if (!o.backoff_max_ms) o.backoff_max_ms = 10000;
  if (!o.stable_ms) o.stable_ms = 10000;

  struct sigaction sa, old[NFORWARD];
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = forward;
  sigemptyset(&sa.sa_mask);
  for (unsigned i = 0; i < NFORWARD; i++) sigaction(forwarded[i], &sa, &old[i]);

  /* The supervisor's page tables are not the workers': each worker maps
   * the heap in for itself. */
  prefault_stop();
  unsigned deaths = 0, in_a_row = 0, wait_ms = o.backoff_ms;
  for (;;) {
    pid_t pid = shmheap_fork(SHMHEAP_FORK_SHARE);
    if (pid == 0) {
      for (unsigned i = 0; i < NFORWARD; i++) sigaction(forwarded[i], &old[i], NULL);
      prefault_worker();
      return (int)(deaths > 0x7fffffff ? 0x7fffffff : deaths);
    }
    if (pid < 0) {
      int e = errno;
      if (deaths == 0) {
        for (unsigned i = 0; i < NFORWARD; i++) sigaction(forwarded[i], &old[i], NULL);
        errno = e;
        return -1;
      }
      os_die(SH_EXIT_OSERR, "libshmheap: supervisor %d: cannot fork a new worker (errno %d); giving up", (int)SELF.pid, e);
    }
    atomic_store(&worker, pid);
    if (stop_signal) kill(pid, stop_signal); /* it came while we forked */
    long long started = now_ms();
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    atomic_store(&worker, 0);
    recover_reap();
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if ((WIFEXITED(status) && code == 0) || stop_signal) exit(code);
    deaths++;
    if (now_ms() - started >= (long long)o.stable_ms) {
      in_a_row = 0;
      wait_ms = o.backoff_ms;
    }
    in_a_row++;
    if (o.max_restarts && in_a_row > o.max_restarts) {
      if (!o.quiet)
        os_say("libshmheap: supervisor %d: worker %d ended (%s %d), %u restarts in a row: giving up",
               (int)SELF.pid, (int)pid, WIFEXITED(status) ? "exit" : "signal",
               WIFEXITED(status) ? code : WTERMSIG(status), o.max_restarts);
      exit(code);
    }
    if (!o.quiet)
      os_say("libshmheap: supervisor %d: worker %d ended (%s %d); restart %u in %u ms",
             (int)SELF.pid, (int)pid, WIFEXITED(status) ? "exit" : "signal",
             WIFEXITED(status) ? code : WTERMSIG(status), deaths, wait_ms);
    sleep_ms(wait_ms);
    if (stop_signal) exit(code);
    wait_ms = wait_ms > o.backoff_max_ms / 2 ? o.backoff_max_ms : wait_ms * 2;
  }
}
