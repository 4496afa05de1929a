/* Shared helpers of the libshmheap Check suites; see testutil.h. */
#include "testutil.h"
#include <check.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/shm.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "format.h" /* struct shm_header: where the heap name is stored */

extern char **environ;

static pid_t runner_pid;
static char name_prefix[64];

/* A runner ended by SIGTERM (timeout(1), a CI job cancelled), SIGINT or
 * SIGHUP removes its segments first; only SIGKILL leaves them behind.  The
 * cleanup is not async-signal-safe, but the process is ending anyway: at
 * worst a segment stays, as it would without the handler.  Test processes
 * forked from the runner inherit the handler and just die. */
static void on_term(int sig) {
  signal(sig, SIG_DFL);
  if (getpid() == runner_pid) tu_cleanup();
  raise(sig);
}

void tu_init(void) {
  runner_pid = getpid();
  snprintf(name_prefix, sizeof name_prefix, "shmheap-test-%d", (int)runner_pid);
  static const int sigs[] = {SIGTERM, SIGINT, SIGHUP};
  for (unsigned i = 0; i < sizeof sigs / sizeof sigs[0]; i++) signal(sigs[i], on_term);
}

static pid_t runner(void) {
  if (!runner_pid) tu_init();
  return runner_pid;
}

int tu_key(int n) {
  return (int)(TU_KEY_PREFIX | (((unsigned)runner() & 0xffffu) << 8) | ((unsigned)n & 0xffu));
}

int tu_key_high(int n) { return (int)((unsigned)tu_key(n) | 0x80000000u); }

const char *tu_name_prefix(void) {
  runner();
  return name_prefix;
}

const char *tu_name(int n, char *buf, size_t len) {
  snprintf(buf, len, "%s-%d", tu_name_prefix(), n);
  return buf;
}

int tu_rm_key(int key) {
  int id = shmget((key_t)key, 0, 0);
  if (id < 0) return 0;
  return shmctl(id, IPC_RMID, NULL) == 0;
}

struct segment {
  long long key;
  int shmid;
  size_t size;
  pid_t cpid; /* the creator */
};

/* Calls fn for each segment in /proc/sysvipc/shm; returns the sum of what it
 * returned. */
static int each_segment(int (*fn)(const struct segment *seg, void *arg), void *arg) {
  FILE *f = fopen("/proc/sysvipc/shm", "re");
  if (!f) return 0;
  char line[512];
  int n = 0;
  if (!fgets(line, sizeof line, f)) { fclose(f); return 0; } /* header */
  while (fgets(line, sizeof line, f)) {
    struct segment seg;
    int cpid;
    unsigned perms;
    unsigned long long size;
    if (sscanf(line, "%lld %d %o %llu %d", &seg.key, &seg.shmid, &perms, &size, &cpid) != 5) continue;
    seg.size = (size_t)size;
    seg.cpid = (pid_t)cpid;
    n += fn(&seg, arg);
  }
  fclose(f);
  return n;
}

static int is_ours(int shmid, long long key, size_t size) {
  unsigned k = (unsigned)key;
  /* bit 31 aside: tu_key_high's keys are ours too */
  if ((k & 0x7f000000u) == TU_KEY_PREFIX && ((k >> 8) & 0xffffu) == ((unsigned)runner() & 0xffffu))
    return 1;
  if (size < sizeof(struct shm_header)) return 0;
  void *p = shmat(shmid, NULL, SHM_RDONLY);
  if (p == (void *)-1) return 0;
  const struct shm_header *h = p;
  size_t plen = strlen(tu_name_prefix());
  int ours = strncmp(h->name, tu_name_prefix(), plen) == 0 && h->name[plen] == '-';
  shmdt(p);
  return ours;
}

static int rm_if_ours(const struct segment *seg, void *arg) {
  (void)arg;
  if (!is_ours(seg->shmid, seg->key, seg->size)) return 0;
  return shmctl(seg->shmid, IPC_RMID, NULL) == 0;
}

static int count_if_ours(const struct segment *seg, void *arg) {
  (void)arg;
  return is_ours(seg->shmid, seg->key, seg->size);
}

int tu_run_suite(void *s) {
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  tu_cleanup();
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

int tu_cleanup(void) {
  int n = 0;
  for (int i = 0; i < 256; i++) n += tu_rm_key(tu_key(i)) + tu_rm_key(tu_key_high(i));
  n += each_segment(rm_if_ours, NULL);
  return n;
}

void tu_runner_cleanup(void) { tu_cleanup(); }

int tu_count_leftover(void) { return each_segment(count_if_ours, NULL); }

struct by_pid {
  pid_t pid;
  int private_only, remove;
};

static int match_pid(const struct segment *seg, void *arg) {
  const struct by_pid *q = arg;
  if (seg->cpid != q->pid || (q->private_only && seg->key != 0)) return 0;
  if (q->remove) shmctl(seg->shmid, IPC_RMID, NULL);
  return 1;
}

int tu_segments_by_pid(pid_t pid, int private_only, int remove) {
  struct by_pid q = {pid, private_only, remove};
  return each_segment(match_pid, &q);
}

const char *tu_builddir(void) {
  static char dir[PATH_MAX];
  if (dir[0]) return dir;
  const char *e = getenv("top_builddir");
  if (e && *e) {
    if (e[0] == '/') {
      snprintf(dir, sizeof dir, "%s", e);
    } else {
      char cwd[PATH_MAX];
      if (!getcwd(cwd, sizeof cwd)) cwd[0] = 0;
      snprintf(dir, sizeof dir, "%.2000s/%.2000s", cwd, e);
    }
    return dir;
  }
  /* <top>/tests/.libs/lt-check_x (libtool) or <top>/tests/check_x */
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) return strcpy(dir, "..");
  exe[n] = 0;
  char *s = strrchr(exe, '/');
  if (s) *s = 0;
  size_t l = strlen(exe);
  if (l >= 6 && strcmp(exe + l - 6, "/.libs") == 0) exe[l - 6] = 0;
  s = strrchr(exe, '/');
  if (s) *s = 0;
  snprintf(dir, sizeof dir, "%s", exe);
  return dir;
}

const char *tu_lib(void) {
  static char lib[PATH_MAX];
  if (lib[0]) return lib;
  const char *e = getenv("SHMHEAP_LIB");
  if (e && *e)
    snprintf(lib, sizeof lib, "%s", e);
  else
    snprintf(lib, sizeof lib, "%s/src/.libs/libshmheap.so", tu_builddir());
  return lib;
}

const char *tu_bpath(const char *rel, char *buf, size_t len) {
  snprintf(buf, len, "%s/%s", tu_builddir(), rel);
  return buf;
}

long long tu_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int tu_maps_have_key(pid_t pid, int key) {
  char path[48], want[24], line[512];
  snprintf(path, sizeof path, "/proc/%d/maps", (int)pid);
  snprintf(want, sizeof want, "/SYSV%08x", (unsigned)key);
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  int found = 0;
  while (!found && fgets(line, sizeof line, f)) found = strstr(line, want) != NULL;
  fclose(f);
  return found;
}

int tu_wait_timeout(pid_t pid, int *status, int timeout_ms) {
  long long end = tu_now_ms() + timeout_ms;
  for (;;) {
    pid_t r = waitpid(pid, status, WNOHANG);
    if (r == pid) return 0;
    if (r < 0 && errno != EINTR) return -1;
    if (tu_now_ms() >= end) {
      kill(pid, SIGKILL);
      while (waitpid(pid, status, 0) < 0 && errno == EINTR) {
      }
      return -1;
    }
    struct timespec ts = {0, 2 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
}

static int drop_var(const char *e) {
  return strncmp(e, "LD_PRELOAD=", 11) == 0 || strncmp(e, "SHMHEAP_", 8) == 0;
}

char **tu_env(const char *const env_add[], int preload, char *pre, size_t prelen) {
  size_t n = 0, m = 0, k = 0;
  while (environ[n]) n++;
  while (env_add && env_add[m]) m++;
  char **envp = calloc(n + m + 2, sizeof *envp);
  if (!envp) return NULL;
  for (size_t i = 0; i < n; i++)
    if (!drop_var(environ[i])) envp[k++] = environ[i];
  if (preload) {
    snprintf(pre, prelen, "LD_PRELOAD=%s", tu_lib());
    envp[k++] = pre;
  }
  for (size_t i = 0; i < m; i++) envp[k++] = (char *)env_add[i];
  envp[k] = NULL;
  return envp;
}

int tu_run(const char *const argv[], const char *const env_add[], int preload,
           int timeout_ms, struct tu_result *r) {
  memset(r, 0, offsetof(struct tu_result, out));
  r->out[0] = r->err[0] = 0;
  char pre[PATH_MAX + 16];
  char **envp = tu_env(env_add, preload, pre, sizeof pre);

  int po[2], pe[2];
  if (pipe2(po, O_CLOEXEC) || pipe2(pe, O_CLOEXEC)) {
    free(envp);
    return r->code = -2;
  }
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0) {
    free(envp);
    return r->code = -2;
  }
  if (pid == 0) {
    dup2(po[1], 1);
    dup2(pe[1], 2);
    int nul = open("/dev/null", O_RDONLY);
    if (nul >= 0) dup2(nul, 0);
    execvpe(argv[0], (char *const *)argv, envp);
    dprintf(2, "tu_run: exec %s: %s\n", argv[0], strerror(errno));
    _exit(127);
  }
  free(envp);
  r->pid = pid;
  close(po[1]);
  close(pe[1]);
  struct pollfd fds[2] = {{po[0], POLLIN, 0}, {pe[0], POLLIN, 0}};
  int open_fds = 2;
  long long end = tu_now_ms() + timeout_ms;
  while (open_fds > 0) {
    long long left = end - tu_now_ms();
    if (left <= 0) {
      r->timed_out = 1;
      kill(pid, SIGKILL);
      break;
    }
    int pr = poll(fds, 2, (int)(left > 1000 ? 1000 : left));
    if (pr < 0 && errno != EINTR) break;
    for (int i = 0; i < 2; i++) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      char *buf = i ? r->err : r->out;
      size_t *len = i ? &r->errlen : &r->outlen;
      char tmp[4096];
      ssize_t got = read(fds[i].fd, tmp, sizeof tmp);
      if (got <= 0) {
        close(fds[i].fd);
        fds[i].fd = -1;
        open_fds--;
        continue;
      }
      size_t room = sizeof r->out - 1 - *len;
      size_t c = (size_t)got < room ? (size_t)got : room;
      memcpy(buf + *len, tmp, c);
      *len += c;
      buf[*len] = 0;
    }
  }
  for (int i = 0; i < 2; i++)
    if (fds[i].fd >= 0) close(fds[i].fd);
  long long left = end - tu_now_ms();
  if (tu_wait_timeout(pid, &r->status, r->timed_out ? 1000 : (int)(left > 0 ? left : 1)) < 0)
    r->timed_out = 1;
  if (r->timed_out) return r->code = -1;
  r->exited = WIFEXITED(r->status);
  r->code = r->exited ? WEXITSTATUS(r->status)
                      : WIFSIGNALED(r->status) ? 128 + WTERMSIG(r->status) : -3;
  return r->code;
}

int tu_count_lines(const char *s) {
  int n = 0;
  const char *p = s;
  while (*p) {
    const char *nl = strchr(p, '\n');
    n++;
    if (!nl) break;
    p = nl + 1;
  }
  return n;
}

int tu_find_line(const char *s, const char *needle, char *line, size_t len) {
  const char *p = s;
  while (*p) {
    const char *nl = strchr(p, '\n');
    size_t l = nl ? (size_t)(nl - p) : strlen(p);
    char tmp[4096];
    size_t c = l < sizeof tmp - 1 ? l : sizeof tmp - 1;
    memcpy(tmp, p, c);
    tmp[c] = 0;
    if (strstr(tmp, needle)) {
      if (line && len) snprintf(line, len, "%s", tmp);
      return 1;
    }
    if (!nl) break;
    p = nl + 1;
  }
  return 0;
}

int tu_field(const char *line, const char *name, unsigned long long *val) {
  size_t nl = strlen(name);
  const char *p = line;
  while ((p = strstr(p, name)) != NULL) {
    if ((p == line || p[-1] == ' ' || p[-1] == '\t' || p[-1] == ',' || p[-1] == '(') &&
        p[nl] == '=') {
      char *end;
      errno = 0;
      *val = strtoull(p + nl + 1, &end, 0);
      return end != p + nl + 1 && errno == 0;
    }
    p += nl;
  }
  return 0;
}

int tu_maps_line(const void *addr, char *line, size_t len) {
  FILE *f = fopen("/proc/self/maps", "re");
  if (!f) return 0;
  char buf[1024];
  int found = 0;
  uintptr_t a = (uintptr_t)addr;
  while (fgets(buf, sizeof buf, f)) {
    unsigned long lo, hi;
    if (sscanf(buf, "%lx-%lx", &lo, &hi) != 2) continue;
    if (a >= lo && a < hi) {
      size_t l = strlen(buf);
      if (l && buf[l - 1] == '\n') buf[l - 1] = 0;
      if (line && len) snprintf(line, len, "%s", buf);
      found = 1;
      break;
    }
  }
  fclose(f);
  return found;
}

int tu_same_mapping(const void *a, const void *b) {
  char la[1024], lb[1024];
  if (!tu_maps_line(a, la, sizeof la) || !tu_maps_line(b, lb, sizeof lb)) return 0;
  return strcmp(la, lb) == 0;
}

long tu_status_kb(const char *field) {
  FILE *f = fopen("/proc/self/status", "re");
  if (!f) return -1;
  char buf[256];
  size_t fl = strlen(field);
  long v = -1;
  while (fgets(buf, sizeof buf, f)) {
    if (strncmp(buf, field, fl) == 0 && buf[fl] == ':') {
      v = strtol(buf + fl + 1, NULL, 10);
      break;
    }
  }
  fclose(f);
  return v;
}

uint64_t tu_hash(const void *p, size_t n) {
  const unsigned char *c = p;
  uint64_t h = 1469598103934665603ULL;
  /* 8 bytes at a time keeps hashing a 16 MiB segment fast */
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    memcpy(&w, c + i, 8);
    h = (h ^ w) * 1099511628211ULL;
  }
  for (; i < n; i++) h = (h ^ c[i]) * 1099511628211ULL;
  return h;
}

/* Hashed in a child: the segment's last attacher (lpid) is then a process
 * that is gone, not the suite, which is an ancestor of the programs it runs
 * next (the library takes a key inherited from another user's heap's
 * processes as not meant for it: check_secure t_inherited_by_other_user). */
uint64_t tu_shm_hash(int shmid, size_t *size) {
  struct shmid_ds ds;
  if (shmctl(shmid, IPC_STAT, &ds) < 0) return 0;
  int fd[2];
  if (pipe(fd) < 0) return 0;
  pid_t pid = fork();
  if (pid == 0) {
    close(fd[0]);
    uint64_t h = 0;
    void *p = shmat(shmid, NULL, SHM_RDONLY);
    if (p != (void *)-1) {
      h = tu_hash(p, ds.shm_segsz);
      shmdt(p);
    }
    _exit(write(fd[1], &h, sizeof h) == (ssize_t)sizeof h ? 0 : 1);
  }
  close(fd[1]);
  uint64_t h = 0;
  if (pid < 0 || read(fd[0], &h, sizeof h) != (ssize_t)sizeof h) h = 0;
  close(fd[0]);
  if (pid > 0) waitpid(pid, NULL, 0);
  if (h && size) *size = ds.shm_segsz;
  return h;
}

void tu_background_running(void) {
  char *p = malloc((size_t)16 << 20);
  if (p) {
    memset(p, 1, (size_t)16 << 20); /* dirty: free pages that hold memory */
    free(p);
  }
}
