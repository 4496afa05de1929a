#!/bin/sh
# python3 under libshmheap: a dict/json/str-heavy script (output compared with
# a run without the library), then stdlib test modules with PYTHONMALLOC=malloc
# so that every Python object comes from the shm heap.
. "$(dirname "$0")/real_common.sh"

PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3 || :)
[ -n "$PY" ] || fail "python3 is not installed (Debian package python3)"
WORKLOAD="$(dirname "$0")/py_workload.py"

run_ref workload "$PY" "$WORKLOAD"
[ "$status" -eq 0 ] || { show "$TMP/workload.ref.err"; fail "$PY py_workload.py fails even without the library"; }
run_pre workload "$PY" "$WORKLOAD"
[ "$status" -eq 0 ] || { show "$TMP/workload.pre.err"; fail "$PY py_workload.py exits $status under the preload"; }
same_stdout workload
check_used workload

run_pre workload_m env PYTHONMALLOC=malloc "$PY" "$WORKLOAD"
[ "$status" -eq 0 ] || { show "$TMP/workload_m.pre.err"; fail "PYTHONMALLOC=malloc py_workload.py exits $status under the preload"; }
cp "$TMP/workload.ref.out" "$TMP/workload_m.ref.out"
same_stdout workload_m
check_used workload_m

# stdlib tests: the test package must be installed
VER=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if ! "$PY" -c 'import test.test_json, test.test_dict' >/dev/null 2>&1; then
  fail "the Python $VER test modules are missing: install the Debian package libpython$VER-testsuite"
fi
MODULES=
for m in test_json test_dict test_list test_unicode test_str test_re test_set test_collections \
  test_bytes test_deque test_sort test_string test_struct test_fork1; do
  if "$PY" -c "import test.$m" >/dev/null 2>&1; then MODULES="$MODULES $m"; fi
done
echo "stdlib tests:$MODULES"
# shellcheck disable=SC2086
# Not verbose: the tests run subprocesses that must print nothing on stderr.
# The interpreter checks first, through ctypes, that its objects are on the
# shm heap, then runs the test package as python3 -m test would.
cat >"$TMP/run_tests.py" <<'PYEOF'
import ctypes, runpy, sys
contains = ctypes.CDLL(None).shmheap_contains
contains.argtypes = [ctypes.c_void_p]
objs = [[1] * 100, "x" * 10000, {"k": 1}]
if not all(contains(id(o)) for o in objs):
    sys.exit("python objects are not on the shm heap")
print("objects on the shm heap", file=sys.stderr)
sys.argv = ["test"] + sys.argv[1:]
runpy.run_module("test", run_name="__main__", alter_sys=True)
PYEOF
set +e
LD_PRELOAD=$SHMHEAP_LIB PYTHONMALLOC=malloc "$PY" "$TMP/run_tests.py" $MODULES >"$TMP/stdlib.pre.out" 2>"$TMP/stdlib.pre.err" </dev/null
status=$?
set -e
if [ "$status" -ne 0 ] || ! grep -q 'Tests result: SUCCESS' "$TMP/stdlib.pre.out"; then
  tail -n 40 "$TMP/stdlib.pre.out" >&2
  show "$TMP/stdlib.pre.err"
  pre_status=$status
  run_ref stdlib env PYTHONMALLOC=malloc "$PY" -m test $MODULES
  fail "python3 -m test$MODULES fails under the preload (exit $pre_status; without the library it exits $status)"
fi
grep -q 'objects on the shm heap' "$TMP/stdlib.pre.err" || { show "$TMP/stdlib.pre.err"; fail "python objects were not on the shm heap"; }
grep -q '^libshmheap: ' "$TMP/stdlib.pre.err" && { show "$TMP/stdlib.pre.err"; fail "the library printed messages during the stdlib tests"; }
echo "PASS: python3 ($VER) under libshmheap"
