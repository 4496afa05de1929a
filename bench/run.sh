#!/bin/bash
# make bench: every workload under every allocator, in one run, each figure
# the median of RUNS runs.  Prints a table of time, spread, peak RSS and the
# ratio to glibc, and the geometric mean of the time ratios.
#   bench/run.sh BUILDDIR [RUNS]
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -euo pipefail
builddir=${1:-.}
runs=${2:-5}
prog=$builddir/bench/workloads
libdir=/usr/lib/$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)

# The competitors are Debian's packages, preloaded the same way as ours.
declare -A lib=(
  [glibc]=""
  [jemalloc]=$libdir/libjemalloc.so.2
  [mimalloc]=$libdir/libmimalloc.so.2
  [tcmalloc]=$libdir/libtcmalloc_minimal.so.4
  [libshmheap]=$builddir/src/.libs/libshmheap.so
)
order=(glibc jemalloc mimalloc tcmalloc libshmheap)
pkgs=()
[ -e "${lib[jemalloc]}" ] || pkgs+=(libjemalloc2)
[ -e "${lib[mimalloc]}" ] || pkgs+=(libmimalloc2.0)
[ -e "${lib[tcmalloc]}" ] || pkgs+=(libtcmalloc-minimal4)
if [ ${#pkgs[@]} -gt 0 ]; then
  echo "bench: installing ${pkgs[*]}"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi
for a in "${order[@]}"; do
  if [ -n "${lib[$a]}" ] && [ ! -e "${lib[$a]}" ]; then echo "bench: ${lib[$a]} is missing" >&2; exit 1; fi
done

workloads=(larson xmalloc churn large realloc)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# median and spread (max - min) of the numbers in a file, one per line
stats() { sort -g "$1" | awk '{v[NR] = $1} END {m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%s %s\n", m, v[NR] - v[1]}'; }

echo "bench: $(date -u +%Y-%m-%d), $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(uname -r)"
echo "bench: median of $runs runs each; runs of one workload interleave the allocators"
for w in "${workloads[@]}"; do
  for r in $(seq "$runs"); do
    for a in "${order[@]}"; do
      out=$(LD_PRELOAD=${lib[$a]} "$prog" "$w")
      echo "${out% *}" >>"$tmp/$w.$a.t"
      echo "${out#* }" >>"$tmp/$w.$a.m"
    done
  done
done

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
