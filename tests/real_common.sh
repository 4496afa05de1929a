# Sourced by tests/real_*.sh: runs real programs with and without
# LD_PRELOAD=$SHMHEAP_LIB and checks that the shm heap was really used.
#
#   run_ref NAME CMD...   without the library: $TMP/NAME.ref.{out,err}, $status
#   run_pre NAME CMD...   LD_PRELOAD + SHMHEAP_VERBOSE=1: $TMP/NAME.pre.{out,err}
#   check_used NAME       attach and exit lines present, nmalloc > 0, no other
#                         libshmheap message, private segments removed
#   same_stdout NAME      the two runs printed the same stdout
#   keyed_heap_bytes NAME HEAPNAME   re-attaches the keyed heap a program
#                         left (SHMHEAP_KEY=HEAPNAME) and prints its heap=
#                         bytes: how much of the heap the program carved
#   fail MESSAGE          print why and exit 1
set -eu

fail() {
  echo "FAIL: $(basename "$0"): $*" >&2
  exit 1
}

show() { # show FILE: the first lines of a file, for a failure message
  if [ -s "$1" ]; then
    echo "---- $1 (first 40 lines) ----" >&2
    head -n 40 "$1" >&2
    echo "----" >&2
  fi
}

: "${top_builddir:=$(cd "$(dirname "$0")/.." && pwd)}"
: "${top_srcdir:=$(cd "$(dirname "$0")/.." && pwd)}"
: "${SHMHEAP_LIB:=$top_builddir/src/.libs/libshmheap.so}"
[ -f "$SHMHEAP_LIB" ] || fail "SHMHEAP_LIB=$SHMHEAP_LIB does not exist (build src/libshmheap.la first)"
unset LD_PRELOAD SHMHEAP_KEY SHMHEAP_SIZE SHMHEAP_ADDR SHMHEAP_FORK SHMHEAP_VERBOSE SHMHEAP_HUGEPAGES SHMHEAP_PREFAULT SHMHEAP_BACKGROUND SHMHEAP_GC || :

TMP=$(mktemp -d "${TMPDIR:-/tmp}/shmheap-real.XXXXXX")
# keyed heaps made by the test (see keyed_heap_bytes) are removed on exit too
# and so is every heap named for this run (heap_name), whatever step failed.
cleanup() {
  if [ -f "$TMP/keys" ]; then
    while read -r _k; do ipcrm -M "$_k" 2>/dev/null || :; done <"$TMP/keys"
  fi
  if [ -x "$top_builddir/tools/shmheap-dump" ]; then
    "$top_builddir/tools/shmheap-dump" 2>/dev/null | awk -v p="shmheap-real-$$-" 'index($2, p) == 1 { print $1 }' |
      while read -r _k; do ipcrm -M "$_k" 2>/dev/null || :; done
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 1' HUP INT TERM

status=0
run_ref() {
  _n=$1
  shift
  set +e
  "$@" >"$TMP/$_n.ref.out" 2>"$TMP/$_n.ref.err" </dev/null
  status=$?
  set -e
}

run_pre() {
  _n=$1
  shift
  set +e
  LD_PRELOAD=$SHMHEAP_LIB SHMHEAP_VERBOSE=1 "$@" >"$TMP/$_n.pre.out" 2>"$TMP/$_n.pre.err" </dev/null
  status=$?
  set -e
}

# stderr of the preloaded run without the library's own verbose lines
lib_free_stderr() {
  grep -v '^libshmheap: \(attached\|exit\|pid [0-9]*: prefault:\)' "$TMP/$1.pre.err" || :
}

check_used() {
  _e="$TMP/$1.pre.err"
  if ! grep -q '^libshmheap: attached' "$_e"; then
    show "$_e"
    fail "$1: no 'libshmheap: attached' line on stderr: the library was not used"
  fi
  if ! grep -q '^libshmheap: exit' "$_e"; then
    show "$_e"
    fail "$1: no 'libshmheap: exit' line on stderr"
  fi
  _max=$(sed -n 's/^libshmheap: exit.* nmalloc=\([0-9][0-9]*\).*/\1/p' "$_e" | sort -n | tail -n 1)
  if [ -z "$_max" ] || [ "$_max" -eq 0 ]; then
    show "$_e"
    fail "$1: no process reported nmalloc > 0: the heap was not used"
  fi
  if grep '^libshmheap: ' "$_e" | grep -v '^libshmheap: \(attached\|exit\|pid [0-9]*: prefault:\)' >"$TMP/$1.other"; then
    show "$TMP/$1.other"
    fail "$1: the library printed something else than its verbose lines"
  fi
  # private heaps (key=0) must be gone once their processes are
  for _id in $(sed -n 's/^libshmheap: attached.* key=0[x0]* .*shmid=\([0-9][0-9]*\).*/\1/p' "$_e" | sort -u); do
    if awk -v id="$_id" 'NR > 1 && $2 == id { found = 1 } END { exit !found }' /proc/sysvipc/shm; then
      fail "$1: private segment shmid=$_id is still there after the program exited (ipcs -m)"
    fi
  done
  echo "$1: $(grep -c '^libshmheap: exit' "$_e") process(es) on the shm heap, max nmalloc=$_max"
}

same_stdout() {
  if ! cmp -s "$TMP/$1.ref.out" "$TMP/$1.pre.out"; then
    diff -u "$TMP/$1.ref.out" "$TMP/$1.pre.out" | head -n 40 >&2 || :
    fail "$1: stdout differs with the preload"
  fi
}

# A unique heap name for SHMHEAP_KEY; the key it hashes to is recorded (from
# the verbose line) and removed at exit.
heap_name() { echo "shmheap-real-$$-$1"; }

keyed_heap_bytes() {
  _e="$TMP/$1.pre.err"
  _key=$(grep "^libshmheap: attached .*name=$2 " "$_e" | sed -n 's/^libshmheap: attached key=\(0x[0-9a-fA-F]*\) .*/\1/p' | head -n 1)
  if [ -z "$_key" ]; then
    show "$_e"
    fail "$1: no 'libshmheap: attached key=0x...' line on stderr: the library was not used"
  fi
  echo "$_key" >>"$TMP/keys"
  if grep '^libshmheap: ' "$_e" | grep -v '^libshmheap: \(attached\|exit\|pid [0-9]*: prefault:\)' >"$TMP/$1.other"; then
    show "$TMP/$1.other"
    fail "$1: the library printed something else than its verbose lines"
  fi
  _helper=$top_builddir/tests/helper_env
  [ -x "$_helper" ] || fail "$_helper is not built (make check builds it)"
  # The heap belongs to the program that made it: the inspector says it is
  # the program the heap is for, and that it is another build (it calls no
  # code pointers of the heap).
  LD_PRELOAD=$SHMHEAP_LIB SHMHEAP_VERBOSE=1 SHMHEAP_KEY=$2 SHMHEAP_PROGRAM="$_helper" SHMHEAP_IMAGE=any "$_helper" info >"$TMP/$1.inspect.out" 2>"$TMP/$1.inspect.err" ||
    { show "$TMP/$1.inspect.err"; fail "$1: cannot re-attach the heap $2 the program left"; }
  grep -q 're-attached' "$TMP/$1.inspect.err" || { show "$TMP/$1.inspect.err"; fail "$1: heap $2 not re-attached"; }
  sed -n 's/^libshmheap: exit.* heap=\([0-9][0-9]*\).*/\1/p' "$TMP/$1.inspect.err" | head -n 1
}
