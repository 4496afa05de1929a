/* The undo log of the span allocator (I6).
 *
 * Everything under hdr->lock (bins, descriptors, page map ends, top, the
 * counters) is edited by plain stores, many per operation; a process killed
 * between two of them would leave the span allocator torn.  So each store is
 * preceded by a log entry with the old value (JW() in pages.h), and the
 * log is emptied when the edit is complete: journal_end, or journal_step
 * between the steps of a long edit that are each complete (a purge of many
 * spans, the reap of many processes).  Each step logs at most SH_ULOG_MAX
 * stores, so an edit of any length fits.  The next thread to take
 * the lock after its owner died (EOWNERDEAD) rolls the log back, newest entry
 * first, which restores the state before the interrupted edit.
 *
 * Crash-safety of the log itself: an entry is written before n covers it, and
 * the store it guards comes after n does.  A crash before n is bumped loses
 * an entry whose store never happened; one after restores a value that may or
 * may not have changed.  Rolling back is idempotent, and n is cleared only
 * when it is done, so a repairer that dies mid-rollback leaves the same work
 * to the next one.  Program order is enough between these stores: the reader
 * is the next owner of the lock, which sees the dead thread's stores after
 * the kernel's robust-futex hand-over (a full barrier on the dying CPU). */
#include <string.h>

#include "pages.h"

#define WIDTH_SHIFT 56
#define OFF_MASK ((1ULL << WIDTH_SHIFT) - 1)

/* Is this thread inside an edit?  Per thread: a share-mode fork can come
 * while another thread of the parent edits, and that thread is not in the
 * child. */
static SH_TLS int editing;

int journal_open(void) { return editing; }

static void commit(void) {
  atomic_signal_fence(memory_order_seq_cst);
  atomic_store_explicit(&G.hdr->ulog.n, 0, memory_order_relaxed);
}

void journal_begin(void) {
  SH_ASSERT(locks_held() > 0 && !editing, "I6");
  SH_ASSERT(atomic_load_explicit(&G.hdr->ulog.n, memory_order_relaxed) == 0, "I6");
  editing = 1;
}

void journal_step(void) {
  SH_ASSERT(editing, "I6");
  commit();
}

void journal_end(void) {
  SH_ASSERT(editing, "I6");
  commit();
  editing = 0;
}

void *journal_touch(void *p, unsigned width) {
  SH_ASSERT(editing && locks_held() > 0, "I6");
  struct ulog *l = &G.hdr->ulog;
  uint32_t n = atomic_load_explicit(&l->n, memory_order_relaxed);
  uint64_t where = ptr2off(p) | (uint64_t)width << WIDTH_SHIFT;
  /* The same field logged just before (a counter bumped twice): its first
   * old value is the one to restore. */
  if (n && l->e[n - 1].where == where) return p;
  /* No step of an edit comes near this (the longest, a page_free that
   * merges both neighbours, logs about 40 stores); reaching it is a bug in
   * this library, and going on would make the edit impossible to undo. */
  if (unlikely(n >= SH_ULOG_MAX))
    os_die(SH_EXIT_OSERR, "libshmheap: internal error: one step of an edit of the page allocator logged more than %d stores", SH_ULOG_MAX);
  uint64_t old = 0;
  memcpy(&old, p, width);
  l->e[n].where = where;
  l->e[n].old = old;
  atomic_signal_fence(memory_order_seq_cst);
  atomic_store_explicit(&l->n, n + 1, memory_order_relaxed);
  atomic_signal_fence(memory_order_seq_cst);
  return p;
}

int journal_rollback(void) {
  struct ulog *l = &G.hdr->ulog;
  uint32_t n = atomic_load_explicit(&l->n, memory_order_relaxed);
  /* Never trust the segment: a count or an entry out of range is skipped
   * rather than followed. */
  if (n > SH_ULOG_MAX) n = SH_ULOG_MAX;
  const uint64_t log_lo = ptr2off(l), log_hi = log_lo + sizeof *l;
  /* Nothing under the lock is stored before the repair counter: the
   * identity of the heap, its layout and the lock itself are never undone. */
  const uint64_t first = offsetof(struct shm_header, repairs);
  for (uint32_t i = n; i-- > 0;) {
    uint64_t off = l->e[i].where & OFF_MASK;
    unsigned w = (unsigned)(l->e[i].where >> WIDTH_SHIFT);
    if ((w != 1 && w != 2 && w != 4 && w != 8) || off % w || off < first || off + w > G.hdr->size ||
        (off + w > log_lo && off < log_hi))
      continue;
    memcpy(G.base + off, &l->e[i].old, w);
  }
  commit();
  editing = 0;
  return (int)n;
}
