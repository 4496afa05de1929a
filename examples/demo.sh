#!/bin/bash
# make demo: runs examples/counter on a private heap and says what each step
# shows.  $1 is the build directory (make passes $(abs_builddir)).
# make runs it with $(SHELL), which is dash on Debian: re-run under bash.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -euo pipefail

builddir=${1:-.}
counter=$builddir/examples/counter
if [ ! -x "$counter" ]; then
  echo "demo: $counter is not built; run make first" >&2
  exit 1
fi

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

say "demo passed"
