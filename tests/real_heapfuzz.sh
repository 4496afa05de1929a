#!/bin/sh
# Corrupted-heap fuzz (tests/heap_fuzz.py): HEAPFUZZ_COUNT (default 300)
# restarts of a preloaded program on randomly corrupted copies of a heap left
# by kill -9 and of one left cleanly (header, metadata pages, free-list links,
# any offset).  Every start must exit 0, be refused (65) or stop with SIGABRT
# and a "libshmheap: " message; shmheap-dump --check must never crash on the
# copy.  HEAPFUZZ_SEED=<seed> repeats a run; a failed run prints the
# directory of its source heaps and the --replay command for one case.
# `make fuzz FUZZ_COUNT=N` runs more.  About 40 s on 2 cores with 2 jobs.
set -eu
: "${top_builddir:=$(cd "$(dirname "$0")/.." && pwd)}"
: "${top_srcdir:=$(cd "$(dirname "$0")/.." && pwd)}"
: "${SHMHEAP_LIB:=$top_builddir/src/.libs/libshmheap.so}"
export top_builddir SHMHEAP_LIB
PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3 || :)
[ -n "$PY" ] || { echo "FAIL: real_heapfuzz.sh: python3 is not installed (Debian package python3)" >&2; exit 1; }
exec "$PY" "$top_srcdir/tests/heap_fuzz.py" --count "${HEAPFUZZ_COUNT:-300}" --jobs "${HEAPFUZZ_JOBS:-2}" \
  ${HEAPFUZZ_SEED:+--seed "$HEAPFUZZ_SEED"} --list-failures
