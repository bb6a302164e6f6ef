-- NULL arguments.  Every function and procedure of the extension answers a NULL
-- argument that means nothing with SQLSTATE 22004 and a message naming the argument:
-- never a NULL result that looks like success, never a silent no-op.  Each call below
-- passes exactly one NULL, with arguments that would otherwise be valid, so the NULL is
-- the only thing wrong with it.
--
-- Where NULL does mean something it is accepted: the key class of rotate_data_key()
-- and rekey() (NULL: every class), the optional arguments of create_model(), the
-- INOUT rows_rewritten of reencrypt.  The types' I/O functions, the casts, decrypt(),
-- envelope(), _reseal() and _needs_reseal() are STRICT: a NULL value in, a NULL value
-- out (sql/hostile.sql).

-- "ok", or the SQLSTATE and message the statement ended with
CREATE FUNCTION pg_temp.try(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    st text; msg text;
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
    RETURN st || ': ' || msg;
END
$$;

CREATE TABLE nulls_t (id int, doc atrest.encrypted_text, at timestamptz);
INSERT INTO nulls_t VALUES (1, 'a value', now());

CREATE TEMP TABLE null_calls (n serial, fn regprocedure, call text);
INSERT INTO null_calls (fn, call) VALUES
    -- key management
    ('atrest.create_key_class(text, boolean)', 'SELECT atrest.create_key_class(NULL)'),
    ('atrest.create_key_class(text, boolean)', 'SELECT atrest.create_key_class(''nulls_class'', NULL)'),
    ('atrest.alter_key_class(text, boolean)', 'SELECT atrest.alter_key_class(NULL, true)'),
    ('atrest.alter_key_class(text, boolean)', 'SELECT atrest.alter_key_class(''default'', NULL)'),
    ('atrest.enable_cmk(text, text)', 'SELECT atrest.enable_cmk(NULL, ''kms:nulls'')'),
    ('atrest.enable_cmk(text, text)', 'SELECT atrest.enable_cmk(''command'', NULL)'),
    ('atrest.provider_selftest(text, text)', 'SELECT atrest.provider_selftest(NULL, ''kms:nulls'')'),
    ('atrest.provider_selftest(text, text)', 'SELECT atrest.provider_selftest(''command'', NULL)'),
    ('atrest.retire_data_key(text, integer)', 'SELECT atrest.retire_data_key(NULL, 1)'),
    ('atrest.retire_data_key(text, integer)', 'SELECT atrest.retire_data_key(''default'', NULL)'),
    ('atrest._active_key_version(integer)', 'SELECT atrest._active_key_version(NULL)'),
    -- re-encryption
    ('atrest.reencrypt(regclass, name, integer, interval, bigint)', 'CALL atrest.reencrypt(NULL, ''doc'')'),
    ('atrest.reencrypt(regclass, name, integer, interval, bigint)', 'CALL atrest.reencrypt(''nulls_t'', NULL)'),
    ('atrest.reencrypt(regclass, name, integer, interval, bigint)', 'CALL atrest.reencrypt(''nulls_t'', ''doc'', NULL)'),
    ('atrest.reencrypt(regclass, name, integer, interval, bigint)', 'CALL atrest.reencrypt(''nulls_t'', ''doc'', 10, NULL)'),
    ('atrest._reencrypt_targets(regclass, name)', 'SELECT atrest._reencrypt_targets(NULL, ''doc'')'),
    ('atrest._reencrypt_targets(regclass, name)', 'SELECT atrest._reencrypt_targets(''nulls_t'', NULL)'),
    ('atrest._reencrypt_batch(regclass, regclass, name, integer)', 'SELECT atrest._reencrypt_batch(NULL, ''nulls_t'', ''doc'', 10)'),
    ('atrest._reencrypt_batch(regclass, regclass, name, integer)', 'SELECT atrest._reencrypt_batch(''nulls_t'', NULL, ''doc'', 10)'),
    ('atrest._reencrypt_batch(regclass, regclass, name, integer)', 'SELECT atrest._reencrypt_batch(''nulls_t'', ''nulls_t'', NULL, 10)'),
    ('atrest._reencrypt_batch(regclass, regclass, name, integer)', 'SELECT atrest._reencrypt_batch(''nulls_t'', ''nulls_t'', ''doc'', NULL)'),
    ('atrest._reencrypt_pending(regclass, regclass, name)', 'SELECT atrest._reencrypt_pending(NULL, ''nulls_t'', ''doc'')'),
    ('atrest._reencrypt_pending(regclass, regclass, name)', 'SELECT atrest._reencrypt_pending(''nulls_t'', NULL, ''doc'')'),
    ('atrest._reencrypt_pending(regclass, regclass, name)', 'SELECT atrest._reencrypt_pending(''nulls_t'', ''nulls_t'', NULL)'),
    -- encrypting an existing column
    ('atrest.encrypt_column(regclass, name, text, integer)', 'CALL atrest.encrypt_column(NULL, ''doc'')'),
    ('atrest.encrypt_column(regclass, name, text, integer)', 'CALL atrest.encrypt_column(''nulls_t'', NULL)'),
    ('atrest.encrypt_column(regclass, name, text, integer)', 'CALL atrest.encrypt_column(''nulls_t'', ''doc'', NULL)'),
    ('atrest.encrypt_column(regclass, name, text, integer)', 'CALL atrest.encrypt_column(''nulls_t'', ''doc'', ''default'', NULL)'),
    ('atrest.decrypt_column(regclass, name, integer)', 'CALL atrest.decrypt_column(NULL, ''doc'')'),
    ('atrest.decrypt_column(regclass, name, integer)', 'CALL atrest.decrypt_column(''nulls_t'', NULL)'),
    ('atrest.decrypt_column(regclass, name, integer)', 'CALL atrest.decrypt_column(''nulls_t'', ''doc'', NULL)'),
    -- the models and analyze-results store
    ('atrest._check_model_id(text)', 'SELECT atrest._check_model_id(NULL)'),
    ('atrest.create_model(text, text, jsonb, bytea)', 'SELECT atrest.create_model(NULL)'),
    ('atrest.get_model(text)', 'SELECT atrest.get_model(NULL)'),
    ('atrest.delete_model(text)', 'SELECT atrest.delete_model(NULL)'),
    ('atrest.begin_analyze(text, bytea, text)', 'SELECT atrest.begin_analyze(NULL)'),
    ('atrest.begin_analyze_with_id(uuid, text, bytea, text)', 'SELECT atrest.begin_analyze_with_id(NULL, ''nulls-model'')'),
    ('atrest.begin_analyze_with_id(uuid, text, bytea, text)', 'SELECT atrest.begin_analyze_with_id(gen_random_uuid(), NULL)'),
    ('atrest.begin_analyze_batch_with_id(uuid, text, jsonb)', 'SELECT atrest.begin_analyze_batch_with_id(NULL, ''nulls-model'', ''{}'')'),
    ('atrest.begin_analyze_batch_with_id(uuid, text, jsonb)', 'SELECT atrest.begin_analyze_batch_with_id(gen_random_uuid(), NULL, ''{}'')'),
    ('atrest.begin_analyze_batch_with_id(uuid, text, jsonb)', 'SELECT atrest.begin_analyze_batch_with_id(gen_random_uuid(), ''nulls-model'', NULL)'),
    ('atrest.get_analyze_document(text, uuid)', 'SELECT atrest.get_analyze_document(NULL, gen_random_uuid())'),
    ('atrest.get_analyze_document(text, uuid)', 'SELECT atrest.get_analyze_document(''nulls-model'', NULL)'),
    ('atrest.put_analyze_output(uuid, text, text, bytea)', 'SELECT atrest.put_analyze_output(NULL, ''pdf'', NULL, ''\x01'')'),
    ('atrest.put_analyze_output(uuid, text, text, bytea)', 'SELECT atrest.put_analyze_output(gen_random_uuid(), NULL, NULL, ''\x01'')'),
    ('atrest.put_analyze_output(uuid, text, text, bytea)', 'SELECT atrest.put_analyze_output(gen_random_uuid(), ''pdf'', NULL, NULL)'),
    ('atrest.get_analyze_result_pdf(text, uuid)', 'SELECT atrest.get_analyze_result_pdf(NULL, gen_random_uuid())'),
    ('atrest.get_analyze_result_pdf(text, uuid)', 'SELECT atrest.get_analyze_result_pdf(''nulls-model'', NULL)'),
    ('atrest.get_analyze_result_figure(text, uuid, text)', 'SELECT atrest.get_analyze_result_figure(NULL, gen_random_uuid(), ''1.1'')'),
    ('atrest.get_analyze_result_figure(text, uuid, text)', 'SELECT atrest.get_analyze_result_figure(''nulls-model'', NULL, ''1.1'')'),
    ('atrest.get_analyze_result_figure(text, uuid, text)', 'SELECT atrest.get_analyze_result_figure(''nulls-model'', gen_random_uuid(), NULL)'),
    ('atrest.begin_analyze_batch(text, jsonb)', 'SELECT atrest.begin_analyze_batch(NULL, ''{}'')'),
    ('atrest.begin_analyze_batch(text, jsonb)', 'SELECT atrest.begin_analyze_batch(''nulls-model'', NULL)'),
    ('atrest.update_analyze_batch(uuid, text, integer, jsonb)', 'SELECT atrest.update_analyze_batch(NULL, ''running'', 1, NULL)'),
    ('atrest.update_analyze_batch(uuid, text, integer, jsonb)', 'SELECT atrest.update_analyze_batch(gen_random_uuid(), NULL, 1, NULL)'),
    ('atrest.get_analyze_batch_result(text, uuid)', 'SELECT atrest.get_analyze_batch_result(NULL, gen_random_uuid())'),
    ('atrest.get_analyze_batch_result(text, uuid)', 'SELECT atrest.get_analyze_batch_result(''nulls-model'', NULL)'),
    ('atrest.list_analyze_batch_results(text)', 'SELECT atrest.list_analyze_batch_results(NULL)'),
    ('atrest.delete_analyze_batch_result(text, uuid)', 'SELECT atrest.delete_analyze_batch_result(NULL, gen_random_uuid())'),
    ('atrest.delete_analyze_batch_result(text, uuid)', 'SELECT atrest.delete_analyze_batch_result(''nulls-model'', NULL)'),
    ('atrest._finish_analyze(uuid, text, jsonb)', 'SELECT atrest._finish_analyze(NULL, ''succeeded'', ''{}'')'),
    ('atrest._finish_analyze(uuid, text, jsonb)', 'SELECT atrest._finish_analyze(gen_random_uuid(), ''succeeded'', NULL)'),
    ('atrest.complete_analyze(uuid, jsonb)', 'SELECT atrest.complete_analyze(NULL, ''{}'')'),
    ('atrest.complete_analyze(uuid, jsonb)', 'SELECT atrest.complete_analyze(gen_random_uuid(), NULL)'),
    ('atrest.fail_analyze(uuid, jsonb)', 'SELECT atrest.fail_analyze(NULL, ''{}'')'),
    ('atrest.fail_analyze(uuid, jsonb)', 'SELECT atrest.fail_analyze(gen_random_uuid(), NULL)'),
    ('atrest.get_analyze_result(text, uuid)', 'SELECT atrest.get_analyze_result(NULL, gen_random_uuid())'),
    ('atrest.get_analyze_result(text, uuid)', 'SELECT atrest.get_analyze_result(''nulls-model'', NULL)'),
    ('atrest.delete_analyze_result(text, uuid)', 'SELECT atrest.delete_analyze_result(NULL, gen_random_uuid())'),
    ('atrest.delete_analyze_result(text, uuid)', 'SELECT atrest.delete_analyze_result(''nulls-model'', NULL)'),
    -- retention
    ('atrest.add_retention_policy(regclass, name, interval)', 'SELECT atrest.add_retention_policy(NULL, ''at'', ''1 day'')'),
    ('atrest.add_retention_policy(regclass, name, interval)', 'SELECT atrest.add_retention_policy(''nulls_t'', NULL, ''1 day'')'),
    ('atrest.add_retention_policy(regclass, name, interval)', 'SELECT atrest.add_retention_policy(''nulls_t'', ''at'', NULL)'),
    ('atrest.remove_retention_policy(regclass)', 'SELECT atrest.remove_retention_policy(NULL)'),
    ('atrest.purge_expired(integer)', 'SELECT atrest.purge_expired(NULL)'),
    ('atrest.purge_expired_job(integer)', 'CALL atrest.purge_expired_job(NULL)'),
    ('atrest._purge_batch(regclass, name, timestamptz, integer)', 'SELECT atrest._purge_batch(NULL, ''at'', now(), 10)'),
    ('atrest._purge_batch(regclass, name, timestamptz, integer)', 'SELECT atrest._purge_batch(''nulls_t'', NULL, now(), 10)'),
    ('atrest._purge_batch(regclass, name, timestamptz, integer)', 'SELECT atrest._purge_batch(''nulls_t'', ''at'', NULL, 10)'),
    ('atrest._purge_batch(regclass, name, timestamptz, integer)', 'SELECT atrest._purge_batch(''nulls_t'', ''at'', now(), NULL)'),
    ('atrest._expired_rows(regclass, name, timestamptz)', 'SELECT atrest._expired_rows(NULL, ''at'', now())'),
    ('atrest._expired_rows(regclass, name, timestamptz)', 'SELECT atrest._expired_rows(''nulls_t'', NULL, now())'),
    ('atrest._expired_rows(regclass, name, timestamptz)', 'SELECT atrest._expired_rows(''nulls_t'', ''at'', NULL)'),
    -- pg_cron jobs (the NULL is refused before pg_cron is looked for)
    ('atrest.schedule_purge(name, text)', 'SELECT atrest.schedule_purge(NULL)'),
    ('atrest.schedule_purge(name, text)', 'SELECT atrest.schedule_purge(current_database(), NULL)'),
    ('atrest.unschedule_purge(name)', 'SELECT atrest.unschedule_purge(NULL)'),
    ('atrest.schedule_rewrap(text, name)', 'SELECT atrest.schedule_rewrap(NULL)'),
    ('atrest.schedule_rewrap(text, name)', 'SELECT atrest.schedule_rewrap(''0 * * * *'', NULL)'),
    ('atrest.unschedule_rewrap(name)', 'SELECT atrest.unschedule_rewrap(NULL)'),
    ('atrest._schedule_job(text, name, text, text, text)', 'SELECT atrest._schedule_job(''j'', NULL, ''* * * * *'', ''SELECT 1'', '''')'),
    ('atrest._schedule_job(text, name, text, text, text)', 'SELECT atrest._schedule_job(''j'', current_database(), NULL, ''SELECT 1'', '''')'),
    ('atrest._unschedule_job(text, name, text)', 'SELECT atrest._unschedule_job(''j'', NULL, '''')');

SELECT call, pg_temp.try(call) AS outcome FROM null_calls ORDER BY n;

-- Nothing above changed anything.
SELECT count(*) AS classes_named_nulls FROM atrest.key_classes WHERE name = 'nulls_class';
SELECT protector FROM atrest.key_status;
SELECT count(*) AS policies_on_nulls_t FROM atrest.retention_policies WHERE rel = 'nulls_t'::regclass;
SELECT id, doc FROM nulls_t;

-- The functions with arguments whose NULLs are not tried above, and why:
--   rotate_data_key(text), rekey(text): NULL means every class;
--   _cron_job_name, _require_pg_cron, _record_purge_run, _get_analyze_output,
--   _convert_column (the steps of encrypt_column/decrypt_column are STRICT): internal,
--   called only by the functions above with arguments they have checked or that are
--   constants.
-- A function added to the extension shows up here (or below) until it is tried above.
SELECT p.oid::regprocedure AS nulls_not_tried
  FROM pg_proc p
 WHERE p.pronamespace = 'atrest'::regnamespace AND p.pronargs > 0 AND NOT p.proisstrict
   AND p.prokind IN ('f', 'p')
   AND NOT EXISTS (SELECT 1 FROM null_calls c WHERE c.fn = p.oid)
 ORDER BY p.oid::regprocedure::text COLLATE "C";

-- The STRICT functions: a NULL value in, a NULL value out.
SELECT p.oid::regprocedure AS strict_function
  FROM pg_proc p
 WHERE p.pronamespace = 'atrest'::regnamespace AND p.proisstrict
 ORDER BY p.oid::regprocedure::text COLLATE "C";

-- NULL meaning every class (rolled back: the key versions of the other tests stay)
BEGIN;
SELECT count(*) = (SELECT count(*) FROM atrest.key_classes) AS rotated_every_class
  FROM atrest.rotate_data_key(NULL);
ROLLBACK;

DROP TABLE nulls_t;
