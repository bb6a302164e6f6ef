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
