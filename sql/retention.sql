-- Retention: the setting atrest.result_ttl, retention policies, the purge
-- (function and procedure), its record and atrest.retention_status.  The
-- pg_cron job itself runs in test/t/031_purge_cron.pl.

CREATE FUNCTION pg_temp.try(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END;
$$;

--
-- atrest.result_ttl: a positive interval
--
-- The settings exist once the module is loaded: at server start with shared_preload_libraries,
-- else at the first use of an encrypted value in a session, or by LOAD, as here (make
-- installcheck runs against servers that do not preload pg_atrest).
LOAD 'pg_atrest';
SHOW atrest.result_ttl;
SELECT setting, context FROM pg_settings WHERE name = 'atrest.result_ttl';
SET atrest.result_ttl = '90 minutes';
SELECT atrest._result_ttl();
SET atrest.result_ttl = 'PT2H';
SELECT atrest._result_ttl();
SET atrest.result_ttl = '0';
SET atrest.result_ttl = '-1 hour';
SET atrest.result_ttl = 'tomorrow';
SET atrest.result_ttl = '';
SHOW atrest.result_ttl;
RESET atrest.result_ttl;

--
-- Built-in policies
--
SELECT rel, time_column, ttl, builtin FROM atrest.retention_policies ORDER BY rel::text;
SELECT pg_temp.try($$SELECT atrest.remove_retention_policy('atrest.analyze_results')$$);
SELECT pg_temp.try($$SELECT atrest.add_retention_policy('atrest.analyze_results', 'created_at', '1 hour')$$);

--
-- Policies on application tables
--
CREATE TABLE app_events (id int PRIMARY KEY, happened_at timestamptz NOT NULL, note text);
CREATE INDEX ON app_events (happened_at);
SELECT atrest.add_retention_policy('app_events', 'happened_at', '30 days');
-- timestamp without time zone works too; no index gets a NOTICE with the CREATE INDEX
CREATE TABLE app_audit (id int, logged_at timestamp, payload atrest.encrypted_jsonb);
SELECT atrest.add_retention_policy('app_audit', 'logged_at', '1 hour');
-- a partial index is no help to the purge
CREATE INDEX ON app_audit (logged_at) WHERE id > 0;
SELECT atrest.add_retention_policy('app_audit', 'logged_at', '1 hour');
CREATE INDEX ON app_audit (logged_at);
-- adding again changes the policy
SELECT atrest.add_retention_policy('app_audit', 'logged_at', '2 hours');
SELECT rel, time_column, ttl, builtin FROM atrest.retention_policies ORDER BY builtin DESC, rel::text;

-- bad policies
SELECT pg_temp.try($$SELECT atrest.add_retention_policy('app_events', 'note', '1 day')$$);
SELECT pg_temp.try($$SELECT atrest.add_retention_policy('app_events', 'id', '1 day')$$);
SELECT pg_temp.try($$SELECT atrest.add_retention_policy('app_events', 'no_such_column', '1 day')$$);
SELECT pg_temp.try($$SELECT atrest.add_retention_policy('no_such_table', 'happened_at', '1 day')$$);
SELECT pg_temp.try($$SELECT atrest.add_retention_policy('app_events', 'happened_at', '-1 day')$$);
CREATE VIEW app_events_view AS SELECT * FROM app_events;
SELECT pg_temp.try($$SELECT atrest.add_retention_policy('app_events_view', 'happened_at', '1 day')$$);
CREATE TABLE app_parted (id int, at timestamptz) PARTITION BY RANGE (at);
SELECT pg_temp.try($$SELECT atrest.add_retention_policy('app_parted', 'at', '1 day')$$);
SELECT pg_temp.try($$SELECT atrest.add_retention_policy(NULL, 'at', '1 day')$$);
SELECT pg_temp.try($$SELECT atrest.add_retention_policy('app_events', NULL, '1 day')$$);
SELECT pg_temp.try($$SELECT atrest.add_retention_policy('app_events', 'happened_at', NULL)$$);
SELECT pg_temp.try($$SELECT atrest.remove_retention_policy(NULL)$$);
-- only a table's owner may put it under a policy
CREATE ROLE regress_atrest_admin;
GRANT EXECUTE ON FUNCTION atrest.add_retention_policy(regclass, name, interval) TO regress_atrest_admin;
GRANT SELECT, INSERT, UPDATE ON atrest.retention_policies TO regress_atrest_admin;
SET ROLE regress_atrest_admin;
SELECT pg_temp.try($$SELECT atrest.add_retention_policy('app_events', 'happened_at', '1 day')$$);
RESET ROLE;
REVOKE ALL ON atrest.retention_policies FROM regress_atrest_admin;
REVOKE ALL ON FUNCTION atrest.add_retention_policy(regclass, name, interval) FROM regress_atrest_admin;
DROP ROLE regress_atrest_admin;

--
-- The purge
--
-- 25 expired events and 5 recent ones; 3 expired audit rows and 2 recent ones
INSERT INTO app_events
SELECT i, now() - interval '31 days' - i * interval '1 minute', 'old ' || i FROM generate_series(1, 25) i;
INSERT INTO app_events
SELECT i, now() - interval '29 days', 'recent ' || i FROM generate_series(26, 30) i;
INSERT INTO app_audit
SELECT i, localtimestamp - interval '3 hours', '{"old": true}' FROM generate_series(1, 3) i;
INSERT INTO app_audit
SELECT i, localtimestamp, '{"old": false}' FROM generate_series(4, 5) i;
-- results: two expired (TTL 1 second), one live, one running
SELECT atrest.create_model('retention-model');
SET atrest.result_ttl = '1 second';
SELECT atrest.complete_analyze(atrest.begin_analyze('retention-model'), '{"n": 1}') IS NOT NULL;
SELECT atrest.fail_analyze(atrest.begin_analyze('retention-model'), '{"code": "x"}') IS NOT NULL;
RESET atrest.result_ttl;
SELECT atrest.complete_analyze(atrest.begin_analyze('retention-model'), '{"n": 3}') IS NOT NULL;
SELECT atrest.begin_analyze('retention-model') IS NOT NULL;
SELECT pg_sleep(1.2);

SELECT rel, time_column, ttl, builtin, expired_rows, cron_job_scheduled IS NOT TRUE AS no_job_here,
       last_purge_at IS NULL AS never_purged
  FROM atrest.retention_status;

SELECT pg_temp.try('SELECT atrest.purge_expired(0)');
SELECT pg_temp.try('SELECT atrest.purge_expired(NULL)');
SELECT atrest.purge_expired(10);
SELECT rel, rows_deleted, batches, via, finished_at >= started_at AS ordered
  FROM atrest.purge_runs ORDER BY id;
SELECT count(*) AS events_left, min(id) FROM app_events;
SELECT id, logged_at > localtimestamp - interval '1 hour' AS recent FROM app_audit ORDER BY id;
SELECT status, expires_at IS NULL AS running FROM atrest.analyze_results ORDER BY status;
-- nothing left to do
SELECT atrest.purge_expired();

-- the procedure commits after each batch
INSERT INTO app_events
SELECT i, now() - interval '40 days', 'old again' FROM generate_series(101, 112) i;
DELETE FROM atrest.purge_runs;
CALL atrest.purge_expired_job(5);
SELECT rel, rows_deleted, batches, via FROM atrest.purge_runs ORDER BY id;
SELECT count(*) AS events_left FROM app_events;
SELECT pg_temp.try('CALL atrest.purge_expired_job(0)');
-- ... which it cannot do inside a transaction block
BEGIN;
SELECT pg_temp.try('CALL atrest.purge_expired_job()');
ROLLBACK;

SELECT rel, expired_rows, last_purge_rows, last_purge_via FROM atrest.retention_status;

--
-- Policies of dropped tables are forgotten; a vanished column is skipped
--
ALTER TABLE app_audit DROP COLUMN logged_at;
SELECT atrest.purge_expired();
SELECT rel, rows_deleted, error FROM atrest.purge_runs WHERE error IS NOT NULL ORDER BY id;
SELECT rel, expired_rows FROM atrest.retention_status WHERE rel = 'app_audit'::regclass;
DROP TABLE app_audit;
SELECT atrest.purge_expired();
SELECT rel FROM atrest.retention_policies ORDER BY builtin DESC, rel::text;
SELECT atrest.remove_retention_policy('app_events'), atrest.remove_retention_policy('app_events');
SELECT rel FROM atrest.retention_policies ORDER BY builtin DESC, rel::text;

--
-- Scheduling needs pg_cron in this database: pg_regress's database never
-- is pg_cron's, so these fail with 55000 (the message depends on the
-- server's set-up: see test/t/031_purge_cron.pl).
--
SELECT split_part(pg_temp.try('SELECT atrest.schedule_purge()'), ':', 1);
SELECT split_part(pg_temp.try('SELECT atrest.unschedule_purge()'), ':', 1);
SELECT split_part(pg_temp.try('SELECT atrest.schedule_rewrap()'), ':', 1);
SELECT split_part(pg_temp.try('SELECT atrest.unschedule_rewrap()'), ':', 1);
SELECT pg_temp.try('SELECT atrest.schedule_purge(NULL)');
SELECT pg_temp.try($$SELECT atrest.schedule_purge('contrib_regression', NULL)$$);

SELECT atrest.delete_model('retention-model');
DROP VIEW app_events_view;
DROP TABLE app_events, app_parted;
DELETE FROM atrest.purge_runs;
