-- The rest of the store: input documents, analysis outputs (PDF, figures),
-- batch analysis results, the operation timeout.  Each function's happy
-- path, expiry at read time before any purge, deletion at commit, AT404 in
-- every case of absence, NULL arguments (22004), atrest_service allowed and
-- a plain role refused.  (The purge by pg_cron and the table files: test/t/160.)

-- try(sql): run a statement, return 'ok' or 'SQLSTATE: message'.
CREATE FUNCTION pg_temp.try(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END;
$$;

-- The settings exist once the module is loaded: at server start with shared_preload_libraries,
-- else at the first use of an encrypted value in a session, or by LOAD, as here (make
-- installcheck runs against servers that do not preload pg_atrest).
LOAD 'pg_atrest';
SHOW atrest.input_ttl;
SHOW atrest.operation_timeout;
SELECT name, context FROM pg_settings
 WHERE name IN ('atrest.result_ttl', 'atrest.input_ttl', 'atrest.operation_timeout') ORDER BY name;
SELECT pg_temp.try($$SET atrest.input_ttl = '0'$$);
SELECT pg_temp.try($$SET atrest.operation_timeout = 'soon'$$);

SELECT atrest.create_model('prebuilt-layout');
SELECT atrest.create_model('prebuilt-read');

--
-- Input documents
--
-- begin_analyze with the model id alone still works (no document kept)
SELECT atrest.begin_analyze('prebuilt-layout') AS plain_id \gset
SELECT count(*) AS documents FROM atrest.analyze_documents WHERE result_id = :'plain_id';
SELECT pg_temp.try(format('SELECT atrest.get_analyze_document(%L, %L)', 'prebuilt-layout', :'plain_id'));
SELECT atrest.begin_analyze('prebuilt-layout', '\x255044462d312e370a'::bytea, 'application/pdf') AS did \gset
SELECT content_type, document FROM atrest.get_analyze_document('prebuilt-layout', :'did');
-- sealed under the key class 'result', kept for atrest.input_ttl from submission
SELECT (atrest.envelope(document)).key_class, expires_at - created_at AS retention
  FROM atrest.analyze_documents WHERE result_id = :'did';
-- the document stays when the operation completes: its expiry is its own
SELECT atrest.complete_analyze(:'did', '{"content": "page 1"}') IS NOT NULL AS completed;
SELECT content_type FROM atrest.get_analyze_document('prebuilt-layout', :'did');
-- another model's: AT404; an unknown id: AT404
SELECT pg_temp.try(format('SELECT atrest.get_analyze_document(%L, %L)', 'prebuilt-read', :'did'));
SELECT pg_temp.try($$SELECT atrest.get_analyze_document('prebuilt-layout', gen_random_uuid())$$);
-- a document without a content type is fine; a content type without a document is not
SELECT atrest.begin_analyze('prebuilt-layout', '\x00'::bytea) AS nct \gset
SELECT content_type IS NULL AS no_type, document FROM atrest.get_analyze_document('prebuilt-layout', :'nct');
SELECT pg_temp.try($$SELECT atrest.begin_analyze('prebuilt-layout', NULL, 'image/png')$$);
SELECT pg_temp.try($$SELECT atrest.begin_analyze('prebuilt-layout', '\x00', '')$$);
-- deleted with its result, at commit
BEGIN;
SELECT atrest.delete_analyze_result('prebuilt-layout', :'did');
ROLLBACK;
SELECT content_type FROM atrest.get_analyze_document('prebuilt-layout', :'did');
SELECT atrest.delete_analyze_result('prebuilt-layout', :'did');
SELECT pg_temp.try(format('SELECT atrest.get_analyze_document(%L, %L)', 'prebuilt-layout', :'did'));
SELECT count(*) FROM atrest.analyze_documents WHERE result_id = :'did';
-- expiry at read time, whatever the state of the operation (still running here)
SET atrest.input_ttl = '1 second';
SELECT atrest.begin_analyze('prebuilt-layout', '\x01020304'::bytea, 'image/tiff') AS xid \gset
RESET atrest.input_ttl;
SELECT document FROM atrest.get_analyze_document('prebuilt-layout', :'xid');
SELECT pg_sleep(1.2);
SELECT pg_temp.try(format('SELECT atrest.get_analyze_document(%L, %L)', 'prebuilt-layout', :'xid'));
SELECT status FROM atrest.get_analyze_result('prebuilt-layout', :'xid');
SELECT count(*) AS not_yet_purged FROM atrest.analyze_documents WHERE result_id = :'xid';
-- and a document whose result has expired is gone with it
SET atrest.result_ttl = '1 second';
SELECT atrest.begin_analyze('prebuilt-layout', '\x05'::bytea) AS rxid \gset
SELECT atrest.complete_analyze(:'rxid', '{}') IS NOT NULL AS completed;
RESET atrest.result_ttl;
SELECT pg_sleep(1.2);
SELECT pg_temp.try(format('SELECT atrest.get_analyze_document(%L, %L)', 'prebuilt-layout', :'rxid'));

--
-- Analysis outputs
--
SELECT atrest.begin_analyze('prebuilt-layout') AS oid1 \gset
-- while the operation runs
SELECT atrest.put_analyze_output(:'oid1', 'figure', '1.1', '\x89504e47'::bytea);
SELECT atrest.put_analyze_output(:'oid1', 'figure', '2.1', '\xffd8ffe0'::bytea);
SELECT atrest.get_analyze_result_figure('prebuilt-layout', :'oid1', '1.1');
SELECT expires_at IS NULL AS no_expiry_yet FROM atrest.analyze_outputs WHERE result_id = :'oid1' ORDER BY output_id;
-- completion gives the outputs their result's expiry
SELECT atrest.complete_analyze(:'oid1', '{"figures": [{"id": "1.1"}, {"id": "2.1"}]}') AS expiry \gset
SELECT kind, output_id, expires_at = :'expiry'::timestamptz AS result_expiry,
       (atrest.envelope(content)).key_class
  FROM atrest.analyze_outputs WHERE result_id = :'oid1' ORDER BY kind, output_id;
-- at completion: the PDF put after complete_analyze takes the expiry too
SELECT atrest.put_analyze_output(:'oid1', 'pdf', NULL, '\x255044462d312e370a25e2e3cfd3'::bytea);
SELECT atrest.get_analyze_result_pdf('prebuilt-layout', :'oid1');
SELECT expires_at = :'expiry'::timestamptz AS result_expiry
  FROM atrest.analyze_outputs WHERE result_id = :'oid1' AND kind = 'pdf';
-- one PDF per result: putting it again replaces it
SELECT atrest.put_analyze_output(:'oid1', 'pdf', NULL, '\x2550444632'::bytea);
SELECT atrest.get_analyze_result_pdf('prebuilt-layout', :'oid1');
SELECT count(*) AS pdfs FROM atrest.analyze_outputs WHERE result_id = :'oid1' AND kind = 'pdf';
-- AT404: no PDF, no such figure, another model's, unknown result
SELECT atrest.begin_analyze('prebuilt-layout') AS oid2 \gset
SELECT pg_temp.try(format('SELECT atrest.get_analyze_result_pdf(%L, %L)', 'prebuilt-layout', :'oid2'));
SELECT pg_temp.try(format('SELECT atrest.get_analyze_result_figure(%L, %L, %L)', 'prebuilt-layout', :'oid1', '9.9'));
SELECT pg_temp.try(format('SELECT atrest.get_analyze_result_pdf(%L, %L)', 'prebuilt-read', :'oid1'));
SELECT pg_temp.try(format('SELECT atrest.get_analyze_result_figure(%L, %L, %L)', 'prebuilt-read', :'oid1', '1.1'));
SELECT pg_temp.try($$SELECT atrest.get_analyze_result_pdf('prebuilt-layout', gen_random_uuid())$$);
SELECT pg_temp.try($$SELECT atrest.put_analyze_output(gen_random_uuid(), 'pdf', NULL, '\x00')$$);
-- bad kinds and ids
SELECT pg_temp.try(format('SELECT atrest.put_analyze_output(%L, %L, NULL, %L)', :'oid2', 'markdown', '\x00'));
SELECT pg_temp.try(format('SELECT atrest.put_analyze_output(%L, %L, %L, %L)', :'oid2', 'pdf', '1', '\x00'));
SELECT pg_temp.try(format('SELECT atrest.put_analyze_output(%L, %L, %L, %L)', :'oid2', 'figure', '../x', '\x00'));
-- a failed result takes no outputs
SELECT atrest.fail_analyze(:'oid2', '{"code": "x"}') IS NOT NULL AS failed;
SELECT pg_temp.try(format('SELECT atrest.put_analyze_output(%L, %L, NULL, %L)', :'oid2', 'pdf', '\x00'));
-- deleted with the result, at commit
BEGIN;
SELECT atrest.delete_analyze_result('prebuilt-layout', :'oid1');
SELECT pg_temp.try(format('SELECT atrest.get_analyze_result_pdf(%L, %L)', 'prebuilt-layout', :'oid1'));
ROLLBACK;
SELECT atrest.get_analyze_result_pdf('prebuilt-layout', :'oid1') IS NOT NULL AS still_there;
SELECT atrest.delete_analyze_result('prebuilt-layout', :'oid1');
SELECT pg_temp.try(format('SELECT atrest.get_analyze_result_pdf(%L, %L)', 'prebuilt-layout', :'oid1'));
SELECT pg_temp.try(format('SELECT atrest.get_analyze_result_figure(%L, %L, %L)', 'prebuilt-layout', :'oid1', '1.1'));
SELECT count(*) FROM atrest.analyze_outputs WHERE result_id = :'oid1';
-- expiry with the result, at read time
SET atrest.result_ttl = '1 second';
SELECT atrest.begin_analyze('prebuilt-layout') AS oid3 \gset
SELECT atrest.put_analyze_output(:'oid3', 'pdf', NULL, '\x2550'::bytea);
SELECT atrest.put_analyze_output(:'oid3', 'figure', '1.1', '\x89'::bytea);
SELECT atrest.complete_analyze(:'oid3', '{}') IS NOT NULL AS completed;
RESET atrest.result_ttl;
SELECT atrest.get_analyze_result_pdf('prebuilt-layout', :'oid3');
SELECT pg_sleep(1.2);
SELECT pg_temp.try(format('SELECT atrest.get_analyze_result_pdf(%L, %L)', 'prebuilt-layout', :'oid3'));
SELECT pg_temp.try(format('SELECT atrest.get_analyze_result_figure(%L, %L, %L)', 'prebuilt-layout', :'oid3', '1.1'));
SELECT pg_temp.try(format('SELECT atrest.put_analyze_output(%L, %L, NULL, %L)', :'oid3', 'pdf', '\x00'));
SELECT count(*) AS not_yet_purged FROM atrest.analyze_outputs WHERE result_id = :'oid3';

--
-- Batch analysis results
--
SELECT atrest.begin_analyze_batch('prebuilt-layout',
    '{"azureBlobSource": {"containerUrl": "https://contoso.blob.core.windows.net/in?sig=SECRET"},
      "resultContainerUrl": "https://contoso.blob.core.windows.net/out?sig=SECRET"}') AS bid \gset
SELECT status, percent_completed, request -> 'azureBlobSource' ->> 'containerUrl' AS source, result, error
  FROM atrest.get_analyze_batch_result('prebuilt-layout', :'bid');
SELECT (atrest.envelope(request)).key_class, expires_at IS NULL AS no_expiry
  FROM atrest.analyze_batch_results WHERE result_id = :'bid';
SELECT atrest.update_analyze_batch(:'bid', 'running', 50,
    '{"details": [{"sourceUrl": "https://contoso.blob.core.windows.net/in/a.pdf", "status": "succeeded",
                   "resultUrl": "https://contoso.blob.core.windows.net/out/a.pdf.ocr.json"},
                  {"sourceUrl": "https://contoso.blob.core.windows.net/in/b.pdf", "status": "running"}]}');
SELECT status, percent_completed, jsonb_array_length(result -> 'details') AS documents
  FROM atrest.get_analyze_batch_result('prebuilt-layout', :'bid');
-- NULL progress and details keep what is there
SELECT atrest.update_analyze_batch(:'bid', 'running', NULL, NULL);
SELECT status, percent_completed, result -> 'details' -> 0 ->> 'status' AS first
  FROM atrest.get_analyze_batch_result('prebuilt-layout', :'bid');
SELECT atrest.update_analyze_batch(:'bid', 'succeeded', 100,
    '{"succeededCount": 1, "failedCount": 0, "skippedCount": 1,
      "details": [{"sourceUrl": "https://contoso.blob.core.windows.net/in/a.pdf", "status": "succeeded"},
                  {"sourceUrl": "https://contoso.blob.core.windows.net/in/b.pdf", "status": "skipped"}]}')
    AS bexpiry \gset
SELECT expires_at = completed_at + interval '24 hours' AS expiry_is_24h,
       expires_at = :'bexpiry'::timestamptz AS returned_expiry
  FROM atrest.analyze_batch_results WHERE result_id = :'bid';
SELECT status, percent_completed, result ->> 'skippedCount' AS skipped
  FROM atrest.get_analyze_batch_result('prebuilt-layout', :'bid');
-- a finished batch does not change again
SELECT pg_temp.try(format('SELECT atrest.update_analyze_batch(%L, %L, 100, NULL)', :'bid', 'running'));
-- bad statuses and details
SELECT atrest.begin_analyze_batch('prebuilt-layout', '{}') AS bid2 \gset
SELECT pg_temp.try(format('SELECT atrest.update_analyze_batch(%L, %L, 0, NULL)', :'bid2', 'done'));
SELECT pg_temp.try(format('SELECT atrest.update_analyze_batch(%L, %L, 101, NULL)', :'bid2', 'running'));
SELECT pg_temp.try(format('SELECT atrest.update_analyze_batch(%L, %L, 1, %L)', :'bid2', 'running',
                          '{"details": [{"status": "done"}]}'));
SELECT pg_temp.try(format('SELECT atrest.update_analyze_batch(%L, %L, 1, %L)', :'bid2', 'running',
                          '{"details": {}}'));
-- list: those that have not expired, newest first
SELECT atrest.begin_analyze_batch('prebuilt-layout', '{"n": 3}') AS bid3 \gset
SELECT array_agg(result_id ORDER BY ordinality) = ARRAY[:'bid3', :'bid2', :'bid']::uuid[] AS newest_first,
       string_agg(status, ',' ORDER BY ordinality) AS statuses
  FROM atrest.list_analyze_batch_results('prebuilt-layout') WITH ORDINALITY;
SELECT count(*) FROM atrest.list_analyze_batch_results('prebuilt-read');
SELECT pg_temp.try($$SELECT atrest.list_analyze_batch_results('no-such-model')$$);
-- AT404: another model's, unknown
SELECT pg_temp.try(format('SELECT atrest.get_analyze_batch_result(%L, %L)', 'prebuilt-read', :'bid'));
SELECT pg_temp.try($$SELECT atrest.get_analyze_batch_result('prebuilt-layout', gen_random_uuid())$$);
SELECT pg_temp.try($$SELECT atrest.update_analyze_batch(gen_random_uuid(), 'running', 1, NULL)$$);
SELECT pg_temp.try($$SELECT atrest.begin_analyze_batch('no-such-model', '{}')$$);
-- delete: at commit; a wrong model id deletes nothing; a second delete finds nothing
BEGIN;
SELECT atrest.delete_analyze_batch_result('prebuilt-layout', :'bid');
ROLLBACK;
SELECT status FROM atrest.get_analyze_batch_result('prebuilt-layout', :'bid');
SELECT atrest.delete_analyze_batch_result('prebuilt-read', :'bid') AS wrong_model;
SELECT atrest.delete_analyze_batch_result('prebuilt-layout', :'bid') AS first_delete;
SELECT atrest.delete_analyze_batch_result('prebuilt-layout', :'bid') AS second_delete;
SELECT pg_temp.try(format('SELECT atrest.get_analyze_batch_result(%L, %L)', 'prebuilt-layout', :'bid'));
SELECT count(*) FROM atrest.analyze_batch_results WHERE result_id = :'bid';
-- expiry at read time
SET atrest.result_ttl = '1 second';
SELECT atrest.update_analyze_batch(:'bid2', 'failed', 10, '{"error": {"code": "InvalidRequest"}}') IS NOT NULL AS failed;
RESET atrest.result_ttl;
SELECT status FROM atrest.get_analyze_batch_result('prebuilt-layout', :'bid2');
SELECT pg_sleep(1.2);
SELECT pg_temp.try(format('SELECT atrest.get_analyze_batch_result(%L, %L)', 'prebuilt-layout', :'bid2'));
SELECT pg_temp.try(format('SELECT atrest.update_analyze_batch(%L, %L, 1, NULL)', :'bid2', 'running'));
SELECT count(*) AS listed FROM atrest.list_analyze_batch_results('prebuilt-layout') WHERE result_id = :'bid2';
SELECT atrest.delete_analyze_batch_result('prebuilt-layout', :'bid2') AS expired_delete;

--
-- Operations that never finish: the purge fails them once
-- atrest.operation_timeout has passed, and they expire like failed ones
--
SELECT atrest.begin_analyze('prebuilt-read', '\x0a0b'::bytea) AS stuck \gset
SELECT atrest.put_analyze_output(:'stuck', 'figure', '1.1', '\x01'::bytea);
SELECT atrest.begin_analyze_batch('prebuilt-read', '{}') AS stuck_batch \gset
SELECT atrest.begin_analyze('prebuilt-read') AS fresh \gset
-- make two of them look a day old
UPDATE atrest.analyze_results SET created_at = created_at - interval '25 hours' WHERE result_id = :'stuck';
UPDATE atrest.analyze_batch_results SET created_at = created_at - interval '25 hours' WHERE result_id = :'stuck_batch';
SELECT atrest._time_out_operations() AS timed_out;
SELECT status, error ->> 'code' AS code, error ->> 'message' AS message
  FROM atrest.get_analyze_result('prebuilt-read', :'stuck');
SELECT status, error ->> 'code' AS code FROM atrest.get_analyze_batch_result('prebuilt-read', :'stuck_batch');
SELECT status FROM atrest.get_analyze_result('prebuilt-read', :'fresh');
SELECT expires_at - completed_at AS retention FROM atrest.analyze_results WHERE result_id = :'stuck';
SELECT o.expires_at = r.expires_at AS output_expires_with_result
  FROM atrest.analyze_outputs o JOIN atrest.analyze_results r USING (result_id) WHERE r.result_id = :'stuck';
SELECT pg_temp.try(format('SELECT atrest.complete_analyze(%L, ''{}'')', :'stuck'));
-- nothing unfinished is left that is older than the timeout; a second call fails none
SELECT atrest._time_out_operations() AS timed_out_again;

--
-- NULL arguments: 22004
--
SELECT pg_temp.try($$SELECT atrest.get_analyze_document(NULL, gen_random_uuid())$$);
SELECT pg_temp.try($$SELECT atrest.get_analyze_document('prebuilt-read', NULL)$$);
SELECT pg_temp.try($$SELECT atrest.put_analyze_output(NULL, 'pdf', NULL, '\x00')$$);
SELECT pg_temp.try(format('SELECT atrest.put_analyze_output(%L, NULL, NULL, %L)', :'fresh', '\x00'));
SELECT pg_temp.try(format('SELECT atrest.put_analyze_output(%L, %L, NULL, NULL)', :'fresh', 'pdf'));
SELECT pg_temp.try(format('SELECT atrest.put_analyze_output(%L, %L, NULL, %L)', :'fresh', 'figure', '\x00'));
SELECT pg_temp.try($$SELECT atrest.get_analyze_result_pdf(NULL, gen_random_uuid())$$);
SELECT pg_temp.try($$SELECT atrest.get_analyze_result_pdf('prebuilt-read', NULL)$$);
SELECT pg_temp.try($$SELECT atrest.get_analyze_result_figure(NULL, gen_random_uuid(), '1.1')$$);
SELECT pg_temp.try($$SELECT atrest.get_analyze_result_figure('prebuilt-read', NULL, '1.1')$$);
SELECT pg_temp.try($$SELECT atrest.get_analyze_result_figure('prebuilt-read', gen_random_uuid(), NULL)$$);
SELECT pg_temp.try($$SELECT atrest.begin_analyze_batch(NULL, '{}')$$);
SELECT pg_temp.try($$SELECT atrest.begin_analyze_batch('prebuilt-read', NULL)$$);
SELECT pg_temp.try($$SELECT atrest.update_analyze_batch(NULL, 'running', 1, NULL)$$);
SELECT pg_temp.try($$SELECT atrest.update_analyze_batch(gen_random_uuid(), NULL, 1, NULL)$$);
SELECT pg_temp.try($$SELECT atrest.get_analyze_batch_result(NULL, gen_random_uuid())$$);
SELECT pg_temp.try($$SELECT atrest.get_analyze_batch_result('prebuilt-read', NULL)$$);
SELECT pg_temp.try($$SELECT atrest.list_analyze_batch_results(NULL)$$);
SELECT pg_temp.try($$SELECT atrest.delete_analyze_batch_result(NULL, gen_random_uuid())$$);
SELECT pg_temp.try($$SELECT atrest.delete_analyze_batch_result('prebuilt-read', NULL)$$);
SELECT pg_temp.try($$SELECT atrest.begin_analyze(NULL, '\x00')$$);

--
-- Deleting a model deletes its documents, outputs and batch results
--
SELECT atrest.delete_model('prebuilt-read');
SELECT (SELECT count(*) FROM atrest.analyze_documents d
          WHERE d.result_id IN (:'stuck', :'fresh')) AS documents,
       (SELECT count(*) FROM atrest.analyze_outputs o WHERE o.result_id = :'stuck') AS outputs,
       (SELECT count(*) FROM atrest.analyze_batch_results b WHERE b.model_id = 'prebuilt-read') AS batches;

--
-- Privileges: atrest_service may call every function; a plain role none
--
CREATE ROLE regress_store_plain;
SET ROLE atrest_service;
SELECT atrest.create_model('service-model');
SELECT atrest.begin_analyze('service-model', '\x0102'::bytea, 'image/png') AS sid \gset
SELECT document FROM atrest.get_analyze_document('service-model', :'sid');
SELECT atrest.put_analyze_output(:'sid', 'pdf', NULL, '\x25'::bytea);
SELECT atrest.put_analyze_output(:'sid', 'figure', '1.1', '\x26'::bytea);
SELECT atrest.get_analyze_result_pdf('service-model', :'sid'),
       atrest.get_analyze_result_figure('service-model', :'sid', '1.1');
SELECT atrest.begin_analyze_batch('service-model', '{"x": 1}') AS sbid \gset
SELECT atrest.update_analyze_batch(:'sbid', 'running', 5, '{"details": []}');
SELECT status, percent_completed FROM atrest.get_analyze_batch_result('service-model', :'sbid');
SELECT count(*) FROM atrest.list_analyze_batch_results('service-model');
SELECT atrest.delete_analyze_batch_result('service-model', :'sbid');
SELECT pg_temp.try('SELECT count(*) FROM atrest.analyze_documents');
SELECT pg_temp.try('SELECT count(*) FROM atrest.analyze_outputs');
SELECT pg_temp.try('SELECT count(*) FROM atrest.analyze_batch_results');
SELECT pg_temp.try('SELECT atrest._time_out_operations()');
SELECT pg_temp.try($$SET atrest.input_ttl = '1 year'$$);
SELECT pg_temp.try($$SET atrest.operation_timeout = '1 year'$$);
RESET ROLE;
SET ROLE regress_store_plain;
SELECT pg_temp.try($$SELECT atrest.begin_analyze('service-model', '\x00')$$);
SELECT pg_temp.try(format('SELECT atrest.get_analyze_document(%L, %L)', 'service-model', :'sid'));
SELECT pg_temp.try(format('SELECT atrest.put_analyze_output(%L, %L, NULL, %L)', :'sid', 'pdf', '\x00'));
SELECT pg_temp.try(format('SELECT atrest.get_analyze_result_pdf(%L, %L)', 'service-model', :'sid'));
SELECT pg_temp.try(format('SELECT atrest.get_analyze_result_figure(%L, %L, %L)', 'service-model', :'sid', '1.1'));
SELECT pg_temp.try($$SELECT atrest.begin_analyze_batch('service-model', '{}')$$);
SELECT pg_temp.try($$SELECT atrest.update_analyze_batch(gen_random_uuid(), 'running', 1, NULL)$$);
SELECT pg_temp.try($$SELECT atrest.get_analyze_batch_result('service-model', gen_random_uuid())$$);
SELECT pg_temp.try($$SELECT atrest.list_analyze_batch_results('service-model')$$);
SELECT pg_temp.try($$SELECT atrest.delete_analyze_batch_result('service-model', gen_random_uuid())$$);
SELECT pg_temp.try('SELECT count(*) FROM atrest.analyze_documents');
RESET ROLE;
DROP ROLE regress_store_plain;
SELECT atrest.delete_model('service-model');
SELECT atrest.delete_model('prebuilt-layout');
SELECT (SELECT count(*) FROM atrest.analyze_results) AS results,
       (SELECT count(*) FROM atrest.analyze_documents) AS documents,
       (SELECT count(*) FROM atrest.analyze_outputs) AS outputs,
       (SELECT count(*) FROM atrest.analyze_batch_results) AS batches;
