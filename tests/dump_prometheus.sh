#!/bin/sh
# shmheap-dump --prometheus (issue 18, item 2): Prometheus' text exposition
# format for a heap left by a crash and re-attached: every sample's family
# has its HELP and TYPE first, every sample names the heap, key and shmid,
# the figures are the ones --json gives, and promtool (Debian's prometheus
# package; required under CI=true) accepts the output, for one heap, for
# every heap, and with a name that is no heap (exit 2, the rest printed).
. "$(dirname "$0")/real_common.sh"
TOOL=$top_builddir/tools/shmheap-dump
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
H=$(heap_name prom)

# a heap, a crash in it, and a re-attach that repairs it
LD_PRELOAD=$SHMHEAP_LIB SHMHEAP_KEY=$H SHMHEAP_SIZE=64M SHMHEAP_VERBOSE=1 "$PY" -c '
import sys, time
x = {i: str(i) * 5 for i in range(20000)}
print("ready", flush=True)
time.sleep(60)' >"$TMP/py.out" 2>"$TMP/py.err" </dev/null &
py=$!
for _ in $(seq 300); do grep -q ready "$TMP/py.out" && break; sleep 0.1; done
sed -n "s/^libshmheap: attached key=\(0x[0-9a-fA-F]*\) name=$H .*/\1/p" "$TMP/py.err" | head -n 1 >>"$TMP/keys"
kill -9 "$py"
wait "$py" 2>/dev/null || :
run_pre again env SHMHEAP_KEY="$H" "$PY" -c pass
[ "$status" -eq 0 ] || { show "$TMP/again.pre.err"; fail "the re-attach after the crash exits $status"; }

"$TOOL" --json "$H" >"$TMP/h.json" || fail "--json $H failed"
"$TOOL" --prometheus "$H" >"$TMP/one.prom" || fail "--prometheus $H exits $?"
"$TOOL" --prometheus >"$TMP/all.prom" || fail "--prometheus (every heap) exits $?"
set +e
"$TOOL" --prometheus "$H" "$(heap_name nosuch)" >"$TMP/bad.prom" 2>"$TMP/bad.err"
st=$?
set -e
[ "$st" -eq 2 ] || fail "--prometheus with a name that is no heap exits $st, not 2"
grep -q "no such heap" "$TMP/bad.err" || { show "$TMP/bad.err"; fail "--prometheus does not say which name is no heap"; }

"$PY" - "$TMP/one.prom" "$TMP/all.prom" "$TMP/bad.prom" "$TMP/h.json" <<'PYEOF' || fail "the Prometheus output is not what it should be"
import json, re, sys
one, every, bad, js = sys.argv[1:5]
h = json.load(open(js))
sample = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*)\} (\S+)$')
def parse(path):
    helped, typed, got = set(), {}, {}
    for n, line in enumerate(open(path), 1):
        line = line.rstrip("\n")
        if line.startswith("# HELP "):
            helped.add(line.split()[2])
        elif line.startswith("# TYPE "):
            f = line.split()
            if f[3] not in ("gauge", "counter") or len(f) != 4:
                sys.exit("%s:%d: bad TYPE line" % (path, n))
            typed[f[2]] = f[3]
        else:
            m = sample.match(line)
            if not m:
                sys.exit("%s:%d: not a sample: %r" % (path, n, line))
            name = m.group(1)
            if name not in helped or name not in typed:
                sys.exit("%s:%d: %s comes before its HELP and TYPE" % (path, n, name))
            if typed[name] == "counter" and not name.endswith("_total"):
                sys.exit("%s:%d: counter %s does not end in _total" % (path, n, name))
            labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2)))
            for l in ("name", "key", "shmid"):
                if l not in labels:
                    sys.exit("%s:%d: no %s label" % (path, n, l))
            got.setdefault(name, []).append((labels, float(m.group(3))))
    return got
def of_heap(got, name):
    return [(l, v) for l, v in got.get(name, []) if l["shmid"] == str(h["shmid"])]
def value(got, name):
    s = of_heap(got, name)
    if len(s) != 1:
        sys.exit("%s: %d samples for the heap, not 1" % (name, len(s)))
    l, v = s[0]
    if l["name"] != h["name"] or l["key"] != "0x%08x" % h["key"]:
        sys.exit("%s: labels %s are not the heap's (%s, 0x%08x)" % (name, l, h["name"], h["key"]))
    return v
got = parse(one)
checks = [("shmheap_size_bytes", h["size"]), ("shmheap_in_use_bytes", h["in_use"]),
          ("shmheap_carved_bytes", h["heap_bytes"]), ("shmheap_free_bytes", h["free_bytes"]),
          ("shmheap_dirty_bytes", h["free_dirty_bytes"]), ("shmheap_purged_bytes_total", h["purged_bytes"]),
          ("shmheap_large_blocks", h["large_blocks"]), ("shmheap_small_mallocs_total", h["nmalloc"]),
          ("shmheap_small_frees_total", h["nfree"]), ("shmheap_reattaches_total", h["attaches"]),
          ("shmheap_crashes_total", h["crashes"]), ("shmheap_repairs_total", h["repairs"]),
          ("shmheap_users", h["users_alive"]), ("shmheap_users_gone", h["users_gone"]),
          ("shmheap_thread_heaps", h["thread_heaps"])]
for name, want in checks:
    if value(got, name) != want:
        sys.exit("%s is %s, --json says %s" % (name, value(got, name), want))
if h["crashes"] != 1:
    sys.exit("--json counts %d crashes; one was made (the test's own setup)" % h["crashes"])
rec = value(got, "shmheap_last_recovery_seconds")
if not 0 < rec < 60:
    sys.exit("shmheap_last_recovery_seconds is %s" % rec)
blocks = {l["size"]: v for l, v in of_heap(got, "shmheap_class_blocks")}
want = {str(c["size"]): c["blocks_used"] for c in h["classes"]}
if blocks != want:
    sys.exit("shmheap_class_blocks %s, --json classes %s" % (blocks, want))
every = parse(every)
value(every, "shmheap_in_use_bytes")
bad = parse(bad)
value(bad, "shmheap_in_use_bytes")
print("%d families, the heap's figures as --json gives them; every heap and a missing name parse too" % len(got))
PYEOF

if command -v promtool >/dev/null 2>&1; then
  for f in one all bad; do
    promtool check metrics <"$TMP/$f.prom" >"$TMP/$f.promtool" 2>&1 || { show "$TMP/$f.promtool"; fail "promtool check metrics rejects the $f output"; }
  done
  echo "promtool check metrics: accepted (one heap, every heap, a missing name)"
elif [ "${CI:-}" = true ]; then
  fail "promtool is not installed (Debian's prometheus package; .ci/run installs it)"
else
  echo "promtool is not installed (Debian's prometheus package): not checked by it"
fi
"$TOOL" --remove "$H" >/dev/null
