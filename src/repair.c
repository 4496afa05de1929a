/* Rebuilding a thread heap whose thread died inside an edit (I7).
 *
 * A thread heap's edits are lock-free and made by its owner alone, so they
 * are not logged; instead they are ordered so that the spans themselves say
 * what the heap holds, and the repair derives the rest from them:
 *
 *  - the spans a heap owns are the small spans whose descriptor names it
 *    (span_new_small publishes a span under the logged lock), so its class
 *    lists, which a kill can tear, are rebuilt from a scan of descriptors;
 *  - a block is free if it is on its span's local free list, on thread_free,
 *    in the chain a collect was moving (pend_*), or not carved yet.  Pushes
 *    write the link before the head, so the local list is always whole; a
 *    carve links the new blocks before it publishes them; a block popped by
 *    malloc or being pushed by free when the kill came is the one in flight,
 *    and is lost (decision 4);
 *  - used is recomputed from the list, since it is stored after it.
 * Only one span's blocks can be mid-edit: the one named in edit_span (or
 * pend_span), so only that one is walked; a repair costs a scan of the
 * descriptors, not a page fault per free block of a large heap.
 *
 * Every step is idempotent and the slot stays busy until the end, so a
 * repairer that dies leaves the same work to the next one. */
#include <errno.h>
#include <signal.h>
#include <string.h>

#include "heapview.h"

int sh_slot_gone(const struct theap *t) {
  pid_t pid = atomic_load(&((struct theap *)t)->owner_pid);
  if (pid <= 0) return 0;
  uint64_t start;
  if (hv_proc_stat(pid, NULL, &start)) return t->owner_start && start != t->owner_start;
  /* No such process in /proc (or a zombie) - unless there is no /proc. */
  if (G.start) return 1;
  return kill(pid, 0) != 0 && errno == ESRCH;
}

/* Block index of offset off in small span s, or -1 if off is not the start
 * of a carved-or-carvable block of it. */
static long block_index(const struct span *s, uint64_t off) {
  uint64_t start = ptr2off(span_addr(s));
  if (off < start) return -1;
  uint64_t rel = off - start;
  if (rel % s->bsize) return -1;
  uint64_t b = rel / s->bsize;
  return b < s->capacity ? (long)b : -1;
}

#define SEEN(b) (seen[(b) >> 3] & (1u << ((b)&7)))
#define MARK(b) (seen[(b) >> 3] |= (uint8_t)(1u << ((b)&7)))

/* Is off on the chain that starts at head?  The chain is thread_free of a
 * span whose owner is dead: other threads only push in front of it. */
static int on_chain(const struct span *s, uint64_t head, uint64_t off) {
  for (unsigned steps = 0; head && steps <= s->capacity; steps++) {
    if (head == off) return 1;
    if (block_index(s, head) < 0) return 0;
    head = *(const uint64_t *)off2ptr(head);
  }
  return 0;
}

static void repair_span(struct theap *h, struct span *s) {
  uint32_t si = span_index(s);
  int walk = si == h->edit_span || (h->pend_head && si == h->pend_span);
  s->flags &= (uint8_t)~SPAN_FULL;
  atomic_fetch_and_explicit(&s->thread_free, ~TF_NOTIFY, memory_order_relaxed);
  if (!walk) return;
  uint8_t seen[0x10000 / 8];
  memset(seen, 0, ((size_t)s->capacity + 7) / 8);
  /* The local free list.  A link that is not a block of the span, or one
   * seen before, cannot come from a kill (see above) but from corruption:
   * the list is cut there rather than followed. */
  unsigned n = 0;
  long top = -1;
  uint64_t *link = &s->free;
  while (*link) {
    long b = block_index(s, *link);
    if (b < 0 || SEEN(b)) {
      *link = 0;
      break;
    }
    MARK(b);
    n++;
    if (b > top) top = b;
    link = (uint64_t *)off2ptr(*link);
  }
  /* A collect that took a chain off thread_free and was killed before it
   * had linked all of it into the local list: link the rest in front. */
  uint64_t ph = h->pend_head;
  if (ph && h->pend_span == span_index(s)) {
    long b = block_index(s, ph);
    uint64_t tf = atomic_load_explicit(&s->thread_free, memory_order_acquire) & ~TF_NOTIFY;
    if (b >= 0 && !SEEN(b) && !on_chain(s, tf, ph)) {
      uint64_t tail = ph;
      unsigned k = 0;
      for (;;) {
        MARK(block_index(s, tail));
        k++;
        uint64_t nx = *(uint64_t *)off2ptr(tail);
        long nb = nx ? block_index(s, nx) : -1;
        if (nb < 0 || SEEN(nb)) break; /* the end, or already spliced */
        if (nb > top) top = nb;
        tail = nx;
      }
      if (b > top) top = b;
      *(uint64_t *)off2ptr(tail) = s->free;
      s->free = ph;
      n += k;
    }
    h->pend_head = 0;
  }
  /* A carve links its blocks into the list before it counts them carved. */
  if (top >= (long)s->reserved) s->reserved = (uint16_t)(top + 1);
  s->used = (uint16_t)(s->reserved - n);
}

/* A small span whose shape is the one its class has, inside the heap: what
 * the walks above rely on.  Anything else is corruption, not a kill (small
 * spans are published whole under the logged lock), and is left alone. */
static int span_sound(const struct span *s) {
  return s->cls >= 1 && s->cls <= SH_NCLASS && s->bsize == sh_class_size[s->cls] &&
         s->npages == sh_class_pages[s->cls] && s->first <= G.hdr->npages - s->npages &&
         s->capacity == ((uint32_t)s->npages << SH_PAGE_SHIFT) / s->bsize && s->reserved <= s->capacity;
}

/* Rebuilds heap h, whose owner died inside an edit.  The caller holds
 * hdr->lock, which keeps other repairers and claimers out. */
void sh_heap_repair(struct theap *h) {
  uint16_t hi = (uint16_t)(h - G.heaps);
  for (unsigned c = 1; c <= SH_NCLASS; c++) h->cls[c].avail = h->cls[c].full = 0;
  uint32_t count = G.hdr->span_count;
  if (count > G.hdr->nspans) count = G.hdr->nspans;
  for (uint32_t i = 1; i < count; i++) {
    struct span *s = &G.spans[i];
    if (s->state != SPAN_SMALL || s->owner != hi || !span_sound(s)) continue;
    repair_span(h, s);
    sh_list_push(&h->cls[s->cls].avail, s);
  }
  h->pend_head = 0;
  h->edit_span = 0;
  atomic_store(&h->full_remote, 0);
  atomic_fetch_add(&G.hdr->repairs, 1);
  if (atomic_load(&sh_ready) != 2) G.rec.heaps_repaired++;
  atomic_store_explicit(&h->busy, 0, memory_order_release);
}

/* Gives the empty spans of heap h (idle, its owner gone) back to the span
 * allocator, so the pages of a dead thread's caches are not kept from the
 * others.  The caller holds hdr->lock.  Busy is set meanwhile: a crash
 * between taking a span off its list and freeing it leaves the heap to be
 * rebuilt.  Returns the spans given back. */
uint64_t sh_heap_trim(struct theap *h) {
  uint64_t n = 0;
  uint32_t count = G.hdr->span_count;
  atomic_store(&h->busy, 1);
  for (unsigned c = 1; c <= SH_NCLASS; c++) {
    for (int full = 0; full < 2; full++) {
      uint32_t *head = full ? &h->cls[c].full : &h->cls[c].avail;
      uint32_t steps = 0;
      for (uint32_t i = *head, nx; i; i = nx) {
        /* A list that leaves the descriptors in use, or loops, is corrupt:
         * stop, and leave the heap busy for a rebuild. */
        if (i >= count || ++steps > count) return n;
        struct span *s = &G.spans[i];
        nx = s->next;
        if (s->used != 0) continue;
        sh_list_remove(head, s);
        span_free(s);
        sh_ulog_commit(); /* a complete edit: not to be undone */
        n++;
      }
    }
  }
  atomic_store(&h->busy, 0);
  return n;
}
