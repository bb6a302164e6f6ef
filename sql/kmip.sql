-- The kmip provider without a KMIP server: its settings, the key URIs it accepts, and a
-- clean AT001 that changes nothing when no server is configured.  test/t/130_cmk_kmip.pl
-- runs it against a real PyKMIP server.

-- The settings exist once the module is loaded: at server start with shared_preload_libraries,
-- else at the first use of an encrypted value in a session, or by LOAD, as here (make
-- installcheck runs against servers that do not preload pg_atrest).
LOAD 'pg_atrest';
SELECT name, setting, unit, context FROM pg_settings WHERE name LIKE 'atrest.kmip%' ORDER BY name;

-- key URIs are checked before anything is sent
SELECT atrest.provider_selftest('kmip', 'kmip:label=cmk');
SELECT atrest.provider_selftest('kmip', 'kmip:id=');
SELECT atrest.provider_selftest('kmip', 'kmip:name=' || repeat('n', 256));
SELECT atrest.provider_selftest('kmip', E'kmip:name=a\tb');
SELECT atrest.enable_cmk('kmip', 'pkcs11:token=t;object=o');

-- atrest.kmip_host is not set here: AT001 (terse: the provider's reason is for the log)
\set VERBOSITY terse
SELECT atrest.provider_selftest('kmip', 'kmip:name=cmk');
SELECT atrest.enable_cmk('kmip', 'kmip:id=1');
\set VERBOSITY default
SELECT count(*) AS kmip_roots FROM atrest.database_keys WHERE provider = 'kmip';

-- the settings are superuser-only: another role does not see them
CREATE ROLE atrest_kmip_user;
SET ROLE atrest_kmip_user;
SELECT count(*) AS visible FROM pg_settings WHERE name LIKE 'atrest.kmip%';
-- 42501 (insufficient_privilege): PostgreSQL's own wording of this error changed in 16
\set VERBOSITY sqlstate
SHOW atrest.kmip_client_key;
SHOW atrest.kmip_host;
\set VERBOSITY default
RESET ROLE;
DROP ROLE atrest_kmip_user;
