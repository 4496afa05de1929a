#!/bin/sh
# Resident memory after a mass free, against glibc's in the same run
# (tests/rss_free.c): memory freed in one size must serve the next size, so
# refilling with another size does not grow the process beyond what glibc's
# does, and malloc_trim(0) hands back the free pages as glibc's does.  Each
# figure may exceed glibc's by a quarter plus 8 MiB (the pages kept for
# reuse, one span kept per class).
set -u
prog=$top_builddir/tests/rss_free
g=$("$prog") || { echo "rss.sh: rss_free fails under glibc (exit $?)"; exit 99; }
o=$(LD_PRELOAD=$SHMHEAP_LIB "$prog") || { echo "rss.sh: rss_free fails under libshmheap (exit $?)"; exit 1; }
echo "glibc:      $g (KiB)"
echo "libshmheap: $o (KiB)"
fail=0
for f in freed refilled trimmed; do
  gv=$(echo "$g" | sed -n "s/.*$f=\([0-9]*\).*/\1/p")
  ov=$(echo "$o" | sed -n "s/.*$f=\([0-9]*\).*/\1/p")
  if [ -z "$gv" ] || [ -z "$ov" ]; then echo "rss.sh: no $f= figure"; exit 99; fi
  limit=$((gv + gv / 4 + 8192))
  if [ "$ov" -gt "$limit" ]; then
    echo "rss.sh: $f: $ov KiB resident under libshmheap, glibc $gv KiB (limit $limit)"
    fail=1
  fi
done
exit $fail
