-- Hostile and broken input: forged and corrupted values, values moved between classes,
-- unknown key versions, tampered wrapped keys, empty, NULL and very large values, bad
-- type modifiers, bad key URIs and provider failures.  Every failure must be a clean
-- error with the documented SQLSTATE (XX001 for data, AT001 for the root of the key
-- hierarchy), must print no bytes, and must leave the session able to carry on.
--
-- Crafting values without C: a superuser may declare a LANGUAGE internal function over
-- any built-in C function.  byteacat(a, b) concatenates the bytes of any two varlenas,
-- so hostile.raw(v, '') is the stored (sealed) bytes of v and hostile.forge(b, '') turns
-- any bytes into a value of an encrypted type, with no decryption or sealing on the way.

CREATE SCHEMA hostile;
CREATE FUNCTION hostile.raw(atrest.encrypted_text, bytea DEFAULT '') RETURNS bytea
    LANGUAGE internal IMMUTABLE STRICT AS 'byteacat';
CREATE FUNCTION hostile.raw(atrest.encrypted_jsonb, bytea DEFAULT '') RETURNS bytea
    LANGUAGE internal IMMUTABLE STRICT AS 'byteacat';
CREATE FUNCTION hostile.raw(atrest.encrypted_bytea, bytea DEFAULT '') RETURNS bytea
    LANGUAGE internal IMMUTABLE STRICT AS 'byteacat';
CREATE FUNCTION hostile.forge_text(bytea, bytea DEFAULT '') RETURNS atrest.encrypted_text
    LANGUAGE internal IMMUTABLE STRICT AS 'byteacat';
CREATE FUNCTION hostile.forge_jsonb(bytea, bytea DEFAULT '') RETURNS atrest.encrypted_jsonb
    LANGUAGE internal IMMUTABLE STRICT AS 'byteacat';
CREATE FUNCTION hostile.forge_bytea(bytea, bytea DEFAULT '') RETURNS atrest.encrypted_bytea
    LANGUAGE internal IMMUTABLE STRICT AS 'byteacat';

-- hostile.try(q) runs a statement and shows how it ended: "ok", or SQLSTATE, message and
-- detail (sql/include/try.sql).  hostile.ids and hostile.active take out what depends on
-- what earlier tests created: key class ids (replaced by N) and data-key versions (a
-- class's active version shown as "(active)").
\getenv abs_srcdir PG_ABS_SRCDIR
\set try_schema hostile
\set try_file :abs_srcdir '/sql/include/try.sql'
\i :try_file
CREATE FUNCTION hostile.ids(t text, id text) RETURNS text LANGUAGE sql AS
    $$ SELECT regexp_replace(t, 'key class ' || id || '\M', 'key class N', 'g') $$;
CREATE FUNCTION hostile.active(t text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    k record;
BEGIN
    FOR k IN SELECT id, active_version FROM atrest.key_classes LOOP
        t := replace(t, format('data key version %s of key class %s ', k.active_version, k.id),
                     format('data key version (active) of key class %s ', k.id));
    END LOOP;
    RETURN t;
END
$$;

-- Key memory slots held by this session: the service key, the database key and one per
-- data key a value needed (data keys are unwrapped when first needed).  Checked again at
-- the end, after the same read from an emptied cache, so that no error path below leaks
-- a slot.
SELECT '{"warm": 1}'::atrest.encrypted_jsonb::jsonb;
SELECT keys_held = 3 AS slots_as_expected
  FROM atrest._session_key_state();

CREATE TABLE hostile.t (id int PRIMARY KEY, note atrest.encrypted_text, doc atrest.encrypted_jsonb(result),
                        blob atrest.encrypted_bytea(model));
INSERT INTO hostile.t VALUES
    (1, 'a note', '{"pages": [1, 2, 3]}', '\xdeadbeef'),
    (2, repeat('compressible ', 100), '{}', '\x');

-- The stored form: the header says format 2 (XAES-256-GCM), kind and flags, class and
-- version; 48 bytes of header, 192-bit nonce and tag.
SELECT id, get_byte(hostile.raw(note), 0) AS format, get_byte(hostile.raw(note), 1) AS kind_flags,
       length(hostile.raw(note)) - length(note::text) AS overhead
  FROM hostile.t WHERE id = 1;
SELECT id, get_byte(hostile.raw(note), 1) AS kind_flags, (atrest.envelope(note)).compressed
  FROM hostile.t WHERE id = 2;
-- a forged copy of an authentic value opens
SELECT hostile.forge_text(hostile.raw(note)) AS same_note FROM hostile.t WHERE id = 1;

------------------------------------------------------------------------------
-- Corrupted values
------------------------------------------------------------------------------
CREATE TABLE hostile.forged (what text, note atrest.encrypted_text, doc atrest.encrypted_jsonb);
-- one flipped bit in the ciphertext, in the nonce, in the tag, in the header's class
INSERT INTO hostile.forged (what, note)
SELECT 'ciphertext bit', hostile.forge_text(set_byte(r, 33, get_byte(r, 33) # 1)) FROM
  (SELECT hostile.raw(note) r FROM hostile.t WHERE id = 1) s
UNION ALL
SELECT 'nonce bit', hostile.forge_text(set_byte(r, 8, get_byte(r, 8) # 128)) FROM
  (SELECT hostile.raw(note) r FROM hostile.t WHERE id = 1) s
UNION ALL
SELECT 'nonce bit, second half', hostile.forge_text(set_byte(r, 25, get_byte(r, 25) # 1)) FROM
  (SELECT hostile.raw(note) r FROM hostile.t WHERE id = 1) s
UNION ALL
SELECT 'tag bit', hostile.forge_text(set_byte(r, length(r) - 1, get_byte(r, length(r) - 1) # 1)) FROM
  (SELECT hostile.raw(note) r FROM hostile.t WHERE id = 1) s
UNION ALL
SELECT 'compressed flag set', hostile.forge_text(set_byte(r, 1, get_byte(r, 1) | 1)) FROM
  (SELECT hostile.raw(note) r FROM hostile.t WHERE id = 1) s
UNION ALL
SELECT 'compressed flag cleared', hostile.forge_text(set_byte(r, 1, get_byte(r, 1) & 254)) FROM
  (SELECT hostile.raw(note) r FROM hostile.t WHERE id = 2) s
UNION ALL
SELECT 'class default -> model', hostile.forge_text(set_byte(r, 3, 2)) FROM
  (SELECT hostile.raw(note) r FROM hostile.t WHERE id = 1) s
UNION ALL
SELECT 'compressed payload bit', hostile.forge_text(set_byte(r, 42, get_byte(r, 42) # 4)) FROM
  (SELECT hostile.raw(note) r FROM hostile.t WHERE id = 2) s;
SELECT what, hostile.try(format('SELECT note::text FROM hostile.forged WHERE what = %L', what)) AS result
  FROM hostile.forged ORDER BY what;

-- truncated values: empty, one byte, the header only, one byte short of format 1's minimum
-- (36), format 1's minimum and one byte short of format 2's (48), exactly format 2's
-- minimum (48 bytes: an empty payload whose tag is now wrong), one byte short
SELECT n, hostile.try(format(
    'SELECT hostile.forge_text(substr(hostile.raw(note), 1, %s))::text FROM hostile.t WHERE id = 1', n)) AS result
  FROM unnest(array[0, 1, 8, 35, 36, 47, 48]) n;
SELECT hostile.try('SELECT hostile.forge_text(substr(r, 1, length(r) - 1))::text
                      FROM (SELECT hostile.raw(note) r FROM hostile.t WHERE id = 1) s') AS one_byte_short;
-- the header alone is checked by atrest.envelope, without decrypting
SELECT hostile.try('SELECT atrest.envelope(hostile.forge_text(''\x0130''))') AS envelope_of_2_bytes;

-- bogus headers: a format-2 value relabelled as format 1 (1.0's AES-256-GCM: the format
-- byte is authenticated), unknown formats, unknown flag bits, a value of another type
SELECT hostile.try('SELECT hostile.forge_text(set_byte(hostile.raw(note), 0, 1))::text FROM hostile.t WHERE id = 1')
       AS relabelled_format_1;
SELECT hostile.try('SELECT hostile.forge_text(set_byte(hostile.raw(note), 0, 3))::text FROM hostile.t WHERE id = 1')
       AS format_3;
SELECT hostile.try('SELECT hostile.forge_text(set_byte(hostile.raw(note), 0, 255))::text FROM hostile.t WHERE id = 1')
       AS format_255;
SELECT hostile.try('SELECT hostile.forge_text(set_byte(hostile.raw(note), 1, get_byte(hostile.raw(note), 1) | 8))::text
                      FROM hostile.t WHERE id = 1') AS unknown_flag;
SELECT hostile.try('SELECT hostile.forge_jsonb(hostile.raw(note))::jsonb FROM hostile.t WHERE id = 1') AS text_as_jsonb;
SELECT hostile.try('SELECT hostile.forge_bytea(hostile.raw(doc))::bytea FROM hostile.t WHERE id = 1') AS jsonb_as_bytea;
SELECT hostile.try('SELECT atrest.envelope(hostile.forge_bytea(hostile.raw(doc))) FROM hostile.t WHERE id = 1')
       AS envelope_of_jsonb_as_bytea;
-- a kind nibble re-labelled to match the type still fails: the header is authenticated
SELECT hostile.try('SELECT hostile.forge_bytea(set_byte(hostile.raw(doc), 1, 32))::bytea FROM hostile.t WHERE id = 1')
       AS relabelled_kind;
-- random bytes of every length around the minimum
SELECT hostile.try(format('SELECT hostile.forge_jsonb(decode(repeat(''ab'', %s), ''hex''))::jsonb', n)) AS result, count(*)
  FROM generate_series(0, 40) n GROUP BY 1 ORDER BY 1;

-- a corrupted row makes only itself unreadable; its neighbours and the table's other
-- columns stay readable; re-encryption skips it, as its header names the active key
INSERT INTO hostile.t (id, note)
SELECT 3, hostile.forge_text(set_byte(r, 25, get_byte(r, 25) # 1))
  FROM (SELECT hostile.raw(note) r FROM hostile.t WHERE id = 1) s;
SELECT hostile.try('SELECT note::text FROM hostile.t') AS whole_column;
SELECT id, note FROM hostile.t WHERE id <> 3 AND id < 100 ORDER BY id;
SELECT id, atrest.envelope(note) IS NOT NULL AS header_readable FROM hostile.t WHERE id = 3;
CALL atrest.reencrypt('hostile.t', 'note');  -- rewrites nothing: it skips the corrupted row
DELETE FROM hostile.t WHERE id = 3;

------------------------------------------------------------------------------
-- Values moved between columns of other classes
------------------------------------------------------------------------------
-- Through SQL, a value moved into a column with a class modifier is re-sealed under that
-- class; a column without one keeps the value's class (documented; still encrypted and
-- readable); either way the value reads the same.
CREATE TABLE hostile.model_col (v atrest.encrypted_jsonb(model));
CREATE TABLE hostile.default_col (v atrest.encrypted_jsonb);
INSERT INTO hostile.model_col SELECT doc FROM hostile.t WHERE id = 1;
INSERT INTO hostile.default_col SELECT doc FROM hostile.t WHERE id = 1;
UPDATE hostile.t SET doc = m.v FROM hostile.model_col m WHERE id = 2;
SELECT 'model column' AS col, (atrest.envelope(v)).key_class, v FROM hostile.model_col
UNION ALL
SELECT 'no modifier', (atrest.envelope(v)).key_class, v FROM hostile.default_col
UNION ALL
SELECT 'result column (updated)', (atrest.envelope(doc)).key_class, doc FROM hostile.t WHERE id = 2;
-- Below SQL, a value's bytes moved into another column are not re-sealed: they keep
-- naming their class and still open, because nothing binds a value to its table, row or
-- column (only to its type, class and key version).  An attacker who can write the data
-- files can therefore swap or replay values of the same type and class; see the README's
-- security section.
INSERT INTO hostile.default_col SELECT hostile.forge_jsonb(hostile.raw(doc)) FROM hostile.t WHERE id = 1;
SELECT (atrest.envelope(v)).key_class, v FROM hostile.default_col ORDER BY 1;

------------------------------------------------------------------------------
-- Unknown data-key versions
------------------------------------------------------------------------------
-- (the key class made here is removed at the end and the id sequence reset, so that the
-- tests after this one see the key tables as they were)
SELECT last_value AS seq_last, is_called AS seq_called FROM atrest.key_classes_id_seq \gset
SELECT atrest.create_key_class('hostile_a') AS class_a \gset
-- (no modifier on the column: values keep the class they were sealed under, and nothing
-- re-seals them on the way in)
CREATE TABLE hostile.a (id int, v atrest.encrypted_text);
INSERT INTO hostile.a VALUES (1, 'sealed under version 1'::atrest.encrypted_text(hostile_a));
-- A value sealed under a data-key version whose creation rolled back (as after restoring
-- the data from a backup newer than the key tables): its bytes are smuggled out of the
-- transaction through a psql variable.
BEGIN;
SELECT key_version FROM atrest.rotate_data_key('hostile_a');
INSERT INTO hostile.a VALUES (2, 'sealed under a version that will not exist'::atrest.encrypted_text(hostile_a));
SELECT encode(hostile.raw(v), 'hex') AS smuggled FROM hostile.a WHERE id = 2 \gset
ROLLBACK;
INSERT INTO hostile.a VALUES (2, hostile.forge_text(decode(:'smuggled', 'hex')));
SELECT id, (atrest.envelope(v)).key_class, (atrest.envelope(v)).key_version FROM hostile.a ORDER BY id;
SELECT hostile.ids(hostile.try('SELECT v::text FROM hostile.a WHERE id = 2'), :'class_a') AS rolled_back_version;
-- assigning it to a column of its class re-seals it to the active key: that fails cleanly too
SELECT hostile.ids(hostile.try('SELECT v::atrest.encrypted_text(hostile_a) FROM hostile.a WHERE id = 2'), :'class_a')
       AS reseal_rolled_back_version;
-- once a real version 2 exists it is another key: the value fails authentication instead
SELECT key_version FROM atrest.rotate_data_key('hostile_a');
SELECT hostile.try('SELECT v::text FROM hostile.a WHERE id = 2') AS other_version_2;
SELECT v FROM hostile.a WHERE id = 1;
-- re-encryption stops at the bad value and changes nothing; without it, it goes through
-- (the column has no modifier, so re-encryption moves values to the class "default")
CALL atrest.reencrypt('hostile.a', 'v');  -- stops at the bad value
SELECT id, (atrest.envelope(v)).key_class, (atrest.envelope(v)).key_version FROM hostile.a ORDER BY id;
DELETE FROM hostile.a WHERE id = 2;
CALL atrest.reencrypt('hostile.a', 'v');
SELECT id, (atrest.envelope(v)).key_class, v FROM hostile.a ORDER BY id;
-- forged headers naming versions and classes that do not exist, or class 0
SELECT hostile.ids(hostile.try(format(
    'SELECT hostile.forge_text(overlay(hostile.raw(v) placing %L from 3))::text FROM hostile.a WHERE id = 1', h)), :'class_a') AS result
  FROM unnest(array['\x00010000ffff'::bytea, '\x0001ffffffff', '\xffff00000001', '\x000000000001', '\x000100000000']) h;

------------------------------------------------------------------------------
-- Tampered wrapped keys (a superuser can UPDATE the key tables)
------------------------------------------------------------------------------
CREATE TEMP TABLE saved_dk AS SELECT class_id, version, wrapped FROM atrest.data_keys;
-- the versions hostile.t's values are sealed with: tampering with another one would go
-- unnoticed, since a data key is unwrapped only when a value needs it
CREATE TEMP TABLE active_dk AS SELECT id AS class_id, active_version AS version FROM atrest.key_classes;
CREATE TEMP TABLE saved_dbk AS SELECT id, wrapped FROM atrest.database_keys WHERE active;

-- a data key whose wrapped form has one flipped bit: what needs it fails
UPDATE atrest.data_keys SET wrapped = set_byte(wrapped, 20, get_byte(wrapped, 20) # 1)
 WHERE (class_id, version) IN (SELECT * FROM active_dk WHERE class_id = 1);
SELECT atrest.recheck_keys();
SELECT hostile.active(hostile.try('SELECT note::text FROM hostile.t WHERE id = 1')) AS read_default_class;
SELECT hostile.active(hostile.try('INSERT INTO hostile.t (id, note) VALUES (50, ''new'')')) AS write_default_class;
-- (data keys are unwrapped when first needed: another class's values stay readable)
SELECT hostile.try('SELECT doc::jsonb FROM hostile.t WHERE id = 1') AS read_result_class;
-- restoring the original bytes brings service back, without a recheck
UPDATE atrest.data_keys d SET wrapped = s.wrapped FROM saved_dk s
 WHERE d.class_id = s.class_id AND d.version = s.version AND d.wrapped <> s.wrapped;
SELECT note, doc FROM hostile.t WHERE id = 1;

-- wrapped data keys that are truncated, too long, of an unknown format, empty
UPDATE atrest.data_keys SET wrapped = substr(wrapped, 1, length(wrapped) - 1) WHERE (class_id, version) IN (SELECT * FROM active_dk WHERE class_id = 2);
SELECT hostile.active(hostile.try('SELECT blob::bytea FROM hostile.t WHERE id = 1')) AS truncated_data_key;
UPDATE atrest.data_keys d SET wrapped = s.wrapped || '\x00'::bytea FROM saved_dk s
 WHERE d.class_id = s.class_id AND d.version = s.version AND (d.class_id, d.version) IN (SELECT * FROM active_dk WHERE class_id = 2);
SELECT hostile.active(hostile.try('SELECT blob::bytea FROM hostile.t WHERE id = 1')) AS long_data_key;
UPDATE atrest.data_keys SET wrapped = set_byte(substr(wrapped, 1, length(wrapped) - 1), 0, 2) WHERE (class_id, version) IN (SELECT * FROM active_dk WHERE class_id = 2);
SELECT hostile.active(hostile.try('SELECT blob::bytea FROM hostile.t WHERE id = 1')) AS format_2_data_key;
UPDATE atrest.data_keys SET wrapped = '' WHERE (class_id, version) IN (SELECT * FROM active_dk WHERE class_id = 2);
SELECT hostile.active(hostile.try('SELECT blob::bytea FROM hostile.t WHERE id = 1')) AS empty_data_key;
-- a data key swapped with another one's wrapped form (bound to its class and version)
UPDATE atrest.data_keys SET wrapped = (SELECT wrapped FROM saved_dk JOIN active_dk USING (class_id, version) WHERE class_id = 3)
 WHERE (class_id, version) IN (SELECT * FROM active_dk WHERE class_id = 2);
SELECT hostile.active(hostile.try('SELECT blob::bytea FROM hostile.t WHERE id = 1')) AS swapped_data_key;
UPDATE atrest.data_keys d SET wrapped = s.wrapped FROM saved_dk s
 WHERE d.class_id = s.class_id AND d.version = s.version AND d.wrapped <> s.wrapped;
SELECT blob FROM hostile.t WHERE id = 1;

-- the database key: one flipped bit, then truncated; AT001, and key_status says why
UPDATE atrest.database_keys SET wrapped = set_byte(wrapped, 30, get_byte(wrapped, 30) # 1) WHERE active;
SELECT atrest.recheck_keys();
SELECT hostile.try('SELECT note::text FROM hostile.t WHERE id = 1') AS flipped_database_key;
SELECT session_last_error FROM atrest.key_status;
UPDATE atrest.database_keys SET wrapped = substr(wrapped, 1, 10) WHERE active;
SELECT hostile.try('SELECT note::text FROM hostile.t WHERE id = 1') AS truncated_database_key;
SELECT hostile.try('SELECT atrest.rotate_database_key()') AS rotate_with_bad_database_key;
SELECT hostile.try('SELECT atrest.rotate_data_key(''hostile_a'')') AS rotate_data_key_with_bad_database_key;
UPDATE atrest.database_keys d SET wrapped = s.wrapped FROM saved_dbk s WHERE d.id = s.id;
SELECT note FROM hostile.t WHERE id = 1;
-- no active database key at all
UPDATE atrest.database_keys SET wrapped = NULL, active = false WHERE active;
SELECT hostile.try('SELECT note::text FROM hostile.t WHERE id = 1') AS no_active_database_key;
UPDATE atrest.database_keys d SET wrapped = s.wrapped, active = true FROM saved_dbk s WHERE d.id = s.id;
-- a data key that claims to be wrapped under a retired database key
INSERT INTO atrest.database_keys (id, active, protector, retired_at)
VALUES ('00000000-0000-4000-8000-000000000001', false, 'service', now());
UPDATE atrest.data_keys SET database_key_id = '00000000-0000-4000-8000-000000000001'
 WHERE (class_id, version) IN (SELECT * FROM active_dk WHERE class_id = 1);
SELECT hostile.active(hostile.try('SELECT note::text FROM hostile.t WHERE id = 1')) AS data_key_of_retired_database_key;
UPDATE atrest.data_keys SET database_key_id = (SELECT id FROM saved_dbk) WHERE (class_id, version) IN (SELECT * FROM active_dk WHERE class_id = 1);
DELETE FROM atrest.database_keys WHERE id = '00000000-0000-4000-8000-000000000001';
-- everything is back: same bytes as saved, every value readable
SELECT count(*) AS changed_key_rows FROM atrest.data_keys d JOIN saved_dk s USING (class_id, version)
 WHERE d.wrapped <> s.wrapped;
SELECT id, note, doc, blob FROM hostile.t ORDER BY id;

------------------------------------------------------------------------------
-- Empty and NULL values
------------------------------------------------------------------------------
CREATE TABLE hostile.e (id int, j atrest.encrypted_jsonb, b atrest.encrypted_bytea, t atrest.encrypted_text);
INSERT INTO hostile.e VALUES (1, NULL, NULL, NULL), (2, '""', '\x', ''), (3, '{}', '\x00', ' '),
    (4, 'null', NULL, NULL), (5, '[]', NULL, NULL);
SELECT id, j, j IS NULL AS j_null, b, b IS NULL AS b_null, t = '' AS t_empty, t IS NULL AS t_null,
       (atrest.envelope(b)).stored_bytes AS b_stored, (atrest.envelope(t)).stored_bytes AS t_stored
  FROM hostile.e ORDER BY id;
-- NULL through every function
SELECT atrest.decrypt(NULL::atrest.encrypted_text) IS NULL AS decrypt_null,
       atrest.envelope(NULL::atrest.encrypted_jsonb) IS NULL AS envelope_null,
       NULL::jsonb::atrest.encrypted_jsonb IS NULL AS cast_null,
       true AS done;
SELECT hostile.try('SELECT atrest.create_key_class(NULL)') AS create_class_null;
SELECT hostile.try('SELECT atrest.alter_key_class(''default'', NULL)') AS alter_class_null;
SELECT hostile.try('CALL atrest.reencrypt(NULL, NULL)') AS reencrypt_null;
SELECT hostile.try('CALL atrest.reencrypt(''hostile.e'', ''t'', NULL)') AS reencrypt_null_batch;
-- (every function with every NULL that means nothing: sql/nulls.sql)
CALL atrest.reencrypt('hostile.e', 't');  -- NULLs are left alone
-- an empty string is not a valid jsonb or an encrypted value
SELECT hostile.try('SELECT ''''::atrest.encrypted_jsonb') AS empty_jsonb_literal;

------------------------------------------------------------------------------
-- A very large value (100 MB; regress.big_value_mb overrides, e.g. under valgrind).
-- Compressible and hex (high-entropy), as text, bytea and jsonb: stored and read back intact.
------------------------------------------------------------------------------
SELECT coalesce(current_setting('regress.big_value_mb', true), '100')::int AS big_mb \gset
CREATE TABLE hostile.big (what text, t atrest.encrypted_text, b atrest.encrypted_bytea,
                          j atrest.encrypted_jsonb, plain_md5 text, plain_len bigint);
-- hash hex digits: a 1 MiB block of md5 hex, repeated (LZ4 finds no match more than
-- 64 KiB back, and its fast mode saves less than an eighth inside the block, so it is
-- stored uncompressed)
-- (the source is kept out of line uncompressed: pglz would spend longer on it than the test)
CREATE TEMP TABLE big_src (s text);
ALTER TABLE big_src ALTER s SET STORAGE EXTERNAL;
INSERT INTO big_src SELECT repeat(string_agg(md5(i::text), ''), :big_mb) FROM generate_series(1, 32768) i;
INSERT INTO hostile.big (what, t, plain_md5, plain_len) SELECT 'text, hash hex', s, md5(s), length(s) FROM big_src;
INSERT INTO hostile.big (what, b, plain_md5, plain_len)
SELECT 'bytea, hash hex', convert_to(s, 'UTF8'), md5(s), length(s) FROM big_src;
INSERT INTO hostile.big (what, j, plain_md5, plain_len)
SELECT 'jsonb, hash hex', jsonb_build_object('s', s), md5(s), length(s) FROM big_src;
-- compressible
INSERT INTO hostile.big (what, t, plain_md5, plain_len)
SELECT 'text, compressible', x, md5(x), length(x)
  FROM (SELECT repeat('lorem ipsum ', :big_mb * 1024 * 1024 / 12) x) s;
DROP TABLE big_src;
-- read back: the same bytes; compressed only when it pays; stored in no more room than
-- the plaintext (plus 48 bytes); and the sealed bytes do not contain the plaintext
SELECT what, md5(p) = plain_md5 AS intact, length(p) = plain_len AS same_length, compressed,
       stored::float8 / plain_len < 1.001 AS no_larger_than_plain,
       position(convert_to(substr(p, 1000, 64), 'UTF8') in sealed) = 0 AS sealed_bytes_hide_it
  FROM (SELECT what, plain_md5, plain_len,
               coalesce(t::text, convert_from(b::bytea, 'UTF8'), j ->> 's') AS p,
               coalesce(hostile.raw(t), hostile.raw(b), hostile.raw(j)) AS sealed,
               coalesce((atrest.envelope(t)).compressed, (atrest.envelope(b)).compressed,
                        (atrest.envelope(j)).compressed) AS compressed,
               coalesce((atrest.envelope(t)).stored_bytes, (atrest.envelope(b)).stored_bytes,
                        (atrest.envelope(j)).stored_bytes) AS stored
          FROM hostile.big) s
 ORDER BY what;
-- re-encryption moves a big value from the old key version to the new one and leaves it
-- intact: sealed under the active version, which a rotation then makes old
CREATE TABLE hostile.big_a (t atrest.encrypted_text(hostile_a));
INSERT INTO hostile.big_a SELECT t FROM hostile.big WHERE what = 'text, hash hex';
SELECT (atrest.envelope(t)).key_version AS sealed_under FROM hostile.big_a;
SELECT key_version AS new_version FROM atrest.rotate_data_key('hostile_a') \gset
SELECT :new_version AS new_version, (atrest.envelope(t)).key_version < :new_version AS still_old
  FROM hostile.big_a;
CALL atrest.reencrypt('hostile.big_a', 't');
SELECT (atrest.envelope(a.t)).key_version = :new_version AS moved_to_new_version,
       (atrest.envelope(a.t)).key_class, md5(a.t::text) = b.plain_md5 AS intact,
       length(a.t::text) = b.plain_len AS same_length
  FROM hostile.big_a a, hostile.big b WHERE b.what = 'text, hash hex';
DROP TABLE hostile.big, hostile.big_a;

------------------------------------------------------------------------------
-- Invalid type modifiers
------------------------------------------------------------------------------
SELECT hostile.try('CREATE TABLE hostile.m1 (x atrest.encrypted_jsonb(nosuchclass))') AS unknown_class;
SELECT hostile.try('CREATE TABLE hostile.m2 (x atrest.encrypted_jsonb(result, model))') AS two_modifiers;
SELECT hostile.try('CREATE TABLE hostile.m3 (x atrest.encrypted_text(1))') AS numeric_modifier;
SELECT hostile.try('CREATE TABLE hostile.m4 (x atrest.encrypted_text(''''))') AS empty_modifier;
SELECT hostile.try('CREATE TABLE hostile.m5 (x atrest.encrypted_text("Result"))') AS wrong_case;
SELECT hostile.try('CREATE TABLE hostile.m6 (x atrest.encrypted_bytea(' || repeat('a', 100) || '))') AS long_name;
SELECT hostile.try('SELECT ''x''::atrest.encrypted_text(nosuchclass)') AS cast_to_unknown_class;
SELECT hostile.try('SELECT ''x''::atrest.encrypted_text(result)::text') AS cast_to_class;
SELECT hostile.try('CREATE TABLE hostile.m7 (x atrest.encrypted_text(-1))') AS negative_modifier;
SELECT hostile.try('SELECT atrest.create_key_class(''' || repeat('a', 64) || ''')') AS class_name_too_long;
SELECT hostile.try('SELECT atrest.create_key_class(''hostile a'')') AS class_name_with_space;
SELECT hostile.try('SELECT atrest.create_key_class('''')') AS empty_class_name;
SELECT count(*) AS tables_made FROM pg_class WHERE relname LIKE 'm_' AND relnamespace = 'hostile'::regnamespace;

------------------------------------------------------------------------------
-- Invalid key URIs and providers, and provider failures that need no device
------------------------------------------------------------------------------
SELECT hostile.try('SELECT atrest.provider_selftest(''pkcs11'', ''garbage'')') AS pkcs11_garbage;
SELECT hostile.try('SELECT atrest.provider_selftest(''pkcs11'', ''pkcs11:'')') AS pkcs11_empty;
SELECT hostile.try('SELECT atrest.provider_selftest(''pkcs11'', ''pkcs11:object=k'')') AS pkcs11_no_token;
SELECT hostile.try('SELECT atrest.provider_selftest(''pkcs11'', ''pkcs11:token=t'')') AS pkcs11_no_object;
SELECT hostile.try('SELECT atrest.provider_selftest(''pkcs11'', ''pkcs11:token=t;object=k;id=zz'')') AS pkcs11_bad_id;
SELECT hostile.try('SELECT atrest.provider_selftest(''pkcs11'', ''pkcs11:token=%zz;object=k'')') AS pkcs11_bad_escape;
SELECT hostile.try('SELECT atrest.provider_selftest(''pkcs11'', ''pkcs11:token=t;object=k;pin-value=1234'')') AS pkcs11_pin_in_uri;
SELECT hostile.try('SELECT atrest.provider_selftest(''command'', '''')') AS command_empty_uri;
SELECT hostile.try('SELECT atrest.provider_selftest(''command'', ''' || repeat('k', 2000) || ''')') AS command_long_uri;
SELECT hostile.try('SELECT atrest.provider_selftest(''nosuch'', ''x'')') AS unknown_provider;
SELECT hostile.try('SELECT atrest.enable_cmk(''nosuch'', ''x'')') AS enable_unknown_provider;
SELECT hostile.try('SELECT atrest.enable_cmk(''pkcs11'', ''garbage'')') AS enable_pkcs11_garbage;
SELECT hostile.try('SELECT atrest.enable_cmk(NULL, NULL)') AS enable_null;
SELECT hostile.try('SELECT atrest.disable_cmk()') AS disable_without_cmk;
-- atrest.kms_command is not set here: the command provider fails with AT001, naming the
-- setting, and enable_cmk leaves the key unchanged
SELECT current_setting('atrest.kms_command') = '' AS kms_command_unset;
SELECT hostile.try('SELECT atrest.provider_selftest(''command'', ''kms:hostile'')') AS command_without_kms_command;
SELECT hostile.try('SELECT atrest.enable_cmk(''command'', ''kms:hostile'')') AS enable_without_kms_command;
SELECT protector, provider FROM atrest.key_status;
SELECT count(*) AS enable_events FROM atrest.key_events WHERE operation = 'enable_cmk';
-- (provider failures that depend on settings, such as a missing PKCS#11 module or PIN
-- file, a module that is not one, or an adapter that fails, are in t/051_hostile_input.pl)

------------------------------------------------------------------------------
-- After all that, this session still works and holds no extra key slots
------------------------------------------------------------------------------
INSERT INTO hostile.t (id, note) VALUES (99, 'still working');
SELECT note FROM hostile.t WHERE id = 99;
SELECT atrest.recheck_keys();
SELECT '{"warm": 1}'::atrest.encrypted_jsonb::jsonb;
SELECT keys_held = 3 AS slots_as_expected
  FROM atrest._session_key_state();

SET client_min_messages = warning;
DROP SCHEMA hostile CASCADE;
RESET client_min_messages;
DELETE FROM atrest.data_keys WHERE class_id = :class_a;
DELETE FROM atrest.key_classes WHERE id = :class_a;
SELECT setval('atrest.key_classes_id_seq', :seq_last, :'seq_called') IS NOT NULL AS sequence_reset;
