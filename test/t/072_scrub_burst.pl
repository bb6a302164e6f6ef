# Copyright: pg_atrest authors; same license as pg_atrest.
#
# A burst of key-table changes in one session does not run out of background worker
# slots: a change committed while this session's last scrub worker has not started yet
# registers no other (that worker covers it), and one that finds no free slot while that
# worker is still starting waits until a worker holds the scrub lock (its look for newer
# changes comes after the commit).  One free worker slot (max_worker_processes = 3, the
# logical replication launcher and the key cache wipe worker have the others), a database key rotation and twenty
# statements that fire the key tables' triggers, each committed, in one DO block: no
# WARNING about a worker that could not start, and the superseded wrapped keys leave the
# files.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use AtrestTest;

my $node = atrest_node('burst', cron => 0, pkcs11 => 0, conf => "max_worker_processes = 3\n");
$node->safe_psql(
	'postgres', q{
	CREATE TABLE docs (id int PRIMARY KEY, doc atrest.encrypted_jsonb);
	INSERT INTO docs SELECT i, jsonb_build_object('n', i) FROM generate_series(1, 20) i;});
# let the worker of CREATE EXTENSION's first key (if any) finish
$node->poll_query_until('postgres',
	q{SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'pg_atrest key scrub'});

my $wrapped = q{SELECT encode(wrapped, 'hex') FROM atrest.database_keys WHERE wrapped IS NOT NULL
	UNION ALL SELECT encode(wrapped, 'hex') FROM atrest.data_keys WHERE wrapped IS NOT NULL};
my @before = split /\n/, $node->safe_psql('postgres', $wrapped);

my ($out, $err);
$node->psql(
	'postgres', q{
	DO $$
	BEGIN
	    PERFORM atrest.rotate_database_key();
	    COMMIT;
	    FOR i IN 1 .. 20 LOOP
	        UPDATE atrest.data_keys SET wrapped = wrapped WHERE false;
	        COMMIT;
	    END LOOP;
	END $$;},
	stdout => \$out, stderr => \$err, on_error_die => 1);
unlike($err, qr/superseded wrapped keys were not removed/,
	'a burst of twenty-one key-table changes with one free worker slot: no worker slot runs out');

my %now = map { $_ => 1 } split /\n/, $node->safe_psql('postgres', $wrapped);
my @gone = map { pack('H*', $_) } grep { !$now{$_} } @before;
ok(@gone > 0, 'the rotation superseded wrapped keys (' . scalar(@gone) . ')');
is(wait_for_scrub($node, \@gone), 0, 'no superseded wrapped key is left in any file of the database within 60 s');
is($node->safe_psql('postgres', q{SELECT count(*) FROM docs WHERE (doc ->> 'n')::int = id}),
	'20', 'every value still reads');

done_testing();
