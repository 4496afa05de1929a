/* The C++ operators, written in C so that a C program that loads the library
 * does not load libstdc++.  What needs libstdc++ (the new_handler, throwing
 * std::bad_alloc) is reached through weak references, which the dynamic
 * linker binds when the program is C++; the file is built with -fexceptions
 * so a handler's exception can unwind through these frames. */
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>

#include "init.h"

typedef void (*new_handler_fn)(void);
/* std::get_new_handler() and std::__throw_bad_alloc() */
extern new_handler_fn _ZSt15get_new_handlerv(void) __attribute__((weak));
extern void _ZSt17__throw_bad_allocv(void) __attribute__((weak, noreturn));

static new_handler_fn current_handler(void) {
  if (_ZSt15get_new_handlerv) return _ZSt15get_new_handlerv();
  /* libstdc++ came later with dlopen: the weak reference stayed unbound. */
  new_handler_fn (*get)(void) = (new_handler_fn(*)(void))dlsym(RTLD_DEFAULT, "_ZSt15get_new_handlerv");
  return get ? get() : NULL;
}

static __attribute__((noreturn)) void throw_bad_alloc(void) {
  if (_ZSt17__throw_bad_allocv) _ZSt17__throw_bad_allocv();
  void (*thr)(void) = (void (*)(void))dlsym(RTLD_DEFAULT, "_ZSt17__throw_bad_allocv");
  if (thr) thr();
  os_say("libshmheap: operator new: out of memory and no C++ runtime to throw std::bad_alloc");
  abort();
}

static inline void *get(size_t n, size_t align) {
  return align ? sh_memalign(align, n) : sh_malloc(n);
}

/* [new.delete.single]: call the new_handler until it gives memory back,
 * throw std::bad_alloc when there is none. */
static __attribute__((noinline)) void *new_retry(size_t n, size_t align) {
  for (;;) {
    void *p = get(n, align);
    if (p) return p;
    new_handler_fn h = current_handler();
    if (!h) throw_bad_alloc();
    h();
  }
}

static inline void *op_new(size_t n, size_t align) {
  void *p = get(n, align);
  return likely(p != NULL) ? p : new_retry(n, align);
}

/* The nothrow forms behave as the throwing form inside try/catch.  C cannot
 * catch: with a handler installed we let libstdc++'s own nothrow operator do
 * the catching (it calls our throwing operator new). */
typedef void *(*nothrow_fn)(size_t, const void *);
typedef void *(*nothrow_al_fn)(size_t, size_t, const void *);

static void *op_new_nothrow(size_t n, size_t align, const void *tag, const char *next_name) {
  void *p = get(n, align);
  if (likely(p != NULL) || !current_handler()) return p;
  void *f = dlsym(RTLD_NEXT, next_name);
  if (!f) return new_retry(n, align); /* no libstdc++ operator: nothing can throw through */
  return align ? ((nothrow_al_fn)f)(n, align, tag) : ((nothrow_fn)f)(n, tag);
}

SH_API void *_Znwm(size_t n) { return op_new(n, 0); }
SH_API void *_Znam(size_t n) { return op_new(n, 0); }
SH_API void *_ZnwmRKSt9nothrow_t(size_t n, const void *t) {
  return op_new_nothrow(n, 0, t, "_ZnwmRKSt9nothrow_t");
}
SH_API void *_ZnamRKSt9nothrow_t(size_t n, const void *t) {
  return op_new_nothrow(n, 0, t, "_ZnamRKSt9nothrow_t");
}
SH_API void *_ZnwmSt11align_val_t(size_t n, size_t al) { return op_new(n, al); }
SH_API void *_ZnamSt11align_val_t(size_t n, size_t al) { return op_new(n, al); }
SH_API void *_ZnwmSt11align_val_tRKSt9nothrow_t(size_t n, size_t al, const void *t) {
  return op_new_nothrow(n, al, t, "_ZnwmSt11align_val_tRKSt9nothrow_t");
}
SH_API void *_ZnamSt11align_val_tRKSt9nothrow_t(size_t n, size_t al, const void *t) {
  return op_new_nothrow(n, al, t, "_ZnamSt11align_val_tRKSt9nothrow_t");
}

/* Every delete is free: a block's size and alignment are in its span. */
SH_API void _ZdlPv(void *p) { sh_free(p); }
SH_API void _ZdaPv(void *p) { sh_free(p); }
SH_API void _ZdlPvm(void *p, size_t n) { (void)n; sh_free(p); }
SH_API void _ZdaPvm(void *p, size_t n) { (void)n; sh_free(p); }
SH_API void _ZdlPvRKSt9nothrow_t(void *p, const void *t) { (void)t; sh_free(p); }
SH_API void _ZdaPvRKSt9nothrow_t(void *p, const void *t) { (void)t; sh_free(p); }
SH_API void _ZdlPvSt11align_val_t(void *p, size_t al) { (void)al; sh_free(p); }
SH_API void _ZdaPvSt11align_val_t(void *p, size_t al) { (void)al; sh_free(p); }
SH_API void _ZdlPvmSt11align_val_t(void *p, size_t n, size_t al) { (void)n; (void)al; sh_free(p); }
SH_API void _ZdaPvmSt11align_val_t(void *p, size_t n, size_t al) { (void)n; (void)al; sh_free(p); }
SH_API void _ZdlPvSt11align_val_tRKSt9nothrow_t(void *p, size_t al, const void *t) {
  (void)al; (void)t; sh_free(p);
}
SH_API void _ZdaPvSt11align_val_tRKSt9nothrow_t(void *p, size_t al, const void *t) {
  (void)al; (void)t; sh_free(p);
}
