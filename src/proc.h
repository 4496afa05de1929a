/* The processes layer: which thread and process a heap slot belongs to
 * (thread.c), the repair of a heap whose thread died mid-edit (repair.c),
 * fork in copy and share mode (fork.c), who may attach a keyed heap and its
 * recovery at attach (recover.c), and the program image (image.c). */
#ifndef SHMHEAP_PROC_H
#define SHMHEAP_PROC_H

#include "alloc.h"

/* This process, as the heap knows it. */
struct sh_self {
  pid_t pid;
  uint64_t start;  /* start time (/proc/self/stat), 0 without /proc */
  int keyed;       /* it uses a keyed heap (not a private one, or a fork's copy) */
  int reattached;  /* the segment existed before this process */
};
extern SH_HIDDEN struct sh_self SELF;

/* ---- thread heaps (thread.c) ----------------------------------------------------- */

extern SH_HIDDEN SH_TLS struct theap *tl_heap;
extern SH_HIDDEN SH_TLS int tl_h0_held; /* this thread holds heap 0's lock */

SH_HIDDEN void self_identify(void); /* SELF.pid and SELF.start, now */
SH_HIDDEN struct theap *thread_heap_claim(void);
SH_HIDDEN void thread_key_init(void);
SH_HIDDEN void thread_release_self(void);
SH_HIDDEN void thread_forget(void);
SH_HIDDEN void thread_release_copied(pid_t parent, struct theap *keep);
/* Is the process that owns slot t gone (dead, a zombie, or its pid reused)?
 * Never for an orphaned slot (owner_pid < 0). */
SH_HIDDEN int thread_slot_gone(const struct theap *t);
/* Heap 0, shared by threads without a heap of their own, under its lock. */
SH_HIDDEN void heap0_lock(void);
SH_HIDDEN void heap0_unlock(void);
/* A small block of class c, or the free of small block p of s, for a thread
 * that has no heap yet (it claims one) or cannot have one (heap 0). */
/* A small block of class c or a large block for the calling thread.  When
 * the pages have run out they reclaim and try once more; then the heap is
 * full: said once (alloc_out_of_heap), errno ENOMEM, NULL. */
SH_HIDDEN void *thread_alloc(unsigned c);
SH_HIDDEN void *thread_alloc_retry(unsigned c); /* after alloc_small gave NULL */
SH_HIDDEN void *thread_alloc_large(size_t n, size_t align, int zero);
SH_HIDDEN void thread_reclaim(int force); /* force: malloc_trim */
SH_HIDDEN void thread_free(struct span *s, void *p, uint64_t key); /* key: p's link key */

/* ---- repair (repair.c), under hdr->lock ------------------------------------------------ */

SH_HIDDEN void repair_heap(struct theap *h);
SH_HIDDEN uint64_t repair_trim(struct theap *h); /* returns the spans given back */

/* ---- fork (fork.c) ------------------------------------------------------------------------ */

SH_HIDDEN void fork_init(int share);

/* ---- recovery (recover.c) ------------------------------------------------------------------ */

enum recover_verdict { RECOVER_USE, RECOVER_PRIVATE, RECOVER_REMOVED };
/* Once a keyed heap is attached (formed or found): may this process use it,
 * and if so, what did the repair of what earlier processes left find. */
SH_HIDDEN enum recover_verdict recover_attach(uint64_t t0);
SH_HIDDEN const struct shmheap_recovery *recover_findings(void);
SH_HIDDEN void recover_forget(void);
SH_HIDDEN int recover_program_is_self(void);
/* Why recover_attach said RECOVER_PRIVATE (for SHMHEAP_VERBOSE). */
SH_HIDDEN const char *recover_private_why(void);
/* The exec family: this process is inside exec (1), or its exec failed (0). */
SH_HIDDEN void recover_exec(int inside);
/* Read-only, at any address: would this process use heap h (the program's,
 * nobody alive using it)?  A guess for image.c; recover_attach decides. */
SH_HIDDEN int recover_segment_is_for_self(const struct shm_header *h);
SH_HIDDEN void recover_register_self(void); /* a share-mode child */
SH_HIDDEN void recover_leave(void);         /* at exit */
SH_HIDDEN void recover_reap(void);          /* the supervisor, after its worker died */

/* ---- collection at restart (collect.c), under hdr->lock, nobody else using the heap ---- */

/* Frees every block the named roots do not reach; adds what it did to *f. */
SH_HIDDEN void collect_at_restart(struct shmheap_recovery *f);

/* ---- warm restart (prefault.c) ------------------------------------------------------------------ */

/* After the attach of a keyed heap: maps its in-use pages in (before
 * returning, or on threads), as SHMHEAP_PREFAULT says; nothing if none. */
SH_HIDDEN void prefault_start(void);
SH_HIDDEN void prefault_pause(void);  /* fork's prepare: no thread maps until resume */
SH_HIDDEN void prefault_resume(void); /* fork's parent */
SH_HIDDEN void prefault_forget(void); /* fork's child: there are no threads here */
SH_HIDDEN void prefault_stop(void);   /* exit, or the supervisor: for good */
SH_HIDDEN void prefault_worker(void); /* a supervised worker: afresh */

/* ---- the background thread (background.c) ----------------------------------------------------- */

/* From the exported free paths when pages_purge_wanted is set; caller is
 * the free's return address. */
SH_HIDDEN void background_kick(const void *caller);
SH_HIDDEN void background_stop(void);   /* exit, exec: waits for it to end */
SH_HIDDEN void background_allow(void);  /* after a failed exec */
SH_HIDDEN void background_forget(void); /* fork's child: there is no thread here */

/* ---- the program image (image.c) ------------------------------------------------------------- */

SH_HIDDEN void image_reexec(void);
SH_HIDDEN void image_check(void);
SH_HIDDEN int image_reexecuted(void);

#endif
