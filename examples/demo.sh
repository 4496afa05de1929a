#!/bin/bash
# make demo: runs examples/counter on a private heap, then examples/kvstore on
# a keyed heap that it kills with kill -9 and restarts, and says what each
# step shows.  $1 is the build directory (make passes $(abs_builddir)).
# Exits non-zero as soon as something is not as it says.
# make runs it with $(SHELL), which is dash on Debian: re-run under bash.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -euo pipefail

builddir=${1:-.}
counter=$builddir/examples/counter
kvstore=$builddir/examples/kvstore
kvcli=$builddir/examples/kvcli
dump=$builddir/tools/shmheap-dump
for prog in "$counter" "$kvstore" "$kvcli" "$dump"; do
  if [ ! -x "$prog" ]; then
    echo "demo: $prog is not built; run make first" >&2
    exit 1
  fi
done

say() { printf '\n== %s\n' "$*"; }

say "1. counter runs with SHMHEAP_KEY unset (a private segment), SHMHEAP_VERBOSE=1 and the default fork mode (copy)."
echo "   The 'libshmheap:' lines on stderr come from the library: one when it attaches the segment, one at exit."
echo "   counter builds a list with malloc/strdup, forks a share child that appends to it and a copy child whose changes stay private."
status=0
out=$(env -u SHMHEAP_KEY -u SHMHEAP_FORK -u SHMHEAP_ADDR -u SHMHEAP_SIZE SHMHEAP_VERBOSE=1 \
  "$counter" 2>&1) || status=$?
printf '%s\n' "$out"
if [ "$status" -ne 0 ]; then
  echo "demo: counter failed with exit status $status" >&2
  exit 1
fi

say "2. The private segments (the parent's heap and the copy child's) were removed when their last process exited:"
shmids=$(printf '%s\n' "$out" | sed -n 's/.*shmid \([0-9][0-9]*\).*/\1/p' | sort -u)
if [ -z "$shmids" ]; then
  echo "demo: counter printed no shmid" >&2
  exit 1
fi
for id in $shmids; do
  # /proc/sysvipc/shm is what ipcs -m reads; column 2 is the shmid.
  if awk -v id="$id" 'NR > 1 && $2 == id { found = 1 } END { exit !found }' /proc/sysvipc/shm; then
    echo "demo: segment shmid $id is still there:" >&2
    ipcs -m -i "$id" >&2
    exit 1
  fi
  echo "   shmid $id: gone (not in ipcs -m)"
done

say "3. A configuration the library cannot honour is refused before main(), never replaced by glibc's heap:"
echo "   SHMHEAP_SIZE=1M is below the 4M minimum, so counter must exit with status 78 (EX_CONFIG)."
status=0
env -u SHMHEAP_KEY SHMHEAP_SIZE=1M "$counter" >/dev/null || status=$?
if [ "$status" -ne 78 ]; then
  echo "demo: expected exit status 78, got $status" >&2
  exit 1
fi
echo "   exit status $status"

# ---- part 2: a server that survives kill -9 ---------------------------------
key=kvdemo-$$
tmp=$(mktemp -d "${TMPDIR:-/tmp}/kvdemo.XXXXXX")
sock=$tmp/kv.sock
server=
# The keyed heap outlives every process by design: remove it however the
# demo ends.
cleanup() {
  if [ -n "$server" ]; then
    kill -9 "$server" 2>/dev/null || :
    wait "$server" 2>/dev/null || :
  fi
  "$dump" --remove --force "$key" >/dev/null 2>&1 || :
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' HUP INT TERM

fail() {
  echo "demo: $*" >&2
  exit 1
}
# run CMD...: shows the command as typed (build paths shortened), runs it
# and shows its output indented; the output is also left in $tmp/out.
run() {
  local a line='$'
  for a; do
    case $a in
      *' '*) line+=" '$a'" ;;
      *) line+=" $a" ;;
    esac
  done
  printf '%s\n' "$line" | sed "s|$builddir/||g; s|$tmp/|\$TMP/|g"
  local st=0
  "$@" >"$tmp/out" 2>&1 || st=$?
  sed 's/^/  /' "$tmp/out"
  return "$st"
}
# start LOG [VAR=value...]: starts the server on the heap, stderr in $tmp/LOG,
# waits until it answers and shows what it said.
start() {
  local log=$1
  shift
  echo "\$ ${*:+$* }SHMHEAP_KEY=$key examples/kvstore \$TMP/kv.sock &"
  # Only what is shown: none of the caller's SHMHEAP_* settings.
  env -u LD_PRELOAD -u SHMHEAP_SIZE -u SHMHEAP_ADDR -u SHMHEAP_FORK -u SHMHEAP_VERBOSE \
    -u SHMHEAP_PROGRAM -u SHMHEAP_MODE -u SHMHEAP_FRESH \
    "$@" SHMHEAP_KEY="$key" "$kvstore" "$sock" 2>"$tmp/$log" &
  server=$!
  local tries=0
  until "$kvcli" "$sock" COUNT >/dev/null 2>&1; do
    if ! kill -0 "$server" 2>/dev/null || [ $((tries += 1)) -gt 600 ]; then
      cat "$tmp/$log" >&2
      fail "kvstore did not start"
    fi
    sleep 0.05
  done
  sed "s/^/  /; s|$tmp/|\$TMP/|g" "$tmp/$log"
}
# signal SIG: sends SIG to the server and waits for it; its exit status in
# $status.  (stderr off while it dies: no "Killed" line from bash.)
signal() {
  echo "\$ kill -$1 $server"
  status=0
  { kill "-$1" "$server" && wait "$server"; } 2>/dev/null || status=$?
  server=
}
# stop: waits for the server to exit by itself.
stop() {
  status=0
  wait "$server" || status=$?
  server=
}

say "4. examples/kvstore: a key-value server on a UNIX socket whose whole store (a hash table of"
echo "   malloc'd nodes, found again through the named root \"kvstore\") lives in the keyed heap $key."
echo "   It is linked with -lshmheap: no LD_PRELOAD.  examples/kvcli is its client; 'fill' pipelines SETs."
start kv1.err
grep -q '^kvstore: new heap: 0 keys$' "$tmp/kv1.err" || fail "the first start does not say 'new heap'"
run "$kvcli" "$sock" fill 100000 || fail "fill failed"
keys=("GET key:0" "GET key:4242" "GET key:99999" COUNT)
run "$kvcli" "$sock" "${keys[@]}" || fail "GET failed"
cp "$tmp/out" "$tmp/before"
expect=$'VALUE r1-value-0-\nVALUE r1-value-4242-xx\nVALUE r1-value-99999-xxxxxxxxxxxxxxx\nCOUNT 100000'
[ "$(cat "$tmp/before")" = "$expect" ] || fail "the replies are not what was SET"

say "5. kill -9: the server gets no chance to save anything."
pid=$server
signal 9
[ "$status" -eq 137 ] || fail "kvstore exited with status $status, not 137 (SIGKILL)"
echo "   kvstore (pid $pid) was killed by SIGKILL; its heap is still in shared memory:"

say "6. shmheap-dump reads the heap left behind, from the segment alone:"
run "$dump" "$key" || fail "shmheap-dump $key failed"
echo "   (the 100000 nodes are the 64- and 80-byte blocks; the large block is the table's bucket array)"
run "$dump" --check "$key" || fail "shmheap-dump --check found problems"
run "$dump" --roots "$key" || fail "shmheap-dump --roots failed"
grep -q '^kvstore  *0x' "$tmp/out" || fail "shmheap-dump --roots does not show the root kvstore"

say "7. The same command again.  The library repairs what the kill left (SHMHEAP_VERBOSE=1 shows it),"
echo "   kvstore finds its root, walks and recounts its table, and serves the same keys:"
start kv2.err SHMHEAP_VERBOSE=1
grep -q "^kvstore: heap re-attached after a crash (repaired in [0-9.]* ms; .*): 100000 keys$" "$tmp/kv2.err" ||
  fail "the restart does not say it re-attached the heap after a crash with 100000 keys"
run "$kvcli" "$sock" "${keys[@]}" || fail "GET failed"
cmp -s "$tmp/before" "$tmp/out" || fail "the replies after the restart differ from those before the kill"
run "$kvcli" "$sock" check 100000 fill:100000 || fail "keys were lost or changed"
run "$kvcli" "$sock" STATS || fail "STATS failed"

say "8. A clean stop (SIGTERM) and start: the library records that the heap was left cleanly."
signal TERM
[ "$status" -eq 0 ] || fail "kvstore exited with status $status after SIGTERM"
grep -q '^kvstore: SIGTERM, exiting cleanly: 100000 keys$' "$tmp/kv2.err" ||
  fail "kvstore did not say it exited cleanly on SIGTERM"
grep '^kvstore: .*exiting cleanly' "$tmp/kv2.err" | sed 's/^/  /'
start kv3.err
grep -q '^kvstore: heap re-attached, left cleanly (in [0-9.]* ms): 100000 keys$' "$tmp/kv3.err" ||
  fail "the start after a clean stop does not say 'left cleanly' with 100000 keys"
run "$kvcli" "$sock" SHUTDOWN || fail "SHUTDOWN failed"
stop
[ "$status" -eq 0 ] || fail "kvstore exited with status $status after SHUTDOWN"

say "9. The heap stays until it is removed:"
run "$dump" --remove "$key" || fail "shmheap-dump --remove failed"
if "$dump" "$key" >/dev/null 2>&1; then fail "the heap $key is still there"; fi
echo "   heap $key: gone"

say "demo passed"
