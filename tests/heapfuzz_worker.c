/* Helper of tests/heap_fuzz.py.  NOT linked with libshmheap: the fuzz runs
 * it with LD_PRELOAD=$SHMHEAP_LIB on a corrupted copy of a keyed heap and
 * reaches the API through dlsym, as a preloaded program would.
 *
 *   heapfuzz_worker layout   (without the library) print the offsets of the
 *                            segment's structures (format.h) as JSON, so the
 *                            fuzz never hard-codes them
 *   heapfuzz_worker start    the program started on a corrupted heap: frees
 *                            and reallocs some of the records that
 *                            crash_worker left in its table (root
 *                            "crash.table", only pointers that are in the
 *                            heap; their contents are never read), then 3
 *                            threads malloc/calloc/realloc/free a few
 *                            thousand blocks of every size class and some
 *                            large ones, freeing some in another thread;
 *                            malloc_trim; exit 0
 *
 * Every block the threads get is filled with a pattern of its own, checked
 * before it is freed: two blocks handed out over the same memory (a free
 * list link the heap followed without noticing it was wrong) show as a
 * mismatch.  A malloc that fails is not an error (a corrupted heap may be
 * full).  Exit statuses: 0 ok, 2 usage, 3 a block was handed out twice or
 * lost its contents, 4 malloc returned memory outside the heap, 10 the
 * library is not preloaded. */
#include <dlfcn.h>
#include <malloc.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "format.h"

/* ---- layout ----------------------------------------------------------------------- */

static int first_field;

static void field(const char *name, size_t off, size_t size, size_t elem) {
  printf("%s\"%s\": [%zu, %zu, %zu]", first_field ? "" : ", ", name, off, size, elem);
  first_field = 0;
}

#define F(T, m) field(#m, offsetof(struct T, m), sizeof(((struct T *)0)->m), sizeof(((struct T *)0)->m))
#define A(T, m) field(#m, offsetof(struct T, m), sizeof(((struct T *)0)->m), sizeof(((struct T *)0)->m[0]))

static void open_struct(const char *name, size_t size) {
  printf("  \"%s\": {\"sizeof\": %zu, \"fields\": {", name, size);
  first_field = 1;
}

static int layout(void) {
  printf("{\n  \"format\": %u, \"page\": %zu, \"nclass\": %d, \"max_heaps\": %d, \"nbins\": %d,\n", SH_FORMAT,
         SH_PAGE, SH_NCLASS, SH_MAX_HEAPS, SH_NBINS);
  printf("  \"span_state\": {\"none\": %d, \"free\": %d, \"small\": %d, \"large\": %d}, \"tf_notify\": %llu,\n",
         SPAN_NONE, SPAN_FREE, SPAN_SMALL, SPAN_LARGE, (unsigned long long)TF_NOTIFY);
  open_struct("header", sizeof(struct shm_header));
  F(shm_header, magic); F(shm_header, format); F(shm_header, header_size); F(shm_header, size);
  F(shm_header, base); F(shm_header, key); F(shm_header, name_hash); A(shm_header, name);
  F(shm_header, creator_uid); F(shm_header, creator_pid); F(shm_header, created); F(shm_header, page_size);
  F(shm_header, nclass); A(shm_header, class_size); A(shm_header, class_pages); F(shm_header, heaps_off);
  F(shm_header, spans_off); F(shm_header, pagemap_off); F(shm_header, heap_off); F(shm_header, npages);
  F(shm_header, nspans); F(shm_header, lock); F(shm_header, repairs); F(shm_header, top);
  F(shm_header, span_count); F(shm_header, span_free); A(shm_header, bins); A(shm_header, binmap);
  F(shm_header, dirty_pages); F(shm_header, dirty_head); F(shm_header, dirty_tail); F(shm_header, live_pages); F(shm_header, large_in_use);
  F(shm_header, large_count); F(shm_header, purged_pages); F(shm_header, purge_due_ms);
  F(shm_header, max_heap); A(shm_header, roots); A(shm_header, program); F(shm_header, last_pid);
  F(shm_header, crashes); F(shm_header, attaches); A(shm_header, procs); F(shm_header, image);
  F(shm_header, ulog);
  printf("}},\n");
  open_struct("span", sizeof(struct span));
  F(span, first); F(span, npages); F(span, state); F(span, cls); F(span, spare); F(span, flags);
  F(span, owner); F(span, capacity); F(span, reserved); F(span, used); F(span, bsize); F(span, free);
  F(span, thread_free); F(span, next); F(span, prev); F(span, ndirty); F(span, dirty_ms);
  F(span, dnext); F(span, dprev);
  printf("}},\n");
  open_struct("theap", sizeof(struct theap));
  F(theap, busy); F(theap, edit_span); F(theap, owner_pid); F(theap, owner_tid); F(theap, full_remote);
  F(theap, pend_span); F(theap, in_use); F(theap, nmalloc); F(theap, nfree); F(theap, index);
  F(theap, owner_start); A(theap, cls); F(theap, lock); F(theap, pend_head);
  printf("}},\n");
  open_struct("root", sizeof(struct root));
  A(root, name); F(root, off);
  printf("}},\n");
  open_struct("shm_proc", sizeof(struct shm_proc));
  F(shm_proc, pid); F(shm_proc, start);
  printf("}},\n");
  open_struct("image", sizeof(struct image));
  F(image, n); A(image, obj);
  printf("}},\n");
  open_struct("ulog", sizeof(struct ulog));
  F(ulog, n); A(ulog, e);
  printf("}}\n}\n");
  return fflush(stdout) == 0 ? 0 : 1;
}

/* ---- start ------------------------------------------------------------------------ */

static int (*p_contains)(const void *);
static void *(*p_root_get)(const char *);

#define SYM(v, name) (*(void **)&(v) = dlsym(RTLD_DEFAULT, name))

/* crash_worker's table (tests/crash_worker.c) */
#define CW_ROOT "crash.table"
#define CW_NSLOTS 4096
#define CW_MAGIC 0x63726173u
struct cw_table {
  uint32_t magic;
  uint32_t nslots;
  _Atomic(void *) slot[CW_NSLOTS];
};

#define NTHREADS 3
#define OPS 2500
#define LIVE 64

static void fail(int code, const char *what, const void *p, size_t n) {
  fprintf(stderr, "heapfuzz_worker[%d]: %s: %p (%zu bytes)\n", (int)getpid(), what, p, n);
  fflush(stderr);
  _exit(code);
}

static inline uint64_t splitmix(uint64_t *x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

struct blk {
  unsigned char *p;
  size_t n;
  unsigned char tag;
};

/* The pattern: the first and last 16 bytes and one byte per 4 KiB carry the
 * tag, enough to see two live blocks overlap without writing every byte. */
static void fill(struct blk *b) {
  size_t n = b->n;
  memset(b->p, b->tag, n < 16 ? n : 16);
  if (n > 16) memset(b->p + n - 16, b->tag, 16);
  for (size_t k = 4096; k < n; k += 4096) b->p[k] = b->tag;
}

static void check(const struct blk *b) {
  size_t n = b->n;
  for (size_t k = 0; k < (n < 16 ? n : 16); k++)
    if (b->p[k] != b->tag) fail(3, "block lost its contents (handed out twice?)", b->p, n);
  if (n > 16)
    for (size_t k = n - 16; k < n; k++)
      if (b->p[k] != b->tag) fail(3, "block lost its contents (handed out twice?)", b->p, n);
  for (size_t k = 4096; k < n; k += 4096)
    if (b->p[k] != b->tag) fail(3, "block lost its contents (handed out twice?)", b->p, n);
}

static void in_heap(const void *p, size_t n) {
  if (!p_contains(p) || !p_contains((const char *)p + n - 1)) fail(4, "malloc returned memory outside the heap", p, n);
}

static size_t pick_size(uint64_t *rng) {
  uint64_t r = splitmix(rng);
  if (r % 40 == 0) return 32769 + (size_t)((r >> 8) % (160u << 10)); /* large */
  unsigned lg = 1 + (unsigned)((r >> 8) % 15);                      /* 2 .. 32 KiB */
  size_t base = (size_t)1 << lg;
  size_t n = base + (size_t)((r >> 16) % base);
  return n > 32768 ? 32768 : n;
}

/* Blocks handed from one thread to another to be freed there (remote frees). */
static _Atomic(struct blk *) mailbox[NTHREADS + 1]; /* the main thread's is the last */

/* The threads take their thread heaps one after the other (thread t's first
 * allocation claims a slot before thread t+1 starts), so a case replays with
 * the same thread on the same heap, and so the same lists followed. */
static atomic_int claimed;

static void *churn(void *arg) {
  int t = (int)(intptr_t)arg;
  uint64_t rng = 0x5eed0000u + (uint64_t)t * 7919u;
  struct blk live[LIVE];
  memset(live, 0, sizeof live);
  free(malloc(1));
  atomic_store(&claimed, t + 1);
  for (int op = 0; op < OPS; op++) {
    uint64_t r = splitmix(&rng);
    struct blk *b = &live[r % LIVE];
    if (b->p) {
      check(b);
      unsigned what = (unsigned)((r >> 8) % 10);
      if (what == 0) {
        /* realloc: the kept prefix must survive */
        size_t n = pick_size(&rng);
        unsigned char *q = realloc(b->p, n);
        if (!q) continue;
        in_heap(q, n);
        size_t keep = n < b->n ? n : b->n;
        for (size_t k = 0; k < (keep < 16 ? keep : 16); k++)
          if (q[k] != b->tag) fail(3, "realloc lost the block's contents", q, n);
        b->p = q;
        b->n = n;
        fill(b);
        continue;
      }
      if (what == 1) {
        /* give it to the next thread to free */
        struct blk *m = malloc(sizeof *m);
        if (m) {
          *m = *b;
          m = atomic_exchange(&mailbox[(t + 1) % (NTHREADS + 1)], m);
          if (m) {
            check(m);
            free(m->p);
            free(m);
          }
          b->p = NULL;
          continue;
        }
      }
      free(b->p);
      b->p = NULL;
      continue;
    }
    size_t n = pick_size(&rng);
    b->p = (r >> 40) % 8 == 0 ? calloc(1, n) : malloc(n);
    if (!b->p) continue;
    in_heap(b->p, n);
    b->n = n;
    b->tag = (unsigned char)(1 + t * 40 + (op % 40));
    fill(b);
  }
  struct blk *m = atomic_exchange(&mailbox[t], NULL);
  if (m) {
    check(m);
    free(m->p);
    free(m);
  }
  for (int i = 0; i < LIVE; i++)
    if (live[i].p) {
      check(&live[i]);
      free(live[i].p);
    }
  return NULL;
}

/* What crash_worker left: some records are freed (from this thread, which
 * does not own their spans: remote frees into the dead threads' spans, and
 * large blocks back to the page allocator), some reallocated.  Only
 * pointers the library says are in the heap are passed to it. */
static void old_records(void) {
  struct cw_table *t = p_root_get(CW_ROOT);
  if (!t || !p_contains(t) || !p_contains((char *)t + sizeof *t - 1)) return;
  /* A root may name any byte (shmheap_root_set), so the fuzz's damaged
   * root can be misaligned: reading the table through it would be
   * undefined, and the sanitizer build says so. */
  if ((uintptr_t)t % _Alignof(struct cw_table)) return;
  if (t->magic != CW_MAGIC || t->nslots != CW_NSLOTS) return;
  for (int i = 0; i < CW_NSLOTS; i += 7) {
    void *r = atomic_load(&t->slot[i]);
    if (!r || !p_contains(r)) continue;
    if (i % 3 == 0) {
      void *n = realloc(r, 64 + (size_t)i * 8);
      if (n) atomic_store(&t->slot[i], n);
    } else {
      atomic_store(&t->slot[i], NULL);
      free(r);
    }
  }
}

static int start(void) {
  if (!SYM(p_contains, "shmheap_contains") || !SYM(p_root_get, "shmheap_root_get")) {
    fprintf(stderr, "heapfuzz_worker: libshmheap is not preloaded\n");
    return 10;
  }
  old_records();
  pthread_t th[NTHREADS];
  int n = 0;
  for (int i = 0; i < NTHREADS; i++) {
    if (pthread_create(&th[n], NULL, churn, (void *)(intptr_t)i) != 0) break;
    n++;
    while (atomic_load(&claimed) != i + 1) sched_yield();
  }
  churn((void *)(intptr_t)NTHREADS); /* the main thread too */
  for (int i = 0; i < n; i++) pthread_join(th[i], NULL);
  for (int i = 0; i <= NTHREADS; i++) {
    struct blk *m = atomic_exchange(&mailbox[i], NULL);
    if (m) {
      check(m);
      free(m->p);
      free(m);
    }
  }
  malloc_trim(0);
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 2 && !strcmp(argv[1], "layout")) return layout();
  if (argc == 2 && !strcmp(argv[1], "start")) return start();
  fputs("usage: heapfuzz_worker layout | start\n", stderr);
  return 2;
}
