# Python workload for make bench (run by /usr/bin/python3 under each
# allocator).  Fixed work, deterministic.  CPython serves objects of up to
# 512 bytes from its own pools (pymalloc) and asks malloc for the pools'
# 256 KiB arenas and for everything larger: list and dict storage that
# grows, long strings, big sets; that is what this measures, as a Python
# program uses the allocator by default.
import random


class Node:
    def __init__(self, key, payload):
        self.key = key
        self.payload = payload
        self.children = []


class Point:
    __slots__ = ("x", "y")

    def __init__(self, x, y):
        self.x = x
        self.y = y


def records(rng, n):
    # dicts of mixed values, as parsed JSON or database rows are
    out = []
    for i in range(n):
        out.append({
            "id": i,
            "name": "user%d" % rng.randrange(1 << 20),
            "tags": [rng.choice("abcdefgh") * rng.randrange(1, 40) for _ in range(rng.randrange(1, 6))],
            "score": rng.random(),
        })
    return out


def main():
    rng = random.Random(12345)
    total = 0
    for rnd in range(2):
        rows = records(rng, 30000)
        index = {}
        for r in rows:
            index.setdefault(r["name"][:6], []).append(r)
        total += len(index)

        # a tree of objects, built and dropped
        root = Node(0, "root")
        nodes = [root]
        for i in range(1, 40000):
            parent = nodes[rng.randrange(len(nodes))]
            child = Node(i, "x" * rng.randrange(0, 300))
            parent.children.append(child)
            nodes.append(child)
        total += sum(len(n.children) for n in nodes)
        del root, nodes

        # strings: building, splitting, joining, formatting
        text = " ".join("%s:%d" % (r["name"], r["id"]) for r in rows)
        words = text.split()
        total += len(",".join(sorted(words, key=lambda w: w[::-1])))
        blob = ""
        for w in words[:20000]:
            blob += w  # grows by realloc of one string
        total += len(blob)

        # containers that grow past pymalloc's limit
        big = {}
        for i in range(150000):
            big[(i * 2654435761) & 0xffffff] = Point(i, -i)
        s = set(k >> 3 for k in big)
        total += len(big) + len(s)
        lists = [list(range(rng.randrange(100, 3000))) for _ in range(300)]
        total += sum(len(x) for x in lists)
        del rows, index, text, words, blob, big, s, lists
    print(total)


main()
