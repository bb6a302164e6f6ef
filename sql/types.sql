-- Every write path stores ciphertext under the column's key class, and
-- every read returns the same plaintext.

CREATE TABLE paths (
    id    int PRIMARY KEY,
    how   text,
    doc   atrest.encrypted_jsonb(result),
    blob  atrest.encrypted_bytea(model),
    note  atrest.encrypted_text
);
\d paths

-- literal (input function with typmod -1, then the length-coercion cast)
INSERT INTO paths VALUES (1, 'literal', '{"pages": [{"n": 1}], "kind": "invoice"}', '\x00ff10', 'plain words');

-- bind parameters typed as the encrypted types and as the plain types
PREPARE p_enc(int, atrest.encrypted_jsonb, atrest.encrypted_bytea, atrest.encrypted_text) AS
    INSERT INTO paths VALUES ($1, 'param encrypted', $2, $3, $4);
EXECUTE p_enc(2, '{"kind": "receipt"}', '\x0102', 'param text');
PREPARE p_plain(int, jsonb, bytea, text) AS
    INSERT INTO paths VALUES ($1, 'param plain', $2, $3, $4);
EXECUTE p_plain(3, '{"kind": "id card"}', '\x0304', 'plain param');

-- INSERT ... SELECT from plain columns (assignment cast with the typmod)
CREATE TABLE plain_src (doc jsonb, blob bytea, note text);
INSERT INTO plain_src VALUES ('{"kind": "from plain"}', '\x0506', 'from plain');
INSERT INTO paths SELECT 4, 'insert select plain', doc, blob, note FROM plain_src;

-- INSERT ... SELECT from encrypted columns of other classes
CREATE TABLE other_class (doc atrest.encrypted_jsonb(model), blob atrest.encrypted_bytea(result),
                          note atrest.encrypted_text(model));
INSERT INTO other_class VALUES ('{"kind": "from model class"}', '\x0708', 'from model class');
SELECT (atrest.envelope(doc)).key_class, (atrest.envelope(blob)).key_class,
       (atrest.envelope(note)).key_class FROM other_class;
INSERT INTO paths SELECT 5, 'insert select encrypted', doc, blob, note FROM other_class;

-- a column declared without a class gets no length coercion from
-- PostgreSQL, so a value copied from another class keeps its class (still
-- sealed); declaring the class explicitly, ("default"), closes that gap
CREATE TABLE explicit_default (note atrest.encrypted_text("default"));
INSERT INTO explicit_default SELECT note FROM other_class;
SELECT (atrest.envelope(note)).key_class FROM explicit_default;

-- COPY FROM, text format
COPY paths (id, how, doc, blob, note) FROM STDIN;
6	copy text	{"kind": "copied", "n": [1, 2]}	\\x0a0b	copied line
\.

-- UPDATE
INSERT INTO paths VALUES (7, 'update', '{}', '\x', '');
UPDATE paths SET doc = '{"kind": "updated"}', blob = '\x0c', note = 'updated' WHERE id = 7;

-- every value is under its column's class
SELECT id, how,
       (atrest.envelope(doc)).key_class AS doc_class,
       (atrest.envelope(blob)).key_class AS blob_class,
       (atrest.envelope(note)).key_class AS note_class
  FROM paths ORDER BY id;

SELECT id, doc, blob, note FROM paths ORDER BY id;

-- reencrypt moves the copied value to the column's class
CALL atrest.reencrypt('paths', 'note');
SELECT DISTINCT (atrest.envelope(note)).key_class FROM paths;

-- COPY FROM, binary format (and COPY TO binary): plaintext in the plain
-- type's binary format, sealed again on the way in
-- the file goes into this server's data directory under this backend's pid (no run
-- collides with another) and is removed at the end (no plaintext is left behind)
SELECT current_setting('data_directory') || '/pg_atrest_regress_paths.' || pg_backend_pid() || '.bin'
       AS copy_file \gset
COPY (SELECT id, how, doc, blob, note FROM paths) TO :'copy_file' (FORMAT binary);
CREATE TABLE paths_bin (LIKE paths);
COPY paths_bin FROM :'copy_file' (FORMAT binary);
SELECT count(*) AS same_rows
  FROM paths p JOIN paths_bin b USING (id)
 WHERE p.doc::jsonb = b.doc::jsonb AND p.blob::bytea = b.blob::bytea AND p.note::text = b.note::text;
SELECT DISTINCT (atrest.envelope(doc)).key_class, (atrest.envelope(blob)).key_class
  FROM paths_bin;
-- binary COPY TO carries jsonb's binary format: readable as plain jsonb
CREATE TABLE plain_bin (id int, how text, doc jsonb, blob bytea, note text);
COPY plain_bin FROM :'copy_file' (FORMAT binary);
SELECT id, doc FROM plain_bin WHERE id = 1;
\set rm_copy_file 'rm -f -- ' :'copy_file'
COPY (SELECT WHERE false) TO PROGRAM :'rm_copy_file';

-- the implicit cast lets jsonb operators and functions work unchanged
SELECT doc -> 'kind' AS kind, doc ? 'pages' AS has_pages, jsonb_typeof(doc) FROM paths WHERE id = 1;
SELECT doc @> '{"kind": "receipt"}' FROM paths WHERE id = 2;
SELECT length(blob), upper(note), note || '!', 'x' || note, note LIKE 'plain%' FROM paths WHERE id = 1;
SELECT jsonb_path_query(doc, '$.pages[*].n') FROM paths WHERE id = 1;

-- explicit decryption and casts
SELECT atrest.decrypt(doc) = doc::jsonb FROM paths WHERE id = 1;
SELECT '{"x": 1}'::atrest.encrypted_jsonb::jsonb, '\xab'::atrest.encrypted_bytea::bytea,
       'abc'::atrest.encrypted_text::text;

-- NULLs stay NULL; empty values round-trip
INSERT INTO paths VALUES (8, 'nulls', NULL, NULL, NULL), (9, 'empty', '""', '\x', '');
SELECT id, doc IS NULL AS doc_null, doc, blob, note = '' AS empty_note FROM paths WHERE id IN (8, 9) ORDER BY id;

-- bad plaintext is rejected by the plain type's input, nothing stored
INSERT INTO paths VALUES (10, 'bad', '{"unterminated": ', NULL, NULL);
INSERT INTO paths VALUES (10, 'bad', NULL, '\xzz', NULL);
SELECT count(*) FROM paths WHERE id = 10;

-- large values: compressed before encryption, read back intact
INSERT INTO paths
SELECT 11, 'large', jsonb_build_object('words', (SELECT jsonb_agg(jsonb_build_object('text', 'word' || i, 'confidence', 0.9)) FROM generate_series(1, 2000) i)),
       decode(repeat('00ff', 10000), 'hex'), repeat('lorem ipsum ', 2000);
SELECT (atrest.envelope(doc)).compressed AS doc_compressed,
       (atrest.envelope(doc)).stored_bytes < length(doc::text) / 4 AS doc_small,
       jsonb_array_length(doc -> 'words') AS words, length(blob) AS blob_len, length(note) AS note_len
  FROM paths WHERE id = 11;

-- no equality or ordering on ciphertext: compare the plaintext instead
SELECT count(*) FROM paths WHERE note = 'updated';
SELECT doc FROM paths p WHERE p.doc = '{"kind": "receipt"}'::jsonb;

-- type modifiers
CREATE TABLE bad_class (x atrest.encrypted_jsonb(nosuchclass));
CREATE TABLE bad_mods (x atrest.encrypted_jsonb(result, model));
SELECT atrest.create_key_class('invoices') >= 100 AS created;
CREATE TABLE custom_class (x atrest.encrypted_text(invoices));
INSERT INTO custom_class VALUES ('secret invoice');
SELECT x, (atrest.envelope(x)).key_class FROM custom_class;
SELECT atrest.create_key_class('invoices');
SELECT atrest.create_key_class('Bad Name');
\d custom_class

-- the storage strategy keeps TOAST from recompressing ciphertext
SELECT typname, typstorage FROM pg_type WHERE typnamespace = 'atrest'::regnamespace AND typname LIKE 'encrypted_%' AND typtype = 'b' ORDER BY 1;

-- the stored format: new values are XAES-256-GCM (format 2)
SELECT (atrest.envelope(x)).format FROM custom_class;

-- compression policy per key class.  compression 'none': no value of the class is
-- compressed, so its stored size follows its length and never its content.
SELECT atrest.create_key_class('opaque', compression => 'none') >= 100 AS created_opaque;
SELECT name, compression FROM atrest.key_classes WHERE name IN ('default', 'invoices', 'opaque') ORDER BY id;
CREATE TABLE policy (id int, how text, small atrest.encrypted_text(invoices),
                     opaque atrest.encrypted_text(opaque), j atrest.encrypted_jsonb(opaque),
                     b atrest.encrypted_bytea(opaque));
-- 100 KB of one letter, as compressible as a value gets, along every path into a column: a
-- literal (sealed under the default class, which compresses, then moved to the column's
-- class), a cast from the plain type, COPY (3000 bytes), and a copy of a value of a
-- compressing class
SELECT repeat('a', 102400) AS big, to_jsonb(repeat('a', 102400))::text AS big_json \gset
INSERT INTO policy VALUES (1, 'literal', :'big', :'big', :'big_json', :'big');
INSERT INTO policy SELECT 2, 'cast', repeat('a', 102400), repeat('a', 102400),
    jsonb_build_object('a', repeat('a', 102400)), convert_to(repeat('a', 102400), 'UTF8');
COPY policy FROM STDIN;
3	copy	\N	aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa	\N	\N
\.
INSERT INTO policy (id, how, opaque) SELECT 4, 'copied from a compressing class', small FROM policy WHERE id = 1;
SELECT id, how,
       (atrest.envelope(small)).compressed AS small_compressed,
       (atrest.envelope(small)).stored_bytes < 1000 AS small_stored_small,
       (atrest.envelope(opaque)).compressed AS opaque_compressed,
       (atrest.envelope(opaque)).stored_bytes >= octet_length(opaque::text) AS opaque_at_least_plaintext,
       pg_column_size(opaque) >= octet_length(opaque::text) AS opaque_column_size,
       coalesce(pg_column_size(j) >= 102400, true) AS j_column_size,
       coalesce(pg_column_size(b) >= 102400, true) AS b_column_size,
       octet_length(opaque::text) AS opaque_length
  FROM policy ORDER BY id;
-- the policy is the key class's: alter_key_class takes effect for the next value (other
-- sessions reload their key caches, as after any change to the key tables)
SELECT atrest.alter_key_class('opaque', 'lz4');
INSERT INTO policy (id, how, opaque) VALUES (5, 'after compression => lz4', :'big');
SELECT atrest.alter_key_class('opaque', 'none');
INSERT INTO policy (id, how, opaque) VALUES (6, 'after compression => none', :'big');
SELECT id, how, (atrest.envelope(opaque)).compressed, (atrest.envelope(opaque)).stored_bytes < 1000 AS stored_small
  FROM policy WHERE id >= 5 ORDER BY id;
-- re-encryption takes the class's existing values out of compression
CALL atrest.reencrypt('policy', 'opaque');
SELECT count(*) FILTER (WHERE (atrest.envelope(opaque)).compressed) AS still_compressed,
       bool_and(opaque::text = :'big') FILTER (WHERE id <> 3) AS all_intact
  FROM policy;
SELECT name, compression FROM atrest.key_classes WHERE name = 'opaque';
SELECT operation, key_class, detail FROM atrest.key_events
 WHERE operation IN ('create_key_class', 'alter_key_class') AND key_class = 'opaque' ORDER BY id;
-- NULL arguments and unknown classes
\set VERBOSITY sqlstate
SELECT atrest.create_key_class(NULL);
SELECT atrest.create_key_class('nullpolicy', NULL);
SELECT atrest.alter_key_class(NULL, 'lz4');
SELECT atrest.alter_key_class('opaque', NULL);
\set VERBOSITY default
SELECT atrest.alter_key_class('opaque', NULL);
SELECT atrest.alter_key_class('nosuchclass', 'none');
SELECT count(*) AS nullpolicy_made FROM atrest.key_classes WHERE name = 'nullpolicy';
DROP TABLE policy;
