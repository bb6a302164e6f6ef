# Copyright: pg_atrest authors; same license as pg_atrest.
#
# Logical replication of encrypted columns when pgoutput decodes a transaction before it
# commits: streaming = on (a transaction larger than logical_decoding_work_mem is sent in
# pieces while it is still running) and two_phase = on (a prepared transaction is sent at
# PREPARE TRANSACTION).  The walsender then calls our output functions while decoding an
# in-progress transaction (CheckXidAlive set, a historic catalog snapshot active), and with
# a cold key cache it must load the keys there.  Each phase starts with fresh walsenders
# (cold caches), and a rotate_database_key() plus a rotate_data_key() commit in the middle
# of the streamed transaction, so the walsender drops its cache and reloads it while
# decoding the second half, and finds a data-key version newer than the transaction.
# Three subscriber databases: streaming = on, two_phase = on, and both.  Every value
# arrives with the same plaintext and is sealed under the subscriber's own keys.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use AtrestTest;

my $pub = AtrestTest::atrest_node(
	'publisher',
	cron => 0,
	pkcs11 => 0,
	init => { allows_streaming => 'logical' },
	conf => "logical_decoding_work_mem = 64kB\nmax_prepared_transactions = 10\n");
my $sub = AtrestTest::atrest_node(
	'subscriber',
	cron => 0,
	pkcs11 => 0,
	conf => "max_prepared_transactions = 10\nmax_worker_processes = 16\n"
	  . "max_logical_replication_workers = 8\n");

my $table = q{
	CREATE TABLE docs (id int PRIMARY KEY,
	                   doc atrest.encrypted_jsonb,
	                   note atrest.encrypted_text);};
$pub->safe_psql('postgres', $table);
$pub->safe_psql(
	'postgres', q{
	-- about 200 bytes of change per row: 500 rows are well past 64kB
	CREATE FUNCTION write_rows(a int, b int) RETURNS void LANGUAGE sql AS $$
	    INSERT INTO docs
	    SELECT i, jsonb_build_object('id', i, 'r', md5(random()::text), 's', md5(i::text)),
	           'note ' || i || ' ' || md5(random()::text) || md5(random()::text)
	      FROM generate_series(a, b) i;
	$$;
	SELECT write_rows(1, 10);
	CREATE PUBLICATION pub FOR TABLE docs;});

my %with = (
	stream => 'streaming = on',
	twophase => 'two_phase = on',
	combined => 'streaming = on, two_phase = on');
my $pub_conn = 'port=' . $pub->port . ' host=' . $pub->host . ' dbname=postgres';
for my $db (sort keys %with)
{
	$sub->safe_psql('postgres', "CREATE DATABASE $db");
	$sub->safe_psql($db, 'CREATE EXTENSION pg_atrest');
	$sub->safe_psql($db, $table);
	$sub->safe_psql($db,
		"CREATE SUBSCRIPTION sub_$db CONNECTION '$pub_conn' PUBLICATION pub WITH ($with{$db})");
	$sub->wait_for_subscription_sync($pub, "sub_$db");
}
# two_phase is switched on once the initial copy is done
$sub->poll_query_until($_,
	"SELECT subtwophasestate = 'e' FROM pg_subscription WHERE subname = 'sub_$_'")
  or die "two_phase not enabled on $_"
  for qw(twophase combined);

my $digest_sql = q{
	SELECT count(*) || ' ' || md5(string_agg(id || ':' || md5(doc::jsonb::text) || ':'
	                                         || md5(note::text), ',' ORDER BY id))
	  FROM docs};

# Wait until every subscriber database has the publisher's plaintext; on a timeout, say
# what the publisher's log says about its walsenders.
sub same_plaintext
{
	my ($what) = @_;
	my $want = $pub->safe_psql('postgres', $digest_sql);
	for my $db (sort keys %with)
	{
		my $ok = $sub->poll_query_until($db, $digest_sql, $want);
		ok($ok, "$what: the same plaintext arrives ($with{$db})")
		  or diag(join '', grep { /ERROR|FATAL|PANIC/ }
			  split /^/, slurp_file($pub->logfile));
	}
}

# Fresh walsenders, so that each one starts with a cold key cache.  Returns how many were
# terminated, once as many new ones are streaming.
sub restart_walsenders
{
	my $ours = "application_name IN ('sub_stream', 'sub_twophase', 'sub_combined')";
	my $old = $pub->safe_psql('postgres',
		"SELECT string_agg(pid::text, ',') FROM pg_stat_replication WHERE $ours");
	my $n = $pub->safe_psql('postgres',
		"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_replication WHERE $ours");
	$pub->poll_query_until('postgres',
		"SELECT count(*) = 3 FROM pg_stat_replication WHERE $ours AND state = 'streaming' AND pid NOT IN ($old)")
	  or die 'the walsenders did not come back';
	return $n;
}

same_plaintext('initial copy');
my $log_offset = -s $pub->logfile;

# --- streaming: a large transaction, keys rotated while it runs -----------------------------
is(restart_walsenders(), 3, 'three walsenders restarted (cold key caches)');
my $big = $pub->background_psql('postgres');
$big->query_safe('BEGIN');
$big->query_safe('SELECT write_rows(1001, 1600)');
$pub->safe_psql('postgres', 'SELECT atrest.rotate_database_key()');
$pub->safe_psql('postgres', 'SELECT count(*) FROM atrest.rotate_data_key()');
$big->query_safe('SELECT write_rows(1601, 2200)');
$big->query_safe('COMMIT');
same_plaintext('a streamed transaction with key rotations in the middle');
cmp_ok(
	$pub->safe_psql('postgres',
		"SELECT coalesce(sum(stream_txns), 0) FROM pg_stat_replication_slots WHERE slot_name IN ('sub_stream', 'sub_combined')"),
	'>', 0, 'the transaction was streamed');
is( $pub->safe_psql(
		'postgres', q{
		SELECT string_agg(DISTINCT (atrest.envelope(doc)).key_version::text, ' ')
		  FROM docs WHERE id > 1000}),
	'1 2', '(on the publisher it holds values of data-key versions 1 and 2)');

# --- two-phase: a prepared transaction, decoded at PREPARE ----------------------------------
is(restart_walsenders(), 3, 'walsenders restarted again');
$pub->safe_psql('postgres', 'SELECT atrest.rotate_database_key()');
$pub->safe_psql('postgres',
	"BEGIN; SELECT write_rows(2201, 2250); PREPARE TRANSACTION 'small'");
$pub->safe_psql('postgres',
	"BEGIN; SELECT write_rows(2251, 2900); PREPARE TRANSACTION 'large'");
for my $db (qw(twophase combined))
{
	ok( $sub->poll_query_until($db,
			"SELECT count(*) = 2 FROM pg_prepared_xacts WHERE database = '$db'"),
		"$db: both transactions are prepared on the subscriber");
}
$pub->safe_psql('postgres', "COMMIT PREPARED 'small'");
$pub->safe_psql('postgres', "COMMIT PREPARED 'large'");
same_plaintext('prepared transactions, committed');

# (the terminated walsenders log a FATAL of their own; nothing else may fail)
my @bad = grep { /ERROR|PANIC|TRAP|terminated by signal/ }
  split /^/, slurp_file($pub->logfile, $log_offset);
is(join('', @bad), '', 'no error on the publisher');

# --- a data key created by the transaction being decoded ------------------------------------
# The key tables are read as committed, so the walsender cannot open such values before the
# transaction commits: it says so and retries; the transaction arrives once committed.
$log_offset = -s $pub->logfile;
$pub->safe_psql('postgres',
	"BEGIN; SELECT count(*) FROM atrest.rotate_data_key('default'); "
	  . "SELECT write_rows(3001, 3020); PREPARE TRANSACTION 'newkey'");
ok($pub->wait_for_log(qr/data key version 3 of key class 1 is not committed yet/, $log_offset),
	'a prepared transaction that made its own data key: the walsender says the key is not committed yet');
is($sub->safe_psql('twophase', 'SELECT count(*) FROM pg_prepared_xacts'),
	'0', '(so it is not prepared on the subscriber)');
$pub->safe_psql('postgres', "COMMIT PREPARED 'newkey'");
same_plaintext('once committed, it arrives');

# Streamed, then rolled back: the walsender must drop it as a concurrent abort, not retry it
# for ever on a key that will never exist.
$big->query_safe('BEGIN');
$big->query_safe("SELECT count(*) FROM atrest.rotate_data_key('default')");
$big->query_safe('SELECT write_rows(4001, 4600)');
$big->query_safe('ROLLBACK');
$pub->safe_psql('postgres', 'SELECT write_rows(4601, 4610)');
same_plaintext('a streamed transaction that made its own data key and rolled back; the next one');
@bad = grep { /ERROR|PANIC|TRAP|terminated by signal/ && !/is not committed yet/ }
  split /^/, slurp_file($pub->logfile, $log_offset);
is(join('', @bad), '', 'no other error on the publisher');

# --- sealed under the subscriber's own keys --------------------------------------------------
my $pub_key = $pub->safe_psql('postgres', 'SELECT database_key_id FROM atrest.key_status');
for my $db (sort keys %with)
{
	isnt($sub->safe_psql($db, 'SELECT database_key_id FROM atrest.key_status'),
		$pub_key, "$db: its own database key");
	is( $sub->safe_psql(
			$db, q{
			SELECT string_agg(DISTINCT (atrest.envelope(doc)).key_version::text, ' ')
			  FROM docs}),
		'1', "$db: every value sealed under the subscriber's data-key version 1");
}

for my $db (sort keys %with)
{
	$sub->safe_psql($db, "DROP SUBSCRIPTION sub_$db");
}
$big->quit;
$sub->stop;
$pub->stop;
done_testing();
