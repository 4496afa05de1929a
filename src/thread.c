/* Thread heaps: one slot of the segment's heap table per thread, claimed on
 * the thread's first allocation and released when it exits.  A released
 * slot keeps its spans and blocks; the next thread that claims it carries on
 * with them, so thread churn neither leaks nor makes statistics drift. */
#include <errno.h>
#include <signal.h>
#include <unistd.h>
#include <sys/syscall.h>

#include "internal.h"

SH_TLS struct theap *tl_heap;
/* Set once the thread's heap is released at exit: destructors that run after
 * ours still allocate and free, through heap 0, rather than claim a slot that
 * nobody would release. */
static SH_TLS int tl_exited;
/* After finding every slot taken, a thread uses heap 0 for a while before it
 * scans the table again. */
static SH_TLS unsigned tl_backoff;
static pthread_key_t heap_key;
static int heap_key_ok;

/* Only the thread that claimed a slot gives it up (a forked child's copy of
 * the thread's pointer names its parent's slot). */
static void give_back(struct theap *h) {
  if (h && atomic_load(&h->owner_pid) == G.pid && h->owner_tid == (int32_t)syscall(SYS_gettid))
    atomic_store_explicit(&h->owner_pid, 0, memory_order_release);
}

static void thread_exit(void *arg) {
  struct theap *h = arg;
  if (tl_heap == h) tl_heap = NULL;
  tl_exited = 1;
  give_back(h);
}

void sh_thread_key_init(void) {
  /* pthread_key_create does not allocate, so it may run inside malloc. */
  heap_key_ok = pthread_key_create(&heap_key, thread_exit) == 0;
}

struct theap *sh_heap_acquire(void) {
  struct shm_header *hdr = G.hdr;
  struct theap *h = NULL;
  if (tl_exited) return NULL;
  if (tl_backoff) {
    tl_backoff--;
    return NULL;
  }
  sh_global_lock();
  /* The first slot that is free or belongs to a process that is gone.
   * Reusing such a slot reuses the spans and cached blocks it holds; only
   * when there is none does a never-used slot get opened. */
  uint32_t lim = hdr->max_heap < SH_MAX_HEAPS ? hdr->max_heap + 1 : SH_MAX_HEAPS;
  for (uint32_t i = 1; i < lim; i++) {
    struct theap *c = &G.heaps[i];
    pid_t owner = atomic_load_explicit(&c->owner_pid, memory_order_acquire);
    if (owner != 0 && (owner == G.pid || !sh_slot_gone(c))) continue;
    /* Left busy: its thread died inside an edit (I7). */
    if (atomic_load(&c->busy)) sh_heap_repair(c);
    h = c;
    JW(h->index) = (uint16_t)i;
    JW(h->owner_tid) = (int32_t)syscall(SYS_gettid);
    JW(h->owner_start) = G.start;
    JW(h->owner_pid) = G.pid;
    if (i >= hdr->max_heap) JW(hdr->max_heap) = i + 1;
    break;
  }
  sh_global_unlock();
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
void sh_heaps_release_copied(pid_t parent, struct theap *keep) {
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
void sh_thread_release_self(void) {
  struct theap *h = tl_heap;
  tl_exited = 1;
  tl_heap = NULL;
  give_back(h);
}

void sh_thread_forget(void) {
  tl_heap = NULL;
  if (heap_key_ok) pthread_setspecific(heap_key, NULL);
}
