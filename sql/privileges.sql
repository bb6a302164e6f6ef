-- Privileges: exactly what PUBLIC and atrest_service may use in schema atrest.
-- A function added to the extension appears here, so no grant slips through:
-- keep each list sorted, one object a line.

-- Functions and procedures PUBLIC may execute.
SELECT p.oid::regprocedure AS executable_by_public
  FROM pg_proc p
 WHERE p.pronamespace = 'atrest'::regnamespace
   AND has_function_privilege('public', p.oid, 'EXECUTE')
 ORDER BY p.oid::regprocedure::text COLLATE "C";

-- Functions and procedures atrest_service may execute beyond those.
SELECT p.oid::regprocedure AS executable_by_atrest_service
  FROM pg_proc p
 WHERE p.pronamespace = 'atrest'::regnamespace
   AND has_function_privilege('atrest_service', p.oid, 'EXECUTE')
   AND NOT has_function_privilege('public', p.oid, 'EXECUTE')
 ORDER BY p.oid::regprocedure::text COLLATE "C";

-- Tables, views and sequences: nothing for either.
SELECT c.oid::regclass AS granted_relation, g.who, g.priv
  FROM pg_class c
 CROSS JOIN (VALUES ('public'), ('atrest_service')) g0 (who)
 CROSS JOIN LATERAL (
       SELECT g0.who, priv
         FROM unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER']) priv
        WHERE c.relkind IN ('r', 'v', 'p', 'm', 'f')
          AND has_table_privilege(g0.who, c.oid, priv)
       UNION ALL
       SELECT g0.who, priv
         FROM unnest(ARRAY['USAGE', 'SELECT', 'UPDATE']) priv
        WHERE c.relkind = 'S'
          AND has_sequence_privilege(g0.who, c.oid, priv)) g
 WHERE c.relnamespace = 'atrest'::regnamespace
 ORDER BY c.oid::regclass::text COLLATE "C", 2, 3;

-- The schema and the types: usable by everyone.
SELECT has_schema_privilege('public', 'atrest', 'USAGE') AS schema_usage,
       has_schema_privilege('public', 'atrest', 'CREATE') AS schema_create;
SELECT t.oid::regtype AS type, has_type_privilege('public', t.oid, 'USAGE') AS public_usage
  FROM pg_type t
 WHERE t.typnamespace = 'atrest'::regnamespace AND t.typtype = 'b' AND t.typcategory <> 'A'
 ORDER BY t.oid::regtype::text COLLATE "C";

-- The helpers of atrest.reencrypt are PUBLIC's but do nothing for a role
-- that could not run atrest.reencrypt itself: it needs EXECUTE on the
-- procedure and SELECT and UPDATE on the column of the table it names, and
-- the table it rewrites must be that table or one of its children.
CREATE ROLE regress_priv_user;
CREATE TABLE priv_t (id int, doc atrest.encrypted_text);
CREATE TABLE priv_other (id int, doc atrest.encrypted_text);
INSERT INTO priv_t VALUES (1, 'a');
GRANT SELECT, UPDATE ON priv_t, priv_other TO regress_priv_user;
SET ROLE regress_priv_user;
SELECT atrest._reencrypt_targets('priv_t', 'doc');
SELECT atrest._reencrypt_batch('priv_t', 'priv_t', 'doc', 10);
SELECT atrest._reencrypt_pending('priv_t', 'priv_t', 'doc');
RESET ROLE;
GRANT EXECUTE ON PROCEDURE atrest.reencrypt TO regress_priv_user;
REVOKE UPDATE ON priv_t FROM regress_priv_user;
SET ROLE regress_priv_user;
SELECT atrest._reencrypt_batch('priv_t', 'priv_t', 'doc', 10);
RESET ROLE;
GRANT UPDATE (doc) ON priv_t TO regress_priv_user;
SET ROLE regress_priv_user;
SELECT atrest._reencrypt_targets('priv_t', 'doc');
SELECT atrest._reencrypt_batch('priv_t', 'priv_t', 'doc', 10);
SELECT atrest._reencrypt_batch('priv_t', 'priv_other', 'doc', 10);
RESET ROLE;
REVOKE ALL ON PROCEDURE atrest.reencrypt FROM regress_priv_user;
DROP TABLE priv_t, priv_other;
DROP ROLE regress_priv_user;
