/* Helper of check_env and check_fork.  NOT linked with libshmheap: the tests
 * run it with LD_PRELOAD=$SHMHEAP_LIB and reach the library's API through
 * dlsym, so that it sees the heap exactly as a preloaded program does.
 *
 *   helper_env info           print the heap description (one line), exit 0
 *   helper_env put            info, then a 1 MiB block holding a marker; prints ptr=
 *   helper_env get ADDR       exit 0 if ADDR is in the heap and holds the marker
 *   helper_env forkvis        fork; the child writes a block made before the fork
 *                             and allocates one; prints visible= childblock= mode=
 *   helper_env churn MS       2 threads malloc/free/verify for MS milliseconds
 *   helper_env exhaust        allocate until malloc fails with ENOMEM, free all,
 *                             allocate again (for a small SHMHEAP_SIZE)
 *   helper_env reuse ORDER    fill the heap with 64-byte blocks, free them all
 *                             (ORDER fwd, rev or random), then malloc(100),
 *                             malloc(1 MiB), and fill with 100-byte blocks:
 *                             prints bytes64= bytes100= (exit 3 if any failed)
 *   helper_env reuse-remote WHO  reuse, but another thread makes the blocks and
 *                             the main thread frees them: WHO owner (the maker
 *                             asks for the other sizes) or exited (it has exited,
 *                             the main thread asks)
 *   helper_env name           print name= (/proc/self/comm) and execfn=
 *                             (AT_EXECFN: /proc/self/exe after the re-exec)
 *   helper_env exeaddr        print the executable's address rounded down to 2 MiB
 *   helper_env norand ARGS    re-exec with ADDR_NO_RANDOMIZE and
 *                             LD_PRELOAD=$HELPER_PRELOAD (if set): helper_env ARGS
 *
 * Exit statuses: 0 ok, 2 usage, 3 check failed, 10 library not preloaded.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <time.h>
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/auxv.h>
#include <sys/personality.h>
#include <sys/shm.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shmheap.h"

#define MARKER "shmheap-persist-marker-0123456789"

static int (*p_contains)(const void *);
static int (*p_get_info)(struct shmheap_info *);
static enum shmheap_fork_mode (*p_get_fork_mode)(void);

static void need_lib(void) {
  p_contains = (int (*)(const void *))dlsym(RTLD_DEFAULT, "shmheap_contains");
  p_get_info = (int (*)(struct shmheap_info *))dlsym(RTLD_DEFAULT, "shmheap_get_info");
  p_get_fork_mode = (enum shmheap_fork_mode(*)(void))dlsym(RTLD_DEFAULT, "shmheap_get_fork_mode");
  if (!p_contains || !p_get_info || !p_get_fork_mode) {
    fprintf(stderr, "helper_env: libshmheap is not preloaded\n");
    exit(10);
  }
}

static int print_info(void) {
  struct shmheap_info in;
  memset(&in, 0, sizeof in);
  if (p_get_info(&in) != 0) {
    fprintf(stderr, "helper_env: shmheap_get_info failed\n");
    return 3;
  }
  struct shmid_ds ds;
  unsigned long long segsz = 0;
  if (shmctl(in.shmid, IPC_STAT, &ds) == 0) segsz = ds.shm_segsz;
  char *p = malloc(100);
  int inseg = p && p_contains(p);
  free(p);
  printf("base=%p size=%zu shmid=%d key=%d segsz=%llu reattached=%d mode=%d inseg=%d name=%s\n",
         in.base, in.size, in.shmid, in.key, segsz, in.reattached, (int)p_get_fork_mode(), inseg,
         in.name);
  return inseg ? 0 : 3;
}

static long churn_ms;
static volatile int churn_bad;

static long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static void *churn(void *arg) {
  unsigned seed = (unsigned)(uintptr_t)arg * 2654435761u + (unsigned)getpid();
  enum { N = 256 };
  unsigned char *p[N] = {0};
  size_t n[N] = {0};
  long end = now_ms() + churn_ms;
  while (now_ms() < end) {
    for (int j = 0; j < 1000; j++) {
      int k = rand_r(&seed) % N;
      if (p[k]) {
        if (p[k][0] != (unsigned char)k || p[k][n[k] - 1] != (unsigned char)k) churn_bad = 1;
        free(p[k]);
        p[k] = NULL;
      } else {
        unsigned r = rand_r(&seed);
        n[k] = (r % 100 == 0) ? 40000 + r % 200000 : 1 + r % 3000;
        p[k] = malloc(n[k]);
        if (!p[k] || !p_contains(p[k])) {
          churn_bad = 1;
          continue;
        }
        memset(p[k], k, n[k]);
      }
    }
  }
  for (int k = 0; k < N; k++) free(p[k]);
  return NULL;
}

/* reuse, reuse-remote: the heap filled with 64-byte blocks (b[0..n)). */
static struct {
  void **b;
  size_t n, u64;
  int go[2], back[2], rc; /* go: maker to main; back: main to maker */
} reuse;
enum { REUSE_MAX = 1 << 21 };

static int reuse_fill(void) {
  reuse.b = mmap(NULL, REUSE_MAX * sizeof *reuse.b, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (reuse.b == MAP_FAILED) return 3;
  size_t n = 0;
  while (n < REUSE_MAX && (reuse.b[n] = malloc(64)) != NULL) n++;
  if (n == REUSE_MAX || n == 0) return 3;
  reuse.n = n;
  reuse.u64 = malloc_usable_size(reuse.b[0]);
  return 0;
}

/* After the 64-byte blocks are all freed (and malloc_trim, if trim):
 * malloc(100), malloc(1 MiB), then as many 100-byte blocks as fit. */
static int reuse_again(const char *how, int trim) {
  if (trim) malloc_trim(0);
  errno = 1234; /* a success after reclaiming leaves errno as it was */
  void *p = malloc(100), *q = malloc(1 << 20);
  if (p && q && errno != 1234) {
    fprintf(stderr, "helper_env: reuse %s: malloc(100) and malloc(1 MiB) succeeded, but errno is %d\n", how, errno);
    return 3;
  }
  if (!p || !q) {
    fprintf(stderr, "helper_env: reuse %s: after freeing %zu blocks of 64: malloc(100) = %p, malloc(1 MiB) = %p\n",
            how, reuse.n, p, q);
    return 3;
  }
  free(p);
  free(q);
  size_t m = 0;
  while (m < REUSE_MAX && (reuse.b[m] = malloc(100)) != NULL) m++;
  size_t u100 = m ? malloc_usable_size(reuse.b[0]) : 0;
  printf("bytes64=%zu bytes100=%zu\n", reuse.n * reuse.u64, m * u100);
  for (size_t i = 0; i < m; i++) free(reuse.b[i]);
  return 0;
}

/* The thread that makes the blocks; arg: it stays to ask for other sizes
 * once the main thread has freed them. */
static void *reuse_maker(void *arg) {
  char c = reuse_fill() == 0 ? 'f' : 'e';
  if (write(reuse.go[1], &c, 1) != 1 || c != 'f' || !arg) return NULL;
  if (read(reuse.back[0], &c, 1) != 1) reuse.rc = 3;
  else reuse.rc = reuse_again("owner", 0);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  const char *mode = argv[1];

  if (strcmp(mode, "exeaddr") == 0) {
    printf("0x%lx\n", (unsigned long)((uintptr_t)&main & ~(uintptr_t)((2u << 20) - 1)));
    return 0;
  }
  if (strcmp(mode, "norand") == 0) {
    if (argc < 3) return 2;
    if (personality(0xffffffff) == -1 ||
        personality((unsigned long)personality(0xffffffff) | ADDR_NO_RANDOMIZE) == -1) {
      perror("helper_env: personality");
      return 3;
    }
    const char *pre = getenv("HELPER_PRELOAD");
    if (pre) setenv("LD_PRELOAD", pre, 1);
    unsetenv("HELPER_PRELOAD");
    argv[1] = argv[0];
    execv("/proc/self/exe", argv + 1);
    perror("helper_env: exec");
    return 3;
  }

  need_lib();
  if (strcmp(mode, "info") == 0) return print_info();

  if (strcmp(mode, "put") == 0) {
    int rc = print_info();
    char *p = malloc(1 << 20);
    if (!p || !p_contains(p)) return 3;
    memset(p, 0xa5, 1 << 20);
    strcpy(p, MARKER);
    printf("ptr=%p\n", (void *)p);
    return rc; /* the block stays allocated: it lives on in the segment */
  }

  if (strcmp(mode, "get") == 0) {
    if (argc < 3) return 2;
    char *p = (char *)(uintptr_t)strtoull(argv[2], NULL, 0);
    if (!p_contains(p)) {
      fprintf(stderr, "helper_env: %p is not in the heap\n", (void *)p);
      return 3;
    }
    if (strcmp(p, MARKER) != 0 || (unsigned char)p[(1 << 20) - 1] != 0xa5) {
      fprintf(stderr, "helper_env: marker not found at %p\n", (void *)p);
      return 3;
    }
    printf("found\n");
    return 0;
  }

  if (strcmp(mode, "churn") == 0) {
    if (argc < 3) return 2;
    churn_ms = strtol(argv[2], NULL, 10);
    pthread_t t;
    if (pthread_create(&t, NULL, churn, (void *)1)) return 3;
    churn((void *)2);
    pthread_join(t, NULL);
    if (churn_bad) fprintf(stderr, "helper_env: churn found a corrupt or foreign block\n");
    return churn_bad ? 3 : 0;
  }

  if (strcmp(mode, "exhaust") == 0) {
    enum { MAXB = 1 << 20 };
    void **b = mmap(NULL, MAXB * sizeof *b, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (b == MAP_FAILED) return 3;
    for (int pass = 0; pass < 2; pass++) {
      size_t n = 0;
      errno = 0;
      while (n < MAXB) {
        size_t sz = n % 7 == 0 ? 100000 : 1 + n % 2000;
        void *p = malloc(sz);
        if (!p) break;
        memset(p, 1, sz);
        b[n++] = p;
      }
      int e = errno;
      /* small requests may still fit after a large one failed */
      while (n < MAXB) {
        void *p = malloc(16);
        if (!p) break;
        b[n++] = p;
      }
      if (n == MAXB || e != ENOMEM) {
        fprintf(stderr, "helper_env: exhaust pass %d: %zu blocks, errno %d\n", pass, n, e);
        return 3;
      }
      printf("pass %d: %zu blocks\n", pass, n);
      for (size_t i = 0; i < n; i++) free(b[i]);
    }
    void *p = malloc(100000);
    if (!p) return 3;
    free(p);
    return 0;
  }

  if (strcmp(mode, "name") == 0) {
    char comm[64] = "";
    FILE *f = fopen("/proc/self/comm", "re");
    if (!f || !fgets(comm, sizeof comm, f)) return 3;
    fclose(f);
    comm[strcspn(comm, "\n")] = 0;
    const char *fn = (const char *)getauxval(AT_EXECFN);
    printf("name=%s execfn=%s\n", comm, fn ? fn : "");
    return 0;
  }

  if (strcmp(mode, "reuse") == 0 && argc > 2) {
    if (reuse_fill() != 0) return 3;
    if (strcmp(argv[2], "rev") == 0) {
      for (size_t i = reuse.n; i-- > 0;) free(reuse.b[i]);
    } else {
      if (strcmp(argv[2], "random") == 0) {
        uint64_t x = 88172645463325252ull;
        for (size_t i = reuse.n - 1; i > 0; i--) {
          x ^= x << 13, x ^= x >> 7, x ^= x << 17;
          size_t j = (size_t)(x % (i + 1));
          void *t = reuse.b[i];
          reuse.b[i] = reuse.b[j], reuse.b[j] = t;
        }
      }
      for (size_t i = 0; i < reuse.n; i++) free(reuse.b[i]);
    }
    return reuse_again(argv[2], 1);
  }

  /* The blocks are freed by another thread than the one that made them:
   * "owner", the maker (alive and idle meanwhile) then asks for other
   * sizes; "exited", the maker has exited and the freeing thread asks.
   * Without malloc_trim: the failing allocation itself must find them. */
  if (strcmp(mode, "reuse-remote") == 0 && argc > 2) {
    int owner = strcmp(argv[2], "owner") == 0;
    if (!owner && strcmp(argv[2], "exited") != 0) return 2;
    free(malloc(1)); /* this thread has a heap of its own before the other one fills the heap */
    pthread_t t;
    if (pipe(reuse.go) || pipe(reuse.back) || pthread_create(&t, NULL, reuse_maker, (void *)(uintptr_t)owner)) return 3;
    char c;
    if (read(reuse.go[0], &c, 1) != 1 || c != 'f') return 3;
    if (!owner && pthread_join(t, NULL)) return 3;
    for (size_t i = 0; i < reuse.n; i++) free(reuse.b[i]);
    if (!owner) return reuse_again(argv[2], 0);
    if (write(reuse.back[1], "x", 1) != 1 || pthread_join(t, NULL)) return 3;
    return reuse.rc;
  }

  if (strcmp(mode, "forkvis") == 0) {
    volatile char *p = malloc(64);
    if (!p) return 3;
    memset((char *)p, 'A', 64);
    int fd[2];
    if (pipe(fd)) return 3;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) return 3;
    if (pid == 0) {
      p[0] = 'B';
      char *q = malloc(100);
      if (!q) _exit(3);
      strcpy(q, "from-child");
      if (write(fd[1], &q, sizeof q) != sizeof q) _exit(3);
      _exit(0);
    }
    close(fd[1]);
    char *q = NULL;
    ssize_t got = read(fd[0], &q, sizeof q);
    int st;
    waitpid(pid, &st, 0);
    if (got != sizeof q || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
      fprintf(stderr, "helper_env: child failed\n");
      return 3;
    }
    int visible = p[0] == 'B';
    int childblock = visible && p_contains(q) && strcmp(q, "from-child") == 0;
    printf("visible=%d childblock=%d mode=%d\n", visible, childblock, (int)p_get_fork_mode());
    if (childblock) free(q); /* a block of the child, freed by the parent */
    char *r = malloc(200);   /* and the heap goes on working */
    if (!r || !p_contains(r)) return 3;
    free(r);
    return 0;
  }

  return 2;
}
