-- test/upgrade/keys.sql: which keys protect the data (after the restore and enable_cmk).
\set ON_ERROR_STOP 1
\pset format unaligned
\pset footer off
SELECT protector, provider, key_uri FROM atrest.key_status;
SELECT c.name, count(d.version) FROM atrest.key_classes c
  LEFT JOIN atrest.data_keys d ON d.class_id = c.id
 GROUP BY c.name ORDER BY c.name;
