
# Key changes under load: pgbench runs the results-store workload of test/load/ (begin,
# complete, read and delete analyze results, as the application role, each store call in the
# same transaction as a row of a plain ledger table) while another session loops
# enable_cmk / rotate_data_key / rotate_database_key / disable_cmk and the purge of expired
# results runs.  Shows:
#   - zero errors in the clients: pgbench exits 0, reports 0 failed transactions, no client
#     aborted; every read checks the plaintext against the ledger (an error if it differs);
#   - zero errors in the key-changing session, and atrest.key_events has exactly its changes;
#   - exact row counts afterwards: the store holds exactly the ledger's live results (only
#     rows that expired before the last purge are gone, none that was deleted is left), and
#     the ledger has one row per begin transaction pgbench counted (plus at most one per
#     client: pgbench leaves out the transactions still running when its time is up);
#   - every value readable afterwards, equal to what was written, under the final keys;
#   - then, database-key rotations back to back (as fast as one session can) under the same
#     number of reading clients: 0 failed transactions (a key-cache load once raced with them).
#
#   ATREST_LOAD_CLIENTS=N   pgbench clients (default 8)
#   ATREST_LOAD_JOBS=N      pgbench threads (default: 2, the CI machine's cores)
#   ATREST_LOAD_SECONDS=N   duration (default 12; 60 with ATREST_LONG=1)
#   ATREST_LONG=1           the issue's long run: 8 clients for 60 seconds (churn: 20 s)
# e.g.  ATREST_LONG=1 test/sandbox check t/041_key_changes_under_load.pl, or test/long/run
# (docs/reliability.md).
# The CMK is a key of the example KMS adapter test/kms/openssl-kms (command provider).

use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);

use AtrestTest;

my $long = $ENV{ATREST_LONG} ? 1 : 0;
my $clients = $ENV{ATREST_LOAD_CLIENTS} // 8;
my $jobs = $ENV{ATREST_LOAD_JOBS} // 2;
$jobs = $clients if $jobs > $clients;
my $seconds = $ENV{ATREST_LOAD_SECONDS} // ($long ? 60 : 12);
my $ttl = 6;    # seconds a completed result is kept: results expire and are purged during the run
note "clients=$clients jobs=$jobs seconds=$seconds result_ttl=${ttl}s";

my $src = AtrestTest::srcdir();
# The KMS: keys in a directory of this test, reached through a wrapper that names it, so the
# setting is all the server needs.
my $kms_cmd = AtrestTest::kms_adapter(PostgreSQL::Test::Utils::tempdir('kms') . '/keys', 'cmk1')
  or plan skip_all => 'no test/kms/openssl-kms';
my $cmk = 'kms:openssl/cmk1';

my $node = AtrestTest::atrest_node(
	'load',
	cron => 0,
	pkcs11 => 0,
	conf => "atrest.kms_command = '$kms_cmd'\n"
	  . "atrest.result_ttl = '$ttl s'\n"
	  . "load.result_ttl = '$ttl s'\n"
	  . "max_connections = " . ($clients + 20) . "\n");

$node->safe_psql('postgres', PostgreSQL::Test::Utils::slurp_file("$src/test/load/setup_store.sql"));

# Seed some results, so reads and deletes have something from the start.
$node->safe_psql('postgres',
	"SET ROLE load_app; SELECT load_begin() FROM generate_series(1, 200);"
	  . " SELECT load_complete() FROM generate_series(1, 150);");

# The key state must stay consistent whatever happens (see 040 for the full check).
my $state_sql = q{
	SELECT (SELECT count(*) FROM atrest.database_keys WHERE active) || ' '
	    || (SELECT count(*) FROM atrest.key_status) || ' '
	    || (SELECT count(*) FROM atrest.data_keys
	         WHERE database_key_id <> (SELECT id FROM atrest.database_keys WHERE active))};

my $classes = $node->safe_psql('postgres', 'SELECT count(*) FROM atrest.key_classes');
my $events_before =
  $node->safe_psql('postgres', 'SELECT coalesce(max(id), 0) FROM atrest.key_events');

# --- the run ---------------------------------------------------------------------------
my @scripts = map { "$src/test/load/$_" } qw(begin.sql@3 complete.sql@3 read.sql@6 delete.sql@1);
my ($pb_out, $pb_err) = ('', '');
my $pgbench = IPC::Run::start(
	[
		'pgbench', '-n', '-c', $clients, '-j', $jobs, '-T', $seconds,
		'-h', $node->host, '-p', $node->port, '-U', 'load_app',
		(map { ('-f', $_) } @scripts), 'postgres'
	],
	'<', \undef, '>', \$pb_out, '2>', \$pb_err,
	IPC::Run::timeout($seconds + $PostgreSQL::Test::Utils::timeout_default));

# The key-changing session: one change (or a purge) at a time, each in its own transaction,
# until pgbench is done.
my @cycle = (
	[ enable_cmk => "SELECT atrest.enable_cmk('command', '$cmk')", 1 ],
	[ rotate_data_key => "SELECT count(*) FROM atrest.rotate_data_key('result')", 1 ],
	[ purge => 'SELECT load_purge()', 0 ],
	[ rotate_database_key => 'SELECT atrest.rotate_database_key()', 1 ],
	[ rotate_data_key => 'SELECT count(*) FROM atrest.rotate_data_key()', $classes ],
	[ disable_cmk => 'SELECT atrest.disable_cmk()', 1 ],
	[ purge => 'SELECT load_purge()', 0 ],
	[ rotate_database_key => 'SELECT atrest.rotate_database_key()', 1 ],
	[ rotate_data_key => "SELECT count(*) FROM atrest.rotate_data_key('result')", 1 ],);
my (%done, @failures);
my $expected_events = 0;
my $purged = 0;
my $i = 0;
while ($pgbench->pumpable)
{
	my ($what, $sql, $events) = @{ $cycle[ $i++ % @cycle ] };
	my ($out, $err) = ('', '');
	my $rc = $node->psql('postgres', $sql, stdout => \$out, stderr => \$err);
	if ($rc != 0)
	{
		push @failures, "$what: $err";
	}
	else
	{
		$done{$what}++;
		$expected_events += $events;
		$purged += $out if $what eq 'purge';
	}
	# (pump_nb dies if pgbench has exited since pumpable was asked)
	eval { $pgbench->pump_nb if $pgbench->pumpable; };
	sleep(0.25);
	eval { $pgbench->pump_nb if $pgbench->pumpable; };
}
$pgbench->finish;
my $pgbench_rc = $pgbench->full_result(0) >> 8;
note "pgbench output:\n$pb_out";
note "pgbench stderr:\n$pb_err" if $pb_err ne '';
note "key session: " . join(', ', map { "$_ x $done{$_}" } sort keys %done);
note "purged during the run: $purged results";

# --- the clients ---------------------------------------------------------------------------
is($pgbench_rc, 0, 'pgbench exits with status 0');
unlike($pb_err . $pb_out, qr/aborted|ERROR/, 'no client aborted, no error');
like($pb_out, qr/number of failed transactions: 0 \(/, 'pgbench: 0 failed transactions');
my %tx;
while ($pb_out =~ /SQL script \d+: \S*\/(\w+)\.sql\n - weight: \d+[^\n]*\n - (\d+) transactions/g)
{
	$tx{$1} = $2;
}
note "transactions: " . join(', ', map { "$_ $tx{$_}" } sort keys %tx);
ok((grep { ($tx{$_} // 0) > 0 } qw(begin complete read delete)) == 4,
	'every script ran transactions');

# --- the key changes -------------------------------------------------------------------------
is(join("\n", @failures), '', 'no key change or purge failed');
ok( ($done{enable_cmk} // 0) > 0 && ($done{disable_cmk} // 0) > 0
	  && ($done{rotate_database_key} // 0) > 0 && ($done{rotate_data_key} // 0) > 0,
	'the CMK was enabled and disabled and both keys rotated during the run');
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM atrest.key_events WHERE id > $events_before"),
	$expected_events,
	'atrest.key_events has exactly the key changes made');
is($node->safe_psql('postgres', $state_sql), '1 1 0',
	'one active database key, every data key wrapped under it');

# --- exact counts ----------------------------------------------------------------------------
$node->safe_psql('postgres', 'SELECT load_purge()');
$purged += $node->safe_psql('postgres', 'SELECT rows_deleted FROM load_purges ORDER BY started_at DESC LIMIT 1');
ok($purged > 0, "the purge removed expired results ($purged)");
# pgbench does not count the transactions still running when -T runs out, which the server
# may yet commit: one per client at most.
my $begun = $node->safe_psql('postgres', 'SELECT count(*) - 200 FROM load_ledger');
ok($begun >= $tx{begin} && $begun <= $tx{begin} + $clients,
	"the ledger has one row per begin transaction ($begun rows, pgbench counted $tx{begin})");

my $counts = $node->safe_psql(
	'postgres', q{
	WITH cutoff AS (SELECT max(started_at) AS t FROM load_purges),
	live AS (SELECT l.* FROM load_ledger l, cutoff
	          WHERE l.state = 'running' OR (l.state = 'succeeded' AND l.expires_at >= cutoff.t))
	SELECT (SELECT count(*) FROM load_store) || ' '
	    || (SELECT count(*) FROM live) || ' '
	    || (SELECT count(*) FROM load_store s WHERE NOT EXISTS
	          (SELECT 1 FROM live l WHERE l.result_id = s.result_id)) || ' '
	    || (SELECT count(*) FROM live l WHERE NOT EXISTS
	          (SELECT 1 FROM load_store s WHERE s.result_id = l.result_id))});
my ($in_store, $live, $extra, $missing) = split / /, $counts;
ok($live > 0, "there are live results ($live)");
is($in_store, $live, 'the store holds as many results as the ledger says are live');
is($extra, 0, 'no deleted or purged result is left in the store');
is($missing, 0, 'no live result is missing from the store');

# --- every value readable --------------------------------------------------------------------
is( $node->safe_psql(
		'postgres', q{
		SELECT count(*) FROM load_store s JOIN load_ledger l USING (result_id)
		 WHERE s.status IS DISTINCT FROM l.state
		    OR md5(s.result::text) IS DISTINCT FROM l.result_md5}),
	0,
	'every result in the store decrypts to what was written');
is( $node->safe_psql(
		'postgres',
		q{SELECT definition ->> 'layout' FROM atrest.get_model('load-model')}),
	'invoice',
	'the model is readable too');

# --- churn: database-key rotations back to back under readers ---------------------------
# Every rotation makes every client reload its key cache; a reload must see the database key
# and the data keys of one and the same state (it read them with different snapshots once,
# and clients failed with "wrapped under a retired database key").
# (Under the service key: with a CMK each reload is a KMS call, which would set the pace.)
$node->safe_psql('postgres', 'SELECT atrest.disable_cmk()')
  if $node->safe_psql('postgres', 'SELECT protector FROM atrest.key_status') eq 'customer';
my $churn_seconds = $long ? 20 : 4;
my $loop = $node->basedir . '/churn.sql';
PostgreSQL::Test::Utils::append_to_file($loop,
	"SELECT atrest.rotate_database_key();\n" x 20000);
my $rotated_before = $node->safe_psql('postgres',
	"SELECT count(*) FROM atrest.key_events WHERE operation = 'rotate_database_key'");
my $churn_err = $node->basedir . '/churn.err';
my $churn = IPC::Run::start(
	[ 'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres'), '-f', $loop ],
	'<', \undef, '>', '/dev/null', '2>', $churn_err);
# pgbench runs of $churn_seconds each, until the rotations made while they ran reach 20 (a
# loaded machine rotates more slowly; a deadline, not a wall-clock bound, limits the wait).
my ($rotations, $runs, $ch_errs) = (0, 0, '');
my @churn_failed;
my $churn_deadline = time + $PostgreSQL::Test::Utils::timeout_default;
do
{
	my ($ch_out, $ch_err) = run_command(
		[
			'pgbench', '-n', '-c', $clients, '-j', $jobs, '-T', $churn_seconds,
			'-h', $node->host, '-p', $node->port, '-U', 'load_app',
			'-f', "$src/test/load/read.sql", 'postgres'
		]);
	$runs++;
	push @churn_failed, "run $runs:\n$ch_out"
	  unless $ch_out =~ /number of failed transactions: 0 \(/;
	$ch_errs .= $ch_err;
	$rotations = $node->safe_psql('postgres',
		"SELECT count(*) - $rotated_before FROM atrest.key_events WHERE operation = 'rotate_database_key'");
} while ($rotations < 20 && time < $churn_deadline);
$churn->kill_kill;
note "churn: $rotations database-key rotations in $runs pgbench run(s) of ${churn_seconds}s";
is(join("\n", @churn_failed), '', "churn: 0 failed transactions in each of the $runs pgbench run(s)");
unlike($ch_errs, qr/aborted|ERROR/, 'churn: no client aborted');
is(PostgreSQL::Test::Utils::slurp_file($churn_err), '', 'churn: every rotation succeeded');
ok($rotations >= 20, "churn: the database key was rotated $rotations times under the readers");

ok( !$node->log_contains(qr/XX001|AT001|data_corrupted|wrapped under a retired database key/),
	'no key or data-corruption error in the server log');

$node->stop;
done_testing();
