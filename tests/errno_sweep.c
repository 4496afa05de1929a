/* errno after every failed allocation: ENOMEM for every size that cannot be
 * met, at every valid power-of-two alignment, through every allocation
 * function; EINVAL only for an invalid alignment.  The rule glibc keeps
 * (errno.sh runs this under glibc too, and under libshmheap).
 *
 * Sizes near SIZE_MAX, PTRDIFF_MAX and 2^50 (beyond any address space), and
 * every alignment 2^0..2^63.  Each violation is one line on stdout; exit 1
 * if there was any, 0 otherwise.  Requests that can be met must succeed,
 * aligned, at alignments up to 1 MiB: a library that failed everything with
 * ENOMEM would not pass.
 *
 * Every function is called through a volatile pointer: the compiler must not
 * judge the calls by the headers' attributes (alloc_size, alloc_align) or
 * fold them. */
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *(*volatile f_malloc)(size_t) = malloc;
static void *(*volatile f_calloc)(size_t, size_t) = calloc;
static void *(*volatile f_realloc)(void *, size_t) = realloc;
static void *(*volatile f_reallocarray)(void *, size_t, size_t) = reallocarray;
static void *(*volatile f_valloc)(size_t) = valloc;
static void *(*volatile f_pvalloc)(size_t) = pvalloc;
static void *(*volatile f_memalign)(size_t, size_t) = memalign;
static void *(*volatile f_aligned_alloc)(size_t, size_t) = aligned_alloc;
static int (*volatile f_posix_memalign)(void **, size_t, size_t) = posix_memalign;

#define MARK 12345 /* errno before each call: no call leaves it so on failure */
static int bad;

static void say(const char *fn, size_t a, size_t n, const char *fmt, int v) {
  printf("%s(align 0x%zx, size 0x%zx): ", fn, a, n);
  printf(fmt, v);
  printf("\n");
  bad++;
}

/* r, e: a call's result and errno, for a request that cannot be met. */
static void want_enomem(const char *fn, size_t a, size_t n, void *r, int e) {
  if (r) {
    say(fn, a, n, "succeeded (%d)", 0);
    free(r);
  } else if (e != ENOMEM) {
    say(fn, a, n, "NULL with errno %d, not ENOMEM", e);
  }
}

#define CALL(fn, a, n, expr)           \
  do {                                 \
    errno = MARK;                      \
    void *r_ = (expr);                 \
    want_enomem(fn, a, n, r_, errno);  \
  } while (0)

static void sizes(size_t n) {
  CALL("malloc", 0, n, f_malloc(n));
  CALL("calloc(1, n)", 0, n, f_calloc(1, n));
  CALL("calloc(n, 2)", 0, n, f_calloc(n, 2));
  CALL("valloc", 0, n, f_valloc(n));
  CALL("pvalloc", 0, n, f_pvalloc(n));
  /* realloc and reallocarray: failing, they leave the block as it was */
  static const char keep[] = "left as it was";
  const char *const names[2] = {"realloc", "reallocarray(p, n, 3)"};
  for (int k = 0; k < 2; k++) {
    char *p = f_malloc(sizeof keep);
    if (!p) {
      say("malloc", 0, sizeof keep, "failed (errno %d)", errno);
      return;
    }
    memcpy(p, keep, sizeof keep);
    errno = MARK;
    void *r = k ? f_reallocarray(p, n, 3) : f_realloc(p, n);
    want_enomem(names[k], 0, n, r, errno);
    if (!r && memcmp(p, keep, sizeof keep)) say(names[k], 0, n, "failed, and changed the block (%d)", 0);
    if (!r) free(p);
  }
  for (int b = 0; b < 64; b++) {
    size_t a = (size_t)1 << b;
    CALL("memalign", a, n, f_memalign(a, n));
    CALL("aligned_alloc", a, n, f_aligned_alloc(a, n));
    void *out = &bad; /* not to be written on failure */
    errno = MARK;
    int rc = f_posix_memalign(&out, a, n);
    int e = errno;
    if (a < sizeof(void *)) {
      if (rc != EINVAL) say("posix_memalign", a, n, "returned %d, not EINVAL (alignment below sizeof(void *))", rc);
      else if (e != MARK) say("posix_memalign", a, n, "EINVAL, and errno changed to %d", e);
    } else if (rc != ENOMEM) {
      say("posix_memalign", a, n, "returned %d, not ENOMEM", rc);
      if (!rc) free(out);
    } else if (e != ENOMEM) {
      say("posix_memalign", a, n, "returned ENOMEM with errno %d, not ENOMEM", e);
    }
    if (rc && out != &bad) say("posix_memalign", a, n, "failed (%d) and wrote *memptr", rc);
  }
}

/* Requests that can be met, at every alignment up to 1 MiB. */
static void possible(void) {
  for (int b = 0; b <= 20; b++) {
    size_t a = (size_t)1 << b;
    void *p = f_memalign(a, 100);
    if (!p || (uintptr_t)p % a) say("memalign", a, 100, "gave %d or a misaligned block", 0);
    free(p);
    p = f_aligned_alloc(a, 3 * a);
    if (!p || (uintptr_t)p % a) say("aligned_alloc", a, 3 * a, "gave %d or a misaligned block", 0);
    free(p);
    if (a >= sizeof(void *)) {
      p = NULL;
      int rc = f_posix_memalign(&p, a, 100);
      if (rc || !p || (uintptr_t)p % a) say("posix_memalign", a, 100, "returned %d or a misaligned block", rc);
      free(p);
    }
  }
}

int main(void) {
  const size_t pm = PTRDIFF_MAX, g50 = (size_t)1 << 50;
  const size_t impossible[] = {SIZE_MAX, SIZE_MAX - 1, SIZE_MAX - 4095, SIZE_MAX - 65536, SIZE_MAX / 2 + 1,
                               pm, pm - 1, pm - 4096, pm + 1, g50 - 1, g50, g50 + 1, g50 * 3};
  for (unsigned i = 0; i < sizeof impossible / sizeof *impossible; i++) sizes(impossible[i]);
  /* calloc whose product overflows, or is 2^50 */
  CALL("calloc(2^32, 2^32)", 0, 0, f_calloc((size_t)1 << 32, (size_t)1 << 32));
  CALL("calloc(2^25, 2^25)", 0, g50, f_calloc((size_t)1 << 25, (size_t)1 << 25));
  /* the largest alignment: impossible even for a small block */
  CALL("memalign", (size_t)1 << 63, 16, f_memalign((size_t)1 << 63, 16));
  CALL("aligned_alloc", (size_t)1 << 63, 16, f_aligned_alloc((size_t)1 << 63, 16));
  /* memalign's only invalid alignments: above 2^63 */
  const size_t over[] = {((size_t)1 << 63) + 1, SIZE_MAX};
  for (int i = 0; i < 2; i++) {
    errno = MARK;
    void *r = f_memalign(over[i], 16);
    if (r || errno != EINVAL) say("memalign", over[i], 16, "did not fail with EINVAL (errno %d)", errno);
    free(r);
  }
  possible();
  if (bad) printf("errno_sweep: %d violation(s)\n", bad);
  else printf("errno_sweep: every failure set ENOMEM, every invalid alignment EINVAL\n");
  return bad ? 1 : 0;
}
