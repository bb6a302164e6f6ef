
# Superseded wrapped keys leave the key tables' files.  enable_cmk, rewrap,
# rotate_database_key and disable_cmk UPDATE rows of atrest.database_keys and
# atrest.data_keys; the old row versions (the database key under the service key
# alone, data keys under a destroyed database key) must be gone from every file of the
# database, free space included, within 60 seconds of the commit, without pg_cron.  An
# older open transaction delays that until it ends; a standby follows the primary; when
# no background worker can start, the commit warns with an errcode and
# atrest.scrub_key_tables() catches up.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use AtrestTest;

my $kms = kms_adapter(PostgreSQL::Test::Utils::tempdir('kms') . '/keys', 'cmk1');
plan skip_all => 'no test/kms/openssl-kms' unless $kms;

# max_worker_processes = 3: the logical replication launcher, pg_atrest's key cache wipe
# worker (preloaded) and one more.
my $node = atrest_node(
	'scrub',
	cron => 0,
	pkcs11 => 0,
	init => { allows_streaming => 1 },
	conf => "atrest.kms_command = '$kms'\nmax_worker_processes = 3\n");

$node->safe_psql(
	'postgres', q{
	CREATE TABLE docs (id int PRIMARY KEY, doc atrest.encrypted_jsonb);
	INSERT INTO docs SELECT i, jsonb_build_object('n', i) FROM generate_series(1, 50) i;});
my $readable = q{SELECT count(*) FROM docs WHERE (doc ->> 'n')::int = id};

# A database-wide ANALYZE must not copy wrapped keys into pg_statistic (its file is
# in the database directory, which the greps below cover).
$node->safe_psql('postgres', 'ANALYZE');
is( $node->safe_psql(
		'postgres', q{SELECT count(*) FROM pg_statistic s JOIN pg_attribute a
		               ON a.attrelid = s.starelid AND a.attnum = s.staattnum
		              WHERE s.starelid IN ('atrest.database_keys'::regclass, 'atrest.data_keys'::regclass)
		                AND a.attname = 'wrapped'}),
	0, 'ANALYZE keeps no statistics (histogram bounds) of wrapped keys');

$node->backup('before');
my $standby = PostgreSQL::Test::Cluster->new('scrub_standby');
$standby->init_from_backup($node, 'before', has_streaming => 1);
restore_key_modes($standby);
$standby->start;

# Every wrapped key the key tables hold now, as raw bytes.
sub wrapped_keys
{
	my $hex = $node->safe_psql(
		'postgres', q{
		SELECT encode(wrapped, 'hex') FROM atrest.database_keys WHERE wrapped IS NOT NULL
		UNION ALL
		SELECT encode(wrapped, 'hex') FROM atrest.data_keys WHERE wrapped IS NOT NULL});
	return map { pack('H*', $_) } split /\n/, $hex;
}

# Runs "sql" and returns the wrapped keys it superseded.
sub superseded_by
{
	my ($sql) = @_;
	my @before = wrapped_keys();
	$node->safe_psql('postgres', $sql);
	my %now = map { $_ => 1 } wrapped_keys();
	return grep { !$now{$_} } @before;
}

sub scrub_workers
{
	return $node->safe_psql('postgres',
		q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_atrest key scrub'});
}

sub no_scrub_worker
{
	$node->poll_query_until('postgres',
		q{SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'pg_atrest key scrub'})
	  or die 'a scrub worker is still running';
}

# The grep finds what is on disk: the live keys are in the files.
{
	my @live = wrapped_keys();
	my @files = database_files($node);
	is(scalar(grep { files_contain($_, @files) > 0 } @live),
		scalar(@live), 'every live wrapped key is found in the database files');
}

my @all_gone;
foreach my $step (
	[ 'enable_cmk', q{SELECT atrest.enable_cmk('command', 'kms:openssl/cmk1')} ],
	[ 'rewrap',     q{SELECT atrest.rewrap()}, 'new-version' ],
	[ 'rotate_database_key', q{SELECT atrest.rotate_database_key()} ],
	[ 'disable_cmk', q{SELECT atrest.disable_cmk()} ],
	[ 'rotate_database_key without a CMK', q{SELECT atrest.rotate_database_key()} ])
{
	my ($name, $sql, $kms_op) = @$step;
	run_command([ $kms, $kms_op, 'cmk1' ]) if $kms_op;
	my @gone = superseded_by($sql);
	push @all_gone, @gone;
	ok(@gone > 0, "$name supersedes wrapped keys (" . scalar(@gone) . ')');
	is(wait_for_scrub($node, \@gone), 0,
		"$name: no superseded wrapped key is left in any file of the database within 60 s");
	is($node->safe_psql('postgres', $readable), 50, "$name: every value still reads");
	no_scrub_worker();
}

{
	my $log = slurp_file($node->logfile);
	my $rewrites = () = $log =~ /key tables rewritten; superseded wrapped keys removed from their files/g;
	ok($rewrites >= 5, "each scrub says so in the server log ($rewrites)");
	is( $node->safe_psql(
			'postgres', q{SELECT count(*) FROM atrest.key_events WHERE operation NOT IN
			  ('enable_cmk', 'rewrap', 'rotate_database_key', 'disable_cmk', 'create_database_key')}),
		0, 'atrest.key_events holds the key changes only');
}

# The standby replays the rewrite: nothing superseded is left there either.
$node->wait_for_catchup($standby);
{
	$standby->safe_psql('postgres', 'CHECKPOINT');
	is(wait_for_scrub($standby, \@all_gone), 0,
		'standby: no wrapped key superseded on the primary is left in its files');
	my @live = wrapped_keys();
	my @files = database_files($standby);
	is(scalar(grep { files_contain($_, @files) > 0 } @live),
		scalar(@live), 'standby: the live wrapped keys are in its files');
}

# --- an older open transaction holds the scrub back until it ends -----------------------
{
	my $old = $node->background_psql('postgres');
	$old->query_safe('BEGIN ISOLATION LEVEL REPEATABLE READ');
	$old->query_safe('SELECT count(*) FROM docs');
	my @gone = superseded_by(q{SELECT atrest.rotate_database_key()});
	# more changes while the first worker waits: no more workers, and it covers them
	push @gone, superseded_by(q{SELECT atrest.rotate_database_key()}) for 1 .. 3;
	sleep 3;
	ok(files_contain($gone[0], database_files($node)) > 0,
		'while an older snapshot is open, the old row versions stay (it may still read them)');
	is(scrub_workers(), 1, 'four key changes, one waiting scrub worker');
	is($old->query_safe('SELECT count(*) FROM docs'), 50, 'the older transaction still reads');
	$old->query_safe('COMMIT');
	$old->quit;
	is(wait_for_scrub($node, \@gone), 0, 'once it has ended, they are gone within 60 s');
	no_scrub_worker();

	# the standby follows
	$node->wait_for_catchup($standby);
	$standby->safe_psql('postgres', 'CHECKPOINT');
	is(wait_for_scrub($standby, \@gone), 0, 'and from the standby\'s files too');
	is($standby->safe_psql('postgres', $readable), 50, 'the standby reads every value');
}

# --- no worker slot: a WARNING with an errcode, then atrest.scrub_key_tables() ----------
# max_worker_processes = 2: the logical replication launcher and the key cache wipe worker
# have both slots.
$node->append_conf('postgresql.conf', "max_worker_processes = 2\n");
$node->restart;
{
	my @before = wrapped_keys();
	my ($out, $err);
	$node->psql('postgres', "\\set VERBOSITY verbose\nSELECT atrest.rotate_database_key()",
		stdout => \$out, stderr => \$err);
	like($err, qr/WARNING:  53400: superseded wrapped keys were not removed from the key tables' files/,
		'a key change that cannot start its worker warns with SQLSTATE 53400');
	like($err, qr/HINT:  Run SELECT atrest\.scrub_key_tables\(\)/, 'and says what to run');
	my %now = map { $_ => 1 } wrapped_keys();
	my @gone = grep { !$now{$_} } @before;
	ok(@gone > 0, 'the rotation committed');

	like(psql_error($node, 'SELECT atrest.scrub_key_tables()'), qr/53400/,
		'scrub_key_tables() fails the same way while no slot is free');
	sleep 2;
	ok(files_contain($gone[0], database_files($node)) > 0,
		'without a worker the superseded keys stay in the files');

	$node->append_conf('postgresql.conf', "max_worker_processes = 3\n");
	$node->restart;
	is($node->safe_psql('postgres', 'SELECT atrest.scrub_key_tables()'), 't',
		'scrub_key_tables() starts a worker once a slot is free (after a restart, too)');
	is(wait_for_scrub($node, \@gone), 0, 'and the superseded keys are gone within 60 s');
	no_scrub_worker();
}

# --- privileges ----------------------------------------------------------------------------
$node->safe_psql('postgres', 'CREATE ROLE mallory LOGIN');
like(
	psql_error($node, "SET ROLE mallory; SELECT atrest.scrub_key_tables()"),
	qr/permission denied/,
	'scrub_key_tables() is not executable by PUBLIC');

$standby->stop;
$node->stop;
done_testing();
