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

/* Is path the executable recorded in heap h, the one its users run? */
static int runs_recorded(const char *path, const struct shm_header *h) {
  return !h || !h->program[0] || !strncmp(path, h->program, SH_PROGRAM_MAX);
}

static int path_is(const char *path, const char *want) {
  return !strcmp(path, want) || (!strchr(want, '/') && !strcmp(base_name(path), want));
}

/* The path this image was run by: the kernel's, or the one it had before
 * the start-up re-exec, which runs /proc/self/exe (image.c). */
static const char *self_execfn(void) {
  if (opts.reexec_pid == (long)SELF.pid && opts.reexec_fn[0]) return opts.reexec_fn;
  return os_self_execfn();
}

/* Is this process the heap's program?  With SHMHEAP_PROGRAM, the one it
 * names: a path, or a file name to compare with the last part of the path,
 * each matched against the executable and against the path the program was
 * run by, so that a link's name works (redis-server, a link to
 * redis-check-rdb).  Without, the executable recorded in the heap.  Only
 * this process is judged so: whether another one still uses the heap is
 * told by the tag of the executable it registered with (proc_state). */
static int self_is_program(const struct shm_header *h) {
  const char *exe = os_self_exe(), *want = opts.program;
  if (!want) return runs_recorded(exe, h);
  const char *fn = self_execfn();
  return path_is(exe, want) || (fn && path_is(fn, want)) || (strchr(want, '/') && os_same_file(want, exe));
}

int recover_program_is_self(void) { return self_is_program(G.hdr); }

/* ---- the process table ------------------------------------------------------- */

/* The tag of an executable in a table entry (format.h). */
static uint32_t exe_tag(const char *path) {
  uint32_t x = 2166136261u;
  for (; *path; path++) x = (x ^ (unsigned char)*path) * 16777619u;
  return (x | 0x80000000u) & ~SH_PROC_EXEC;
}

enum proc_is { PROC_USER, PROC_LEFT, PROC_DEAD };

/* What became of the process of table entry e.  It still uses the heap
 * while it is alive and runs the executable it registered with.  It left
 * cleanly if it exec'd: it runs another executable now, or its pid is gone
 * after it marked its exec (exec.c), or it is this process's earlier image
 * while this one attaches (the exec kept the pid).  Gone without either,
 * it crashed.  This process is a user once attached (the supervisor
 * reaping its worker, a process leaving). */
static enum proc_is proc_state(const struct shm_header *h, const struct shm_proc *e, pid_t pid, int attaching) {
  if (pid == SELF.pid && (!e->start || e->start == SELF.start)) return attaching ? PROC_LEFT : PROC_USER;
  uint32_t flags = atomic_load(&((struct shm_proc *)e)->flags);
  if (!hv_proc_alive(e)) return flags & SH_PROC_EXEC ? PROC_LEFT : PROC_DEAD;
  char buf[SH_PROGRAM_MAX];
  const char *exe = os_exe_of(pid, buf, sizeof buf);
  if (!exe) return PROC_USER; /* unreadable: assume it is */
  /* Untagged: registered by a library before tags; the recorded program. */
  int same = SH_PROC_TAG(flags) ? exe_tag(exe) == SH_PROC_TAG(flags) : runs_recorded(exe, h);
  return same ? PROC_USER : PROC_LEFT;
}

static int proc_alive(const struct shm_header *h, const struct shm_proc *e, pid_t pid, int attaching) {
  return proc_state(h, e, pid, attaching) == PROC_USER;
}

/* A listed process that uses the heap, other than an earlier image of this
 * one: its pid, or 0 if there is none. */
static pid_t first_user(const struct shm_header *h) {
  for (unsigned i = 0; i < SH_MAX_PROCS; i++) {
    pid_t pid = atomic_load(&h->procs[i].pid);
    if (pid && proc_alive(h, &h->procs[i], pid, 1)) return pid;
  }
  return 0;
}

/* This process's entry: its own, or its earlier image's (before an exec). */
static struct shm_proc *own_entry(const struct shm_header *h) {
  for (unsigned i = 0; i < SH_MAX_PROCS; i++) {
    const struct shm_proc *e = &h->procs[i];
    if (atomic_load(&((struct shm_proc *)e)->pid) == SELF.pid && (!e->start || e->start == SELF.start))
      return (struct shm_proc *)e;
  }
  return NULL;
}

static int has_roots(const struct shm_header *h) {
  for (unsigned i = 0; i < SH_ROOT_MAX; i++)
    if (atomic_load_explicit(&((struct shm_header *)h)->roots[i].name[0], memory_order_relaxed)) return 1;
  return 0;
}

static int ancestor_of_self(pid_t pid) {
  pid_t p = getppid();
  for (int depth = 0; p > 1 && depth < 64; depth++) {
    if (p == pid) return 1;
    if (!os_proc_stat(p, &p, NULL)) break;
  }
  return 0;
}

/* A launcher's heap: formed by an executable that is not this program's,
 * never re-attached by another process since (h->attaches), holding no
 * root (so nothing in it can be found by a program), and made
 *  - by this very process before it exec'd this program (env, nohup,
 *    sh -c 'exec ...', a shim script ending in exec): its images are all
 *    listed, each attached in turn;
 *  - or, with SHMHEAP_PROGRAM naming this program, by this process or an
 *    ancestor (a launcher that had the key but not SHMHEAP_PROGRAM, and
 *    forked this one: timeout, a script).
 * The program forms it anew and gets the restarts it would get started
 * directly.  The callers make sure that nobody uses it. */
static int launchers_heap(const struct shm_header *h) {
  if (has_roots(h) || h->attaches || runs_recorded(os_self_exe(), h)) return 0;
  if (opts.program) return self_is_program(h) && (h->creator_pid == SELF.pid || ancestor_of_self(h->creator_pid));
  return h->creator_pid == SELF.pid && own_entry(h);
}

int recover_segment_is_for_self(const struct shm_header *h) {
  return (self_is_program(h) || launchers_heap(h)) && !first_user(h);
}

/* The exec family (exec.c): this process is about to exec (inside 1), or
 * its exec failed (0).  Its entry says so, for whoever finds its pid gone
 * later: an exec into a program without this library leaves nothing else
 * behind to tell a clean exit from a crash.  Not in a vfork child, which
 * shares its parent's memory but is not its parent. */
void recover_exec(int inside) {
  if (!SELF.keyed || !G.hdr || os_getpid() != SELF.pid) return;
  struct shm_proc *e = own_entry(G.hdr);
  if (!e) return;
  if (inside) atomic_fetch_or(&e->flags, SH_PROC_EXEC);
  else atomic_fetch_and(&e->flags, ~SH_PROC_EXEC);
}

/* This process into the table, with the tag of its executable.  Inside an
 * edit. */
static int register_self(void) {
  uint64_t start;
  if (!os_proc_stat(SELF.pid, NULL, &start)) start = 0;
  for (unsigned i = 0; i < SH_MAX_PROCS; i++) {
    struct shm_proc *e = &G.hdr->procs[i];
    if (atomic_load(&e->pid) != 0) continue;
    JW(e->start) = start;
    JW(e->flags) = exe_tag(os_self_exe());
    JW(e->pid) = SELF.pid; /* last: the entry exists */
    return 1;
  }
  return 0; /* full: this process is not tracked (documented limit) */
}

void recover_register_self(void) {
  if (!SELF.keyed) return;
  pages_lock();
  journal_begin();
  register_self();
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
 * entries of processes that crashed (that neither left nor exec'd). */
static unsigned reap(struct shmheap_recovery *f, int attaching) {
  struct shm_header *h = G.hdr;
  unsigned dead = 0;
  journal_begin();
  for (unsigned i = 0; i < SH_MAX_PROCS; i++) {
    struct shm_proc *e = &h->procs[i];
    pid_t pid = atomic_load(&e->pid);
    enum proc_is st = pid ? proc_state(h, e, pid, attaching) : PROC_USER;
    if (st != PROC_USER) {
      JW(e->pid) = 0;
      journal_step(); /* one entry at a time: the table has SH_MAX_PROCS */
      dead += st == PROC_DEAD;
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
    if (first_user(h)) idle = 0;
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

static const char *private_why = "";
static char private_why_buf[64 + SH_PROGRAM_MAX];

const char *recover_private_why(void) { return private_why; }

/* This process is not the heap's program, but its earlier image (before an
 * exec) was: it leaves for it, as its exit would have.  Under hdr->lock. */
static void leave_earlier_image(void) {
  struct shm_proc *e = own_entry(G.hdr);
  if (!e) return;
  journal_begin();
  JW(e->pid) = 0;
  journal_end();
  for (uint32_t i = 1; i < G.hdr->max_heap; i++) {
    struct theap *t = &G.heaps[i];
    if (atomic_load(&t->owner_pid) != SELF.pid) continue;
    if (atomic_load(&t->busy)) repair_heap(t); /* a thread the exec stopped mid-edit */
    repair_trim(t);
    journal_begin();
    JW(t->owner_pid) = 0;
    journal_end();
  }
  if (first_user(G.hdr)) page_purge_due();
  else page_purge_all();
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
    register_self();
    journal_end();
    h->last_pid = SELF.pid;
    page_purge_due();
    pages_unlock();
    f->origin = SHMHEAP_NEW;
    f->recovery_ns = os_clock_ns(CLOCK_MONOTONIC) - t0;
    return RECOVER_USE;
  }
  pid_t user = first_user(h);
  if (!user && launchers_heap(h)) {
    /* Ours, formed by the launcher this process was before its exec: gone,
     * and formed anew by the loop in start_up for this program. */
    if (opts.verbose)
      os_say("libshmheap: pid %d (%s): SHMHEAP_KEY=%s: the heap holds no root and was formed by %s, a launcher of this program: formed anew for it",
             (int)SELF.pid, exe, options_key_label(), h->program);
    pages_unlock();
    os_shm_remove(G.shmid);
    return RECOVER_REMOVED;
  }
  if (!self_is_program(h)) {
    private_why = "the heap belongs to another program";
    leave_earlier_image();
    pages_unlock();
    return RECOVER_PRIVATE;
  }
  if (user && opts.fresh) {
    pages_unlock();
    os_die(SH_EXIT_INUSE, "libshmheap: SHMHEAP_KEY=%s: SHMHEAP_FRESH=1, but the heap is in use by pid %d (%s): stop that process first, or unset SHMHEAP_FRESH",
           options_key_label(), (int)user, h->program);
  }
  if (user) {
    /* A second instance of the program while the heap is in use: the
     * server's own executable run as a command (nginx -s reload, nginx -t,
     * a worker it execs) or a second server by mistake.  Either works on a
     * private heap; a keyed heap has one user at a time (shmheap(7)). */
    os_fmt(private_why_buf, sizeof private_why_buf, "the heap is in use by pid %d (%s)", (int)user, h->program);
    private_why = private_why_buf;
    pages_unlock();
    return RECOVER_PRIVATE;
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
  /* This process again after an exec is no re-attach by another. */
  int continued = own_entry(h) != NULL;
  unsigned dead = reap(f, 1);
  f->dead_processes = dead;
  f->previous_pid = h->last_pid;
  /* A collection killed mid-sweep left a heap busy that nobody owns (reap
   * rebuilds only the heaps of the dead): rebuilt now, so that every
   * span's count is true before anything trusts it. */
  for (uint32_t hi = 0; hi < h->max_heap && hi < SH_MAX_HEAPS; hi++)
    if (atomic_load(&G.heaps[hi].busy)) {
      repair_heap(&G.heaps[hi]);
      f->heaps_repaired++;
    }
  int crashed = dead || f->lock_recovered || f->heaps_repaired;
  f->origin = crashed ? SHMHEAP_CRASHED : SHMHEAP_CLEAN;
  /* What departed processes left and no root reaches: freed before this
   * process allocates anything (collect.c). */
  if (opts.gc) collect_at_restart(f);
  journal_begin();
  register_self();
  journal_end();
  h->last_pid = SELF.pid;
  if (!continued || crashed) h->attaches++;
  if (crashed) h->crashes++;
  /* What the dead left free and has lain unused long enough goes back now,
   * not at this process's first allocation. */
  page_purge_due();
  f->recovery_ns = os_clock_ns(CLOCK_MONOTONIC) - t0;
  uint64_t us = f->recovery_ns / 1000;
  h->last_recovery_us = us ? (us < UINT32_MAX ? (uint32_t)us : UINT32_MAX) : 1; /* for shmheap-dump */
  pages_unlock();
  return RECOVER_USE;
}
