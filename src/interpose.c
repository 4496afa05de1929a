/* The exported libc names.  Every one of them must be here: glibc-internal
 * callers use the __libc_* names, programs call pvalloc, valloc,
 * reallocarray..., and a block from one allocator freed by another is a crash
 * far from its cause. */
#include <errno.h>
#include <malloc.h>
#include <stdlib.h>

#include "internal.h"

SH_API void *malloc(size_t n) { return sh_malloc(n); }
SH_API void free(void *p) { sh_free(p); }
SH_API void *calloc(size_t n, size_t m) { return sh_calloc(n, m); }
SH_API void *realloc(void *p, size_t n) { return sh_realloc(p, n); }

SH_API void *reallocarray(void *p, size_t n, size_t m) {
  size_t total;
  if (__builtin_mul_overflow(n, m, &total)) {
    errno = ENOMEM;
    return NULL;
  }
  return sh_realloc(p, total);
}

static inline int pow2(size_t a) { return a && !(a & (a - 1)); }

SH_API int posix_memalign(void **out, size_t align, size_t n) {
  if (!pow2(align) || align % sizeof(void *)) return EINVAL;
  int saved = errno;
  void *p = sh_memalign(align, n);
  if (!p) {
    errno = saved; /* POSIX: the error is the return value */
    return ENOMEM;
  }
  *out = p;
  return 0;
}

/* C17/C23 and glibc 2.38: a non-power-of-two alignment is invalid. */
SH_API void *aligned_alloc(size_t align, size_t n) {
  if (!pow2(align)) {
    errno = EINVAL;
    return NULL;
  }
  return sh_memalign(align, n);
}

/* glibc's memalign rounds a non-power-of-two alignment up. */
SH_API void *memalign(size_t align, size_t n) {
  if (align > ((size_t)1 << 62)) {
    errno = EINVAL;
    return NULL;
  }
  if (!pow2(align)) align = align <= 1 ? 1 : (size_t)1 << (64 - __builtin_clzl(align));
  return sh_memalign(align, n);
}

SH_API void *valloc(size_t n) { return sh_memalign(SH_PAGE, n); }

SH_API void *pvalloc(size_t n) {
  size_t r;
  if (__builtin_add_overflow(n, SH_PAGE - 1, &r)) {
    errno = ENOMEM;
    return NULL;
  }
  r &= ~(SH_PAGE - 1);
  return sh_memalign(SH_PAGE, r ? r : SH_PAGE);
}

SH_API size_t malloc_usable_size(void *p) { return sh_usable_size(p); }

SH_API void *__libc_malloc(size_t n) { return sh_malloc(n); }
SH_API void __libc_free(void *p) { sh_free(p); }
SH_API void *__libc_calloc(size_t n, size_t m) { return sh_calloc(n, m); }
SH_API void *__libc_realloc(void *p, size_t n) { return sh_realloc(p, n); }
SH_API void *__libc_memalign(size_t align, size_t n) { return memalign(align, n); }
SH_API void *__libc_valloc(size_t n) { return valloc(n); }
SH_API void *__libc_pvalloc(size_t n) { return pvalloc(n); }
