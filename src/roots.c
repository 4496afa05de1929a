/* Named roots: how a process finds its objects in a heap it re-attached.
 * A root is one cache line of the header; creating, updating and removing
 * one is done under hdr->lock, reading one is lock-free (struct root). */
#include <errno.h>
#include <string.h>

#include "init.h"

static int root_name_ok(const char *name) {
  if (!name || !name[0]) {
    errno = EINVAL;
    return 0;
  }
  if (strnlen(name, SH_ROOT_NAME) >= SH_ROOT_NAME) {
    errno = ENAMETOOLONG;
    return 0;
  }
  return 1;
}

/* The entry of name, or NULL.  name[0] is read first, with acquire: an
 * entry whose first byte is set has the rest of its name and its value. */
static struct root *root_find(const char *name) {
  size_t n = strlen(name);
  for (unsigned i = 0; i < SH_ROOT_MAX; i++) {
    struct root *r = &G.hdr->roots[i];
    if (atomic_load_explicit(&r->name[0], memory_order_acquire) != name[0]) continue;
    size_t k = 1;
    while (k <= n && atomic_load_explicit(&r->name[k], memory_order_relaxed) == name[k]) k++;
    if (k > n) return r;
  }
  return NULL;
}

SH_API int shmheap_root_set(const char *name, const void *ptr) {
  ensure_init();
  if (!root_name_ok(name)) return -1;
  if (ptr && !shmheap_contains(ptr)) {
    errno = EINVAL;
    return -1;
  }
  uint64_t off = ptr ? ptr2off(ptr) : 0;
  /* Under the lock even to update: an entry found without it could be
   * removed and reused for another name before the store lands. */
  pages_lock();
  struct root *r = root_find(name);
  if (!r) {
    for (unsigned i = 0; i < SH_ROOT_MAX && !r; i++)
      if (atomic_load_explicit(&G.hdr->roots[i].name[0], memory_order_relaxed) == 0) r = &G.hdr->roots[i];
    if (!r) {
      pages_unlock();
      errno = ENOSPC;
      return -1;
    }
    size_t n = strlen(name);
    atomic_store_explicit(&r->off, off, memory_order_relaxed);
    for (size_t k = 1; k < SH_ROOT_NAME; k++)
      atomic_store_explicit(&r->name[k], k <= n ? name[k] : 0, memory_order_relaxed);
    atomic_store_explicit(&r->name[0], name[0], memory_order_release); /* now it exists */
  } else {
    atomic_store_explicit(&r->off, off, memory_order_release);
  }
  pages_unlock();
  return 0;
}

SH_API void *shmheap_root_get(const char *name) {
  ensure_init();
  if (!root_name_ok(name)) return NULL;
  struct root *r = root_find(name);
  if (!r) {
    errno = ENOENT;
    return NULL;
  }
  uint64_t off = atomic_load_explicit(&r->off, memory_order_acquire);
  return off ? off2ptr(off) : NULL;
}

SH_API int shmheap_root_remove(const char *name) {
  ensure_init();
  if (!root_name_ok(name)) return -1;
  pages_lock();
  struct root *r = root_find(name);
  if (r) {
    atomic_store_explicit(&r->name[0], 0, memory_order_release); /* gone, in one store */
    atomic_store_explicit(&r->off, 0, memory_order_relaxed);
  }
  pages_unlock();
  if (!r) {
    errno = ENOENT;
    return -1;
  }
  return 0;
}

SH_API int shmheap_root_each(int (*fn)(void *ctx, const char *name, void *ptr), void *ctx) {
  ensure_init();
  int n = 0;
  for (unsigned i = 0; i < SH_ROOT_MAX; i++) {
    struct root *r = &G.hdr->roots[i];
    char name[SH_ROOT_NAME];
    name[0] = atomic_load_explicit(&r->name[0], memory_order_acquire);
    if (!name[0]) continue;
    for (size_t k = 1; k < SH_ROOT_NAME; k++) name[k] = atomic_load_explicit(&r->name[k], memory_order_relaxed);
    name[SH_ROOT_NAME - 1] = 0;
    uint64_t off = atomic_load_explicit(&r->off, memory_order_acquire);
    n++;
    if (fn && fn(ctx, name, off ? off2ptr(off) : NULL)) break;
  }
  return n;
}
