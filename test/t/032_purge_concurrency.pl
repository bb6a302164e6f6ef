# Copyright: pg_atrest authors; same license as pg_atrest.
#
# The purge of 100,000 expired analyze results, as the pg_cron job runs it
# (CALL atrest.purge_expired_job()), while four other sessions keep working: two start and
# complete analyze operations, two read live results through get_analyze_result, each
# operation in its own transaction.  Checks:
#   - the purge removes exactly the 100,000 expired rows, in batches of at most batch_size
#     rows (11 batches of 10,000, each its own transaction), and never scans the table
#     sequentially (pg_stat_user_tables.seq_scan does not move);
#   - the other sessions completed operations while the purge ran (between its recorded
#     start and finish), every read found its live result, and every result written
#     during the purge is there afterwards;
#   - nobody waited for a lock: with log_lock_waits on and deadlock_timeout = 100ms, any
#     lock wait longer than 100 ms would be logged, and none is.
# No timing goal is asserted (benchmarks do that); the bound on lock waits is the
# deadlock_timeout of 100 ms.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use AtrestTest;

my $node = atrest_node(
	'purge_concurrency',
	cron => 0,
	pkcs11 => 0,
	conf => "autovacuum = off\nlog_lock_waits = on\ndeadlock_timeout = 100ms\n"
	  . "max_connections = 20\n");

my $expired = 100_000;
my $live = 500;

# --------------------------------------------------------------------------------------
# Data: 100,000 expired results (written directly, as the store would have over a day),
# 500 live ones through the functions, and the bookkeeping of the worker sessions.
# --------------------------------------------------------------------------------------

$node->safe_psql(
	'postgres', qq{
	SELECT atrest.create_model('load-model');
	INSERT INTO atrest.analyze_results
	       (result_id, model_id, status, created_at, last_updated_at, completed_at, expires_at, result)
	SELECT gen_random_uuid(), 'load-model', 'succeeded', t - interval '25 hours',
	       t - interval '24 hours', t - interval '24 hours', t,
	       jsonb_build_object('n', i, 'content', 'expired result ' || i)
	  FROM generate_series(1, $expired) i,
	       LATERAL (SELECT now() - interval '1 hour' - i * interval '10 ms' AS t) x;
	CREATE TABLE live_ids (n int PRIMARY KEY, id uuid NOT NULL);
	INSERT INTO live_ids
	SELECT i, atrest.begin_analyze('load-model') FROM generate_series(1, $live) i;
	SELECT count(atrest.complete_analyze(id, jsonb_build_object('n', n))) FROM live_ids;
	CREATE TABLE ops (session text, kind text, started timestamptz, finished timestamptz,
	                  result_id uuid);
	CREATE TABLE stop_flag (stop boolean);
	ANALYZE;});

is( $node->safe_psql(
		'postgres',
		q{SELECT count(*) FILTER (WHERE expires_at < now()) || ' ' ||
		         count(*) FILTER (WHERE expires_at > now()) FROM atrest.analyze_results}),
	"$expired $live", "$expired expired and $live live results");

# Sequential scans of analyze_results, and index scans of its expires_at index (the purge's
# way in; the workers look results up by result_id, through the primary key), once every
# other backend has exited (a backend hands its statistics over when it exits).
my $seq_scan_sql = q{SELECT t.seq_scan || ' ' || i.idx_scan
	FROM pg_stat_user_tables t, pg_stat_user_indexes i
	WHERE t.relid = 'atrest.analyze_results'::regclass
	  AND i.indexrelid = 'atrest.analyze_results_expires_at'::regclass};
my $alone_sql = q{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'client backend'};
$node->poll_query_until('postgres', $alone_sql) or die 'other backends linger';
my ($seq_scans_before, $idx_scans_before) = split / /, $node->safe_psql('postgres', $seq_scan_sql);

# --------------------------------------------------------------------------------------
# Workers: each loops, one operation per transaction, until stop_flag has a row.
# --------------------------------------------------------------------------------------

my $writer_sql = q{
DO $$
DECLARE
    rid uuid;
    t0  timestamptz;
BEGIN
    LOOP
        t0 := clock_timestamp();
        rid := atrest.begin_analyze('load-model');
        COMMIT;
        PERFORM atrest.complete_analyze(rid, '{"written": "during the purge"}');
        COMMIT;
        INSERT INTO ops VALUES (current_setting('application_name'), 'write', t0,
                                clock_timestamp(), rid);
        COMMIT;
        EXIT WHEN EXISTS (SELECT 1 FROM stop_flag);
    END LOOP;
END;
$$;
};

my $reader_sql = qq{
DO \$\$
DECLARE
    pick int;
    rid  uuid;
    st   text;
    t0   timestamptz;
BEGIN
    LOOP
        t0 := clock_timestamp();
        pick := 1 + floor(random() * $live)::int;
        SELECT id INTO rid FROM live_ids WHERE n = pick;
        SELECT status INTO st FROM atrest.get_analyze_result('load-model', rid);
        IF st IS DISTINCT FROM 'succeeded' THEN
            RAISE EXCEPTION 'live result % read as %', rid, st;
        END IF;
        INSERT INTO ops VALUES (current_setting('application_name'), 'read', t0,
                                clock_timestamp(), rid);
        COMMIT;
        EXIT WHEN EXISTS (SELECT 1 FROM stop_flag);
    END LOOP;
END;
\$\$;
};

my $log_offset = -s $node->logfile;
my @workers;
foreach my $w (qw(writer1 writer2 reader1 reader2))
{
	my $session = $node->background_psql('postgres', on_error_stop => 1);
	$session->query_safe("SET application_name = '$w'");
	my $sql = $w =~ /^writer/ ? $writer_sql : $reader_sql;
	$session->query_until(qr/started/, "\\echo started\n$sql\n");
	push @workers, [ $w, $session ];
}

# Wait until a query returns true, for at most the default timeout, giving up early
# (with the worker's errors) when a worker has ended.
sub wait_for_workers
{
	my ($sql, $name) = @_;
	my $deadline = time + $PostgreSQL::Test::Utils::timeout_default;
	while (time < $deadline)
	{
		foreach my $worker (@workers)
		{
			my ($w, $session) = @$worker;
			$session->{run}->pump_nb;
			if (!$session->{run}->pumpable)
			{
				fail($name);
				diag("worker $w ended early: $session->{stderr}");
				return 0;
			}
		}
		if ($node->safe_psql('postgres', $sql) eq 't')
		{
			pass($name);
			return 1;
		}
		sleep 1;
	}
	fail("$name (timed out)");
	return 0;
}

# Let the workers get going, then purge as the job does.
wait_for_workers(q{SELECT count(DISTINCT session) = 4 AND count(*) >= 40 FROM ops},
	'all four workers are running');

$node->safe_psql('postgres', 'CALL atrest.purge_expired_job(10000)');

# Keep the workers going a little past the end of the purge.
my $purge_end = $node->safe_psql('postgres',
	q{SELECT finished_at FROM atrest.purge_runs WHERE rel = 'atrest.analyze_results'::regclass});
wait_for_workers(qq{SELECT count(*) >= 20 FROM ops WHERE started > '$purge_end'},
	'the workers carry on after the purge');
$node->safe_psql('postgres', 'INSERT INTO stop_flag VALUES (true)');

foreach my $worker (@workers)
{
	my ($w, $session) = @$worker;
	my $finished = $session->quit;
	ok($finished, "worker $w ended without error")
	  or diag("stderr of $w: $session->{stderr}");
	is($session->{stderr}, '', "worker $w printed no error");
}

$node->poll_query_until('postgres', $alone_sql) or die 'the workers\' backends linger';
my ($seq_scans_after, $idx_scans_after) = split / /, $node->safe_psql('postgres', $seq_scan_sql);

# --------------------------------------------------------------------------------------
# The purge
# --------------------------------------------------------------------------------------

# One index scan per batch at least: 11 batches.  The workers never use this index, so this
# counts the purge alone, and it proves the statistics were collected (else seq_scan below
# could not move either).
cmp_ok($idx_scans_after - $idx_scans_before, '>=', 11,
	'the statistics saw the purge\'s 11 batches go through the expires_at index');
is($seq_scans_after, $seq_scans_before,
	'the purge (and the workers) never scanned analyze_results sequentially');
my ($rows, $batches, $start, $end) = split /\|/,
  $node->safe_psql(
	'postgres',
	q{SELECT rows_deleted, batches, started_at, finished_at FROM atrest.purge_runs
	  WHERE rel = 'atrest.analyze_results'::regclass AND via = 'job'});
is($rows, $expired, "the purge deleted the $expired expired rows");
is($batches, 11, 'in 11 batches of at most 10,000 rows (the last one finds nothing)');
is( $node->safe_psql(
		'postgres',
		q{SELECT count(*) FROM atrest.analyze_results WHERE expires_at < now()}),
	'0', 'no expired result is left');

# --------------------------------------------------------------------------------------
# The workers during the purge
# --------------------------------------------------------------------------------------

my %during;
foreach my $kind (qw(write read))
{
	$during{$kind} = $node->safe_psql(
		'postgres',
		qq{SELECT count(*) FROM ops WHERE kind = '$kind'
		   AND started >= '$start' AND finished <= '$end'});
	cmp_ok($during{$kind}, '>', 0,
		"$kind operations completed while the purge ran ($during{$kind})");
}
is( $node->safe_psql(
		'postgres',
		q{SELECT count(*) FROM ops o
		  WHERE o.kind = 'write' AND NOT EXISTS (SELECT 1 FROM atrest.analyze_results r
		        WHERE r.result_id = o.result_id AND r.status = 'succeeded')}),
	'0', 'every result written by the workers is there, succeeded');
is( $node->safe_psql(
		'postgres',
		qq{SELECT count(*) FROM atrest.analyze_results WHERE expires_at > now()}),
	$node->safe_psql('postgres', q{SELECT count(*) FROM ops WHERE kind = 'write'}) + $live,
	'live results: the 500 plus what the workers wrote');
note 'slowest operation during the purge: '
  . $node->safe_psql(
	'postgres',
	qq{SELECT max(finished - started) FROM ops WHERE started >= '$start' AND finished <= '$end'});

# --------------------------------------------------------------------------------------
# Lock waits
# --------------------------------------------------------------------------------------

my $log = slurp_file($node->logfile, $log_offset);
unlike($log, qr/still waiting for/, 'no session waited 100 ms or more for a lock');
unlike($log, qr/deadlock detected/, 'no deadlock');

$node->stop;

done_testing();
