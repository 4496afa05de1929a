/* kvstore: a key-value server whose whole state lives in a keyed libshmheap
 * heap, so that it survives kill -9.
 *
 *   SHMHEAP_KEY=name kvstore SOCKET_PATH
 *
 * It serves a line protocol on a UNIX stream socket, one request per line and
 * one reply line per request:
 *
 *   SET key value   -> OK             (value: the rest of the line, may be empty)
 *   GET key         -> VALUE value | NOT_FOUND
 *   DEL key         -> OK | NOT_FOUND
 *   COUNT           -> COUNT n
 *   STATS           -> STATS count=... bytes=... origin=... recovery_ns=... ...
 *   QUIT            -> OK, then the server closes this connection
 *   SHUTDOWN        -> OK, then the server exits cleanly (as on SIGTERM/SIGINT)
 *   anything else   -> ERR ...
 *
 * The store is a chained hash table reached from one named root, "kvstore".
 * Nothing of it is ever saved or loaded: when the process is killed, the next
 * one started with the same SHMHEAP_KEY re-attaches the heap, finds the root
 * and carries on with every key whose SET was answered OK.
 *
 * What makes that true is the order of the stores, not any lock: a crash can
 * stop the process between any two instructions, so every update is written
 * such that each instant leaves a table a reader can use.
 *
 *   - SET of a new key: the node (key and value copied in) is built
 *     completely, then linked at the head of its chain by one pointer store.
 *   - SET of a key that exists: a new node replaces the old one in its chain
 *     by one pointer store (prev->next = new, new->next = old->next), then the
 *     old node is freed.  A value is never edited in place.
 *   - DEL: the node is unlinked by one pointer store, then freed.
 *   - Growing the table: the new bucket array is built beside the old one,
 *     then store->table is switched by one pointer store.  Each node has two
 *     link fields, one per table generation, so linking the nodes into the
 *     new table does not touch the links the old table uses: until the
 *     switch, the old table is intact.
 *   - The count and byte totals are updated after the link or unlink.  After
 *     a crash they may be off by the one update in flight, so a start after a
 *     crash walks the table and recounts them (the walk also checks every
 *     node and link of the structure, and refuses to serve a broken one).
 *
 * The link stores are C11 atomic stores with release order: that keeps the
 * compiler from moving the stores that fill a node after the store that
 * publishes it, which is what "a crash at any instruction" needs.
 *
 * A block allocated but not yet linked when the process dies would be lost
 * (nothing points to it), so a new node is recorded in store->pending, and a
 * table being built in store->spare, as soon as malloc returns; a start after
 * a crash frees them if the table does not reach them.  Only the few
 * instructions between malloc's return and that store, and between an unlink
 * and its free, can leak a block; none can leave a dangling pointer.
 *
 * Connection buffers are static arrays, not heap blocks: a killed process
 * leaves in the heap only what the root reaches.
 *
 * Built by `make` as examples/kvstore (linked with libshmheap, no LD_PRELOAD
 * needed); examples/kvcli is its client; examples/demo.sh shows it surviving
 * kill -9.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "shmheap.h"

#define ROOT_NAME "kvstore"
#define STORE_MAGIC UINT64_C(0x6b7673746f726531) /* "kvstore1" */
#define STORE_LAYOUT 1u                          /* bump when a struct below changes */

#define KEY_MAX 250u            /* bytes of a key */
#define LINE_MAX_BYTES 65536u   /* bytes of a request line, newline included */
#define VALUE_MAX (LINE_MAX_BYTES - KEY_MAX - 16u)
#define INITIAL_BUCKETS 1024u
#define MAX_CLIENTS 64

/* ---- the store: everything below lives in the heap -------------------------- */

struct node {
  /* next[g] links the node in the table of generation g (see struct table). */
  _Atomic(struct node *) next[2];
  uint64_t hash;
  uint32_t klen, vlen;
  char data[]; /* key, '\0', value, '\0' */
};

struct table {
  uint64_t nbuckets; /* a power of two */
  unsigned gen;      /* which next[] field of the nodes this table links through */
  _Atomic(struct node *) bucket[];
};

struct store {
  uint64_t magic;
  uint32_t layout;
  _Atomic(struct table *) table;  /* the table in use: switched by one store */
  _Atomic(struct table *) spare;  /* a table being built by a resize, or NULL */
  _Atomic(struct node *) pending; /* a node being built by SET, or NULL */
  /* Totals, updated after each link or unlink: off by at most one after a
   * crash, and recounted then. */
  uint64_t count;
  uint64_t bytes; /* key and value bytes of all entries */
  /* History, for STATS. */
  uint64_t starts, crashes;
};

/* ---- the process's own state (not in the heap: recomputed at each start) ---- */

static struct store *S;
static struct shmheap_recovery rec;
static volatile sig_atomic_t stop_signal;

/* FNV-1a with a final mix: the low bits pick the bucket. */
static uint64_t hash_key(const char *k, size_t n) {
  uint64_t h = UINT64_C(0xcbf29ce484222325);
  for (size_t i = 0; i < n; i++) {
    h ^= (unsigned char)k[i];
    h *= UINT64_C(0x100000001b3);
  }
  h ^= h >> 33;
  h *= UINT64_C(0xff51afd7ed558ccd);
  h ^= h >> 33;
  return h;
}

static struct table *cur_table(void) {
  return atomic_load_explicit(&S->table, memory_order_acquire);
}

static struct node *next_of(struct node *n, unsigned gen) {
  return atomic_load_explicit(&n->next[gen], memory_order_acquire);
}

/* Publishes p through *link: everything written before is in memory first. */
#define PUBLISH(link, p) atomic_store_explicit((link), (p), memory_order_release)

static struct table *table_new(uint64_t nbuckets, unsigned gen) {
  struct table *t = calloc(1, sizeof *t + nbuckets * sizeof t->bucket[0]);
  if (t == NULL) return NULL;
  t->nbuckets = nbuckets;
  t->gen = gen;
  return t; /* calloc: every bucket is NULL */
}

/* Finds key in t.  *linkp receives the link that points to the node (or to
 * where it would be linked). */
static struct node *lookup(struct table *t, const char *key, size_t klen, uint64_t h,
                           _Atomic(struct node *) **linkp) {
  _Atomic(struct node *) *link = &t->bucket[h & (t->nbuckets - 1)];
  struct node *n;
  while ((n = atomic_load_explicit(link, memory_order_acquire)) != NULL) {
    if (n->hash == h && n->klen == klen && memcmp(n->data, key, klen) == 0) break;
    link = &n->next[t->gen];
  }
  if (linkp) *linkp = link;
  return n;
}

/* Doubles the table.  The nodes are linked into the new table through their
 * other next[] field, so the old table stays whole until the switch. */
static void maybe_grow(void) {
  struct table *old = cur_table();
  if (S->count <= old->nbuckets || old->nbuckets >= (UINT64_C(1) << 40)) return;
  struct table *nt = table_new(old->nbuckets * 2, !old->gen);
  if (nt == NULL) return; /* keep the old one: longer chains, still correct */
  PUBLISH(&S->spare, nt); /* a crash from here on: the restart frees it */
  unsigned og = old->gen, ng = nt->gen;
  for (uint64_t b = 0; b < old->nbuckets; b++)
    for (struct node *n = atomic_load_explicit(&old->bucket[b], memory_order_acquire); n != NULL;
         n = next_of(n, og)) {
      _Atomic(struct node *) *head = &nt->bucket[n->hash & (nt->nbuckets - 1)];
      atomic_store_explicit(&n->next[ng], atomic_load_explicit(head, memory_order_relaxed),
                            memory_order_relaxed);
      atomic_store_explicit(head, n, memory_order_relaxed);
    }
  PUBLISH(&S->table, nt); /* the switch: the old table or the new, never a mix */
  /* Clear spare before the free: a crash between the two leaks the old array
   * rather than making the restart free it twice. */
  PUBLISH(&S->spare, NULL);
  free(old);
}

/* SET.  Returns 0, or an errno value. */
static int kv_set(const char *key, size_t klen, const char *val, size_t vlen) {
  uint64_t h = hash_key(key, klen);
  struct node *n = malloc(sizeof *n + klen + 1 + vlen + 1);
  if (n == NULL) return ENOMEM;
  PUBLISH(&S->pending, n);
  memcpy(n->data, key, klen);
  n->data[klen] = '\0';
  memcpy(n->data + klen + 1, val, vlen);
  n->data[klen + 1 + vlen] = '\0';
  n->hash = h;
  n->klen = (uint32_t)klen;
  n->vlen = (uint32_t)vlen;
  atomic_store_explicit(&n->next[0], NULL, memory_order_relaxed);
  atomic_store_explicit(&n->next[1], NULL, memory_order_relaxed);

  struct table *t = cur_table();
  _Atomic(struct node *) *link;
  struct node *old = lookup(t, key, klen, h, &link);
  if (old != NULL) {
    /* Replace: the new node takes the old one's place in the chain. */
    atomic_store_explicit(&n->next[t->gen], next_of(old, t->gen), memory_order_relaxed);
    PUBLISH(link, n);
    PUBLISH(&S->pending, NULL);
    S->bytes = S->bytes - old->vlen + vlen;
    free(old);
  } else {
    /* Insert at the head of the chain (link points at its end: use the head,
     * so the one store that publishes the node is to the bucket). */
    _Atomic(struct node *) *head = &t->bucket[h & (t->nbuckets - 1)];
    atomic_store_explicit(&n->next[t->gen], atomic_load_explicit(head, memory_order_relaxed),
                          memory_order_relaxed);
    PUBLISH(head, n);
    PUBLISH(&S->pending, NULL);
    S->count++;
    S->bytes += klen + vlen;
    maybe_grow();
  }
  return 0;
}

static struct node *kv_get(const char *key, size_t klen) {
  return lookup(cur_table(), key, klen, hash_key(key, klen), NULL);
}

/* DEL.  Returns 1 if the key was there. */
static int kv_del(const char *key, size_t klen) {
  struct table *t = cur_table();
  _Atomic(struct node *) *link;
  struct node *n = lookup(t, key, klen, hash_key(key, klen), &link);
  if (n == NULL) return 0;
  PUBLISH(link, next_of(n, t->gen)); /* unlink first: then nothing reaches n */
  S->count--;
  S->bytes -= n->klen + n->vlen;
  free(n);
  return 1;
}

/* ---- start-up: find or make the store, and check it after a crash ------------ */

static double ms_since(const struct timespec *t0) {
  struct timespec t1;
  clock_gettime(CLOCK_MONOTONIC, &t1);
  return (double)(t1.tv_sec - t0->tv_sec) * 1e3 + (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

static int bad_store(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int bad_store(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("kvstore: the store in the heap is broken: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputs("\n", stderr);
  va_end(ap);
  return -1;
}

/* Is [p, p + len) a block of the heap at least len bytes long? */
static int heap_block(const void *p, size_t len) {
  return p != NULL && ((uintptr_t)p & 15) == 0 && shmheap_contains(p) &&
         malloc_usable_size((void *)p) >= len;
}

/* Walks every chain of the table in use, checking each node, and recounts the
 * totals.  *pending_seen says whether S->pending is linked.  Returns 0, or -1
 * (with a message) if the structure is not what this program writes. */
static int walk_store(uint64_t *count, uint64_t *bytes, int *pending_seen) {
  struct table *t = cur_table();
  if (!heap_block(t, sizeof *t))
    return bad_store("the table pointer %p is not a heap block", (void *)t);
  if (t->nbuckets == 0 || (t->nbuckets & (t->nbuckets - 1)) != 0 || t->gen > 1 ||
      t->nbuckets > (UINT64_C(1) << 41) ||
      !heap_block(t, sizeof *t + t->nbuckets * sizeof t->bucket[0]))
    return bad_store("table %p: %" PRIu64 " buckets, generation %u", (void *)t, t->nbuckets, t->gen);
  /* A cycle would make the walk endless: no heap holds more nodes than it
   * has bytes for them. */
  struct shmheap_info hi;
  shmheap_get_info(&hi);
  uint64_t limit = hi.in_use / sizeof(struct node) + 1;
  struct node *pending = atomic_load_explicit(&S->pending, memory_order_acquire);
  uint64_t n_count = 0, n_bytes = 0;
  *pending_seen = 0;
  for (uint64_t b = 0; b < t->nbuckets; b++) {
    for (struct node *n = atomic_load_explicit(&t->bucket[b], memory_order_acquire); n != NULL;
         n = next_of(n, t->gen)) {
      if (++n_count > limit) return bad_store("bucket %" PRIu64 ": a chain loops", b);
      if (!heap_block(n, sizeof *n))
        return bad_store("bucket %" PRIu64 ": node pointer %p is not a heap block", b, (void *)n);
      if (n->klen == 0 || n->klen > KEY_MAX || n->vlen > VALUE_MAX ||
          !heap_block(n, sizeof *n + n->klen + n->vlen + 2))
        return bad_store("node %p: key of %" PRIu32 " bytes, value of %" PRIu32 " bytes", (void *)n,
                         n->klen, n->vlen);
      if (n->data[n->klen] != '\0' || n->data[n->klen + 1 + n->vlen] != '\0' ||
          memchr(n->data, '\0', n->klen) != NULL)
        return bad_store("node %p: key or value not terminated", (void *)n);
      if (n->hash != hash_key(n->data, n->klen) || (n->hash & (t->nbuckets - 1)) != b)
        return bad_store("node %p (key %.40s): in bucket %" PRIu64 ", its hash says otherwise",
                         (void *)n, n->data, b);
      if (n == pending) *pending_seen = 1;
      n_bytes += n->klen + n->vlen;
    }
  }
  *count = n_count;
  *bytes = n_bytes;
  return 0;
}

/* Finds the store through its root, or makes an empty one.  Prints the start
 * line.  Returns 0, or -1 if the heap holds something this program cannot
 * serve. */
static int open_store(void) {
  struct timespec t0;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  S = shmheap_root_get(ROOT_NAME);
  if (S == NULL) {
    /* A new heap (or a crash came before the root was set: nothing was
     * ever acknowledged then).  Build the store, then publish it by the
     * root, which is atomic too. */
    struct store *s = calloc(1, sizeof *s);
    struct table *t = s ? table_new(INITIAL_BUCKETS, 0) : NULL;
    if (t == NULL) {
      fprintf(stderr, "kvstore: cannot allocate the store: %s\n", strerror(errno));
      return -1;
    }
    s->magic = STORE_MAGIC;
    s->layout = STORE_LAYOUT;
    atomic_store_explicit(&s->table, t, memory_order_relaxed);
    if (shmheap_root_set(ROOT_NAME, s) != 0) {
      fprintf(stderr, "kvstore: shmheap_root_set: %s\n", strerror(errno));
      return -1;
    }
    S = s;
  } else if (!heap_block(S, sizeof *S) || S->magic != STORE_MAGIC || S->layout != STORE_LAYOUT) {
    fprintf(stderr, "kvstore: root \"%s\" of this heap is not a store of this version of kvstore\n",
            ROOT_NAME);
    return -1;
  }
  S->starts++;

  struct shmheap_info hi;
  shmheap_get_info(&hi);
  double repair_ms = (double)rec.recovery_ns / 1e6;
  if (rec.origin == SHMHEAP_CRASHED) {
    S->crashes++;
    uint64_t count = 0, bytes = 0;
    int pending_seen = 0;
    if (walk_store(&count, &bytes, &pending_seen) != 0) {
      fprintf(stderr, "kvstore: refusing to serve it; inspect the heap with shmheap-dump %s\n",
              hi.name[0] ? hi.name : "KEY");
      return -1;
    }
    /* Blocks the dead process had allocated but not linked. */
    struct node *p = atomic_load_explicit(&S->pending, memory_order_acquire);
    if (p != NULL && !pending_seen) free(p);
    PUBLISH(&S->pending, NULL);
    struct table *sp = atomic_load_explicit(&S->spare, memory_order_acquire);
    if (sp != NULL && sp != cur_table()) free(sp);
    PUBLISH(&S->spare, NULL);
    char fixed[64] = "";
    if (S->count != count)
      snprintf(fixed, sizeof fixed, ", count corrected from %" PRIu64, S->count);
    S->count = count;
    S->bytes = bytes;
    fprintf(stderr,
            "kvstore: heap re-attached after a crash (repaired in %.2f ms; store walked and "
            "recounted in %.2f ms%s): %" PRIu64 " keys\n",
            repair_ms, ms_since(&t0), fixed, count);
  } else if (rec.origin == SHMHEAP_CLEAN) {
    fprintf(stderr, "kvstore: heap re-attached, left cleanly (in %.2f ms): %" PRIu64 " keys\n",
            repair_ms, S->count);
  } else {
    fprintf(stderr, "kvstore: new heap: %" PRIu64 " keys\n", S->count);
  }
  return 0;
}

/* ---- the protocol --------------------------------------------------------------- */

struct client {
  int fd;
  int eof;      /* the client shut down its side: close when the replies are out */
  int closing;  /* QUIT or a protocol error: close when the replies are out */
  size_t in_len;
  size_t out_off, out_len;
  char in[LINE_MAX_BYTES];
  char out[4 * LINE_MAX_BYTES];
};

/* Static, not malloc'd: see the top of the file. */
static struct client clients[MAX_CLIENTS];

/* Room a reply may need: one line (VALUE and a value of up to VALUE_MAX). */
#define REPLY_MAX (LINE_MAX_BYTES + 32u)

static void reply(struct client *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void reply(struct client *c, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(c->out + c->out_len, sizeof c->out - c->out_len, fmt, ap);
  va_end(ap);
  if (n > 0) c->out_len += (size_t)n < sizeof c->out - c->out_len ? (size_t)n : 0;
}

static const char *origin_name(int o) {
  return o == SHMHEAP_CRASHED ? "crashed" : o == SHMHEAP_CLEAN ? "clean" : "new";
}

/* Splits the first word off *rest (up to a space); returns its length. */
static size_t word(const char **rest, const char *end) {
  const char *p = *rest;
  while (p < end && *p != ' ') p++;
  size_t n = (size_t)(p - *rest);
  *rest = p < end ? p + 1 : p;
  return n;
}

static int cmd_is(const char *w, size_t n, const char *name) {
  return n == strlen(name) && memcmp(w, name, n) == 0;
}

/* Handles one request line (without its newline). */
static void handle(struct client *c, const char *line, size_t len) {
  if (len > 0 && line[len - 1] == '\r') len--;
  const char *end = line + len, *p = line;
  const char *cmd = p;
  size_t clen = word(&p, end);
  const char *key = p;
  int has_arg = p < end || (p > line && p[-1] == ' ');

  if (cmd_is(cmd, clen, "SET") || cmd_is(cmd, clen, "GET") || cmd_is(cmd, clen, "DEL")) {
    size_t klen = word(&p, end);
    if (!has_arg || klen == 0) {
      reply(c, "ERR %.*s needs a key\n", (int)clen, cmd);
      return;
    }
    if (klen > KEY_MAX) {
      reply(c, "ERR key longer than %u bytes\n", KEY_MAX);
      return;
    }
    if (memchr(key, '\0', klen) != NULL) {
      reply(c, "ERR key holds a NUL byte\n");
      return;
    }
    if (cmd[0] == 'S') {
      /* The value is the rest of the line after one space: it may hold
       * spaces, and may be empty ("SET k " sets ""); "SET k" is an error. */
      if (key + klen == end) {
        reply(c, "ERR SET needs a value\n");
        return;
      }
      size_t vlen = (size_t)(end - p);
      if (vlen > VALUE_MAX) {
        reply(c, "ERR value longer than %u bytes\n", VALUE_MAX);
        return;
      }
      int e = kv_set(key, klen, p, vlen);
      if (e)
        reply(c, "ERR %s\n", strerror(e));
      else
        reply(c, "OK\n");
    } else if (p != end || key + klen != end) {
      reply(c, "ERR %.*s takes one key\n", (int)clen, cmd);
    } else if (cmd[0] == 'G') {
      struct node *n = kv_get(key, klen);
      if (n == NULL)
        reply(c, "NOT_FOUND\n");
      else
        reply(c, "VALUE %.*s\n", (int)n->vlen, n->data + n->klen + 1);
    } else {
      reply(c, kv_del(key, klen) ? "OK\n" : "NOT_FOUND\n");
    }
  } else if (has_arg) {
    reply(c, "ERR %.*s takes no argument\n", (int)(clen < 20 ? clen : 20), cmd);
  } else if (cmd_is(cmd, clen, "COUNT")) {
    reply(c, "COUNT %" PRIu64 "\n", S->count);
  } else if (cmd_is(cmd, clen, "STATS")) {
    struct shmheap_info hi;
    shmheap_get_info(&hi);
    reply(c,
          "STATS count=%" PRIu64 " bytes=%" PRIu64 " buckets=%" PRIu64 " origin=%s recovery_ns=%" PRIu64
          " starts=%" PRIu64 " crashes=%" PRIu64 " heap_in_use=%zu\n",
          S->count, S->bytes, cur_table()->nbuckets, origin_name(rec.origin), rec.recovery_ns,
          S->starts, S->crashes, hi.in_use);
  } else if (cmd_is(cmd, clen, "QUIT")) {
    reply(c, "OK\n");
    c->closing = 1;
  } else if (cmd_is(cmd, clen, "SHUTDOWN")) {
    reply(c, "OK\n");
    c->closing = 1;
    stop_signal = -1;
  } else {
    reply(c, "ERR unknown command '%.*s'\n", (int)(clen < 20 ? clen : 20), cmd);
  }
}

/* Handles the complete lines in c->in while there is room for their replies. */
static void process_input(struct client *c) {
  size_t start = 0;
  while (!c->closing && sizeof c->out - c->out_len >= REPLY_MAX) {
    char *nl = memchr(c->in + start, '\n', c->in_len - start);
    if (nl == NULL) break;
    handle(c, c->in + start, (size_t)(nl - (c->in + start)));
    start = (size_t)(nl - c->in) + 1;
  }
  if (!c->closing && c->in_len - start == sizeof c->in) {
    reply(c, "ERR line longer than %u bytes\n", LINE_MAX_BYTES - 1);
    c->closing = 1;
  }
  memmove(c->in, c->in + start, c->in_len - start);
  c->in_len -= start;
}

static void drop(struct client *c) {
  close(c->fd);
  c->fd = -1;
}

/* Reads what the client sent.  Returns -1 if the connection is gone. */
static int on_readable(struct client *c) {
  ssize_t r = read(c->fd, c->in + c->in_len, sizeof c->in - c->in_len);
  if (r < 0) return errno == EINTR || errno == EAGAIN ? 0 : -1;
  if (r == 0) {
    c->eof = 1;
    return 0;
  }
  c->in_len += (size_t)r;
  process_input(c);
  return 0;
}

/* Sends queued replies.  Returns -1 if the connection is gone. */
static int on_writable(struct client *c) {
  ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
  if (w < 0) return errno == EINTR || errno == EAGAIN ? 0 : -1;
  c->out_off += (size_t)w;
  if (c->out_off == c->out_len) c->out_off = c->out_len = 0;
  if (c->out_off > sizeof c->out / 2) {
    memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
    c->out_len -= c->out_off;
    c->out_off = 0;
  }
  process_input(c); /* lines that waited for room */
  return 0;
}

static void on_signal(int sig) { stop_signal = sig; }

/* Binds the socket, removing a stale socket file: one no server listens on. */
static int listen_on(const char *path) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof sa.sun_path) {
    fprintf(stderr, "kvstore: socket path too long (at most %zu bytes): %s\n",
            sizeof sa.sun_path - 1, path);
    return -1;
  }
  memcpy(sa.sun_path, path, strlen(path) + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    perror("kvstore: socket");
    return -1;
  }
  struct stat st;
  if (lstat(path, &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      fprintf(stderr, "kvstore: %s exists and is not a socket: not removing it\n", path);
      close(fd);
      return -1;
    }
    /* Someone answering there is a live server, not a stale file. */
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) {
      fprintf(stderr, "kvstore: a server is already listening on %s\n", path);
      close(fd);
      return -1;
    }
    unlink(path);
  }
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 64) != 0) {
    fprintf(stderr, "kvstore: cannot listen on %s: %s\n", path, strerror(errno));
    close(fd);
    return -1;
  }
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  return fd;
}

static int serve(int lfd) {
  for (int i = 0; i < MAX_CLIENTS; i++) clients[i].fd = -1;
  struct pollfd pf[MAX_CLIENTS + 1];
  int who[MAX_CLIENTS + 1];
  while (!stop_signal) {
    int n = 0;
    pf[n] = (struct pollfd){.fd = lfd, .events = POLLIN};
    who[n++] = -1;
    for (int i = 0; i < MAX_CLIENTS; i++) {
      struct client *c = &clients[i];
      if (c->fd < 0) continue;
      int want_out = c->out_len > c->out_off;
      if (!want_out && (c->closing || (c->eof && c->in_len == 0) ||
                        (c->eof && !memchr(c->in, '\n', c->in_len)))) {
        drop(c); /* done: every reply is out */
        continue;
      }
      short ev = 0;
      if (!c->eof && !c->closing && sizeof c->out - c->out_len >= REPLY_MAX) ev |= POLLIN;
      if (want_out) ev |= POLLOUT;
      pf[n] = (struct pollfd){.fd = c->fd, .events = ev};
      who[n++] = i;
    }
    if (poll(pf, (nfds_t)n, -1) < 0) {
      if (errno == EINTR) continue;
      perror("kvstore: poll");
      return -1;
    }
    for (int k = 1; k < n; k++) {
      struct client *c = &clients[who[k]];
      int gone = 0;
      if (pf[k].revents & POLLOUT) gone = on_writable(c) < 0;
      if (!gone && (pf[k].revents & (POLLIN | POLLHUP))) gone = on_readable(c) < 0;
      if (!gone && (pf[k].revents & (POLLERR | POLLNVAL))) gone = 1;
      if (gone) drop(c);
    }
    if (pf[0].revents & POLLIN) {
      int fd;
      while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
        int i = 0;
        while (i < MAX_CLIENTS && clients[i].fd >= 0) i++;
        if (i == MAX_CLIENTS) {
          static const char busy[] = "ERR too many clients\n";
          ssize_t ignored = send(fd, busy, sizeof busy - 1, MSG_NOSIGNAL);
          (void)ignored;
          close(fd);
          continue;
        }
        struct client *c = &clients[i];
        c->fd = fd;
        c->eof = c->closing = 0;
        c->in_len = c->out_off = c->out_len = 0;
      }
    }
  }
  return 0;
}

/* On the way out: the replies still queued (the OK to a SHUTDOWN) are sent,
 * waiting at most a second in all for clients that do not read. */
static void flush_all(void) {
  struct timespec t0;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (int i = 0; i < MAX_CLIENTS; i++) {
    struct client *c = &clients[i];
    if (c->fd < 0) continue;
    double left_ms = 1000 - ms_since(&t0);
    if (left_ms < 1) left_ms = 1;
    struct timeval tv = {.tv_sec = 0, .tv_usec = (suseconds_t)(left_ms * 1000)};
    if (left_ms >= 1000) tv = (struct timeval){.tv_sec = 1};
    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) & ~O_NONBLOCK);
    while (c->out_off < c->out_len) {
      ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
      if (w <= 0) break;
      c->out_off += (size_t)w;
    }
    drop(c);
  }
}

int main(int argc, char **argv) {
  if (argc != 2 || argv[1][0] == '-') {
    fprintf(stderr,
            "usage: SHMHEAP_KEY=name %s SOCKET_PATH\n"
            "Serves SET/GET/DEL/COUNT/STATS/QUIT/SHUTDOWN on a UNIX socket, with every key\n"
            "in the keyed libshmheap heap SHMHEAP_KEY: a restart finds them all, even after\n"
            "kill -9.  Client: kvcli SOCKET_PATH.\n",
            argv[0]);
    return 2;
  }
  /* Without a key the heap is private and goes away with the process: the
   * store would not survive anything, which is the point of this program. */
  const char *key = getenv("SHMHEAP_KEY");
  struct shmheap_info hi;
  if (key == NULL || key[0] == '\0') {
    fprintf(stderr,
            "kvstore: SHMHEAP_KEY is not set: without a key the heap is private and dies with\n"
            "the process.  Run it as: SHMHEAP_KEY=kvstore %s %s\n",
            argv[0], argv[1]);
    return 2;
  }
  if (shmheap_get_info(&hi) != 0 || hi.key == 0) {
    /* The library put us on a private heap although a key is set: the heap
     * belongs to another program, or an ancestor of ours is using it. */
    fprintf(stderr,
            "kvstore: SHMHEAP_KEY=%s is set but this process got a private heap: the keyed heap\n"
            "is another program's (SHMHEAP_PROGRAM) or a parent of this process is using it\n",
            key);
    return 2;
  }
  shmheap_recovered(&rec);

  struct sigaction sa = {.sa_handler = on_signal};
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, NULL); /* no SA_RESTART: poll returns EINTR */
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGHUP, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);

  if (open_store() != 0) return 1;
  int lfd = listen_on(argv[1]);
  if (lfd < 0) return 1;
  fprintf(stderr, "kvstore: serving %s on %s (pid %ld)\n", hi.name[0] ? hi.name : key, argv[1],
          (long)getpid());
  int rc = serve(lfd);
  flush_all();
  close(lfd);
  unlink(argv[1]);
  /* Returning from main is exit(3): the library marks the heap as left
   * cleanly, and the next start says so. */
  fprintf(stderr, "kvstore: %s, exiting cleanly: %" PRIu64 " keys\n",
          stop_signal == SIGTERM ? "SIGTERM" : stop_signal == SIGINT ? "SIGINT"
          : stop_signal == SIGHUP ? "SIGHUP" : "SHUTDOWN",
          S->count);
  return rc == 0 ? 0 : 1;
}
