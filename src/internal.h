/* libshmheap internals: every structure that lives in the segment, and the
 * process-local state that caches pointers into it.
 *
 * Invariants (the rest of the code relies on them; the dump tool and the
 * recovery code will check them):
 *
 *  I1  Everything in the segment refers to the segment by offset or by index,
 *      never by address (DESIGN decision 1).  Offsets are from the segment
 *      base; offset 0 is the header, so 0 doubles as "none".
 *  I2  The heap area is a run of 4 KiB pages.  Pages [0, top) are tiled by
 *      spans; pages [top, npages) have never been handed out and read as zero.
 *  I3  A span is described by one descriptor (struct span).  pagemap[p] holds
 *      the descriptor index for the first and last page of every span, and for
 *      every page of a small span (any pointer into it must find it).  Other
 *      entries may be stale: a lookup is valid only if the descriptor it finds
 *      covers the page.
 *  I4  A small span belongs to one thread heap (owner).  Only the thread that
 *      holds that heap touches the span's local free list, used count and list
 *      links; other threads only push onto thread_free with a CAS.
 *  I5  Every list edit that a kill can interrupt is a single aligned store of
 *      one link, so a crash loses at most the block in flight (decision 4).
 *  I6  The span allocator (free bins, top, descriptor pool) changes only under
 *      hdr->lock, a robust process-shared mutex, and every store it makes
 *      is undo-logged first (journal.c): a process that dies holding the
 *      lock has its edit rolled back by the next one to take it.  Stores
 *      made under the lock that are not logged are each atomic on their own
 *      or idempotent: the fields of a span before its logged state store
 *      publishes it, roots (struct root), the image record (n last), and
 *      the repairs of repair.c (rerun from scratch if interrupted).
 *  I7  A thread heap is edited only between heap_enter and heap_leave (busy
 *      set).  A slot left busy by a dead thread is rebuilt from its spans
 *      (repair.c) before anyone uses it again; one left idle is consistent.
 */
#ifndef SHMHEAP_INTERNAL_H
#define SHMHEAP_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "shmheap.h"

#define SH_API __attribute__((visibility("default")))
#define SH_HIDDEN __attribute__((visibility("hidden")))
#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
#define SH_TLS __thread __attribute__((tls_model("initial-exec")))

/* ---- format constants (any change here bumps SH_FORMAT) ---------------- */

#define SH_MAGIC 0x5041454d48534853ULL /* "SHSHMEAP" little-endian */
#define SH_FORMAT 4u

#define SH_PAGE_SHIFT 12
#define SH_PAGE ((size_t)1 << SH_PAGE_SHIFT)
#define SH_ALIGN 16 /* every block is 16-byte aligned */

#define SH_NCLASS 40             /* size classes 1..40; 0 is unused */
#define SH_SMALL_MAX 32768       /* largest small block */
#define SH_MAX_HEAPS 1024        /* thread heaps per segment */
#define SH_NAME_MAX 64           /* segment name, NUL included */
#define SH_NBINS 96              /* free-span bins */
#define SH_EXACT_BINS 64         /* bins 1..64 hold exactly that many pages */
#define SH_ROOT_MAX 256          /* named roots (documented in libshmheap(3)) */
#define SH_ROOT_NAME 48          /* a root's name, NUL included */
#define SH_ULOG_MAX 1024         /* undo-log entries of one locked edit */
#define SH_MAX_PROCS 1024        /* processes using one keyed heap at a time */
#define SH_PROGRAM_MAX 256       /* the owning program's path, NUL included */
#define SH_IMAGE_MAX 128         /* objects (executable, libraries) recorded */

/* The default attach address and size (documented in shmheap(7)). */
#define SH_DEFAULT_ADDR ((uintptr_t)0x200000000000ULL)
#define SH_DEFAULT_SIZE ((size_t)64 << 30)
#define SH_MIN_SIZE ((size_t)4 << 20)
#define SH_ADDR_ALIGN ((uintptr_t)1 << 21) /* 2 MiB: attach address granularity */

/* Exit statuses (documented in shmheap(7)). */
#define SH_EXIT_CONFIG 78  /* EX_CONFIG: a SHMHEAP_* variable is wrong */
#define SH_EXIT_OSERR 71   /* EX_OSERR: the segment could not be created/attached */
#define SH_EXIT_FOREIGN 65 /* EX_DATAERR: the keyed segment is not a usable heap */
#define SH_EXIT_INUSE 75   /* EX_TEMPFAIL: the keyed heap is in use by another process */

/* ---- span descriptors -------------------------------------------------- */

enum span_state {
  SPAN_NONE = 0,  /* descriptor not in use (on the descriptor free list) */
  SPAN_FREE = 1,  /* free pages, in a bin */
  SPAN_SMALL = 2, /* carved into blocks of one size class */
  SPAN_LARGE = 3, /* one large block */
};

/* span.flags */
#define SPAN_FULL 0x1 /* small span is on its heap's full list */

/* thread_free low bit: the owner parked this span on its full list and wants
 * to hear about the next remote free (the freer clears it and bumps the
 * owner's full_remote counter).  Blocks are 16-aligned, so bit 0 is spare. */
#define TF_NOTIFY 0x1ULL

struct span {
  uint32_t first;  /* first page (index into the heap area) */
  uint32_t npages;
  uint8_t state;   /* enum span_state */
  uint8_t cls;     /* small: size class */
  uint8_t spare;
  uint8_t flags;   /* SPAN_FULL */
  uint16_t owner;  /* small: thread heap index */
  uint16_t capacity; /* small: blocks that fit */
  uint16_t reserved; /* small: blocks carved so far (bump) */
  uint16_t used;     /* small: blocks not on the local free list, uncarved excluded */
  uint32_t bsize;    /* small: block size; large: requested bytes */
  uint64_t free;     /* small: local free list head (offset), owner only */
  _Atomic uint64_t thread_free; /* small: remote frees (offset | TF_NOTIFY) */
  uint32_t next, prev; /* list links: heap class list or free bin */
  uint32_t ndirty;     /* free: upper bound of pages that may be non-zero */
  uint32_t pad;
  uint64_t dirty_ms;   /* free: when its pages were freed, ms (mean by dirty pages) */
};
_Static_assert(sizeof(struct span) == 64, "span descriptor is one cache line");

/* ---- thread heaps ------------------------------------------------------- */

struct heap_class {
  uint32_t avail; /* spans with free or uncarved blocks; head is the current one */
  uint32_t full;  /* spans found exhausted */
};

struct theap {
  _Atomic uint32_t busy;        /* inside a lock-free heap edit (fork gate, I7) */
  uint32_t edit_span;           /* the span whose blocks that edit changes (I7) */
  _Atomic int32_t owner_pid;    /* 0: slot free */
  int32_t owner_tid;
  _Atomic uint32_t full_remote; /* remote frees hit spans on the full list */
  uint32_t pend_span;           /* span_collect in progress: the span ... */
  int64_t in_use;               /* bytes malloc'd minus bytes freed by this heap */
  uint64_t nmalloc, nfree;
  uint16_t index;
  uint16_t pad0;
  uint32_t pad1;
  uint64_t owner_start;         /* its start time: a reused pid is another process */
  struct heap_class cls[SH_NCLASS + 1];
  pthread_mutex_t lock;         /* only heap 0: shared by threads with no heap of their own */
  uint64_t pend_head;           /* ... and the chain it is taking off thread_free */
  uint8_t pad2[48];
};

/* ---- named roots ----------------------------------------------------------- */

/* An entry is in use when name[0] != 0.  It is filled in (value, then the
 * rest of the name) before name[0] is stored, and emptied by clearing name[0]
 * first, so a crash at any instruction leaves it absent or whole.  The value
 * is one aligned 8-byte offset: a reader, or the next process, sees the old
 * or the new pointer, never a torn one. */
struct root {
  _Atomic char name[SH_ROOT_NAME];
  _Atomic uint64_t off; /* offset from the base; 0: a null pointer */
  uint64_t pad;
};
_Static_assert(sizeof(struct root) == 64, "a root is one cache line");

/* ---- the undo log and the process table ------------------------------------ */

/* One logged store: where = offset | width << 56, old = the bytes before. */
struct ulog_entry {
  uint64_t where;
  uint64_t old;
};

/* n counts the entries that are valid; an entry is written before n covers
 * it and the store it guards is made after, so a crash anywhere leaves a log
 * whose rollback restores the state before the edit (journal.c). */
struct ulog {
  _Atomic uint32_t n;
  uint32_t pad;
  struct ulog_entry e[SH_ULOG_MAX];
};

/* A process using a keyed heap: registered when it attaches (or is forked in
 * share mode), removed when it exits.  One that is still listed but gone (or
 * whose pid now names another process: start differs) ended without leaving. */
struct shm_proc {
  _Atomic int32_t pid; /* 0: entry free */
  uint32_t pad;
  uint64_t start;      /* start time in clock ticks after boot (/proc/PID/stat) */
};

/* What identifies the program image whose code pointers the heap may hold:
 * each object loaded at start (executable first, then the libraries, in
 * load order) with its load address and a hash of its build id (image.c). */
struct image_obj {
  uint64_t addr;
  uint64_t id;
};

struct image {
  uint32_t n;        /* 0: none recorded yet */
  uint32_t pad;
  struct image_obj obj[SH_IMAGE_MAX];
};

/* ---- the segment header ------------------------------------------------- */

enum heap_state { HEAP_FORMING = 0, HEAP_READY = 1 };

struct shm_header {
  uint64_t magic;     /* written last when a heap is formed */
  uint32_t format;
  uint32_t header_size;
  uint64_t size;      /* segment bytes */
  uint64_t base;      /* attach address the heap was formed at */
  int32_t key;        /* SysV key, 0 for a private heap */
  uint32_t name_hash;
  char name[SH_NAME_MAX]; /* "" for numeric keys and private heaps */
  uint32_t creator_uid;
  int32_t creator_pid;
  uint64_t created;   /* seconds since the epoch */
  uint32_t page_size;
  uint32_t nclass;
  uint32_t class_size[SH_NCLASS + 1];
  uint16_t class_pages[SH_NCLASS + 1];

  /* layout, all offsets from the base */
  uint64_t heaps_off;   /* struct theap[SH_MAX_HEAPS] */
  uint64_t spans_off;   /* struct span[nspans] */
  uint64_t pagemap_off; /* uint32_t[npages] */
  uint64_t heap_off;    /* first heap page */
  uint32_t npages;      /* heap pages */
  uint32_t nspans;      /* descriptors reserved */

  /* span allocator, under lock (I6) */
  pthread_mutex_t lock;
  _Atomic uint32_t repairs;      /* statistics: crash repairs done (lock or heap) */
  uint32_t top;          /* first never-used page */
  uint32_t span_count;   /* descriptors ever used (bump) */
  uint32_t span_free;    /* descriptor free list (linked through next) */
  uint32_t bins[SH_NBINS];
  uint64_t binmap[2];
  uint64_t dirty_pages;  /* free pages that may be non-zero */
  uint64_t live_pages;   /* pages in small and large spans */
  uint64_t large_in_use; /* bytes of large blocks handed out */
  uint64_t large_count;
  uint64_t purged_pages; /* statistics */
  uint64_t purge_due_ms; /* no free span is old enough to purge before this */
  uint32_t max_heap;     /* heaps[0, max_heap) have ever been used */
  uint32_t pad;
  struct root roots[SH_ROOT_MAX]; /* created and removed under lock */

  /* ownership and recovery (recover.c), under lock */
  char program[SH_PROGRAM_MAX]; /* executable the heap belongs to */
  int32_t last_pid;      /* the process that attached last */
  uint32_t crashes;      /* statistics: attaches that found a crash */
  uint64_t attaches;     /* statistics: re-attaches */
  struct shm_proc procs[SH_MAX_PROCS];
  struct image image;    /* recorded by the first process, checked by the others */
  struct ulog ulog;      /* the edit in progress under lock (I6) */
};

/* ---- process-local state ------------------------------------------------- */

struct options {
  int have_key;
  int32_t key;
  char name[SH_NAME_MAX];
  size_t size;
  int size_given;
  uintptr_t addr;
  int addr_given;
  int fork_share;
  int verbose;
  int fresh;             /* SHMHEAP_FRESH=1 */
  unsigned mode;         /* SHMHEAP_MODE, permissions of a new segment */
  const char *program;   /* SHMHEAP_PROGRAM, or NULL */
  int image_any;         /* SHMHEAP_IMAGE=any */
};

struct global {
  char *base;               /* segment address */
  struct shm_header *hdr;
  struct theap *heaps;
  struct span *spans;
  uint32_t *pagemap;
  uintptr_t heap_lo;        /* first heap byte */
  size_t heap_len;
  int shmid;
  pid_t pid;
  uint64_t start;           /* this process's start time (/proc/self/stat) */
  int reattached;
  struct options opt;
  struct shmheap_recovery rec; /* what the attach found (recover.c) */
};

extern SH_HIDDEN struct global G;
extern SH_HIDDEN _Atomic int sh_ready; /* 0 none, 1 forming, 2 ready */
extern SH_HIDDEN SH_TLS struct theap *tl_heap;
extern SH_HIDDEN _Atomic int sh_fork_gate;
extern SH_HIDDEN SH_TLS int sh_h0_held; /* this thread holds heap 0's lock */

/* size classes (process-local copies of the header tables) */
extern SH_HIDDEN uint32_t sh_class_size[SH_NCLASS + 1];
extern SH_HIDDEN uint16_t sh_class_pages[SH_NCLASS + 1];
extern SH_HIDDEN uint64_t sh_class_recip[SH_NCLASS + 1];

static inline unsigned size_class(size_t n) {
  extern SH_HIDDEN uint8_t sh_class_lut[65];
  if (n <= 1024) return sh_class_lut[(n + 15) >> 4];
  size_t s = n - 1;
  unsigned b = 63 - (unsigned)__builtin_clzl(s);
  return 8 + (b - 7) * 4 + (unsigned)((s >> (b - 2)) & 3) + 1;
}

/* Free-span bin of a span of n pages: exact up to 64 pages, then one bin
 * per power of two. */
static inline unsigned sh_bin_of(uint32_t n) {
  if (n <= SH_EXACT_BINS) return n - 1;
  return SH_EXACT_BINS + (31 - (unsigned)__builtin_clz(n)) - 6;
}

/* Nanoseconds on clock c.  CLOCK_MONOTONIC is system-wide: it means the
 * same in every process that shares a heap. */
static inline uint64_t sh_clock_ns(clockid_t c) {
  struct timespec ts;
  clock_gettime(c, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline void *off2ptr(uint64_t off) { return G.base + off; }
static inline uint64_t ptr2off(const void *p) { return (uint64_t)((const char *)p - G.base); }
static inline char *span_addr(const struct span *s) {
  return (char *)G.heap_lo + ((size_t)s->first << SH_PAGE_SHIFT);
}
static inline uint32_t span_index(const struct span *s) { return (uint32_t)(s - G.spans); }

/* Heap class lists (owner only, or the repairer of a dead owner). */
static inline void sh_list_push(uint32_t *head, struct span *s) {
  uint32_t i = span_index(s);
  s->prev = 0;
  s->next = *head;
  if (*head) G.spans[*head].prev = i;
  *head = i;
}

static inline void sh_list_remove(uint32_t *head, struct span *s) {
  if (s->prev) G.spans[s->prev].next = s->next;
  else *head = s->next;
  if (s->next) G.spans[s->next].prev = s->prev;
  s->next = s->prev = 0;
}

/* ---- the undo log (journal.c) --------------------------------------------------- */

SH_HIDDEN void *sh_ulog_touch(void *p, unsigned width);
SH_HIDDEN void sh_ulog_commit(void);
SH_HIDDEN int sh_ulog_rollback(void); /* returns the entries undone */
/* JW(x) is x, after its old value is logged: write "JW(h->top) += n" for a
 * store under hdr->lock (I6). */
#define JW(lv) (*(__typeof__(lv) *)sh_ulog_touch((void *)&(lv), sizeof(lv)))

/* ---- cross-file functions ------------------------------------------------ */

/* init.c */
SH_HIDDEN void sh_init(void);
SH_HIDDEN void sh_init_classes(void);

/* options.c */
SH_HIDDEN void sh_options_parse(struct options *o);
SH_HIDDEN int sh_parse_size(const char *s, size_t *out);
/* Reads up to len-1 bytes of a file, NUL-terminated; returns the bytes read. */
SH_HIDDEN size_t sh_read_file(const char *path, char *buf, size_t len);
/* 0, or 1 out of range, 2 zero (IPC_PRIVATE), 3 name too long */
SH_HIDDEN int sh_key_parse(const char *v, int32_t *key, char name[SH_NAME_MAX]);

/* diag.c: output that never allocates */
extern SH_HIDDEN int sh_say_fd;
SH_HIDDEN void sh_say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
SH_HIDDEN void sh_die(int status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3), noreturn));
SH_HIDDEN int sh_fmt(char *buf, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
SH_HIDDEN int sh_vfmt(char *buf, size_t len, const char *fmt, __builtin_va_list ap);

/* segment.c */
SH_HIDDEN void sh_segment_open(void);
SH_HIDDEN void sh_cache_pointers(void);

/* heapview.c */
SH_HIDDEN void sh_layout(struct shm_header *h, size_t size, uintptr_t base);

/* lock.c */
SH_HIDDEN void sh_lock_init(pthread_mutex_t *m);
SH_HIDDEN int sh_lock(pthread_mutex_t *m); /* returns 1 if the previous owner died */
SH_HIDDEN void sh_unlock(pthread_mutex_t *m);
SH_HIDDEN int sh_locks_held(void); /* heap locks this thread holds or is acquiring */
SH_HIDDEN void sh_global_lock(void);
SH_HIDDEN void sh_global_unlock(void);

/* span.c */
SH_HIDDEN struct span *span_alloc(uint32_t npages, uint32_t align_pages, int *zeroed);
SH_HIDDEN void span_free(struct span *s);
SH_HIDDEN int span_resize(struct span *s, uint32_t npages); /* in place; 1 on success */
SH_HIDDEN size_t span_purge_all(void);
SH_HIDDEN void span_purge_due(void);
SH_HIDDEN struct span *span_lookup(const void *p);

/* repair.c */
SH_HIDDEN void sh_heap_repair(struct theap *h);
SH_HIDDEN uint64_t sh_heap_trim(struct theap *h);
/* Is the process that owns slot t gone (dead, a zombie, or its pid reused)?
 * Never for an orphaned slot (owner_pid < 0). */
SH_HIDDEN int sh_slot_gone(const struct theap *t);

/* recover.c */
/* 0: use it; 1: use a private heap instead; 2: removed (SHMHEAP_FRESH), start over */
SH_HIDDEN int sh_attach_recover(uint64_t t0);
SH_HIDDEN const char *sh_self_exe(void);
SH_HIDDEN int sh_program_is_self(void);
SH_HIDDEN void sh_proc_register(void);
SH_HIDDEN void sh_proc_leave(void);
SH_HIDDEN void sh_reap_gone(void);

/* image.c */
SH_HIDDEN void sh_image_reexec(void);
SH_HIDDEN void sh_image_check(void);
SH_HIDDEN int sh_image_reexecuted(void);
/* recover.c, for image.c: would this process use the keyed heap at h? */
SH_HIDDEN int sh_heap_is_for_self(const struct shm_header *h);

/* thread.c */
SH_HIDDEN struct theap *sh_heap_acquire(void);
SH_HIDDEN void sh_heaps_release_copied(pid_t parent, struct theap *keep);
SH_HIDDEN void sh_thread_key_init(void);
SH_HIDDEN void sh_thread_release_self(void);
SH_HIDDEN void sh_thread_forget(void);

/* alloc.c */
SH_HIDDEN void *sh_malloc(size_t n);
SH_HIDDEN void *sh_calloc(size_t n, size_t m);
SH_HIDDEN void sh_free(void *p);
SH_HIDDEN void *sh_realloc(void *p, size_t n);
SH_HIDDEN void *sh_memalign(size_t align, size_t n);
SH_HIDDEN size_t sh_usable_size(const void *p);
SH_HIDDEN void sh_heap_gate_wait(struct theap *h);

/* fork.c */
SH_HIDDEN void sh_fork_init(void);
SH_HIDDEN void sh_gate_barrier_register(void);

/* stats.c */
SH_HIDDEN void sh_stats_totals(uint64_t *in_use, uint64_t *mapped, uint64_t *nmalloc, uint64_t *nfree);
SH_HIDDEN void sh_print_exit_stats(void);

#endif
