#!/bin/sh
# SHMHEAP_BACKGROUND (issue 16, item 4): an idle program gives its free
# pages back.  tests/idle_prog frees all but a thousandth of a GiB and makes
# no more allocator calls:
#  - by default its resident memory falls to within 16 MiB of what it holds
#    within 2 seconds (the background thread purges what lay free a second),
#    and the process has that thread, named shmheap-purge;
#  - with SHMHEAP_BACKGROUND=off it does not, and the process has no thread;
#  - a program that frees no more than the floor (8 MiB) gets no thread;
#  - a fork right after the free, in copy and in share mode: the parent's
#    memory falls, and so does the child's after it does the same in its
#    own heap (a child gets a thread of its own); in share mode the child
#    reuses pages the parent mapped, so the parent's falls to within 16 MiB
#    of what both hold, within 2 seconds of the child's last free;
#  - a bad SHMHEAP_BACKGROUND exits 78.
. "$(dirname "$0")/real_common.sh"
unset SHMHEAP_BACKGROUND
PROG=$top_builddir/tests/idle_prog
[ -x "$PROG" ] || fail "$PROG is not built"

runp() { # runp CASE ARGS...: idle_prog under the preload, output in $TMP/CASE.{out,err}
  _c=$1
  shift
  set +e
  LD_PRELOAD=$SHMHEAP_LIB "$PROG" "$@" >"$TMP/$_c.out" 2>"$TMP/$_c.err" </dev/null
  status=$?
  set -e
  [ "$status" = 0 ] || { show "$TMP/$_c.out"; show "$TMP/$_c.err"; fail "$_c: idle_prog $* exits $status"; }
}
# fell_within CASE PREFIX SECONDS: the line PREFIX... says fell=T, T <= SECONDS
fell_within() {
  _t=$(sed -n "s/^$2in_use=.* fell=\([0-9.]*\) .*/\1/p" "$TMP/$1.out")
  [ -n "$_t" ] || { show "$TMP/$1.out"; fail "$1: ${2}resident memory did not fall to within 16 MiB of what it holds"; }
  awk -v t="$_t" -v s="$3" 'BEGIN { exit !(t <= s) }' || { show "$TMP/$1.out"; fail "$1: ${2}it fell after $_t s, not within $3 s"; }
}

runp default free 3
fell_within default "" 2
grep -q ' purgers=1 threads=2$' "$TMP/default.out" || { show "$TMP/default.out"; fail "default: the process has no thread named shmheap-purge, or more threads than it"; }
cat "$TMP/default.out"

SHMHEAP_BACKGROUND=off runp off free 2.5
grep -q 'fell=never .* threads=1$' "$TMP/off.out" || { show "$TMP/off.out"; fail "off: the memory fell, or the process has a thread"; }
cat "$TMP/off.out"

runp nofree nofree 1.5
grep -q ' threads=1$' "$TMP/nofree.out" || { show "$TMP/nofree.out"; fail "nofree: a thread was started for a program that freed no more than the floor"; }
cat "$TMP/nofree.out"

for mode in copy share; do
  SHMHEAP_FORK=$mode runp fork-$mode fork 3
  fell_within fork-$mode "parent: " 2
  fell_within fork-$mode "child: " 2
  [ "$(grep -c ' purgers=1 threads=2$' "$TMP/fork-$mode.out")" = 2 ] || { show "$TMP/fork-$mode.out"; fail "fork $mode: the parent and the child do not each have their own shmheap-purge thread"; }
  sed "s/^/fork $mode: /" "$TMP/fork-$mode.out"
done

set +e
LD_PRELOAD=$SHMHEAP_LIB SHMHEAP_BACKGROUND=yes "$PROG" nofree 0 >"$TMP/bad.out" 2>"$TMP/bad.err"
status=$?
set -e
[ "$status" = 78 ] && grep -q 'SHMHEAP_BACKGROUND=yes' "$TMP/bad.err" || { show "$TMP/bad.err"; fail "SHMHEAP_BACKGROUND=yes exits $status, not 78 with a message naming it"; }
echo "SHMHEAP_BACKGROUND=yes: exit 78"
