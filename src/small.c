/* Small spans (small.h): the size classes, and the walks over a span's free
 * lists that the repair, the reader and the dump tool share.  The walks work
 * on a segment mapped anywhere and bound every step: a list read from the
 * segment may be torn by a kill or written by anyone (decision 7). */
#include "small.h"

uint32_t small_class_size[SH_NCLASS + 1];
uint16_t small_class_pages[SH_NCLASS + 1];
uint64_t small_class_recip[256];
uint64_t small_class_inv[256];
uint8_t small_class_shift[256];
uint8_t small_class_lut[65];

/* Classes: 16..128 in steps of 16, then four per doubling up to 32 KiB, so
 * rounding wastes at most 25%.  A span is 16 KiB, or as many pages as hold 8
 * blocks of its class: one live block pins its whole span, so small spans
 * keep memory low when blocks of a size die unevenly (bench/ larson: 6.1 MB
 * peak with 16 KiB spans, 7.8 MB with 64 KiB; realloc strings: 25.8 / 28.1). */
void small_classes_init(void) {
  unsigned c = 1;
  for (; c <= 8; c++) small_class_size[c] = 16 * c;
  for (uint32_t base = 128; c <= SH_NCLASS; base *= 2)
    for (uint32_t k = 1; k <= 4; k++) small_class_size[c++] = base + base / 4 * k;
  for (c = 1; c <= SH_NCLASS; c++) {
    uint32_t bytes = 16384;
    while (bytes / small_class_size[c] < 8) bytes *= 2;
    small_class_pages[c] = (uint16_t)(bytes >> SH_PAGE_SHIFT);
    /* block index = (offset * recip) >> 48 exactly, for offsets < 2^18 */
    small_class_recip[c] = ((1ULL << 48) + small_class_size[c] - 1) / small_class_size[c];
  }
  /* size = odd << shift; inv * odd == 1 mod 2^64 (Newton's iteration
   * doubles the bits that are right: 3, 6, ... 96).  A cls byte that is no
   * class gets size 2^48: only offset 0 is block 0 (what the division by a
   * zero reciprocal gave), any other offset below 2^48 is no block. */
  for (c = 0; c < 256; c++) {
    uint64_t size = c >= 1 && c <= SH_NCLASS ? small_class_size[c] : 1ULL << 48;
    unsigned shift = (unsigned)__builtin_ctzll(size);
    uint64_t odd = size >> shift, inv = odd;
    for (int k = 0; k < 5; k++) inv *= 2 - odd * inv;
    small_class_inv[c] = inv;
    small_class_shift[c] = (uint8_t)shift;
  }
  for (unsigned i = 0; i <= 64; i++) {
    size_t n = i ? i * 16 : 1, s = n - 1;
    unsigned b = 63 - (unsigned)__builtin_clzl(s | 1);
    small_class_lut[i] = (uint8_t)(n <= 128 ? (n + 15) / 16 : 8 + (b - 7) * 4 + ((s >> (b - 2)) & 3) + 1);
  }
}

void small_walk(const char *base, uint64_t secret, const struct span *s, uint64_t start, uint64_t head,
                uint32_t limit, struct small_marks *m, struct small_walk *w) {
  w->n = 0;
  w->last = 0;
  w->at = 0;
  w->why = SMALL_END;
  for (uint64_t off = head; off;) {
    long b = off >= start ? small_index(s, off - start, limit) : -1;
    if (b < 0 || small_marked(m, (uint64_t)b)) {
      w->why = b < 0 ? SMALL_NOT_BLOCK : SMALL_TWICE;
      w->at = off;
      return;
    }
    small_mark(m, (uint64_t)b);
    w->n++;
    w->last = off;
    off = small_link_read(base, secret, off);
  }
}

/* thread_free of a span whose owner is dead: other threads only push in
 * front of it, so a walk of at most capacity steps sees all of it. */
int small_on_list(const char *base, uint64_t secret, const struct span *s, uint64_t start, uint64_t head,
                  uint64_t off) {
  for (unsigned steps = 0; head && steps <= s->capacity; steps++) {
    if (head == off) return 1;
    if (head < start || small_index(s, head - start, s->capacity) < 0) return 0;
    head = small_link_read(base, secret, head);
  }
  return 0;
}

uint64_t small_live_blocks(const char *base, uint64_t secret, const struct span *s, uint64_t start,
                           small_block_fn fn, void *ctx, int *stopped) {
  struct small_marks m;
  struct small_walk w;
  uint64_t n = 0;
  small_marks_clear(&m, s->reserved);
  small_walk(base, secret, s, start, s->free, s->reserved, &m, &w);
  small_walk(base, secret, s, start, atomic_load_explicit(&s->thread_free, memory_order_relaxed) & ~TF_NOTIFY,
             s->reserved, &m, &w);
  for (uint32_t b = 0; b < s->reserved; b++) {
    if (small_marked(&m, b)) continue;
    n++;
    if (fn && fn(ctx, start + (uint64_t)b * s->bsize, s->bsize, s->cls)) {
      if (stopped) *stopped = 1;
      return n;
    }
  }
  return n;
}

/* ---- this process's heap: corruption and double frees ------------------------------- */

void small_bad_link(struct span *s, uint64_t block, uint64_t link, const char *list) {
  s->flags |= SPAN_DAMAGED;
  atomic_signal_fence(memory_order_seq_cst);
  if (block)
    os_abort("libshmheap: malloc(): corrupted free list: free block 0x%llx of span %u (%u-byte blocks, %u pages at %p, %s list) links to 0x%llx, not a block of the span: a write past the end of a block, or after free(); the span is taken out of use",
             (unsigned long long)((uintptr_t)G.base + block), span_index(s), s->bsize, s->npages, (void *)span_addr(s),
             list, (unsigned long long)link);
  os_abort("libshmheap: malloc(): corrupted free list: span %u (%u-byte blocks, %u pages at %p) has %s list head 0x%llx, not a block of the span; the span is taken out of use",
           span_index(s), s->bsize, s->npages, (void *)span_addr(s), list, (unsigned long long)link);
}

/* Is off on the list from head?  At most limit steps, each link checked;
 * the owner may be changing a list read from another thread, but every read
 * stays inside the span. */
static int on_list(const struct span *s, uint64_t start, uint64_t head, uint64_t off) {
  for (unsigned steps = 0; head && steps <= s->reserved; steps++) {
    if (head == off) return 1;
    if (small_index(s, head - start, s->reserved) < 0) return 0;
    head = small_next(head);
  }
  return 0;
}

void small_check_free(struct span *s, void *p, const char *fn) {
  uint64_t off = ptr2off(p), start = small_start(s);
  const struct theap *owner = &G.heaps[s->owner < SH_MAX_HEAPS ? s->owner : 0];
  int twice = on_list(s, start, s->free, off) ||
              on_list(s, start, atomic_load_explicit(&s->thread_free, memory_order_acquire) & ~TF_NOTIFY, off) ||
              (owner->pend_span == span_index(s) && on_list(s, start, owner->pend_head, off));
  if (twice)
    os_abort("libshmheap: %s(): double free of %p (a %u-byte block of span %u)", fn, p, s->bsize, span_index(s));
}

int small_sound(const struct shm_header *h, const struct span *s) {
  return s->cls >= 1 && s->cls <= SH_NCLASS && s->bsize == small_class_size[s->cls] &&
         s->npages == small_class_pages[s->cls] && s->first <= h->npages - s->npages &&
         s->capacity == ((uint32_t)s->npages << SH_PAGE_SHIFT) / s->bsize && s->reserved <= s->capacity;
}
