# Copyright: pg_atrest authors; same license as pg_atrest.
#
# The retention purge touches each policy's table as the table's owner, under
# SECURITY_RESTRICTED_OPERATION, whoever runs it (a superuser calling atrest.purge_expired,
# the pg_cron job's CALL atrest.purge_expired_job, a superuser reading
# atrest.retention_status).  A plain role, alice, owns three tables under policies a
# superuser added:
#   - evts: a BEFORE DELETE trigger runs ALTER ROLE alice SUPERUSER;
#   - retyped: its time column was changed, after the policy was added, to a type of
#     alice's with an implicit cast to timestamptz whose function runs ALTER ROLE alice
#     SUPERUSER;
#   - benign: a BEFORE DELETE trigger records current_user.
# After every purge path, alice is still not a superuser; the benign table's expired rows
# are purged, its trigger ran as alice; evts and retyped are not purged, each with a
# WARNING that carries the SQLSTATE (42501, 42804) and a purge_runs row saying why; the
# built-in store table atrest.analyze_results keeps being purged.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use AtrestTest;

my $node = atrest_node('purge_as_owner', cron => 0, pkcs11 => 0);

# Runs sql (as user, if given) with verbose messages; returns (stdout, stderr).
sub run
{
	my ($sql, $user) = @_;
	my ($out, $err) = ('', '');
	$node->psql('postgres', "\\set VERBOSITY verbose\n$sql",
		stdout => \$out, stderr => \$err,
		extra_params => $user ? [ '-U', $user ] : []);
	return ($out, $err);
}

sub alice_is_superuser
{
	return $node->safe_psql('postgres',
		q{SELECT rolsuper FROM pg_roles WHERE rolname = 'alice'});
}

$node->safe_psql(
	'postgres', q{
	CREATE ROLE alice LOGIN;
	CREATE SCHEMA alice AUTHORIZATION alice;
});
my ($out, $err) = run(
	q{
	CREATE TABLE alice.evts (id int, at timestamptz);
	CREATE FUNCTION alice.escalate() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
	    ALTER ROLE alice SUPERUSER;
	    RETURN OLD;
	END;
	$$;
	CREATE TRIGGER escalate BEFORE DELETE ON alice.evts
	    FOR EACH ROW EXECUTE FUNCTION alice.escalate();

	CREATE TABLE alice.benign (id int, at timestamptz);
	CREATE TABLE alice.deleted_by (id int, by_user name, restricted boolean);
	CREATE FUNCTION alice.record() RETURNS trigger LANGUAGE plpgsql AS $$
	DECLARE
	    restricted boolean := false;
	BEGIN
	    -- a temporary table is refused under SECURITY_RESTRICTED_OPERATION
	    BEGIN
	        CREATE TEMPORARY TABLE alice_probe (x int);
	        DROP TABLE alice_probe;
	    EXCEPTION WHEN insufficient_privilege THEN
	        restricted := true;
	    END;
	    INSERT INTO alice.deleted_by VALUES (OLD.id, current_user, restricted);
	    RETURN OLD;
	END;
	$$;
	CREATE TRIGGER record BEFORE DELETE ON alice.benign
	    FOR EACH ROW EXECUTE FUNCTION alice.record();

	CREATE TABLE alice.retyped (id int, at timestamptz);

	INSERT INTO alice.evts SELECT i, now() - interval '3 days' FROM generate_series(1, 5) i;
	INSERT INTO alice.benign SELECT i, now() - interval '3 days' FROM generate_series(1, 5) i;
	INSERT INTO alice.benign VALUES (6, now());
	INSERT INTO alice.retyped SELECT i, now() - interval '3 days' FROM generate_series(1, 5) i;
}, 'alice');
is($err, '', 'alice made her tables') or diag($err);

$node->safe_psql(
	'postgres', q{
	SELECT atrest.add_retention_policy('alice.evts', 'at', '1 day');
	SELECT atrest.add_retention_policy('alice.benign', 'at', '1 day');
	SELECT atrest.add_retention_policy('alice.retyped', 'at', '1 day');
});

# After the policy was added, alice retypes her column to a type with an implicit cast
# of hers.
($out, $err) = run(
	q{
	CREATE TYPE alice.ts AS (x timestamptz);
	CREATE FUNCTION alice.ts_to_tstz(alice.ts) RETURNS timestamptz LANGUAGE plpgsql AS $$
	BEGIN
	    ALTER ROLE alice SUPERUSER;
	    RETURN $1.x;
	END;
	$$;
	CREATE CAST (alice.ts AS timestamptz) WITH FUNCTION alice.ts_to_tstz(alice.ts) AS IMPLICIT;
	ALTER TABLE alice.retyped ALTER COLUMN at TYPE alice.ts USING ROW(at)::alice.ts;
}, 'alice');
is($err, '', 'alice retyped her column') or diag($err);
is(alice_is_superuser(), 'f', 'alice starts without superuser');

# Expired analyze results in the built-in store table.
sub expired_results
{
	my ($n) = @_;
	$node->safe_psql(
		'postgres', qq{
		SET atrest.result_ttl = '1 second';
		SELECT count(atrest.complete_analyze(atrest.begin_analyze('m1'), '{"n": 1}'))
		  FROM generate_series(1, $n);
		SELECT pg_sleep(1.1);});
}
$node->safe_psql('postgres', q{SELECT atrest.create_model('m1')});
expired_results(3);

# --- the status view, read by a superuser ---------------------------------------------
($out, $err) = run(
	q{SELECT rel, expired_rows FROM atrest.retention_status WHERE NOT builtin ORDER BY rel::text});
is(alice_is_superuser(), 'f', 'reading atrest.retention_status leaves alice without superuser');
is($out, "alice.benign|5\nalice.evts|5\nalice.retyped|",
	'the status counts expired rows, and none for the retyped column') or diag($err);

# --- the purge function ---------------------------------------------------------------
($out, $err) = run(q{SELECT atrest.purge_expired()});
is(alice_is_superuser(), 'f', 'atrest.purge_expired() leaves alice without superuser');
is($out, '8', 'it purged 5 rows of alice.benign and 3 analyze results') or diag($err);
like($err, qr/WARNING:  42501: .*alice\.evts/s,
	'a WARNING with SQLSTATE 42501 says why alice.evts was not purged');
like($err, qr/WARNING:  42804: .*alice\.retyped/s,
	'a WARNING with SQLSTATE 42804 says why alice.retyped was not purged');
is( $node->safe_psql(
		'postgres', q{SELECT string_agg(DISTINCT by_user || '/' || restricted, ',') FROM alice.deleted_by}),
	'alice/true', "alice.benign's trigger ran as alice, under SECURITY_RESTRICTED_OPERATION");
is( $node->safe_psql(
		'postgres', q{
	SELECT (SELECT count(*) FROM alice.evts) || '/' || (SELECT count(*) FROM alice.benign)
	       || '/' || (SELECT count(*) FROM alice.retyped)
	       || '/' || (SELECT count(*) FROM atrest.analyze_results)}),
	'5/1/5/0', 'rows left: evts 5, benign 1 (live), retyped 5, analyze results 0');
is( $node->safe_psql(
		'postgres', q{
	SELECT string_agg(rel::text || ':' || rows_deleted || ':' || coalesce(split_part(error, ':', 1), '-'),
	                  ',' ORDER BY rel::text)
	  FROM atrest.purge_runs WHERE via = 'function'}),
	'alice.benign:5:-,alice.evts:0:42501,alice.retyped:0:42804,atrest.analyze_batch_results:0:-,'
	  . 'atrest.analyze_documents:0:-,atrest.analyze_outputs:0:-,atrest.analyze_results:3:-,atrest.purge_runs:0:-',
	'purge_runs records each policy, with the reason for the two that failed');

# --- the job's procedure (what pg_cron runs) -------------------------------------------
$node->safe_psql('postgres', q{INSERT INTO alice.benign VALUES (7, now() - interval '2 days')});
expired_results(2);
($out, $err) = run(q{CALL atrest.purge_expired_job()});
is(alice_is_superuser(), 'f', 'CALL atrest.purge_expired_job() leaves alice without superuser');
like($err, qr/WARNING:  42501: .*alice\.evts/s, 'the job warns about alice.evts (42501)');
like($err, qr/WARNING:  42804: .*alice\.retyped/s, 'the job warns about alice.retyped (42804)');
is( $node->safe_psql(
		'postgres', q{
	SELECT string_agg(rel::text || ':' || rows_deleted || ':' || coalesce(split_part(error, ':', 1), '-'),
	                  ',' ORDER BY rel::text)
	  FROM atrest.purge_runs WHERE via = 'job'}),
	'alice.benign:1:-,alice.evts:0:42501,alice.retyped:0:42804,atrest.analyze_batch_results:0:-,'
	  . 'atrest.analyze_documents:0:-,atrest.analyze_outputs:0:-,atrest.analyze_results:2:-,atrest.purge_runs:0:-',
	'the job purged the benign table and the analyze results, and recorded the failures');

# --- once alice drops her trigger, her expired rows go --------------------------------
run(q{DROP TRIGGER escalate ON alice.evts}, 'alice');
($out, $err) = run(q{SELECT atrest.purge_expired()});
is($out, '5', 'without the trigger, alice.evts is purged') or diag($err);
is(alice_is_superuser(), 'f', 'alice is still not a superuser at the end');

$node->stop;
done_testing();
