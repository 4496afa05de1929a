#!/bin/sh
# g++ (driver, cc1plus, as, ld) under libshmheap compiles tests/cxx_prog.cc;
# the program it builds runs and prints what the one built by make prints.
. "$(dirname "$0")/real_common.sh"

CXX_BIN=${CXX:-g++}
SRC=$top_srcdir/tests/cxx_prog.cc
[ -f "$SRC" ] || SRC="$(dirname "$0")/cxx_prog.cc"
command -v "${CXX_BIN%% *}" >/dev/null || fail "no C++ compiler ($CXX_BIN)"

# shellcheck disable=SC2086
run_pre gxx $CXX_BIN -std=gnu++17 -O1 -pthread -o "$TMP/prog" "$SRC"
[ "$status" -eq 0 ] || { show "$TMP/gxx.pre.err"; fail "$CXX_BIN exits $status under the preload"; }
check_used gxx
n=$(grep -c '^libshmheap: exit' "$TMP/gxx.pre.err")
[ "$n" -ge 3 ] || fail "only $n processes of the compiler reported on the shm heap (driver, cc1plus, as, ld expected)"
[ -x "$TMP/prog" ] || fail "no program built"

run_ref prog "$TMP/prog"
[ "$status" -eq 0 ] || { show "$TMP/prog.ref.err"; fail "the program g++ built under the preload exits $status"; }
if [ -x "$top_builddir/tests/cxx_prog" ]; then
  "$top_builddir/tests/cxx_prog" >"$TMP/prog.pre.out" 2>/dev/null || fail "tests/cxx_prog fails"
  same_stdout prog
fi
echo "PASS: g++ under libshmheap"
