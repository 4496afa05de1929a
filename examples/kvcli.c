/* kvcli: the client of examples/kvstore, so that the demo and the tests need
 * no nc or socat.  It is an ordinary program: not linked with libshmheap.
 *
 *   kvcli [-w SECONDS] SOCKET                 request lines from stdin
 *   kvcli [-w SECONDS] SOCKET REQUEST...      each argument is one request line
 *   kvcli [-w SECONDS] SOCKET fill N [ROUND]  SET key:0 .. key:N-1
 *   kvcli [-w SECONDS] SOCKET churn N ROUND   the same, but every fifth key is
 *                                             DELeted instead
 *   kvcli [-w SECONDS] SOCKET check N KIND:ACKED...
 *
 * The first two print each reply line; they exit 0 when every request got a
 * reply and none was ERR.
 *
 * fill and churn send their requests pipelined (without waiting for each
 * reply) and print one line:
 *     fill: 100000 requests, 100000 replies (100000 OK) in 0.21 s
 * If the server dies midway (or is not there) they say how many replies
 * came before it did, and exit 3: every request before that number was
 * acknowledged.  The value
 * of key:I written in round R is "rR-value-I-" and I % 16 letters x, so that
 * check can tell which round wrote what it reads.
 *
 * check reads key:0 .. key:N-1 and COUNT back after rounds of fill or churn,
 * given in order as KIND:ACKED (fill:100000 churn:5321 ...), where ACKED is
 * the number of replies the round got.  The server handles requests in order,
 * so round R applied at least its first ACKED requests, and maybe a few more
 * whose replies were lost with it.  For each key check works out which rounds
 * may have written what it holds now, and fails (exit 1) if the server holds
 * anything else, loses an acknowledged write, or its COUNT is not the number
 * of keys found.
 *
 * -w SECONDS: wait up to that long for the server to start listening.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define LINE_MAX_BYTES 65536u /* as kvstore: a request or reply line */
#define WBUF (4 * LINE_MAX_BYTES)
#define RBUF (4 * LINE_MAX_BYTES)
#define MAX_ROUNDS 64

static const char *prog = "kvcli";

static void die(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));
static void die(int status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "%s: ", prog);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  exit(status);
}

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Returns the connected socket.  Dies if it cannot connect, unless
 * soft: then returns -1 (after the message). */
static int connect_to(const char *path, double wait_s, int soft) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof sa.sun_path) die(2, "socket path too long: %s", path);
  memcpy(sa.sun_path, path, strlen(path) + 1);
  double deadline = now_s() + wait_s;
  for (;;) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) die(3, "socket: %s", strerror(errno));
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) return fd;
    int e = errno;
    close(fd);
    /* Not there yet, or a stale socket file the server is about to replace. */
    if ((e == ENOENT || e == ECONNREFUSED) && now_s() < deadline) {
      nanosleep(&(struct timespec){.tv_nsec = 20 * 1000 * 1000}, NULL);
      continue;
    }
    if (!soft) die(3, "cannot connect to %s: %s", path, strerror(e));
    fprintf(stderr, "%s: cannot connect to %s: %s\n", prog, path, strerror(e));
    return -1;
  }
}

/* ---- the keys and values of fill, churn and check ------------------------------ */

enum kind { FILL, CHURN };

static int is_del(enum kind k, unsigned round, uint64_t i) {
  return k == CHURN && (i + round) % 5 == 0;
}

static int value_of(unsigned round, uint64_t i, char *buf, size_t cap) {
  int n = snprintf(buf, cap, "r%u-value-%llu-", round, (unsigned long long)i);
  for (uint64_t j = 0; j < i % 16 && (size_t)n + 1 < cap; j++) buf[n++] = 'x';
  buf[n] = '\0';
  return n;
}

/* ---- a pipelined session ------------------------------------------------------------
 * Requests come from gen() (or stdin) and are written while replies are read,
 * so neither side's socket buffer can fill up and stall the other. */

struct session {
  /* Writes request j (with its newline) into buf; returns its length, or 0
   * when there are no more.  NULL: the requests come from stdin. */
  size_t (*gen)(struct session *, uint64_t j, char *buf, size_t cap);
  /* Called with reply j (without its newline). */
  void (*on_reply)(struct session *, uint64_t j, const char *line, size_t len);
  uint64_t sent, replied;
  int closed_early; /* the server closed the connection before every reply */
  /* for the commands */
  enum kind kind;
  unsigned round;
  uint64_t n;
  char **argv;
  uint64_t bad;     /* unexpected replies */
  uint64_t ok;      /* OK or NOT_FOUND replies to fill/churn */
  uint64_t err;     /* ERR replies in request mode */
};

static void run(struct session *s, int fd) {
  static char wbuf[WBUF], rbuf[RBUF];
  size_t wlen = 0, woff = 0, rlen = 0;
  int src_done = 0, shut = 0, stdin_partial = 0;
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  for (;;) {
    /* Refill the write buffer from the generator. */
    while (s->gen && !src_done && WBUF - wlen >= LINE_MAX_BYTES + 2) {
      size_t len = s->gen(s, s->sent, wbuf + wlen, WBUF - wlen);
      if (len == 0) {
        src_done = 1;
        break;
      }
      wlen += len;
      s->sent++;
    }
    if (src_done && woff == wlen && !shut) {
      /* Tells the server there is nothing more: it closes once the replies
       * are out. */
      shutdown(fd, SHUT_WR);
      shut = 1;
    }
    if (src_done && s->replied == s->sent) return;

    struct pollfd pf[2] = {{.fd = fd, .events = POLLIN}, {.fd = 0, .events = 0}};
    if (woff < wlen) pf[0].events |= POLLOUT;
    nfds_t np = 1;
    if (!s->gen && !src_done && WBUF - wlen >= LINE_MAX_BYTES + 2) {
      pf[1].events = POLLIN;
      np = 2;
    }
    if (poll(pf, np, -1) < 0) {
      if (errno == EINTR) continue;
      die(3, "poll: %s", strerror(errno));
    }
    if (np == 2 && (pf[1].revents & (POLLIN | POLLHUP | POLLERR))) {
      ssize_t r = read(0, wbuf + wlen, WBUF - wlen - 1);
      if (r < 0 && errno != EINTR && errno != EAGAIN) die(3, "reading stdin: %s", strerror(errno));
      if (r == 0) {
        if (stdin_partial) { /* a last line without its newline */
          wbuf[wlen++] = '\n';
          s->sent++;
        }
        src_done = 1;
      }
      for (ssize_t i = 0; i < r; i++) {
        stdin_partial = wbuf[wlen + (size_t)i] != '\n';
        if (!stdin_partial) s->sent++;
      }
      if (r > 0) wlen += (size_t)r;
    }
    if (pf[0].revents & POLLOUT) {
      ssize_t w = send(fd, wbuf + woff, wlen - woff, MSG_NOSIGNAL);
      if (w < 0 && errno != EINTR && errno != EAGAIN) {
        s->closed_early = 1; /* the server is gone: what it answered is counted */
        return;
      }
      if (w > 0) woff += (size_t)w;
      if (woff == wlen) woff = wlen = 0;
      if (woff > WBUF / 2) {
        memmove(wbuf, wbuf + woff, wlen - woff);
        wlen -= woff;
        woff = 0;
      }
    }
    if (pf[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t r = read(fd, rbuf + rlen, RBUF - rlen);
      if (r < 0 && errno != EINTR && errno != EAGAIN) {
        s->closed_early = 1;
        return;
      }
      if (r == 0) {
        if (s->replied < s->sent || !src_done) s->closed_early = 1;
        return;
      }
      if (r > 0) rlen += (size_t)r;
      size_t start = 0;
      char *nl;
      while ((nl = memchr(rbuf + start, '\n', rlen - start)) != NULL) {
        s->on_reply(s, s->replied++, rbuf + start, (size_t)(nl - (rbuf + start)));
        start = (size_t)(nl - rbuf) + 1;
      }
      if (start == 0 && rlen == RBUF) die(3, "a reply longer than %u bytes", RBUF);
      memmove(rbuf, rbuf + start, rlen - start);
      rlen -= start;
    }
  }
}

/* ---- request mode ------------------------------------------------------------------ */

static size_t gen_args(struct session *s, uint64_t j, char *buf, size_t cap) {
  const char *a = s->argv[j];
  if (a == NULL) return 0;
  size_t n = strlen(a);
  if (n + 2 > cap || memchr(a, '\n', n)) die(2, "request too long or with a newline: %.40s", a);
  memcpy(buf, a, n);
  buf[n] = '\n';
  return n + 1;
}

static void print_reply(struct session *s, uint64_t j, const char *line, size_t len) {
  (void)j;
  if (len >= 3 && memcmp(line, "ERR", 3) == 0) s->err++;
  fwrite(line, 1, len, stdout);
  putchar('\n');
}

/* ---- fill and churn --------------------------------------------------------------- */

static size_t gen_fill(struct session *s, uint64_t j, char *buf, size_t cap) {
  if (j >= s->n) return 0;
  if (is_del(s->kind, s->round, j))
    return (size_t)snprintf(buf, cap, "DEL key:%llu\n", (unsigned long long)j);
  int n = snprintf(buf, cap, "SET key:%llu ", (unsigned long long)j);
  n += value_of(s->round, j, buf + n, cap - (size_t)n - 1);
  buf[n++] = '\n';
  return (size_t)n;
}

static void on_fill_reply(struct session *s, uint64_t j, const char *line, size_t len) {
  int del = is_del(s->kind, s->round, j);
  if ((len == 2 && memcmp(line, "OK", 2) == 0) || (del && len == 9 && memcmp(line, "NOT_FOUND", 9) == 0)) {
    s->ok++;
    return;
  }
  if (s->bad++ < 5)
    fprintf(stderr, "%s: %s key:%llu: unexpected reply '%.*s'\n", prog, del ? "DEL" : "SET",
            (unsigned long long)j, (int)(len < 80 ? len : 80), line);
}

/* ---- check ------------------------------------------------------------------------ */

struct round {
  enum kind kind;
  uint64_t acked;
};
static struct round rounds[MAX_ROUNDS + 1]; /* 1-based */
static unsigned nrounds;
static uint64_t present, absent, count_reply = UINT64_MAX;

static size_t gen_check(struct session *s, uint64_t j, char *buf, size_t cap) {
  if (j < s->n) return (size_t)snprintf(buf, cap, "GET key:%llu\n", (unsigned long long)j);
  if (j == s->n) return (size_t)snprintf(buf, cap, "COUNT\n");
  return 0;
}

static void check_bad(struct session *s, uint64_t i, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void check_bad(struct session *s, uint64_t i, const char *fmt, ...) {
  if (s->bad++ >= 10) return;
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "%s: key:%llu: ", prog, (unsigned long long)i);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

static void on_check_reply(struct session *s, uint64_t i, const char *line, size_t len) {
  if (i == s->n) {
    if (len > 6 && memcmp(line, "COUNT ", 6) == 0)
      count_reply = strtoull(line + 6, NULL, 10);
    else
      check_bad(s, i, "COUNT: unexpected reply '%.*s'", (int)(len < 80 ? len : 80), line);
    return;
  }
  /* m: the last round that surely wrote key i (its request was acknowledged).
   * The key now holds what round m or a later round did to it. */
  unsigned m = 0;
  for (unsigned q = 1; q <= nrounds; q++)
    if (i < rounds[q].acked) m = q;
  unsigned from = m ? m : 1;
  if (len == 9 && memcmp(line, "NOT_FOUND", 9) == 0) {
    absent++;
    int may = m == 0;
    for (unsigned q = from; q <= nrounds && !may; q++) may = is_del(rounds[q].kind, q, i);
    if (!may)
      check_bad(s, i, "NOT_FOUND, but round %u's SET of it was acknowledged and no later round deletes it", m);
    return;
  }
  if (len < 6 || memcmp(line, "VALUE ", 6) != 0) {
    check_bad(s, i, "unexpected reply '%.*s'", (int)(len < 80 ? len : 80), line);
    return;
  }
  present++;
  const char *v = line + 6;
  size_t vlen = len - 6;
  char want[128];
  for (unsigned q = from; q <= nrounds; q++) {
    if (is_del(rounds[q].kind, q, i)) continue;
    size_t n = (size_t)value_of(q, i, want, sizeof want);
    if (n == vlen && memcmp(v, want, n) == 0) return;
  }
  if (m == 0)
    check_bad(s, i, "holds '%.*s', which no round wrote", (int)(vlen < 80 ? vlen : 80), v);
  else
    check_bad(s, i, "holds '%.*s', not what round %u (acknowledged) or a later round wrote",
              (int)(vlen < 80 ? vlen : 80), v, m);
}

/* ---- main ------------------------------------------------------------------------------ */

static uint64_t number(const char *a, const char *what) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(a, &end, 10);
  if (errno || end == a || *end || a[0] == '-') die(2, "%s: not a number: %s", what, a);
  return v;
}

static void usage(void) {
  fprintf(stderr,
          "usage: %s [-w SECONDS] SOCKET                  requests from stdin\n"
          "       %s [-w SECONDS] SOCKET REQUEST...       e.g. 'SET k v' 'GET k' COUNT\n"
          "       %s [-w SECONDS] SOCKET fill N [ROUND]   SET key:0..key:N-1, pipelined\n"
          "       %s [-w SECONDS] SOCKET churn N ROUND    the same, DEL of every fifth key\n"
          "       %s [-w SECONDS] SOCKET check N KIND:ACKED...  verify after rounds of fill/churn\n",
          prog, prog, prog, prog, prog);
  exit(2);
}

int main(int argc, char **argv) {
  double wait_s = 0;
  int a = 1;
  if (a + 1 < argc && strcmp(argv[a], "-w") == 0) {
    char *end;
    wait_s = strtod(argv[a + 1], &end);
    if (end == argv[a + 1] || *end || wait_s < 0) usage();
    a += 2;
  }
  if (a >= argc || argv[a][0] == '-') usage();
  const char *path = argv[a++];
  struct session s = {0};
  const char *cmd = a < argc ? argv[a] : NULL;
  double t0 = now_s();

  if (cmd && (strcmp(cmd, "fill") == 0 || strcmp(cmd, "churn") == 0)) {
    int churn = cmd[0] == 'c';
    if (argc - a != (churn ? 3 : 2) && !(argc - a == 3 && !churn)) usage();
    prog = churn ? "churn" : "fill";
    s.kind = churn ? CHURN : FILL;
    s.n = number(argv[a + 1], "N");
    s.round = argc - a == 3 ? (unsigned)number(argv[a + 2], "ROUND") : 1;
    if (s.round == 0 || s.round > MAX_ROUNDS) die(2, "ROUND must be 1 to %d", MAX_ROUNDS);
    s.gen = gen_fill;
    s.on_reply = on_fill_reply;
    /* A server killed before we connect got nothing: 0 replies, said as
     * for one killed later, so a script reads the count the same way. */
    int fd = connect_to(path, wait_s, 1);
    if (fd >= 0)
      run(&s, fd);
    else
      s.closed_early = 1;
    double dt = now_s() - t0;
    printf("%s: %llu requests, %llu replies (%llu OK", prog, (unsigned long long)s.n,
           (unsigned long long)s.replied, (unsigned long long)s.ok);
    if (s.bad) printf(", %llu unexpected", (unsigned long long)s.bad);
    if (s.closed_early)
      printf("): the server %s after %.2f s\n", s.sent ? "closed the connection" : "was not there",
             dt);
    else
      printf(") in %.2f s\n", dt);
    return s.closed_early ? 3 : s.bad ? 1 : 0;
  }

  if (cmd && strcmp(cmd, "check") == 0) {
    prog = "check";
    if (argc - a < 3) usage();
    s.n = number(argv[a + 1], "N");
    for (int k = a + 2; k < argc; k++) {
      if (nrounds == MAX_ROUNDS) die(2, "at most %d rounds", MAX_ROUNDS);
      struct round *r = &rounds[++nrounds];
      if (strncmp(argv[k], "fill:", 5) == 0) {
        r->kind = FILL;
        r->acked = number(argv[k] + 5, "ACKED");
      } else if (strncmp(argv[k], "churn:", 6) == 0) {
        r->kind = CHURN;
        r->acked = number(argv[k] + 6, "ACKED");
      } else {
        die(2, "a round is fill:ACKED or churn:ACKED, not %s", argv[k]);
      }
    }
    s.gen = gen_check;
    s.on_reply = on_check_reply;
    run(&s, connect_to(path, wait_s, 0));
    if (s.closed_early) die(3, "the server closed the connection after %llu replies", (unsigned long long)s.replied);
    if (count_reply != present)
      check_bad(&s, s.n, "COUNT says %llu, but %llu keys were found", (unsigned long long)count_reply,
                (unsigned long long)present);
    if (s.bad) {
      printf("check: %llu keys: %llu problem(s)\n", (unsigned long long)s.n, (unsigned long long)s.bad);
      return 1;
    }
    printf("check: %llu keys read back in %.2f s: %llu present, %llu absent, each as the "
           "acknowledged writes say; COUNT %llu agrees\n",
           (unsigned long long)s.n, now_s() - t0, (unsigned long long)present,
           (unsigned long long)absent, (unsigned long long)count_reply);
    return 0;
  }

  /* Requests from the arguments, or from stdin. */
  s.argv = argv + a;
  s.gen = cmd ? gen_args : NULL;
  s.on_reply = print_reply;
  run(&s, connect_to(path, wait_s, 0));
  fflush(stdout);
  if (s.closed_early)
    die(3, "the server closed the connection after %llu of %llu replies", (unsigned long long)s.replied,
        (unsigned long long)s.sent);
  return s.err ? 1 : 0;
}
