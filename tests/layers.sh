#!/bin/bash
# The library's files form layers (doc/DESIGN.md, "Layers"): each file calls
# only files of its own layer or of the layers below, and no two files call
# each other, directly or through others.  Read from the symbols of the
# built objects: a function or variable a file uses but does not define is
# an edge to the file that defines it.  Also: System V calls, /proc and the
# other kernel interfaces are used by the OS layer only, and the reader
# (view.c) allocates nothing from the heap it reads.
set -u
top_builddir=${top_builddir:-.}
top_srcdir=${top_srcdir:-.}
objdir=$top_builddir/src/.libs

LAYERS=(
  "0 os: os diag options"
  "1 format: format"
  "2 pages: lock journal pages"
  "3 allocator: small alloc view mark stats"
  "4 processes: thread repair fork recover collect image prefault background"
  "5 start-up: init segment"
  "6 exported: interpose cxx exec api roots supervise"
)
# Kernel interfaces only the OS layer may name (the rest go through os.h).
OS_ONLY='^(shmget|shmat|shmdt|shmctl|madvise|mmap|munmap|syscall|clock_gettime|readlink|open|open64|execve)$'

fail=0
problem() { echo "layers.sh: $*"; fail=1; }

declare -A layer_of
files=()
for row in "${LAYERS[@]}"; do
  n=${row%% *}
  for f in ${row#*: }; do
    layer_of[$f]=$n
    files+=("$f")
  done
done

# Every source file of the library has a layer.
for c in "$top_srcdir"/src/*.c; do
  f=$(basename "$c" .c)
  [ -n "${layer_of[$f]:-}" ] || problem "src/$f.c is in no layer: add it to LAYERS here and to doc/DESIGN.md"
done

declare -A def_in
for f in "${files[@]}"; do
  o=$objdir/libshmheap_la-$f.o
  if [ ! -f "$o" ]; then
    problem "$o is missing (build the library first)"
    continue
  fi
  while read -r sym; do def_in[$sym]=$f; done < <(nm -g --defined-only "$o" | awk '{print $3}')
done
[ "$fail" -eq 0 ] || exit 1

edges=$(mktemp)
trap 'rm -f "$edges"' EXIT
nedges=0
for f in "${files[@]}"; do
  o=$objdir/libshmheap_la-$f.o
  while read -r sym; do
    d=${def_in[$sym]:-}
    if [ -z "$d" ]; then
      if [[ $sym =~ $OS_ONLY ]] && [ "${layer_of[$f]}" -ne 0 ]; then
        problem "$f.c (layer ${layer_of[$f]}) calls $sym: only the OS layer may (os.h)"
      fi
      if { [ "$f" = view ] || [ "$f" = mark ]; } && [[ $sym =~ ^(malloc|calloc|realloc|free)$ ]]; then
        problem "$f.c calls $sym: the reader and the mark must not allocate from the heap they read"
      fi
      continue
    fi
    [ "$d" = "$f" ] && continue
    if [ "${layer_of[$d]}" -gt "${layer_of[$f]}" ]; then
      problem "$f.c (layer ${layer_of[$f]}) uses $sym of $d.c (layer ${layer_of[$d]}): an upward call"
    fi
    echo "$d $f" >>"$edges"
    nedges=$((nedges + 1))
  done < <(nm -u "$o" | awk '{print $2}')
done

# A circle between files of one layer: tsort reports a loop.
if ! sort -u "$edges" | tsort >/dev/null 2>"$edges.err"; then
  problem "files call each other in a circle: $(tr '\n' ' ' <"$edges.err")"
fi
rm -f "$edges.err"

# The check must have seen the library's calls, or it proves nothing.
[ "$nedges" -gt 50 ] || problem "only $nedges cross-file uses found: is nm reading the right objects?"

if [ "$fail" -eq 0 ]; then
  echo "layers.sh: ${#files[@]} files in ${#LAYERS[@]} layers, $(sort -u "$edges" | wc -l) file-to-file uses, none upward, no circle"
fi
exit "$fail"
