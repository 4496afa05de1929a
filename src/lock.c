/* Locks that live in the segment.  They are process-shared (several processes
 * may use one heap) and robust: a process can die holding one, and then the
 * next locker gets EOWNERDEAD instead of a deadlock.  ERRORCHECK lets a thread
 * that is interrupted inside the allocator (a signal handler that forks) learn
 * that it already holds the lock instead of waiting on itself.
 *
 * This file only locks.  What a dead owner left half done is the caller's
 * to repair: the undo log for hdr->lock (pages.c), a rebuild of heap 0 for
 * its lock (thread.c, fork.c, recover.c). */
#include <errno.h>

#include "pages.h"

void lock_init(pthread_mutex_t *m) {
  pthread_mutexattr_t a;
  pthread_mutexattr_init(&a);
  pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
  pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ERRORCHECK);
  pthread_mutex_init(m, &a);
  pthread_mutexattr_destroy(&a);
}

/* Counted before the lock is asked for: a signal handler that forks must know
 * that this thread may hold it, even if the signal came mid-acquire. */
static SH_TLS int tl_locks;

int locks_held(void) { return tl_locks; }

/* The one handler of what pthread_mutex_lock and _trylock return. */
static enum lock_result result(pthread_mutex_t *m, int r, unsigned how) {
  if (likely(r == 0)) return LOCK_TAKEN;
  if (r == EOWNERDEAD) {
    /* consistent() makes the mutex usable again; without it, it turns
     * ENOTRECOVERABLE for every process once we unlock. */
    pthread_mutex_consistent(m);
    atomic_fetch_add(&G.hdr->repairs, 1);
    return LOCK_OWNER_DIED;
  }
  if (how & LOCK_COUNT) tl_locks--;
  if (r == EDEADLK) return LOCK_HELD;
  if ((r == EBUSY && (how & LOCK_TRY)) || r == ETIMEDOUT) return LOCK_BUSY;
  /* A lock word of a heap found in the segment that pthread rejects
   * (EINVAL: its kind was overwritten) is damage, the caller's to report. */
  if (how & LOCK_FOUND) return LOCK_BROKEN;
  if (r == ENOTRECOVERABLE)
    os_die(SH_EXIT_FOREIGN, "libshmheap: a lock of the heap at %p is unrecoverable (a process died holding it and nobody repaired it): remove the segment (ipcrm -m %d)",
           (void *)G.base, G.shmid);
  os_die(SH_EXIT_OSERR, "libshmheap: pthread_mutex_lock failed with error %d", r);
}

enum lock_result lock_acquire(pthread_mutex_t *m, unsigned how) {
  if (how & LOCK_COUNT) tl_locks++;
  return result(m, (how & LOCK_TRY) ? pthread_mutex_trylock(m) : pthread_mutex_lock(m), how);
}

/* The wait is bounded: a lock word overwritten with a held value (a thread
 * id that is no longer there) would otherwise never be released. */
enum lock_result lock_acquire_within(pthread_mutex_t *m, unsigned how, uint64_t ns) {
  if (how & LOCK_COUNT) tl_locks++;
  uint64_t until = os_clock_ns(CLOCK_REALTIME) + ns;
  struct timespec ts = {(time_t)(until / 1000000000u), (long)(until % 1000000000u)};
  return result(m, pthread_mutex_timedlock(m, &ts), how);
}

void lock_release(pthread_mutex_t *m, unsigned how) {
  pthread_mutex_unlock(m);
  if (how & LOCK_COUNT) tl_locks--;
}
