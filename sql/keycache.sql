-- The backend's key cache: an ERROR while it loads leaves the session working, the cache
-- "not loaded" and no key in secure memory; the next read loads it again.

CREATE TABLE kc (id int PRIMARY KEY, note atrest.encrypted_text, doc atrest.encrypted_jsonb(result));
INSERT INTO kc SELECT i, 'note ' || i, jsonb_build_object('i', i) FROM generate_series(1, 5) i;
SELECT cache_loaded, keys_held > 0 AS keys_held FROM atrest._session_key_state();

-- 1. The ERROR comes while the database key row is read (no active row in this
-- transaction's view), before any key is unwrapped.  The session goes on working.
BEGIN;
UPDATE atrest.database_keys SET active = false, wrapped = NULL WHERE active;
SAVEPOINT s;
SELECT note FROM kc ORDER BY id;
ROLLBACK TO SAVEPOINT s;
SELECT cache_loaded, keys_held FROM atrest._session_key_state();
SELECT count(*) FROM kc;
SELECT id FROM kc WHERE id > 3 ORDER BY id;
SELECT note FROM kc WHERE id = 1;
ROLLBACK TO SAVEPOINT s;
SELECT cache_loaded, keys_held FROM atrest._session_key_state();
ROLLBACK;
SELECT id, note, doc FROM kc ORDER BY id;
SELECT cache_loaded, keys_held > 0 AS keys_held FROM atrest._session_key_state();

-- 2. The ERROR comes when a data key is first needed (the one of class "result" does not
-- authenticate), after the note's key was unwrapped: that key is wiped too.
BEGIN;
UPDATE atrest.data_keys SET wrapped = set_byte(wrapped, 20, get_byte(wrapped, 20) # 1)
 WHERE class_id = 3 AND version = (SELECT active_version FROM atrest.key_classes WHERE id = 3);
SAVEPOINT s;
\set VERBOSITY sqlstate
SELECT note, doc FROM kc ORDER BY id;
\set VERBOSITY default
ROLLBACK TO SAVEPOINT s;
SELECT cache_loaded, keys_held FROM atrest._session_key_state();
ROLLBACK;
SELECT count(*) FILTER (WHERE note::text = 'note ' || id AND (doc ->> 'i')::int = id) AS readable FROM kc;
SELECT cache_loaded, keys_held > 0 AS keys_held FROM atrest._session_key_state();

DROP TABLE kc;
