/* fork.  In copy mode (the default) the child must end up with a private heap
 * that is exactly the parent's at the fork, as with an ordinary heap; in share
 * mode parent and child keep allocating in one segment.
 *
 * Copy mode, step by step:
 *  prepare (parent)  close the fork gate and wait until no other thread of
 *                    the process is inside a heap edit (busy flags; see
 *                    alloc.h), then take the heap-0 and span locks, so the
 *                    heap's metadata does not change until the copy is made;
 *  child             copy the used parts of the segment into a new private
 *                    segment, put it in place at the heap's address
 *                    (SHM_REMAP), fix its header, locks and thread slots, and
 *                    tell the parent through a pipe (if the child dies
 *                    instead, the pipe closes and the parent goes on);
 *  parent            wait for that word, release everything.
 * The copy is made after the fork, so it holds every heap write that the
 * child's copy of the globals and stacks can point to.  If no pipe can be had
 * (file descriptors exhausted), the parent makes the copy in prepare instead:
 * the metadata is as consistent, but other threads' writes between the copy
 * and the fork itself are not in it.
 *
 * A thread that forks from a signal handler may have interrupted its own heap
 * edit, or hold (or be waiting for) a heap lock that a thread inside an edit
 * needs: it does not wait for busy flags then (that could wait forever), and
 * the child rebuilds the thread heaps that were mid-edit in the copy, as if
 * their threads had died (repair.c).  The handlers are registered once the
 * heap is ready (init.c), so they never meet a heap being set up.  The error-checking lock tells it that
 * it already holds a lock (EDEADLK).  The child of such a fork may call only
 * what is async-signal-safe until it execs or exits, as with glibc: its own
 * heap is the interrupted edit, which the handler's return would finish.
 *
 * Forks from several threads at once take turns (fork_holder); a thread's
 * signal handler may fork inside that thread's own fork.  In a
 * multi-threaded process, a fork from a signal handler that interrupted a
 * heap edit waits for any other thread's fork, which waits for that edit:
 * glibc does not make such a fork safe either (its own locks). */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/single_threaded.h>
#include <unistd.h>

#include "proc.h"

/* ---- stdio across fork ------------------------------------------------------ */

/* glibc's fork, in the child of a multi-threaded process, resets the lock of
 * every FILE on its list (fresetlockfiles) before any atfork child handler
 * runs.  A FILE that fopen allocated is in the heap, which the child still
 * shares with the parent at that moment (copy mode makes its copy in the
 * child handler; share mode never does): the reset would unlock, in the
 * parent, a FILE that one of its threads holds, and the next lock and unlock
 * of it would leave it locked for good.  So the forking thread takes the
 * list lock and takes the heap's FILEs off the list; both sides put them
 * back in their handlers, and a copy-mode child resets their locks in its
 * own copy, as glibc would have.  A single-threaded process is left alone:
 * glibc resets nothing there.  These are glibc's exported libio symbols
 * (GLIBC_2.2.5), not in its headers any more. */
extern FILE *_IO_list_all;
void _IO_list_lock(void);
void _IO_list_unlock(void);

/* glibc's _IO_lock_t (sysdeps/nptl/stdio-lock.h), which fresetlockfiles
 * sets to all zeros. */
struct io_lock {
  int lock, cnt;
  void *owner;
};

#define FILES_CUT 32 /* links changed per fork: runs of heap FILEs */
struct files_cut {
  int locked;                 /* this fork holds the list lock */
  int n;
  FILE **link[FILES_CUT];     /* &_IO_list_all or &prev->_chain ... */
  FILE *was[FILES_CUT];       /* ... and the heap FILE it pointed to */
};

static int file_in_heap(const FILE *fp) {
  return fp->_lock && (uintptr_t)fp->_lock - (uintptr_t)G.base < G.hdr->size;
}

static void files_detach(struct files_cut *c) {
  c->n = 0;
  c->locked = 0;
  if (__libc_single_threaded) return;
  _IO_list_lock();
  c->locked = 1;
  FILE **link = &_IO_list_all;
  while (*link) {
    FILE *fp = *link;
    if (!file_in_heap(fp)) {
      link = &fp->_chain;
      continue;
    }
    if (c->n == FILES_CUT) break; /* the rest stay on the list, as without this */
    FILE *next = fp->_chain;
    while (next && file_in_heap(next)) next = next->_chain;
    c->link[c->n] = link;
    c->was[c->n++] = fp;
    *link = next;
    if (!next) break;
    link = &next->_chain;
  }
}

/* Puts the FILEs back, in the order they were; reset: a copy-mode child's,
 * whose copy holds the parent's lock states. */
static void files_attach(struct files_cut *c, int reset) {
  for (int i = c->n; i-- > 0;) {
    FILE *end = *c->link[i];
    *c->link[i] = c->was[i];
    if (reset)
      for (FILE *fp = c->was[i]; fp != end; fp = fp->_chain) memset(fp->_lock, 0, sizeof(struct io_lock));
  }
  c->n = 0;
}

static _Atomic int default_mode; /* enum shmheap_fork_mode */
static SH_TLS int next_mode = -1; /* set by shmheap_fork for one fork */

/* What one fork took, kept until its parent or child handler gives it back.
 * A signal handler may fork while this thread is inside another fork's
 * handlers (glibc runs them unlocked in a single-threaded process), so the
 * state is a stack: an inner fork works on its own entry and pops it last. */
struct fork_state {
  int mode;
  int copy_failed; /* the parent could not make the copy: copy_why says why */
  int pipe[2];     /* the child's word to the parent: copy made (or 'w': write it) */
  int back[2];     /* the parent's answer to 'w' (copy_by_parent) */
  int remapped;    /* the child's copy is at the heap's address already */
  int copy_id;     /* the child's segment, -1 if none */
  char *copy;      /* its temporary attach in the parent */
  int took_global, took_heap0;
  int closed_gate; /* this fork closed the gate, so it opens it */
  int torn;        /* the copy may hold another thread's edit in progress */
  int h0_torn;     /* ... in heap 0, whose lock another thread held */
  struct files_cut files;
};
#define FORK_NEST 8
static struct fork_state fork_stack[FORK_NEST];
static int fork_depth;

/* One fork at a time in a process.  glibc runs the atfork handlers of
 * concurrent forks at the same time (its own lock is dropped around each
 * handler), and two forks' handlers would share fork_stack, the gate and
 * the locks they take.  The word is the tid of the thread whose fork is in
 * its handlers, 0 if none: that thread's signal handler may fork again
 * (nested, a new fork_stack entry) while any other thread waits. */
static _Atomic int fork_holder;

static void fork_lock_take(void) {
  int me = (int)os_gettid(), cur = 0;
  while (!atomic_compare_exchange_strong(&fork_holder, &cur, me)) {
    if (cur == me) return; /* nested: this thread's fork is in its handlers */
    os_futex_wait(&fork_holder, cur);
    cur = 0;
  }
}

/* After the outermost fork's handler; a nested one keeps it. */
static void fork_lock_drop(void) {
  if (fork_depth) return;
  atomic_store(&fork_holder, 0);
  os_futex_wake_all(&fork_holder);
}

/* Where the used parts of the heap go: into dst, the copy attached in this
 * process, or (to_pid) into the child's copy, already at the heap's
 * address there, by a write into that process. */
struct sink {
  char *dst;
  pid_t to_pid;
  int err;
};

/* Copies [off, off+len) of the segment.  Populating both ranges first maps
 * them in one call each instead of a page fault per page (Linux 5.14; older
 * kernels take the faults). */
static void copy(struct sink *k, uint64_t off, uint64_t len) {
  if (!len || k->err) return;
  if (k->to_pid) {
    if (os_write_into(k->to_pid, G.base + off, len) < 0) k->err = errno;
    return;
  }
  if (len >= 4 * SH_PAGE) {
    os_populate(G.base + off, len, 0);
    os_populate(k->dst + off, len, 1);
  }
  memcpy(k->dst + off, G.base + off, len);
}

/* Copies what is in use: the metadata, and the heap's used bytes walked in
 * address order (spans tile it, I2), runs of adjacent used bytes in one go.
 * Free spans stay zero in the new segment. */
static void copy_used(struct sink *k) {
  struct shm_header *h = G.hdr;
  copy(k, 0, h->header_size);
  copy(k, h->heaps_off, (uint64_t)h->max_heap * sizeof(struct theap));
  copy(k, h->pagemap_off, (uint64_t)h->top * sizeof(uint32_t));
  copy(k, h->spans_off, (uint64_t)h->span_count * sizeof(struct span));
  uint64_t run_off = 0, run_len = 0;
  for (uint32_t pg = 0; pg < h->top;) {
    uint32_t i = G.pagemap[pg];
    if (i >= h->span_count) break;
    struct span *s = &G.spans[i];
    if (s->first != pg || s->npages == 0) break; /* broken tiling: copy no further */
    uint64_t off = h->heap_off + ((uint64_t)pg << SH_PAGE_SHIFT), len = 0;
    if (s->state == SPAN_LARGE) len = (uint64_t)s->npages << SH_PAGE_SHIFT;
    else if (s->state == SPAN_SMALL)
      len = ((uint64_t)s->reserved * s->bsize + SH_PAGE - 1) & ~(uint64_t)(SH_PAGE - 1);
    if (len && run_off + run_len == off) {
      run_len += len;
    } else {
      copy(k, run_off, run_len);
      run_off = off;
      run_len = len;
    }
    if (len < ((uint64_t)s->npages << SH_PAGE_SHIFT)) {
      copy(k, run_off, run_len);
      run_len = 0;
    }
    pg += s->npages;
  }
  copy(k, run_off, run_len);
}

/* The copy's free pages are zero, none dirty: says so in its metadata. */
static void copy_fix_dirty(struct shm_header *dh) {
  struct span *ds = (struct span *)((char *)dh + dh->spans_off);
  for (uint32_t i = 1; i < dh->span_count; i++)
    if (ds[i].state == SPAN_FREE) ds[i].ndirty = 0;
  dh->dirty_pages = 0;
  dh->dirty_head = dh->dirty_tail = 0; /* I8: no span is dirty */
}

/* Why a copy could not be made, and what to change: one sentence for the
 * line the child exits with. */
static void copy_failure(char *buf, size_t len, int attaching, int e) {
  size_t size = (size_t)G.hdr->size, limit, left = os_address_space_left(&limit);
  const char *fix = "use SHMHEAP_FORK=share if the program is written for it, or give the heap a smaller SHMHEAP_SIZE";
  if (attaching && e == ENOMEM && left < size)
    os_fmt(buf, len, "cannot map the child's copy of the heap (%zu MiB): ulimit -v (RLIMIT_AS, %zu MiB) leaves %zu MiB of address space; raise ulimit -v, or %s",
           size >> 20, limit >> 20, left >> 20, fix);
  else if (!attaching && e == ENOSPC)
    os_fmt(buf, len, "cannot create the child's copy of the heap (%zu MiB): the system's shared memory limits (kernel.shmall, kernel.shmmni) are reached; raise them, or %s",
           size >> 20, fix);
  else if (!attaching && e == EINVAL)
    os_fmt(buf, len, "cannot create the child's copy of the heap (%zu MiB): it is beyond kernel.shmmax; raise it, or %s", size >> 20, fix);
  else
    os_fmt(buf, len, "cannot %s the child's copy of the heap (%zu MiB): %s; %s", attaching ? "map" : "create",
           size >> 20, os_errstr(e), fix);
}

static char copy_why[320];

/* In the child, when its copy cannot be mapped beside the heap (ulimit -v
 * leaves no room for a second mapping of the heap's size): the new segment
 * takes the heap's place at once, and the parent, which still has the heap,
 * writes the used parts into this process.  Returns 0, or -1: copy_why
 * already says why the attach failed (said before the remap: after it, the
 * header is not there to say it from). */
static int copy_by_parent(struct fork_state *f, int id) {
  if (f->back[0] < 0 || f->pipe[1] < 0) return -1;
  size_t size = (size_t)G.hdr->size; /* read before the remap: then the header is the empty copy's */
  if (os_shm_remap(id, G.base) == (void *)-1) return -1;
  /* A new mapping: SHMHEAP_HUGEPAGES=thp's advice is given again.  The
   * copy is on 4 KiB pages, whatever the heap was on. */
  if (opts.hugepages == SH_HUGEPAGES_THP) os_advise_huge(G.base, size);
  G.hugetlb = 0;
  /* From here the heap at G.base is the new, empty segment: nothing may
   * read it until the parent has written it. */
  struct {
    char tag;
    int32_t pid;
  } __attribute__((packed)) ask = {'w', (int32_t)os_getpid()};
  ssize_t w;
  do w = write(f->pipe[1], &ask, sizeof ask);
  while (w < 0 && errno == EINTR);
  char r = 0;
  ssize_t n;
  do n = read(f->back[0], &r, 1);
  while (n < 0 && errno == EINTR);
  if (w == (ssize_t)sizeof ask && n == 1 && r == 'd') {
    f->remapped = 1;
    return 0;
  }
  size_t l = strlen(copy_why);
  os_fmt(copy_why + l, sizeof copy_why - l, " (the parent could not write the copy into this process either%s)",
         n == 1 && r == 'p' ? ": it may not write into it, as for a process that is not dumpable" : "");
  /* The heap here is the empty copy: nothing can go on. */
  os_die(SH_EXIT_OSERR, "libshmheap: fork: pid %d: %s", (int)SELF.pid, copy_why);
}

/* Returns 0, or -1 with copy_why saying why.  child: called in the child,
 * which may fall back on copy_by_parent. */
static int copy_segment(struct fork_state *f, int child) {
  struct shm_header *h = G.hdr;
  int id = os_shm_create(0, h->size, 0600);
  if (id < 0) {
    copy_failure(copy_why, sizeof copy_why, 0, errno);
    return -1;
  }
  char *dst = os_shm_attach(id, NULL, 0);
  /* The copy is written through this mapping: with the advice, its pages
   * are huge from the start (the kernel aligns a shared memory mapping for
   * them where shmem_enabled allows them). */
  if (dst != (void *)-1 && opts.hugepages == SH_HUGEPAGES_THP) os_advise_huge(dst, h->size);
  if (dst == (void *)-1) {
    int e = errno;
    copy_failure(copy_why, sizeof copy_why, 1, e);
    int r = child && e == ENOMEM ? copy_by_parent(f, id) : -1;
    /* Marked for removal, attached or not (see below). */
    os_shm_remove(id);
    if (r < 0) return -1;
    copy_fix_dirty(h); /* the heap's address is the copy now */
    f->copy_id = id;
    f->copy = NULL;
    return 0;
  }
  /* Marked for removal at once (Linux keeps a removed segment attachable by
   * id while it is attached): whoever dies, nothing is left behind. */
  os_shm_remove(id);
  struct sink k = {dst, 0, 0};
  copy_used(&k);
  copy_fix_dirty((struct shm_header *)dst);
  f->copy_id = id;
  f->copy = dst;
  return 0;
}

/* The parent's side of copy_by_parent: the child asked for its copy. */
static void write_child_copy(struct fork_state *f) {
  int32_t pid;
  ssize_t n;
  do n = read(f->pipe[0], &pid, sizeof pid);
  while (n < 0 && errno == EINTR);
  char r = 'f';
  if (n == (ssize_t)sizeof pid && pid > 0) {
    struct sink k = {NULL, (pid_t)pid, 0};
    copy_used(&k);
    r = k.err == 0 ? 'd' : k.err == EPERM ? 'p' : 'f';
  }
  ssize_t w;
  do w = write(f->back[1], &r, 1);
  while (w < 0 && errno == EINTR);
}

static void prepare(void) {
  fork_lock_take();
  if (fork_depth == 0) prefault_pause();
  if (fork_depth >= FORK_NEST)
    os_die(SH_EXIT_OSERR, "libshmheap: fork nested %d deep in signal handlers", FORK_NEST);
  struct fork_state *f = &fork_stack[fork_depth];
  f->mode = next_mode >= 0 ? next_mode : atomic_load(&default_mode);
  f->copy_id = -1;
  f->copy = NULL;
  f->pipe[0] = f->pipe[1] = -1;
  f->back[0] = f->back[1] = -1;
  f->copy_failed = f->remapped = 0;
  f->took_global = f->took_heap0 = f->closed_gate = f->torn = f->h0_torn = 0;
  fork_depth++;
  files_detach(&f->files);
  /* A share-mode child would go on with an edit this thread was making when
   * the signal came, in the heap the parent goes on editing too: such a
   * fork is made in copy mode instead (documented in shmheap_fork(3)). */
  if (f->mode == SHMHEAP_FORK_SHARE && (locks_held() || (tl_heap && atomic_load(&tl_heap->busy))))
    f->mode = SHMHEAP_FORK_COPY;
  if (f->mode == SHMHEAP_FORK_SHARE) return;
  f->closed_gate = alloc_gate_close();
  /* A thread holding (or waiting for) a heap lock, interrupted by the signal
   * handler that forks, must not wait for threads that may need that lock. */
  f->torn = locks_held() || (tl_heap && atomic_load(&tl_heap->busy));
  if (!locks_held()) {
    for (uint32_t i = 1; i < G.hdr->max_heap; i++) {
      struct theap *h = &G.heaps[i];
      if (h == tl_heap || atomic_load(&h->owner_pid) != SELF.pid) continue;
      while (atomic_load_explicit(&h->busy, memory_order_acquire)) sched_yield();
    }
  }
  /* Heap 0's lock comes before hdr->lock.  This thread may hold hdr->lock
   * (a signal handler interrupted it): then blocking on heap 0, whose holder
   * may be waiting for hdr->lock, would deadlock; if heap 0 is busy, the
   * child rebuilds it instead (its holder does not exist there). */
  enum lock_result h0 = LOCK_HELD;
  if (tl_h0_held) {
    /* ours: the child goes on with the edit */
  } else if (locks_held()) {
    h0 = lock_acquire(&G.heaps[0].lock, LOCK_TRY);
    if (h0 == LOCK_BUSY || h0 == LOCK_HELD) f->h0_torn = 1;
  } else {
    h0 = lock_acquire(&G.heaps[0].lock, LOCK_WAIT);
  }
  enum lock_result gl = lock_acquire(&G.hdr->lock, LOCK_WAIT);
  f->took_heap0 = h0 == LOCK_TAKEN || h0 == LOCK_OWNER_DIED;
  f->took_global = gl == LOCK_TAKEN || gl == LOCK_OWNER_DIED;
  if (gl == LOCK_OWNER_DIED) journal_rollback();
  if (h0 == LOCK_OWNER_DIED) repair_heap(&G.heaps[0]); /* hdr->lock is ours: taken, or held */
  if (pipe2(f->pipe, O_CLOEXEC) == 0) { /* the child copies */
    if (pipe2(f->back, O_CLOEXEC) < 0) f->back[0] = f->back[1] = -1; /* without copy_by_parent */
    return;
  }
  f->pipe[0] = f->pipe[1] = -1;
  /* The child says it, when it finds no copy (copy_why is in its memory). */
  if (copy_segment(f, 0) < 0) f->copy_failed = 1;
}

static void release(struct fork_state *f) {
  if (f->took_global) lock_release(&G.hdr->lock, LOCK_WAIT);
  if (f->took_heap0) lock_release(&G.heaps[0].lock, LOCK_WAIT);
  if (f->closed_gate) alloc_gate_open();
}

static void parent(void) {
  if (fork_depth == 0) return;
  struct fork_state *f = &fork_stack[fork_depth - 1];
  next_mode = -1;
  if (f->mode != SHMHEAP_FORK_SHARE) {
    if (f->pipe[1] >= 0) {
      close(f->pipe[1]);
      if (f->back[0] >= 0) close(f->back[0]);
      char c;
      ssize_t n;
      do {
        n = read(f->pipe[0], &c, 1);
        if (n == 1 && c == 'w' && f->back[1] >= 0) write_child_copy(f); /* then wait for 'c' */
      } while ((n < 0 && errno == EINTR) || (n == 1 && c == 'w'));
      close(f->pipe[0]);
      if (f->back[1] >= 0) close(f->back[1]);
    }
    /* A copy made here: the child has its own attach now (or fork failed),
     * so drop ours and the segment lives exactly as long as the child. */
    if (f->copy) os_shm_detach(f->copy);
    release(f);
  }
  files_attach(&f->files, 0);
  if (f->files.locked) _IO_list_unlock();
  fork_depth--; /* last: a fork from a signal handler above used the next entry */
  /* Before the fork lock goes: another thread's fork must not find the
   * threads let go after its prepare parked them. */
  if (fork_depth == 0) prefault_resume();
  fork_lock_drop();
}

/* In a child, every fork on the stack (a nested one's and the forks it
 * interrupted) puts its FILEs back now: glibc reset the list lock here, so
 * none of them holds it any more. */
static void files_back_in_child(int reset) {
  for (int d = fork_depth; d-- > 0;) {
    files_attach(&fork_stack[d].files, reset);
    fork_stack[d].files.locked = 0;
  }
}

static void child(void) {
  if (fork_depth == 0) return;
  struct fork_state *f = &fork_stack[fork_depth - 1];
  pid_t parent_pid = SELF.pid;
  /* Only this thread exists here: the fork lock is its own, under its new
   * tid (a signal handler that forks below is nested in this fork). */
  atomic_store(&fork_holder, (int)os_gettid());
  prefault_forget();
  background_forget();
  self_identify();
  next_mode = -1;
  alloc_gate_register();
  if (f->mode == SHMHEAP_FORK_SHARE) {
    /* Same segment: the parent's slots stay the parent's; this thread takes
     * a slot of its own on its next allocation.  The child is one more user
     * of a keyed heap. */
    thread_forget();
    recover_register_self();
    files_back_in_child(0);
    fork_depth--;
    fork_lock_drop();
    return;
  }
  if (f->pipe[0] >= 0) {
    close(f->pipe[0]);
    if (f->back[1] >= 0) close(f->back[1]);
    if (copy_segment(f, 1) < 0) os_die(SH_EXIT_OSERR, "libshmheap: fork: pid %d: %s", (int)SELF.pid, copy_why);
  } else if (!f->copy) {
    if (f->copy_failed) os_die(SH_EXIT_OSERR, "libshmheap: fork: pid %d: %s", (int)SELF.pid, copy_why);
    os_die(SH_EXIT_OSERR, "libshmheap: fork: pid %d: the parent made no copy of the heap for this child, and gave no reason (a bug: please report it)",
           (int)SELF.pid);
  }
  if (f->back[0] >= 0) close(f->back[0]);
  if (!f->remapped) {
    if (os_shm_remap(f->copy_id, G.base) == (void *)-1)
      os_die(SH_EXIT_OSERR, "libshmheap: fork: pid %d: cannot put the child's copy of the heap at %p: %s", (int)SELF.pid,
             (void *)G.base, os_errstr(errno));
    if (opts.hugepages == SH_HUGEPAGES_THP) os_advise_huge(G.base, (size_t)G.hdr->size);
    G.hugetlb = 0; /* the copy is on 4 KiB pages (os_shm_create) */
    os_shm_detach(f->copy);
  }
  struct shm_header *h = G.hdr;
  G.shmid = f->copy_id;
  h->key = 0;
  memset(h->name, 0, sizeof h->name);
  /* The copy is this process's heap, formed now: who has it is told by its
   * creator and when (shmheap-dump checks both against /proc). */
  h->creator_pid = SELF.pid;
  h->created = os_clock_ns(CLOCK_REALTIME) / 1000000000u;
  h->last_pid = SELF.pid;
  lock_init(&h->lock);
  lock_init(&G.heaps[0].lock);
  SELF.keyed = 0;
  SELF.reattached = 0;
  memset(h->procs, 0, sizeof h->procs); /* a private heap: nobody else uses it */
  /* The copy holds the parent's threads' slots: they do not exist here.  A
   * torn copy (see above) may hold another thread's edit in progress: that
   * slot is rebuilt like one whose thread died (I7). */
  struct theap *mine = tl_heap;
  if (f->torn)
    for (uint32_t i = 1; i < h->max_heap; i++)
      if (&G.heaps[i] != mine && atomic_load(&G.heaps[i].owner_pid) == parent_pid && atomic_load(&G.heaps[i].busy))
        repair_heap(&G.heaps[i]);
  if (f->h0_torn) repair_heap(&G.heaps[0]);
  /* Slots of other processes (share-mode users of a keyed heap) were not
   * quiet while the copy was made: their block lists may be torn in any
   * span.  They do not exist here; their slots are orphaned (never claimed
   * again), so nothing allocates from what the copy caught mid-edit. */
  for (uint32_t i = 1; i < h->max_heap; i++) {
    pid_t o = atomic_load(&G.heaps[i].owner_pid);
    if (o > 0 && o != parent_pid && &G.heaps[i] != mine) {
      atomic_store(&G.heaps[i].busy, 0);
      atomic_store(&G.heaps[i].owner_pid, -1);
    }
  }
  thread_release_copied(parent_pid, mine);
  if (mine) {
    mine->owner_start = SELF.start;
    atomic_store(&mine->owner_pid, SELF.pid);
    mine->owner_tid = (int32_t)os_gettid();
  }
  if (f->pipe[1] >= 0) {
    ssize_t w;
    do w = write(f->pipe[1], "c", 1);
    while (w < 0 && errno == EINTR);
    close(f->pipe[1]);
  }
  /* The copy's locks are new; the fork that this one interrupted (if any)
   * holds nothing here either. */
  for (int d = 0; d < fork_depth; d++) {
    fork_stack[d].took_global = fork_stack[d].took_heap0 = 0;
    fork_stack[d].copy = NULL;
  }
  files_back_in_child(1);
  atomic_fetch_and(&alloc_gate, ~GATE_CLOSED);
  fork_depth--;
  fork_lock_drop();
}

void fork_init(int share) {
  atomic_store(&default_mode, share ? SHMHEAP_FORK_SHARE : SHMHEAP_FORK_COPY);
  pthread_atfork(prepare, parent, child);
}

SH_API pid_t shmheap_fork(enum shmheap_fork_mode mode) {
  if (mode != SHMHEAP_FORK_COPY && mode != SHMHEAP_FORK_SHARE) {
    errno = EINVAL;
    return -1;
  }
  next_mode = (int)mode;
  pid_t pid = fork();
  next_mode = -1;
  return pid;
}

SH_API int shmheap_set_fork_mode(enum shmheap_fork_mode mode) {
  if (mode != SHMHEAP_FORK_COPY && mode != SHMHEAP_FORK_SHARE) {
    errno = EINVAL;
    return -1;
  }
  return atomic_exchange(&default_mode, (int)mode);
}

SH_API enum shmheap_fork_mode shmheap_get_fork_mode(void) {
  return (enum shmheap_fork_mode)atomic_load(&default_mode);
}
