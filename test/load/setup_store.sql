-- test/load/setup_store.sql: the workload of test/t/041_key_changes_under_load.pl against the
-- results store (atrest.begin_analyze, complete_analyze, get_analyze_result,
-- delete_analyze_result, purge_expired).  Run as a superuser in the database under test;
-- the pgbench scripts (begin.sql, complete.sql, read.sql, delete.sql) then run as the role
-- load_app, a member of atrest_service, calling the load_* functions below.
--
-- Every store call is made in the same transaction as a row change in the plain ledger table
-- load_ledger, so the ledger says exactly which results exist and what each holds (md5 of
-- its plaintext); a value that reads back wrong raises an error, which pgbench counts.

CREATE ROLE load_app LOGIN IN ROLE atrest_service;

CREATE TABLE load_ledger (
    seq        bigserial PRIMARY KEY,
    result_id  uuid NOT NULL UNIQUE,
    state      text NOT NULL CHECK (state IN ('running', 'succeeded', 'deleted')),
    result_md5 text,
    expires_at timestamptz
);
CREATE INDEX load_ledger_state ON load_ledger (state, seq);
GRANT ALL ON load_ledger TO load_app;
GRANT ALL ON SEQUENCE load_ledger_seq_seq TO load_app;

-- When the last purge started (rows that expired before it are gone).
CREATE TABLE load_purges (started_at timestamptz NOT NULL, rows_deleted bigint NOT NULL);

SELECT atrest.create_model('load-model', 'pgbench workload',
                           '{"fields": ["total", "vendor"], "layout": "invoice"}',
                           convert_to(repeat('model artifact ', 200), 'UTF8'));

-- A result document: mostly small, every 20th large enough to go to TOAST.
CREATE FUNCTION load_document(seq bigint) RETURNS jsonb LANGUAGE sql VOLATILE AS $$
    SELECT jsonb_build_object(
        'seq', seq,
        'pages', (SELECT jsonb_agg(jsonb_build_object('page', p, 'lines',
                          (SELECT jsonb_agg(md5(random()::text))
                             FROM generate_series(1, CASE WHEN seq % 20 = 0 THEN 300 ELSE 8 END))))
                    FROM generate_series(1, 2) p))
$$;

-- Start an analyze operation.
CREATE FUNCTION load_begin() RETURNS void LANGUAGE sql AS $$
    INSERT INTO load_ledger (result_id, state)
    VALUES (atrest.begin_analyze('load-model'), 'running');
$$;

-- Complete the oldest running operation nobody else holds.
CREATE FUNCTION load_complete() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    r   load_ledger;
    doc jsonb;
    exp timestamptz;
BEGIN
    SELECT * INTO r FROM load_ledger WHERE state = 'running'
     ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    doc := load_document(r.seq);
    exp := atrest.complete_analyze(r.result_id, doc);
    UPDATE load_ledger SET state = 'succeeded', result_md5 = md5(doc::text), expires_at = exp
     WHERE seq = r.seq;
END;
$$;

-- A random live ledger row (running, or succeeded and not about to expire), locked with
-- "lock" ('SHARE' or 'UPDATE') unless another transaction holds it.
CREATE FUNCTION load_pick(lock text) RETURNS load_ledger LANGUAGE plpgsql AS $$
DECLARE
    r    load_ledger;
    from_seq bigint := floor(random() * (SELECT coalesce(max(seq), 0) FROM load_ledger));
BEGIN
    FOR i IN 1 .. 2 LOOP
        EXECUTE format(
            'SELECT * FROM load_ledger WHERE seq >= $1 AND (state = ''running'' OR '
            '(state = ''succeeded'' AND expires_at > clock_timestamp() + interval ''2 s'')) '
            'ORDER BY seq LIMIT 1 FOR %s SKIP LOCKED', lock)
            INTO r USING from_seq;
        EXIT WHEN r.seq IS NOT NULL;
        from_seq := 0;
    END LOOP;
    RETURN r;
END;
$$;

-- Read a result back through the store and check it against the ledger.
CREATE FUNCTION load_read() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    r   load_ledger := load_pick('SHARE');
    got record;
BEGIN
    IF r.seq IS NULL THEN
        RETURN;
    END IF;
    SELECT * INTO got FROM atrest.get_analyze_result('load-model', r.result_id);
    IF got.status IS DISTINCT FROM r.state
       OR md5(got.result::text) IS DISTINCT FROM r.result_md5 THEN
        RAISE EXCEPTION 'load_read: result % (ledger seq %) reads back wrong: status %',
            r.result_id, r.seq, got.status;
    END IF;
END;
$$;

-- Delete a result (running or succeeded).
CREATE FUNCTION load_delete() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    r     load_ledger := load_pick('UPDATE');
    alive boolean;
BEGIN
    IF r.seq IS NULL THEN
        RETURN;
    END IF;
    alive := atrest.delete_analyze_result('load-model', r.result_id);
    IF NOT alive AND (r.expires_at IS NULL OR r.expires_at > clock_timestamp()) THEN
        RAISE EXCEPTION 'load_delete: live result % (ledger seq %) was not there', r.result_id, r.seq;
    END IF;
    UPDATE load_ledger SET state = 'deleted' WHERE seq = r.seq;
END;
$$;

-- The purge (run by the key-changing session, as a superuser).
CREATE FUNCTION load_purge() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    n := atrest.purge_expired();
    -- its record of the run says when it started on analyze_results: the rows that expired
    -- before that moment are gone
    INSERT INTO load_purges
    SELECT started_at, rows_deleted FROM atrest.purge_runs
     WHERE rel = 'atrest.analyze_results'::regclass ORDER BY id DESC LIMIT 1;
    RETURN n;
END;
$$;

-- What the store holds now, for the checks after the run.
CREATE VIEW load_store AS
    SELECT result_id, status, result::jsonb AS result, expires_at
      FROM atrest.analyze_results WHERE model_id = 'load-model';
