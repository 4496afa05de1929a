#!/usr/bin/env python3
"""Corrupted-heap fuzz: restarts a preloaded program on randomly corrupted
copies of keyed heaps and checks that every start ends as the library
promises (decision 7 of doc/DESIGN.md: every byte of the segment is
untrusted).

Two source heaps are made first, each at a key of its own:
  clean   crash_worker run 3 MS: three threads allocate, reallocate and free
          blocks of every size class and large ones (free lists non-empty),
          the table is reached from the root "crash.table"; exits 0;
  killed  crash_worker run 3, killed with SIGKILL in the middle of that work.
Each is snapshotted (the segment up to the heap's top page) and removed.

Each iteration makes a new segment of the same size at a new key, copies a
source into it, patches the header's key (and name) so that the copy is that
key's heap, and corrupts it (one change, or a few for kind "multi"):
  header    a byte of the header pages, or a named field (top, bins, the
            descriptor free list, roots, the process table, the undo log,
            the lock...)
  meta      a word of the metadata pages: span descriptors, page map, thread
            heaps (class lists, busy flags, pending chains)
  freelink  a free-list link: the head of a span's local or remote list, or
            the link word inside a free block; set to another block, to the
            block itself, into the header or other metadata, misaligned,
            outside the span or the segment, or bits flipped
  any       a byte or word at any offset of the segment
Then `shmheap-dump --check` runs on it (it must exit 0, 1 or 2 in time) and
tests/heapfuzz_worker start runs on it with LD_PRELOAD=$SHMHEAP_LIB and
SHMHEAP_KEY set.  Accepted outcomes of the start: exit 0; exit 65 with a
"libshmheap: " message on stderr (refused); SIGABRT with such a message
(stopped).  Anything else fails: another signal, another status, a timeout
(hang), exit 3 (the worker saw a block handed out twice), exit 4 (memory
outside the heap).  The segment is removed after each iteration, whatever
happens (and on SIGINT/SIGTERM).

usage: heap_fuzz.py [--count N] [--seed S] [--jobs J] [--timeout SEC]
                    [--sources DIR] [--replay SEED:ITER] [--list-failures]
  --sources DIR  snapshot the sources into DIR (or reuse the ones there):
                 a replay needs the same sources; without it they go to a
                 temporary directory that is kept when a case failed
  --replay S:I   rebuild case I of seed S (on the sources of --sources),
                 run it once, then rebuild it again and keep the segment for
                 a debugger: prints its key and the command to run
Environment: SHMHEAP_LIB (the library), top_builddir (default: ..).
Exit status: 0 every start was accepted, 1 some failed, 2 usage, 99 harness error
(automake's hard error: the harness, not the library, is wrong).
"""
import argparse, ctypes, errno, json, os, random, resource, shutil, signal, struct, subprocess, sys, tempfile, threading, time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.environ.get("top_builddir") or os.path.dirname(HERE)
LIB = os.environ.get("SHMHEAP_LIB") or os.path.join(TOP, "src/.libs/libshmheap.so")
DUMP = os.path.join(TOP, "tools/shmheap-dump")
CRASH_WORKER = os.path.join(TOP, "tests/crash_worker")
WORKER = os.path.join(TOP, "tests/heapfuzz_worker")
SIZE = 256 << 20        # crash_worker's heap size (check_crash uses the same)
CHUNK = 64 << 10        # copy granularity: all-zero chunks are not copied
KEY_BASE = 0x48460000   # "HF": keys of this fuzz (the creation is exclusive)

IPC_CREAT, IPC_EXCL, IPC_RMID, SHM_RDONLY = 0o1000, 0o2000, 0, 0o10000
libc = ctypes.CDLL(None, use_errno=True)
libc.shmget.restype = ctypes.c_int
libc.shmget.argtypes = [ctypes.c_int, ctypes.c_size_t, ctypes.c_int]
libc.shmat.restype = ctypes.c_void_p
libc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
libc.shmdt.argtypes = [ctypes.c_void_p]
libc.shmctl.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
MADV_POPULATE_WRITE = 23  # Linux 5.14; only a speed-up (one fault per run of pages, not per page)
BAD_ADDR = ctypes.c_void_p(-1).value


class HarnessError(Exception):
    pass


# ---- segments this run made: removed on every path out --------------------------------

lock = threading.Lock()
our_shmids = set()
our_procs = set()
stopping = threading.Event()


def shm_create(key):
    """A new segment at key (exclusive); its shmid, or None if the key is taken."""
    with lock:
        if stopping.is_set():
            raise KeyboardInterrupt
        sid = libc.shmget(key, SIZE, IPC_CREAT | IPC_EXCL | 0o600)
        if sid < 0:
            e = ctypes.get_errno()
            if e == errno.EEXIST:
                return None
            raise HarnessError("shmget(0x%x): %s" % (key, os.strerror(e)))
        our_shmids.add(sid)
        return sid


def shm_remove(sid):
    with lock:
        if sid in our_shmids:
            libc.shmctl(sid, IPC_RMID, None)
            our_shmids.discard(sid)


def shm_attach(sid, ro=False):
    a = libc.shmat(sid, None, SHM_RDONLY if ro else 0)
    if a in (None, BAD_ADDR):
        raise HarnessError("shmat(%d): %s" % (sid, os.strerror(ctypes.get_errno())))
    return a


def cleanup_all():
    stopping.set()
    with lock:
        for p in list(our_procs):
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass
        for sid in list(our_shmids):
            libc.shmctl(sid, IPC_RMID, None)
        our_shmids.clear()


next_key = [KEY_BASE + (os.getpid() % 0x1000) * 0x10]


def new_key():
    with lock:
        k = next_key[0]
        next_key[0] += 1
        return k


def run(argv, env, timeout, stdin=subprocess.DEVNULL):
    """(returncode or None on timeout, stdout, stderr); the process group is
    killed on a timeout or an interrupt."""
    p = subprocess.Popen(argv, env=env, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         start_new_session=True)
    with lock:
        our_procs.add(p)
    try:
        out, err = p.communicate(timeout=timeout)
        return p.returncode, out, err
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        return None, out, err
    finally:
        with lock:
            our_procs.discard(p)
        try:
            os.killpg(p.pid, signal.SIGKILL)  # anything it left in its group
        except OSError:
            pass


def base_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHMHEAP_") and k != "LD_PRELOAD"}
    return env


# ---- the layout (from heapfuzz_worker layout: format.h's offsets) --------------------------

class Layout:
    def __init__(self, j):
        self.j = j
        self.page = j["page"]
        self.hdr = j["header"]["fields"]
        self.hdr_size = j["header"]["sizeof"]
        self.span = j["span"]["fields"]
        self.span_size = j["span"]["sizeof"]
        self.theap = j["theap"]["fields"]
        self.theap_size = j["theap"]["sizeof"]
        self.root_size = j["root"]["sizeof"]
        self.root = j["root"]["fields"]
        self.proc_size = j["shm_proc"]["sizeof"]
        self.ulog = j["ulog"]["fields"]
        self.nclass = j["nclass"]
        self.state = j["span_state"]


def rd(buf, off, size):
    return int.from_bytes(buf[off:off + size], "little")


class Source:
    """A snapshot of a source heap: its bytes up to the top page, and what the
    fuzz needs to know of its metadata."""

    def __init__(self, name, L, image, info):
        self.name, self.L, self.img, self.info = name, L, image, info
        h = L.hdr
        g = lambda f: rd(image, h[f][0], h[f][1])
        self.size = g("size")
        self.header_size = g("header_size")
        self.heaps_off, self.spans_off = g("heaps_off"), g("spans_off")
        self.pagemap_off, self.heap_off = g("pagemap_off"), g("heap_off")
        self.npages, self.nspans = g("npages"), g("nspans")
        self.top, self.span_count, self.max_heap = g("top"), g("span_count"), g("max_heap")
        lay = info["layout"]
        for ours, theirs in ((self.heaps_off, "heaps_off"), (self.spans_off, "spans_off"),
                             (self.pagemap_off, "pagemap_off"), (self.heap_off, "heap_off"),
                             (self.npages, "pages"), (self.span_count, "descriptors")):
            if ours != lay[theirs]:
                raise HarnessError("source %s: header field %s reads %d here, %d in shmheap-dump --json: "
                                   "heapfuzz_worker layout and the dump disagree" % (name, theirs, ours, lay[theirs]))
        if g("key") & 0xffffffff != info["key"] or g("base") != int(info["base"], 16):
            raise HarnessError("source %s: key/base do not match shmheap-dump --json" % name)
        # span descriptors in use, small spans, their carved and free blocks
        self.spans = {}
        for i in range(1, self.span_count):
            self.spans[i] = self.span_fields(i)
        self.small = [i for i, s in self.spans.items() if s["state"] == L.state["small"] and s["bsize"]]
        self.free_blocks = {}   # span -> [block offsets on its lists, in list order]
        for i in self.small:
            s = self.spans[i]
            blocks = self.walk(s, s["free"]) + self.walk(s, s["thread_free"] & ~1)
            if blocks:
                self.free_blocks[i] = blocks
        self.free_spans = sorted(self.free_blocks)
        # the spans the next allocations follow first: each heap's current
        # span of each class, and the span a heap left busy was editing
        self.current, self.busy = [], []
        for hh in range(min(self.max_heap, L.j["max_heaps"])):
            ho = self.heaps_off + hh * L.theap_size
            coff, _, celem = L.theap["cls"]
            for c in range(1, L.nclass + 1):
                i = rd(image, ho + coff + c * celem, 4)
                if i in self.free_blocks:
                    self.current.append(i)
            if rd(image, ho + L.theap["busy"][0], 4):
                self.busy.append(hh)
                e = rd(image, ho + L.theap["edit_span"][0], 4)
                if e in self.free_blocks:
                    self.current.append(e)
        self.roots = []
        rbase, rsz, _ = h["roots"]
        for k in range(rsz // L.root_size):
            if image[rbase + k * L.root_size]:
                self.roots.append(k)
        self.procs = []
        pbase, psz, _ = h["procs"]
        for k in range(psz // L.proc_size):
            if rd(image, pbase + k * L.proc_size, 4):
                self.procs.append(k)
        self.ulog_n = rd(image, h["ulog"][0] + L.ulog["n"][0], 4)
        # the non-zero chunks: the only ones copied
        self.chunks = [o for o in range(0, len(image), CHUNK) if any(image[o:o + CHUNK])]
        self.runs = []  # [start, end) of consecutive non-zero chunks
        for o in self.chunks:
            e = min(o + CHUNK, len(image))
            if self.runs and self.runs[-1][1] == o:
                self.runs[-1][1] = e
            else:
                self.runs.append([o, e])
        self.cbuf = (ctypes.c_char * len(image)).from_buffer(image)

    def span_fields(self, i):
        o = self.spans_off + i * self.L.span_size
        return {f: rd(self.img, o + off, size) for f, (off, size, _) in self.L.span.items()}

    def span_start(self, s):
        return self.heap_off + s["first"] * self.L.page

    def is_block(self, s, off):
        st = self.span_start(s)
        return st <= off < st + s["reserved"] * s["bsize"] and (off - st) % s["bsize"] == 0

    def walk(self, s, head):
        out, seen = [], set()
        while head and self.is_block(s, head) and head not in seen and len(out) <= s["capacity"]:
            seen.add(head)
            out.append(head)
            head = rd(self.img, head, 8)
        return out

    def describe(self):
        nfree = sum(len(v) for v in self.free_blocks.values())
        return ("%s: %d of %d pages carved, %d descriptors, %d small spans (%d with free blocks, %d free blocks), "
                "%d thread heaps (%d left busy), %d roots, %d process(es) listed, undo log %d, state %s, %.1f MB copied" %
                (self.name, self.top, self.npages, self.span_count, len(self.small), len(self.free_spans), nfree,
                 self.max_heap, len(self.busy), len(self.roots), len(self.procs), self.ulog_n, self.info.get("state"),
                 len(self.chunks) * CHUNK / 1e6))


# ---- making the sources ------------------------------------------------------------------

def make_source(kind, seed, L):
    """The snapshot of a heap crash_worker leaves; a killed one is made again
    (up to 8 times) until the kill landed inside an edit: a thread heap left
    busy or the undo log open, which the restart must repair."""
    for attempt in range(8 if kind == "killed" else 1):
        image, info = make_source_once(kind, seed + attempt, L)
        h, t = L.hdr, L.theap
        busy = any(rd(image, info["layout"]["heaps_off"] + k * L.theap_size + t["busy"][0], 4)
                   for k in range(rd(image, h["max_heap"][0], 4)))
        if kind != "killed" or busy or rd(image, h["ulog"][0] + L.ulog["n"][0], 4):
            break
    return image, info


def make_source_once(kind, seed, L):
    key = None
    sid = None
    while sid is None:
        key = new_key()
        # the key must be free for crash_worker to form the heap there: take it
        # exclusively, then give it back just before the worker starts
        sid = shm_create(key)
    shm_remove(sid)
    env = base_env()
    env.update(LD_PRELOAD=LIB, SHMHEAP_KEY="0x%x" % key, SHMHEAP_SIZE=str(SIZE), CRASH_WORKER_SEED=str(seed))
    rng = random.Random("source:%s:%d" % (kind, seed))
    try:
        if kind == "clean":
            rc, out, err = run([CRASH_WORKER, "run", "3", "150"], env, 60)
            if rc != 0:
                raise HarnessError("crash_worker run 3 150 exited %s: %s" % (rc, err.decode(errors="replace")[-2000:]))
        else:
            p = subprocess.Popen([CRASH_WORKER, "run", "3"], env=env, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
            with lock:
                our_procs.add(p)
            try:
                line = p.stdout.readline()
                if line.strip() != b"ready":
                    p.kill()
                    raise HarnessError("crash_worker run 3 did not say ready: %r %s" %
                                       (line, p.stderr.read().decode(errors="replace")[-2000:]))
                time.sleep(0.1 + rng.random() * 0.15)
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
            finally:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except OSError:
                    pass
                p.wait()
                with lock:
                    our_procs.discard(p)
        sid = libc.shmget(key, 0, 0)
        if sid < 0:
            raise HarnessError("the %s source heap (key 0x%x) is not there" % (kind, key))
        with lock:
            our_shmids.add(sid)
        rc, out, err = run([DUMP, "--json", "--shmid", str(sid)], base_env(), 60)
        if rc != 0:
            raise HarnessError("shmheap-dump --json on the %s source: exit %s %s" % (kind, rc, err.decode(errors="replace")))
        info = json.loads(out)
        a = shm_attach(sid, ro=True)
        try:
            top = info["heap_bytes"]  # pages carved, in bytes
            used = info["layout"]["heap_off"] + top
            image = bytearray(ctypes.string_at(a, used))
        finally:
            libc.shmdt(ctypes.c_void_p(a))
        return image, info
    finally:
        # whatever is at the key now is the heap our crash_worker formed (the
        # key was ours, exclusively, just before it started)
        if sid is not None and sid >= 0:
            shm_remove(sid)
        left = libc.shmget(key, 0, 0)
        if left >= 0:
            libc.shmctl(left, IPC_RMID, None)


def load_sources(L, seed, sdir):
    out = {}
    for kind in ("clean", "killed"):
        ipath, jpath = os.path.join(sdir, kind + ".img"), os.path.join(sdir, kind + ".json")
        if os.path.exists(ipath) and os.path.exists(jpath):
            with open(jpath) as f:
                info = json.load(f)
            with open(ipath, "rb") as f:
                image = bytearray(f.read())
        else:
            image, info = make_source(kind, seed, L)
            with open(ipath, "wb") as f:  # sparse: the zero chunks are holes
                for o in range(0, len(image), CHUNK):
                    c = image[o:o + CHUNK]
                    if any(c):
                        f.seek(o)
                        f.write(c)
                f.truncate(len(image))
            with open(jpath, "w") as f:
                json.dump(info, f)
        out[kind] = Source(kind, L, image, info)
    return out


# ---- corruptions --------------------------------------------------------------------------

def u(n, v):
    return (v & ((1 << (8 * n)) - 1)).to_bytes(n, "little")


def pick_value(rng, n, old, plausible):
    """A new value for a field of n bytes: bits flipped, a random word, 0, all
    ones, or one of the plausible values (in-range offsets and indices)."""
    r = rng.random()
    if plausible and r < 0.5:
        return rng.choice(plausible), "plausible"
    r = rng.random()
    if r < 0.35:
        b = rng.randrange(8 * n)
        return old ^ (1 << b), "bit %d flipped" % b
    if r < 0.6:
        return rng.getrandbits(8 * n), "random"
    if r < 0.8:
        return 0, "zero"
    if r < 0.9:
        return (1 << (8 * n)) - 1, "all ones"
    return old + rng.choice([-1, 1, 2, 16, 4096]), "off by a little"


def offsets_plausible(S, rng, near=None):
    """Offsets that look like the segment's: blocks, the header, metadata."""
    L = S.L
    vals = [0x10, S.header_size - 16, S.heaps_off, S.spans_off + L.span_size, S.pagemap_off,
            S.heap_off, S.heap_off + S.top * L.page, S.size - 16, S.size, S.size + L.page, 1 << 47]
    if S.free_spans:
        i = rng.choice(S.free_spans)
        vals.append(rng.choice(S.free_blocks[i]))
    if S.small:
        s = S.spans[rng.choice(S.small)]
        if s["reserved"]:
            vals.append(S.span_start(s) + rng.randrange(s["reserved"]) * s["bsize"])
    if near is not None:
        vals += [near, near + 8, near + 1, near - 16]
    return vals


def indices_plausible(S, rng, own=None):
    vals = [0, 1, S.span_count - 1, S.span_count, S.nspans - 1, S.nspans, 0xffffffff]
    if S.small:
        vals.append(rng.choice(S.small))
    if S.spans:
        vals.append(rng.choice(list(S.spans)))
    if own is not None:
        vals += [own, own + 1]
    return vals


def mut_field(S, rng, where, fname, off, size, plausible):
    old = rd(S.img, off, size)
    v, how = pick_value(rng, size, old, plausible)
    return [(off, u(size, v))], "%s = 0x%x (was 0x%x, %s)" % (where + fname, v & ((1 << 8 * size) - 1), old, how)


HEADER_FIELDS = ["magic", "format", "header_size", "size", "base", "key", "name", "creator_uid", "creator_pid",
                 "page_size", "nclass", "class_size", "class_pages", "heaps_off", "spans_off", "pagemap_off",
                 "heap_off", "npages", "nspans", "lock", "top", "span_count", "span_free", "bins", "binmap",
                 "dirty_pages", "dirty_head", "dirty_tail", "live_pages", "large_in_use", "large_count", "purge_due_ms", "max_heap", "roots",
                 "program", "last_pid", "procs", "image", "ulog"]
# the fields the allocator follows get most of the draws
HEADER_WEIGHTS = {"top": 4, "span_count": 4, "span_free": 4, "bins": 8, "dirty_head": 3, "dirty_tail": 2, "binmap": 3, "max_heap": 3, "roots": 4,
                  "procs": 3, "ulog": 5, "lock": 4, "class_size": 2, "class_pages": 2}


def corrupt_header(S, rng):
    L = S.L
    if rng.random() < 0.25:
        off = rng.randrange(S.header_size)
        old = S.img[off]
        v = rng.choice([old ^ (1 << rng.randrange(8)), rng.randrange(256), 0, 0xff])
        return [(off, bytes([v]))], "header", "header byte 0x%x" % off, "byte 0x%x = 0x%02x (was 0x%02x)" % (off, v, old)
    names = [f for f in HEADER_FIELDS if f in L.hdr]
    f = rng.choices(names, [HEADER_WEIGHTS.get(n, 1) for n in names])[0]
    off, size, elem = L.hdr[f]
    if f == "lock":
        # glibc's robust mutex: __lock (owner tid | FUTEX_OWNER_DIED), __count, __owner, __nusers, __kind
        sub = rng.choice([(0, 4, "__lock"), (8, 4, "__owner"), (16, 4, "__kind"), (4, 4, "__count")])
        vals = [0x40000000, 0x40000000 | 0x3ffffff0, 0x3ffffff0, 1, 0x7fffffff, 0x80000000]
        p, d = mut_field(S, rng, "header.lock.", sub[2], off + sub[0], sub[1], vals)
        if rng.random() < 0.5 and sub[2] == "__lock":
            # an owner that died mid-edit, with a log to roll back
            p += [(off, u(4, 0x40000000))]
            p2, d2 = corrupt_ulog(S, rng, force=True)
            return p + p2, "header", "lock+ulog", d + "; __lock = owner died; " + d2
        return p, "header", "lock." + sub[2], d
    if f == "ulog":
        p, d = corrupt_ulog(S, rng)
        return p, "header", "ulog", d
    if f == "roots":
        k = rng.choice(S.roots) if S.roots and rng.random() < 0.7 else rng.randrange(size // L.root_size)
        ro = off + k * L.root_size
        if rng.random() < 0.7:
            p, d = mut_field(S, rng, "roots[%d]." % k, "off", ro + L.root["off"][0], 8, offsets_plausible(S, rng))
            return p, "header", "roots.off", d
        p, d = mut_field(S, rng, "roots[%d]." % k, "name[0]", ro, 1, [0, 0x41])
        return p, "header", "roots.name", d
    if f == "procs":
        k = rng.choice(S.procs) if S.procs and rng.random() < 0.7 else rng.randrange(size // L.proc_size)
        po = off + k * L.proc_size
        p, d = mut_field(S, rng, "procs[%d]." % k, "pid", po, 4, [1, os.getpid(), 0x7fffffff, -1, 2])
        return p, "header", "procs.pid", d
    if f == "image":
        p, d = mut_field(S, rng, "image.", "n", off, 4, [0, 1, 128, 129, 0xffffffff])
        return p, "header", "image.n", d
    if elem != size:  # an array: one element
        k = rng.randrange(size // elem)
        eo = off + k * elem
        plaus = None
        if f == "bins":
            plaus = indices_plausible(S, rng, rd(S.img, eo, elem))
        elif f == "class_size":
            plaus = [0, 8, 16, 32768, 32784, rd(S.img, eo - elem, elem) if k else 0]
        p, d = mut_field(S, rng, "header.%s[%d]" % (f, k), "", eo, elem, plaus)
        return p, "header", f, d
    plaus = {
        "top": [S.npages, S.npages + 1, S.top - 1, S.top + 1, 0, 0xffffffff],
        "span_count": indices_plausible(S, rng, S.span_count),
        "span_free": indices_plausible(S, rng),
        "dirty_head": indices_plausible(S, rng), "dirty_tail": indices_plausible(S, rng),
        "max_heap": [0, 1, 1023, 1024, 1025, 0xffffffff, S.max_heap + 1],
        "dirty_pages": [S.npages, 1 << 40], "live_pages": [0, 1 << 40],
        "large_count": [0, 1 << 63], "large_in_use": [0, 1 << 63],
        "purge_due_ms": [0, 1 << 63], "base": [0, 0x300000000000, 0x200000001000, 1 << 47],
    }.get(f)
    p, d = mut_field(S, rng, "header.", f, off, size, plaus)
    return p, "header", f, d


def corrupt_ulog(S, rng, force=False):
    """The undo log: its count, or an entry's where (offset | width << 56) or old value."""
    L = S.L
    base = L.hdr["ulog"][0]
    n_off = base + L.ulog["n"][0]
    eoff, esize, elem = L.ulog["e"]
    patches, desc = [], []
    if force or rng.random() < 0.5:
        n = rng.choice([1, 2, 3, 17, 1024, 1025, 0xffffffff])
        patches.append((n_off, u(4, n)))
        desc.append("ulog.n = %d" % n)
    else:
        n = max(S.ulog_n, 1)
    for k in range(min(n, 3) if n < 1025 else 1):
        e = base + eoff + k * elem
        target = rng.choice(offsets_plausible(S, rng) + [rng.getrandbits(56)])
        width = rng.choice([1, 2, 4, 8, 8, 8, 0, 3, 16, 255])
        where = (target & ((1 << 56) - 1)) | (width << 56)
        patches.append((e, u(8, where)))
        patches.append((e + 8, u(8, rng.getrandbits(64))))
        desc.append("ulog.e[%d] = {where 0x%x width %d}" % (k, target, width))
    return patches, "; ".join(desc)


SPAN_PLAUS = {
    "first": lambda S, s, rng: [0, S.top, S.top - 1, S.npages, S.npages + 1, 0xffffffff, s["first"] + 1],
    "npages": lambda S, s, rng: [0, 1, S.npages, S.npages + 1, 0xffffffff, S.top - s["first"] + 1],
    "state": lambda S, s, rng: [0, 1, 2, 3, 4, 0xff],
    "cls": lambda S, s, rng: [0, 1, 40, 41, 0xff],
    "owner": lambda S, s, rng: [0, 1, 2, 3, 4, S.max_heap, 1023, 1024, 0xffff],
    "capacity": lambda S, s, rng: [0, 1, s["capacity"] + 1, 0xffff],
    "reserved": lambda S, s, rng: [0, s["capacity"], s["capacity"] + 1, 0xffff],
    "used": lambda S, s, rng: [0, s["reserved"], s["reserved"] + 1, 0xffff],
    "bsize": lambda S, s, rng: [0, 1, 16, 8, 32768, 65536, s["bsize"] * 2],
    "next": lambda S, s, rng: indices_plausible(S, rng),
    "prev": lambda S, s, rng: indices_plausible(S, rng),
    "dnext": lambda S, s, rng: indices_plausible(S, rng),
    "dprev": lambda S, s, rng: indices_plausible(S, rng),
    "ndirty": lambda S, s, rng: [0, s["npages"] + 1, 0xffffffff],
    "free": lambda S, s, rng: offsets_plausible(S, rng),
    "thread_free": lambda S, s, rng: [o | 1 for o in offsets_plausible(S, rng)] + offsets_plausible(S, rng),
}


def corrupt_meta(S, rng):
    L = S.L
    r = rng.random()
    if r < 0.45 and S.spans:
        # a descriptor in use (small spans most often)
        i = rng.choice(S.small) if S.small and rng.random() < 0.6 else rng.choice(list(S.spans))
        s = S.spans[i]
        f = rng.choice([f for f in L.span if f not in ("spare", "pad", "dirty_ms")])
        off, size, _ = L.span[f]
        plaus = SPAN_PLAUS[f](S, s, rng) if f in SPAN_PLAUS else None
        p, d = mut_field(S, rng, "span[%d]." % i, f, S.spans_off + i * L.span_size + off, size, plaus)
        st = {v: k for k, v in L.state.items()}.get(s["state"], "?")
        return p, "meta", "span.%s" % f, d + " (%s span)" % st
    if r < 0.65 and S.top:
        pg = rng.randrange(S.top)
        off = S.pagemap_off + 4 * pg
        p, d = mut_field(S, rng, "pagemap[%d]" % pg, "", off, 4, indices_plausible(S, rng, rd(S.img, off, 4)))
        return p, "meta", "pagemap", d
    if r < 0.95:
        h = rng.randrange(max(S.max_heap, 1))
        ho = S.heaps_off + h * L.theap_size
        f = rng.choices(["busy", "edit_span", "owner_pid", "owner_tid", "pend_span", "pend_head", "cls", "index",
                         "in_use", "lock", "full_remote"], [3, 3, 2, 1, 2, 3, 8, 1, 1, 1, 1])[0]
        off, size, elem = L.theap[f]
        if f == "cls":
            c = rng.randrange(1, L.nclass + 1)
            which = rng.choice(["avail", "full"])
            eo = ho + off + c * elem + (0 if which == "avail" else 4)
            p, d = mut_field(S, rng, "theap[%d].cls[%d].%s" % (h, c, which), "", eo, 4,
                             indices_plausible(S, rng, rd(S.img, eo, 4)))
            return p, "meta", "theap.cls." + which, d
        if f == "lock":
            p, d = mut_field(S, rng, "theap[%d].lock." % h, "__lock", ho + off, 4, [0x40000000, 0x3ffffff0, 0x7fffffff])
            return p, "meta", "theap.lock", d
        plaus = {"busy": [0, 1, 2, 0xffffffff], "edit_span": indices_plausible(S, rng),
                 "pend_span": indices_plausible(S, rng), "pend_head": offsets_plausible(S, rng),
                 "owner_pid": [0, 1, os.getpid(), 0x7fffffff, 0xffffffff], "index": [0, h + 1, 1023, 1024, 0xffff]}.get(f)
        p, d = mut_field(S, rng, "theap[%d]." % h, f, ho + off, size, plaus)
        if f in ("pend_head", "pend_span") and rng.random() < 0.5:
            # a collect in progress on a real span, for the repair to follow
            i = rng.choice(S.small) if S.small else 1
            p += [(ho + L.theap["pend_span"][0], u(4, i)), (ho + L.theap["busy"][0], u(4, 1))]
            d += "; pend_span = %d, busy = 1" % i
        return p, "meta", "theap." + f, d
    # any word of the metadata pages (thread heaps, page map, descriptors in use)
    lo, hi = S.heaps_off, S.spans_off + S.span_count * L.span_size
    off = lo + rng.randrange((hi - lo) // 8) * 8
    p, d = mut_field(S, rng, "meta word 0x%x" % off, "", off, 8, None)
    return p, "meta", "word", d


def corrupt_freelink(S, rng):
    L = S.L
    if not S.free_spans:
        return corrupt_meta(S, rng)
    i = rng.choice(S.current if S.current and rng.random() < 0.6 else S.free_spans)
    s = S.spans[i]
    blocks = S.free_blocks[i]
    st = S.span_start(s)
    r = rng.random()
    # the head is what the next malloc of the class follows
    if r < 0.2:
        where = "span[%d].free" % i
        off = S.spans_off + i * L.span_size + L.span["free"][0]
        b = blocks[0]
        field = "head"
    else:
        k = 0 if r < 0.55 else rng.randrange(min(len(blocks), 8)) if r < 0.8 else rng.randrange(len(blocks))
        b = blocks[k]
        off = b
        where = "block 0x%x (span %d, #%d on its list) link" % (b, i, k)
        field = "link"
    old = rd(S.img, off, 8)
    others = [x for x in blocks if x != b]
    live = [st + j * s["bsize"] for j in range(s["reserved"]) if st + j * s["bsize"] not in set(blocks)]
    choices = [
        ("self", lambda: b),
        ("other free block", lambda: rng.choice(others) if others else b),
        ("allocated block", lambda: rng.choice(live) if live else st),
        ("another span's block", lambda: S.span_start(S.spans[rng.choice(S.small)]) if S.small else st),
        ("header", lambda: rng.choice([0x10, 0x40, L.hdr["top"][0] & ~15, L.hdr["bins"][0] & ~15])),
        ("metadata", lambda: rng.choice([S.heaps_off, S.heaps_off + L.theap_size, S.spans_off + i * L.span_size,
                                         S.pagemap_off + 16])),
        ("misaligned", lambda: b + rng.choice([1, 8, s["bsize"] // 2 or 1])),
        ("past the span", lambda: st + s["npages"] * L.page),
        ("past the top", lambda: S.heap_off + S.top * L.page + 16),
        ("outside the segment", lambda: rng.choice([S.size, S.size + 16, 1 << 46, (1 << 64) - 16])),
        ("bit flipped", lambda: old ^ (1 << rng.randrange(64))),
        ("random", lambda: rng.getrandbits(64)),
        ("zero", lambda: 0),
    ]
    name, fn = rng.choice(choices)
    v = fn() & ((1 << 64) - 1)
    return [(off, u(8, v))], "freelink", "%s: %s" % (field, name), "%s = 0x%x (was 0x%x, %s)" % (where, v, old, name)


def corrupt_any(S, rng):
    if rng.random() < 0.8:
        off = rng.randrange(len(S.img))
    else:  # never-used pages, which a heap takes as zero
        off = len(S.img) + rng.randrange(S.size - len(S.img))
    if rng.random() < 0.6:
        old = S.img[off] if off < len(S.img) else 0
        v = old ^ (1 << rng.randrange(8))
        return [(off, bytes([v]))], "any", "byte", "byte 0x%x = 0x%02x (was 0x%02x)" % (off, v, old)
    off &= ~7
    v = rng.choice([rng.getrandbits(64), rng.choice(offsets_plausible(S, rng))])
    return [(off, u(8, v))], "any", "word", "word 0x%x = 0x%x" % (off, v)


KINDS = [("header", corrupt_header, 25), ("meta", corrupt_meta, 28), ("freelink", corrupt_freelink, 30),
         ("any", corrupt_any, 10), ("multi", None, 7)]


def plan(sources, seed, it):
    """The corruption of case (seed, it): (source name, patches, kind, field, description)."""
    rng = random.Random("heap_fuzz:%d:%d" % (seed, it))
    src = rng.choice(sorted(sources))
    S = sources[src]
    kind = rng.choices([k for k, _, _ in KINDS], [w for _, _, w in KINDS])[0]
    if kind == "multi":
        patches, descs, fields = [], [], []
        for _ in range(rng.randrange(2, 5)):
            k, fn, _ = rng.choices(KINDS[:4], [w for _, _, w in KINDS[:4]])[0]
            p, _, f, d = fn(S, rng)
            patches += p
            descs.append(d)
            fields.append(k + ":" + f)
        return src, patches, "multi", "+".join(fields), "; ".join(descs)
    fn = dict((k, f) for k, f, _ in KINDS)[kind]
    p, kind, field, d = fn(S, rng)
    return src, p, kind, field, d


# ---- one case -------------------------------------------------------------------------------

def make_copy(S, patches):
    """A new segment holding S with patches applied; (key, shmid)."""
    L = S.L
    sid = None
    while sid is None:
        key = new_key()
        sid = shm_create(key)
    a = shm_attach(sid)
    try:
        src = ctypes.addressof(S.cbuf)
        for o, e in S.runs:
            libc.madvise(a + o, e - o, MADV_POPULATE_WRITE)
            ctypes.memmove(a + o, src + o, e - o)
        # this key's heap: key, name (numeric keys have none), the hash of both
        ko, ks, _ = L.hdr["key"]
        ctypes.memmove(a + ko, u(ks, key), ks)
        no, ns, _ = L.hdr["name"]
        ctypes.memset(a + no, 0, ns)
        ho, hs, _ = L.hdr["name_hash"]
        ctypes.memmove(a + ho, u(hs, key), hs)
        for off, data in patches:
            if 0 <= off and off + len(data) <= S.size:
                ctypes.memmove(a + off, data, len(data))
    finally:
        libc.shmdt(ctypes.c_void_p(a))
    return key, sid


def lib_message(err):
    """The library's own messages, without the verbose attach/recovery/exit lines."""
    out = []
    for line in err.decode(errors="replace").splitlines():
        if line.startswith("libshmheap: ") and not line.startswith(
                ("libshmheap: attached", "libshmheap: exit", "libshmheap: recovery")):
            out.append(line)
    return out


SIGNAMES = {getattr(signal, n): n for n in dir(signal) if n.startswith("SIG") and not n.startswith("SIG_")}


def worker_env(key):
    env = base_env()
    env.update(LD_PRELOAD=LIB, SHMHEAP_KEY="0x%x" % key, SHMHEAP_PROGRAM=WORKER, SHMHEAP_IMAGE="any",
               SHMHEAP_VERBOSE="1")
    return env


def classify(rc, err):
    msgs = lib_message(err)
    if rc is None:
        return "hang", False, msgs
    if rc == 0:
        if b"re-attached" not in err:
            return "exit 0 (not on the keyed heap)", True, msgs
        return "exit 0", True, msgs
    if rc == 65 and msgs:
        return "refused (65)", True, msgs
    if rc == -signal.SIGABRT and msgs:
        return "stopped (SIGABRT)", True, msgs
    if rc < 0:
        return "%s%s" % (SIGNAMES.get(-rc, "signal %d" % -rc), " with message" if msgs else ""), False, msgs
    what = {3: " (block handed out twice)", 4: " (memory outside the heap)"}.get(rc, "")
    return "exit %d%s%s" % (rc, what, " with message" if msgs else ""), False, msgs


def run_case(sources, seed, it, timeout, keep=False):
    src, patches, kind, field, desc = plan(sources, seed, it)
    S = sources[src]
    key, sid = make_copy(S, patches)
    res = {"seed": seed, "iter": it, "source": src, "kind": kind, "field": field, "desc": desc, "key": key, "shmid": sid}
    try:
        rc, out, err = run([DUMP, "--check", "--shmid", str(sid)], base_env(), 30)
        if rc in (0, 1, 2):
            res["dump"] = {0: "consistent", 1: "problems", 2: "error"}[rc]
            res["dump_ok"] = True
        else:
            res["dump"] = "hang" if rc is None else SIGNAMES.get(-rc, "exit %d" % rc) if rc < 0 else "exit %d" % rc
            res["dump_ok"] = False
        lines = (out + err).decode(errors="replace").splitlines()
        res["dump_first"] = lines[1] if len(lines) > 1 else (lines[0] if lines else "")
        t0 = time.monotonic()
        rc, out, err = run([WORKER, "start"], worker_env(key), timeout)
        res["secs"] = time.monotonic() - t0
        res["outcome"], res["ok"], msgs = classify(rc, err)
        res["message"] = msgs[0] if msgs else ""
        res["stderr"] = err.decode(errors="replace")[-1500:]
    finally:
        if not keep:
            shm_remove(sid)
    return res


def gdb_backtrace(key, hang):
    """The start under gdb -batch: the faulting thread's backtrace, or, for a
    hang, every thread's after 3 s."""
    env = worker_env(key)
    if not hang:
        args = ["gdb", "-batch", "-ex", "run", "-ex", "bt 12", "--args", "env"]
        args += ["%s=%s" % (k, env[k]) for k in sorted(env) if k.startswith("SHMHEAP_") or k == "LD_PRELOAD"]
        rc, out, err = run(args + [WORKER, "start"], base_env(), 120)
    else:
        p = subprocess.Popen([WORKER, "start"], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
        with lock:
            our_procs.add(p)
        try:
            time.sleep(3)
            rc, out, err = run(["gdb", "-batch", "-p", str(p.pid), "-ex", "thread apply all bt 12"], base_env(), 120)
        finally:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            with lock:
                our_procs.discard(p)
    keep = ("#", "Thread ", "Program received", "Program terminated", "[Inferior")
    return "\n".join("  " + l for l in (out + err).decode(errors="replace").splitlines() if l.startswith(keep))


# ---- main ------------------------------------------------------------------------------------

def summary(results, wall, jobs):
    n = len(results)
    fails = [r for r in results if not (r["ok"] and r["dump_ok"])]
    print("heap_fuzz: %d starts in %.1f s (%d jobs): %d accepted, %d failed" % (n, wall, jobs, n - len(fails), len(fails)))
    print("\nby outcome:")
    for o, c in Counter(r["outcome"] for r in results).most_common():
        print("  %5d  %s%s" % (c, o, "" if any(r["ok"] for r in results if r["outcome"] == o) else "   FAIL"))
    print("\nshmheap-dump --check on the corrupted copies:")
    for o, c in Counter(r["dump"] for r in results).most_common():
        print("  %5d  %s%s" % (c, o, "" if o in ("consistent", "problems", "error") else "   FAIL"))
    print("\nby corruption kind (accepted/failed; failed outcomes):")
    kinds = defaultdict(list)
    for r in results:
        kinds[r["kind"]].append(r)
    for k in sorted(kinds):
        rs = kinds[k]
        bad = [r for r in rs if not (r["ok"] and r["dump_ok"])]
        det = Counter(r["outcome"] for r in bad)
        print("  %-9s %4d/%-4d %s" % (k, len(rs) - len(bad), len(bad), ", ".join("%s %d" % x for x in det.most_common())))
    if fails:
        print("\nfailures by kind and field:")
        grp = defaultdict(list)
        for r in fails:
            grp[(r["kind"], r["field"], r["outcome"] if r["dump_ok"] else "dump " + r["dump"])].append(r)
        for (k, f, o), rs in sorted(grp.items(), key=lambda x: (-len(x[1]), x[0])):
            print("  %3d  %-8s %-34s %s   e.g. --replay %d:%d" % (len(rs), k, f, o, rs[0]["seed"], rs[0]["iter"]))
    return fails


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=300)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--sources", default=None)
    ap.add_argument("--replay", default=None, metavar="SEED:ITER")
    ap.add_argument("--gdb", action="store_true", help="with --replay: the backtrace of the start under gdb")
    ap.add_argument("--list-failures", action="store_true", help="one line per failed case")
    ap.add_argument("--json", default=None, help="write every result to this file")
    a = ap.parse_args()
    for path in (LIB, DUMP, CRASH_WORKER, WORKER):
        if not os.path.exists(path):
            print("heap_fuzz: %s does not exist (make check builds it)" % path, file=sys.stderr)
            return 99
    if a.replay:
        try:
            seed, it = (int(x, 0) for x in a.replay.split(":"))
        except ValueError:
            print("heap_fuzz: --replay SEED:ITER", file=sys.stderr)
            return 2
        if not a.sources or not os.path.exists(os.path.join(a.sources, "clean.img")):
            print("heap_fuzz: --replay needs --sources DIR holding the sources of the run (printed by it)", file=sys.stderr)
            return 2
    else:
        seed = a.seed if a.seed is not None else int.from_bytes(os.urandom(3), "little")
    # the starts that crash would dump core (a segment-sized one, into the
    # working directory) at every crash: slow, and litter
    resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))

    def interrupted(*_):
        raise KeyboardInterrupt
    signal.signal(signal.SIGINT, interrupted)  # also when started in the background (SIG_IGN inherited)
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)
    made_tmp = None
    sdir = a.sources
    if not sdir:
        sdir = made_tmp = tempfile.mkdtemp(prefix="heapfuzz-")
    os.makedirs(sdir, exist_ok=True)
    failed = False  # a case failed: the sources are kept for --replay
    try:
        L = Layout(json.loads(subprocess.run([WORKER, "layout"], check=True, capture_output=True,
                                             env=base_env()).stdout))
        sources = load_sources(L, seed, sdir)
        for S in sources.values():
            print("heap_fuzz: source " + S.describe())
        if a.replay:
            r = run_case(sources, seed, it, a.timeout)
            print("case %d:%d: source %s, %s %s: %s" % (seed, it, r["source"], r["kind"], r["field"], r["desc"]))
            print("  shmheap-dump --check: %s (%s)" % (r["dump"], r["dump_first"]))
            print("  start: %s%s" % (r["outcome"], "" if r["ok"] else "   FAIL"))
            print("  stderr:\n    " + "\n    ".join(r["stderr"].splitlines()[-12:]))
            key, sid = make_copy(sources[r["source"]], plan(sources, seed, it)[1])
            env = " ".join("%s=%s" % (k, v) for k, v in sorted(worker_env(key).items())
                           if k.startswith("SHMHEAP_") or k == "LD_PRELOAD")
            if a.gdb:
                # the threads' interleaving varies: up to 3 tries to see it stop
                for attempt in range(3):
                    if attempt:
                        key, sid = make_copy(sources[r["source"]], plan(sources, seed, it)[1])
                    print("\nunder gdb (a fresh copy: key 0x%x shmid %d):" % (key, sid))
                    try:
                        bt = gdb_backtrace(key, r["outcome"] == "hang")
                    finally:
                        shm_remove(sid)
                    print(bt)
                    if "received signal" in bt or r["outcome"] == "hang" or r["ok"]:
                        break
            else:
                with lock:  # kept on purpose: not removed at exit
                    our_shmids.discard(sid)
                print("\nkept a fresh copy: key 0x%x shmid %d (a start changes it; --replay again for a new one)" %
                      (key, sid))
                print("  env %s %s start" % (env, WORKER))
                print("  gdb -batch -ex run -ex bt --args env %s %s start" % (env, WORKER))
                print("  remove it: ipcrm -m %d" % sid)
            return 0
        # the sources as they are must be accepted: otherwise the harness, not
        # the library, is wrong (a key patch the library refuses, a private heap)
        for name, S in sorted(sources.items()):
            key, sid = make_copy(S, [])
            try:
                rc, out, err = run([WORKER, "start"], worker_env(key), max(a.timeout, 30))
            finally:
                shm_remove(sid)
            if rc != 0 or b"re-attached" not in err:
                raise HarnessError("the uncorrupted copy of the %s source was not accepted (exit %s):\n%s" %
                                   (name, rc, err.decode(errors="replace")[-2000:]))
        print("heap_fuzz: seed %d, %d starts (uncorrupted copies of both sources start cleanly)" % (seed, a.count))
        sys.stdout.flush()
        t0 = time.monotonic()
        results = []
        with ThreadPoolExecutor(max_workers=max(1, a.jobs)) as ex:
            futs = [ex.submit(run_case, sources, seed, i, a.timeout) for i in range(a.count)]
            try:
                for f in futs:
                    r = f.result()
                    results.append(r)
                    if not (r["ok"] and r["dump_ok"]) and a.list_failures:
                        print("FAIL %d:%d %s %s [%s]: %s -> dump %s, start %s %s" %
                              (r["seed"], r["iter"], r["source"], r["kind"], r["field"], r["desc"], r["dump"],
                               r["outcome"], r["message"]))
                        sys.stdout.flush()
            except BaseException:
                cleanup_all()
                for f in futs:
                    f.cancel()
                raise
        wall = time.monotonic() - t0
        if a.json:
            with open(a.json, "w") as f:
                json.dump(results, f, indent=1)
        fails = summary(results, wall, a.jobs)
        failed = bool(fails)
        if fails:
            print("\nreplay one case (add --gdb for its backtrace):\n  top_builddir=%s SHMHEAP_LIB=%s python3 %s "
                  "--sources %s --replay SEED:ITER" % (TOP, LIB, os.path.abspath(sys.argv[0]), sdir))
            print("FAIL: %d of %d starts on corrupted heaps ended otherwise than exit 0, refused (65) or "
                  "SIGABRT with a libshmheap: message" % (len(fails), len(results)))
            return 1
        return 0
    except HarnessError as e:
        print("heap_fuzz: harness error: %s" % e, file=sys.stderr)
        return 99
    except KeyboardInterrupt:
        print("heap_fuzz: interrupted; segments removed", file=sys.stderr)
        return 2
    finally:
        cleanup_all()
        if made_tmp and not failed:
            shutil.rmtree(made_tmp, ignore_errors=True)
        elif made_tmp:
            print("heap_fuzz: sources kept in %s (for --replay)" % made_tmp)


if __name__ == "__main__":
    sys.exit(main())
