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

/* Called once per problem found by shmheap_check, with a one-line text. */
typedef void (*shmheap_report_fn)(void *ctx, const char *problem);

/* Walks every piece of allocator metadata in the heap (spans, page map, free
 * lists of every block, free-page bins, thread heaps, counters) and checks
 * the allocator's invariants.  Calls report (if not NULL) for each problem.
 * Returns the number of problems, 0 for a consistent heap, or -1 with errno
 * ENOMEM if the check could not get its scratch memory.  The result is exact
 * when no other thread or process allocates during the call; one that does
 * can make it see a list in the middle of an edit. */
int shmheap_check(shmheap_report_fn report, void *ctx);

#ifdef __cplusplus
}
#endif

#endif
