#!/bin/bash
# Runs one test (LOG_COMPILER, tests/local.mk) and fails it on any sanitizer
# report that a program it ran wrote, whatever that program's exit status
# did to the test: the suites run programs that are meant to fail (the dump
# tool exits 1 on a damaged heap, the fuzz accepts a refused start), so a
# sanitizer's exit alone could pass for an expected failure.  Reports go to
# a directory of this run (log_path) and are copied into the test's log.
#   sanrun.sh PROGRAM [ARGS...]
dir=$(mktemp -d "${TMPDIR:-/tmp}/shmheap-san.XXXXXX") || exit 99
trap 'rm -rf "$dir"' EXIT
for v in UBSAN_OPTIONS ASAN_OPTIONS; do
  export "$v=${!v:+${!v}:}log_path=$dir/report"
done
"$@"
rc=$?
reports=("$dir"/report.*)
if [ -e "${reports[0]}" ]; then
  echo "sanrun.sh: ${#reports[@]} sanitizer report(s) from the programs of $*:"
  cat "${reports[@]}"
  exit 1
fi
exit $rc
