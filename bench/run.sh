#!/bin/bash
# make bench: every workload under every allocator, in one run, each figure
# the median of RUNS runs.  Prints a table of time, spread, peak RSS and the
# ratio to glibc, and the geometric mean of the time ratios; then a second
# table: libshmheap's shared heap against Boost.Interprocess, with processes
# that free each other's blocks.
#   bench/run.sh BUILDDIR [RUNS]   (BENCH_BASELINE=lib.so adds a column,
#                              BENCH_WORKLOADS="a b" picks rows)
#   bench/run.sh --install     install what is missing, and nothing else
#                              (make bench runs it first, then builds
#                              bench/shared_boost, which needs Boost)
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -euo pipefail
src=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
libdir=/usr/lib/$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)

# The competitors are Debian's packages, preloaded the same way as ours.
declare -A lib=(
  [glibc]=""
  [jemalloc]=$libdir/libjemalloc.so.2
  [mimalloc]=$libdir/libmimalloc.so.2
  [tcmalloc]=$libdir/libtcmalloc_minimal.so.4
)
order=(glibc jemalloc mimalloc tcmalloc libshmheap)
# The real programs are Debian's too: the python3 on PATH may be a pyenv
# shim, a script that would be measured along with the interpreter.
python=/usr/bin/python3
sortprog=/usr/bin/sort
gxx=/usr/bin/g++
sqlite=/usr/bin/sqlite3

if [ "${1:-}" = --install ]; then
  pkgs=()
  [ -e "${lib[jemalloc]}" ] || pkgs+=(libjemalloc2)
  [ -e "${lib[mimalloc]}" ] || pkgs+=(libmimalloc2.0)
  [ -e "${lib[tcmalloc]}" ] || pkgs+=(libtcmalloc-minimal4)
  [ -e /usr/include/boost/interprocess/managed_shared_memory.hpp ] || pkgs+=(libboost-dev)
  [ -x "$python" ] || pkgs+=(python3)
  [ -x "$gxx" ] || pkgs+=(g++)
  [ -x "$sqlite" ] || pkgs+=(sqlite3)
  if [ ${#pkgs[@]} -gt 0 ]; then
    echo "bench: installing ${pkgs[*]}"
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${pkgs[@]}" >/dev/null
  fi
  exit 0
fi

builddir=${1:-.}
runs=${2:-5}
if ! [[ $runs =~ ^[1-9][0-9]*$ ]]; then echo "bench: the number of runs must be 1 or more, not '$runs'" >&2; exit 2; fi
lib[libshmheap]=$builddir/src/.libs/libshmheap.so
# BENCH_BASELINE=another/libshmheap.so (a build of an earlier commit) adds it
# as a column, so a change's cost is measured against its parent in the same
# run rather than against numbers from another day.
if [ -n "${BENCH_BASELINE:-}" ]; then
  lib[baseline]=$BENCH_BASELINE
  order+=(baseline)
fi
for f in "${lib[@]}" "$python" "$sortprog" "$gxx" "$sqlite"; do
  if [ -n "$f" ] && [ ! -e "$f" ]; then echo "bench: $f is missing (bench/run.sh --install)" >&2; exit 1; fi
done
for p in workloads cxx shared shared_boost timeit faults spans; do
  if [ ! -x "$builddir/bench/$p" ]; then echo "bench: $builddir/bench/$p is not built (make bench builds it)" >&2; exit 1; fi
done

# Rows: the allocator workloads of bench/workloads.c, the C++ one, and real
# programs timed from outside, start-up included.
workloads=(larson slots2 slots4 xmalloc churn large realloc cxx python sort g++ sqlite3)
# BENCH_WORKLOADS="slots2 sqlite3" measures only those rows of the first table
# (the other tables are always measured), for a quick look at one change.
if [ -n "${BENCH_WORKLOADS:-}" ]; then
  for w in $BENCH_WORKLOADS; do
    [[ " ${workloads[*]} " == *" $w "* ]] ||
      { echo "bench: BENCH_WORKLOADS: '$w' is not a workload (${workloads[*]})" >&2; exit 2; }
  done
  read -r -a workloads <<<"$BENCH_WORKLOADS"
fi
tmp=$(mktemp -d)
# Boost.Interprocess names its segment /dev/shm/NAME; shared_boost removes it
# at start and end, and this removes it if the run is interrupted.
boost_shm=shmheap-bench-$$
trap 'rm -rf "$tmp"; rm -f "/dev/shm/$boost_shm"' EXIT

# The input of sort: 2 million lines of 1 to 4 words drawn from 50000 random
# ones, made once for all runs, the same in every run (fixed seed).
awk 'BEGIN {
  srand(42)
  for (v = 0; v < 50000; v++) {
    len = 2 + int(rand() * 10); w = ""
    for (k = 0; k < len; k++) w = w sprintf("%c", 97 + int(rand() * 26))
    voc[v] = w
  }
  for (i = 0; i < 2000000; i++) {
    n = 1 + int(rand() * 4); line = voc[int(rand() * 50000)]
    for (j = 1; j < n; j++) line = line " " voc[int(rand() * 50000)]
    print line
  }
}' >"$tmp/words.txt"

# one run of workload $1 under allocator $2: prints "seconds peak_rss_kib"
run1() {
  local w=$1 l=${lib[$2]}
  case $w in
    cxx) LD_PRELOAD=$l "$builddir/bench/cxx" ;;
    python) "$builddir/bench/timeit" "$l" "$python" "$src/py_bench.py" ;;
    sort) LC_ALL=C "$builddir/bench/timeit" "$l" "$sortprog" "$tmp/words.txt" ;;
    # sort sizes its buffer from physical memory and shrinks it when malloc
    # fails: in a heap smaller than that first try every run would print
    # libshmheap's heap-full line, so the huge-page rows give it a buffer.
    sort-S) LC_ALL=C "$builddir/bench/timeit" "$l" "$sortprog" -S "$sort_buffer" "$tmp/words.txt" ;;
    g++) "$builddir/bench/timeit" "$l" "$gxx" -std=gnu++17 -O1 -c -o "$tmp/gxx_input.o" "$src/gxx_input.cc" ;;
    sqlite3) "$builddir/bench/timeit" "$l" "$sqlite" :memory: ".read $src/sqlite_bench.sql" ;;
    *) LD_PRELOAD=$l "$builddir/bench/workloads" "$w" ;;
  esac
}

# median and spread (max - min) of the numbers in a file, one per line
stats() { sort -g "$1" | awk '{v[NR] = $1} END {m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%s %s\n", m, v[NR] - v[1]}'; }

echo "bench: $(date -u +%Y-%m-%d), $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(uname -r)"
echo "bench: median of $runs runs each; runs of one workload interleave the allocators"
for w in "${workloads[@]}"; do
  for _ in $(seq "$runs"); do
    for a in "${order[@]}"; do
      out=$(run1 "$w" "$a")
      echo "${out% *}" >>"$tmp/$w.$a.t"
      echo "${out#* }" >>"$tmp/$w.$a.m"
    done
  done
done

# The shared heap: the same operations on libshmheap (share mode) and on
# Boost.Interprocess, interleaved.  Both print "seconds peak_rss_kib procs
# ops bytes"; the last three must agree, or they did not do the same work.
for _ in $(seq "$runs"); do
  out1=$(LD_PRELOAD=${lib[libshmheap]} SHMHEAP_FORK=share "$builddir/bench/shared")
  out2=$("$builddir/bench/shared_boost" "$boost_shm")
  read -r t1 m1 work1 <<<"$out1"
  read -r t2 m2 work2 <<<"$out2"
  if [ "$work1" != "$work2" ]; then
    echo "bench: shared and shared_boost did different work (processes, allocations, bytes): $work1 and $work2" >&2
    exit 1
  fi
  echo "$t1" >>"$tmp/shared.libshmheap.t"; echo "$m1" >>"$tmp/shared.libshmheap.m"
  echo "$t2" >>"$tmp/shared.boost.t"; echo "$m2" >>"$tmp/shared.boost.m"
done
read -r shared_procs shared_ops _ <<<"$work1"

printf '\n%-9s' "workload"
for a in "${order[@]}"; do printf ' %26s' "$a"; done
printf '\n%-9s' ""
for a in "${order[@]}"; do printf ' %26s' "s (±spread) x glibc  RSS"; done
echo
declare -A logsum
for w in "${workloads[@]}"; do
  read -r gt _ < <(stats "$tmp/$w.glibc.t")
  read -r gm _ < <(stats "$tmp/$w.glibc.m")
  printf '%-9s' "$w"
  for a in "${order[@]}"; do
    read -r t sp < <(stats "$tmp/$w.$a.t")
    read -r m _ < <(stats "$tmp/$w.$a.m")
    ratio=$(awk -v t="$t" -v g="$gt" 'BEGIN {printf "%.2f", t / g}')
    rss=$(awk -v m="$m" -v g="$gm" 'BEGIN {printf "%.2f", m / g}')
    logsum[$a]=$(awk -v s="${logsum[$a]:-0}" -v r="$ratio" 'BEGIN {print s + log(r)}')
    printf ' %6.3f (±%5.3f) %4sx %4sx' "$t" "$sp" "$ratio" "$rss"
  done
  echo
done
printf '%-9s' "geomean"
for a in "${order[@]}"; do
  printf ' %26s' "$(awk -v s="${logsum[$a]}" -v n="${#workloads[@]}" 'BEGIN {printf "%.2fx", exp(s / n)}')"
done
echo
echo "(x glibc: time ratio, then peak RSS ratio, to glibc in this run; lower is better)"
echo "(cxx: bench/cxx.cc; python: $python bench/py_bench.py; sort: LC_ALL=C sort of"
echo " $(wc -l <"$tmp/words.txt") lines ($(( $(stat -c %s "$tmp/words.txt") >> 20 )) MiB); g++: g++ -O1 -c bench/gxx_input.cc;"
echo " sqlite3: $sqlite :memory: running bench/sqlite_bench.sql.  These four are"
echo " wall times of the whole program, start-up included; g++'s peak RSS is its"
echo " largest process's, cc1plus's)"

printf '\nshared heap: %s processes, %s allocations of 16..512 B, most freed by another process\n' \
  "$shared_procs" "$shared_ops"
printf '%-30s %16s %10s\n' "" "s (±spread)" "peak RSS"
declare -A st sm
declare -A sname=([libshmheap]="libshmheap (SHMHEAP_FORK=share)" [boost]="Boost.Interprocess")
for a in libshmheap boost; do
  read -r t sp < <(stats "$tmp/shared.$a.t")
  read -r m _ < <(stats "$tmp/shared.$a.m")
  st[$a]=$t sm[$a]=$m
  printf '%-30s %6.3f (±%6.3f) %7s KiB\n' "${sname[$a]}" "$t" "$sp" "$m"
done
awk -v a="${st[boost]}" -v b="${st[libshmheap]}" -v ma="${sm[boost]}" -v mb="${sm[libshmheap]}" \
  'BEGIN {printf "%-30s %15.1fx %9.2fx\n", "boost / libshmheap", a / b, ma / mb}'
echo "(median of $runs runs each, interleaved; the time runs from the first fork to the last free)"

# What no allocator in a shared segment can avoid: the first touch of a page
# costs more on shared memory (the page joins the segment's page cache) than
# on the anonymous memory the others get.  Populating in one call costs less
# than either, but commits pages a program may never touch.
read -r fa fs fp < <("$builddir/bench/faults")
printf '\nfirst touch of a page, 160 MiB (bench/faults.c, median of 5):\n'
printf '  anonymous %s us, SysV shm %s us (%s), shm populated by MADV_POPULATE_WRITE %s us\n' "$fa" "$fs" \
  "$(awk -v a="$fa" -v s="$fs" 'BEGIN {printf "%+.2f us, %.2fx", s - a, s / a}')" "$fp"

# A heap fragmented into many free runs of pages: what one free() costs
# while they lie there (bench/spans.c).  libshmheap's purge visits the runs
# it gives back and no others (its dirty list is in age order).
spans_n=${BENCH_SPANS:-100000}
printf '\nfree() beside %s free runs of pages (bench/spans.c: 16 MiB allocated and freed for 3 s):\n' "$spans_n"
printf '%-12s %10s %10s %10s\n' allocator "mean us" "p99.9 us" "worst us"
for a in "${order[@]}"; do
  read -r sm sp sw < <(env ${lib[$a]:+LD_PRELOAD=${lib[$a]}} SHMHEAP_SIZE=$(( (spans_n * 80 + 131072) >> 10 ))M \
    "$builddir/bench/spans" "$spans_n") || { echo "bench: bench/spans failed under $a" >&2; exit 1; }
  printf '%-12s %10s %10s %10s\n' "$a" "$sm" "$sp" "$sw"
done

# Huge pages (SHMHEAP_HUGEPAGES): libshmheap on a heap of BENCH_HUGE_SIZE
# (default 1G; hugetlb reserves all of it from the pool) with each setting
# the machine allows, against off on the same size and glibc.  The bench
# changes no system setting: one it cannot measure is said, with the fix.
huge_size=${BENCH_HUGE_SIZE:-1G}
huge_bytes=$(numfmt --from=iec "$huge_size" 2>/dev/null) ||
  { echo "bench: BENCH_HUGE_SIZE=$huge_size is not a size (1G, 512M, ...)" >&2; exit 2; }
huge_pages=$(( (huge_bytes + (2 << 20) - 1) >> 21 ))
huge_rows=(touch large sort-S)
sort_buffer=$(( huge_bytes / 4 >> 20 ))M
settings=(off)
unavailable=()
shmem=$(sed -n 's/.*\[\([a-z_]*\)\].*/\1/p' /sys/kernel/mm/transparent_hugepage/shmem_enabled 2>/dev/null || :)
case $shmem in
  advise | within_size | always | force) settings+=(thp) ;;
  "") unavailable+=("thp: this kernel has no transparent huge pages for shared memory") ;;
  *) unavailable+=("thp: /sys/kernel/mm/transparent_hugepage/shmem_enabled is $shmem (echo advise > it to measure thp)") ;;
esac
case $shmem in always | force) unavailable+=("note: shmem_enabled is $shmem, so off gets huge pages too") ;; esac
pool_free=$(awk '$1 == "HugePages_Free:" { print $2 }' /proc/meminfo)
if [ "$(awk '$1 == "Hugepagesize:" { print $2 }' /proc/meminfo)" != 2048 ]; then
  unavailable+=("hugetlb: the default huge page size here is not 2 MiB")
elif [ "${pool_free:-0}" -ge "$huge_pages" ]; then
  settings+=(hugetlb)
else
  unavailable+=("hugetlb: the pool has ${pool_free:-0} free 2 MiB pages, a $huge_size heap needs $huge_pages (sysctl vm.nr_hugepages=$(( $(awk '$1 == "HugePages_Total:" { print $2 }' /proc/meminfo) + huge_pages - ${pool_free:-0} )) to measure hugetlb)")
fi
for w in "${huge_rows[@]}"; do
  for _ in $(seq "$runs"); do
    out=$(run1 "$w" glibc)
    echo "${out% *}" >>"$tmp/huge.$w.glibc.t"
    for h in "${settings[@]}"; do
      # hugetlb-strict: a run that silently fell back to 4 KiB pages would
      # be measured under the wrong name; this one exits 78 instead.
      hs=$h; [ "$h" = hugetlb ] && hs=hugetlb-strict
      out=$(SHMHEAP_SIZE=$huge_size SHMHEAP_HUGEPAGES=$hs run1 "$w" libshmheap) ||
        { echo "bench: $w with SHMHEAP_HUGEPAGES=$hs failed" >&2; exit 1; }
      echo "${out% *}" >>"$tmp/huge.$w.$h.t"
      echo "${out#* }" >>"$tmp/huge.$w.$h.m"
    done
  done
done
printf '\nhuge pages: libshmheap with SHMHEAP_SIZE=%s and each SHMHEAP_HUGEPAGES setting (median of %s runs)\n' "$huge_size" "$runs"
printf '%-9s %10s' "workload" "glibc s"
for h in "${settings[@]}"; do printf ' %28s' "$h: s  x off  x glibc  RSS MiB"; done
echo
for w in "${huge_rows[@]}"; do
  read -r gt _ < <(stats "$tmp/huge.$w.glibc.t")
  read -r ot _ < <(stats "$tmp/huge.$w.off.t")
  printf '%-9s %10.3f' "$w" "$gt"
  for h in "${settings[@]}"; do
    read -r t _ < <(stats "$tmp/huge.$w.$h.t")
    read -r m _ < <(stats "$tmp/huge.$w.$h.m")
    # The kernel does not count hugetlb pages in a process's RSS.
    [ "$h" = hugetlb ] && m=-1
    printf ' %28s' "$(awk -v t="$t" -v o="$ot" -v g="$gt" -v m="$m" 'BEGIN {printf "%.3f %5.2fx %5.2fx %6s", t, t / o, t / g, m < 0 ? "-" : int(m / 1024)}')"
  done
  echo
done
echo "(touch: one 256 MiB block, each page written once: first-touch cost; large as above;"
echo " sort-S: sort as above with -S $sort_buffer; hugetlb pages are not in RSS: the heap holds"
echo " its whole $huge_size of the pool from the first attach)"
for u in "${unavailable[@]}"; do echo "  $u"; done
