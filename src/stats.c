/* Statistics: summed from the per-heap counters (each thread updates only its
 * own, without atomics) and the span allocator's counters. */
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

void sh_stats_totals(uint64_t *in_use, uint64_t *heap_bytes, uint64_t *nmalloc, uint64_t *nfree) {
  int64_t use = 0;
  uint64_t nm = 0, nf = 0;
  if (atomic_load(&sh_ready) == 2) {
    for (uint32_t i = 0; i < G.hdr->max_heap; i++) {
      use += G.heaps[i].in_use;
      nm += G.heaps[i].nmalloc;
      nf += G.heaps[i].nfree;
    }
    use += (int64_t)G.hdr->large_in_use;
  }
  *in_use = use > 0 ? (uint64_t)use : 0;
  *heap_bytes = G.hdr ? (uint64_t)G.hdr->top << SH_PAGE_SHIFT : 0;
  *nmalloc = nm;
  *nfree = nf;
}

void sh_print_exit_stats(void) {
  uint64_t use, heap, nm, nf;
  sh_stats_totals(&use, &heap, &nm, &nf);
  sh_say("libshmheap: exit pid=%d in_use=%lu heap=%lu nmalloc=%lu nfree=%lu large=%lu purged=%lu",
         (int)G.pid, use, heap, nm, nf, G.hdr->large_count, G.hdr->purged_pages << SH_PAGE_SHIFT);
}

SH_API int shmheap_get_info(struct shmheap_info *info) {
  if (!info) {
    errno = EINVAL;
    return -1;
  }
  memset(info, 0, sizeof *info);
  if (atomic_load(&sh_ready) != 2) sh_init();
  const struct shm_header *h = G.hdr;
  uint64_t use, heap, nm, nf;
  sh_stats_totals(&use, &heap, &nm, &nf);
  info->base = G.base;
  info->size = h->size;
  info->shmid = G.shmid;
  info->key = h->key;
  memcpy(info->name, h->name, sizeof info->name);
  info->reattached = G.reattached;
  info->creator_pid = h->creator_pid;
  info->in_use = use;
  info->heap_bytes = heap;
  info->free_dirty = h->dirty_pages << SH_PAGE_SHIFT;
  info->max_small = SH_SMALL_MAX;
  info->nmalloc = nm;
  info->nfree = nf;
  info->large_count = h->large_count;
  info->purged_bytes = h->purged_pages << SH_PAGE_SHIFT;
  info->repairs = atomic_load(&G.hdr->repairs);
  return 0;
}

static struct mallinfo2 info2(void) {
  struct mallinfo2 m;
  memset(&m, 0, sizeof m);
  uint64_t use, heap, nm, nf;
  sh_stats_totals(&use, &heap, &nm, &nf);
  m.arena = heap;
  m.uordblks = use;
  m.fordblks = heap > use ? heap - use : 0;
  if (G.hdr) {
    m.hblks = G.hdr->large_count;
    m.hblkhd = G.hdr->large_in_use;
    m.keepcost = G.hdr->dirty_pages << SH_PAGE_SHIFT;
  }
  return m;
}

SH_API struct mallinfo2 mallinfo2(void) { return info2(); }

SH_API struct mallinfo mallinfo(void) {
  struct mallinfo2 m2 = info2();
  struct mallinfo m;
  /* The int fields wrap as glibc's do; callers wanting more use mallinfo2. */
  m.arena = (int)m2.arena;
  m.ordblks = (int)m2.ordblks;
  m.smblks = (int)m2.smblks;
  m.hblks = (int)m2.hblks;
  m.hblkhd = (int)m2.hblkhd;
  m.usmblks = (int)m2.usmblks;
  m.fsmblks = (int)m2.fsmblks;
  m.uordblks = (int)m2.uordblks;
  m.fordblks = (int)m2.fordblks;
  m.keepcost = (int)m2.keepcost;
  return m;
}

SH_API void malloc_stats(void) {
  struct mallinfo2 m = info2();
  sh_say("Arena 0:\nsystem bytes     = %10zu\nin use bytes     = %10zu\nTotal (incl. mmap):\nsystem bytes     = %10zu\nin use bytes     = %10zu\nmax mmap regions = %10d\nmax mmap bytes   = %10lu",
         m.arena, m.uordblks, m.arena, m.uordblks, 0, 0UL);
}

SH_API int malloc_info(int options, FILE *fp) {
  if (options != 0 || !fp) {
    errno = EINVAL;
    return -1;
  }
  struct mallinfo2 m = info2();
  fprintf(fp, "<malloc version=\"1\">\n<heap nr=\"0\">\n<sizes>\n");
  if (atomic_load(&sh_ready) == 2) {
    /* Blocks in use per class, from the span descriptors (their used counts
     * are their owners' and may be a moment old). */
    uint64_t count[SH_NCLASS + 1] = {0};
    sh_global_lock();
    for (uint32_t i = 1; i < G.hdr->span_count; i++)
      if (G.spans[i].state == SPAN_SMALL) count[G.spans[i].cls] += G.spans[i].used;
    sh_global_unlock();
    for (unsigned c = 1; c <= SH_NCLASS; c++)
      if (count[c])
        fprintf(fp, "  <size from=\"%u\" to=\"%u\" total=\"%lu\" count=\"%lu\"/>\n",
                c > 1 ? sh_class_size[c - 1] + 1 : 1, sh_class_size[c],
                (unsigned long)(count[c] * sh_class_size[c]), (unsigned long)count[c]);
  }
  fprintf(fp, "</sizes>\n<total type=\"fast\" count=\"0\" size=\"0\"/>\n"
              "<total type=\"rest\" count=\"0\" size=\"%zu\"/>\n"
              "<system type=\"current\" size=\"%zu\"/>\n<system type=\"max\" size=\"%zu\"/>\n"
              "<aspace type=\"total\" size=\"%zu\"/>\n<aspace type=\"mprotect\" size=\"%zu\"/>\n"
              "</heap>\n<total type=\"fast\" count=\"0\" size=\"0\"/>\n"
              "<total type=\"rest\" count=\"0\" size=\"%zu\"/>\n"
              "<total type=\"mmap\" count=\"%zu\" size=\"%zu\"/>\n"
              "<system type=\"current\" size=\"%zu\"/>\n<system type=\"max\" size=\"%zu\"/>\n"
              "<aspace type=\"total\" size=\"%zu\"/>\n<aspace type=\"mprotect\" size=\"%zu\"/>\n"
              "</malloc>\n",
          m.fordblks, m.arena, m.arena, m.arena, m.arena, m.fordblks, m.hblks, m.hblkhd, m.arena,
          m.arena, m.arena, m.arena);
  return 0;
}

SH_API int mallopt(int param, int value) {
  (void)param;
  (void)value;
  return 1; /* accepted, as glibc's callers expect; the knobs do not apply */
}

SH_API int malloc_trim(size_t pad) {
  (void)pad;
  if (atomic_load(&sh_ready) != 2) return 0;
  sh_global_lock();
  size_t n = span_purge_all();
  sh_global_unlock();
  return n > 0;
}
