/* pg_atrest--1.0--1.1.sql: update of an installed pg_atrest 1.0 to 1.1 */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION pg_atrest UPDATE TO '1.1'" to load this file. \quit

-- Every change below is mirrored in pg_atrest--1.1.sql; test/t/016_upgrade.pl checks
-- that an updated database and a fresh 1.1 install have the same objects, columns
-- (in the same order), definitions and privileges.

------------------------------------------------------------------------------
-- Value format 2 (XAES-256-GCM) and per-class compression policy.
--
-- atrest.key_classes gains "compress" (at the end, as in a fresh install);
-- existing classes keep compressing.  atrest.create_key_class gains a
-- "compress" argument and is no longer STRICT (a NULL argument is an error),
-- atrest.alter_key_class is new, and atrest.envelope() reports the value's
-- format.  A new argument or OUT column needs DROP and CREATE, which would
-- lose the privileges granted on the 1.0 functions: they are carried over.
------------------------------------------------------------------------------

ALTER TABLE atrest.key_classes ADD COLUMN compress boolean NOT NULL DEFAULT true;

DO $update$
DECLARE
    f      record;
    oldacl aclitem[];
    fowner oid;
    g      record;
BEGIN
    FOR f IN
        SELECT * FROM (VALUES
            ('atrest.create_key_class(text)', 'atrest.create_key_class(text, boolean)',
             $c$CREATE FUNCTION atrest.create_key_class(name text, compress boolean DEFAULT true) RETURNS integer
    AS 'MODULE_PATHNAME', 'atrest_create_key_class' LANGUAGE C
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp$c$),
            ('atrest.envelope(atrest.encrypted_jsonb)', 'atrest.envelope(atrest.encrypted_jsonb)',
             $c$CREATE FUNCTION atrest.envelope(v atrest.encrypted_jsonb,
    OUT key_class text, OUT key_version integer, OUT compressed boolean, OUT stored_bytes integer,
    OUT format text)
    AS 'MODULE_PATHNAME', 'encrypted_jsonb_envelope' LANGUAGE C STABLE STRICT PARALLEL SAFE$c$),
            ('atrest.envelope(atrest.encrypted_bytea)', 'atrest.envelope(atrest.encrypted_bytea)',
             $c$CREATE FUNCTION atrest.envelope(v atrest.encrypted_bytea,
    OUT key_class text, OUT key_version integer, OUT compressed boolean, OUT stored_bytes integer,
    OUT format text)
    AS 'MODULE_PATHNAME', 'encrypted_bytea_envelope' LANGUAGE C STABLE STRICT PARALLEL SAFE$c$),
            ('atrest.envelope(atrest.encrypted_text)', 'atrest.envelope(atrest.encrypted_text)',
             $c$CREATE FUNCTION atrest.envelope(v atrest.encrypted_text,
    OUT key_class text, OUT key_version integer, OUT compressed boolean, OUT stored_bytes integer,
    OUT format text)
    AS 'MODULE_PATHNAME', 'encrypted_text_envelope' LANGUAGE C STABLE STRICT PARALLEL SAFE$c$)
        ) AS t(old_sig, new_sig, create_sql)
    LOOP
        SELECT p.proacl, p.proowner INTO oldacl, fowner
          FROM pg_proc p WHERE p.oid = f.old_sig::regprocedure;
        EXECUTE 'DROP FUNCTION ' || f.old_sig;
        EXECUTE f.create_sql;
        -- a NULL ACL (the default: PUBLIC may execute) stays the default
        IF oldacl IS NOT NULL THEN
            EXECUTE 'REVOKE ALL ON FUNCTION ' || f.new_sig || ' FROM PUBLIC';
            FOR g IN SELECT DISTINCT a.grantee, a.is_grantable
                       FROM aclexplode(oldacl) a
                      WHERE a.privilege_type = 'EXECUTE' AND a.grantee <> fowner
            LOOP
                EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %s%s', f.new_sig,
                               CASE WHEN g.grantee = 0 THEN 'PUBLIC'
                                    ELSE quote_ident(pg_get_userbyid(g.grantee)) END,
                               CASE WHEN g.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
            END LOOP;
        END IF;
    END LOOP;
END
$update$;

CREATE FUNCTION atrest.alter_key_class(name text, compress boolean) RETURNS void
    AS 'MODULE_PATHNAME', 'atrest_alter_key_class' LANGUAGE C
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION atrest.alter_key_class(text, boolean) FROM PUBLIC;

------------------------------------------------------------------------------
-- Review finding 14: the functions that seal are VOLATILE (every call draws a
-- fresh nonce); still PARALLEL RESTRICTED.
------------------------------------------------------------------------------

ALTER FUNCTION atrest.encrypted_jsonb(jsonb, integer, boolean) VOLATILE;
ALTER FUNCTION atrest.encrypted_jsonb(atrest.encrypted_jsonb, integer, boolean) VOLATILE;
ALTER FUNCTION atrest._reseal(atrest.encrypted_jsonb, integer) VOLATILE;
ALTER FUNCTION atrest.encrypted_bytea(bytea, integer, boolean) VOLATILE;
ALTER FUNCTION atrest.encrypted_bytea(atrest.encrypted_bytea, integer, boolean) VOLATILE;
ALTER FUNCTION atrest._reseal(atrest.encrypted_bytea, integer) VOLATILE;
ALTER FUNCTION atrest.encrypted_text(text, integer, boolean) VOLATILE;
ALTER FUNCTION atrest.encrypted_text(atrest.encrypted_text, integer, boolean) VOLATILE;
ALTER FUNCTION atrest._reseal(atrest.encrypted_text, integer) VOLATILE;

------------------------------------------------------------------------------
-- Review finding 12: a role "atrest_service" that pg_atrest did not create is
-- refused by CREATE EXTENSION.  The role 1.0 created has no marker yet: adopt
-- it here when it is still as 1.0 made it (NOLOGIN, no other attribute, a
-- member of no role); otherwise warn, since installing 1.1 in another
-- database of this cluster will then refuse it.
------------------------------------------------------------------------------

CREATE FUNCTION atrest._check_service_role() RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r      record;
    reason text;
BEGIN
    SELECT a.oid, a.rolsuper, a.rolinherit, a.rolcreaterole, a.rolcreatedb, a.rolcanlogin,
           a.rolreplication, a.rolbypassrls, a.rolconnlimit, a.rolpassword, a.rolvaliduntil,
           EXISTS (SELECT 1 FROM pg_catalog.pg_db_role_setting s WHERE s.setrole = a.oid) AS has_settings,
           pg_catalog.shobj_description(a.oid, 'pg_authid') AS marker,
           (SELECT pg_catalog.string_agg(pg_catalog.format('"%s"', g.rolname), ', ' ORDER BY g.rolname)
              FROM pg_catalog.pg_auth_members m JOIN pg_catalog.pg_authid g ON g.oid = m.roleid
             WHERE m.member = a.oid) AS member_of
      INTO r
      FROM pg_catalog.pg_authid a
     WHERE a.rolname = 'atrest_service';
    IF NOT FOUND THEN
        RETURN;
    END IF;
    reason := CASE
        WHEN r.rolsuper OR r.rolcreaterole OR r.rolcreatedb OR r.rolreplication OR r.rolbypassrls
            THEN 'It has attributes (SUPERUSER, CREATEROLE, CREATEDB, REPLICATION or BYPASSRLS) that pg_atrest never gives it.'
        WHEN r.rolcanlogin OR r.rolpassword IS NOT NULL OR r.rolvaliduntil IS NOT NULL
            THEN 'It may log in, or has a password, which pg_atrest never gives it.'
        WHEN NOT r.rolinherit OR r.rolconnlimit <> -1 OR r.has_settings
            THEN 'Its attributes or settings differ from those pg_atrest gives it.'
        WHEN r.member_of IS NOT NULL
            THEN format('It is a member of role %s; pg_atrest never makes it a member of any role.',
                        r.member_of)
        WHEN r.marker IS DISTINCT FROM 'pg_atrest application service role (created by CREATE EXTENSION pg_atrest)'
            THEN 'It was not created by pg_atrest (it lacks the comment pg_atrest gives the role it creates).'
        END;
    IF reason IS NOT NULL THEN
        RAISE EXCEPTION 'role "atrest_service" already exists and is not pg_atrest''s'
            USING ERRCODE = '42710',
                  DETAIL = reason,
                  HINT = 'Find out who made it and what it is for.  If it is not needed, DROP ROLE '
                         'atrest_service and run the command again.  If it is a role created by '
                         'pg_atrest 1.0 in another database, run ALTER EXTENSION pg_atrest UPDATE '
                         'there first.';
    END IF;
END;
$$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_authid a
                WHERE a.rolname = 'atrest_service'
                  AND NOT (a.rolsuper OR a.rolcreaterole OR a.rolcreatedb OR a.rolcanlogin
                           OR a.rolreplication OR a.rolbypassrls)
                  AND a.rolinherit AND a.rolconnlimit = -1
                  AND a.rolpassword IS NULL AND a.rolvaliduntil IS NULL
                  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_db_role_setting s
                                   WHERE s.setrole = a.oid)
                  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_auth_members m WHERE m.member = a.oid)
                  AND pg_catalog.shobj_description(a.oid, 'pg_authid') IS NULL) THEN
        COMMENT ON ROLE atrest_service IS
            'pg_atrest application service role (created by CREATE EXTENSION pg_atrest)';
    END IF;
    BEGIN
        PERFORM atrest._check_service_role();
    EXCEPTION WHEN duplicate_object THEN
        RAISE WARNING 'role "atrest_service" is not as pg_atrest created it'
            USING ERRCODE = '42710',
                  DETAIL = 'CREATE EXTENSION pg_atrest in another database of this cluster will refuse it.',
                  HINT = 'Check who changed it and why; see the README, section Security.';
    END;
END;
$$;

------------------------------------------------------------------------------
-- Review finding 1: the purge and the retention status touch a policy's
-- table as its owner under SECURITY_RESTRICTED_OPERATION (src/retention.c),
-- check the column's type at every batch, and report a policy they cannot
-- purge (a WARNING with its SQLSTATE, and purge_runs.error) instead of
-- stopping.
------------------------------------------------------------------------------

ALTER TABLE atrest.purge_runs ADD COLUMN error text;

CREATE OR REPLACE FUNCTION atrest._purgeable_policies()
RETURNS SETOF atrest.retention_policies
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM atrest.retention_policies rp
     WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = rp.rel);
    RETURN QUERY SELECT * FROM atrest.retention_policies rp ORDER BY rp.builtin DESC, rp.rel::oid;
END;
$$;

CREATE OR REPLACE FUNCTION atrest._purge_batch(rel regclass, time_column name, cutoff timestamptz,
                                    batch_size integer)
RETURNS bigint
AS 'MODULE_PATHNAME', 'atrest_purge_batch' LANGUAGE C STRICT;

CREATE FUNCTION atrest._expired_rows(rel regclass, time_column name, cutoff timestamptz)
RETURNS bigint
AS 'MODULE_PATHNAME', 'atrest_expired_rows' LANGUAGE C STRICT;

DROP FUNCTION atrest._record_purge_run(regclass, timestamptz, bigint, integer, text);
CREATE FUNCTION atrest._record_purge_run(rel regclass, started_at timestamptz, rows_deleted bigint,
                                         batches integer, via text, error text)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO atrest.purge_runs (rel, started_at, finished_at, rows_deleted, batches, via, error)
    VALUES ($1, $2, pg_catalog.clock_timestamp(), $3, $4, $5, $6);
$$;

CREATE OR REPLACE FUNCTION atrest.purge_expired(batch_size integer DEFAULT 10000) RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p       atrest.retention_policies;
    started timestamptz;
    got     bigint;
    n       bigint;
    batches integer;
    total   bigint := 0;
    state   text;
    msg     text;
BEGIN
    IF batch_size IS NULL OR batch_size < 1 THEN
        RAISE EXCEPTION 'batch_size must be at least 1' USING ERRCODE = '22023';
    END IF;
    FOR p IN SELECT * FROM atrest._purgeable_policies() LOOP
        started := pg_catalog.clock_timestamp();
        n := 0;
        batches := 0;
        state := NULL;
        BEGIN
            LOOP
                got := atrest._purge_batch(p.rel, p.time_column, started - p.ttl, batch_size);
                n := n + got;
                batches := batches + 1;
                EXIT WHEN got < batch_size;
            END LOOP;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
            -- this policy's batches were rolled back with the error
            n := 0;
            RAISE WARNING 'the retention policy of % was not purged: %', p.rel, msg
                USING ERRCODE = state,
                      HINT = 'The other policies are purged; this one is recorded in atrest.purge_runs.';
        END;
        PERFORM atrest._record_purge_run(p.rel, started, n, batches, 'function',
                                         state || ': ' || msg);
        total := total + n;
    END LOOP;
    RETURN total;
END;
$$;

CREATE OR REPLACE PROCEDURE atrest.purge_expired_job(batch_size integer DEFAULT 10000)
LANGUAGE plpgsql
AS $$
DECLARE
    policies atrest.retention_policies[];
    p        atrest.retention_policies;
    started  timestamptz;
    got      bigint;
    n        bigint;
    batches  integer;
    state    text;
    msg      text;
BEGIN
    IF batch_size IS NULL OR batch_size < 1 THEN
        RAISE EXCEPTION 'batch_size must be at least 1' USING ERRCODE = '22023';
    END IF;
    SELECT pg_catalog.array_agg(pp) INTO policies FROM atrest._purgeable_policies() pp;
    COMMIT;
    FOREACH p IN ARRAY coalesce(policies, '{}') LOOP
        started := pg_catalog.clock_timestamp();
        n := 0;
        batches := 0;
        state := NULL;
        LOOP
            BEGIN
                got := atrest._purge_batch(p.rel, p.time_column, started - p.ttl, batch_size);
            EXCEPTION WHEN OTHERS THEN
                GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
                RAISE WARNING 'the retention policy of % was not purged: %', p.rel, msg
                    USING ERRCODE = state,
                          HINT = 'The other policies are purged; this one is recorded in atrest.purge_runs.';
                EXIT;
            END;
            COMMIT;
            n := n + got;
            batches := batches + 1;
            EXIT WHEN got < batch_size;
        END LOOP;
        PERFORM atrest._record_purge_run(p.rel, started, n, batches, 'job', state || ': ' || msg);
        COMMIT;
    END LOOP;
END;
$$;

CREATE OR REPLACE FUNCTION atrest._retention_status()
RETURNS TABLE (rel regclass, time_column name, ttl interval, builtin boolean,
               expired_rows bigint, cron_job text, cron_job_scheduled boolean,
               last_purge_at timestamptz, last_purge_rows bigint, last_purge_via text)
LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p       record;
    jobname text := atrest._cron_job_name('atrest-purge', pg_catalog.current_database());
    has_job boolean;
    state   text;
    msg     text;
BEGIN
    IF pg_catalog.to_regclass('cron.job') IS NOT NULL THEN
        EXECUTE 'SELECT EXISTS (SELECT 1 FROM cron.job j WHERE j.jobname = $1 AND j.active)'
            INTO has_job USING jobname;
    END IF;
    FOR p IN SELECT rp.rel, rp.time_column, rp.ttl, rp.builtin
               FROM atrest.retention_policies rp
              WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = rp.rel)
              ORDER BY rp.builtin DESC, rp.rel::oid LOOP
        rel := p.rel;
        time_column := p.time_column;
        ttl := p.ttl;
        builtin := p.builtin;
        -- counted as the table's owner (src/retention.c); NULL when its
        -- column is gone or no longer a timestamp
        BEGIN
            expired_rows := atrest._expired_rows(p.rel, p.time_column,
                                                 pg_catalog.clock_timestamp() - p.ttl);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
            RAISE WARNING 'cannot count the expired rows of %: %', p.rel, msg USING ERRCODE = state;
            expired_rows := NULL;
        END;
        cron_job := jobname;
        cron_job_scheduled := has_job;
        SELECT r.finished_at, r.rows_deleted, r.via
          INTO last_purge_at, last_purge_rows, last_purge_via
          FROM atrest.purge_runs r
         WHERE r.rel = p.rel
         ORDER BY r.id DESC
         LIMIT 1;
        IF NOT FOUND THEN
            last_purge_at := NULL;
            last_purge_rows := NULL;
            last_purge_via := NULL;
        END IF;
        RETURN NEXT;
    END LOOP;
END;
$$;


------------------------------------------------------------------------------
-- Review finding 10: atrest.reencrypt is a procedure that commits per batch,
-- uses ONLY, walks partitions and children, comes back to rows it skipped
-- while locked, and runs each batch as the table's owner.  Callers now use
-- CALL.
------------------------------------------------------------------------------

DROP FUNCTION atrest.reencrypt(regclass, name, integer);
CREATE FUNCTION atrest._reencrypt_targets(rel regclass, col name) RETURNS regclass[]
    AS 'MODULE_PATHNAME', 'atrest_reencrypt_targets' LANGUAGE C STRICT;
CREATE FUNCTION atrest._reencrypt_batch(root regclass, part regclass, col name, batch_size integer)
    RETURNS bigint
    AS 'MODULE_PATHNAME', 'atrest_reencrypt_batch' LANGUAGE C STRICT;
CREATE FUNCTION atrest._reencrypt_pending(root regclass, part regclass, col name) RETURNS boolean
    AS 'MODULE_PATHNAME', 'atrest_reencrypt_pending' LANGUAGE C STRICT;

CREATE PROCEDURE atrest.reencrypt(rel regclass, col name, batch_size integer DEFAULT 1000,
                                  lock_wait interval DEFAULT '1 minute',
                                  INOUT rows_rewritten bigint DEFAULT NULL)
LANGUAGE plpgsql
AS $$
DECLARE
    targets  regclass[];
    part     regclass;
    n        bigint;
    deadline timestamptz;
BEGIN
    IF rel IS NULL OR col IS NULL THEN
        RAISE EXCEPTION 'rel and col must not be null' USING ERRCODE = '22004';
    END IF;
    IF batch_size IS NULL OR batch_size < 1 THEN
        RAISE EXCEPTION 'batch_size must be at least 1' USING ERRCODE = '22023';
    END IF;
    IF lock_wait IS NULL OR lock_wait OPERATOR(pg_catalog.<) interval '0' THEN
        RAISE EXCEPTION 'lock_wait must not be negative' USING ERRCODE = '22023';
    END IF;
    rows_rewritten := 0;
    targets := atrest._reencrypt_targets(rel, col);
    COMMIT;
    FOREACH part IN ARRAY targets LOOP
        deadline := NULL;
        LOOP
            n := atrest._reencrypt_batch(rel, part, col, batch_size);
            COMMIT;
            rows_rewritten := rows_rewritten OPERATOR(pg_catalog.+) n;
            IF n OPERATOR(pg_catalog.>) 0 THEN
                deadline := NULL;
            END IF;
            CONTINUE WHEN n OPERATOR(pg_catalog.>=) batch_size;
            -- Fewer than a batch: done, unless rows were skipped because
            -- another transaction had them locked.
            EXIT WHEN NOT atrest._reencrypt_pending(rel, part, col);
            IF deadline IS NULL THEN
                deadline := pg_catalog.clock_timestamp() OPERATOR(pg_catalog.+) lock_wait;
            ELSIF pg_catalog.clock_timestamp() OPERATOR(pg_catalog.>=) deadline THEN
                RAISE WARNING 'some rows of % were locked by other transactions for longer than % and were not re-encrypted',
                    part, lock_wait
                    USING ERRCODE = '55P03',
                          HINT = 'Run atrest.reencrypt again once those transactions have ended.';
                EXIT;
            END IF;
            COMMIT;
            PERFORM pg_catalog.pg_sleep(0.2);
        END LOOP;
    END LOOP;
END;
$$;


------------------------------------------------------------------------------
-- Cutting old keys off: retired data-key versions keep their row (so a
-- version is never reused) without a wrapped key; scrub_key_tables(),
-- rekey() and retire_data_key() (src/keyring.c, src/keyscrub.c).
------------------------------------------------------------------------------

ALTER TABLE atrest.data_keys
    ALTER COLUMN wrapped DROP NOT NULL,
    ADD COLUMN retired_at timestamptz,
    ADD CONSTRAINT data_keys_retired CHECK ((wrapped IS NULL) = (retired_at IS NOT NULL));

CREATE FUNCTION atrest.scrub_key_tables() RETURNS boolean
    AS 'MODULE_PATHNAME', 'atrest_scrub_key_tables' LANGUAGE C
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION atrest.rekey(key_class text DEFAULT NULL)
    RETURNS TABLE (key_class text, key_version integer)
    LANGUAGE sql
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT atrest.rotate_database_key();
    SELECT r.key_class, r.key_version FROM atrest.rotate_data_key($1) r;
$$;

CREATE FUNCTION atrest.retire_data_key(key_class text, key_version integer) RETURNS void
    AS 'MODULE_PATHNAME', 'atrest_retire_data_key' LANGUAGE C STRICT
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

REVOKE ALL ON FUNCTION
    atrest.scrub_key_tables(),
    atrest.rekey(text),
    atrest.retire_data_key(text, integer)
FROM PUBLIC;

-- ANALYZE copied wrapped keys into pg_statistic (histogram bounds): never
-- collect statistics on them again, and drop what an earlier ANALYZE kept.
ALTER TABLE atrest.database_keys ALTER COLUMN wrapped SET STATISTICS 0;
ALTER TABLE atrest.data_keys ALTER COLUMN wrapped SET STATISTICS 0;
DELETE FROM pg_catalog.pg_statistic
 WHERE starelid IN ('atrest.database_keys'::pg_catalog.regclass, 'atrest.data_keys'::pg_catalog.regclass);

------------------------------------------------------------------------------
-- Issue 10, item 5: encrypting an existing column online (src/convert.c): encrypt_column()
-- turns a plain jsonb, bytea or text column into the matching encrypted type
-- while the application keeps reading and writing; decrypt_column() goes
-- back.  A shadow column filled by a trigger and by committed batches, a swap
-- under an ACCESS EXCLUSIVE lock requested with lock_timeout (retried), then
-- (encrypt_column) every older row version rewritten and every heap and TOAST
-- page pruned and zeroed, so no plaintext of the column stays in the table's
-- files.  Each step runs as the table's owner under
-- SECURITY_RESTRICTED_OPERATION and checks that the caller owns the table and
-- may execute encrypt_column or decrypt_column; the trigger function converts
-- with the writer's rights.  Transaction control rules out a SET clause on
-- the procedures, hence the schema-qualified bodies.
------------------------------------------------------------------------------

CREATE FUNCTION atrest._convert_trigger() RETURNS trigger
    AS 'MODULE_PATHNAME', 'atrest_convert_trigger' LANGUAGE C;
CREATE FUNCTION atrest._convert_prepare(rel regclass, col name, key_class text, encrypt boolean)
    RETURNS name AS 'MODULE_PATHNAME', 'atrest_convert_prepare' LANGUAGE C STRICT;
CREATE FUNCTION atrest._convert_batch(rel regclass, col name, shadow name, batch_size integer)
    RETURNS bigint AS 'MODULE_PATHNAME', 'atrest_convert_batch' LANGUAGE C STRICT;
CREATE FUNCTION atrest._convert_pending(rel regclass, col name, shadow name)
    RETURNS boolean AS 'MODULE_PATHNAME', 'atrest_convert_pending' LANGUAGE C STRICT;
CREATE FUNCTION atrest._convert_validate(rel regclass, shadow name)
    RETURNS void AS 'MODULE_PATHNAME', 'atrest_convert_validate' LANGUAGE C STRICT;
CREATE FUNCTION atrest._convert_swap(rel regclass, col name, shadow name)
    RETURNS xid AS 'MODULE_PATHNAME', 'atrest_convert_swap' LANGUAGE C STRICT;
CREATE FUNCTION atrest._convert_rewrite(rel regclass, col name, since xid, batch_size integer)
    RETURNS bigint AS 'MODULE_PATHNAME', 'atrest_convert_rewrite' LANGUAGE C STRICT;
CREATE FUNCTION atrest._convert_rewrite_pending(rel regclass, since xid)
    RETURNS boolean AS 'MODULE_PATHNAME', 'atrest_convert_rewrite_pending' LANGUAGE C STRICT;
CREATE FUNCTION atrest._convert_scrub(rel regclass, since xid)
    RETURNS boolean AS 'MODULE_PATHNAME', 'atrest_convert_scrub' LANGUAGE C STRICT;

CREATE PROCEDURE atrest._convert_column(rel regclass, col name, key_class text,
                                        batch_size integer, encrypt boolean)
LANGUAGE plpgsql
AS $$
DECLARE
    shadow name;
    since  xid;
    n      bigint;
    tries  integer;
    told   boolean := false;
    start  timestamptz;
BEGIN
    IF rel IS NULL OR col IS NULL OR key_class IS NULL OR batch_size IS NULL THEN
        RAISE EXCEPTION 'rel, col, key_class and batch_size must not be null' USING ERRCODE = '22004';
    END IF;
    IF batch_size OPERATOR(pg_catalog.<) 1 THEN
        RAISE EXCEPTION 'batch_size must be at least 1' USING ERRCODE = '22023';
    END IF;

    -- 1. the shadow column and its trigger (ACCESS EXCLUSIVE, lock_timeout)
    tries := 0;
    LOOP
        BEGIN
            shadow := atrest._convert_prepare(rel, col, key_class, encrypt);
            EXIT;
        EXCEPTION WHEN lock_not_available THEN
            tries := tries OPERATOR(pg_catalog.+) 1;
            IF tries OPERATOR(pg_catalog.>=) 1000 THEN
                RAISE EXCEPTION 'could not lock table % briefly enough to convert column %', rel, col
                    USING ERRCODE = '55P03',
                          HINT = 'Long transactions keep the table locked; call the procedure again when they are fewer.';
            END IF;
        END;
        COMMIT;
        PERFORM pg_catalog.pg_sleep(LEAST(0.05 OPERATOR(pg_catalog.*) tries, 2));
    END LOOP;
    COMMIT;

    IF shadow IS NOT NULL THEN
        -- 2. fill the shadow in short committed batches; wait for locked rows
        LOOP
            n := atrest._convert_batch(rel, col, shadow, batch_size);
            COMMIT;
            CONTINUE WHEN n OPERATOR(pg_catalog.>) 0;
            EXIT WHEN NOT atrest._convert_pending(rel, col, shadow);
            COMMIT;
            PERFORM pg_catalog.pg_sleep(0.2);
        END LOOP;
        PERFORM atrest._convert_validate(rel, shadow);
        COMMIT;

        -- 3. the swap (ACCESS EXCLUSIVE, lock_timeout)
        tries := 0;
        LOOP
            BEGIN
                since := atrest._convert_swap(rel, col, shadow);
                EXIT;
            EXCEPTION WHEN lock_not_available THEN
                tries := tries OPERATOR(pg_catalog.+) 1;
                IF tries OPERATOR(pg_catalog.>=) 1000 THEN
                    RAISE EXCEPTION 'could not lock table % briefly enough to convert column %', rel, col
                        USING ERRCODE = '55P03',
                              HINT = 'Long transactions keep the table locked; call the procedure again when they are fewer.';
                END IF;
            END;
            COMMIT;
            PERFORM pg_catalog.pg_sleep(LEAST(0.05 OPERATOR(pg_catalog.*) tries, 2));
        END LOOP;
        COMMIT;
    ELSIF encrypt THEN
        -- already encrypted (an earlier call was interrupted after its swap):
        -- rewrite every row and scrub
        since := pg_catalog.xid(pg_catalog.pg_snapshot_xmax(pg_catalog.pg_current_snapshot()));
        COMMIT;
    ELSE
        RETURN;
    END IF;

    IF encrypt THEN
        -- 4. rewrite every row version written before the swap
        LOOP
            n := atrest._convert_rewrite(rel, col, since, batch_size);
            COMMIT;
            CONTINUE WHEN n OPERATOR(pg_catalog.>) 0;
            EXIT WHEN NOT atrest._convert_rewrite_pending(rel, since);
            COMMIT;
            PERFORM pg_catalog.pg_sleep(0.2);
        END LOOP;
        since := pg_catalog.xid(pg_catalog.pg_snapshot_xmax(pg_catalog.pg_current_snapshot()));
        COMMIT;

        -- 5. once no snapshot sees the old versions: prune and zero every page
        start := pg_catalog.clock_timestamp();
        LOOP
            EXIT WHEN atrest._convert_scrub(rel, since);
            COMMIT;
            IF NOT told AND (pg_catalog.clock_timestamp() OPERATOR(pg_catalog.>)
                             (start OPERATOR(pg_catalog.+) interval '1 minute')) THEN
                RAISE NOTICE 'waiting for transactions older than the conversion of %.% to end', rel, col
                    USING DETAIL = 'The old plaintext row versions stay in the table''s files until no snapshot, replication slot or standby can see them.';
                told := true;
            END IF;
            PERFORM pg_catalog.pg_sleep(0.5);
        END LOOP;
        COMMIT;
    END IF;
END;
$$;

CREATE PROCEDURE atrest.encrypt_column(rel regclass, col name, key_class text DEFAULT 'default',
                                       batch_size integer DEFAULT 10000)
LANGUAGE plpgsql
AS $$
BEGIN
    CALL atrest._convert_column(rel, col, key_class, batch_size, true);
END;
$$;

CREATE PROCEDURE atrest.decrypt_column(rel regclass, col name, batch_size integer DEFAULT 10000)
LANGUAGE plpgsql
AS $$
BEGIN
    CALL atrest._convert_column(rel, col, 'default', batch_size, false);
END;
$$;

------------------------------------------------------------------------------
-- Review finding 13: nothing in the schema is PUBLIC's unless granted; keep
-- this section last (mirrors the last section of pg_atrest--1.1.sql).
------------------------------------------------------------------------------

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA atrest FROM PUBLIC;
REVOKE ALL ON ALL PROCEDURES IN SCHEMA atrest FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA atrest FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA atrest FROM PUBLIC;

GRANT EXECUTE ON FUNCTION
    atrest.encrypted_typmod_in(cstring[]),
    atrest.encrypted_typmod_out(integer),
    atrest.encrypted_jsonb_in(cstring, oid, integer),
    atrest.encrypted_jsonb_out(atrest.encrypted_jsonb),
    atrest.encrypted_jsonb_recv(internal, oid, integer),
    atrest.encrypted_jsonb_send(atrest.encrypted_jsonb),
    atrest.encrypted_bytea_in(cstring, oid, integer),
    atrest.encrypted_bytea_out(atrest.encrypted_bytea),
    atrest.encrypted_bytea_recv(internal, oid, integer),
    atrest.encrypted_bytea_send(atrest.encrypted_bytea),
    atrest.encrypted_text_in(cstring, oid, integer),
    atrest.encrypted_text_out(atrest.encrypted_text),
    atrest.encrypted_text_recv(internal, oid, integer),
    atrest.encrypted_text_send(atrest.encrypted_text),
    atrest.decrypt(atrest.encrypted_jsonb),
    atrest.decrypt(atrest.encrypted_bytea),
    atrest.decrypt(atrest.encrypted_text),
    atrest.encrypted_jsonb(jsonb, integer, boolean),
    atrest.encrypted_bytea(bytea, integer, boolean),
    atrest.encrypted_text(text, integer, boolean),
    atrest.encrypted_jsonb(atrest.encrypted_jsonb, integer, boolean),
    atrest.encrypted_bytea(atrest.encrypted_bytea, integer, boolean),
    atrest.encrypted_text(atrest.encrypted_text, integer, boolean),
    atrest.envelope(atrest.encrypted_jsonb),
    atrest.envelope(atrest.encrypted_bytea),
    atrest.envelope(atrest.encrypted_text),
    atrest._reseal(atrest.encrypted_jsonb, integer),
    atrest._reseal(atrest.encrypted_bytea, integer),
    atrest._reseal(atrest.encrypted_text, integer),
    atrest._needs_reseal(atrest.encrypted_jsonb, integer),
    atrest._needs_reseal(atrest.encrypted_bytea, integer),
    atrest._needs_reseal(atrest.encrypted_text, integer),
    atrest._reencrypt_targets(regclass, name),
    atrest._reencrypt_batch(regclass, regclass, name, integer),
    atrest._reencrypt_pending(regclass, regclass, name),
    atrest._convert_trigger(),
    atrest._convert_prepare(regclass, name, text, boolean),
    atrest._convert_batch(regclass, name, name, integer),
    atrest._convert_pending(regclass, name, name),
    atrest._convert_validate(regclass, name),
    atrest._convert_swap(regclass, name, name),
    atrest._convert_rewrite(regclass, name, xid, integer),
    atrest._convert_rewrite_pending(regclass, xid),
    atrest._convert_scrub(regclass, xid)
TO PUBLIC;
GRANT EXECUTE ON PROCEDURE atrest._convert_column(regclass, name, text, integer, boolean) TO PUBLIC;

-- atrest_service: the store's functions (granted above, listed again so this
-- section says all there is).
GRANT EXECUTE ON FUNCTION
    atrest.create_model(text, text, jsonb, bytea),
    atrest.get_model(text),
    atrest.delete_model(text),
    atrest.begin_analyze(text),
    atrest.complete_analyze(uuid, jsonb),
    atrest.fail_analyze(uuid, jsonb),
    atrest.get_analyze_result(text, uuid),
    atrest.delete_analyze_result(text, uuid)
TO atrest_service;
