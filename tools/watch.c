/* shmheap-dump --watch: the terminal side of the live view.
 *
 * On a terminal the view takes the alternate screen (the shell's screen
 * comes back untouched at the end), hides the cursor, and turns off the
 * line discipline's echo and line buffering so that one q ends it.  ISIG is
 * kept: Ctrl-C is SIGINT, Ctrl-Z is SIGTSTP, and both are caught so that the
 * terminal is put back first.  Each frame is rendered to memory and written
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

static volatile sig_atomic_t got_quit, got_winch, got_tstp;

static void on_signal(int sig) {
  if (sig == SIGWINCH) got_winch = 1;
  else if (sig == SIGTSTP) got_tstp = 1;
  else if (sig != SIGCONT) got_quit = sig;
}

static const int handled[] = {SIGINT, SIGTERM, SIGHUP, SIGWINCH, SIGTSTP, SIGCONT};
#define NHANDLED (sizeof handled / sizeof handled[0])

static struct {
  int tty;      /* stdout is a terminal: draw in place */
  int keys;     /* stdin is one too, in the mode below: read q from it */
  int entered;  /* the terminal is in the view's modes now */
  struct termios saved;
} T;

static void term_enter(void) {
  if (T.keys) {
    struct termios t = T.saved;
    t.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
    t.c_cc[VMIN] = 0;
    t.c_cc[VTIME] = 0;
    if (tcsetattr(STDIN_FILENO, TCSANOW, &t) < 0) T.keys = 0;
  }
  fputs("\033[?1049h\033[?25l\033[H\033[2J", stdout);
  fflush(stdout);
  T.entered = 1;
}

static void term_leave(void) {
  if (!T.entered) return;
  T.entered = 0;
  fputs("\033[?25h\033[?1049l", stdout);
  fflush(stdout);
  if (T.keys) tcsetattr(STDIN_FILENO, TCSANOW, &T.saved);
}

/* Also on exit() from anywhere while the view is up (a frame that dies of
 * an allocation failure, say): the user's terminal must not stay raw. */
static void term_atexit(void) {
  term_leave();
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

int watch_run(const char *title, double seconds, unsigned long count, watch_frame_fn frame, void *ctx) {
  sigset_t block, orig, waitmask;
  sigemptyset(&block);
  for (unsigned i = 0; i < NHANDLED; i++) sigaddset(&block, handled[i]);
  sigprocmask(SIG_BLOCK, &block, &orig);
  waitmask = orig;
  for (unsigned i = 0; i < NHANDLED; i++) sigdelset(&waitmask, handled[i]);
  struct sigaction sa, old[NHANDLED];
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  for (unsigned i = 0; i < NHANDLED; i++) sigaction(handled[i], &sa, &old[i]);

  T.tty = isatty(STDOUT_FILENO);
  T.keys = T.tty && isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &T.saved) == 0;
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
    double left;
    while (!got_quit && (left = next - now_s()) > 0) {
      struct timespec ts = {(time_t)left, (long)((left - (double)(time_t)left) * 1e9)};
      struct pollfd p = {.fd = STDIN_FILENO, .events = POLLIN};
      int r = ppoll(&p, T.keys ? 1 : 0, &ts, &waitmask);
      if (got_tstp) {
        /* Ctrl-Z: the shell's screen and modes back, then stop as the
         * default action would; on fg, the view again. */
        got_tstp = 0;
        int was = T.entered;
        term_leave();
        raise(SIGSTOP);
        if (was) term_enter();
        got_winch = 1;
      }
      if (got_winch) {
        got_winch = 0;
        if (T.tty && draw(title, buf, len) < 0) got_quit = -1;
      }
      if (r > 0 && T.keys) {
        if (p.revents & POLLIN) {
          char c[64];
          ssize_t n = read(STDIN_FILENO, c, sizeof c);
          if (n <= 0) T.keys = 0; /* the terminal hung up: stop reading it */
          for (ssize_t i = 0; i < n; i++)
            if (c[i] == 'q' || c[i] == 'Q') got_quit = SIGINT;
        } else if (p.revents & (POLLHUP | POLLERR | POLLNVAL)) {
          T.keys = 0;
        }
      }
      if (r < 0 && errno != EINTR) {
        rc = 2;
        got_quit = -1;
      }
    }
    if (got_quit) break;
    if (next < now_s() - seconds) next = now_s(); /* a slow frame or a stop: no burst to catch up */
  }
  free(buf);
  term_leave();
  int sig = got_quit;
  for (unsigned i = 0; i < NHANDLED; i++) sigaction(handled[i], &old[i], NULL);
  if ((sig == SIGTERM || sig == SIGHUP) && old[sig == SIGTERM ? 1 : 2].sa_handler == SIG_DFL) {
    signal(sig, SIG_DFL);
    sigset_t one;
    sigemptyset(&one);
    sigaddset(&one, sig);
    raise(sig);
    sigprocmask(SIG_UNBLOCK, &one, NULL); /* dies here, as the signal meant */
  }
  sigprocmask(SIG_SETMASK, &orig, NULL);
  return rc;
}
