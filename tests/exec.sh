#!/bin/bash
# exec (shmheap(7), "Exec"): a process that execs leaves its keyed heap
# cleanly, and the heap goes to the program at the end of an exec chain
# (env, sh -c 'exec ...', nohup, a shim script ending in exec) with the same
# restarts as started directly.  Launchers that fork and wait (timeout, a
# script without exec) give it with SHMHEAP_PROGRAM, which may name a link
# the program is run by.  A second instance of the program while the heap is
# in use runs on a private heap and leaves the heap to its user.
#
# tests/exec_prog prints "origin=... keyed=... count=N dead=D" (count kept
# in the heap under a root); every run here is under LD_PRELOAD, launchers
# included.
. "$(dirname "$0")/real_common.sh"

PROG=$top_builddir/tests/exec_prog
[ -x "$PROG" ] || fail "$PROG is not built (make check builds it)"
export PATH="$top_builddir/tests:$PATH"
DUMP=$top_builddir/tools/shmheap-dump

# run NAME CMD...: under the preload and the key $H; stdout in $TMP/NAME.out
run() {
  _n=$1
  shift
  set +e
  LD_PRELOAD=$SHMHEAP_LIB SHMHEAP_KEY=$H SHMHEAP_SIZE=64M SHMHEAP_VERBOSE=1 "$@" >"$TMP/$_n.out" 2>"$TMP/$_n.err" </dev/null
  status=$?
  set -e
}

# expect NAME WANT...: the lines exec_prog printed, in order
expect() {
  _n=$1
  shift
  printf '%s\n' "$@" >"$TMP/$_n.want"
  grep '^origin=' "$TMP/$_n.out" >"$TMP/$_n.got" || :
  if ! cmp -s "$TMP/$_n.want" "$TMP/$_n.got"; then
    echo "---- wanted" >&2; cat "$TMP/$_n.want" >&2
    echo "---- got" >&2; cat "$TMP/$_n.got" >&2
    show "$TMP/$_n.err"
    fail "$_n: not what exec_prog should have found"
  fi
}

remember_key() {
  sed -n 's/^libshmheap: attached key=\(0x[0-9a-fA-F]*\) name='"$H"' .*/\1/p' "$TMP/$1.err" | head -n 1 >>"$TMP/keys"
}

# the heap's summary line for "state" and "history"
heap_line() { "$DUMP" "$H" | sed -n "s/^$1 *//p"; }

# ---- the same restarts through every launcher --------------------------------
cat >"$TMP/shim" <<SHIM
#!/bin/sh
# a version manager's shim: finds the program, then execs it
exec exec_prog "\$@"
SHIM
chmod +x "$TMP/shim"

i=0
for launcher in direct env sh-exec bash-exec nohup shim; do
  i=$((i + 1))
  H=$(heap_name "exec$i")
  case $launcher in
    direct) L=() ;;
    env) L=(env) ;;
    sh-exec) L=(sh -c 'exec "$0" "$@"') ;;
    bash-exec) L=(bash -c 'exec "$0" "$@"') ;;
    nohup) L=(nohup) ;;
    shim) L=("$TMP/shim") ;;
  esac
  [ "$launcher" = shim ] && P=() || P=(exec_prog)
  n=$launcher
  run "$n.1" "${L[@]}" "${P[@]}" exit
  remember_key "$n.1"
  expect "$n.1" "origin=fresh keyed=1 count=1 dead=0"
  run "$n.2" "${L[@]}" "${P[@]}" exit
  expect "$n.2" "origin=clean keyed=1 count=2 dead=0"
  run "$n.3" "${L[@]}" "${P[@]}" crash
  [ "$status" -eq 137 ] || { show "$TMP/$n.3.err"; fail "$n.3: exit $status, not 137 (SIGKILL)"; }
  run "$n.4" "${L[@]}" "${P[@]}" exit
  expect "$n.4" "origin=crashed keyed=1 count=4 dead=1"
  # exec into a program that runs without the library, and exits
  run "$n.5" "${L[@]}" "${P[@]}" bare /bin/true
  run "$n.6" "${L[@]}" "${P[@]}" exit
  expect "$n.6" "origin=clean keyed=1 count=6 dead=0"
  # exec into another program that runs with it (a private heap), and into itself
  run "$n.7" "${L[@]}" "${P[@]}" execl /bin/true
  run "$n.8" "${L[@]}" "${P[@]}" exec exec_prog exit
  expect "$n.8" "origin=clean keyed=1 count=8 dead=0" "origin=clean keyed=1 count=9 dead=0"
  # a failed exec keeps the heap; the program exits normally
  run "$n.9" "${L[@]}" "${P[@]}" fail
  [ "$status" -eq 0 ] || { show "$TMP/$n.9.err"; fail "$n.9: exec of a missing program: exit $status"; }
  run "$n.10" "${L[@]}" "${P[@]}" exit
  expect "$n.10" "origin=clean keyed=1 count=11 dead=0"
  state=$(heap_line state)
  history=$(heap_line history)
  case $state in *"program exec_prog)"*) ;; *) fail "$n: the heap's state is '$state', not left by exec_prog" ;; esac
  case $history in *", 1 after a crash;"*) ;; *) fail "$n: the heap's history is '$history': one crash was made" ;; esac
  "$DUMP" --remove "$H" >/dev/null
  echo "$launcher: exec_prog has the heap, 11 runs, 1 crash counted ($history)"
done

# ---- the list forms (execlp, execle) exec the program into itself --------------
H=$(heap_name lists)
run lists.1 exec_prog execlp exec_prog exit
remember_key lists.1
expect lists.1 "origin=fresh keyed=1 count=1 dead=0" "origin=clean keyed=1 count=2 dead=0"
run lists.2 exec_prog execle "$PROG" exit
expect lists.2 "origin=clean keyed=1 count=3 dead=0" "origin=clean keyed=1 count=4 dead=0"
"$DUMP" --remove "$H" >/dev/null
echo "execlp, execle: the program exec'd into itself keeps the heap, cleanly"

# ---- launchers that fork and wait: SHMHEAP_PROGRAM ----------------------------
for launcher in timeout sh-wait; do
  H=$(heap_name "wait-$launcher")
  case $launcher in
    timeout) L=(timeout 60) ;;
    sh-wait) L=(sh -c '"$0" "$@"; exit $?') ;;
  esac
  n=$launcher
  run "$n.0" "${L[@]}" exec_prog exit
  remember_key "$n.0"
  expect "$n.0" "origin=fresh keyed=0 count=1 dead=0"
  "$DUMP" --remove "$H" >/dev/null 2>&1 || :
  run "$n.1" env SHMHEAP_PROGRAM=exec_prog "${L[@]}" exec_prog exit
  remember_key "$n.1"
  expect "$n.1" "origin=fresh keyed=1 count=1 dead=0"
  run "$n.2" env SHMHEAP_PROGRAM=exec_prog "${L[@]}" exec_prog exit
  expect "$n.2" "origin=clean keyed=1 count=2 dead=0"
  "$DUMP" --remove "$H" >/dev/null
  echo "$launcher: without SHMHEAP_PROGRAM a private heap (documented), with it exec_prog has the heap"
done

# ---- SHMHEAP_PROGRAM names a link; a second instance --------------------------
ln -s "$PROG" "$TMP/prog-link"
for want in prog-link "$TMP/prog-link"; do
  H=$(heap_name link$RANDOM)
  n=link
  run "$n.1" env SHMHEAP_PROGRAM="$want" "$TMP/prog-link" exit
  remember_key "$n.1"
  expect "$n.1" "origin=fresh keyed=1 count=1 dead=0"
  if [ "$(cat /proc/sys/kernel/randomize_va_space)" != 0 ]; then
    grep -q '^libshmheap: attached .*(re-executed without address randomization)' "$TMP/$n.1.err" ||
      { show "$TMP/$n.1.err"; fail "$n.1: no start-up re-exec: its name check after the re-exec is not tested"; }
  fi
  # the first instance waits; a second one, and nginx -t-like commands, run
  # on a private heap and leave the heap to it
  LD_PRELOAD=$SHMHEAP_LIB SHMHEAP_KEY=$H SHMHEAP_SIZE=64M SHMHEAP_PROGRAM="$want" \
    "$TMP/prog-link" wait >"$TMP/$n.w.out" 2>"$TMP/$n.w.err" </dev/null &
  wpid=$!
  for _ in $(seq 100); do grep -q '^origin=' "$TMP/$n.w.out" && break; sleep 0.1; done
  expect "$n.w" "origin=clean keyed=1 count=2 dead=0"
  run "$n.second" env SHMHEAP_PROGRAM="$want" "$TMP/prog-link" exit
  [ "$status" -eq 0 ] || { show "$TMP/$n.second.err"; fail "$n.second: a second instance exits $status"; }
  expect "$n.second" "origin=fresh keyed=0 count=1 dead=0"
  grep -q "the heap is in use by pid $wpid (.*); using a private heap" "$TMP/$n.second.err" ||
    { show "$TMP/$n.second.err"; fail "$n.second: SHMHEAP_VERBOSE does not say why the heap is private"; }
  kill -TERM "$wpid"
  wait "$wpid" || fail "$n.w: the waiting instance exited $?"
  run "$n.3" env SHMHEAP_PROGRAM="$want" "$TMP/prog-link" exit
  expect "$n.3" "origin=clean keyed=1 count=3 dead=0"
  "$DUMP" --remove "$H" >/dev/null
  echo "SHMHEAP_PROGRAM=$want: the link's name is the program; a second instance ran beside it on a private heap"
done

# SHMHEAP_FRESH=1 while the heap is in use cannot be honoured: exit 75
H=$(heap_name fresh)
LD_PRELOAD=$SHMHEAP_LIB SHMHEAP_KEY=$H SHMHEAP_SIZE=64M SHMHEAP_VERBOSE=1 "$PROG" wait >"$TMP/fw.out" 2>"$TMP/fw.err" </dev/null &
wpid=$!
for _ in $(seq 100); do grep -q '^origin=' "$TMP/fw.out" && break; sleep 0.1; done
remember_key fw
run fresh env SHMHEAP_FRESH=1 exec_prog exit
[ "$status" -eq 75 ] || { show "$TMP/fresh.err"; fail "SHMHEAP_FRESH=1 on a heap in use: exit $status, not 75"; }
grep -q 'SHMHEAP_FRESH=1, but the heap is in use by pid' "$TMP/fresh.err" || { show "$TMP/fresh.err"; fail "SHMHEAP_FRESH=1: no reason given"; }
kill -TERM "$wpid"
wait "$wpid" || fail "the waiting instance exited $?"
"$DUMP" --remove "$H" >/dev/null
echo "SHMHEAP_FRESH=1 while the heap is in use: exit 75"
