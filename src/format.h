/* The segment's format: every structure that lives in the segment, its
 * layout (a function of the segment's size alone) and the validation of a
 * header read from a mapping.  Shared by the library, shmheap-dump and the
 * tests; it knows nothing of the process that maps the segment.
 *
 * Invariants (the rest of the code relies on them; view.c's hv_check checks
 * them, repair.c restores I7, journal.c I6; a debug build asserts them where
 * they are enforced, naming them in SH_ASSERT):
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
 *  I6  The page allocator (free bins, top, descriptor pool) changes only
 *      under hdr->lock, a robust process-shared mutex, and every store it
 *      makes is undo-logged first (journal.c), between journal_begin and
 *      journal_end: a process that dies holding the lock has its edit
 *      rolled back by the next one to take it.  Stores
 *      made under the lock that are not logged are each atomic on their own
 *      or idempotent: the fields of a span before its logged state store
 *      publishes it, roots (struct root), the image record (n last), and
 *      the repairs of repair.c (rerun from scratch if interrupted).
 *      A long edit is a series of steps (journal_step), each complete.
 *  I7  A thread heap is edited only between heap_enter and heap_leave (busy
 *      set); heap 0, shared by threads without a slot, only under its lock.
 *      A slot left busy by a dead thread is rebuilt from its spans
 *      (repair.c) before anyone uses it again; one left idle is consistent.
 *  I8  A span is on the dirty list (hdr->dirty_head, linked through dnext
 *      and dprev) exactly when it is free with ndirty > 0, and the list is
 *      in order of dirty_ms, oldest first: a purge takes spans from its head
 *      and stops at the first that is not due, so it visits what it gives
 *      back and one more, however many free spans there are.
 */
#ifndef SHMHEAP_FORMAT_H
#define SHMHEAP_FORMAT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "os.h"
#include "shmheap.h"

/* ---- format constants (any change here bumps SH_FORMAT) ---------------- */

#define SH_MAGIC 0x5041454d48534853ULL /* "SHSHMEAP" little-endian */
#define SH_FORMAT 7u

#define SH_PAGE_SHIFT 12
#define SH_PAGE ((size_t)1 << SH_PAGE_SHIFT)
#define SH_ALIGN 16 /* every block is 16-byte aligned */

#define SH_NCLASS 40             /* size classes 1..40; 0 is unused */
#define SH_SMALL_MAX 32768       /* largest small block */
#define SH_MAX_HEAPS 1024        /* thread heaps per segment */
#define SH_NBINS 96              /* free-span bins */
#define SH_EXACT_BINS 64         /* bins 1..64 hold exactly that many pages */
#define SH_ROOT_MAX 256          /* named roots (documented in libshmheap(3)) */
#define SH_ROOT_NAME 48          /* a root's name, NUL included */
#define SH_ULOG_MAX 1024         /* undo-log entries of one locked edit */
#define SH_MAX_PROCS 1024        /* processes using one keyed heap at a time */
#define SH_IMAGE_MAX 128         /* objects (executable, libraries) recorded */

/* ---- span descriptors -------------------------------------------------- */

enum span_state {
  SPAN_NONE = 0,  /* descriptor not in use (on the descriptor free list) */
  SPAN_FREE = 1,  /* free pages, in a bin */
  SPAN_SMALL = 2, /* carved into blocks of one size class */
  SPAN_LARGE = 3, /* one large block */
};

/* span.flags */
#define SPAN_FULL 0x1    /* small span is on its heap's full list */
#define SPAN_DAMAGED 0x2 /* found corrupt (a free list, its shape): never allocated from again */
#define SPAN_QUARANTINED 0x4 /* damaged, taken off its heap's lists and counted (recover.c) */

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
  union {
    uint64_t free;   /* small: local free list head (offset), owner only */
    struct {         /* free with dirty pages: the dirty list (I8) */
      uint32_t dnext, dprev;
    };
  };
  _Atomic uint64_t thread_free; /* small: remote frees (offset | TF_NOTIFY) */
  uint32_t next, prev; /* list links: heap class list or free bin */
  uint32_t ndirty;     /* free: upper bound of pages that may be non-zero */
  uint32_t pad;
  uint64_t dirty_ms;   /* free: when its pages were freed, ms (its place in the dirty list) */
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
  uint32_t pend_span;           /* small_collect in progress: the span ... */
  uint64_t in_use;              /* bytes malloc'd minus bytes freed by this heap, modulo
                                 * 2^64 (below zero when it frees other heaps'
                                 * blocks; unsigned, so that no value a crash
                                 * leaves can overflow an update) */
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
/* shm_proc.flags: bit 0, the process is inside exec (set by its exec call,
 * cleared if the exec fails): if its pid is gone later, it left by exec,
 * not by a crash.  The other bits: a tag of the executable that registered
 * (never 0), which tells an exec'd process from one still running it. */
#define SH_PROC_EXEC 1u
#define SH_PROC_TAG(flags) ((flags) & ~SH_PROC_EXEC)

struct shm_proc {
  _Atomic int32_t pid; /* 0: entry free */
  _Atomic uint32_t flags; /* above; 0 in heaps of libraries before them */
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
  uint32_t dirty_head, dirty_tail; /* free spans with dirty pages, oldest first (I8) */
  uint64_t live_pages;   /* pages in small and large spans */
  uint64_t large_in_use; /* bytes of large blocks handed out */
  uint64_t large_count;
  uint64_t purged_pages; /* statistics */
  uint64_t purge_due_ms; /* no free span is old enough to purge before this */
  uint32_t max_heap;     /* heaps[0, max_heap) have ever been used */
  uint32_t last_recovery_us; /* the last re-attach's recovery (attach, check, repair), µs; 0: none yet */
  /* statistics of the collections at restart (collect.c), for shmheap-dump */
  uint32_t gc_last_us;      /* the last collection's time, µs (0: took less than 1 µs, or none yet) */
  uint32_t gc_last_reset;   /* 1: it emptied a heap whose roots held no pointer, without a walk */
  uint64_t gc_runs;         /* collections made */
  uint64_t gc_last_blocks, gc_last_bytes; /* what the last one freed */
  uint64_t gc_total_blocks, gc_total_bytes; /* what all of them freed */
  uint64_t link_secret;  /* encodes the links inside free blocks (small.h); random */
  struct root roots[SH_ROOT_MAX]; /* created and removed under lock */

  /* ownership and recovery (recover.c), under lock */
  char program[SH_PROGRAM_MAX]; /* executable the heap belongs to */
  int32_t last_pid;      /* the process that attached last */
  uint32_t crashes;      /* statistics: attaches that found a crash */
  uint64_t attaches;     /* statistics: re-attaches (not by a process again after its exec) */
  struct shm_proc procs[SH_MAX_PROCS];
  struct image image;    /* recorded by the first process, checked by the others */
  struct ulog ulog;      /* the edit in progress under lock (I6) */
};

/* Free-span bin of a span of n pages: exact up to 64 pages, then one bin
 * per power of two. */
static inline unsigned fmt_bin_of(uint32_t n) {
  if (n <= SH_EXACT_BINS) return n - 1;
  return SH_EXACT_BINS + (31 - (unsigned)__builtin_clz(n)) - 6;
}

/* ---- layout and validation (format.c) -------------------------------------- */

/* Places the header, the thread heaps, the page map, the span descriptors and
 * the heap pages of a segment of size bytes formed at base. */
SH_HIDDEN void fmt_layout(struct shm_header *h, size_t size, uintptr_t base);

/* A validated mapping of a segment, wherever it is mapped. */
struct hv {
  const char *base; /* wherever the segment is mapped, not necessarily its home */
  size_t len;
  const struct shm_header *h;
  const struct theap *heaps;
  const struct span *spans;
  const uint32_t *pagemap;
  /* The layout as validated, kept here because a live heap's header is
   * writable by every process using it: a bound re-read from it later could
   * have changed since it was checked and send a walk past the mapping. */
  uint64_t heap_off;
  uint32_t npages, nspans;
};

/* 0 if map[0, len) holds a heap of this format whose header is sound; else
 * -1 and why says what it is instead. */
SH_HIDDEN int fmt_open(struct hv *v, const void *map, size_t len, char *why, size_t whylen);

/* ---- this process's mapping (format.c) -------------------------------------- */

/* Where the segment is mapped in this process (format.c): what every layer
 * above reads the segment through. */
struct sh_map {
  char *base; /* segment address */
  struct shm_header *hdr;
  struct theap *heaps;
  struct span *spans;
  uint32_t *pagemap;
  uintptr_t heap_lo; /* first heap byte */
  uint64_t heap_off; /* its offset */
  uint64_t secret;   /* hdr->link_secret, read once */
  size_t heap_len;
  uint32_t nspans; /* descriptors reserved: a page map entry not below it is garbage */
  int shmid;
  /* The segment is on hugetlb pages (SHMHEAP_HUGEPAGES=hugetlb, or a keyed
   * heap formed so): a purge can give back whole 2 MiB pages only. */
  int hugetlb;
};
extern SH_HIDDEN struct sh_map G;

/* Points G at the segment mapped at base (its header already laid out). */
SH_HIDDEN void map_set(char *base, int shmid);
SH_HIDDEN void map_clear(void);

#endif
