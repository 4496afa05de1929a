#!/bin/bash
# shmheap-dump says who uses a heap as /proc does (issue 18, item 5): the
# listing, the summary and the JSON agree with each other and with the
# processes for
#   - a live private heap (no process table: its users are its attachers);
#   - the two heaps of a copy-mode fork, while both processes live and after
#     the parent is gone;
#   - a heap whose creator is a zombie (gone, like any process that ended);
#   - a heap whose creator's pid now names a process started after the heap
#     was formed (gone too).
. "$(dirname "$0")/real_common.sh"
TOOL=$top_builddir/tools/shmheap-dump
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
pids=()
stop_all() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || :; done; }
trap 'stop_all; cleanup' EXIT

# field SHMID KEY: the tool's JSON listing entry of the heap, one field
field() {
  "$TOOL" --json | "$PY" -c '
import json, sys
for h in json.load(sys.stdin):
    if h["shmid"] == int(sys.argv[1]):
        v = h[sys.argv[2]]
        print(str(v).lower() if isinstance(v, bool) else v)' "$1" "$2"
}
# heaps_of PID: the shmids of the heaps whose header names PID as creator
heaps_of() {
  "$TOOL" --json | "$PY" -c '
import json, sys
print(" ".join(str(h["shmid"]) for h in json.load(sys.stdin) if h["creator_pid"] == int(sys.argv[1])))' "$1"
}
# expect_user SHMID PID PROGRAM: listed, summarised and in JSON as in use by PID
expect_user() {
  local id=$1 pid=$2 prog=$3 line
  [ "$(field "$id" pid)" = "$pid" ] || fail "heap $id: JSON pid $(field "$id" pid), not $pid"
  [ "$(field "$id" pid_alive)" = true ] || fail "heap $id: JSON pid_alive is not true for live pid $pid"
  [ "$(field "$id" state)" = in-use ] || fail "heap $id: JSON state $(field "$id" state), not in-use"
  line=$("$TOOL" | awk -v id="$id" '$3 == id')
  echo "$line" | awk -v p="$pid" -v g="$prog" '$7 == p && $8 == "yes" && $9 == "in-use" && $10 == g { ok = 1 } END { exit !ok }' ||
    fail "heap $id: the listing says [$line], not pid $pid yes in-use $prog"
  "$TOOL" --shmid "$id" >"$TMP/sum" || fail "heap $id: summary failed"
  grep -q "^state      in use by pid $pid (program $prog)" "$TMP/sum" || { show "$TMP/sum"; fail "heap $id: the summary's state is not 'in use by pid $pid'"; }
}

# ---- a live private heap ------------------------------------------------------
LD_PRELOAD=$SHMHEAP_LIB SHMHEAP_SIZE=16M sleep 60 </dev/null &
s=$!
pids+=("$s")
for _ in $(seq 200); do [ -n "$(heaps_of "$s")" ] && break; sleep 0.1; done
id=$(heaps_of "$s")
[ -n "$id" ] || fail "no heap created by sleep ($s)"
expect_user "$id" "$s" sleep
[ "$(field "$id" creator_alive)" = true ] || fail "private heap: creator_alive is not true"
grep -q "created by pid $s (alive)" "$TMP/sum" || { show "$TMP/sum"; fail "private heap: the summary does not say its creator is alive"; }
echo "a live private heap: pid $s, yes, in-use, sleep (listing, summary and JSON)"
kill "$s"

# ---- a copy-mode fork: the parent's heap and the child's copy -----------------
LD_PRELOAD=$SHMHEAP_LIB SHMHEAP_SIZE=16M "$PY" -c '
import os, sys, time
x = [str(i) for i in range(10000)]
pid = os.fork()
if pid == 0:
    time.sleep(60)
    os._exit(0)
print(pid, flush=True)
time.sleep(60)' >"$TMP/fork.out" </dev/null &
parent=$!
pids+=("$parent")
for _ in $(seq 200); do [ -s "$TMP/fork.out" ] && break; sleep 0.1; done
child=$(cat "$TMP/fork.out")
[ -n "$child" ] || fail "the forking python3 printed no child pid"
pids+=("$child")
for _ in $(seq 200); do [ -n "$(heaps_of "$child")" ] && break; sleep 0.1; done
pid_heap=$(heaps_of "$parent")
child_heap=$(heaps_of "$child")
[ -n "$pid_heap" ] && [ -n "$child_heap" ] || fail "copy fork: heaps of parent [$pid_heap], child [$child_heap]"
expect_user "$pid_heap" "$parent" python3
expect_user "$child_heap" "$child" python3
kill "$parent"
wait "$parent" 2>/dev/null || :
expect_user "$child_heap" "$child" python3
for _ in $(seq 200); do [ -z "$(heaps_of "$parent")" ] && break; sleep 0.1; done
[ -z "$(heaps_of "$parent")" ] || fail "copy fork: the parent's heap is still listed after the parent is gone"
echo "copy fork: parent $parent and child $child each in use of its heap; the child's still after the parent is gone"
kill "$child"

# ---- a zombie creator --------------------------------------------------------
# sh starts the keyed sleep and becomes a sleep that never reaps it.
z=$(heap_name zombie)
sh -c 'LD_PRELOAD=$1 SHMHEAP_KEY=$2 SHMHEAP_SIZE=16M SHMHEAP_VERBOSE=1 sleep 0 2>"$3" & exec sleep 120' sh "$SHMHEAP_LIB" "$z" "$TMP/z.err" </dev/null &
pids+=("$!")
for _ in $(seq 200); do grep -q '^libshmheap: exit' "$TMP/z.err" 2>/dev/null && break; sleep 0.1; done
sed -n "s/^libshmheap: attached key=\(0x[0-9a-fA-F]*\) name=$z .*/\1/p" "$TMP/z.err" | head -n 1 >>"$TMP/keys"
zid=$("$TOOL" --json | "$PY" -c 'import json, sys; print(" ".join(str(h["shmid"]) for h in json.load(sys.stdin) if h["name"] == sys.argv[1]))' "$z")
[ -n "$zid" ] || { show "$TMP/z.err"; fail "zombie: no heap named $z"; }
zpid=$(field "$zid" creator_pid)
for _ in $(seq 200); do [ "$(awk '{ print $3 }' "/proc/$zpid/stat" 2>/dev/null)" = Z ] && break; sleep 0.1; done
[ "$(awk '{ print $3 }' "/proc/$zpid/stat" 2>/dev/null)" = Z ] || fail "zombie: the creator $zpid is not a zombie (the test's own setup)"
[ "$(field "$zid" creator_alive)" = false ] || fail "zombie: JSON creator_alive is not false for the zombie $zpid"
[ "$(field "$zid" pid_alive)" = false ] || fail "zombie: JSON pid_alive is not false"
"$TOOL" --shmid "$zid" >"$TMP/zsum"
grep -q "created by pid $zpid (gone)" "$TMP/zsum" || { show "$TMP/zsum"; fail "zombie: the summary does not say the creator is gone"; }
grep -q "^state      left cleanly by pid $zpid (program sleep)" "$TMP/zsum" || { show "$TMP/zsum"; fail "zombie: the summary's state"; }
"$TOOL" --json "$z" | "$PY" -c 'import json, sys; d = json.load(sys.stdin); sys.exit(d["creator_alive"] or d["state"] != "clean")' ||
  fail "zombie: the heap's JSON summary says its creator is alive or the heap not clean"
echo "a zombie creator ($zpid): gone in the listing, the summary and the JSON"

# ---- a creator pid reused by a later process ---------------------------------
# The zombie's heap, with its header's creator set to a process started
# after it was formed.
sleep 60 </dev/null &
r=$!
pids+=("$r")
"$PY" - "$zid" "$zpid" "$r" "$top_srcdir/src/os.h" <<'EOF' || fail "reused pid: cannot rewrite the header (the test's own setup)"
import ctypes, re, struct, sys
shmid, old, new = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
name_max = int(re.search(r"#define SH_NAME_MAX (\d+)", open(sys.argv[4]).read()).group(1))
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
libc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
base = libc.shmat(shmid, None, 0)
if base in (None, ctypes.c_void_p(-1).value):
    sys.exit("shmat: errno %d" % ctypes.get_errno())
# magic, format, header_size, size, base, key, name_hash, name, creator_uid, creator_pid, created
pid_off = 40 + name_max + 4
created_off = (pid_off + 4 + 7) & ~7
(have,) = struct.unpack_from("i", ctypes.string_at(base + pid_off, 4))
if have != old:
    sys.exit("creator_pid at offset %d is %d, not %d" % (pid_off, have, old))
(created,) = struct.unpack_from("Q", ctypes.string_at(base + created_off, 8))
ctypes.memmove(base + pid_off, struct.pack("i", new), 4)
ctypes.memmove(base + created_off, struct.pack("Q", created - 100), 8)
libc.shmdt(ctypes.c_void_p(base))
EOF
[ "$(field "$zid" creator_pid)" = "$r" ] || fail "reused pid: the header's creator is not $r after the rewrite"
[ "$(field "$zid" creator_alive)" = false ] || fail "reused pid: JSON creator_alive is true for pid $r, which started after the heap was formed"
"$TOOL" --shmid "$zid" >"$TMP/rsum"
grep -q "created by pid $r (gone)" "$TMP/rsum" || { show "$TMP/rsum"; fail "reused pid: the summary says the creator is alive"; }
echo "a creator pid reused by a later process ($r): gone"
"$TOOL" --remove "$z" >/dev/null
