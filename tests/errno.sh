#!/bin/sh
# errno after failed allocations (tests/errno_sweep.c): the same sweep of
# impossible sizes and every alignment under glibc, whose rule it is, and
# under the preload; both must keep it.
set -u
sweep=$top_builddir/tests/errno_sweep
out=$(mktemp) || exit 99
trap 'rm -f "$out"' EXIT
"$sweep" >"$out" 2>&1
rc=$?
if [ $rc -ne 0 ]; then
  echo "errno.sh: glibc itself breaks the rule (exit $rc), so the sweep is wrong here:"
  head -20 "$out"
  exit 99
fi
LD_PRELOAD=$SHMHEAP_LIB "$sweep" >"$out" 2>&1
rc=$?
cat "$out" | head -40
[ $rc -eq 0 ] || { echo "errno.sh: under libshmheap: exit $rc"; exit 1; }
