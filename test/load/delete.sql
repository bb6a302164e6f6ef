-- pgbench script (test/t/041_key_changes_under_load.pl): delete a random result.
SELECT load_delete();
