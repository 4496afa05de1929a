#!/bin/sh
# examples/kvstore under kill -9: a fill, then rounds of writes and deletes
# (kvcli churn) each cut short by kill -9 at a random moment, one kill in the
# middle of a restart's recovery, then a clean stop.  After every kill:
#   - shmheap-dump --check of the heap left behind exits 0 (or finds the
#     allocator edit the kill interrupted, which the restart must repair);
#   - the restarted server says it re-attached the heap after a crash;
#   - every write the client got a reply for is there, every key holds a
#     value some round wrote to it, and COUNT agrees (kvcli check);
#   - shmheap-dump --check of the quiet, restarted heap exits 0;
#   - the heap's bytes in use do not grow from round to round (no leak).
# The heap is removed at the end, also when the test fails.
. "$(dirname "$0")/real_common.sh"

KV=$top_builddir/examples/kvstore
CLI=$top_builddir/examples/kvcli
TOOL=$top_builddir/tools/shmheap-dump
for p in "$KV" "$CLI" "$TOOL"; do [ -x "$p" ] || fail "$p is not built"; done

unset SHMHEAP_PROGRAM SHMHEAP_MODE SHMHEAP_FRESH || : # real_common.sh unsets the others
NAME="kvtest-$$"
SOCK=$TMP/kv.sock
N=200000       # keys written per round
KILLS=5        # rounds cut short by kill -9
SERVER=

stop_all() {
  if [ -n "$SERVER" ]; then
    kill -9 "$SERVER" 2>/dev/null || :
    wait "$SERVER" 2>/dev/null || :
  fi
  "$TOOL" --remove --force "$NAME" >/dev/null 2>&1 || :
  cleanup
}
trap stop_all EXIT

# A random integer in [0, $1).
rand() { echo $(( $(od -An -N4 -tu4 /dev/urandom | tr -d ' ') % $1 )); }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# start LOG: starts the server (the heap's only user), its stderr in $TMP/LOG.
start() {
  SHMHEAP_KEY=$NAME SHMHEAP_VERBOSE=1 "$KV" "$SOCK" 2>"$TMP/$1" &
  SERVER=$!
}
# ready LOG: waits until the server answers.
ready() {
  "$CLI" -w 30 "$SOCK" COUNT >/dev/null 2>"$TMP/cli.err" ||
    { show "$TMP/$1"; show "$TMP/cli.err"; fail "the server of $1 does not answer"; }
}
kill9() {
  kill -9 "$SERVER" || fail "kill -9 $SERVER: the server was already gone"
  wait "$SERVER" 2>/dev/null || :
  SERVER=
}
stopped() { # stopped HOW: the server was asked to stop; it must exit 0
  set +e
  wait "$SERVER"
  st=$?
  set -e
  SERVER=
  [ "$st" -eq 0 ] || fail "the server exited $st after $1"
}
dump_check() { # dump_check WHEN
  set +e
  "$TOOL" --check "$NAME" >"$TMP/dump.check" 2>&1
  st=$?
  set -e
  [ "$st" -eq 0 ] || { show "$TMP/dump.check"; fail "shmheap-dump --check $NAME $1 exited $st"; }
}
# After a kill, the heap may be in the middle of an edit of the page
# allocator (under its lock, undo-logged) or of a thread heap (flagged busy):
# shmheap-dump then reports what it sees, and the next process that attaches
# the heap repairs it.  dump_check_killed accepts problems found then only if
# the restart says it made such a repair (check_repaired), and the heap
# checks clean after it.
MIDEDIT=0
dump_check_killed() { # dump_check_killed WHEN
  set +e
  "$TOOL" --check "$NAME" >"$TMP/dump.check" 2>&1
  st=$?
  set -e
  case $st in
    0) ;;
    1) MIDEDIT=1
       echo "  shmheap-dump --check $1: the kill left an edit to repair:"
       sed -n 's/^problem: /    problem: /p' "$TMP/dump.check" | head -n 5 ;;
    *) show "$TMP/dump.check"; fail "shmheap-dump --check $NAME $1 exited $st" ;;
  esac
}
check_repaired() { # check_repaired LOG...: the logs of the restarts since the kill
  [ "$MIDEDIT" -eq 1 ] || return 0
  _logs=
  for _l; do _logs="$_logs $TMP/$_l"; done
  # shellcheck disable=SC2086
  grep -Eq '^libshmheap: recovery: .*([1-9][0-9]* thread heap\(s\) rebuilt|lock rolled back)' $_logs ||
    { for _l; do show "$TMP/$_l"; done; fail "shmheap-dump --check found problems after a kill, but the restart repaired nothing"; }
  MIDEDIT=0
}
in_use() {
  "$CLI" "$SOCK" STATS | sed -n 's/.* heap_in_use=\([0-9]*\).*/\1/p'
}

# ---- round 1: a fill that completes, then kill -9 of the idle server -------
start start1.err
ready start1.err
grep -q '^kvstore: new heap: 0 keys' "$TMP/start1.err" || { show "$TMP/start1.err"; fail "the first start does not say new heap"; }
t0=$(now_ms)
"$CLI" "$SOCK" fill $N >"$TMP/fill.out" || { cat "$TMP/fill.out"; fail "the fill failed"; }
T=$(( $(now_ms) - t0 ))
[ "$T" -ge 10 ] || T=10
cat "$TMP/fill.out"
ROUNDS="fill:$N"
kill9
dump_check "after kill -9 of the idle server" # idle: no edit in flight
start restart1.err
ready restart1.err
grep -q "^kvstore: heap re-attached after a crash (.*): $N keys$" "$TMP/restart1.err" ||
  { show "$TMP/restart1.err"; fail "the restart after kill -9 does not say it found $N keys"; }
"$CLI" "$SOCK" check $N $ROUNDS >"$TMP/check.out" || { cat "$TMP/check.out"; fail "check after round 1"; }
cat "$TMP/check.out"
base=$(in_use)
[ -n "$base" ] || fail "STATS gave no heap_in_use"

# ---- then churn rounds, each killed at a random moment ------------------------
# Until KILLS of them were cut short in the middle of their writes: a round
# that ended before its kill still counts as a kill of an idle server, and
# makes the next delay shorter.
window=$(( T / 2 ))
landed=0
r=2
while [ $landed -lt $KILLS ]; do
  [ $r -le 30 ] || fail "only $landed of 29 kills came while a round was writing"
  "$CLI" "$SOCK" churn $N $r >"$TMP/churn.out" 2>"$TMP/churn.err" &
  CLIENT=$!
  delay=$(( 1 + $(rand $(( window + 1 ))) ))
  sleep "$(printf '%d.%03d' $((delay / 1000)) $((delay % 1000)))"
  kill9
  set +e
  wait "$CLIENT"
  cst=$?
  set -e
  [ "$cst" -eq 0 ] || [ "$cst" -eq 3 ] || { cat "$TMP/churn.out"; show "$TMP/churn.err"; fail "churn round $r exited $cst"; }
  acked=$(sed -n 's/^churn: [0-9]* requests, \([0-9]*\) replies.*/\1/p' "$TMP/churn.out")
  [ -n "$acked" ] || { cat "$TMP/churn.out"; show "$TMP/churn.err"; fail "churn round $r printed no reply count"; }
  if [ "$acked" -lt $N ]; then
    landed=$((landed + 1))
  else
    window=$(( window * 2 / 3 + 1 ))
  fi
  echo "round $r: kill -9 after ${delay} ms: $(cat "$TMP/churn.out")"
  ROUNDS="$ROUNDS churn:$acked"
  dump_check_killed "after kill -9 in round $r"

  if [ $r -eq 3 ]; then
    # Once, the restart itself is killed while it re-attaches and walks the
    # store; the next one must recover from both.
    start midrecovery.err
    sleep "0.0$(rand 10)"
    kill9
    dump_check_killed "after kill -9 during a restart"
    said=$(grep '^kvstore:' "$TMP/midrecovery.err" | head -n 1 || :)
    echo "round $r: killed the restart too, ${said:+after it said: }${said:-before it printed its start line}"
  fi

  start "restart$r.err"
  ready "restart$r.err"
  grep -q '^kvstore: heap re-attached after a crash (repaired in [0-9.]* ms; .*): [0-9]* keys$' "$TMP/restart$r.err" ||
    { show "$TMP/restart$r.err"; fail "the restart of round $r does not say it re-attached after a crash"; }
  grep -q '^libshmheap: recovery: ' "$TMP/restart$r.err" ||
    { show "$TMP/restart$r.err"; fail "the restart of round $r has no libshmheap recovery line"; }
  if [ $r -eq 3 ]; then check_repaired midrecovery.err "restart$r.err"; else check_repaired "restart$r.err"; fi
  sed -n 's/^kvstore: heap re-attached/  restart: heap re-attached/p' "$TMP/restart$r.err"
  "$CLI" "$SOCK" check $N $ROUNDS >"$TMP/check.out" 2>"$TMP/check.err" ||
    { cat "$TMP/check.out"; show "$TMP/check.err"; fail "round $r: the store lost or changed acknowledged writes ($ROUNDS)"; }
  echo "  $(cat "$TMP/check.out")"
  dump_check "after the restart of round $r"
  used=$(in_use)
  # The same N keys, about a fifth deleted: a leak of the dead processes'
  # blocks would add up round after round.
  [ "$used" -le $(( base + base / 4 )) ] ||
    fail "round $r: the heap holds $used bytes in use, after round 1 it held $base: blocks leak"
  r=$((r + 1))
done

# ---- a clean stop and start ------------------------------------------------------
"$CLI" "$SOCK" SHUTDOWN >/dev/null || fail "SHUTDOWN failed"
stopped SHUTDOWN
start clean.err
ready clean.err
grep -q '^kvstore: heap re-attached, left cleanly' "$TMP/clean.err" ||
  { show "$TMP/clean.err"; fail "the start after SHUTDOWN does not say left cleanly"; }
"$CLI" "$SOCK" check $N $ROUNDS >"$TMP/check.out" || { cat "$TMP/check.out"; fail "check after the clean restart"; }
kill -TERM "$SERVER"
stopped SIGTERM
dump_check "after SIGTERM"
[ ! -e "$SOCK" ] || fail "the server left its socket file after a clean exit"
"$TOOL" --remove "$NAME" >/dev/null || fail "shmheap-dump --remove $NAME exited $?"
echo "PASS: kvstore: $((r - 1)) kills of a running server ($landed while it was writing) and 1 of a restart; every acknowledged write kept ($ROUNDS)"
