-- pgbench script (test/t/041_key_changes_under_load.pl): read a random result back and
-- check its plaintext against the ledger (an error if it differs).
SELECT load_read();
