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
 * Everything here runs inside the first malloc: system calls only. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/shm.h>
#include <sys/syscall.h>

#include "heapview.h"

/* ---- /proc --------------------------------------------------------------- */

static char self_exe[SH_PROGRAM_MAX];

static const char *exe_of(pid_t pid, char *buf, size_t len) {
  char path[40];
  sh_fmt(path, sizeof path, "/proc/%d/exe", (int)pid);
  ssize_t r = readlink(path, buf, len - 1);
  if (r <= 0) return NULL;
  buf[r] = 0;
  return buf;
}

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
  const char *want = G.opt.program;
  if (want) return !strcmp(path, want) || (!strchr(want, '/') && !strcmp(base_name(path), want));
  return !h || !h->program[0] || !strncmp(path, h->program, SH_PROGRAM_MAX);
}

static int is_program(const char *path) { return is_program_of(path, G.hdr); }

int sh_program_is_self(void) { return is_program(sh_self_exe()); }

const char *sh_self_exe(void) {
  if (!self_exe[0] && !exe_of((pid_t)syscall(SYS_getpid), self_exe, sizeof self_exe))
    memcpy(self_exe, "?", 2);
  return self_exe;
}

/* ---- the process table ------------------------------------------------------- */

/* Is the process of table entry e alive and still running the heap's
 * program?  One that exec'd something else has left the heap as surely as
 * one that died.  Our own pid is a previous image of this process. */
static int proc_alive(const struct shm_header *h, const struct shm_proc *e, pid_t pid) {
  /* Our own pid: a previous image of this process while attaching, but
   * this very process once it runs (the supervisor reaping its worker). */
  if (pid == G.pid) return atomic_load(&sh_ready) == 2;
  if (!hv_proc_alive(e)) return 0;
  char buf[SH_PROGRAM_MAX];
  const char *exe = exe_of(pid, buf, sizeof buf);
  return !exe || is_program_of(exe, h); /* unreadable: assume it is */
}

/* Read-only, at any address: would this process use heap h (the program's,
 * nobody alive using it)?  Only a guess for image.c; sh_attach_recover
 * decides under the lock. */
int sh_heap_is_for_self(const struct shm_header *h) {
  if (!is_program_of(sh_self_exe(), h)) return 0;
  for (unsigned i = 0; i < SH_MAX_PROCS; i++) {
    pid_t pid = atomic_load(&h->procs[i].pid);
    if (pid && proc_alive(h, &h->procs[i], pid)) return 0;
  }
  return 1;
}

static int ancestor_of_self(pid_t pid) {
  pid_t p = getppid();
  for (int depth = 0; p > 1 && depth < 64; depth++) {
    if (p == pid) return 1;
    if (!hv_proc_stat(p, &p, NULL)) break;
  }
  return 0;
}

/* Under hdr->lock. */
static int register_pid(pid_t pid) {
  uint64_t start;
  if (!hv_proc_stat(pid, NULL, &start)) start = 0;
  for (unsigned i = 0; i < SH_MAX_PROCS; i++) {
    struct shm_proc *e = &G.hdr->procs[i];
    if (atomic_load(&e->pid) != 0) continue;
    JW(e->start) = start;
    JW(e->pid) = pid; /* last: the entry exists */
    return 1;
  }
  return 0; /* full: this process is not tracked (documented limit) */
}

/* A share-mode child: one more user of the heap. */
void sh_proc_register(void) {
  if (!G.opt.have_key) return;
  sh_global_lock();
  register_pid(G.pid);
  sh_global_unlock();
}

/* At exit: this process leaves the heap cleanly. */
void sh_proc_leave(void) {
  if (!G.opt.have_key) return;
  sh_global_lock();
  int others = 0;
  for (unsigned i = 0; i < SH_MAX_PROCS; i++) {
    pid_t pid = atomic_load(&G.hdr->procs[i].pid);
    if (pid == G.pid) JW(G.hdr->procs[i].pid) = 0;
    else if (pid && proc_alive(G.hdr, &G.hdr->procs[i], pid)) others = 1;
  }
  /* The last one alive to leave hands back every free page: nobody is left to reuse
   * them before they would decay, and a heap left behind should hold only
   * what is live.  Its own edit is complete, as purging requires. */
  if (!others) {
    sh_ulog_commit();
    span_purge_all();
  }
  sh_global_unlock();
}

/* Frees what gone processes left: table entries, thread heaps (rebuilt if
 * busy, then trimmed), and heap 0 if its lock died with its owner.  Under
 * hdr->lock.  Returns the table entries of processes that never left. */
static unsigned reap(void) {
  struct shm_header *h = G.hdr;
  unsigned dead = 0;
  for (unsigned i = 0; i < SH_MAX_PROCS; i++) {
    struct shm_proc *e = &h->procs[i];
    pid_t pid = atomic_load(&e->pid);
    if (pid && !proc_alive(h, e, pid)) {
      JW(e->pid) = 0;
      dead++;
    }
  }
  sh_ulog_commit();
  for (uint32_t i = 1; i < h->max_heap; i++) {
    struct theap *t = &G.heaps[i];
    pid_t owner = atomic_load(&t->owner_pid);
    if (!owner || (owner != G.pid && !sh_slot_gone(t))) continue;
    if (owner == G.pid && atomic_load(&sh_ready) == 2) continue; /* ours, in use */
    if (atomic_load(&t->busy)) sh_heap_repair(t);
    G.rec.spans_returned += sh_heap_trim(t);
    JW(t->owner_pid) = 0;
    sh_ulog_commit();
    G.rec.heaps_released++;
  }
  /* Heap 0's lock is taken before hdr->lock elsewhere; trylock keeps that
   * order safe here.  EOWNERDEAD: its holder died, maybe mid-edit. */
  int r = pthread_mutex_trylock(&G.heaps[0].lock);
  if (r == EOWNERDEAD) {
    pthread_mutex_consistent(&G.heaps[0].lock);
    sh_heap_repair(&G.heaps[0]);
  }
  if (r == 0 || r == EOWNERDEAD) pthread_mutex_unlock(&G.heaps[0].lock);
  return dead;
}

/* The supervisor, after its worker died: the heap is made whole at once
 * rather than by whichever process next trips over the pieces. */
void sh_reap_gone(void) {
  if (!G.hdr) return;
  sh_global_lock();
  reap();
  sh_global_unlock();
}

/* Called by sh_init once a keyed heap is attached (formed or found).
 * Returns 0 to use it, 1 to use a private heap instead, 2 to start over
 * (SHMHEAP_FRESH removed it). */
int sh_attach_recover(uint64_t t0) {
  struct shm_header *h = G.hdr;
  const char *exe = sh_self_exe();
  sh_global_lock();
  if (!G.reattached) {
    size_t n = strlen(exe);
    memcpy(h->program, exe, n < SH_PROGRAM_MAX ? n + 1 : SH_PROGRAM_MAX);
    h->program[SH_PROGRAM_MAX - 1] = 0;
    register_pid(G.pid);
    h->last_pid = G.pid;
    sh_global_unlock();
    G.rec.origin = SHMHEAP_NEW;
    G.rec.recovery_ns = sh_clock_ns(CLOCK_MONOTONIC) - t0;
    return 0;
  }
  if (!is_program(exe)) {
    sh_global_unlock();
    return 1;
  }
  for (unsigned i = 0; i < SH_MAX_PROCS; i++) {
    struct shm_proc *e = &h->procs[i];
    pid_t pid = atomic_load(&e->pid);
    if (!pid || !proc_alive(h, e, pid)) continue;
    sh_global_unlock();
    if (ancestor_of_self(pid)) return 1;
    sh_die(SH_EXIT_INUSE, "libshmheap: SHMHEAP_KEY=%s%s0x%x: the heap is in use by pid %d (%s); one process uses a keyed heap at a time: stop that process first, or use another SHMHEAP_KEY",
           G.opt.name, G.opt.name[0] ? " -> " : "", (unsigned)G.opt.key, (int)pid, h->program);
  }
  if (G.opt.fresh) {
    /* Nobody uses it: discard it as asked.  Removal frees the key now; the
     * memory goes when the last attach (ours, a dump tool's) goes. */
    sh_global_unlock();
    shmctl(G.shmid, IPC_RMID, NULL);
    return 2;
  }
  unsigned dead = reap();
  G.rec.dead_processes = dead;
  G.rec.previous_pid = h->last_pid;
  int crashed = dead || G.rec.lock_recovered || G.rec.heaps_repaired;
  G.rec.origin = crashed ? SHMHEAP_CRASHED : SHMHEAP_CLEAN;
  register_pid(G.pid);
  h->last_pid = G.pid;
  h->attaches++;
  if (crashed) h->crashes++;
  sh_global_unlock();
  G.rec.recovery_ns = sh_clock_ns(CLOCK_MONOTONIC) - t0;
  return 0;
}

SH_API int shmheap_recovered(struct shmheap_recovery *info) {
  if (atomic_load(&sh_ready) != 2) sh_init();
  if (info) *info = G.rec;
  return G.rec.origin;
}
