/* Start-up.  The first malloc can come before any constructor (ld.so and
 * libstdc++ allocate while libraries are still being set up), so the heap is
 * set up lazily by whichever comes first: that malloc or our constructor.
 * Nothing on this path allocates (decision 5). */
#include <fcntl.h>
#include <sched.h>
#include <unistd.h>
#include <sys/auxv.h>
#include <sys/shm.h>
#include <sys/syscall.h>

#include "internal.h"

struct global G;
_Atomic int sh_ready;

void sh_init(void) {
  int expect = 0;
  if (!atomic_compare_exchange_strong(&sh_ready, &expect, 1)) {
    /* Another thread is setting up: wait for it. */
    while (atomic_load_explicit(&sh_ready, memory_order_acquire) != 2) sched_yield();
    return;
  }
  G.pid = (pid_t)syscall(SYS_getpid);
  unsigned long pg = getauxval(AT_PAGESZ);
  if (pg && pg != SH_PAGE)
    sh_die(SH_EXIT_OSERR, "libshmheap: the system page size is %lu bytes; this build supports 4096-byte pages only", pg);
  sh_init_classes();
  sh_options_parse(&G.opt);
  sh_segment_open();
  if (G.reattached) {
    struct shmid_ds ds;
    /* Nobody else has it attached: every thread heap recorded in it belongs
     * to a process that is gone, so its idle slots are free again.  Asked
     * under the lock, which a process that attaches after us needs before it
     * can claim a slot. */
    sh_global_lock();
    if (shmctl(G.shmid, IPC_STAT, &ds) == 0 && ds.shm_nattch == 1) sh_heaps_release_process(-1, NULL, 0);
    sh_global_unlock();
  }
  sh_gate_barrier_register();
  sh_thread_key_init();
  atomic_store_explicit(&sh_ready, 2, memory_order_release);
  if (G.opt.verbose) {
    int fd = fcntl(2, F_DUPFD_CLOEXEC, 100);
    if (fd >= 0) sh_say_fd = fd;
    const struct shm_header *h = G.hdr;
    sh_say("libshmheap: attached key=0x%x%s%s shmid=%d addr=%p size=%zu %s pid=%d",
           (unsigned)h->key, h->name[0] ? " name=" : "", h->name, G.shmid, (void *)G.base,
           (size_t)h->size, G.reattached ? "re-attached" : "fresh", (int)G.pid);
  }
  /* pthread_atfork may allocate: only now that the heap works. */
  sh_fork_init();
}

__attribute__((constructor)) static void shmheap_ctor(void) {
  if (atomic_load_explicit(&sh_ready, memory_order_acquire) != 2) sh_init();
}

__attribute__((destructor)) static void shmheap_dtor(void) {
  if (atomic_load(&sh_ready) != 2) return;
  if (G.opt.verbose) sh_print_exit_stats();
  sh_thread_release_self();
}

SH_API int shmheap_contains(const void *p) {
  return G.base && (uintptr_t)p - (uintptr_t)G.base < G.hdr->size;
}
