#!/usr/bin/env python3
"""Corrupts the metadata of a keyed heap that no process uses, for
tests/gc.sh: the collection at the next start must not free a block that the
roots reach because of what a stray store wrote (doc/DESIGN.md, decision 7).

usage: gc_corrupt.py SHMID CASE
  stray       a descriptor past the last in use, counted in use, becomes a
              large block covering the second page of a multi-page small
              span in use: outside the page map's tiling, it must cover
              nothing
  quarantine  every small span in use gets a capacity its class does not
              have: attach takes them out of use, and what they hold must
              still be scanned and kept
  used        every small span with two or more blocks in use counts one:
              a sweep that trusted the count would give spans that still
              hold reached blocks back to the page allocator
  used0       the same with a count of none, on a heap whose process was
              killed: the restart gives a dead thread's empty spans back
              before any collection
Prints what it changed; exit 0, 1 if the heap has nothing to corrupt for
the case, 99 on a harness error.
"""
import ctypes, json, os, subprocess, sys

TOP = os.environ.get("top_builddir") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
libc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
libc.shmdt.argtypes = [ctypes.c_void_p]


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 99
    shmid, case = int(sys.argv[1]), sys.argv[2]
    L = json.loads(subprocess.check_output([os.path.join(TOP, "tests/heapfuzz_worker"), "layout"]))
    base = libc.shmat(shmid, None, 0)
    if base in (None, ctypes.c_void_p(-1).value):
        print("gc_corrupt: shmat(%d): %s" % (shmid, os.strerror(ctypes.get_errno())), file=sys.stderr)
        return 99
    H, S, st = L["header"]["fields"], L["span"]["fields"], L["span_state"]

    def rd(off, n):
        return int.from_bytes(ctypes.string_at(base + off, n), "little")

    def wr(off, n, v):
        ctypes.memmove(base + off, v.to_bytes(n, "little"), n)

    hdr = lambda f: rd(H[f][0], H[f][1])
    spans_off, count = hdr("spans_off"), hdr("span_count")
    desc = lambda i, f: spans_off + i * L["span"]["sizeof"] + S[f][0]
    get = lambda i, f: rd(desc(i, f), S[f][1])
    put = lambda i, f, v: wr(desc(i, f), S[f][1], v)
    small = [i for i in range(1, count) if get(i, "state") == st["small"] and get(i, "used") > 0]
    changed = []
    if case == "stray":
        # A descriptor past the last in use, counted in use: on no list,
        # in no tiling, as a stray store could leave one.
        unused = [count] if count < hdr("nspans") and get(count, "state") == st["none"] else []
        # The old collection built its page owners in descriptor order, so a
        # stray descriptor overrode the spans before it.
        multi = [i for i in small if get(i, "npages") >= 2 and unused and i < unused[-1]]
        if multi:
            v = max(multi, key=lambda i: get(i, "used"))
            d = unused[-1]
            put(d, "state", st["large"])
            put(d, "first", get(v, "first") + 1)
            put(d, "npages", 1)
            wr(H["span_count"][0], H["span_count"][1], count + 1)
            changed.append("descriptor %d: large, page %d (inside span %d of %d blocks in use)" %
                           (d, get(v, "first") + 1, v, get(v, "used")))
    elif case == "quarantine":
        for i in small:
            put(i, "capacity", get(i, "capacity") + 1)
        if small:
            changed.append("%d small spans: capacity + 1" % len(small))
    elif case in ("used", "used0"):
        n = 0
        for i in small:
            if get(i, "used") >= 2:
                put(i, "used", 1 if case == "used" else 0)
                n += 1
        if n:
            changed.append("%d small spans: used %d" % (n, 1 if case == "used" else 0))
    else:
        print("gc_corrupt: no case %s" % case, file=sys.stderr)
        return 99
    libc.shmdt(ctypes.c_void_p(base))
    if not changed:
        print("gc_corrupt: %s: the heap has nothing to corrupt (%d descriptors)" % (case, count), file=sys.stderr)
        return 1
    print("%s: %s" % (case, "; ".join(changed)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
