#!/bin/sh
# GNU sort of a generated 100 MB file under libshmheap: big buffers, threads,
# temporary files; the output must be the same as without the library.
. "$(dirname "$0")/real_common.sh"

command -v sort >/dev/null || fail "sort is not installed"
# 100 MB of pseudo-random lines (a deterministic LCG, so every run is the same)
awk 'BEGIN {
  x = 12345
  for (i = 0; i < 3400000; i++) {
    x = (x * 1103515245 + 12345) % 2147483648
    y = (x * 69069 + 1) % 4294967296
    printf "%010d %08x line%d\n", x, y, i
  }
}' >"$TMP/in.txt" || fail "could not generate the input file"
size=$(wc -c <"$TMP/in.txt")
[ "$size" -ge 100000000 ] || fail "generated only $size bytes"

run_ref sort env LC_ALL=C sort -T "$TMP" -o "$TMP/ref.txt" "$TMP/in.txt"
[ "$status" -eq 0 ] || { show "$TMP/sort.ref.err"; fail "sort fails without the library"; }
H1=$(heap_name sort)
run_pre sort env SHMHEAP_KEY="$H1" LC_ALL=C sort -T "$TMP" -o "$TMP/pre.txt" "$TMP/in.txt"
[ "$status" -eq 0 ] || { show "$TMP/sort.pre.err"; fail "sort exits $status under the preload"; }
ref=$(sha256sum <"$TMP/ref.txt")
pre=$(sha256sum <"$TMP/pre.txt")
[ "$ref" = "$pre" ] || fail "sorted output differs under the preload ($ref vs $pre)"
# sort closes stderr at exit (coreutils' close_stdout): its exit line must
# still be there (the library keeps its own descriptor), and the keyed heap
# it leaves shows how much of the heap its buffers took
check_used sort
bytes=$(keyed_heap_bytes sort "$H1")
[ -n "$bytes" ] && [ "$bytes" -ge $((64 * 1024 * 1024)) ] ||
  fail "sort of 100 MB carved only '${bytes}' bytes of the shm heap: its buffers were not there"
echo "sort: the shm heap grew to $bytes bytes"

# a numeric sort with a small buffer: many temporary files and merges
run_ref sortn env LC_ALL=C sort -n -S 8M -k2,2 -T "$TMP" -o "$TMP/refn.txt" "$TMP/in.txt"
[ "$status" -eq 0 ] || { show "$TMP/sortn.ref.err"; fail "sort -n fails without the library"; }
H2=$(heap_name sortn)
run_pre sortn env SHMHEAP_KEY="$H2" LC_ALL=C sort -n -S 8M -k2,2 -T "$TMP" -o "$TMP/pren.txt" "$TMP/in.txt"
[ "$status" -eq 0 ] || { show "$TMP/sortn.pre.err"; fail "sort -n -S 8M exits $status under the preload"; }
cmp -s "$TMP/refn.txt" "$TMP/pren.txt" || fail "sort -n -S 8M output differs under the preload"
bytes=$(keyed_heap_bytes sortn "$H2")
[ -n "$bytes" ] && [ "$bytes" -ge $((8 * 1024 * 1024)) ] ||
  fail "sort -S 8M carved only '${bytes}' bytes of the shm heap"
echo "PASS: sort of $size bytes under libshmheap"
