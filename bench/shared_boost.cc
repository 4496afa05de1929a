// The multi-process workload of make bench on Boost.Interprocess, for
// comparison with bench/shared.c on libshmheap: the same operations
// (bench/shared_ops.h), with managed_shared_memory's allocate and deallocate
// in place of malloc and free.  Run without any preload:
//     bench/shared_boost NAME
// NAME: the POSIX shared memory object to create (/dev/shm/NAME); one left
// by a killed run is removed first, and it is removed again at the end.
// Prints "seconds peak_rss_kib procs ops bytes".
#include <boost/interprocess/managed_shared_memory.hpp>

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <exception>

namespace bip = boost::interprocess;

// The segment is mapped before the fork, so every process sees it at the
// same address and plain pointers to it can be handed between them, as with
// the libshmheap heap.
static bip::managed_shared_memory *segment;

static inline void *sh_alloc(std::size_t n) { return segment->allocate(n); }  // throws bad_alloc
static inline void sh_free(void *p) { segment->deallocate(p); }

#include "shared_ops.h"

struct sh_ctl *volatile ctl;  // as in shared.c: the block escapes

int main(int argc, char **argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: shared_boost SHM_NAME\n");
    return 2;
  }
  const char *name = argv[1];
  // Removes the object at the start and when main returns or throws; the
  // workers leave through exit(), which does not run it.
  struct Remover {
    const char *n;
    explicit Remover(const char *n_) : n(n_) { bip::shared_memory_object::remove(n); }
    ~Remover() { bip::shared_memory_object::remove(n); }
  } remover(name);
  try {
    // 64 MiB: the workload keeps at most SH_PROCS * SH_SLOTS blocks of
    // 512 B (2 MiB) live; the rest leaves room for fragmentation.
    bip::managed_shared_memory seg(bip::create_only, name, 64u << 20);
    segment = &seg;
    ctl = static_cast<struct sh_ctl *>(seg.allocate(sizeof(struct sh_ctl)));
    int st = sh_run(ctl, "shared_boost", "the Boost.Interprocess segment is not shared");
    seg.deallocate(ctl);
    return st;
  } catch (const std::exception &e) {
    std::fprintf(stderr, "shared_boost: %s\n", e.what());
    return 1;
  }
}
