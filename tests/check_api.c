/* check_api: the malloc family of libshmheap, one test per documented rule.
 * The binary is linked with -lshmheap, so every allocation of the test itself
 * (and of libc on its behalf) comes from the shm heap; Check forks each test,
 * so each one runs in a copy-mode child. */
#include <check.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shmheap.h"
#include "testutil.h"

/* glibc-internal names the library must export too */
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void *__libc_valloc(size_t);
extern void *__libc_pvalloc(size_t);
extern void __libc_free(void *);

/* sizes the compiler cannot see through */
static volatile size_t v_huge = SIZE_MAX;
static volatile size_t v_half = SIZE_MAX / 2 + 1;
static volatile size_t v_2_33 = (size_t)1 << 33;

/* hides from the compiler that a pointer is not from malloc */
static void *launder(void *p) {
  void *volatile q = p;
  return q;
}

#define PAGE ((uintptr_t)sysconf(_SC_PAGESIZE))
#define ALIGNED(p, a) ((((uintptr_t)(p)) & ((uintptr_t)(a)-1)) == 0)

/* Index of the first byte of p[0..n) that is not v, or -1.  (Check's
 * assertions cost a system call each: never assert per byte.) */
static long first_not(const void *p, size_t n, int v) {
  const unsigned char *c = p;
  for (size_t i = 0; i < n; i++)
    if (c[i] != (unsigned char)v) return (long)i;
  return -1;
}

/* Index of the first byte of p[0..n) that is not (unsigned char)(i * 7), or -1. */
static long first_not_pattern(const unsigned char *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i] != (unsigned char)(i * 7)) return (long)i;
  return -1;
}

static struct shmheap_info info(void) {
  struct shmheap_info in;
  memset(&in, 0, sizeof in);
  ck_assert_int_eq(shmheap_get_info(&in), 0);
  return in;
}

static size_t in_use(void) { return mallinfo2().uordblks; }

/* "dev inode pathname" of the mapping that holds p ("" if none) */
static void map_ident(const void *p, char *out, size_t len) {
  char line[1024];
  out[0] = 0;
  if (!tu_maps_line(p, line, sizeof line)) return;
  /* fields: range perms offset dev inode pathname */
  char *s = line;
  for (int f = 0; f < 3 && s; f++) {
    s = strchr(s, ' ');
    if (s)
      while (*s == ' ') s++;
  }
  if (s) snprintf(out, len, "%s", s);
}

static void assert_in_segment(const void *p, const char *what) {
  static char base_id[1024];
  struct shmheap_info in = info();
  if (!base_id[0]) map_ident(in.base, base_id, sizeof base_id);
  ck_assert_msg(p != NULL, "%s returned NULL", what);
  ck_assert_msg(shmheap_contains(p), "%s: %p not in the heap", what, p);
  ck_assert_msg((const char *)p >= (const char *)in.base &&
                    (const char *)p < (const char *)in.base + in.size,
                "%s: %p outside [base, base+size)", what, p);
  char id[1024];
  map_ident(p, id, sizeof id);
  ck_assert_msg(strcmp(id, base_id) == 0, "%s: %p is in mapping '%s', the heap is '%s'", what, p,
                id, base_id);
}

/* ---- where the blocks are ------------------------------------------------- */

START_TEST(t_maps_sysv) {
  struct shmheap_info in = info();
  char line[1024];
  ck_assert_msg(tu_maps_line(in.base, line, sizeof line), "base %p is not mapped", in.base);
  ck_assert_msg(strstr(line, "SYSV") != NULL, "the heap mapping is not SysV shm: %s", line);
  ck_assert_msg(strstr(line, "rw-s") != NULL, "the heap mapping is not rw shared: %s", line);
}
END_TEST

START_TEST(t_all_in_segment) {
  void *p;
  assert_in_segment(p = malloc(16), "malloc(16)");
  free(p);
  assert_in_segment(p = malloc(100000), "malloc(100000)");
  free(p);
  assert_in_segment(p = malloc(8 << 20), "malloc(8M)");
  free(p);
  assert_in_segment(p = calloc(10, 10), "calloc");
  free(p);
  p = malloc(10);
  assert_in_segment(p = realloc(p, 5000), "realloc");
  assert_in_segment(p = realloc(p, 500000), "realloc large");
  free(p);
  assert_in_segment(p = reallocarray(NULL, 10, 10), "reallocarray");
  free(p);
  assert_in_segment(p = memalign(64, 100), "memalign");
  free(p);
  ck_assert_int_eq(posix_memalign(&p, 256, 1000), 0);
  assert_in_segment(p, "posix_memalign");
  free(p);
  assert_in_segment(p = aligned_alloc(256, 512), "aligned_alloc");
  free(p);
  assert_in_segment(p = valloc(100), "valloc");
  free(p);
  assert_in_segment(p = pvalloc(100), "pvalloc");
  free(p);
  assert_in_segment(p = __libc_malloc(40), "__libc_malloc");
  assert_in_segment(p = __libc_realloc(p, 4000), "__libc_realloc");
  __libc_free(p);
  assert_in_segment(p = __libc_calloc(4, 40), "__libc_calloc");
  __libc_free(p);
  assert_in_segment(p = __libc_memalign(128, 40), "__libc_memalign");
  __libc_free(p);
  assert_in_segment(p = __libc_valloc(40), "__libc_valloc");
  __libc_free(p);
  assert_in_segment(p = __libc_pvalloc(40), "__libc_pvalloc");
  __libc_free(p);

  /* blocks libc allocates on the program's behalf */
  char *s = strdup("a string that strdup copies");
  assert_in_segment(s, "strdup");
  free(s);
  s = strndup("0123456789", 5);
  assert_in_segment(s, "strndup");
  ck_assert_str_eq(s, "01234");
  free(s);
  ck_assert_int_gt(asprintf(&s, "%d-%s", 42, "asprintf"), 0);
  assert_in_segment(s, "asprintf");
  ck_assert_str_eq(s, "42-asprintf");
  free(s);

  char text[] = "first line\nsecond line\n";
  FILE *mf = fmemopen(text, strlen(text), "r");
  ck_assert_ptr_nonnull(mf);
  assert_in_segment(mf, "fmemopen FILE");
  char *line = NULL;
  size_t cap = 0;
  ck_assert_int_eq(getline(&line, &cap, mf), 11);
  assert_in_segment(line, "getline");
  ck_assert_str_eq(line, "first line\n");
  free(line);
  fclose(mf);

  char *buf = NULL;
  size_t blen = 0;
  FILE *ms = open_memstream(&buf, &blen);
  ck_assert_ptr_nonnull(ms);
  for (int i = 0; i < 10000; i++) fprintf(ms, "%d,", i);
  fclose(ms);
  assert_in_segment(buf, "open_memstream buffer");
  ck_assert_uint_gt(blen, 40000);
  free(buf);

  FILE *f = fopen("/proc/self/maps", "r");
  ck_assert_ptr_nonnull(f);
  assert_in_segment(f, "fopen FILE");
  ck_assert_int_ne(fgetc(f), EOF);
  assert_in_segment(f->_IO_buf_base, "stdio buffer");
  fclose(f);
}
END_TEST

/* ---- alignment and sizes ---------------------------------------------------- */

START_TEST(t_align16) {
  void *z1 = malloc(0), *z2 = malloc(0);
  ck_assert_ptr_nonnull(z1);
  ck_assert_ptr_nonnull(z2);
  ck_assert_ptr_ne(z1, z2);
  ck_assert_msg(ALIGNED(z1, 16) && ALIGNED(z2, 16), "malloc(0) not 16-aligned");
  free(z1);
  free(z2);
  void *keep[600];
  for (size_t n = 1; n <= 600; n++) {
    keep[n - 1] = malloc(n);
    if (!keep[n - 1] || !ALIGNED(keep[n - 1], 16))
      ck_abort_msg("malloc(%zu) = %p", n, keep[n - 1]);
  }
  for (int i = 0; i < 600; i++) free(keep[i]);
  for (size_t n = 600; n < (4u << 20); n = n * 5 / 4 + 1) {
    void *p = malloc(n);
    ck_assert_msg(p && ALIGNED(p, 16), "malloc(%zu) = %p", n, p);
    free(p);
  }
}
END_TEST

START_TEST(t_usable_size) {
  static const size_t sizes[] = {0,    1,     7,     8,      15,     16,      17,     24,
                                 100,  1000,  1024,  1025,   4095,   4096,    4097,   30000,
                                 32768, 32769, 65536, 100000, 1 << 20, 3000001, 8 << 20};
  enum { N = sizeof sizes / sizeof sizes[0] };
  unsigned char *p[N];
  size_t u[N];
  for (int i = 0; i < N; i++) {
    p[i] = malloc(sizes[i]);
    ck_assert_ptr_nonnull(p[i]);
    u[i] = malloc_usable_size(p[i]);
    ck_assert_msg(u[i] >= sizes[i], "usable %zu < requested %zu", u[i], sizes[i]);
    memset(p[i], i + 1, u[i]);
  }
  for (int i = 0; i < N; i++) {
    long bad = first_not(p[i], u[i], i + 1);
    ck_assert_msg(bad < 0, "block %d (%zu bytes) byte %ld overwritten", i, sizes[i], bad);
  }
  for (int i = 0; i < N; i++) free(p[i]);
  ck_assert_uint_eq(malloc_usable_size(NULL), 0);
}
END_TEST

/* malloc_usable_size answers only for the start of a block (it is 0 for
 * any other pointer, as for a pointer that is not ours): every interior
 * byte of blocks of every small class is asked about, which checks the
 * free path's exact block test (small_index_fast) at every offset. */
START_TEST(t_usable_size_interior) {
  enum { K = 8 };
  size_t last = 0;
  for (size_t n = 1; n <= 32768; n++) {
    unsigned char *p[K];
    p[0] = malloc(n);
    ck_assert_ptr_nonnull(p[0]);
    size_t size = malloc_usable_size(p[0]);
    if (size == last) {
      free(p[0]);
      continue; /* one size of each class */
    }
    last = size;
    for (int k = 1; k < K; k++) ck_assert_ptr_nonnull(p[k] = malloc(n));
    for (int k = 0; k < K; k++) {
      ck_assert_uint_eq(malloc_usable_size(p[k]), size);
      for (size_t d = 1; d < size; d++)
        ck_assert_msg(malloc_usable_size(p[k] + d) == 0, "class %zu: byte %zu of a block is taken for a block",
                      size, d);
    }
    for (int k = 0; k < K; k++) free(p[k]);
  }
  ck_assert_uint_eq(last, 32768);
}
END_TEST

START_TEST(t_no_overlap) {
  enum { N = 20000 };
  unsigned char **p = calloc(N, sizeof *p);
  size_t *len = calloc(N, sizeof *len);
  unsigned seed = 12345;
  for (int round = 0; round < 3; round++) {
    for (int i = 0; i < N; i++) {
      if (p[i]) continue;
      unsigned r = rand_r(&seed);
      len[i] = (r % 100 == 0) ? 32768 + r % 100000 : (r % 10 == 0) ? r % 8000 : r % 300;
      p[i] = malloc(len[i]);
      ck_assert_msg(p[i] != NULL, "malloc(%zu) failed", len[i]);
      memset(p[i], (unsigned char)i, len[i]);
    }
    for (int i = 0; i < N; i++) {
      long bad = first_not(p[i], len[i], i);
      ck_assert_msg(bad < 0, "round %d: block %d (%zu bytes) byte %ld clobbered", round, i, len[i], bad);
    }
    for (int i = 0; i < N; i++)
      if (rand_r(&seed) % 2) {
        free(p[i]);
        p[i] = NULL;
      }
  }
  for (int i = 0; i < N; i++) free(p[i]);
  free(p);
  free(len);
}
END_TEST

/* ---- realloc ------------------------------------------------------------------ */

START_TEST(t_realloc_content) {
  size_t n = 1;
  unsigned char *p = malloc(n);
  p[0] = 0;
  for (; n < (16u << 20); n = n * 3 + 1) {
    size_t m = n * 3 + 1;
    unsigned char *q = realloc(p, m);
    ck_assert_ptr_nonnull(q);
    long bad = first_not_pattern(q, n);
    ck_assert_msg(bad < 0, "grow from %zu to %zu: byte %ld", n, m, bad);
    for (size_t i = n; i < m; i++) q[i] = (unsigned char)(i * 7);
    p = q;
  }
  for (; n > 1; n /= 3) {
    unsigned char *q = realloc(p, n);
    ck_assert_ptr_nonnull(q);
    ck_assert_uint_ge(malloc_usable_size(q), n);
    long bad = first_not_pattern(q, n);
    ck_assert_msg(bad < 0, "shrink to %zu: byte %ld", n, bad);
    p = q;
  }
  free(p);
}
END_TEST

START_TEST(t_realloc_null_is_malloc) {
  char *p = realloc(NULL, 100);
  ck_assert_ptr_nonnull(p);
  ck_assert(shmheap_contains(p));
  memset(p, 1, 100);
  free(p);
}
END_TEST

START_TEST(t_realloc_zero_frees) {
  size_t before = in_use();
  char *p = malloc(1000);
  ck_assert_uint_ge(in_use(), before + 1000);
  errno = 0;
  ck_assert_ptr_null(realloc(p, 0));
  ck_assert_uint_eq(in_use(), before);
  char *q = malloc(300000);
  ck_assert_ptr_null(realloc(q, 0));
  ck_assert_uint_eq(in_use(), before);
}
END_TEST

/* ---- calloc / reallocarray ------------------------------------------------------ */

START_TEST(t_calloc_zeroed) {
  static const size_t sizes[] = {16, 100, 1000, 5000, 32768, 100000, 1 << 20, 5 << 20};
  for (unsigned i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    /* dirty some blocks of that size first, so calloc has to clear reused memory */
    void *d[8];
    for (int k = 0; k < 8; k++) {
      d[k] = malloc(sizes[i]);
      memset(d[k], 0xff, sizes[i]);
    }
    for (int k = 0; k < 8; k++) free(d[k]);
    unsigned char *p = calloc(1, sizes[i]);
    ck_assert_ptr_nonnull(p);
    long bad = first_not(p, sizes[i], 0);
    ck_assert_msg(bad < 0, "calloc(%zu) byte %ld = %d", sizes[i], bad, bad < 0 ? 0 : p[bad]);
    free(p);
  }
}
END_TEST

START_TEST(t_calloc_large_lazy) {
  /* a fresh 1 GiB calloc must not touch its pages (glibc's does not either) */
  long before = tu_status_kb("RssShmem");
  char *p = calloc(1, (size_t)1 << 30);
  ck_assert_ptr_nonnull(p);
  long after = tu_status_kb("RssShmem");
  ck_assert_msg(after - before < 64 * 1024, "calloc(1 GiB) touched %ld kB", after - before);
  ck_assert_int_eq(p[0], 0);
  ck_assert_int_eq(p[(1u << 30) - 1], 0);
  free(p);
}
END_TEST

START_TEST(t_calloc_overflow) {
  errno = 0;
  ck_assert_ptr_null(calloc(v_half, 2));
  ck_assert_int_eq(errno, ENOMEM);
  errno = 0;
  ck_assert_ptr_null(calloc(v_2_33, v_2_33));
  ck_assert_int_eq(errno, ENOMEM);
  errno = 0;
  ck_assert_ptr_null(calloc(v_huge, v_huge));
  ck_assert_int_eq(errno, ENOMEM);
  void *p = calloc(0, 0);
  ck_assert_ptr_nonnull(p);
  free(p);
}
END_TEST

START_TEST(t_reallocarray) {
  int *a = reallocarray(NULL, 100, sizeof(int));
  ck_assert_ptr_nonnull(a);
  for (int i = 0; i < 100; i++) a[i] = i;
  a = reallocarray(a, 10000, sizeof(int));
  ck_assert_ptr_nonnull(a);
  for (int i = 0; i < 100; i++) ck_assert_int_eq(a[i], i);
  errno = 0;
  ck_assert_ptr_null(reallocarray(a, v_half, 4));
  ck_assert_int_eq(errno, ENOMEM);
  for (int i = 0; i < 100; i++) ck_assert_int_eq(a[i], i); /* left alone */
  free(a);
}
END_TEST

/* Alignment arguments the compiler must not see as constants: it would warn
 * about (or fold) the invalid ones the tests pass on purpose. */
static size_t opaque(size_t v) {
  volatile size_t x = v;
  return x;
}

START_TEST(t_enomem) {
  struct shmheap_info in = info();
  void *q = NULL;
  errno = 0;
  ck_assert_ptr_null(malloc(v_huge));
  ck_assert_int_eq(errno, ENOMEM);
  errno = 0;
  ck_assert_ptr_null(malloc(v_huge - 4096));
  ck_assert_int_eq(errno, ENOMEM);
  errno = 0;
  ck_assert_ptr_null(malloc(in.size + 1)); /* more than the whole segment */
  ck_assert_int_eq(errno, ENOMEM);
  char *p = malloc(100);
  strcpy(p, "still here");
  errno = 0;
  ck_assert_ptr_null(realloc(p, v_huge));
  ck_assert_int_eq(errno, ENOMEM);
  ck_assert_str_eq(p, "still here");
  errno = 0;
  ck_assert_ptr_null(realloc(p, in.size + 1));
  ck_assert_int_eq(errno, ENOMEM);
  ck_assert_str_eq(p, "still here");
  free(p);
  ck_assert_int_eq(posix_memalign(&q, 64, v_huge), ENOMEM);
  errno = 0;
  ck_assert_ptr_null(aligned_alloc(64, v_huge - 100));
  ck_assert_int_eq(errno, ENOMEM);
  errno = 0;
  ck_assert_ptr_null(memalign(4096, in.size + 1));
  ck_assert_int_eq(errno, ENOMEM);
  errno = 0;
  ck_assert_ptr_null(valloc(v_huge));
  ck_assert_int_eq(errno, ENOMEM);
  errno = 0;
  ck_assert_ptr_null(pvalloc(v_huge));
  ck_assert_int_eq(errno, ENOMEM);
  errno = 0;
  ck_assert_ptr_null(memalign(opaque((size_t)1 << 40), 16)); /* no such address in the segment */
  ck_assert_int_eq(errno, ENOMEM);
  /* and the heap still works */
  p = malloc(1000);
  ck_assert_ptr_nonnull(p);
  free(p);
}
END_TEST

/* ---- aligned allocators ----------------------------------------------------------- */

START_TEST(t_posix_memalign) {
  void *p = (void *)&p;
  static const size_t bad[] = {0, 1, 2, 4, 3, 12, 24, 48, 100, 4095, 3 * sizeof(void *)};
  for (unsigned i = 0; i < sizeof bad / sizeof bad[0]; i++)
    ck_assert_msg(posix_memalign(&p, bad[i], 16) == EINVAL, "alignment %zu not refused", bad[i]);
  static const size_t sizes[] = {1, 100, 5000, 100000};
  for (size_t a = sizeof(void *); a <= (4u << 20); a <<= 1)
    for (unsigned i = 0; i < 4; i++) {
      ck_assert_int_eq(posix_memalign(&p, a, sizes[i]), 0);
      ck_assert_msg(ALIGNED(p, a), "posix_memalign(%zu, %zu) = %p", a, sizes[i], p);
      ck_assert_uint_ge(malloc_usable_size(p), sizes[i]);
      memset(p, 0x5a, sizes[i]);
      free(p);
    }
}
END_TEST

START_TEST(t_aligned_alloc) {
  errno = 0;
  ck_assert_ptr_null(aligned_alloc(opaque(3), 16));
  ck_assert_int_eq(errno, EINVAL);
  errno = 0;
  ck_assert_ptr_null(aligned_alloc(opaque(48), 96));
  ck_assert_int_eq(errno, EINVAL);
  static const size_t al[] = {1, 2, 8, 16, 64, 4096, 1 << 16, 1 << 20};
  for (unsigned i = 0; i < sizeof al / sizeof al[0]; i++) {
    void *p = aligned_alloc(al[i], 3 * al[i] + 5);
    ck_assert_msg(p && ALIGNED(p, al[i] < 16 ? 16 : al[i]), "aligned_alloc(%zu) = %p", al[i], p);
    memset(p, 1, 3 * al[i] + 5);
    free(p);
  }
}
END_TEST

/* memalign through a pointer that carries no alloc_align attribute: glibc's
 * header promises the compiler a result aligned to the argument, which for 0,
 * 1 or 48 is not a power of two, so the compiler (and UBSan's alignment
 * check) would judge the call, not the library's answer to it. */
static void *(*volatile memalign_plain)(size_t, size_t) = memalign;

START_TEST(t_memalign_rounds_up) {
  void *(*memalign)(size_t, size_t) = memalign_plain;
  void *p = memalign(opaque(48), 10);
  ck_assert_msg(p && ALIGNED(p, 64), "memalign(48) = %p, not 64-aligned", p);
  free(p);
  p = memalign(opaque(3000), 10);
  ck_assert_msg(p && ALIGNED(p, 4096), "memalign(3000) = %p, not 4096-aligned", p);
  free(p);
  p = memalign(opaque(1), 10);
  ck_assert_msg(p && ALIGNED(p, 16), "memalign(1) = %p", p);
  free(p);
  p = memalign(opaque(0), 10);
  ck_assert_msg(p && ALIGNED(p, 16), "memalign(0) = %p", p);
  free(p);
  p = memalign(2 << 20, 3 << 20);
  ck_assert_msg(p && ALIGNED(p, 2 << 20), "memalign(2M) = %p", p);
  memset(p, 2, 3 << 20);
  free(p);
}
END_TEST

START_TEST(t_valloc_pvalloc) {
  void *p = valloc(1);
  ck_assert_msg(p && ALIGNED(p, PAGE), "valloc(1) = %p", p);
  free(p);
  p = valloc(10000);
  ck_assert_msg(p && ALIGNED(p, PAGE), "valloc(10000) = %p", p);
  memset(p, 3, 10000);
  free(p);
  p = pvalloc(1);
  ck_assert_msg(p && ALIGNED(p, PAGE), "pvalloc(1) = %p", p);
  ck_assert_uint_ge(malloc_usable_size(p), PAGE);
  memset(p, 4, PAGE);
  free(p);
  p = pvalloc(PAGE + 1);
  ck_assert_msg(p && ALIGNED(p, PAGE), "pvalloc(page+1) = %p", p);
  ck_assert_uint_ge(malloc_usable_size(p), 2 * PAGE);
  memset(p, 4, 2 * PAGE);
  free(p);
}
END_TEST

/* ---- free ----------------------------------------------------------------------- */

START_TEST(t_free_keeps_errno) {
  static const size_t sizes[] = {0, 10, 5000, 40000, 1 << 20};
  for (unsigned i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    void *p = malloc(sizes[i]);
    errno = 1234;
    free(p);
    ck_assert_msg(errno == 1234, "free of a %zu-byte block changed errno to %d", sizes[i], errno);
  }
  errno = 4321;
  free(NULL);
  ck_assert_int_eq(errno, 4321);
  int on_stack;
  errno = 77;
  free(launder(&on_stack));
  ck_assert_int_eq(errno, 77);
}
END_TEST

/* pointers the library did not hand out: outside the heap, ignored */
START_TEST(t_foreign_free_ignored) {
  struct shmheap_info in = info();
  char *small = malloc(64), *large = malloc(200000);
  memset(small, 's', 64);
  memset(large, 'L', 200000);
  size_t us = malloc_usable_size(small), ul = malloc_usable_size(large);
  size_t before = in_use();
  char stack[256];
  memset(stack, 'k', sizeof stack);
  char *m = mmap(NULL, 1 << 16, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ck_assert_ptr_ne(m, MAP_FAILED);
  memset(m, 'm', 1 << 16);

  free(launder(stack));
  free(launder(stack + 16));
  free(m);
  free(m + 4096);
  free((char *)in.base + 64);            /* the header */
  free((char *)in.base + in.size - 4096); /* past the heap pages */

  ck_assert_uint_eq(in_use(), before);
  ck_assert_uint_eq(malloc_usable_size(small), us);
  ck_assert_uint_eq(malloc_usable_size(large), ul);
  ck_assert_msg(first_not(small, 64, 's') < 0, "the small block was changed");
  ck_assert_msg(first_not(large, 200000, 'L') < 0, "the large block was changed");
  ck_assert_msg(first_not(m, 1 << 16, 'm') < 0, "the mmap'd range was changed");
  ck_assert_msg(first_not(stack, sizeof stack, 'k') < 0, "the stack array was changed");
  ck_assert_int_eq(munmap(m, 1 << 16), 0);

  /* the heap goes on: new blocks never overlap the live ones */
  void *p[2000];
  for (int i = 0; i < 2000; i++) {
    p[i] = malloc(i % 3 ? 64 : 200000 / 64);
    memset(p[i], 'n', i % 3 ? 64 : 200000 / 64);
  }
  ck_assert_msg(first_not(small, 64, 's') < 0, "the small block was overwritten");
  ck_assert_msg(first_not(large, 200000, 'L') < 0, "the large block was overwritten");
  for (int i = 0; i < 2000; i++) free(p[i]);
  free(small);
  free(large);
}
END_TEST

/* Runs fn(arg) in a child with stderr on a pipe; returns its wait status
 * and what it printed. */
static int in_child(void (*fn)(void *), void *arg, char *err, size_t len) {
  int fd[2];
  ck_assert_int_eq(pipe(fd), 0);
  fflush(NULL);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    close(fd[0]);
    dup2(fd[1], 2);
    fn(arg);
    _exit(0);
  }
  close(fd[1]);
  size_t n = 0;
  ssize_t r;
  while (n + 1 < len && (r = read(fd[0], err + n, len - 1 - n)) > 0) n += (size_t)r;
  err[n] = 0;
  close(fd[0]);
  int st;
  ck_assert_int_eq(tu_wait_timeout(pid, &st, 10000), 0);
  return st;
}

static void free_it(void *p) { free(p); }
static void realloc_it(void *p) { (void)!realloc(p, 10); }

/* Inside the heap, a pointer that is not a live block is the program's bug:
 * named, and the process stops before the heap is changed. */
START_TEST(t_bad_pointer_stops) {
  char *small = malloc(64), *large = malloc(200000);
  char *bad[] = {small + 8, small + 16, small + 32, large + 16, large + 4096, large + 100000};
  char err[512];
  for (unsigned i = 0; i < sizeof bad / sizeof *bad; i++) {
    for (int r = 0; r < 2; r++) {
      int st = in_child(r ? realloc_it : free_it, bad[i], err, sizeof err);
      ck_assert_msg(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT, "%s(%p): status 0x%x, said: %s",
                    r ? "realloc" : "free", (void *)bad[i], st, err);
      ck_assert_msg(strstr(err, r ? "libshmheap: realloc(): invalid pointer 0x" : "libshmheap: free(): invalid pointer 0x"),
                    "said: %s", err);
    }
  }
  free(small);
  free(large);
}
END_TEST

START_TEST(t_foreign_realloc_einval) {
  char stack[64] = "stack data";
  errno = 0;
  ck_assert_ptr_null(realloc(launder(stack), 100));
  ck_assert_int_eq(errno, EINVAL);
  ck_assert_str_eq(stack, "stack data");
  char *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  strcpy(m, "mmap data");
  errno = 0;
  ck_assert_ptr_null(realloc(m, 100000));
  ck_assert_int_eq(errno, EINVAL);
  ck_assert_str_eq(m, "mmap data");
  munmap(m, 4096);
}
END_TEST

START_TEST(t_foreign_usable_size_zero) {
  char stack[64];
  ck_assert_uint_eq(malloc_usable_size(launder(stack)), 0);
  char *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ck_assert_uint_eq(malloc_usable_size(m), 0);
  munmap(m, 4096);
  char *p = malloc(64), *l = malloc(100000);
  ck_assert_uint_eq(malloc_usable_size(p + 16), 0);
  ck_assert_uint_eq(malloc_usable_size(l + 4096), 0);
  struct shmheap_info in = info();
  ck_assert_uint_eq(malloc_usable_size((char *)in.base + 64), 0);
  free(p);
  free(l);
}
END_TEST

/* ---- glibc extensions ---------------------------------------------------------- */

START_TEST(t_mallopt_returns_1) {
  ck_assert_int_eq(mallopt(M_MMAP_THRESHOLD, 1 << 20), 1);
  ck_assert_int_eq(mallopt(M_TRIM_THRESHOLD, 1 << 20), 1);
  ck_assert_int_eq(mallopt(M_TOP_PAD, 0), 1);
  ck_assert_int_eq(mallopt(M_MMAP_MAX, 65536), 1);
  ck_assert_int_eq(mallopt(M_ARENA_MAX, 2), 1);
  ck_assert_int_eq(mallopt(M_ARENA_TEST, 8), 1);
  ck_assert_int_eq(mallopt(M_PERTURB, 0), 1);
  ck_assert_int_eq(mallopt(M_CHECK_ACTION, 3), 1);
  ck_assert_int_eq(mallopt(M_MXFAST, 64), 1);
  void *p = malloc(10);
  ck_assert_ptr_nonnull(p);
  free(p);
}
END_TEST

START_TEST(t_mallinfo2_in_use) {
  static const size_t sizes[] = {1, 100, 3000, 40000, 1 << 20, 10 << 20};
  tu_background_running(); /* the 10 MiB free would start it, and its start allocates */
  for (unsigned i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    size_t before = in_use();
    void *p = malloc(sizes[i]);
    size_t during = in_use();
    ck_assert_msg(during >= before + sizes[i], "malloc(%zu): uordblks %zu -> %zu", sizes[i], before,
                  during);
    free(p);
    ck_assert_msg(in_use() == before, "free of %zu: uordblks %zu, was %zu", sizes[i], in_use(), before);
  }
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
  struct mallinfo mi = mallinfo(); /* the old interface answers too */
#pragma GCC diagnostic pop
  ck_assert_int_ge(mi.uordblks, 0);
  struct shmheap_info in = info();
  ck_assert_uint_eq(in.in_use, in_use());
}
END_TEST

START_TEST(t_malloc_trim) {
  void *p[100];
  for (int i = 0; i < 100; i++) p[i] = malloc(100000);
  for (int i = 0; i < 100; i++) free(p[i]);
  int r = malloc_trim(0);
  ck_assert_msg(r == 0 || r == 1, "malloc_trim(0) = %d", r);
  r = malloc_trim(1 << 20);
  ck_assert_msg(r == 0 || r == 1, "malloc_trim(1M) = %d", r);
  void *q = malloc(100000);
  ck_assert_ptr_nonnull(q);
  memset(q, 1, 100000);
  free(q);
}
END_TEST

START_TEST(t_malloc_info_xml) {
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  ck_assert_int_eq(malloc_info(0, f), 0);
  fclose(f);
  ck_assert_msg(len > 0 && strstr(buf, "<malloc") != NULL && strstr(buf, "</malloc>") != NULL,
                "malloc_info output is not <malloc> XML: %s", buf ? buf : "(null)");
  free(buf);
  f = fopen("/dev/null", "w");
  errno = 0;
  ck_assert_int_eq(malloc_info(1, f), -1);
  ck_assert_int_eq(errno, EINVAL);
  fclose(f);
  /* malloc_stats prints to stderr: it must not crash */
  fflush(stderr);
  int save = dup(2);
  FILE *nul = fopen("/dev/null", "w");
  dup2(fileno(nul), 2);
  malloc_stats();
  fflush(stderr);
  dup2(save, 2);
  close(save);
  fclose(nul);
}
END_TEST

/* ---- libshmheap's own API -------------------------------------------------------- */

START_TEST(t_api_info) {
  struct shmheap_info in = info();
  errno = 0;
  ck_assert_int_eq(shmheap_get_info(NULL), -1);
  ck_assert_int_eq(errno, EINVAL);
  ck_assert_ptr_nonnull(in.base);
  ck_assert_msg(ALIGNED(in.base, 2 << 20), "base %p not 2 MiB aligned", in.base);
  if (!getenv("SHMHEAP_ADDR"))
    ck_assert_ptr_eq(in.base, (void *)0x200000000000ULL);
  if (!getenv("SHMHEAP_SIZE")) ck_assert_uint_eq(in.size, (size_t)64 << 30);
  if (!getenv("SHMHEAP_KEY")) {
    ck_assert_int_eq(in.key, 0);
    ck_assert_str_eq(in.name, "");
    ck_assert_int_eq(in.reattached, 0);
  }
  ck_assert_int_ge(in.shmid, 0);
  ck_assert_uint_le(in.in_use, in.heap_bytes);

  uint64_t nm = in.nmalloc, nf = in.nfree, lc = in.large_count;
  void *p[100];
  for (int i = 0; i < 100; i++) p[i] = malloc(48);
  void *big = malloc(1 << 20);
  in = info();
  ck_assert_uint_ge(in.nmalloc, nm + 100);
  ck_assert_uint_eq(in.large_count, lc + 1);
  for (int i = 0; i < 100; i++) free(p[i]);
  free(big);
  in = info();
  ck_assert_uint_ge(in.nfree, nf + 100);
  ck_assert_uint_eq(in.large_count, lc);
  ck_assert_uint_ge(in.max_small, 1024);
}
END_TEST

START_TEST(t_api_contains) {
  struct shmheap_info in = info();
  int local;
  ck_assert_int_eq(shmheap_contains(NULL), 0);
  ck_assert_int_eq(shmheap_contains(&local), 0);
  ck_assert_int_eq(shmheap_contains((void *)&shmheap_contains), 0);
  ck_assert_int_ne(shmheap_contains(in.base), 0);
  ck_assert_int_ne(shmheap_contains((char *)in.base + in.size - 1), 0);
  ck_assert_int_eq(shmheap_contains((char *)in.base + in.size), 0);
  ck_assert_int_eq(shmheap_contains((char *)in.base - 1), 0);
}
END_TEST

START_TEST(t_api_fork_mode) {
  ck_assert_int_eq(shmheap_get_fork_mode(), SHMHEAP_FORK_COPY);
  ck_assert_int_eq(shmheap_set_fork_mode(SHMHEAP_FORK_SHARE), SHMHEAP_FORK_COPY);
  ck_assert_int_eq(shmheap_get_fork_mode(), SHMHEAP_FORK_SHARE);
  ck_assert_int_eq(shmheap_set_fork_mode(SHMHEAP_FORK_COPY), SHMHEAP_FORK_SHARE);
  ck_assert_int_eq(shmheap_get_fork_mode(), SHMHEAP_FORK_COPY);
  errno = 0;
  ck_assert_int_eq(shmheap_set_fork_mode((enum shmheap_fork_mode)7), -1);
  ck_assert_int_eq(errno, EINVAL);
  ck_assert_int_eq(shmheap_get_fork_mode(), SHMHEAP_FORK_COPY);
  errno = 0;
  ck_assert_int_eq(shmheap_fork((enum shmheap_fork_mode)7), -1); /* no process made */
  ck_assert_int_eq(errno, EINVAL);
}
END_TEST

/* ---- programs' use ---------------------------------------------------------------- */

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

START_TEST(t_qsort_large) {
  enum { N = 2 * 1000 * 1000 }; /* 16 MB: glibc's qsort mallocs a buffer of that size */
  uint64_t *a = malloc(N * sizeof *a);
  ck_assert_ptr_nonnull(a);
  uint64_t x = 88172645463325252ULL, sum = 0, sum2 = 0;
  for (int i = 0; i < N; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    a[i] = x;
    sum += x;
  }
  qsort(a, N, sizeof *a, cmp_u64);
  long unsorted = -1;
  for (int i = 0; i < N; i++) {
    if (i && a[i - 1] > a[i] && unsorted < 0) unsorted = i;
    sum2 += a[i];
  }
  ck_assert_msg(unsorted < 0, "not sorted at %ld", unsorted);
  ck_assert_uint_eq(sum, sum2);
  free(a);
}
END_TEST

/* ---- threads ------------------------------------------------------------------------ */

struct blk {
  size_t n;   /* bytes in the block */
  uint32_t tag;
};

static void fill(unsigned char *p, size_t n, uint32_t tag) {
  if (n < sizeof(struct blk)) {
    memset(p, (unsigned char)tag, n);
    return;
  }
  struct blk *b = (struct blk *)p;
  b->n = n;
  b->tag = tag;
  for (size_t i = sizeof *b; i < n; i++) p[i] = (unsigned char)(tag + i);
}

static int verify(const unsigned char *p, size_t n, uint32_t tag) {
  if (n < sizeof(struct blk)) {
    for (size_t i = 0; i < n; i++)
      if (p[i] != (unsigned char)tag) return 0;
    return 1;
  }
  const struct blk *b = (const struct blk *)p;
  if (b->n != n || b->tag != tag) return 0;
  for (size_t i = sizeof *b; i < n; i++)
    if (p[i] != (unsigned char)(tag + i)) return 0;
  return 1;
}

/* a block handed between threads: the receiver verifies and frees it */
struct hand {
  unsigned char *p;
  size_t n;
  uint32_t tag;
};

#define NHAND 64
static _Atomic(struct hand *) handoff[NHAND];
static atomic_int thread_errors;

static size_t rnd_size(unsigned *seed) {
  unsigned r = rand_r(seed);
  if (r % 200 == 0) return 32769 + r % 300000;
  if (r % 20 == 0) return r % 16384;
  return r % 512;
}

static void *hammer(void *arg) {
  unsigned seed = (unsigned)(uintptr_t)arg * 7919u + 1;
  enum { SLOTS = 256 };
  struct hand own[SLOTS];
  memset(own, 0, sizeof own);
  for (int it = 0; it < 60000; it++) {
    unsigned r = rand_r(&seed);
    struct hand *h = &own[r % SLOTS];
    switch ((r >> 8) % 4) {
    case 0: /* free */
    case 1:
      if (h->p) {
        if (!verify(h->p, h->n, h->tag)) atomic_fetch_add(&thread_errors, 1);
        free(h->p);
        h->p = NULL;
      } else {
        h->n = rnd_size(&seed);
        h->tag = rand_r(&seed);
        h->p = malloc(h->n);
        if (!h->p) atomic_fetch_add(&thread_errors, 1);
        else fill(h->p, h->n, h->tag);
      }
      break;
    case 2: /* realloc */
      if (h->p) {
        if (!verify(h->p, h->n, h->tag)) atomic_fetch_add(&thread_errors, 1);
        size_t n = rnd_size(&seed) + 1;
        unsigned char *q = realloc(h->p, n);
        if (!q) {
          atomic_fetch_add(&thread_errors, 1);
          break;
        }
        size_t keep = n < h->n ? n : h->n;
        /* the kept prefix must be intact; rewrite the whole block */
        if (keep >= sizeof(struct blk)) {
          struct blk *b = (struct blk *)q;
          if (b->tag != h->tag) atomic_fetch_add(&thread_errors, 1);
          for (size_t i = sizeof *b; i < keep; i++)
            if (q[i] != (unsigned char)(h->tag + i)) {
              atomic_fetch_add(&thread_errors, 1);
              break;
            }
        }
        h->p = q;
        h->n = n;
        fill(q, n, h->tag);
      }
      break;
    case 3: /* hand a block to another thread, take what is there */
      if (h->p) {
        struct hand *give = malloc(sizeof *give);
        *give = *h;
        h->p = NULL;
        struct hand *got = atomic_exchange(&handoff[rand_r(&seed) % NHAND], give);
        if (got) {
          if (!verify(got->p, got->n, got->tag)) atomic_fetch_add(&thread_errors, 1);
          free(got->p); /* usually allocated by another thread */
          free(got);
        }
      }
      break;
    }
  }
  for (int i = 0; i < SLOTS; i++)
    if (own[i].p) {
      if (!verify(own[i].p, own[i].n, own[i].tag)) atomic_fetch_add(&thread_errors, 1);
      free(own[i].p);
    }
  return NULL;
}

START_TEST(t_threads_cross_free) {
  size_t before = in_use();
  pthread_t t[4];
  for (int i = 0; i < 4; i++) ck_assert_int_eq(pthread_create(&t[i], NULL, hammer, (void *)(uintptr_t)i), 0);
  for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
  for (int i = 0; i < NHAND; i++) {
    struct hand *h = atomic_exchange(&handoff[i], NULL);
    if (h) {
      ck_assert_msg(verify(h->p, h->n, h->tag), "handed block %d corrupted", i);
      free(h->p);
      free(h);
    }
  }
  ck_assert_int_eq(atomic_load(&thread_errors), 0);
  size_t after = in_use();
  /* thread stacks' TLS (DTV) is malloc'd by glibc and cached: allow a little */
  ck_assert_msg(after <= before + 65536, "uordblks %zu -> %zu after the threads freed everything",
                before, after);
}
END_TEST

#define CYCLE_BLOCKS 40
struct cycle_arg {
  void *give[CYCLE_BLOCKS];
};

static void *cycle_thread(void *arg) {
  struct cycle_arg *c = arg;
  void *mine[CYCLE_BLOCKS];
  for (int i = 0; i < CYCLE_BLOCKS; i++) {
    mine[i] = malloc(16 + i * 50);
    memset(mine[i], i, 16 + i * 50);
    c->give[i] = malloc(i == 0 ? 100000 : 32 + i * 30);
    memset(c->give[i], i, i == 0 ? 100000 : 32 + i * 30);
  }
  for (int i = 0; i < CYCLE_BLOCKS; i++) free(mine[i]);
  return NULL;
}

static void cycles(int n) {
  struct cycle_arg c;
  for (int k = 0; k < n; k++) {
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, cycle_thread, &c), 0);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    for (int i = 0; i < CYCLE_BLOCKS; i++) free(c.give[i]); /* blocks of a dead thread */
  }
}

START_TEST(t_threads_mallinfo_no_drift) {
  cycles(10); /* warm up: glibc caches thread stacks and their TLS */
  size_t before = in_use();
  struct shmheap_info i0 = info();
  cycles(200);
  size_t after = in_use();
  struct shmheap_info i1 = info();
  ck_assert_msg(after <= before + 16384 && after + 16384 >= before,
                "uordblks drifted over 200 thread cycles: %zu -> %zu", before, after);
  ck_assert_msg(i1.heap_bytes <= i0.heap_bytes + (64u << 20),
                "heap area grew from %zu to %zu bytes over 200 thread cycles", i0.heap_bytes,
                i1.heap_bytes);
}
END_TEST

START_TEST(t_threads_more_than_heap_slots) {
  /* more threads over time than the segment has thread heaps (1024) */
  cycles(5);
  size_t before = in_use();
  cycles(1300);
  size_t after = in_use();
  ck_assert_msg(after <= before + 65536, "uordblks %zu -> %zu over 1300 thread cycles", before, after);
  void *p = malloc(100);
  ck_assert(shmheap_contains(p));
  free(p);
}
END_TEST

static pthread_barrier_t slot_barrier;

static void *slot_thread(void *arg) {
  char *p = malloc(64 + (uintptr_t)arg % 1000);
  if (!p || !shmheap_contains(p)) atomic_fetch_add(&thread_errors, 1);
  else memset(p, 1, 64);
  pthread_barrier_wait(&slot_barrier); /* all alive at once */
  free(p);
  return NULL;
}

START_TEST(t_threads_more_than_slots_alive) {
  /* 1100 threads alive at the same time, more than the 1024 thread heaps */
  enum { N = 1100 };
  pthread_t *t = malloc(N * sizeof *t);
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 64 * 1024);
  ck_assert_int_eq(pthread_barrier_init(&slot_barrier, NULL, N + 1), 0);
  atomic_store(&thread_errors, 0);
  int made = 0;
  for (; made < N; made++)
    if (pthread_create(&t[made], &attr, slot_thread, (void *)(uintptr_t)made) != 0) break;
  ck_assert_msg(made == N, "could create only %d threads", made);
  pthread_barrier_wait(&slot_barrier);
  for (int i = 0; i < made; i++) pthread_join(t[i], NULL);
  pthread_barrier_destroy(&slot_barrier);
  free(t);
  ck_assert_int_eq(atomic_load(&thread_errors), 0);
}
END_TEST

/* ---- memory goes back ----------------------------------------------------------------- */

START_TEST(t_aligned_reuse) {
  /* freed aligned blocks are reused: the heap does not grow without bound */
  void *p;
  ck_assert_int_eq(posix_memalign(&p, 1 << 20, 100), 0);
  free(p);
  size_t h0 = info().heap_bytes;
  for (int i = 0; i < 2000; i++) {
    ck_assert_int_eq(posix_memalign(&p, (size_t)1 << (12 + i % 9), 100 + i), 0);
    memset(p, 1, 100 + i);
    free(p);
  }
  size_t h1 = info().heap_bytes;
  ck_assert_msg(h1 <= h0 + (64u << 20), "2000 aligned malloc/free pairs grew the heap from %zu to %zu", h0, h1);
}
END_TEST

START_TEST(t_realloc_growth_reuse) {
  /* a buffer grown 1 MiB at a time to 256 MiB, like a log or a vector */
  size_t h0 = info().heap_bytes;
  char *p = NULL;
  for (size_t n = 1 << 20; n <= (256u << 20); n += 1 << 20) {
    char *q = realloc(p, n);
    ck_assert_ptr_nonnull(q);
    q[n - 1] = 1;
    p = q;
  }
  size_t h1 = info().heap_bytes;
  free(p);
  ck_assert_msg(h1 <= h0 + (1u << 30), "growing one block to 256 MiB carved %zu bytes", h1 - h0);
}
END_TEST

/* A block that grows past the free span after it, when that span reaches the
 * top of the heap, grows in place: a vector or buffer is not copied at every
 * doubling.  The sizes are beyond anything a test frees before, so both
 * blocks come from the top; untouched pages cost nothing. */
START_TEST(t_realloc_grows_into_top) {
  tu_background_running(); /* free(b) would start it: its blocks would go where a grows */
  char *a = malloc(512u << 20);
  char *b = malloc(512u << 20);
  ck_assert_ptr_nonnull(a);
  ck_assert_ptr_nonnull(b);
  ck_assert_msg(b == a + (512u << 20), "the second block is not right after the first (%p, %p)", (void *)a,
                (void *)b);
  a[0] = 'x';
  free(b);
  char *c = realloc(a, 1536u << 20);
  ck_assert_ptr_nonnull(c);
  ck_assert_msg(c == a, "growing into the free block and past it moved the block (%p -> %p)", (void *)a, (void *)c);
  ck_assert_int_eq(c[0], 'x');
  c[(1536u << 20) - 1] = 'y';
  free(c);
}
END_TEST

/* A big free span ages even while small blocks are cut from it and freed
 * again: merging them back must not make the whole span young. */
START_TEST(t_free_pages_age_under_churn) {
  char *big = malloc(200u << 20);
  ck_assert_ptr_nonnull(big);
  memset(big, 1, 200u << 20);
  free(big);
  ck_assert_msg(info().free_dirty >= 190u << 20, "200 MB freed: %zu bytes kept", info().free_dirty);
  for (int i = 0; i < 15; i++) { /* 3 s of a 64 KiB block every 200 ms */
    usleep(200 * 1000);
    char *q = malloc(64 << 10);
    ck_assert_ptr_nonnull(q);
    q[0] = 1;
    free(q);
  }
  size_t left = info().free_dirty;
  ck_assert_msg(left <= 32u << 20, "3 s after 200 MB were freed, %zu bytes of free pages are still held", left);
}
END_TEST

START_TEST(t_large_free_returns_rss) {
  enum { N = 200 };
  long before = tu_status_kb("RssShmem");
  ck_assert_msg(before >= 0, "no RssShmem in /proc/self/status");
  char *p[N];
  for (int i = 0; i < N; i++) {
    p[i] = malloc(1 << 20);
    ck_assert_ptr_nonnull(p[i]);
    memset(p[i], i + 1, 1 << 20);
  }
  long mid = tu_status_kb("RssShmem");
  ck_assert_msg(mid >= before + 190 * 1024, "200 MB of touched blocks: RssShmem %ld -> %ld kB (not shm?)",
                before, mid);
  uint64_t purged0 = info().purged_bytes;
  for (int i = 0; i < N; i++) free(p[i]);
  /* Freed pages are kept for reuse at once, not handed back: allocating the
   * same again costs no new memory and no page fault. */
  size_t kept = info().free_dirty;
  ck_assert_msg(kept >= 190u << 20, "200 MB freed: only %zu bytes of free pages kept", kept);
  for (int i = 0; i < N; i++) {
    p[i] = malloc(1 << 20);
    ck_assert_ptr_nonnull(p[i]);
    memset(p[i], i + 2, 1 << 20);
  }
  long again = tu_status_kb("RssShmem");
  ck_assert_msg(again <= mid + 16 * 1024, "200 MB freed and allocated again: RssShmem %ld -> %ld kB", mid, again);
  ck_assert_msg(info().purged_bytes == purged0, "freeing and allocating again handed back %llu bytes",
                (unsigned long long)(info().purged_bytes - purged0));
  for (int i = 0; i < N; i++) free(p[i]);
  /* ... and handed back once they have lain unused for a second, at the
   * allocator's next call. */
  usleep(1300 * 1000);
  free(malloc(1 << 20));
  long after = tu_status_kb("RssShmem");
  ck_assert_msg(mid - after >= 100 * 1024,
                "200 x 1 MiB freed 1.3 s ago: only %ld kB of shm returned (RssShmem %ld -> %ld -> %ld kB)",
                mid - after, before, mid, after);
  malloc_trim(0);
  long trimmed = tu_status_kb("RssShmem");
  ck_assert_msg(trimmed <= before + 32 * 1024,
                "after malloc_trim(0) RssShmem is %ld kB, %ld kB before the blocks", trimmed, before);
}
END_TEST

/* shmheap_recovered grows at its end: a program built against the first
 * packaged header calls the function itself and gets no byte past
 * blocks_lost; the header's macro passes its size; a smaller size is
 * honoured to the byte. */
START_TEST(t_recovered_sizes) {
  struct shmheap_recovery full, r;
  int origin = shmheap_recovered(&full);
  ck_assert_int_eq(origin, full.origin);
  ck_assert_int_eq(shmheap_recovered(NULL), origin);
  memset(&r, 0xa5, sizeof r);
  ck_assert_int_eq((shmheap_recovered)(&r), origin);
  ck_assert_mem_eq(&r, &full, offsetof(struct shmheap_recovery, gc_blocks));
  const unsigned char *tail = (const unsigned char *)&r + offsetof(struct shmheap_recovery, gc_blocks);
  for (size_t i = 0; i < sizeof r - offsetof(struct shmheap_recovery, gc_blocks); i++)
    ck_assert_msg(tail[i] == 0xa5, "the old entry point wrote byte %zu past blocks_lost",
                  i);
  memset(&r, 0xa5, sizeof r);
  ck_assert_int_eq(shmheap_recovered_size(&r, sizeof r.origin), origin);
  ck_assert_int_eq(r.origin, origin);
  ck_assert_uint_eq(((const unsigned char *)&r)[sizeof r.origin], 0xa5);
  memset(&r, 0xa5, sizeof r);
  ck_assert_int_eq(shmheap_recovered_size(&r, 1 << 20), origin); /* larger than the library knows */
  ck_assert_mem_eq(&r, &full, sizeof r);
}
END_TEST

/* ---------------------------------------------------------------------------------------- */

static Suite *api_suite(void) {
  Suite *s = suite_create("api");
  TCase *tc;

  TU_TCASE(s, tc, "where", 20);
  tcase_add_test(tc, t_maps_sysv);
  tcase_add_test(tc, t_all_in_segment);

  TU_TCASE(s, tc, "sizes", 30);
  tcase_add_test(tc, t_align16);
  tcase_add_test(tc, t_usable_size);
  tcase_add_test(tc, t_usable_size_interior);
  tcase_add_test(tc, t_recovered_sizes);
  tcase_add_test(tc, t_no_overlap);

  TU_TCASE(s, tc, "realloc", 20);
  tcase_add_test(tc, t_realloc_content);
  tcase_add_test(tc, t_realloc_null_is_malloc);
  tcase_add_test(tc, t_realloc_zero_frees);

  TU_TCASE(s, tc, "calloc", 20);
  tcase_add_test(tc, t_calloc_zeroed);
  tcase_add_test(tc, t_calloc_overflow);
  tcase_add_test(tc, t_calloc_large_lazy);
  tcase_add_test(tc, t_reallocarray);
  tcase_add_test(tc, t_enomem);

  TU_TCASE(s, tc, "aligned", 20);
  tcase_add_test(tc, t_posix_memalign);
  tcase_add_test(tc, t_aligned_alloc);
  tcase_add_test(tc, t_memalign_rounds_up);
  tcase_add_test(tc, t_valloc_pvalloc);

  TU_TCASE(s, tc, "free", 20);
  tcase_add_test(tc, t_free_keeps_errno);
  tcase_add_test(tc, t_foreign_free_ignored);
  tcase_add_test(tc, t_bad_pointer_stops);
  tcase_add_test(tc, t_foreign_realloc_einval);
  tcase_add_test(tc, t_foreign_usable_size_zero);

  TU_TCASE(s, tc, "glibc", 20);
  tcase_add_test(tc, t_mallopt_returns_1);
  tcase_add_test(tc, t_mallinfo2_in_use);
  tcase_add_test(tc, t_malloc_trim);
  tcase_add_test(tc, t_malloc_info_xml);

  TU_TCASE(s, tc, "shmheap", 10);
  tcase_add_test(tc, t_api_info);
  tcase_add_test(tc, t_api_contains);
  tcase_add_test(tc, t_api_fork_mode);

  TU_TCASE(s, tc, "programs", 30);
  tcase_add_test(tc, t_qsort_large);

  TU_TCASE(s, tc, "threads", 45);
  tcase_add_test(tc, t_threads_cross_free);
  tcase_add_test(tc, t_threads_mallinfo_no_drift);
  tcase_add_test(tc, t_threads_more_than_heap_slots);
  tcase_add_test(tc, t_threads_more_than_slots_alive);

  TU_TCASE(s, tc, "release", 30);
  tcase_add_test(tc, t_realloc_grows_into_top);
  tcase_add_test(tc, t_large_free_returns_rss);
  tcase_add_test(tc, t_free_pages_age_under_churn);
  tcase_add_test(tc, t_aligned_reuse);
  tcase_add_test(tc, t_realloc_growth_reuse);
  return s;
}

int main(void) {
  tu_init();
  return tu_run_suite(api_suite());
}
