/* Shared helpers of the libshmheap Check suites.
 *
 * Keys: every SysV key a test uses comes from tu_key(n): 0x5e000000 with the
 * low 16 bits of the suite runner's pid in bits 8..23 and n (0..255) in the
 * low byte, so suites running in parallel never share a key; tu_key_high(n)
 * is the same with the top bit set (0xde...), a key that /proc/sysvipc/shm
 * prints negative.  tu_cleanup()
 * removes every key of this runner (and every named heap whose name starts
 * with tu_name_prefix()); the suites call it from an unchecked teardown (runs
 * in the runner, so also after a failed test) and again at the end of main.
 *
 * Commands: tu_run() forks and execs (no shell) with a clean environment:
 * the caller's environment minus LD_PRELOAD and every SHMHEAP_* variable, plus
 * LD_PRELOAD=$SHMHEAP_LIB when asked, plus the given NAME=value strings.
 */
#ifndef SHMHEAP_TESTUTIL_H
#define SHMHEAP_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TU_KEY_PREFIX 0x5e000000u

/* Call first in main(): records the runner pid the keys derive from. */
void tu_init(void);
/* The unique key number n (0..255) of this suite run. */
int tu_key(int n);
/* tu_key(n) with bit 31 set: a key >= 0x80000000, also removed by tu_cleanup. */
int tu_key_high(int n);
/* A name for SHMHEAP_KEY unique to this suite run: "<prefix>-<n>". */
const char *tu_name(int n, char *buf, size_t len);
const char *tu_name_prefix(void);
/* Removes the segment with this key if there is one.  Returns 1 if removed. */
int tu_rm_key(int key);
/* Removes every segment of this runner (keys and names).  Returns how many. */
int tu_cleanup(void);
/* Number of segments of this runner still present. */
int tu_count_leftover(void);

/* Unchecked teardown of every test case of the suites: tu_cleanup() in the
 * runner, so also after a failed test. */
void tu_runner_cleanup(void);

/* For the Check suites (after <check.h>): creates test case name with a
 * timeout in seconds into tc, gives it tu_runner_cleanup as unchecked
 * teardown and adds it to suite s. */
#define TU_TCASE(s, tc, name, timeout)                          \
  do {                                                          \
    (tc) = tcase_create(name);                                  \
    tcase_set_timeout((tc), (timeout));                         \
    tcase_add_unchecked_fixture((tc), NULL, tu_runner_cleanup); \
    suite_add_tcase((s), (tc));                                 \
  } while (0)

/* The end of main() of a suite: runs s, removes every segment of this
 * runner, and returns EXIT_SUCCESS or EXIT_FAILURE (s is a Suite *; void *
 * here so that this header needs no <check.h>). */
int tu_run_suite(void *s);

/* SysV segments created by process pid (cpid), all or only private (key 0)
 * ones; removes them when remove is set.  Returns how many. */
int tu_segments_by_pid(pid_t pid, int private_only, int remove);

/* Paths: $top_builddir (or guessed from /proc/self/exe), $SHMHEAP_LIB. */
const char *tu_builddir(void);
const char *tu_lib(void);
/* "<builddir>/<rel>" in a static buffer of 4 KiB (one per call site: copy it). */
const char *tu_bpath(const char *rel, char *buf, size_t len);

struct tu_result {
  pid_t pid;         /* the child that ran */
  int status;        /* raw wait status */
  int exited;        /* WIFEXITED */
  int code;          /* WEXITSTATUS, or 128+signal, or -1 on timeout */
  int timed_out;
  size_t outlen, errlen;
  char out[65536];   /* stdout, NUL terminated (truncated if longer) */
  char err[65536];   /* stderr, NUL terminated */
};

/* The environment tu_run gives a child: the caller's minus LD_PRELOAD and
 * SHMHEAP_*, plus LD_PRELOAD=tu_lib() (formatted into pre) when preload is
 * set, plus env_add.  calloc'd: free the array (not the strings). */
char **tu_env(const char *const env_add[], int preload, char *pre, size_t prelen);

/* Runs argv (argv[0] searched in PATH if it has no '/').  preload: add
 * LD_PRELOAD=tu_lib().  env_add: NULL-terminated "NAME=value" list, may be
 * NULL.  timeout_ms: kill -9 after that.  Returns r->code. */
int tu_run(const char *const argv[], const char *const env_add[], int preload,
           int timeout_ms, struct tu_result *r);

/* Lines in s (a final line without '\n' counts). */
int tu_count_lines(const char *s);
/* Copies the first line of s that contains needle into line; 1 if found. */
int tu_find_line(const char *s, const char *needle, char *line, size_t len);
/* Value of "name=" in line parsed with strtoull base 0; 1 if present. */
int tu_field(const char *line, const char *name, unsigned long long *val);

/* The /proc/self/maps line of the mapping that holds addr; 1 if found. */
int tu_maps_line(const void *addr, char *line, size_t len);
/* 1 if a and b lie in the same mapping (same maps line). */
int tu_same_mapping(const void *a, const void *b);
/* A field of /proc/self/status in kB ("VmRSS", "RssShmem"); -1 if absent. */
long tu_status_kb(const char *field);

/* waitpid with a deadline; on timeout kills the child with SIGKILL, reaps it
 * and returns -1.  Returns 0 and *status otherwise. */
int tu_wait_timeout(pid_t pid, int *status, int timeout_ms);
/* Milliseconds from a monotonic clock. */
long long tu_now_ms(void);
/* Has pid a System V segment made with key attached?  Read from its
 * /proc/PID/maps (the attachment is named /SYSV<key, 8 hex digits>), so
 * without attaching anything: 0 also when its maps cannot be read. */
int tu_maps_have_key(pid_t pid, int key);

/* FNV-1a of a memory range (segment contents before/after). */
uint64_t tu_hash(const void *p, size_t n);
/* Hash of a whole SysV segment by id (attached read-only); 0 on error and
 * *size set to its size. */
uint64_t tu_shm_hash(int shmid, size_t *size);

/* Starts the library's background thread (SHMHEAP_BACKGROUND) in this
 * process, by a free of more than the floor of free pages: its start
 * allocates (glibc's descriptors of a thread), so a test of exact in-use
 * figures or of where blocks land calls this before it measures. */
void tu_background_running(void);

#ifdef __cplusplus
}
#endif

#endif
