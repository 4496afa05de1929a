/* check_free: a double free or a free into the middle of a block stops the
 * process (shmheap(7), SECURITY): one line on stderr that starts with
 * "libshmheap:" and says "double free of 0x..." (or "invalid pointer 0x..."),
 * then SIGABRT, before any metadata changes.  The keyed heap the process was
 * using is then consistent: the next process re-attaches it and exits 0, and
 * shmheap-dump --check finds nothing wrong.
 *
 * Runs tests/helper_free and tests/helper_free_cxx (NOT linked with the
 * library) with LD_PRELOAD=$SHMHEAP_LIB; this suite is not linked with the
 * library either.  Every case uses a key of its own (tu_key), removed at the
 * end of the case and, whatever happened, by the unchecked teardown. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

static struct tu_result R; /* big: keep it off the stack */

struct bad_free {
  const char *prog;  /* tests/<prog> */
  const char *mode;  /* its first argument */
  const char *size;  /* the block size */
  const char *what;  /* "double free of 0x" or "invalid pointer 0x" */
  int in_child;      /* the process that aborts is a forked child (mode process) */
};

#define SMALL "48"
#define LARGE "1048576"
#define DOUBLE "double free of 0x"
#define INVALID "invalid pointer 0x"

static const struct bad_free cases[] = {
    {"helper_free", "twice", SMALL, DOUBLE, 0},
    {"helper_free", "twice", LARGE, DOUBLE, 0},
    {"helper_free", "thread", SMALL, DOUBLE, 0},
    {"helper_free", "thread", LARGE, DOUBLE, 0},
    {"helper_free", "process", SMALL, DOUBLE, 1},
    {"helper_free", "process", LARGE, DOUBLE, 1},
    {"helper_free", "realloc", SMALL, DOUBLE, 0},
    {"helper_free", "realloc", LARGE, DOUBLE, 0},
    {"helper_free", "interior", SMALL, INVALID, 0},
    {"helper_free", "interior", LARGE, INVALID, 0},
    {"helper_free_cxx", "delete", SMALL, DOUBLE, 0},
    {"helper_free_cxx", "delete", LARGE, DOUBLE, 0},
    {"helper_free_cxx", "delete[]", SMALL, DOUBLE, 0},
    {"helper_free_cxx", "delete[]", LARGE, DOUBLE, 0},
    {"helper_free_cxx", "sized", SMALL, DOUBLE, 0},
    {"helper_free_cxx", "sized", LARGE, DOUBLE, 0},
};
#define NCASES ((int)(sizeof cases / sizeof cases[0]))

static int run_prog(const char *prog, const char *mode, const char *size, const char *const *env) {
  char rel[64], path[4096];
  snprintf(rel, sizeof rel, "tests/%s", prog);
  tu_bpath(rel, path, sizeof path);
  const char *argv[] = {path, mode, size, NULL};
  return tu_run(argv, env, 1, 20000, &R);
}

/* The stderr line that reports the bad free: contains what, starts with
 * "libshmheap:".  1 if there is one. */
static int reported(const char *what, char *line, size_t len) {
  return tu_find_line(R.err, what, line, len) && strncmp(line, "libshmheap:", 11) == 0;
}

START_TEST(t_bad_free) {
  const struct bad_free *c = &cases[_i];
  char label[128];
  snprintf(label, sizeof label, "%s %s %s", c->prog, c->mode, c->size);
  int key = tu_key(_i);
  tu_rm_key(key);
  char kv[64];
  snprintf(kv, sizeof kv, "SHMHEAP_KEY=0x%x", (unsigned)key);
  const char *env[] = {kv, "SHMHEAP_SIZE=64M", c->in_child ? "SHMHEAP_FORK=share" : NULL, NULL};

  /* 1. The bad free. */
  int rc = run_prog(c->prog, c->mode, c->size, env);
  static char out1[sizeof R.out], err1[sizeof R.err];
  memcpy(out1, R.out, sizeof out1);
  memcpy(err1, R.err, sizeof err1);
  char line[4096] = "";
  int said = reported(c->what, line, sizeof line);
  int ptr_said = strstr(R.out, "ptr=0x") != NULL;
  int aborted = c->in_child ? rc == 0 && strstr(R.out, "child=signal:6") != NULL : rc == 128 + SIGABRT;
  int timed_out = R.timed_out;

  /* 2. The next process on the heap. */
  int rc2 = -1;
  static char err2[sizeof R.err];
  if (!timed_out) {
    rc2 = run_prog(c->prog, "ok", NULL, env);
    memcpy(err2, R.err, sizeof err2);
  }

  /* 3. shmheap-dump --check. */
  int rc3 = -1;
  static char out3[sizeof R.out], err3[sizeof R.err];
  if (rc2 == 0) {
    char dump[4096], hexkey[32];
    tu_bpath("tools/shmheap-dump", dump, sizeof dump);
    snprintf(hexkey, sizeof hexkey, "0x%x", (unsigned)key);
    const char *argv[] = {dump, "--check", hexkey, NULL};
    rc3 = tu_run(argv, NULL, 0, 30000, &R);
    memcpy(out3, R.out, sizeof out3);
    memcpy(err3, R.err, sizeof err3);
  }
  tu_rm_key(key);

  ck_assert_msg(!timed_out, "%s: did not finish in 20 s; stdout [%s] stderr [%s]", label, out1, err1);
  ck_assert_msg(ptr_said, "%s: the helper did not get to the bad free: exit %d, stdout [%s] stderr [%s]", label, rc,
                out1, err1);
  ck_assert_msg(!strstr(out1, "survived"), "%s: the process went on after the bad free (exit %d); stderr [%s]",
                label, rc, err1);
  ck_assert_msg(said, "%s: no stderr line \"libshmheap: ...%s...\": [%s]", label, c->what, err1);
  ck_assert_msg(aborted, "%s: not stopped with SIGABRT: exit %d, stdout [%s] stderr [%s]", label, rc, out1, err1);
  ck_assert_msg(rc2 == 0, "%s: the next process on the heap: exit %d, stderr [%s]", label, rc2, err2);
  ck_assert_msg(rc3 == 0, "%s: shmheap-dump --check after the bad free and a restart: exit %d [%s] [%s]", label, rc3,
                out3, err3);
}
END_TEST

/* A write into a freed block (use after free) that overwrites its free-list
 * link: the link is encoded and checked when followed, so a later malloc
 * stops the process with a "libshmheap:" line naming the block (0x...) and
 * SIGABRT, instead of handing out or writing through a wild pointer.  The
 * heap is damaged by the program here, so only the stop is checked. */
START_TEST(t_uaf_link) {
  int key = tu_key(200);
  tu_rm_key(key);
  char kv[64];
  snprintf(kv, sizeof kv, "SHMHEAP_KEY=0x%x", (unsigned)key);
  const char *env[] = {kv, "SHMHEAP_SIZE=64M", NULL};
  int rc = run_prog("helper_free", "uaf", SMALL, env);
  tu_rm_key(key);
  ck_assert_msg(!R.timed_out, "uaf: did not finish in 20 s; stdout [%s] stderr [%s]", R.out, R.err);
  ck_assert_msg(strstr(R.out, "ptr=0x") != NULL, "uaf: the helper did not get to the write: exit %d [%s] [%s]", rc,
                R.out, R.err);
  ck_assert_msg(!strstr(R.out, "survived"), "uaf: 16 mallocs went on over a corrupt free-list link; stderr [%s]",
                R.err);
  char line[4096];
  ck_assert_msg(tu_find_line(R.err, "libshmheap:", line, sizeof line) && strstr(line, "0x") != NULL,
                "uaf: no 'libshmheap: ...0x...' line naming the block: exit %d, stderr [%s]", rc, R.err);
  ck_assert_msg(rc == 128 + SIGABRT, "uaf: not stopped with SIGABRT: exit %d, stderr [%s]", rc, R.err);
}
END_TEST

int main(void) {
  tu_init();
  Suite *s = suite_create("free");
  TCase *tc;
  TU_TCASE(s, tc, "bad_free", 90);
  tcase_add_loop_test(tc, t_bad_free, 0, NCASES);
  TU_TCASE(s, tc, "corrupt_link", 30);
  tcase_add_test(tc, t_uaf_link);
  return tu_run_suite(s);
}
