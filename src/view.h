/* The reader: a heap seen from outside (shmheap-dump) or from inside
 * (shmheap_check), through a mapping validated by fmt_open (format.h), with
 * bounds-checked walks.  It reads the heap and never allocates from it.
 * See view.c. */
#ifndef SHMHEAP_VIEW_H
#define SHMHEAP_VIEW_H

#include "format.h"

struct hv_usage {
  uint64_t top_pages, free_spans, free_pages, dirty_pages, small_pages;
  uint64_t large_count, large_pages;
  uint64_t cls_spans[SH_NCLASS + 1], cls_used[SH_NCLASS + 1];
  int64_t in_use;
  uint64_t nmalloc, nfree;
  uint32_t heaps_owned;
};

typedef void (*hv_report)(void *ctx, const char *problem);
/* Checks every invariant of format.h; calls rep for each problem found and
 * returns their number (0: consistent), or -1 if its scratch memory (12 bytes
 * per span descriptor, mapped from the system, not the heap) could not be had.  Meaningful on a quiet heap: threads
 * allocating while it runs can make it see a list mid-edit. */
SH_HIDDEN long hv_check(const struct hv *v, hv_report rep, void *ctx);

/* The same, sorting what it finds by what can be done about it (the
 * library's attach repairs with it).  ctx goes to span and heap as well. */
struct hv_faults {
  void (*span)(void *ctx, uint32_t i);  /* small span i is unsound: take it out of use */
  void (*heap)(void *ctx, uint32_t hi); /* heap hi's class lists are wrong: rebuild them */
  unsigned counters; /* header statistics differ from the walk's (below) */
  unsigned whole;    /* anything else: the heap as a whole cannot be trusted */
  char first[160];   /* the first of those */
  int walked;        /* the walk got through the spans: the counts below are whole */
  uint64_t dirty, live, large, large_bytes;
};
#define HV_META 1u /* metadata only: block lists are not walked, blocks not read */
SH_HIDDEN long hv_check_ex(const struct hv *v, unsigned flags, hv_report rep, void *ctx, struct hv_faults *f);

/* Calls fn for every live block (offset from the base, usable size, size
 * class or 0 for a large block) in address order, until fn returns nonzero.
 * Returns the number of blocks passed to fn. */
typedef int (*hv_block_fn)(void *ctx, uint64_t off, uint64_t size, unsigned cls);
SH_HIDDEN uint64_t hv_blocks(const struct hv *v, hv_block_fn fn, void *ctx);

/* Usable size of the block that starts at off, or 0 if no block starts there. */
SH_HIDDEN uint64_t hv_block_size(const struct hv *v, uint64_t off);

/* Usage by kind and size class, as far as the metadata is sound. */
SH_HIDDEN void hv_usage(const struct hv *v, struct hv_usage *u);

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
