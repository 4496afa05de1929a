/* check_secure: shmheap(7), SECURITY.
 *
 *   ownership     a keyed segment is attached only if its owner (shm_perm.uid),
 *                 its creator (shm_perm.cuid) and the heap's recorded creator
 *                 (shm_header.creator_uid) are this user and its mode gives
 *                 group and others nothing beyond SHMHEAP_MODE; otherwise exit
 *                 65 with one line naming the shmid, the uids, the mode and
 *                 "left untouched", and the segment is left as it was.  The
 *                 same for SHMHEAP_FRESH=1 and shmheap-dump --remove.
 *   secure_exec   set-user-ID, set-group-ID and file-capability programs
 *                 ignore every SHMHEAP_* variable (a private heap, mode 0600,
 *                 no key, no re-exec), and never loop re-executing.
 *   reexec        the re-exec is marked with SHMHEAP_REEXEC=<pid> and happens
 *                 at most once; the mark never reaches the program or its
 *                 children.
 *
 * Cases that need a second user run as root only: the suite creates one
 * (useradd shmheap-t<pid>), runs as it with setpriv (or runuser), and deletes
 * it at the end, also when a case fails or the suite is interrupted.  As
 * another user, those cases print why they are skipped and the others run.
 *
 * Programs: tests/helper_env (not linked with the library, run with
 * LD_PRELOAD), tests/secure_prog (linked with the library, -no-install, rpath
 * to src/.libs: copies of it run from a temporary directory on a file system
 * that honours set-user-ID bits) and tools/shmheap-dump.  The suite itself is
 * not linked with the library.  Every segment has a key of this run
 * (tu_key), removed at the end of its case and by the unchecked teardown. */
#include <check.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/personality.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "format.h" /* struct shm_header, exit statuses, defaults */
#include "shmheap.h"
#include "testutil.h"

static struct tu_result R; /* big: keep it off the stack */
static pid_t main_pid;

/* ---- the second user ------------------------------------------------------------ */

static int have_b;          /* the second user exists */
static char b_name[64];
static uid_t b_uid;
static gid_t b_gid;
static char no_b[256];      /* why there is none */

static int run_quiet(const char *const argv[]) {
  static struct tu_result q;
  int rc = tu_run(argv, NULL, 0, 60000, &q);
  if (rc != 0) fprintf(stderr, "check_secure: %s: exit %d: %s%s\n", argv[0], rc, q.err, q.out);
  return rc;
}

static const char *find_tool(const char *name, char *buf, size_t len) {
  static const char *const dirs[] = {"/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/sbin",
                                     "/usr/local/bin"};
  for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
    snprintf(buf, len, "%s/%s", dirs[i], name);
    if (access(buf, X_OK) == 0) return buf;
  }
  return NULL;
}

static void user_delete(void) {
  if (getpid() != main_pid || !have_b) return;
  have_b = 0;
  char tool[256];
  if (!find_tool("userdel", tool, sizeof tool)) {
    fprintf(stderr, "check_secure: no userdel: delete user %s by hand\n", b_name);
    return;
  }
  const char *argv[] = {tool, b_name, NULL};
  if (run_quiet(argv) != 0) {
    const char *force[] = {tool, "-f", b_name, NULL};
    if (run_quiet(force) != 0) fprintf(stderr, "check_secure: could not delete user %s\n", b_name);
  }
}

static void user_create(void) {
  if (geteuid() != 0) {
    snprintf(no_b, sizeof no_b, "not root (euid %d): cannot create a second user or give a segment away",
             (int)geteuid());
    return;
  }
  char tool[256];
  if (!find_tool("useradd", tool, sizeof tool)) {
    snprintf(no_b, sizeof no_b, "running as root, but there is no useradd");
    return;
  }
  snprintf(b_name, sizeof b_name, "shmheap-t%d", (int)getpid());
  const char *argv[] = {tool, "-M", "-N", "-s", "/usr/sbin/nologin", b_name, NULL};
  if (run_quiet(argv) != 0) {
    snprintf(no_b, sizeof no_b, "running as root, but useradd %s failed", b_name);
    return;
  }
  have_b = 1; /* from here on, user_delete removes it */
  struct passwd *pw = getpwnam(b_name);
  if (!pw) {
    snprintf(no_b, sizeof no_b, "useradd %s succeeded but getpwnam does not find it", b_name);
    user_delete();
    return;
  }
  b_uid = pw->pw_uid;
  b_gid = pw->pw_gid;
}

/* ---- the directory for the set-user-ID copies -------------------------------------- */

static char sec_dir[4096];   /* <base>/shmheap-secure-<pid>: the copies */
static int sec_dir_suid;     /* its file system honours set-user-ID bits */

/* The first candidate on a file system mounted without nosuid (what
 * findmnt -T shows in OPTIONS) and writable. */
static void pick_dir(void) {
  char cand[4][4096];
  tu_bpath("tests", cand[0], sizeof cand[0]);
  snprintf(cand[1], sizeof cand[1], "%s", tu_builddir());
  snprintf(cand[2], sizeof cand[2], "/var/tmp");
  snprintf(cand[3], sizeof cand[3], "/tmp");
  for (int i = 0; i < 4; i++) {
    struct statvfs sv;
    if (statvfs(cand[i], &sv) != 0 || (sv.f_flag & ST_RDONLY) || access(cand[i], W_OK) != 0) continue;
    if (sv.f_flag & ST_NOSUID) continue;
    snprintf(sec_dir, sizeof sec_dir, "%.4000s/shmheap-secure-%d", cand[i], (int)getpid());
    sec_dir_suid = 1;
    return;
  }
  /* None: the copies still carry the bits (the library reads them), but the
   * kernel does not switch users when they run. */
  snprintf(sec_dir, sizeof sec_dir, "%.4000s/shmheap-secure-%d", cand[0], (int)getpid());
}

static void dir_remove(void) {
  if (!sec_dir[0]) return;
  const char *argv[] = {"rm", "-rf", sec_dir, NULL};
  run_quiet(argv);
}

static void runner_teardown(void) {
  tu_cleanup();
  dir_remove();
}

static void on_signal(int sig) {
  if (getpid() == main_pid) {
    tu_cleanup();
    dir_remove();
    user_delete();
  }
  signal(sig, SIG_DFL);
  raise(sig);
}

static void at_exit(void) {
  if (getpid() != main_pid) return;
  dir_remove();
  user_delete();
}

/* ---- running things --------------------------------------------------------------- */

static const char *helper(void) {
  static char path[4096];
  if (!path[0]) tu_bpath("tests/helper_env", path, sizeof path);
  return path;
}

static const char *dump_tool(void) {
  static char path[4096];
  if (!path[0]) tu_bpath("tools/shmheap-dump", path, sizeof path);
  return path;
}

/* Runs cmd as the second user (as_b) or as this one, with env ("NAME=value",
 * NULL-terminated, may be NULL) and LD_PRELOAD=$SHMHEAP_LIB (preload) given to
 * cmd only, through env(1): setpriv or runuser never run under the library. */
static int run_cmd(int as_b, const char *const cmd[], const char *const env[], int preload, int timeout_ms) {
  const char *argv[64];
  int n = 0;
  char ru[32], rg[32], tool[256], pre[4200];
  if (as_b) {
    if (find_tool("setpriv", tool, sizeof tool)) {
      snprintf(ru, sizeof ru, "--reuid=%d", (int)b_uid);
      snprintf(rg, sizeof rg, "--regid=%d", (int)b_gid);
      argv[n++] = tool;
      argv[n++] = ru;
      argv[n++] = rg;
      argv[n++] = "--clear-groups";
      argv[n++] = "--";
    } else {
      ck_assert_msg(find_tool("runuser", tool, sizeof tool) != NULL, "neither setpriv nor runuser is installed");
      argv[n++] = tool;
      argv[n++] = "-u";
      argv[n++] = b_name;
      argv[n++] = "--";
    }
  }
  argv[n++] = "/usr/bin/env";
  if (preload) {
    snprintf(pre, sizeof pre, "LD_PRELOAD=%s", tu_lib());
    argv[n++] = pre;
  }
  for (; env && *env && n < 48; env++) argv[n++] = *env;
  for (; *cmd && n < 63; cmd++) argv[n++] = *cmd;
  argv[n] = NULL;
  return tu_run(argv, NULL, 0, timeout_ms, &R);
}

/* helper_env info with the key (and more of env), preloaded. */
static int run_helper(int as_b, int key, const char *const more[]) {
  char kv[64];
  snprintf(kv, sizeof kv, "SHMHEAP_KEY=0x%x", (unsigned)key);
  const char *env[16] = {kv};
  int n = 1;
  for (; more && *more && n < 15; more++) env[n++] = *more;
  env[n] = NULL;
  const char *cmd[] = {helper(), "info", NULL};
  return run_cmd(as_b, cmd, env, 1, 20000);
}

static int run_dump_remove(int as_b, int key) {
  char k[32];
  snprintf(k, sizeof k, "0x%x", (unsigned)key);
  const char *cmd[] = {dump_tool(), "--remove", k, NULL};
  return run_cmd(as_b, cmd, NULL, 0, 20000);
}

/* Can the second user run the build's programs and load its library? */
static int b_can_use_build(void) {
  char script[12000];
  snprintf(script, sizeof script, "test -x '%s' && test -r '%s' && test -x '%s'", helper(), tu_lib(), dump_tool());
  const char *cmd[] = {"/bin/sh", "-c", script, NULL};
  return run_cmd(1, cmd, NULL, 0, 10000) == 0;
}

/* 1 if the cases that need the second user can run; prints why not. */
static int need_b(const char *what) {
  if (!have_b) {
    printf("check_secure: %s: skipped: %s\n", what, no_b);
    return 0;
  }
  if (!b_can_use_build()) {
    printf("check_secure: %s: skipped: user %s cannot read the build tree %s (a directory on its path is not "
           "searchable by others)\n",
           what, b_name, tu_builddir());
    return 0;
  }
  return 1;
}

/* ---- segments ---------------------------------------------------------------------- */

/* Forms a keyed heap (as the second user or as this one) and returns its
 * shmid. */
static int form_heap(int as_b, int key) {
  tu_rm_key(key);
  const char *more[] = {"SHMHEAP_SIZE=16M", NULL};
  int rc = run_helper(as_b, key, more);
  int id = shmget(key, 0, 0);
  ck_assert_msg(rc == 0 && id >= 0, "forming the heap of key 0x%x%s: exit %d (shmid %d), stderr [%s]", (unsigned)key,
                as_b ? " as the second user" : "", rc, id, R.err);
  return id;
}

/* Changes owner (uid, gid; -1 keeps) and mode of segment id. */
static void set_perm(int id, long uid, long gid, unsigned mode) {
  struct shmid_ds ds;
  ck_assert_int_eq(shmctl(id, IPC_STAT, &ds), 0);
  if (uid >= 0) ds.shm_perm.uid = (uid_t)uid;
  if (gid >= 0) ds.shm_perm.gid = (gid_t)gid;
  ds.shm_perm.mode = (ds.shm_perm.mode & ~0777u) | mode;
  ck_assert_msg(shmctl(id, IPC_SET, &ds) == 0, "IPC_SET on shmid %d: %s", id, strerror(errno));
}

static void set_header_uid(int id, uint32_t uid) {
  struct shm_header *h = shmat(id, NULL, 0);
  ck_assert_msg(h != (void *)-1, "shmat shmid %d: %s", id, strerror(errno));
  h->creator_uid = uid;
  shmdt(h);
}

/* tok appears in s as a whole word (not inside a longer run of letters and
 * digits). */
static int has_token(const char *s, const char *tok) {
  size_t n = strlen(tok);
  for (const char *p = s; (p = strstr(p, tok)) != NULL; p++) {
    int before = p == s || !isalnum((unsigned char)p[-1]);
    int after = !isalnum((unsigned char)p[n]);
    if (before && after) return 1;
  }
  return 0;
}

static int has_uid(const char *s, unsigned uid) {
  char t[24];
  snprintf(t, sizeof t, "%u", uid);
  return has_token(s, t);
}

static int has_mode(const char *s, unsigned mode) {
  char a[16], b[16];
  snprintf(a, sizeof a, "0%o", mode & 0777);
  snprintf(b, sizeof b, "%o", mode & 0777);
  return has_token(s, a) || has_token(s, b);
}

/* "shmid N" (or "shmid=N"). */
static int has_shmid(const char *s, int id) {
  char a[40], b[40];
  snprintf(a, sizeof a, "shmid %d", id);
  snprintf(b, sizeof b, "shmid=%d", id);
  for (int k = 0; k < 2; k++) {
    const char *t = k ? b : a;
    size_t n = strlen(t);
    for (const char *p = s; (p = strstr(p, t)) != NULL; p++)
      if (!isdigit((unsigned char)p[n])) return 1;
  }
  return 0;
}

/* What a refusal must say, and of which segment. */
struct refusal {
  int key, id;
  unsigned uids[3]; /* every uid the line must name */
  int nuids;
  unsigned mode;    /* the segment's mode, named too */
  const char *also; /* another phrase it must hold, or NULL */
};

static void expect_still_there(int key, int id, uint64_t hash, size_t size, const char *what) {
  int now = shmget(key, 0, 0);
  size_t sz = 0;
  uint64_t h = now >= 0 ? tu_shm_hash(now, &sz) : 0;
  ck_assert_msg(now == id, "%s: the segment was removed or replaced (shmid %d, now %d)", what, id, now);
  ck_assert_msg(sz == size && h == hash, "%s: the segment's bytes changed", what);
}

/* Runs helper_env on the segment of f (as_b: as the second user) with more
 * variables, and checks the refusal: exit 65, one line, the fields of f, the
 * segment untouched.  fields: check the line's contents (not for
 * SHMHEAP_FRESH, whose message the specification leaves open). */
static void expect_refusal(int as_b, const struct refusal *f, const char *const more[], int fields,
                           const char *what) {
  size_t size = 0;
  uint64_t hash = tu_shm_hash(f->id, &size);
  ck_assert_msg(size > 0, "%s: cannot hash shmid %d", what, f->id);
  int rc = run_helper(as_b, f->key, more);
  expect_still_there(f->key, f->id, hash, size, what);
  ck_assert_msg(rc == SH_EXIT_FOREIGN, "%s: expected exit %d, got %d; stderr [%s]", what, SH_EXIT_FOREIGN, rc,
                R.err);
  ck_assert_msg(R.out[0] == 0, "%s: main() ran: stdout [%s]", what, R.out);
  ck_assert_msg(tu_count_lines(R.err) == 1, "%s: stderr is not one line: [%s]", what, R.err);
  ck_assert_msg(strncmp(R.err, "libshmheap: SHMHEAP_KEY=", 24) == 0,
                "%s: stderr does not start with 'libshmheap: SHMHEAP_KEY=': [%s]", what, R.err);
  if (!fields) return;
  ck_assert_msg(has_shmid(R.err, f->id), "%s: the line does not say 'shmid %d': [%s]", what, f->id, R.err);
  for (int i = 0; i < f->nuids; i++)
    ck_assert_msg(has_uid(R.err, f->uids[i]), "%s: the line does not name uid %u: [%s]", what, f->uids[i], R.err);
  ck_assert_msg(has_mode(R.err, f->mode), "%s: the line does not name the mode 0%o: [%s]", what, f->mode, R.err);
  ck_assert_msg(strstr(R.err, "left untouched") != NULL, "%s: the line does not say 'left untouched': [%s]", what,
                R.err);
  if (f->also)
    ck_assert_msg(strstr(R.err, f->also) != NULL, "%s: the line does not say '%s': [%s]", what, f->also, R.err);
  ck_assert_msg(strstr(R.err, "errno") == NULL, "%s: an errno number instead of words: [%s]", what, R.err);
}

/* shmheap-dump --remove of the segment of f: refused (non-zero exit, the
 * shmid and uid named), the segment still there. */
static void expect_remove_refused(int as_b, const struct refusal *f, unsigned uid, const char *what) {
  size_t size = 0;
  uint64_t hash = tu_shm_hash(f->id, &size);
  int rc = run_dump_remove(as_b, f->key);
  expect_still_there(f->key, f->id, hash, size, what);
  ck_assert_msg(rc != 0 && rc != -1, "%s: shmheap-dump --remove: exit %d (stdout [%s] stderr [%s])", what, rc, R.out,
                R.err);
  ck_assert_msg(has_shmid(R.err, f->id), "%s: shmheap-dump --remove does not say 'shmid %d': [%s]", what, f->id,
                R.err);
  ck_assert_msg(has_uid(R.err, uid), "%s: shmheap-dump --remove does not name uid %u: [%s]", what, uid, R.err);
}

/* A uid that is not this one's (for a non-root run). */
static unsigned other_uid(void) {
  if (have_b) return (unsigned)b_uid;
  return geteuid() == 65534 ? 65533u : 65534u;
}

/* ---- ownership ------------------------------------------------------------------------ */

/* Made by the second user, then handed to root with IPC_SET and its header
 * patched to say root formed it: the creator (cuid) is still the second user,
 * who keeps the owner's rights in the kernel.  Root refuses it. */
START_TEST(t_creator_other) {
  if (!need_b("segment created by another user, given to root")) return;
  int key = tu_key(1);
  int id = form_heap(1, key);
  set_perm(id, 0, 0, 0600);
  set_header_uid(id, 0);
  struct shmid_ds ds;
  ck_assert_int_eq(shmctl(id, IPC_STAT, &ds), 0);
  ck_assert_msg(ds.shm_perm.uid == 0 && ds.shm_perm.cuid == b_uid, "IPC_SET: uid %d cuid %d",
                (int)ds.shm_perm.uid, (int)ds.shm_perm.cuid);
  struct refusal f = {key, id, {0, (unsigned)b_uid}, 2, 0600, NULL};
  const char *more[] = {"SHMHEAP_SIZE=16M", NULL};
  expect_refusal(0, &f, more, 1, "cuid is another user");
  const char *fresh[] = {"SHMHEAP_FRESH=1", NULL};
  expect_refusal(0, &f, fresh, 0, "SHMHEAP_FRESH=1 on a segment another user created");
  expect_remove_refused(0, &f, (unsigned)b_uid, "shmheap-dump --remove of a segment another user created");
  tu_rm_key(key);
}
END_TEST

/* Made by this user, then given to another uid with IPC_SET: refused. */
START_TEST(t_owner_other) {
  int key = tu_key(2);
  unsigned other = other_uid();
  if (!have_b) printf("check_secure: segment given to another uid: %s; using uid %u\n", no_b, other);
  int id = form_heap(0, key);
  set_perm(id, other, -1, 0600);
  struct refusal f = {key, id, {other, (unsigned)geteuid()}, 2, 0600, NULL};
  const char *more[] = {"SHMHEAP_SIZE=16M", NULL};
  expect_refusal(0, &f, more, 1, "owner is another uid");
  const char *fresh[] = {"SHMHEAP_FRESH=1", NULL};
  expect_refusal(0, &f, fresh, 0, "SHMHEAP_FRESH=1 on a segment of another uid");
  expect_remove_refused(0, &f, other, "shmheap-dump --remove of a segment of another uid");
  tu_rm_key(key);
}
END_TEST

/* This user's heap whose mode was widened: refused unless SHMHEAP_MODE
 * allows the access, read access included. */
START_TEST(t_mode_wider) {
  int key = tu_key(3);
  unsigned me = (unsigned)geteuid();
  int id = form_heap(0, key);
  static const struct {
    unsigned seg;
    const char *refused_with, *accepted_with;
  } m[] = {
      {0666, NULL, "SHMHEAP_MODE=0666"},
      {0644, NULL, "SHMHEAP_MODE=0644"},
      {0644, "SHMHEAP_MODE=0660", "SHMHEAP_MODE=0664"},
      {0640, NULL, "SHMHEAP_MODE=0640"},
      {0604, "SHMHEAP_MODE=0660", "SHMHEAP_MODE=0606"},
  };
  for (size_t i = 0; i < sizeof m / sizeof m[0]; i++) {
    set_perm(id, -1, -1, m[i].seg);
    struct refusal f = {key, id, {me}, 1, m[i].seg, NULL};
    char what[128];
    snprintf(what, sizeof what, "mode 0%o with %s", m[i].seg, m[i].refused_with ? m[i].refused_with : "the default SHMHEAP_MODE");
    const char *more[] = {"SHMHEAP_SIZE=16M", m[i].refused_with, NULL};
    expect_refusal(0, &f, more, 1, what);
    const char *ok[] = {"SHMHEAP_SIZE=16M", m[i].accepted_with, NULL};
    int rc = run_helper(0, key, ok);
    ck_assert_msg(rc == 0, "mode 0%o with %s: exit %d, stderr [%s]", m[i].seg, m[i].accepted_with, rc, R.err);
    ck_assert_msg(shmget(key, 0, 0) == id, "mode 0%o with %s: the segment was replaced", m[i].seg,
                  m[i].accepted_with);
  }
  tu_rm_key(key);
}
END_TEST

/* This user's segment whose header says another uid formed the heap. */
START_TEST(t_header_uid_other) {
  int key = tu_key(4);
  unsigned me = (unsigned)geteuid(), other = 4242u + (me == 4242u);
  int id = form_heap(0, key);
  set_header_uid(id, other);
  struct refusal f = {key, id, {other, me}, 2, 0600, NULL};
  const char *more[] = {"SHMHEAP_SIZE=16M", NULL};
  expect_refusal(0, &f, more, 1, "header creator_uid is another uid");
  const char *fresh[] = {"SHMHEAP_FRESH=1", NULL};
  expect_refusal(0, &f, fresh, 0, "SHMHEAP_FRESH=1 on a heap another uid formed");
  expect_remove_refused(0, &f, other, "shmheap-dump --remove of a heap another uid formed");
  tu_rm_key(key);
}
END_TEST

/* The second user with the key of root's 0600 heap: it cannot even IPC_STAT
 * the segment; the line still says whose it is (from /proc/sysvipc/shm). */
START_TEST(t_other_user_on_mine) {
  if (!need_b("another user with the key of root's heap")) return;
  int key = tu_key(5);
  int id = form_heap(0, key);
  struct refusal f = {key, id, {0}, 1, 0600, "permission denied"};
  const char *more[] = {"SHMHEAP_SIZE=16M", NULL};
  expect_refusal(1, &f, more, 1, "the second user on root's heap");
  const char *fresh[] = {"SHMHEAP_FRESH=1", NULL};
  expect_refusal(1, &f, fresh, 0, "the second user with SHMHEAP_FRESH=1 on root's heap");
  expect_remove_refused(1, &f, 0, "the second user's shmheap-dump --remove of root's heap");
  /* and root still has its heap */
  const char *ok[] = {"SHMHEAP_SIZE=16M", NULL};
  int rc = run_helper(0, key, ok);
  tu_rm_key(key);
  ck_assert_msg(rc == 0, "root's own heap after the second user was refused: exit %d [%s]", rc, R.err);
}
END_TEST

/* A heap at a key >= 0x80000000, which /proc/sysvipc/shm prints as a
 * negative number, met by the second user: not allowed to IPC_STAT root's
 * 0600 segment, the library and shmheap-dump learn its owner from that file,
 * and still name it (uid 0, shmid, the key as given) rather than calling it
 * unknown. */
START_TEST(t_high_key_other) {
  if (!need_b("another user with root's heap at a key >= 0x80000000")) return;
  int key = tu_key_high(6);
  int id = form_heap(0, key);
  struct refusal f = {key, id, {0}, 1, 0600, "permission denied"};
  const char *more[] = {"SHMHEAP_SIZE=16M", NULL};
  expect_refusal(1, &f, more, 1, "the second user on root's heap at a high key");
  char label[40];
  snprintf(label, sizeof label, "SHMHEAP_KEY=0x%x", (unsigned)key);
  ck_assert_msg(strstr(R.err, label) != NULL, "the refusal does not name %s: [%s]", label, R.err);
  ck_assert_msg(strstr(R.err, "does not say whose") == NULL, "the owner was not found in /proc/sysvipc/shm: [%s]",
                R.err);
  expect_remove_refused(1, &f, 0, "the second user's shmheap-dump --remove of root's heap at a high key");
  tu_rm_key(key);
}
END_TEST

/* A keyed process (root's sh, which forms the heap) starts a program as the
 * second user (setpriv, as su and runuser do), which inherits SHMHEAP_KEY
 * and LD_PRELOAD: like another program, it runs on a private heap,
 * silently (SHMHEAP_VERBOSE says why), and root's heap is left as it was.
 * The same key met by the second user without that ancestry is refused
 * (t_other_user_on_mine). */
START_TEST(t_inherited_by_other_user) {
  if (!need_b("the second user's child of root's keyed process")) return;
  char tool[256];
  if (!find_tool("setpriv", tool, sizeof tool)) {
    printf("check_secure: the second user's child of a keyed process: skipped: no setpriv\n");
    return;
  }
  int key = tu_key(7);
  for (int verbose = 0; verbose < 2; verbose++) {
    char script[9000];
    snprintf(script, sizeof script,
             "%s --reuid=%d --regid=%d --clear-groups -- %s info; echo \"child=$?\"", tool, (int)b_uid,
             (int)b_gid, helper());
    char kv[64];
    snprintf(kv, sizeof kv, "SHMHEAP_KEY=0x%x", (unsigned)key);
    const char *env[] = {kv, "SHMHEAP_SIZE=16M", verbose ? "SHMHEAP_VERBOSE=1" : "SHMHEAP_VERBOSE=0", NULL};
    const char *cmd[] = {"/bin/sh", "-c", script, NULL};
    int rc = run_cmd(0, cmd, env, 1, 20000);
    int id = shmget(key, 0, 0);
    ck_assert_msg(rc == 0, "root's sh with the second user's child: exit %d [%s] [%s]", rc, R.out, R.err);
    ck_assert_msg(strstr(R.out, "child=0") != NULL, "the second user's child did not exit 0: [%s] [%s]", R.out, R.err);
    ck_assert_msg(strstr(R.out, "key=0 ") != NULL && strstr(R.out, "inseg=1") != NULL,
                  "the second user's child is not on a private heap of its own: [%s]", R.out);
    ck_assert_msg(id >= 0, "root's keyed heap is gone");
    if (!verbose)
      ck_assert_msg(strstr(R.err, "libshmheap:") == NULL, "not silent: [%s]", R.err);
    else
      ck_assert_msg(strstr(R.err, "inherited the key") != NULL, "SHMHEAP_VERBOSE=1 does not say why: [%s]", R.err);
  }
  tu_rm_key(key);
}
END_TEST

/* The second user's own heap, its mode cut to 0400 (by IPC_SET): the
 * ownership rule passes (nothing for group or others), the attach for
 * writing is denied: exit 71 and a line that says it is this user's segment
 * and its mode (not "another user's", which would be exit 65).  Root is
 * never denied an attach, so this needs the second user. */
START_TEST(t_own_heap_not_writable) {
  if (!need_b("the second user's own heap made read-only")) return;
  int key = tu_key(7);
  int id = form_heap(1, key);
  set_perm(id, -1, -1, 0400);
  const char *more[] = {"SHMHEAP_SIZE=16M", NULL};
  int rc = run_helper(1, key, more);
  tu_rm_key(key);
  ck_assert_msg(rc == SH_EXIT_OSERR, "exit %d, not %d; stderr [%s]", rc, SH_EXIT_OSERR, R.err);
  ck_assert_msg(strstr(R.err, "is this user's, but its mode does not let its owner write it") != NULL,
                "the line does not say the segment is this user's and not writable: [%s]", R.err);
}
END_TEST

/* ---- secure execution ---------------------------------------------------------------- */

struct copy {
  const char *name;
  unsigned mode;
  int cap;       /* give it cap_net_bind_service+ep */
  int root_only; /* chown to root, setcap: root only */
};
static const struct copy copies[] = {
    {"suid", 04755, 0, 0},
    {"sgid", 02755, 0, 0},
    {"fcap", 0755, 1, 1},
    {"plain", 0755, 0, 0},
};
enum { C_SUID, C_SGID, C_FCAP, C_PLAIN, NCOPIES };

static int copy_ready[NCOPIES];
static char copy_path[NCOPIES][4200];
static char copy_skip[NCOPIES][200];

static void copy_file(const char *from, const char *to) {
  int in = open(from, O_RDONLY | O_CLOEXEC);
  ck_assert_msg(in >= 0, "open %s: %s", from, strerror(errno));
  int out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0700);
  ck_assert_msg(out >= 0, "create %s: %s", to, strerror(errno));
  char buf[65536];
  ssize_t r;
  while ((r = read(in, buf, sizeof buf)) > 0) ck_assert_int_eq(write(out, buf, (size_t)r), r);
  close(in);
  ck_assert_int_eq(close(out), 0);
}

/* The copies of secure_prog in sec_dir. */
static void make_copies(void) {
  char prog[4096];
  tu_bpath("tests/secure_prog", prog, sizeof prog);
  char magic[4] = {0};
  int fd = open(prog, O_RDONLY);
  ck_assert_msg(fd >= 0, "%s: %s (make check builds it)", prog, strerror(errno));
  ck_assert_int_eq(read(fd, magic, 4), 4);
  close(fd);
  ck_assert_msg(!memcmp(magic, "\177ELF", 4), "%s is not an executable (a libtool wrapper? link it with -no-install)",
                prog);
  if (mkdir(sec_dir, 0755) != 0) ck_assert_msg(errno == EEXIST, "mkdir %s: %s", sec_dir, strerror(errno));
  ck_assert_int_eq(chmod(sec_dir, 0755), 0);
  int root = geteuid() == 0;
  for (int i = 0; i < NCOPIES; i++) {
    const struct copy *c = &copies[i];
    copy_ready[i] = 0;
    snprintf(copy_path[i], sizeof copy_path[i], "%.4000s/secure_prog-%s", sec_dir, c->name);
    if (c->root_only && !root) {
      snprintf(copy_skip[i], sizeof copy_skip[i], "not root: cannot give a file capabilities");
      continue;
    }
    char setcap[256];
    if (c->cap && !find_tool("setcap", setcap, sizeof setcap)) {
      snprintf(copy_skip[i], sizeof copy_skip[i], "setcap is not installed (Debian: libcap2-bin)");
      continue;
    }
    copy_file(prog, copy_path[i]);
    if (root) ck_assert_int_eq(chown(copy_path[i], 0, 0), 0);
    ck_assert_int_eq(chmod(copy_path[i], c->mode), 0);
    if (c->cap) {
      const char *argv[] = {setcap, "cap_net_bind_service+ep", copy_path[i], NULL};
      ck_assert_msg(run_quiet(argv) == 0, "setcap cap_net_bind_service+ep %s failed", copy_path[i]);
    }
    struct stat st;
    ck_assert_int_eq(stat(copy_path[i], &st), 0);
    ck_assert_msg((st.st_mode & 07777) == c->mode, "%s: mode 0%o, not 0%o", copy_path[i], st.st_mode & 07777,
                  c->mode);
    copy_ready[i] = 1;
  }
}

struct prog_line {
  unsigned long long uid, euid, gid, egid, key, size, base, mode, fork, norand, inseg;
  int reexec_none;
};

static void parse_prog(const char *what, struct prog_line *l) {
  char line[1024];
  ck_assert_msg(tu_find_line(R.out, "euid=", line, sizeof line), "%s: no line from secure_prog: exit %d [%s] [%s]",
                what, R.code, R.out, R.err);
  unsigned long long key = 0;
  int ok = tu_field(line, "uid", &l->uid) && tu_field(line, "euid", &l->euid) && tu_field(line, "gid", &l->gid) &&
           tu_field(line, "egid", &l->egid) && tu_field(line, "key", &key) && tu_field(line, "size", &l->size) &&
           tu_field(line, "base", &l->base) && tu_field(line, "mode", &l->mode) && tu_field(line, "fork", &l->fork) &&
           tu_field(line, "norand", &l->norand) && tu_field(line, "inseg", &l->inseg);
  ck_assert_msg(ok, "%s: cannot read [%s]", what, line);
  l->key = (unsigned)(int)key;
  l->reexec_none = strstr(line, " reexec=- ") != NULL;
}

/* The key has no segment; if it has, it is removed and the case fails. */
static void expect_no_segment(int key, const char *what) {
  int id = shmget(key, 0, 0);
  if (id >= 0) tu_rm_key(key);
  ck_assert_msg(id < 0, "%s: a segment with SHMHEAP_KEY=0x%x exists (shmid %d, removed now)", what, (unsigned)key,
                id);
}

/* A privileged copy ran and ignored SHMHEAP_*: the defaults, silently. */
static void expect_ignored(const char *what, int key, int rc) {
  ck_assert_msg(!R.timed_out, "%s: still running after 10 s (re-executing in a loop?) [%s]", what, R.err);
  expect_no_segment(key, what);
  ck_assert_msg(rc == 0, "%s: exit %d, stdout [%s] stderr [%s]", what, rc, R.out, R.err);
  struct prog_line l;
  parse_prog(what, &l);
  ck_assert_msg(l.key == 0, "%s: a keyed heap (key 0x%llx): SHMHEAP_KEY was not ignored [%s]", what, l.key, R.out);
  ck_assert_msg(l.size == SH_DEFAULT_SIZE, "%s: heap size %llu, not the default: SHMHEAP_SIZE was used [%s]", what,
                l.size, R.out);
  ck_assert_msg(l.base == SH_DEFAULT_ADDR, "%s: heap at 0x%llx, not the default: SHMHEAP_ADDR was used [%s]", what,
                l.base, R.out);
  ck_assert_msg(l.mode == 0600, "%s: heap mode 0%llo, not 0600 [%s]", what, l.mode, R.out);
  ck_assert_msg(l.fork == SHMHEAP_FORK_COPY, "%s: fork mode %llu: SHMHEAP_FORK was used [%s]", what, l.fork, R.out);
  ck_assert_msg(l.inseg == 1, "%s: malloc is not served from the heap [%s]", what, R.out);
  ck_assert_msg(l.reexec_none, "%s: SHMHEAP_REEXEC in its environment: it re-executed [%s]", what, R.out);
  ck_assert_msg(l.norand == 0, "%s: it runs without address randomization: it re-executed [%s]", what, R.out);
  ck_assert_msg(strstr(R.err, "libshmheap:") == NULL, "%s: the library spoke (SHMHEAP_VERBOSE or an error): [%s]",
                what, R.err);
}

static const char *copy_skipped(int i) {
  if (copy_ready[i]) return NULL;
  printf("check_secure: secure_prog-%s: skipped: %s\n", copies[i].name, copy_skip[i]);
  return copy_skip[i];
}

/* (a) The second user runs the privileged copies with SHMHEAP_* that would
 * give it a world-writable heap of its choosing, and with values that are
 * wrong: every one is ignored. */
START_TEST(t_privileged_run_by_other_user) {
  if (!need_b("set-user-ID/set-group-ID/capability programs run by another user")) return;
  ck_assert_msg(sec_dir_suid, "no writable file system without nosuid for the set-user-ID copies (tried the build "
                              "tree, /var/tmp and /tmp)");
  make_copies();
  int key = tu_key(6);
  char kv[64];
  snprintf(kv, sizeof kv, "SHMHEAP_KEY=0x%x", (unsigned)key);
  const char *good[] = {kv, "SHMHEAP_MODE=0666", "SHMHEAP_FRESH=1", "SHMHEAP_SIZE=16M", "SHMHEAP_ADDR=0x300000000000",
                        "SHMHEAP_FORK=share", "SHMHEAP_VERBOSE=1", "SHMHEAP_IMAGE=same", NULL};
  const char *bad[] = {"SHMHEAP_KEY=0", "SHMHEAP_SIZE=12Q", "SHMHEAP_VERBOSE=2", "SHMHEAP_FORK=bogus",
                       "SHMHEAP_MODE=9", NULL};
  tu_rm_key(key);
  /* Control: the plain copy, same user and variables, does use them. */
  {
    const char *env[] = {kv, "SHMHEAP_SIZE=16M", NULL};
    const char *cmd[] = {copy_path[C_PLAIN], NULL};
    int rc = run_cmd(1, cmd, env, 0, 20000);
    int id = shmget(key, 0, 0);
    struct shmid_ds ds;
    int owner_ok = id >= 0 && shmctl(id, IPC_STAT, &ds) == 0 && ds.shm_perm.uid == b_uid;
    tu_rm_key(key);
    ck_assert_msg(rc == 0 && id >= 0 && owner_ok,
                  "control: the plain copy run by the second user with SHMHEAP_KEY: exit %d, shmid %d [%s] [%s]", rc, id,
                  R.out, R.err);
  }
  for (int i = 0; i < NCOPIES; i++) {
    if (i == C_PLAIN || copy_skipped(i)) continue;
    char what[256];
    const char *cmd[] = {copy_path[i], NULL};
    snprintf(what, sizeof what, "secure_prog-%s run by the second user with SHMHEAP_KEY, _MODE=0666, _FRESH=1...",
             copies[i].name);
    int rc = run_cmd(1, cmd, good, 0, 10000);
    expect_ignored(what, key, rc);
    struct prog_line l;
    parse_prog(what, &l);
    ck_assert_msg(l.uid == b_uid, "%s: uid %llu", what, l.uid);
    if (i == C_SUID)
      ck_assert_msg(l.euid == 0, "%s: euid %llu: the set-user-ID bit was not honoured in %s", what, l.euid, sec_dir);
    if (i == C_SGID)
      ck_assert_msg(l.egid == 0, "%s: egid %llu: the set-group-ID bit was not honoured in %s", what, l.egid, sec_dir);
    snprintf(what, sizeof what, "secure_prog-%s run by the second user with wrong SHMHEAP_* values", copies[i].name);
    rc = run_cmd(1, cmd, bad, 0, 10000);
    expect_ignored(what, key, rc);
  }
  dir_remove();
}
END_TEST

/* (b) This user (root: the old infinite re-exec loop) runs the privileged
 * copies with SHMHEAP_KEY: they finish, exit 0, and make no segment. */
START_TEST(t_privileged_run_by_self) {
  make_copies();
  int key = tu_key(7);
  char kv[64];
  snprintf(kv, sizeof kv, "SHMHEAP_KEY=0x%x", (unsigned)key);
  const char *env[] = {kv, "SHMHEAP_SIZE=16M", "SHMHEAP_VERBOSE=1", NULL};
  tu_rm_key(key);
  {
    const char *cmd[] = {copy_path[C_PLAIN], NULL};
    int rc = run_cmd(0, cmd, env, 0, 20000);
    int id = shmget(key, 0, 0);
    tu_rm_key(key);
    ck_assert_msg(rc == 0 && id >= 0, "control: the plain copy with SHMHEAP_KEY: exit %d, shmid %d [%s] [%s]", rc, id,
                  R.out, R.err);
  }
  for (int i = 0; i < NCOPIES; i++) {
    if (i == C_PLAIN || copy_skipped(i)) continue;
    char what[256];
    snprintf(what, sizeof what, "secure_prog-%s (mode 0%o%s) run by its owner, uid %d, with SHMHEAP_KEY",
             copies[i].name, copies[i].mode, copies[i].cap ? ", cap_net_bind_service+ep" : "", (int)geteuid());
    const char *cmd[] = {copy_path[i], NULL};
    long long t0 = tu_now_ms();
    int rc = run_cmd(0, cmd, env, 0, 10000);
    long long ms = tu_now_ms() - t0;
    expect_ignored(what, key, rc);
    printf("check_secure: %s: exit 0 in %lld ms\n", what, ms);
  }
  dir_remove();
}
END_TEST

/* ---- the re-exec mark ----------------------------------------------------------------- */

/* Is address randomization on for the programs this suite starts? */
static int aslr_on(const char *what) {
  char rv[8] = "";
  int fd = open("/proc/sys/kernel/randomize_va_space", O_RDONLY);
  if (fd >= 0) {
    if (read(fd, rv, sizeof rv - 1) < 0) rv[0] = 0;
    close(fd);
  }
  int persona = personality(0xffffffff);
  if (rv[0] == '0' || (persona != -1 && (persona & ADDR_NO_RANDOMIZE))) {
    printf("check_secure: %s: skipped: address randomization is off (kernel.randomize_va_space=%c, "
           "personality 0x%x): the library never re-executes\n",
           what, rv[0] ? rv[0] : '?', persona);
    return 0;
  }
  return 1;
}

/* A process whose SHMHEAP_REEXEC is its own pid has been re-executed
 * already; randomization still on means the kernel dropped the flag: exit 65
 * naming SHMHEAP_IMAGE=any, never a second exec, no segment. */
START_TEST(t_reexec_once) {
  if (!aslr_on("SHMHEAP_REEXEC=<own pid>")) return;
  int key = tu_key(8);
  tu_rm_key(key);
  char kv[64];
  snprintf(kv, sizeof kv, "SHMHEAP_KEY=0x%x", (unsigned)key);
  const char *cmd[] = {"/bin/sh", "-c", "exec env SHMHEAP_REEXEC=$$ \"$1\" LD_PRELOAD=\"$2\" \"$3\" info", "sh", kv,
                       tu_lib(), helper(), NULL};
  int rc = tu_run(cmd, NULL, 0, 10000, &R);
  expect_no_segment(key, "SHMHEAP_REEXEC=<own pid>");
  ck_assert_msg(!R.timed_out, "SHMHEAP_REEXEC=<own pid>: still running after 10 s [%s]", R.err);
  ck_assert_msg(rc == SH_EXIT_FOREIGN, "SHMHEAP_REEXEC=<own pid>: exit %d, not %d; stderr [%s] stdout [%s]", rc,
                SH_EXIT_FOREIGN, R.err, R.out);
  ck_assert_msg(tu_count_lines(R.err) == 1 && strncmp(R.err, "libshmheap:", 11) == 0,
                "SHMHEAP_REEXEC=<own pid>: stderr is not one 'libshmheap:' line: [%s]", R.err);
  ck_assert_msg(strstr(R.err, "SHMHEAP_IMAGE=any") != NULL, "SHMHEAP_REEXEC=<own pid>: the line does not name "
                                                            "SHMHEAP_IMAGE=any: [%s]", R.err);
  ck_assert_msg(R.out[0] == 0, "SHMHEAP_REEXEC=<own pid>: main() ran: [%s]", R.out);
}
END_TEST

/* The mark of another process (here pid 1) is not this one's: it re-executes
 * once as usual and uses the keyed heap. */
START_TEST(t_reexec_other_pid) {
  int key = tu_key(9);
  tu_rm_key(key);
  char kv[64];
  snprintf(kv, sizeof kv, "SHMHEAP_KEY=0x%x", (unsigned)key);
  const char *env[] = {kv, "SHMHEAP_SIZE=16M", "SHMHEAP_REEXEC=1", NULL};
  const char *cmd[] = {helper(), "info", NULL};
  int rc = tu_run(cmd, env, 1, 10000, &R);
  int id = shmget(key, 0, 0);
  tu_rm_key(key);
  ck_assert_msg(!R.timed_out, "SHMHEAP_REEXEC=1: still running after 10 s [%s]", R.err);
  ck_assert_msg(rc == 0 && id >= 0, "SHMHEAP_REEXEC=1 (not this process): exit %d, shmid %d, stderr [%s]", rc, id,
                R.err);
}
END_TEST

/* A keyed run that re-executed: neither the program nor its children see
 * SHMHEAP_REEXEC. */
START_TEST(t_reexec_not_leaked) {
  int key = tu_key(10);
  tu_rm_key(key);
  char kv[64];
  snprintf(kv, sizeof kv, "SHMHEAP_KEY=0x%x", (unsigned)key);
  const char *env[] = {kv, "SHMHEAP_SIZE=16M", "SHMHEAP_VERBOSE=1", NULL};
  const char *cmd[] = {"/bin/sh", "-c", "env; echo \"self=${SHMHEAP_REEXEC-unset}\"", NULL};
  int rc = tu_run(cmd, env, 1, 10000, &R);
  int id = shmget(key, 0, 0);
  tu_rm_key(key);
  ck_assert_msg(rc == 0, "sh -c env with SHMHEAP_KEY: exit %d [%s]", rc, R.err);
  ck_assert_msg(id >= 0, "sh did not use the keyed heap: [%s]", R.err);
  char line[1024];
  int attached = tu_find_line(R.err, "libshmheap: attached", line, sizeof line);
  ck_assert_msg(attached, "no attach line: [%s]", R.err);
  if (aslr_on("SHMHEAP_REEXEC in the environment (re-exec check)"))
    ck_assert_msg(strstr(line, "re-exec") != NULL, "the keyed run did not re-execute itself: [%s]", line);
  ck_assert_msg(strstr(R.out, "SHMHEAP_REEXEC") == NULL, "SHMHEAP_REEXEC reached a child's environment: [%s]", R.out);
  ck_assert_msg(strstr(R.out, "self=unset") != NULL, "the program itself sees SHMHEAP_REEXEC: [%s]", R.out);
}
END_TEST

/* ---------------------------------------------------------------------------------------- */

static TCase *sec_tcase(Suite *s, const char *name, int timeout) {
  TCase *tc = tcase_create(name);
  tcase_set_timeout(tc, timeout);
  tcase_add_unchecked_fixture(tc, NULL, runner_teardown);
  suite_add_tcase(s, tc);
  return tc;
}

int main(void) {
  tu_init();
  main_pid = getpid();
  setvbuf(stdout, NULL, _IOLBF, 0);
  atexit(at_exit);
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  signal(SIGHUP, on_signal);
  user_create();
  if (have_b)
    printf("check_secure: second user %s (uid %d, gid %d)\n", b_name, (int)b_uid, (int)b_gid);
  else
    printf("check_secure: no second user: %s; the cases that need one are skipped\n", no_b);
  pick_dir();
  printf("check_secure: privileged copies in %s%s\n", sec_dir,
         sec_dir_suid ? "" : " (nosuid: set-user-ID bits are not honoured there)");

  Suite *s = suite_create("secure");
  TCase *tc = sec_tcase(s, "ownership", 120);
  tcase_add_test(tc, t_creator_other);
  tcase_add_test(tc, t_owner_other);
  tcase_add_test(tc, t_mode_wider);
  tcase_add_test(tc, t_header_uid_other);
  tcase_add_test(tc, t_other_user_on_mine);
  tcase_add_test(tc, t_high_key_other);
  tcase_add_test(tc, t_inherited_by_other_user);
  tcase_add_test(tc, t_own_heap_not_writable);
  tc = sec_tcase(s, "secure_exec", 120);
  tcase_add_test(tc, t_privileged_run_by_other_user);
  tcase_add_test(tc, t_privileged_run_by_self);
  tc = sec_tcase(s, "reexec", 60);
  tcase_add_test(tc, t_reexec_once);
  tcase_add_test(tc, t_reexec_other_pid);
  tcase_add_test(tc, t_reexec_not_leaked);
  int rc = tu_run_suite(s);
  dir_remove();
  user_delete();
  return rc;
}
