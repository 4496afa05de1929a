/* Start-up.  The first malloc can come before any constructor (ld.so and
 * libstdc++ allocate while libraries are still being set up), so the heap is
 * set up lazily by whichever comes first: that malloc or our constructor.
 * In order: options, segment, recovery, image.  Nothing on this path
 * allocates (decision 5). */
#include <fcntl.h>
#include <sched.h>
#include <unistd.h>
#include <sys/auxv.h>

#include "init.h"
#include "stats.h"

_Atomic int start_state;

/* The key was inherited, not meant for this process: it runs on a private
 * heap as if SHMHEAP_KEY were unset, silently (SHMHEAP_VERBOSE says why). */
static void use_private_segment(const char *why) {
  if (opts.verbose)
    os_say("libshmheap: pid %d (%s): not using the heap of SHMHEAP_KEY=%s: %s; using a private heap",
           (int)SELF.pid, os_self_exe(), options_key_label(), why);
  opts.have_key = 0;
  opts.fresh = 0;
  if (!opts.size_given) opts.size = options_default_size(&opts.size_fitted);
}

static void say_attached(void) {
  int fd = fcntl(2, F_DUPFD_CLOEXEC, 100);
  if (fd >= 0) os_say_fd = fd;
  const struct shm_header *h = G.hdr;
  const struct shmheap_recovery *rec = recover_findings();
  static const char *const origin[] = {"fresh", "re-attached (left cleanly)", "re-attached (left by a crash: repaired)"};
  os_say("libshmheap: attached key=0x%x%s%s shmid=%d addr=%p size=%zu %s pid=%d%s%s",
         (unsigned)h->key, h->name[0] ? " name=" : "", h->name, G.shmid, (void *)G.base,
         (size_t)h->size, origin[rec->origin], (int)SELF.pid,
         SELF.keyed && image_reexecuted() ? " (re-executed without address randomization)" : "",
         G.hugetlb ? " on hugetlb pages of 2 MiB" : "");
  if (rec->origin == SHMHEAP_CRASHED || rec->spans_quarantined)
    os_say("libshmheap: recovery: %u dead process(es), %u thread heap(s) rebuilt, %u released, %llu span(s) returned, %llu quarantined (%llu blocks lost), lock %s, %llu us (check %llu us)",
           rec->dead_processes, rec->heaps_repaired, rec->heaps_released,
           (unsigned long long)rec->spans_returned, (unsigned long long)rec->spans_quarantined,
           (unsigned long long)rec->blocks_lost, rec->lock_recovered ? "rolled back" : "clean",
           (unsigned long long)(rec->recovery_ns / 1000), (unsigned long long)(rec->check_ns / 1000));
  if (opts.gc && rec->origin != SHMHEAP_NEW)
    os_say("libshmheap: collection: %s%llu block(s)%s freed, %llu bytes, %llu us",
           rec->gc_reset ? "no root holds a pointer: the heap was emptied, " : "", (unsigned long long)rec->gc_blocks,
           rec->gc_reset ? "" : " no root reaches", (unsigned long long)rec->gc_bytes,
           (unsigned long long)(rec->gc_ns / 1000));
}

/* The thread that is setting the heap up: waiting for itself would never
 * end. */
static _Thread_local int starting;

int start_up(void) {
  if (starting) {
    static _Atomic int said;
    if (!atomic_exchange(&said, 1))
      os_say("libshmheap: pid %d: an allocation while the heap was being set up, from the thread setting it up (a signal handler, or the dynamic loader reporting an error): it fails with ENOMEM",
             (int)os_getpid());
    return 0;
  }
  int expect = START_NONE;
  if (!atomic_compare_exchange_strong(&start_state, &expect, START_ATTACHING)) {
    /* Another thread is setting up: wait for it. */
    while (!started()) sched_yield();
    return 1;
  }
  starting = 1;
  self_identify();
  unsigned long pg = getauxval(AT_PAGESZ);
  if (pg && pg != SH_PAGE)
    os_die(SH_EXIT_OSERR, "libshmheap: the system page size is %lu bytes; this build supports 4096-byte pages only", pg);
  uint64_t t0 = os_clock_ns(CLOCK_MONOTONIC);
  small_classes_init();
  options_parse(&opts);
  /* SHMHEAP_PROGRAM names the program the keyed heap is for: any other one
   * that inherited the variables gets a private heap. */
  if (opts.have_key && opts.program && !recover_program_is_self()) use_private_segment("it is not SHMHEAP_PROGRAM");
  SELF.keyed = opts.have_key;
  image_reexec(); /* returns only if no re-exec is needed or possible */
  for (;;) {
    int seg = segment_open();
    if (seg == SEGMENT_INHERITED || seg == SEGMENT_IN_USE_UNFIT) {
      use_private_segment(seg == SEGMENT_INHERITED
                              ? "it is another user's heap, and this process inherited the key from that heap's processes"
                              : "the heap is in use by another process, and larger than the address space ulimit -v leaves this one");
      SELF.keyed = 0;
      continue;
    }
    if (!opts.have_key) break;
    enum recover_verdict r = recover_attach(t0);
    if (r == RECOVER_USE) break;
    segment_close();
    recover_forget();
    if (r == RECOVER_PRIVATE) use_private_segment(recover_private_why());
    SELF.keyed = opts.have_key;
  }
  alloc_gate_register();
  thread_key_init();
  atomic_store_explicit(&start_state, START_READY, memory_order_release);
  starting = 0;
  if (opts.verbose) {
    if (opts.size_fitted && !SELF.reattached)
      os_say("libshmheap: pid %d: SHMHEAP_SIZE unset and ulimit -v (RLIMIT_AS) is %zu MiB: a heap of %zu MiB, a third of the address space left, instead of 64 GiB",
             (int)SELF.pid, opts.size_fitted >> 20, opts.size >> 20);
    say_attached();
  }
  /* pthread_atfork may allocate: only now that the heap works. */
  fork_init(opts.fork_share);
  return 1;
}

void start_up_or_die(void) {
  if (!start_up())
    os_die(SH_EXIT_OSERR, "libshmheap: pid %d: the libshmheap API was called while the heap was being set up, from the thread setting it up (a signal handler?)",
           (int)os_getpid());
}

__attribute__((constructor)) static void shmheap_ctor(void) {
  ensure_init();
  /* The first malloc may have come before environ was set. */
  options_strip_reexec();
  image_check();
  /* Here, not in start_up: that can run inside ld.so, where no thread may
   * be started, and the walk is no business of the first malloc. */
  if (SELF.keyed) prefault_start();
}

__attribute__((destructor)) static void shmheap_dtor(void) {
  if (!started()) return;
  prefault_stop(); /* before anything lets go of the heap */
  background_stop();
  if (opts.verbose) {
    struct stats_totals t;
    stats_totals(&t);
    os_say("libshmheap: exit pid=%d in_use=%lu heap=%lu nmalloc=%lu nfree=%lu large=%lu purged=%lu",
           (int)SELF.pid, t.in_use, t.heap_bytes, t.nmalloc, t.nfree, G.hdr->large_count,
           G.hdr->purged_pages << SH_PAGE_SHIFT);
  }
  thread_release_self();
  recover_leave();
}
