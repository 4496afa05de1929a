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
 *      hdr->lock, a robust process-shared mutex.
 */
#ifndef SHMHEAP_INTERNAL_H
#define SHMHEAP_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "shmheap.h"

#define SH_API __attribute__((visibility("default")))
#define SH_HIDDEN __attribute__((visibility("hidden")))
#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
#define SH_TLS __thread __attribute__((tls_model("initial-exec")))

/* ---- format constants (any change here bumps SH_FORMAT) ---------------- */

#define SH_MAGIC 0x5041454d48534853ULL /* "SHSHMEAP" little-endian */
#define SH_FORMAT 2u

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

/* The default attach address and size (documented in shmheap(7)). */
#define SH_DEFAULT_ADDR ((uintptr_t)0x200000000000ULL)
#define SH_DEFAULT_SIZE ((size_t)64 << 30)
#define SH_MIN_SIZE ((size_t)4 << 20)
#define SH_ADDR_ALIGN ((uintptr_t)1 << 21) /* 2 MiB: attach address granularity */

/* Exit statuses (documented in shmheap(7)). */
#define SH_EXIT_CONFIG 78  /* EX_CONFIG: a SHMHEAP_* variable is wrong */
#define SH_EXIT_OSERR 71   /* EX_OSERR: the segment could not be created/attached */
#define SH_EXIT_FOREIGN 65 /* EX_DATAERR: the keyed segment is not a usable heap */

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
  uint8_t pad[12];
};
_Static_assert(sizeof(struct span) == 64, "span descriptor is one cache line");

/* ---- thread heaps ------------------------------------------------------- */

struct heap_class {
  uint32_t avail; /* spans with free or uncarved blocks; head is the current one */
  uint32_t full;  /* spans found exhausted */
};

struct theap {
  _Atomic uint32_t busy;        /* inside a lock-free heap edit (fork gate) */
  uint16_t index;
  uint16_t pad0;
  _Atomic int32_t owner_pid;    /* 0: slot free */
  int32_t owner_tid;
  _Atomic uint32_t full_remote; /* remote frees hit spans on the full list */
  uint32_t pad1;
  int64_t in_use;               /* bytes malloc'd minus bytes freed by this heap */
  uint64_t nmalloc, nfree;
  struct heap_class cls[SH_NCLASS + 1];
  pthread_mutex_t lock;         /* only heap 0: shared by threads with no heap of their own */
  uint8_t pad2[64];
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
  _Atomic uint32_t needs_repair; /* a lock owner died; see lock.c */
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
  uint32_t max_heap;     /* heaps[0, max_heap) have ever been used */
  uint32_t pad;
  struct root roots[SH_ROOT_MAX]; /* created and removed under lock */
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
  int reattached;
  struct options opt;
};

extern SH_HIDDEN struct global G;
extern SH_HIDDEN _Atomic int sh_ready; /* 0 none, 1 forming, 2 ready */
extern SH_HIDDEN SH_TLS struct theap *tl_heap;
extern SH_HIDDEN _Atomic int sh_fork_gate;

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

static inline void *off2ptr(uint64_t off) { return G.base + off; }
static inline uint64_t ptr2off(const void *p) { return (uint64_t)((const char *)p - G.base); }
static inline char *span_addr(const struct span *s) {
  return (char *)G.heap_lo + ((size_t)s->first << SH_PAGE_SHIFT);
}
static inline uint32_t span_index(const struct span *s) { return (uint32_t)(s - G.spans); }

/* ---- cross-file functions ------------------------------------------------ */

/* init.c */
SH_HIDDEN void sh_init(void);
SH_HIDDEN void sh_init_classes(void);

/* options.c */
SH_HIDDEN void sh_options_parse(struct options *o);
SH_HIDDEN int sh_parse_size(const char *s, size_t *out);
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
SH_HIDDEN struct span *span_lookup(const void *p);

/* thread.c */
SH_HIDDEN struct theap *sh_heap_acquire(void);
SH_HIDDEN void sh_heaps_release_process(pid_t pid, struct theap *keep, int clear_busy);
SH_HIDDEN void sh_thread_key_init(void);
SH_HIDDEN void sh_thread_release_self(void);

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
