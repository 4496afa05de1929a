# Test suite of libshmheap (included by the top-level Makefile.am; every path
# is relative to the top: non-recursive make with subdir-objects).
#
#   check_api  check_fork  check_env  check_cxx   Check suites, linked with
#              -lshmheap: the test binaries themselves run on the shm heap
#   helper_env, cxx_prog, crash_worker            NOT linked with the library:
#              the tests run them with LD_PRELOAD=$SHMHEAP_LIB
#   check_crash                                   Check suite NOT linked with the
#              library either: it only runs crash_worker and shmheap-dump
#   check_secure                                  Check suite NOT linked with the
#              library: ownership of keyed segments (as root also with a
#              second user it creates and deletes), set-user-ID programs
#              (secure_prog, LINKED with the library, -no-install), the
#              re-exec mark SHMHEAP_REEXEC
#   check_free                                    Check suite NOT linked with the
#              library: double and invalid frees (helper_free, helper_free_cxx,
#              run with LD_PRELOAD)
#   real_*.sh                                     real programs under the preload
#   layers.sh                                     the library's files call only
#              downwards (read from the objects' symbols)
#   linkage.sh                                    the built library resolves
#              every symbol it uses (ldd -r)
#   errno.sh (errno_sweep)                        errno after every failed
#              allocation, under glibc and the preload
#   rss.sh (rss_free)                             resident memory after a mass
#              free, against glibc's
#   fork.sh (fork_stress)                         fork from threads at once,
#              from signal handlers and nested, in both modes, under load
#   exec.sh (exec_prog, LINKED with the library,  exec chains: env, sh -c
#              -no-install)                       'exec', nohup, shims, and
#              launchers with SHMHEAP_PROGRAM; a link's name; exec that
#              leaves cleanly; a second instance
#   real_nginx.sh                                 Debian's nginx on a keyed
#              heap: nginx -t and nginx -s reload while it runs
#   malloc_info.sh (info_prog)                    malloc_info's XML and
#              malloc_stats, parsed, under glibc and the preload
#   dump_prometheus.sh                            shmheap-dump --prometheus,
#              against --json and promtool
#   dump_watch.sh                                 shmheap-dump --watch on a
#              terminal (tmux): redraw in place, resize, q, Ctrl-C, Ctrl-Z,
#              SIGTERM; plain blocks off a terminal; removed heaps
#   dump_users.sh                                 shmheap-dump's users and
#              states against /proc: private heaps, copy forks, zombies,
#              reused pids
#   systemd_unit.sh                               examples/systemd/kvstore.service:
#              systemd-analyze verify, and (as root, PID 1 not systemd) the
#              unit under a systemd booted in namespaces: kill -s KILL, stop
#   prefault.sh (prefault_prog, LINKED with the   SHMHEAP_PREFAULT: a re-attach
#              library, -no-install)              maps the in-use pages in and
#              changes no byte; churn, kill -9 and fork (both modes) while
#              it runs; garbage metadata under its walk; a supervised worker
#   background.sh (idle_prog)                     SHMHEAP_BACKGROUND: an idle
#              program's free pages go back within 2 s; off; no thread
#              without frees; forks in both modes
#   hugepages.sh                                  SHMHEAP_HUGEPAGES against
#              /proc/self/smaps: thp with shmem_enabled never and advise;
#              hugetlb with an empty pool, strict, and a pool of 64 pages
#
# --enable-sanitizers: everything here is built with UBSan (AM_CFLAGS), and
# the suites that do not run on the library add ASan (check_crash,
# check_secure, check_free; with tools/shmheap-dump and examples/kvcli,
# Makefile.am): every other program runs on the library, linked or preloaded,
# and ASan would put its own malloc in place of the one under test.

TEST_EXTENSIONS = .sh
LOG_COMPILER = $(SHELL) $(top_srcdir)/tests/sanrun.sh
SH_LOG_COMPILER = $(SHELL) $(top_srcdir)/tests/sanrun.sh $(SHELL)

AM_TESTS_ENVIRONMENT = \
	SHMHEAP_LIB='$(abs_top_builddir)/src/.libs/libshmheap.so'; export SHMHEAP_LIB; \
	top_builddir='$(abs_top_builddir)'; export top_builddir; \
	top_srcdir='$(abs_top_srcdir)'; export top_srcdir; \
	CXX='$(CXX)'; export CXX; \
	$(SAN_TESTS_ENVIRONMENT) \
	unset LD_PRELOAD SHMHEAP_KEY SHMHEAP_SIZE SHMHEAP_ADDR SHMHEAP_FORK SHMHEAP_VERBOSE \
		SHMHEAP_PROGRAM SHMHEAP_IMAGE SHMHEAP_MODE SHMHEAP_FRESH SHMHEAP_REEXEC SHMHEAP_HUGEPAGES SHMHEAP_GC;

# Any sanitizer finding fails its test: with -fno-sanitize-recover it
# already stops the program, these make sure of it (and keep LeakSanitizer
# on in the ASan programs), and tests/sanrun.sh, which runs every test, fails
# the test on any report its programs wrote.  The exit status 86 keeps a
# finding apart from the programs' own statuses.
SAN_TESTS_ENVIRONMENT = \
	UBSAN_OPTIONS='halt_on_error=1:print_stacktrace=1:exitcode=86'; export UBSAN_OPTIONS; \
	ASAN_OPTIONS='halt_on_error=1:detect_leaks=1:abort_on_error=0:exitcode=86'; export ASAN_OPTIONS;

# format.h: the suites read the segment header (struct shm_header) to find
# and remove the named heaps they create, and damage heaps on purpose.
SUITE_CPPFLAGS_ALL = $(AM_CPPFLAGS) -I$(top_srcdir)/src
TESTUTIL = tests/testutil.c tests/testutil.h

# The Check suites (configure found Check: HAVE_CHECK).  Without it make
# check runs the rest and then fails, saying what to install.
CHECK_SUITES = tests/check_api tests/check_fork tests/check_env tests/check_cxx tests/check_heap tests/check_roots \
	tests/check_recover tests/check_crash tests/check_secure tests/check_free
if HAVE_CHECK
check_PROGRAMS += $(CHECK_SUITES)
TESTS += $(CHECK_SUITES)
else
check-local:
	@echo "make check: the test suites in C need the Check library (check >= 0.10), which ./configure did not find: apt-get install check (Debian), then run ./configure again" >&2; exit 1
endif

tests_check_api_SOURCES = tests/check_api.c $(TESTUTIL)
tests_check_api_CPPFLAGS = $(SUITE_CPPFLAGS_ALL)
tests_check_api_CFLAGS = $(AM_CFLAGS) $(CHECK_CFLAGS) -fno-builtin -pthread
tests_check_api_LDADD = src/libshmheap.la $(CHECK_LIBS) -lpthread

tests_check_fork_SOURCES = tests/check_fork.c $(TESTUTIL)
tests_check_fork_CPPFLAGS = $(SUITE_CPPFLAGS_ALL)
tests_check_fork_CFLAGS = $(AM_CFLAGS) $(CHECK_CFLAGS) -fno-builtin -pthread
tests_check_fork_LDADD = src/libshmheap.la $(CHECK_LIBS) -lpthread

tests_check_heap_SOURCES = tests/check_heap.c
tests_check_heap_CPPFLAGS = $(SUITE_CPPFLAGS_ALL)
# -fno-builtin: clang deletes a malloc whose block is only written and freed,
# and these cases make exactly such blocks for the heap to see.
tests_check_heap_CFLAGS = $(AM_CFLAGS) $(CHECK_CFLAGS) -fno-builtin -pthread
tests_check_heap_LDADD = src/libshmheap.la $(CHECK_LIBS) -lpthread

tests_check_roots_SOURCES = tests/check_roots.c
tests_check_roots_CPPFLAGS = $(SUITE_CPPFLAGS_ALL)
tests_check_roots_CFLAGS = $(AM_CFLAGS) $(CHECK_CFLAGS)
tests_check_roots_LDADD = src/libshmheap.la $(CHECK_LIBS)

tests_check_recover_SOURCES = tests/check_recover.c $(TESTUTIL)
tests_check_recover_CPPFLAGS = $(SUITE_CPPFLAGS_ALL)
tests_check_recover_CFLAGS = $(AM_CFLAGS) $(CHECK_CFLAGS)
tests_check_recover_LDADD = src/libshmheap.la $(CHECK_LIBS)

tests_check_env_SOURCES = tests/check_env.c $(TESTUTIL)
tests_check_env_CPPFLAGS = $(SUITE_CPPFLAGS_ALL)
tests_check_env_CFLAGS = $(AM_CFLAGS) $(CHECK_CFLAGS) -fno-builtin
tests_check_env_LDADD = src/libshmheap.la $(CHECK_LIBS)

tests_check_cxx_SOURCES = tests/check_cxx.cc $(TESTUTIL)
tests_check_cxx_CPPFLAGS = $(SUITE_CPPFLAGS_ALL)
tests_check_cxx_CFLAGS = $(AM_CFLAGS) $(CHECK_CFLAGS)
tests_check_cxx_CXXFLAGS = $(AM_CXXFLAGS) $(CHECK_CFLAGS) -std=gnu++17 -fsized-deallocation \
	-fno-builtin
tests_check_cxx_LDADD = src/libshmheap.la $(CHECK_LIBS)

# helpers that are not linked with the library
# errno_sweep: not linked with the library; errno.sh runs it under
# glibc and under the preload.
check_PROGRAMS += tests/errno_sweep
tests_errno_sweep_SOURCES = tests/errno_sweep.c
# rss_free: the same, for rss.sh.
check_PROGRAMS += tests/rss_free
tests_rss_free_SOURCES = tests/rss_free.c
# info_prog: the same, for malloc_info.sh.
check_PROGRAMS += tests/info_prog
tests_info_prog_SOURCES = tests/info_prog.c
# fork_stress: the same, for fork.sh.
check_PROGRAMS += tests/fork_stress
tests_fork_stress_SOURCES = tests/fork_stress.c
tests_fork_stress_CFLAGS = $(AM_CFLAGS) -pthread
tests_fork_stress_LDADD = -lpthread

# prefault_prog: the program of prefault.sh, linked with the library; it
# reads the segment's layout (format.h) to hash it and to scribble on it.
check_PROGRAMS += tests/prefault_prog
tests_prefault_prog_SOURCES = tests/prefault_prog.c
tests_prefault_prog_CPPFLAGS = $(SUITE_CPPFLAGS_ALL)
tests_prefault_prog_LDADD = src/libshmheap.la -lpthread
tests_prefault_prog_LDFLAGS = -no-install -Wl,-rpath,$(abs_top_builddir)/src/.libs

# exec_prog: the program at the end of exec chains (exec.sh); a real
# executable (-no-install), so that /proc/PID/exe is the program itself.
check_PROGRAMS += tests/exec_prog
tests_exec_prog_SOURCES = tests/exec_prog.c
tests_exec_prog_LDADD = src/libshmheap.la
tests_exec_prog_LDFLAGS = -no-install -Wl,-rpath,$(abs_top_builddir)/src/.libs

check_PROGRAMS += tests/helper_env tests/helper_recover tests/cxx_prog tests/cxx_restart tests/cxx_restart_b
tests_helper_env_SOURCES = tests/helper_env.c
tests_helper_recover_SOURCES = tests/helper_recover.c
tests_helper_recover_CFLAGS = $(AM_CFLAGS) -pthread
tests_helper_recover_LDADD = -ldl
tests_helper_env_CFLAGS = $(AM_CFLAGS) -pthread
tests_cxx_restart_SOURCES = tests/cxx_restart.cc
tests_cxx_restart_CXXFLAGS = $(AM_CXXFLAGS) -std=gnu++17
tests_cxx_restart_LDADD = -ldl
tests_cxx_restart_b_SOURCES = tests/cxx_restart.cc
tests_cxx_restart_b_CXXFLAGS = $(AM_CXXFLAGS) -std=gnu++17 -DVARIANT=2
tests_cxx_restart_b_LDADD = -ldl
tests_cxx_prog_SOURCES = tests/cxx_prog.cc
tests_cxx_prog_CXXFLAGS = $(AM_CXXFLAGS) -std=gnu++17 -pthread

# real programs under LD_PRELOAD
REAL_TESTS = \
	tests/real_python.sh \
	tests/real_bash.sh \
	tests/real_sort.sh \
	tests/real_ulimit.sh \
	tests/real_cxx.sh \
	tests/real_gxx.sh \
	tests/real_dump.sh \
	tests/real_kvstore.sh \
	tests/real_nginx.sh
TESTS += $(REAL_TESTS) tests/layers.sh tests/linkage.sh tests/errno.sh tests/rss.sh tests/fork.sh tests/exec.sh \
	tests/dump_users.sh tests/dump_prometheus.sh tests/malloc_info.sh
EXTRA_DIST += tests/layers.sh tests/linkage.sh tests/sanrun.sh tests/errno.sh tests/rss.sh tests/fork.sh tests/exec.sh \
	tests/dump_users.sh tests/dump_prometheus.sh tests/malloc_info.sh
EXTRA_DIST += $(REAL_TESTS) tests/real_common.sh tests/py_workload.py tests/dump_fuzz.py
TESTS += tests/systemd_unit.sh tests/hugepages.sh tests/dump_watch.sh tests/prefault.sh
EXTRA_DIST += tests/systemd_unit.sh tests/hugepages.sh tests/dump_watch.sh tests/prefault.sh

# SIGKILL at random instructions: check_crash kills crash_worker 200 times
# (SHMHEAP_CRASH_KILLS); crash-long is the same with CRASH_LONG_KILLS kills.
# SHMHEAP_CRASH_SEED=<seed> replays the kill delays of a run.
check_PROGRAMS += tests/crash_worker
tests_check_crash_SOURCES = tests/check_crash.c $(TESTUTIL)
tests_check_crash_CPPFLAGS = $(SUITE_CPPFLAGS_ALL)
# check_crash runs the worker and the dump tool but not on the library, so
# it gets ASan with --enable-sanitizers (as do check_secure and check_free).
tests_check_crash_CFLAGS = $(AM_CFLAGS) $(CHECK_CFLAGS) $(SAN_ASAN_CFLAGS)
tests_check_crash_LDADD = $(CHECK_LIBS)
tests_crash_worker_SOURCES = tests/crash_worker.c
tests_crash_worker_CFLAGS = $(AM_CFLAGS) -pthread

CRASH_LONG_KILLS = 10000
crash-long: tests/check_crash tests/crash_worker tools/shmheap-dump src/libshmheap.la
	@$(AM_TESTS_ENVIRONMENT) SHMHEAP_CRASH_KILLS=$(CRASH_LONG_KILLS) ./tests/check_crash
.PHONY: crash-long

# Corrupted-heap fuzz: tests/heap_fuzz.py restarts heapfuzz_worker (NOT linked
# with the library: preloaded) on randomly corrupted copies of heaps that
# crash_worker left cleanly and by kill -9.  tests/real_heapfuzz.sh runs
# HEAPFUZZ_COUNT (default 300) cases; `make fuzz FUZZ_COUNT=N` runs more.
# FUZZ_SEED=<seed> repeats a run; heap_fuzz.py --replay SEED:ITER (with the
# --sources directory a failed run prints) rebuilds one case for a debugger.
check_PROGRAMS += tests/heapfuzz_worker
tests_heapfuzz_worker_SOURCES = tests/heapfuzz_worker.c
tests_heapfuzz_worker_CPPFLAGS = $(SUITE_CPPFLAGS_ALL)
tests_heapfuzz_worker_CFLAGS = $(AM_CFLAGS) -pthread
tests_heapfuzz_worker_LDADD = -ldl
EXTRA_DIST += tests/heap_fuzz.py tests/real_heapfuzz.sh
TESTS += tests/real_heapfuzz.sh

FUZZ_COUNT = 5000
FUZZ_JOBS = 2
FUZZ_SEED =
fuzz: tests/heapfuzz_worker tests/crash_worker tools/shmheap-dump src/libshmheap.la
	@$(AM_TESTS_ENVIRONMENT) seed='$(FUZZ_SEED)'; \
	python3 $(abs_top_srcdir)/tests/heap_fuzz.py --count $(FUZZ_COUNT) --jobs $(FUZZ_JOBS) \
		$${seed:+--seed "$$seed"} --list-failures
.PHONY: fuzz

# shmheap(7), SECURITY.  check_secure runs helper_env, shmheap-dump and copies
# of secure_prog (set-user-ID, set-group-ID, with a file capability) made in
# a temporary directory: secure_prog is a real executable (-no-install) that
# finds the build's library through its rpath from wherever it is copied.
check_PROGRAMS += tests/secure_prog
tests_check_secure_SOURCES = tests/check_secure.c $(TESTUTIL)
tests_check_secure_CPPFLAGS = $(SUITE_CPPFLAGS_ALL)
tests_check_secure_CFLAGS = $(AM_CFLAGS) $(CHECK_CFLAGS) $(SAN_ASAN_CFLAGS)
tests_check_secure_LDADD = $(CHECK_LIBS)
tests_secure_prog_SOURCES = tests/secure_prog.c
tests_secure_prog_LDADD = src/libshmheap.la
tests_secure_prog_LDFLAGS = -no-install -Wl,-rpath,$(abs_top_builddir)/src/.libs

# Double and invalid frees: check_free runs helper_free (C) and helper_free_cxx
# (C++ operators) under LD_PRELOAD, each case on a keyed heap of its own.
check_PROGRAMS += tests/helper_free tests/helper_free_cxx
tests_check_free_SOURCES = tests/check_free.c $(TESTUTIL)
tests_check_free_CPPFLAGS = $(SUITE_CPPFLAGS_ALL)
tests_check_free_CFLAGS = $(AM_CFLAGS) $(CHECK_CFLAGS) $(SAN_ASAN_CFLAGS)
tests_check_free_LDADD = $(CHECK_LIBS)
tests_helper_free_SOURCES = tests/helper_free.c
tests_helper_free_CFLAGS = $(AM_CFLAGS) -pthread
tests_helper_free_cxx_SOURCES = tests/helper_free_cxx.cc
tests_helper_free_cxx_CXXFLAGS = $(AM_CXXFLAGS) -std=gnu++17 -fsized-deallocation

# idle_prog: the program of background.sh (SHMHEAP_BACKGROUND), run with
# LD_PRELOAD.
check_PROGRAMS += tests/idle_prog
tests_idle_prog_SOURCES = tests/idle_prog.c
TESTS += tests/background.sh
EXTRA_DIST += tests/background.sh

# gc.sh (gc_prog, NOT linked with the library: preloaded)   SHMHEAP_GC: the
# collection at restart keeps what the named roots reach, whole, and frees
# the rest; kill -9 during it; restarts do not grow the heap; metadata that
# a stray store changed (tests/gc_corrupt.py) frees nothing reached
check_PROGRAMS += tests/gc_prog
tests_gc_prog_SOURCES = tests/gc_prog.cc
tests_gc_prog_CXXFLAGS = $(AM_CXXFLAGS) -std=gnu++17
tests_gc_prog_LDADD = -ldl
TESTS += tests/gc.sh tests/gc_python.sh
EXTRA_DIST += tests/gc.sh tests/gc_python.sh tests/gc_corrupt.py
