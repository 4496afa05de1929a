// The program of tests/gc.sh, run under LD_PRELOAD with a key: a rooted,
// pointer-rich structure that a collection at restart must leave whole, and
// garbage beside it that it must free.
//
//   gc_prog build [crash]   builds the structure under the root "gc" (and a
//                           second root, "gc.inner", pointing into a block),
//                           then garbage; prints "garbage_blocks=N
//                           garbage_bytes=B in_use=U"; with crash it ends by
//                           kill -9 of itself instead of exit
//   gc_prog verify          checks every block of the structure against its
//                           checksum and shmheap_check; prints "gc_blocks=N
//                           gc_bytes=B in_use=U origin=O"; exit 1 on any
//                           difference
//   gc_prog verify nocheck  the same without shmheap_check
//   gc_prog garbage N       verify, then leaves N more garbage blocks
//   gc_prog rootless N [crash]
//                           prints what the start collected ("gc_reset=R
//                           gc_blocks=N gc_bytes=B in_use=U origin=O
//                           problems=P roots=K", P from shmheap_check, K the
//                           roots "gc" and "gc.inner" that hold a pointer),
//                           then sets "gc" to null, removes "gc.inner" and
//                           leaves N garbage blocks: the next start finds no
//                           root holding a pointer; exit 1 if P > 0
//
// The structure holds every kind of reference the collection must follow:
// a list linked only through interior pointers, an array of pointers in a
// large block (to small and large blocks), a binary tree, blocks grown by
// realloc, C++ objects with vtables in a std::vector, a block reached only
// by a pointer one past its end, and one reached only from a root that
// points inside it.  Each block's bytes derive from its index, so a freed
// and reused block shows.
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <memory>
#include <unistd.h>
#include <vector>

#include "shmheap.h"

static int (*root_set)(const char *, const void *);
static void *(*root_get)(const char *);
static int (*get_info)(struct shmheap_info *);
static int (*check)(shmheap_report_fn, void *);
static int (*recovered)(struct shmheap_recovery *, size_t);
static int (*root_remove)(const char *);

static uint64_t pattern(uint64_t seed, size_t j) { return (seed * 0x9e3779b97f4a7c15ULL + j * 31) & 0xff; }
static void fill(void *p, size_t n, uint64_t seed) {
  for (size_t j = 0; j < n; j++) static_cast<unsigned char *>(p)[j] = (unsigned char)pattern(seed, j);
}
static int same(const void *p, size_t n, uint64_t seed) {
  for (size_t j = 0; j < n; j++)
    if (static_cast<const unsigned char *>(p)[j] != (unsigned char)pattern(seed, j)) return 0;
  return 1;
}

struct Node { // a list node: next points into the next node's data, at next_at
  char *next;
  size_t next_at;
  size_t len;
  uint64_t seed;
  unsigned char data[];
};

struct Tree {
  Tree *left, *right;
  uint64_t key;
  unsigned char pay[40];
};

struct Shape {
  virtual ~Shape() = default;
  virtual long area() const = 0;
};
struct Rect : Shape {
  long w, h;
  Rect(long w_, long h_) : w(w_), h(h_) {}
  long area() const override { return w * h; }
};
struct Square : Rect {
  explicit Square(long s) : Rect(s, s) {}
  long area() const override { return 2 * w * h; } // not Rect's: the vtable matters
};

enum { NLIST = 3000, NARRAY = 40000, NTREE = 6000, NGROW = 200, NSHAPE = 1000 };

struct State {
  char *list;    // interior pointer into the first node's data
  size_t list_at;
  void **array;  // large block: NARRAY pointers
  size_t *sizes; // large block: their sizes
  Tree *tree;
  uint64_t *vec; // grown by realloc to vec_n words
  size_t vec_n;
  char **grown;  // NGROW blocks grown by realloc in steps
  std::vector<std::unique_ptr<Shape>> *shapes;
  long area;
  char *past_end;  // one past the end of 40 bytes asked for (a 48-byte block)
  char *past_free; // one past the end of a 48-byte block whose neighbour is free
};

static Node *node_of(char *p, size_t at) { return reinterpret_cast<Node *>(p - at - offsetof(Node, data)); }

static Tree *tree_insert(Tree *t, uint64_t key) {
  if (!t) {
    t = static_cast<Tree *>(std::malloc(sizeof *t));
    t->left = t->right = nullptr;
    t->key = key;
    fill(t->pay, sizeof t->pay, key);
    return t;
  }
  if (key < t->key) t->left = tree_insert(t->left, key);
  else t->right = tree_insert(t->right, key);
  return t;
}
static long tree_check(const Tree *t, uint64_t *last, int *bad) {
  if (!t) return 0;
  long n = tree_check(t->left, last, bad);
  if (t->key < *last || !same(t->pay, sizeof t->pay, t->key)) *bad = 1;
  *last = t->key;
  return n + 1 + tree_check(t->right, last, bad);
}

static uint64_t rnd = 88172645463325252ULL;
static uint64_t next_rand() {
  rnd ^= rnd << 13;
  rnd ^= rnd >> 7;
  rnd ^= rnd << 17;
  return rnd;
}

static size_t in_use() {
  struct shmheap_info i;
  return get_info(&i) == 0 ? i.in_use : 0;
}

static State *build() {
  auto *st = static_cast<State *>(std::calloc(1, sizeof(State)));
  // The list, built back to front: each node is reached only through a
  // pointer into the middle of its data.
  char *next = nullptr;
  size_t next_at = 0;
  for (int i = NLIST - 1; i >= 0; i--) {
    size_t len = 8 + next_rand() % 3000;
    Node *n = static_cast<Node *>(std::malloc(sizeof(Node) + len));
    n->next = next;
    n->next_at = next_at;
    n->len = len;
    n->seed = (uint64_t)i + 1;
    fill(n->data, len, n->seed);
    next_at = 1 + next_rand() % (len - 1);
    next = reinterpret_cast<char *>(n->data) + next_at;
  }
  st->list = next;
  st->list_at = next_at;
  // The array of pointers: small blocks of every class, every 97th large.
  st->array = static_cast<void **>(std::malloc(NARRAY * sizeof(void *)));
  st->sizes = static_cast<size_t *>(std::malloc(NARRAY * sizeof(size_t)));
  for (size_t i = 0; i < NARRAY; i++) {
    size_t n = i % 97 == 0 ? 40000 + next_rand() % 200000 : 1 + next_rand() % (i % 7 ? 256 : 32768);
    st->sizes[i] = n;
    st->array[i] = std::malloc(n);
    fill(st->array[i], n, i * 7 + 3);
  }
  Tree *t = nullptr;
  for (int i = 0; i < NTREE; i++) t = tree_insert(t, next_rand() % 1000000);
  st->tree = t;
  // realloc: one vector doubling to 4 MiB (small, then large, moved or
  // grown in place), and many blocks grown a little at a time.
  for (size_t n = 2; n <= (4u << 20) / 8; n *= 2) {
    st->vec = static_cast<uint64_t *>(std::realloc(st->vec, n * sizeof *st->vec));
    for (size_t k = n / 2; k < n; k++) st->vec[k] = k * k + 1;
    if (n == 2) st->vec[0] = 1, st->vec[1] = 2;
    st->vec_n = n;
  }
  st->grown = static_cast<char **>(std::malloc(NGROW * sizeof(char *)));
  for (int i = 0; i < NGROW; i++) {
    char *p = nullptr;
    for (size_t n = 16; n <= 16u + 200u * (size_t)(i % 40); n += 200) {
      p = static_cast<char *>(std::realloc(p, n));
      fill(p, n, (uint64_t)i * 13 + 5);
    }
    st->grown[i] = p;
  }
  st->shapes = new std::vector<std::unique_ptr<Shape>>;
  for (long i = 1; i <= NSHAPE; i++) {
    if (i % 3) st->shapes->emplace_back(new Rect(i, i + 1));
    else st->shapes->emplace_back(new Square(i));
    st->area += st->shapes->back()->area();
  }
  char *b = static_cast<char *>(std::malloc(40));
  fill(b, 40, 4242);
  st->past_end = b + 40;
  // A block only the second root reaches, through its middle.
  char *inner = static_cast<char *>(std::malloc(5000));
  fill(inner, 5000, 777);
  if (root_set("gc", st) || root_set("gc.inner", inner + 2500)) {
    std::fprintf(stderr, "gc_prog: shmheap_root_set failed\n");
    std::exit(2);
  }
  return st;
}

// A block known only by a pointer one past its end, which is the first
// byte of the next block: reached while that block is free (shmheap(7)).
// Made last, so that nothing takes the free block before the restart.
static void past_free(State *st) {
  char *keep[64];
  for (int i = 0; i < 64; i++) {
    char *a = static_cast<char *>(std::malloc(48)), *b = static_cast<char *>(std::malloc(48));
    uintptr_t end = reinterpret_cast<uintptr_t>(a) + 48;
    if (reinterpret_cast<uintptr_t>(b) == end) {
      fill(a, 48, 4343);
      std::free(b);
      st->past_free = reinterpret_cast<char *>(end);
      break;
    }
    keep[i] = b; // a is garbage
  }
  (void)keep;
}

// Garbage: blocks nothing outside them points to, in cycles of 8 (a cycle
// keeps nothing alive), each block pointing to the next one's first byte, and blocks reached only from a freed block.  The
// cycles are short because the reach is conservative: a pointer to the
// first byte of a block in use is also one past the end of the block before
// it, which is kept, and with it everything it reaches.
static void garbage(long count, long *blocks, size_t *bytes) {
  void **first = nullptr, **prev = nullptr;
  for (long i = 0; i < count; i++) {
    size_t n = i % 50 == 0 ? 50000 + next_rand() % 100000 : 16 + next_rand() % 2000;
    void **p = static_cast<void **>(std::malloc(n));
    std::memset(p, 0, n);
    if (i % 8 == 0) {
      if (first) first[0] = prev;
      first = p;
    } else {
      p[0] = prev;
    }
    prev = p;
    *blocks += 1;
    *bytes += n;
  }
  if (first) first[0] = prev;
  void **holder = static_cast<void **>(std::malloc(64));
  holder[0] = prev;
  std::free(holder); // the only pointer to the last cycle, in a freed block
}

static int verify(bool with_check) {
  auto *st = static_cast<State *>(root_get("gc"));
  if (!st) {
    std::fprintf(stderr, "gc_prog: no root gc\n");
    return 1;
  }
  int bad = 0;
  long n = 0;
  // The list, with each node's recorded offset.
  char *p = st->list;
  size_t at = st->list_at;
  for (n = 0; p; n++) {
    Node *nd = node_of(p, at);
    if (nd->seed != (uint64_t)n + 1 || !same(nd->data, nd->len, nd->seed)) {
      std::fprintf(stderr, "gc_prog: list node %ld is not what was written\n", n);
      return 1;
    }
    p = nd->next;
    at = nd->next_at;
  }
  if (n != NLIST) bad = std::fprintf(stderr, "gc_prog: the list has %ld nodes, not %d\n", n, NLIST);
  for (size_t i = 0; i < NARRAY; i++)
    if (!same(st->array[i], st->sizes[i], i * 7 + 3)) {
      bad = std::fprintf(stderr, "gc_prog: array block %zu (%zu bytes) is not what was written\n", i, st->sizes[i]);
      break;
    }
  uint64_t last = 0;
  long nt = tree_check(st->tree, &last, &bad);
  if (nt != NTREE || bad) bad = std::fprintf(stderr, "gc_prog: the tree has %ld nodes (%d), or one differs\n", nt, NTREE);
  if (st->vec[0] != 1 || st->vec[1] != 2) bad = 1;
  for (size_t k = 2; k < st->vec_n; k++)
    if (st->vec[k] != k * k + 1) {
      bad = std::fprintf(stderr, "gc_prog: the realloc'd vector differs at %zu\n", k);
      break;
    }
  for (int i = 0; i < NGROW; i++) {
    size_t len = 16;
    while (len + 200 <= 16u + 200u * (size_t)(i % 40)) len += 200;
    if (!same(st->grown[i], len, (uint64_t)i * 13 + 5)) {
      bad = std::fprintf(stderr, "gc_prog: realloc'd block %d differs\n", i);
      break;
    }
  }
  long area = 0;
  for (auto &s : *st->shapes) area += s->area();
  if (st->shapes->size() != NSHAPE || area != st->area)
    bad = std::fprintf(stderr, "gc_prog: %zu shapes of area %ld, not %d of %ld\n", st->shapes->size(), area, NSHAPE,
                       st->area);
  if (!same(st->past_end - 40, 40, 4242)) bad = std::fprintf(stderr, "gc_prog: the block one past whose end was kept differs\n");
  if (st->past_free && !same(st->past_free - 48, 48, 4343))
    bad = std::fprintf(stderr, "gc_prog: the block one past whose end was kept, before a free block, differs\n");
  st->past_free = nullptr; // this process may allocate the free block now
  char *inner = static_cast<char *>(root_get("gc.inner"));
  if (!inner || !same(inner - 2500, 5000, 777)) bad = std::fprintf(stderr, "gc_prog: the block of root gc.inner differs\n");
  // What the collection freed is free: new blocks must not land on the
  // structure (its checksums above would differ the next time).
  if (with_check) {
    int problems = check([](void *, const char *what) { std::fprintf(stderr, "gc_prog: shmheap_check: %s\n", what); }, nullptr);
    if (problems) bad = std::fprintf(stderr, "gc_prog: shmheap_check found %d problem(s)\n", problems);
  }
  return bad ? 1 : 0;
}

int main(int argc, char **argv) {
  root_set = reinterpret_cast<int (*)(const char *, const void *)>(dlsym(RTLD_DEFAULT, "shmheap_root_set"));
  root_get = reinterpret_cast<void *(*)(const char *)>(dlsym(RTLD_DEFAULT, "shmheap_root_get"));
  get_info = reinterpret_cast<int (*)(struct shmheap_info *)>(dlsym(RTLD_DEFAULT, "shmheap_get_info"));
  check = reinterpret_cast<int (*)(shmheap_report_fn, void *)>(dlsym(RTLD_DEFAULT, "shmheap_check"));
  recovered = reinterpret_cast<int (*)(struct shmheap_recovery *, size_t)>(dlsym(RTLD_DEFAULT, "shmheap_recovered_size"));
  root_remove = reinterpret_cast<int (*)(const char *)>(dlsym(RTLD_DEFAULT, "shmheap_root_remove"));
  if (!root_set || !root_get || !get_info || !check || !recovered || !root_remove || argc < 2) {
    std::fprintf(stderr, "gc_prog: run with LD_PRELOAD=libshmheap.so: gc_prog build [crash] | verify | garbage N | rootless N [crash]\n");
    return 2;
  }
  rnd ^= (uint64_t)getpid() << 20;
  long blocks = 0;
  size_t bytes = 0;
  if (!std::strcmp(argv[1], "build")) {
    State *st = build();
    garbage(20000, &blocks, &bytes);
    past_free(st);
    std::printf("garbage_blocks=%ld garbage_bytes=%zu in_use=%zu\n", blocks, bytes, in_use());
    std::fflush(stdout);
    if (argc > 2 && !std::strcmp(argv[2], "crash")) raise(SIGKILL);
    return 0;
  }
  struct shmheap_recovery rec;
  if (!std::strcmp(argv[1], "rootless") && argc > 2) {
    int origin = recovered(&rec, sizeof rec);
    size_t before = in_use();
    int problems = check([](void *, const char *what) { std::fprintf(stderr, "gc_prog: shmheap_check: %s\n", what); }, nullptr);
    int roots = (root_get("gc") != nullptr) + (root_get("gc.inner") != nullptr);
    std::printf("gc_reset=%llu gc_blocks=%llu gc_bytes=%llu gc_us=%llu in_use=%zu origin=%d problems=%d roots=%d\n",
                (unsigned long long)rec.gc_reset, (unsigned long long)rec.gc_blocks,
                (unsigned long long)rec.gc_bytes, (unsigned long long)(rec.gc_ns / 1000), before, origin, problems,
                roots);
    std::fflush(stdout);
    if (root_get("gc")) root_set("gc", nullptr);
    root_remove("gc.inner");
    garbage(std::atol(argv[2]), &blocks, &bytes);
    std::printf("garbage_blocks=%ld garbage_bytes=%zu\n", blocks, bytes);
    std::fflush(stdout);
    if (argc > 3 && !std::strcmp(argv[3], "crash")) raise(SIGKILL);
    return problems ? 1 : 0;
  }
  if (std::strcmp(argv[1], "verify") && std::strcmp(argv[1], "garbage")) return 2;
  int origin = recovered(&rec, sizeof rec);
  size_t before = in_use();
  // nocheck: spans the test corrupted stay quarantined, and shmheap_check
  // reports them, as it must.
  int r = verify(argc < 3 || std::strcmp(argv[2], "nocheck"));
  if (!std::strcmp(argv[1], "garbage") && argc > 2) garbage(std::atol(argv[2]), &blocks, &bytes);
  std::printf("origin=%d gc_blocks=%llu gc_bytes=%llu gc_us=%llu in_use=%zu garbage_blocks=%ld garbage_bytes=%zu\n",
              origin, (unsigned long long)rec.gc_blocks, (unsigned long long)rec.gc_bytes,
              (unsigned long long)(rec.gc_ns / 1000), before, blocks, bytes);
  return r;
}
