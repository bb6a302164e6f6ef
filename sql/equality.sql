-- DISTINCT, GROUP BY, UNION, INTERSECT, EXCEPT, IN (subquery) and
-- count(DISTINCT ...) compare the plaintext of encrypted values (each copy
-- of a value is sealed under its own nonce, so the ciphertexts all differ),
-- by hashing and by sorting, and agree with the plain types.  Indexes over
-- encrypted values are refused, and ANALYZE keeps no plaintext statistics.

CREATE TABLE eq1 (id int, doc atrest.encrypted_jsonb, blob atrest.encrypted_bytea,
                  note atrest.encrypted_text, pdoc jsonb, pblob bytea, pnote text);
INSERT INTO eq1 (id, pdoc, pblob, pnote) VALUES
    (1, '{"a": 1}', '\x01', 'abc'), (2, '{"a": 1.0}', '\x01', 'abc'), (3, '{"a": 1.00}', '\x02', 'ABC'),
    (4, '[1, 2]', '\x0102', 'abd'), (5, '[1, 2]', '\x0102', 'abd'), (6, '"x"', '\x', ''),
    (7, NULL, NULL, NULL), (8, NULL, NULL, NULL), (9, '{"b": {"c": [true]}}', '\xff', 'zz');
UPDATE eq1 SET doc = pdoc, blob = pblob, note = pnote;
CREATE TABLE eq2 (doc atrest.encrypted_jsonb, blob atrest.encrypted_bytea, note atrest.encrypted_text,
                  pdoc jsonb, pblob bytea, pnote text);
INSERT INTO eq2 (pdoc, pblob, pnote) VALUES ('{"a": 1}', '\x02', 'abd'), ('"y"', '\x03', 'q'), ('[1, 2]', '\x01', 'abd');
UPDATE eq2 SET doc = pdoc, blob = pblob, note = pnote;

-- the same value, sealed twice, is two different ciphertexts
SELECT count(DISTINCT atrest.envelope(doc)::text || doc::text) FROM eq1 WHERE id IN (4, 5);

-- same(a, b): whether queries a (encrypted) and b (plain) return the same
-- rows (as text, in any order)
CREATE FUNCTION same(a text, b text) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE ra text[]; rb text[];
BEGIN
    EXECUTE format('SELECT array_agg(x::text ORDER BY x::text) FROM (%s) x', a) INTO ra;
    EXECUTE format('SELECT array_agg(x::text ORDER BY x::text) FROM (%s) x', b) INTO rb;
    IF ra IS DISTINCT FROM rb THEN
        RAISE NOTICE '% gives %, plain gives %', a, ra, rb;
    END IF;
    RETURN ra IS NOT DISTINCT FROM rb AND ra IS NOT NULL;
END $$;

CREATE TABLE checks (q text);
INSERT INTO checks VALUES
    ('SELECT DISTINCT doc FROM eq1'), ('SELECT DISTINCT blob FROM eq1'), ('SELECT DISTINCT note FROM eq1'),
    ('SELECT DISTINCT doc, blob, note FROM eq1'),
    ('SELECT DISTINCT ON (doc) doc FROM eq1 ORDER BY doc'),
    ('SELECT doc, count(*), min(id) FROM eq1 GROUP BY doc'),
    ('SELECT note, blob, count(*) FROM eq1 GROUP BY note, blob'),
    ('SELECT doc, count(*) FROM eq1 GROUP BY doc HAVING count(*) > 1'),
    ('SELECT count(DISTINCT doc), count(DISTINCT blob), count(DISTINCT note) FROM eq1'),
    ('SELECT doc FROM eq1 UNION SELECT doc FROM eq2'),
    ('SELECT doc, note FROM eq1 UNION SELECT doc, note FROM eq2'),
    ('SELECT doc FROM eq1 INTERSECT SELECT doc FROM eq2'),
    ('SELECT blob FROM eq1 INTERSECT ALL SELECT blob FROM eq2'),
    ('SELECT doc FROM eq1 EXCEPT SELECT doc FROM eq2'),
    ('SELECT note FROM eq1 EXCEPT ALL SELECT note FROM eq2'),
    ('SELECT id FROM eq1 WHERE doc IN (SELECT doc FROM eq2)'),
    ('SELECT id FROM eq1 WHERE note NOT IN (SELECT note FROM eq2)'),
    ('SELECT id FROM eq1 WHERE blob IN (SELECT blob FROM eq2)'),
    ('SELECT id FROM eq1 WHERE (doc, note) IN (SELECT doc, note FROM eq2)'),
    ('SELECT a.id, b.id FROM eq1 a JOIN eq1 b ON a.doc = b.doc'),
    ('SELECT id FROM eq1 WHERE doc = ANY (SELECT doc FROM eq2)'),
    ('SELECT doc FROM eq1 ORDER BY doc'),
    ('SELECT array_agg(DISTINCT doc) FROM eq1'),
    ('SELECT jsonb_agg(DISTINCT doc) FROM eq1');

SELECT q, same(q, replace(replace(replace(q, 'doc', 'pdoc'), 'blob', 'pblob'), 'note', 'pnote')) AS hashed FROM checks;
-- the same by sorting
SET enable_hashagg = off;
SET enable_hashjoin = off;
SELECT q, same(q, replace(replace(replace(q, 'doc', 'pdoc'), 'blob', 'pblob'), 'note', 'pnote')) AS sorted FROM checks;
RESET enable_hashagg;
RESET enable_hashjoin;
-- and through atrest's own operators (atrest on the search_path)
SET search_path = atrest, public;
SELECT q, same(q, replace(replace(replace(q, 'doc', 'pdoc'), 'blob', 'pblob'), 'note', 'pnote')) AS atrest_ops
  FROM checks WHERE q ~ ' IN |JOIN|ANY';
SELECT count(*) FROM eq1 WHERE doc = '{"a": 1}';
RESET search_path;

-- the plans hash and sort encrypted values
EXPLAIN (COSTS OFF) SELECT DISTINCT doc FROM eq1;
EXPLAIN (COSTS OFF) SELECT doc FROM eq1 UNION SELECT doc FROM eq2;
-- a client gets plain types from a grouped query
SELECT doc, count(*) FROM eq1 GROUP BY doc \gdesc
SELECT doc FROM eq1 UNION SELECT doc FROM eq2 \gdesc
SELECT DISTINCT note FROM eq1 WHERE note <> 'ABC' ORDER BY note DESC;

-- no index over an encrypted column, whatever the way
CREATE INDEX ON eq1 (doc);
CREATE INDEX ON eq1 USING hash (note);
CREATE INDEX ON eq1 (id) INCLUDE (blob);
-- expressions: PostgreSQL refuses the STABLE cast itself; an IMMUTABLE
-- wrapper gets past that check but not past ours
CREATE INDEX ON eq1 ((doc ->> 'a'));
CREATE FUNCTION eq_a(atrest.encrypted_jsonb) RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT $1 ->> 'a' $$;
CREATE FUNCTION eq_id(eq1) RETURNS int LANGUAGE sql IMMUTABLE AS $$ SELECT $1.id $$;
CREATE INDEX ON eq1 (eq_a(doc));
CREATE INDEX ON eq1 (id) WHERE eq_a(doc) = '1';
CREATE INDEX ON eq1 (eq_id(eq1));
ALTER TABLE eq1 ADD UNIQUE (doc);
ALTER TABLE eq1 ADD PRIMARY KEY (blob);
CREATE TABLE eq3 (id int, doc atrest.encrypted_jsonb UNIQUE);
CREATE TABLE eq3 (id int, doc atrest.encrypted_jsonb, EXCLUDE USING hash (doc WITH OPERATOR(atrest.=)));
CREATE TYPE eq_pair AS (d atrest.encrypted_jsonb, n int);
CREATE TABLE eq4 (p eq_pair);
CREATE INDEX ON eq4 (p);
CREATE TYPE eq_range AS RANGE (subtype = atrest.encrypted_text);
CREATE TABLE eq6 (r eq_range);
CREATE INDEX ON eq6 USING gist (r);
CREATE TABLE eq5 (id int, v jsonb);
CREATE INDEX eq5_v ON eq5 (v);
ALTER TABLE eq5 ALTER COLUMN v TYPE atrest.encrypted_jsonb;
-- indexes on the plain columns still work
CREATE INDEX eq1_id ON eq1 (id);
CREATE INDEX eq1_pdoc ON eq1 USING gin (pdoc);
SELECT indexrelid::regclass FROM pg_index WHERE indrelid IN ('eq1'::regclass, 'eq4'::regclass, 'eq5'::regclass)
 ORDER BY 1::text;

-- nor extended statistics
CREATE STATISTICS eq_s1 ON doc, id FROM eq1;
CREATE STATISTICS eq_s2 (mcv) ON note, pnote FROM eq1;
CREATE STATISTICS eq_s3 ON (eq_a(doc)), id FROM eq1;
CREATE STATISTICS eq_s4 ON id, pnote FROM eq1;
SELECT stxname FROM pg_statistic_ext WHERE stxrelid = 'eq1'::regclass;

-- ANALYZE: null fraction and width, no values, no histogram, no distinct count
ANALYZE eq1;
SELECT attname, null_frac, avg_width > 0 AS has_width, n_distinct, most_common_vals IS NULL AS no_mcv,
       histogram_bounds IS NULL AS no_histogram
  FROM pg_stats WHERE tablename = 'eq1' AND attname IN ('doc', 'blob', 'note') ORDER BY attname;

DROP FUNCTION eq_id(eq1);
DROP TABLE eq1, eq2, eq4, eq5, eq6, checks;
DROP TYPE eq_range;
DROP TYPE eq_pair;
DROP FUNCTION eq_a(atrest.encrypted_jsonb);
DROP FUNCTION same(text, text);
