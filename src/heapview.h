/* A heap seen from outside (the dump tool) or from inside (shmheap_check):
 * validated header, bounds-checked walks.  See heapview.c. */
#ifndef SHMHEAP_HEAPVIEW_H
#define SHMHEAP_HEAPVIEW_H

#include "internal.h"

struct hv {
  const char *base; /* wherever the segment is mapped, not necessarily its home */
  size_t len;
  const struct shm_header *h;
  const struct theap *heaps;
  const struct span *spans;
  const uint32_t *pagemap;
};

struct hv_usage {
  uint64_t top_pages, free_spans, free_pages, dirty_pages, small_pages;
  uint64_t large_count, large_pages;
  uint64_t cls_spans[SH_NCLASS + 1], cls_used[SH_NCLASS + 1];
  int64_t in_use;
  uint64_t nmalloc, nfree;
  uint32_t heaps_owned;
};

/* 0 if map[0, len) holds a heap of this format whose header is sound; else
 * -1 and why says what it is instead. */
SH_HIDDEN int hv_open(struct hv *v, const void *map, size_t len, char *why, size_t whylen);

typedef void (*hv_report)(void *ctx, const char *problem);
/* Checks every invariant of internal.h; calls rep for each problem found and
 * returns their number (0: consistent), or -1 if its scratch memory (one byte
 * per span descriptor) could not be allocated.  Meaningful on a quiet heap: threads
 * allocating while it runs can make it see a list mid-edit. */
SH_HIDDEN long hv_check(const struct hv *v, hv_report rep, void *ctx);

/* Calls fn for every live block (offset from the base, usable size, size
 * class or 0 for a large block) in address order, until fn returns nonzero.
 * Returns the number of blocks passed to fn. */
typedef int (*hv_block_fn)(void *ctx, uint64_t off, uint64_t size, unsigned cls);
SH_HIDDEN uint64_t hv_blocks(const struct hv *v, hv_block_fn fn, void *ctx);

/* Usable size of the block that starts at off, or 0 if no block starts there. */
SH_HIDDEN uint64_t hv_block_size(const struct hv *v, uint64_t off);

/* Usage by kind and size class, as far as the metadata is sound. */
SH_HIDDEN void hv_usage(const struct hv *v, struct hv_usage *u);

/* Parent and start time of pid from /proc/PID/stat; 0 if no such process. */
SH_HIDDEN int hv_proc_stat(pid_t pid, pid_t *ppid, uint64_t *start);
/* Is the process of a process-table entry alive (same pid, same start)? */
SH_HIDDEN int hv_proc_alive(const struct shm_proc *e);

/* The heap's users: processes listed in its table, alive or gone without
 * leaving (killed, _exit, exec).  pid: the first alive one. */
struct hv_users {
  unsigned alive, dead;
  int32_t pid;
};
SH_HIDDEN void hv_users(const struct hv *v, struct hv_users *u);

#endif
