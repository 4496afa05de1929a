/* Warm restart: a process that re-attaches a heap with blocks in use maps
 * their pages in before it needs them (SHMHEAP_PREFAULT, shmheap(7)).
 *
 * A new process's page tables are empty: its first touch of every page of
 * the heap is a fault, though the page is in the segment already.  One
 * MADV_POPULATE_READ over a range maps it at about half a fault's cost per
 * page, and two threads halve that again; a read populate of shared memory
 * maps the pages writable, so the program's later writes do not fault
 * either.  The pages mapped are those of small and large spans, found by
 * walking the spans in address order: free spans are never touched (a
 * purged one would be given memory again).
 *
 * The walk reads metadata that the program edits at the same time (it may
 * start allocating and freeing at once), and that a hostile writer may have
 * prepared: every index is checked against the bounds validated at attach
 * before it is followed, and the page cursor only grows, so a torn or
 * garbage table ends in fewer pages mapped, never in a read out of bounds or
 * a loop.  A span freed (even purged) between the walk's read and the
 * populate costs memory, never bytes: a populate only reads.
 *
 * Threads (auto for a large heap, or SHMHEAP_PREFAULT=threads) split the
 * heap into 2 MiB chunks, chunk k to thread k % n.  They are created once,
 * at attach, and never by a fork handler (creating a thread allocates, and
 * a fork may come from a signal handler that interrupted glibc's own thread
 * bookkeeping): a fork's prepare handler parks them between chunks and
 * waits until every one is parked, the parent's handler lets them go on, a
 * child has none.  Exit ends them before the library lets go of the heap.
 * They block every signal, so none of the program's handlers ever runs on
 * them.
 */
#include <errno.h>
#include <string.h>

#include "proc.h"

#define PF_CHUNK 512u                   /* pages: 2 MiB, one populate call */
#define PF_MAX_THREADS 4u               /* more do not map faster (one segment's page cache) */
/* auto: in use up to this is mapped before main.  Measured here (2 CPUs):
 * from 10 MiB up, two threads bring a walk of it to its end sooner; below
 * 5 MiB the two are level, and threads make the process multi-threaded for
 * good (glibc keeps __libc_single_threaded false after they end). */
#define PF_SYNC_MAX ((uint64_t)8 << 20)

struct pf_thread {
  unsigned i;       /* this thread's chunks: k % n == i */
};

/* PF.hold: what the threads are to do at their next chunk. */
enum { PF_RUN, PF_PARK, PF_END };

static struct {
  int mode;               /* SHMHEAP_PREFAULT_* of the public header */
  unsigned n;             /* threads */
  uint32_t top;           /* the heap's pages in use end below this (read once) */
  uint64_t planned;       /* live pages at the start */
  _Atomic uint64_t done;  /* pages populated so far */
  uint64_t t0;            /* start */
  _Atomic uint64_t t1;    /* end, 0 until then */
  _Atomic int hold;       /* PF_RUN, PF_PARK or PF_END (futex word) */
  _Atomic int busy;       /* threads neither parked nor ended (futex word) */
  _Atomic unsigned left;  /* threads whose walk is not complete */
  struct pf_thread th[PF_MAX_THREADS];
} PF;

/* The next run of in-use pages at or after *p (spans in address order,
 * adjacent small and large ones joined), below top.  0 when there is none. */
static int next_run(uint32_t *p, uint32_t top, uint32_t *first, uint32_t *end) {
  uint32_t nspans = G.nspans, at = *p, start = 0;
  int in = 0;
  while (at < top) {
    uint32_t d = __atomic_load_n(&G.pagemap[at], __ATOMIC_RELAXED), n = 0;
    int used = 0;
    if (d < nspans) {
      const struct span *s = &G.spans[d];
      if (__atomic_load_n(&s->first, __ATOMIC_RELAXED) == at) {
        n = __atomic_load_n(&s->npages, __ATOMIC_RELAXED);
        uint8_t st = __atomic_load_n(&s->state, __ATOMIC_RELAXED);
        used = st == SPAN_SMALL || st == SPAN_LARGE;
      }
    }
    /* Not the first page of a span (the table changed under the walk, or
     * was never sound): step one page and look again. */
    if (n == 0 || n > top - at) n = 1, used = 0;
    if (used && !in) start = at, in = 1;
    if (!used && in) break;
    at += n;
  }
  *p = at;
  if (!in) return 0;
  *first = start;
  *end = at;
  return 1;
}

/* Populates pages [a, b) of the heap.  Under hugetlb only whole huge pages
 * can be mapped: the range grows to them (the segment is aligned to them). */
static int populate(uint32_t a, uint32_t b) {
  char *lo = (char *)G.heap_lo + ((size_t)a << SH_PAGE_SHIFT);
  char *hi = (char *)G.heap_lo + ((size_t)b << SH_PAGE_SHIFT);
  if (G.hugetlb) {
    lo = (char *)((uintptr_t)lo & ~(uintptr_t)(SH_HUGE_PAGE - 1));
    hi = (char *)(((uintptr_t)hi + SH_HUGE_PAGE - 1) & ~(uintptr_t)(SH_HUGE_PAGE - 1));
    /* The segment is sized in huge pages: this is its end at most. */
    char *limit = (char *)(((uintptr_t)G.heap_lo + G.heap_len + SH_HUGE_PAGE - 1) & ~(uintptr_t)(SH_HUGE_PAGE - 1));
    if (hi > limit) hi = limit;
  }
  return os_populate(lo, (size_t)(hi - lo), 0);
}

/* A thread told to park waits until it may go on; 0 when it is to end.
 * busy and hold are read crosswise (seq_cst) with quiesce: either it sees
 * this thread busy and waits for it, or this thread sees the hold and
 * parks again before it maps anything. */
static int may_go_on(void) {
  for (;;) {
    int h = atomic_load(&PF.hold);
    if (h == PF_RUN) return 1;
    if (atomic_fetch_sub(&PF.busy, 1) == 1) os_futex_wake_all(&PF.busy);
    if (h == PF_END) return 0;
    while ((h = atomic_load(&PF.hold)) == PF_PARK) os_futex_wait(&PF.hold, PF_PARK);
    if (h == PF_END) return 0;
    atomic_fetch_add(&PF.busy, 1);
  }
}

/* One walker's work: the runs' pages in chunks k with k % n == i.
 * Returns 1 when complete, 0 when told to end first (it is not busy any
 * more then). */
static int walk(unsigned i, unsigned n, int threaded) {
  uint32_t p = 0, a, b, top = PF.top;
  while (next_run(&p, top, &a, &b)) {
    while (a < b) {
      uint64_t k = a / PF_CHUNK, cend = (k + 1) * PF_CHUNK;
      uint32_t e = b < cend ? b : (uint32_t)cend;
      if (k % n == i) {
        if (threaded && !may_go_on()) return 0;
        /* EINVAL: a kernel before 5.14, no populate at all; the others
         * (a hugetlb page that cannot be had) end this range only. */
        if (populate(a, e) < 0 && errno == EINVAL) return 1;
        atomic_fetch_add_explicit(&PF.done, e - a, memory_order_relaxed);
      }
      a = e;
    }
  }
  return 1;
}

static void finished(void) {
  uint64_t t1 = os_clock_ns(CLOCK_MONOTONIC);
  atomic_store(&PF.t1, t1);
  if (opts.verbose)
    os_say("libshmheap: pid %d: prefault: %llu of %llu MiB in use mapped in %llu ms (%s, %u thread%s)", (int)SELF.pid,
           (unsigned long long)((atomic_load(&PF.done) << SH_PAGE_SHIFT) >> 20),
           (unsigned long long)((PF.planned << SH_PAGE_SHIFT) >> 20),
           (unsigned long long)((t1 - PF.t0) / 1000000), PF.mode == SHMHEAP_PREFAULT_SYNC ? "before main" : "in the background",
           PF.n, PF.n == 1 ? "" : "s");
}

static void *pf_main(void *arg) {
  struct pf_thread *t = arg;
  os_set_self_name("shmheap-prefault");
  /* The gate of prefault_start, and PF.top and PF.planned set before it
   * opened. */
  if (!may_go_on()) return NULL;
  if (walk(t->i, PF.n, 1)) {
    if (atomic_fetch_sub(&PF.left, 1) == 1) finished();
    /* Last: after this the thread touches nothing of the heap's or of
     * PF's that a fork or exit waiting for it could be changing. */
    if (atomic_fetch_sub(&PF.busy, 1) == 1) os_futex_wake_all(&PF.busy);
  }
  return NULL;
}

/* What the walk is to map: the pages in use now, below the heap's top.
 * 0 when there is nothing. */
static int plan(void) {
  uint32_t top = __atomic_load_n(&G.hdr->top, __ATOMIC_RELAXED);
  uint64_t live = __atomic_load_n(&G.hdr->live_pages, __ATOMIC_RELAXED);
  uint32_t npages = (uint32_t)(G.heap_len >> SH_PAGE_SHIFT);
  if (top > npages) top = npages;
  PF.top = top;
  PF.planned = live < top ? live : top;
  return live != 0 && top != 0;
}

void prefault_start(void) {
  if (PF.mode != SHMHEAP_PREFAULT_NONE || opts.prefault == SH_PREFAULT_OFF) return;
  if (!plan()) return;
  PF.t0 = os_clock_ns(CLOCK_MONOTONIC);
  unsigned cpus = os_ncpus();
  int sync = opts.prefault == SH_PREFAULT_SYNC ||
             (opts.prefault == SH_PREFAULT_AUTO && ((PF.planned << SH_PAGE_SHIFT) <= PF_SYNC_MAX || cpus == 1));
  if (sync) {
    PF.mode = SHMHEAP_PREFAULT_SYNC;
    PF.n = 1;
    walk(0, 1, 0);
    finished();
    return;
  }
  PF.mode = SHMHEAP_PREFAULT_THREADS;
  PF.n = cpus < PF_MAX_THREADS ? cpus : PF_MAX_THREADS;
  atomic_store(&PF.left, PF.n);
  atomic_store(&PF.busy, (int)PF.n);
  /* Each thread's creation allocates its descriptors from the heap (glibc's
   * DTV), perhaps in a new span: the threads wait parked until all exist
   * and the plan is made again, so that a walk counts what was in use when
   * it began, whoever allocated before. */
  atomic_store(&PF.hold, PF_PARK);
  for (unsigned i = 0; i < PF.n; i++) {
    PF.th[i].i = i;
    if (os_thread_start(pf_main, &PF.th[i]) != 0) {
      /* No thread (out of memory or of processes): its chunks stay
       * unmapped and fault in as they would without this. */
      if (atomic_fetch_sub(&PF.left, 1) == 1) finished();
      if (atomic_fetch_sub(&PF.busy, 1) == 1) os_futex_wake_all(&PF.busy);
    }
  }
  plan();
  atomic_store(&PF.hold, PF_RUN);
  os_futex_wake_all(&PF.hold);
}

/* Sets the hold and waits until no thread is busy (each looks at the hold
 * before each chunk). */
static void quiesce(int hold) {
  atomic_store(&PF.hold, hold);
  if (hold == PF_END) os_futex_wake_all(&PF.hold); /* parked ones end too */
  for (int b; (b = atomic_load(&PF.busy)) > 0;) os_futex_wait(&PF.busy, b);
}

void prefault_pause(void) {
  if (PF.mode == SHMHEAP_PREFAULT_THREADS && atomic_load(&PF.hold) == PF_RUN) quiesce(PF_PARK);
}

/* No allocation, no thread created: a store and a wake, safe in a fork
 * from a signal handler. */
void prefault_resume(void) {
  if (PF.mode == SHMHEAP_PREFAULT_THREADS && atomic_load(&PF.hold) == PF_PARK) {
    atomic_store(&PF.hold, PF_RUN);
    os_futex_wake_all(&PF.hold);
  }
}

/* A fork's child: the threads were not forked.  The heap is a copy that
 * the copy itself mapped in, or a share-mode child's, whose pages the
 * parent's threads were mapping into the parent only: the child has no
 * prefault of its own (a supervised worker starts one, prefault_worker). */
void prefault_forget(void) {
  memset(&PF, 0, sizeof PF);
  atomic_store(&PF.hold, PF_END);
}

void prefault_stop(void) {
  if (PF.mode == SHMHEAP_PREFAULT_THREADS) quiesce(PF_END);
}

/* A share-mode worker forked by the supervisor carries on with the heap
 * its predecessor left: it maps it in afresh, as a restarted process. */
void prefault_worker(void) {
  memset(&PF, 0, sizeof PF);
  if (SELF.keyed) prefault_start();
}

SH_API int shmheap_prefault_status(struct shmheap_prefault *st) {
  if (!st) {
    errno = EINVAL;
    return -1;
  }
  memset(st, 0, sizeof *st);
  st->mode = PF.mode;
  st->running = PF.mode == SHMHEAP_PREFAULT_THREADS && atomic_load(&PF.hold) == PF_RUN && !atomic_load(&PF.t1);
  uint64_t t1 = atomic_load(&PF.t1);
  st->finished = PF.mode != SHMHEAP_PREFAULT_NONE && t1 != 0;
  st->threads = PF.n;
  st->bytes_planned = PF.planned << SH_PAGE_SHIFT;
  st->bytes_mapped = atomic_load(&PF.done) << SH_PAGE_SHIFT;
  st->elapsed_ns = PF.mode == SHMHEAP_PREFAULT_NONE ? 0 : (t1 ? t1 : os_clock_ns(CLOCK_MONOTONIC)) - PF.t0;
  return st->finished;
}
