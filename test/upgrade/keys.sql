-- test/upgrade/keys.sql: which keys protect the data (after the restore and enable_cmk):
-- the CMK over the database key, and data keys for every class (the restore made them
-- anew, at version 1, so their versions are not compared).
\set ON_ERROR_STOP 1
\pset format unaligned
\pset footer off
SELECT protector, provider, key_uri FROM atrest.key_status;
SELECT c.name, count(d.version) > 0 AS has_data_keys FROM atrest.key_classes c
  LEFT JOIN atrest.data_keys d ON d.class_id = c.id
 GROUP BY c.name ORDER BY c.name;
