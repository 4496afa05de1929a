/* The OS layer (os.h): thin, honest wrappers, so that the rest of the
 * library names what it asks of the kernel and the kernel is asked in one
 * place.  Nothing here allocates. */
#include <errno.h>
#include <link.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <linux/futex.h>
#include <linux/membarrier.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/auxv.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/xattr.h>

#include "os.h"

#ifndef SHM_NORESERVE
#define SHM_NORESERVE 010000
#endif
#ifndef MADV_REMOVE
#define MADV_REMOVE 9
#endif
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#define MADV_POPULATE_WRITE 23
#endif

uint64_t os_clock_ns(clockid_t c) {
  struct timespec ts;
  clock_gettime(c, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t os_random64(void) {
  uint64_t r;
  if (syscall(SYS_getrandom, &r, sizeof r, 1 /* GRND_NONBLOCK */) == (long)sizeof r) return r;
  r = os_clock_ns(CLOCK_MONOTONIC) ^ ((uint64_t)syscall(SYS_getpid) << 32) ^ (uint64_t)(uintptr_t)&r;
  return r * 0x9e3779b97f4a7c15ULL;
}

pid_t os_getpid(void) { return (pid_t)syscall(SYS_getpid); }
pid_t os_gettid(void) { return (pid_t)syscall(SYS_gettid); }

size_t os_read_file(const char *path, char *buf, size_t len) {
  size_t n = 0;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    ssize_t r;
    while (n < len - 1 && (r = read(fd, buf + n, len - 1 - n)) > 0) n += (size_t)r;
    close(fd);
  }
  buf[n] = 0;
  return n;
}

int os_proc_stat(pid_t pid, pid_t *ppid, uint64_t *start) {
  char path[40], buf[1024];
  os_fmt(path, sizeof path, "/proc/%d/stat", (int)pid);
  if (!os_read_file(path, buf, sizeof buf)) return 0;
  /* The command name (field 2) may hold spaces and parentheses: the fields
   * that follow start after its last ')'. */
  char *p = NULL;
  for (char *q = buf; *q; q++)
    if (*q == ')') p = q;
  if (!p) return 0;
  char state = p[1] == ' ' ? p[2] : 0;
  unsigned long long v[20];
  unsigned nf = 0;
  for (p++; *p && nf < 20;) {
    while (*p == ' ') p++;
    if (!*p) break;
    unsigned long long x = 0;
    int num = *p >= '0' && *p <= '9';
    while (*p && *p != ' ') {
      if (num && *p >= '0' && *p <= '9') x = x * 10 + (unsigned)(*p - '0');
      p++;
    }
    v[nf++] = x;
  }
  if (nf < 20) return 0;
  /* v[0] is field 3, the state (its letter was not counted as a number):
   * ppid is field 4, starttime field 22. */
  if (state == 'Z' || state == 'X' || state == 'x') return 0;
  if (ppid) *ppid = (pid_t)v[1];
  if (start) *start = v[19];
  return 1;
}

uint64_t os_proc_started(pid_t pid) {
  uint64_t ticks;
  long hz = sysconf(_SC_CLK_TCK);
  if (pid <= 0 || hz <= 0 || !os_proc_stat(pid, NULL, &ticks)) return 0;
  /* starttime counts clock ticks since boot on the boot-time clock (which
   * goes on during suspend); the boot's epoch time is the difference of
   * the two clocks now. */
  uint64_t now = os_clock_ns(CLOCK_REALTIME) / 1000000000u, up = os_clock_ns(CLOCK_BOOTTIME) / 1000000000u;
  uint64_t since = ticks / (uint64_t)hz;
  return now > up && up >= since ? now - up + since : 0;
}

const char *os_exe_of(pid_t pid, char *buf, size_t len) {
  char path[40];
  os_fmt(path, sizeof path, "/proc/%d/exe", (int)pid);
  ssize_t r = readlink(path, buf, len - 1);
  if (r <= 0) return NULL;
  buf[r] = 0;
  /* A program whose file was replaced (a package upgrade) while it runs is
   * still that program. */
  static const char deleted[] = " (deleted)";
  if ((size_t)r >= sizeof deleted && !strcmp(buf + r - (sizeof deleted - 1), deleted)) buf[r - (sizeof deleted - 1)] = 0;
  return buf;
}

static char self_exe[SH_PROGRAM_MAX];

const char *os_self_exe(void) {
  if (!self_exe[0] && !os_exe_of(os_getpid(), self_exe, sizeof self_exe)) memcpy(self_exe, "?", 2);
  return self_exe;
}

const char *os_self_execfn(void) { return (const char *)getauxval(AT_EXECFN); }

int os_same_file(const char *a, const char *b) {
  struct stat sa, sb;
  return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

int os_pid_gone(pid_t pid) { return kill(pid, 0) != 0 && errno == ESRCH; }

/* ---- System V shared memory ------------------------------------------------ */

int os_shm_find(int32_t key) { return shmget((key_t)key, 0, 0); }

/* SHM_NORESERVE: a 64 GiB heap reserves no swap; pages are charged as they
 * are touched. */
int os_shm_create(int32_t key, size_t size, unsigned mode) {
  int flags = IPC_CREAT | SHM_NORESERVE | (int)(mode & 0777);
  if (key != IPC_PRIVATE) flags |= IPC_EXCL;
  return shmget((key_t)key, size, flags);
}

int os_shm_create_hugetlb(int32_t key, size_t size, unsigned mode) {
  int flags = IPC_CREAT | SHM_HUGETLB | (int)(mode & 0777);
  if (key != IPC_PRIVATE) flags |= IPC_EXCL;
  return shmget((key_t)key, size, flags);
}

/* Streams /proc/self/smaps (one mapping's entry can sit after many others)
 * to the entry of the mapping that starts at addr, and reads its
 * KernelPageSize. */
int os_mapping_is_hugetlb(const void *addr) {
  char want[24], buf[4096], line[256];
  os_fmt(want, sizeof want, "%lx-", (unsigned long)(uintptr_t)addr);
  int fd = open("/proc/self/smaps", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  size_t ll = 0, wl = strlen(want);
  int in = 0, found = 0;
  ssize_t n;
  while (!found && (n = read(fd, buf, sizeof buf)) > 0)
    for (ssize_t i = 0; i < n && !found; i++) {
      if (buf[i] != '\n') {
        if (ll < sizeof line - 1) line[ll++] = buf[i];
        continue;
      }
      line[ll] = 0;
      /* A mapping's first line starts with its range: hex digits, '-'. */
      if ((line[0] >= '0' && line[0] <= '9') || (line[0] >= 'a' && line[0] <= 'f')) {
        if (in) found = 1; /* past its entry, which had no page size */
        in = !strncmp(line, want, wl);
      } else if (in && !strncmp(line, "KernelPageSize:", 15)) {
        unsigned long long kb = 0;
        for (const char *p = line + 15; *p; p++)
          if (*p >= '0' && *p <= '9') kb = kb * 10 + (unsigned)(*p - '0');
        found = 1 + (kb >= 2048);
      }
      ll = 0;
    }
  close(fd);
  return found == 2;
}

long long os_meminfo(const char *field) {
  static char buf[8192];
  os_read_file("/proc/meminfo", buf, sizeof buf);
  size_t fl = strlen(field);
  for (char *p = buf; *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : p + strlen(p))
    if (!strncmp(p, field, fl) && p[fl] == ':') {
      long long v = 0;
      for (p += fl + 1; *p == ' '; p++) {}
      for (; *p >= '0' && *p <= '9'; p++) v = v * 10 + (*p - '0');
      return v;
    }
  return -1;
}

void *os_shm_attach(int id, void *addr, int readonly) {
  return shmat(id, addr, readonly ? SHM_RDONLY : 0);
}

void *os_shm_remap(int id, void *addr) { return shmat(id, addr, SHM_REMAP); }

int os_write_into(pid_t pid, const void *p, size_t len) {
  while (len) {
    /* One call moves at most about 2 GiB (MAX_RW_COUNT): go on from there. */
    struct iovec io = {(void *)p, len};
    ssize_t n = process_vm_writev(pid, &io, 1, &io, 1, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (n == 0) {
      errno = EFAULT;
      return -1;
    }
    p = (const char *)p + n;
    len -= (size_t)n;
  }
  return 0;
}

int os_shm_detach(const void *p) { return shmdt(p); }

int os_shm_stat(int id, struct shmid_ds *ds) { return shmctl(id, IPC_STAT, ds); }

int os_shm_remove(int id) { return shmctl(id, IPC_RMID, NULL); }

/* ---- memory, futex, membarrier ------------------------------------------------ */

/* On shmem, MADV_DONTNEED only drops this mapping and the pages stay in the
 * segment; MADV_REMOVE frees them. */
void os_release_pages(void *p, size_t len) { madvise(p, len, MADV_REMOVE); }

/* Linux 5.14; older kernels refuse (EINVAL) and the pages fault in one by
 * one.  A page the kernel cannot provide (a hugetlb pool run dry) is an
 * error here, where a touch would be SIGBUS. */
int os_populate(void *p, size_t len, int write) {
  return madvise(p, len, write ? MADV_POPULATE_WRITE : MADV_POPULATE_READ);
}

unsigned os_ncpus(void) {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) < 0) return 1;
  int n = CPU_COUNT(&set);
  return n > 0 ? (unsigned)n : 1;
}

#ifndef MADV_HUGEPAGE
#define MADV_HUGEPAGE 14
#endif

int os_advise_huge(void *p, size_t len) { return madvise(p, len, MADV_HUGEPAGE); }

void os_thp_shmem_policy(char *buf, size_t len) {
  char s[128];
  os_read_file("/sys/kernel/mm/transparent_hugepage/shmem_enabled", s, sizeof s);
  buf[0] = 0;
  char *a = strchr(s, '['), *b = a ? strchr(a, ']') : NULL;
  if (b && (size_t)(b - a - 1) < len) {
    memcpy(buf, a + 1, (size_t)(b - a - 1));
    buf[b - a - 1] = 0;
  }
}
#define SCRATCH_HUGE ((size_t)2 << 20)

/* What a scratch request of len bytes maps: from one huge page up, whole
 * huge pages, so that os_scratch_free unmaps what os_scratch mapped. */
static size_t scratch_len(size_t len) {
  return len < SCRATCH_HUGE ? len : (len + SCRATCH_HUGE - 1) & ~(SCRATCH_HUGE - 1);
}

/* Megabytes of scratch (the reader's, one entry per span descriptor) are
 * asked for as transparent huge pages, populated in one call: the check
 * that runs in the first malloc after an attach would otherwise fault each
 * 4 KiB page in, and then miss the TLB on every random step through them
 * (the class lists' order); on a VM each first touch of a page also costs
 * the hypervisor's shadow fill.  Without THP (disabled, or "never") the
 * advice fails and the pages are small, populated all the same. */
void *os_scratch(size_t len) {
  size_t n = scratch_len(len);
  if (n < SCRATCH_HUGE) {
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
  }
  /* A huge page must be aligned: map one more and trim both ends. */
  char *m = mmap(NULL, n + SCRATCH_HUGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) return NULL;
  char *p = (char *)(((uintptr_t)m + SCRATCH_HUGE - 1) & ~(uintptr_t)(SCRATCH_HUGE - 1));
  if (p > m) munmap(m, (size_t)(p - m));
  munmap(p + n, (size_t)(m + SCRATCH_HUGE - p));
  madvise(p, n, MADV_HUGEPAGE);
  madvise(p, n, MADV_POPULATE_WRITE);
  return p;
}

void os_scratch_free(void *p, size_t len) {
  if (p) munmap(p, scratch_len(len));
}

void os_futex_wait(_Atomic int *w, int val) {
  syscall(SYS_futex, w, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

void os_futex_wait_ms(_Atomic int *w, int val, uint64_t ms) {
  struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
  syscall(SYS_futex, w, FUTEX_WAIT_PRIVATE, val, &ts, NULL, 0);
}

int os_thread_start(void *(*fn)(void *), void *arg) {
  pthread_attr_t a;
  int e = pthread_attr_init(&a);
  if (e) return e;
  pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&a, 64 << 10);
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old); /* the new thread's mask */
  pthread_t id;
  e = pthread_create(&id, &a, fn, arg);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  pthread_attr_destroy(&a);
  return e;
}

#define HELPER_STACK (64u << 10)

int os_helper_start(struct os_helper *t, int (*fn)(void *), void *arg) {
  t->stack = mmap(NULL, HELPER_STACK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  if (t->stack == MAP_FAILED) {
    t->stack = NULL;
    return -1;
  }
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old); /* the helper's mask */
  /* PARENT_SETTID stores the id before either thread runs on, so a join
   * never sees 0 before the end; CHILD_CLEARTID clears it and wakes the
   * word (a futex not private: the kernel's wake is not) once the thread
   * is off its stack. */
  int r = clone(fn, (char *)t->stack + HELPER_STACK,
                CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD | CLONE_SYSVSEM |
                    CLONE_PARENT_SETTID | CLONE_CHILD_CLEARTID,
                arg, (int *)&t->tid, NULL, (int *)&t->tid);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (r < 0) {
    munmap(t->stack, HELPER_STACK);
    t->stack = NULL;
    return -1;
  }
  return 0;
}

void os_helper_join(struct os_helper *t) {
  if (!t->stack) return;
  for (int v; (v = atomic_load(&t->tid)) != 0;) syscall(SYS_futex, &t->tid, FUTEX_WAIT, v, NULL, NULL, 0);
  munmap(t->stack, HELPER_STACK);
  t->stack = NULL;
}

/* The executable segments of libc and the dynamic loader, found once
 * (dl_iterate_phdr allocates nothing). */
#define LIBC_RANGES 8
static struct { uintptr_t lo, hi; } libc_range[LIBC_RANGES];
static _Atomic int libc_ranges = -1;

static int note_libc(struct dl_phdr_info *info, size_t size, void *arg) {
  (void)size;
  int *n = arg;
  const char *name = info->dlpi_name ? strrchr(info->dlpi_name, '/') : NULL;
  name = name ? name + 1 : info->dlpi_name;
  if (!name || (strncmp(name, "libc.so", 7) && strncmp(name, "ld-linux", 8))) return 0;
  for (int i = 0; i < info->dlpi_phnum && *n < LIBC_RANGES; i++) {
    const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
    if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X)) continue;
    libc_range[*n].lo = info->dlpi_addr + ph->p_vaddr;
    libc_range[*n].hi = info->dlpi_addr + ph->p_vaddr + ph->p_memsz;
    ++*n;
  }
  return 0;
}

int os_addr_in_libc(const void *p) {
  int n = atomic_load(&libc_ranges);
  if (n < 0) {
    /* One thread fills the table; while it does, every other caller (a
     * signal handler on the filler's own stack too, which must not wait)
     * is told yes, the answer that defers the work to a later call. */
    int none = -1;
    if (!atomic_compare_exchange_strong(&libc_ranges, &none, -2)) return 1;
    int k = 0;
    dl_iterate_phdr(note_libc, &k);
    atomic_store(&libc_ranges, k);
    n = k;
  }
  for (int i = 0; i < n; i++)
    if ((uintptr_t)p >= libc_range[i].lo && (uintptr_t)p < libc_range[i].hi) return 1;
  return 0;
}

void os_futex_wake_all(_Atomic int *w) {
  syscall(SYS_futex, w, FUTEX_WAKE_PRIVATE, INT32_MAX, NULL, NULL, 0);
}

int os_membarrier_register(void) {
  return syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
}

void os_membarrier(void) { syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0); }

/* ---- this process's image ------------------------------------------------------- */

extern char **environ;

int os_aslr_on(void) {
  char rv[8];
  return !(os_read_file("/proc/sys/kernel/randomize_va_space", rv, sizeof rv) && rv[0] == '0');
}

/* Filled from /proc/self: nothing here may allocate (we run inside the
 * first malloc).  Static, so the pages cost nothing unless used. */
static char cmdline[128 * 1024], envbuf[128 * 1024];
static char *argv_v[8192], *env_v[8192];

/* Splits a NUL-separated buffer of n bytes into v; 0 if it does not fit. */
static int split(char *buf, size_t n, char **v, size_t vmax) {
  size_t k = 0;
  for (size_t i = 0; i < n; i += strlen(buf + i) + 1) {
    if (k + 1 >= vmax) return 0;
    v[k++] = buf + i;
  }
  v[k] = NULL;
  return k > 0;
}

int os_self_args(char ***argv, char ***envp) {
  size_t n = os_read_file("/proc/self/cmdline", cmdline, sizeof cmdline);
  if (n == 0 || n >= sizeof cmdline - 1 || !split(cmdline, n, argv_v, sizeof argv_v / sizeof *argv_v)) return 0;
  *argv = argv_v;
  *envp = environ;
  if (!*envp) {
    n = os_read_file("/proc/self/environ", envbuf, sizeof envbuf);
    if (n >= sizeof envbuf - 1) return 0;
    env_v[0] = NULL;
    if (n) split(envbuf, n, env_v, sizeof env_v / sizeof *env_v);
    *envp = env_v;
  }
  return 1;
}

static char *exec_env[8192 + 2];

void os_exec_self(char **argv, char **envp, const char *mark) {
  size_t nl = strcspn(mark, "=") + 1, k = 0;
  for (char **e = envp; *e; e++) {
    if (!strncmp(*e, mark, nl)) continue;
    if (k + 2 >= sizeof exec_env / sizeof *exec_env) return;
    exec_env[k++] = *e;
  }
  exec_env[k++] = (char *)mark;
  exec_env[k] = NULL;
  /* The system call, not execve: that is the library's own (exec.c), which
   * marks a process leaving its heap, and this one is not leaving. */
  syscall(SYS_execve, "/proc/self/exe", argv, exec_env);
}

size_t os_address_space_left(size_t *limit) {
  struct rlimit rl;
  *limit = SIZE_MAX;
  if (getrlimit(RLIMIT_AS, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) return SIZE_MAX;
  *limit = (size_t)rl.rlim_cur;
  /* In use now: the first field of statm, in pages. */
  char buf[128];
  size_t n = os_read_file("/proc/self/statm", buf, sizeof buf - 1);
  buf[n] = 0;
  size_t pages = 0;
  for (const char *p = buf; *p >= '0' && *p <= '9'; p++) pages = pages * 10 + (size_t)(*p - '0');
  size_t used = pages * (size_t)sysconf(_SC_PAGESIZE);
  return used < *limit ? *limit - used : 0;
}

void os_self_name(char *buf, size_t len) {
  size_t n = os_read_file("/proc/self/comm", buf, len);
  while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == 0)) n--;
  buf[n < len ? n : 0] = 0;
}

/* An exec names the process after the file it ran: "exe", for the re-exec
 * through /proc/self/exe, where it was "memcached". */
void os_set_self_name(const char *name) { prctl(PR_SET_NAME, (unsigned long)name, 0, 0, 0); }

/* ---- errno in words -------------------------------------------------------------- */

/* strerror may translate, and translation may allocate: the errors the
 * library reports are named here. */
const char *os_errstr(int e) {
  switch (e) {
  case EACCES: return "permission denied";
  case EPERM: return "operation not permitted";
  case ENOENT: return "no such segment";
  case EIDRM: return "the segment was removed";
  case EINVAL: return "invalid argument";
  case ENOMEM: return "out of memory";
  case ENOSPC: return "the system limit is reached";
  case EEXIST: return "it exists already";
  case EMFILE: return "too many segments attached";
  case EFAULT: return "bad address";
  default: return "unexpected error";
  }
}

/* ---- who may use a segment ---------------------------------------------------------- */

/* The key, owner, creator and mode of segment id from /proc/sysvipc/shm,
 * which anyone may read, for a segment this user may not IPC_STAT.  Columns:
 * key shmid perms(octal) size cpid lpid nattch uid gid cuid cgid ...; the
 * key is printed as a signed int, so keys from 0x80000000 up are negative. */
/* The row of /proc/sysvipc/shm whose shmid is id, or (id < 0) whose key is
 * key.  Its columns: key shmid perms size cpid lpid nattch uid gid cuid ... */
struct shm_row {
  int32_t key;
  int id;
  unsigned perm, uid, cuid;
  pid_t cpid, lpid;
};

static int sysvipc_row(int id, int32_t key, struct shm_row *out) {
  int fd = open("/proc/sysvipc/shm", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  char buf[4096], line[512];
  size_t ll = 0;
  int found = 0, skip = 0;
  ssize_t r;
  while (!found && (r = read(fd, buf, sizeof buf)) > 0) {
    for (ssize_t i = 0; i < r && !found; i++) {
      char c = buf[i];
      if (c != '\n') {
        if (ll + 1 < sizeof line) line[ll++] = c;
        else skip = 1; /* longer than any line the kernel prints: not one we parse */
        continue;
      }
      line[ll] = 0;
      unsigned long long f[11];
      int n = 0, neg = 0;
      char *p = line;
      while (!skip && n < 11) {
        while (*p == ' ') p++;
        if (n == 0 && *p == '-') {
          neg = 1;
          p++;
        }
        if (*p < '0' || *p > '9') break;
        unsigned base = n == 2 ? 8 : 10;
        unsigned long long x = 0;
        for (; *p >= '0' && *p <= '9'; p++) x = x * base + (unsigned long long)(*p - '0');
        f[n++] = x;
      }
      int32_t k = n == 11 ? (int32_t)(neg ? 0u - (uint32_t)f[0] : (uint32_t)f[0]) : 0;
      if (n == 11 && (id >= 0 ? f[1] == (unsigned long long)id : k == key && key != 0)) {
        out->key = k;
        out->id = (int)f[1];
        out->perm = (unsigned)f[2] & 0777;
        out->cpid = (pid_t)f[4];
        out->lpid = (pid_t)f[5];
        out->uid = (unsigned)f[7];
        out->cuid = (unsigned)f[9];
        found = 1;
      }
      ll = 0;
      skip = 0;
    }
  }
  close(fd);
  return found;
}

int os_shm_key_from_ancestor(int32_t key) {
  struct shm_row row;
  if (!sysvipc_row(-1, key, &row)) return 0;
  /* Up the parent chain (bounded: a chain longer than this is no launcher
   * chain), looking for the heap's creator or its last attacher. */
  pid_t p = getpid();
  for (int depth = 0; depth < 64 && p > 1; depth++) {
    if (p == row.cpid || p == row.lpid) return 1;
    pid_t pp;
    if (!os_proc_stat(p, &pp, NULL)) return 0;
    p = pp;
  }
  return 0;
}

/* The one refusal sentence, for every caller: what is wrong (lead,
 * problem), the segment (shmid, key), its owner, creator and mode (and the
 * heap's recorded creator if known), that it was left untouched, and what to
 * do about it. */
static int owned_say(char *why, size_t len, int verdict, int purpose, const char *lead, const char *problem, int id,
                     int32_t key, unsigned uid, unsigned cuid, unsigned perm, long header_uid, unsigned me,
                     unsigned mode) {
  char hdr[48] = "";
  if (header_uid >= 0) os_fmt(hdr, sizeof hdr, ", heap formed by uid %ld", header_uid);
  const char *other = purpose == SH_OWN_USE ? "use another SHMHEAP_KEY (shmheap(7), SECURITY); " : "";
  char fix[240];
  if (verdict == SH_OWNED_MODE)
    os_fmt(fix, sizeof fix, "remove it (ipcrm -m %d), take group and others' access away (at most 0%o), or accept that mode with SHMHEAP_MODE=0%o",
           id, (mode & 0077) | 0600, (perm | 0600) & 0777);
  else if ((uid != me || cuid != me) && uid == cuid)
    os_fmt(fix, sizeof fix, "%sonly uid %u (its owner and creator) may remove it (ipcrm -m %d)", other, uid, id);
  else if (uid != me || cuid != me)
    os_fmt(fix, sizeof fix, "%sonly uid %u (its owner) or uid %u (its creator) may remove it (ipcrm -m %d)", other, uid,
           cuid, id);
  else
    os_fmt(fix, sizeof fix, "%sif that heap is not needed, remove the segment by hand (ipcrm -m %d)", other, id);
  os_fmt(why, len, "%s: segment shmid %d belongs to uid %u (key 0x%x, created by uid %u, mode 0%o%s): %s; it was left untouched: %s",
         lead, id, uid, (unsigned)key, cuid, perm, hdr, problem, fix);
  return verdict;
}

int os_shm_owned(int id, unsigned mode, long header_uid, int purpose, struct shmid_ds *out, char *why, size_t len) {
  unsigned me = (unsigned)geteuid(), uid, cuid, perm;
  int32_t key;
  struct shmid_ds ds;
  char problem[120];
  if (shmctl(id, IPC_STAT, &ds) == 0) {
    key = (int32_t)ds.shm_perm.__key;
    uid = (unsigned)ds.shm_perm.uid;
    cuid = (unsigned)ds.shm_perm.cuid;
    perm = (unsigned)ds.shm_perm.mode & 0777;
    if (out) *out = ds;
  } else {
    int e = errno;
    if (e == EIDRM || e == EINVAL) return 1;
    if (e != EACCES) {
      os_fmt(why, len, "cannot inspect segment shmid %d: %s; it was left untouched", id, os_errstr(e));
      return SH_OWNED_OTHER;
    }
    struct shm_row row;
    if (!sysvipc_row(id, 0, &row)) {
      os_fmt(why, len, "permission denied: segment shmid %d is not this user's (uid %u), and /proc/sysvipc/shm does not say whose it is; it was left untouched%s",
             id, me, purpose == SH_OWN_USE ? ": use another SHMHEAP_KEY (shmheap(7), SECURITY)" : "");
      return SH_OWNED_OTHER;
    }
    key = row.key;
    perm = row.perm;
    uid = row.uid;
    cuid = row.cuid;
    /* IPC_STAT needs read permission: it was denied, so the segment is
     * another user's. */
    os_fmt(problem, sizeof problem, "this user (uid %u) may not even read it", me);
    return owned_say(why, len, SH_OWNED_OTHER, purpose, "permission denied", problem, id, key, uid, cuid, perm,
                     header_uid, me, mode);
  }
  const char *lead = purpose == SH_OWN_USE ? "not this user's heap" : "not this user's to remove";
  /* The kernel gives the creator (cuid) the owner's rights too, so a
   * segment made by another user and handed over with IPC_SET is still
   * theirs to write. */
  if (uid != me || cuid != me) {
    if (uid != me) os_fmt(problem, sizeof problem, "not to this user (uid %u)", me);
    else os_fmt(problem, sizeof problem, "another user created it and keeps the owner's rights, although it was given to this user (uid %u)", me);
    return owned_say(why, len, SH_OWNED_OTHER, purpose, lead, problem, id, key, uid, cuid, perm, header_uid, me, mode);
  }
  /* The header's creator is the uid of the process that formed the heap;
   * one that differs was formed by someone else and copied or handed in. */
  if (header_uid >= 0 && (unsigned long)header_uid != me) {
    os_fmt(problem, sizeof problem, "the heap in it was formed by uid %ld, not by this user (uid %u)", header_uid, me);
    return owned_say(why, len, SH_OWNED_OTHER, purpose, lead, problem, id, key, uid, cuid, perm, header_uid, me, mode);
  }
  /* Anyone who may read the heap reads the program's data, and anyone who
   * may write it can plant pointers the allocator follows. */
  if (perm & 0077 & ~mode) {
    os_fmt(problem, sizeof problem, "its mode gives group or others access beyond SHMHEAP_MODE=0%o", mode & 0777);
    return owned_say(why, len, SH_OWNED_MODE, purpose, "too open", problem, id, key, uid, cuid, perm, header_uid, me,
                     mode);
  }
  return 0;
}

/* ---- secure execution --------------------------------------------------------------- */

/* Set-user-ID, set-group-ID or file capabilities: the environment is the
 * calling user's, not the program's owner's.  AT_SECURE alone is not
 * enough: root running a set-user-ID-root program gets AT_SECURE 0. */
int os_secure_exec(void) {
  if (getauxval(AT_SECURE)) return 1;
  if (getuid() != geteuid() || getgid() != getegid()) return 1;
  struct stat st;
  if (stat("/proc/self/exe", &st) == 0 && (st.st_mode & (S_ISUID | S_ISGID))) return 1;
  char cap[64];
  if (getxattr("/proc/self/exe", "security.capability", cap, sizeof cap) > 0) return 1;
  return 0;
}
