/* pg_atrest--1.0--1.1.sql: update of an installed pg_atrest 1.0 to 1.1 */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION pg_atrest UPDATE TO '1.1'" to load this file. \quit

-- Every change below is mirrored in pg_atrest--1.1.sql; test/t/016_upgrade.pl checks
-- that an updated database and a fresh 1.1 install have the same objects, columns
-- (in the same order), definitions and privileges.

------------------------------------------------------------------------------
-- Value format 2 (XAES-256-GCM) and per-class compression policy.
--
-- atrest.key_classes gains "compression" (lz4, zstd or none; at the end, as
-- in a fresh install); existing classes keep compressing with LZ4, as 1.0
-- did.  atrest.create_key_class gains a "compression" argument and is no
-- longer STRICT (a NULL argument is an error), atrest.alter_key_class is new,
-- and atrest.envelope() reports the value's format and compressor.  A new argument or OUT column needs DROP and CREATE, which would
-- lose the privileges granted on the 1.0 functions: they are carried over.
------------------------------------------------------------------------------

ALTER TABLE atrest.key_classes ADD COLUMN compression text NOT NULL DEFAULT 'lz4'
    CHECK (compression IN ('lz4', 'zstd', 'none'));	-- the default: existing classes get 'lz4'

DO $update$
DECLARE
    f      record;
    oldacl aclitem[];
    fowner oid;
    g      record;
BEGIN
    FOR f IN
        SELECT * FROM (VALUES
            ('atrest.create_key_class(text)', 'atrest.create_key_class(text, text)',
             $c$CREATE FUNCTION atrest.create_key_class(name text, compression text DEFAULT 'lz4') RETURNS integer
    AS 'MODULE_PATHNAME', 'atrest_create_key_class' LANGUAGE C
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp$c$),
            ('atrest.envelope(atrest.encrypted_jsonb)', 'atrest.envelope(atrest.encrypted_jsonb)',
             $c$CREATE FUNCTION atrest.envelope(v atrest.encrypted_jsonb,
    OUT key_class text, OUT key_version integer, OUT compressed boolean, OUT stored_bytes integer,
    OUT format text, OUT compression text)
    AS 'MODULE_PATHNAME', 'encrypted_jsonb_envelope' LANGUAGE C STABLE STRICT PARALLEL SAFE$c$),
            ('atrest.envelope(atrest.encrypted_bytea)', 'atrest.envelope(atrest.encrypted_bytea)',
             $c$CREATE FUNCTION atrest.envelope(v atrest.encrypted_bytea,
    OUT key_class text, OUT key_version integer, OUT compressed boolean, OUT stored_bytes integer,
    OUT format text, OUT compression text)
    AS 'MODULE_PATHNAME', 'encrypted_bytea_envelope' LANGUAGE C STABLE STRICT PARALLEL SAFE$c$),
            ('atrest.envelope(atrest.encrypted_text)', 'atrest.envelope(atrest.encrypted_text)',
             $c$CREATE FUNCTION atrest.envelope(v atrest.encrypted_text,
    OUT key_class text, OUT key_version integer, OUT compressed boolean, OUT stored_bytes integer,
    OUT format text, OUT compression text)
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

CREATE FUNCTION atrest.alter_key_class(name text, compression text) RETURNS void
    AS 'MODULE_PATHNAME', 'atrest_alter_key_class' LANGUAGE C
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION atrest.alter_key_class(text, text) FROM PUBLIC;

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
AS 'MODULE_PATHNAME', 'atrest_purge_batch' LANGUAGE C;

CREATE FUNCTION atrest._expired_rows(rel regclass, time_column name, cutoff timestamptz)
RETURNS bigint
AS 'MODULE_PATHNAME', 'atrest_expired_rows' LANGUAGE C;

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

-- atrest.purge_expired and atrest.purge_expired_job are replaced once, in the
-- store section below (they purge as the owner and also time out operations).

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
    AS 'MODULE_PATHNAME', 'atrest_reencrypt_targets' LANGUAGE C;
CREATE FUNCTION atrest._reencrypt_batch(root regclass, part regclass, col name, batch_size integer)
    RETURNS bigint
    AS 'MODULE_PATHNAME', 'atrest_reencrypt_batch' LANGUAGE C;
CREATE FUNCTION atrest._reencrypt_pending(root regclass, part regclass, col name) RETURNS boolean
    AS 'MODULE_PATHNAME', 'atrest_reencrypt_pending' LANGUAGE C;

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
    IF rel IS NULL THEN
        RAISE EXCEPTION 'rel must not be null' USING ERRCODE = '22004';
    ELSIF col IS NULL THEN
        RAISE EXCEPTION 'col must not be null' USING ERRCODE = '22004';
    ELSIF batch_size IS NULL THEN
        RAISE EXCEPTION 'batch_size must not be null' USING ERRCODE = '22004';
    ELSIF lock_wait IS NULL THEN
        RAISE EXCEPTION 'lock_wait must not be null' USING ERRCODE = '22004';
    END IF;
    IF batch_size OPERATOR(pg_catalog.<) 1 THEN
        RAISE EXCEPTION 'batch_size must be at least 1' USING ERRCODE = '22023';
    END IF;
    IF lock_wait OPERATOR(pg_catalog.<) interval '0' THEN
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
    AS 'MODULE_PATHNAME', 'atrest_retire_data_key' LANGUAGE C
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
-- NULL arguments: a NULL where one means nothing is an error (SQLSTATE
-- 22004, naming the argument), never a NULL result or a silent no-op.  The
-- C functions of 1.0 that were STRICT check their arguments themselves now;
-- those created or replaced above are already declared without STRICT, and
-- the plpgsql ones above check for NULL.
------------------------------------------------------------------------------

ALTER FUNCTION atrest.enable_cmk(text, text) CALLED ON NULL INPUT;
ALTER FUNCTION atrest.provider_selftest(text, text) CALLED ON NULL INPUT;
ALTER FUNCTION atrest._active_key_version(integer) CALLED ON NULL INPUT;

------------------------------------------------------------------------------
-- Versioned service keys (issue 17): every wrapped database key records the
-- id of the service key it was wrapped with; every key 1.0 wrapped is under
-- id 1 (a bare key line in the source).  key_status shows it;
-- service_key_check() says whether rewrap() still has to move it.
------------------------------------------------------------------------------

ALTER TABLE atrest.database_keys
    ADD COLUMN service_key_id integer NOT NULL DEFAULT 1 CHECK (service_key_id > 0);

CREATE OR REPLACE VIEW atrest.key_status AS
SELECT k.protector,
       CASE WHEN k.protector = 'customer'
            THEN k.provider || ' (' || k.key_uri || '), over the service key from ' || atrest._service_key_source()
            ELSE atrest._service_key_source() END AS protector_source,
       k.provider,
       k.key_uri,
       k.key_version,
       k.protected_since,
       k.id AS database_key_id,
       k.created_at AS database_key_created,
       (SELECT jsonb_object_agg(c.name, c.active_version ORDER BY c.id)
          FROM atrest.key_classes c) AS active_data_key_versions,
       (SELECT count(*) FROM atrest.data_keys) AS data_key_versions,
       current_setting('atrest.key_cache_ttl')::interval AS cache_ttl,
       s.last_unwrap AS session_last_unwrap,
       s.last_error AS session_last_error,
       s.memory_locked AS session_memory_locked,
       k.service_key_id
  FROM atrest.database_keys k, atrest._session_key_state() s
 WHERE k.active;

CREATE FUNCTION atrest.service_key_check(
    OUT database name, OUT service_key_id integer, OUT service_key_available boolean,
    OUT newest_service_key_id integer, OUT rewrap_needed boolean)
    AS 'MODULE_PATHNAME', 'atrest_service_key_check' LANGUAGE C
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION atrest.service_key_check() FROM PUBLIC;

------------------------------------------------------------------------------
-- 1.1 (issue 10): jsonb operators on encrypted_jsonb (src/operators.c).  Every jsonb
-- operator and function applies to an encrypted document through the
-- implicit cast, except ||: with an untyped literal on one side, PostgreSQL
-- prefers its polymorphic text concatenation.  This || (in pg_catalog, so
-- that it is found whatever the search_path) makes doc || '{"k": 1}' merge
-- as jsonb; a plain jsonb operand still goes through jsonb's own ||.  The
-- explicit cast to json lets to_jsonb, jsonb_build_object, jsonb_agg and
-- the json builders nest an encrypted document as a document, as they do a
-- jsonb one, instead of quoting its text.
------------------------------------------------------------------------------

CREATE FUNCTION atrest.jsonb_concat(atrest.encrypted_jsonb, atrest.encrypted_jsonb) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'encrypted_jsonb_concat' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE OPERATOR pg_catalog.|| (
    LEFTARG = atrest.encrypted_jsonb, RIGHTARG = atrest.encrypted_jsonb,
    FUNCTION = atrest.jsonb_concat);
CREATE FUNCTION atrest.to_json(atrest.encrypted_jsonb) RETURNS json
    AS 'MODULE_PATHNAME', 'encrypted_jsonb_to_json' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE CAST (atrest.encrypted_jsonb AS json) WITH FUNCTION atrest.to_json(atrest.encrypted_jsonb);
GRANT EXECUTE ON FUNCTION atrest.jsonb_concat(atrest.encrypted_jsonb, atrest.encrypted_jsonb),
                          atrest.to_json(atrest.encrypted_jsonb) TO PUBLIC;

------------------------------------------------------------------------------
-- Equality, ordering and hashing of the opened values (src/operators.c), so
-- that DISTINCT, GROUP BY, UNION, INTERSECT, EXCEPT, IN (subquery) and
-- count(DISTINCT ...) compare plaintext in memory.  The operators live in
-- schema atrest: PostgreSQL finds them through the default operator classes,
-- and a comparison written in SQL (doc = '{...}') keeps resolving to the
-- plain type's operator through the implicit cast.  No index may use these
-- classes (src/guard.c refuses any index or extended statistics over an
-- encrypted column; the event trigger below makes sure the check is
-- loaded), and ANALYZE keeps only the null fraction and the width of
-- encrypted columns.
------------------------------------------------------------------------------

-- encrypted_jsonb
CREATE FUNCTION atrest.encrypted_eq(atrest.encrypted_jsonb, atrest.encrypted_jsonb) RETURNS boolean
    AS 'MODULE_PATHNAME', 'encrypted_jsonb_eq' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE FUNCTION atrest.encrypted_ne(atrest.encrypted_jsonb, atrest.encrypted_jsonb) RETURNS boolean
    AS 'MODULE_PATHNAME', 'encrypted_jsonb_ne' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE FUNCTION atrest.encrypted_lt(atrest.encrypted_jsonb, atrest.encrypted_jsonb) RETURNS boolean
    AS 'MODULE_PATHNAME', 'encrypted_jsonb_lt' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE FUNCTION atrest.encrypted_le(atrest.encrypted_jsonb, atrest.encrypted_jsonb) RETURNS boolean
    AS 'MODULE_PATHNAME', 'encrypted_jsonb_le' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE FUNCTION atrest.encrypted_gt(atrest.encrypted_jsonb, atrest.encrypted_jsonb) RETURNS boolean
    AS 'MODULE_PATHNAME', 'encrypted_jsonb_gt' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE FUNCTION atrest.encrypted_ge(atrest.encrypted_jsonb, atrest.encrypted_jsonb) RETURNS boolean
    AS 'MODULE_PATHNAME', 'encrypted_jsonb_ge' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE FUNCTION atrest.encrypted_cmp(atrest.encrypted_jsonb, atrest.encrypted_jsonb) RETURNS integer
    AS 'MODULE_PATHNAME', 'encrypted_jsonb_cmp' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE FUNCTION atrest.encrypted_hash(atrest.encrypted_jsonb) RETURNS integer
    AS 'MODULE_PATHNAME', 'encrypted_jsonb_hash' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE OPERATOR atrest.= (LEFTARG = atrest.encrypted_jsonb, RIGHTARG = atrest.encrypted_jsonb, FUNCTION = atrest.encrypted_eq,
    COMMUTATOR = OPERATOR(atrest.=), NEGATOR = OPERATOR(atrest.<>), RESTRICT = eqsel, JOIN = eqjoinsel, HASHES, MERGES);
CREATE OPERATOR atrest.<> (LEFTARG = atrest.encrypted_jsonb, RIGHTARG = atrest.encrypted_jsonb, FUNCTION = atrest.encrypted_ne,
    COMMUTATOR = OPERATOR(atrest.<>), NEGATOR = OPERATOR(atrest.=), RESTRICT = neqsel, JOIN = neqjoinsel);
CREATE OPERATOR atrest.< (LEFTARG = atrest.encrypted_jsonb, RIGHTARG = atrest.encrypted_jsonb, FUNCTION = atrest.encrypted_lt,
    COMMUTATOR = OPERATOR(atrest.>), NEGATOR = OPERATOR(atrest.>=), RESTRICT = scalarltsel, JOIN = scalarltjoinsel);
CREATE OPERATOR atrest.<= (LEFTARG = atrest.encrypted_jsonb, RIGHTARG = atrest.encrypted_jsonb, FUNCTION = atrest.encrypted_le,
    COMMUTATOR = OPERATOR(atrest.>=), NEGATOR = OPERATOR(atrest.>), RESTRICT = scalarlesel, JOIN = scalarlejoinsel);
CREATE OPERATOR atrest.> (LEFTARG = atrest.encrypted_jsonb, RIGHTARG = atrest.encrypted_jsonb, FUNCTION = atrest.encrypted_gt,
    COMMUTATOR = OPERATOR(atrest.<), NEGATOR = OPERATOR(atrest.<=), RESTRICT = scalargtsel, JOIN = scalargtjoinsel);
CREATE OPERATOR atrest.>= (LEFTARG = atrest.encrypted_jsonb, RIGHTARG = atrest.encrypted_jsonb, FUNCTION = atrest.encrypted_ge,
    COMMUTATOR = OPERATOR(atrest.<=), NEGATOR = OPERATOR(atrest.<), RESTRICT = scalargesel, JOIN = scalargejoinsel);
CREATE OPERATOR CLASS atrest.encrypted_jsonb_ops DEFAULT FOR TYPE atrest.encrypted_jsonb USING btree AS
    OPERATOR 1 atrest.< , OPERATOR 2 atrest.<= , OPERATOR 3 atrest.= , OPERATOR 4 atrest.>= , OPERATOR 5 atrest.> ,
    FUNCTION 1 atrest.encrypted_cmp(atrest.encrypted_jsonb, atrest.encrypted_jsonb);
CREATE OPERATOR CLASS atrest.encrypted_jsonb_hash_ops DEFAULT FOR TYPE atrest.encrypted_jsonb USING hash AS
    OPERATOR 1 atrest.= ,
    FUNCTION 1 atrest.encrypted_hash(atrest.encrypted_jsonb);
GRANT EXECUTE ON FUNCTION
    atrest.encrypted_eq(atrest.encrypted_jsonb, atrest.encrypted_jsonb),
    atrest.encrypted_ne(atrest.encrypted_jsonb, atrest.encrypted_jsonb),
    atrest.encrypted_lt(atrest.encrypted_jsonb, atrest.encrypted_jsonb),
    atrest.encrypted_le(atrest.encrypted_jsonb, atrest.encrypted_jsonb),
    atrest.encrypted_gt(atrest.encrypted_jsonb, atrest.encrypted_jsonb),
    atrest.encrypted_ge(atrest.encrypted_jsonb, atrest.encrypted_jsonb),
    atrest.encrypted_cmp(atrest.encrypted_jsonb, atrest.encrypted_jsonb),
    atrest.encrypted_hash(atrest.encrypted_jsonb)
TO PUBLIC;

-- encrypted_bytea
CREATE FUNCTION atrest.encrypted_eq(atrest.encrypted_bytea, atrest.encrypted_bytea) RETURNS boolean
    AS 'MODULE_PATHNAME', 'encrypted_bytea_eq' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE FUNCTION atrest.encrypted_ne(atrest.encrypted_bytea, atrest.encrypted_bytea) RETURNS boolean
    AS 'MODULE_PATHNAME', 'encrypted_bytea_ne' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE FUNCTION atrest.encrypted_lt(atrest.encrypted_bytea, atrest.encrypted_bytea) RETURNS boolean
    AS 'MODULE_PATHNAME', 'encrypted_bytea_lt' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE FUNCTION atrest.encrypted_le(atrest.encrypted_bytea, atrest.encrypted_bytea) RETURNS boolean
    AS 'MODULE_PATHNAME', 'encrypted_bytea_le' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE FUNCTION atrest.encrypted_gt(atrest.encrypted_bytea, atrest.encrypted_bytea) RETURNS boolean
    AS 'MODULE_PATHNAME', 'encrypted_bytea_gt' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE FUNCTION atrest.encrypted_ge(atrest.encrypted_bytea, atrest.encrypted_bytea) RETURNS boolean
    AS 'MODULE_PATHNAME', 'encrypted_bytea_ge' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE FUNCTION atrest.encrypted_cmp(atrest.encrypted_bytea, atrest.encrypted_bytea) RETURNS integer
    AS 'MODULE_PATHNAME', 'encrypted_bytea_cmp' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE FUNCTION atrest.encrypted_hash(atrest.encrypted_bytea) RETURNS integer
    AS 'MODULE_PATHNAME', 'encrypted_bytea_hash' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE OPERATOR atrest.= (LEFTARG = atrest.encrypted_bytea, RIGHTARG = atrest.encrypted_bytea, FUNCTION = atrest.encrypted_eq,
    COMMUTATOR = OPERATOR(atrest.=), NEGATOR = OPERATOR(atrest.<>), RESTRICT = eqsel, JOIN = eqjoinsel, HASHES, MERGES);
CREATE OPERATOR atrest.<> (LEFTARG = atrest.encrypted_bytea, RIGHTARG = atrest.encrypted_bytea, FUNCTION = atrest.encrypted_ne,
    COMMUTATOR = OPERATOR(atrest.<>), NEGATOR = OPERATOR(atrest.=), RESTRICT = neqsel, JOIN = neqjoinsel);
CREATE OPERATOR atrest.< (LEFTARG = atrest.encrypted_bytea, RIGHTARG = atrest.encrypted_bytea, FUNCTION = atrest.encrypted_lt,
    COMMUTATOR = OPERATOR(atrest.>), NEGATOR = OPERATOR(atrest.>=), RESTRICT = scalarltsel, JOIN = scalarltjoinsel);
CREATE OPERATOR atrest.<= (LEFTARG = atrest.encrypted_bytea, RIGHTARG = atrest.encrypted_bytea, FUNCTION = atrest.encrypted_le,
    COMMUTATOR = OPERATOR(atrest.>=), NEGATOR = OPERATOR(atrest.>), RESTRICT = scalarlesel, JOIN = scalarlejoinsel);
CREATE OPERATOR atrest.> (LEFTARG = atrest.encrypted_bytea, RIGHTARG = atrest.encrypted_bytea, FUNCTION = atrest.encrypted_gt,
    COMMUTATOR = OPERATOR(atrest.<), NEGATOR = OPERATOR(atrest.<=), RESTRICT = scalargtsel, JOIN = scalargtjoinsel);
CREATE OPERATOR atrest.>= (LEFTARG = atrest.encrypted_bytea, RIGHTARG = atrest.encrypted_bytea, FUNCTION = atrest.encrypted_ge,
    COMMUTATOR = OPERATOR(atrest.<=), NEGATOR = OPERATOR(atrest.<), RESTRICT = scalargesel, JOIN = scalargejoinsel);
CREATE OPERATOR CLASS atrest.encrypted_bytea_ops DEFAULT FOR TYPE atrest.encrypted_bytea USING btree AS
    OPERATOR 1 atrest.< , OPERATOR 2 atrest.<= , OPERATOR 3 atrest.= , OPERATOR 4 atrest.>= , OPERATOR 5 atrest.> ,
    FUNCTION 1 atrest.encrypted_cmp(atrest.encrypted_bytea, atrest.encrypted_bytea);
CREATE OPERATOR CLASS atrest.encrypted_bytea_hash_ops DEFAULT FOR TYPE atrest.encrypted_bytea USING hash AS
    OPERATOR 1 atrest.= ,
    FUNCTION 1 atrest.encrypted_hash(atrest.encrypted_bytea);
GRANT EXECUTE ON FUNCTION
    atrest.encrypted_eq(atrest.encrypted_bytea, atrest.encrypted_bytea),
    atrest.encrypted_ne(atrest.encrypted_bytea, atrest.encrypted_bytea),
    atrest.encrypted_lt(atrest.encrypted_bytea, atrest.encrypted_bytea),
    atrest.encrypted_le(atrest.encrypted_bytea, atrest.encrypted_bytea),
    atrest.encrypted_gt(atrest.encrypted_bytea, atrest.encrypted_bytea),
    atrest.encrypted_ge(atrest.encrypted_bytea, atrest.encrypted_bytea),
    atrest.encrypted_cmp(atrest.encrypted_bytea, atrest.encrypted_bytea),
    atrest.encrypted_hash(atrest.encrypted_bytea)
TO PUBLIC;

-- encrypted_text
CREATE FUNCTION atrest.encrypted_eq(atrest.encrypted_text, atrest.encrypted_text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'encrypted_text_eq' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE FUNCTION atrest.encrypted_ne(atrest.encrypted_text, atrest.encrypted_text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'encrypted_text_ne' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE FUNCTION atrest.encrypted_lt(atrest.encrypted_text, atrest.encrypted_text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'encrypted_text_lt' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE FUNCTION atrest.encrypted_le(atrest.encrypted_text, atrest.encrypted_text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'encrypted_text_le' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE FUNCTION atrest.encrypted_gt(atrest.encrypted_text, atrest.encrypted_text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'encrypted_text_gt' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE FUNCTION atrest.encrypted_ge(atrest.encrypted_text, atrest.encrypted_text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'encrypted_text_ge' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE FUNCTION atrest.encrypted_cmp(atrest.encrypted_text, atrest.encrypted_text) RETURNS integer
    AS 'MODULE_PATHNAME', 'encrypted_text_cmp' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE FUNCTION atrest.encrypted_hash(atrest.encrypted_text) RETURNS integer
    AS 'MODULE_PATHNAME', 'encrypted_text_hash' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE OPERATOR atrest.= (LEFTARG = atrest.encrypted_text, RIGHTARG = atrest.encrypted_text, FUNCTION = atrest.encrypted_eq,
    COMMUTATOR = OPERATOR(atrest.=), NEGATOR = OPERATOR(atrest.<>), RESTRICT = eqsel, JOIN = eqjoinsel, HASHES, MERGES);
CREATE OPERATOR atrest.<> (LEFTARG = atrest.encrypted_text, RIGHTARG = atrest.encrypted_text, FUNCTION = atrest.encrypted_ne,
    COMMUTATOR = OPERATOR(atrest.<>), NEGATOR = OPERATOR(atrest.=), RESTRICT = neqsel, JOIN = neqjoinsel);
CREATE OPERATOR atrest.< (LEFTARG = atrest.encrypted_text, RIGHTARG = atrest.encrypted_text, FUNCTION = atrest.encrypted_lt,
    COMMUTATOR = OPERATOR(atrest.>), NEGATOR = OPERATOR(atrest.>=), RESTRICT = scalarltsel, JOIN = scalarltjoinsel);
CREATE OPERATOR atrest.<= (LEFTARG = atrest.encrypted_text, RIGHTARG = atrest.encrypted_text, FUNCTION = atrest.encrypted_le,
    COMMUTATOR = OPERATOR(atrest.>=), NEGATOR = OPERATOR(atrest.>), RESTRICT = scalarlesel, JOIN = scalarlejoinsel);
CREATE OPERATOR atrest.> (LEFTARG = atrest.encrypted_text, RIGHTARG = atrest.encrypted_text, FUNCTION = atrest.encrypted_gt,
    COMMUTATOR = OPERATOR(atrest.<), NEGATOR = OPERATOR(atrest.<=), RESTRICT = scalargtsel, JOIN = scalargtjoinsel);
CREATE OPERATOR atrest.>= (LEFTARG = atrest.encrypted_text, RIGHTARG = atrest.encrypted_text, FUNCTION = atrest.encrypted_ge,
    COMMUTATOR = OPERATOR(atrest.<=), NEGATOR = OPERATOR(atrest.<), RESTRICT = scalargesel, JOIN = scalargejoinsel);
CREATE OPERATOR CLASS atrest.encrypted_text_ops DEFAULT FOR TYPE atrest.encrypted_text USING btree AS
    OPERATOR 1 atrest.< , OPERATOR 2 atrest.<= , OPERATOR 3 atrest.= , OPERATOR 4 atrest.>= , OPERATOR 5 atrest.> ,
    FUNCTION 1 atrest.encrypted_cmp(atrest.encrypted_text, atrest.encrypted_text);
CREATE OPERATOR CLASS atrest.encrypted_text_hash_ops DEFAULT FOR TYPE atrest.encrypted_text USING hash AS
    OPERATOR 1 atrest.= ,
    FUNCTION 1 atrest.encrypted_hash(atrest.encrypted_text);
GRANT EXECUTE ON FUNCTION
    atrest.encrypted_eq(atrest.encrypted_text, atrest.encrypted_text),
    atrest.encrypted_ne(atrest.encrypted_text, atrest.encrypted_text),
    atrest.encrypted_lt(atrest.encrypted_text, atrest.encrypted_text),
    atrest.encrypted_le(atrest.encrypted_text, atrest.encrypted_text),
    atrest.encrypted_gt(atrest.encrypted_text, atrest.encrypted_text),
    atrest.encrypted_ge(atrest.encrypted_text, atrest.encrypted_text),
    atrest.encrypted_cmp(atrest.encrypted_text, atrest.encrypted_text),
    atrest.encrypted_hash(atrest.encrypted_text)
TO PUBLIC;

CREATE FUNCTION atrest.encrypted_typanalyze(internal) RETURNS boolean
    AS 'MODULE_PATHNAME', 'encrypted_typanalyze' LANGUAGE C STRICT PARALLEL SAFE;
GRANT EXECUTE ON FUNCTION atrest.encrypted_typanalyze(internal) TO PUBLIC;
ALTER TYPE atrest.encrypted_jsonb SET (ANALYZE = atrest.encrypted_typanalyze);
ALTER TYPE atrest.encrypted_bytea SET (ANALYZE = atrest.encrypted_typanalyze);
ALTER TYPE atrest.encrypted_text SET (ANALYZE = atrest.encrypted_typanalyze);

-- Loads the module before any statement that can create an index or
-- statistics, so that its check is in place where pg_atrest is not preloaded.
CREATE FUNCTION atrest._load_guard() RETURNS event_trigger
    AS 'MODULE_PATHNAME', 'atrest_load_guard' LANGUAGE C;
REVOKE ALL ON FUNCTION atrest._load_guard() FROM PUBLIC;
CREATE EVENT TRIGGER atrest_load_guard ON ddl_command_start
    WHEN TAG IN ('CREATE INDEX', 'CREATE TABLE', 'ALTER TABLE', 'CREATE SCHEMA', 'CREATE STATISTICS')
    EXECUTE FUNCTION atrest._load_guard();

------------------------------------------------------------------------------
-- 1.1 (issue 10): subscripting of encrypted_jsonb (src/subscript.c): doc['a'], doc[0] read
-- as on jsonb; UPDATE ... SET doc['a'] = ... opens, assigns and seals under
-- the column's key class.
------------------------------------------------------------------------------

CREATE FUNCTION atrest.encrypted_jsonb_subscript_handler(internal) RETURNS internal
    AS 'MODULE_PATHNAME' LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;
GRANT EXECUTE ON FUNCTION atrest.encrypted_jsonb_subscript_handler(internal) TO PUBLIC;
ALTER TYPE atrest.encrypted_jsonb SET (SUBSCRIPT = atrest.encrypted_jsonb_subscript_handler);

------------------------------------------------------------------------------
-- The rest of what the analysis service keeps for a while (docs/store.md):
-- submitted documents, analysis outputs (searchable PDF, figures), batch
-- analysis results, and a timeout for operations that never finish.
--
-- Same rules as for analyze results: every value is sealed under the key
-- class "result"; nothing is returned after its expiry (checked at read
-- time, whether or not the purge has run); a delete is final at commit;
-- AT404 says the same thing for missing, expired, deleted or another
-- model's; only atrest_service may call the functions.  Each table is under
-- a built-in retention policy on expires_at, so the purge job removes it.
--
-- atrest.begin_analyze gains the arguments document and content_type (with
-- defaults, so calls with the model id alone keep working); a new argument
-- needs DROP and CREATE, which would lose the privileges granted on the 1.0
-- function: they are carried over.  _finish_analyze gives the outputs their
-- result's expiry; the purge first fails the operations that timed out.
------------------------------------------------------------------------------

-- atrest._input_ttl(), atrest._operation_timeout(): the settings
-- atrest.input_ttl and atrest.operation_timeout as intervals (src/store.c).
CREATE FUNCTION atrest._input_ttl() RETURNS interval
    AS 'MODULE_PATHNAME', 'atrest_input_ttl_value' LANGUAGE C STABLE;
CREATE FUNCTION atrest._operation_timeout() RETURNS interval
    AS 'MODULE_PATHNAME', 'atrest_operation_timeout_value' LANGUAGE C STABLE;

-- The document submitted with atrest.begin_analyze; expires_at is its
-- submission time plus atrest.input_ttl, whatever the operation's state.
CREATE TABLE atrest.analyze_documents (
    result_id    uuid PRIMARY KEY
                 REFERENCES atrest.analyze_results (result_id) ON DELETE CASCADE,
    content_type text CHECK (length(content_type) BETWEEN 1 AND 255),
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    document     atrest.encrypted_bytea(result) NOT NULL
);
CREATE INDEX analyze_documents_expires_at ON atrest.analyze_documents (expires_at);

-- Outputs of an analysis: the searchable PDF (one per result, output_id '')
-- and cropped figures (output_id such as '1.1').  expires_at is their
-- result's, copied when the result gets one (NULL while it runs; the result's
-- purge then takes them along).
CREATE TABLE atrest.analyze_outputs (
    result_id  uuid NOT NULL REFERENCES atrest.analyze_results (result_id) ON DELETE CASCADE,
    kind       text NOT NULL CHECK (kind IN ('pdf', 'figure')),
    output_id  text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz,
    content    atrest.encrypted_bytea(result) NOT NULL,
    PRIMARY KEY (result_id, kind, output_id),
    CONSTRAINT analyze_outputs_output_id_format
    CHECK (CASE kind WHEN 'pdf' THEN output_id = ''
                     ELSE output_id ~ '^[0-9]{1,9}(\.[0-9]{1,9}){0,3}$' END)
);
CREATE INDEX analyze_outputs_expires_at ON atrest.analyze_outputs (expires_at);

-- Batch analyses: the request (source and result locations, which may carry
-- access tokens), the per-document details, an error.  expires_at as for
-- single results: completion plus atrest.result_ttl, NULL while it runs.
CREATE TABLE atrest.analyze_batch_results (
    result_id         uuid PRIMARY KEY,
    model_id          text NOT NULL REFERENCES atrest.models (model_id) ON DELETE CASCADE,
    status            text NOT NULL DEFAULT 'notStarted'
                      CHECK (status IN ('notStarted', 'running', 'succeeded', 'failed', 'canceled')),
    percent_completed integer NOT NULL DEFAULT 0 CHECK (percent_completed BETWEEN 0 AND 100),
    created_at        timestamptz NOT NULL DEFAULT now(),
    last_updated_at   timestamptz NOT NULL DEFAULT now(),
    completed_at      timestamptz,
    expires_at        timestamptz,
    request           atrest.encrypted_jsonb(result) NOT NULL,
    result            atrest.encrypted_jsonb(result),
    error             atrest.encrypted_jsonb(result),
    CHECK ((completed_at IS NULL) = (expires_at IS NULL)),
    CHECK ((status IN ('succeeded', 'failed', 'canceled')) = (completed_at IS NOT NULL))
);
CREATE INDEX analyze_batch_results_expires_at ON atrest.analyze_batch_results (expires_at);
CREATE INDEX analyze_batch_results_model_id ON atrest.analyze_batch_results (model_id, created_at);
-- the operation timeout finds unfinished operations by their start
CREATE INDEX analyze_batch_results_unfinished ON atrest.analyze_batch_results (created_at)
    WHERE completed_at IS NULL;
CREATE INDEX analyze_results_unfinished ON atrest.analyze_results (created_at)
    WHERE completed_at IS NULL;

SELECT pg_catalog.pg_extension_config_dump('atrest.analyze_documents', '');
SELECT pg_catalog.pg_extension_config_dump('atrest.analyze_outputs', '');
SELECT pg_catalog.pg_extension_config_dump('atrest.analyze_batch_results', '');

INSERT INTO atrest.retention_policies (rel, time_column, ttl, builtin) VALUES
    ('atrest.analyze_documents', 'expires_at', interval '0', true),
    ('atrest.analyze_outputs', 'expires_at', interval '0', true),
    ('atrest.analyze_batch_results', 'expires_at', interval '0', true);

-- A document that was never submitted, has expired, or whose result was
-- deleted, has expired or belongs to another model raises the same AT404.
CREATE FUNCTION atrest.get_analyze_document(model_id text, result_id uuid,
    OUT content_type text, OUT document bytea)
LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ts timestamptz := pg_catalog.clock_timestamp();
BEGIN
    PERFORM atrest._check_model_id(get_analyze_document.model_id);
    IF get_analyze_document.result_id IS NULL THEN
        RAISE EXCEPTION 'result_id must not be null' USING ERRCODE = '22004';
    END IF;
    SELECT d.content_type, d.document::bytea INTO content_type, document
      FROM atrest.analyze_documents d
      JOIN atrest.analyze_results r ON r.result_id = d.result_id
     WHERE d.result_id = get_analyze_document.result_id
       AND r.model_id = get_analyze_document.model_id
       AND d.expires_at > ts
       AND (r.expires_at IS NULL OR r.expires_at > ts);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'analyze document does not exist' USING ERRCODE = 'AT404';
    END IF;
END;
$$;

-- Store an output of a running or succeeded result ('pdf' with a NULL
-- output_id, or 'figure' with its id); storing it again replaces it.
CREATE FUNCTION atrest.put_analyze_output(result_id uuid, kind text, output_id text, content bytea)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cur_status text;
    cur_expiry timestamptz;
    ts         timestamptz := pg_catalog.clock_timestamp();
    oid_stored text;
BEGIN
    IF put_analyze_output.result_id IS NULL THEN
        RAISE EXCEPTION 'result_id must not be null' USING ERRCODE = '22004';
    ELSIF put_analyze_output.kind IS NULL THEN
        RAISE EXCEPTION 'kind must not be null' USING ERRCODE = '22004';
    ELSIF put_analyze_output.content IS NULL THEN
        RAISE EXCEPTION 'content must not be null' USING ERRCODE = '22004';
    END IF;
    IF put_analyze_output.kind = 'pdf' THEN
        IF put_analyze_output.output_id IS NOT NULL THEN
            RAISE EXCEPTION 'a pdf output has no output id'
                USING ERRCODE = '22023',
                      DETAIL = 'A result has one searchable PDF; pass NULL as output_id.';
        END IF;
        oid_stored := '';
    ELSIF put_analyze_output.kind = 'figure' THEN
        IF put_analyze_output.output_id IS NULL THEN
            RAISE EXCEPTION 'output_id must not be null' USING ERRCODE = '22004';
        ELSIF put_analyze_output.output_id !~ '^[0-9]{1,9}(\.[0-9]{1,9}){0,3}$' THEN
            RAISE EXCEPTION 'invalid figure id "%"', put_analyze_output.output_id
                USING ERRCODE = '22023',
                      DETAIL = 'A figure id is made of numbers separated by dots, such as 1.1.';
        END IF;
        oid_stored := put_analyze_output.output_id;
    ELSE
        RAISE EXCEPTION 'invalid output kind "%"', put_analyze_output.kind
            USING ERRCODE = '22023',
                  DETAIL = 'An output is of kind pdf or figure.';
    END IF;
    SELECT r.status, r.expires_at INTO cur_status, cur_expiry
      FROM atrest.analyze_results r
     WHERE r.result_id = put_analyze_output.result_id
       FOR SHARE;
    IF NOT FOUND OR cur_expiry <= ts THEN
        RAISE EXCEPTION 'analyze result does not exist' USING ERRCODE = 'AT404';
    END IF;
    IF cur_status NOT IN ('notStarted', 'running', 'succeeded') THEN
        RAISE EXCEPTION 'analyze result takes no outputs'
            USING ERRCODE = '55000',
                  DETAIL = format('Its status is %s; outputs belong to a running or succeeded analyze operation.',
                                  cur_status);
    END IF;
    INSERT INTO atrest.analyze_outputs AS o (result_id, kind, output_id, created_at, expires_at, content)
    VALUES (put_analyze_output.result_id, put_analyze_output.kind, oid_stored, ts, cur_expiry,
            put_analyze_output.content)
    ON CONFLICT ON CONSTRAINT analyze_outputs_pkey
    DO UPDATE SET content = EXCLUDED.content, created_at = EXCLUDED.created_at,
                  expires_at = EXCLUDED.expires_at;
END;
$$;

-- The output of a result, while the result lives; one AT404 for every
-- absence (no such output, or the result is missing, expired, deleted or
-- another model's).
CREATE FUNCTION atrest._get_analyze_output(model_id text, result_id uuid, kind text, output_id text)
RETURNS bytea
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ts      timestamptz := pg_catalog.clock_timestamp();
    content bytea;
BEGIN
    PERFORM atrest._check_model_id(_get_analyze_output.model_id);
    IF _get_analyze_output.result_id IS NULL THEN
        RAISE EXCEPTION 'result_id must not be null' USING ERRCODE = '22004';
    ELSIF _get_analyze_output.output_id IS NULL THEN
        RAISE EXCEPTION 'figure_id must not be null' USING ERRCODE = '22004';
    END IF;
    SELECT o.content::bytea INTO content
      FROM atrest.analyze_outputs o
      JOIN atrest.analyze_results r ON r.result_id = o.result_id
     WHERE o.result_id = _get_analyze_output.result_id
       AND o.kind = _get_analyze_output.kind
       AND o.output_id = _get_analyze_output.output_id
       AND r.model_id = _get_analyze_output.model_id
       AND (r.expires_at IS NULL OR r.expires_at > ts);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'analyze result output does not exist' USING ERRCODE = 'AT404';
    END IF;
    RETURN content;
END;
$$;

CREATE FUNCTION atrest.get_analyze_result_pdf(model_id text, result_id uuid) RETURNS bytea
LANGUAGE sql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT atrest._get_analyze_output($1, $2, 'pdf', '') $$;

CREATE FUNCTION atrest.get_analyze_result_figure(model_id text, result_id uuid, figure_id text)
RETURNS bytea
LANGUAGE sql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT atrest._get_analyze_output($1, $2, 'figure', $3) $$;

-- A new batch analysis, status notStarted.
CREATE FUNCTION atrest.begin_analyze_batch(model_id text, request jsonb) RETURNS uuid
LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    new_id uuid := pg_catalog.gen_random_uuid();
    ts     timestamptz := pg_catalog.clock_timestamp();
BEGIN
    PERFORM atrest._check_model_id(begin_analyze_batch.model_id);
    IF begin_analyze_batch.request IS NULL THEN
        RAISE EXCEPTION 'request must not be null' USING ERRCODE = '22004';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM atrest.models m WHERE m.model_id = begin_analyze_batch.model_id) THEN
        RAISE EXCEPTION 'model "%" does not exist', begin_analyze_batch.model_id
            USING ERRCODE = 'AT404';
    END IF;
    INSERT INTO atrest.analyze_batch_results (result_id, model_id, status, created_at,
                                              last_updated_at, request)
    VALUES (new_id, begin_analyze_batch.model_id, 'notStarted', ts, ts, begin_analyze_batch.request);
    RETURN new_id;
END;
$$;

-- Move a batch analysis on: its status, its progress (NULL keeps it) and its
-- per-document details (NULL keeps them).  A final status (succeeded, failed,
-- canceled) starts the retention clock; returns the expiry time, NULL while
-- it runs.
CREATE FUNCTION atrest.update_analyze_batch(result_id uuid, status text,
                                            percent_completed integer, result jsonb)
RETURNS timestamptz
LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cur_status text;
    cur_expiry timestamptz;
    ts         timestamptz := pg_catalog.clock_timestamp();
    expiry     timestamptz;
BEGIN
    IF update_analyze_batch.result_id IS NULL THEN
        RAISE EXCEPTION 'result_id must not be null' USING ERRCODE = '22004';
    ELSIF update_analyze_batch.status IS NULL THEN
        RAISE EXCEPTION 'status must not be null' USING ERRCODE = '22004';
    ELSIF update_analyze_batch.status NOT IN ('notStarted', 'running', 'succeeded', 'failed', 'canceled') THEN
        RAISE EXCEPTION 'invalid batch status "%"', update_analyze_batch.status
            USING ERRCODE = '22023',
                  DETAIL = 'The status of a batch analysis is notStarted, running, succeeded, failed or canceled.';
    ELSIF update_analyze_batch.percent_completed NOT BETWEEN 0 AND 100 THEN
        RAISE EXCEPTION 'percent_completed must be between 0 and 100' USING ERRCODE = '22023';
    END IF;
    IF update_analyze_batch.result IS NOT NULL THEN
        IF pg_catalog.jsonb_typeof(update_analyze_batch.result) <> 'object'
           OR pg_catalog.jsonb_typeof(coalesce(update_analyze_batch.result -> 'details', '[]')) <> 'array' THEN
            RAISE EXCEPTION 'invalid batch result'
                USING ERRCODE = '22023',
                      DETAIL = 'A batch result is an object whose "details" is an array.';
        END IF;
        IF EXISTS (SELECT 1
                     FROM pg_catalog.jsonb_array_elements(coalesce(update_analyze_batch.result -> 'details', '[]')) d
                    WHERE pg_catalog.jsonb_typeof(d) <> 'object'
                       OR (d ->> 'status') IS NULL
                       OR (d ->> 'status') NOT IN ('notStarted', 'running', 'succeeded', 'failed', 'skipped')) THEN
            RAISE EXCEPTION 'invalid batch result'
                USING ERRCODE = '22023',
                      DETAIL = 'The status of each document of a batch is notStarted, running, succeeded, failed or skipped.';
        END IF;
    END IF;
    SELECT b.status, b.expires_at INTO cur_status, cur_expiry
      FROM atrest.analyze_batch_results b
     WHERE b.result_id = update_analyze_batch.result_id
       FOR UPDATE;
    IF NOT FOUND OR cur_expiry <= ts THEN
        RAISE EXCEPTION 'analyze batch result does not exist' USING ERRCODE = 'AT404';
    END IF;
    IF cur_status NOT IN ('notStarted', 'running') THEN
        RAISE EXCEPTION 'analyze batch result is not running'
            USING ERRCODE = '55000',
                  DETAIL = format('Its status is %s; only a batch analysis that has not finished can change.',
                                  cur_status);
    END IF;
    IF update_analyze_batch.status IN ('succeeded', 'failed', 'canceled') THEN
        expiry := ts + atrest._result_ttl();
    END IF;
    IF update_analyze_batch.result IS NULL THEN
        UPDATE atrest.analyze_batch_results b
           SET status = update_analyze_batch.status,
               percent_completed = coalesce(update_analyze_batch.percent_completed, b.percent_completed),
               last_updated_at = ts,
               completed_at = CASE WHEN expiry IS NULL THEN NULL ELSE ts END,
               expires_at = expiry
         WHERE b.result_id = update_analyze_batch.result_id;
    ELSE
        UPDATE atrest.analyze_batch_results b
           SET status = update_analyze_batch.status,
               percent_completed = coalesce(update_analyze_batch.percent_completed, b.percent_completed),
               result = update_analyze_batch.result,
               last_updated_at = ts,
               completed_at = CASE WHEN expiry IS NULL THEN NULL ELSE ts END,
               expires_at = expiry
         WHERE b.result_id = update_analyze_batch.result_id;
    END IF;
    RETURN expiry;
END;
$$;

CREATE FUNCTION atrest.get_analyze_batch_result(model_id text, result_id uuid,
    OUT status text, OUT created_at timestamptz, OUT last_updated_at timestamptz,
    OUT percent_completed integer, OUT request jsonb, OUT result jsonb, OUT error jsonb)
LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM atrest._check_model_id(get_analyze_batch_result.model_id);
    IF get_analyze_batch_result.result_id IS NULL THEN
        RAISE EXCEPTION 'result_id must not be null' USING ERRCODE = '22004';
    END IF;
    SELECT b.status, b.created_at, b.last_updated_at, b.percent_completed,
           b.request::jsonb, b.result::jsonb, b.error::jsonb
      INTO status, created_at, last_updated_at, percent_completed, request, result, error
      FROM atrest.analyze_batch_results b
     WHERE b.result_id = get_analyze_batch_result.result_id
       AND b.model_id = get_analyze_batch_result.model_id
       AND (b.expires_at IS NULL OR b.expires_at > pg_catalog.clock_timestamp());
    IF NOT FOUND THEN
        RAISE EXCEPTION 'analyze batch result does not exist' USING ERRCODE = 'AT404';
    END IF;
END;
$$;

-- The batch analyses of a model that have not expired, newest first; no
-- sealed value is opened.
CREATE FUNCTION atrest.list_analyze_batch_results(model_id text)
RETURNS TABLE (result_id uuid, status text, created_at timestamptz,
               last_updated_at timestamptz, percent_completed integer)
LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM atrest._check_model_id(list_analyze_batch_results.model_id);
    IF NOT EXISTS (SELECT 1 FROM atrest.models m
                    WHERE m.model_id = list_analyze_batch_results.model_id) THEN
        RAISE EXCEPTION 'model "%" does not exist', list_analyze_batch_results.model_id
            USING ERRCODE = 'AT404';
    END IF;
    RETURN QUERY
    SELECT b.result_id, b.status, b.created_at, b.last_updated_at, b.percent_completed
      FROM atrest.analyze_batch_results b
     WHERE b.model_id = list_analyze_batch_results.model_id
       AND (b.expires_at IS NULL OR b.expires_at > pg_catalog.clock_timestamp())
     ORDER BY b.created_at DESC, b.result_id;
END;
$$;

-- True if the batch result existed (and had not expired); the row is gone
-- when the caller's transaction commits.  A wrong model id deletes nothing.
CREATE FUNCTION atrest.delete_analyze_batch_result(model_id text, result_id uuid) RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    alive boolean;
BEGIN
    PERFORM atrest._check_model_id(delete_analyze_batch_result.model_id);
    IF delete_analyze_batch_result.result_id IS NULL THEN
        RAISE EXCEPTION 'result_id must not be null' USING ERRCODE = '22004';
    END IF;
    DELETE FROM atrest.analyze_batch_results b
     WHERE b.result_id = delete_analyze_batch_result.result_id
       AND b.model_id = delete_analyze_batch_result.model_id
    RETURNING (b.expires_at IS NULL OR b.expires_at > pg_catalog.clock_timestamp()) INTO alive;
    RETURN coalesce(alive, false);
END;
$$;

-- Fail every single or batch operation still notStarted or running
-- atrest.operation_timeout after it began, with an error saying it timed
-- out; it then expires like any failed result.  Rows another transaction
-- has locked (an operation completing right now) are left alone.  Returns
-- how many operations it failed.  Run by the purge before it deletes.
CREATE FUNCTION atrest._time_out_operations() RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ts      timestamptz := pg_catalog.clock_timestamp();
    timeout interval := atrest._operation_timeout();
    expiry  timestamptz := ts + atrest._result_ttl();
    err     jsonb := pg_catalog.jsonb_build_object(
                   'code', 'Timeout',
                   'message', pg_catalog.format('The analyze operation did not complete within %s of its start.',
                                                pg_catalog.current_setting('atrest.operation_timeout')));
    singles bigint;
    batches bigint;
BEGIN
    WITH failed AS (
        UPDATE atrest.analyze_results r
           SET status = 'failed', error = err, last_updated_at = ts,
               completed_at = ts, expires_at = expiry
         WHERE r.result_id IN (SELECT u.result_id FROM atrest.analyze_results u
                                WHERE u.completed_at IS NULL AND u.created_at < ts - timeout
                                  FOR UPDATE SKIP LOCKED)
        RETURNING r.result_id),
    outputs AS (
        UPDATE atrest.analyze_outputs o SET expires_at = expiry
         WHERE o.result_id IN (SELECT f.result_id FROM failed f))
    SELECT pg_catalog.count(*) INTO singles FROM failed;
    UPDATE atrest.analyze_batch_results b
       SET status = 'failed', error = err, last_updated_at = ts,
           completed_at = ts, expires_at = expiry
     WHERE b.result_id IN (SELECT u.result_id FROM atrest.analyze_batch_results u
                            WHERE u.completed_at IS NULL AND u.created_at < ts - timeout
                              FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS batches = ROW_COUNT;
    RETURN singles + batches;
END;
$$;

DO $update$
DECLARE
    oldacl aclitem[];
    fowner oid;
    g      record;
BEGIN
    SELECT p.proacl, p.proowner INTO oldacl, fowner
      FROM pg_proc p WHERE p.oid = 'atrest.begin_analyze(text)'::regprocedure;
    DROP FUNCTION atrest.begin_analyze(text);
    EXECUTE $c$
CREATE FUNCTION atrest.begin_analyze(model_id text, document bytea DEFAULT NULL,
                                     content_type text DEFAULT NULL)
RETURNS uuid
LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $f$
DECLARE
    new_id uuid := pg_catalog.gen_random_uuid();
    ts     timestamptz := pg_catalog.clock_timestamp();
BEGIN
    PERFORM atrest._check_model_id(begin_analyze.model_id);
    IF begin_analyze.document IS NULL AND begin_analyze.content_type IS NOT NULL THEN
        RAISE EXCEPTION 'document must not be null'
            USING ERRCODE = '22004',
                  DETAIL = 'A content type was given without a document.';
    ELSIF pg_catalog.length(begin_analyze.content_type) NOT BETWEEN 1 AND 255 THEN
        RAISE EXCEPTION 'invalid content type'
            USING ERRCODE = '22023',
                  DETAIL = 'A content type has 1 to 255 characters.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM atrest.models m WHERE m.model_id = begin_analyze.model_id) THEN
        RAISE EXCEPTION 'model "%" does not exist', begin_analyze.model_id
            USING ERRCODE = 'AT404';
    END IF;
    INSERT INTO atrest.analyze_results (result_id, model_id, status, created_at, last_updated_at)
    VALUES (new_id, begin_analyze.model_id, 'running', ts, ts);
    IF begin_analyze.document IS NOT NULL THEN
        INSERT INTO atrest.analyze_documents (result_id, content_type, created_at, expires_at, document)
        VALUES (new_id, begin_analyze.content_type, ts, ts + atrest._input_ttl(), begin_analyze.document);
    END IF;
    RETURN new_id;
END;
$f$;
$c$;
    -- a NULL ACL (the default: PUBLIC may execute) stays the default
    IF oldacl IS NOT NULL THEN
        REVOKE ALL ON FUNCTION atrest.begin_analyze(text, bytea, text) FROM PUBLIC;
        FOR g IN SELECT DISTINCT a.grantee, a.is_grantable
                   FROM aclexplode(oldacl) a
                  WHERE a.privilege_type = 'EXECUTE' AND a.grantee <> fowner
        LOOP
            EXECUTE format('GRANT EXECUTE ON FUNCTION atrest.begin_analyze(text, bytea, text) TO %s%s',
                           CASE WHEN g.grantee = 0 THEN 'PUBLIC'
                                ELSE quote_ident(pg_get_userbyid(g.grantee)) END,
                           CASE WHEN g.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
        END LOOP;
    END IF;
END
$update$;

CREATE OR REPLACE FUNCTION atrest._finish_analyze(id uuid, new_status text, payload jsonb)
RETURNS timestamptz
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cur_status text;
    cur_expiry timestamptz;
    ts         timestamptz := pg_catalog.clock_timestamp();
    expiry     timestamptz;
BEGIN
    IF id IS NULL THEN
        RAISE EXCEPTION 'result_id must not be null' USING ERRCODE = '22004';
    END IF;
    IF payload IS NULL THEN
        RAISE EXCEPTION '% must not be null',
            CASE new_status WHEN 'succeeded' THEN 'result' ELSE 'error' END
            USING ERRCODE = '22004';
    END IF;
    SELECT r.status, r.expires_at INTO cur_status, cur_expiry
      FROM atrest.analyze_results r
     WHERE r.result_id = id
       FOR UPDATE;
    IF NOT FOUND OR cur_expiry <= ts THEN
        RAISE EXCEPTION 'analyze result does not exist' USING ERRCODE = 'AT404';
    END IF;
    IF cur_status <> 'running' THEN
        RAISE EXCEPTION 'analyze result is not running'
            USING ERRCODE = '55000',
                  DETAIL = format('Its status is %s; only a running analyze operation can complete or fail.',
                                  cur_status);
    END IF;
    expiry := ts + atrest._result_ttl();
    IF new_status = 'succeeded' THEN
        UPDATE atrest.analyze_results r
           SET status = 'succeeded', result = payload,
               last_updated_at = ts, completed_at = ts, expires_at = expiry
         WHERE r.result_id = id;
    ELSE
        UPDATE atrest.analyze_results r
           SET status = 'failed', error = payload,
               last_updated_at = ts, completed_at = ts, expires_at = expiry
         WHERE r.result_id = id;
    END IF;
    -- the result's outputs expire with it (the table exists from 1.1 on)
    UPDATE atrest.analyze_outputs o SET expires_at = expiry WHERE o.result_id = id;
    RETURN expiry;
END;
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
    IF batch_size IS NULL THEN
        RAISE EXCEPTION 'batch_size must not be null' USING ERRCODE = '22004';
    ELSIF batch_size < 1 THEN
        RAISE EXCEPTION 'batch_size must be at least 1' USING ERRCODE = '22023';
    END IF;
    -- Operations that never finished fail now, and expire like failed ones.
    -- That seals an error (it needs the keys): should it fail, say so and
    -- purge all the same.
    BEGIN
        PERFORM atrest._time_out_operations();
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
        RAISE WARNING 'analyze operations past atrest.operation_timeout were not failed: %', msg
            USING ERRCODE = state,
                  HINT = 'Expired rows are purged all the same; the next purge tries again.';
        state := NULL;
    END;
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
    IF batch_size IS NULL THEN
        RAISE EXCEPTION 'batch_size must not be null' USING ERRCODE = '22004';
    ELSIF batch_size < 1 THEN
        RAISE EXCEPTION 'batch_size must be at least 1' USING ERRCODE = '22023';
    END IF;
    -- Operations that never finished fail now, and expire like failed ones.
    -- That seals an error (it needs the keys): should it fail, say so and
    -- purge all the same.
    BEGIN
        PERFORM atrest._time_out_operations();
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
        RAISE WARNING 'analyze operations past atrest.operation_timeout were not failed: %', msg
            USING ERRCODE = state,
                  HINT = 'Expired rows are purged all the same; the next purge tries again.';
        state := NULL;
    END;
    COMMIT;
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
-- Result ids chosen by the caller (issue 13): pg_atrest_proxy routes a
-- result by a tag it puts in the result id (sql/pg_atrest_proxy--1.0.sql), so
-- the id is made on the proxy and handed down.  Same checks and results as
-- atrest.begin_analyze and atrest.begin_analyze_batch, plus 22004 for a NULL
-- id and 23505 for an id already in use.
------------------------------------------------------------------------------

CREATE FUNCTION atrest.begin_analyze_with_id(result_id uuid, model_id text,
                                             document bytea DEFAULT NULL,
                                             content_type text DEFAULT NULL)
RETURNS uuid
LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    new_id uuid := begin_analyze_with_id.result_id;
    ts     timestamptz := pg_catalog.clock_timestamp();
BEGIN
    PERFORM atrest._check_model_id(begin_analyze_with_id.model_id);
    IF new_id IS NULL THEN
        RAISE EXCEPTION 'result_id must not be null' USING ERRCODE = '22004';
    END IF;
    IF begin_analyze_with_id.document IS NULL AND begin_analyze_with_id.content_type IS NOT NULL THEN
        RAISE EXCEPTION 'document must not be null'
            USING ERRCODE = '22004',
                  DETAIL = 'A content type was given without a document.';
    ELSIF pg_catalog.length(begin_analyze_with_id.content_type) NOT BETWEEN 1 AND 255 THEN
        RAISE EXCEPTION 'invalid content type'
            USING ERRCODE = '22023',
                  DETAIL = 'A content type has 1 to 255 characters.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM atrest.models m WHERE m.model_id = begin_analyze_with_id.model_id) THEN
        RAISE EXCEPTION 'model "%" does not exist', begin_analyze_with_id.model_id
            USING ERRCODE = 'AT404';
    END IF;
    INSERT INTO atrest.analyze_results (result_id, model_id, status, created_at, last_updated_at)
    VALUES (new_id, begin_analyze_with_id.model_id, 'running', ts, ts)
    ON CONFLICT ON CONSTRAINT analyze_results_pkey DO NOTHING;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'analyze result % already exists', new_id USING ERRCODE = '23505';
    END IF;
    IF begin_analyze_with_id.document IS NOT NULL THEN
        INSERT INTO atrest.analyze_documents (result_id, content_type, created_at, expires_at, document)
        VALUES (new_id, begin_analyze_with_id.content_type, ts, ts + atrest._input_ttl(),
                begin_analyze_with_id.document);
    END IF;
    RETURN new_id;
END;
$$;

CREATE FUNCTION atrest.begin_analyze_batch_with_id(result_id uuid, model_id text, request jsonb)
RETURNS uuid
LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    new_id uuid := begin_analyze_batch_with_id.result_id;
    ts     timestamptz := pg_catalog.clock_timestamp();
BEGIN
    PERFORM atrest._check_model_id(begin_analyze_batch_with_id.model_id);
    IF new_id IS NULL THEN
        RAISE EXCEPTION 'result_id must not be null' USING ERRCODE = '22004';
    END IF;
    IF begin_analyze_batch_with_id.request IS NULL THEN
        RAISE EXCEPTION 'request must not be null' USING ERRCODE = '22004';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM atrest.models m WHERE m.model_id = begin_analyze_batch_with_id.model_id) THEN
        RAISE EXCEPTION 'model "%" does not exist', begin_analyze_batch_with_id.model_id
            USING ERRCODE = 'AT404';
    END IF;
    INSERT INTO atrest.analyze_batch_results (result_id, model_id, status, created_at,
                                              last_updated_at, request)
    VALUES (new_id, begin_analyze_batch_with_id.model_id, 'notStarted', ts, ts,
            begin_analyze_batch_with_id.request)
    ON CONFLICT ON CONSTRAINT analyze_batch_results_pkey DO NOTHING;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'analyze batch result % already exists', new_id USING ERRCODE = '23505';
    END IF;
    RETURN new_id;
END;
$$;

------------------------------------------------------------------------------
-- Idle backends forget (issue 11): key_status says where this session's
-- database key came from and when the backend wipes it, idle or not.
------------------------------------------------------------------------------

CREATE FUNCTION atrest._session_key_source(OUT key_source text, OUT key_expires_at timestamptz)
    AS 'MODULE_PATHNAME', 'atrest_session_key_source' LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION atrest._session_key_source() FROM PUBLIC;

CREATE OR REPLACE VIEW atrest.key_status AS
SELECT k.protector,
       CASE WHEN k.protector = 'customer'
            THEN k.provider || ' (' || k.key_uri || '), over the service key from ' || atrest._service_key_source()
            ELSE atrest._service_key_source() END AS protector_source,
       k.provider,
       k.key_uri,
       k.key_version,
       k.protected_since,
       k.id AS database_key_id,
       k.created_at AS database_key_created,
       (SELECT jsonb_object_agg(c.name, c.active_version ORDER BY c.id)
          FROM atrest.key_classes c) AS active_data_key_versions,
       (SELECT count(*) FROM atrest.data_keys) AS data_key_versions,
       current_setting('atrest.key_cache_ttl')::interval AS cache_ttl,
       s.last_unwrap AS session_last_unwrap,
       s.last_error AS session_last_error,
       s.memory_locked AS session_memory_locked,
       k.service_key_id,
       src.key_source AS session_key_source,
       src.key_expires_at AS session_key_expires_at
  FROM atrest.database_keys k, atrest._session_key_state() s, atrest._session_key_source() src
 WHERE k.active;

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

-- PUBLIC, for the operators, operator classes, subscripting and statistics of
-- the encrypted types (issue 10): they do no more than the casts do.
GRANT EXECUTE ON FUNCTION
    atrest.jsonb_concat(atrest.encrypted_jsonb, atrest.encrypted_jsonb),
    atrest.to_json(atrest.encrypted_jsonb),
    atrest.encrypted_eq(atrest.encrypted_jsonb, atrest.encrypted_jsonb),
    atrest.encrypted_ne(atrest.encrypted_jsonb, atrest.encrypted_jsonb),
    atrest.encrypted_lt(atrest.encrypted_jsonb, atrest.encrypted_jsonb),
    atrest.encrypted_le(atrest.encrypted_jsonb, atrest.encrypted_jsonb),
    atrest.encrypted_gt(atrest.encrypted_jsonb, atrest.encrypted_jsonb),
    atrest.encrypted_ge(atrest.encrypted_jsonb, atrest.encrypted_jsonb),
    atrest.encrypted_cmp(atrest.encrypted_jsonb, atrest.encrypted_jsonb),
    atrest.encrypted_hash(atrest.encrypted_jsonb),
    atrest.encrypted_eq(atrest.encrypted_bytea, atrest.encrypted_bytea),
    atrest.encrypted_ne(atrest.encrypted_bytea, atrest.encrypted_bytea),
    atrest.encrypted_lt(atrest.encrypted_bytea, atrest.encrypted_bytea),
    atrest.encrypted_le(atrest.encrypted_bytea, atrest.encrypted_bytea),
    atrest.encrypted_gt(atrest.encrypted_bytea, atrest.encrypted_bytea),
    atrest.encrypted_ge(atrest.encrypted_bytea, atrest.encrypted_bytea),
    atrest.encrypted_cmp(atrest.encrypted_bytea, atrest.encrypted_bytea),
    atrest.encrypted_hash(atrest.encrypted_bytea),
    atrest.encrypted_eq(atrest.encrypted_text, atrest.encrypted_text),
    atrest.encrypted_ne(atrest.encrypted_text, atrest.encrypted_text),
    atrest.encrypted_lt(atrest.encrypted_text, atrest.encrypted_text),
    atrest.encrypted_le(atrest.encrypted_text, atrest.encrypted_text),
    atrest.encrypted_gt(atrest.encrypted_text, atrest.encrypted_text),
    atrest.encrypted_ge(atrest.encrypted_text, atrest.encrypted_text),
    atrest.encrypted_cmp(atrest.encrypted_text, atrest.encrypted_text),
    atrest.encrypted_hash(atrest.encrypted_text),
    atrest.encrypted_typanalyze(internal),
    atrest.encrypted_jsonb_subscript_handler(internal)
TO PUBLIC;

-- atrest_service: the store's functions (granted above, listed again so this
-- section says all there is).
GRANT EXECUTE ON FUNCTION
    atrest.create_model(text, text, jsonb, bytea),
    atrest.get_model(text),
    atrest.delete_model(text),
    atrest.begin_analyze(text, bytea, text),
    atrest.complete_analyze(uuid, jsonb),
    atrest.fail_analyze(uuid, jsonb),
    atrest.get_analyze_result(text, uuid),
    atrest.delete_analyze_result(text, uuid),
    atrest.get_analyze_document(text, uuid),
    atrest.put_analyze_output(uuid, text, text, bytea),
    atrest.get_analyze_result_pdf(text, uuid),
    atrest.get_analyze_result_figure(text, uuid, text),
    atrest.begin_analyze_batch(text, jsonb),
    atrest.update_analyze_batch(uuid, text, integer, jsonb),
    atrest.get_analyze_batch_result(text, uuid),
    atrest.list_analyze_batch_results(text),
    atrest.delete_analyze_batch_result(text, uuid),
    atrest.begin_analyze_with_id(uuid, text, bytea, text),
    atrest.begin_analyze_batch_with_id(uuid, text, jsonb)
TO atrest_service;
