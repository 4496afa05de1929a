/* counter: a small program whose state lives in the libshmheap heap.
 *
 * It builds a linked list of records with malloc and strdup, shows where the
 * records live, then forks twice:
 *
 *   1. shmheap_fork(SHMHEAP_FORK_SHARE): the child appends records to the same
 *      list and exits; the parent then finds them in its own list.
 *   2. shmheap_fork(SHMHEAP_FORK_COPY): the child changes the list too, but in
 *      its private copy of the heap; the parent does not see the change.
 *
 * Every step is checked; the program exits 0 if all checks pass and 1, with a
 * message on stderr, at the first one that fails.  Built by `make` as
 * examples/counter and run by `make demo` (examples/demo.sh).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shmheap.h"

struct record {
  struct record *next;
  char *name;     /* strdup'd: also in the heap */
  long count;
  pid_t author;   /* the process that appended the record */
};

/* The root of the state.  It is itself allocated in the heap: a global would
 * live in the program's data segment, which a fork always copies, so a child
 * could not change the parent's list through it. */
struct list {
  struct record *head, *tail;
  long n;
};

static int failures;

#define CHECK(cond, ...)                                                      \
  do {                                                                        \
    if (!(cond)) {                                                            \
      fprintf(stderr, "counter: check failed at line %d: %s: ", __LINE__,     \
              #cond);                                                         \
      fprintf(stderr, __VA_ARGS__);                                           \
      fputc('\n', stderr);                                                    \
      failures++;                                                             \
    }                                                                         \
  } while (0)

static struct record *append(struct list *l, const char *name, long count) {
  struct record *r = malloc(sizeof *r);
  if (r == NULL) return NULL;
  r->name = strdup(name);
  if (r->name == NULL) {
    free(r);
    return NULL;
  }
  r->count = count;
  r->author = getpid();
  r->next = NULL;
  if (l->tail != NULL)
    l->tail->next = r;
  else
    l->head = r;
  l->tail = r;
  l->n++;
  return r;
}

static struct record *find(const struct list *l, const char *name) {
  for (struct record *r = l->head; r != NULL; r = r->next)
    if (strcmp(r->name, name) == 0) return r;
  return NULL;
}

static void print_list(const char *who, const struct list *l) {
  printf("%s: %ld records:\n", who, l->n);
  for (const struct record *r = l->head; r != NULL; r = r->next)
    printf("  %-14s count=%-3ld by pid %-7ld at %p (name at %p)\n", r->name,
           r->count, (long)r->author, (void *)r, (void *)r->name);
}

/* Every record and every name must lie in the heap segment. */
static void check_in_heap(const struct list *l) {
  CHECK(shmheap_contains(l), "list root %p is not in the heap", (void *)l);
  for (const struct record *r = l->head; r != NULL; r = r->next) {
    CHECK(shmheap_contains(r), "record %p is not in the heap", (void *)r);
    CHECK(shmheap_contains(r->name), "name %p is not in the heap",
          (void *)r->name);
  }
}

/* Waits for a child and returns 1 if it exited with status 0. */
static int child_ok(pid_t pid, const char *what) {
  int status;
  while (waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) {
      perror("counter: waitpid");
      return 0;
    }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return 1;
  if (WIFEXITED(status))
    fprintf(stderr, "counter: %s child exited with status %d\n", what,
            WEXITSTATUS(status));
  else
    fprintf(stderr, "counter: %s child was killed by signal %d\n", what,
            WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  return 0;
}

int main(void) {
  struct shmheap_info info;
  int on_stack = 0;

  /* One line at a time, so the library's lines on stderr interleave in order. */
  setvbuf(stdout, NULL, _IOLBF, 0);

  /* ---- 1. build the state --------------------------------------------- */
  struct list *list = calloc(1, sizeof *list);
  if (list == NULL) {
    perror("counter: calloc");
    return 1;
  }
  static const char *const names[] = {"apples", "pears", "plums"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (append(list, names[i], (long)(i + 1) * 10) == NULL) {
      perror("counter: malloc");
      return 1;
    }

  if (shmheap_get_info(&info) != 0) {
    perror("counter: shmheap_get_info");
    return 1;
  }
  printf("heap: base %p, size %zu MiB, key %#x%s%s%s, shmid %d, in_use %zu bytes\n",
         info.base, info.size >> 20, (unsigned)info.key,
         info.key == 0 ? " (private)" : "", info.name[0] ? ", name " : "",
         info.name, info.shmid, info.in_use);
  print_list("parent", list);
  check_in_heap(list);
  CHECK(!shmheap_contains(&on_stack), "a stack variable claims to be in the heap");
  CHECK(!shmheap_contains(names), "static data claims to be in the heap");
  CHECK(info.in_use > 0, "in_use is 0 after %ld allocations", list->n);
  printf("check: every record and name is in the heap; the stack is not\n");

  /* ---- 2. a shared fork: the child's records appear in the parent ------- */
  long before = list->n;
  enum shmheap_fork_mode mode = shmheap_get_fork_mode();
  printf("default fork mode: %s (SHMHEAP_FORK); shmheap_fork() overrides it for one fork\n",
         mode == SHMHEAP_FORK_SHARE ? "share" : "copy");
  fflush(stdout);
  pid_t pid = shmheap_fork(SHMHEAP_FORK_SHARE);
  if (pid < 0) {
    perror("counter: shmheap_fork(SHMHEAP_FORK_SHARE)");
    return 1;
  }
  if (pid == 0) {
    /* The child writes into the parent's list: same segment, same address. */
    find(list, "apples")->count++;
    if (append(list, "cherries", 40) == NULL || append(list, "figs", 50) == NULL) {
      perror("counter: child malloc");
      exit(1);
    }
    check_in_heap(list);
    printf("share child %ld: appended 2 records and counted one more apple\n",
           (long)getpid());
    exit(failures ? 1 : 0);
  }
  if (!child_ok(pid, "share")) return 1;
  print_list("parent after the share child", list);
  CHECK(list->n == before + 2, "expected %ld records, found %ld", before + 2, list->n);
  struct record *r = find(list, "cherries");
  CHECK(r != NULL && r->author == pid, "the child's record is missing");
  r = find(list, "apples");
  CHECK(r != NULL && r->count == 11, "apples count is %ld, expected 11",
        r ? r->count : -1);
  check_in_heap(list);
  CHECK(shmheap_get_fork_mode() == mode,
        "shmheap_fork changed the process's default fork mode");
  printf("check: the parent sees the share child's records and writes\n");

  /* ---- 3. a copy fork: the child's change stays in the child ----------- */
  before = list->n;
  void *base = info.base;
  int shmid = info.shmid;
  fflush(stdout);
  pid = shmheap_fork(SHMHEAP_FORK_COPY);
  if (pid < 0) {
    perror("counter: shmheap_fork(SHMHEAP_FORK_COPY)");
    return 1;
  }
  if (pid == 0) {
    /* Same addresses, private copy: these writes are the child's alone. */
    find(list, "pears")->count = 999;
    if (append(list, "lemons", 60) == NULL) {
      perror("counter: child malloc");
      exit(1);
    }
    check_in_heap(list);
    struct shmheap_info mine;
    CHECK(shmheap_get_info(&mine) == 0 && mine.base == base && mine.shmid != shmid,
          "the copy child's heap is not a new segment at the same address");
    printf("copy child %ld: set pears to 999 and appended lemons (%ld records)\n"
           "copy child %ld: its heap is a private copy, shmid %d, at the same address %p\n",
           (long)getpid(), list->n, (long)getpid(), mine.shmid, mine.base);
    exit(failures ? 1 : 0);
  }
  if (!child_ok(pid, "copy")) return 1;
  CHECK(list->n == before, "the copy child's record leaked: %ld records, expected %ld",
        list->n, before);
  CHECK(find(list, "lemons") == NULL, "the copy child's record is in the parent's list");
  r = find(list, "pears");
  CHECK(r != NULL && r->count == 20, "pears count is %ld, expected 20",
        r ? r->count : -1);
  printf("check: the parent does not see the copy child's changes "
         "(%ld records, pears=20)\n", list->n);

  /* ---- 4. free everything, including the blocks the share child made --- */
  size_t in_use = 0;
  if (shmheap_get_info(&info) == 0) in_use = info.in_use;
  while (list->head != NULL) {
    r = list->head;
    list->head = r->next;
    free(r->name);
    free(r);
  }
  free(list);
  CHECK(shmheap_get_info(&info) == 0 && info.in_use < in_use,
        "in_use did not drop after freeing (%zu -> %zu)", in_use, info.in_use);
  printf("freed every record: in_use %zu -> %zu bytes (the rest is stdio's buffers)\n",
         in_use, info.in_use);

  if (failures) {
    fprintf(stderr, "counter: %d check(s) failed\n", failures);
    return 1;
  }
  printf("counter: all checks passed\n");
  return 0;
}
