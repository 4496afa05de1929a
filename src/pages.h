/* The page allocator layer: the segment as this process maps it, the robust
 * lock (lock.c), the undo log (journal.c) and spans of pages (pages.c).
 *
 * A locked edit of the segment reads:
 *
 *     pages_lock();          the lock; a dead owner's edit is rolled back
 *     journal_begin();
 *     ... JW(x) = v ...      every store logged first (I6)
 *     journal_step();        optional: the edit so far is complete
 *     journal_end();         complete: nothing of it is undone
 *     page_purge_due();      optional: hand back pages unused for long
 *     pages_unlock();
 *
 * Each step of an edit logs at most SH_ULOG_MAX stores; an edit of any
 * length is a series of complete steps. */
#ifndef SHMHEAP_PAGES_H
#define SHMHEAP_PAGES_H

#include "format.h"

/* I1: the segment refers to itself by offset only. */
static inline void *off2ptr(uint64_t off) { return G.base + off; }
static inline uint64_t ptr2off(const void *p) {
  SH_ASSERT((uintptr_t)p - (uintptr_t)G.base < G.hdr->size, "I1");
  return (uint64_t)((const char *)p - G.base);
}
static inline char *span_addr(const struct span *s) {
  return (char *)G.heap_lo + ((size_t)s->first << SH_PAGE_SHIFT);
}
static inline uint32_t span_index(const struct span *s) { return (uint32_t)(s - G.spans); }

/* ---- the robust lock (lock.c) ------------------------------------------------- */

enum lock_result {
  LOCK_TAKEN,      /* it is ours now */
  LOCK_OWNER_DIED, /* ours, from an owner that died holding it: repair what it guards */
  LOCK_HELD,       /* this thread holds it already (a signal handler interrupted it) */
  LOCK_BUSY,       /* LOCK_TRY or a bounded wait: another thread holds it */
  LOCK_BROKEN,     /* LOCK_FOUND only: pthread rejects the lock word */
};
#define LOCK_WAIT 0u
#define LOCK_TRY 1u   /* do not wait */
#define LOCK_COUNT 2u /* count it in locks_held() (a fork from a signal handler asks) */
#define LOCK_FOUND 4u /* a lock of a heap found in the segment: a bad word is LOCK_BROKEN */

SH_HIDDEN void lock_init(pthread_mutex_t *m);
SH_HIDDEN enum lock_result lock_acquire(pthread_mutex_t *m, unsigned how);
/* As lock_acquire, waiting at most ns (then LOCK_BUSY). */
SH_HIDDEN enum lock_result lock_acquire_within(pthread_mutex_t *m, unsigned how, uint64_t ns);
SH_HIDDEN void lock_release(pthread_mutex_t *m, unsigned how);
SH_HIDDEN int locks_held(void); /* LOCK_COUNT locks this thread holds or is acquiring */

/* ---- the undo log (journal.c) ---------------------------------------------------- */

SH_HIDDEN void journal_begin(void);
SH_HIDDEN void journal_step(void); /* the edit so far is complete: it will not be undone */
SH_HIDDEN void journal_end(void);
SH_HIDDEN int journal_open(void);  /* between begin and end (for assertions) */
SH_HIDDEN void *journal_touch(void *p, unsigned width);
SH_HIDDEN int journal_rollback(void); /* returns the entries undone */
/* JW(x) is x, after its old value is logged: write "JW(h->top) += n" for a
 * store under hdr->lock (I6). */
#define JW(lv) (*(__typeof__(lv) *)journal_touch((void *)&(lv), sizeof(lv)))

/* ---- spans of pages (pages.c) -------------------------------------------------------- */

/* hdr->lock; 1 if its owner had died and its edit was rolled back. */
SH_HIDDEN int pages_lock(void);
/* A list of span descriptors that leaves the descriptors in use or loops:
 * the metadata was overwritten since attach checked it.  Says which list
 * and stops (SIGABRT); the next start refuses or repairs the heap. */
SH_HIDDEN void pages_bad_list(const char *list, unsigned which, uint32_t at) __attribute__((noreturn, cold));
/* Is step n (from 1) of a walk of descriptor lists at i still inside them? */
static inline int span_step_ok(uint32_t i, uint32_t *n) {
  uint32_t count = G.hdr->span_count;
  return i < count && ++*n <= count;
}
/* The first pages_lock of a heap found in the segment (recover.c), whose
 * lock and log are untrusted: waits at most ns.  Returns as pages_lock, or
 * PAGES_WAITED (not taken), PAGES_BAD_LOCK (not taken: pthread rejects the
 * lock word) or PAGES_BAD_LOG (taken: the undo log holds entries though
 * its lock was free, so they are no edit of a dead owner). */
enum { PAGES_WAITED = -1, PAGES_BAD_LOCK = -2, PAGES_BAD_LOG = -3 };
SH_HIDDEN int pages_lock_found(uint64_t ns);
SH_HIDDEN void pages_unlock(void);
SH_HIDDEN int pages_locked(void); /* by this thread (for assertions) */

/* Inside a journal edit: */
SH_HIDDEN struct span *page_alloc(uint32_t npages, uint32_t align_pages, int *zeroed);
SH_HIDDEN void page_free(struct span *s);
SH_HIDDEN int page_resize(struct span *s, uint32_t npages); /* in place; 1 on success */
/* Forgets every small and large span: pages [0, top) become one free span,
 * all dirty, in one step of at most SH_NBINS + 32 logged stores, whatever
 * the heap's size.  What the thread heaps' lists name is the caller's. */
SH_HIDDEN void page_reset(void);
/* Under the lock, outside an edit (each purge is an edit of its own): */
SH_HIDDEN void page_purge_due(void);
/* page_purge_due sets pages_purge_wanted to 1 when more than the floor of
 * free pages is dirty, SHMHEAP_BACKGROUND is on and the background thread
 * (background.c) is not awake (pages_purger_awake, its own): the exported
 * free paths then start or wake it, outside any heap edit. */
extern SH_HIDDEN _Atomic int pages_purge_wanted, pages_purger_awake;
/* The background thread's step, under the lock, outside an edit: purges
 * what is due; returns the ms until more may be due, or UINT64_MAX when
 * no more than the floor is dirty, and then, under the lock, clears
 * pages_purger_awake (the thread sleeps until asked for). */
SH_HIDDEN uint64_t page_purge_background(void);
SH_HIDDEN size_t page_purge_all(void);

#endif
