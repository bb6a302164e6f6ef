
# pg_atrest_proxy's store (issue 13): four pg_atrest shards behind a PL/Proxy database.
# 10,000 analyze results written through the proxy land on every shard (15% to 35% each),
# each on its model's shard, and complete_analyze / fail_analyze find them by their result
# id alone; get and delete through the proxy; AT404 and the other SQLSTATEs come through
# unchanged; documents, outputs and batches are routed too; an expired result is not served
# through the proxy and the purge on its shard removes it; retention_status and key_status
# show every shard.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use AtrestTest;

plan skip_all => 'PL/Proxy is not packaged for this PostgreSQL version' unless plproxy_available();

my ($proxy, @shards) = proxy_fleet(shards => 4);
$proxy->safe_psql('postgres', 'GRANT CREATE ON SCHEMA public TO svc');    # for the table "written"

sub svc
{
	my ($sql) = @_;
	return $proxy->safe_psql('postgres', $sql, extra_params => [ '-U', 'svc' ]);
}

# The SQLSTATE a statement run as svc on the proxy fails with ('' when it succeeds).
sub svc_sqlstate
{
	my ($sql) = @_;
	my ($stdout, $stderr);
	$proxy->psql('postgres', "\\set VERBOSITY verbose\n$sql",
		stdout => \$stdout, stderr => \$stderr, extra_params => [ '-U', 'svc' ]);
	return $stderr =~ /ERROR:\s+([0-9A-Z]{5}):/ ? $1 : '';
}

is(svc('SELECT atrest_proxy.shard_count()'), 4, 'the proxy sees four shards');

# --- 10,000 results through the proxy ---------------------------------------------------
svc(q{SELECT atrest_proxy.create_model(format('model-%s', i), 'model ' || i)
        FROM generate_series(1, 400) i});
svc(q{CREATE TABLE written AS
      SELECT m, atrest_proxy.begin_analyze(m) AS id
        FROM (SELECT format('model-%s', 1 + i % 400) AS m FROM generate_series(0, 9999) i) s});
is(svc('SELECT count(DISTINCT id) FROM written'), 10000, '10,000 result ids made');
is( svc(q{SELECT count(*) FROM written
           WHERE atrest_proxy.result_hash(id) <> atrest_proxy.model_hash(m)
              OR substr(id::text, 15, 1) <> '8'}),
	0, 'every result id is a version 8 UUID carrying its model\'s routing hash');

# complete (or fail) each by its result id alone: a result routed to a shard that does not
# hold it would raise AT404 and fail the statement
svc(q{SELECT CASE WHEN row_number() OVER () % 10 = 0
                  THEN atrest_proxy.fail_analyze(id, jsonb_build_object('code', 'bad'))
                  ELSE atrest_proxy.complete_analyze(id, jsonb_build_object('model', m, 'id', id)) END
        FROM written});
pass('complete_analyze and fail_analyze found all 10,000 results through their result id');

my $total = 0;
foreach my $i (0 .. 3)
{
	my $n = $shards[$i]->safe_psql('postgres', 'SELECT count(*) FROM atrest.analyze_results');
	$total += $n;
	cmp_ok($n, '>=', 1500, "shard $i holds at least 15% of the results ($n)");
	cmp_ok($n, '<=', 3500, "shard $i holds at most 35% of the results ($n)");
	is( $shards[$i]->safe_psql(
			'postgres', qq{
			SELECT count(*) FROM atrest.analyze_results
			 WHERE ('x' || substr(result_id::text, 1, 4))::bit(16)::int & 3 <> $i
			    OR status NOT IN ('succeeded', 'failed')}),
		0,
		"shard $i holds only results routed to it, all finished");
	is( $shards[$i]->safe_psql('postgres',
			qq{SELECT count(*) FROM atrest.models WHERE hashtext(model_id) & 3 <> $i}),
		0,
		"shard $i holds only its own models");
}
is($total, 10000, 'the shards hold the 10,000 results, once each');

# --- get and delete through the proxy ---------------------------------------------------
my ($model, $id) = split /\|/, svc(q{SELECT m, id FROM written ORDER BY id LIMIT 1});
is( svc(qq{SELECT status, result ->> 'model', (result ->> 'id') = '$id'
             FROM atrest_proxy.get_analyze_result('$model', '$id')}),
	"succeeded|$model|t",
	'get_analyze_result through the proxy returns the decrypted result');
is( svc(q{SELECT count(*) FROM written w, atrest_proxy.get_analyze_result(w.m, w.id) r
           WHERE r.status = CASE WHEN r.error IS NULL THEN 'succeeded' ELSE 'failed' END}),
	10000, 'all 10,000 results read back through the proxy');
is(svc(qq{SELECT atrest_proxy.delete_analyze_result('$model', '$id')}), 't',
	'delete_analyze_result through the proxy');
is(svc(qq{SELECT atrest_proxy.delete_analyze_result('$model', '$id')}), 'f',
	'deleting it again finds nothing');
is(svc_sqlstate(qq{SELECT * FROM atrest_proxy.get_analyze_result('$model', '$id')}), 'AT404',
	'a deleted result is AT404 through the proxy');
my $home = svc(qq{SELECT atrest_proxy.model_shard('$model')});
is($shards[$home]->safe_psql('postgres', "SELECT count(*) FROM atrest.analyze_results WHERE result_id = '$id'"),
	0, 'the row is gone from its shard');

# --- SQLSTATEs through the proxy --------------------------------------------------------
is(svc_sqlstate(q{SELECT * FROM atrest_proxy.get_model('no-such-model')}), 'AT404',
	'AT404 for a missing model');
is(svc_sqlstate(q{SELECT atrest_proxy.begin_analyze('no-such-model')}), 'AT404',
	'AT404 for an analyze of a missing model');
is(svc_sqlstate(q{SELECT atrest_proxy.complete_analyze(atrest_proxy.new_result_id('model-1'), '{}')}),
	'AT404', 'AT404 for completing a result that does not exist');
is(svc_sqlstate(qq{SELECT * FROM atrest_proxy.get_analyze_result('model-2', '$id')}), 'AT404',
	"AT404 for another model's result");
is(svc_sqlstate(q{SELECT atrest_proxy.create_model('model-1')}), '23505', '23505 for a duplicate model');
is(svc_sqlstate(q{SELECT atrest_proxy.create_model('bad model')}), '22023', '22023 for a malformed model id');
is(svc_sqlstate(q{SELECT atrest_proxy.begin_analyze(NULL)}), '22004', '22004 for a NULL model id');
is(svc_sqlstate(q{SELECT atrest_proxy.complete_analyze(NULL, '{}')}), '22004', '22004 for a NULL result id');
my ($m3, $id3) = split /\|/, svc(q{SELECT m, id FROM written ORDER BY id OFFSET 5 LIMIT 1});
is(svc_sqlstate(qq{SELECT atrest_proxy.complete_analyze('$id3', '{}')}), '55000',
	'55000 for completing a finished result');

# the shard-side functions that take the proxy's ids refuse a NULL id and an id in use
my $dup_shard = $shards[ svc(q{SELECT atrest_proxy.model_shard('model-3')}) ];
my $taken = svc(q{SELECT id FROM written WHERE m = 'model-3' LIMIT 1});
foreach my $case (
	[ qq{SELECT atrest.begin_analyze_with_id('$taken', 'model-3')}, '23505', 'an analyze id in use' ],
	[ q{SELECT atrest.begin_analyze_with_id(NULL, 'model-3')}, '22004', 'a NULL analyze id' ],
	[ qq{SELECT atrest.begin_analyze_batch_with_id('$taken', 'model-3', '{}'); SELECT atrest.begin_analyze_batch_with_id('$taken', 'model-3', '{}')},
		'23505', 'a batch id in use' ])
{
	my ($sql, $state, $what) = @$case;
	like(psql_error($dup_shard, "SET ROLE svc; $sql"), qr/ERROR:\s+$state:/, "$state on a shard for $what");
}

# --- the rest of the store --------------------------------------------------------------
my $doc_id = svc(q{SELECT atrest_proxy.begin_analyze('model-7', '\x255044462d', 'application/pdf')});
is(svc(qq{SELECT content_type, document FROM atrest_proxy.get_analyze_document('model-7', '$doc_id')}),
	'application/pdf|\x255044462d', 'a submitted document read back through the proxy');
svc(qq{SELECT atrest_proxy.put_analyze_output('$doc_id', 'pdf', NULL, '\\x0102')});
svc(qq{SELECT atrest_proxy.put_analyze_output('$doc_id', 'figure', '1.1', '\\x0304')});
is( svc(qq{SELECT atrest_proxy.get_analyze_result_pdf('model-7', '$doc_id'),
                  atrest_proxy.get_analyze_result_figure('model-7', '$doc_id', '1.1')}),
	'\x0102|\x0304', 'outputs stored by result id and read by model through the proxy');
is(svc_sqlstate(qq{SELECT atrest_proxy.get_analyze_result_figure('model-7', '$doc_id', '9')}), 'AT404',
	'AT404 for a missing figure');

my $batch = svc(q{SELECT atrest_proxy.begin_analyze_batch('model-9', '{"source": "s3://x"}')});
svc(qq{SELECT atrest_proxy.update_analyze_batch('$batch', 'running', 50, NULL)});
svc(qq{SELECT atrest_proxy.update_analyze_batch('$batch', 'succeeded', 100,
                                                '{"details": [{"status": "succeeded"}]}')});
is( svc(qq{SELECT status, percent_completed, request ->> 'source', result -> 'details' -> 0 ->> 'status'
             FROM atrest_proxy.get_analyze_batch_result('model-9', '$batch')}),
	'succeeded|100|s3://x|succeeded', 'a batch begun, updated and read through the proxy');
is(svc(q{SELECT count(*) FROM atrest_proxy.list_analyze_batch_results('model-9')}), 1,
	'list_analyze_batch_results through the proxy');
is(svc(qq{SELECT atrest_proxy.delete_analyze_batch_result('model-9', '$batch')}), 't',
	'delete_analyze_batch_result through the proxy');
is(svc_sqlstate(qq{SELECT * FROM atrest_proxy.get_analyze_batch_result('model-9', '$batch')}), 'AT404',
	'a deleted batch is AT404');

is(svc(q{SELECT description FROM atrest_proxy.get_model('model-11')}), 'model 11', 'get_model');
is(svc(q{SELECT atrest_proxy.delete_model('model-11')}), 't', 'delete_model');
is(svc_sqlstate(q{SELECT * FROM atrest_proxy.get_model('model-11')}), 'AT404', 'a deleted model is AT404');

# --- expiry and the purge on the shard --------------------------------------------------
svc(q{SELECT atrest_proxy.create_model('short-lived')});
my $short = svc(q{SELECT atrest_proxy.model_shard('short-lived')});
my $sh = $shards[$short];
$sh->safe_psql('postgres', q{ALTER ROLE svc SET atrest.result_ttl = '2s'});
my $exp_id = svc(q{SELECT atrest_proxy.begin_analyze('short-lived')});
svc(qq{SELECT atrest_proxy.complete_analyze('$exp_id', '{"secret": 1}')});
$sh->safe_psql('postgres', q{ALTER ROLE svc RESET atrest.result_ttl});
is(svc(qq{SELECT status FROM atrest_proxy.get_analyze_result('short-lived', '$exp_id')}), 'succeeded',
	'the short-lived result is served before it expires');
sleep 3;
is(svc_sqlstate(qq{SELECT * FROM atrest_proxy.get_analyze_result('short-lived', '$exp_id')}), 'AT404',
	'an expired result is not served through the proxy');
is($sh->safe_psql('postgres', "SELECT count(*) FROM atrest.analyze_results WHERE result_id = '$exp_id'"),
	1, 'it is still on its shard before the purge');
cmp_ok($sh->safe_psql('postgres', 'SELECT atrest.purge_expired()'), '>=', 1, 'the purge on its shard deletes it');
is($sh->safe_psql('postgres', "SELECT count(*) FROM atrest.analyze_results WHERE result_id = '$exp_id'"),
	0, 'it is gone from its shard');

# --- status of every shard --------------------------------------------------------------
is( $proxy->safe_psql(
		'postgres', q{
		SELECT string_agg(shard || ':' || coalesce(error, 'ok'), ' ' ORDER BY shard)
		  FROM (SELECT DISTINCT shard, error FROM atrest_proxy.retention_status) s}),
	'0:ok 1:ok 2:ok 3:ok',
	'retention_status has rows from every shard');
is( $proxy->safe_psql(
		'postgres', qq{
		SELECT last_purge_rows >= 1, last_purge_via FROM atrest_proxy.retention_status
		 WHERE shard = $short AND rel = 'atrest.analyze_results'}),
	't|function',
	"retention_status shows the purge of shard $short");
is( $proxy->safe_psql(
		'postgres', q{
		SELECT string_agg(shard || ':' || protector, ' ' ORDER BY shard) FROM atrest_proxy.key_status}),
	'0:service 1:service 2:service 3:service',
	'key_status has one row per shard');
isnt(svc_sqlstate(q{SELECT * FROM atrest_proxy.key_status}), '', 'svc may not read key_status');

done_testing();
