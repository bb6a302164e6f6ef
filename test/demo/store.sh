# test/demo/store.sh: the demo chapter on the models and analyze results store (docs/store.md).
# Sourced after test/demo.sh, whose helpers it uses: chapter, say, sql, sql_value, ok, fail,
# grep_relation.  Runs in pg_cron's database (the sandbox's "postgres", cron.database_name)
# after chapter_setup has created the extension there.  To hook it in: source this file
# from test/demo.sh and add chapter_store to DEMO_CHAPTERS.
#
# Shows a result stored by the service role, fetched, deleted (a second delete finds
# nothing, a read gets AT404), its ciphertext on disk, and an expired result with its
# searchable PDF output, and an expired batch result, refused at read time and then purged
# by the pg_cron job within about a minute (STORE_DEMO_WAIT seconds at most, default 75).

STORE_DEMO_MARKER='INV-2024-007734'

demo_store() {
	chapter "The analyze results store: 24-hour retention, delete, purge by pg_cron"
	say "pg_atrest ships a store for a document-analysis service: models (kept until deleted)" \
		"and analyze results (kept 24 hours after completion, or deleted earlier).  Its functions" \
		"mirror the Document Intelligence REST operations.  The application's role is made a" \
		"member of atrest_service, which may call these functions and nothing else."
	sql "CREATE ROLE docsvc LOGIN IN ROLE atrest_service;"

	say "The purge of expired results runs as a pg_cron job.  In pg_cron's database, creating" \
		"pg_cron before pg_atrest schedules it by itself; here pg_atrest came first, so we" \
		"schedule it (calling it again would not add a second job):"
	sql "CREATE EXTENSION IF NOT EXISTS pg_cron;
SELECT atrest.schedule_purge();
SELECT jobid, jobname, schedule, command, database FROM cron.job;"

	say "The service registers a model, starts an analyze operation and completes it:"
	sql "SET ROLE docsvc;
SELECT atrest.create_model('contoso-invoice-v3', 'Invoices with PO numbers',
                           '{\"baseModel\": \"prebuilt-invoice\", \"fields\": [\"PONumber\"]}');
SELECT atrest.begin_analyze('contoso-invoice-v3') AS result_id;"
	local rid
	rid=$(sql_value "SELECT result_id FROM atrest.analyze_results ORDER BY created_at DESC LIMIT 1")
	sql "SET ROLE docsvc;
SELECT atrest.complete_analyze('$rid',
    '{\"content\": \"Invoice $STORE_DEMO_MARKER, PO 4711, total 980.00 EUR\", \"pages\": [{\"pageNumber\": 1}]}')
    AS expires_at;"
	say "Completion fixed the expiry: completion time + atrest.result_ttl (24 hours).  The" \
		"client fetches the result:"
	sql "SET ROLE docsvc;
\\x on
SELECT * FROM atrest.get_analyze_result('contoso-invoice-v3', '$rid');"
	say "On disk, the result is ciphertext:"
	grep_relation atrest.analyze_results "$STORE_DEMO_MARKER" absent
	say "The service role cannot read the table, let alone the keys:"
	sql "SET ROLE docsvc;
\\set ON_ERROR_STOP off
\\set SHOW_CONTEXT never
SELECT count(*) FROM atrest.analyze_results;
SELECT count(*) FROM atrest.data_keys;"

	say "The client deletes the result.  The row is gone when the transaction commits; a" \
		"second delete finds nothing, and reading it raises AT404, the same error as for a" \
		"result that never existed or has expired:"
	sql "SET ROLE docsvc;
SELECT atrest.delete_analyze_result('contoso-invoice-v3', '$rid') AS deleted;
SELECT atrest.delete_analyze_result('contoso-invoice-v3', '$rid') AS deleted_again;
\\set ON_ERROR_STOP off
\\set SHOW_CONTEXT never
SELECT * FROM atrest.get_analyze_result('contoso-invoice-v3', '$rid');
\\echo SQLSTATE :LAST_ERROR_SQLSTATE"
	[ "$(sql_value "SELECT count(*) FROM atrest.analyze_results WHERE result_id = '$rid'")" = 0 ] ||
		fail "the deleted result is still in atrest.analyze_results"
	ok "the deleted result is gone"

	say "Expiry.  With a short TTL (atrest.result_ttl can be set by superusers, here for one" \
		"session), a result with its searchable PDF, and a batch analysis whose request" \
		"carries a source location, complete and expire five seconds later:"
	sql "SET atrest.result_ttl = '5 seconds';
SELECT atrest.begin_analyze('contoso-invoice-v3') AS eid \\gset
SELECT atrest.put_analyze_output(:'eid', 'pdf', NULL, convert_to('%PDF-1.7 searchable', 'UTF8'));
SELECT atrest.complete_analyze(:'eid', '{\"content\": \"short-lived\"}') AS expires_at;
SELECT atrest.begin_analyze_batch('contoso-invoice-v3',
    '{\"azureBlobSource\": {\"containerUrl\": \"https://contoso.blob.core.windows.net/in?sig=...\"}}') AS bid \\gset
SELECT atrest.update_analyze_batch(:'bid', 'succeeded', 100,
    '{\"details\": [{\"status\": \"succeeded\", \"sourceUrl\": \"https://contoso.blob.core.windows.net/in/a.pdf\"}]}')
    AS batch_expires_at;"
	local eid bid
	eid=$(sql_value "SELECT result_id FROM atrest.analyze_results ORDER BY created_at DESC LIMIT 1")
	bid=$(sql_value "SELECT result_id FROM atrest.analyze_batch_results ORDER BY created_at DESC LIMIT 1")
	sleep 6
	say "Six seconds later they have expired: no function returns them any more, although no" \
		"purge has run yet and the rows are still in the tables:"
	sql "\\set ON_ERROR_STOP off
\\set SHOW_CONTEXT never
SELECT * FROM atrest.get_analyze_result('contoso-invoice-v3', '$eid');
\\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT atrest.get_analyze_result_pdf('contoso-invoice-v3', '$eid');
\\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM atrest.get_analyze_batch_result('contoso-invoice-v3', '$bid');
\\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT result_id, status, expires_at < now() AS expired FROM atrest.analyze_results;
SELECT result_id, kind, expires_at < now() AS expired FROM atrest.analyze_outputs;
SELECT result_id, status, expires_at < now() AS expired FROM atrest.analyze_batch_results;
SELECT rel, expired_rows, cron_job, cron_job_scheduled FROM atrest.retention_status;"

	local wait=${STORE_DEMO_WAIT:-75} waited=0
	say "The pg_cron job runs every minute (CALL atrest.purge_expired_job(), one transaction per" \
		"batch of 10,000 rows).  Waiting for it (at most $wait seconds) ..."
	while [ "$(sql_value "SELECT (SELECT count(*) FROM atrest.analyze_results WHERE result_id = '$eid')
		+ (SELECT count(*) FROM atrest.analyze_outputs WHERE result_id = '$eid')
		+ (SELECT count(*) FROM atrest.analyze_batch_results WHERE result_id = '$bid')")" != 0 ]; do
		if [ $waited -ge "$wait" ]; then
			fail "the purge job did not remove the expired result, PDF and batch within $wait seconds"
		fi
		sleep 5
		waited=$((waited + 5))
		printf '  %d s\n' "$waited"
	done
	echo
	ok "the job purged the expired result, its PDF and the batch result (after about $waited s)"
	sql "SELECT status, return_message, start_time FROM cron.job_run_details
 WHERE jobid = (SELECT jobid FROM cron.job WHERE jobname = 'atrest-purge')
 ORDER BY start_time DESC LIMIT 3;
SELECT rel, rows_deleted, batches, via, finished_at FROM atrest.purge_runs
 WHERE rows_deleted > 0 ORDER BY id DESC LIMIT 4;
SELECT rel, expired_rows, last_purge_at, last_purge_rows FROM atrest.retention_status;"
	say "For another database, run in pg_cron's database: SELECT atrest.schedule_purge('otherdb');" \
		"(a job named atrest-purge:otherdb)."
}

# The name test/demo.sh's chapter list uses.
chapter_store() {
	demo_store
}
