#!/bin/sh
# Under ulimit -v (RLIMIT_AS), as test drivers and servers set it: without
# SHMHEAP_SIZE the heap is cut to fit (and SHMHEAP_VERBOSE says so), and
# bash (with a subshell), python3 (with a subprocess, a copy-mode fork) and
# sort run on it and print what they print without the library; an explicit
# SHMHEAP_SIZE that cannot fit exits 71 naming ulimit -v, and so does a
# keyed heap formed larger (another instance of its program, while it is
# in use, gets a private heap); a copy-mode fork works under a limit the
# program lowered itself.
. "$(dirname "$0")/real_common.sh"

PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
seq 200000 | awk '{ print ($1 * 7919) % 200003 }' >"$TMP/in.txt"

for kib in 1000000 4000000; do
  for prog in bash python sort; do
    case $prog in
      bash) set -- bash -c 'x=$(echo sub); for i in $(seq 2000); do y="$y$i"; done; echo "$x ${#y}"' ;;
      python) set -- "$PY" -c 'import subprocess; d = {i: str(i) * 3 for i in range(200000)}; print(len(d), subprocess.run(["/bin/true"]).returncode)' ;;
      sort) set -- sort -n "$TMP/in.txt" ;;
    esac
    n=$prog.$kib
    run_ref "$n" sh -c 'ulimit -v "$0" && exec "$@"' "$kib" "$@"
    [ "$status" -eq 0 ] || { show "$TMP/$n.ref.err"; fail "$n: fails under ulimit -v $kib without the library"; }
    run_pre "$n" sh -c 'ulimit -v "$0" && exec "$@"' "$kib" "$@"
    [ "$status" -eq 0 ] || { show "$TMP/$n.pre.err"; fail "$n: exits $status under ulimit -v $kib with the library"; }
    same_stdout "$n"
    grep -q '^libshmheap: attached' "$TMP/$n.pre.err" || { show "$TMP/$n.pre.err"; fail "$n: the library was not used"; }
    grep -q '^libshmheap: pid [0-9]*: SHMHEAP_SIZE unset and ulimit -v (RLIMIT_AS) is' "$TMP/$n.pre.err" ||
      { show "$TMP/$n.pre.err"; fail "$n: SHMHEAP_VERBOSE does not say the heap was cut to fit ulimit -v $kib"; }
    echo "$n: ok ($(sed -n 's/^libshmheap: attached.* size=\([0-9]*\).*/\1/p' "$TMP/$n.pre.err" | tail -n 1) bytes, the last process)"
  done
done

run_pre big sh -c 'ulimit -v 1000000 && exec env SHMHEAP_SIZE=8G /bin/true'
[ "$status" -eq 71 ] || { show "$TMP/big.pre.err"; fail "SHMHEAP_SIZE=8G under ulimit -v 1000000: exit $status, not 71"; }
grep -q '^libshmheap: SHMHEAP_SIZE=8G does not fit: ulimit -v' "$TMP/big.pre.err" ||
  { show "$TMP/big.pre.err"; fail "SHMHEAP_SIZE=8G under ulimit -v 1000000: the message does not name ulimit -v"; }
echo "SHMHEAP_SIZE=8G under ulimit -v 1000000: exit 71, names ulimit -v"

# A program that lowers its own limit after start and then forks (copy
# mode): the heap's copy cannot be mapped beside the heap in the child, so
# it takes the heap's place and the parent writes it in.  The child reads
# the parent's objects, allocates, and forks again (subprocess), under the
# same limit.
run_pre lowered "$PY" -c '
import os, resource, subprocess
d = {i: str(i) * 3 for i in range(100000)}
vm = int(open("/proc/self/statm").read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
resource.setrlimit(resource.RLIMIT_AS, (vm + (256 << 20), resource.RLIM_INFINITY))
pid = os.fork()
if pid == 0:
    x = [str(i) for i in range(100000)]
    ok = all(d[i] == str(i) * 3 for i in range(100000))
    os._exit(0 if ok and subprocess.run(["/bin/true"]).returncode == 0 else 3)
print("child", os.waitpid(pid, 0)[1] >> 8)'
[ "$status" -eq 0 ] || { show "$TMP/lowered.pre.err"; fail "lowered: python3 exits $status"; }
grep -q '^child 0$' "$TMP/lowered.pre.out" || { show "$TMP/lowered.pre.out"; show "$TMP/lowered.pre.err"; fail "lowered: the child did not exit 0"; }
if grep -q '^libshmheap: fork' "$TMP/lowered.pre.err"; then show "$TMP/lowered.pre.err"; fail "lowered: a fork message"; fi
echo "lowered RLIMIT_AS, then fork: the child has its copy, reads the parent's objects and forks again"

# A keyed heap keeps the size it was formed with: formed at 64G, it cannot
# be re-attached under ulimit -v 1000000.  With nobody on it, the program
# exits 71 naming ulimit -v (its data stays for a start with a higher
# limit); while another process uses it, a second instance gets a private
# heap instead of failing, as it would for any other reason to stay off.
big=$(heap_name big)
run_pre form env SHMHEAP_KEY="$big" SHMHEAP_SIZE=64G sleep 0
[ "$status" -eq 0 ] || { show "$TMP/form.pre.err"; fail "forming a 64G keyed heap: exit $status"; }
sed -n "s/^libshmheap: attached key=\(0x[0-9a-fA-F]*\) .*name=$big .*/\1/p" "$TMP/form.pre.err" | head -n 1 >>"$TMP/keys"
[ -s "$TMP/keys" ] || { show "$TMP/form.pre.err"; fail "forming a 64G keyed heap: no attached line"; }
run_pre refit sh -c 'ulimit -v 1000000 && exec env SHMHEAP_KEY="$0" sleep 0' "$big"
[ "$status" -eq 71 ] || { show "$TMP/refit.pre.err"; fail "a 64G keyed heap under ulimit -v 1000000: exit $status, not 71"; }
grep -q "^libshmheap: SHMHEAP_KEY=$big[^:]*: the heap is 65536 MiB, and ulimit -v (RLIMIT_AS, " "$TMP/refit.pre.err" ||
  { show "$TMP/refit.pre.err"; fail "a 64G keyed heap under ulimit -v 1000000: the message does not name ulimit -v"; }
echo "a 64G keyed heap under ulimit -v 1000000, nobody on it: exit 71, names ulimit -v"

LD_PRELOAD=$SHMHEAP_LIB SHMHEAP_VERBOSE=1 SHMHEAP_KEY=$big sleep 30 </dev/null >/dev/null 2>"$TMP/holder.err" &
holder=$!
for _i in $(seq 100); do
  grep -q '^libshmheap: attached' "$TMP/holder.err" && break
  sleep 0.1
done
grep -q "^libshmheap: attached key=.*name=$big " "$TMP/holder.err" || { kill "$holder"; show "$TMP/holder.err"; fail "sleep did not attach the 64G keyed heap"; }
run_pre inuse sh -c 'ulimit -v 1000000 && exec env SHMHEAP_KEY="$0" sleep 0' "$big"
kill "$holder"
wait "$holder" 2>/dev/null || :
[ "$status" -eq 0 ] || { show "$TMP/inuse.pre.err"; fail "a second sleep under ulimit -v 1000000 while the 64G heap is in use: exit $status"; }
grep -q "not using the heap of SHMHEAP_KEY=$big[^:]*: the heap is in use by another process, and larger than the address space ulimit -v leaves this one; using a private heap" "$TMP/inuse.pre.err" ||
  { show "$TMP/inuse.pre.err"; fail "a second sleep under ulimit -v 1000000: SHMHEAP_VERBOSE does not say why it is on a private heap"; }
echo "a 64G keyed heap in use, a second sleep under ulimit -v 1000000: a private heap (said with SHMHEAP_VERBOSE)"
