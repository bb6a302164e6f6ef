/* pg_atrest--1.0.sql: install script of pg_atrest 1.0 */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION pg_atrest" to load this file. \quit

-- The schema "atrest" is created by CREATE EXTENSION (control file).  Roles
-- need USAGE on it to name the types; the key tables and key functions below
-- are never granted to PUBLIC.
GRANT USAGE ON SCHEMA atrest TO PUBLIC;

------------------------------------------------------------------------------
-- Key tables.  They hold wrapped keys only; they are not dumped by pg_dump
-- (a restored database gets keys of its own from CREATE EXTENSION).  The C
-- code reads them directly, in this column order (src/keyring.c).
------------------------------------------------------------------------------

CREATE SEQUENCE atrest.key_classes_id_seq START 100 MAXVALUE 65535;

CREATE TABLE atrest.key_classes (
    id              integer PRIMARY KEY CHECK (id BETWEEN 1 AND 65535),
    name            text NOT NULL UNIQUE
                    CHECK (name ~ '^[a-z_][a-z0-9_]{0,62}$'),
    active_version  integer NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE atrest.database_keys (
    id              uuid PRIMARY KEY,
    active          boolean NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    retired_at      timestamptz,
    protector       text NOT NULL DEFAULT 'service'
                    CHECK (protector IN ('service', 'customer')),
    provider        text,
    key_uri         text,
    key_version     text,
    protected_since timestamptz NOT NULL DEFAULT now(),
    wrapped         bytea,
    recheck_at      timestamptz,
    CHECK (active = (wrapped IS NOT NULL)),
    CHECK ((protector = 'customer') = (provider IS NOT NULL AND key_uri IS NOT NULL))
);
CREATE UNIQUE INDEX database_keys_one_active ON atrest.database_keys (active) WHERE active;

CREATE TABLE atrest.data_keys (
    class_id        integer NOT NULL REFERENCES atrest.key_classes (id),
    version         integer NOT NULL CHECK (version > 0),
    database_key_id uuid NOT NULL REFERENCES atrest.database_keys (id),
    created_at      timestamptz NOT NULL DEFAULT now(),
    wrapped         bytea NOT NULL,
    PRIMARY KEY (class_id, version)
);

CREATE TABLE atrest.key_events (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_time           timestamptz NOT NULL DEFAULT clock_timestamp(),
    role_name            name NOT NULL DEFAULT session_user,
    operation            text NOT NULL,
    key_class            text,
    key_version          integer,
    provider             text,
    key_uri              text,
    provider_key_version text,
    outcome              text NOT NULL,
    detail               text
);

REVOKE ALL ON atrest.key_classes, atrest.database_keys, atrest.data_keys,
              atrest.key_events FROM PUBLIC;
REVOKE ALL ON SEQUENCE atrest.key_classes_id_seq FROM PUBLIC;

-- Every change to a key table tells every backend (standbys included) to
-- drop its key cache.
CREATE FUNCTION atrest._key_tables_changed() RETURNS trigger
    AS 'MODULE_PATHNAME', 'atrest_key_tables_changed' LANGUAGE C;
REVOKE ALL ON FUNCTION atrest._key_tables_changed() FROM PUBLIC;

CREATE TRIGGER key_cache_invalidate
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON atrest.key_classes
    FOR EACH STATEMENT EXECUTE FUNCTION atrest._key_tables_changed();
CREATE TRIGGER key_cache_invalidate
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON atrest.database_keys
    FOR EACH STATEMENT EXECUTE FUNCTION atrest._key_tables_changed();
CREATE TRIGGER key_cache_invalidate
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON atrest.data_keys
    FOR EACH STATEMENT EXECUTE FUNCTION atrest._key_tables_changed();

INSERT INTO atrest.key_classes (id, name) VALUES (1, 'default'), (2, 'model'), (3, 'result');

------------------------------------------------------------------------------
-- Types.  Storage is "external": values may move out of line, but TOAST does
-- not try to compress them (they are compressed before encryption).
------------------------------------------------------------------------------

CREATE FUNCTION atrest.encrypted_typmod_in(cstring[]) RETURNS integer
    AS 'MODULE_PATHNAME' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE FUNCTION atrest.encrypted_typmod_out(integer) RETURNS cstring
    AS 'MODULE_PATHNAME' LANGUAGE C STABLE STRICT PARALLEL SAFE;

-- encrypted_jsonb
CREATE TYPE atrest.encrypted_jsonb;
CREATE FUNCTION atrest.encrypted_jsonb_in(cstring, oid, integer) RETURNS atrest.encrypted_jsonb
    AS 'MODULE_PATHNAME' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE FUNCTION atrest.encrypted_jsonb_out(atrest.encrypted_jsonb) RETURNS cstring
    AS 'MODULE_PATHNAME' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE FUNCTION atrest.encrypted_jsonb_recv(internal, oid, integer) RETURNS atrest.encrypted_jsonb
    AS 'MODULE_PATHNAME' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE FUNCTION atrest.encrypted_jsonb_send(atrest.encrypted_jsonb) RETURNS bytea
    AS 'MODULE_PATHNAME' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE TYPE atrest.encrypted_jsonb (
    INPUT = atrest.encrypted_jsonb_in,
    OUTPUT = atrest.encrypted_jsonb_out,
    RECEIVE = atrest.encrypted_jsonb_recv,
    SEND = atrest.encrypted_jsonb_send,
    TYPMOD_IN = atrest.encrypted_typmod_in,
    TYPMOD_OUT = atrest.encrypted_typmod_out,
    INTERNALLENGTH = VARIABLE,
    STORAGE = external
);

-- encrypted_bytea
CREATE TYPE atrest.encrypted_bytea;
CREATE FUNCTION atrest.encrypted_bytea_in(cstring, oid, integer) RETURNS atrest.encrypted_bytea
    AS 'MODULE_PATHNAME' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE FUNCTION atrest.encrypted_bytea_out(atrest.encrypted_bytea) RETURNS cstring
    AS 'MODULE_PATHNAME' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE FUNCTION atrest.encrypted_bytea_recv(internal, oid, integer) RETURNS atrest.encrypted_bytea
    AS 'MODULE_PATHNAME' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE FUNCTION atrest.encrypted_bytea_send(atrest.encrypted_bytea) RETURNS bytea
    AS 'MODULE_PATHNAME' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE TYPE atrest.encrypted_bytea (
    INPUT = atrest.encrypted_bytea_in,
    OUTPUT = atrest.encrypted_bytea_out,
    RECEIVE = atrest.encrypted_bytea_recv,
    SEND = atrest.encrypted_bytea_send,
    TYPMOD_IN = atrest.encrypted_typmod_in,
    TYPMOD_OUT = atrest.encrypted_typmod_out,
    INTERNALLENGTH = VARIABLE,
    STORAGE = external
);

-- encrypted_text
CREATE TYPE atrest.encrypted_text;
CREATE FUNCTION atrest.encrypted_text_in(cstring, oid, integer) RETURNS atrest.encrypted_text
    AS 'MODULE_PATHNAME' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE FUNCTION atrest.encrypted_text_out(atrest.encrypted_text) RETURNS cstring
    AS 'MODULE_PATHNAME' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE FUNCTION atrest.encrypted_text_recv(internal, oid, integer) RETURNS atrest.encrypted_text
    AS 'MODULE_PATHNAME' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE FUNCTION atrest.encrypted_text_send(atrest.encrypted_text) RETURNS bytea
    AS 'MODULE_PATHNAME' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE TYPE atrest.encrypted_text (
    INPUT = atrest.encrypted_text_in,
    OUTPUT = atrest.encrypted_text_out,
    RECEIVE = atrest.encrypted_text_recv,
    SEND = atrest.encrypted_text_send,
    TYPMOD_IN = atrest.encrypted_typmod_in,
    TYPMOD_OUT = atrest.encrypted_typmod_out,
    INTERNALLENGTH = VARIABLE,
    STORAGE = external,
    CATEGORY = 'S'      -- string category: note || 'x' resolves to text operators
);

------------------------------------------------------------------------------
-- Casts.  encrypted -> plain is implicit, so jsonb operators and functions
-- work unchanged; plain -> encrypted is an assignment cast that gets the
-- column's typmod; encrypted -> encrypted is the length coercion that moves
-- a value to the column's key class.
------------------------------------------------------------------------------

CREATE FUNCTION atrest.decrypt(atrest.encrypted_jsonb) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'encrypted_jsonb_decrypt' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE FUNCTION atrest.decrypt(atrest.encrypted_bytea) RETURNS bytea
    AS 'MODULE_PATHNAME', 'encrypted_bytea_decrypt' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE FUNCTION atrest.decrypt(atrest.encrypted_text) RETURNS text
    AS 'MODULE_PATHNAME', 'encrypted_text_decrypt' LANGUAGE C STABLE STRICT PARALLEL SAFE;

CREATE FUNCTION atrest.encrypted_jsonb(jsonb, integer, boolean) RETURNS atrest.encrypted_jsonb
    AS 'MODULE_PATHNAME', 'encrypted_jsonb_from_plain' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE FUNCTION atrest.encrypted_bytea(bytea, integer, boolean) RETURNS atrest.encrypted_bytea
    AS 'MODULE_PATHNAME', 'encrypted_bytea_from_plain' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE FUNCTION atrest.encrypted_text(text, integer, boolean) RETURNS atrest.encrypted_text
    AS 'MODULE_PATHNAME', 'encrypted_text_from_plain' LANGUAGE C STABLE STRICT PARALLEL SAFE;

CREATE FUNCTION atrest.encrypted_jsonb(atrest.encrypted_jsonb, integer, boolean) RETURNS atrest.encrypted_jsonb
    AS 'MODULE_PATHNAME', 'encrypted_jsonb_coerce' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE FUNCTION atrest.encrypted_bytea(atrest.encrypted_bytea, integer, boolean) RETURNS atrest.encrypted_bytea
    AS 'MODULE_PATHNAME', 'encrypted_bytea_coerce' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE FUNCTION atrest.encrypted_text(atrest.encrypted_text, integer, boolean) RETURNS atrest.encrypted_text
    AS 'MODULE_PATHNAME', 'encrypted_text_coerce' LANGUAGE C STABLE STRICT PARALLEL SAFE;

CREATE CAST (atrest.encrypted_jsonb AS jsonb) WITH FUNCTION atrest.decrypt(atrest.encrypted_jsonb) AS IMPLICIT;
CREATE CAST (atrest.encrypted_bytea AS bytea) WITH FUNCTION atrest.decrypt(atrest.encrypted_bytea) AS IMPLICIT;
CREATE CAST (atrest.encrypted_text AS text) WITH FUNCTION atrest.decrypt(atrest.encrypted_text) AS IMPLICIT;

CREATE CAST (jsonb AS atrest.encrypted_jsonb) WITH FUNCTION atrest.encrypted_jsonb(jsonb, integer, boolean) AS ASSIGNMENT;
CREATE CAST (bytea AS atrest.encrypted_bytea) WITH FUNCTION atrest.encrypted_bytea(bytea, integer, boolean) AS ASSIGNMENT;
CREATE CAST (text AS atrest.encrypted_text) WITH FUNCTION atrest.encrypted_text(text, integer, boolean) AS ASSIGNMENT;

CREATE CAST (atrest.encrypted_jsonb AS atrest.encrypted_jsonb)
    WITH FUNCTION atrest.encrypted_jsonb(atrest.encrypted_jsonb, integer, boolean) AS IMPLICIT;
CREATE CAST (atrest.encrypted_bytea AS atrest.encrypted_bytea)
    WITH FUNCTION atrest.encrypted_bytea(atrest.encrypted_bytea, integer, boolean) AS IMPLICIT;
CREATE CAST (atrest.encrypted_text AS atrest.encrypted_text)
    WITH FUNCTION atrest.encrypted_text(atrest.encrypted_text, integer, boolean) AS IMPLICIT;

------------------------------------------------------------------------------
-- Value inspection: what a value's header says (no decryption).
------------------------------------------------------------------------------

CREATE FUNCTION atrest.envelope(v atrest.encrypted_jsonb,
    OUT key_class text, OUT key_version integer, OUT compressed boolean, OUT stored_bytes integer)
    AS 'MODULE_PATHNAME', 'encrypted_jsonb_envelope' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE FUNCTION atrest.envelope(v atrest.encrypted_bytea,
    OUT key_class text, OUT key_version integer, OUT compressed boolean, OUT stored_bytes integer)
    AS 'MODULE_PATHNAME', 'encrypted_bytea_envelope' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE FUNCTION atrest.envelope(v atrest.encrypted_text,
    OUT key_class text, OUT key_version integer, OUT compressed boolean, OUT stored_bytes integer)
    AS 'MODULE_PATHNAME', 'encrypted_text_envelope' LANGUAGE C STABLE STRICT PARALLEL SAFE;

-- helpers of atrest.reencrypt
CREATE FUNCTION atrest._reseal(atrest.encrypted_jsonb, integer) RETURNS atrest.encrypted_jsonb
    AS 'MODULE_PATHNAME', 'encrypted_jsonb_reseal' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE FUNCTION atrest._reseal(atrest.encrypted_bytea, integer) RETURNS atrest.encrypted_bytea
    AS 'MODULE_PATHNAME', 'encrypted_bytea_reseal' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE FUNCTION atrest._reseal(atrest.encrypted_text, integer) RETURNS atrest.encrypted_text
    AS 'MODULE_PATHNAME', 'encrypted_text_reseal' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE FUNCTION atrest._needs_reseal(atrest.encrypted_jsonb, integer) RETURNS boolean
    AS 'MODULE_PATHNAME', 'encrypted_jsonb_needs_reseal' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE FUNCTION atrest._needs_reseal(atrest.encrypted_bytea, integer) RETURNS boolean
    AS 'MODULE_PATHNAME', 'encrypted_bytea_needs_reseal' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE FUNCTION atrest._needs_reseal(atrest.encrypted_text, integer) RETURNS boolean
    AS 'MODULE_PATHNAME', 'encrypted_text_needs_reseal' LANGUAGE C STABLE STRICT PARALLEL SAFE;

------------------------------------------------------------------------------
-- Key management.  SECURITY DEFINER with a pinned search_path, and not
-- executable by PUBLIC: grant EXECUTE to the roles that manage keys.
------------------------------------------------------------------------------

CREATE FUNCTION atrest._bootstrap() RETURNS uuid
    AS 'MODULE_PATHNAME', 'atrest_bootstrap' LANGUAGE C
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION atrest.create_key_class(name text) RETURNS integer
    AS 'MODULE_PATHNAME', 'atrest_create_key_class' LANGUAGE C STRICT
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION atrest.rotate_data_key(key_class text DEFAULT NULL)
    RETURNS TABLE (key_class text, key_version integer)
    AS 'MODULE_PATHNAME', 'atrest_rotate_data_key' LANGUAGE C
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION atrest.rotate_database_key() RETURNS uuid
    AS 'MODULE_PATHNAME', 'atrest_rotate_database_key' LANGUAGE C
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION atrest.enable_cmk(provider text, key_uri text) RETURNS void
    AS 'MODULE_PATHNAME', 'atrest_enable_cmk' LANGUAGE C STRICT
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION atrest.disable_cmk() RETURNS void
    AS 'MODULE_PATHNAME', 'atrest_disable_cmk' LANGUAGE C
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION atrest.rewrap() RETURNS boolean
    AS 'MODULE_PATHNAME', 'atrest_rewrap' LANGUAGE C
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION atrest.recheck_keys() RETURNS void
    AS 'MODULE_PATHNAME', 'atrest_recheck_keys' LANGUAGE C
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION atrest.provider_selftest(provider text, key_uri text) RETURNS text
    AS 'MODULE_PATHNAME', 'atrest_provider_selftest' LANGUAGE C STRICT;

CREATE FUNCTION atrest._session_key_state(
    OUT cache_loaded boolean, OUT last_unwrap timestamptz, OUT last_error text,
    OUT memory_locked boolean, OUT keys_held integer)
    AS 'MODULE_PATHNAME', 'atrest_session_key_state' LANGUAGE C VOLATILE;

CREATE FUNCTION atrest._service_key_source() RETURNS text
    AS 'MODULE_PATHNAME', 'atrest_service_key_source' LANGUAGE C STABLE;

CREATE FUNCTION atrest._active_key_version(class_id integer) RETURNS integer
    AS 'MODULE_PATHNAME', 'atrest_active_key_version' LANGUAGE C STABLE STRICT;

-- atrest.reencrypt: move a column's values to its class's active data key,
-- in batches of row updates (no table lock beyond ROW EXCLUSIVE).
CREATE FUNCTION atrest.reencrypt(rel regclass, col name, batch_size integer DEFAULT 1000)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    typ      oid;
    typmod   integer;
    class_id integer;
    total    bigint := 0;
    n        bigint;
BEGIN
    IF batch_size IS NULL OR batch_size < 1 THEN
        RAISE EXCEPTION 'batch_size must be at least 1' USING ERRCODE = '22023';
    END IF;
    SELECT a.atttypid, a.atttypmod INTO typ, typmod
      FROM pg_attribute a
     WHERE a.attrelid = rel AND a.attname = col AND a.attnum > 0 AND NOT a.attisdropped;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'column "%" of relation % does not exist', col, rel
            USING ERRCODE = '42703';
    END IF;
    IF typ NOT IN ('atrest.encrypted_jsonb'::regtype, 'atrest.encrypted_bytea'::regtype,
                   'atrest.encrypted_text'::regtype) THEN
        RAISE EXCEPTION 'column "%" of relation % is not of an encrypted type', col, rel
            USING ERRCODE = '42804';
    END IF;
    class_id := CASE WHEN typmod < 0 THEN 1 ELSE typmod END;
    LOOP
        EXECUTE format(
            'UPDATE %s SET %I = atrest._reseal(%I, $1) WHERE ctid = ANY (ARRAY('
            'SELECT ctid FROM %s WHERE %I IS NOT NULL AND atrest._needs_reseal(%I, $1) LIMIT $2))',
            rel, col, col, rel, col, col)
        USING class_id, batch_size;
        GET DIAGNOSTICS n = ROW_COUNT;
        EXIT WHEN n = 0;
        total := total + n;
    END LOOP;
    RETURN total;
END;
$$;

REVOKE ALL ON FUNCTION
    atrest._bootstrap(),
    atrest.create_key_class(text),
    atrest.rotate_data_key(text),
    atrest.rotate_database_key(),
    atrest.enable_cmk(text, text),
    atrest.disable_cmk(),
    atrest.rewrap(),
    atrest.recheck_keys(),
    atrest.provider_selftest(text, text),
    atrest._session_key_state(),
    atrest._service_key_source(),
    atrest.reencrypt(regclass, name, integer)
FROM PUBLIC;

------------------------------------------------------------------------------
-- Status.
------------------------------------------------------------------------------

CREATE VIEW atrest.key_status AS
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
       s.memory_locked AS session_memory_locked
  FROM atrest.database_keys k, atrest._session_key_state() s
 WHERE k.active;

REVOKE ALL ON atrest.key_status FROM PUBLIC;

------------------------------------------------------------------------------
-- The first keys of this database.
------------------------------------------------------------------------------

SELECT atrest._bootstrap();
