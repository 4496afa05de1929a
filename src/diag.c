/* Messages without allocating: the library reports errors from inside the
 * first malloc, before stdio exists, so it formats into a stack buffer and
 * write(2)s it.  A small printf subset: %s %c %d %u %x %o %p with l/ll/z, a
 * zero-padded width for numbers and a precision (.N, .*) for strings. */
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>

#include "os.h"

static size_t put_num(char *out, size_t room, unsigned long long v, unsigned base,
                      int neg, int width, int zero) {
  char tmp[24];
  size_t n = 0, k = 0;
  do {
    tmp[n++] = "0123456789abcdef"[v % base];
    v /= base;
  } while (v);
  if (neg) tmp[n++] = '-';
  while ((int)n < width && n < sizeof tmp) tmp[n++] = zero ? '0' : ' ';
  while (n && k < room) out[k++] = tmp[--n];
  return k;
}

int os_vfmt(char *buf, size_t len, const char *f, va_list ap) {
  size_t o = 0;
  if (!len) return 0;
  for (; *f && o + 1 < len; f++) {
    if (*f != '%') { buf[o++] = *f; continue; }
    f++;
    int zero = 0, width = 0, lng = 0, prec = -1;
    if (*f == '0') { zero = 1; f++; }
    while (*f >= '0' && *f <= '9') width = width * 10 + (*f++ - '0');
    if (*f == '.') { /* a precision bounds %s: strings read from a segment may lack their NUL */
      f++;
      if (*f == '*') { prec = va_arg(ap, int); f++; }
      else for (prec = 0; *f >= '0' && *f <= '9'; f++) prec = prec * 10 + (*f - '0');
    }
    while (*f == 'l' || *f == 'z') { lng++; f++; }
    size_t room = len - 1 - o;
    switch (*f) {
    case 's': {
      const char *s = va_arg(ap, const char *);
      if (!s) s = "(null)";
      for (int k = 0; *s && o + 1 < len && (prec < 0 || k < prec); k++) buf[o++] = *s++;
      break;
    }
    case 'c': buf[o++] = (char)va_arg(ap, int); break;
    case 'd': {
      long long v = lng ? va_arg(ap, long long) : va_arg(ap, int);
      o += put_num(buf + o, room, v < 0 ? -(unsigned long long)v : (unsigned long long)v, 10,
                   v < 0, width, zero);
      break;
    }
    case 'u': case 'x': case 'o': {
      unsigned long long v = lng ? va_arg(ap, unsigned long long) : va_arg(ap, unsigned);
      o += put_num(buf + o, room, v, *f == 'x' ? 16 : *f == 'o' ? 8 : 10, 0, width, zero);
      break;
    }
    case 'p':
      if (room >= 2) { buf[o++] = '0'; buf[o++] = 'x'; room -= 2; }
      o += put_num(buf + o, room, (uintptr_t)va_arg(ap, void *), 16, 0, 0, 0);
      break;
    case '%': buf[o++] = '%'; break;
    default: return -1; /* unknown conversion: a bug in a message, not a user error */
    }
  }
  buf[o] = 0;
  return (int)o;
}

int os_fmt(char *buf, size_t len, const char *f, ...) {
  va_list ap;
  va_start(ap, f);
  int n = os_vfmt(buf, len, f, ap);
  va_end(ap);
  return n;
}

/* Where messages go: stderr, or with SHMHEAP_VERBOSE=1 a private duplicate
 * of it taken at start-up, so the exit statistics still appear when the
 * program has closed its stderr (coreutils close it at exit). */
int os_say_fd = 2;

static void emit(const char *f, va_list ap) {
  char buf[1024];
  int n = os_vfmt(buf, sizeof buf - 1, f, ap);
  if (n < 0) return;
  buf[n++] = '\n';
  for (ssize_t k = 0, w; k < n; k += w) {
    w = write(os_say_fd, buf + k, (size_t)(n - k));
    if (w <= 0) break;
  }
}

void os_say(const char *f, ...) {
  va_list ap;
  va_start(ap, f);
  emit(f, ap);
  va_end(ap);
}

void os_die(int status, const char *f, ...) {
  va_list ap;
  va_start(ap, f);
  emit(f, ap);
  va_end(ap);
  /* _exit, not exit: atexit handlers and stdio would allocate on a heap we
   * refused to set up. */
  syscall(SYS_exit_group, status);
  __builtin_unreachable();
}

void os_abort(const char *f, ...) {
  va_list ap;
  va_start(ap, f);
  emit(f, ap);
  va_end(ap);
  /* abort() itself may flush stdio, which allocates: raise the signal
   * directly, and make sure it is not caught or blocked. */
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = SIG_DFL;
  sigaction(SIGABRT, &sa, NULL);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGABRT);
  sigprocmask(SIG_UNBLOCK, &set, NULL);
  raise(SIGABRT);
  syscall(SYS_exit_group, 134);
  __builtin_unreachable();
}

/* A broken invariant in a debug build: say which and where, then stop at
 * this instruction (a trap: a core dump with the broken state in it)
 * rather than go on with a heap known to be wrong. */
void os_assert_fail(const char *what, const char *cond, const char *file, int line) {
  os_say("libshmheap: invariant %s broken: %s (%s:%d)", what, cond, file, line);
  __builtin_trap();
}
