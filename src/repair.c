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
#include "proc.h"

static void repair_span(struct theap *h, struct span *s) {
  uint32_t si = span_index(s);
  int walk = si == h->edit_span || (h->pend_head && si == h->pend_span);
  s->flags &= (uint8_t)~SPAN_FULL;
  atomic_fetch_and_explicit(&s->thread_free, ~TF_NOTIFY, memory_order_relaxed);
  if (!walk) return;
  const uint64_t start = ptr2off(span_addr(s));
  struct small_marks seen;
  struct small_walk w;
  small_marks_clear(&seen, s->capacity);
  /* The local free list.  A link that is not a block of the span, or one
   * seen before, cannot come from a kill (see above) but from corruption:
   * the list is cut there rather than followed. */
  small_walk(G.base, G.secret, s, start, s->free, s->capacity, &seen, &w);
  if (w.why != SMALL_END) {
    if (w.last) small_set_next(w.last, 0);
    else s->free = 0;
  }
  unsigned n = (unsigned)w.n;
  /* A collect that took a chain off thread_free and was killed before it
   * had linked all of it into the local list: link the rest in front.  The
   * chain ends at its end or at the first block already spliced. */
  uint64_t ph = h->pend_head;
  if (ph && h->pend_span == si) {
    uint64_t tf = atomic_load_explicit(&s->thread_free, memory_order_acquire) & ~TF_NOTIFY;
    long b = ph >= start ? small_index(s, ph - start, s->capacity) : -1;
    if (b >= 0 && !small_marked(&seen, (uint64_t)b) && !small_on_list(G.base, G.secret, s, start, tf, ph)) {
      struct small_walk c;
      small_walk(G.base, G.secret, s, start, ph, s->capacity, &seen, &c);
      small_splice(s, ph, c.last);
      n += (unsigned)c.n;
    }
    h->pend_head = 0;
  }
  /* A carve links its blocks into the list before it counts them carved:
   * the highest block seen free bounds what was carved. */
  long top = -1;
  for (long b = s->capacity - 1; b >= 0; b--)
    if (small_marked(&seen, (uint64_t)b)) {
      top = b;
      break;
    }
  if (top >= (long)s->reserved) s->reserved = (uint16_t)(top + 1);
  s->used = (uint16_t)(s->reserved - n);
}

/* Rebuilds heap h, whose owner died inside an edit.  The caller holds
 * hdr->lock, which keeps other repairers and claimers out. */
void repair_heap(struct theap *h) {
  uint16_t hi = (uint16_t)(h - G.heaps);
  for (unsigned c = 1; c <= SH_NCLASS; c++) h->cls[c].avail = h->cls[c].full = 0;
  uint32_t count = G.hdr->span_count;
  if (count > G.hdr->nspans) count = G.hdr->nspans;
  for (uint32_t i = 1; i < count; i++) {
    struct span *s = &G.spans[i];
    if (s->state != SPAN_SMALL || s->owner != hi || (s->flags & SPAN_DAMAGED) || !small_sound(G.hdr, s)) continue;
    repair_span(h, s);
    small_list_push(&h->cls[s->cls].avail, s);
  }
  h->pend_head = 0;
  h->edit_span = 0;
  atomic_store(&h->full_remote, 0);
  atomic_fetch_add(&G.hdr->repairs, 1);
  atomic_store_explicit(&h->busy, 0, memory_order_release);
}

/* Is small span s of heap hi empty, by its lists rather than its count?
 * used is a number a stray store can lower (the attach check reads no
 * blocks), and a span given back with a block in use loses it: the local
 * list must walk cleanly over every carved block, and nothing be waiting
 * on thread_free. */
static int span_empty(uint16_t hi, const struct span *s) {
  if (s->used != 0 || s->owner != hi || (s->flags & SPAN_DAMAGED) || !small_sound(G.hdr, s) ||
      (atomic_load_explicit(&((struct span *)s)->thread_free, memory_order_relaxed) & ~TF_NOTIFY))
    return 0;
  const uint64_t start = ptr2off(span_addr(s));
  struct small_marks seen;
  struct small_walk w;
  small_marks_clear(&seen, s->reserved);
  small_walk(G.base, G.secret, s, start, s->free, s->reserved, &seen, &w);
  return w.why == SMALL_END && w.n == s->reserved;
}

/* Gives the empty spans of heap h (idle, its owner gone) back to the page
 * allocator, so the pages of a dead thread's caches are not kept from the
 * others.  The caller holds hdr->lock, outside an edit: each span given
 * back is a step of one edit.  Busy is set meanwhile: a crash between taking
 * a span off its list and freeing it leaves the heap to be rebuilt. */
uint64_t repair_trim(struct theap *h) {
  uint64_t n = 0;
  uint32_t count = G.hdr->span_count;
  atomic_store(&h->busy, 1);
  journal_begin();
  for (unsigned c = 1; c <= SH_NCLASS; c++) {
    for (int full = 0; full < 2; full++) {
      uint32_t *head = full ? &h->cls[c].full : &h->cls[c].avail;
      uint32_t steps = 0;
      for (uint32_t i = *head, nx; i; i = nx) {
        /* A list that leaves the descriptors in use, or loops, is corrupt:
         * stop, and leave the heap busy for a rebuild. */
        if (i >= count || ++steps > count) {
          journal_end();
          return n;
        }
        struct span *s = &G.spans[i];
        nx = s->next;
        if (!span_empty((uint16_t)(h - G.heaps), s)) continue;
        small_list_remove(head, s);
        page_free(s);
        journal_step();
        n++;
      }
    }
  }
  journal_end();
  atomic_store(&h->busy, 0);
  return n;
}
