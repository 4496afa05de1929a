/* Who attaches a keyed heap, and what a process finds when it does
 * (shmheap(7), "Recovery"): clean and crashed origins, inherited variables,
 * SHMHEAP_PROGRAM, SHMHEAP_MODE, SHMHEAP_FRESH and supervised workers.  Every
 * program runs under LD_PRELOAD, as a server would. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/shm.h>
#include <sys/wait.h>
#include <unistd.h>

#include "format.h"
#include "testutil.h"

static struct tu_result R;

static const char *helper(void) {
  static char buf[4096];
  return tu_bpath("tests/helper_recover", buf, sizeof buf);
}

static const char *key_var(char *buf, size_t len, int key) {
  snprintf(buf, len, "SHMHEAP_KEY=%d", key);
  return buf;
}

/* Runs argv[] (helper_recover when argv[0] is NULL) preloaded with env. */
static int run(const char *a1, const char *a2, const char *const *env) {
  const char *argv[] = {helper(), a1, a2, NULL};
  return tu_run(argv, env, 1, 30000, &R);
}

static unsigned long long field(const char *name) {
  char line[4096];
  unsigned long long v = ~0ULL;
  if (tu_find_line(R.out, "origin=", line, sizeof line)) tu_field(line, name, &v);
  return v;
}

static int note_is(const char *text) {
  char want[300];
  snprintf(want, sizeof want, "note=%s ", text);
  return strstr(R.out, want) != NULL;
}

/* Reads fd into buf (NUL-terminated, len bytes at most) until want appears
 * or the pipe ends; buf may already hold text.  1 if want was read. */
static int read_until(int fd, char *buf, size_t len, const char *want) {
  size_t got = strlen(buf);
  ssize_t r;
  while (!strstr(buf, want) && got < len - 1 && (r = read(fd, buf + got, len - 1 - got)) > 0) {
    got += (size_t)r;
    buf[got] = 0;
  }
  return strstr(buf, want) != NULL;
}

/* Starts helper_recover mode preloaded with env and returns its pid once want
 * is on its stdout (the text read so far goes to buf).  With fd, the pipe is
 * left open there for more reading. */
static pid_t start_until(const char *mode, const char *const *env, char *buf, size_t len, const char *want,
                         int *fd) {
  int out[2];
  ck_assert_int_eq(pipe(out), 0);
  char pre[4200];
  char **envp = tu_env(env, 1, pre, sizeof pre);
  pid_t pid = fork();
  if (pid == 0) {
    dup2(out[1], 1);
    close(out[0]);
    char *const argv[] = {(char *)helper(), (char *)mode, NULL};
    execve(helper(), argv, envp);
    _exit(127);
  }
  free(envp);
  close(out[1]);
  buf[0] = 0;
  read_until(out[0], buf, len, want);
  if (fd) *fd = out[0];
  else close(out[0]);
  return pid;
}

static pid_t start_ready(const char *mode, const char *const *env, char *buf, size_t len) {
  return start_until(mode, env, buf, len, "ready", NULL);
}

/* ---- origin: new, clean, crashed ------------------------------------------------ */

START_TEST(t_origin_clean_then_crash) {
  int key = tu_key(1);
  char kv[64];
  const char *env[] = {key_var(kv, sizeof kv, key), "SHMHEAP_SIZE=64M", NULL};
  tu_rm_key(key);
  ck_assert_msg(run("note", "hello", env) == 0, "note: %d [%s]", R.code, R.err);
  ck_assert_msg(field("origin") == SHMHEAP_NEW, "first attach: [%s]", R.out);

  ck_assert_msg(run("state", NULL, env) == 0, "state: %d [%s]", R.code, R.err);
  ck_assert_msg(field("origin") == SHMHEAP_CLEAN && field("dead") == 0, "after a clean exit: [%s]", R.out);
  ck_assert_msg(note_is("hello"), "the root is lost: [%s]", R.out);

  /* A live owner, killed with SIGKILL. */
  char buf[512];
  pid_t pid = start_ready("hold", env, buf, sizeof buf);
  kill(pid, SIGKILL);
  int st;
  tu_wait_timeout(pid, &st, 5000);
  ck_assert_msg(strstr(buf, "ready") != NULL, "the holder did not start: [%s]", buf);

  ck_assert_msg(run("state", NULL, env) == 0, "after kill -9: %d [%s]", R.code, R.err);
  tu_rm_key(key);
  ck_assert_msg(field("origin") == SHMHEAP_CRASHED, "not reported as crashed: [%s]", R.out);
  ck_assert_msg(field("dead") == 1, "dead processes: [%s]", R.out);
  ck_assert_msg(note_is("hello"), "the root is lost after a crash: [%s]", R.out);
}
END_TEST

/* A supervisor whose first worker died keeps the heap, also while it waits
 * to fork the next one: a second instance started then gets a private heap
 * and leaves the heap alone. */
START_TEST(t_supervised_heap_in_use) {
  int key = tu_key(10);
  char kv[64], buf[512];
  const char *env[] = {key_var(kv, sizeof kv, key), "SHMHEAP_SIZE=64M", NULL};
  tu_rm_key(key);
  int fd;
  pid_t sup = start_until("supervise-hold", env, buf, sizeof buf, "dying", &fd);
  usleep(500000); /* the worker is dead and reaped; the back-off is 3 s */
  int rc = strstr(buf, "dying") ? run("state", NULL, env) : -1;
  int ready = read_until(fd, buf, sizeof buf, "ready");
  close(fd);
  kill(sup, SIGTERM); /* passed on to the worker; the supervisor then exits */
  int st = 0;
  int waited = tu_wait_timeout(sup, &st, 10000);
  tu_rm_key(key);
  ck_assert_msg(ready, "the second worker did not start: [%s]", buf);
  ck_assert_msg(rc == 0 && field("key") == 0 && field("origin") == SHMHEAP_NEW,
                "a second process during supervision: exit %d, not on a private heap [%s%s]", rc, R.out, R.err);
  ck_assert_msg(waited == 0 && WIFEXITED(st) && WEXITSTATUS(st) == 128 + SIGTERM,
                "the supervisor did not pass SIGTERM on and exit: status 0x%x", st);
}
END_TEST

/* A killed owner that its parent has not reaped yet (a zombie) has left the
 * heap: the next process recovers it instead of being refused. */
START_TEST(t_zombie_owner_is_gone) {
  int key = tu_key(11);
  char kv[64], buf[512];
  const char *env[] = {key_var(kv, sizeof kv, key), "SHMHEAP_SIZE=64M", NULL};
  tu_rm_key(key);
  pid_t pid = start_ready("hold", env, buf, sizeof buf);
  kill(pid, SIGKILL);
  usleep(100000); /* dead, not reaped */
  int rc = run("state", NULL, env);
  int st;
  tu_wait_timeout(pid, &st, 5000);
  tu_rm_key(key);
  ck_assert_msg(strstr(buf, "ready") != NULL, "the holder did not start: [%s]", buf);
  ck_assert_msg(rc == 0 && field("origin") == SHMHEAP_CRASHED, "after the owner became a zombie: %d [%s] [%s]",
                rc, R.out, R.err);
}
END_TEST

/* ---- case 3: programs the server runs ------------------------------------------------ */

/* The server's children inherit LD_PRELOAD and SHMHEAP_KEY: its own
 * executable, a shell with subshells, ls and sort all run normally and
 * silently on private heaps, and the server's heap is untouched. */
START_TEST(t_inherited_key_private) {
  int key = tu_key(2);
  char kv[64], cmd[8192];
  const char *env[] = {key_var(kv, sizeof kv, key), "SHMHEAP_SIZE=64M", NULL};
  tu_rm_key(key);
  ck_assert_msg(run("note", "server", env) == 0, "note: %d [%s]", R.code, R.err);
  snprintf(cmd, sizeof cmd,
           "%s state | sed 's/^/child: /'; x=1; (x=2); echo bash-x=$x; ls / >/dev/null && echo ls-ok; "
           "printf 'b\\na\\n' | sort | tr '\\n' , ; echo; echo personality=$(cat /proc/self/personality)",
           helper());
  int rc = run("system", cmd, env);
  tu_rm_key(key);
  ck_assert_msg(rc == 0, "server: %d [%s] [%s]", rc, R.out, R.err);
  ck_assert_msg(R.err[0] == 0, "the children were not silent: [%s]", R.err);
  ck_assert_msg(strstr(R.out, "child: origin=0 ") && strstr(R.out, " key=0 note=- "),
                "the server's own executable, run by it, did not get a private heap: [%s]", R.out);
  ck_assert_msg(strstr(R.out, "bash-x=1") && strstr(R.out, "ls-ok") && strstr(R.out, "a,b,"),
                "shell, ls or sort misbehaved: [%s]", R.out);
  ck_assert_msg(strstr(R.out, "system=0"), "[%s]", R.out);
  /* The server runs without address randomization (see t_cxx_vtables_restart);
   * the programs it runs must not inherit that. */
  ck_assert_msg(strstr(R.out, "personality=00000000"), "a child runs without ASLR: [%s]", R.out);
}
END_TEST

/* Another program that inherited the key, started while the heap is not in
 * use: a private heap, silently; the heap stays the program's. */
START_TEST(t_other_program_private) {
  int key = tu_key(3);
  char kv[64];
  const char *env[] = {key_var(kv, sizeof kv, key), "SHMHEAP_SIZE=64M", NULL};
  tu_rm_key(key);
  ck_assert_msg(run("note", "mine", env) == 0, "note: %d [%s]", R.code, R.err);
  const char *argv[] = {"/bin/sh", "-c", "echo from-sh", NULL};
  int rc = tu_run(argv, env, 1, 10000, &R);
  ck_assert_msg(rc == 0 && strstr(R.out, "from-sh") && R.err[0] == 0, "sh: %d [%s] [%s]", rc, R.out, R.err);
  rc = run("state", NULL, env);
  tu_rm_key(key);
  ck_assert_msg(rc == 0 && field("origin") == SHMHEAP_CLEAN && note_is("mine"),
                "the heap changed hands: %d [%s] [%s]", rc, R.out, R.err);
}
END_TEST

/* A server started through a wrapper script: SHMHEAP_PROGRAM names it, so
 * the shell that runs first does not take the heap. */
START_TEST(t_program_wrapper) {
  int key = tu_key(4);
  char kv[64], cmd[4200], prog[4200];
  snprintf(prog, sizeof prog, "SHMHEAP_PROGRAM=%s", helper());
  const char *env[] = {key_var(kv, sizeof kv, key), "SHMHEAP_SIZE=64M", prog, NULL};
  tu_rm_key(key);
  snprintf(cmd, sizeof cmd, "true; %s note wrapped", helper());
  const char *argv[] = {"/bin/sh", "-c", cmd, NULL};
  int rc = tu_run(argv, env, 1, 10000, &R);
  ck_assert_msg(rc == 0, "wrapper: %d [%s] [%s]", rc, R.out, R.err);
  ck_assert_msg(field("origin") == SHMHEAP_NEW && field("key") == (unsigned long long)key,
                "the server did not get the keyed heap: [%s]", R.out);
  /* By file name, from a fresh start of the same wrapper. */
  const char *env2[] = {kv, "SHMHEAP_SIZE=64M", "SHMHEAP_PROGRAM=helper_recover", NULL};
  snprintf(cmd, sizeof cmd, "true; %s state", helper());
  rc = tu_run(argv, env2, 1, 10000, &R);
  tu_rm_key(key);
  ck_assert_msg(rc == 0 && field("origin") == SHMHEAP_CLEAN && note_is("wrapped"),
                "restart through the wrapper: %d [%s] [%s]", rc, R.out, R.err);
}
END_TEST

/* ---- case 5: code pointers ------------------------------------------------------------- */

static int run_prog(const char *rel, const char *mode, const char *const *env) {
  char path[4096];
  tu_bpath(rel, path, sizeof path);
  const char *argv[] = {path, mode, NULL};
  return tu_run(argv, env, 1, 30000, &R);
}

/* A restarted C++ program calls the virtual functions and function pointers
 * of objects the previous process made, with address randomization on (the
 * library makes the load addresses repeat). */
START_TEST(t_cxx_vtables_restart) {
  int key = tu_key(8);
  char kv[64];
  const char *env[] = {key_var(kv, sizeof kv, key), "SHMHEAP_SIZE=64M", NULL};
  tu_rm_key(key);
  int rc = run_prog("tests/cxx_restart", "make", env);
  ck_assert_msg(rc == 0, "make: %d [%s] [%s]", rc, R.out, R.err);
  for (int i = 0; i < 3; i++) {
    rc = run_prog("tests/cxx_restart", "use", env);
    if (rc != 0) break;
  }
  tu_rm_key(key);
  ck_assert_msg(rc == 0, "a restart cannot use the objects: %d [%s] [%s]", rc, R.out, R.err);
  ck_assert_msg(strstr(R.out, "used 1000 shapes") != NULL, "[%s]", R.out);
}
END_TEST

/* Another build of the program (cxx_restart_b), let in by SHMHEAP_PROGRAM:
 * refused with the reason and the way out; with SHMHEAP_IMAGE=any it gets
 * in (and would be on its own with the code pointers). */
START_TEST(t_image_rebuilt_refused) {
  int key = tu_key(9);
  char kv[64];
  const char *env[] = {key_var(kv, sizeof kv, key), "SHMHEAP_SIZE=64M", "SHMHEAP_PROGRAM=cxx_restart", NULL};
  tu_rm_key(key);
  int rc = run_prog("tests/cxx_restart", "make", env);
  ck_assert_msg(rc == 0, "make: %d [%s]", rc, R.err);
  const char *envb[] = {kv, "SHMHEAP_SIZE=64M", "SHMHEAP_PROGRAM=cxx_restart_b", NULL};
  rc = run_prog("tests/cxx_restart_b", "use", envb);
  int refused = rc == SH_EXIT_FOREIGN && strstr(R.err, "another build") && strstr(R.err, "SHMHEAP_IMAGE=any") &&
                tu_count_lines(R.err) == 1 && R.out[0] == 0;
  static char err[sizeof R.err];
  memcpy(err, R.err, sizeof err);
  /* The refused process left the heap as it found it: a clean restart. */
  rc = run("state", NULL, (const char *[]){kv, "SHMHEAP_SIZE=64M", "SHMHEAP_PROGRAM=helper_recover",
                                           "SHMHEAP_IMAGE=any", NULL});
  int clean = rc == 0 && field("origin") == SHMHEAP_CLEAN;
  tu_rm_key(key);
  ck_assert_msg(refused, "another build was not refused as it should: [%s]", err);
  ck_assert_msg(clean, "after the refusal: %d [%s] [%s]", rc, R.out, R.err);
}
END_TEST

/* ---- free pages ------------------------------------------------------------------------ */

/* The resident bytes of the segment with this key (/proc/sysvipc/shm), or -1. */
static long long shm_rss(int key) {
  FILE *f = fopen("/proc/sysvipc/shm", "r");
  if (!f) return -1;
  char line[512];
  long long rss = -1;
  while (fgets(line, sizeof line, f)) {
    long long k, v[13];
    if (sscanf(line, "%lld %lld %llo %lld %lld %lld %lld %lld %lld %lld %lld %lld %lld %lld %lld", &k, &v[0], &v[1],
               &v[2], &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &v[9], &v[10], &v[11], &v[12], &rss) == 15 &&
        k == key)
      break;
    rss = -1;
  }
  fclose(f);
  return rss;
}

/* The last process to leave a keyed heap hands back its free pages: a heap
 * left behind holds what is live, not what a process once used. */
START_TEST(t_last_leaves_no_free_pages) {
  int key = tu_key(12);
  char kv[64];
  const char *env[] = {key_var(kv, sizeof kv, key), "SHMHEAP_SIZE=1G", NULL};
  tu_rm_key(key);
  int rc = run("free-exit", "128", env);
  unsigned long long dirty = 0;
  char line[256];
  if (tu_find_line(R.out, "dirty=", line, sizeof line)) tu_field(line, "dirty", &dirty);
  long long rss = shm_rss(key);
  tu_rm_key(key);
  ck_assert_msg(rc == 0, "free-exit: %d [%s]", R.code, R.err);
  ck_assert_msg(dirty >= 64ull << 20, "128 MiB freed, but only %llu bytes of free pages were held [%s]", dirty, R.out);
  ck_assert_msg(rss >= 0 && rss <= 16ll << 20, "the heap left behind holds %lld resident bytes (%llu were free)", rss,
                dirty);
}
END_TEST

/* ---- case 6: permissions -------------------------------------------------------------- */

START_TEST(t_mode) {
  int key = tu_key(5);
  char kv[64];
  const char *env[] = {key_var(kv, sizeof kv, key), "SHMHEAP_SIZE=64M", "SHMHEAP_MODE=0640", NULL};
  tu_rm_key(key);
  ck_assert_msg(run("state", NULL, env) == 0, "%d [%s]", R.code, R.err);
  struct shmid_ds ds;
  int id = shmget(key, 0, 0);
  ck_assert_int_ge(id, 0);
  ck_assert_int_eq(shmctl(id, IPC_STAT, &ds), 0);
  unsigned mode = ds.shm_perm.mode & 0777;
  tu_rm_key(key);
  ck_assert_msg(mode == 0640, "SHMHEAP_MODE=0640 made mode 0%o", mode);

  const char *def[] = {kv, "SHMHEAP_SIZE=64M", NULL};
  ck_assert_msg(run("state", NULL, def) == 0, "%d [%s]", R.code, R.err);
  id = shmget(key, 0, 0);
  ck_assert_int_eq(shmctl(id, IPC_STAT, &ds), 0);
  mode = ds.shm_perm.mode & 0777;
  ck_assert_msg(mode == 0600, "the default mode is 0%o, not 0600", mode);

  /* Writable by others (someone else's doing): refused, left alone. */
  ds.shm_perm.mode = 0666;
  ck_assert_int_eq(shmctl(id, IPC_SET, &ds), 0);
  int rc = run("state", NULL, def);
  int still = shmget(key, 0, 0) == id;
  const char *ok[] = {kv, "SHMHEAP_SIZE=64M", "SHMHEAP_MODE=0666", NULL};
  int rc2 = run("state", NULL, ok);
  tu_rm_key(key);
  ck_assert_msg(rc == SH_EXIT_FOREIGN, "a world-writable heap: exit %d [%s]", rc, R.err);
  ck_assert_msg(still, "the refused segment was removed");
  ck_assert_msg(rc2 == 0, "SHMHEAP_MODE=0666 does not accept it: %d [%s]", rc2, R.err);
}
END_TEST

/* ---- case 7: SHMHEAP_FRESH --------------------------------------------------------------- */

START_TEST(t_fresh) {
  int key = tu_key(6);
  char kv[64];
  const char *env[] = {key_var(kv, sizeof kv, key), "SHMHEAP_SIZE=64M", NULL};
  const char *fresh[] = {kv, "SHMHEAP_SIZE=64M", "SHMHEAP_FRESH=1", NULL};
  tu_rm_key(key);
  ck_assert_msg(run("note", "old", env) == 0, "%d [%s]", R.code, R.err);
  int old_id = shmget(key, 0, 0);
  int rc = run("state", NULL, fresh);
  int new_id = shmget(key, 0, 0);
  tu_rm_key(key);
  ck_assert_msg(rc == 0, "SHMHEAP_FRESH=1: %d [%s]", rc, R.err);
  ck_assert_msg(field("origin") == SHMHEAP_NEW && note_is("-"), "not a fresh heap: [%s]", R.out);
  ck_assert_msg(old_id != new_id, "the old segment is still the heap");
}
END_TEST

/* ---- supervised workers ------------------------------------------------------------------ */

/* Workers kill themselves while two threads churn the heap (so the kill often
 * lands inside malloc/free, with a lock held or a thread heap mid-edit); each
 * new worker checks the heap and every block the dead ones left. */
START_TEST(t_supervise) {
  int key = tu_key(7);
  char kv[64];
  const char *env[] = {key_var(kv, sizeof kv, key), "SHMHEAP_SIZE=256M", NULL};
  tu_rm_key(key);
  int rc = run("supervise", "5", env);
  tu_rm_key(key);
  ck_assert_msg(rc == 0, "supervisor: exit %d [%s] [%s]", rc, R.out, R.err);
  unsigned long long repairs = 0, gen = 0;
  char line[256];
  ck_assert_msg(tu_find_line(R.out, "done", line, sizeof line) && tu_field(line, "repairs", &repairs) &&
                    tu_field(line, "gen", &gen),
                "no worker finished: [%s]", R.out);
  printf("supervise: %llu workers, %llu kills, %llu of them repaired\n", gen, gen - 1, repairs);
  ck_assert_msg(repairs >= 5, "%llu kills, %llu repairs: the kills did not land inside the allocator", gen - 1,
                repairs);
}
END_TEST

int main(void) {
  tu_init();
  Suite *s = suite_create("recover");
  TCase *tc;
  TU_TCASE(s, tc, "origin", 60);
  tcase_add_test(tc, t_origin_clean_then_crash);
  tcase_add_test(tc, t_supervised_heap_in_use);
  tcase_add_test(tc, t_zombie_owner_is_gone);
  TU_TCASE(s, tc, "who", 60);
  tcase_add_test(tc, t_inherited_key_private);
  tcase_add_test(tc, t_other_program_private);
  tcase_add_test(tc, t_program_wrapper);
  TU_TCASE(s, tc, "image", 60);
  tcase_add_test(tc, t_cxx_vtables_restart);
  tcase_add_test(tc, t_image_rebuilt_refused);
  TU_TCASE(s, tc, "free pages", 60);
  tcase_add_test(tc, t_last_leaves_no_free_pages);
  TU_TCASE(s, tc, "perm", 60);
  tcase_add_test(tc, t_mode);
  tcase_add_test(tc, t_fresh);
  TU_TCASE(s, tc, "supervise", 300);
  tcase_add_test(tc, t_supervise);
  return tu_run_suite(s);
}
