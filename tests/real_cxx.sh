#!/bin/sh
# tests/cxx_prog (STL, virtual classes, alignas(64), exceptions, threads; not
# linked with the library) with and without LD_PRELOAD.
. "$(dirname "$0")/real_common.sh"

PROG=$top_builddir/tests/cxx_prog
[ -x "$PROG" ] || fail "$PROG is not built (make check builds it)"
run_ref cxx "$PROG"
[ "$status" -eq 0 ] || { show "$TMP/cxx.ref.err"; fail "cxx_prog exits $status without the library"; }
run_pre cxx env CXX_PROG_EXPECT_SHM=1 "$PROG"
case $status in
  0) ;;
  3) show "$TMP/cxx.pre.err"; fail "cxx_prog's objects are not in the shm heap" ;;
  4) fail "cxx_prog: alignas(64) objects misaligned under the preload" ;;
  *) show "$TMP/cxx.pre.err"; fail "cxx_prog exits $status under the preload" ;;
esac
same_stdout cxx
check_used cxx
echo "PASS: C++ program under libshmheap"
