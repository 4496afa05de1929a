/* The OS layer: every System V call, /proc, clocks, futex, membarrier and
 * madvise the library makes, the SHMHEAP_* environment (options.c), and
 * messages that never allocate (diag.c).  Nothing here knows the heap's
 * format; everything above reaches the kernel through these functions.
 * All of it may run inside the first malloc: none of it allocates. */
#ifndef SHMHEAP_OS_H
#define SHMHEAP_OS_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#define SH_API __attribute__((visibility("default")))
#define SH_HIDDEN __attribute__((visibility("hidden")))
#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
#define SH_TLS __thread __attribute__((tls_model("initial-exec")))

/* Exit statuses (documented in shmheap(7)). */
#define SH_EXIT_CONFIG 78  /* EX_CONFIG: a SHMHEAP_* variable is wrong */
#define SH_EXIT_OSERR 71   /* EX_OSERR: the segment could not be created/attached */
#define SH_EXIT_FOREIGN 65 /* EX_DATAERR: the keyed segment is not a usable heap */
#define SH_EXIT_INUSE 75   /* EX_TEMPFAIL: the keyed heap is in use by another process */

/* Debug builds (./configure --enable-debug) check the invariants of
 * format.h where they are enforced; SH_ASSERT names the invariant. */
#ifdef SH_DEBUG
#define SH_ASSERT(cond, what) (likely(cond) ? (void)0 : os_assert_fail(what, #cond, __FILE__, __LINE__))
#else
#define SH_ASSERT(cond, what) ((void)0)
#endif

/* ---- messages (diag.c) ---------------------------------------------------- */

extern SH_HIDDEN int os_say_fd;
SH_HIDDEN void os_say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
SH_HIDDEN void os_die(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));
/* One line, then SIGABRT: a program bug found in the heap (double free,
 * corrupted free list).  A core dump shows where. */
SH_HIDDEN void os_abort(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn, cold));
SH_HIDDEN int os_fmt(char *buf, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
SH_HIDDEN int os_vfmt(char *buf, size_t len, const char *fmt, va_list ap);
SH_HIDDEN void os_assert_fail(const char *what, const char *cond, const char *file, int line)
    __attribute__((noreturn));

/* ---- clocks ------------------------------------------------------------------ */

/* Nanoseconds on clock c.  CLOCK_MONOTONIC is system-wide: it means the
 * same in every process that shares a heap. */
SH_HIDDEN uint64_t os_clock_ns(clockid_t c);

/* ---- processes and /proc ------------------------------------------------------ */

SH_HIDDEN uint64_t os_random64(void); /* getrandom, or the clock and pid if it fails */
SH_HIDDEN pid_t os_getpid(void); /* the kernel's, not a cached one: right after fork too */
SH_HIDDEN pid_t os_gettid(void);
/* Reads up to len-1 bytes of a file, NUL-terminated; returns the bytes read. */
SH_HIDDEN size_t os_read_file(const char *path, char *buf, size_t len);
/* Parent and start time of pid from /proc/PID/stat; 0 if there is no such
 * process, or only its corpse (a zombie has left every heap). */
SH_HIDDEN int os_proc_stat(pid_t pid, pid_t *ppid, uint64_t *start);
/* When process pid started, in seconds since the epoch (to within a
 * second); 0 if it is gone or a zombie, or /proc cannot say. */
SH_HIDDEN uint64_t os_proc_started(pid_t pid);
/* The executable of pid (/proc/PID/exe, without the " (deleted)" of a
 * replaced file), or NULL. */
SH_HIDDEN const char *os_exe_of(pid_t pid, char *buf, size_t len);
/* This process's executable, read once ("?" if unreadable). */
SH_HIDDEN const char *os_self_exe(void);
/* The path this image was executed by (AT_EXECFN: "redis-server" where the
 * executable is the link's target, redis-check-rdb), or NULL. */
SH_HIDDEN const char *os_self_execfn(void);
/* Do paths a and b name the same file (after links)? */
SH_HIDDEN int os_same_file(const char *a, const char *b);
/* Does pid name no process at all (kill(pid, 0) fails with ESRCH)? */
SH_HIDDEN int os_pid_gone(pid_t pid);

/* ---- this process's image (for the re-exec without randomization) ----------- */

SH_HIDDEN int os_aslr_on(void); /* kernel.randomize_va_space is not 0 */
/* Bytes of address space RLIMIT_AS leaves this process now (SIZE_MAX if it
 * sets no limit); *limit gets the limit (SIZE_MAX if none). */
SH_HIDDEN size_t os_address_space_left(size_t *limit);
/* This process's arguments and environment, as execve wants them; 0 if they
 * cannot be had without allocating (too long, no /proc). */
SH_HIDDEN int os_self_args(char ***argv, char ***envp);
/* Executes /proc/self/exe with envp plus the entry mark (replacing any
 * entry with the same name); returns only on failure. */
SH_HIDDEN void os_exec_self(char **argv, char **envp, const char *mark);
/* The process's name (/proc/self/comm, what ps, top and pgrep show): read
 * into buf ("" if unknown), and set (the calling thread's, which for the
 * main thread is the process's). */
SH_HIDDEN void os_self_name(char *buf, size_t len);
SH_HIDDEN void os_set_self_name(const char *name);

/* ---- System V shared memory ------------------------------------------------------ */

struct shmid_ds;
/* Each returns what the system call does (-1 with errno on failure). */
SH_HIDDEN int os_shm_find(int32_t key);                              /* shmget(key, 0, 0) */
SH_HIDDEN int os_shm_create(int32_t key, size_t size, unsigned mode); /* new only; key 0: private */
/* The same from the system's pool of 2 MiB pages (SHM_HUGETLB), all of them
 * reserved now: size is a multiple of SH_HUGE_PAGE. */
SH_HIDDEN int os_shm_create_hugetlb(int32_t key, size_t size, unsigned mode);
/* 1 if this process's mapping that starts at addr is on hugetlb pages
 * (KernelPageSize in /proc/self/smaps), 0 if not or unknown. */
SH_HIDDEN int os_mapping_is_hugetlb(const void *addr);
/* A figure of /proc/meminfo ("HugePages_Free"), or -1. */
SH_HIDDEN long long os_meminfo(const char *field);
SH_HIDDEN void *os_shm_attach(int id, void *addr, int readonly);      /* (void *)-1 on failure */
SH_HIDDEN void *os_shm_remap(int id, void *addr);                     /* in place of what is there */
SH_HIDDEN int os_shm_detach(const void *p);
SH_HIDDEN int os_shm_stat(int id, struct shmid_ds *ds);
SH_HIDDEN int os_shm_remove(int id);

/* May this user attach segment id as its heap (purpose SH_OWN_USE), or
 * remove it (SH_OWN_REMOVE: SHMHEAP_FRESH, shmheap-dump --remove)?  The one
 * ownership rule, used by every path that attaches, re-forms or removes a
 * keyed segment: the owner (shm_perm.uid), the creator (shm_perm.cuid) and,
 * if known (header_uid >= 0), the uid recorded in the heap's header are all
 * this process's effective uid, and the mode gives group and others nothing
 * beyond mode.  0: yes (*out filled if out); 1: the segment is gone (try
 * again); SH_OWNED_OTHER or SH_OWNED_MODE: no, and why holds the whole
 * refusal, for the caller to print after its own prefix: the shmid and key,
 * the owner, creator and mode (and the header's uid), what is wrong, "it was
 * left untouched" and what to do. */
#define SH_OWNED_OTHER (-1)
#define SH_OWNED_MODE (-2)
#define SH_OWN_USE 0
#define SH_OWN_REMOVE 1
#define SH_OWNED_WHY 640 /* room for why */
/* 1 if the segment of key was created, or last attached or detached, by
 * this process or one of its ancestors (/proc/sysvipc/shm's cpid and lpid):
 * the key came down with the environment from the heap's own processes. */
SH_HIDDEN int os_shm_key_from_ancestor(int32_t key);
SH_HIDDEN int os_shm_owned(int id, unsigned mode, long header_uid, int purpose, struct shmid_ds *out, char *why,
                           size_t len);
SH_HIDDEN const char *os_errstr(int e); /* an errno in words, without allocating */
/* Set-user-ID, set-group-ID or with file capabilities: SHMHEAP_* is ignored. */
SH_HIDDEN int os_secure_exec(void);

/* ---- memory, futex, membarrier ------------------------------------------------------ */

SH_HIDDEN void os_release_pages(void *p, size_t len); /* MADV_REMOVE: shmem pages are freed */
/* MADV_POPULATE_*: maps [p, p+len) in one call instead of a fault per
 * page.  0, or -1 with errno (EINVAL before Linux 5.14). */
SH_HIDDEN int os_populate(void *p, size_t len, int write);
SH_HIDDEN unsigned os_ncpus(void); /* CPUs this process may run on, at least 1 */
/* MADV_HUGEPAGE, for SHMHEAP_HUGEPAGES=thp: on each mapping of the heap
 * (the advice belongs to the mapping, not to the segment); 0, or -1. */
SH_HIDDEN int os_advise_huge(void *p, size_t len);
/* The selected policy of /sys/kernel/mm/transparent_hugepage/shmem_enabled
 * ("never", "advise", ...), or "" if it cannot be read. */
SH_HIDDEN void os_thp_shmem_policy(char *buf, size_t len);
/* Writes [p, p+len) of this process to the same addresses in process pid
 * (process_vm_writev).  0, or -1 with errno. */
SH_HIDDEN int os_write_into(pid_t pid, const void *p, size_t len);
/* Anonymous private memory for scratch, never from the heap: NULL on failure. */
SH_HIDDEN void *os_scratch(size_t len);
SH_HIDDEN void os_scratch_free(void *p, size_t len);
SH_HIDDEN void os_futex_wait(_Atomic int *w, int val);
SH_HIDDEN void os_futex_wake_all(_Atomic int *w);
SH_HIDDEN void os_futex_wait_ms(_Atomic int *w, int val, uint64_t ms); /* at most ms */
/* A detached thread running fn(arg) on a 64 KiB stack, with every signal
 * blocked: none of the program's handlers runs on it.  fn names it
 * (os_set_self_name): a detached thread may have ended, and its id been
 * reused, by the time its creator would.  0, or the error number.  It allocates (glibc's descriptors
 * of a thread): never from inside a heap edit. */
SH_HIDDEN int os_thread_start(void *(*fn)(void *), void *arg);
/* A helper for the work of a start that holds the heap's lock before main
 * (collect.c): a thread made with clone(2) alone, which the C library does
 * not know of and which allocates nothing, so it can run where malloc
 * cannot be called.  fn shares the caller's thread pointer: it must not
 * touch thread-local storage (errno included), call the C library or take
 * a signal (all are blocked).  os_helper_start returns 0, or -1 (then fn
 * did not run); os_helper_join waits for it to end and frees its stack. */
struct os_helper {
  _Atomic int tid; /* the kernel clears it when the thread ends */
  void *stack;
};
SH_HIDDEN int os_helper_start(struct os_helper *t, int (*fn)(void *), void *arg);
SH_HIDDEN void os_helper_join(struct os_helper *t);
/* Is p in the code of libc or of the dynamic loader? */
SH_HIDDEN int os_addr_in_libc(const void *p);
SH_HIDDEN int os_membarrier_register(void); /* 1 if expedited private barriers work */
SH_HIDDEN void os_membarrier(void);

/* ---- the environment (options.c) ----------------------------------------------------- */

#define SH_NAME_MAX 64     /* a heap's name, NUL included */
#define SH_PROGRAM_MAX 256 /* the owning program's path, NUL included */

/* The default attach address and size (documented in shmheap(7)). */
#define SH_DEFAULT_ADDR ((uintptr_t)0x200000000000ULL)
#define SH_DEFAULT_SIZE ((size_t)64 << 30)
#define SH_MIN_SIZE ((size_t)4 << 20)
#define SH_ADDR_ALIGN ((uintptr_t)1 << 21) /* 2 MiB: attach address granularity */

struct options {
  int have_key;
  int32_t key;
  char name[SH_NAME_MAX];
  size_t size;
  int size_given;
  uintptr_t addr;
  size_t size_fitted;  /* SHMHEAP_SIZE unset and the default cut to fit: the RLIMIT_AS, else 0 */
  int addr_given;
  int fork_share;
  int verbose;
  int fresh;           /* SHMHEAP_FRESH=1 */
  unsigned mode;       /* SHMHEAP_MODE, permissions of a new segment */
  const char *program; /* SHMHEAP_PROGRAM, or NULL */
  int image_any;       /* SHMHEAP_IMAGE=any */
  int hugepages;       /* SHMHEAP_HUGEPAGES: SH_HUGEPAGES_* */
  int hugepages_strict; /* SHMHEAP_HUGEPAGES=hugetlb-strict: no pool, no heap (exit 78) */
  int prefault;        /* SHMHEAP_PREFAULT: SH_PREFAULT_* */
  int gc;              /* SHMHEAP_GC=auto (the default): collection at restart (collect.c) */
  int background;      /* SHMHEAP_BACKGROUND=on: a thread purges free pages (the default) */
  int secure;          /* set-user-ID or the like: SHMHEAP_* ignored */
  long reexec_pid;     /* SHMHEAP_REEXEC: the pid image_reexec exec'd, or 0 */
  char reexec_name[16]; /* SHMHEAP_REEXEC: the process's name before that exec, or "" */
  char reexec_fn[SH_PROGRAM_MAX]; /* SHMHEAP_REEXEC: AT_EXECFN before that exec, or "" */
};

enum { SH_HUGEPAGES_OFF, SH_HUGEPAGES_THP, SH_HUGEPAGES_HUGETLB };
#define SH_HUGE_PAGE ((size_t)2 << 20) /* the huge page SHMHEAP_HUGEPAGES uses (x86-64's PMD) */
enum { SH_PREFAULT_AUTO, SH_PREFAULT_SYNC, SH_PREFAULT_THREADS, SH_PREFAULT_OFF };

/* The process's options, parsed once at start-up (init.c). */
extern SH_HIDDEN struct options opts;
SH_HIDDEN void options_parse(struct options *o);
SH_HIDDEN void options_strip_reexec(void); /* SHMHEAP_REEXEC out of environ */
SH_HIDDEN size_t options_default_size(size_t *fitted); /* the size when SHMHEAP_SIZE is unset */
/* How messages name the heap of SHMHEAP_KEY: "NAME -> 0xKEY" or "0xKEY". */
SH_HIDDEN const char *options_key_label(void);
SH_HIDDEN int options_parse_size(const char *s, size_t *out);
/* 0, or 1 out of range, 2 zero (IPC_PRIVATE), 3 name too long */
SH_HIDDEN int options_parse_key(const char *v, int32_t *key, char name[SH_NAME_MAX]);

#endif
