/* The background thread: free pages go back to the system a second after
 * they were freed (pages.c, DECAY_MS) even when the program makes no more
 * allocator calls, which is when the allocator itself would read the clock.
 * An idle server that freed a GiB gives it back instead of keeping it until
 * its next request (SHMHEAP_BACKGROUND, shmheap(7)).
 *
 * It exists only once it has work: page_purge_due raises pages_purge_wanted
 * when more than the floor of free pages is dirty, and the exported free
 * paths (interpose.c), outside any heap edit, call background_kick, which
 * starts the thread or wakes it.  A program that never frees more than the
 * floor never has one (nor a program with SHMHEAP_BACKGROUND=off).  The
 * thread takes the page allocator's lock like any
 * other thread, purges what is due and sleeps until more may be due, or
 * until it is woken when nothing is dirty.
 *
 * fork: the thread is not forked; the child's state is cleared and it gets
 * a thread of its own at its first kick.  The parent's thread goes on (the
 * fork holds the lock it would need, so it waits).  exit and exec stop it
 * before the process lets go of the heap, so that it never dies holding
 * the lock: a lock left by a dead owner is a repair for the next process. */
#include "proc.h"

static struct {
  _Atomic int running; /* a thread was started and has not ended */
  _Atomic int wake;    /* futex word: bumped to wake it */
  _Atomic int stop;
  _Atomic int active;  /* futex word: 1 while the thread runs */
  _Atomic int said;
} BG;

static void *bg_main(void *arg) {
  (void)arg;
  os_set_self_name("shmheap-purge");
  while (!atomic_load(&BG.stop)) {
    int w = atomic_load(&BG.wake);
    atomic_store(&pages_purger_awake, 1);
    pages_lock();
    /* Asleep for good (UINT64_MAX) clears pages_purger_awake under the
     * lock: an edit that then leaves more than the floor dirty takes the
     * lock after this step, sees the thread asleep and asks for it, and
     * the kick that follows bumps BG.wake past w, so the wait below
     * returns at once. */
    uint64_t ms = page_purge_background();
    pages_unlock();
    if (atomic_load(&BG.stop)) break;
    if (ms == UINT64_MAX)
      os_futex_wait(&BG.wake, w);
    else {
      os_futex_wait_ms(&BG.wake, w, ms);
    }
  }
  atomic_store(&pages_purger_awake, 0);
  atomic_store(&BG.running, 0);
  atomic_store(&BG.active, 0);
  os_futex_wake_all(&BG.active);
  return NULL;
}

void background_kick(const void *caller) {
  if (atomic_load(&BG.stop)) return;
  /* glibc and ld.so free memory while they hold locks of their own that
   * pthread_create takes (the stack cache's, at a thread's end): such a
   * free leaves the request for the program's next one. */
  if (!atomic_load(&BG.running) && os_addr_in_libc(caller)) return;
  if (!atomic_exchange(&pages_purge_wanted, 0)) return;
  if (atomic_exchange(&BG.running, 1)) {
    atomic_fetch_add(&BG.wake, 1);
    os_futex_wake_all(&BG.wake);
    return;
  }
  atomic_store(&BG.active, 1);
  int e = os_thread_start(bg_main, NULL);
  if (e) {
    /* Free pages then go back when the allocator runs, as without it. */
    /* And no more tries: each would cost a failed thread creation. */
    atomic_store(&BG.stop, 1);
    atomic_store(&BG.active, 0);
    os_futex_wake_all(&BG.active);
    atomic_store(&BG.running, 0);
    if (opts.verbose && !atomic_exchange(&BG.said, 1))
      os_say("libshmheap: pid %d: no background thread (%s): free pages go back only when the program calls the allocator",
             (int)SELF.pid, os_errstr(e));
  }
}

/* Waits for the thread to end (it ends after its step at most). */
void background_stop(void) {
  atomic_store(&BG.stop, 1);
  if (!atomic_load(&BG.running)) return;
  atomic_fetch_add(&BG.wake, 1);
  os_futex_wake_all(&BG.wake);
  /* An exit from a signal handler that interrupted a holder of the heap's
   * lock: the thread may be waiting for it, so it is not waited for. */
  if (locks_held()) return;
  while (atomic_load(&BG.active)) os_futex_wait(&BG.active, 1);
}

/* After an exec that failed: the next kick starts a thread again. */
void background_allow(void) { atomic_store(&BG.stop, 0); }

void background_forget(void) {
  atomic_store(&pages_purger_awake, 0); /* the parent's thread's, not ours */
  atomic_store(&pages_purge_wanted, 0);
  atomic_store(&BG.running, 0);
  atomic_store(&BG.active, 0);
  atomic_store(&BG.stop, 0);
  atomic_store(&BG.said, 0);
}
