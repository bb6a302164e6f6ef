# Copyright: pg_atrest authors; same license as pg_atrest.
#
# The purge under pg_cron, for real (pg_cron's scheduler with background workers, minute
# granularity).  In pg_cron's database ("postgres"), CREATE EXTENSION pg_atrest schedules
# the job "atrest-purge" by itself once pg_cron is installed there; calling
# atrest.schedule_purge() again still leaves one job.  From there,
# atrest.schedule_purge('otherdb') schedules "atrest-purge:otherdb" for a second database
# (again one job however often it is called), while calling it in otherdb itself fails
# with 55000 and a hint naming pg_cron's database.  Expired analyze results and expired
# rows of an application table under a retention policy disappear from both databases
# within two minutes, cron.job_run_details shows the runs succeeded, atrest.purge_runs
# records them, and atrest.retention_status shows the job.  atrest.schedule_rewrap()
# schedules "atrest-rewrap", which runs too.  unschedule_purge/unschedule_rewrap remove the
# jobs.  On a server without pg_cron, everything but scheduling works and schedule_purge
# says how to install pg_cron.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

use AtrestTest;
use AtrestFiles;

my $node = atrest_node('purge_cron', pkcs11 => 0, create_extension => 0);

# --------------------------------------------------------------------------------------
# Scheduling
# --------------------------------------------------------------------------------------

# pg_atrest before pg_cron: no job, and schedule_purge says what is missing.
$node->safe_psql('postgres', 'CREATE EXTENSION pg_atrest');
my ($state, $message) = sql_error($node, 'postgres', 'SELECT atrest.schedule_purge()');
is($state, '55000', 'schedule_purge without the pg_cron extension: 55000');
like($message, qr/extension "pg_cron" is not installed in this database/, '... saying so');
$node->safe_psql('postgres', 'DROP EXTENSION pg_atrest');

# pg_cron first: CREATE EXTENSION pg_atrest schedules the purge by itself.
$node->safe_psql('postgres', 'CREATE EXTENSION pg_cron');
$node->safe_psql('postgres', 'CREATE EXTENSION pg_atrest');
is( $node->safe_psql(
		'postgres',
		q{SELECT string_agg(format('%s|%s|%s|%s', jobname, schedule, command, database), ',')
		  FROM cron.job}),
	'atrest-purge|* * * * *|CALL atrest.purge_expired_job()|postgres',
	'CREATE EXTENSION in pg_cron\'s database schedules atrest-purge');
my $purge_job = $node->safe_psql('postgres',
	q{SELECT jobid FROM cron.job WHERE jobname = 'atrest-purge'});
is($node->safe_psql('postgres', 'SELECT atrest.schedule_purge()'),
	$purge_job, 'schedule_purge() again returns the same job');
$node->safe_psql('postgres', 'SELECT atrest.schedule_purge()');
is($node->safe_psql('postgres', q{SELECT count(*) FROM cron.job WHERE jobname LIKE 'atrest-purge%'}),
	'1', 'scheduling twice gives one job');

# A second database.
$node->safe_psql('postgres', 'CREATE DATABASE otherdb');
$node->safe_psql('otherdb', 'CREATE EXTENSION pg_atrest');
my ($stdout, $stderr);
$node->psql(
	'otherdb',
	"\\set VERBOSITY verbose\nSELECT atrest.schedule_purge()",
	stdout => \$stdout,
	stderr => \$stderr);
like($stderr, qr/ERROR:\s+55000: pg_cron jobs are scheduled from database "postgres"/,
	'schedule_purge in another database: 55000');
like($stderr,
	qr/HINT:\s+Connect to database "postgres" and run: SELECT atrest.schedule_purge\('otherdb'/,
	'... with a hint giving the call to run in pg_cron\'s database');

my $other_job = $node->safe_psql('postgres', q{SELECT atrest.schedule_purge('otherdb')});
is($node->safe_psql('postgres', q{SELECT atrest.schedule_purge('otherdb')}),
	$other_job, 'schedule_purge(\'otherdb\') twice returns the same job');
is( $node->safe_psql(
		'postgres',
		q{SELECT string_agg(format('%s|%s|%s', jobname, command, database), ',')
		  FROM cron.job WHERE database = 'otherdb'}),
	'atrest-purge:otherdb|CALL atrest.purge_expired_job()|otherdb',
	'one job, atrest-purge:otherdb, runs in otherdb');
sql_fails_with($node, 'postgres', q{SELECT atrest.schedule_purge('no_such_db')},
	'3D000', 'schedule_purge for a database that does not exist: 3D000');
sql_fails_with($node, 'postgres', q{SELECT atrest.schedule_purge('otherdb', 'every minute')},
	'22023', 'an invalid cron schedule is refused by pg_cron');

my $rewrap_job = $node->safe_psql('postgres', q{SELECT atrest.schedule_rewrap('* * * * *')});
$node->safe_psql('postgres', q{SELECT atrest.schedule_rewrap('* * * * *')});
is( $node->safe_psql(
		'postgres',
		q{SELECT string_agg(format('%s|%s|%s', jobid, command, database), ',')
		  FROM cron.job WHERE jobname LIKE 'atrest-rewrap%'}),
	"$rewrap_job|SELECT atrest.rewrap()|postgres",
	'schedule_rewrap twice gives one job atrest-rewrap');

# --------------------------------------------------------------------------------------
# Expired rows go within two minutes
# --------------------------------------------------------------------------------------

foreach my $db (qw(postgres otherdb))
{
	$node->safe_psql(
		$db, q{
		SELECT atrest.create_model('cron-model');
		SET atrest.result_ttl = '1 second';
		SELECT atrest.complete_analyze(atrest.begin_analyze('cron-model'), '{"n": 1}');
		SELECT atrest.complete_analyze(atrest.begin_analyze('cron-model'), '{"n": 2}');
		SELECT atrest.fail_analyze(atrest.begin_analyze('cron-model'), '{"code": "x"}');
		RESET atrest.result_ttl;
		SELECT atrest.complete_analyze(atrest.begin_analyze('cron-model'), '{"n": "live"}');
		CREATE TABLE app_events (id int, at timestamptz);
		CREATE INDEX ON app_events (at);
		INSERT INTO app_events SELECT i, now() - interval '2 days' FROM generate_series(1, 50) i;
		INSERT INTO app_events SELECT i, now() FROM generate_series(51, 60) i;
		SELECT atrest.add_retention_policy('app_events', 'at', '1 day');});
}
my $since = $node->safe_psql('postgres', 'SELECT now()');

my $purged = q{SELECT (SELECT count(*) FROM atrest.analyze_results) = 1
	AND (SELECT count(*) FROM app_events) = 10
	AND EXISTS (SELECT 1 FROM atrest.purge_runs WHERE via = 'job' AND rows_deleted > 0
	            AND rel = 'app_events'::regclass)};
ok($node->poll_query_until('postgres', $purged), 'the job purged pg_cron\'s own database');
ok($node->poll_query_until('otherdb', $purged), 'the job purged the second database');
# Measured by the server (when the job's purge of app_events started, against the moment
# the expired rows were in place), not by how soon this test's polling noticed.
my $delay = $node->safe_psql('postgres',
	qq{SELECT extract(epoch FROM min(started_at) - '$since'::timestamptz) FROM atrest.purge_runs
	   WHERE via = 'job' AND rows_deleted > 0 AND rel = 'app_events'::regclass});
cmp_ok($delay, '<', 120, sprintf('... the job ran within two minutes (%.0f s after setup)', $delay));

foreach my $db (qw(postgres otherdb))
{
	is( $node->safe_psql(
			$db,
			q{SELECT rel || ':' || sum(rows_deleted) FROM atrest.purge_runs
			  WHERE via = 'job' GROUP BY rel HAVING sum(rows_deleted) > 0 ORDER BY rel::text}),
		"app_events:50\natrest.analyze_results:3",
		"$db: purge_runs records the job's deletions");
	is( $node->safe_psql(
			$db,
			q{SELECT status || ' ' || (result ->> 'n') FROM atrest.analyze_results}),
		'succeeded live', "$db: the live result stays");
}

my %job = (purge => $purge_job, other => $other_job);
foreach my $name (sort keys %job)
{
	ok( $node->poll_query_until(
			'postgres',
			qq{SELECT EXISTS (SELECT 1 FROM cron.job_run_details WHERE jobid = $job{$name}
			   AND status = 'succeeded' AND start_time >= '$since')}),
		"cron.job_run_details shows a successful run of the $name job");
	is( $node->safe_psql(
			'postgres',
			qq{SELECT count(*) FROM cron.job_run_details
			   WHERE jobid = $job{$name} AND status NOT IN ('succeeded', 'running', 'starting')}),
		'0', "... and no failed one");
}
is( $node->safe_psql(
		'postgres',
		qq{SELECT string_agg(DISTINCT database || ' ' || return_message, ',')
		   FROM cron.job_run_details WHERE jobid IN ($purge_job, $other_job)
		   AND status = 'succeeded'}),
	'otherdb CALL,postgres CALL',
	'the jobs ran CALL atrest.purge_expired_job() in their databases');
ok( $node->poll_query_until(
		'postgres',
		qq{SELECT EXISTS (SELECT 1 FROM cron.job_run_details WHERE jobid = $rewrap_job
		   AND status = 'succeeded')}),
	'the rewrap job ran successfully');

# --------------------------------------------------------------------------------------
# retention_status
# --------------------------------------------------------------------------------------

is( $node->safe_psql(
		'postgres',
		q{SELECT string_agg(format('%s|%s|%s|%s', rel, cron_job, cron_job_scheduled,
		                           last_purge_via), ',' ORDER BY rel::text)
		  FROM atrest.retention_status}),
	'app_events|atrest-purge|t|job,atrest.analyze_batch_results|atrest-purge|t|job,'
	  . 'atrest.analyze_documents|atrest-purge|t|job,atrest.analyze_outputs|atrest-purge|t|job,'
	  . 'atrest.analyze_results|atrest-purge|t|job,atrest.purge_runs|atrest-purge|t|job',
	'retention_status in pg_cron\'s database shows the job and its runs');
is( $node->safe_psql(
		'otherdb',
		q{SELECT string_agg(format('%s|%s|%s|%s', rel, cron_job,
		                           coalesce(cron_job_scheduled::text, 'unknown'), last_purge_via),
		                    ',' ORDER BY rel::text)
		  FROM atrest.retention_status}),
	'app_events|atrest-purge:otherdb|unknown|job,atrest.analyze_batch_results|atrest-purge:otherdb|unknown|job,'
	  . 'atrest.analyze_documents|atrest-purge:otherdb|unknown|job,atrest.analyze_outputs|atrest-purge:otherdb|unknown|job,'
	  . 'atrest.analyze_results|atrest-purge:otherdb|unknown|job,atrest.purge_runs|atrest-purge:otherdb|unknown|job',
	'retention_status elsewhere names the job and shows the runs');

# --------------------------------------------------------------------------------------
# Unscheduling
# --------------------------------------------------------------------------------------

is($node->safe_psql('postgres', q{SELECT atrest.unschedule_purge('otherdb')}),
	't', 'unschedule_purge(\'otherdb\') removes its job');
is($node->safe_psql('postgres', q{SELECT atrest.unschedule_purge('otherdb')}),
	'f', '... and then finds none');
is($node->safe_psql('postgres', q{SELECT atrest.unschedule_rewrap()}), 't', 'unschedule_rewrap');
is($node->safe_psql('postgres', q{SELECT atrest.unschedule_purge()}), 't', 'unschedule_purge');
is($node->safe_psql('postgres', q{SELECT count(*) FROM cron.job}), '0', 'no job is left');
is( $node->safe_psql(
		'postgres',
		q{SELECT DISTINCT cron_job_scheduled FROM atrest.retention_status}),
	'f', 'retention_status shows no job scheduled');

$node->stop;

# --------------------------------------------------------------------------------------
# Without pg_cron
# --------------------------------------------------------------------------------------

my $plain = atrest_node('no_cron', cron => 0, pkcs11 => 0);
$plain->psql(
	'postgres',
	"\\set VERBOSITY verbose\nSELECT atrest.schedule_purge()",
	stdout => \$stdout,
	stderr => \$stderr);
like($stderr, qr/ERROR:\s+55000: pg_cron is not installed/,
	'without pg_cron, schedule_purge fails with 55000');
like($stderr, qr/HINT:.*apt-get install postgresql-15-cron.*shared_preload_libraries/s,
	'... and the hint says how to install pg_cron');
is( $plain->safe_psql(
		'postgres', q{
		SELECT atrest.create_model('no-cron');
		SET atrest.result_ttl = '1 second';
		SELECT atrest.complete_analyze(atrest.begin_analyze('no-cron'), '{}') IS NOT NULL;
		SELECT pg_sleep(1.1);
		SELECT atrest.purge_expired();}),
	"\nt\n\n1",
	'the store and the purge work without pg_cron');
is($plain->safe_psql('postgres', q{SELECT DISTINCT coalesce(cron_job_scheduled::text, 'unknown')
	FROM atrest.retention_status}), 'unknown', 'retention_status works without pg_cron');
$plain->stop;

done_testing();
