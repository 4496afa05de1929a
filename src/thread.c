/* Thread heaps: one slot of the segment's heap table per thread, claimed on
 * the thread's first allocation and released when it exits.  A released
 * slot keeps its spans and blocks; the next thread that claims it carries on
 * with them, so thread churn neither leaks nor makes statistics drift.
 * Threads with no slot (all taken, or a thread that is exiting) use heap 0
 * under its lock. */
#include <errno.h>
#include <pthread.h>

#include "proc.h"

struct sh_self SELF;
SH_TLS struct theap *tl_heap;
SH_TLS int tl_h0_held; /* for a fork from a signal handler (fork.c) */
/* Set once the thread's heap is released at exit: destructors that run after
 * ours still allocate and free, through heap 0, rather than claim a slot that
 * nobody would release. */
static SH_TLS int tl_exited;
/* After finding every slot taken, a thread uses heap 0 for a while before it
 * scans the table again. */
static SH_TLS unsigned tl_backoff;
static pthread_key_t heap_key;
static int heap_key_ok;

void self_identify(void) {
  SELF.pid = os_getpid();
  if (!os_proc_stat(SELF.pid, NULL, &SELF.start)) SELF.start = 0; /* 0: no /proc */
}

int thread_slot_gone(const struct theap *t) {
  pid_t pid = atomic_load(&((struct theap *)t)->owner_pid);
  if (pid <= 0) return 0;
  uint64_t start;
  if (os_proc_stat(pid, NULL, &start)) return t->owner_start && start != t->owner_start;
  /* No such process in /proc (or a zombie) - unless there is no /proc. */
  if (SELF.start) return 1;
  return os_pid_gone(pid);
}

/* Only the thread that claimed a slot gives it up (a forked child's copy of
 * the thread's pointer names its parent's slot). */
static void give_back(struct theap *h) {
  if (h && atomic_load(&h->owner_pid) == SELF.pid && h->owner_tid == (int32_t)os_gettid())
    atomic_store_explicit(&h->owner_pid, 0, memory_order_release);
}

static void thread_exit(void *arg) {
  struct theap *h = arg;
  if (tl_heap == h) tl_heap = NULL;
  tl_exited = 1;
  give_back(h);
}

void thread_key_init(void) {
  /* pthread_key_create does not allocate, so it may run inside malloc. */
  heap_key_ok = pthread_key_create(&heap_key, thread_exit) == 0;
}

/* Slot i, if it is free or its process is gone: claimed for this thread.
 * Under the page lock, in a journal record. */
static struct theap *slot_take(uint32_t i) {
  struct theap *c = &G.heaps[i];
  pid_t owner = atomic_load_explicit(&c->owner_pid, memory_order_acquire);
  if (owner != 0 && (owner == SELF.pid || !thread_slot_gone(c))) return NULL;
  /* Left busy: its thread died inside an edit (I7). */
  if (atomic_load(&c->busy)) repair_heap(c);
  JW(c->index) = (uint16_t)i;
  JW(c->owner_tid) = (int32_t)os_gettid();
  JW(c->owner_start) = SELF.start;
  JW(c->owner_pid) = SELF.pid;
  if (i >= G.hdr->max_heap) JW(G.hdr->max_heap) = i + 1;
  return c;
}

struct theap *thread_heap_claim(void) {
  struct shm_header *hdr = G.hdr;
  struct theap *h = NULL;
  if (tl_exited) return NULL;
  if (tl_backoff) {
    tl_backoff--;
    return NULL;
  }
  pages_lock();
  journal_begin();
  /* The first slot that is free or belongs to a process that is gone.
   * Reusing such a slot reuses the spans and cached blocks it holds; only
   * when there is none does a never-used slot get opened. */
  uint32_t lim = hdr->max_heap < SH_MAX_HEAPS ? hdr->max_heap + 1 : SH_MAX_HEAPS;
  for (uint32_t i = 1; i < lim && !h; i++) h = slot_take(i);
  journal_end();
  page_purge_due();
  pages_unlock();
  if (!h) {
    tl_backoff = 1024;
    return NULL;
  }
  tl_heap = h;
  /* May allocate (keys past the first 32 need a second-level array): tl_heap
   * is set, so that allocation takes the fast path instead of recursing. */
  if (heap_key_ok) pthread_setspecific(heap_key, h);
  return h;
}

/* In a copy-mode child: the copy holds the slots of the parent's threads,
 * which do not exist here, taken while none was inside an edit (their busy
 * flags are stale).  They are freed, except keep, the forking thread's. */
void thread_release_copied(pid_t parent, struct theap *keep) {
  atomic_store(&G.heaps[0].busy, 0);
  for (uint32_t i = 1; i < G.hdr->max_heap; i++) {
    struct theap *h = &G.heaps[i];
    atomic_store(&h->busy, 0);
    if (h != keep && atomic_load(&h->owner_pid) == parent) atomic_store(&h->owner_pid, 0);
  }
}

/* At exit: the thread running the library's destructor (the last one to
 * run) is between heap operations, so its slot can go back now and the next
 * process on a keyed heap reuses its spans.  Later frees use heap 0. */
void thread_release_self(void) {
  struct theap *h = tl_heap;
  tl_exited = 1;
  tl_heap = NULL;
  give_back(h);
}

void thread_forget(void) {
  tl_heap = NULL;
  if (heap_key_ok) pthread_setspecific(heap_key, NULL);
}

/* ---- heap 0 ------------------------------------------------------------------ */

/* Heap 0 is edited under its lock instead of the busy flag, and is not
 * behind the fork gate: a copy-mode fork takes the lock, so its users are
 * quiet while the child copies.  A dead owner of the lock may have left it
 * mid-edit, so it is rebuilt first (I7). */
void heap0_lock(void) {
  struct theap *h0 = &G.heaps[0];
  enum lock_result r = lock_acquire(&h0->lock, LOCK_COUNT);
  if (unlikely(r == LOCK_HELD))
    os_die(SH_EXIT_OSERR, "libshmheap: internal error: heap 0's lock taken twice by one thread (malloc called from a signal handler that interrupted malloc?)");
  if (unlikely(r == LOCK_OWNER_DIED)) {
    pages_lock();
    repair_heap(h0);
    page_purge_due();
    pages_unlock();
  }
  tl_h0_held = 1;
}

void heap0_unlock(void) {
  tl_h0_held = 0;
  lock_release(&G.heaps[0].lock, LOCK_COUNT);
}

/* ---- when the pages run out ---------------------------------------------------- */

/* Spans that other threads' frees emptied go back to the page allocator
 * only when their owner looks (heap_reclaim): this thread looks at its own
 * heap, at heap 0, and at every slot whose thread has exited or whose
 * process is gone, which nobody else would look at until a new thread
 * claims it.  A slot is borrowed the way a thread claims one, so a kill
 * meanwhile leaves it to be rebuilt like any other (I7), and it is this
 * thread's heap meanwhile, so that a fork from a signal handler sees it as
 * the edit in progress.  Slots of live threads are theirs: what other
 * threads freed there waits until they allocate again.  Called between heap
 * edits (malloc from a signal handler that interrupted one is not
 * supported, as in glibc).  The slots are looked at always when forced
 * (malloc_trim), else at most every 10 ms in a thread whose last look
 * found nothing: a program that retries a failing allocation (halving the
 * size, a new_handler loop) would otherwise read /proc for every other
 * process's slot at each try. */
static SH_TLS uint64_t tl_fruitless_ns;

void thread_reclaim(int force) {
  struct theap *own = tl_heap;
  unsigned slots = 0;
  if (own) {
    heap_enter(own);
    heap_reclaim(own);
    heap_leave(own);
  }
  if (!tl_h0_held) {
    heap0_lock();
    heap_reclaim(&G.heaps[0]);
    heap0_unlock();
  }
  uint64_t now = os_clock_ns(CLOCK_MONOTONIC);
  if (!force && tl_fruitless_ns && now - tl_fruitless_ns < 10000000) return;
  for (uint32_t i = 1; i < G.hdr->max_heap && i < SH_MAX_HEAPS; i++) {
    pages_lock();
    journal_begin();
    struct theap *c = slot_take(i);
    journal_end();
    pages_unlock();
    if (!c) continue;
    /* tl_heap names the slot before it is busy and until it is not: a fork
     * from a signal handler must not wait for this thread's own edit. */
    tl_heap = c;
    atomic_signal_fence(memory_order_seq_cst);
    heap_enter(c);
    slots += heap_reclaim(c);
    heap_leave(c);
    atomic_signal_fence(memory_order_seq_cst);
    /* A fork from a signal handler meanwhile made this a child in which
     * only the borrowed slot is this thread's (fork.c): own went back. */
    if (own && atomic_load(&own->owner_pid) != SELF.pid) own = NULL;
    tl_heap = own;
    give_back(c);
  }
  tl_fruitless_ns = slots ? 0 : now | 1;
}

static void *alloc_once(unsigned c) {
  struct theap *h = tl_heap ? tl_heap : thread_heap_claim();
  if (h) return alloc_small(h, c);
  heap0_lock();
  void *p = heap_alloc(&G.heaps[0], c);
  heap0_unlock();
  return p;
}

/* The retry is made even if nothing was retired: blocks collected into the
 * class, or pages another thread freed meanwhile, may serve it. */
void *thread_alloc_retry(unsigned c) {
  int saved = errno;
  thread_reclaim(0);
  void *p = alloc_once(c);
  if (p) {
    errno = saved;
    return p;
  }
  alloc_out_of_heap(small_class_size[c]);
  errno = ENOMEM;
  return NULL;
}

void *thread_alloc(unsigned c) {
  void *p = alloc_once(c);
  return likely(p != NULL) ? p : thread_alloc_retry(c);
}

void *thread_alloc_large(size_t n, size_t align, int zero) {
  int saved = errno;
  void *p = alloc_large(n, align, zero);
  if (likely(p != NULL)) return p;
  if (n <= G.heap_len) {
    thread_reclaim(0);
    p = alloc_large(n, align, zero);
    if (p) {
      errno = saved;
      return p;
    }
  }
  alloc_out_of_heap(n);
  errno = ENOMEM;
  return NULL;
}

void thread_free(struct span *s, void *p, uint64_t key) {
  struct theap *h = tl_heap ? tl_heap : thread_heap_claim();
  if (h) {
    heap_enter(h);
    if (s->owner == h->index) heap_free_local(h, s, p, key);
    else heap_free_remote(h, s, p);
    heap_leave(h);
    return;
  }
  struct theap *h0 = &G.heaps[0];
  heap0_lock();
  if (s->owner == 0) heap_free_local(h0, s, p, key);
  else heap_free_remote(h0, s, p);
  heap0_unlock();
}
