#!/bin/sh
# SHMHEAP_HUGEPAGES (issue 16, item 5): off, thp, hugetlb, hugetlb-strict.
#
#   - a value that is not a setting: exit 78, one line naming the variable
#     and the values;
#   - thp where /sys/kernel/mm/transparent_hugepage/shmem_enabled gives
#     shared memory no huge pages (never): the program runs, on 4 KiB pages,
#     and each process prints one line that names the setting to change;
#   - thp where it is advise: the heap's mapping is eligible and 64 MiB of
#     large blocks are mapped by huge pages (ShmemPmdMapped in
#     /proc/self/smaps), in the process, in a copy-fork child (its own
#     segment, mapped anew) and in a share-fork child, and again when a
#     keyed heap is re-attached; freed, trimmed and allocated again with
#     calloc, the memory reads as zero; with off, nothing is huge;
#   - hugetlb (vm.nr_hugepages set by the test, as root): with an empty pool
#     one line naming vm.nr_hugepages and 4 KiB pages, hugetlb-strict exits
#     78; with a pool, the heap is on 2 MiB pages (KernelPageSize), takes
#     pages from the pool and malloc_trim gives them back, calloc then reads
#     zero, a copy-fork child's copy is on 4 KiB pages, and a keyed heap
#     formed on the pool is still on it when re-attached with off.
# Changing shmem_enabled and vm.nr_hugepages needs root: the test sets them
# and puts back what it found, whatever happens; without root only the cases that fit the current
# setting run, and it says which were skipped.
. "$(dirname "$0")/real_common.sh"
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
KNOB=/sys/kernel/mm/transparent_hugepage/shmem_enabled
orig=
if [ -r "$KNOB" ]; then orig=$(sed -n 's/.*\[\(.*\)\].*/\1/p' "$KNOB"); fi
restore() {
  if [ -n "$orig" ] && [ -w "$KNOB" ]; then echo "$orig" >"$KNOB" 2>/dev/null || :; fi
  cleanup
}
trap restore EXIT
set_policy() { # set_policy WORD: 0 if shmem_enabled is WORD now
  [ "$(sed -n 's/.*\[\(.*\)\].*/\1/p' "$KNOB" 2>/dev/null)" = "$1" ] && return 0
  [ "$(id -u)" -eq 0 ] && [ -w "$KNOB" ] && echo "$1" >"$KNOB" 2>/dev/null
}

# ---- a value that is no setting -------------------------------------------------
run_pre bad env SHMHEAP_HUGEPAGES=huge /bin/true
[ "$status" -eq 78 ] || fail "SHMHEAP_HUGEPAGES=huge exits $status, not 78"
grep -q '^libshmheap: SHMHEAP_HUGEPAGES=huge is not a page setting: use off (the default), thp .*, hugetlb .* or hugetlb-strict' "$TMP/bad.pre.err" ||
  { show "$TMP/bad.pre.err"; fail "the message does not name SHMHEAP_HUGEPAGES and its values"; }

# The probe: 64 MiB of large blocks touched, then what smaps says of the
# heap's mapping (at 0x200000000000), here, in a child of each fork mode,
# and after free + malloc_trim + calloc (the memory must read as zero).
# What both probes share: the allocator through ctypes, and the fields
# smaps gives the heap's mapping.
cat >"$TMP/pre.py" <<'EOF'
import ctypes, os, sys
libc = ctypes.CDLL(None)
libc.malloc.restype = libc.calloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
MB = 1 << 20

def heap_smaps():
    cur, out = False, {}
    for line in open("/proc/self/smaps"):
        f = line.split()
        if "-" in f[0] and not f[0].endswith(":"):
            cur = f[0].startswith("200000000000-")
        elif cur and len(f) > 1 and f[1].isdigit():
            out[f[0][:-1]] = int(f[1])
    return out
EOF
{ cat "$TMP/pre.py"; cat <<'EOF'
def smaps():
    out = heap_smaps()
    return "eligible=%d pmd_kb=%d" % (out.get("THPeligible", -1), out.get("ShmemPmdMapped", -1))

def touch(n):
    p = libc.malloc(n)
    assert p
    ctypes.memset(p, 0xA5, n)
    return p

p = touch(64 * MB)
print("self", smaps(), flush=True)
# A copy-mode child has a heap of its own: Python may run there as usual.
libc.shmheap_set_fork_mode(0)
pid = os.fork()
if pid == 0:
    touch(16 * MB)
    print("child-copy", smaps(), flush=True)
    os._exit(0)
os.waitpid(pid, 0)
# A share-mode child shares every malloc'd block with this process, and
# CPython is not written for that: os.fork()'s child hooks free and remake
# the interpreter's locks, blocks this process still uses, and a global
# the child assigns (pid = 0) is assigned in the parent too (the module's
# dict is a malloc'd block).  So the child is forked by libc.fork() (no
# hooks), keeps to fresh objects and locals, and runs while the parent is
# blocked in waitpid, off the interpreter.
def share_child():
    libc.shmheap_set_fork_mode(1)
    libc.fork.restype = ctypes.c_int
    pid = libc.fork()
    if pid == 0:
        touch(16 * MB)
        os.write(1, ("child-share " + smaps() + "\n").encode())
        os._exit(0)
    os.waitpid(pid, 0)
    libc.shmheap_set_fork_mode(0)
share_child()
libc.free(p)
libc.malloc_trim(0)
q = libc.calloc(64 * MB, 1)
zero = all(not any(ctypes.string_at(q + o, MB)) for o in range(0, 64 * MB, MB))
print("calloc-zero", "yes" if zero else "no", flush=True)
EOF
} >"$TMP/probe.py"
probe() { # probe NAME SETTING [KEY]: $TMP/NAME.pre.{out,err}
  _n=$1 _s=$2
  shift 2
  run_pre "$_n" env SHMHEAP_HUGEPAGES="$_s" ${1:+SHMHEAP_KEY=$1} SHMHEAP_SIZE=1G "$PY" "$TMP/probe.py"
  [ "$status" -eq 0 ] || { show "$TMP/$_n.pre.err"; fail "$_n: the probe exits $status"; }
  [ "$(grep -c . "$TMP/$_n.pre.out")" -eq 4 ] || { show "$TMP/$_n.pre.out"; fail "$_n: the probe did not finish"; }
  grep -qx 'calloc-zero yes' "$TMP/$_n.pre.out" || { show "$TMP/$_n.pre.out"; fail "$_n: calloc after a trim is not zero"; }
}
val() { sed -n "s/^$2 .*$3=\([0-9-]*\).*/\1/p" "$TMP/$1.pre.out"; }
notice() { grep -c '^libshmheap: SHMHEAP_HUGEPAGES=thp: .*shmem_enabled is never.*echo advise > /sys/kernel/mm/transparent_hugepage/shmem_enabled' "$TMP/$1.pre.err" || :; }

skipped=
# ---- shmem_enabled=never: one line, 4 KiB pages -----------------------------------
if set_policy never; then
  probe never thp
  [ "$(notice never)" -eq 1 ] || { show "$TMP/never.pre.err"; fail "never: not exactly one line naming shmem_enabled (a fork child must not repeat it)"; }
  [ "$(val never self pmd_kb)" -eq 0 ] || fail "never: huge pages where shmem_enabled is never"
  probe never_off off
  [ "$(notice never_off)" -eq 0 ] || fail "off: a line about huge pages"
else
  skipped="$skipped never"
fi

# ---- shmem_enabled=advise: huge pages with thp, none with off -----------------------
if set_policy advise; then
  probe thp thp
  grep -q 'SHMHEAP_HUGEPAGES' "$TMP/thp.pre.err" && { show "$TMP/thp.pre.err"; fail "thp under advise: a line about huge pages"; }
  for who in self child-copy child-share; do
    [ "$(val thp "$who" eligible)" -eq 1 ] || { show "$TMP/thp.pre.out"; fail "thp: the heap's mapping in $who is not eligible for huge pages"; }
    [ "$(val thp "$who" pmd_kb)" -ge 16384 ] || { show "$TMP/thp.pre.out"; fail "thp: $who has less than 16 MiB of the heap in huge pages"; }
  done
  [ "$(val thp self pmd_kb)" -ge 32768 ] || { show "$TMP/thp.pre.out"; fail "thp: less than half of 64 MiB touched is in huge pages"; }
  probe off off
  for who in self child-copy child-share; do
    [ "$(val off "$who" pmd_kb)" -eq 0 ] || { show "$TMP/off.pre.out"; fail "off: $who has huge pages"; }
  done
  # a keyed heap: the advice is given at each attach, not kept in the segment
  H=$(heap_name thp)
  probe keyed1 off "$H"
  keyed_heap_bytes keyed1 "$H" >/dev/null
  probe keyed2 thp "$H"
  grep -q 're-attached' "$TMP/keyed2.pre.err" || { show "$TMP/keyed2.pre.err"; fail "keyed2 did not re-attach the heap"; }
  [ "$(val keyed2 self eligible)" -eq 1 ] || { show "$TMP/keyed2.pre.out"; fail "thp on a re-attached heap: not eligible"; }
else
  skipped="$skipped advise"
fi
# ---- hugetlb: the system's pool ---------------------------------------------------
POOL=/proc/sys/vm/nr_hugepages
pool_orig=$(cat "$POOL" 2>/dev/null || echo)
free_pages() { awk '$1 == "HugePages_Free:" { print $2 }' /proc/meminfo; }
{ cat "$TMP/pre.py"; cat <<'EOF'
def free():
    return int([l.split()[1] for l in open("/proc/meminfo") if l.startswith("HugePages_Free:")][0])
def kps():
    return heap_smaps().get("KernelPageSize", -1)
print("page_kb", kps(), flush=True)
f0 = free()
p = libc.malloc(32 * MB)
assert p, "malloc(32 MiB) failed"
ctypes.memset(p, 0xA5, 32 * MB)
f1 = free()
libc.shmheap_set_fork_mode(0)
pid = os.fork()
if pid == 0:
    ctypes.memset(libc.malloc(4 * MB), 1, 4 * MB)
    print("copy_child_page_kb", kps(), flush=True)
    os._exit(0)
os.waitpid(pid, 0)
libc.free(p)
libc.malloc_trim(0)
f2 = free()
print("taken", f0 - f1, "given_back", f2 - f1, flush=True)
q = libc.calloc(32 * MB, 1)
assert q, "calloc(32 MiB) failed"
zero = all(not any(ctypes.string_at(q + o, MB)) for o in range(0, 32 * MB, MB))
print("calloc-zero", "yes" if zero else "no", flush=True)
libc.free(q)  # a keyed heap keeps what is not freed, and the next probe needs the room
EOF
} >"$TMP/tlb.py"
tlb() { # tlb NAME SETTING [KEY]
  _n=$1 _s=$2
  shift 2
  run_pre "$_n" env SHMHEAP_HUGEPAGES="$_s" ${1:+SHMHEAP_KEY=$1} SHMHEAP_SIZE=70M "$PY" "$TMP/tlb.py"
  [ "$status" -eq 0 ] || { show "$TMP/$_n.pre.err"; fail "$_n: the hugetlb probe exits $status"; }
  grep -qx 'calloc-zero yes' "$TMP/$_n.pre.out" || { show "$TMP/$_n.pre.out"; fail "$_n: calloc after a trim is not zero"; }
}
tval() { sed -n "s/^.*$2 \([0-9-]*\).*/\1/p" "$TMP/$1.pre.out" | head -n 1; }
if [ "$(id -u)" -eq 0 ] && [ -w "$POOL" ]; then
  restore_pool() { echo "$pool_orig" >"$POOL" 2>/dev/null || :; restore; }
  trap restore_pool EXIT
  # an empty pool: one line naming vm.nr_hugepages, then 4 KiB pages; strict: exit 78
  echo 0 >"$POOL"
  run_pre nopool env SHMHEAP_HUGEPAGES=hugetlb SHMHEAP_SIZE=70M /bin/true
  [ "$status" -eq 0 ] || { show "$TMP/nopool.pre.err"; fail "hugetlb with an empty pool exits $status, not 0"; }
  [ "$(grep -c '^libshmheap: SHMHEAP_HUGEPAGES=hugetlb: no heap of 70 MiB from the huge page pool: the pool has 0 free 2 MiB page(s), the heap needs 35: raise vm.nr_hugepages.*running with 4 KiB pages$' "$TMP/nopool.pre.err")" -eq 1 ] ||
    { show "$TMP/nopool.pre.err"; fail "hugetlb with an empty pool: not one line naming vm.nr_hugepages"; }
  run_pre strict env SHMHEAP_HUGEPAGES=hugetlb-strict SHMHEAP_SIZE=70M /bin/true
  [ "$status" -eq 78 ] || fail "hugetlb-strict with an empty pool exits $status, not 78"
  grep -q '^libshmheap: SHMHEAP_HUGEPAGES=hugetlb-strict: .*raise vm.nr_hugepages' "$TMP/strict.pre.err" ||
    { show "$TMP/strict.pre.err"; fail "hugetlb-strict: the message does not name vm.nr_hugepages"; }
  # a pool that fits: the heap on 2 MiB pages, a trim gives them back
  echo 64 >"$POOL"
  [ "$(free_pages)" -ge 40 ] || fail "the pool could not be filled (HugePages_Free $(free_pages))"
  tlb tlb hugetlb
  if grep -q 'SHMHEAP_HUGEPAGES' "$TMP/tlb.pre.err"; then show "$TMP/tlb.pre.err"; fail "hugetlb with a pool: a line about it"; fi
  [ "$(tval tlb page_kb)" -eq 2048 ] || { show "$TMP/tlb.pre.out"; fail "hugetlb: the heap is not on 2 MiB pages"; }
  [ "$(tval tlb copy_child_page_kb)" -eq 4 ] || { show "$TMP/tlb.pre.out"; fail "hugetlb: a copy-fork child's copy is not on 4 KiB pages"; }
  [ "$(tval tlb taken)" -ge 15 ] || { show "$TMP/tlb.pre.out"; fail "hugetlb: 32 MiB touched took fewer than 15 pages of the pool"; }
  [ "$(tval tlb given_back)" -ge 14 ] || { show "$TMP/tlb.pre.out"; fail "hugetlb: malloc_trim gave fewer than 14 pages back to the pool"; }
  # a keyed heap formed on the pool, re-attached by a process that did not
  # ask for it: still on 2 MiB pages, and its purges know it
  H2=$(heap_name tlb)
  tlb tlbkey1 hugetlb "$H2"
  keyed_heap_bytes tlbkey1 "$H2" >/dev/null
  tlb tlbkey2 off "$H2"
  grep -q 're-attached' "$TMP/tlbkey2.pre.err" || { show "$TMP/tlbkey2.pre.err"; fail "tlbkey2 did not re-attach the heap"; }
  [ "$(tval tlbkey2 page_kb)" -eq 2048 ] || { show "$TMP/tlbkey2.pre.out"; fail "the re-attached hugetlb heap is not on 2 MiB pages"; }
  grep -q "^libshmheap: attached .*name=$H2 .* re-attached .* on hugetlb pages of 2 MiB$" "$TMP/tlbkey2.pre.err" ||
    { show "$TMP/tlbkey2.pre.err"; fail "the re-attach did not find the heap on hugetlb pages (/proc/self/smaps)"; }
  grep -q "^libshmheap: attached .* fresh .* on hugetlb pages of 2 MiB$" "$TMP/tlb.pre.err" ||
    { show "$TMP/tlb.pre.err"; fail "SHMHEAP_VERBOSE does not say the heap is on hugetlb pages"; }
  [ "$(tval tlbkey2 given_back)" -ge 14 ] || { show "$TMP/tlbkey2.pre.out"; fail "the re-attached hugetlb heap: the trim gave fewer than 14 pages back"; }
  "$top_builddir/tools/shmheap-dump" --check "$H2" >/dev/null || fail "shmheap-dump --check of the hugetlb heap"
  echo "$pool_orig" >"$POOL"
else
  skipped="$skipped hugetlb(vm.nr_hugepages)"
fi

if [ -n "$skipped" ]; then
  [ "${CI:-}" != true ] || fail "under CI every case must run: cannot set $KNOB to:$skipped"
  echo "$(basename "$0"): skipped the cases for shmem_enabled:$skipped (not root, or $KNOB is missing)"
fi
for n in thp off keyed2 tlb tlbkey2; do
  if [ -f "$TMP/$n.pre.out" ]; then echo "$n: $(tr '\n' ' ' <"$TMP/$n.pre.out")"; fi
done
echo "PASS: SHMHEAP_HUGEPAGES"
