-- Compression per key class: lz4 (the default), zstd or none, as PostgreSQL's column
-- COMPRESSION names them.  Values round-trip under each, for all three types; the payload's
-- compressor is reported by atrest.envelope(); zstd stores a compressible document in less
-- room than lz4; re-encryption moves values between compressors; forged flags fail cleanly.

CREATE SCHEMA cmp;
-- the stored bytes of a value, and any bytes as a value (see sql/hostile.sql)
CREATE FUNCTION cmp.raw(atrest.encrypted_text, bytea DEFAULT '') RETURNS bytea
    LANGUAGE internal IMMUTABLE STRICT AS 'byteacat';
CREATE FUNCTION cmp.forge_text(bytea, bytea DEFAULT '') RETURNS atrest.encrypted_text
    LANGUAGE internal IMMUTABLE STRICT AS 'byteacat';
\getenv abs_srcdir PG_ABS_SRCDIR
\set try_schema cmp
\set try_file :abs_srcdir '/sql/include/try.sql'
\i :try_file

-- one class per compressor; the default is lz4
SELECT atrest.create_key_class('cmp_lz4') > 0 AS lz4_made,
       atrest.create_key_class('cmp_zstd', 'zstd') > 0 AS zstd_made,
       atrest.create_key_class('cmp_none', compression => 'none') > 0 AS none_made;
SELECT name, compression FROM atrest.key_classes WHERE name LIKE 'cmp\_%' ORDER BY name;
SELECT operation, key_class, detail FROM atrest.key_events
 WHERE operation = 'create_key_class' AND key_class LIKE 'cmp\_%' ORDER BY id;

-- unknown compressors: 22023 with a hint naming the three
SELECT atrest.create_key_class('cmp_gzip', 'gzip');
SELECT atrest.alter_key_class('cmp_lz4', 'LZ4');
SELECT atrest.alter_key_class('cmp_lz4', '');
SELECT count(*) AS gzip_made FROM atrest.key_classes WHERE name = 'cmp_gzip';

-- A compressible document of about 23 KB: repeated keys (LZ4 finds those) and hex digests
-- (only an entropy coder such as zstd's shrinks those much).
SELECT jsonb_agg(jsonb_build_object('id', i, 'word', 'word' || i, 'confidence', 0.9,
                                    'digest', md5(i::text)))::text AS doc
  FROM generate_series(1, 300) i \gset
SELECT md5(:'doc'::jsonb::text) AS doc_md5, length(:'doc') AS doc_len \gset

CREATE TABLE cmp.t (
    cls text, id int,
    j_lz4 atrest.encrypted_jsonb(cmp_lz4), b_lz4 atrest.encrypted_bytea(cmp_lz4),
    t_lz4 atrest.encrypted_text(cmp_lz4),
    j_zstd atrest.encrypted_jsonb(cmp_zstd), b_zstd atrest.encrypted_bytea(cmp_zstd),
    t_zstd atrest.encrypted_text(cmp_zstd),
    j_none atrest.encrypted_jsonb(cmp_none), b_none atrest.encrypted_bytea(cmp_none),
    t_none atrest.encrypted_text(cmp_none));
-- row 1: cast from the plain types (sealed straight under the column's class); row 2:
-- literals (sealed under "default", which is lz4, then re-sealed under the column's class);
-- row 3: a short value, never compressed
INSERT INTO cmp.t SELECT 'cast', 1, d, convert_to(d::text, 'UTF8'), d::text,
                         d, convert_to(d::text, 'UTF8'), d::text,
                         d, convert_to(d::text, 'UTF8'), d::text
  FROM (SELECT :'doc'::jsonb AS d) s;
INSERT INTO cmp.t VALUES ('literal', 2, :'doc', :'doc', :'doc', :'doc', :'doc', :'doc',
                          :'doc', :'doc', :'doc');
INSERT INTO cmp.t VALUES ('short', 3, '{"a": 1}', '\x01', 'short', '{"a": 1}', '\x01', 'short',
                          '{"a": 1}', '\x01', 'short');

-- every value reads back intact
SELECT id,
       md5(j_lz4::jsonb::text) = md5(j_zstd::jsonb::text) AND md5(j_zstd::jsonb::text) = md5(j_none::jsonb::text)
         AND (id = 3 OR md5(j_zstd::jsonb::text) = :'doc_md5') AS jsonb_intact,
       b_lz4::bytea = b_zstd::bytea AND b_zstd::bytea = b_none::bytea
         AND (id = 3 OR length(b_zstd::bytea) >= :doc_len - 1000) AS bytea_intact,
       t_lz4::text = t_zstd::text AND t_zstd::text = t_none::text AS text_intact
  FROM cmp.t ORDER BY id;
-- the payload's compressor, as the header says
SELECT id, cls,
       (atrest.envelope(j_lz4)).compression AS j_lz4, (atrest.envelope(b_lz4)).compression AS b_lz4,
       (atrest.envelope(t_lz4)).compression AS t_lz4,
       (atrest.envelope(j_zstd)).compression AS j_zstd, (atrest.envelope(b_zstd)).compression AS b_zstd,
       (atrest.envelope(t_zstd)).compression AS t_zstd,
       (atrest.envelope(j_none)).compression AS j_none, (atrest.envelope(b_none)).compression AS b_none,
       (atrest.envelope(t_none)).compression AS t_none,
       (atrest.envelope(t_zstd)).compressed AS t_zstd_compressed
  FROM cmp.t ORDER BY id;
-- zstd stores the document in less room than lz4, which stores it in less than none
SELECT id, (atrest.envelope(j_zstd)).stored_bytes < (atrest.envelope(j_lz4)).stored_bytes AS jsonb_zstd_smaller,
       (atrest.envelope(j_lz4)).stored_bytes < (atrest.envelope(j_none)).stored_bytes AS jsonb_lz4_smaller,
       (atrest.envelope(t_zstd)).stored_bytes < (atrest.envelope(t_lz4)).stored_bytes AS text_zstd_smaller,
       (atrest.envelope(b_zstd)).stored_bytes < (atrest.envelope(b_lz4)).stored_bytes AS bytea_zstd_smaller,
       pg_column_size(t_zstd) < pg_column_size(t_lz4) AS column_size_smaller
  FROM cmp.t WHERE id IN (1, 2) ORDER BY id;
-- subscripts and the jsonb operators read zstd values too
SELECT j_zstd -> 0 ->> 'digest' = md5('1') AS first_digest, jsonb_array_length(j_zstd::jsonb) AS n
  FROM cmp.t WHERE id = 1;

-- The stored form: bit 1 of byte 1's low nibble is zstd, bit 0 LZ4 (byte 1 = kind << 4 | flags)
SELECT id, get_byte(cmp.raw(t_lz4), 1) & 15 AS lz4_flags, get_byte(cmp.raw(t_zstd), 1) & 15 AS zstd_flags,
       get_byte(cmp.raw(t_none), 1) & 15 AS none_flags
  FROM cmp.t ORDER BY id;

-- Re-encryption moves a class's compressed values to its compressor: zstd -> lz4 -> none,
-- and lz4 -> zstd.  Values sealed plain stay plain when the class starts compressing (they
-- were not worth compressing, or were sealed before; telling which takes decrypting them).
SELECT atrest.alter_key_class('cmp_zstd', 'lz4');
CALL atrest.reencrypt('cmp.t', 'j_zstd');
CALL atrest.reencrypt('cmp.t', 'b_zstd');
CALL atrest.reencrypt('cmp.t', 't_zstd');
SELECT id, (atrest.envelope(j_zstd)).compression AS j, (atrest.envelope(b_zstd)).compression AS b,
       (atrest.envelope(t_zstd)).compression AS t,
       md5(j_zstd::jsonb::text) = md5(j_lz4::jsonb::text) AND b_zstd::bytea = b_lz4::bytea
         AND t_zstd::text = t_lz4::text AS intact
  FROM cmp.t ORDER BY id;
SELECT atrest.alter_key_class('cmp_zstd', 'none');
CALL atrest.reencrypt('cmp.t', 't_zstd');
SELECT id, (atrest.envelope(t_zstd)).compression AS t, t_zstd::text = t_lz4::text AS intact
  FROM cmp.t ORDER BY id;
SELECT atrest.alter_key_class('cmp_zstd', 'zstd');
CALL atrest.reencrypt('cmp.t', 't_zstd');
SELECT id, (atrest.envelope(t_zstd)).compression AS t_stays_plain FROM cmp.t ORDER BY id;
SELECT atrest.alter_key_class('cmp_lz4', 'zstd');
CALL atrest.reencrypt('cmp.t', 'j_lz4');
CALL atrest.reencrypt('cmp.t', 't_lz4');
SELECT id, (atrest.envelope(j_lz4)).compression AS j, (atrest.envelope(t_lz4)).compression AS t,
       md5(j_lz4::jsonb::text) = md5(j_none::jsonb::text) AND t_lz4::text = t_none::text AS intact
  FROM cmp.t ORDER BY id;
SELECT operation, key_class, detail FROM atrest.key_events
 WHERE operation = 'alter_key_class' AND key_class LIKE 'cmp\_%' ORDER BY id;

-- Forged flags.  The flags are authenticated: moving a value to another compressor, or
-- marking a plain one compressed, breaks the tag; both compressors at once is refused
-- from the header alone, as is zstd in format 1 (1.0 never wrote it).
INSERT INTO cmp.t (cls, id, t_zstd) VALUES ('forge', 4, :'doc');
SELECT (atrest.envelope(t_zstd)).compression FROM cmp.t WHERE id = 4;
CREATE TABLE cmp.forged (what text, v atrest.encrypted_text);  -- no class: stored as given
INSERT INTO cmp.forged
SELECT 'zstd -> lz4', cmp.forge_text(set_byte(r, 1, (get_byte(r, 1) & 240) | 1)) FROM
  (SELECT cmp.raw(t_zstd) r FROM cmp.t WHERE id = 4) s
UNION ALL
SELECT 'zstd flag cleared', cmp.forge_text(set_byte(r, 1, get_byte(r, 1) & 240)) FROM
  (SELECT cmp.raw(t_zstd) r FROM cmp.t WHERE id = 4) s
UNION ALL
SELECT 'zstd payload bit', cmp.forge_text(set_byte(r, 60, get_byte(r, 60) # 4)) FROM
  (SELECT cmp.raw(t_zstd) r FROM cmp.t WHERE id = 4) s
UNION ALL
SELECT 'zstd and lz4', cmp.forge_text(set_byte(r, 1, get_byte(r, 1) | 3)) FROM
  (SELECT cmp.raw(t_zstd) r FROM cmp.t WHERE id = 4) s
UNION ALL
SELECT 'zstd in format 1', cmp.forge_text(set_byte(r, 0, 1)) FROM
  (SELECT cmp.raw(t_zstd) r FROM cmp.t WHERE id = 4) s
UNION ALL
SELECT 'zstd flag on a plain value', cmp.forge_text(set_byte(r, 1, get_byte(r, 1) | 2)) FROM
  (SELECT cmp.raw(t_none) r FROM cmp.t WHERE id = 1) s;
SELECT what, cmp.try(format('SELECT v::text FROM cmp.forged WHERE what = %L', what)) AS result,
       cmp.try(format('SELECT atrest.envelope(v) FROM cmp.forged WHERE what = %L', what)) AS header
  FROM cmp.forged ORDER BY what;
