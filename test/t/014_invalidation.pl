# Copyright: pg_atrest authors; same license as pg_atrest.
#
# Key cache invalidation between sessions.  Session A has loaded its key cache; session B
# changes the keys:
#  - B rotates the result data key (and commits): A's next write uses the new version
#    (before A has read anything that would make it reload), and A reads B's new row.
#  - B's rotation stays invisible to A until B commits: A keeps writing the old version.
#  - B creates a key class and a table using it: A writes into that table at once.
#  - B rotates the database key: A reads everything and writes on.
#  - A rotates and rolls back: A writes under the old version again, and when B then makes
#    a version of the same number (other key material), A reads B's values with it.
#  - B rotates the database key while a statement of C runs: C, which loaded the old one
#    at the statement's start, then needs a data key it has not unwrapped yet.  Its row
#    names the new database key: C re-reads the database key and reads on.
#  - The same, but B rotates the database key again each time C's statement unwraps a
#    database key (the service key command waits for it): C unwraps the database key that
#    the data key's row was read with, once, and reads on; it does not chase B's rotations.
# atrest._session_key_state().cache_loaded shows when a cache was dropped.  Finally, a hot
# standby session drops its cache when the primary's key change is replayed, and reads the
# values written under the new key.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use AtrestTest;

my $node = atrest_node(
	'primary',
	cron => 0,
	pkcs11 => 0,
	init => { allows_streaming => 1 },
	conf => "autovacuum = off\n");

$node->safe_psql(
	'postgres', q{
	CREATE TABLE r (id int PRIMARY KEY, v atrest.encrypted_jsonb(result));
	INSERT INTO r SELECT i, jsonb_build_object('id', i, 'by', 'setup') FROM generate_series(1, 3) i;
});

my $a = $node->background_psql('postgres');
my $b = $node->background_psql('postgres');

# What A sees: every row's id, writer and key version.
sub rows_seen_by
{
	my ($s) = @_;
	return $s->query_safe(
		q{SELECT string_agg(format('%s:%s:v%s', id, v ->> 'by', (atrest.envelope(v)).key_version),
		                    ' ' ORDER BY id) FROM r});
}

sub cache_loaded
{
	my ($s) = @_;
	return $s->query_safe('SELECT cache_loaded FROM atrest._session_key_state()');
}

sub version_of
{
	my ($s, $id) = @_;
	return $s->query_safe("SELECT (atrest.envelope(v)).key_version FROM r WHERE id = $id");
}

is(rows_seen_by($a), '1:setup:v1 2:setup:v1 3:setup:v1', 'A reads the first rows');
is(cache_loaded($a), 't', "A's key cache is loaded");

# --- B rotates the result data key ----------------------------------------------------

is($b->query_safe(q{SELECT * FROM atrest.rotate_data_key('result')}),
	'result|2', 'B rotates the result data key to version 2');
is(cache_loaded($a), 'f', "B's commit made A drop its key cache");
$b->query_safe(q{INSERT INTO r VALUES (4, '{"id": 4, "by": "B"}')});

# A writes before reading anything of version 2: only the invalidation tells it.
$a->query_safe(q{INSERT INTO r VALUES (5, '{"id": 5, "by": "A"}')});
is(version_of($a, 5), '2', "A's next write uses version 2");
is(rows_seen_by($a), '1:setup:v1 2:setup:v1 3:setup:v1 4:B:v2 5:A:v2',
	"A reads B's new row and all the old ones");

# --- an uncommitted rotation is invisible ---------------------------------------------

$b->query_safe('BEGIN');
is($b->query_safe(q{SELECT * FROM atrest.rotate_data_key('result')}),
	'result|3', 'B rotates to version 3 in an open transaction');
$a->query_safe(q{INSERT INTO r VALUES (6, '{"id": 6, "by": "A"}')});
is(version_of($a, 6), '2', "A still writes version 2 while B's rotation is uncommitted");
is(cache_loaded($a), 't', 'and A kept its cache');
$b->query_safe('COMMIT');
$a->query_safe(q{INSERT INTO r VALUES (7, '{"id": 7, "by": "A"}')});
is(version_of($a, 7), '3', 'after B commits, A writes version 3');

# --- a new key class ------------------------------------------------------------------

$b->query_safe(
	q{SELECT atrest.create_key_class('fresh');
	  CREATE TABLE f (id int, v atrest.encrypted_text(fresh));});
$a->query_safe(q{INSERT INTO f VALUES (1, 'written by A')});
is( $a->query_safe(
		q{SELECT v || '/' || (atrest.envelope(v)).key_class || '/' ||
		         (atrest.envelope(v)).key_version FROM f}),
	'written by A/fresh/1',
	"A writes under the key class B just created");

# --- B rotates the database key -------------------------------------------------------

my $old_dbk = $a->query_safe('SELECT database_key_id FROM atrest.key_status');
my $new_dbk = $b->query_safe('SELECT atrest.rotate_database_key()');
isnt($new_dbk, $old_dbk, 'B rotates the database key');
is(cache_loaded($a), 'f', 'A dropped its cache');
is(rows_seen_by($a),
	'1:setup:v1 2:setup:v1 3:setup:v1 4:B:v2 5:A:v2 6:A:v2 7:A:v3',
	'A reads every row after the database key rotation');
$a->query_safe(q{INSERT INTO r VALUES (8, '{"id": 8, "by": "A"}')});
is(version_of($a, 8), '3', 'A writes on, under data key version 3');
is($a->query_safe('SELECT database_key_id FROM atrest.key_status'),
	$new_dbk, "A's view of key_status shows the new database key");

# --- rotate and roll back -------------------------------------------------------------

$a->query_safe('BEGIN');
is($a->query_safe(q{SELECT * FROM atrest.rotate_data_key('result')}),
	'result|4', 'A rotates to version 4 in a transaction');
$a->query_safe(q{INSERT INTO r VALUES (100, '{"id": 100, "by": "rolled back"}')});
is( $a->query_safe(q{SELECT (atrest.envelope(v)).key_version || ':' || (v ->> 'by') FROM r WHERE id = 100}),
	'4:rolled back',
	'inside the transaction A writes and reads version 4');
$a->query_safe('ROLLBACK');

is($a->query_safe(q{SELECT active_data_key_versions ->> 'result' FROM atrest.key_status}),
	'3', 'after ROLLBACK the active version is 3 again');
$a->query_safe(q{INSERT INTO r VALUES (9, '{"id": 9, "by": "A"}')});
is(version_of($a, 9), '3', 'A writes version 3 after the rollback');

# B makes a version 4 of its own: other key material under the same number.
is($b->query_safe(q{SELECT * FROM atrest.rotate_data_key('result')}),
	'result|4', 'B rotates to a new version 4');
$b->query_safe(q{INSERT INTO r VALUES (10, '{"id": 10, "by": "B"}')});
is( $a->query_safe(q{SELECT (v ->> 'by') || ':v' || (atrest.envelope(v)).key_version FROM r WHERE id = 10}),
	'B:v4', "A reads B's version-4 value (it did not keep the rolled-back key)");
$a->query_safe(q{INSERT INTO r VALUES (11, '{"id": 11, "by": "A"}')});
is($b->query_safe(q{SELECT (v ->> 'by') || ':v' || (atrest.envelope(v)).key_version FROM r WHERE id = 11}),
	'A:v4', "B reads A's new version-4 value");
is( $b->query_safe(q{SELECT count(*) FROM r WHERE v IS NOT NULL AND (v ->> 'id')::int = id}),
	'11', 'B reads all eleven rows');

# --- a data-key row newer than the database key a statement started with ---------------
# A data key's row is read when a value first needs it, with a snapshot of its own.  If a
# database key rotation commits after the statement read the database key's row, that
# data key's row names a database key the cache does not hold, and the invalidation
# that would tell may not have come in yet: a commit is visible a moment before its
# invalidations are sent, and a backend takes them in only when it opens a relation by
# name or takes a lock for the first time in a transaction.  C holds the key tables'
# locks, so that reading the data key's row takes nothing in: that moment lasts while
# C's statement waits for B on an advisory lock between reading two values.

my $c = $node->background_psql('postgres', on_error_stop => 0);
my $barrier = 4711;
# Queue to session $c one statement that reads row $first_id, then waits for the advisory
# lock $barrier (held by $b), then reads row 1, each with its value's data-key version; return
# once C waits (the count of waiters seen, 1).
sub read_wait_read
{
	my ($c, $b, $first_id) = @_;
	$c->{stdin} .= qq{SELECT x FROM (
	SELECT 1, (v ->> 'by') || ':v' || (atrest.envelope(v)).key_version FROM r WHERE id = $first_id
	UNION ALL SELECT 2, 'waited' FROM pg_advisory_lock($barrier)
	UNION ALL SELECT 3, (v ->> 'by') || ':v' || (atrest.envelope(v)).key_version FROM r WHERE id = 1) s(n, x);
\\echo done
};
	return advisory_waiters($b, $barrier, 1, pump => [$c]);
}

$b->query_safe("SELECT pg_advisory_lock($barrier)");
$c->query_safe('BEGIN');
$c->query_safe(
	'LOCK TABLE atrest.key_classes, atrest.data_keys, atrest.database_keys IN ACCESS SHARE MODE');
# a change of the key tables, so that C's next statement reloads and holds no data key
$b->query_safe(q{SELECT atrest.rotate_data_key('fresh')});
my $dbk_before = $c->query_safe('SELECT database_key_id FROM atrest.key_status');
is(read_wait_read($c, $b, 10), '1', "C's statement read the first value and waits for B");
my $dbk_after = $b->query_safe('SELECT atrest.rotate_database_key()');
isnt($dbk_after, $dbk_before, 'B rotates the database key meanwhile');
$b->query_safe("SELECT pg_advisory_unlock($barrier)");
$c->{run}->pump until $c->{stdout} =~ /done/ || $c->{timeout}->is_expired;
is($c->{stderr}, '', 'no error in C');
is($c->{stdout}, "B:v4\nwaited\nsetup:v1\ndone\n",
	'C read the value of data key version 1, re-wrapped under the new database key');
$c->{stdout} = '';
$c->query_safe('COMMIT');
is($c->query_safe('SELECT database_key_id FROM atrest.key_status'),
	$dbk_after, "C's view of key_status shows the new database key");
$c->quit;

$a->quit;
$b->quit;

# --- a hot standby --------------------------------------------------------------------

$node->backup('bk');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($node, 'bk', has_streaming => 1);
# The test framework copies the backup without file modes; pg_atrest refuses a service
# key file that others may read, so give it back the mode pg_basebackup preserved.
chmod(0600, $standby->data_dir . '/pg_atrest/service.key')
  or die "chmod service.key: $!";
$standby->start;
$node->wait_for_catchup($standby);

my $s = $standby->background_psql('postgres');
is($s->query_safe('SELECT pg_is_in_recovery()'), 't', 'the standby is in recovery');
is($s->query_safe(q{SELECT count(*) FROM r WHERE (v ->> 'id')::int = id}), '11',
	'a standby session reads the values');
is(cache_loaded($s), 't', "the standby session's cache is loaded");

is($node->safe_psql('postgres', q{SELECT key_version FROM atrest.rotate_data_key('result')}),
	'5', 'the primary rotates to version 5');
$node->safe_psql('postgres', q{INSERT INTO r VALUES (12, '{"id": 12, "by": "primary"}')});
$node->wait_for_catchup($standby);

is(cache_loaded($s), 'f', "replaying the rotation made the standby session drop its cache");
is( $s->query_safe(q{SELECT (v ->> 'by') || ':v' || (atrest.envelope(v)).key_version FROM r WHERE id = 12}),
	'primary:v5', 'the standby session reads the value written under version 5');
is($s->query_safe(q{SELECT active_data_key_versions ->> 'result' FROM atrest.key_status}),
	'5', 'and sees version 5 as active');

$node->safe_psql('postgres', 'SELECT atrest.rotate_database_key()');
$node->wait_for_catchup($standby);
is(cache_loaded($s), 'f', 'the database key rotation reached the standby session too');
is($s->query_safe('SELECT count(*) FROM r WHERE (v ->> \'id\')::int = id'),
	'12', 'the standby session reads every value after it');
$s->quit;

$standby->stop;

# --- rotations that keep committing while a statement unwraps the database key -----------
# As above, C's statement loaded the database key and then meets a data key whose row names
# a newer one.  Now every time C runs the service key command (to unwrap a database key),
# the command waits until B has rotated the database key once more.  C must unwrap the
# database key that the same snapshot as the data key's row shows, and unwrap the data key
# under it: reading the active row with a snapshot of its own, later than the data key's
# row, it would find yet another database key, and chase B's rotations.

my $gatedir = PostgreSQL::Test::Utils::tempdir('gate');
my $keyfile = $node->data_dir . '/pg_atrest/service.key';
my $gate = "$gatedir/service-key-command";
# Prints the service key.  If the backend named in gate.pid runs it (through the shell: it
# is an ancestor), it first counts the call and waits until the test removes gate.waiting.
PostgreSQL::Test::Utils::append_to_file(
	$gate, qq{dir='$gatedir'
if [ -f "\$dir/gate.pid" ]; then
	gated=\$(cat "\$dir/gate.pid")
	p=\$\$
	for i in 1 2 3 4; do
		read -r _ _ _ p _ < /proc/\$p/stat || break
		if [ "\$p" = "\$gated" ]; then
			echo x >>"\$dir/gate.calls"
			touch "\$dir/gate.waiting"
			while [ -f "\$dir/gate.waiting" ]; do sleep 0.1; done
			break
		fi
	done
fi
exec cat '$keyfile'
});
$node->append_conf('postgresql.conf',
	"atrest.service_key_command = 'sh $gate'\natrest.service_key_timeout = 600\n");
$node->reload;

my $b2 = $node->background_psql('postgres');
my $c2 = $node->background_psql('postgres', on_error_stop => 0);
is($b2->query_safe('SELECT atrest._service_key_source()'),
	'atrest.service_key_command', 'the service key now comes from the gated command');
my $c2_pid = $c2->query_safe('SELECT pg_backend_pid()');
$b2->query_safe("SELECT pg_advisory_lock($barrier)");
$c2->query_safe('BEGIN');
$c2->query_safe(
	'LOCK TABLE atrest.key_classes, atrest.data_keys, atrest.database_keys IN ACCESS SHARE MODE');
is(read_wait_read($c2, $b2, 12), '1', "C's statement read the first value and waits for B");
PostgreSQL::Test::Utils::append_to_file("$gatedir/gate.pid", $c2_pid);
$b2->query_safe('SELECT atrest.rotate_database_key()');
$b2->query_safe("SELECT pg_advisory_unlock($barrier)");

# Each time C waits in the service key command, B rotates once more (at most eight times).
my $rotations = 0;
my $deadline = time + $PostgreSQL::Test::Utils::timeout_default;
while ($c2->{stdout} !~ /done/ && time < $deadline)
{
	$c2->{run}->pump_nb;
	if (-f "$gatedir/gate.waiting")
	{
		if ($rotations < 8)
		{
			$b2->query_safe('SELECT atrest.rotate_database_key()');
			$rotations++;
		}
		unlink "$gatedir/gate.waiting" or die "unlink gate.waiting: $!";
	}
	select(undef, undef, undef, 0.1);
}
unlink "$gatedir/gate.pid";
is($c2->{stderr}, '', 'no error in C while B kept rotating the database key');
is($c2->{stdout}, "primary:v5\nwaited\nsetup:v1\ndone\n",
	'C read the value of data key version 1 under the database key its row was read with');
my @gate_calls = split /\n/, PostgreSQL::Test::Utils::slurp_file("$gatedir/gate.calls");
is(scalar(@gate_calls), 1, 'C unwrapped one database key for it');
is($rotations, 1, 'so B rotated only once while C unwrapped it');
$c2->{stdout} = '';
$c2->query_safe('COMMIT');
is($c2->query_safe(q{SELECT count(*) FROM r WHERE (v ->> 'id')::int = id}),
	'12', "C reads every value under B's last database key");
is($c2->query_safe('SELECT database_key_id FROM atrest.key_status'),
	$b2->query_safe('SELECT database_key_id FROM atrest.key_status'),
	'and C and B see the same database key');
$c2->quit;
$b2->quit;

$node->stop;

done_testing();
