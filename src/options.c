/* SHMHEAP_* parsing and validation.  Runs inside the first malloc: it reads
 * environ directly (getenv does not allocate, but environ may still be unset
 * this early in odd start-ups, then /proc/self/environ is read into a static
 * buffer), never allocates, and a bad value ends the process with one line
 * that names the variable, the value and the fix (decision 6). */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "os.h"

extern char **environ;

static char proc_env[65536];
static size_t proc_env_len;

struct options opts;

static const char *env_get(const char *name) {
  size_t nl = strlen(name);
  if (environ) {
    for (char **e = environ; *e; e++)
      if (!strncmp(*e, name, nl) && (*e)[nl] == '=') return *e + nl + 1;
    return NULL;
  }
  if (!proc_env_len) proc_env_len = os_read_file("/proc/self/environ", proc_env, sizeof proc_env);
  for (size_t i = 0; i < proc_env_len; i += strlen(proc_env + i) + 1)
    if (!strncmp(proc_env + i, name, nl) && proc_env[i + nl] == '=') return proc_env + i + nl + 1;
  return NULL;
}

/* Parses an unsigned number: decimal, or hex with 0x.  Returns 0 on success. */
static int parse_u64(const char *s, unsigned long long *out, const char **end) {
  unsigned base = 10;
  unsigned long long v = 0;
  if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) { base = 16; s += 2; }
  const char *start = s;
  for (;; s++) {
    unsigned d;
    if (*s >= '0' && *s <= '9') d = (unsigned)(*s - '0');
    else if (base == 16 && *s >= 'a' && *s <= 'f') d = (unsigned)(*s - 'a' + 10);
    else if (base == 16 && *s >= 'A' && *s <= 'F') d = (unsigned)(*s - 'A' + 10);
    else break;
    if (v > (~0ULL - d) / base) return -1; /* overflow */
    v = v * base + d;
  }
  if (s == start) return -1;
  *out = v;
  *end = s;
  return 0;
}

int options_parse_size(const char *s, size_t *out) {
  unsigned long long v;
  const char *e;
  if (parse_u64(s, &v, &e)) return -1;
  unsigned shift = 0;
  switch (*e) {
  case 0: break;
  case 'k': case 'K': shift = 10; e++; break;
  case 'm': case 'M': shift = 20; e++; break;
  case 'g': case 'G': shift = 30; e++; break;
  case 't': case 'T': shift = 40; e++; break;
  default: return -1;
  }
  if (*e) return -1;
  if (shift && v > (~0ULL >> shift)) return -1;
  *out = (size_t)(v << shift);
  return 0;
}

/* FNV-1a: a stable hash of the name, the same in every process and release. */
static uint32_t name_hash(const char *s) {
  uint32_t h = 2166136261u;
  for (; *s; s++) h = (h ^ (uint8_t)*s) * 16777619u;
  return h;
}

static int all_digits(const char *s) {
  if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
    s += 2;
    if (!*s) return 0;
    for (; *s; s++)
      if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f') || (*s >= 'A' && *s <= 'F')))
        return 0;
    return 1;
  }
  if (!*s) return 0;
  for (; *s; s++)
    if (*s < '0' || *s > '9') return 0;
  return 1;
}

int options_parse_key(const char *v, int32_t *key, char name[SH_NAME_MAX]) {
  memset(name, 0, SH_NAME_MAX);
  if (all_digits(v)) {
    unsigned long long k;
    const char *e;
    if (parse_u64(v, &k, &e) || k > 0xffffffffULL) return 1;
    if (k == 0) return 2;
    *key = (int32_t)(uint32_t)k;
    return 0;
  }
  size_t n = strlen(v);
  if (n >= SH_NAME_MAX) return 3;
  memcpy(name, v, n + 1);
  uint32_t h = name_hash(v);
  *key = (int32_t)(h ? h : 1); /* 0 is IPC_PRIVATE; keep hashed names out of it */
  return 0;
}

/* SHMHEAP_REEXEC=<pid> marks the exec image_reexec does; it is ours, not
 * the program's, so it is taken out of environ once read (in place: this
 * may run before anything else in the process could allocate). */
void options_strip_reexec(void) {
  if (!environ) return;
  static const char m[] = "SHMHEAP_REEXEC=";
  char **w = environ;
  for (char **e = environ; *e; e++)
    if (strncmp(*e, m, sizeof m - 1)) *w++ = *e;
  *w = NULL;
}

/* SHMHEAP_SIZE unset: 64 GiB, or less where ulimit -v (RLIMIT_AS) would
 * not leave room for it: a third of the address space the limit leaves
 * now, because a copy-mode fork maps a copy of the heap beside it while it
 * copies (python3 forks at start-up under half), and the program needs the
 * last third for itself.  *fitted gets the limit when it decided, else 0. */
size_t options_default_size(size_t *fitted) {
  size_t limit, left = os_address_space_left(&limit);
  *fitted = 0;
  if (left / 3 >= SH_DEFAULT_SIZE) return SH_DEFAULT_SIZE;
  *fitted = limit;
  size_t sz = (left / 3) & ~(SH_ADDR_ALIGN - 1);
  return sz < SH_MIN_SIZE ? SH_MIN_SIZE : sz;
}

void options_parse(struct options *o) {
  const char *v;
  memset(o, 0, sizeof *o);
  o->size = options_default_size(&o->size_fitted);
  o->addr = SH_DEFAULT_ADDR;
  o->mode = 0600;
  o->background = 1;
  o->gc = 1; /* SHMHEAP_GC=auto */

  if ((v = env_get("SHMHEAP_REEXEC")) && *v) {
    unsigned long long pid;
    const char *e;
    unsigned long long n;
    /* <pid>, or <pid>:<n>:<the process's name before the exec, n bytes><its
     * AT_EXECFN>: the name may hold any byte but NUL, ':' too. */
    if (!parse_u64(v, &pid, &e) && (!*e || *e == ':') && pid <= 0x7fffffff) {
      o->reexec_pid = (long)pid;
      if (*e == ':' && !parse_u64(e + 1, &n, &e) && *e == ':' && n < sizeof o->reexec_name &&
          strnlen(e + 1, n) == n) {
        memcpy(o->reexec_name, e + 1, n);
        o->reexec_name[n] = 0;
        e += 1 + n;
        size_t k = strlen(e);
        if (k < sizeof o->reexec_fn) memcpy(o->reexec_fn, e, k + 1);
      }
    }
  }
  options_strip_reexec();

  /* Set-user-ID and the like: the environment belongs to the user who ran
   * the program, who must not choose the heap of the user it runs as.  The
   * defaults (a private heap, mode 0600) and nothing from SHMHEAP_*. */
  if (os_secure_exec()) {
    o->secure = 1;
    return;
  }

  if ((v = env_get("SHMHEAP_KEY")) && *v) {
    switch (options_parse_key(v, &o->key, o->name)) {
    case 1:
      os_die(SH_EXIT_CONFIG, "libshmheap: SHMHEAP_KEY=%s is out of range: use a key from 1 to 0xffffffff, or a name", v);
    case 2:
      os_die(SH_EXIT_CONFIG, "libshmheap: SHMHEAP_KEY=0 is IPC_PRIVATE, not a key: unset SHMHEAP_KEY for a private heap, or use a key from 1 to 0xffffffff");
    case 3:
      os_die(SH_EXIT_CONFIG, "libshmheap: SHMHEAP_KEY=%s is too long: a name has at most %d bytes", v, SH_NAME_MAX - 1);
    }
    o->have_key = 1;
  }

  if ((v = env_get("SHMHEAP_SIZE")) && *v) {
    size_t sz;
    if (options_parse_size(v, &sz))
      os_die(SH_EXIT_CONFIG, "libshmheap: SHMHEAP_SIZE=%s is not a size: use bytes with an optional K, M, G or T suffix, e.g. SHMHEAP_SIZE=8G", v);
    if (sz < SH_MIN_SIZE)
      os_die(SH_EXIT_CONFIG, "libshmheap: SHMHEAP_SIZE=%s is too small: the minimum is 4M", v);
    /* The heap's page indexes are 32-bit: 16 TiB is the ceiling. */
    if (sz > ((size_t)1 << 44))
      os_die(SH_EXIT_CONFIG, "libshmheap: SHMHEAP_SIZE=%s is too large: the maximum is 16T", v);
    o->size = (sz + SH_ADDR_ALIGN - 1) & ~(SH_ADDR_ALIGN - 1);
    o->size_given = 1;
    o->size_fitted = 0;
    size_t limit, left = os_address_space_left(&limit);
    if (o->size > left)
      os_die(SH_EXIT_OSERR, "libshmheap: SHMHEAP_SIZE=%s does not fit: ulimit -v (RLIMIT_AS, %zu MiB) leaves this process %zu MiB of address space; lower SHMHEAP_SIZE, raise ulimit -v, or unset SHMHEAP_SIZE for a heap that fits",
             v, limit >> 20, left >> 20);
  }

  if ((v = env_get("SHMHEAP_ADDR")) && *v) {
    unsigned long long a;
    const char *e;
    if (parse_u64(v, &a, &e) || *e)
      os_die(SH_EXIT_CONFIG, "libshmheap: SHMHEAP_ADDR=%s is not an address: use a hex address such as 0x200000000000", v);
    if (!a || (a & (SH_ADDR_ALIGN - 1)))
      os_die(SH_EXIT_CONFIG, "libshmheap: SHMHEAP_ADDR=%s is not a multiple of 2 MiB (0x200000): use e.g. SHMHEAP_ADDR=0x200000000000", v);
    o->addr = (uintptr_t)a;
    o->addr_given = 1;
  }
  /* x86-64 and arm64 user space ends at 2^47 with 4-level page tables. */
  if (o->addr + o->size < o->addr || o->addr + o->size > ((uintptr_t)1 << 47))
    os_die(SH_EXIT_CONFIG, "libshmheap: SHMHEAP_ADDR=%p with SHMHEAP_SIZE=%zu ends beyond the user address space (0x800000000000): lower SHMHEAP_ADDR or SHMHEAP_SIZE",
           (void *)o->addr, o->size);

  if ((v = env_get("SHMHEAP_FORK")) && *v) {
    if (!strcmp(v, "copy")) o->fork_share = 0;
    else if (!strcmp(v, "share")) o->fork_share = 1;
    else os_die(SH_EXIT_CONFIG, "libshmheap: SHMHEAP_FORK=%s is not a fork mode: use copy (the default) or share", v);
  }

  if ((v = env_get("SHMHEAP_MODE")) && *v) {
    unsigned m = 0;
    const char *p = v;
    for (; *p >= '0' && *p <= '7' && m <= 0777; p++) m = m * 8 + (unsigned)(*p - '0');
    if (*p || p - v > 4 || m > 0777)
      os_die(SH_EXIT_CONFIG, "libshmheap: SHMHEAP_MODE=%s is not a permission mode: use octal digits such as 0600 (the default) or 0660", v);
    if ((m & 0600) != 0600)
      os_die(SH_EXIT_CONFIG, "libshmheap: SHMHEAP_MODE=%s does not let the owner read and write the heap: include 0600, e.g. SHMHEAP_MODE=0660", v);
    o->mode = m;
  }

  if ((v = env_get("SHMHEAP_FRESH")) && *v) {
    if (!strcmp(v, "0")) o->fresh = 0;
    else if (!strcmp(v, "1")) o->fresh = 1;
    else os_die(SH_EXIT_CONFIG, "libshmheap: SHMHEAP_FRESH=%s is not 0 or 1: use SHMHEAP_FRESH=1 to discard a heap left behind and start empty", v);
  }

  if ((v = env_get("SHMHEAP_PROGRAM")) && *v) {
    if (strlen(v) >= SH_PROGRAM_MAX)
      os_die(SH_EXIT_CONFIG, "libshmheap: SHMHEAP_PROGRAM is longer than %d bytes: name the program by its file name or a shorter path", SH_PROGRAM_MAX - 1);
    o->program = v;
  }

  if ((v = env_get("SHMHEAP_IMAGE")) && *v) {
    if (!strcmp(v, "same")) o->image_any = 0;
    else if (!strcmp(v, "any")) o->image_any = 1;
    else os_die(SH_EXIT_CONFIG, "libshmheap: SHMHEAP_IMAGE=%s is not same or any: use same (the default) or any for a heap that holds no code pointers", v);
  }

  if ((v = env_get("SHMHEAP_HUGEPAGES")) && *v) {
    if (!strcmp(v, "off")) o->hugepages = SH_HUGEPAGES_OFF;
    else if (!strcmp(v, "thp")) o->hugepages = SH_HUGEPAGES_THP;
    else if (!strcmp(v, "hugetlb")) o->hugepages = SH_HUGEPAGES_HUGETLB;
    else if (!strcmp(v, "hugetlb-strict")) o->hugepages = SH_HUGEPAGES_HUGETLB, o->hugepages_strict = 1;
    else os_die(SH_EXIT_CONFIG, "libshmheap: SHMHEAP_HUGEPAGES=%s is not a page setting: use off (the default), thp (transparent huge pages), hugetlb (the system's huge page pool, else 4 KiB pages) or hugetlb-strict (the pool or exit)", v);
  }

  if ((v = env_get("SHMHEAP_BACKGROUND")) && *v) {
    if (!strcmp(v, "on")) o->background = 1;
    else if (!strcmp(v, "off")) o->background = 0;
    else os_die(SH_EXIT_CONFIG, "libshmheap: SHMHEAP_BACKGROUND=%s is not on or off: use on (the default: a thread gives free pages back a second after they were freed) or off (only when the program calls the allocator)", v);
  }

  if ((v = env_get("SHMHEAP_GC")) && *v) {
    if (!strcmp(v, "auto")) o->gc = 1;
    else if (!strcmp(v, "off")) o->gc = 0;
    else os_die(SH_EXIT_CONFIG, "libshmheap: SHMHEAP_GC=%s is not a collection setting: use auto (the default: free at restart what no named root reaches) or off (keep every block)", v);
  }

  if ((v = env_get("SHMHEAP_PREFAULT")) && *v) {
    if (!strcmp(v, "auto")) o->prefault = SH_PREFAULT_AUTO;
    else if (!strcmp(v, "sync")) o->prefault = SH_PREFAULT_SYNC;
    else if (!strcmp(v, "threads")) o->prefault = SH_PREFAULT_THREADS;
    else if (!strcmp(v, "off")) o->prefault = SH_PREFAULT_OFF;
    else os_die(SH_EXIT_CONFIG, "libshmheap: SHMHEAP_PREFAULT=%s is not a prefault setting: use auto (the default), sync (before main), threads (in the background) or off", v);
  }

  if ((v = env_get("SHMHEAP_VERBOSE")) && *v) {
    if (!strcmp(v, "0")) o->verbose = 0;
    else if (!strcmp(v, "1")) o->verbose = 1;
    else os_die(SH_EXIT_CONFIG, "libshmheap: SHMHEAP_VERBOSE=%s is not 0 or 1: use SHMHEAP_VERBOSE=1 to print what was attached", v);
  }
}

const char *options_key_label(void) {
  static char label[SH_NAME_MAX + 16];
  os_fmt(label, sizeof label, "%s%s0x%x", opts.name, opts.name[0] ? " -> " : "", (unsigned)opts.key);
  return label;
}
