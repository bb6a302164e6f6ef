
# Copyright: pg_atrest authors; same license as pg_atrest.
#
# How often a backend asks the root-key provider (README, "Customer-managed keys": each
# backend asks once per TTL, not per value; parallel workers make no provider call), counted
# by a KMS adapter that logs each call with the pid of the process that ran it
# (AtrestTest::counting_kms_adapter around test/kms/openssl-kms).  pg_atrest is preloaded,
# so backends share the key (054 tests that): where a check counts one backend's calls,
# atrest.recheck_keys() first empties the shared cache.
#
#  1. with a TTL of 300 s, a fresh backend reading 2,000 encrypted values ten times over
#     makes exactly one unwrap call;
#  2. with a TTL of 1 s, a backend reading for about 5 s makes at least 2 calls and at most
#     one per started TTL period of the time it read (1 + floor(seconds / TTL)): never one
#     per value or per statement;
#  3. a parallel query (EXPLAIN ANALYZE shows its workers launched) makes one call, in the
#     leader, and none from any other process;
#  4. key-table changes that leave the database key's id and wrapped bytes as they were
#     (rotate_data_key, create_key_class, GRANT, VACUUM, ANALYZE, the scrub worker's
#     rewrite) make no provider call, neither in the backend that made them nor in one
#     that reads afterwards: both re-read the rows and keep the unwrapped database key;
#     rotate_database_key does make the reading backend ask again (a new root);
#  5. a backend unwraps a data-key version only when a value first needs it: after 20 more
#     versions of "default" a fresh backend that read a value of version 1 holds one data
#     key, and one more after reading a value of the newest; values naming a version that
#     does not exist cost no provider call and one scan of atrest.data_keys per statement,
#     however many of them the statement meets, and at most 1,024 missing versions are
#     remembered.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);

use AtrestTest;

my $keydir = PostgreSQL::Test::Utils::tempdir('kms') . '/keys';
my $log = PostgreSQL::Test::Utils::tempdir('calls') . '/calls.log';
my $kms = counting_kms_adapter($keydir, $log, 'cmk1')
  or BAIL_OUT('test/kms/openssl-kms is missing');

my $node = atrest_node(
	'provider_calls',
	cron => 0,
	pkcs11 => 0,
	conf => "atrest.kms_command = '$kms'\n"
	  . "max_worker_processes = 16\nmax_parallel_workers = 8\n");
$node->safe_psql(
	'postgres', q{
	SELECT atrest.enable_cmk('command', 'kms:openssl/cmk1');
	CREATE TABLE docs (id int, v atrest.encrypted_text);
	INSERT INTO docs SELECT i, 'value ' || i FROM generate_series(1, 2000) i;});
my @setup_calls = provider_calls($log);
ok(@setup_calls > 0, 'the counting adapter saw the calls of enable_cmk (' . scalar(@setup_calls) . ')');

# The opening function is parallel restricted: in a WHERE clause it would keep the scan
# from going parallel at all; in the aggregate's FILTER it runs above the Gather.
my $read = q{SELECT count(*) FILTER (WHERE v::text LIKE 'value %') FROM docs};

# --- 1. one call per backend per TTL, not per value ------------------------------------
{
	$node->safe_psql('postgres', 'SELECT atrest.recheck_keys()');
	unlink $log;
	my $s = $node->background_psql('postgres');
	$s->query_safe('SET atrest.key_cache_ttl = 300');
	my $pid = $s->query_safe('SELECT pg_backend_pid()');
	is($s->query_safe($read), '2000', 'a fresh backend reads 2,000 encrypted values') for 1 .. 10;
	$s->quit;
	my @mine = provider_calls($log, $pid);
	is(join(',', map { $_->[1] } @mine), 'unwrap',
		'20,000 values opened in ten statements: exactly one provider call (unwrap)');
	is(scalar(provider_calls($log)), scalar(@mine), 'and no other process called the provider');
}

# --- 2. with a TTL of 1 s: once per TTL period ------------------------------------------
{
	unlink $log;
	my $ttl = 1;
	my $s = $node->background_psql('postgres');
	$s->query_safe("SET atrest.key_cache_ttl = $ttl");
	my $pid = $s->query_safe('SELECT pg_backend_pid()');
	my ($statements, $t0) = (0, time);
	while (time - $t0 < 5)
	{
		$s->query_safe($read);
		$statements++;
	}
	my $span = time - $t0;
	$s->quit;
	my $calls = scalar(provider_calls($log, $pid));
	note sprintf('%d statements over %.1f s, %d provider calls', $statements, $span, $calls);
	cmp_ok($calls, '>=', 2, 'the backend asked the provider again after its TTL ran out');
	cmp_ok($calls, '<=', 1 + int($span / $ttl),
		sprintf('at most one call per started TTL period (%.1f s read, TTL %d s)', $span, $ttl));
	cmp_ok($statements * 2000, '>', 10 * $calls, 'far fewer calls than values opened');
}

# --- 3. parallel workers make no provider call -------------------------------------------
{
	$node->safe_psql('postgres', 'SELECT atrest.recheck_keys()');
	unlink $log;
	my $s = $node->background_psql('postgres');
	$s->query_safe(
		q{SET atrest.key_cache_ttl = 300;
		  SET max_parallel_workers_per_gather = 2;
		  SET parallel_setup_cost = 0;
		  SET parallel_tuple_cost = 0;
		  SET min_parallel_table_scan_size = 0;
		  SET parallel_leader_participation = off});
	my $pid = $s->query_safe('SELECT pg_backend_pid()');
	my $plan = $s->query_safe("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) $read");
	note $plan;
	like($plan, qr/Workers Launched: 2/, 'the query ran with two parallel workers');
	is($s->query_safe($read), '2000', 'the parallel query reads every value');
	$s->quit;
	my @all = provider_calls($log);
	my @others = grep { $_->[0] != $pid } @all;
	is(scalar(grep { $_->[0] == $pid } @all), 1, 'the leader made one provider call');
	is(scalar(@others), 0, 'no other process (no parallel worker) made one')
	  or diag(join("\n", map { "@$_" } @others));
}

# --- 4. key-table changes under the same root make no provider call ----------------------
{
	$node->safe_psql('postgres', 'CREATE ROLE reader_role');
	my $admin = $node->background_psql('postgres');
	my $reader = $node->background_psql('postgres');
	$_->query_safe('SET atrest.key_cache_ttl = 300') for ($admin, $reader);
	my $apid = $admin->query_safe('SELECT pg_backend_pid()');
	my $rpid = $reader->query_safe('SELECT pg_backend_pid()');
	is($admin->query_safe($read), '2000', 'the administering backend reads (and unwraps once)');
	is($reader->query_safe($read), '2000', 'the reading backend reads (and unwraps once)');
	unlink $log;

	my $offset = -s $node->logfile;
	$admin->query_safe(q{SELECT * FROM atrest.rotate_data_key('default')});
	$admin->query_safe(q{INSERT INTO docs VALUES (2001, 'value 2001')});
	$admin->query_safe(q{SELECT atrest.create_key_class('calls_class')});
	$admin->query_safe('GRANT SELECT ON atrest.key_events TO reader_role');
	$admin->query_safe('GRANT SELECT ON atrest.data_keys TO reader_role');
	$admin->query_safe('VACUUM atrest.data_keys, atrest.database_keys, atrest.key_classes');
	$admin->query_safe('ANALYZE atrest.data_keys, atrest.database_keys, atrest.key_classes');
	$admin->query_safe('SELECT atrest.scrub_key_tables()');
	my $deadline = time + 60;
	sleep 0.5 until log_since($node, $offset) =~ /key tables rewritten/ || time > $deadline;
	like(log_since($node, $offset), qr/key tables rewritten/, 'the scrub worker rewrote the key tables');

	is($admin->query_safe($read), '2001', 'the administering backend reads the new value too');
	is($reader->query_safe($read), '2001', 'the reading backend reads the value of the new data key');
	is($reader->query_safe(q{SELECT v FROM docs WHERE id = 2001}), 'value 2001',
		'and opens it');
	my @calls = provider_calls($log);
	is(scalar(@calls), 0,
		'data-key rotation, a new key class, GRANT, VACUUM, ANALYZE and the scrub made no provider call')
	  or diag(join("\n", map { "@$_" } @calls));

	unlink $log;
	$admin->query_safe('SELECT atrest.rotate_database_key()');
	is($reader->query_safe($read), '2001', 'after rotate_database_key the reader reads on');
	is(join(',', map { $_->[1] } provider_calls($log, $rpid)), 'unwrap',
		'with one provider call: the database key is a new one');
	$admin->quit;
	$reader->quit;
}

# --- 5. data keys when needed; a missing version costs no call and one check ------------
{
	$node->safe_psql(
		'postgres', q{
		CREATE FUNCTION raw_text(atrest.encrypted_text, bytea DEFAULT '') RETURNS bytea
		    LANGUAGE internal IMMUTABLE STRICT AS 'byteacat';
		CREATE FUNCTION forge_text(bytea, bytea DEFAULT '') RETURNS atrest.encrypted_text
		    LANGUAGE internal IMMUTABLE STRICT AS 'byteacat';
		CREATE FUNCTION try_sql(q text) RETURNS text LANGUAGE plpgsql AS $$
		DECLARE d text;
		BEGIN
			EXECUTE q;
			RETURN 'ok';
		EXCEPTION WHEN OTHERS THEN
			GET STACKED DIAGNOSTICS d = PG_EXCEPTION_DETAIL;
			RETURN SQLSTATE || ' ' || d;
		END $$;
		-- the header's class (2 bytes) and version (4 bytes) start at byte 3: version 999 of class 1
		CREATE TABLE forged AS
		  SELECT id, forge_text(overlay(raw_text(v) placing '\x0001000003e7'::bytea from 3)) AS v
		    FROM docs WHERE id <= 50;
		DO $$BEGIN FOR i IN 1..20 LOOP PERFORM atrest.rotate_data_key('default'); END LOOP; END$$;
		INSERT INTO docs VALUES (2002, 'value 2002');});
	is($node->safe_psql('postgres', q{SELECT max(version) FROM atrest.data_keys WHERE class_id = 1}),
		'22', 'class "default" has 22 data-key versions');

	$node->safe_psql('postgres', 'SELECT atrest.recheck_keys()');
	unlink $log;
	my $s = $node->background_psql('postgres');
	$s->query_safe('SET atrest.key_cache_ttl = 300');
	my $pid = $s->query_safe('SELECT pg_backend_pid()');
	is($s->query_safe(q{SELECT v FROM docs WHERE id = 1}), 'value 1', 'a fresh backend reads a value of version 1');
	my $held = $s->query_safe('SELECT keys_held FROM atrest._session_key_state()');
	cmp_ok($held, '<=', 4,
		"it holds the keys it used ($held: service key, database key, one data key), not every version");
	is($s->query_safe(q{SELECT v FROM docs WHERE id = 2002}), 'value 2002', 'it reads a value of version 22');
	is($s->query_safe('SELECT keys_held FROM atrest._session_key_state()'), $held + 1,
		'holding one more key: the version it needed');

	# scans of atrest.data_keys in this transaction, before and after a statement meeting
	# one such value and one meeting all 50: each makes one look at the table
	my $out = $s->query_safe(
		q{BEGIN;
		  SELECT pg_stat_get_xact_numscans('atrest.data_keys'::regclass);
		  SELECT try_sql('SELECT v::text FROM forged WHERE id = 1');
		  SELECT pg_stat_get_xact_numscans('atrest.data_keys'::regclass);
		  SELECT string_agg(DISTINCT try_sql('SELECT v::text FROM forged WHERE id = ' || id), ', ')
		    FROM forged;
		  SELECT pg_stat_get_xact_numscans('atrest.data_keys'::regclass);
		  COMMIT;});
	my ($a, $one, $b, $errors, $c) = grep { length } split /\n/, $out;
	like($errors, qr/^XX001 It names data key version 999 of key class 1, which does not exist\.$/,
		'50 values naming a missing version each fail as corrupted');
	cmp_ok($b - $a, '>=', 1, 'a statement meeting one such value looks at atrest.data_keys');
	is($c - $b, $b - $a, 'a statement meeting 50 of them looks no more often: once per statement');
	# values naming 10,000 different missing versions: the cache remembers at most 1,024
	is( $s->query_safe(
			q{SELECT count(*) FROM generate_series(1000, 10999) g
			   WHERE try_sql(format('SELECT forge_text(overlay(raw_text(v) placing %L from 3))::text FROM docs WHERE id = 1',
			                        '\x0001'::bytea || int4send(g))) LIKE 'XX001 %'}),
		'10000', '10,000 values naming 10,000 missing versions fail as corrupted');
	# the rows' context and the data-key hash's own child context (dynahash names it after
	# the table; PostgreSQL 18 has no "parent" column any more)
	my $bytes = $s->query_safe(
		q{SELECT sum(total_bytes) FROM pg_backend_memory_contexts
		   WHERE name = 'pg_atrest key cache rows'
		      OR (name = 'dynahash' AND ident = 'pg_atrest data keys')});
	note "the key cache's data keys take $bytes bytes of memory";
	cmp_ok($bytes, '>', 0, 'the key cache\'s memory is found');
	cmp_ok($bytes, '<', 200_000, 'and the key cache stays small: missing versions are remembered up to a bound');
	like($s->query_safe(q{SELECT try_sql('SELECT v::text FROM forged WHERE id = 1')}),
		qr/^XX001 /, 'the next statement fails the same way');
	is($s->query_safe(q{SELECT count(*) FROM docs WHERE v::text LIKE 'value %'}), '2002',
		'and the backend reads on');
	$s->quit;
	is(join(',', map { $_->[1] } provider_calls($log, $pid)), 'unwrap',
		'one provider call in all: neither a new version nor a missing one asked the provider again');
}

$node->stop;
done_testing();
