"""A dict/json/str-heavy workload for real_python.sh: deterministic output."""
import collections
import hashlib
import json
import random
import re
import threading

rnd = random.Random(20261123)

# dicts of strings, grown and shrunk
d = {}
for i in range(200000):
    d["key-%d-%s" % (i, "x" * (i % 37))] = [i, str(i) * (i % 5), {"n": i}]
for i in range(0, 200000, 3):
    del d["key-%d-%s" % (i, "x" * (i % 37))]
print("dict", len(d), sum(v[0] for v in d.values()) % 1000003)

# json round trips
docs = []
for i in range(3000):
    doc = {
        "id": i,
        "name": "".join(rnd.choice("abcdefghij") for _ in range(rnd.randint(1, 40))),
        "tags": [rnd.randint(0, 1000) for _ in range(rnd.randint(0, 30))],
        "nested": {"a": [{"b": str(j)} for j in range(i % 7)], "f": i / 7.0},
    }
    docs.append(doc)
text = json.dumps(docs, sort_keys=True)
back = json.loads(text)
assert back == docs
print("json", len(text), hashlib.sha256(text.encode()).hexdigest()[:16])

# strings: join, split, replace, regex, unicode
s = " ".join("word%d" % (i % 1000) for i in range(300000))
words = s.split()
c = collections.Counter(words)
print("str", len(s), len(words), c.most_common(1)[0][1])
u = "".join(chr(0x3b1 + (i % 25)) + chr(0x1f600 + (i % 50)) for i in range(50000))
print("unicode", len(u), len(u.encode("utf-8")), u.upper().count("\u0391"))
r = re.findall(r"word(\d+)7\b", s)
print("re", len(r), sorted(set(r))[:3])
print("replace", len(s.replace("word", "mot").replace("9", "nine")))

# bytes and sets
b = bytearray()
for i in range(100000):
    b += i.to_bytes(4, "little")
print("bytes", len(b), hashlib.md5(bytes(b)).hexdigest()[:12])
st = set(range(0, 500000, 7)) ^ set(range(0, 500000, 11))
print("set", len(st))

# threads allocating at once
out = [0] * 4


def work(k):
    loc = {}
    for i in range(50000):
        loc[str(i * k)] = "v" * (i % 30)
    out[k] = sum(len(v) for v in loc.values())


ts = [threading.Thread(target=work, args=(k,)) for k in range(4)]
for t in ts:
    t.start()
for t in ts:
    t.join()
print("threads", out)
