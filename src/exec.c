/* The exec family, interposed: a process that execs leaves its keyed heap
 * as cleanly as one that exits (shmheap(7), "Exec").
 *
 * exec runs no destructor, so nothing else would tell that the process left
 * on purpose.  If the new image runs this library, it finds its earlier
 * image's entry by its own pid and takes over from it (recover.c).  If it
 * does not (LD_PRELOAD cleared, a static or set-user-ID executable), the
 * entry stays, marked here, and whoever finds the pid gone later reads the
 * mark instead of a crash.  A failed exec takes the mark back.
 *
 * Each calls glibc's own function (its PATH search, its ENOEXEC fallback
 * to /bin/sh), found once with RTLD_NEXT; glibc's execvp and the others do
 * not call execve through the PLT, so each is wrapped on its own. */
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <unistd.h>

#include "proc.h"

extern char **environ;

typedef int (*execve_fn)(const char *, char *const[], char *const[]);
typedef int (*execvp_fn)(const char *, char *const[]);
typedef int (*fexecve_fn)(int, char *const[], char *const[]);
typedef int (*execveat_fn)(int, const char *, char *const[], char *const[], int);

static void *next(const char *name) {
  void *f = dlsym(RTLD_NEXT, name);
  if (!f) errno = ENOSYS;
  return f;
}

/* The background thread ends first: exec would kill it wherever it is,
 * holding the heap's lock perhaps (a repair for the next process). */
static void entering(void) {
  /* Not in a vfork child, whose memory is its parent's (the parent's
   * thread goes on), nor from a signal handler that interrupted a holder
   * of the heap's lock, which the thread may be waiting for. */
  if (os_getpid() == SELF.pid && !locks_held()) background_stop();
  recover_exec(1);
}

/* The mark is taken back with errno as the exec left it. */
static int failed(int r) {
  int saved = errno;
  recover_exec(0);
  if (os_getpid() == SELF.pid) background_allow();
  errno = saved;
  return r;
}

SH_API int execve(const char *path, char *const argv[], char *const envp[]) {
  static execve_fn real;
  if (!real && !(real = (execve_fn)next("execve"))) return -1;
  entering();
  return failed(real(path, argv, envp));
}

SH_API int execv(const char *path, char *const argv[]) { return execve(path, argv, environ); }

SH_API int execvpe(const char *file, char *const argv[], char *const envp[]) {
  static execve_fn real;
  if (!real && !(real = (execve_fn)next("execvpe"))) return -1;
  entering();
  return failed(real(file, argv, envp));
}

SH_API int execvp(const char *file, char *const argv[]) {
  static execvp_fn real;
  if (!real && !(real = (execvp_fn)next("execvp"))) return -1;
  entering();
  return failed(real(file, argv));
}

SH_API int fexecve(int fd, char *const argv[], char *const envp[]) {
  static fexecve_fn real;
  if (!real && !(real = (fexecve_fn)next("fexecve"))) return -1;
  entering();
  return failed(real(fd, argv, envp));
}

SH_API int execveat(int dirfd, const char *path, char *const argv[], char *const envp[], int flags) {
  static execveat_fn real;
  if (!real && !(real = (execveat_fn)next("execveat"))) return -1;
  entering();
  return failed(real(dirfd, path, argv, envp, flags));
}

/* The list forms: their arguments gathered into an array on the stack, as
 * glibc does, then the array forms above. */
#define ARGS_MAX (1u << 20) /* more fail E2BIG in the kernel anyway */

static size_t count_args(const char *first, va_list *ap) {
  size_t n = 0;
  if (first)
    for (n = 1; va_arg(*ap, char *) && n <= ARGS_MAX; n++) {}
  return n;
}

/* argv[0..n], NULL last; the NULL of the list is taken, so that execle's
 * envp is next in ap. */
static void take_args(char **argv, const char *first, size_t n, va_list *ap) {
  argv[0] = (char *)first;
  for (size_t i = 1; i < n; i++) argv[i] = va_arg(*ap, char *);
  if (n) (void)va_arg(*ap, char *);
  argv[n] = NULL;
}

enum list_form { LIST_PATH, LIST_FILE, LIST_ENV }; /* execl, execlp, execle */

/* The arguments after arg, read twice (count, then take) through copies of
 * ap; the array lives in this frame until the exec. */
static int exec_list(enum list_form form, const char *target, const char *arg, va_list ap) {
  va_list aq;
  va_copy(aq, ap);
  size_t n = count_args(arg, &aq);
  va_end(aq);
  if (n > ARGS_MAX) {
    errno = E2BIG;
    return -1;
  }
  char *argv[n + 1];
  va_copy(aq, ap);
  take_args(argv, arg, n, &aq);
  char *const *envp = form == LIST_ENV ? va_arg(aq, char *const *) : environ;
  va_end(aq);
  return form == LIST_FILE ? execvp(target, argv) : execve(target, argv, envp);
}

SH_API int execl(const char *path, const char *arg, ...) {
  va_list ap;
  va_start(ap, arg);
  int r = exec_list(LIST_PATH, path, arg, ap);
  va_end(ap);
  return r;
}

SH_API int execlp(const char *file, const char *arg, ...) {
  va_list ap;
  va_start(ap, arg);
  int r = exec_list(LIST_FILE, file, arg, ap);
  va_end(ap);
  return r;
}

SH_API int execle(const char *path, const char *arg, ...) {
  va_list ap;
  va_start(ap, arg);
  int r = exec_list(LIST_ENV, path, arg, ap);
  va_end(ap);
  return r;
}
