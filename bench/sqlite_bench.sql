-- make bench's sqlite3 row: Debian's sqlite3 on an in-memory database, so
-- that its pages and its page cache are the allocator's blocks.  400,000
-- rows inserted in one transaction, two indexes built, a third of the rows
-- updated (longer names: blocks of another size), a seventh deleted, then
-- two joins.  Deterministic: every run does the same work.
PRAGMA cache_size = -65536;
CREATE TABLE t(id INTEGER PRIMARY KEY, k INTEGER, name TEXT, v REAL);
CREATE TABLE u(k INTEGER PRIMARY KEY, label TEXT);
BEGIN;
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 400000)
INSERT INTO t(k, name, v) SELECT (x * 7919) % 10000, printf('name-%08d-%d', (x * 104729) % 400000, x), x * 0.5 FROM c;
WITH RECURSIVE c(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM c WHERE x < 9999)
INSERT INTO u SELECT x, printf('label-%d', x) FROM c;
COMMIT;
CREATE INDEX t_k ON t(k);
CREATE INDEX t_name ON t(name);
UPDATE t SET v = v * 2, name = name || '-updated-' || id WHERE k % 3 = 0;
DELETE FROM t WHERE k % 7 = 0;
SELECT count(*), sum(t.v) FROM t JOIN u ON t.k = u.k WHERE u.label LIKE 'label-1%';
SELECT u.label, count(*) FROM t JOIN u USING (k) GROUP BY u.label ORDER BY count(*) DESC, u.label LIMIT 3;
