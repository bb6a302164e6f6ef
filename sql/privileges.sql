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
