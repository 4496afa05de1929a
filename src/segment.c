/* The SysV segment: create it, or find it and decide whether it is a heap we
 * may use, attach it at its fixed address, and lay out a fresh heap in it.
 *
 * Rules (decision 6): a segment that is not ours, of another format or size,
 * or owned by another user is never reformatted or removed; the process gets
 * one line and a documented exit status.  Everything here runs inside the
 * first malloc, so it uses system calls only. */
#include <errno.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/ipc.h>
#include <sys/shm.h>

#include "init.h"

/* The segment attached at base: laid out (a fresh heap) or found. */
static char *seg_base;
static int seg_id;

static int seg_hugetlb; /* the segment create_segment made is on hugetlb pages */

static void form_segment(const struct options *o) {
  struct shm_header *h = (struct shm_header *)seg_base;
  h->format = SH_FORMAT;
  fmt_layout(h, o->size, (uintptr_t)seg_base);
  h->key = o->have_key ? o->key : 0;
  memcpy(h->name, o->name, sizeof h->name);
  h->name_hash = (uint32_t)h->key;
  h->creator_uid = (uint32_t)geteuid();
  h->creator_pid = SELF.pid;
  h->created = os_clock_ns(CLOCK_REALTIME) / 1000000000u;
  h->link_secret = os_random64();
  h->nclass = SH_NCLASS;
  memcpy(h->class_size, small_class_size, sizeof h->class_size);
  memcpy(h->class_pages, small_class_pages, sizeof h->class_pages);
  lock_init(&h->lock);
  map_set(seg_base, seg_id);
  G.hugetlb = seg_hugetlb;
  lock_init(&G.heaps[0].lock);
  h->span_count = 1; /* descriptor 0 is the empty span every empty class points at */
  h->max_heap = 1;   /* heap 0, shared by threads that have no slot, always exists */
  /* The magic goes in last: a process that attaches while we are here sees
   * an unformed segment and waits, instead of using half a header. */
  atomic_thread_fence(memory_order_release);
  atomic_store_explicit((_Atomic uint64_t *)&h->magic, SH_MAGIC, memory_order_release);
}

/* created: the segment is ours and empty, so a failed attach removes it. */
static void attach_at(int id, uintptr_t addr, const struct options *o, int created) {
  void *p = os_shm_attach(id, (void *)addr, 0);
  if (p == (void *)-1) {
    int e = errno;
    if (created) os_shm_remove(id);
    if (e == EINVAL)
      os_die(SH_EXIT_OSERR, "libshmheap: cannot attach the heap at SHMHEAP_ADDR=%p (%zu bytes): the range overlaps a mapping of this process; choose another SHMHEAP_ADDR",
             (void *)addr, o->size);
    if (e == EACCES)
      /* Another user's segment was refused before this (65): here it is
       * this user's, with a mode that does not let its owner write. */
      os_die(SH_EXIT_OSERR, "libshmheap: permission denied: segment shmid %d (SHMHEAP_KEY=0x%x) is this user's, but its mode does not let its owner write it; give it mode 0600 again (IPC_SET) or use another SHMHEAP_KEY",
             id, (unsigned)o->key);
    size_t limit, left = os_address_space_left(&limit);
    if (e == ENOMEM && left < o->size)
      os_die(SH_EXIT_OSERR, "libshmheap: cannot attach the heap of %zu MiB (shmid %d): ulimit -v (RLIMIT_AS, %zu MiB) leaves this process %zu MiB of address space; raise ulimit -v%s",
             o->size >> 20, id, limit >> 20, left >> 20,
             o->key ? " (a keyed heap keeps the size it was formed with)" : " or lower SHMHEAP_SIZE");
    os_die(SH_EXIT_OSERR, "libshmheap: cannot attach segment shmid %d at %p: %s", id, (void *)addr, os_errstr(e));
  }
  seg_base = p;
  seg_id = id;
}

/* SHMHEAP_HUGEPAGES=hugetlb: the segment from the system's pool, whole (a
 * segment that reserves its pages never meets an empty pool at a fault,
 * which would be SIGBUS, not ENOMEM).  Returns the id, -1 with EEXIST, or
 * -2: the pool cannot give it, said in one line (hugetlb-strict: exit 78),
 * and the caller makes a segment of 4 KiB pages. */
static int create_hugetlb(key_t key, struct options *o) {
  /* Its size in whole huge pages: up from SHMHEAP_SIZE, down from a default
   * cut to fit ulimit -v. */
  size_t size = o->size_given ? (o->size + SH_HUGE_PAGE - 1) & ~(SH_HUGE_PAGE - 1) : o->size & ~(SH_HUGE_PAGE - 1);
  int id = os_shm_create_hugetlb(key, size, key == IPC_PRIVATE ? 0600 : o->mode);
  if (id >= 0) {
    o->size = size;
    return id;
  }
  int e = errno;
  if (e == EEXIST) return -1;
  char why[200];
  if (e == ENOMEM || e == ENOSPC)
    os_fmt(why, sizeof why, "the pool has %d free 2 MiB page(s), the heap needs %zu: raise vm.nr_hugepages (sysctl) or lower SHMHEAP_SIZE",
           (int)os_meminfo("HugePages_Free"), size / SH_HUGE_PAGE);
  else if (e == EPERM)
    os_fmt(why, sizeof why, "this user may not use the pool: add it to the group vm.hugetlb_shm_group names (sysctl), or give the program CAP_IPC_LOCK");
  else
    os_fmt(why, sizeof why, "shmget(SHM_HUGETLB) failed: %s", os_errstr(e));
  if (o->hugepages_strict)
    os_die(SH_EXIT_CONFIG, "libshmheap: SHMHEAP_HUGEPAGES=hugetlb-strict: no heap of %zu MiB from the huge page pool: %s", size >> 20, why);
  os_say("libshmheap: SHMHEAP_HUGEPAGES=hugetlb: no heap of %zu MiB from the huge page pool: %s; running with 4 KiB pages", size >> 20,
         why);
  return -2;
}

static int create_segment(key_t key, struct options *o) {
  int id = -2;
  if (o->hugepages == SH_HUGEPAGES_HUGETLB) id = create_hugetlb(key, o);
  if (id == -1) return -1;
  seg_hugetlb = id >= 0;
  if (id < 0) id = os_shm_create(key, o->size, key == IPC_PRIVATE ? 0600 : o->mode);
  if (id >= 0 || errno == EEXIST) return id;
  int e = errno;
  if (e == EINVAL)
    os_die(SH_EXIT_OSERR, "libshmheap: SHMHEAP_SIZE=%zu is beyond the kernel's limit for one segment: raise kernel.shmmax (sysctl) or lower SHMHEAP_SIZE",
           o->size);
  if (e == ENOSPC)
    os_die(SH_EXIT_OSERR, "libshmheap: cannot create a %zu-byte segment: the system's shared memory limits (kernel.shmall, kernel.shmmni) are reached; raise them or lower SHMHEAP_SIZE",
           o->size);
  if (e == ENOMEM)
    os_die(SH_EXIT_OSERR, "libshmheap: cannot reserve SHMHEAP_SIZE=%zu bytes (strict overcommit?): lower SHMHEAP_SIZE", o->size);
  if (e == EACCES || e == EPERM)
    os_die(SH_EXIT_OSERR, "libshmheap: no permission to create segment SHMHEAP_KEY=0x%x: use another SHMHEAP_KEY", (unsigned)key);
  os_die(SH_EXIT_OSERR, "libshmheap: shmget failed for SHMHEAP_KEY=0x%x: %s", (unsigned)key, os_errstr(e));
}

/* A segment this user may not trust: never used, never changed.  why, from
 * os_shm_owned, says all of it (segment, uids, mode, the fix). */
static void refuse(const struct options *o, const char *why) {
  const char *what = o->name;
  os_die(SH_EXIT_FOREIGN, "libshmheap: SHMHEAP_KEY=%s%s0x%x: %s", what, *what ? " -> " : "", (unsigned)o->key, why);
}

/* Reads the header of an existing segment without trusting it: attached
 * read-only at a free address, checked field by field.  Returns the base
 * address the heap was formed at, or 0 if the segment went away meanwhile. */
static uintptr_t validate_existing(int id, struct options *o, size_t segsz) {
  const char *what = o->name[0] ? o->name : "";
  const struct shm_header *h = os_shm_attach(id, NULL, 1);
  if (h == (void *)-1)
    os_die(SH_EXIT_OSERR, "libshmheap: cannot read segment shmid %d (SHMHEAP_KEY=0x%x%s%s): %s; use another SHMHEAP_KEY",
           id, (unsigned)o->key, *what ? " " : "", what, os_errstr(errno));
  /* A creator may still be forming it: wait for the magic, up to 2 s. */
  for (int i = 0; i < 200; i++) {
    if (atomic_load_explicit((_Atomic uint64_t *)&h->magic, memory_order_acquire) != 0) break;
    struct timespec ts = {0, 10 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  const char *why = NULL;
  char buf[160];
  struct hv v;
  /* The same checks as shmheap-dump: magic, format, and a layout that is
   * exactly the one a segment of this size has, counters in range. */
  char vwhy[128];
  if (fmt_open(&v, h, segsz, vwhy, sizeof vwhy) < 0) {
    os_fmt(buf, sizeof buf, "it is %s", vwhy);
    why = buf;
  }
  else if ((uint32_t)h->key != (uint32_t)o->key || strncmp(h->name, o->name, SH_NAME_MAX)) {
    os_fmt(buf, sizeof buf, "it belongs to heap \"%.*s\" (key 0x%x), whose name hashes to the same key",
           SH_NAME_MAX - 1, h->name, (unsigned)h->key);
    why = buf;
  }
  /* The base is where this process will map the heap: a value that is not
   * an attach address in user space is damage, not a request. */
  else if (!h->base || h->base % SH_ADDR_ALIGN || h->base + segsz < h->base || h->base + segsz > ((uint64_t)1 << 47)) {
    os_fmt(buf, sizeof buf, "it is a heap with a corrupt header: base address 0x%llx", (unsigned long long)h->base);
    why = buf;
  }
  int verdict = 0;
  char owhy[SH_OWNED_WHY];
  if (!why) verdict = os_shm_owned(id, o->mode, (long)h->creator_uid, SH_OWN_USE, NULL, owhy, sizeof owhy);
  uintptr_t base = (uintptr_t)h->base;
  os_shm_detach(h);
  if (verdict < 0) refuse(o, owhy);
  if (verdict == 1) return 0; /* removed meanwhile */
  if (why)
    os_die(SH_EXIT_FOREIGN, "libshmheap: SHMHEAP_KEY=%s%s0x%x: segment shmid %d exists, but %s; it was left untouched: use another SHMHEAP_KEY, or remove it with ipcrm -m %d",
           what, *what ? " -> " : "", (unsigned)o->key, id, why, id);
  if (o->addr_given && base != o->addr)
    os_die(SH_EXIT_FOREIGN, "libshmheap: SHMHEAP_ADDR=%p, but the heap of SHMHEAP_KEY=0x%x was formed at %p: unset SHMHEAP_ADDR or set it to %p",
           (void *)o->addr, (unsigned)o->key, (void *)base, (void *)base);
  return base;
}

/* SHMHEAP_HUGEPAGES=thp: the advice on this process's mapping of the heap.
 * Shared memory gets huge pages from it only where shmem_enabled lets
 * advice count (advise, within_size) or gives them anyway (always, force);
 * otherwise one line says which setting to change, and the heap runs on
 * 4 KiB pages as with off. */
static void advise_pages(const struct options *o) {
  static int said;
  if (o->hugepages != SH_HUGEPAGES_THP) return;
  int e = os_advise_huge(seg_base, o->size) == 0 ? 0 : errno;
  char pol[32];
  os_thp_shmem_policy(pol, sizeof pol);
  if (!e && (!strcmp(pol, "advise") || !strcmp(pol, "within_size") || !strcmp(pol, "always") || !strcmp(pol, "force")))
    return;
  if (said++) return;
  if (e)
    os_say("libshmheap: SHMHEAP_HUGEPAGES=thp: madvise(MADV_HUGEPAGE) on the heap failed (%s): this kernel has no transparent huge pages; running with 4 KiB pages (unset SHMHEAP_HUGEPAGES to silence this)",
           os_errstr(e));
  else
    os_say("libshmheap: SHMHEAP_HUGEPAGES=thp: /sys/kernel/mm/transparent_hugepage/shmem_enabled is %s, which gives shared memory no huge pages: running with 4 KiB pages (as root: echo advise > /sys/kernel/mm/transparent_hugepage/shmem_enabled)",
           pol[0] ? pol : "unreadable");
}

void segment_close(void) {
  os_shm_detach(G.base);
  map_clear();
  SELF.reattached = 0;
}

int segment_open(void) {
  struct options *o = &opts;
  if (!o->have_key) {
    int id = create_segment(IPC_PRIVATE, o);
    attach_at(id, o->addr, o, 1);
    /* Removed now, gone when the last process that has it attached is. */
    os_shm_remove(id);
    advise_pages(o);
    form_segment(o);
    return 0;
  }
  for (int tries = 0; tries < 100; tries++) {
    int id = os_shm_find(o->key);
    if (id < 0 && errno == ENOENT) {
      id = create_segment(o->key, o);
      if (id < 0) continue; /* someone created it between the two calls */
      attach_at(id, o->addr, o, 1);
      advise_pages(o);
      form_segment(o);
      return 0;
    }
    if (id < 0) {
      /* Another user's heap, whose key this process inherited from the
       * heap's own processes (su, runuser, sudo -u from a keyed server):
       * not meant for it, like another program's.  A key met otherwise
       * is refused (shmheap(7), SECURITY). */
      if (errno == EACCES && os_shm_key_from_ancestor((int32_t)o->key)) return SEGMENT_INHERITED;
      if (errno == EACCES)
        os_die(SH_EXIT_FOREIGN, "libshmheap: SHMHEAP_KEY=0x%x: permission denied: the segment exists but this user may not use it; it was left untouched: use another SHMHEAP_KEY",
               (unsigned)o->key);
      os_die(SH_EXIT_OSERR, "libshmheap: shmget(SHMHEAP_KEY=0x%x) failed: %s", (unsigned)o->key, os_errstr(errno));
    }
    struct shmid_ds ds;
    char why[SH_OWNED_WHY];
    int verdict = os_shm_owned(id, o->mode, -1, SH_OWN_USE, &ds, why, sizeof why);
    if (verdict == 1) continue; /* removed meanwhile */
    if (verdict == SH_OWNED_OTHER && os_shm_key_from_ancestor((int32_t)o->key)) return SEGMENT_INHERITED;
    if (verdict < 0) refuse(o, why);
    if (o->size_given && ds.shm_segsz != o->size)
      os_die(SH_EXIT_FOREIGN, "libshmheap: SHMHEAP_SIZE=%zu, but the segment of SHMHEAP_KEY=0x%x has %zu bytes; it was left untouched: set SHMHEAP_SIZE=%zu or unset it",
             o->size, (unsigned)o->key, (size_t)ds.shm_segsz, (size_t)ds.shm_segsz);
    o->size = ds.shm_segsz; /* SHMHEAP_SIZE unset: the heap keeps its own size */
    /* Its header cannot even be read (a SysV segment maps whole), so which
     * program it is for is unknown.  In use, it cannot be this process's
     * in any case; free, it may be, and a silent private heap would lose a
     * restarting server's state. */
    size_t limit, left = os_address_space_left(&limit);
    if (ds.shm_segsz > left) {
      if (ds.shm_nattch > 0) return SEGMENT_IN_USE_UNFIT;
      os_die(SH_EXIT_OSERR, "libshmheap: SHMHEAP_KEY=%s: the heap is %zu MiB, and ulimit -v (RLIMIT_AS, %zu MiB) leaves this process %zu MiB of address space: raise ulimit -v (a keyed heap keeps the size it was formed with), or set SHMHEAP_PROGRAM to the heap's program if this is another one",
             options_key_label(), (size_t)ds.shm_segsz >> 20, limit >> 20, left >> 20);
    }
    uintptr_t base = validate_existing(id, o, ds.shm_segsz);
    if (!base) continue;
    attach_at(id, base, o, 0);
    /* Owner, creator or mode may have changed between the look and the
     * attach: decided again on what is now mapped, before any use. */
    verdict = os_shm_owned(id, o->mode, (long)((const struct shm_header *)seg_base)->creator_uid, SH_OWN_USE, NULL, why,
                           sizeof why);
    if (verdict != 0) {
      os_shm_detach(seg_base);
      seg_base = NULL;
      if (verdict == 1) continue;
      refuse(o, why);
    }
    map_set(seg_base, seg_id);
    /* Formed by a process with SHMHEAP_HUGEPAGES=hugetlb or not: the
     * segment says, whatever this one asked for. */
    G.hugetlb = os_mapping_is_hugetlb(seg_base);
    advise_pages(o);
    SELF.reattached = 1;
    return 0;
  }
  os_die(SH_EXIT_OSERR, "libshmheap: SHMHEAP_KEY=0x%x: the segment kept appearing and disappearing while attaching; try again",
         (unsigned)o->key);
}
