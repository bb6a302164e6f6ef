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
COPY (SELECT id, how, doc, blob, note FROM paths) TO '/tmp/pg_atrest_regress_paths.bin' (FORMAT binary);
CREATE TABLE paths_bin (LIKE paths);
COPY paths_bin FROM '/tmp/pg_atrest_regress_paths.bin' (FORMAT binary);
SELECT count(*) AS same_rows
  FROM paths p JOIN paths_bin b USING (id)
 WHERE p.doc::jsonb = b.doc::jsonb AND p.blob::bytea = b.blob::bytea AND p.note::text = b.note::text;
SELECT DISTINCT (atrest.envelope(doc)).key_class, (atrest.envelope(blob)).key_class
  FROM paths_bin;
-- binary COPY TO carries jsonb's binary format: readable as plain jsonb
CREATE TABLE plain_bin (id int, how text, doc jsonb, blob bytea, note text);
COPY plain_bin FROM '/tmp/pg_atrest_regress_paths.bin' (FORMAT binary);
SELECT id, doc FROM plain_bin WHERE id = 1;

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
