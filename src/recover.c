/* Who may use a keyed heap, and what happens when a process attaches one
 * that existed before it (shmheap(7), "Who attaches a keyed heap").
 *
 * A keyed heap belongs to one program (the executable that formed it, or
 * SHMHEAP_PROGRAM) and is used by one process at a time plus the children it
 * forks in share mode.  Those processes are listed in the header's process
 * table.  When a process starts with the key:
 *  - another program (a shell script the server runs, `ls` from system())
 *    gets a private heap, silently: the key was only inherited;
 *  - a process whose ancestor is a live user of the heap also gets a private
 *    heap (the server ran its own executable);
 *  - any other process while a user is alive is refused (exit 75);
 *  - otherwise the heap is recovered: the span allocator's log is rolled back
 *    if its lock's owner died, thread heaps left busy are rebuilt, idle ones
 *    of gone processes are freed and their empty spans returned, and the
 *    process registers itself.
 * Everything here runs inside the first malloc: system calls only.  What the
 * recovery finds is this file's (findings), filled from what the repairs
 * return, and read through recover_findings(). */
#include <string.h>
#include <unistd.h>

#include "proc.h"
#include "view.h"

static struct shmheap_recovery findings;

const struct shmheap_recovery *recover_findings(void) { return &findings; }

void recover_forget(void) { memset(&findings, 0, sizeof findings); }

static const char *base_name(const char *p) {
  const char *b = p;
  for (; *p; p++)
    if (*p == '/') b = p + 1;
  return b;
}

/* Is the executable at path the heap's program?  With SHMHEAP_PROGRAM, the
 * one it names (a path, or a file name to compare with the path's last part);
 * without, the one recorded when the heap was formed. */
static int is_program_of(const char *path, const struct shm_header *h) {
  const char *want = opts.program;
  if (want) return !strcmp(path, want) || (!strchr(want, '/') && !strcmp(base_name(path), want));
  return !h || !h->program[0] || !strncmp(path, h->program, SH_PROGRAM_MAX);
}

static int is_program(const char *path) { return is_program_of(path, G.hdr); }

int recover_program_is_self(void) { return is_program(os_self_exe()); }

/* ---- the process table ------------------------------------------------------- */

/* Is the process of table entry e alive and still running the heap's
 * program?  One that exec'd something else has left the heap as surely as
 * one that died.  Our own pid is a previous image of this process while it
 * attaches, and this very process afterwards (the supervisor reaping its
 * worker, a process leaving). */
static int proc_alive(const struct shm_header *h, const struct shm_proc *e, pid_t pid, int attaching) {
  if (pid == SELF.pid) return !attaching;
  if (!hv_proc_alive(e)) return 0;
  char buf[SH_PROGRAM_MAX];
  const char *exe = os_exe_of(pid, buf, sizeof buf);
  return !exe || is_program_of(exe, h); /* unreadable: assume it is */
}

/* Is a process listed that uses the heap, other than an earlier image of
 * this one? */
static int users_alive(const struct shm_header *h) {
  for (unsigned i = 0; i < SH_MAX_PROCS; i++) {
    pid_t pid = atomic_load(&h->procs[i].pid);
    if (pid && proc_alive(h, &h->procs[i], pid, 1)) return 1;
  }
  return 0;
}

int recover_segment_is_for_self(const struct shm_header *h) {
  return is_program_of(os_self_exe(), h) && !users_alive(h);
}

static int ancestor_of_self(pid_t pid) {
  pid_t p = getppid();
  for (int depth = 0; p > 1 && depth < 64; depth++) {
    if (p == pid) return 1;
    if (!os_proc_stat(p, &p, NULL)) break;
  }
  return 0;
}

/* Inside an edit. */
static int register_pid(pid_t pid) {
  uint64_t start;
  if (!os_proc_stat(pid, NULL, &start)) start = 0;
  for (unsigned i = 0; i < SH_MAX_PROCS; i++) {
    struct shm_proc *e = &G.hdr->procs[i];
    if (atomic_load(&e->pid) != 0) continue;
    JW(e->start) = start;
    JW(e->pid) = pid; /* last: the entry exists */
    return 1;
  }
  return 0; /* full: this process is not tracked (documented limit) */
}

void recover_register_self(void) {
  if (!SELF.keyed) return;
  pages_lock();
  journal_begin();
  register_pid(SELF.pid);
  journal_end();
  page_purge_due();
  pages_unlock();
}

void recover_leave(void) {
  if (!SELF.keyed) return;
  pages_lock();
  journal_begin();
  int others = 0;
  for (unsigned i = 0; i < SH_MAX_PROCS; i++) {
    pid_t pid = atomic_load(&G.hdr->procs[i].pid);
    if (pid == SELF.pid) JW(G.hdr->procs[i].pid) = 0;
    else if (pid && proc_alive(G.hdr, &G.hdr->procs[i], pid, 0)) others = 1;
  }
  journal_end();
  /* The last one alive to leave hands back every free page: nobody is left
   * to reuse them before they would decay, and a heap left behind should
   * hold only what is live. */
  if (!others) page_purge_all();
  else page_purge_due();
  pages_unlock();
}

/* Frees what gone processes left: table entries, thread heaps (rebuilt if
 * busy, then trimmed), and heap 0 if its lock died with its owner.  Under
 * hdr->lock, outside an edit; adds what it did to *f.  Returns the table
 * entries of processes that never left. */
static unsigned reap(struct shmheap_recovery *f, int attaching) {
  struct shm_header *h = G.hdr;
  unsigned dead = 0;
  journal_begin();
  for (unsigned i = 0; i < SH_MAX_PROCS; i++) {
    struct shm_proc *e = &h->procs[i];
    pid_t pid = atomic_load(&e->pid);
    if (pid && !proc_alive(h, e, pid, attaching)) {
      JW(e->pid) = 0;
      journal_step(); /* one entry at a time: the table has SH_MAX_PROCS */
      dead++;
    }
  }
  journal_end();
  for (uint32_t i = 1; i < h->max_heap; i++) {
    struct theap *t = &G.heaps[i];
    pid_t owner = atomic_load(&t->owner_pid);
    if (!owner || (owner != SELF.pid && !thread_slot_gone(t))) continue;
    if (owner == SELF.pid && !attaching) continue; /* ours, in use */
    if (atomic_load(&t->busy)) {
      repair_heap(t);
      f->heaps_repaired++;
    }
    f->spans_returned += repair_trim(t);
    journal_begin();
    JW(t->owner_pid) = 0;
    journal_end();
    f->heaps_released++;
  }
  /* Heap 0's lock is taken before hdr->lock elsewhere; trying keeps that
   * order safe here.  A dead owner may have left it mid-edit. */
  enum lock_result r = lock_acquire(&G.heaps[0].lock, LOCK_TRY | (attaching ? LOCK_FOUND : 0));
  if (attaching && (r == LOCK_BUSY || r == LOCK_BROKEN)) {
    /* Nobody uses the heap (recover_attach made sure, under hdr->lock,
     * which every attach takes): a heap-0 lock held or unreadable now is a
     * stray store's, not a live owner's.  It is made anew, and what it
     * guards is rebuilt as after a death. */
    lock_init(&G.heaps[0].lock);
    repair_heap(&G.heaps[0]);
    f->heaps_repaired++;
    return dead;
  }
  if (r == LOCK_OWNER_DIED) {
    repair_heap(&G.heaps[0]);
    f->heaps_repaired++;
  }
  if (r == LOCK_TAKEN || r == LOCK_OWNER_DIED) lock_release(&G.heaps[0].lock, LOCK_TRY);
  return dead;
}

/* ---- what the next allocations will trust ------------------------------------------------ */

/* The thread heaps whose span lists are rebuilt. */
struct vet {
  uint8_t rebuild[SH_MAX_HEAPS];
};

/* Only a span already quarantined stays so (it was counted then); any
 * other bit a corruption set goes, and its heap is rebuilt without it. */
static void vet_span(void *ctx, uint32_t i) {
  struct vet *x = ctx;
  struct span *s = &G.spans[i];
  s->flags = (uint8_t)(SPAN_DAMAGED | ((s->flags & SPAN_DAMAGED) ? s->flags & SPAN_QUARANTINED : 0));
  if (s->owner < SH_MAX_HEAPS) x->rebuild[s->owner] = 1;
}

static void vet_heap(void *ctx, uint32_t hi) {
  struct vet *x = ctx;
  if (hi < SH_MAX_HEAPS) x->rebuild[hi] = 1;
}

/* The metadata of a heap found in the segment is checked by the reader
 * (view.c, what shmheap-dump --check runs) before anything follows it: the
 * span tiling, the page map, the bins, the descriptor list and the thread
 * heaps' lists.  Blocks are not read (their links are checked when
 * followed, small.h).  A small span that is unsound, or that a process
 * found corrupt (SPAN_DAMAGED), is taken off every list for good and its
 * free blocks are counted lost; broken class lists are rebuilt from the
 * descriptors, statistics recounted.  Anything else refuses the heap.
 * Under hdr->lock, with no other process using the heap. */
static void vet_heap_metadata(struct shmheap_recovery *f) {
  uint64_t t0 = os_clock_ns(CLOCK_MONOTONIC);
  struct shm_header *h = G.hdr;
  struct hv v;
  char why[160];
  if (fmt_open(&v, G.base, h->size, why, sizeof why) < 0) {
    pages_unlock();
    os_die(SH_EXIT_FOREIGN, "libshmheap: SHMHEAP_KEY=%s: the heap is damaged (%s): run shmheap-dump --check --shmid %d",
           options_key_label(), why, G.shmid);
  }
  static struct vet x; /* 1 KiB: not on the stack of the first malloc */
  memset(&x, 0, sizeof x);
  struct hv_faults hf;
  memset(&hf, 0, sizeof hf);
  hf.span = vet_span;
  hf.heap = vet_heap;
  long n = hv_check_ex(&v, HV_META, NULL, &x, &hf);
  if (n < 0 || hf.whole) {
    pages_unlock();
    os_die(SH_EXIT_FOREIGN, "libshmheap: SHMHEAP_KEY=%s: the heap is damaged (%s%s), beyond what a restart repairs; it was not used: run shmheap-dump --check --shmid %d for all of it, then restore or remove the heap",
           options_key_label(), n < 0 ? "no memory to check it" : hf.first,
           hf.whole > 1 ? ", and more" : "", G.shmid);
  }
  /* Spans found damaged now or by a process before (small_bad_link): taken
   * out of use once, counted once.  repair_heap skips damaged spans. */
  const uint32_t count = h->span_count;
  for (uint32_t i = 1; i < count; i++) {
    struct span *s = &G.spans[i];
    if ((s->flags & (SPAN_DAMAGED | SPAN_QUARANTINED)) != SPAN_DAMAGED) continue;
    s->flags |= SPAN_QUARANTINED;
    if (s->owner < SH_MAX_HEAPS) x.rebuild[s->owner] = 1;
    f->spans_quarantined++;
    f->blocks_lost += s->capacity > s->used ? (uint64_t)(s->capacity - s->used) : 0;
  }
  for (uint32_t hi = 0; hi < h->max_heap; hi++)
    if (x.rebuild[hi]) {
      repair_heap(&G.heaps[hi]);
      f->heaps_repaired++;
    }
  /* Said whatever SHMHEAP_VERBOSE is: the program's data in those blocks
   * is gone from its reach, and the cause may be its own overflow. */
  if (f->spans_quarantined)
    os_say("libshmheap: SHMHEAP_KEY=%s: %llu corrupt span(s) of the heap taken out of use (%llu free blocks lost, the first: %s): run shmheap-dump --check --shmid %d",
           options_key_label(), (unsigned long long)f->spans_quarantined,
           (unsigned long long)f->blocks_lost, hf.first[0] ? hf.first : "marked damaged by a process", G.shmid);
  /* Statistics that differ from the walk (hf.counters) are left as they
   * are: nothing follows them, and shmheap_check reports them. */
  f->check_ns = os_clock_ns(CLOCK_MONOTONIC) - t0;
}

/* The supervisor, after its worker died: the heap is made whole at once
 * rather than by whichever process next trips over the pieces. */
void recover_reap(void) {
  if (!G.hdr) return;
  struct shmheap_recovery scratch;
  memset(&scratch, 0, sizeof scratch);
  pages_lock();
  reap(&scratch, 0);
  page_purge_due();
  pages_unlock();
}

/* Seconds a start waits for the heap's lock while no process uses the
 * heap.  The lock is held for one edit (microseconds), or by another
 * process's attach (its repair: tens of ms for gigabytes); this long with
 * nobody alive is a lock word that a stray store left held. */
#define ATTACH_PATIENCE_S 5
#define STR_(x) #x
#define STR(x) STR_(x)

/* The first lock of a heap found in the segment, whose lock word and undo
 * log are as untrusted as the rest: a wait that cannot end and a log that
 * is no dead owner's edit refuse the heap instead of hanging or applying
 * it.  Returns whether a dead owner's edit was rolled back. */
static unsigned attach_lock(void) {
  const struct shm_header *h = G.hdr;
  int r;
  unsigned idle = 0;
  while ((r = pages_lock_found(1000000000ull)) == PAGES_WAITED)
    if (users_alive(h)) idle = 0;
    else if (++idle >= ATTACH_PATIENCE_S) break;
  if (r == PAGES_BAD_LOG) pages_unlock();
  if (r < 0)
    os_die(SH_EXIT_FOREIGN, "libshmheap: SHMHEAP_KEY=%s: the heap is damaged (%s); it was not used: run shmheap-dump --check --shmid %d, then restore or remove the heap",
           options_key_label(),
           r == PAGES_WAITED ? "its lock has been held for " STR(ATTACH_PATIENCE_S) " s, and no process uses the heap"
           : r == PAGES_BAD_LOCK ? "its lock word is not a lock"
                                 : "its undo log holds entries, but no process died holding its lock",
           G.shmid);
  return (unsigned)r;
}

enum recover_verdict recover_attach(uint64_t t0) {
  struct shm_header *h = G.hdr;
  const char *exe = os_self_exe();
  struct shmheap_recovery *f = &findings;
  memset(f, 0, sizeof *f);
  /* The first lock of the heap by this process: a dead owner's edit is
   * rolled back here, before anything reads what it guards. */
  f->lock_recovered = SELF.reattached ? attach_lock() : (unsigned)pages_lock();
  if (!SELF.reattached) {
    size_t n = strlen(exe);
    memcpy(h->program, exe, n < SH_PROGRAM_MAX ? n + 1 : SH_PROGRAM_MAX);
    h->program[SH_PROGRAM_MAX - 1] = 0;
    journal_begin();
    register_pid(SELF.pid);
    journal_end();
    h->last_pid = SELF.pid;
    page_purge_due();
    pages_unlock();
    f->origin = SHMHEAP_NEW;
    f->recovery_ns = os_clock_ns(CLOCK_MONOTONIC) - t0;
    return RECOVER_USE;
  }
  if (!is_program(exe)) {
    pages_unlock();
    return RECOVER_PRIVATE;
  }
  for (unsigned i = 0; i < SH_MAX_PROCS; i++) {
    struct shm_proc *e = &h->procs[i];
    pid_t pid = atomic_load(&e->pid);
    if (!pid || !proc_alive(h, e, pid, 1)) continue;
    pages_unlock();
    if (ancestor_of_self(pid)) return RECOVER_PRIVATE;
    os_die(SH_EXIT_INUSE, "libshmheap: SHMHEAP_KEY=%s: the heap is in use by pid %d (%s); one process uses a keyed heap at a time: stop that process first, or use another SHMHEAP_KEY",
           options_key_label(), (int)pid, h->program);
  }
  if (opts.fresh) {
    /* Nobody uses it: discard it as asked.  Removal frees the key now; the
     * memory goes when the last attach (ours, a dump tool's) goes. */
    char why[SH_OWNED_WHY];
    int verdict = os_shm_owned(G.shmid, opts.mode, (long)h->creator_uid, SH_OWN_REMOVE, NULL, why, sizeof why);
    pages_unlock();
    if (verdict < 0)
      os_die(SH_EXIT_FOREIGN, "libshmheap: SHMHEAP_KEY=%s: SHMHEAP_FRESH=1: %s; or unset SHMHEAP_FRESH",
             options_key_label(), why);
    if (verdict == 0) os_shm_remove(G.shmid);
    return RECOVER_REMOVED;
  }
  vet_heap_metadata(f);
  unsigned dead = reap(f, 1);
  f->dead_processes = dead;
  f->previous_pid = h->last_pid;
  int crashed = dead || f->lock_recovered || f->heaps_repaired;
  f->origin = crashed ? SHMHEAP_CRASHED : SHMHEAP_CLEAN;
  journal_begin();
  register_pid(SELF.pid);
  journal_end();
  h->last_pid = SELF.pid;
  h->attaches++;
  if (crashed) h->crashes++;
  /* What the dead left free and has lain unused long enough goes back now,
   * not at this process's first allocation. */
  page_purge_due();
  pages_unlock();
  f->recovery_ns = os_clock_ns(CLOCK_MONOTONIC) - t0;
  return RECOVER_USE;
}
