/* shmheap-dump: inspect libshmheap heaps, live or left behind.
 *
 *   shmheap-dump [--json]                   list every heap this user may read
 *   shmheap-dump [--json] KEY|NAME          summary of one heap
 *   shmheap-dump [--json] --shmid ID        the same, by segment id
 *   shmheap-dump --check KEY|NAME|--shmid ID  consistency check: exit 0, 1 or 2
 *   shmheap-dump --blocks [--limit N] HEAP  every live block
 *   shmheap-dump --roots HEAP               the named roots
 *   shmheap-dump --garbage HEAP             what a collection would free now
 *   shmheap-dump --remove [--force] HEAP    remove a heap nobody has attached
 *   shmheap-dump --prometheus [HEAP...]     metrics in Prometheus' text format
 *   shmheap-dump --watch [SECONDS] HEAP     a live view, redrawn in place (watch.c)
 *
 * The segment is attached read-only at any free address and read through
 * format.c and view.c, which check every offset before following it: the tool needs
 * nothing from the process that wrote the heap and never changes it. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/shm.h>
#include <time.h>
#include <unistd.h>

#include "mark.h"
#include "view.h"
#include "watch.h"

enum { EXIT_OK = 0, EXIT_PROBLEMS = 1, EXIT_ERROR = 2 };

static int json;

static void usage(FILE *f) {
  fputs("usage: shmheap-dump [--json]                      list the heaps on this machine\n"
        "       shmheap-dump [--json] KEY|NAME|--shmid ID    summary of one heap\n"
        "       shmheap-dump --check KEY|NAME|--shmid ID     check its metadata (exit 0 ok, 1 problems, 2 error)\n"
        "       shmheap-dump [--json] --blocks [--limit N] KEY|NAME|--shmid ID   every live block\n"
        "       shmheap-dump --remove [--force] KEY|NAME|--shmid ID    remove a heap no process has attached\n"
        "       shmheap-dump [--json] --roots KEY|NAME|--shmid ID      the named roots\n"
        "       shmheap-dump [--json] --garbage KEY|NAME|--shmid ID    what a collection at restart would free now\n"
        "       shmheap-dump --prometheus [KEY|NAME...]      metrics of every heap (or these) in Prometheus' text format\n"
        "       shmheap-dump --watch [SECONDS] [--count N] KEY|NAME|--shmid ID   a live view (every SECONDS, default 1)\n",
        f);
}

static const char *human(uint64_t n, char *buf, size_t len) {
  static const char unit[] = "BKMGTP";
  double v = (double)n;
  int u = 0;
  while (v >= 1024 && u < 5) {
    v /= 1024;
    u++;
  }
  if (u == 0) snprintf(buf, len, "%lluB", (unsigned long long)n);
  else snprintf(buf, len, "%.1f%c", v, unit[u]);
  return buf;
}

/* JSON string: the name comes from the segment, so escape everything. */
static void jstr(const char *s, size_t max) {
  putchar('"');
  for (size_t i = 0; i < max && s[i]; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') printf("\\%c", c);
    else if (c < 0x20 || c >= 0x7f) printf("\\u%04x", c);
    else putchar(c);
  }
  putchar('"');
}

/* Printable copy of the header's name (it may be anything). */
static void safe_name(const char *s, char *out) {
  size_t i = 0;
  for (; i < SH_NAME_MAX - 1 && s[i]; i++) out[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
  out[i] = 0;
}

struct seg {
  int shmid;
  struct shmid_ds ds;
  const void *map;
};

/* A process that is alive and not a zombie, and that started by when (in
 * seconds since the epoch, to within the clocks' rounding): a pid reused
 * by a process started later is not the one the heap recorded. */
static int pid_is(int32_t pid, uint64_t when) {
  uint64_t t = os_proc_started(pid);
  return t && t <= when + 2;
}

/* Who uses the heap, as /proc sees it now.  A keyed heap lists its users in
 * its process table.  A private heap lists none: it is removed as soon as
 * it is formed and lasts while processes have it attached (its creator, or
 * in share mode its forked children), so those are its users. */
struct who {
  const char *state; /* "in-use" (a user is alive), "crashed" (listed users are gone: they never left), "clean" */
  unsigned users, gone;
  int32_t pid;       /* a live user (0: alive but unknown), or the last to attach */
  int alive;         /* pid is a live user */
  int creator_alive;
};

static void who_uses(const struct seg *s, const struct hv *v, struct who *w) {
  const struct shm_header *h = v->h;
  uint64_t now = (uint64_t)time(NULL);
  memset(w, 0, sizeof *w);
  w->creator_alive = pid_is(h->creator_pid, h->created);
  if (h->key != 0) {
    struct hv_users u;
    hv_users(v, &u);
    w->users = u.alive;
    w->gone = u.dead;
    w->alive = u.alive > 0;
    w->pid = u.alive ? u.pid : h->last_pid;
    w->state = u.alive ? "in-use" : u.dead ? "crashed" : "clean";
    return;
  }
  w->users = (unsigned)s->ds.shm_nattch; /* stat'ed before the tool's own attach */
  w->alive = w->users > 0;
  w->state = w->alive ? "in-use" : "clean";
  if (w->creator_alive) w->pid = h->creator_pid;
  else if (pid_is(s->ds.shm_lpid, now)) w->pid = s->ds.shm_lpid; /* the last to attach, or to fork with it */
  else w->pid = w->alive ? 0 : h->creator_pid;
}

/* The last part of a program's path, printable. */
static void printable_program(const char *prog, char *out, size_t len) {
  const char *b = strrchr(prog, '/');
  b = b ? b + 1 : prog;
  size_t i = 0;
  for (; b[i] && i + 1 < len; i++) out[i] = (b[i] < 0x20 || b[i] >= 0x7f) ? '?' : b[i];
  out[i] = 0;
  if (!i) snprintf(out, len, "-");
}

/* The name of process pid (/proc/PID/comm), printable, or "-". */
static void comm_name(int32_t pid, char *out, size_t len) {
  char prog[SH_PROGRAM_MAX] = "", path[40];
  snprintf(path, sizeof path, "/proc/%d/comm", (int)pid);
  if (pid > 0 && os_read_file(path, prog, sizeof prog)) prog[strcspn(prog, "\n")] = 0;
  printable_program(prog, out, len);
}

/* The program's file name, printable: the heap's program, or for a heap
 * that records none (a private one) the name of its live user pid. */
static void program_name(const struct shm_header *h, int32_t pid, char *out, size_t len) {
  char prog[SH_PROGRAM_MAX];
  memcpy(prog, h->program, sizeof prog);
  prog[sizeof prog - 1] = 0;
  if (!prog[0]) comm_name(pid, out, len);
  else printable_program(prog, out, len);
}

static int attach(int shmid, struct seg *s) {
  s->shmid = shmid;
  if (shmctl(shmid, IPC_STAT, &s->ds) < 0) return -1;
  s->map = shmat(shmid, NULL, SHM_RDONLY);
  return s->map == (void *)-1 ? -1 : 0;
}

static void list_heaps(void) {
  struct shm_info info;
  int max = shmctl(0, SHM_INFO, (struct shmid_ds *)(void *)&info);
  if (max < 0) {
    fprintf(stderr, "shmheap-dump: cannot list the segments (shmctl SHM_INFO): %s\n", strerror(errno));
    exit(EXIT_ERROR);
  }
  if (json) printf("[");
  else printf("%-10s %-16s %10s %8s %9s %6s %8s %-6s %-8s %s\n", "KEY", "NAME", "SHMID", "SIZE", "IN USE", "NATTCH", "PID",
              "ALIVE", "STATE", "PROGRAM");
  int n = 0;
  for (int idx = 0; idx <= max; idx++) {
    struct shmid_ds ds;
    int id = shmctl(idx, SHM_STAT, &ds);
    if (id < 0 || ds.shm_segsz < SH_MIN_SIZE) continue;
    struct seg s;
    if (attach(id, &s) < 0) continue;
    struct hv v;
    char why[160];
    if (fmt_open(&v, s.map, s.ds.shm_segsz, why, sizeof why) == 0) {
      struct hv_usage u;
      hv_usage(&v, &u);
      const struct shm_header *h = v.h;
      uint64_t in_use = u.in_use > 0 ? (uint64_t)u.in_use : 0;
      char name[SH_NAME_MAX], b1[32], b2[32], prog[64];
      safe_name(h->name, name);
      struct who w;
      who_uses(&s, &v, &w);
      program_name(h, w.alive ? w.pid : 0, prog, sizeof prog);
      if (json) {
        printf("%s\n {\"key\": %u, \"name\": ", n ? "," : "", (unsigned)h->key);
        jstr(h->name, SH_NAME_MAX);
        printf(", \"shmid\": %d, \"size\": %llu, \"in_use\": %llu, \"nattch\": %lu, \"creator_pid\": %d, \"creator_alive\": %s, \"state\": \"%s\", \"pid\": %d, \"pid_alive\": %s, \"program\": ",
               id, (unsigned long long)h->size, (unsigned long long)in_use, (unsigned long)s.ds.shm_nattch,
               h->creator_pid, w.creator_alive ? "true" : "false", w.state, w.pid, w.alive ? "true" : "false");
        jstr(h->program[0] ? h->program : prog, h->program[0] ? SH_PROGRAM_MAX : sizeof prog);
        printf("}");
      } else {
        printf("0x%08x %-16s %10d %8s %9s %6lu %8d %-6s %-8s %s\n", (unsigned)h->key, name[0] ? name : "-", id,
               human(h->size, b1, sizeof b1), human(in_use, b2, sizeof b2), (unsigned long)s.ds.shm_nattch, w.pid,
               w.alive ? "yes" : "no", w.state, prog);
      }
      n++;
    }
    shmdt(s.map);
  }
  if (json) printf("%s]\n", n ? "\n" : "");
}

static void summary_text(FILE *out, const struct seg *s, const struct hv *v, const struct hv_usage *u, const struct who *w, const char *prog);
static void class_table(FILE *out, const struct shm_header *h, const struct hv_usage *u);

static void summary(const struct seg *s, const struct hv *v) {
  const struct shm_header *h = v->h;
  struct hv_usage u;
  hv_usage(v, &u);
  uint64_t in_use = u.in_use > 0 ? (uint64_t)u.in_use : 0;
  char name[SH_NAME_MAX];
  safe_name(h->name, name);
  struct who w;
  who_uses(s, v, &w);
  char prog[SH_PROGRAM_MAX];
  program_name(h, w.alive ? w.pid : 0, prog, sizeof prog);
  if (json) {
    printf("{\"key\": %u, \"name\": ", (unsigned)h->key);
    jstr(h->name, SH_NAME_MAX);
    printf(",\n \"shmid\": %d, \"format\": %u, \"size\": %llu, \"base\": \"0x%llx\", \"creator_uid\": %u, \"creator_pid\": %d, \"creator_alive\": %s, \"created\": %llu, \"nattch\": %lu,\n",
           s->shmid, h->format, (unsigned long long)h->size, (unsigned long long)h->base, h->creator_uid,
           h->creator_pid, w.creator_alive ? "true" : "false", (unsigned long long)h->created,
           (unsigned long)s->ds.shm_nattch);
    printf(" \"state\": \"%s\", \"users_alive\": %u, \"users_gone\": %u, \"pid\": %d, \"last_pid\": %d, \"attaches\": %llu, \"crashes\": %u, \"repairs\": %u, \"program\": ",
           w.state, w.users, w.gone, w.alive ? w.pid : 0, h->last_pid, (unsigned long long)h->attaches, h->crashes,
           (unsigned)h->repairs);
    jstr(h->program[0] ? h->program : prog, h->program[0] ? SH_PROGRAM_MAX : sizeof prog);
    printf(",\n");
    printf(" \"gc_runs\": %llu, \"gc_blocks_total\": %llu, \"gc_bytes_total\": %llu, \"gc_last\": {\"blocks\": %llu, \"bytes\": %llu, \"us\": %u, \"emptied_whole\": %s},\n",
           (unsigned long long)h->gc_runs, (unsigned long long)h->gc_total_blocks,
           (unsigned long long)h->gc_total_bytes, (unsigned long long)h->gc_last_blocks,
           (unsigned long long)h->gc_last_bytes, h->gc_last_us, h->gc_last_reset ? "true" : "false");
    printf(" \"in_use\": %llu, \"nmalloc\": %llu, \"nfree\": %llu, \"heap_bytes\": %llu, \"heap_capacity\": %llu,\n",
           (unsigned long long)in_use, (unsigned long long)u.nmalloc, (unsigned long long)u.nfree,
           (unsigned long long)(u.top_pages << SH_PAGE_SHIFT), (unsigned long long)h->npages << SH_PAGE_SHIFT);
    printf(" \"free_bytes\": %llu, \"free_dirty_bytes\": %llu, \"purged_bytes\": %llu, \"large_blocks\": %llu, \"large_bytes\": %llu, \"thread_heaps\": %u,\n",
           (unsigned long long)(u.free_pages << SH_PAGE_SHIFT), (unsigned long long)(u.dirty_pages << SH_PAGE_SHIFT),
           (unsigned long long)(h->purged_pages << SH_PAGE_SHIFT), (unsigned long long)u.large_count,
           (unsigned long long)(u.large_pages << SH_PAGE_SHIFT), u.heaps_owned);
    printf(" \"layout\": {\"heaps_off\": %llu, \"pagemap_off\": %llu, \"spans_off\": %llu, \"heap_off\": %llu, \"pages\": %u, \"descriptors\": %u},\n",
           (unsigned long long)h->heaps_off, (unsigned long long)h->pagemap_off, (unsigned long long)h->spans_off,
           (unsigned long long)h->heap_off, h->npages, h->span_count);
    printf(" \"classes\": [");
    int first = 1;
    for (unsigned c = 1; c <= SH_NCLASS; c++) {
      if (!u.cls_spans[c]) continue;
      printf("%s\n  {\"size\": %u, \"spans\": %llu, \"blocks_used\": %llu}", first ? "" : ",", h->class_size[c],
             (unsigned long long)u.cls_spans[c], (unsigned long long)u.cls_used[c]);
      first = 0;
    }
    printf("%s]}\n", first ? "" : "\n ");
    return;
  }
  summary_text(stdout, s, v, &u, &w, prog);
  class_table(stdout, h, &u);
}

/* The text summary but the class table: who, history, in use, pages, free. */
static void summary_text(FILE *out, const struct seg *s, const struct hv *v, const struct hv_usage *u, const struct who *w, const char *prog) {
  const struct shm_header *h = v->h;
  uint64_t in_use = u->in_use > 0 ? (uint64_t)u->in_use : 0;
  char name[SH_NAME_MAX];
  safe_name(h->name, name);
  char b1[32], b2[32], b3[32], b4[32];
  fprintf(out, "heap       key 0x%08x%s%s, shmid %d, format %u\n", (unsigned)h->key, name[0] ? " name " : "", name,
         s->shmid, h->format);
  fprintf(out, "segment    %s at 0x%llx, created by pid %d (%s), uid %u; %lu attached now\n",
         human(h->size, b1, sizeof b1), (unsigned long long)h->base, h->creator_pid,
         w->creator_alive ? "alive" : "gone", h->creator_uid, (unsigned long)s->ds.shm_nattch);
  if (w->alive && w->pid)
    fprintf(out, "state      in use by pid %d%s (program %s)\n", w->pid, w->users > 1 ? " and others" : "", prog);
  else if (w->alive)
    fprintf(out, "state      in use by %u process(es) that have it attached\n", w->users);
  else if (w->gone)
    fprintf(out, "state      left by a crash: %u process(es) ended without leaving; the last to attach was pid %d (program %s)\n",
           w->gone, h->last_pid, prog);
  else if (h->key == 0) /* seen only by a view that has it attached: the segment goes with that */
    fprintf(out, "state      every process has detached it (a private heap: it goes with the last attachment)\n");
  else
    fprintf(out, "state      left cleanly by pid %d (program %s)\n", h->last_pid, prog);
  fprintf(out, "history    %llu re-attach(es), %u after a crash; %u repair(s) made\n", (unsigned long long)h->attaches,
         h->crashes, (unsigned)h->repairs);
  if (h->gc_runs)
    fprintf(out, "collected  %llu time(s) at restart, %llu block(s) of %s in all; the last: %llu of %s in %u us%s\n",
            (unsigned long long)h->gc_runs, (unsigned long long)h->gc_total_blocks,
            human(h->gc_total_bytes, b1, sizeof b1), (unsigned long long)h->gc_last_blocks,
            human(h->gc_last_bytes, b2, sizeof b2), h->gc_last_us,
            h->gc_last_reset ? " (no root held a pointer: emptied whole)" : "");
  else
    fprintf(out, "collected  never (no restart with SHMHEAP_GC=auto yet)\n");
  fprintf(out, "in use     %s in blocks (%llu malloc, %llu free of small blocks)\n", human(in_use, b1, sizeof b1),
         (unsigned long long)u->nmalloc, (unsigned long long)u->nfree);
  fprintf(out, "pages      %s carved of %s; small spans %s, large blocks %llu (%s)\n",
         human(u->top_pages << SH_PAGE_SHIFT, b1, sizeof b1),
         human((uint64_t)h->npages << SH_PAGE_SHIFT, b2, sizeof b2), human(u->small_pages << SH_PAGE_SHIFT, b3, sizeof b3),
         (unsigned long long)u->large_count, human(u->large_pages << SH_PAGE_SHIFT, b4, sizeof b4));
  fprintf(out, "free       %s in %llu spans, %s of it still holding memory; %s handed back so far\n",
         human(u->free_pages << SH_PAGE_SHIFT, b1, sizeof b1), (unsigned long long)u->free_spans,
         human(u->dirty_pages << SH_PAGE_SHIFT, b2, sizeof b2), human(h->purged_pages << SH_PAGE_SHIFT, b3, sizeof b3));
  fprintf(out, "threads    %u thread heaps claimed\n", u->heaps_owned);
}

/* Blocks in use per size class. */
static void class_table(FILE *out, const struct shm_header *h, const struct hv_usage *u) {
  char b1[32];
  fprintf(out, "%10s %8s %12s %10s\n", "CLASS", "SPANS", "BLOCKS USED", "BYTES");
  for (unsigned c = 1; c <= SH_NCLASS; c++)
    if (u->cls_spans[c])
      fprintf(out, "%10u %8llu %12llu %10s\n", h->class_size[c], (unsigned long long)u->cls_spans[c],
             (unsigned long long)u->cls_used[c], human(u->cls_used[c] * h->class_size[c], b1, sizeof b1));
}

struct block_list {
  uint64_t limit, shown;
};

static int print_block(void *ctx, uint64_t off, uint64_t size, unsigned cls) {
  struct block_list *bl = ctx;
  if (bl->shown == bl->limit) return 1;
  if (json) printf("%s\n  {\"offset\": %llu, \"size\": %llu, \"class\": %u}", bl->shown ? "," : "",
                   (unsigned long long)off, (unsigned long long)size, cls);
  else printf("0x%012llx %10llu %s\n", (unsigned long long)off, (unsigned long long)size, cls ? "small" : "large");
  bl->shown++;
  return 0;
}

static void blocks(const struct hv *v, uint64_t limit) {
  struct block_list bl = {limit, 0};
  if (json) printf("{\"blocks\": [");
  else printf("%-14s %10s %s\n", "OFFSET", "SIZE", "KIND");
  hv_blocks(v, print_block, &bl);
  uint64_t total = hv_blocks(v, NULL, NULL);
  if (json)
    printf("%s], \"shown\": %llu, \"total\": %llu}\n", bl.shown ? "\n " : "", (unsigned long long)bl.shown,
           (unsigned long long)total);
  else if (total > bl.shown)
    printf("... %llu more blocks (%llu in all; raise --limit)\n", (unsigned long long)(total - bl.shown),
           (unsigned long long)total);
}

/* ---- --watch -------------------------------------------------------------------- */

/* What /proc says of pid: its state letter from /proc/PID/stat as a word,
 * or NULL if it is gone or a zombie (a zombie has left every heap). */
static const char *proc_state(int32_t pid) {
  char path[40], buf[512];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  size_t n = os_read_file(path, buf, sizeof buf);
  const char *p = n ? strrchr(buf, ')') : NULL;
  if (!p || p[1] != ' ') return NULL;
  switch (p[2]) {
  case 'R': return "running";
  case 'S': return "sleeping";
  case 'D': return "disk-wait";
  case 'T': return "stopped";
  case 't': return "traced";
  case 'I': return "idle";
  case 'Z': case 'X': case 'x': return NULL;
  default: return "alive";
  }
}

/* Is pid in IPC namespace ns (readlink of /proc/self/ns/ipc)?  A shmid
 * means a segment only within one namespace: a container's process with a
 * segment of the same id is not attached to this one. */
static int same_ipc_ns(int32_t pid, const char *ns) {
  char path[40], link[64];
  snprintf(path, sizeof path, "/proc/%d/ns/ipc", (int)pid);
  ssize_t n = readlink(path, link, sizeof link - 1);
  if (n < 0) return 0;
  link[n] = 0;
  return !strcmp(link, ns);
}

/* Does pid have System V segment shmid, made with key, mapped?  Its maps
 * name each attachment /SYSV<key, 8 hex digits> with the shmid as the
 * inode (a removed segment's key reads as 0 from shmctl while the maps keep
 * the one it was made with: any_key).  -1: this user may not read them. */
static int proc_attached(int32_t pid, int shmid, key_t key, int any_key) {
  char path[40], want[16];
  snprintf(want, sizeof want, "/SYSV%08x", (unsigned)key);
  snprintf(path, sizeof path, "/proc/%d/maps", (int)pid);
  FILE *f = fopen(path, "re");
  if (!f) return -1;
  char line[512];
  int found = 0, any = 0;
  while (!found && fgets(line, sizeof line, f)) {
    any = 1;
    unsigned long inode;
    char name[32];
    if (strstr(line, "/SYSV") && sscanf(line, "%*s %*s %*s %*s %lu %31s", &inode, name) == 2 && (any_key ? !strncmp(name, "/SYSV", 5) : !strcmp(name, want)) &&
        inode == (unsigned long)shmid)
      found = 1;
  }
  fclose(f);
  return found ? 1 : any ? 0 : -1; /* another user's maps read as empty */
}

#define WATCH_ROWS 64

/* The processes that have the segment attached now (from /proc, which
 * needs no process table: private heaps have none), and for a keyed heap
 * those its table lists that ended without leaving. */
static void processes(FILE *out, const struct seg *s, const struct hv *v) {
  int32_t pids[WATCH_ROWS];
  unsigned n = 0, more = 0;
  DIR *d = opendir("/proc");
  int32_t self = (int32_t)getpid();
  char ns[64] = "";
  ssize_t nl = readlink("/proc/self/ns/ipc", ns, sizeof ns - 1);
  ns[nl > 0 ? nl : 0] = 0;
  for (struct dirent *e; d && (e = readdir(d));) {
    char *end;
    long pid = strtol(e->d_name, &end, 10);
    if (*end || pid <= 0 || pid == self || pid > 0x7fffffff) continue;
    if (ns[0] && !same_ipc_ns((int32_t)pid, ns)) continue;
    if (proc_attached((int32_t)pid, s->shmid, s->ds.shm_perm.__key, !!(s->ds.shm_perm.mode & SHM_DEST)) <= 0) continue;
    if (n < WATCH_ROWS) pids[n++] = (int32_t)pid;
    else more++;
  }
  if (d) closedir(d);
  unsigned gone = 0;
  if (v->h->key != 0)
    for (unsigned i = 0; i < SH_MAX_PROCS; i++)
      if (v->h->procs[i].pid && !hv_proc_alive(&v->h->procs[i])) gone++;
  unsigned seen = n + more;
  fprintf(out, "processes  %lu attached", (unsigned long)s->ds.shm_nattch);
  if (seen < s->ds.shm_nattch) fprintf(out, " (%lu not shown: their /proc is not readable by this user)", (unsigned long)(s->ds.shm_nattch - seen));
  if (gone) fprintf(out, "; %u listed that ended without leaving", gone);
  fprintf(out, "\n%10s %-10s %s\n", "PID", "STATE", "PROGRAM");
  for (unsigned i = 0; i < n; i++) {
    const char *st = proc_state(pids[i]);
    char prog[64];
    comm_name(pids[i], prog, sizeof prog);
    fprintf(out, "%10d %-10s %s\n", (int)pids[i], st ? st : "gone", prog);
  }
  if (more) fprintf(out, "%10s %u more\n", "...", more);
  if (v->h->key != 0)
    for (unsigned i = 0, shown = 0; i < SH_MAX_PROCS && shown < WATCH_ROWS; i++) {
      const struct shm_proc *e = &v->h->procs[i];
      int32_t pid = atomic_load(&((struct shm_proc *)e)->pid);
      if (!pid || hv_proc_alive(e)) continue;
      fprintf(out, "%10d %-10s %s\n", (int)pid, "gone",
              atomic_load(&((struct shm_proc *)e)->flags) & SH_PROC_EXEC ? "(left by exec)" : "(ended without leaving: killed or _exit)");
      shown++;
    }
}

struct watch_ctx {
  struct seg *s;
  int32_t key;     /* the key it was found by, or 0 (by shmid) */
  pid_t lpid;      /* the last other process to attach or detach */
  const char *label;
};

static int watch_frame(FILE *out, void *ctx) {
  struct watch_ctx *c = ctx;
  struct seg *s = c->s;
  if (shmctl(s->shmid, IPC_STAT, &s->ds) < 0) {
    fprintf(out, "%s: the segment is gone: %s\n", c->label, strerror(errno));
    return 1;
  }
  /* The figures as the heap's users see them: without this view's own
   * attach, and with the last attach or detach that was not this view's. */
  if (s->ds.shm_nattch) s->ds.shm_nattch--;
  if (s->ds.shm_lpid != getpid()) c->lpid = s->ds.shm_lpid;
  s->ds.shm_lpid = c->lpid;
  int last = 0;
  if (c->key) {
    int now = shmget(c->key, 0, 0);
    if (now != s->shmid) {
      if (now < 0) fprintf(out, "%s: removed, and the key names no segment now; this is the heap as it was left\n", c->label);
      else fprintf(out, "%s: removed, and the key names another segment now (shmid %d); this is the heap as it was left\n", c->label, now);
      last = 1;
    }
  }
  struct hv v;
  char why[160];
  if (fmt_open(&v, s->map, s->ds.shm_segsz, why, sizeof why) < 0) {
    fprintf(out, "%s: cannot be read now: %s\n", c->label, why);
    return last;
  }
  struct hv_usage u;
  hv_usage(&v, &u);
  struct who w;
  who_uses(s, &v, &w);
  char prog[SH_PROGRAM_MAX];
  program_name(v.h, w.alive ? w.pid : 0, prog, sizeof prog);
  summary_text(out, s, &v, &u, &w, prog);
  processes(out, s, &v);
  class_table(out, v.h, &u);
  if (!last && (s->ds.shm_perm.mode & SHM_DEST) && s->ds.shm_nattch == 0) {
    fprintf(out, "%s: removed, and no other process has it attached: it is gone when this view ends\n", c->label);
    last = 1;
  }
  return last;
}

static int watch(struct seg *s, int32_t key, const char *label, const char *target, double seconds, unsigned long count) {
  struct watch_ctx c = {s, key, s->ds.shm_lpid, label};
  char title[160];
  if (target) snprintf(title, sizeof title, "shmheap-dump --watch %s, every %gs", target, seconds);
  else snprintf(title, sizeof title, "shmheap-dump --watch --shmid %d, every %gs", s->shmid, seconds);
  return watch_run(title, seconds, count, watch_frame, &c) ? EXIT_ERROR : EXIT_OK;
}

/* A number of seconds for --watch: 0.1 to a day. */
static int parse_seconds(const char *a, double *out) {
  char *end;
  errno = 0;
  double d = strtod(a, &end);
  if (!a[0] || *end || errno || !(d >= 0.1 && d <= 86400)) return -1;
  *out = d;
  return 0;
}

/* ---- --prometheus -------------------------------------------------------------- */

/* One heap's figures, read while it is attached. */
struct prom_heap {
  char name[SH_NAME_MAX * 2 + 1]; /* escaped for a label value */
  uint32_t key;
  int shmid;
  struct hv_usage u;
  struct who w;
  uint64_t size, nattch, purged_pages, attaches, crashes, repairs, last_recovery_us;
  uint64_t gc_runs, gc_total_blocks, gc_total_bytes, gc_last_us;
  uint64_t class_size[SH_NCLASS + 1];
};

/* A label value: backslash, double quote and line feed escaped, as the
 * exposition format wants; other bytes that are not printable become '?'. */
static void prom_label(const char *s, size_t max, char *out) {
  size_t o = 0;
  for (size_t i = 0; i < max && s[i]; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '\\' || c == '"') out[o++] = '\\', out[o++] = (char)c;
    else if (c == '\n') out[o++] = '\\', out[o++] = 'n';
    else out[o++] = (c < 0x20 || c >= 0x7f) ? '?' : (char)c;
  }
  out[o] = 0;
}

static int prom_read(int shmid, struct prom_heap *p) {
  struct seg s;
  if (attach(shmid, &s) < 0) return -1;
  struct hv v;
  char why[160];
  int r = fmt_open(&v, s.map, s.ds.shm_segsz, why, sizeof why);
  if (r == 0) {
    const struct shm_header *h = v.h;
    memset(p, 0, sizeof *p);
    prom_label(h->name, SH_NAME_MAX, p->name);
    p->key = (uint32_t)h->key;
    p->shmid = shmid;
    hv_usage(&v, &p->u);
    who_uses(&s, &v, &p->w);
    p->size = h->size;
    p->nattch = s.ds.shm_nattch;
    p->purged_pages = h->purged_pages;
    p->attaches = h->attaches;
    p->crashes = h->crashes;
    p->repairs = h->repairs;
    p->last_recovery_us = h->last_recovery_us;
    p->gc_runs = h->gc_runs;
    p->gc_total_blocks = h->gc_total_blocks;
    p->gc_total_bytes = h->gc_total_bytes;
    p->gc_last_us = h->gc_last_us;
    for (unsigned c = 1; c <= SH_NCLASS; c++) p->class_size[c] = h->class_size[c];
  }
  shmdt(s.map);
  return r;
}

enum prom_what {
  P_SIZE, P_IN_USE, P_CARVED, P_FREE, P_DIRTY, P_PURGED, P_LARGE_BLOCKS, P_LARGE_BYTES, P_NMALLOC, P_NFREE,
  P_ATTACHED, P_USERS, P_USERS_GONE, P_THREADS, P_ATTACHES, P_CRASHES, P_REPAIRS, P_RECOVERY, P_GC_RUNS,
  P_GC_BLOCKS, P_GC_BYTES, P_GC_LAST, P_CLASS_BLOCKS,
  P_CLASS_SPANS, P_N
};
static const struct {
  const char *name, *type, *help;
} prom_family[P_N] = {
    {"shmheap_size_bytes", "gauge", "Size of the heap's segment."},
    {"shmheap_in_use_bytes", "gauge", "Bytes in blocks handed out and not freed."},
    {"shmheap_carved_bytes", "gauge", "Bytes of the heap area carved into spans so far."},
    {"shmheap_free_bytes", "gauge", "Bytes in free page runs of the carved area."},
    {"shmheap_dirty_bytes", "gauge", "Bytes of free pages that still hold memory (not handed back yet)."},
    {"shmheap_purged_bytes_total", "counter", "Bytes of free pages handed back to the system."},
    {"shmheap_large_blocks", "gauge", "Large blocks (page runs) handed out."},
    {"shmheap_large_bytes", "gauge", "Bytes of the pages of large blocks."},
    {"shmheap_small_mallocs_total", "counter", "Small blocks handed out, by the heap's thread counters."},
    {"shmheap_small_frees_total", "counter", "Small blocks freed, by the heap's thread counters."},
    {"shmheap_processes_attached", "gauge", "Processes that have the segment attached."},
    {"shmheap_users", "gauge", "Live processes using the heap."},
    {"shmheap_users_gone", "gauge", "Processes listed as users that ended without leaving (a crash the next attach repairs)."},
    {"shmheap_thread_heaps", "gauge", "Thread heaps claimed."},
    {"shmheap_reattaches_total", "counter", "Re-attaches of the heap by a new process."},
    {"shmheap_crashes_total", "counter", "Re-attaches that found a crash."},
    {"shmheap_repairs_total", "counter", "Crash repairs made (the lock's or a thread heap's)."},
    {"shmheap_last_recovery_seconds", "gauge", "Time the last re-attach took to attach, check and repair the heap."},
    {"shmheap_collections_total", "counter", "Collections at restart (SHMHEAP_GC=auto) of what no root reached."},
    {"shmheap_collected_blocks_total", "counter", "Blocks the collections at restart freed."},
    {"shmheap_collected_bytes_total", "counter", "Bytes of the blocks the collections at restart freed."},
    {"shmheap_last_collection_seconds", "gauge", "Time the last collection at restart took."},
    {"shmheap_class_blocks", "gauge", "Small blocks in use, per size class (a block freed by another thread counts until collected)."},
    {"shmheap_class_spans", "gauge", "Spans of each size class."},
};

static void prom_sample(const struct prom_heap *p, enum prom_what w, uint64_t size, double v) {
  printf("%s{name=\"%s\",key=\"0x%08x\",shmid=\"%d\"", prom_family[w].name, p->name, p->key, p->shmid);
  if (size) printf(",size=\"%llu\"", (unsigned long long)size);
  printf("} %.17g\n", v);
}

static void prom_print(const struct prom_heap *heaps, int n) {
  for (int w = 0; w < P_N; w++) {
    printf("# HELP %s %s\n# TYPE %s %s\n", prom_family[w].name, prom_family[w].help, prom_family[w].name,
           prom_family[w].type);
    for (int i = 0; i < n; i++) {
      const struct prom_heap *p = &heaps[i];
      const struct hv_usage *u = &p->u;
      double v = 0;
      switch ((enum prom_what)w) {
      case P_SIZE: v = (double)p->size; break;
      case P_IN_USE: v = u->in_use > 0 ? (double)u->in_use : 0; break;
      case P_CARVED: v = (double)(u->top_pages << SH_PAGE_SHIFT); break;
      case P_FREE: v = (double)(u->free_pages << SH_PAGE_SHIFT); break;
      case P_DIRTY: v = (double)(u->dirty_pages << SH_PAGE_SHIFT); break;
      case P_PURGED: v = (double)(p->purged_pages << SH_PAGE_SHIFT); break;
      case P_LARGE_BLOCKS: v = (double)u->large_count; break;
      case P_LARGE_BYTES: v = (double)(u->large_pages << SH_PAGE_SHIFT); break;
      case P_NMALLOC: v = (double)u->nmalloc; break;
      case P_NFREE: v = (double)u->nfree; break;
      case P_ATTACHED: v = (double)p->nattch; break;
      case P_USERS: v = p->w.alive ? (double)(p->w.users ? p->w.users : 1) : 0; break;
      case P_USERS_GONE: v = (double)p->w.gone; break;
      case P_THREADS: v = (double)u->heaps_owned; break;
      case P_ATTACHES: v = (double)p->attaches; break;
      case P_CRASHES: v = (double)p->crashes; break;
      case P_REPAIRS: v = (double)p->repairs; break;
      case P_RECOVERY:
        if (!p->last_recovery_us) continue; /* never re-attached: no sample */
        v = (double)p->last_recovery_us / 1e6;
        break;
      case P_GC_RUNS: v = (double)p->gc_runs; break;
      case P_GC_BLOCKS: v = (double)p->gc_total_blocks; break;
      case P_GC_BYTES: v = (double)p->gc_total_bytes; break;
      case P_GC_LAST:
        if (!p->gc_runs) continue; /* never collected: no sample */
        v = (double)p->gc_last_us / 1e6;
        break;
      case P_CLASS_BLOCKS:
      case P_CLASS_SPANS:
        for (unsigned c = 1; c <= SH_NCLASS; c++)
          if (u->cls_spans[c])
            prom_sample(p, (enum prom_what)w, p->class_size[c],
                        (double)(w == P_CLASS_BLOCKS ? u->cls_used[c] : u->cls_spans[c]));
        continue;
      case P_N: continue;
      }
      prom_sample(p, (enum prom_what)w, 0, v);
    }
  }
}

/* A slot for one more heap in *heaps (n used of *cap); NULL if there is no
 * memory for it. */
static struct prom_heap *prom_slot(struct prom_heap **heaps, int n, int *cap) {
  if (n == *cap) {
    int more = *cap ? *cap * 2 : 16;
    struct prom_heap *h = realloc(*heaps, sizeof *h * (size_t)more);
    if (!h) return NULL;
    *heaps = h;
    *cap = more;
  }
  return &(*heaps)[n];
}

/* Every heap this user may read (no targets), or the named ones: a name
 * that is no heap is said on stderr and makes the exit status 2, the
 * others are printed all the same. */
static int prometheus(char **targets, int ntargets) {
  struct prom_heap *heaps = NULL, *p;
  int cap = 0, n = 0, status = EXIT_OK;
  if (ntargets == 0) {
    struct shm_info info;
    int max = shmctl(0, SHM_INFO, (struct shmid_ds *)(void *)&info);
    for (int idx = 0; idx <= max; idx++) {
      struct shmid_ds ds;
      int id = shmctl(idx, SHM_STAT, &ds);
      if (id < 0 || ds.shm_segsz < SH_MIN_SIZE) continue;
      if (!(p = prom_slot(&heaps, n, &cap))) break;
      if (prom_read(id, p) == 0) n++;
    }
  }
  for (int t = 0; t < ntargets; t++) {
    int32_t key;
    char name[SH_NAME_MAX];
    int id = options_parse_key(targets[t], &key, name) == 0 ? shmget(key, 0, 0) : -1;
    if (id < 0) {
      fprintf(stderr, "shmheap-dump: --prometheus: %s: no such heap\n", targets[t]);
      status = EXIT_ERROR;
    } else if (!(p = prom_slot(&heaps, n, &cap))) {
      break;
    } else if (prom_read(id, p) == 0) {
      n++;
    } else {
      fprintf(stderr, "shmheap-dump: --prometheus: %s: not a heap this user may read\n", targets[t]);
      status = EXIT_ERROR;
    }
  }
  if (n < ntargets && status == EXIT_OK) {
    fprintf(stderr, "shmheap-dump: --prometheus: out of memory\n");
    status = EXIT_ERROR;
  }
  prom_print(heaps, n);
  free(heaps);
  return status;
}

/* --remove: the library's ownership rule (os_shm_owned), mode aside (its
 * owner may remove a heap of any mode); a heap of another user, or one
 * handed over to this one, is theirs.  header_uid: the heap's recorded
 * creator, or -1 before the header was read.  0 if this user may remove it;
 * otherwise the refusal is printed. */
static int may_remove(int shmid, long header_uid, const char *label, struct shmid_ds *ds) {
  char why[SH_OWNED_WHY];
  int verdict = os_shm_owned(shmid, 0777, header_uid, SH_OWN_REMOVE, ds, why, sizeof why);
  if (verdict == 1) fprintf(stderr, "shmheap-dump: %s: it was removed meanwhile\n", label);
  else if (verdict < 0) fprintf(stderr, "shmheap-dump: %s: %s\n", label, why);
  return verdict;
}

/* Removes the segment only if it is a heap (checked through the read-only
 * attach s, which the caller has already validated), only if it is this
 * user's (checked again, now with the header's creator) and, without
 * --force, only if nobody else has it attached. */
static int remove_heap(struct seg *s, const struct hv *v, const char *label, int force) {
  long creator = (long)((const struct shm_header *)s->map)->creator_uid;
  /* A process can use the heap without having it attached for a moment:
   * between the exec of its start-up re-exec and the attach after it.  Its
   * entry in the heap's process table says it is there. */
  struct hv_users u;
  hv_users(v, &u);
  shmdt(s->map);
  struct shmid_ds ds;
  if (may_remove(s->shmid, creator, label, &ds) != 0) return EXIT_ERROR;
  if (ds.shm_nattch > 0 && !force) {
    fprintf(stderr, "shmheap-dump: %s: %lu process%s still attached (last: pid %d); not removed: stop them or use --force\n",
            label, (unsigned long)ds.shm_nattch, ds.shm_nattch == 1 ? " is" : "es are", (int)ds.shm_lpid);
    return EXIT_ERROR;
  }
  if (u.alive > 0 && !force) {
    fprintf(stderr, "shmheap-dump: %s: %u process%s still using it, not attached just now (pid %d); not removed: stop them or use --force\n",
            label, u.alive, u.alive == 1 ? " is" : "es are", (int)u.pid);
    return EXIT_ERROR;
  }
  if (shmctl(s->shmid, IPC_RMID, NULL) < 0) {
    fprintf(stderr, "shmheap-dump: %s: cannot remove it: %s\n", label, errno == EPERM ? "permission denied" : strerror(errno));
    return EXIT_ERROR;
  }
  printf("%s: removed%s\n", label, ds.shm_nattch ? " (it goes away when the last process detaches)" : "");
  return EXIT_OK;
}

/* What a collection at restart would free now, per size class: the
 * library's own mark (mark.c) over this read-only mapping, on a copy of the
 * descriptors, so that a heap in use, whose descriptors change meanwhile,
 * gives a snapshot that is wrong at worst, never a walk out of bounds.  Of
 * a heap in use this is what its users' deaths would leave unreached, were
 * they to die now.  0, or -1 with the reason said. */
static int garbage(const struct hv *v, const char *label) {
  const struct shm_header *h = v->h;
  const uint32_t count = h->span_count, top = h->top, max_heap = h->max_heap;
  if (count == 0 || count > v->nspans || top > v->npages || max_heap > SH_MAX_HEAPS) {
    fprintf(stderr, "shmheap-dump: %s: header counters out of range (%u descriptors, top %u, %u heaps): run shmheap-dump --check\n",
            label, count, top, max_heap);
    return -1;
  }
  size_t sl = (size_t)count * sizeof(struct span);
  struct span *copy = os_scratch(sl);
  if (!copy) {
    fprintf(stderr, "shmheap-dump: %s: out of memory for a copy of the descriptors\n", label);
    return -1;
  }
  memcpy(copy, v->spans, sl);
  small_classes_init(); /* the tables small_sound and the mark compare with */
  const struct mark_view mv = {v->base, h, copy, v->pagemap, v->heaps, v->heap_off, h->link_secret,
                               h->base + v->heap_off, top, count, max_heap};
  struct gc c;
  char why[96];
  int r = mark_tables(&c, &mv, why, sizeof why);
  if (r == 0) {
    mark_notes(&c);
    mark_from_roots(&c);
    if (c.failed) snprintf(why, sizeof why, "no memory for the mark's stack"), r = -1;
  }
  if (r < 0) {
    fprintf(stderr, "shmheap-dump: %s: %s\n", label, why);
    mark_free(&c);
    os_scratch_free(copy, sl);
    return -1;
  }
  uint64_t nb[SH_NCLASS + 1] = {0}, nbytes[SH_NCLASS + 1] = {0}, large = 0, large_bytes = 0, reached = 0, unswept = 0;
  for (uint32_t i = 1; i < count; i++) {
    const struct span *s = &copy[i];
    if (s->first >= top || c.owner[s->first] != i) continue;
    const uint64_t rel = (uint64_t)s->first << SH_PAGE_SHIFT;
    if (s->state == SPAN_LARGE || (s->state == SPAN_SMALL && gc_bit(c.opaque, i))) {
      if (gc_bit(c.mark, rel >> 4)) reached++;
      else if (s->state == SPAN_LARGE) large++, large_bytes += (uint64_t)s->npages << SH_PAGE_SHIFT;
      unswept += s->state == SPAN_SMALL;
      continue;
    }
    if (s->state != SPAN_SMALL) continue;
    if (!mark_sweepable(&c, i)) {
      unswept++;
      continue;
    }
    for (uint32_t b = 0; b < s->reserved; b++) {
      uint64_t g = (rel + (uint64_t)b * s->bsize) >> 4;
      if (!gc_bit(c.live, g)) continue;
      if (gc_bit(c.mark, g)) reached++;
      else nb[s->cls]++, nbytes[s->cls] += s->bsize;
    }
  }
  mark_free(&c);
  os_scratch_free(copy, sl);
  uint64_t blocks = large, bytes = large_bytes;
  for (unsigned k = 1; k <= SH_NCLASS; k++) blocks += nb[k], bytes += nbytes[k];
  char b1[32];
  if (json) {
    printf("{\"garbage_blocks\": %llu, \"garbage_bytes\": %llu, \"reached_blocks\": %llu, \"spans_kept_whole\": %llu, \"large_blocks\": %llu, \"large_bytes\": %llu, \"classes\": [",
           (unsigned long long)blocks, (unsigned long long)bytes, (unsigned long long)reached,
           (unsigned long long)unswept, (unsigned long long)large, (unsigned long long)large_bytes);
    int n = 0;
    for (unsigned k = 1; k <= SH_NCLASS; k++)
      if (nb[k])
        printf("%s\n  {\"size\": %u, \"blocks\": %llu, \"bytes\": %llu}", n++ ? "," : "", h->class_size[k],
               (unsigned long long)nb[k], (unsigned long long)nbytes[k]);
    printf("%s]}\n", n ? "\n " : "");
    return 0;
  }
  printf("%s: a collection now would free %llu block(s), %s; %llu reached", label, (unsigned long long)blocks,
         human(bytes, b1, sizeof b1), (unsigned long long)reached);
  if (unswept) printf("; %llu span(s) kept whole (lists that do not walk, or out of use)", (unsigned long long)unswept);
  printf("\n%10s %10s %12s\n", "CLASS", "BLOCKS", "BYTES");
  for (unsigned k = 1; k <= SH_NCLASS; k++)
    if (nb[k]) printf("%10u %10llu %12llu\n", h->class_size[k], (unsigned long long)nb[k], (unsigned long long)nbytes[k]);
  if (large) printf("%10s %10llu %12llu\n", "large", (unsigned long long)large, (unsigned long long)large_bytes);
  return 0;
}

static void roots(const struct hv *v) {
  const struct shm_header *h = v->h;
  int n = 0;
  if (json) printf("{\"roots\": [");
  else printf("%-47s %-14s %10s\n", "ROOT", "OFFSET", "BLOCK");
  for (unsigned i = 0; i < SH_ROOT_MAX; i++) {
    const struct root *r = &h->roots[i];
    if (!r->name[0]) continue;
    char name[SH_ROOT_NAME];
    memcpy(name, (const char *)r->name, SH_ROOT_NAME);
    name[SH_ROOT_NAME - 1] = 0;
    uint64_t off = r->off, size = off ? hv_block_size(v, off) : 0;
    if (json) {
      printf("%s\n  {\"name\": ", n ? "," : "");
      jstr(name, SH_ROOT_NAME);
      printf(", \"offset\": %llu, \"block_size\": %llu}", (unsigned long long)off, (unsigned long long)size);
    } else {
      char safe[SH_ROOT_NAME];
      size_t k = 0;
      for (; name[k]; k++) safe[k] = (name[k] >= 0x20 && name[k] < 0x7f) ? name[k] : '?';
      safe[k] = 0;
      if (!off) printf("%-47s %-14s %10s\n", safe, "null", "-");
      else if (size) printf("%-47s 0x%012llx %10llu\n", safe, (unsigned long long)off, (unsigned long long)size);
      else printf("%-47s 0x%012llx %10s\n", safe, (unsigned long long)off, "(interior)");
    }
    n++;
  }
  if (json) printf("%s]}\n", n ? "\n " : "");
}

static void print_problem(void *ctx, const char *p) {
  (void)ctx;
  if (json) {
    printf("%s\n  ", (*(int *)ctx)++ ? "," : "");
    jstr(p, 1024);
  } else {
    printf("problem: %s\n", p);
  }
}

int main(int argc, char **argv) {
  int check = 0, shmid = -1, show_blocks = 0, remove = 0, force = 0, show_roots = 0, watching = 0, show_garbage = 0;
  uint64_t limit = 10000;
  double seconds = 1;
  unsigned long count = 0;
  const char *target = NULL, *watch_arg = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--json")) json = 1;
    else if (!strcmp(argv[i], "--check")) check = 1;
    else if (!strcmp(argv[i], "--blocks")) show_blocks = 1;
    else if (!strcmp(argv[i], "--roots")) show_roots = 1;
    else if (!strcmp(argv[i], "--garbage")) show_garbage = 1;
    else if (!strcmp(argv[i], "--remove")) remove = 1;
    else if (!strcmp(argv[i], "--force")) force = 1;
    else if (!strcmp(argv[i], "--watch")) {
      watching = 1;
      /* A number after it is SECONDS only if the heap is named elsewhere
       * (decided below, when every argument is read): a heap may be a key,
       * and keys are numbers too. */
      if (i + 1 < argc && (isdigit((unsigned char)argv[i + 1][0]) || argv[i + 1][0] == '.')) watch_arg = argv[++i];
    } else if (!strcmp(argv[i], "--count") && i + 1 < argc) {
      char *end;
      errno = 0;
      unsigned long n = strtoul(argv[++i], &end, 10);
      if (*end || errno || n == 0 || argv[i][0] == '-' || argv[i][0] == 0) {
        fprintf(stderr, "shmheap-dump: --count %s: not a number of frames (1 or more)\n", argv[i]);
        return EXIT_ERROR;
      }
      count = n;
    }
    else if (!strcmp(argv[i], "--prometheus")) {
      /* every argument after it names a heap */
      for (int k = i + 1; k < argc; k++)
        if (argv[k][0] == '-') {
          fprintf(stderr, "shmheap-dump: --prometheus takes heap names or keys only (not %s)\n", argv[k]);
          return EXIT_ERROR;
        }
      if (json || check || show_blocks || show_roots || show_garbage || remove || watching || shmid >= 0 || target) {
        fprintf(stderr, "shmheap-dump: --prometheus goes alone, with the heaps after it\n");
        return EXIT_ERROR;
      }
      return prometheus(argv + i + 1, argc - i - 1);
    }
    else if (!strcmp(argv[i], "--limit") && i + 1 < argc) {
      char *end;
      unsigned long long n = strtoull(argv[++i], &end, 10);
      if (*end || argv[i][0] == '-' || argv[i][0] == 0) {
        fprintf(stderr, "shmheap-dump: --limit %s: not a number of blocks\n", argv[i]);
        return EXIT_ERROR;
      }
      limit = n;
    }
    else if (!strcmp(argv[i], "--shmid") && i + 1 < argc) {
      char *end;
      long id = strtol(argv[++i], &end, 10);
      if (*end || id < 0 || id > 0x7fffffff) {
        fprintf(stderr, "shmheap-dump: --shmid %s: not a segment id\n", argv[i]);
        return EXIT_ERROR;
      }
      shmid = (int)id;
    } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
      usage(stdout);
      return EXIT_OK;
    } else if (argv[i][0] == '-' && argv[i][1] == '-') {
      fprintf(stderr, "shmheap-dump: unknown option %s\n", argv[i]);
      usage(stderr);
      return EXIT_ERROR;
    } else if (!target) target = argv[i];
    else {
      usage(stderr);
      return EXIT_ERROR;
    }
  }
  if (watch_arg && !target && shmid < 0) target = watch_arg; /* --watch KEY */
  else if (watch_arg && parse_seconds(watch_arg, &seconds) < 0) {
    fprintf(stderr, "shmheap-dump: --watch %s: not a number of seconds from 0.1 to 86400\n", watch_arg);
    return EXIT_ERROR;
  }
  if (target && shmid >= 0) {
    fprintf(stderr, "shmheap-dump: %s and --shmid %d: name the heap once, by KEY, NAME or --shmid ID\n", target, shmid);
    return EXIT_ERROR;
  }
  if (check + show_blocks + remove + show_roots + show_garbage + watching > 1) {
    fprintf(stderr, "shmheap-dump: --check, --blocks, --roots, --garbage, --remove and --watch go one at a time\n");
    return EXIT_ERROR;
  }
  if (watching && json) {
    fprintf(stderr, "shmheap-dump: --watch draws text: --json goes without it (run shmheap-dump --json HEAP to sample)\n");
    return EXIT_ERROR;
  }
  if (count && !watching) {
    fprintf(stderr, "shmheap-dump: --count goes with --watch\n");
    return EXIT_ERROR;
  }
  if (force && !remove) {
    fprintf(stderr, "shmheap-dump: --force goes with --remove\n");
    return EXIT_ERROR;
  }
  if (!target && shmid < 0) {
    if (check || show_blocks || remove || show_roots || show_garbage || watching) {
      fprintf(stderr, "shmheap-dump: %s needs a heap: KEY, NAME or --shmid ID\n",
              check ? "--check" : show_blocks ? "--blocks" : show_roots ? "--roots" : show_garbage ? "--garbage" : watching ? "--watch" : "--remove");
      return EXIT_ERROR;
    }
    list_heaps();
    return EXIT_OK;
  }
  char label[96];
  int32_t key = 0;
  char name[SH_NAME_MAX];
  if (target) {
    int r = options_parse_key(target, &key, name);
    if (r) {
      fprintf(stderr, "shmheap-dump: %s: %s\n", target,
              r == 1 ? "key out of range (1 to 0xffffffff)" : r == 2 ? "0 is IPC_PRIVATE, not a key" : "name longer than 63 bytes");
      return EXIT_ERROR;
    }
    shmid = shmget(key, 0, 0);
    snprintf(label, sizeof label, "heap %s (key 0x%x)", target, (unsigned)key);
    if (shmid < 0) {
      fprintf(stderr, "shmheap-dump: %s: %s\n", label,
              errno == ENOENT ? "no such segment" : errno == EACCES ? "permission denied" : strerror(errno));
      return EXIT_ERROR;
    }
  } else {
    snprintf(label, sizeof label, "segment shmid %d", shmid);
  }
  /* Another user's segment is refused by the ownership rule, with its
   * owner named, before the read-only attach (which it may not allow). */
  if (remove) {
    struct shmid_ds ds;
    if (may_remove(shmid, -1, label, &ds) != 0) return EXIT_ERROR;
  }
  struct seg s;
  if (attach(shmid, &s) < 0) {
    fprintf(stderr, "shmheap-dump: %s: cannot attach it read-only: %s\n", label,
            errno == EACCES ? "permission denied" : errno == EINVAL || errno == EIDRM ? "no such segment" : strerror(errno));
    return EXIT_ERROR;
  }
  struct hv v;
  char why[160];
  if (fmt_open(&v, s.map, s.ds.shm_segsz, why, sizeof why) < 0) {
    fprintf(stderr, "shmheap-dump: %s: %s\n", label, why);
    return EXIT_ERROR;
  }
  if (target && name[0] && strncmp(v.h->name, name, SH_NAME_MAX)) {
    char other[SH_NAME_MAX];
    safe_name(v.h->name, other);
    fprintf(stderr, "shmheap-dump: %s: the segment is heap \"%s\", whose name hashes to the same key\n", label, other);
    return EXIT_ERROR;
  }
  if (remove) return remove_heap(&s, &v, label, force);
  if (watching) return watch(&s, key, label, target, seconds, count);
  if (show_blocks) {
    blocks(&v, limit);
    return EXIT_OK;
  }
  if (show_roots) {
    roots(&v);
    return EXIT_OK;
  }
  if (show_garbage) return garbage(&v, label) < 0 ? EXIT_ERROR : EXIT_OK;
  if (!check) {
    summary(&s, &v);
    return EXIT_OK;
  }
  int nprinted = 0;
  if (json) printf("{\"shmid\": %d, \"problems\": [", shmid);
  long n = hv_check(&v, print_problem, &nprinted);
  if (n < 0) {
    fprintf(stderr, "shmheap-dump: %s: out of memory for the check\n", label);
    return EXIT_ERROR;
  }
  if (json) printf("%s], \"consistent\": %s}\n", n ? "\n " : "", n ? "false" : "true");
  else if (n == 0) printf("%s: consistent\n", label);
  else printf("%s: %ld problem%s\n", label, n, n == 1 ? "" : "s");
  return n ? EXIT_PROBLEMS : EXIT_OK;
}
