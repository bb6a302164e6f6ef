/* pg_atrest--1.0--1.1.sql: update of an installed pg_atrest 1.0 to 1.1 */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION pg_atrest UPDATE TO '1.1'" to load this file. \quit

-- Every change below is mirrored in pg_atrest--1.1.sql; test/t/016_upgrade.pl checks
-- that an updated database and a fresh 1.1 install have the same objects, columns
-- (in the same order), definitions and privileges.

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
