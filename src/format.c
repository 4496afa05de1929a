/* The segment's layout and the validation of a header (format.h).  Used at
 * any address: by the library when it forms or re-attaches a heap, by
 * shmheap-dump on any mapping.  Messages are formatted with os_fmt, which
 * never allocates: a re-attach runs inside the first malloc. */
#include <string.h>

#include "format.h"

struct sh_map G;

void map_set(char *base, int shmid) {
  struct shm_header *h = (struct shm_header *)base;
  G.base = base;
  G.shmid = shmid;
  G.hdr = h;
  G.heaps = (struct theap *)(base + h->heaps_off);
  G.spans = (struct span *)(base + h->spans_off);
  G.pagemap = (uint32_t *)(base + h->pagemap_off);
  G.heap_lo = (uintptr_t)base + h->heap_off;
  G.heap_off = h->heap_off;
  G.secret = h->link_secret;
  G.heap_len = (size_t)h->npages << SH_PAGE_SHIFT;
  G.nspans = h->nspans;
}

void map_clear(void) { memset(&G, 0, sizeof G); }

#define ROUND_UP(x, a) (((x) + (a)-1) & ~((uint64_t)(a)-1))

/* The descriptor pool has one entry per page (a span can be
 * one page), but untouched entries cost no memory. */
void fmt_layout(struct shm_header *h, size_t size, uintptr_t base) {
  h->size = size;
  h->base = base;
  h->page_size = SH_PAGE;
  h->header_size = (uint32_t)ROUND_UP(sizeof *h, SH_PAGE);
  h->heaps_off = h->header_size;
  uint64_t meta = ROUND_UP(h->heaps_off + sizeof(struct theap) * SH_MAX_HEAPS, SH_PAGE);
  uint64_t per_page = SH_PAGE + sizeof(uint32_t) + sizeof(struct span);
  uint64_t npages = size > meta ? (size - meta) / per_page : 0;
  for (;; npages--) {
    uint64_t spans = ROUND_UP(meta + sizeof(uint32_t) * npages, SH_PAGE);
    uint64_t heap = ROUND_UP(spans + sizeof(struct span) * (npages + 2), SH_PAGE);
    if (heap + npages * SH_PAGE <= size || npages == 0) {
      h->pagemap_off = meta;
      h->spans_off = spans;
      h->heap_off = heap;
      h->npages = (uint32_t)npages;
      h->nspans = (uint32_t)(npages + 2);
      return;
    }
  }
}

int fmt_open(struct hv *v, const void *map, size_t len, char *why, size_t whylen) {
  const struct shm_header *h = map;
  memset(v, 0, sizeof *v);
  why[0] = 0;
  if (len < SH_MIN_SIZE || h->magic != SH_MAGIC) {
    os_fmt(why, whylen, "not a libshmheap heap");
    return -1;
  }
  if (h->format != SH_FORMAT) {
    os_fmt(why, whylen, "a libshmheap heap of format %u (this build reads format %u)", h->format, SH_FORMAT);
    return -1;
  }
  struct shm_header want;
  memset(&want, 0, sizeof want);
  fmt_layout(&want, len, 0);
  if (h->size != len || h->page_size != SH_PAGE || h->nclass != SH_NCLASS ||
      h->header_size != want.header_size || h->heaps_off != want.heaps_off ||
      h->pagemap_off != want.pagemap_off || h->spans_off != want.spans_off ||
      h->heap_off != want.heap_off || h->npages != want.npages || h->nspans != want.nspans) {
    os_fmt(why, whylen, "a heap with a corrupt header: its layout does not match a %zu-byte segment", len);
    return -1;
  }
  if (h->top > h->npages || h->span_count == 0 || h->span_count > h->nspans ||
      h->max_heap > SH_MAX_HEAPS) {
    os_fmt(why, whylen, "a heap with a corrupt header: top %u of %u pages, %u of %u descriptors, %u heaps",
             h->top, h->npages, h->span_count, h->nspans, h->max_heap);
    return -1;
  }
  for (unsigned c = 1; c <= SH_NCLASS; c++) {
    uint32_t sz = h->class_size[c];
    if (!sz || sz % SH_ALIGN || sz > SH_SMALL_MAX || (c > 1 && sz <= h->class_size[c - 1]) ||
        !h->class_pages[c] || (uint64_t)h->class_pages[c] * SH_PAGE / sz < 1 ||
        (uint64_t)h->class_pages[c] * SH_PAGE / sz > 0xffff) {
      os_fmt(why, whylen, "a heap with a corrupt header: size class %u (%u bytes, %u pages)", c, sz, h->class_pages[c]);
      return -1;
    }
  }
  v->base = map;
  v->len = len;
  v->h = h;
  v->heaps = (const struct theap *)((const char *)map + want.heaps_off);
  v->spans = (const struct span *)((const char *)map + want.spans_off);
  v->pagemap = (const uint32_t *)((const char *)map + want.pagemap_off);
  v->heap_off = want.heap_off;
  v->npages = want.npages;
  v->nspans = want.nspans;
  return 0;
}
