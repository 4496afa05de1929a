#!/bin/bash
# Restart time of a large heap: fill a keyed heap with millions of blocks
# (several GiB), kill -9 the process while two threads churn it, then time
# the next process's attach and repair, and a clean re-attach after that.
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
trap 'ipcrm -M "$key" 2>/dev/null || true; rm -rf "$tmp"' EXIT
export SHMHEAP_KEY=$key SHMHEAP_SIZE=16G
ipcrm -M "$key" 2>/dev/null || true

echo "recovery: $nblocks blocks, $rounds kills; $(nproc) CPUs, $(uname -r)"
for r in $(seq "$rounds"); do
  LD_PRELOAD=$lib "$prog" fill "$nblocks" >"$tmp/fill" 2>&1 &
  pid=$!
  for _ in $(seq 3000); do grep -q filled "$tmp/fill" 2>/dev/null && break; sleep 0.1; done
  [ "$r" -eq 1 ] && sed 's/^/  /' "$tmp/fill"
  sleep 0.$((RANDOM % 9 + 1))
  kill -9 "$pid"; wait "$pid" 2>/dev/null || true
  start=$(date +%s%N)
  LD_PRELOAD=$lib "$prog" attach >"$tmp/attach" 2>&1
  end=$(date +%s%N)
  echo "  after kill $r: $(cat "$tmp/attach") process_ms=$(( (end - start) / 1000000 ))"
done
start=$(date +%s%N)
LD_PRELOAD=$lib "$prog" attach >"$tmp/attach" 2>&1
end=$(date +%s%N)
echo "  clean re-attach: $(cat "$tmp/attach") process_ms=$(( (end - start) / 1000000 ))"
"$builddir/tools/shmheap-dump" "$key" | sed -n '1,4s/^/  /p'
"$builddir/tools/shmheap-dump" --check "$key" >/dev/null && echo "  shmheap-dump --check: consistent"
