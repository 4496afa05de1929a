"""Corrupts a heap's metadata one byte at a time and runs shmheap-dump on each
variant: it must exit 0, 1 or 2 (never by a signal) within the time limit.
The byte is restored after each run, so every variant differs from the real
heap by one byte.  usage: dump_fuzz.py TOOL SHMID VARIANTS SEED"""
import ctypes, json, random, subprocess, sys

tool, shmid, variants, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
libc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
libc.shmdt.argtypes = [ctypes.c_void_p]
base = libc.shmat(shmid, None, 0)
if base in (None, ctypes.c_void_p(-1).value):
    sys.exit("dump_fuzz: cannot attach shmid %d" % shmid)
info = json.loads(subprocess.run([tool, "--json", "--shmid", str(shmid)], check=True,
                                 capture_output=True, text=True).stdout)
lay = info["layout"]
# The metadata that is in use: header (with the roots), thread heaps, page map,
# descriptors.
regions = [(0, lay["heaps_off"]),  # the header, roots included
           (lay["heaps_off"], 16 * 4096),
           (lay["pagemap_off"], 4 * (info["heap_bytes"] // 4096)),
           (lay["spans_off"], 64 * lay["descriptors"])]
rng = random.Random(seed)
codes = {0: 0, 1: 0, 2: 0}
for n in range(variants):
    start, length = rng.choice(regions)
    off = start + rng.randrange(max(length, 1))
    cell = ctypes.c_uint8.from_address(base + off)
    old = cell.value
    cell.value = rng.choice([0, 0xff, old ^ (1 << rng.randrange(8)), rng.randrange(256)])
    for args in (["--check"], [], ["--json"], ["--blocks", "--limit", "50"], ["--roots"], ["--garbage"]):
        try:
            r = subprocess.run([tool] + args + ["--shmid", str(shmid)], capture_output=True, timeout=20)
        except subprocess.TimeoutExpired:
            cell.value = old
            sys.exit("FAIL: variant %d (byte 0x%x): shmheap-dump %s did not finish" % (n, off, " ".join(args)))
        if r.returncode not in (0, 1, 2):
            cell.value = old
            sys.exit("FAIL: variant %d (byte 0x%x = 0x%02x): shmheap-dump %s exited %d\n%s" %
                     (n, off, cell.value, " ".join(args), r.returncode, r.stderr.decode(errors="replace")))
        if args == ["--check"]:
            codes[r.returncode] += 1
    cell.value = old
libc.shmdt(ctypes.c_void_p(base))
print("dump_fuzz: %d variants: check exit 0: %d, 1: %d, 2: %d" % (variants, codes[0], codes[1], codes[2]))
if codes[1] + codes[2] == 0:
    sys.exit("FAIL: no corruption was noticed at all")
