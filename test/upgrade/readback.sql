-- test/upgrade/readback.sql: every value of test/upgrade/source.sql, in plaintext, the same
-- on every version (md5 of the big ones).  Server-specific things (key ids, times) are
-- left out; which keys protect the data is checked by test/upgrade/keys.sql.
\set ON_ERROR_STOP 1
\pset format unaligned
\pset footer off
SELECT id, r::jsonb, m::jsonb, encode(b::bytea, 'hex') AS b, t::text, inv::text
  FROM docs WHERE id < 10 ORDER BY id;
SELECT id, md5(r::text), md5(m::text), md5(b::bytea), md5(t::text), md5(inv::text)
  FROM docs ORDER BY id;
SELECT count(*), sum((r ->> 'sq')::bigint), md5(string_agg(t::text, ',' ORDER BY id))
  FROM docs WHERE id >= 10;
SELECT * FROM doc_pages WHERE id < 10 ORDER BY id;
SELECT description, definition, encode(artifact, 'hex') FROM atrest.get_model('upgrade-model');
SELECT status, result::jsonb, error::jsonb, (completed_at IS NULL) = (expires_at IS NULL) AS consistent
  FROM atrest.analyze_results WHERE model_id = 'upgrade-model' ORDER BY status;
