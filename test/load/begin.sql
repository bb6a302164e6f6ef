-- pgbench script (test/t/041_key_changes_under_load.pl): start an analyze operation.
SELECT load_begin();
