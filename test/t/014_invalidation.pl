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
#  - B rotates the database key and a data key before A has taken B's invalidation in:
#    the data key's row names a database key A does not hold, and A re-reads the root.
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

# --- a data-key row newer than the root A holds ---------------------------------------
# A reads a data key's row when a value first needs it, with a snapshot of its own, after
# it read the database key's row.  If B's key change commits in between, the data key's
# row may name a database key A does not hold before B's invalidation reaches A: a commit
# is visible a moment before its invalidations are sent.  Holding the key tables' and r's
# locks keeps A from taking invalidations in (a lock taken again does not look), which
# makes that moment as long as the test needs: A must re-read the root and use B's key.

$a->query_safe('BEGIN');
$a->query_safe('LOCK TABLE r, atrest.data_keys, atrest.database_keys IN ACCESS SHARE MODE');
is($a->query_safe(q{SELECT v ->> 'by' FROM r WHERE id = 10}), 'B', 'A reads in a transaction');
my $dbk_before = $a->query_safe('SELECT database_key_id FROM atrest.key_status');
my $dbk_after = $b->query_safe('SELECT atrest.rotate_database_key()');
isnt($dbk_after, $dbk_before, 'B rotates the database key meanwhile');
is($b->query_safe(q{SELECT * FROM atrest.rotate_data_key('result')}),
	'result|5', 'and the result data key, to version 5');
$b->query_safe(q{INSERT INTO r VALUES (12, '{"id": 12, "by": "B"}')});
is( $a->query_safe(q{SELECT (v ->> 'by') || ':v' || (atrest.envelope(v)).key_version FROM r WHERE id = 12}),
	'B:v5', "A reads B's value under version 5, wrapped under the database key A had not seen");
is($a->query_safe(q{SELECT count(*) FROM r WHERE (v ->> 'id')::int = id}),
	'12', 'and every other value, in the same transaction');
$a->query_safe('COMMIT');

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
is($s->query_safe(q{SELECT count(*) FROM r WHERE (v ->> 'id')::int = id}), '12',
	'a standby session reads the values');
is(cache_loaded($s), 't', "the standby session's cache is loaded");

is($node->safe_psql('postgres', q{SELECT key_version FROM atrest.rotate_data_key('result')}),
	'6', 'the primary rotates to version 6');
$node->safe_psql('postgres', q{INSERT INTO r VALUES (13, '{"id": 13, "by": "primary"}')});
$node->wait_for_catchup($standby);

is(cache_loaded($s), 'f', "replaying the rotation made the standby session drop its cache");
is( $s->query_safe(q{SELECT (v ->> 'by') || ':v' || (atrest.envelope(v)).key_version FROM r WHERE id = 13}),
	'primary:v6', 'the standby session reads the value written under version 6');
is($s->query_safe(q{SELECT active_data_key_versions ->> 'result' FROM atrest.key_status}),
	'6', 'and sees version 6 as active');

$node->safe_psql('postgres', 'SELECT atrest.rotate_database_key()');
$node->wait_for_catchup($standby);
is(cache_loaded($s), 'f', 'the database key rotation reached the standby session too');
is($s->query_safe('SELECT count(*) FROM r WHERE (v ->> \'id\')::int = id'),
	'13', 'the standby session reads every value after it');
$s->quit;

$standby->stop;
$node->stop;

done_testing();
