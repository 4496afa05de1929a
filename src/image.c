/* Code pointers in a heap that outlives its process (shmheap(7), "Code
 * pointers").  Data pointers into the heap stay valid across a restart, but a
 * vtable or function pointer stored in it is valid only if the executable and
 * its libraries are the same builds at the same addresses.  Two measures:
 *
 *  - With address randomization on, a process that is about to use a keyed
 *    heap re-executes itself once with ADDR_NO_RANDOMIZE (what setarch -R
 *    does), before anything is attached, so the load addresses repeat from
 *    one start to the next.
 *  - The first process records the image (each object loaded at start, its
 *    load address and a hash of its build id) in the header; every later one
 *    compares its own and is refused, with the reason, if they differ.
 *
 * SHMHEAP_IMAGE=any turns both off, for heaps that hold no code pointers
 * (the image is still recorded, for the processes that do check). */
#include <errno.h>
#include <link.h>
#include <string.h>
#include <unistd.h>
#include <sys/personality.h>
#include <sys/shm.h>
#include <sys/stat.h>

#include "proc.h"

/* ---- re-executing without randomization ---------------------------------------- */

/* Would the keyed heap be used by this process at all?  Programs that only
 * inherited the key must not pay for an exec or lose their randomization. */
static int segment_wanted(void) {
  int id = os_shm_find(opts.key);
  if (id < 0) return errno == ENOENT; /* we would create it */
  struct shmid_ds ds;
  char why[SH_OWNED_WHY];
  /* Not ours: segment_open refuses it, and no exec should come first. */
  if (os_shm_owned(id, opts.mode, -1, SH_OWN_USE, &ds, why, sizeof why) != 0) return 0;
  const struct shm_header *h = os_shm_attach(id, NULL, 1);
  if (h == (void *)-1) return 0;
  struct hv v;
  int ok = fmt_open(&v, h, ds.shm_segsz, why, sizeof why) == 0 && recover_segment_is_for_self(h);
  os_shm_detach(h);
  return ok;
}

static int reexecuted;

void image_reexec(void) {
  if (!opts.have_key) return;
  int persona = personality(0xffffffff);
  if (persona == -1) return;
  /* The exec below carries SHMHEAP_REEXEC=<pid>:...; exec keeps the pid. */
  int marked = opts.reexec_pid && opts.reexec_pid == (long)SELF.pid;
  if (persona & ADDR_NO_RANDOMIZE) {
    /* Set by us: our layout is fixed now, and the programs this one runs
     * get their randomization back. */
    if (marked) {
      reexecuted = 1;
      personality((unsigned long)persona & ~(unsigned long)ADDR_NO_RANDOMIZE);
      if (opts.reexec_name[0]) os_set_self_name(opts.reexec_name);
    }
    return;
  }
  if (opts.image_any) return;
  if (!os_aslr_on()) return;
  /* Re-executed, and randomized all the same: the kernel drops the flag
   * for set-user-ID and file-capability executables.  Once, never again. */
  if (marked)
    os_die(SH_EXIT_FOREIGN, "libshmheap: SHMHEAP_KEY=%s: this process re-executed itself to turn address randomization off, but it is still on (the kernel clears ADDR_NO_RANDOMIZE for privileged executables); not re-executing again: set SHMHEAP_IMAGE=any if the heap holds no code pointers",
           options_key_label());
  if (!segment_wanted()) return;
  char **argv, **envp;
  if (!os_self_args(&argv, &envp)) return;
  /* The name and AT_EXECFN are the exec's, lost by this one through
   * /proc/self/exe; the new image takes them back (SHMHEAP_PROGRAM may
   * name a link the program was run by). */
  static char mark[64 + SH_PROGRAM_MAX];
  char name[16];
  os_self_name(name, sizeof name);
  const char *fn = os_self_execfn();
  if (!fn || strlen(fn) >= SH_PROGRAM_MAX) fn = "";
  os_fmt(mark, sizeof mark, "SHMHEAP_REEXEC=%d:%d:%s%s", (int)SELF.pid, (int)strlen(name), name, fn);
  if (personality((unsigned long)persona | ADDR_NO_RANDOMIZE) == -1) return;
  os_exec_self(argv, envp, mark);
  /* Not possible (no /proc, a deleted executable, too many variables): go
   * on as we are; the image check says whether the heap can be used. */
  personality((unsigned long)persona);
}

/* Was this image started by image_reexec?  (For SHMHEAP_VERBOSE.) */
int image_reexecuted(void) { return reexecuted; }

/* ---- the image -------------------------------------------------------------------- */

struct scan {
  struct image img;
  const char *name[SH_IMAGE_MAX];
  int overflow;
};

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
  const unsigned char *b = p;
  for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ULL;
  return h;
}

/* The GNU build id of an object, hashed; 0 if it has none. */
static uint64_t build_id(const struct dl_phdr_info *info) {
  for (int i = 0; i < info->dlpi_phnum; i++) {
    const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
    if (ph->p_type != PT_NOTE) continue;
    const char *p = (const char *)(info->dlpi_addr + ph->p_vaddr), *end = p + ph->p_memsz;
    while (p + sizeof(ElfW(Nhdr)) <= end) {
      const ElfW(Nhdr) *nh = (const ElfW(Nhdr) *)p;
      const char *name = p + sizeof *nh, *desc = name + ((nh->n_namesz + 3) & ~3u);
      if (desc + nh->n_descsz > end) break;
      if (nh->n_type == NT_GNU_BUILD_ID && nh->n_namesz == 4 && !memcmp(name, "GNU", 4))
        return fnv(0xcbf29ce484222325ULL, desc, nh->n_descsz);
      p = desc + ((nh->n_descsz + 3) & ~3u);
    }
  }
  return 0;
}

static int scan_one(struct dl_phdr_info *info, size_t size, void *arg) {
  (void)size;
  struct scan *sc = arg;
  const char *name = info->dlpi_name;
  int exe = sc->img.n == 0 && (!name || !name[0]);
  if (!exe && (!name || !name[0] || !strncmp(name, "linux-vdso", 10) || !strncmp(name, "linux-gate", 10)))
    return 0; /* the vDSO: the kernel's, not a build of the program */
  if (sc->img.n >= SH_IMAGE_MAX) {
    sc->overflow = 1;
    return 1;
  }
  if (exe) name = os_self_exe();
  uint64_t id = build_id(info);
  if (!id) {
    /* No build id: the file's identity stands in for it. */
    struct stat st;
    if (stat(name, &st) == 0) {
      id = fnv(0xcbf29ce484222325ULL, &st.st_ino, sizeof st.st_ino);
      id = fnv(id, &st.st_size, sizeof st.st_size);
      id = fnv(id, &st.st_mtime, sizeof st.st_mtime);
    }
    id = fnv(id, name, strlen(name));
  }
  sc->img.obj[sc->img.n].addr = (uint64_t)info->dlpi_addr;
  sc->img.obj[sc->img.n].id = id;
  sc->name[sc->img.n++] = name;
  return 0;
}

/* Runs from our constructor, once the heap is attached: by then the loader
 * holds none of its locks, and no code of the program has run to store a
 * code pointer in the heap. */
void image_check(void) {
  if (!SELF.keyed) return;
  static struct scan sc; /* 3 KiB: off the stack of a constructor */
  memset(&sc, 0, sizeof sc);
  dl_iterate_phdr(scan_one, &sc);
  struct image *rec = &G.hdr->image;
  pages_lock();
  if (rec->n == 0 || rec->n > SH_IMAGE_MAX) {
    memcpy(rec->obj, sc.img.obj, sizeof rec->obj);
    atomic_signal_fence(memory_order_seq_cst);
    rec->n = sc.img.n; /* last: a crash before it leaves nothing recorded */
    pages_unlock();
    return;
  }
  /* Recorded even by a process that does not check, so that a later one
   * that does knows what the heap's code pointers belong to. */
  if (opts.image_any) {
    pages_unlock();
    return;
  }
  char why[512];
  why[0] = 0;
  uint32_t n = rec->n < sc.img.n ? rec->n : sc.img.n;
  for (uint32_t i = 0; i < n && !why[0]; i++) {
    const struct image_obj *a = &rec->obj[i], *b = &sc.img.obj[i];
    const char *what = i == 0 ? "the executable" : "library";
    if (a->id != b->id)
      os_fmt(why, sizeof why, "%s %s is another build than the one that made the heap", what, sc.name[i]);
    else if (a->addr != b->addr)
      os_fmt(why, sizeof why, "%s %s is loaded at %p, not at %p as when the heap was made (address randomization?)",
             what, sc.name[i], (void *)(uintptr_t)b->addr, (void *)(uintptr_t)a->addr);
  }
  if (!why[0] && rec->n != sc.img.n)
    os_fmt(why, sizeof why, "the program loads %u objects at start, the one that made the heap loaded %u",
           sc.img.n, rec->n);
  pages_unlock();
  if (!why[0]) return;
  /* Refused before main: leave the heap as we found it (not a crash). */
  recover_leave();
  os_die(SH_EXIT_FOREIGN, "libshmheap: SHMHEAP_KEY=%s: %s; vtables and function pointers stored in the heap would be wrong: run the same build, or set SHMHEAP_IMAGE=any if the heap holds no code pointers",
         options_key_label(), why);
}
