/* Helper of check_secure: a program LINKED with libshmheap (no preload: the
 * dynamic loader ignores LD_PRELOAD for set-user-ID programs), built with
 * -no-install and an rpath to the build's src/.libs, so that a copy of it
 * runs from any directory.  check_secure makes copies of it set-user-ID,
 * set-group-ID and with a file capability.
 *
 * It allocates, frees, and prints one line about itself and its heap:
 *
 *   uid= euid= gid= egid= key= shmid= size= base= mode= fork= norand=
 *   reexec= inseg=
 *
 * mode is the octal permission of its segment, norand 1 if it runs with
 * ADDR_NO_RANDOMIZE, reexec the value of SHMHEAP_REEXEC in its environment
 * ("-" if there is none), inseg 1 if a malloc'd block is in the heap.
 * Exit status 0, or 3 if the heap cannot be described. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/personality.h>
#include <sys/shm.h>
#include <unistd.h>

#include "shmheap.h"

int main(void) {
  char *blocks[100];
  for (int i = 0; i < 100; i++) {
    blocks[i] = malloc(16 + (size_t)i * 100);
    if (!blocks[i]) return 3;
    memset(blocks[i], i, 16);
  }
  struct shmheap_info in;
  memset(&in, 0, sizeof in);
  if (shmheap_get_info(&in) != 0) return 3;
  struct shmid_ds ds;
  unsigned mode = 07777;
  if (shmctl(in.shmid, IPC_STAT, &ds) == 0) mode = (unsigned)ds.shm_perm.mode & 0777;
  int persona = personality(0xffffffff);
  const char *reexec = getenv("SHMHEAP_REEXEC");
  int inseg = shmheap_contains(blocks[50]);
  printf("uid=%d euid=%d gid=%d egid=%d key=%d shmid=%d size=%zu base=%p mode=0%o fork=%d norand=%d reexec=%s inseg=%d\n",
         (int)getuid(), (int)geteuid(), (int)getgid(), (int)getegid(), in.key, in.shmid, in.size, in.base, mode,
         (int)shmheap_get_fork_mode(), persona != -1 && (persona & ADDR_NO_RANDOMIZE) ? 1 : 0,
         reexec ? reexec : "-", inseg);
  for (int i = 0; i < 100; i++) free(blocks[i]);
  return 0;
}
