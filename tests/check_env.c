/* check_env: the SHMHEAP_* variables.  Runs tests/helper_env (not linked with
 * the library) with LD_PRELOAD=$SHMHEAP_LIB under each configuration, and
 * checks its exit status, its stderr and the segments left in the system. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/shm.h>
#include <unistd.h>

#include "format.h" /* exit statuses, struct shm_header */
#include "shmheap.h"
#include "testutil.h"

#define MiB (1024ULL * 1024)
static struct tu_result R; /* big: keep it off the stack */

static const char *helper(void) {
  static char path[4096];
  if (!path[0]) tu_bpath("tests/helper_env", path, sizeof path);
  return path;
}

/* A process that has exited never leaves a private (IPC_PRIVATE) segment. */
static void check_no_private_leak(void) {
  int left = tu_segments_by_pid(R.pid, 1, 1);
  ck_assert_msg(left == 0, "the process (exit %d, stderr [%s]) left %d private segment(s) behind (removed now)",
                R.code, R.err, left);
}

/* Runs helper_env MODE [ARG] preloaded with the given SHMHEAP_* settings
 * (NULL-terminated "NAME=value" list) and SHMHEAP_VERBOSE=1. */
static int run_helper(const char *mode, const char *arg, const char *const *env) {
  const char *argv[] = {helper(), mode, arg, NULL};
  const char *e[16];
  int n = 0;
  e[n++] = "SHMHEAP_VERBOSE=1";
  for (; env && *env && n < 15; env++) e[n++] = *env;
  e[n] = NULL;
  int rc = tu_run(argv, e, 1, 20000, &R);
  check_no_private_leak();
  return rc;
}

/* "libshmheap: attached ..." must be there; returns its fields */
static void attach_line(char *line, size_t len) {
  ck_assert_msg(tu_find_line(R.err, "libshmheap: attached", line, len),
                "no 'libshmheap: attached' line on stderr: [%s]", R.err);
}

static unsigned long long field(const char *line, const char *name) {
  unsigned long long v = 0;
  ck_assert_msg(tu_field(line, name, &v), "no %s= in [%s]", name, line);
  return v;
}

static void expect_one_line_error(int status, const char *var) {
  ck_assert_msg(R.code == status, "expected exit %d, got %d; stderr: [%s] stdout: [%s]", status, R.code,
                R.err, R.out);
  ck_assert_msg(tu_count_lines(R.err) == 1, "stderr is not one line: [%s]", R.err);
  ck_assert_msg(strncmp(R.err, "libshmheap: ", 12) == 0, "stderr does not start with 'libshmheap: ': [%s]",
                R.err);
  if (var) ck_assert_msg(strstr(R.err, var) != NULL, "stderr does not name %s: [%s]", var, R.err);
  ck_assert_msg(R.out[0] == 0, "main() ran (stdout: [%s])", R.out);
}

/* "SHMHEAP_KEY=0x<key>" in kv */
static const char *key_var(char *kv, size_t len, int key) {
  snprintf(kv, len, "SHMHEAP_KEY=0x%x", (unsigned)key);
  return kv;
}

/* Forms a fresh keyed heap: removes any segment with the key, runs helper_env
 * MODE with env (which sets SHMHEAP_KEY to that key) and asserts it exited 0,
 * removing the key first if not.  Returns the shmid of the heap. */
static int form_keyed_heap(int key, const char *mode, const char *const *env) {
  tu_rm_key(key);
  int rc = run_helper(mode, NULL, env);
  if (rc != 0) tu_rm_key(key);
  ck_assert_msg(rc == 0, "exit %d, stderr [%s]", rc, R.err);
  return shmget(key, 0, 0);
}

/* Starts helper_env churn N in the background: the library preloaded, kv
 * (SHMHEAP_KEY=...), SHMHEAP_SIZE=256M and nothing else; its stdout goes to
 * /dev/null if quiet. */
static pid_t spawn_churn(const char *kv, const char *n, int quiet) {
  char pre[4200];
  snprintf(pre, sizeof pre, "LD_PRELOAD=%s", tu_lib());
  pid_t pid = fork();
  if (pid == 0) {
    char *const argv[] = {(char *)helper(), "churn", (char *)n, NULL};
    char *const envp[] = {pre, (char *)kv, "SHMHEAP_SIZE=256M", NULL};
    if (quiet) {
      int nul = open("/dev/null", O_WRONLY);
      if (nul >= 0) dup2(nul, 1);
    }
    execve(helper(), argv, envp);
    _exit(127);
  }
  return pid;
}

/* ---- bad configuration: exit 78 before main ----------------------------------- */

struct bad {
  const char *var, *value;
};
static const struct bad bad_config[] = {
    {"SHMHEAP_KEY", "0"},
    {"SHMHEAP_KEY", "0x0"},
    {"SHMHEAP_KEY", "0x100000000"},
    {"SHMHEAP_KEY", "4294967296"},
    {"SHMHEAP_KEY", "a-name-that-is-much-too-long-for-the-header-0123456789abcdefghij"}, /* 64 bytes */
    {"SHMHEAP_SIZE", "12Q"},
    {"SHMHEAP_SIZE", "0"},
    {"SHMHEAP_SIZE", "-1"},
    {"SHMHEAP_SIZE", "99999T"},
    {"SHMHEAP_SIZE", "1M"},       /* below the 4M minimum */
    {"SHMHEAP_SIZE", "4194303"},  /* one byte below */
    {"SHMHEAP_SIZE", "abc"},
    {"SHMHEAP_SIZE", "16MM"},
    {"SHMHEAP_ADDR", "0x200000001000"}, /* page aligned, not 2 MiB aligned */
    {"SHMHEAP_ADDR", "0x1234"},
    {"SHMHEAP_ADDR", "not-an-address"},
    {"SHMHEAP_FORK", "bogus"},
    {"SHMHEAP_FORK", "sharing"},
    {"SHMHEAP_MODE", "999"},
    {"SHMHEAP_MODE", "0400"},   /* the owner could not write its own heap */
    {"SHMHEAP_MODE", "07777"},
    {"SHMHEAP_MODE", "rw-------"},
    {"SHMHEAP_IMAGE", "other"},
    {"SHMHEAP_FRESH", "2"},
    {"SHMHEAP_FRESH", "yes"},
    {"SHMHEAP_PROGRAM", "/a/path/that/is/far/too/long/xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}, /* 289 bytes */
};

START_TEST(t_bad_config) {
  const struct bad *b = &bad_config[_i];
  char kv[512];
  snprintf(kv, sizeof kv, "%s=%s", b->var, b->value);
  const char *env[] = {kv, "SHMHEAP_SIZE=16M", NULL};
  if (strcmp(b->var, "SHMHEAP_SIZE") == 0) env[1] = NULL;
  run_helper("info", NULL, env);
  ck_assert_msg(R.code == SH_EXIT_CONFIG, "%s: expected exit %d, got %d; stderr: [%s]", kv, SH_EXIT_CONFIG,
                R.code, R.err);
  expect_one_line_error(SH_EXIT_CONFIG, b->var);
}
END_TEST

START_TEST(t_name_63_bytes_ok) {
  char name[64], kv[128];
  /* 63 bytes, unique to this run */
  snprintf(name, sizeof name, "%s-63-", tu_name_prefix());
  size_t l = strlen(name);
  memset(name + l, 'x', 63 - l);
  name[63] = 0;
  snprintf(kv, sizeof kv, "SHMHEAP_KEY=%s", name);
  const char *env[] = {kv, "SHMHEAP_SIZE=16M", NULL};
  int rc = run_helper("info", NULL, env);
  char line[1024];
  if (tu_find_line(R.err, "libshmheap: attached", line, sizeof line)) {
    unsigned long long key = 0;
    if (tu_field(line, "key", &key)) tu_rm_key((int)key);
  }
  tu_cleanup();
  ck_assert_msg(rc == 0, "a 63-byte name: exit %d, stderr [%s]", rc, R.err);
  ck_assert_msg(strstr(R.out, name) != NULL, "name not reported: [%s]", R.out);
}
END_TEST

/* ---- keys ---------------------------------------------------------------------- */

START_TEST(t_key_decimal_hex_reattach) {
  int key = tu_key(1);
  tu_rm_key(key);
  char dec[64], hex[64];
  snprintf(dec, sizeof dec, "SHMHEAP_KEY=%u", (unsigned)key);
  key_var(hex, sizeof hex, key);
  const char *e1[] = {dec, "SHMHEAP_SIZE=16M", NULL};
  const char *e2[] = {hex, "SHMHEAP_SIZE=16M", NULL};
  char line[1024];

  int rc = run_helper("info", NULL, e1);
  ck_assert_msg(rc == 0, "%s: exit %d, stderr [%s]", dec, rc, R.err);
  attach_line(line, sizeof line);
  ck_assert_msg(strstr(line, "fresh") != NULL, "first run is not 'fresh': %s", line);
  ck_assert_msg(strstr(line, "re-attached") == NULL, "first run says re-attached: %s", line);
  ck_assert_uint_eq(field(line, "key"), (unsigned)key);
  int id = shmget(key, 0, 0);
  ck_assert_msg(id >= 0, "the keyed segment does not outlive the process");
  ck_assert_uint_eq(field(line, "shmid"), (unsigned)id);
  ck_assert_msg(strstr(R.out, "reattached=0") != NULL, "info: [%s]", R.out);

  rc = run_helper("info", NULL, e2);
  ck_assert_msg(rc == 0, "%s: exit %d, stderr [%s]", hex, rc, R.err);
  attach_line(line, sizeof line);
  ck_assert_msg(strstr(line, "re-attached") != NULL, "second run (hex key) is not 're-attached': %s", line);
  ck_assert_uint_eq(field(line, "shmid"), (unsigned)id);
  ck_assert_msg(strstr(R.out, "reattached=1") != NULL, "info: [%s]", R.out);
  tu_rm_key(key);
}
END_TEST

START_TEST(t_key_data_persists) {
  int key = tu_key(2);
  tu_rm_key(key);
  char kv[64];
  const char *env[] = {key_var(kv, sizeof kv, key), "SHMHEAP_SIZE=32M", NULL};
  int rc = run_helper("put", NULL, env);
  ck_assert_msg(rc == 0, "put: exit %d, stderr [%s]", rc, R.err);
  char line[256], ptr[64];
  ck_assert_msg(tu_find_line(R.out, "ptr=", line, sizeof line), "no ptr= in [%s]", R.out);
  snprintf(ptr, sizeof ptr, "%s", strstr(line, "ptr=") + 4);
  rc = run_helper("get", ptr, env);
  tu_rm_key(key);
  ck_assert_msg(rc == 0, "the block written by the first run is not there in the second: exit %d [%s]",
                rc, R.err);
  ck_assert_msg(strstr(R.err, "re-attached") != NULL, "second run not re-attached: [%s]", R.err);
}
END_TEST

START_TEST(t_key_name) {
  char name[64], kv[96];
  tu_name(3, name, sizeof name);
  snprintf(kv, sizeof kv, "SHMHEAP_KEY=%s", name);
  const char *env[] = {kv, "SHMHEAP_SIZE=16M", NULL};
  int rc = run_helper("info", NULL, env);
  char line[1024];
  unsigned long long key = 0;
  if (tu_find_line(R.err, "libshmheap: attached", line, sizeof line)) tu_field(line, "key", &key);
  ck_assert_msg(rc == 0, "name key: exit %d, stderr [%s]", rc, R.err);
  ck_assert_msg(key != 0, "a named heap has key 0: %s", line);
  ck_assert_msg(strstr(line, "fresh") != NULL, "first run is not 'fresh': %s", line);
  char want[128];
  snprintf(want, sizeof want, "name=%s", name);
  ck_assert_msg(strstr(R.out, want) != NULL, "info does not report the name: [%s]", R.out);
  int id = shmget((key_t)key, 0, 0);
  ck_assert_msg(id >= 0, "no segment with the hashed key 0x%llx", key);
  /* the name is in the header */
  struct shm_header *h = shmat(id, NULL, SHM_RDONLY);
  ck_assert_ptr_ne(h, (void *)-1);
  int named = strcmp(h->name, name) == 0;
  shmdt(h);
  ck_assert_msg(named, "the header does not carry the name");

  rc = run_helper("info", NULL, env);
  tu_rm_key((int)key);
  ck_assert_msg(rc == 0, "name key, second run: exit %d, stderr [%s]", rc, R.err);
  attach_line(line, sizeof line);
  ck_assert_msg(strstr(line, "re-attached") != NULL, "second run is not 're-attached': %s", line);
  ck_assert_uint_eq(field(line, "key"), key);
}
END_TEST

START_TEST(t_private_removed) {
  const char *env[] = {"SHMHEAP_SIZE=16M", NULL};
  int rc = run_helper("info", NULL, env);
  ck_assert_msg(rc == 0, "private: exit %d, stderr [%s]", rc, R.err);
  char line[1024];
  attach_line(line, sizeof line);
  ck_assert_uint_eq(field(line, "key"), 0);
  ck_assert_msg(strstr(line, "fresh") != NULL, "private heap not 'fresh': %s", line);
  int id = (int)field(line, "shmid");
  struct shmid_ds ds;
  errno = 0;
  int st = shmctl(id, IPC_STAT, &ds);
  ck_assert_msg(st < 0, "the private segment %d is still there after its process exited (nattch %lu)", id,
                st == 0 ? (unsigned long)ds.shm_nattch : 0UL);
  /* empty SHMHEAP_KEY is private too */
  const char *env2[] = {"SHMHEAP_KEY=", "SHMHEAP_SIZE=16M", NULL};
  rc = run_helper("info", NULL, env2);
  ck_assert_msg(rc == 0, "empty key: exit %d, stderr [%s]", rc, R.err);
  attach_line(line, sizeof line);
  ck_assert_uint_eq(field(line, "key"), 0);
}
END_TEST

/* A process killed at any point leaves a keyed heap the next one can use. */
START_TEST(t_key_kill9_recover) {
  int key = tu_key(4);
  tu_rm_key(key);
  char kv[64];
  const char *env[] = {key_var(kv, sizeof kv, key), "SHMHEAP_SIZE=256M", NULL};
  for (int round = 0; round < 8; round++) {
    pid_t pid = spawn_churn(kv, "10000", 1);
    ck_assert_int_gt(pid, 0);
    struct timespec ts = {0, (50 + round * 37) * 1000 * 1000};
    nanosleep(&ts, NULL);
    kill(pid, SIGKILL);
    int st;
    tu_wait_timeout(pid, &st, 5000);
    ck_assert_msg(WIFSIGNALED(st), "round %d: churn exited early (status 0x%x)", round, st);
    int rc = run_helper("churn", "200", env);
    if (rc != 0) tu_rm_key(key);
    ck_assert_msg(rc == 0, "round %d: after a kill -9 the heap is unusable: exit %d%s, stderr [%s]", round,
                  rc, R.timed_out ? " (hung)" : "", R.err);
    ck_assert_msg(strstr(R.err, "re-attached") != NULL, "not re-attached: [%s]", R.err);
  }
  tu_rm_key(key);
}
END_TEST

/* A second instance of the program that starts with the key while the heap
 * is in use (nginx -s reload, nginx -t, a second server by mistake) runs on
 * a private heap, silently; SHMHEAP_VERBOSE names the user.  The heap stays
 * the user's: once the user is gone, the next one recovers it. */
START_TEST(t_key_second_process_private) {
  int key = tu_key(5);
  char kv[64];
  const char *env[] = {key_var(kv, sizeof kv, key), "SHMHEAP_SIZE=256M", NULL};
  const char *venv[] = {kv, "SHMHEAP_SIZE=256M", "SHMHEAP_VERBOSE=1", NULL};
  form_keyed_heap(key, "info", env);
  /* It churns longer than the waits below can last (it is killed at the
   * end): a sanitizer build on a loaded machine starts slowly. */
  pid_t owner = spawn_churn(kv, "120000", 1);
  ck_assert_int_gt(owner, 0);
  /* Wait until it has the keyed heap attached, seen from outside (its maps):
   * an info run that held the heap while the owner started would send the
   * owner to a private heap, and it would never be the user. */
  int attached = 0;
  for (long long end = tu_now_ms() + 25000; !attached && tu_now_ms() < end;) {
    attached = tu_maps_have_key(owner, key);
    if (!attached) usleep(10000);
  }
  ck_assert_msg(attached, "the owner (pid %d) did not attach the keyed heap within 25 s", (int)owner);
  /* It is in the table once it has attached (a little after the attach). */
  int rc = 0, found = 0;
  char want[64];
  snprintf(want, sizeof want, "in use by pid %d", (int)owner);
  static char last_err[512];
  for (long long end = tu_now_ms() + 25000; !found && rc == 0 && tu_now_ms() < end;) {
    rc = run_helper("info", NULL, venv);
    found = strstr(R.err, want) != NULL;
    snprintf(last_err, sizeof last_err, "%s", R.err);
    if (!found) usleep(10000);
  }
  int private_heap = strstr(R.out, "key=0 ") != NULL && strstr(R.out, "reattached=0") != NULL;
  static char out[sizeof R.out];
  snprintf(out, sizeof out, "%s", R.out);
  const char *qargv[] = {helper(), "info", NULL};
  int quiet_rc = tu_run(qargv, env, 1, 20000, &R); /* the owner still runs; no SHMHEAP_VERBOSE */
  int quiet = quiet_rc == 0 && R.err[0] == 0;
  int st;
  kill(owner, SIGKILL);
  tu_wait_timeout(owner, &st, 5000);
  ck_assert_msg(rc == 0, "a second process on a heap in use exited %d", rc);
  ck_assert_msg(found, "SHMHEAP_VERBOSE does not name pid %d as the user within 25 s; the last run said [%s]", (int)owner,
                last_err);
  ck_assert_msg(private_heap, "the second process is not on a private heap of its own: [%s]", out);
  ck_assert_msg(quiet, "without SHMHEAP_VERBOSE, not silent: exit %d [%s]", quiet_rc, R.err);
  rc = run_helper("churn", "100", venv);
  tu_rm_key(key);
  ck_assert_msg(rc == 0, "the heap is unusable after its owner was killed: exit %d [%s]", rc, R.err);
  ck_assert_msg(strstr(R.err, "left by a crash") != NULL, "not recovered as crashed: [%s]", R.err);
}
END_TEST

/* ---- verbose output --------------------------------------------------------------- */

START_TEST(t_verbose_lines) {
  const char *env[] = {"SHMHEAP_SIZE=16M", NULL};
  int rc = run_helper("info", NULL, env);
  ck_assert_msg(rc == 0, "exit %d, stderr [%s]", rc, R.err);
  char line[1024];
  attach_line(line, sizeof line);
  ck_assert_msg(strncmp(line, "libshmheap: attached", 20) == 0, "[%s]", line);
  field(line, "key");
  field(line, "shmid");
  ck_assert_msg(strstr(line, "addr=0x") != NULL, "no addr=0x in [%s]", line);
  ck_assert_uint_eq(field(line, "addr"), 0x200000000000ULL);
  ck_assert_uint_eq(field(line, "size"), 16 * MiB);
  ck_assert_msg(tu_find_line(R.err, "libshmheap: exit", line, sizeof line), "no exit line: [%s]", R.err);
  ck_assert_msg(strncmp(line, "libshmheap: exit", 16) == 0, "[%s]", line);
  ck_assert_uint_eq(field(line, "pid"), (unsigned)R.pid);
  field(line, "in_use");
  ck_assert_uint_gt(field(line, "nmalloc"), 0);
  field(line, "nfree");
  ck_assert_int_eq(tu_count_lines(R.err), 2);

  /* without SHMHEAP_VERBOSE nothing is printed */
  const char *argv[] = {helper(), "info", NULL};
  const char *quiet[] = {"SHMHEAP_SIZE=16M", NULL};
  rc = tu_run(argv, quiet, 1, 20000, &R);
  ck_assert_int_eq(rc, 0);
  ck_assert_msg(R.err[0] == 0, "stderr without SHMHEAP_VERBOSE: [%s]", R.err);
}
END_TEST

/* ---- sizes and addresses ----------------------------------------------------------- */

struct good_size {
  const char *value;
  unsigned long long bytes;
};
static const struct good_size good_sizes[] = {
    {"4M", 4 * MiB},           {"5000K", 5000 * 1024ULL}, {"16M", 16 * MiB},
    {"8388608", 8 * MiB},      {"1G", 1024 * MiB},       {"2T", 2ULL << 40},
};

START_TEST(t_size_ok) {
  char kv[64], want[64];
  snprintf(kv, sizeof kv, "SHMHEAP_SIZE=%s", good_sizes[_i].value);
  const char *env[] = {kv, NULL};
  int rc = run_helper("info", NULL, env);
  ck_assert_msg(rc == 0, "%s: exit %d, stderr [%s]", kv, rc, R.err);
  /* the library may round up to its 2 MiB granularity, no more */
  unsigned long long size = 0, segsz = 0, want_b = good_sizes[_i].bytes;
  ck_assert_msg(tu_field(R.out, "size", &size) && tu_field(R.out, "segsz", &segsz), "[%s]", R.out);
  ck_assert_msg(size >= want_b && size < want_b + 2 * MiB, "%s: heap size %llu", kv, size);
  ck_assert_msg(segsz == size, "%s: the SysV segment has %llu bytes, the heap says %llu", kv, segsz, size);
  (void)want;
}
END_TEST

/* Filled twice by one process: ENOMEM each time, and the first failure says
 * on stderr, once, that the heap is full and SHMHEAP_SIZE is the limit. */
START_TEST(t_small_heap_exhausted) {
  static const char *sizes[] = {"SHMHEAP_SIZE=4M", "SHMHEAP_SIZE=8M"};
  static const char *now[] = {"(now 4 MiB)", "(now 8 MiB)"};
  for (int i = 0; i < 2; i++) {
    const char *env[] = {sizes[i], NULL};
    int rc = run_helper("exhaust", NULL, env);
    ck_assert_msg(rc == 0, "%s: filling the heap: exit %d%s, stderr [%s] stdout [%s]", sizes[i], rc,
                  R.timed_out ? " (hung)" : "", R.err, R.out);
    int full = 0;
    for (const char *p = R.err; (p = strstr(p, "the heap is full")) != NULL; p++) full++;
    char line[1024];
    ck_assert_msg(full == 1 && tu_find_line(R.err, "libshmheap: pid ", line, sizeof line),
                  "%s: not one 'libshmheap: pid ...: the heap is full' line for two fills: [%s]", sizes[i], R.err);
    ck_assert_msg(strstr(line, "the heap is full") && strstr(line, "SHMHEAP_SIZE") && strstr(line, now[i]),
                  "%s: the line does not say the heap is full and name SHMHEAP_SIZE %s: [%s]", sizes[i], now[i], line);
  }
}
END_TEST

/* Memory freed in one size serves every other: an 8 MiB heap filled with
 * 64-byte blocks and emptied (in order, reversed, shuffled) gives a 1 MiB
 * block and as many bytes of 100-byte blocks (less what one span of each
 * class kept, and the large block's pages). */
static void check_reuse(const char *mode, const char *arg) {
  const char *env[] = {"SHMHEAP_SIZE=8M", NULL};
  int rc = run_helper(mode, arg, env);
  ck_assert_msg(rc == 0, "%s %s: exit %d%s, stderr [%s] stdout [%s]", mode, arg, rc, R.timed_out ? " (hung)" : "", R.err,
                R.out);
  unsigned long long b64 = 0, b100 = 0;
  const char *at = strstr(R.out, "bytes64=");
  ck_assert_msg(at && sscanf(at, "bytes64=%llu bytes100=%llu", &b64, &b100) == 2, "%s: output [%s]", mode, R.out);
  ck_assert_msg(b64 > 6ull << 20 && b100 >= b64 * 9 / 10, "%s %s: %llu bytes of 64-byte blocks, then only %llu of 100-byte ones",
                mode, arg, b64, b100);
}

static const char *const reuse_orders[] = {"fwd", "rev", "random"};
START_TEST(t_freed_reusable) { check_reuse("reuse", reuse_orders[_i]); }
END_TEST

/* The same when another thread frees the blocks: the spans it empties are
 * the maker's, which it never allocates from again in that size.  "owner":
 * the maker, still alive, then asks for other sizes; "exited": the maker
 * has exited (its slot released) and the freeing thread asks. */
static const char *const reuse_remote_who[] = {"owner", "exited"};
START_TEST(t_freed_remote_reusable) { check_reuse("reuse-remote", reuse_remote_who[_i]); }
END_TEST

/* The start-up re-exec (through /proc/self/exe, without address
 * randomization) keeps the process's name: ps, top, pgrep -x and pidof
 * show helper_env, not "exe". */
START_TEST(t_reexec_keeps_name) {
  int key = tu_key(30);
  char kv[64];
  snprintf(kv, sizeof kv, "SHMHEAP_KEY=0x%x", (unsigned)key);
  const char *env[] = {kv, "SHMHEAP_SIZE=16M", NULL};
  tu_rm_key(key);
  int rc = run_helper("name", NULL, env);
  tu_rm_key(key);
  ck_assert_msg(rc == 0, "exit %d, stderr [%s]", rc, R.err);
  if (!strstr(R.out, "execfn=/proc/self/exe")) {
    printf("check_env: re-exec keeps the name: not re-executed here (address randomization off?): [%s]\n", R.out);
    return;
  }
  ck_assert_msg(strstr(R.out, "name=helper_env ") != NULL, "re-executed, the process is named otherwise: [%s]", R.out);
}
END_TEST

START_TEST(t_default_size) {
  int rc = run_helper("info", NULL, NULL);
  ck_assert_msg(rc == 0, "exit %d, stderr [%s]", rc, R.err);
  char want[64];
  snprintf(want, sizeof want, "size=%zu ", SH_DEFAULT_SIZE);
  ck_assert_msg(strstr(R.out, want) != NULL, "default size: expected %s in [%s]", want, R.out);
}
END_TEST

START_TEST(t_addr_ok) {
  const char *env[] = {"SHMHEAP_ADDR=0x300000000000", "SHMHEAP_SIZE=16M", NULL};
  int rc = run_helper("info", NULL, env);
  ck_assert_msg(rc == 0, "exit %d, stderr [%s]", rc, R.err);
  ck_assert_msg(strstr(R.out, "base=0x300000000000 ") != NULL, "[%s]", R.out);
  char dec[64];
  snprintf(dec, sizeof dec, "SHMHEAP_ADDR=%llu", 0x310000000000ULL);
  const char *env2[] = {dec, "SHMHEAP_SIZE=16M", NULL};
  rc = run_helper("info", NULL, env2);
  ck_assert_msg(rc == 0, "%s: exit %d, stderr [%s]", dec, rc, R.err);
  ck_assert_msg(strstr(R.out, "base=0x310000000000 ") != NULL, "[%s]", R.out);
}
END_TEST

/* With ADDR_NO_RANDOMIZE the executable always loads at the same address:
 * helper_env norand exeaddr says where. */
static unsigned long long exe_addr(void) {
  const char *argv[] = {helper(), "norand", "exeaddr", NULL};
  int rc = tu_run(argv, NULL, 0, 10000, &R);
  ck_assert_msg(rc == 0, "helper_env norand exeaddr: exit %d [%s]", rc, R.err);
  return strtoull(R.out, NULL, 0);
}

/* Runs helper_env norand info, which turns ASLR off and preloads the library
 * itself, with addr (SHMHEAP_ADDR=...), SHMHEAP_SIZE=16M and kv if not NULL. */
static int run_norand_info(const char *addr, const char *kv) {
  char pre[4200];
  snprintf(pre, sizeof pre, "HELPER_PRELOAD=%s", tu_lib());
  const char *argv[] = {helper(), "norand", "info", NULL};
  const char *env[] = {pre, addr, "SHMHEAP_SIZE=16M", kv, NULL};
  return tu_run(argv, env, 0, 10000, &R);
}

START_TEST(t_addr_taken) {
  /* the heap on top of the executable */
  unsigned long long exe = exe_addr();
  ck_assert_msg(exe != 0 && (exe & (2 * MiB - 1)) == 0, "bad exeaddr [%s]", R.out);
  char addr[64];
  snprintf(addr, sizeof addr, "SHMHEAP_ADDR=0x%llx", exe);
  int rc = run_norand_info(addr, NULL);
  check_no_private_leak();
  ck_assert_msg(rc == SH_EXIT_OSERR, "%s over the executable: expected exit %d, got %d; stderr [%s] stdout [%s]",
                addr, SH_EXIT_OSERR, rc, R.err, R.out);
  expect_one_line_error(SH_EXIT_OSERR, "SHMHEAP_ADDR");
}
END_TEST

START_TEST(t_addr_taken_keyed) {
  /* the same with a fresh keyed heap: the key must stay usable afterwards */
  int key = tu_key(20);
  tu_rm_key(key);
  unsigned long long exe = exe_addr();
  char addr[64], kv[64];
  snprintf(addr, sizeof addr, "SHMHEAP_ADDR=0x%llx", exe);
  key_var(kv, sizeof kv, key);
  int rc = run_norand_info(addr, kv);
  ck_assert_msg(rc == SH_EXIT_OSERR, "keyed heap over the executable: expected exit %d, got %d; stderr [%s]",
                SH_EXIT_OSERR, rc, R.err);
  expect_one_line_error(SH_EXIT_OSERR, "SHMHEAP_ADDR");
  int left = shmget(key, 0, 0) >= 0;
  const char *env2[] = {kv, "SHMHEAP_SIZE=16M", NULL};
  rc = run_helper("info", NULL, env2);
  tu_rm_key(key);
  ck_assert_msg(rc == 0,
                "after a failed first attach (SHMHEAP_ADDR taken) the key is unusable: exit %d, stderr [%s]%s",
                rc, R.err, left ? " (the failed run left an unformed segment with that key)" : "");
}
END_TEST

/* ---- segments that are not ours: exit 65, left untouched ------------------------- */

/* Made and filled by a child that is gone when the helper runs: the
 * segment's creator and last attacher are then not the helper's ancestors
 * (another user's segment from an ancestor means an inherited key, and a
 * private heap: check_secure t_inherited_by_other_user). */
static int make_foreign(int key, size_t size, unsigned char fillb) {
  tu_rm_key(key);
  int fd[2];
  ck_assert_int_eq(pipe(fd), 0);
  pid_t pid = fork();
  if (pid == 0) {
    int id = shmget(key, size, IPC_CREAT | IPC_EXCL | 0600);
    unsigned char *p = id >= 0 ? shmat(id, NULL, 0) : (void *)-1;
    if (p != (void *)-1) {
      for (size_t i = 0; i < size; i++) p[i] = (unsigned char)(fillb + i % 251);
      shmdt(p);
    } else {
      id = -1;
    }
    _exit(write(fd[1], &id, sizeof id) == (ssize_t)sizeof id ? 0 : 1);
  }
  close(fd[1]);
  int id = -1;
  ck_assert_int_eq(read(fd[0], &id, sizeof id), (ssize_t)sizeof id);
  close(fd[0]);
  waitpid(pid, NULL, 0);
  ck_assert_msg(id >= 0, "the child could not make and fill segment key 0x%x", (unsigned)key);
  return id;
}

static void expect_untouched(int key, int id, uint64_t hash, size_t size) {
  int now = shmget(key, 0, 0);
  size_t sz = 0;
  uint64_t h = now >= 0 ? tu_shm_hash(now, &sz) : 0;
  tu_rm_key(key);
  ck_assert_msg(now == id, "the segment was removed or replaced (shmid %d, now %d)", id, now);
  ck_assert_msg(sz == size && h == hash, "the segment's bytes changed");
}

/* Runs helper_env info with env (SHMHEAP_KEY=key) against segment id, which
 * it must not touch: same shmid, same bytes afterwards (expect_untouched,
 * which removes the key).  Returns the helper's exit status. */
static int run_on_segment(int key, int id, const char *const *env) {
  size_t sz;
  uint64_t h = tu_shm_hash(id, &sz);
  run_helper("info", NULL, env);
  int code = R.code;
  expect_untouched(key, id, h, sz);
  return code;
}

/* The refusal of a segment that is not ours: exit 65 and a one-line error
 * that names var (if not NULL).  what: the case, for the message. */
static void expect_foreign_exit(int code, const char *var, const char *what) {
  ck_assert_msg(code == SH_EXIT_FOREIGN, "%s: expected exit %d, got %d; stderr [%s]", what,
                SH_EXIT_FOREIGN, code, R.err);
  expect_one_line_error(SH_EXIT_FOREIGN, var);
}

/* helper_env info with env is refused the segment id of key, which stays as
 * it was (and is removed afterwards). */
static void expect_refused(int key, int id, const char *const *env, const char *var, const char *what) {
  expect_foreign_exit(run_on_segment(key, id, env), var, what);
}

/* The header of the heap segment id, attached read-write: shmdt it. */
static struct shm_header *header_rw(int id) {
  struct shm_header *hd = shmat(id, NULL, 0);
  ck_assert_ptr_ne(hd, (void *)-1);
  return hd;
}

START_TEST(t_foreign_segment) {
  int key = tu_key(10);
  int id = make_foreign(key, 16 * MiB, 0xa5);
  char kv[64];
  const char *env[] = {key_var(kv, sizeof kv, key), "SHMHEAP_SIZE=16M", NULL};
  expect_refused(key, id, env, NULL, "foreign segment");
}
END_TEST

START_TEST(t_foreign_small_segment) {
  int key = tu_key(11);
  int id = make_foreign(key, 64 * 1024, 0x11);
  char kv[64];
  snprintf(kv, sizeof kv, "SHMHEAP_KEY=%u", (unsigned)key);
  const char *env[] = {kv, "SHMHEAP_SIZE=16M", NULL};
  expect_refused(key, id, env, NULL, "64 KiB foreign segment");
}
END_TEST

START_TEST(t_other_size) {
  int key = tu_key(12);
  char kv[64];
  const char *e16[] = {key_var(kv, sizeof kv, key), "SHMHEAP_SIZE=16M", NULL};
  const char *e32[] = {kv, "SHMHEAP_SIZE=32M", NULL};
  int id = form_keyed_heap(key, "put", e16);
  expect_refused(key, id, e32, NULL, "heap of 16M opened with SHMHEAP_SIZE=32M");
}
END_TEST

START_TEST(t_other_format) {
  int key = tu_key(13);
  char kv[64];
  const char *env[] = {key_var(kv, sizeof kv, key), "SHMHEAP_SIZE=16M", NULL};
  int id = form_keyed_heap(key, "info", env);
  struct shm_header *hd = header_rw(id);
  int magic_ok = hd->magic == SH_MAGIC && hd->format == SH_FORMAT;
  hd->format = SH_FORMAT + 1; /* a heap of a future format */
  shmdt(hd);
  int code = run_on_segment(key, id, env);
  ck_assert_msg(magic_ok, "the header does not hold SH_MAGIC and SH_FORMAT");
  char what[64];
  snprintf(what, sizeof what, "heap of format %u", SH_FORMAT + 1);
  expect_foreign_exit(code, NULL, what);
}
END_TEST

START_TEST(t_other_magic) {
  int key = tu_key(14);
  char kv[64];
  const char *env[] = {key_var(kv, sizeof kv, key), "SHMHEAP_SIZE=16M", NULL};
  int id = form_keyed_heap(key, "info", env);
  struct shm_header *hd = header_rw(id);
  hd->magic ^= 0xff00ff;
  shmdt(hd);
  expect_refused(key, id, env, NULL, "heap with a wrong magic");
}
END_TEST

START_TEST(t_key_other_addr) {
  int key = tu_key(15);
  char kv[64];
  const char *env[] = {key_var(kv, sizeof kv, key), "SHMHEAP_SIZE=16M", "SHMHEAP_ADDR=0x300000000000", NULL};
  int id = form_keyed_heap(key, "info", env);
  const char *env2[] = {kv, "SHMHEAP_SIZE=16M", "SHMHEAP_ADDR=0x320000000000", NULL};
  expect_refused(key, id, env2, "SHMHEAP_ADDR", "heap formed at 0x300000000000 opened at 0x320000000000");
}
END_TEST

START_TEST(t_key_size_and_addr_unset_reattach) {
  /* a keyed heap keeps its own size and address when the variables are unset */
  int key = tu_key(16);
  char kv[64];
  const char *env[] = {key_var(kv, sizeof kv, key), "SHMHEAP_SIZE=16M", "SHMHEAP_ADDR=0x300000000000", NULL};
  form_keyed_heap(key, "info", env);
  const char *env2[] = {kv, NULL};
  int rc = run_helper("info", NULL, env2);
  tu_rm_key(key);
  ck_assert_msg(rc == 0, "re-attach without SHMHEAP_SIZE/ADDR: exit %d, stderr [%s]", rc, R.err);
  ck_assert_msg(strstr(R.out, "size=16777216 ") != NULL && strstr(R.out, "base=0x300000000000 ") != NULL,
                "re-attached heap: [%s]", R.out);
  ck_assert_msg(strstr(R.err, "re-attached") != NULL, "[%s]", R.err);
}
END_TEST

START_TEST(t_other_user) {
  /* a segment of another user with our key: exit 65, untouched */
  int key = tu_key(17);
  int id = make_foreign(key, 16 * MiB, 0x33);
  struct shmid_ds ds;
  ck_assert_int_eq(shmctl(id, IPC_STAT, &ds), 0);
  if (geteuid() != 0) {
    tu_rm_key(key);
    return; /* only root can give a segment away; as a user every other segment is foreign anyway */
  }
  ds.shm_perm.uid = 65534;
  ds.shm_perm.mode = 0666;
  ck_assert_int_eq(shmctl(id, IPC_SET, &ds), 0);
  char kv[64];
  const char *env[] = {key_var(kv, sizeof kv, key), "SHMHEAP_SIZE=16M", NULL};
  expect_refused(key, id, env, NULL, "another user's segment");
}
END_TEST

/* ---------------------------------------------------------------------------------- */

static void checked_teardown(void) { tu_cleanup(); }

/* TU_TCASE, plus a checked teardown: every test also cleans up after itself
 * in its own process. */
static TCase *env_tcase(Suite *s, const char *name, int timeout) {
  TCase *tc;
  TU_TCASE(s, tc, name, timeout);
  tcase_add_checked_fixture(tc, NULL, checked_teardown);
  return tc;
}

static Suite *env_suite(void) {
  Suite *s = suite_create("env");
  TCase *tc;
  tc = env_tcase(s, "bad_config", 20);
  tcase_add_loop_test(tc, t_bad_config, 0, (int)(sizeof bad_config / sizeof bad_config[0]));
  tcase_add_test(tc, t_name_63_bytes_ok);

  tc = env_tcase(s, "keys", 90);
  tcase_add_test(tc, t_key_decimal_hex_reattach);
  tcase_add_test(tc, t_key_data_persists);
  tcase_add_test(tc, t_key_name);
  tcase_add_test(tc, t_private_removed);
  tcase_add_test(tc, t_key_kill9_recover);
  tcase_add_test(tc, t_key_second_process_private);

  tc = env_tcase(s, "verbose", 20);
  tcase_add_test(tc, t_verbose_lines);

  tc = env_tcase(s, "size_addr", 30);
  tcase_add_loop_test(tc, t_size_ok, 0, (int)(sizeof good_sizes / sizeof good_sizes[0]));
  tcase_add_test(tc, t_default_size);
  tcase_add_test(tc, t_small_heap_exhausted);
  tcase_add_loop_test(tc, t_freed_reusable, 0, 3);
  tcase_add_loop_test(tc, t_freed_remote_reusable, 0, 2);
  tcase_add_test(tc, t_reexec_keeps_name);
  tcase_add_test(tc, t_addr_ok);
  tcase_add_test(tc, t_addr_taken);
  tcase_add_test(tc, t_addr_taken_keyed);

  tc = env_tcase(s, "foreign", 30);
  tcase_add_test(tc, t_foreign_segment);
  tcase_add_test(tc, t_foreign_small_segment);
  tcase_add_test(tc, t_other_size);
  tcase_add_test(tc, t_other_format);
  tcase_add_test(tc, t_other_magic);
  tcase_add_test(tc, t_key_other_addr);
  tcase_add_test(tc, t_key_size_and_addr_unset_reattach);
  tcase_add_test(tc, t_other_user);
  return s;
}

int main(void) {
  tu_init();
  return tu_run_suite(env_suite());
}
