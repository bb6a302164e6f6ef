-- Result columns of encrypted types reach the client as jsonb, bytea and
-- text (atrest.client_types = plain, the default); stored columns, views,
-- functions and SPI keep the encrypted types.  \gdesc shows what a client's
-- Describe sees.

CREATE TABLE w (
    id    int PRIMARY KEY,
    doc   atrest.encrypted_jsonb,
    blob  atrest.encrypted_bytea,
    note  atrest.encrypted_text,
    pdoc  jsonb
);
INSERT INTO w VALUES (1, '{"a": 1}', '\x0102', 'one', '{"a": 1}'),
                     (2, '{"a": 2}', '\x03', 'two', '{"a": 2}');

SHOW atrest.client_types;

-- top-level SELECT, expressions, arrays, domains
SELECT id, doc, blob, note FROM w ORDER BY id \gdesc
SELECT doc, blob, note FROM w WHERE id = 1;
SELECT doc AS renamed, coalesce(doc, NULL) AS expr FROM w WHERE id = 1 \gdesc
SELECT array_agg(doc ORDER BY id) AS docs FROM w \gdesc
SELECT array_agg(doc ORDER BY id) AS docs FROM w;
CREATE DOMAIN enc_doc AS atrest.encrypted_jsonb;
SELECT doc::enc_doc AS d FROM w WHERE id = 1 \gdesc
SELECT w FROM w WHERE id = 1 \gdesc

-- RETURNING
INSERT INTO w VALUES (3, '{"a": 3}', '\x04', 'three', NULL) RETURNING doc, blob, note \gdesc
UPDATE w SET note = 'three!' WHERE id = 3 RETURNING doc, note \gdesc
DELETE FROM w WHERE id = 3 RETURNING doc, blob, note;

-- a cursor: FETCH returns plain types
BEGIN;
DECLARE c CURSOR FOR SELECT doc, blob, note FROM w ORDER BY id;
FETCH 1 FROM c \gdesc
FETCH 1 FROM c;
COMMIT;

-- PREPARE / EXECUTE
PREPARE q AS SELECT doc, note FROM w WHERE id = $1;
EXECUTE q(1) \gdesc
EXECUTE q(1);
-- the plan is rebuilt after the table changes: same result types
ALTER TABLE w ADD COLUMN extra int;
EXECUTE q(1);
ALTER TABLE w DROP COLUMN extra;
EXECUTE q(2);
DEALLOCATE q;

-- grouped, sorted and set-operation queries wrap the query, convert outside
SELECT doc, blob, note FROM w WHERE id = 1 UNION ALL SELECT doc, blob, note FROM w WHERE id = 2 \gdesc
SELECT doc, blob, note FROM w WHERE id = 1 UNION ALL SELECT doc, blob, note FROM w WHERE id = 2;
SELECT doc FROM w UNION ALL SELECT pdoc FROM w \gdesc
SELECT id, doc FROM w ORDER BY id DESC LIMIT 1;
-- sorted on the encrypted column itself: the wrapped query keeps its order
SELECT doc, note FROM w ORDER BY doc DESC \gdesc
SELECT doc, note FROM w ORDER BY doc DESC;
SELECT doc, note FROM w ORDER BY note;
BEGIN;
DECLARE c2 SCROLL CURSOR FOR SELECT DISTINCT doc FROM w ORDER BY doc;
FETCH LAST FROM c2 \gdesc
FETCH LAST FROM c2;
FETCH PRIOR FROM c2;
COMMIT;
WITH x AS (SELECT doc FROM w) SELECT doc FROM x \gdesc
WITH ins AS (INSERT INTO w VALUES (4, '{"a": 4}', NULL, NULL, NULL) RETURNING doc) SELECT doc FROM ins \gdesc
DELETE FROM w WHERE id = 4;

-- more shapes
BEGIN;
SELECT doc, note FROM w ORDER BY doc FOR UPDATE;
DECLARE c3 CURSOR FOR SELECT id, doc FROM w WHERE id = 1 FOR UPDATE;
FETCH 1 FROM c3;
UPDATE w SET note = 'one!' WHERE CURRENT OF c3 RETURNING id, note;
ROLLBACK;
VALUES ('{"v": 1}'::atrest.encrypted_jsonb) \gdesc
TABLE w \gdesc
SELECT doc, count(*) FROM w GROUP BY GROUPING SETS ((doc), ()) ORDER BY doc NULLS LAST;
SELECT doc FROM w UNION SELECT doc FROM w ORDER BY 1 DESC LIMIT 1;
WITH RECURSIVE r(n, d) AS (SELECT 1, doc FROM w WHERE id = 1 UNION ALL SELECT n + 1, d FROM r WHERE n < 3)
SELECT n, d FROM r \gdesc
SELECT * FROM (SELECT DISTINCT doc FROM w) s ORDER BY 1 \gdesc
SELECT DISTINCT ON (note) note, doc FROM w ORDER BY note, id;

-- storage keeps the encrypted types: CREATE TABLE AS, SELECT INTO, views,
-- materialized views, and what is built on a view
CREATE TABLE w_ctas AS SELECT doc, blob, note FROM w;
SELECT doc, blob, note INTO w_into FROM w;
CREATE VIEW w_view AS SELECT doc, blob, note FROM w;
CREATE MATERIALIZED VIEW w_mv AS SELECT doc, blob, note FROM w;
CREATE TABLE w_ctas_view AS SELECT * FROM w_view;
CREATE TABLE w_ctas_union AS SELECT doc FROM w UNION ALL SELECT doc FROM w;
SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod)
  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
 WHERE c.relname IN ('w_ctas', 'w_into', 'w_view', 'w_mv', 'w_ctas_view', 'w_ctas_union')
   AND a.attnum > 0
 ORDER BY 1, a.attnum;
-- ... and reading them sends plain types
SELECT * FROM w_view \gdesc
SELECT * FROM w_mv \gdesc

-- functions see the declared types (SQL, inlined or not, plpgsql, SPI)
CREATE FUNCTION f_sql() RETURNS TABLE (d atrest.encrypted_jsonb) LANGUAGE sql
    AS $$ SELECT doc FROM w WHERE id = 1 $$;
SELECT pg_typeof(d) FROM f_sql();
SELECT * FROM f_sql() \gdesc
CREATE FUNCTION f_plpgsql() RETURNS text LANGUAGE plpgsql AS $$
DECLARE r record;
BEGIN
    SELECT doc, note INTO r FROM w WHERE id = 1;
    RETURN pg_typeof(r.doc)::text || ', ' || pg_typeof(r.note)::text;
END $$;
SELECT f_plpgsql();
CREATE FUNCTION f_cursor() RETURNS text LANGUAGE plpgsql AS $$
DECLARE c refcursor; r record;
BEGIN
    OPEN c FOR SELECT doc FROM w WHERE id = 2;
    FETCH c INTO r;
    RETURN pg_typeof(r.doc)::text;
END $$;
SELECT f_cursor();

-- a deferred trigger runs its queries at commit, outside any statement's
-- executor: they too see the declared types
CREATE TABLE w_log (t text);
CREATE FUNCTION f_deferred() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE r record;
BEGIN
    SELECT doc, note INTO r FROM w WHERE id = NEW.id;
    INSERT INTO w_log VALUES (pg_typeof(r.doc)::text || ', ' || pg_typeof(r.note)::text);
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER w_deferred AFTER INSERT ON w DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION f_deferred();
INSERT INTO w VALUES (5, '{"a": 5}', NULL, 'five', NULL);
SELECT t FROM w_log;
DROP TRIGGER w_deferred ON w;
DELETE FROM w WHERE id = 5;
DROP TABLE w_log;
DROP FUNCTION f_deferred();

-- COPY (query) TO sends the plain text, as for the plain type
COPY (SELECT doc, blob, note, pdoc FROM w ORDER BY id) TO STDOUT;

-- the setting
SET atrest.client_types = encrypted;
SELECT doc, blob, note FROM w \gdesc
RESET atrest.client_types;
SET atrest.client_types = secret;
CREATE ROLE wire_role;
ALTER ROLE wire_role SET atrest.client_types = encrypted;
SELECT rolconfig FROM pg_roles WHERE rolname = 'wire_role';
DROP ROLE wire_role;

DROP FUNCTION f_sql(), f_plpgsql(), f_cursor();
DROP MATERIALIZED VIEW w_mv;
DROP TABLE w_ctas, w_into, w_ctas_view, w_ctas_union;
DROP VIEW w_view;
DROP TABLE w;
DROP DOMAIN enc_doc;
