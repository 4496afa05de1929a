#!/bin/sh
# SHMHEAP_PREFAULT (issue 17): a process that re-attaches a keyed heap maps
# the pages of its blocks in, before main (sync) or on background threads,
# and the program may use the heap meanwhile.  Each case runs
# tests/prefault_prog on a heap of about 250 MiB in use:
#  - off maps nothing; sync has finished at main; threads and auto map
#    exactly the pages in use, none of the free spans (the process's own
#    resident share of the segment stays below what mapping those would
#    add);
#  - no byte of a block in use changes, and when the process allocates
#    nothing (no threads: glibc allocates a thread's descriptors; no
#    sanitizer runtime) no byte of any heap page below top: hashes read
#    through a read-only attach, before and after;
#  - frees, reallocs and mallocs while the threads run leave every block
#    whole and shmheap_check clean; so does a kill -9 during the prefault,
#    for the next start's repair;
#  - a fork while it runs, in copy and in share mode: the child works and
#    has no prefault, the parent's threads resume and map all they planned;
#    so do 200 forks from two threads at once;
#  - a supervised worker maps the heap in afresh, after its predecessor's
#    death too;
#  - garbage written over the page map, the span descriptors and the
#    header's bounds while the threads walk them ends the walk, never the
#    process;
#  - a bad SHMHEAP_PREFAULT exits 78, naming the variable.
. "$(dirname "$0")/real_common.sh"
unset SHMHEAP_PREFAULT
# The heap's blocks are rootless: a collection at each start (SHMHEAP_GC=auto,
# tests/gc.sh) would free them before the prefault maps them in.
export SHMHEAP_GC=off
PROG=$top_builddir/tests/prefault_prog
DUMP=$top_builddir/tools/shmheap-dump
[ -x "$PROG" ] || fail "$PROG is not built"
H=$(heap_name pf)
export SHMHEAP_KEY=$H SHMHEAP_SIZE=1G

run() { # run CASE PREFAULT ARGS...: prefault_prog, output in $TMP/CASE.{out,err}
  _c=$1 _p=$2
  shift 2
  set +e
  SHMHEAP_PREFAULT=$_p "$PROG" "$@" >"$TMP/$_c.out" 2>"$TMP/$_c.err" </dev/null
  status=$?
  set -e
  [ "$status" = 0 ] || { show "$TMP/$_c.out"; show "$TMP/$_c.err"; fail "$_c: prefault_prog $* exits $status"; }
}
field() { sed -n "1s/.*[ ^]$2=\([0-9]*\).*/\1/p" "$TMP/$1.out"; } # field CASE NAME: of the status line
first() { sed -n "1s/^mode=\([0-9]*\).*/\1/p" "$TMP/$1.out"; }
shmid() { "$DUMP" --json "$H" | sed -n 's/.*"shmid": *\([0-9]*\).*/\1/p' | head -n 1; }
hash() { SHMHEAP_KEY= "$PROG" hash "$(shmid)" "$@" | sed -n 's/^hash=\([0-9a-f]*\) .*/\1/p'; }
# What the heap's counters say of allocations: unchanged by a process that
# allocates nothing (a sanitizer's runtime does allocate, before main).
allocs() { "$DUMP" --json "$H" | tr -d ' \n' | sed 's/.*\("nmalloc":[0-9]*,"nfree":[0-9]*\).*\("large_blocks":[0-9]*\).*/\1\2/'; }
# same_heap CASE COUNTS: every heap page is as before when the process
# allocated nothing, else (say so) the blocks in use are.
same_heap() {
  [ "$(hash "$TMP/blocks")" = "$b0" ] || fail "$1: bytes of blocks in use changed"
  if [ "$(allocs)" = "$2" ]; then
    [ "$(hash)" = "$h0" ] || fail "$1: the heap's bytes changed"
    echo "$1: no allocation, every heap page unchanged"
  else
    echo "$1: the process allocated (a sanitizer's runtime?): blocks in use unchanged"
  fi
}
consistent() { "$DUMP" --check "$H" >"$TMP/check.out" 2>&1 || { show "$TMP/check.out"; fail "$1: shmheap-dump --check finds problems"; }; }

run fill off fill 150000
# Its key, for cleanup: the scribble case leaves a header no tool can read.
printf '0x%x\n' "$("$DUMP" --json "$H" | sed -n 's/.*"key": *\([0-9]*\).*/\1/p' | head -n 1)" >>"$TMP/keys"
"$DUMP" --json "$H" | grep -q '"name": "'"$H"'"' || fail "the fill left no heap named $H"
free=$("$DUMP" --json "$H" | sed -n 's/.*"free_bytes": *\([0-9]*\).*/\1/p')
[ "${free:-0}" -ge $((32 << 20)) ] || fail "the fill left ${free:-0} bytes of free spans, not the 32 MiB or more this test needs"
# Two hashes: every heap page below top, which only a process that starts
# no thread leaves alone (glibc allocates a new thread's descriptors from
# the heap and frees them at its end); and every block in use now.
h0=$(hash)
"$DUMP" --blocks --limit 10000000 "$H" >"$TMP/blocks"
b0=$(hash "$TMP/blocks")
[ -n "$h0" ] && [ -n "$b0" ] || fail "no hash of the heap"

# ---- off: nothing mapped, no byte changed ----
a0=$(allocs)
run off off idle
[ "$(first off)" = 0 ] && [ "$(field off mapped)" = 0 ] || { show "$TMP/off.out"; fail "off: the status is not mode 0 with nothing mapped"; }
same_heap off "$a0"
echo "off: nothing mapped"

# ---- sync: finished at main ----
a0=$(allocs)
run sync sync idle
[ "$(first sync)" = 1 ] && [ "$(field sync finished)" = 1 ] || { show "$TMP/sync.out"; fail "sync: not finished at main"; }
planned=$(field sync planned)
[ "$(field sync mapped)" = "$planned" ] || { show "$TMP/sync.out"; fail "sync: mapped differs from the $planned bytes in use"; }
same_heap sync "$a0"
echo "sync: $planned bytes mapped before main"

# ---- threads and auto: in the background, only the pages in use ----
for p in threads auto; do
  rm -f "$TMP/go"
  SHMHEAP_PREFAULT=$p "$PROG" idle "$TMP/go" >"$TMP/$p.out" 2>"$TMP/$p.err" </dev/null &
  pid=$!
  for _ in $(seq 300); do grep -q '^idle:' "$TMP/$p.out" && break; sleep 0.1; done
  grep -q '^idle: finished=1' "$TMP/$p.out" || { touch "$TMP/go"; wait "$pid" || :; show "$TMP/$p.out"; show "$TMP/$p.err"; fail "$p: the prefault did not finish"; }
  # The process's resident share of the segment: the pages in use and the
  # metadata, not the free spans (purged: a populate would give them
  # memory again, and count it here).
  rss=$(awk '/^[0-9a-f]+-[0-9a-f]+ .* \/SYSV/ { m = 1; next } /^[0-9a-f]+-/ { m = 0 } m && $1 == "Rss:" { s += $2 } END { print s + 0 }' "/proc/$pid/smaps")
  touch "$TMP/go"
  wait "$pid" || { show "$TMP/$p.err"; fail "$p: prefault_prog idle failed"; }
  want=2
  [ "$p" = auto ] && [ "$(nproc)" = 1 ] && want=1 # auto is sync on one CPU
  [ "$(first $p)" = "$want" ] || { show "$TMP/$p.out"; fail "$p: the status at main is not mode $want"; }
  mapped=$(sed -n 's/^idle: finished=1 mapped=\([0-9]*\)/\1/p' "$TMP/$p.out")
  planned=$(field $p planned) # this run's: a sanitizer's runtime allocates in each
  [ "$mapped" = "$planned" ] || fail "$p: $mapped bytes mapped, $planned in use"
  limit=$(( (planned >> 10) + 8 * 1024 ))
  [ "$rss" -le "$limit" ] || fail "$p: $rss KiB of the segment resident in the process, more than the $((planned >> 10)) KiB in use and 8 MiB of metadata: free pages ($((free >> 10)) KiB) were mapped"
  [ "$(hash "$TMP/blocks")" = "$b0" ] || fail "$p: bytes of blocks in use changed"
  echo "$p: $mapped bytes mapped on $(field $p threads) thread(s), $rss KiB resident, blocks in use unchanged"
done

# ---- the program allocates, frees and reallocates while the threads run ----
run churn threads churn
cat "$TMP/churn.out"
run churned auto verify
consistent churn
echo "churn: consistent"

# ---- kill -9 during the prefault ----
SHMHEAP_PREFAULT=threads "$PROG" churn-forever >"$TMP/kill.out" 2>"$TMP/kill.err" </dev/null &
pid=$!
for _ in $(seq 300); do grep -q churning "$TMP/kill.out" && break; sleep 0.02; done
grep -q churning "$TMP/kill.out" || { kill -9 "$pid" 2>/dev/null || :; show "$TMP/kill.err"; fail "kill: prefault_prog did not churn during the prefault"; }
kill -9 "$pid"
wait "$pid" 2>/dev/null || :
SHMHEAP_VERBOSE=1 run killed auto verify
grep -q 're-attached (left by a crash: repaired)' "$TMP/killed.err" || { show "$TMP/killed.err"; fail "kill: the next start did not repair a crashed heap"; }
consistent kill
echo "kill -9 during the prefault: repaired, every block whole"

# ---- fork during the prefault ----
for mode in copy share; do
  run fork-$mode threads fork "$mode"
  grep -q '^child: 0 bad' "$TMP/fork-$mode.out" && grep -q '^parent: .* finished=1' "$TMP/fork-$mode.out" ||
    { show "$TMP/fork-$mode.out"; fail "fork $mode: no clean child and finished parent"; }
  sed -n 's/^/fork '"$mode"': /p' "$TMP/fork-$mode.out" | sed -n '2,3p'
done
consistent fork

# ---- two threads forking at once, over and over, while it runs ----
for mode in copy share; do
  SHMHEAP_FORK=$mode run storm-$mode threads fork-storm 100
  sed -n "s/^storm/storm $mode/p" "$TMP/storm-$mode.out"
done
consistent storm

# ---- a supervised worker, and the one after its death ----
run supervise threads supervise
n=$(grep -c '^worker [01]: mode=2 finished=1' "$TMP/supervise.out" || :)
[ "$n" = 2 ] || { show "$TMP/supervise.out"; fail "supervise: not two workers that mapped the heap in afresh"; }
grep '^worker' "$TMP/supervise.out"

# ---- garbage metadata under the walk ----
run scribble threads scribble
grep -q '^scribbled: finished=1' "$TMP/scribble.out" || { show "$TMP/scribble.out"; fail "scribble: the walk did not end"; }
echo "scribble: the walk over garbage ended, the process did not crash"
ipcrm -M "$("$DUMP" --json "$H" | sed -n 's/.*"key": *\([0-9]*\).*/\1/p' | head -n 1)" 2>/dev/null || :

# ---- a bad value ----
set +e
SHMHEAP_PREFAULT=eager "$PROG" status >"$TMP/bad.out" 2>"$TMP/bad.err"
status=$?
set -e
[ "$status" = 78 ] && grep -q 'SHMHEAP_PREFAULT=eager' "$TMP/bad.err" || { show "$TMP/bad.err"; fail "SHMHEAP_PREFAULT=eager exits $status, not 78 with a message naming it"; }
echo "SHMHEAP_PREFAULT=eager: exit 78"
