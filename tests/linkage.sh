#!/bin/bash
# The built library brings everything it calls: ldd -r (which binds every
# symbol now, not when first called) finds none undefined.  A symbol left
# undefined is found only when first called, by the dynamic loader, which
# then allocates for its error message: in libshmheap.so that happens
# during start-up if the call is there.  So it went with clang's UBSan
# runtime, which libtool's link of the library had dropped: every check
# passed because none fired, and the first one to fire hung the process.
set -u
top_builddir=${top_builddir:-.}
lib=$top_builddir/src/.libs/libshmheap.so
if [ ! -f "$lib" ]; then
  echo "linkage.sh: $lib is not built"
  exit 1
fi
out=$(LC_ALL=C ldd -r "$lib" 2>&1)
rc=$?
if [ $rc -ne 0 ] || grep -q "undefined symbol" <<<"$out"; then
  echo "linkage.sh: $lib does not resolve all its symbols (ldd -r, exit $rc):"
  echo "$out"
  exit 1
fi
echo "linkage.sh: every symbol of $lib resolves"
