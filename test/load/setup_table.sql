-- test/load/setup_table.sql: the workload of test/t/041_key_changes_under_load.pl for a
-- build without the results store: the same load_* functions as setup_store.sql, over a
-- plain table with an encrypted column (load_results) instead of atrest.analyze_results.
-- Run as a superuser; the pgbench scripts run as the role load_app.

CREATE ROLE load_app LOGIN;

CREATE TABLE load_results (
    result_id  uuid PRIMARY KEY,
    status     text NOT NULL,
    result     atrest.encrypted_jsonb(result),
    expires_at timestamptz
);
CREATE INDEX load_results_expires_at ON load_results (expires_at);
GRANT ALL ON load_results TO load_app;

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

CREATE TABLE load_purges (started_at timestamptz NOT NULL, rows_deleted bigint NOT NULL);

-- How long a completed result is kept (the store's atrest.result_ttl).
CREATE FUNCTION load_ttl() RETURNS interval LANGUAGE sql AS $$
    SELECT coalesce(current_setting('load.result_ttl', true), '6 s')::interval
$$;

CREATE FUNCTION load_document(seq bigint) RETURNS jsonb LANGUAGE sql VOLATILE AS $$
    SELECT jsonb_build_object(
        'seq', seq,
        'pages', (SELECT jsonb_agg(jsonb_build_object('page', p, 'lines',
                          (SELECT jsonb_agg(md5(random()::text))
                             FROM generate_series(1, CASE WHEN seq % 20 = 0 THEN 300 ELSE 8 END))))
                    FROM generate_series(1, 2) p))
$$;

CREATE FUNCTION load_begin() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    id uuid := gen_random_uuid();
BEGIN
    INSERT INTO load_results (result_id, status) VALUES (id, 'running');
    INSERT INTO load_ledger (result_id, state) VALUES (id, 'running');
END;
$$;

CREATE FUNCTION load_complete() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    r   load_ledger;
    doc jsonb;
    exp timestamptz := clock_timestamp() + load_ttl();
BEGIN
    SELECT * INTO r FROM load_ledger WHERE state = 'running'
     ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    doc := load_document(r.seq);
    UPDATE load_results SET status = 'succeeded', result = doc, expires_at = exp
     WHERE result_id = r.result_id;
    UPDATE load_ledger SET state = 'succeeded', result_md5 = md5(doc::text), expires_at = exp
     WHERE seq = r.seq;
END;
$$;

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

CREATE FUNCTION load_read() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    r   load_ledger := load_pick('SHARE');
    got record;
BEGIN
    IF r.seq IS NULL THEN
        RETURN;
    END IF;
    SELECT status, result::jsonb AS result INTO got FROM load_results
     WHERE result_id = r.result_id AND (expires_at IS NULL OR expires_at > clock_timestamp());
    IF got.status IS DISTINCT FROM r.state
       OR md5(got.result::text) IS DISTINCT FROM r.result_md5 THEN
        RAISE EXCEPTION 'load_read: result % (ledger seq %) reads back wrong: status %',
            r.result_id, r.seq, got.status;
    END IF;
END;
$$;

CREATE FUNCTION load_delete() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    r     load_ledger := load_pick('UPDATE');
    alive boolean;
BEGIN
    IF r.seq IS NULL THEN
        RETURN;
    END IF;
    DELETE FROM load_results WHERE result_id = r.result_id
    RETURNING expires_at IS NULL OR expires_at > clock_timestamp() INTO alive;
    IF NOT coalesce(alive, false) AND (r.expires_at IS NULL OR r.expires_at > clock_timestamp()) THEN
        RAISE EXCEPTION 'load_delete: live result % (ledger seq %) was not there', r.result_id, r.seq;
    END IF;
    UPDATE load_ledger SET state = 'deleted' WHERE seq = r.seq;
END;
$$;

CREATE FUNCTION load_purge() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    started timestamptz := clock_timestamp();
    n bigint;
BEGIN
    DELETE FROM load_results WHERE expires_at < started;
    GET DIAGNOSTICS n = ROW_COUNT;
    INSERT INTO load_purges VALUES (started, n);
    RETURN n;
END;
$$;

CREATE VIEW load_store AS
    SELECT result_id, status, result::jsonb AS result, expires_at FROM load_results;
