-- pgbench script (test/t/041_key_changes_under_load.pl): complete a running analyze
-- operation with a result document.
SELECT load_complete();
