#!/bin/sh
# shmheap-dump on a heap left behind by a real program: listing, summary,
# JSON, a consistent --check, errors for what is not a heap, and a fuzz of
# one-byte corruptions of the metadata (exit 0, 1 or 2, never a signal).
set -eu
TOOL=$top_builddir/tools/shmheap-dump
PY=/usr/bin/python3
# The figures checked below are of what the python runs left on rootless
# heaps: a collection at the next start (SHMHEAP_GC=auto) would free them.
export SHMHEAP_GC=off
[ -x "$PY" ] || PY=python3
KEY=$(printf '0x5d%06x' $(( $$ & 0xffffff )))
NAME="dumptest-$$"
TMP=$(mktemp -d)
cleanup() {
  for k in "$KEY" "$NAME"; do
    id=$("$TOOL" --json 2>/dev/null | "$PY" -c "
import json, sys
for h in json.load(sys.stdin):
    if h['name'] == sys.argv[1] or (sys.argv[1].startswith('0x') and h['key'] == int(sys.argv[1], 16) and not h['name']):
        print(h['shmid'])" "$k" 2>/dev/null || :)
    for i in $id; do ipcrm -m "$i" 2>/dev/null || :; done
  done
  # Found by the tool above, and also by creator pid: a tool that fails (the
  # failure under test, or a sanitizer's stop) must not leave the heaps.
  for p in $CREATORS; do
    for i in $(awk -v p="$p" 'NR > 1 && $5 == p { print $2 }' /proc/sysvipc/shm); do ipcrm -m "$i" 2>/dev/null || :; done
  done
  [ -z "${NOTHEAP:-}" ] || ipcrm -m "$NOTHEAP" 2>/dev/null || :
  rm -rf "$TMP"
}
CREATORS=""
trap cleanup EXIT
# A signal must end the script too (the EXIT trap then cleans up), not only
# run the cleanup and carry on.
trap 'exit 1' HUP INT TERM
fail() { echo "FAIL: real_dump.sh: $*" >&2; exit 1; }

# A heap left behind: python builds objects in it and exits.
for k in "$KEY" "$NAME"; do
  LD_PRELOAD=$SHMHEAP_LIB SHMHEAP_KEY=$k SHMHEAP_SIZE=64M PYTHONMALLOC=malloc \
    "$PY" -c 'import os; x = {str(i): [i] * 8 for i in range(20000)}; print(len(x), flush=True); os._exit(0)' >"$TMP/py.out" &
  CREATORS="$CREATORS $!"
  wait $! || fail "python3 under SHMHEAP_KEY=$k failed"
done

# A root set by one process is found by the next one on the same key.
LD_PRELOAD=$SHMHEAP_LIB SHMHEAP_KEY=$KEY SHMHEAP_SIZE=64M "$PY" -c '
import ctypes, os
lib = ctypes.CDLL(None)
lib.malloc.restype = ctypes.c_void_p
lib.malloc.argtypes = [ctypes.c_size_t]
lib.shmheap_root_set.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
p = lib.malloc(100)
ctypes.memmove(p, b"kept across restarts\0", 21)
assert lib.shmheap_root_set(b"state", p) == 0
os._exit(0)' || fail "setting a root failed"
GOT=$(LD_PRELOAD=$SHMHEAP_LIB SHMHEAP_KEY=$KEY SHMHEAP_SIZE=64M "$PY" -c '
import ctypes
lib = ctypes.CDLL(None)
lib.shmheap_root_get.restype = ctypes.c_void_p
lib.shmheap_root_get.argtypes = [ctypes.c_char_p]
print(ctypes.string_at(lib.shmheap_root_get(b"state")).decode())') || fail "reading the root back failed"
[ "$GOT" = "kept across restarts" ] || fail "the root read back gives [$GOT]"
"$TOOL" --roots "$KEY" >"$TMP/roots" || fail "--roots exited $?"
grep -Eq '^state +0x[0-9a-f]+ +112$' "$TMP/roots" || { cat "$TMP/roots"; fail "--roots does not show root state on its 112-byte block"; }
"$TOOL" --json --roots "$KEY" | "$PY" -c 'import json,sys; r=json.load(sys.stdin)["roots"]; assert r[0]["name"]=="state" and r[0]["block_size"]==112, r' ||
  fail "--json --roots is wrong"

"$TOOL" >"$TMP/list" || fail "listing exited $?"
grep -q "^$KEY " "$TMP/list" || { cat "$TMP/list"; fail "the listing does not show key $KEY"; }
grep -q " $NAME " "$TMP/list" || { cat "$TMP/list"; fail "the listing does not show heap $NAME"; }

"$TOOL" "$NAME" >"$TMP/sum" || fail "summary of $NAME exited $?"
grep -q "name $NAME" "$TMP/sum" || { cat "$TMP/sum"; fail "the summary does not name the heap"; }
grep -q "(gone)" "$TMP/sum" || { cat "$TMP/sum"; fail "the summary does not say the creator is gone"; }
# Its only user ended with os._exit: it did not leave cleanly.
grep -q "^state      left by a crash: 1 process" "$TMP/sum" || { cat "$TMP/sum"; fail "python left by os._exit: the summary does not say so"; }
grep -q " $NAME .* crashed *python" "$TMP/list" || { cat "$TMP/list"; fail "the listing does not say crashed, program python"; }

"$TOOL" --json "$KEY" >"$TMP/json" || fail "--json summary exited $?"
"$PY" - "$TMP/json" <<'PYEOF' || fail "the --json summary is wrong"
import json, sys
h = json.load(open(sys.argv[1]))
assert h["in_use"] > 20000 * 8 * 8, h["in_use"]   # 20000 lists of 8 pointers at least
assert h["nmalloc"] > 20000, h["nmalloc"]
assert h["creator_alive"] is False
assert h["state"] == "clean" and h["users_alive"] == 0 and h["users_gone"] == 0, h
assert h["program"].split("/")[-1].startswith("python"), h["program"]
assert sum(c["blocks_used"] for c in h["classes"]) > 20000
PYEOF

"$TOOL" --check "$KEY" >"$TMP/check" || { cat "$TMP/check"; fail "--check of a clean heap exited $?"; }
grep -q "consistent" "$TMP/check" || fail "--check does not say consistent"

# Every live block: the listing agrees with the JSON count and honours --limit.
"$TOOL" --json --blocks --limit 0 "$KEY" >"$TMP/blocks.json" || fail "--blocks --json exited $?"
TOTAL=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["total"])' "$TMP/blocks.json")
[ "$TOTAL" -gt 20000 ] || fail "--blocks counts $TOTAL live blocks, fewer than the 20000 lists python left"
"$TOOL" --blocks --limit 10 "$KEY" >"$TMP/blocks" || fail "--blocks exited $?"
[ "$(grep -c ' small$\| large$' "$TMP/blocks")" -eq 10 ] || { head "$TMP/blocks"; fail "--limit 10 did not show 10 blocks"; }
grep -q "more blocks ($TOTAL in all" "$TMP/blocks" || fail "--blocks does not say how many it left out"

# --remove: refused while a process has the heap attached, unless --force.
LD_PRELOAD=$SHMHEAP_LIB SHMHEAP_KEY=$NAME SHMHEAP_PROGRAM=sleep SHMHEAP_IMAGE=any SHMHEAP_SIZE=64M sleep 30 &
SLEEPER=$!
for _ in $(seq 100); do
  "$TOOL" --json "$NAME" 2>/dev/null | grep -q '"nattch": 1,' && break
  sleep 0.1
done
set +e
"$TOOL" --remove "$NAME" 2>"$TMP/err"; rc=$?
set -e
[ "$rc" -eq 2 ] || fail "--remove of a heap in use exited $rc, not 2"
grep -q "still attached" "$TMP/err" || { cat "$TMP/err"; fail "--remove does not say the heap is in use"; }
"$TOOL" --remove --force "$NAME" >/dev/null || fail "--remove --force exited $?"
kill "$SLEEPER" 2>/dev/null || :
wait "$SLEEPER" 2>/dev/null || :
set +e
"$TOOL" "$NAME" 2>/dev/null; rc=$?
set -e
[ "$rc" -eq 2 ] || fail "the heap is still there after --remove --force"

# Errors: no such heap, and a segment that is not a heap.
set +e
"$TOOL" no-such-heap-$$ 2>"$TMP/err"; rc=$?
set -e
[ "$rc" -eq 2 ] || fail "a missing heap exited $rc, not 2"
grep -q "no-such-heap-$$" "$TMP/err" || fail "the error does not name the heap"
NOTHEAP=$("$PY" -c '
import ctypes, os
libc = ctypes.CDLL(None)
libc.shmat.restype = ctypes.c_void_p
i = libc.shmget(0, 8 << 20, 0o1600)   # IPC_PRIVATE, IPC_CREAT|0600
p = libc.shmat(i, None, 0)
ctypes.memmove(p, os.urandom(4096), 4096)
libc.shmdt(ctypes.c_void_p(p))
print(i)')
set +e
"$TOOL" --check --shmid "$NOTHEAP" 2>"$TMP/err"; rc=$?
"$TOOL" --shmid "$NOTHEAP" 2>>"$TMP/err"; rc2=$?
"$TOOL" >"$TMP/list2"
"$TOOL" --remove --shmid "$NOTHEAP" 2>/dev/null; rc3=$?
set -e
[ "$rc3" -eq 2 ] || fail "--remove of a segment that is not a heap exited $rc3, not 2"
ipcs -m -i "$NOTHEAP" >/dev/null 2>&1 || fail "--remove removed a segment that is not a heap"
NOTHEAP_ID=$NOTHEAP
ipcrm -m "$NOTHEAP"
NOTHEAP=
[ "$rc" -eq 2 ] && [ "$rc2" -eq 2 ] || fail "a segment that is not a heap exited $rc/$rc2, not 2"
grep -q "not a libshmheap heap" "$TMP/err" || { cat "$TMP/err"; fail "the error does not say it is not a heap"; }
awk -v id="$NOTHEAP_ID" '$3 == id { f = 1 } END { exit !f }' "$TMP/list2" 2>/dev/null && fail "the listing shows a segment that is not a heap"

# Fuzz: one-byte corruptions of the metadata of the heap left behind.
ID=$("$TOOL" --json "$KEY" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["shmid"])')
"$PY" "$top_srcdir/tests/dump_fuzz.py" "$TOOL" "$ID" 1000 "$$"
"$TOOL" --check "$KEY" >/dev/null || fail "the heap is not consistent after the fuzz restored every byte"
echo "PASS: shmheap-dump"
