/* shmheap-dump --watch: the terminal side of the live view.
 *
 * On a terminal the view takes the alternate screen (the shell's screen
 * comes back untouched at the end), hides the cursor, and turns off the
 * line discipline's echo and line buffering so that one q ends it (exit 0).
 * ISIG is kept: Ctrl-C (SIGINT), Ctrl-\ (SIGQUIT), SIGTERM and SIGHUP are
 * caught so that the terminal is put back first, and then end the process
 * as they would have; Ctrl-Z (SIGTSTP) puts it back, stops, and takes the
 * screen again on fg.  Each frame is rendered to memory and written
 * over the last from the top-left corner, each line cleared to its end and
 * the rest of the screen below, so that nothing flickers and no stale line
 * stays; a frame taller or wider than the window is cut to it.
 *
 * The signals the view handles are blocked except inside ppoll(), so that
 * one arriving between a check of its flag and the wait cannot be lost (the
 * wait would then sleep a whole interval with Ctrl-C pending).
 *
 * Not on a terminal (a pipe, a file, a log), each frame is printed as a
 * block under a time-stamped title, and nothing is read from stdin. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "watch.h"

/* got_quit: the signal that ends the view, or QUIT_KEY (q) or QUIT_ERROR. */
enum { QUIT_KEY = -1, QUIT_ERROR = -2 };
static volatile sig_atomic_t got_quit, got_winch, got_tstp;

static void on_signal(int sig) {
  if (sig == SIGWINCH) got_winch = 1;
  else if (sig == SIGTSTP) got_tstp = 1;
  else if (sig != SIGCONT) got_quit = sig;
}

/* The signals that end the view die of themselves once the terminal is
 * back, so that a shell sees what killed it (128 + n), as it would have
 * without the view. */
static const int handled[] = {SIGINT, SIGQUIT, SIGTERM, SIGHUP, SIGWINCH, SIGTSTP, SIGCONT};
#define NHANDLED (sizeof handled / sizeof handled[0])

static struct {
  int tty;      /* stdout is a terminal: draw in place */
  int keys;     /* stdin is one too: read q from it */
  int modes;    /* stdin's modes are the view's now and saved must be put back */
  int entered;  /* the alternate screen is up */
  struct termios saved;
} T;

static const char leave_seq[] = "\033[?25h\033[?1049l";

static void term_enter(void) {
  if (T.keys && !T.modes) {
    struct termios t = T.saved;
    t.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
    t.c_cc[VMIN] = 0;
    t.c_cc[VTIME] = 0;
    if (tcsetattr(STDIN_FILENO, TCSANOW, &t) == 0) T.modes = 1;
    else T.keys = 0; /* no single keys: Ctrl-C still ends it */
  }
  fputs("\033[?1049h\033[?25l\033[H\033[2J", stdout);
  fflush(stdout);
  T.entered = 1;
}

static void term_leave(void) {
  if (T.entered) {
    T.entered = 0;
    fputs(leave_seq, stdout);
    fflush(stdout);
  }
  if (T.modes) {
    T.modes = 0;
    tcsetattr(STDIN_FILENO, TCSANOW, &T.saved);
  }
}

/* Also on exit() from anywhere while the view is up (a frame that dies of
 * an allocation failure, say): the user's terminal must not stay raw. */
static void term_atexit(void) {
  term_leave();
}

/* A fault while a frame reads the heap (a writer that shrinks or corrupts
 * it under the reader) must not leave the terminal raw either.  Only
 * async-signal-safe calls here; then the default action, which dumps core
 * at the faulting instruction as it would have. */
static void on_fault(int sig) {
  if (T.entered) (void)!write(STDOUT_FILENO, leave_seq, sizeof leave_seq - 1);
  if (T.modes) tcsetattr(STDIN_FILENO, TCSANOW, &T.saved);
  signal(sig, SIG_DFL);
  raise(sig); /* blocked in here: delivered, by default now, on return */
}
static void stamp(char *buf, size_t len, const char *fmt) {
  time_t now = time(NULL);
  struct tm tm;
  if (!localtime_r(&now, &tm) || !strftime(buf, len, fmt, &tm)) snprintf(buf, len, "%lld", (long long)now);
}

/* Writes the frame over the screen: the title, then as many of its lines
 * as the window has rows for, each cut to the window's width. */
static int draw(const char *title, const char *frame, size_t len) {
  unsigned rows = 24, cols = 80;
  struct winsize ws;
  if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 0 && ws.ws_col > 0) rows = ws.ws_row, cols = ws.ws_col;
  unsigned nlines = 0;
  for (size_t i = 0; i < len; i++) nlines += frame[i] == '\n';
  if (len && frame[len - 1] != '\n') nlines++;

  char when[16];
  stamp(when, sizeof when, "%H:%M:%S");
  char head[256];
  int hn = snprintf(head, sizeof head, "%s  %s  (q quits)", title, when);
  if (hn < 0) hn = 0;
  fputs("\033[H", stdout);
  fwrite(head, 1, (unsigned)hn < cols ? (size_t)hn : cols, stdout);
  fputs("\033[K", stdout);

  unsigned room = rows - 1; /* rows under the title */
  unsigned show = nlines <= room ? nlines : room ? room - 1 : 0;
  const char *p = frame, *end = frame + len;
  for (unsigned i = 0; i < show && p < end; i++) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    size_t n = (size_t)((nl ? nl : end) - p);
    fputs("\n", stdout);
    fwrite(p, 1, n < cols ? n : cols, stdout);
    fputs("\033[K", stdout);
    p = nl ? nl + 1 : end;
  }
  if (show < nlines && room) {
    char more[96];
    int mn = snprintf(more, sizeof more, "... %u more line(s): a taller window shows them", nlines - show);
    fputs("\n", stdout);
    fwrite(more, 1, mn > 0 && (unsigned)mn < cols ? (size_t)mn : cols, stdout);
    fputs("\033[K", stdout);
  }
  fputs("\033[J", stdout); /* whatever the last frame had below */
  return fflush(stdout) == 0 ? 0 : -1;
}

static int print_block(const char *title, const char *frame, size_t len) {
  char when[32];
  stamp(when, sizeof when, "%Y-%m-%d %H:%M:%S");
  printf("%s  %s\n", title, when);
  fwrite(frame, 1, len, stdout);
  if (len && frame[len - 1] != '\n') putchar('\n');
  putchar('\n');
  return fflush(stdout) == 0 ? 0 : -1;
}

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Delivers sig, which the view has blocked, by its default action: raise()
 * leaves it pending and the unblock delivers it.  Returns (with sig blocked
 * again) only if that action lets the process go on: a stop, once resumed. */
static void raise_default(int sig) {
  sigset_t one;
  sigemptyset(&one);
  sigaddset(&one, sig);
  signal(sig, SIG_DFL);
  raise(sig);
  sigprocmask(SIG_UNBLOCK, &one, NULL);
  sigprocmask(SIG_BLOCK, &one, NULL);
}

/* Ctrl-Z: the shell's screen and modes back, then stop by the default
 * action of SIGTSTP (a shell sees a stopped job as usual); on fg, the view
 * again. */
static void suspend(const struct sigaction *mine) {
  int was = T.entered;
  term_leave();
  raise_default(SIGTSTP);
  sigaction(SIGTSTP, mine, NULL);
  if (was) term_enter();
}

int watch_run(const char *title, double seconds, unsigned long count, watch_frame_fn frame, void *ctx) {
  sigset_t block, orig, waitmask;
  struct sigaction sa, old[NHANDLED];
  int mine[NHANDLED];
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigemptyset(&block);
  /* A signal the caller ignores (nohup's SIGHUP, a background job's
   * SIGINT) stays ignored. */
  for (unsigned i = 0; i < NHANDLED; i++) {
    sigaction(handled[i], NULL, &old[i]);
    mine[i] = old[i].sa_handler != SIG_IGN || handled[i] == SIGWINCH || handled[i] == SIGCONT;
    if (mine[i]) sigaddset(&block, handled[i]);
  }
  sigprocmask(SIG_BLOCK, &block, &orig);
  waitmask = orig;
  for (unsigned i = 0; i < NHANDLED; i++)
    if (mine[i]) {
      sigdelset(&waitmask, handled[i]);
      sigaction(handled[i], &sa, NULL);
    }
  struct sigaction fault, old_segv, old_bus;
  memset(&fault, 0, sizeof fault);
  fault.sa_handler = on_fault;
  sigemptyset(&fault.sa_mask);
  sigaction(SIGSEGV, &fault, &old_segv);
  sigaction(SIGBUS, &fault, &old_bus);

  T.tty = isatty(STDOUT_FILENO);
  T.keys = T.tty && isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &T.saved) == 0;
  /* One write(2) per frame, not one per line: a terminal never shows half
   * a frame, and a pipe reader gets whole blocks. */
  static char obuf[1 << 16];
  setvbuf(stdout, obuf, _IOFBF, sizeof obuf);
  atexit(term_atexit);
  if (T.tty) term_enter();

  int rc = 0;
  char *buf = NULL;
  size_t len = 0;
  unsigned long shown = 0;
  double next = now_s();
  for (;;) {
    free(buf);
    buf = NULL;
    FILE *f = open_memstream(&buf, &len);
    if (!f) {
      rc = 2;
      break;
    }
    int last = frame(f, ctx);
    if (fclose(f) != 0) {
      rc = 2;
      break;
    }
    if ((T.tty ? draw(title, buf, len) : print_block(title, buf, len)) < 0) {
      rc = 2; /* the terminal or the pipe is gone */
      break;
    }
    shown++;
    if (last || (count && shown >= count)) break;

    next += seconds;
    /* At least one wait per frame, even one that took longer than the
     * interval: the signals are blocked everywhere else, and a heap slow to
     * read must not make the view deaf to q and Ctrl-C. */
    for (int first = 1; !got_quit; first = 0) {
      double left = next - now_s();
      if (left <= 0 && !first) break;
      if (left < 0) left = 0;
      struct timespec ts = {(time_t)left, (long)((left - (double)(time_t)left) * 1e9)};
      struct pollfd p = {.fd = STDIN_FILENO, .events = POLLIN};
      int r = ppoll(&p, T.keys ? 1 : 0, &ts, &waitmask);
      if (r < 0 && errno != EINTR) {
        rc = 2;
        got_quit = QUIT_ERROR;
        break;
      }
      if (got_tstp) {
        got_tstp = 0;
        suspend(&sa);
        got_winch = 1;
      }
      if (got_winch) {
        got_winch = 0;
        if (T.tty && draw(title, buf, len) < 0) {
          rc = 2;
          got_quit = QUIT_ERROR;
        }
      }
      if (r > 0 && T.keys) {
        if (p.revents & POLLIN) {
          char c[64];
          ssize_t n = read(STDIN_FILENO, c, sizeof c);
          if (n <= 0) T.keys = 0; /* the terminal hung up: stop reading it */
          for (ssize_t i = 0; i < n; i++)
            if (c[i] == 'q' || c[i] == 'Q') got_quit = QUIT_KEY;
        } else if (p.revents & (POLLHUP | POLLERR | POLLNVAL)) {
          T.keys = 0;
        }
      }
    }
    if (got_quit) break;
    if (next < now_s() - seconds) next = now_s(); /* a slow frame or a stop: no burst to catch up */
  }
  free(buf);
  term_leave();
  fflush(stdout);
  int sig = got_quit;
  sigaction(SIGSEGV, &old_segv, NULL);
  sigaction(SIGBUS, &old_bus, NULL);
  for (unsigned i = 0; i < NHANDLED; i++)
    if (mine[i]) sigaction(handled[i], &old[i], NULL);
  /* Ended by a signal whose default action ends the process: die of it now
   * that the terminal is back. */
  if (sig > 0) raise_default(sig);
  sigprocmask(SIG_SETMASK, &orig, NULL);
  return rc;
}
