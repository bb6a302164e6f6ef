-- Sealing functions are VOLATILE: every call draws a fresh nonce, so one
-- value written in a query is one envelope, however often the query refers to
-- it.  A subquery whose output list calls a STABLE function is pulled up into
-- the outer query, which then calls the function once per reference; with
-- VOLATILE it is not, so both references below are the same envelope.

-- pg_temp.raw(v): the stored (sealed) bytes of v (byteacat of v and nothing;
-- see sql/hostile.sql)
CREATE FUNCTION pg_temp.raw(atrest.encrypted_text, bytea DEFAULT '') RETURNS bytea
    LANGUAGE internal IMMUTABLE STRICT AS 'byteacat';
CREATE FUNCTION pg_temp.raw(atrest.encrypted_jsonb, bytea DEFAULT '') RETURNS bytea
    LANGUAGE internal IMMUTABLE STRICT AS 'byteacat';
CREATE FUNCTION pg_temp.raw(atrest.encrypted_bytea, bytea DEFAULT '') RETURNS bytea
    LANGUAGE internal IMMUTABLE STRICT AS 'byteacat';

SELECT p.oid::regprocedure AS sealer, p.provolatile AS volatility, p.proparallel AS parallel
  FROM pg_proc p
 WHERE p.pronamespace = 'atrest'::regnamespace
   AND (p.proname IN ('encrypted_jsonb', 'encrypted_bytea', 'encrypted_text', '_reseal')
        OR p.proname ~ '^encrypted_(jsonb|bytea|text)_(in|recv)$')
 ORDER BY p.oid::regprocedure::text COLLATE "C";

-- one value, two references: one envelope
SELECT pg_temp.raw(v) = pg_temp.raw(v) AS same_envelope
  FROM (SELECT atrest.encrypted_text('secret'::text, -1, false) AS v) s;
SELECT pg_temp.raw(v) = pg_temp.raw(v) AS same_envelope
  FROM (SELECT '{"a": 1}'::jsonb::atrest.encrypted_jsonb AS v) s;
SELECT pg_temp.raw(v) = pg_temp.raw(v) AS same_envelope
  FROM (SELECT atrest._reseal('\x01'::bytea::atrest.encrypted_bytea, 2) AS v) s;
-- the same through a CTE, which is inlined unless it is volatile
WITH s AS (SELECT 'x'::text::atrest.encrypted_text(model) AS v)
SELECT pg_temp.raw(v) = pg_temp.raw(v) AS same_envelope FROM s;

-- two calls: two envelopes (a fresh nonce each) of the same plaintext
SELECT pg_temp.raw(atrest.encrypted_text('secret'::text, -1, false))
       <> pg_temp.raw(atrest.encrypted_text('secret'::text, -1, false)) AS distinct_envelopes;

-- Nonces come from the backend's pool of CSPRNG bytes, 24 at a time: 10,000
-- values sealed in one statement (over 200 refills of the pool) carry 10,000
-- distinct nonces, and none is the zeros a used part of the pool is wiped to.
SELECT count(DISTINCT substr(pg_temp.raw(v), 9, 24)) AS distinct_nonces,
       count(*) FILTER (WHERE substr(pg_temp.raw(v), 9, 24) = decode(repeat('00', 24), 'hex')) AS zero_nonces
  FROM (SELECT atrest.encrypted_text(i::text, -1, false) AS v FROM generate_series(1, 10000) i) s;
