-- Key hierarchy: status, rotation, re-encryption, privileges.

SELECT coalesce(max(id), 0) AS first_event FROM atrest.key_events \gset
\x on
SELECT protector, provider, key_uri, key_version, database_key_id IS NOT NULL AS has_database_key,
       active_data_key_versions ?& array['default', 'model', 'result'] AS has_builtin_classes,
       data_key_versions >= 3 AS has_data_keys, cache_ttl,
       protector_source LIKE '%not for production%' AS generated_key_warned
  FROM atrest.key_status;
\x off

CREATE TABLE docs (id int PRIMARY KEY, doc atrest.encrypted_jsonb(result), note atrest.encrypted_text(model));
INSERT INTO docs SELECT i, jsonb_build_object('i', i, 'pad', repeat('p', i * 40)), 'note ' || i
  FROM generate_series(1, 30) i;

SELECT (atrest.envelope(doc)).key_version AS v, count(*) FROM docs GROUP BY 1;
SELECT pg_relation_filenode('docs') AS docs_filenode \gset

-- a new data-key version: new writes use it, old values stay readable
SELECT * FROM atrest.rotate_data_key('result');
INSERT INTO docs VALUES (31, '{"i": 31}', 'note 31');
SELECT (atrest.envelope(doc)).key_version AS v, count(*) FROM docs GROUP BY 1 ORDER BY 1;
SELECT count(*) FILTER (WHERE (doc ->> 'i')::int = id) AS readable FROM docs;

-- rotating every class
SELECT * FROM atrest.rotate_data_key() WHERE key_class IN ('default', 'model', 'result') ORDER BY key_class;
SELECT atrest.rotate_data_key('nosuchclass');

-- re-encryption moves every value to the active version, in batches
CALL atrest.reencrypt('docs', 'doc', 7);
SELECT (atrest.envelope(doc)).key_version AS v, count(*) FROM docs GROUP BY 1;
CALL atrest.reencrypt('docs', 'doc');
CALL atrest.reencrypt('docs', 'note', 1000);
SELECT DISTINCT (atrest.envelope(note)).key_class, (atrest.envelope(note)).key_version FROM docs;
SELECT count(*) FILTER (WHERE (doc ->> 'i')::int = id AND note = 'note ' || id) AS readable FROM docs;

-- rows were updated in place, the table was not rewritten
SELECT pg_relation_filenode('docs') = :docs_filenode AS same_filenode;
CALL atrest.reencrypt('docs', 'id');
CALL atrest.reencrypt('docs', 'nosuchcolumn');
CALL atrest.reencrypt('nosuchtable', 'doc');
CALL atrest.reencrypt('docs', 'doc', 0);

-- a new database key re-wraps the data keys; values are untouched
CREATE TEMP TABLE before_rotation AS SELECT database_key_id FROM atrest.key_status;
SELECT xmin AS row_xmin FROM docs WHERE id = 1 \gset
SELECT atrest.rotate_database_key() <> (SELECT database_key_id FROM before_rotation) AS new_key;
SELECT count(*) AS database_key_rows, count(*) FILTER (WHERE active) AS active_rows,
       count(*) FILTER (WHERE NOT active AND wrapped IS NULL) AS retired_and_destroyed
  FROM atrest.database_keys;
SELECT count(DISTINCT database_key_id) AS wrapping_keys FROM atrest.data_keys;
SELECT xmin = :'row_xmin' AS row_untouched FROM docs WHERE id = 1;
SELECT count(*) FILTER (WHERE (doc ->> 'i')::int = id) AS readable FROM docs;

-- every key operation is recorded
SELECT operation, key_class, key_version, outcome, role_name FROM atrest.key_events
 WHERE id > :first_event AND coalesce(key_class, '') IN ('', 'default', 'model', 'result') ORDER BY id;

-- a rotation that rolls back leaves this session able to read and write
BEGIN;
SELECT key_class, key_version FROM atrest.rotate_data_key('result');
INSERT INTO docs VALUES (100, '{"i": 100}', 'rolled back');
ROLLBACK;
INSERT INTO docs VALUES (32, '{"i": 32}', 'note 32');
SELECT (atrest.envelope(doc)).key_version FROM docs WHERE id = 32;
SELECT count(*) FILTER (WHERE (doc ->> 'i')::int = id) AS readable FROM docs;

-- a plain role uses the types in its own tables but cannot touch keys
CREATE ROLE atrest_regress_user;
CREATE SCHEMA regress_user_schema AUTHORIZATION atrest_regress_user;
SET ROLE atrest_regress_user;
CREATE TABLE regress_user_schema.mine (v atrest.encrypted_jsonb(result));
INSERT INTO regress_user_schema.mine VALUES ('{"mine": true}');
SELECT v FROM regress_user_schema.mine;
SELECT * FROM atrest.data_keys;
SELECT * FROM atrest.database_keys;
SELECT * FROM atrest.key_classes;
SELECT * FROM atrest.key_events;
SELECT * FROM atrest.key_status;
SELECT atrest.rotate_data_key();
SELECT atrest.rotate_database_key();
SELECT atrest.create_key_class('mine');
SELECT atrest.alter_key_class('mine', 'none');
SELECT atrest.enable_cmk('pkcs11', 'pkcs11:token=t;object=o');
SELECT atrest.disable_cmk();
SELECT atrest.recheck_keys();
CALL atrest.reencrypt('regress_user_schema.mine', 'v');
RESET ROLE;
DROP SCHEMA regress_user_schema CASCADE;
DROP ROLE atrest_regress_user;

-- settings that name files, commands, modules or PINs are superuser-only
SELECT name, context FROM pg_settings
 WHERE name IN ('atrest.service_key_command', 'atrest.service_key_file', 'atrest.pkcs11_module',
                'atrest.pkcs11_pin_file', 'atrest.kms_command', 'atrest.key_cache_ttl')
 ORDER BY name;
CREATE ROLE atrest_regress_user2;
SET ROLE atrest_regress_user2;
-- 42501 (insufficient_privilege): PostgreSQL's own wording of this error changed in 16
\set VERBOSITY sqlstate
SHOW atrest.service_key_file;
SHOW atrest.service_key_command;
SHOW atrest.pkcs11_module;
SHOW atrest.pkcs11_pin_file;
SHOW atrest.kms_command;
\set VERBOSITY default
-- of the six, pg_settings shows this role only the one that names nothing
SELECT name FROM pg_settings
 WHERE name IN ('atrest.service_key_command', 'atrest.service_key_file', 'atrest.pkcs11_module',
                'atrest.pkcs11_pin_file', 'atrest.kms_command', 'atrest.key_cache_ttl')
 ORDER BY name;
SET atrest.key_cache_ttl = 1;
RESET ROLE;
DROP ROLE atrest_regress_user2;
