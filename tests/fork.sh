#!/bin/bash
# fork under stress (tests/fork_stress.c), in copy and share mode, while two
# other processes keep both CPUs busy: from a signal handler that
# interrupted malloc, free, realloc, memalign or calloc of up to 70,000
# bytes (five processes send the signal), from four threads at once while
# two others malloc, getline and fflush(NULL), and with each child forking
# again, three levels deep.  Every case must make at least 200 forks (a
# nested one counts its three levels), all of whose children exit 0, and
# finish: a hang is a failure after 60 s.  The
# same program runs under glibc first, as a check of the test itself.
set -u
prog=$top_builddir/tests/fork_stress
secs=${FORK_STRESS_SECONDS:-4}
burners=()
cleanup() {
  for b in "${burners[@]}"; do kill "$b" 2>/dev/null; done
  # the heaps of children killed by a timeout are private: ipcrm by creator
  for id in $(awk -v p="$$" 'NR > 1 && $8 == p { print $2 }' /proc/sysvipc/shm 2>/dev/null); do ipcrm -m "$id" 2>/dev/null; done
}
trap cleanup EXIT
for _ in 1 2; do
  (while :; do :; done) &
  burners+=($!)
done
fail=0
run() { # run NAME ENV... -- CASE
  local name=$1 out rc forks
  shift
  local min=200
  case $case in nested-*) min=70 ;; esac
  out=$(env "$@" timeout -s KILL 60 "$prog" "$case" "$secs" "$min" 2>&1)
  rc=$?
  forks=$(echo "$out" | sed -n 's/^\([0-9]*\) forks.*/\1/p' | tail -1)
  case $case in nested-*) forks=$((${forks:-0} * 3)) ;; esac
  echo "$name $case: exit $rc, ${forks:-no} forks"
  if [ "$rc" -ne 0 ] || [ "${forks:-0}" -lt 200 ]; then
    echo "$out" | head -20
    return 1
  fi
}
for case in sig threads nested-threads nested-sig; do
  run glibc -- || { echo "fork.sh: the test itself fails under glibc"; exit 99; }
  for mode in copy share; do
    run "libshmheap $mode" LD_PRELOAD="$SHMHEAP_LIB" SHMHEAP_FORK=$mode || fail=1
  done
done
exit $fail
