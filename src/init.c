/* Start-up.  The first malloc can come before any constructor (ld.so and
 * libstdc++ allocate while libraries are still being set up), so the heap is
 * set up lazily by whichever comes first: that malloc or our constructor.
 * Nothing on this path allocates (decision 5). */
#include <fcntl.h>
#include <sched.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/auxv.h>
#include <sys/shm.h>
#include <sys/syscall.h>

#include "heapview.h"

struct global G;
_Atomic int sh_ready;

/* The key was inherited, not meant for this process: it runs on a private
 * heap as if SHMHEAP_KEY were unset, silently (SHMHEAP_VERBOSE says why). */
static void private_heap(const char *why) {
  if (G.opt.verbose)
    sh_say("libshmheap: pid %d (%s): not using the heap of SHMHEAP_KEY=%s%s0x%x: %s; using a private heap",
           (int)G.pid, sh_self_exe(), G.opt.name, G.opt.name[0] ? " -> " : "", (unsigned)G.opt.key, why);
  G.opt.have_key = 0;
  G.opt.fresh = 0;
  if (!G.opt.size_given) G.opt.size = SH_DEFAULT_SIZE;
}

void sh_init(void) {
  int expect = 0;
  if (!atomic_compare_exchange_strong(&sh_ready, &expect, 1)) {
    /* Another thread is setting up: wait for it. */
    while (atomic_load_explicit(&sh_ready, memory_order_acquire) != 2) sched_yield();
    return;
  }
  G.pid = (pid_t)syscall(SYS_getpid);
  if (!hv_proc_stat(G.pid, NULL, &G.start)) G.start = 0; /* 0: no /proc */
  unsigned long pg = getauxval(AT_PAGESZ);
  if (pg && pg != SH_PAGE)
    sh_die(SH_EXIT_OSERR, "libshmheap: the system page size is %lu bytes; this build supports 4096-byte pages only", pg);
  uint64_t t0 = sh_clock_ns(CLOCK_MONOTONIC);
  sh_init_classes();
  sh_options_parse(&G.opt);
  /* SHMHEAP_PROGRAM names the program the keyed heap is for: any other one
   * that inherited the variables gets a private heap. */
  if (G.opt.have_key && G.opt.program && !sh_program_is_self()) private_heap("it is not SHMHEAP_PROGRAM");
  sh_image_reexec(); /* returns only if no re-exec is needed or possible */
  for (;;) {
    sh_segment_open();
    if (!G.opt.have_key) break;
    int r = sh_attach_recover(t0);
    if (r == 0) break;
    shmdt(G.base);
    G.base = NULL;
    G.hdr = NULL;
    G.reattached = 0;
    memset(&G.rec, 0, sizeof G.rec);
    if (r == 1) private_heap("the heap belongs to another program or to a process above this one");
  }
  sh_gate_barrier_register();
  sh_thread_key_init();
  atomic_store_explicit(&sh_ready, 2, memory_order_release);
  if (G.opt.verbose) {
    int fd = fcntl(2, F_DUPFD_CLOEXEC, 100);
    if (fd >= 0) sh_say_fd = fd;
    const struct shm_header *h = G.hdr;
    static const char *const origin[] = {"fresh", "re-attached (left cleanly)", "re-attached (left by a crash: repaired)"};
    sh_say("libshmheap: attached key=0x%x%s%s shmid=%d addr=%p size=%zu %s pid=%d%s",
           (unsigned)h->key, h->name[0] ? " name=" : "", h->name, G.shmid, (void *)G.base,
           (size_t)h->size, origin[G.rec.origin], (int)G.pid,
           G.opt.have_key && sh_image_reexecuted() ? " (re-executed without address randomization)" : "");
    if (G.rec.origin == SHMHEAP_CRASHED)
      sh_say("libshmheap: recovery: %u dead process(es), %u thread heap(s) rebuilt, %u released, %llu span(s) returned, lock %s, %llu us",
             G.rec.dead_processes, G.rec.heaps_repaired, G.rec.heaps_released,
             (unsigned long long)G.rec.spans_returned, G.rec.lock_recovered ? "rolled back" : "clean",
             (unsigned long long)(G.rec.recovery_ns / 1000));
  }
  /* pthread_atfork may allocate: only now that the heap works. */
  sh_fork_init();
}

__attribute__((constructor)) static void shmheap_ctor(void) {
  if (atomic_load_explicit(&sh_ready, memory_order_acquire) != 2) sh_init();
  sh_image_check();
}

__attribute__((destructor)) static void shmheap_dtor(void) {
  if (atomic_load(&sh_ready) != 2) return;
  if (G.opt.verbose) sh_print_exit_stats();
  sh_thread_release_self();
  sh_proc_leave();
}

SH_API int shmheap_contains(const void *p) {
  return G.base && (uintptr_t)p - (uintptr_t)G.base < G.hdr->size;
}
