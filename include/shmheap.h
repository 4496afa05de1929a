/* libshmheap: the program's heap in a System V shared memory segment.
 *
 * Loaded with LD_PRELOAD=libshmheap.so (or linked with -lshmheap), the library
 * replaces malloc, free, calloc, realloc, the aligned allocators, the glibc
 * extensions and every C++ operator new/delete.  Every block they return lies
 * in one SysV segment, chosen by SHMHEAP_KEY and sized by SHMHEAP_SIZE, that is
 * attached at a fixed address and outlives the process.  See shmheap(7) for the
 * variables and libshmheap(3) for this API.
 *
 * Nothing here needs to be called for the heap to work: the segment is set up
 * before main().  These functions let a program ask about its heap and choose
 * how a fork treats it.
 */
#ifndef SHMHEAP_H
#define SHMHEAP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SHMHEAP_VERSION_MAJOR 0
#define SHMHEAP_VERSION_MINOR 1

/* What a fork does with the heap.
 *
 * SHMHEAP_FORK_COPY (the default, SHMHEAP_FORK=copy): the child gets a private
 * copy of the heap at the same address, as fork does with an ordinary heap.
 * Only the memory in use is copied.
 *
 * SHMHEAP_FORK_SHARE (SHMHEAP_FORK=share): parent and child keep using the same
 * segment.  Both allocate and free in it concurrently and see each other's
 * writes: objects built before the fork are shared, not copied. */
enum shmheap_fork_mode {
  SHMHEAP_FORK_COPY = 0,
  SHMHEAP_FORK_SHARE = 1,
};

/* fork(2) with the given mode for this one fork, whatever the process default
 * is.  Returns what fork returns; -1 with errno EINVAL for an unknown mode. */
pid_t shmheap_fork(enum shmheap_fork_mode mode);

/* Sets the mode every later fork of the process uses (the initial value comes
 * from SHMHEAP_FORK).  Returns the previous mode, or -1 with errno EINVAL for an
 * unknown mode. */
int shmheap_set_fork_mode(enum shmheap_fork_mode mode);

/* The mode the next plain fork() will use. */
enum shmheap_fork_mode shmheap_get_fork_mode(void);

/* Nonzero if p points into this process's heap segment (any byte of it). */
int shmheap_contains(const void *p);

/* A description of the heap this process uses. */
struct shmheap_info {
  void *base;            /* attach address of the segment */
  size_t size;           /* segment size in bytes */
  int shmid;             /* SysV segment id */
  int key;               /* SysV key; 0 (IPC_PRIVATE) for a private heap */
  char name[64];         /* SHMHEAP_KEY when it was a name, else "" */
  int reattached;        /* 1 if the segment existed before this process */
  pid_t creator_pid;     /* process that formed the heap */
  size_t in_use;         /* bytes in blocks handed out and not freed */
  size_t heap_bytes;     /* bytes of the heap area carved so far */
  size_t free_dirty;     /* bytes of free pages still holding memory */
  size_t max_small;      /* largest size served from size classes */
  uint64_t nmalloc;      /* small blocks handed out, since the heap was formed */
  uint64_t nfree;        /* small blocks freed, since the heap was formed */
  uint64_t large_count;  /* large blocks live */
  uint64_t purged_bytes; /* bytes handed back to the system so far */
  uint64_t repairs;      /* crash repairs made on this heap so far: a lock whose
                            owner died rolled back, or a thread heap rebuilt */
};

/* Fills *info.  Returns 0, or -1 with errno EINVAL when info is NULL. */
int shmheap_get_info(struct shmheap_info *info);

/* Named roots: how a process finds its objects in a heap it re-attached.
 * A root maps a name (1 to SHMHEAP_ROOT_NAME_MAX bytes) to a pointer into
 * the heap; a heap holds up to SHMHEAP_ROOT_MAX roots.  Setting a root is
 * atomic: a reader, or a process that attaches after a crash at any
 * instruction, sees the old pointer or the new one, never a mix. */
#define SHMHEAP_ROOT_MAX 256
#define SHMHEAP_ROOT_NAME_MAX 47

/* Creates or updates the root name to point at ptr, which must point into
 * the heap (any byte of it) or be NULL.  Returns 0, or -1 with errno EINVAL
 * (name NULL or empty, ptr outside the heap), ENAMETOOLONG (name too long)
 * or ENOSPC (all SHMHEAP_ROOT_MAX roots are in use). */
int shmheap_root_set(const char *name, const void *ptr);

/* The pointer root name holds.  NULL with errno ENOENT if there is no such
 * root (or EINVAL / ENAMETOOLONG for a bad name); NULL with errno unchanged
 * if the root holds a null pointer. */
void *shmheap_root_get(const char *name);

/* Removes root name (the block it points to is not freed).  Returns 0, or -1
 * with errno ENOENT, EINVAL or ENAMETOOLONG. */
int shmheap_root_remove(const char *name);

/* Calls fn for each root in turn, with its name and pointer, until fn
 * returns nonzero.  Returns the number of roots visited. */
int shmheap_root_each(int (*fn)(void *ctx, const char *name, void *ptr), void *ctx);

/* What this process found when it attached its heap: shmheap_recovered(). */
enum shmheap_origin {
  SHMHEAP_NEW = 0,     /* a heap this process formed (and every private heap) */
  SHMHEAP_CLEAN = 1,   /* a heap that existed; its users had all left cleanly */
  SHMHEAP_CRASHED = 2, /* a heap that existed and was left by a crash: repaired */
};

struct shmheap_recovery {
  int origin;                /* enum shmheap_origin */
  pid_t previous_pid;        /* the last process that attached the heap before this one */
  unsigned dead_processes;   /* users that ended without leaving (killed, _exit); not exec */
  unsigned heaps_repaired;   /* thread heaps rebuilt: their thread died inside malloc/free */
  unsigned heaps_released;   /* idle thread heaps of gone processes made free again */
  unsigned lock_recovered;   /* 1: a dead process held the heap's lock; its edit was undone */
  uint64_t spans_returned;   /* empty spans of gone threads given back to the heap */
  uint64_t recovery_ns;      /* time spent attaching, checking and repairing */
  uint64_t check_ns;         /* of which: checking the heap's metadata */
  uint64_t spans_quarantined; /* small spans found corrupt and taken out of use */
  uint64_t blocks_lost;      /* their free blocks, never handed out again */
  /* The collection at restart (SHMHEAP_GC=auto): blocks no named root
   * reached, freed before main; 0 when none ran. */
  uint64_t gc_blocks;        /* blocks freed */
  uint64_t gc_bytes;         /* their bytes (large blocks: their pages) */
  uint64_t gc_ns;            /* time the collection took (part of recovery_ns) */
  /* 1: no root held a pointer, so the heap was emptied whole by resetting
   * its metadata, without a walk (gc_blocks and gc_bytes then come from
   * the heap's counters). */
  uint64_t gc_reset;
};

/* Whether this process attached a heap that existed before it, and whether
 * that heap was left cleanly or by a crash.  Fills *info if it is not NULL.
 * Returns info->origin.
 *
 * The structure grows at its end as the library learns to say more (the
 * gc_ fields came after the first packaged release): a call compiled with this header goes through
 * shmheap_recovered_size with the size this header gives it, and the
 * library fills no more than that, so a program built against an older
 * header still links and runs, reading only the fields it knows.  The
 * function itself (its address, dlsym) fills the fields up to blocks_lost,
 * that release's structure. */
int shmheap_recovered(struct shmheap_recovery *info);
/* Fills the first size bytes of *info (at most sizeof *info, whole fields). */
int shmheap_recovered_size(struct shmheap_recovery *info, size_t size);
#define shmheap_recovered(info) shmheap_recovered_size((info), sizeof(struct shmheap_recovery))

/* Warm restart.  A process that attaches a keyed heap with blocks in use
 * maps the pages of those blocks in before the program touches them
 * (SHMHEAP_PREFAULT, shmheap(7)): before main for a small heap, on
 * background threads for a large one, so that the program's first pass over
 * its objects does not take a page fault per 4 KiB.  The program may use the
 * heap at once.  This reports how far that has come. */
enum shmheap_prefault_mode {
  SHMHEAP_PREFAULT_NONE = 0,    /* nothing to map: off, a fresh or private heap, or none in use */
  SHMHEAP_PREFAULT_SYNC = 1,    /* mapped before main */
  SHMHEAP_PREFAULT_THREADS = 2, /* mapped by background threads */
};
struct shmheap_prefault {
  int mode;               /* enum shmheap_prefault_mode */
  int running;            /* 1 while background threads are mapping */
  int finished;           /* 1 once every in-use page has been walked */
  unsigned threads;       /* threads mapping (1 for SHMHEAP_PREFAULT_SYNC) */
  uint64_t bytes_planned; /* bytes in use when the attach found the heap */
  uint64_t bytes_mapped;  /* bytes mapped in so far */
  uint64_t elapsed_ns;    /* from the start until finished, or until now */
};

/* Fills *st.  Returns st->finished, or -1 with errno EINVAL when st is
 * NULL.  A fork parks the threads for its duration (the parent's go on
 * where they were; a child has none and reports SHMHEAP_PREFAULT_NONE) and
 * exit ends them. */
int shmheap_prefault_status(struct shmheap_prefault *st);

/* Supervision (the recovery model of shmheap(7)).  The calling process
 * becomes a supervisor: it forks a worker that shares the heap and returns
 * from this call in the worker only.  When the worker dies by a signal or
 * exits with a non-zero status, the supervisor repairs the heap and forks a
 * new worker, which returns from the call with every object the dead one
 * left.  The supervisor itself never returns: it exits with status 0 when a
 * worker exits 0, and with the last worker's status (128 + signal for a
 * signal) when the restart limit is reached.  SIGTERM, SIGINT, SIGHUP and
 * SIGQUIT sent to the supervisor are passed on to the worker, and a worker
 * that ends after one is not restarted. */
struct shmheap_supervise_options {
  unsigned max_restarts;  /* restarts allowed in a row; 0: no limit */
  unsigned backoff_ms;    /* wait before the first restart; doubles each time (0: 100) */
  unsigned backoff_max_ms; /* ceiling of the wait (0: 10000) */
  unsigned stable_ms;     /* a worker that lived this long resets the count and wait (0: 10000) */
  int quiet;              /* nonzero: no line on stderr per restart */
};

/* Returns in the worker: the number of workers that died before it (0 for
 * the first).  opt may be NULL for the defaults.  Returns -1 with errno in
 * the caller if the first worker cannot be forked (nothing else changed). */
int shmheap_supervise(const struct shmheap_supervise_options *opt);

/* Called once per problem found by shmheap_check, with a one-line text. */
typedef void (*shmheap_report_fn)(void *ctx, const char *problem);

/* Walks every piece of allocator metadata in the heap (spans, page map, free
 * lists of every block, free-page bins, thread heaps, counters) and checks
 * the allocator's invariants.  Calls report (if not NULL) for each problem.
 * Returns the number of problems, 0 for a consistent heap, or -1 with errno
 * ENOMEM if the check could not get its scratch memory.  The walk holds the
 * page allocator's lock (other threads' large blocks and new spans wait for
 * it; the reports are made after it is released), so the library's own
 * background purge and other processes sharing the heap never show it a
 * span or page count mid-edit.  The result is exact when no other thread
 * or process allocates small blocks during the call; one that does can make
 * it see a free list in the middle of an edit. */
int shmheap_check(shmheap_report_fn report, void *ctx);

#ifdef __cplusplus
}
#endif

#endif
