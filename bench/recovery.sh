#!/bin/bash
# Restart time of a large heap: fill a keyed heap with millions of blocks
# (several GiB), kill -9 the process while two threads churn it, then time
# the next process's attach, repair and collection (gc_ms, and the rate at
# which it went through the reachable heap: mark_gib_s), and a clean
# re-attach after that; then the same heap with its root removed, which the
# next start empties whole (gc_us).
# Then the whole restart: from exec to the end of a walk that reads every
# live block, with each SHMHEAP_PREFAULT setting, on 4 KiB pages and on each
# huge-page setting the machine allows (a heap of its own, filled and killed
# the same way; BENCH_HUGE_SIZE, default 8G, sizes it).
#   bench/recovery.sh BUILDDIR [NBLOCKS] [ROUNDS]
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -euo pipefail
builddir=${1:-.}
nblocks=${2:-4000000}
rounds=${3:-5}
lib=$builddir/src/.libs/libshmheap.so
prog=$builddir/bench/recovery
key=0x5eb0$(printf '%04x' $(($$ % 65536)))
tmp=$(mktemp -d)
hkey=0x5eb1$(printf '%04x' $(($$ % 65536)))
trap 'ipcrm -M "$key" 2>/dev/null || true; ipcrm -M "$hkey" 2>/dev/null || true; rm -rf "$tmp"' EXIT
export SHMHEAP_KEY=$key SHMHEAP_SIZE=16G
ipcrm -M "$key" 2>/dev/null || true
ipcrm -M "$hkey" 2>/dev/null || true

# fill_and_kill: a heap of $nblocks blocks under SHMHEAP_KEY, left by kill -9
# while it churns; echo its fill line with FIRST=1.
fill_and_kill() {
  LD_PRELOAD=$lib "$prog" fill "$nblocks" >"$tmp/fill" 2>&1 &
  pid=$!
  for _ in $(seq 3000); do grep -q filled "$tmp/fill" 2>/dev/null && break; sleep 0.1; done
  grep -q filled "$tmp/fill" || { cat "$tmp/fill" >&2; echo "recovery: the fill did not finish" >&2; exit 1; }
  [ "${FIRST:-0}" = 1 ] && sed 's/^/  /' "$tmp/fill"
  sleep 0.$((RANDOM % 9 + 1))
  kill -9 "$pid"; wait "$pid" 2>/dev/null || true
}

echo "recovery: $nblocks blocks, $rounds kills; $(nproc) CPUs, $(uname -r)"
# What this machine allows a collection at best: its mark reads every
# reachable page, most of them for the first time in the new process.
"$prog" firstread 512 | sed 's/^/  /'
for r in $(seq "$rounds"); do
  FIRST=$((r == 1)) fill_and_kill
  start=$(date +%s%N)
  LD_PRELOAD=$lib "$prog" attach >"$tmp/attach" 2>&1
  end=$(date +%s%N)
  echo "  after kill $r: $(cat "$tmp/attach") process_ms=$(( (end - start) / 1000000 ))"
done
start=$(date +%s%N)
LD_PRELOAD=$lib "$prog" attach >"$tmp/attach" 2>&1
end=$(date +%s%N)
echo "  clean re-attach: $(cat "$tmp/attach") process_ms=$(( (end - start) / 1000000 ))"
"$builddir/tools/shmheap-dump" "$key" | sed -n '1,5s/^/  /p'
"$builddir/tools/shmheap-dump" --check "$key" >/dev/null && echo "  shmheap-dump --check: consistent"

# A heap whose roots hold no pointer (its table's root removed): the next
# start empties it whole, without a walk, at any size.
LD_PRELOAD=$lib "$prog" unroot
LD_PRELOAD=$lib "$prog" empty >"$tmp/empty" 2>&1 || { cat "$tmp/empty" >&2; echo "recovery: the heap without roots was not emptied whole" >&2; exit 1; }
echo "  no root: $(cat "$tmp/empty")"
FIRST=0 fill_and_kill # the table again, for the restarts below
LD_PRELOAD=$lib "$prog" attach >/dev/null 2>&1

# restart_row LABEL: three restarts of the heap under SHMHEAP_KEY with the
# environment as it is; prints the median time from exec to the end of the
# walk, the walk itself and what the prefault had mapped by then.
restart_row() {
  : >"$tmp/rows"
  for _ in 1 2 3; do
    start=$(date +%s%N)
    LD_PRELOAD=$lib "$prog" attach >"$tmp/attach" 2>&1 || { cat "$tmp/attach" >&2; exit 1; }
    end=$(sed -n 's/.*end_ns=\([0-9]*\).*/\1/p' "$tmp/attach")
    walk=$(sed -n 's/.*walk_s=\([0-9.]*\).*/\1/p' "$tmp/attach")
    pf=$(sed -n 's/.*\(prefault=.*\) end_ns.*/\1/p' "$tmp/attach")
    echo "$(( (end - start) / 1000000 )) $walk $pf" >>"$tmp/rows"
  done
  read -r ms walk pf < <(sort -n "$tmp/rows" | sed -n 2p)
  printf '  %-22s exec to walk end %5s ms   walk %s s   %s\n' "$1" "$ms" "$walk" "$pf"
}

echo "restart: exec to the end of a walk over every live block (median of 3; prefault=MODE/THREADS, 0 none, 1 sync, 2 threads)"
for p in off sync threads auto; do SHMHEAP_PREFAULT=$p restart_row "4 KiB pages, $p"; done

# The huge-page settings this machine allows (as in bench/run.sh).
huge_size=${BENCH_HUGE_SIZE:-8G}
huge_pages=$(( $(numfmt --from=iec "$huge_size") >> 21 ))
huge=()
shmem=$(sed -n 's/.*\[\([a-z_]*\)\].*/\1/p' /sys/kernel/mm/transparent_hugepage/shmem_enabled 2>/dev/null || :)
case $shmem in
  advise | always | force) huge+=(thp) ;;
  "") echo "  thp: unavailable: this kernel has no transparent huge pages for shared memory" ;;
  *) echo "  thp: unavailable: /sys/kernel/mm/transparent_hugepage/shmem_enabled is $shmem (echo advise > it to measure thp)" ;;
esac
pool_free=$(awk '$1 == "HugePages_Free:" { print $2 }' /proc/meminfo)
if [ "$(awk '$1 == "Hugepagesize:" { print $2 }' /proc/meminfo)" != 2048 ]; then
  echo "  hugetlb: unavailable: the default huge page size here is not 2 MiB"
elif [ "${pool_free:-0}" -ge "$huge_pages" ]; then
  huge+=(hugetlb)
else
  echo "  hugetlb: unavailable: the pool has ${pool_free:-0} free 2 MiB pages, a $huge_size heap needs $huge_pages (sysctl vm.nr_hugepages=$(( $(awk '$1 == "HugePages_Total:" { print $2 }' /proc/meminfo) + huge_pages - ${pool_free:-0} )) to measure hugetlb)"
fi
for h in "${huge[@]}"; do
  hs=$h; [ "$h" = hugetlb ] && hs=hugetlb-strict # never a silent fallback to 4 KiB pages
  ipcrm -M "$hkey" 2>/dev/null || true
  (
    export SHMHEAP_KEY=$hkey SHMHEAP_SIZE=$huge_size SHMHEAP_HUGEPAGES=$hs
    fill_and_kill
    LD_PRELOAD=$lib "$prog" attach >/dev/null 2>&1 # the repair, not timed here
    for p in off auto; do SHMHEAP_PREFAULT=$p restart_row "$h ($huge_size), $p"; done
  )
  ipcrm -M "$hkey"
done
