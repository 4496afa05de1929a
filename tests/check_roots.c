/* Named roots: set, update, get, remove, limits and errors, and a root set
 * by a share-mode child seen by its parent. */
#include <check.h>
#include <errno.h>
#include <shmheap.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int remove_each(void *ctx, const char *name, void *ptr) {
  (void)ptr;
  char copy[SHMHEAP_ROOT_NAME_MAX + 1];
  snprintf(copy, sizeof copy, "%s", name);
  if (shmheap_root_remove(copy) == 0) (*(int *)ctx)++;
  return 0;
}

static void setup(void) {
  int n = 0;
  shmheap_root_each(remove_each, &n);
}

START_TEST(t_set_get_update_remove) {
  char *a = malloc(100), *b = malloc(200000);
  strcpy(a, "state");
  ck_assert_int_eq(shmheap_root_set("sessions", a), 0);
  ck_assert_ptr_eq(shmheap_root_get("sessions"), a);
  ck_assert_str_eq((char *)shmheap_root_get("sessions"), "state");
  ck_assert_int_eq(shmheap_root_set("sessions", b), 0); /* update in place */
  ck_assert_ptr_eq(shmheap_root_get("sessions"), b);
  ck_assert_int_eq(shmheap_root_set("sessions2", a), 0); /* a longer name is another root */
  ck_assert_ptr_eq(shmheap_root_get("sessions2"), a);
  ck_assert_ptr_eq(shmheap_root_get("sessions"), b);
  errno = 0;
  ck_assert_ptr_null(shmheap_root_get("session"));
  ck_assert_int_eq(errno, ENOENT);
  ck_assert_int_eq(shmheap_root_remove("sessions"), 0);
  errno = 0;
  ck_assert_ptr_null(shmheap_root_get("sessions"));
  ck_assert_int_eq(errno, ENOENT);
  ck_assert_ptr_eq(shmheap_root_get("sessions2"), a);
  errno = 0;
  ck_assert_int_eq(shmheap_root_remove("sessions"), -1);
  ck_assert_int_eq(errno, ENOENT);
  /* interior pointers are allowed: a root may point at a member */
  ck_assert_int_eq(shmheap_root_set("member", a + 10), 0);
  ck_assert_ptr_eq(shmheap_root_get("member"), a + 10);
  ck_assert_int_eq(shmheap_check(NULL, NULL), 0);
  free(a);
  free(b);
}
END_TEST

START_TEST(t_null_root) {
  ck_assert_int_eq(shmheap_root_set("empty", NULL), 0);
  errno = 1234;
  ck_assert_ptr_null(shmheap_root_get("empty"));
  ck_assert_int_eq(errno, 1234); /* exists, holds NULL: errno untouched */
  ck_assert_int_eq(shmheap_root_remove("empty"), 0);
}
END_TEST

START_TEST(t_bad_arguments) {
  char name[SHMHEAP_ROOT_NAME_MAX + 2];
  int x = 0;
  char *p = calloc(1, 8);
  errno = 0;
  ck_assert_int_eq(shmheap_root_set(NULL, p), -1);
  ck_assert_int_eq(errno, EINVAL);
  errno = 0;
  ck_assert_int_eq(shmheap_root_set("", p), -1);
  ck_assert_int_eq(errno, EINVAL);
  errno = 0;
  ck_assert_int_eq(shmheap_root_set("stack", &x), -1); /* not in the heap */
  ck_assert_int_eq(errno, EINVAL);
  ck_assert_ptr_null(shmheap_root_get("stack"));
  memset(name, 'n', SHMHEAP_ROOT_NAME_MAX);
  name[SHMHEAP_ROOT_NAME_MAX] = 0;
  ck_assert_int_eq(shmheap_root_set(name, p), 0); /* the longest name */
  ck_assert_ptr_eq(shmheap_root_get(name), p);
  ck_assert_int_eq(shmheap_root_remove(name), 0);
  name[SHMHEAP_ROOT_NAME_MAX] = 'n';
  name[SHMHEAP_ROOT_NAME_MAX + 1] = 0;
  errno = 0;
  ck_assert_int_eq(shmheap_root_set(name, p), -1);
  ck_assert_int_eq(errno, ENAMETOOLONG);
  errno = 0;
  ck_assert_ptr_null(shmheap_root_get(name));
  ck_assert_int_eq(errno, ENAMETOOLONG);
  errno = 0;
  ck_assert_int_eq(shmheap_root_remove(NULL), -1);
  ck_assert_int_eq(errno, EINVAL);
  free(p);
}
END_TEST

START_TEST(t_table_full) {
  char *p = calloc(1, 16);
  char name[32];
  for (int i = 0; i < SHMHEAP_ROOT_MAX; i++) {
    snprintf(name, sizeof name, "root-%d", i);
    ck_assert_msg(shmheap_root_set(name, p + (i % 16)) == 0, "root %d: errno %d", i, errno);
  }
  ck_assert_int_eq(shmheap_root_each(NULL, NULL), SHMHEAP_ROOT_MAX);
  errno = 0;
  ck_assert_int_eq(shmheap_root_set("one-too-many", p), -1);
  ck_assert_int_eq(errno, ENOSPC);
  ck_assert_int_eq(shmheap_root_set("root-7", p), 0); /* updating still works */
  ck_assert_int_eq(shmheap_root_remove("root-100"), 0);
  ck_assert_int_eq(shmheap_root_set("one-too-many", p), 0); /* the freed place is reused */
  for (int i = 0; i < SHMHEAP_ROOT_MAX; i++) {
    snprintf(name, sizeof name, "root-%d", i);
    if (i == 100) continue;
    ck_assert_ptr_eq(shmheap_root_get(name), i == 7 ? p : p + (i % 16));
  }
  free(p);
}
END_TEST

/* The supervised-worker model: a worker sharing the heap publishes its
 * state through a root; the parent finds it after the worker is gone. */
START_TEST(t_share_child_sets_root) {
  pid_t pid = shmheap_fork(SHMHEAP_FORK_SHARE);
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    char *s = malloc(64);
    strcpy(s, "made by the worker");
    _exit(shmheap_root_set("worker", s) == 0 ? 0 : 1);
  }
  int st;
  ck_assert_int_eq(waitpid(pid, &st, 0), pid);
  ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  char *s = shmheap_root_get("worker");
  ck_assert_ptr_nonnull(s);
  ck_assert_str_eq(s, "made by the worker");
  ck_assert_int_eq(shmheap_check(NULL, NULL), 0);
}
END_TEST

/* A copy-mode child's roots are its own. */
START_TEST(t_copy_child_root_private) {
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) _exit(shmheap_root_set("copychild", malloc(8)) == 0 ? 0 : 1);
  int st;
  ck_assert_int_eq(waitpid(pid, &st, 0), pid);
  ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  errno = 0;
  ck_assert_ptr_null(shmheap_root_get("copychild"));
  ck_assert_int_eq(errno, ENOENT);
}
END_TEST

int main(void) {
  Suite *s = suite_create("roots");
  TCase *tc = tcase_create("roots");
  tcase_set_timeout(tc, 30);
  tcase_add_checked_fixture(tc, setup, NULL);
  tcase_add_test(tc, t_set_get_update_remove);
  tcase_add_test(tc, t_null_root);
  tcase_add_test(tc, t_bad_arguments);
  tcase_add_test(tc, t_table_full);
  tcase_add_test(tc, t_share_child_sets_root);
  tcase_add_test(tc, t_copy_child_root_private);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
