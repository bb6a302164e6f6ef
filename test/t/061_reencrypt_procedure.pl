# Copyright: pg_atrest authors; same license as pg_atrest.
#
# atrest.reencrypt is a procedure that commits after each batch:
#   - a partitioned table: every partition's values move to the active key;
#   - an inheritance parent and its child: each row is rewritten once, through ONLY, and
#     rows that already use the active key (here: the child's) are not touched (their
#     ctid and xmin stay);
#   - a row locked by another session while the procedure runs is skipped, the rows
#     around it are committed (another session sees them under the new key before the
#     procedure ends), and once the lock is released the procedure comes back to it;
#     with a lock held past lock_wait, it stops with a WARNING (55P03) and leaves only
#     that row behind;
#   - it runs as the table's owner under SECURITY_RESTRICTED_OPERATION: a BEFORE UPDATE
#     trigger of a plain role's table that runs ALTER ROLE ... SUPERUSER fails, and the
#     role stays a plain role, when a superuser re-encrypts that table;
#   - a 1.0 database's function atrest.reencrypt is a procedure after the update.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use AtrestTest;

my $node = atrest_node('reencrypt_procedure', cron => 0, pkcs11 => 0);

# The key versions of column doc of rel, as "version:count,...".
sub versions
{
	my ($rel) = @_;
	return $node->safe_psql('postgres',
		qq{SELECT string_agg(v || ':' || n, ',' ORDER BY v)
		     FROM (SELECT (atrest.envelope(doc)).key_version v, count(*) n FROM $rel GROUP BY 1) s});
}

# --- a partitioned table ---------------------------------------------------------------
$node->safe_psql(
	'postgres', q{
	CREATE TABLE parted (id int, doc atrest.encrypted_jsonb(result)) PARTITION BY RANGE (id);
	CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (0) TO (100);
	CREATE TABLE parted_2 PARTITION OF parted FOR VALUES FROM (100) TO (200)
	    PARTITION BY RANGE (id);
	CREATE TABLE parted_2a PARTITION OF parted_2 FOR VALUES FROM (100) TO (200);
	INSERT INTO parted SELECT i, jsonb_build_object('i', i) FROM generate_series(1, 150) i;
	SELECT atrest.rotate_data_key('result');
});
is(versions('parted'), '1:150', 'partitioned table: 150 values under version 1');
is($node->safe_psql('postgres', q{CALL atrest.reencrypt('parted', 'doc', 20)}),
	'150', 'CALL atrest.reencrypt returns how many values it rewrote');
is(versions('parted'), '2:150', 'every partition, nested ones included, moved to version 2');
is($node->safe_psql('postgres', q{SELECT count(*) FROM parted WHERE (doc ->> 'i')::int = id}),
	'150', 'and every value reads back');

# --- inheritance: ONLY ----------------------------------------------------------------
$node->safe_psql(
	'postgres', q{
	CREATE TABLE parent (id int, doc atrest.encrypted_jsonb(model));
	CREATE TABLE child () INHERITS (parent);
	INSERT INTO parent SELECT i, jsonb_build_object('i', i) FROM generate_series(1, 10) i;
	SELECT atrest.rotate_data_key('model');
	INSERT INTO child SELECT i, jsonb_build_object('i', i) FROM generate_series(11, 20) i;
});
my $child_before = $node->safe_psql('postgres',
	q{SELECT string_agg(ctid::text || '/' || xmin, ',' ORDER BY id) FROM ONLY child});
is($node->safe_psql('postgres', q{CALL atrest.reencrypt('parent', 'doc', 3)}),
	'10', "inheritance: only the parent's 10 old values were rewritten");
is(versions('parent'), '2:20', 'parent and child are all under version 2');
is( $node->safe_psql('postgres',
		q{SELECT string_agg(ctid::text || '/' || xmin, ',' ORDER BY id) FROM ONLY child}),
	$child_before, "the child's rows, at the same ctids as the parent's, were not touched");

# --- a locked row, per-batch commits ---------------------------------------------------
$node->safe_psql(
	'postgres', q{
	CREATE TABLE locked (id int PRIMARY KEY, doc atrest.encrypted_jsonb);
	INSERT INTO locked SELECT i, jsonb_build_object('i', i) FROM generate_series(1, 100) i;
	SELECT atrest.rotate_data_key('default');
});
my $holder = $node->background_psql('postgres');
$holder->query_safe(q{BEGIN; SELECT id FROM locked WHERE id = 50 FOR UPDATE;});

my $worker = $node->background_psql('postgres');
$worker->query_until(qr/started/,
	"\\echo started\nCALL atrest.reencrypt('locked', 'doc', 10, '3 minutes');\n\\echo finished\n");

# Another session sees the 99 unlocked rows moved while the procedure still runs.
my $moved = 0;
foreach (1 .. 600)
{
	$moved = $node->safe_psql('postgres',
		q{SELECT count(*) FROM locked WHERE (atrest.envelope(doc)).key_version = 2});
	last if $moved == 99;
	sleep 0.1;
}
is($moved, '99', 'committed batches are visible to another session before the procedure ends');
ok($worker->{stdout} !~ /finished/, 'while the row is locked, the procedure keeps waiting for it');
is($node->safe_psql('postgres',
		q{SELECT (atrest.envelope(doc)).key_version FROM locked WHERE id = 50}),
	'1', 'the locked row is still under version 1');

$holder->query_safe('COMMIT');
$worker->{run}->pump until $worker->{stdout} =~ /finished/ || $worker->{timeout}->is_expired;
like($worker->{stdout}, qr/100\s+finished/, 'after the lock is released, the procedure ends, 100 rewritten');
is(versions('locked'), '2:100', 'the row that was locked was re-encrypted too');
$worker->quit;

# A lock held past lock_wait: a WARNING, the other rows done.
$node->safe_psql('postgres', q{SELECT atrest.rotate_data_key('default')});
$holder->query_safe(q{BEGIN; SELECT id FROM locked WHERE id = 7 FOR UPDATE;});
my ($out, $err) = ('', '');
$node->psql('postgres', qq{\\set VERBOSITY verbose\nCALL atrest.reencrypt('locked', 'doc', 10, '1 second');},
	stdout => \$out, stderr => \$err);
$holder->query_safe('COMMIT');
$holder->quit;
is($out, '99', 'past lock_wait the procedure returns what it did');
like($err, qr/WARNING:  55P03: .*locked/s, 'with a WARNING (55P03) naming the table');
is(versions('locked'), '2:1,3:99', 'only the locked row was left behind');

# --- as the owner ---------------------------------------------------------------------
$node->safe_psql(
	'postgres', q{
	CREATE ROLE alice LOGIN;
	CREATE SCHEMA alice AUTHORIZATION alice;
	SET ROLE alice;
	CREATE TABLE alice.notes (id int, doc atrest.encrypted_jsonb(result));
	CREATE FUNCTION alice.escalate() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
	    ALTER ROLE alice SUPERUSER;
	    RETURN NEW;
	END;
	$$;
	INSERT INTO alice.notes SELECT i, '{"owner": "alice"}' FROM generate_series(1, 5) i;
	CREATE TRIGGER escalate BEFORE UPDATE ON alice.notes
	    FOR EACH ROW EXECUTE FUNCTION alice.escalate();
	RESET ROLE;
	SELECT atrest.rotate_data_key('result');
});
($out, $err) = ('', '');
$node->psql('postgres', qq{\\set VERBOSITY verbose\nCALL atrest.reencrypt('alice.notes', 'doc');},
	stdout => \$out, stderr => \$err);
like($err, qr/ERROR:  42501/, "alice's trigger fails: it runs as alice");
is($node->safe_psql('postgres', q{SELECT rolsuper FROM pg_roles WHERE rolname = 'alice'}),
	'f', 'alice is not a superuser after a superuser re-encrypted her table');
$node->safe_psql('postgres', q{DROP TRIGGER escalate ON alice.notes});
is($node->safe_psql('postgres', q{CALL atrest.reencrypt('alice.notes', 'doc')}),
	'5', 'without the trigger, her table is re-encrypted');

# --- from 1.0 --------------------------------------------------------------------------
$node->safe_psql('postgres', 'CREATE DATABASE old');
$node->safe_psql('old', q{CREATE EXTENSION pg_atrest VERSION '1.0'});
is($node->safe_psql('old', q{SELECT prokind FROM pg_proc WHERE proname = 'reencrypt'}),
	'f', '1.0 has atrest.reencrypt as a function');
$node->safe_psql('old', 'ALTER EXTENSION pg_atrest UPDATE');
is($node->safe_psql('old', q{SELECT prokind FROM pg_proc WHERE proname = 'reencrypt'}),
	'p', 'after the update it is a procedure');
$node->safe_psql(
	'old', q{
	CREATE TABLE t (doc atrest.encrypted_text);
	INSERT INTO t VALUES ('a'), ('b');
	SELECT atrest.rotate_data_key('default');
});
is($node->safe_psql('old', q{CALL atrest.reencrypt('t', 'doc')}), '2',
	'and CALL atrest.reencrypt works there');

$node->stop;
done_testing();
