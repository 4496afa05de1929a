#!/bin/sh
# SHMHEAP_GC=auto (issue 15): a process that attaches a keyed heap nobody
# uses frees, before main, every block its named roots do not reach.  Each
# case runs tests/gc_prog under the preload:
#  - a rooted structure (a list linked through interior pointers, an array
#    of pointers in a large block, a tree, realloc'd blocks, C++ objects
#    with vtables, a block reached only one past its end, one reached only
#    from a root into its middle) comes through a collection whole, every
#    byte checked, and shmheap_check is clean; the 20,000 garbage blocks
#    left beside it are freed, after a clean exit and after kill -9;
#  - SHMHEAP_VERBOSE says what was collected; shmheap_recovered reports it;
#  - shmheap-dump --garbage predicts what the collection frees, exactly;
#  - SHMHEAP_GC=off frees nothing;
#  - 20 restarts that each leave garbage do not grow the heap;
#  - kill -9 at random moments of starts that collect: the next start
#    repairs and collects, and the structure is whole;
#  - a heap whose roots hold no pointer is emptied whole without a walk,
#    after a clean exit, after kill -9 and after kills during such starts;
#  - a bad SHMHEAP_GC exits 78, naming the variable.
#  - metadata a stray store changed (tests/gc_corrupt.py: a descriptor
#    outside the tiling covering a page in use, small spans attach takes out
#    of use, block counts lowered, after a clean exit and after kill -9)
#    makes the start free nothing that the roots reach: the structure is
#    whole, the counts are right again.
. "$(dirname "$0")/real_common.sh"
unset SHMHEAP_GC SHMHEAP_FRESH
PROG=$top_builddir/tests/gc_prog
DUMP=$top_builddir/tools/shmheap-dump
[ -x "$PROG" ] || fail "$PROG is not built"
H=$(heap_name gc)
export SHMHEAP_KEY=$H SHMHEAP_SIZE=1G

run() { # run CASE GC ARGS...: gc_prog under the preload, output in $TMP/CASE.{out,err}
  _c=$1 _g=$2
  shift 2
  set +e
  LD_PRELOAD=$SHMHEAP_LIB SHMHEAP_VERBOSE=1 SHMHEAP_GC=$_g "$PROG" "$@" >"$TMP/$_c.out" 2>"$TMP/$_c.err" </dev/null
  status=$?
  set -e
}
ok() { [ "$status" = 0 ] || { show "$TMP/$1.out"; show "$TMP/$1.err"; fail "$1: gc_prog exits $status"; }; }
field() { sed -n "s/.*\<$2=\([0-9]*\).*/\1/p" "$TMP/$1.out" | tail -n 1; } # field CASE NAME
remove() { ipcrm -M "$("$DUMP" --json "$H" | sed -n 's/.*"key": *\([0-9]*\).*/\1/p' | head -n 1)" 2>/dev/null || :; }

# 1. A clean exit, then a collecting start.
run build off build
ok build
gb=$(field build garbage_bytes) built=$(field build in_use)
# shmheap-dump --garbage runs the same mark read-only: what it predicts is
# what the start then frees, to the block and the byte.
"$DUMP" --json --garbage "$H" >"$TMP/g1.json" 2>&1 || { show "$TMP/g1.json"; fail "g1: shmheap-dump --json --garbage"; }
"$DUMP" --garbage "$H" >"$TMP/g1.txt" 2>&1 || { show "$TMP/g1.txt"; fail "g1: shmheap-dump --garbage"; }
pn=$(sed -n 's/.*"garbage_blocks": \([0-9]*\).*/\1/p' "$TMP/g1.json") pb=$(sed -n 's/.*"garbage_bytes": \([0-9]*\).*/\1/p' "$TMP/g1.json")
run v1 auto verify
ok v1
c1=$(field v1 gc_bytes) u1=$(field v1 in_use) n1=$(field v1 gc_blocks)
[ "$pn" = "$n1" ] && [ "$pb" = "$c1" ] ||
  { show "$TMP/g1.json"; fail "g1: shmheap-dump --garbage predicted $pn blocks of $pb bytes; the start freed $n1 of $c1"; }
grep -q "a collection now would free $n1 block(s)" "$TMP/g1.txt" || { show "$TMP/g1.txt"; fail "g1: the text of --garbage"; }
# Per class, the blocks add up to the total (less the large ones).
sum=$(grep -o '"blocks": [0-9]*' "$TMP/g1.json" | awk '{ s += $2 } END { print s + 0 }')
lb=$(sed -n 's/.*"large_blocks": \([0-9]*\).*/\1/p' "$TMP/g1.json")
[ $((sum + lb)) = "$pn" ] || { show "$TMP/g1.json"; fail "g1: the classes of --garbage add up to $sum + $lb large, not $pn"; }
"$DUMP" --garbage "$H" >"$TMP/g2.txt" 2>&1 || fail "g2: shmheap-dump --garbage after the collection"
grep -q "a collection now would free [0-9] block(s)" "$TMP/g2.txt" ||
  { show "$TMP/g2.txt"; fail "g2: shmheap-dump --garbage finds more than 9 blocks right after a collection"; }
echo "clean exit: garbage $gb bytes, in use $built; collected $n1 blocks, $c1 bytes in $(field v1 gc_us) us; in use $u1"
[ "$(field v1 origin)" = 1 ] || fail "v1: origin $(field v1 origin), not 1 (clean)"
# The reach is conservative: a word of the structure's data that happens to
# hold an address inside a garbage block keeps it (the runs here keep 0 to
# 10 of the 20000): 99% of the garbage at least.
[ "$n1" -ge 19800 ] || fail "v1: $n1 blocks collected, fewer than 99% of the 20000 garbage blocks"
[ "$c1" -ge $((gb / 100 * 99)) ] || fail "v1: $c1 bytes collected, less than 99% of the $gb of garbage"
[ "$u1" -le $((built - gb / 100 * 99)) ] || fail "v1: $u1 bytes in use after the collection, more than $built - 99% of $gb"
grep -q "^libshmheap: collection: $n1 block(s) no root reaches freed, $c1 bytes, [0-9]* us$" "$TMP/v1.err" ||
  { show "$TMP/v1.err"; fail "v1: no SHMHEAP_VERBOSE line with the collection's figures"; }
"$DUMP" "$H" >"$TMP/v1.dump" 2>&1 || { show "$TMP/v1.dump"; fail "v1: shmheap-dump"; }
grep -q "^collected  1 time(s) at restart, $n1 block(s) of .* in all; the last: $n1 of .* in [0-9]* us$" "$TMP/v1.dump" ||
  { show "$TMP/v1.dump"; fail "v1: shmheap-dump's history does not show the collection"; }

# 2. The same structure and garbage, left by kill -9.
remove
run crash off build crash
[ "$status" = 137 ] || { show "$TMP/crash.err"; fail "crash: gc_prog build crash exits $status, not 137"; }
run v2 auto verify
ok v2
[ "$(field v2 origin)" = 2 ] || fail "v2: origin $(field v2 origin), not 2 (crashed)"
[ "$(field v2 gc_blocks)" -ge 19800 ] || fail "v2: $(field v2 gc_blocks) blocks collected after kill -9, fewer than 99% of 20000"
echo "kill -9: collected $(field v2 gc_blocks) blocks, $(field v2 gc_bytes) bytes in $(field v2 gc_us) us"

# 3. SHMHEAP_GC=off keeps what no root reaches.
run g3 auto garbage 5000
ok g3
run off off verify
ok off
[ "$(field off gc_blocks)" = 0 ] || fail "off: SHMHEAP_GC=off collected $(field off gc_blocks) blocks"
[ "$(field off in_use)" -ge "$(($(field g3 in_use) + $(field g3 garbage_bytes)))" ] ||
  fail "off: in use $(field off in_use) after SHMHEAP_GC=off, less than the $(field g3 in_use) + $(field g3 garbage_bytes) garbage left"
grep -q "^libshmheap: collection:" "$TMP/off.err" && fail "off: a collection line with SHMHEAP_GC=off"
run v3 auto verify
ok v3
[ "$(field v3 gc_blocks)" -ge 4950 ] || fail "v3: the garbage SHMHEAP_GC=off kept was not collected the next time"

# 4. Restarts that each leave garbage do not grow the heap.
run r0 auto garbage 3000
ok r0
base=$(field r0 in_use)
i=1
while [ $i -le 20 ]; do
  run r auto garbage 3000
  ok r
  i=$((i + 1))
done
last=$(field r in_use)
echo "20 restarts leaving 3000 garbage blocks each: in use $base, then $last"
[ "$last" -le $((base + base / 20)) ] || fail "restarts: in use grew from $base to $last over 20 restarts"

# 5. kill -9 during starts that collect: each leaves a heap the next start
# repairs; the structure stays whole.
i=1
while [ $i -le 20 ]; do
  run k auto garbage 20000
  ok k
  LD_PRELOAD=$SHMHEAP_LIB SHMHEAP_GC=auto "$PROG" verify >/dev/null 2>&1 </dev/null &
  pid=$!
  # spread over the start: attach, the mark (about half a second here), the sweep
  sleep "0.$(printf %02d $((i * 37 % 90 + 5)))"
  kill -9 $pid 2>/dev/null || :
  wait $pid 2>/dev/null || : # (the shell may say Killed)
  i=$((i + 1))
done
run kv auto verify
ok kv
echo "20 kills during collecting starts: the structure is whole, $(field kv gc_blocks) blocks collected after the last"

# 6. A heap whose roots hold no pointer is emptied whole, by a reset of its
# metadata instead of a walk (gc_reset=1): after a clean exit and after
# kill -9 nothing of what was left stays in use, shmheap_check is clean, a
# root set to null stays null.  Kills during such starts leave a heap the
# next start empties again.
run n0 auto rootless 20000
ok n0
[ "$(field n0 gc_reset)" = 0 ] || fail "n0: the heap had roots, but the start emptied it whole"
[ "$(field n0 roots)" = 2 ] || fail "n0: $(field n0 roots) of the roots gc and gc.inner found, not 2"
run n1 auto rootless 20000 crash
[ "$status" = 137 ] || { show "$TMP/n1.err"; fail "n1: gc_prog rootless 20000 crash exits $status, not 137"; }
for f in gc_reset:1 roots:0 problems:0 origin:1; do
  [ "$(field n1 "${f%:*}")" = "${f#*:}" ] || { show "$TMP/n1.out"; fail "n1: ${f%:*}=$(field n1 "${f%:*}"), not ${f#*:}"; }
done
# 20000 garbage blocks and the structure (more than 2000 blocks).  What is
# in use before main is the C++ runtime's (its exception pool: 72 KiB).
[ "$(field n1 gc_blocks)" -ge 22000 ] || fail "n1: $(field n1 gc_blocks) blocks freed, fewer than the 22000 left"
[ "$(field n1 gc_bytes)" -ge "$(field n0 garbage_bytes)" ] ||
  fail "n1: $(field n1 gc_bytes) bytes freed, fewer than the $(field n0 garbage_bytes) of garbage left"
[ "$(field n1 in_use)" -le 262144 ] || fail "n1: $(field n1 in_use) bytes in use before main after the heap was emptied"
grep -q "^libshmheap: collection: no root holds a pointer: the heap was emptied, $(field n1 gc_blocks) block(s) freed, $(field n1 gc_bytes) bytes, [0-9]* us$" "$TMP/n1.err" ||
  { show "$TMP/n1.err"; fail "n1: no SHMHEAP_VERBOSE line saying the heap was emptied"; }
run n2 auto rootless 0
ok n2
for f in gc_reset:1 roots:0 problems:0 origin:2; do
  [ "$(field n2 "${f%:*}")" = "${f#*:}" ] || { show "$TMP/n2.out"; fail "n2: ${f%:*}=$(field n2 "${f%:*}"), not ${f#*:}"; }
done
[ "$(field n2 gc_blocks)" -ge 20000 ] || fail "n2: $(field n2 gc_blocks) blocks freed after kill -9, fewer than the 20000 left"
[ "$(field n2 in_use)" -le 262144 ] || fail "n2: $(field n2 in_use) bytes in use before main after kill -9"
"$DUMP" --check "$H" >"$TMP/n2.check" 2>&1 || { show "$TMP/n2.check"; fail "n2: shmheap-dump --check after the heap was emptied"; }
# shmheap-dump's history says it.
"$DUMP" "$H" >"$TMP/n2.dump" 2>&1 || { show "$TMP/n2.dump"; fail "n2: shmheap-dump"; }
grep -q "^collected  [0-9]* time(s) at restart, .*; the last: $(field n2 gc_blocks) of .* us (no root held a pointer: emptied whole)$" "$TMP/n2.dump" ||
  { show "$TMP/n2.dump"; fail "n2: shmheap-dump's history does not show the collection that emptied the heap"; }
"$DUMP" --json "$H" | grep -q "\"gc_last\": {\"blocks\": $(field n2 gc_blocks), \"bytes\": $(field n2 gc_bytes), \"us\": [0-9]*, \"emptied_whole\": true}" ||
  fail "n2: shmheap-dump --json has no gc_last with the figures the start reported"
echo "no root: emptied $(field n1 gc_blocks) blocks, $(field n1 gc_bytes) bytes in $(field n1 gc_us) us; after kill -9 $(field n2 gc_blocks) blocks in $(field n2 gc_us) us"
i=1
while [ $i -le 20 ]; do
  run nk auto rootless 5000
  ok nk
  LD_PRELOAD=$SHMHEAP_LIB SHMHEAP_GC=auto "$PROG" rootless 0 >/dev/null 2>&1 </dev/null &
  pid=$!
  sleep "0.0$(printf %02d $((i * 37 % 60)))"
  kill -9 $pid 2>/dev/null || :
  wait $pid 2>/dev/null || :
  i=$((i + 1))
done
run n3 auto rootless 0
ok n3
[ "$(field n3 in_use)" -le 262144 ] || fail "n3: $(field n3 in_use) bytes in use after 20 kills during starts that empty the heap"
"$DUMP" --check "$H" >"$TMP/n3.check" 2>&1 || { show "$TMP/n3.check"; fail "n3: shmheap-dump --check after 20 kills during starts that empty the heap"; }
echo "20 kills during starts that empty the heap: consistent, $(field n3 in_use) bytes in use"

# 7. A bad value: exit 78 and the variable's name.
run bad bogus verify
[ "$status" = 78 ] || fail "bad: SHMHEAP_GC=bogus exits $status, not 78"
grep -q "SHMHEAP_GC=bogus" "$TMP/bad.err" || { show "$TMP/bad.err"; fail "bad: the message does not name SHMHEAP_GC"; }
remove

# 8. Corrupt metadata: a start either refuses the heap (65) or keeps the
# structure whole.  quarantine's spans stay out of use, and shmheap_check
# reports them as it must: its verify leaves the check out.
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
for c in stray quarantine used used0; do
  if [ "$c" = used0 ]; then
    run "b$c" off build crash
    [ "$status" = 137 ] || { show "$TMP/b$c.err"; fail "b$c: gc_prog build crash exits $status, not 137"; }
  else
    run "b$c" off build
    ok "b$c"
    run "g$c" auto garbage 20000
    ok "g$c"
  fi
  sid=$("$DUMP" --json "$H" | sed -n 's/.*"shmid": *\([0-9]*\).*/\1/p' | head -n 1)
  [ -n "$sid" ] || fail "$c: no shmid for $H"
  top_builddir=$top_builddir "$PY" "$top_srcdir/tests/gc_corrupt.py" "$sid" "$c" ||
    fail "$c: tests/gc_corrupt.py exits $?"
  if [ "$c" = quarantine ]; then run "v$c" auto verify nocheck; else run "v$c" auto verify; fi
  if [ "$status" = 65 ] && grep -q "^libshmheap: " "$TMP/v$c.err"; then
    echo "$c: the heap was refused"
  else
    ok "v$c"
    echo "$c: the structure is whole; collected $(field "v$c" gc_blocks) blocks"
  fi
  remove
done
echo "ok"
