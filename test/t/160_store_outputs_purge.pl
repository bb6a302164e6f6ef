# Copyright: pg_atrest authors; same license as pg_atrest.
#
# Input documents, analysis outputs and batch analysis results on disk and under the
# purge (issue 14).
#
# On disk: the plaintext of a submitted document, of a searchable PDF output, of a figure
# and of a batch's source location (request and per-document details) occurs in none of
# the files of atrest.analyze_documents, atrest.analyze_outputs and
# atrest.analyze_batch_results, while the same values in a plain control table are found
# in its files (so the search would see them).
#
# The purge, called as the pg_cron job calls it (CALL atrest.purge_expired_job()) with
# small TTLs: expired documents, outputs and batch results go, live ones stay; an
# orphaned running single operation and an orphaned batch are failed as timed out once
# atrest.operation_timeout has passed, and purged once they have expired in turn.  Then
# the real pg_cron job (minute granularity) does the same for each kind of row, and
# atrest.purge_runs records its runs for each table.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use AtrestTest;
use AtrestFiles;

my $node = atrest_node(
	'store_outputs_purge',
	pkcs11 => 0,
	create_extension => 0,
	conf => "autovacuum = off\n");
# pg_atrest first, pg_cron later: no job runs during the direct calls below.
$node->safe_psql('postgres', 'CREATE EXTENSION pg_atrest');

sub sql { return $node->safe_psql('postgres', @_); }

# --------------------------------------------------------------------------------------
# Plaintext absent from the table files
# --------------------------------------------------------------------------------------

my %marker = map { $_ => "MARK-$_-" . random_alnum(16) } qw(document pdf figure source detail);

sql(q{SELECT atrest.create_model('disk-model')});
my $rid = sql(
	qq{SELECT atrest.begin_analyze('disk-model',
	       convert_to('%PDF-1.7 scanned invoice $marker{document} ' || repeat('x', 200), 'UTF8'),
	       'application/pdf')});
sql(qq{SELECT atrest.put_analyze_output('$rid', 'pdf', NULL,
	       convert_to('%PDF-1.7 searchable $marker{pdf}', 'UTF8'))});
sql(qq{SELECT atrest.put_analyze_output('$rid', 'figure', '1.1',
	       convert_to('PNG figure $marker{figure}', 'UTF8'))});
sql(qq{SELECT atrest.complete_analyze('$rid', '{"content": "ok"}')});
my $bid = sql(
	qq{SELECT atrest.begin_analyze_batch('disk-model',
	       '{"azureBlobSource": {"containerUrl": "https://contoso.blob.core.windows.net/in?sig=$marker{source}"}}')});
sql(qq{SELECT atrest.update_analyze_batch('$bid', 'running', 50,
	       '{"details": [{"status": "succeeded",
	                      "sourceUrl": "https://contoso.blob.core.windows.net/in/a.pdf?sig=$marker{detail}"}]}')});

# read back intact through the functions
like(sql(qq{SELECT convert_from(document, 'UTF8') FROM atrest.get_analyze_document('disk-model', '$rid')}),
	qr/\Q$marker{document}\E/, 'the document reads back');
like(sql(qq{SELECT convert_from(atrest.get_analyze_result_pdf('disk-model', '$rid'), 'UTF8')}),
	qr/\Q$marker{pdf}\E/, 'the PDF output reads back');
like(sql(qq{SELECT request::text || result::text FROM atrest.get_analyze_batch_result('disk-model', '$bid')}),
	qr/\Q$marker{source}\E.*\Q$marker{detail}\E/s, 'the batch source locations read back');

# the control: the same values in a plain table are found in its files
sql(qq{CREATE TABLE plain_control (doc bytea, request jsonb);
	INSERT INTO plain_control
	SELECT convert_to('$marker{document} $marker{pdf} $marker{figure}', 'UTF8'),
	       '{"containerUrl": "$marker{source}", "sourceUrl": "$marker{detail}"}'});
my @control = relation_files($node, 'plain_control');
foreach my $m (sort keys %marker)
{
	cmp_ok(files_contain($marker{$m}, @control), '>', 0, "control: the $m marker is found in plain_control's files");
}

my @files = map { relation_files($node, $_) }
  qw(atrest.analyze_documents atrest.analyze_outputs atrest.analyze_batch_results);
foreach my $m (sort keys %marker)
{
	is(files_contain($marker{$m}, @files), 0, "the $m marker is in none of the store's files");
}

# --------------------------------------------------------------------------------------
# The purge, called directly, with small TTLs
# --------------------------------------------------------------------------------------

# Rows that expire in a second: a result with its document and outputs, a document whose
# result stays, a finished batch.  Rows that stay: everything made with the defaults.
sql(q{SELECT atrest.create_model('purge-model')});
my $short = sql(q{
	SET atrest.result_ttl = '1 second';
	SET atrest.input_ttl = '1 second';
	SELECT atrest.begin_analyze('purge-model', '\x01', 'image/png') AS r \gset
	SELECT atrest.put_analyze_output(:'r', 'pdf', NULL, '\x25');
	SELECT atrest.put_analyze_output(:'r', 'figure', '1.1', '\x26');
	SELECT atrest.complete_analyze(:'r', '{}');
	SELECT atrest.begin_analyze('purge-model', '\x02') AS d \gset
	SELECT atrest.update_analyze_batch(atrest.begin_analyze_batch('purge-model', '{}'), 'succeeded', 100, NULL);
	SELECT :'r' || ' ' || :'d';});
my ($short_rid, $doc_only) = split / /, (split /\n/, $short)[-1];
my $live = sql(q{
	SELECT atrest.begin_analyze('purge-model', '\x03') AS r \gset
	SELECT atrest.put_analyze_output(:'r', 'pdf', NULL, '\x27');
	SELECT atrest.complete_analyze(:'r', '{}');
	SELECT atrest.update_analyze_batch(atrest.begin_analyze_batch('purge-model', '{"live": true}'), 'succeeded', 100, NULL);
	SELECT :'r';});
$live = (split /\n/, $live)[-1];

# the orphans: a single and a batch operation begun and never finished
my $orphan = sql(q{SELECT atrest.begin_analyze('purge-model', '\x04')});
sql(qq{SELECT atrest.put_analyze_output('$orphan', 'figure', '2.1', '\\x28')});
my $orphan_batch = sql(q{SELECT atrest.begin_analyze_batch('purge-model', '{"orphan": true}')});

sleep 2;
my $counts = q{SELECT (SELECT count(*) FROM atrest.analyze_results) || ' '
	|| (SELECT count(*) FROM atrest.analyze_documents) || ' '
	|| (SELECT count(*) FROM atrest.analyze_outputs) || ' '
	|| (SELECT count(*) FROM atrest.analyze_batch_results)};
# results: disk, short, doc_only, live, orphan; documents: disk, short, doc_only, live, orphan;
# outputs: disk 2, short 2, live 1, orphan 1; batches: disk, short, live, orphan
is(sql($counts), '5 5 6 4', 'before the purge: results, documents, outputs, batches');
is( sql(q{SELECT string_agg(rel::text || '=' || expired_rows, ' ' ORDER BY rel::text)
	  FROM atrest.retention_status WHERE rel::text LIKE 'atrest.analyze%'}),
	'atrest.analyze_batch_results=1 atrest.analyze_documents=2 atrest.analyze_outputs=2 atrest.analyze_results=1',
	'retention_status counts the expired rows of each kind');

# A long timeout first: the orphans are left alone.
sql(q{ALTER SYSTEM SET atrest.operation_timeout = '1 hour'; SELECT pg_reload_conf()});
$node->safe_psql('postgres', 'CALL atrest.purge_expired_job()');
# left: disk, doc_only (its document expired), live, orphan; documents: disk, live, orphan;
# outputs: disk 2, live 1, orphan 1; batches: disk, live, orphan
is(sql($counts), '4 3 4 3', 'the purge job removed each kind of expired row, and nothing live');
is(sql(qq{SELECT count(*) FROM atrest.analyze_documents WHERE result_id IN ('$doc_only', '$live', '$orphan')}),
	'2', 'the expired document went although its result stays');
is(sql(qq{SELECT status FROM atrest.get_analyze_result('purge-model', '$orphan')}), 'running',
	'an orphan within the timeout is still running');
is( sql(q{SELECT string_agg(rel::text || '=' || rows_deleted, ' ' ORDER BY rel::text)
	  FROM atrest.purge_runs WHERE rel::text LIKE 'atrest.analyze%' AND via = 'job'}),
	'atrest.analyze_batch_results=1 atrest.analyze_documents=1 atrest.analyze_outputs=0 atrest.analyze_results=1',
	'purge_runs records each kind (the outputs went with their result)');

# Now the timeout passes (1 second), and failed operations are kept for 1 second.
sql(q{ALTER SYSTEM SET atrest.operation_timeout = '1 second';
	ALTER SYSTEM SET atrest.result_ttl = '1 second';
	SELECT pg_reload_conf()});
sleep 1;
$node->safe_psql('postgres', 'CALL atrest.purge_expired_job()');
is( sql(qq{SELECT status || ' ' || (error ->> 'code') FROM atrest.get_analyze_result('purge-model', '$orphan')}),
	'failed Timeout', 'the orphaned running operation was failed as timed out');
like(sql(qq{SELECT error ->> 'message' FROM atrest.get_analyze_batch_result('purge-model', '$orphan_batch')}),
	qr/did not complete within/, 'the orphaned batch too, saying it timed out');
is(sql(q{SELECT count(*) FROM atrest.analyze_results WHERE completed_at IS NULL}) +
	sql(q{SELECT count(*) FROM atrest.analyze_batch_results WHERE completed_at IS NULL}),
	0, 'nothing unfinished is left without an expiry');
sleep 2;
$node->safe_psql('postgres', 'CALL atrest.purge_expired_job()');
is(sql(qq{SELECT count(*) FROM atrest.analyze_results WHERE result_id = '$orphan'}) . ' '
	. sql(qq{SELECT count(*) FROM atrest.analyze_outputs WHERE result_id = '$orphan'}) . ' '
	. sql(qq{SELECT count(*) FROM atrest.analyze_batch_results WHERE result_id = '$orphan_batch'}),
	'0 0 0', 'once expired, the timed-out operations and their outputs are purged');
sql(q{ALTER SYSTEM RESET atrest.operation_timeout; ALTER SYSTEM RESET atrest.result_ttl;
	SELECT pg_reload_conf()});

# --------------------------------------------------------------------------------------
# The real pg_cron job
# --------------------------------------------------------------------------------------

sql('DELETE FROM atrest.purge_runs');
sql(q{SELECT atrest.create_model('cron-model')});
my $cron_ids = sql(q{
	SET atrest.result_ttl = '1 second';
	SET atrest.input_ttl = '1 second';
	SELECT atrest.begin_analyze('cron-model', '\x01', 'image/png') AS r \gset
	SELECT atrest.put_analyze_output(:'r', 'pdf', NULL, '\x25');
	SELECT atrest.complete_analyze(:'r', '{}');
	SELECT atrest.begin_analyze('cron-model', '\x02') AS d \gset
	SELECT atrest.begin_analyze_batch('cron-model', '{}') AS b \gset
	SELECT atrest.update_analyze_batch(:'b', 'failed', 0, NULL);
	SELECT :'r' || ' ' || :'d' || ' ' || :'b';});
my ($cron_rid, $cron_doc, $cron_bid) = split / /, (split /\n/, $cron_ids)[-1];
# an orphan the job times out (the job's backend sees the server's settings)
my $cron_orphan = sql(q{SELECT atrest.begin_analyze('cron-model')});
sql(q{ALTER SYSTEM SET atrest.operation_timeout = '1 second';
	ALTER SYSTEM SET atrest.result_ttl = '1 second';
	SELECT pg_reload_conf()});

$node->safe_psql('postgres', 'CREATE EXTENSION pg_cron');
sql('SELECT atrest.schedule_purge()');
# pg_cron runs the job at the start of each minute: the first run purges what has expired
# and times the orphan out, a later one purges the orphan once it has expired in turn.
ok( $node->poll_query_until(
		'postgres', qq{
		SELECT NOT EXISTS (SELECT 1 FROM atrest.analyze_results WHERE result_id = '$cron_rid')
		   AND NOT EXISTS (SELECT 1 FROM atrest.analyze_documents WHERE result_id = '$cron_doc')
		   AND NOT EXISTS (SELECT 1 FROM atrest.analyze_outputs WHERE result_id = '$cron_rid')
		   AND NOT EXISTS (SELECT 1 FROM atrest.analyze_batch_results WHERE result_id = '$cron_bid')
		   AND NOT EXISTS (SELECT 1 FROM atrest.analyze_results
		                    WHERE result_id = '$cron_orphan' AND status = 'running')}),
	'the pg_cron job purged a result, its output, a document and a batch, and timed the orphan out');
ok( $node->poll_query_until(
		'postgres',
		qq{SELECT NOT EXISTS (SELECT 1 FROM atrest.analyze_results WHERE result_id = '$cron_orphan')}),
	'... and a later run purged the timed-out orphan');
is( sql(q{SELECT string_agg(DISTINCT rel::text, ' ' ORDER BY rel::text) FROM atrest.purge_runs
	  WHERE via = 'job' AND rows_deleted > 0 AND rel::text LIKE 'atrest.analyze%'}),
	'atrest.analyze_batch_results atrest.analyze_documents atrest.analyze_results',
	'purge_runs shows the job deleting documents, results and batches');
is(sql(qq{SELECT count(*) FROM atrest.analyze_results WHERE result_id = '$live'}), '1',
	'the live result survived the job');
is( sql(q{SELECT count(*) FROM cron.job_run_details WHERE status NOT IN ('succeeded', 'running', 'starting')}),
	'0', 'no job run failed');

$node->stop;
done_testing();
