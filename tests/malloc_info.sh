#!/bin/sh
# malloc_info(0, fp) writes glibc's XML shape and malloc_stats() glibc's
# lines, with the heap's real figures (issue 18, item 4).  tests/info_prog
# makes 1000 blocks of 100 bytes, frees every other one, and makes three of
# 100,000.  Under glibc the output must parse as the shape checked here (a
# check of the test); under the library the figures must be the program's:
# the class that holds 100 bytes has at least 500 free blocks, malloc_stats
# shows 500 in use (more if a sanitizer's runtime made some), the large
# blocks are 3 or more of at least 300,000 bytes, and the totals add up.
. "$(dirname "$0")/real_common.sh"
PROG=$top_builddir/tests/info_prog
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3

for who in glibc libshmheap; do
  if [ "$who" = glibc ]; then
    run_ref info "$PROG"
    out=$TMP/info.ref.out err=$TMP/info.ref.err
  else
    run_pre info env SHMHEAP_SIZE=64M "$PROG"
    out=$TMP/info.pre.out err=$TMP/info.pre.err
  fi
  [ "$status" -eq 0 ] || { show "$err"; fail "$who: info_prog exits $status"; }
  "$PY" - "$who" "$out" "$err" <<'PYEOF' || { show "$out"; show "$err"; fail "$who: malloc_info or malloc_stats is not what it should be"; }
import re, sys
import xml.etree.ElementTree as ET
who, out, err = sys.argv[1], sys.argv[2], sys.argv[3]
root = ET.parse(out).getroot()
def need(cond, what):
    if not cond:
        sys.exit("%s: %s" % (who, what))
need(root.tag == "malloc" and root.get("version") == "1", "the root is not <malloc version=\"1\">")
heaps = root.findall("heap")
need(heaps and heaps[0].get("nr") == "0", "no <heap nr=\"0\">")
def num(e, a):
    v = e.get(a)
    need(v is not None and v.isdigit(), "<%s> has no number %s" % (e.tag, a))
    return int(v)
for h in heaps:
    sizes = h.find("sizes")
    need(sizes is not None, "a heap has no <sizes>")
    for s in sizes:
        if s.tag == "size":
            need(num(s, "from") <= num(s, "to"), "a <size> has from > to")
            num(s, "total"); num(s, "count")
    types = {(t.tag, t.get("type")) for t in h}
    for want in [("total", "fast"), ("total", "rest"), ("system", "current"), ("system", "max"), ("aspace", "total")]:
        need(want in types, "a heap has no <%s type=\"%s\">" % want)
tot = {t.get("type"): t for t in root.findall("total")}
for t in ("fast", "rest", "mmap"):
    need(t in tot, "no top-level <total type=\"%s\">" % t)
stats = open(err).read()
need(re.search(r"^system bytes += +\d+$", stats, re.M) and re.search(r"^in use bytes += +\d+$", stats, re.M),
     "malloc_stats printed no system and in use bytes lines")
if who == "glibc":
    sys.exit(0)
# the library's own figures
h = heaps[0]
sizes = [s for s in h.find("sizes") if s.tag == "size"]
cls = [s for s in sizes if num(s, "from") <= 100 <= num(s, "to")]
need(len(cls) == 1, "no single <size> entry holds 100 bytes: %s" % [s.attrib for s in sizes])
c = cls[0]
need(num(c, "count") >= 500, "the 100-byte class shows %d free blocks; 500 were freed" % num(c, "count"))
need(num(c, "total") == num(c, "count") * num(c, "to"), "the 100-byte class's total is not count x size")
rest = [t for t in h if t.tag == "total" and t.get("type") == "rest"][0]
need(num(rest, "size") == sum(num(s, "total") for s in sizes), "<total type=\"rest\"> is not the sum of the <size> totals")
need(num(rest, "count") == sum(num(s, "count") for s in sizes), "<total type=\"rest\"> count is not the sum of the counts")
mm = tot["mmap"]
# at least: a sanitizer's runtime makes blocks of its own in the process
need(num(mm, "count") >= 3 and num(mm, "size") >= 300000, "the large blocks are %s, not 3 of 300000 bytes" % mm.attrib)
cur = [t for t in h if t.tag == "system" and t.get("type") == "current"][0]
use = int(re.search(r"^in use bytes += +(\d+)$", stats, re.M).group(1))
need(num(cur, "size") >= use >= 300000 + 500 * 100, "system %d and in use %d bytes do not hold the program's blocks" % (num(cur, "size"), use))
row = re.search(r"^ *%d +\d+ +(\d+) +(\d+)$" % num(c, "to"), stats, re.M)
need(row is not None, "malloc_stats has no line for the %d-byte class" % num(c, "to"))
need(int(row.group(1)) >= 500, "malloc_stats shows %s blocks of the 100-byte class in use, not 500" % row.group(1))
need(int(row.group(2)) == num(c, "count"), "malloc_stats and malloc_info disagree on the free blocks of the class")
lg = re.search(r"^large blocks += +(\d+) \((\d+) bytes\)$", stats, re.M)
need(lg and int(lg.group(1)) == num(mm, "count") and int(lg.group(2)) == num(mm, "size"), "malloc_stats does not show the large blocks as malloc_info does")
PYEOF
  echo "$who: malloc_info parses as glibc's shape, malloc_stats has glibc's lines$([ "$who" = libshmheap ] && echo ', with the heap'"'"'s figures')"
done
