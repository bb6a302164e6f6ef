/* pg_atrest_proxy 1.0: the pg_atrest results store, sharded with PL/Proxy.
 *
 * Installed in a proxy database that holds no results and no keys.  The
 * shards are databases with pg_atrest, listed as the partitions p0, p1, ...
 * of the foreign server atrest_shards (FOREIGN DATA WRAPPER plproxy; the
 * number of shards is a power of two).  PL/Proxy connects to them as the
 * user the caller's user mapping names, so each caller has on the shards the
 * rights of that user: atrest_service for the store, a superuser for the key
 * administration.
 *
 * Routing: a model lives on shard (hashtext(model_id) & 65535) & (n - 1),
 * with all of its results.  A result id made by the proxy is a version 8 UUID
 * whose first 16 bits are that 16-bit model hash (the "routing tag"), so the
 * functions that take only a result id (complete_analyze, fail_analyze,
 * put_analyze_output, update_analyze_batch) find the same shard.  The rest
 * of the id (106 bits) is random, as in gen_random_uuid().
 *
 * Remote errors keep their SQLSTATE (PL/Proxy re-raises them with the remote
 * SQLSTATE, message, detail and hint): AT404 on a shard is AT404 here.  A
 * shard that cannot be reached is 08001 naming the shard by its number; how
 * it is reached (socket path, host, port, connect string) goes to the server
 * log only, never to the caller.
 */

\echo Use "CREATE EXTENSION pg_atrest_proxy" to load this file. \quit

------------------------------------------------------------------------------
-- The cluster and the routing.
------------------------------------------------------------------------------

-- The number of shards: the partitions p0, p1, ... of the foreign server
-- atrest_shards.
CREATE FUNCTION atrest_proxy.shard_count() RETURNS integer
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n integer;
BEGIN
    SELECT count(*) INTO n
      FROM pg_catalog.pg_foreign_server s
      JOIN pg_catalog.pg_foreign_data_wrapper w ON w.oid = s.srvfdw
     CROSS JOIN LATERAL pg_catalog.pg_options_to_table(s.srvoptions) o
     WHERE s.srvname = 'atrest_shards'
       AND w.fdwname = 'plproxy'
       AND o.option_name ~ '^p[0-9]+$';
    IF n = 0 THEN
        RAISE EXCEPTION 'the shards of pg_atrest_proxy are not configured'
            USING ERRCODE = '42704',
                  DETAIL = 'There is no foreign server atrest_shards of the foreign data wrapper plproxy with partitions p0, p1, ...',
                  HINT = 'Create it as the README shows (CREATE SERVER atrest_shards FOREIGN DATA WRAPPER plproxy ...).';
    END IF;
    IF n & (n - 1) <> 0 THEN
        RAISE EXCEPTION 'the number of shards of pg_atrest_proxy must be a power of two'
            USING ERRCODE = '22023',
                  DETAIL = pg_catalog.format('The foreign server atrest_shards has %s partitions.', n),
                  HINT = 'PL/Proxy maps a hash to a partition with a bit mask: give it 1, 2, 4, 8, ... partitions.';
    END IF;
    RETURN n;
END;
$$;

-- The 16-bit routing hash of a model id; 22004 for NULL, as on a shard.
CREATE FUNCTION atrest_proxy.model_hash(model_id text) RETURNS integer
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF model_id IS NULL THEN
        RAISE EXCEPTION 'model_id must not be null' USING ERRCODE = '22004';
    END IF;
    RETURN pg_catalog.hashtext(model_id) & 65535;
END;
$$;

-- The routing tag of a result id (its first 16 bits); 22004 for NULL.
CREATE FUNCTION atrest_proxy.result_hash(result_id uuid) RETURNS integer
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF result_id IS NULL THEN
        RAISE EXCEPTION 'result_id must not be null' USING ERRCODE = '22004';
    END IF;
    RETURN ('x' || pg_catalog.substr(result_id::text, 1, 4))::bit(16)::integer;
END;
$$;

-- The shard a model (and all its results) lives on.
CREATE FUNCTION atrest_proxy.model_shard(model_id text) RETURNS integer
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT atrest_proxy.model_hash($1) & (atrest_proxy.shard_count() - 1) $$;

-- A new result id for a model: version 8 (RFC 9562), the model's routing
-- hash in the first 16 bits, random bits from gen_random_uuid() elsewhere.
CREATE FUNCTION atrest_proxy.new_result_id(model_id text) RETURNS uuid
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
-- (overlay's SQL syntax takes no schema; search_path is pg_catalog)
SELECT overlay(overlay(pg_catalog.gen_random_uuid()::text
                       PLACING pg_catalog.lpad(pg_catalog.to_hex(atrest_proxy.model_hash($1)), 4, '0')
                       FROM 1 FOR 4)
               PLACING '8' FROM 15 FOR 1)::uuid
$$;

------------------------------------------------------------------------------
-- The store, routed: same names, arguments and results as in schema atrest.
-- Functions with a model id run on the model's shard; those with only a
-- result id on the shard its routing tag names.
--
-- Each is two functions, both running as the caller (PL/Proxy connects with
-- the user mapping of the current user): atrest_proxy._<name>, the PL/Proxy
-- call, and atrest_proxy.<name>, a plpgsql wrapper that calls it and keeps
-- the shards' connection details out of the caller's errors
-- (atrest_proxy._shard_failed).
------------------------------------------------------------------------------

-- Called in the exception handler of every store wrapper with the error's
-- SQLSTATE and message and the call's routing key (its model id or result
-- id).  PL/Proxy raises its own failures (a shard that cannot be reached, a
-- connection that broke, a timeout) as XX000 with a message that starts with
-- "PL/Proxy function" and carries libpq's words: the shard's socket path or
-- host and port, for a timeout its whole connect string.  Those go to the
-- server log only, and the caller gets an error naming the shard by its
-- number: 08001 when no connection could be made, 08006 when an open one
-- broke, PL/Proxy's SQLSTATE otherwise.  Any other error (a shard's own:
-- PL/Proxy passes its SQLSTATE, message, detail and hint; or a local one)
-- returns here, and the wrapper re-raises it unchanged.  client_min_messages
-- is pinned so that the LOG line cannot reach the client.
CREATE FUNCTION atrest_proxy._shard_failed(state text, message text,
                                           model_id text DEFAULT NULL, result_id uuid DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET client_min_messages = error
AS $$
DECLARE
    shard  text := '?';
    code   text := state;
    reason text;
BEGIN
    IF message NOT LIKE 'PL/Proxy function %' THEN
        RETURN;
    END IF;
    IF model_id IS NOT NULL THEN
        shard := atrest_proxy.model_shard(model_id);
    ELSIF result_id IS NOT NULL THEN
        shard := atrest_proxy.result_hash(result_id) & (atrest_proxy.shard_count() - 1);
    END IF;
    IF message ~ '^PL/Proxy function \S+\(\d+\): (\[[^]]*\] PQconnect(Start|Poll): |connect timeout to: )' THEN
        code := '08001';
        reason := pg_catalog.format('shard %s of pg_atrest_proxy cannot be reached', shard);
    ELSIF message ~ '^PL/Proxy function \S+\(\d+\): \[[^]]*\] PQ[A-Za-z]+: ' THEN
        code := '08006';
        reason := pg_catalog.format('the connection to shard %s of pg_atrest_proxy failed', shard);
    ELSE
        reason := pg_catalog.format('the call to shard %s of pg_atrest_proxy failed', shard);
    END IF;
    RAISE LOG '%', reason
        USING DETAIL = pg_catalog.format('SQLSTATE %s: %s', state, message);
    RAISE EXCEPTION '%', reason
        USING ERRCODE = code,
              HINT = 'The server log of the proxy database says why.';
END;
$$;

CREATE FUNCTION atrest_proxy._create_model(model_id text, description text, definition jsonb, artifact bytea)
RETURNS void
LANGUAGE plproxy AS $$
    CLUSTER 'atrest_shards';
    RUN ON atrest_proxy.model_hash(model_id);
    TARGET atrest.create_model;
$$;

CREATE FUNCTION atrest_proxy.create_model(model_id text, description text DEFAULT NULL,
    definition jsonb DEFAULT NULL, artifact bytea DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM atrest_proxy._create_model(model_id, description, definition, artifact);
EXCEPTION WHEN OTHERS THEN
    PERFORM atrest_proxy._shard_failed(SQLSTATE, SQLERRM, model_id);
    RAISE;
END;
$$;

CREATE FUNCTION atrest_proxy._get_model(model_id text,
    OUT description text, OUT created_at timestamptz, OUT definition jsonb, OUT artifact bytea)
LANGUAGE plproxy AS $$
    CLUSTER 'atrest_shards';
    RUN ON atrest_proxy.model_hash(model_id);
    TARGET atrest.get_model;
$$;

CREATE FUNCTION atrest_proxy.get_model(model_id text,
    OUT description text, OUT created_at timestamptz, OUT definition jsonb, OUT artifact bytea)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    SELECT * INTO description, created_at, definition, artifact
      FROM atrest_proxy._get_model(model_id);
EXCEPTION WHEN OTHERS THEN
    PERFORM atrest_proxy._shard_failed(SQLSTATE, SQLERRM, model_id);
    RAISE;
END;
$$;

CREATE FUNCTION atrest_proxy._delete_model(model_id text)
RETURNS boolean
LANGUAGE plproxy AS $$
    CLUSTER 'atrest_shards';
    RUN ON atrest_proxy.model_hash(model_id);
    TARGET atrest.delete_model;
$$;

CREATE FUNCTION atrest_proxy.delete_model(model_id text)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN atrest_proxy._delete_model(model_id);
EXCEPTION WHEN OTHERS THEN
    PERFORM atrest_proxy._shard_failed(SQLSTATE, SQLERRM, model_id);
    RAISE;
END;
$$;

-- begin_analyze and begin_analyze_batch make the result id here and hand it
-- to the shard (atrest.begin_analyze_with_id, atrest.begin_analyze_batch_with_id).
CREATE FUNCTION atrest_proxy._begin_analyze(result_id uuid, model_id text,
                                            document bytea, content_type text)
RETURNS uuid
LANGUAGE plproxy AS $$
    CLUSTER 'atrest_shards';
    RUN ON atrest_proxy.result_hash(result_id);
    TARGET atrest.begin_analyze_with_id;
$$;

CREATE FUNCTION atrest_proxy.begin_analyze(model_id text, document bytea DEFAULT NULL,
                                           content_type text DEFAULT NULL)
RETURNS uuid
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN atrest_proxy._begin_analyze(atrest_proxy.new_result_id(model_id), model_id,
                                       document, content_type);
EXCEPTION WHEN OTHERS THEN
    PERFORM atrest_proxy._shard_failed(SQLSTATE, SQLERRM, model_id);
    RAISE;
END;
$$;

CREATE FUNCTION atrest_proxy._complete_analyze(result_id uuid, result jsonb)
RETURNS timestamptz
LANGUAGE plproxy AS $$
    CLUSTER 'atrest_shards';
    RUN ON atrest_proxy.result_hash(result_id);
    TARGET atrest.complete_analyze;
$$;

CREATE FUNCTION atrest_proxy.complete_analyze(result_id uuid, result jsonb)
RETURNS timestamptz
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN atrest_proxy._complete_analyze(result_id, result);
EXCEPTION WHEN OTHERS THEN
    PERFORM atrest_proxy._shard_failed(SQLSTATE, SQLERRM, result_id => result_id);
    RAISE;
END;
$$;

CREATE FUNCTION atrest_proxy._fail_analyze(result_id uuid, error jsonb)
RETURNS timestamptz
LANGUAGE plproxy AS $$
    CLUSTER 'atrest_shards';
    RUN ON atrest_proxy.result_hash(result_id);
    TARGET atrest.fail_analyze;
$$;

CREATE FUNCTION atrest_proxy.fail_analyze(result_id uuid, error jsonb)
RETURNS timestamptz
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN atrest_proxy._fail_analyze(result_id, error);
EXCEPTION WHEN OTHERS THEN
    PERFORM atrest_proxy._shard_failed(SQLSTATE, SQLERRM, result_id => result_id);
    RAISE;
END;
$$;

CREATE FUNCTION atrest_proxy._get_analyze_result(model_id text, result_id uuid,
    OUT status text, OUT created_at timestamptz, OUT last_updated_at timestamptz,
    OUT result jsonb, OUT error jsonb)
LANGUAGE plproxy AS $$
    CLUSTER 'atrest_shards';
    RUN ON atrest_proxy.model_hash(model_id);
    TARGET atrest.get_analyze_result;
$$;

CREATE FUNCTION atrest_proxy.get_analyze_result(model_id text, result_id uuid,
    OUT status text, OUT created_at timestamptz, OUT last_updated_at timestamptz,
    OUT result jsonb, OUT error jsonb)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    SELECT * INTO status, created_at, last_updated_at, result, error
      FROM atrest_proxy._get_analyze_result(model_id, result_id);
EXCEPTION WHEN OTHERS THEN
    PERFORM atrest_proxy._shard_failed(SQLSTATE, SQLERRM, model_id);
    RAISE;
END;
$$;

CREATE FUNCTION atrest_proxy._delete_analyze_result(model_id text, result_id uuid)
RETURNS boolean
LANGUAGE plproxy AS $$
    CLUSTER 'atrest_shards';
    RUN ON atrest_proxy.model_hash(model_id);
    TARGET atrest.delete_analyze_result;
$$;

CREATE FUNCTION atrest_proxy.delete_analyze_result(model_id text, result_id uuid)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN atrest_proxy._delete_analyze_result(model_id, result_id);
EXCEPTION WHEN OTHERS THEN
    PERFORM atrest_proxy._shard_failed(SQLSTATE, SQLERRM, model_id);
    RAISE;
END;
$$;

CREATE FUNCTION atrest_proxy._get_analyze_document(model_id text, result_id uuid,
    OUT content_type text, OUT document bytea)
LANGUAGE plproxy AS $$
    CLUSTER 'atrest_shards';
    RUN ON atrest_proxy.model_hash(model_id);
    TARGET atrest.get_analyze_document;
$$;

CREATE FUNCTION atrest_proxy.get_analyze_document(model_id text, result_id uuid,
    OUT content_type text, OUT document bytea)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    SELECT * INTO content_type, document
      FROM atrest_proxy._get_analyze_document(model_id, result_id);
EXCEPTION WHEN OTHERS THEN
    PERFORM atrest_proxy._shard_failed(SQLSTATE, SQLERRM, model_id);
    RAISE;
END;
$$;

CREATE FUNCTION atrest_proxy._put_analyze_output(result_id uuid, kind text, output_id text, content bytea)
RETURNS void
LANGUAGE plproxy AS $$
    CLUSTER 'atrest_shards';
    RUN ON atrest_proxy.result_hash(result_id);
    TARGET atrest.put_analyze_output;
$$;

CREATE FUNCTION atrest_proxy.put_analyze_output(result_id uuid, kind text, output_id text, content bytea)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM atrest_proxy._put_analyze_output(result_id, kind, output_id, content);
EXCEPTION WHEN OTHERS THEN
    PERFORM atrest_proxy._shard_failed(SQLSTATE, SQLERRM, result_id => result_id);
    RAISE;
END;
$$;

CREATE FUNCTION atrest_proxy._get_analyze_result_pdf(model_id text, result_id uuid)
RETURNS bytea
LANGUAGE plproxy AS $$
    CLUSTER 'atrest_shards';
    RUN ON atrest_proxy.model_hash(model_id);
    TARGET atrest.get_analyze_result_pdf;
$$;

CREATE FUNCTION atrest_proxy.get_analyze_result_pdf(model_id text, result_id uuid)
RETURNS bytea
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN atrest_proxy._get_analyze_result_pdf(model_id, result_id);
EXCEPTION WHEN OTHERS THEN
    PERFORM atrest_proxy._shard_failed(SQLSTATE, SQLERRM, model_id);
    RAISE;
END;
$$;

CREATE FUNCTION atrest_proxy._get_analyze_result_figure(model_id text, result_id uuid, figure_id text)
RETURNS bytea
LANGUAGE plproxy AS $$
    CLUSTER 'atrest_shards';
    RUN ON atrest_proxy.model_hash(model_id);
    TARGET atrest.get_analyze_result_figure;
$$;

CREATE FUNCTION atrest_proxy.get_analyze_result_figure(model_id text, result_id uuid, figure_id text)
RETURNS bytea
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN atrest_proxy._get_analyze_result_figure(model_id, result_id, figure_id);
EXCEPTION WHEN OTHERS THEN
    PERFORM atrest_proxy._shard_failed(SQLSTATE, SQLERRM, model_id);
    RAISE;
END;
$$;

CREATE FUNCTION atrest_proxy._begin_analyze_batch(result_id uuid, model_id text, request jsonb)
RETURNS uuid
LANGUAGE plproxy AS $$
    CLUSTER 'atrest_shards';
    RUN ON atrest_proxy.result_hash(result_id);
    TARGET atrest.begin_analyze_batch_with_id;
$$;

CREATE FUNCTION atrest_proxy.begin_analyze_batch(model_id text, request jsonb)
RETURNS uuid
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN atrest_proxy._begin_analyze_batch(atrest_proxy.new_result_id(model_id), model_id, request);
EXCEPTION WHEN OTHERS THEN
    PERFORM atrest_proxy._shard_failed(SQLSTATE, SQLERRM, model_id);
    RAISE;
END;
$$;

CREATE FUNCTION atrest_proxy._update_analyze_batch(result_id uuid, status text,
    percent_completed integer, result jsonb)
RETURNS timestamptz
LANGUAGE plproxy AS $$
    CLUSTER 'atrest_shards';
    RUN ON atrest_proxy.result_hash(result_id);
    TARGET atrest.update_analyze_batch;
$$;

CREATE FUNCTION atrest_proxy.update_analyze_batch(result_id uuid, status text,
    percent_completed integer, result jsonb)
RETURNS timestamptz
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN atrest_proxy._update_analyze_batch(result_id, status, percent_completed, result);
EXCEPTION WHEN OTHERS THEN
    PERFORM atrest_proxy._shard_failed(SQLSTATE, SQLERRM, result_id => result_id);
    RAISE;
END;
$$;

CREATE FUNCTION atrest_proxy._get_analyze_batch_result(model_id text, result_id uuid,
    OUT status text, OUT created_at timestamptz, OUT last_updated_at timestamptz,
    OUT percent_completed integer, OUT request jsonb, OUT result jsonb, OUT error jsonb)
LANGUAGE plproxy AS $$
    CLUSTER 'atrest_shards';
    RUN ON atrest_proxy.model_hash(model_id);
    TARGET atrest.get_analyze_batch_result;
$$;

CREATE FUNCTION atrest_proxy.get_analyze_batch_result(model_id text, result_id uuid,
    OUT status text, OUT created_at timestamptz, OUT last_updated_at timestamptz,
    OUT percent_completed integer, OUT request jsonb, OUT result jsonb, OUT error jsonb)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    SELECT * INTO status, created_at, last_updated_at, percent_completed, request, result, error
      FROM atrest_proxy._get_analyze_batch_result(model_id, result_id);
EXCEPTION WHEN OTHERS THEN
    PERFORM atrest_proxy._shard_failed(SQLSTATE, SQLERRM, model_id);
    RAISE;
END;
$$;

CREATE FUNCTION atrest_proxy._list_analyze_batch_results(model_id text)
RETURNS TABLE (result_id uuid, status text, created_at timestamptz,
               last_updated_at timestamptz, percent_completed integer)
LANGUAGE plproxy AS $$
    CLUSTER 'atrest_shards';
    RUN ON atrest_proxy.model_hash(model_id);
    TARGET atrest.list_analyze_batch_results;
$$;

CREATE FUNCTION atrest_proxy.list_analyze_batch_results(model_id text)
RETURNS TABLE (result_id uuid, status text, created_at timestamptz,
               last_updated_at timestamptz, percent_completed integer)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY SELECT * FROM atrest_proxy._list_analyze_batch_results(model_id);
EXCEPTION WHEN OTHERS THEN
    PERFORM atrest_proxy._shard_failed(SQLSTATE, SQLERRM, model_id);
    RAISE;
END;
$$;

CREATE FUNCTION atrest_proxy._delete_analyze_batch_result(model_id text, result_id uuid)
RETURNS boolean
LANGUAGE plproxy AS $$
    CLUSTER 'atrest_shards';
    RUN ON atrest_proxy.model_hash(model_id);
    TARGET atrest.delete_analyze_batch_result;
$$;

CREATE FUNCTION atrest_proxy.delete_analyze_batch_result(model_id text, result_id uuid)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN atrest_proxy._delete_analyze_batch_result(model_id, result_id);
EXCEPTION WHEN OTHERS THEN
    PERFORM atrest_proxy._shard_failed(SQLSTATE, SQLERRM, model_id);
    RAISE;
END;
$$;

------------------------------------------------------------------------------
-- One shard at a time (RUN ON <shard>): the building blocks of the fleet
-- functions below.  Each returns what the shard says, as text.
------------------------------------------------------------------------------

CREATE FUNCTION atrest_proxy._shard_enable_cmk(shard integer, p_provider text, p_key_uri text)
RETURNS text
LANGUAGE plproxy AS $$
    CLUSTER 'atrest_shards';
    RUN ON shard;
    SELECT 'database key protected by ' || $2 || ' (' || $3 || ')' FROM atrest.enable_cmk($2, $3);
$$;

-- Nothing to do where the database key is already under the service key
-- alone: running it again after a partial failure converges.
CREATE FUNCTION atrest_proxy._shard_disable_cmk(shard integer) RETURNS text
LANGUAGE plproxy AS $$
    CLUSTER 'atrest_shards';
    RUN ON shard;
    SELECT CASE WHEN k.protector = 'customer'
                THEN (SELECT 'database key protected by the service key alone' FROM atrest.disable_cmk())
                ELSE 'already protected by the service key alone' END
      FROM atrest.key_status k;
$$;

CREATE FUNCTION atrest_proxy._shard_rewrap(shard integer) RETURNS text
LANGUAGE plproxy AS $$
    CLUSTER 'atrest_shards';
    RUN ON shard;
    SELECT CASE WHEN atrest.rewrap() THEN 'database key re-wrapped'
                ELSE 'database key already wrapped by the newest keys' END;
$$;

CREATE FUNCTION atrest_proxy._shard_rotate_data_key(shard integer, p_class text) RETURNS text
LANGUAGE plproxy AS $$
    CLUSTER 'atrest_shards';
    RUN ON shard;
    SELECT 'new data key versions: '
           || pg_catalog.string_agg(r.key_class || ' ' || r.key_version, ', ' ORDER BY r.key_class)
      FROM atrest.rotate_data_key($2) r;
$$;

CREATE FUNCTION atrest_proxy._shard_rotate_database_key(shard integer) RETURNS text
LANGUAGE plproxy AS $$
    CLUSTER 'atrest_shards';
    RUN ON shard;
    SELECT 'new database key ' || atrest.rotate_database_key();
$$;

CREATE FUNCTION atrest_proxy._shard_recheck_keys(shard integer) RETURNS text
LANGUAGE plproxy AS $$
    CLUSTER 'atrest_shards';
    RUN ON shard;
    SELECT 'keys unwrapped' FROM atrest.recheck_keys();
$$;

CREATE FUNCTION atrest_proxy._shard_key_status(shard integer,
    OUT protector text, OUT protector_source text, OUT provider text, OUT key_uri text,
    OUT key_version text, OUT protected_since timestamptz, OUT database_key_id uuid,
    OUT database_key_created timestamptz, OUT active_data_key_versions jsonb,
    OUT data_key_versions bigint, OUT cache_ttl interval, OUT session_last_unwrap timestamptz,
    OUT session_last_error text, OUT session_memory_locked boolean, OUT service_key_id integer)
RETURNS SETOF record
LANGUAGE plproxy AS $$
    CLUSTER 'atrest_shards';
    RUN ON shard;
    SELECT k.protector, k.protector_source, k.provider, k.key_uri, k.key_version,
           k.protected_since, k.database_key_id, k.database_key_created,
           k.active_data_key_versions, k.data_key_versions, k.cache_ttl,
           k.session_last_unwrap, k.session_last_error, k.session_memory_locked,
           k.service_key_id
      FROM atrest.key_status k;
$$;

CREATE FUNCTION atrest_proxy._shard_retention_status(shard integer,
    OUT rel text, OUT time_column text, OUT ttl interval, OUT builtin boolean,
    OUT expired_rows bigint, OUT cron_job text, OUT cron_job_scheduled boolean,
    OUT last_purge_at timestamptz, OUT last_purge_rows bigint, OUT last_purge_via text)
RETURNS SETOF record
LANGUAGE plproxy AS $$
    CLUSTER 'atrest_shards';
    RUN ON shard;
    SELECT r.rel::text AS rel, r.time_column::text AS time_column, r.ttl, r.builtin,
           r.expired_rows, r.cron_job, r.cron_job_scheduled,
           r.last_purge_at, r.last_purge_rows, r.last_purge_via
      FROM atrest.retention_status r;
$$;

------------------------------------------------------------------------------
-- Key administration for the fleet.  Each shard is called on its own, in a
-- subtransaction here and in its own transaction there (PL/Proxy's RUN ON
-- ALL would fail the whole call on the first failing shard): a shard that
-- fails or cannot be reached keeps its old state, the others commit their
-- new one, and there is one row per shard saying which.  A shard's change is
-- committed when its row is made, whatever becomes of the caller's
-- transaction.  Running the same call again converges.
------------------------------------------------------------------------------

-- Call atrest_proxy.<fn>(shard, args...) on every shard.
CREATE FUNCTION atrest_proxy._on_every_shard(fn text, args text[] DEFAULT '{}')
RETURNS TABLE (shard integer, ok boolean, detail text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n     integer := atrest_proxy.shard_count();
    call  text;
    state text;
    msg   text;
BEGIN
    call := pg_catalog.format('SELECT atrest_proxy.%I($1%s)', fn,
                              (SELECT pg_catalog.string_agg(pg_catalog.format(', $2[%s]', i), '')
                                 FROM pg_catalog.generate_subscripts(args, 1) i));
    FOR i IN 0 .. n - 1 LOOP
        shard := i;
        BEGIN
            EXECUTE call INTO detail USING i, args;
            ok := true;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
            ok := false;
            -- one line: libpq's connection errors run over several
            detail := state || ': ' || pg_catalog.btrim(pg_catalog.regexp_replace(msg, '\s+', ' ', 'g'));
        END;
        RETURN NEXT;
    END LOOP;
END;
$$;

CREATE FUNCTION atrest_proxy.enable_cmk(provider text, key_uri text)
RETURNS TABLE (shard integer, ok boolean, detail text)
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM atrest_proxy._on_every_shard('_shard_enable_cmk', ARRAY[$1, $2]) $$;

CREATE FUNCTION atrest_proxy.disable_cmk()
RETURNS TABLE (shard integer, ok boolean, detail text)
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM atrest_proxy._on_every_shard('_shard_disable_cmk') $$;

CREATE FUNCTION atrest_proxy.rewrap()
RETURNS TABLE (shard integer, ok boolean, detail text)
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM atrest_proxy._on_every_shard('_shard_rewrap') $$;

CREATE FUNCTION atrest_proxy.rotate_data_key(key_class text DEFAULT NULL)
RETURNS TABLE (shard integer, ok boolean, detail text)
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM atrest_proxy._on_every_shard('_shard_rotate_data_key', ARRAY[$1]) $$;

CREATE FUNCTION atrest_proxy.rotate_database_key()
RETURNS TABLE (shard integer, ok boolean, detail text)
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM atrest_proxy._on_every_shard('_shard_rotate_database_key') $$;

CREATE FUNCTION atrest_proxy.recheck_keys()
RETURNS TABLE (shard integer, ok boolean, detail text)
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM atrest_proxy._on_every_shard('_shard_recheck_keys') $$;

------------------------------------------------------------------------------
-- Status of every shard.  A shard that cannot be asked has one row with its
-- number and the error, NULL elsewhere.
------------------------------------------------------------------------------

CREATE FUNCTION atrest_proxy._key_status()
RETURNS TABLE (shard integer, error text,
    protector text, protector_source text, provider text, key_uri text,
    key_version text, protected_since timestamptz, database_key_id uuid,
    database_key_created timestamptz, active_data_key_versions jsonb,
    data_key_versions bigint, cache_ttl interval, session_last_unwrap timestamptz,
    session_last_error text, session_memory_locked boolean, service_key_id integer)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n integer := atrest_proxy.shard_count();
BEGIN
    FOR i IN 0 .. n - 1 LOOP
        BEGIN
            RETURN QUERY SELECT i, NULL::text, s.* FROM atrest_proxy._shard_key_status(i) s;
        EXCEPTION WHEN OTHERS THEN
            RETURN QUERY SELECT i, SQLSTATE || ': ' || SQLERRM,
                NULL::text, NULL::text, NULL::text, NULL::text, NULL::text, NULL::timestamptz,
                NULL::uuid, NULL::timestamptz, NULL::jsonb, NULL::bigint, NULL::interval,
                NULL::timestamptz, NULL::text, NULL::boolean, NULL::integer;
        END;
    END LOOP;
END;
$$;

CREATE VIEW atrest_proxy.key_status AS
SELECT * FROM atrest_proxy._key_status();

CREATE FUNCTION atrest_proxy._retention_status()
RETURNS TABLE (shard integer, error text,
    rel text, time_column text, ttl interval, builtin boolean,
    expired_rows bigint, cron_job text, cron_job_scheduled boolean,
    last_purge_at timestamptz, last_purge_rows bigint, last_purge_via text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n integer := atrest_proxy.shard_count();
BEGIN
    FOR i IN 0 .. n - 1 LOOP
        BEGIN
            RETURN QUERY SELECT i, NULL::text, s.* FROM atrest_proxy._shard_retention_status(i) s;
        EXCEPTION WHEN OTHERS THEN
            RETURN QUERY SELECT i, SQLSTATE || ': ' || SQLERRM,
                NULL::text, NULL::text, NULL::interval, NULL::boolean, NULL::bigint,
                NULL::text, NULL::boolean, NULL::timestamptz, NULL::bigint, NULL::text;
        END;
    END LOOP;
END;
$$;

CREATE VIEW atrest_proxy.retention_status AS
SELECT * FROM atrest_proxy._retention_status();

------------------------------------------------------------------------------
-- Privileges: nothing is PUBLIC's.  atrest_proxy.grant_store(role) lets a
-- service role call the store (with the routing functions it runs as its
-- caller); the role also needs USAGE on the foreign server and a user mapping
-- naming a member of atrest_service on the shards.  The key administration
-- and the status views stay with superusers, whose user mapping names a
-- superuser on the shards.
------------------------------------------------------------------------------

CREATE FUNCTION atrest_proxy.grant_store(role name) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    f regprocedure;
BEGIN
    FOREACH f IN ARRAY ARRAY[
        'atrest_proxy.create_model(text, text, jsonb, bytea)',
        'atrest_proxy.get_model(text)',
        'atrest_proxy.delete_model(text)',
        'atrest_proxy.begin_analyze(text, bytea, text)',
        'atrest_proxy.complete_analyze(uuid, jsonb)',
        'atrest_proxy.fail_analyze(uuid, jsonb)',
        'atrest_proxy.get_analyze_result(text, uuid)',
        'atrest_proxy.delete_analyze_result(text, uuid)',
        'atrest_proxy.get_analyze_document(text, uuid)',
        'atrest_proxy.put_analyze_output(uuid, text, text, bytea)',
        'atrest_proxy.get_analyze_result_pdf(text, uuid)',
        'atrest_proxy.get_analyze_result_figure(text, uuid, text)',
        'atrest_proxy.begin_analyze_batch(text, jsonb)',
        'atrest_proxy.update_analyze_batch(uuid, text, integer, jsonb)',
        'atrest_proxy.get_analyze_batch_result(text, uuid)',
        'atrest_proxy.list_analyze_batch_results(text)',
        'atrest_proxy.delete_analyze_batch_result(text, uuid)',
        -- what the functions above call, as the caller
        'atrest_proxy._create_model(text, text, jsonb, bytea)',
        'atrest_proxy._get_model(text)',
        'atrest_proxy._delete_model(text)',
        'atrest_proxy._begin_analyze(uuid, text, bytea, text)',
        'atrest_proxy._complete_analyze(uuid, jsonb)',
        'atrest_proxy._fail_analyze(uuid, jsonb)',
        'atrest_proxy._get_analyze_result(text, uuid)',
        'atrest_proxy._delete_analyze_result(text, uuid)',
        'atrest_proxy._get_analyze_document(text, uuid)',
        'atrest_proxy._put_analyze_output(uuid, text, text, bytea)',
        'atrest_proxy._get_analyze_result_pdf(text, uuid)',
        'atrest_proxy._get_analyze_result_figure(text, uuid, text)',
        'atrest_proxy._begin_analyze_batch(uuid, text, jsonb)',
        'atrest_proxy._update_analyze_batch(uuid, text, integer, jsonb)',
        'atrest_proxy._get_analyze_batch_result(text, uuid)',
        'atrest_proxy._list_analyze_batch_results(text)',
        'atrest_proxy._delete_analyze_batch_result(text, uuid)',
        'atrest_proxy._shard_failed(text, text, text, uuid)',
        'atrest_proxy.new_result_id(text)',
        'atrest_proxy.model_hash(text)',
        'atrest_proxy.result_hash(uuid)',
        'atrest_proxy.model_shard(text)',
        'atrest_proxy.shard_count()']::regprocedure[]
    LOOP
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO %I', f, role);
    END LOOP;
END;
$$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA atrest_proxy FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA atrest_proxy FROM PUBLIC;
GRANT USAGE ON SCHEMA atrest_proxy TO PUBLIC;
