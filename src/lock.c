/* Locks that live in the segment.  They are process-shared (several processes
 * may use one heap) and robust: a process can die holding one, and then the
 * next locker gets EOWNERDEAD instead of a deadlock.  ERRORCHECK lets a thread
 * that is interrupted inside the allocator (a signal handler that forks) learn
 * that it already holds the lock instead of waiting on itself. */
#include <errno.h>

#include "internal.h"

void sh_lock_init(pthread_mutex_t *m) {
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

int sh_locks_held(void) { return tl_locks; }

int sh_lock(pthread_mutex_t *m) {
  tl_locks++;
  int r = pthread_mutex_lock(m);
  if (likely(r == 0)) return 0;
  if (r == EOWNERDEAD) {
    /* The owner died inside a critical section: the caller repairs what the
     * lock guards before it goes on.  consistent() makes the mutex usable
     * again (without it, it turns ENOTRECOVERABLE for every process). */
    pthread_mutex_consistent(m);
    atomic_fetch_add(&G.hdr->repairs, 1);
    return 1;
  }
  if (r == ENOTRECOVERABLE)
    sh_die(SH_EXIT_FOREIGN, "libshmheap: a lock of the heap at %p is unrecoverable (a process died holding it and nobody repaired it): remove the segment (ipcrm -m %d)",
           (void *)G.base, G.shmid);
  sh_die(SH_EXIT_OSERR, "libshmheap: pthread_mutex_lock failed with error %d", r);
}

void sh_unlock(pthread_mutex_t *m) {
  pthread_mutex_unlock(m);
  tl_locks--;
}

/* The span allocator's lock.  A dead owner's half-made edit is undone from
 * the log before anyone reads the state it guards (I6). */
void sh_global_lock(void) {
  if (unlikely(sh_lock(&G.hdr->lock))) {
    sh_ulog_rollback();
    if (atomic_load(&sh_ready) != 2) G.rec.lock_recovered = 1; /* found while attaching */
  }
}

/* The edit is complete: the log is emptied, then free pages that have lain
 * unused long enough are handed back (each step a complete edit of its own). */
void sh_global_unlock(void) {
  sh_ulog_commit();
  span_purge_due();
  sh_unlock(&G.hdr->lock);
}
