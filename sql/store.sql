-- The models and analyze results store: life cycle, delete, expiry at read
-- time, bad input, privileges of atrest_service.  (Retention policies and the
-- purge: retention.sql.  Ciphertext on disk and pg_cron: test/t/030, 031.)

-- try(sql): run a statement, return 'ok' or 'SQLSTATE: message'.
CREATE FUNCTION pg_temp.try(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END;
$$;

-- The settings exist once the module is loaded: at server start with shared_preload_libraries,
-- else at the first use of an encrypted value in a session, or by LOAD, as here (make
-- installcheck runs against servers that do not preload pg_atrest).
LOAD 'pg_atrest';
SHOW atrest.result_ttl;

--
-- Models
--
SELECT atrest.create_model('prebuilt-invoice', 'Invoices',
    '{"fields": ["InvoiceId", "InvoiceTotal"]}', '\x0102030405');
SELECT atrest.create_model('contoso.custom_v2~beta');
SELECT description, definition, artifact, created_at <= clock_timestamp() AS created
  FROM atrest.get_model('prebuilt-invoice');
SELECT description, definition, artifact FROM atrest.get_model('contoso.custom_v2~beta');
-- the columns are encrypted under the key class 'model'
SELECT (atrest.envelope(definition)).key_class AS definition_class,
       (atrest.envelope(artifact)).key_class AS artifact_class
  FROM atrest.models WHERE model_id = 'prebuilt-invoice';
SELECT pg_temp.try($$SELECT atrest.create_model('prebuilt-invoice')$$);
SELECT pg_temp.try($$SELECT atrest.get_model('no-such-model')$$);
SELECT atrest.delete_model('contoso.custom_v2~beta'), atrest.delete_model('contoso.custom_v2~beta');

--
-- Analyze results: running, succeeded, fetched
--
SELECT atrest.begin_analyze('prebuilt-invoice') AS rid \gset
SELECT status, created_at = last_updated_at AS untouched, result, error
  FROM atrest.get_analyze_result('prebuilt-invoice', :'rid');
SELECT completed_at IS NULL AS not_completed, expires_at IS NULL AS no_expiry
  FROM atrest.analyze_results WHERE result_id = :'rid';
SELECT atrest.complete_analyze(:'rid',
    '{"content": "Invoice INV-100", "documents": [{"docType": "invoice", "fields": {"InvoiceTotal": 42}}]}')
    AS expiry \gset
SELECT status, last_updated_at > created_at AS updated,
       result -> 'documents' -> 0 -> 'fields' ->> 'InvoiceTotal' AS total, error
  FROM atrest.get_analyze_result('prebuilt-invoice', :'rid');
-- completion fixed the expiry: completed_at + atrest.result_ttl
SELECT expires_at = completed_at + interval '24 hours' AS expiry_is_24h,
       expires_at = :'expiry'::timestamptz AS returned_expiry,
       completed_at = last_updated_at AS completed_now
  FROM atrest.analyze_results WHERE result_id = :'rid';
SELECT (atrest.envelope(result)).key_class FROM atrest.analyze_results WHERE result_id = :'rid';
-- a result completes once
SELECT pg_temp.try(format('SELECT atrest.complete_analyze(%L, ''{}'')', :'rid'));
SELECT pg_temp.try(format('SELECT atrest.fail_analyze(%L, ''{}'')', :'rid'));

-- failed
SELECT atrest.begin_analyze('prebuilt-invoice') AS fid \gset
SELECT atrest.fail_analyze(:'fid', '{"code": "InvalidContent", "message": "The file is corrupted."}')
    > clock_timestamp() AS expires_later;
SELECT status, result, error ->> 'code' AS code
  FROM atrest.get_analyze_result('prebuilt-invoice', :'fid');
SELECT (expires_at - completed_at) AS retention FROM atrest.analyze_results WHERE result_id = :'fid';

--
-- Delete
--
-- the row goes with the caller's transaction
BEGIN;
SELECT atrest.delete_analyze_result('prebuilt-invoice', :'rid');
ROLLBACK;
SELECT status FROM atrest.get_analyze_result('prebuilt-invoice', :'rid');
-- a wrong model id deletes nothing
SELECT atrest.create_model('prebuilt-receipt');
SELECT atrest.delete_analyze_result('prebuilt-receipt', :'rid');
SELECT status FROM atrest.get_analyze_result('prebuilt-invoice', :'rid');
-- nor can it read
SELECT pg_temp.try(format('SELECT atrest.get_analyze_result(%L, %L)', 'prebuilt-receipt', :'rid'));
-- delete; a second delete finds nothing; get raises AT404
SELECT atrest.delete_analyze_result('prebuilt-invoice', :'rid') AS first_delete;
SELECT atrest.delete_analyze_result('prebuilt-invoice', :'rid') AS second_delete;
SELECT count(*) FROM atrest.analyze_results WHERE result_id = :'rid';
SELECT pg_temp.try(format('SELECT atrest.get_analyze_result(%L, %L)', 'prebuilt-invoice', :'rid'));
\set SHOW_CONTEXT never
SELECT * FROM atrest.get_analyze_result('prebuilt-invoice', :'rid');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- an unknown result id gives the same error
SELECT pg_temp.try($$SELECT atrest.get_analyze_result('prebuilt-invoice', gen_random_uuid())$$);
SELECT pg_temp.try($$SELECT atrest.complete_analyze(gen_random_uuid(), '{}')$$);
SELECT pg_temp.try($$SELECT atrest.fail_analyze(gen_random_uuid(), '{}')$$);
SELECT atrest.delete_analyze_result('prebuilt-invoice', gen_random_uuid());

--
-- Expiry is enforced at read time, before any purge
--
SET atrest.result_ttl = '1 second';
SHOW atrest.result_ttl;
SELECT atrest.begin_analyze('prebuilt-invoice') AS eid \gset
SELECT atrest.complete_analyze(:'eid', '{"content": "short-lived"}') IS NOT NULL AS completed;
SELECT expires_at - completed_at AS retention FROM atrest.analyze_results WHERE result_id = :'eid';
SELECT status, result ->> 'content' AS content FROM atrest.get_analyze_result('prebuilt-invoice', :'eid');
-- the expiry was fixed at completion: a longer TTL now does not extend it
RESET atrest.result_ttl;
SELECT pg_sleep(1.2);
SELECT pg_temp.try(format('SELECT atrest.get_analyze_result(%L, %L)', 'prebuilt-invoice', :'eid'));
-- the row is still there (no purge ran), it is just never returned
SELECT count(*) AS not_yet_purged FROM atrest.analyze_results WHERE result_id = :'eid';
-- an expired result cannot be completed again, and deleting it reports false
SELECT pg_temp.try(format('SELECT atrest.complete_analyze(%L, ''{}'')', :'eid'));
SELECT atrest.delete_analyze_result('prebuilt-invoice', :'eid') AS expired_delete;
SELECT count(*) FROM atrest.analyze_results WHERE result_id = :'eid';
-- and the other way round: a shorter TTL later does not shorten a fixed expiry
SELECT atrest.begin_analyze('prebuilt-invoice') AS lid \gset
SELECT atrest.complete_analyze(:'lid', '{"content": "long-lived"}') IS NOT NULL AS completed;
SET atrest.result_ttl = '1 second';
SELECT pg_sleep(1.2);
SELECT status, result ->> 'content' AS content FROM atrest.get_analyze_result('prebuilt-invoice', :'lid');
RESET atrest.result_ttl;
-- a running result has no expiry
SELECT atrest.begin_analyze('prebuilt-invoice') AS running_id \gset
SELECT status FROM atrest.get_analyze_result('prebuilt-invoice', :'running_id');

--
-- Bad input
--
-- model ids: 2 to 64 characters of [a-zA-Z0-9._~-], starting with a letter or digit
SELECT CASE WHEN length(id) > 20 THEN left(id, 6) || '... (' || length(id) || ' characters)'
            ELSE replace(id, chr(10), '\n') END AS model_id,
       split_part(pg_temp.try(format('SELECT atrest.create_model(%L)', id)), ':', 1) AS outcome
  FROM (VALUES ('ab'), ('A1._~-'), (repeat('x', 64)),
               ('a'), (''), (repeat('x', 65)), ('-ab'), ('.ab'), ('ab/cd'), ('a b'),
               ('ab' || chr(10)), ('modèle'), ('ab;DROP')) AS v(id);
SELECT atrest.get_model('bad/id');
SELECT pg_temp.try($$SELECT atrest.begin_analyze('x')$$);
SELECT pg_temp.try($$SELECT atrest.get_analyze_result('bad id', gen_random_uuid())$$);
SELECT pg_temp.try($$SELECT atrest.delete_analyze_result('-x', gen_random_uuid())$$);
SELECT pg_temp.try($$SELECT atrest.delete_model('x')$$);
-- unknown model
SELECT pg_temp.try($$SELECT atrest.begin_analyze('no-such-model')$$);
-- malformed result ids are rejected by the uuid type
SELECT pg_temp.try($$SELECT atrest.get_analyze_result('prebuilt-invoice', 'not-a-uuid')$$);
-- NULLs
SELECT pg_temp.try($$SELECT atrest.create_model(NULL)$$);
SELECT pg_temp.try($$SELECT atrest.get_model(NULL)$$);
SELECT pg_temp.try($$SELECT atrest.delete_model(NULL)$$);
SELECT pg_temp.try($$SELECT atrest.begin_analyze(NULL)$$);
SELECT pg_temp.try($$SELECT atrest.complete_analyze(NULL, '{}')$$);
SELECT pg_temp.try(format('SELECT atrest.complete_analyze(%L, NULL)', :'running_id'));
SELECT pg_temp.try(format('SELECT atrest.fail_analyze(%L, NULL)', :'running_id'));
SELECT pg_temp.try($$SELECT atrest.get_analyze_result(NULL, gen_random_uuid())$$);
SELECT pg_temp.try($$SELECT atrest.get_analyze_result('prebuilt-invoice', NULL)$$);
SELECT pg_temp.try($$SELECT atrest.delete_analyze_result(NULL, gen_random_uuid())$$);
SELECT pg_temp.try($$SELECT atrest.delete_analyze_result('prebuilt-invoice', NULL)$$);
-- the NULL checks left the running result alone
SELECT status FROM atrest.get_analyze_result('prebuilt-invoice', :'running_id');
-- the tables enforce the same rules
SELECT pg_temp.try($$INSERT INTO atrest.models (model_id) VALUES ('-bad')$$);
SELECT pg_temp.try(format('UPDATE atrest.analyze_results SET status = %L WHERE result_id = %L',
                          'done', :'running_id'));

--
-- Deleting a model deletes its results
--
SELECT atrest.delete_model('prebuilt-invoice');
SELECT pg_temp.try(format('SELECT atrest.get_analyze_result(%L, %L)', 'prebuilt-invoice', :'fid'));
SELECT count(*) FROM atrest.analyze_results;

--
-- Privileges: atrest_service may call the store functions and nothing else
--
SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname = 'atrest_service';
-- functions atrest_service may run beyond what PUBLIC may
SELECT p.oid::regprocedure AS granted, p.prosecdef AS security_definer,
       p.proconfig AS config
  FROM pg_proc p
 WHERE p.pronamespace = 'atrest'::regnamespace
   AND has_function_privilege('atrest_service', p.oid, 'EXECUTE')
   AND NOT has_function_privilege('public', p.oid, 'EXECUTE')
 ORDER BY p.oid::regprocedure::text;
-- no table, view or sequence of the schema
SELECT c.oid::regclass AS readable
  FROM pg_class c
 WHERE c.relnamespace = 'atrest'::regnamespace AND c.relkind IN ('r', 'v', 'S', 'p')
   AND (has_table_privilege('atrest_service', c.oid, 'SELECT')
        OR has_table_privilege('atrest_service', c.oid, 'INSERT')
        OR has_table_privilege('atrest_service', c.oid, 'UPDATE')
        OR has_table_privilege('atrest_service', c.oid, 'DELETE'));
SET ROLE atrest_service;
SELECT atrest.create_model('service-model', 'made by the service', '{"k": "v"}');
SELECT atrest.begin_analyze('service-model') AS sid \gset
SELECT atrest.complete_analyze(:'sid', '{"ok": true}') IS NOT NULL AS completed;
SELECT status, result FROM atrest.get_analyze_result('service-model', :'sid');
SELECT definition FROM atrest.get_model('service-model');
SELECT atrest.delete_analyze_result('service-model', :'sid');
SELECT atrest.delete_model('service-model');
SELECT pg_temp.try('SELECT count(*) FROM atrest.analyze_results');
SELECT pg_temp.try('SELECT count(*) FROM atrest.models');
SELECT pg_temp.try('SELECT count(*) FROM atrest.key_events');
SELECT pg_temp.try('SELECT count(*) FROM atrest.data_keys');
SELECT pg_temp.try('SELECT count(*) FROM atrest.database_keys');
SELECT pg_temp.try($$SELECT atrest.rotate_data_key('result')$$);
SELECT pg_temp.try('SELECT atrest.rotate_database_key()');
SELECT pg_temp.try('SELECT atrest.purge_expired()');
SELECT pg_temp.try($$SELECT atrest.add_retention_policy('atrest.models', 'created_at', '1 day')$$);
SELECT pg_temp.try('SET atrest.result_ttl = ''1 year''');
RESET ROLE;
