
# Replicas and physical backups of encrypted data.
#
# Streaming hot standby (made from a base backup, so it has the primary's generated service
# key, $PGDATA/pg_atrest/service.key, and its postgresql.conf with atrest.kms_command):
#   - reads every encrypted value, TOASTed ones included;
#   - after enable_cmk, rotate_data_key, rotate_database_key and disable_cmk on the primary it
#     keeps reading in the same session, without restart, including the values written after
#     each change; the session re-reads the key tables after each change (the key tables'
#     invalidations are replayed: its cache has the primary's active data-key versions),
#     unwraps the database key again only when its row changed (its last unwrap time moves
#     after enable_cmk, rotate_database_key and disable_cmk, not after a data-key rotation),
#     and sees the primary's key state;
#   - while the CMK protects the database key the standby needs it (a key disabled in the KMS
#     stops a fresh standby session with AT001), after disable_cmk it does not;
#   - after promotion it reads and writes, and can change keys itself.
# pg_basebackup restored elsewhere (taken while a CMK is enabled):
#   - with the same service key and access to the CMK, every value reads back;
#   - with atrest.kms_command pointing at a KMS that does not hold the key, reading an
#     encrypted value fails with SQLSTATE AT001 (plain columns stay readable);
#   - with another service key, it fails with AT001 too.
# (pg_dump/pg_restore: 012; a logical-replication subscriber: 043.)
# No long mode: this test is deterministic.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use AtrestTest;

# Two views of the KMS: the one that holds cmk1 and one that holds nothing (another site).
my $kms_dir = PostgreSQL::Test::Utils::tempdir('kms');
my %kms = (
	here => AtrestTest::kms_adapter("$kms_dir/keys-here", 'cmk1'),
	elsewhere => AtrestTest::kms_adapter("$kms_dir/keys-elsewhere"));
plan skip_all => 'no test/kms/openssl-kms' unless $kms{here};
my $cmk = 'kms:openssl/cmk1';

our $primary = AtrestTest::atrest_node(
	'primary',
	cron => 0,
	pkcs11 => 0,
	init => { allows_streaming => 1 },
	conf => "atrest.kms_command = '$kms{here}'\n");

$primary->safe_psql(
	'postgres', q{
	CREATE TABLE docs (id int PRIMARY KEY, gen int NOT NULL,
	                   doc atrest.encrypted_jsonb(result),
	                   blob atrest.encrypted_bytea,
	                   note atrest.encrypted_text(model));
	CREATE TABLE shadow (id int PRIMARY KEY, gen int NOT NULL, doc jsonb, blob bytea, note text);
	-- rows [a, b] of generation g, in both tables; every 50th value goes to TOAST
	CREATE FUNCTION write_rows(a int, b int, g int) RETURNS void LANGUAGE sql AS $$
	    WITH src AS MATERIALIZED (
	        SELECT i AS id,
	               jsonb_build_object('id', i, 'gen', g, 'r', md5(random()::text)) AS doc,
	               CASE WHEN i % 50 = 0
	                    THEN convert_to((SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 2000)), 'UTF8')
	                    ELSE decode(md5(random()::text), 'hex') END AS blob,
	               'note ' || i || ' of generation ' || g AS note
	          FROM generate_series(a, b) i),
	    s AS (INSERT INTO shadow SELECT id, g, doc, blob, note FROM src)
	    INSERT INTO docs SELECT id, g, doc, blob, note FROM src;
	$$;
	SELECT write_rows(1, 1000, 0);});

# missing rows, rows whose plaintext differs, rows
my $compare_sql = q{
	SELECT count(*) FILTER (WHERE d.id IS NULL OR s.id IS NULL) || ' '
	    || count(*) FILTER (WHERE d.id IS NOT NULL AND s.id IS NOT NULL AND (
	           md5(d.doc::jsonb::text) IS DISTINCT FROM md5(s.doc::text)
	        OR md5(d.blob::bytea) IS DISTINCT FROM md5(s.blob)
	        OR md5(d.note::text) IS DISTINCT FROM md5(s.note))) || ' '
	    || count(*)
	  FROM docs d FULL JOIN shadow s USING (id)};
my $rows = 1000;

# SQLSTATE of a failing query ('' if it succeeds)
sub sqlstate
{
	my ($node, $sql) = @_;
	my ($out, $err);
	$node->psql('postgres', "\\set VERBOSITY verbose\n$sql", stdout => \$out, stderr => \$err);
	return $err =~ /ERROR:\s+([0-9A-Z]{5}):/ ? $1 : '';
}

# init_from_backup copies the backup with File::Copy, which leaves files mode 0644;
# pg_basebackup itself keeps service.key at 0600, and pg_atrest refuses a key file that
# others can read.  Put the mode back, as a restore with cp -p or tar would have it.
sub init_from_backup
{
	my ($node, $backup, %params) = @_;
	$node->init_from_backup($main::primary, $backup, %params);
	chmod 0700, $node->data_dir . '/pg_atrest';
	chmod 0600, $node->data_dir . '/pg_atrest/service.key';
}

my $status_sql = q{SELECT protector || ' ' || coalesce(key_uri, '-') || ' ' || database_key_id
                     || ' ' || active_data_key_versions::text FROM atrest.key_status};

# --- the standby --------------------------------------------------------------------------
$primary->backup('base');
my $standby = PostgreSQL::Test::Cluster->new('standby');
init_from_backup($standby, 'base', has_streaming => 1);
$standby->start;
$primary->wait_for_catchup($standby);

ok(-f $primary->backup_dir . '/base/pg_atrest/service.key',
	'the generated service key came with the base backup');
is(sprintf('%o', (stat($primary->backup_dir . '/base/pg_atrest/service.key'))[2] & 07777),
	'600', 'pg_basebackup kept its mode 0600');
is($standby->safe_psql('postgres', $compare_sql), "0 0 $rows",
	'the standby reads every encrypted value');

# One session on the standby that stays open through every change.
my $reader = $standby->background_psql('postgres');
is($reader->query_safe($compare_sql), "0 0 $rows", 'a standby session reads every value');
my $unwrap_sql = q{SELECT extract(epoch FROM session_last_unwrap) FROM atrest.key_status};

# The active version of every key class as the standby session's key cache has it (from
# the key tables as it last read them), and as the primary's key tables say.
my $cached_versions_sql =
  q{SELECT string_agg(id || ':' || atrest._active_key_version(id), ' ' ORDER BY id) FROM atrest.key_classes};
my $table_versions_sql =
  q{SELECT string_agg(id || ':' || active_version, ' ' ORDER BY id) FROM atrest.key_classes};

# [ name, SQL, whether the database key's row changes ]: only then may a session ask the
# provider again; a data-key rotation is re-read from the key tables alone.
my @steps = (
	[ 'enable_cmk', "SELECT atrest.enable_cmk('command', '$cmk')", 1 ],
	[ 'rotate_data_key', 'SELECT count(*) FROM atrest.rotate_data_key()', 0 ],
	[ 'rotate_database_key', 'SELECT atrest.rotate_database_key()', 1 ],
	[ 'disable_cmk', 'SELECT atrest.disable_cmk()', 1 ],
	[ 'rotate_data_key again', "SELECT count(*) FROM atrest.rotate_data_key('result')", 0 ],);
my $gen = 0;
for my $step (@steps)
{
	my ($name, $sql, $new_root) = @$step;
	$gen++;
	my $unwrapped_before = $reader->query_safe($unwrap_sql);
	$primary->safe_psql('postgres', $sql);
	$primary->safe_psql('postgres',
		'SELECT write_rows(' . ($rows + 1) . ', ' . ($rows + 100) . ", $gen)");
	$rows += 100;
	$primary->wait_for_catchup($standby);

	is($reader->query_safe($compare_sql), "0 0 $rows",
		"after $name: the standby session reads every value, old and new");
	is($reader->query_safe($cached_versions_sql),
		$primary->safe_psql('postgres', $table_versions_sql),
		"after $name: the standby session re-read the key tables (invalidation replayed)");
	if ($new_root)
	{
		ok($reader->query_safe($unwrap_sql) > $unwrapped_before,
			"after $name: the standby session unwrapped the new database key");
	}
	else
	{
		is($reader->query_safe($unwrap_sql), $unwrapped_before,
			"after $name: the standby session kept its database key (no provider call)");
	}
	is( $reader->query_safe(
			"SELECT count(*) FROM docs WHERE gen = $gen AND note::text LIKE '% of generation $gen'"),
		100,
		"after $name: values written after the change read on the standby");
	is($reader->query_safe($status_sql), $primary->safe_psql('postgres', $status_sql),
		"after $name: the standby sees the primary's key state");

	if ($name eq 'enable_cmk')
	{
		# The standby needs the CMK now: with the key disabled in the KMS, a fresh
		# session cannot unwrap the database key (once recheck_keys() on the standby has
		# emptied its shared key cache, which the reader filled).
		run_command([ $kms{here}, 'disable', 'cmk1' ]);
		$standby->safe_psql('postgres', 'SELECT atrest.recheck_keys()');
		is(sqlstate($standby, 'SELECT count(*) FROM docs WHERE note::text IS NOT NULL'),
			'AT001', 'with the CMK enabled, a standby session needs the KMS key (AT001 without)');
		run_command([ $kms{here}, 'enable', 'cmk1' ]);
		# recheck_keys() made every standby session drop its copy: the reader takes the
		# key again now, so that the next step sees only what that step causes
		is($reader->query_safe($compare_sql), "0 0 $rows", 'after recheck_keys() the standby session reads again');
	}
	if ($name eq 'disable_cmk')
	{
		run_command([ $kms{here}, 'disable', 'cmk1' ]);
		is($standby->safe_psql('postgres', $compare_sql), "0 0 $rows",
			'after disable_cmk the standby reads without the KMS key');
		run_command([ $kms{here}, 'enable', 'cmk1' ]);
	}
}
$reader->quit;

# --- physical backups restored elsewhere ---------------------------------------------------
$primary->safe_psql('postgres', "SELECT atrest.enable_cmk('command', '$cmk')");
$primary->safe_psql('postgres',
	'SELECT write_rows(' . ($rows + 1) . ', ' . ($rows + 50) . ', 99)');
$rows += 50;
$primary->backup('with_cmk');

my $restored = PostgreSQL::Test::Cluster->new('restored');
init_from_backup($restored, 'with_cmk');
$restored->start;
is($restored->safe_psql('postgres', $compare_sql), "0 0 $rows",
	'a restored base backup reads every value with the same service key and the CMK');
is($restored->safe_psql('postgres', 'SELECT protector FROM atrest.key_status'),
	'customer', 'the restored copy is protected by the CMK');
$restored->stop;

my $no_cmk = PostgreSQL::Test::Cluster->new('restored_no_cmk');
init_from_backup($no_cmk, 'with_cmk');
$no_cmk->append_conf('postgresql.conf', "atrest.kms_command = '$kms{elsewhere}'\n");
$no_cmk->start;
is(sqlstate($no_cmk, 'SELECT count(*) FROM docs WHERE doc IS NOT NULL AND doc::jsonb IS NOT NULL'),
	'AT001', 'where the CMK is not accessible, reading the backup fails with AT001');
my ($out, $err);
$no_cmk->psql('postgres', 'SELECT note::text FROM docs WHERE id = 1', stdout => \$out, stderr => \$err);
like($err, qr/customer-managed key of provider "command" is unavailable/,
	'the error names the provider');
ok($no_cmk->log_contains(qr/Key "\Q$cmk\E": the provider reported: /),
	'the server log names the key');
is($no_cmk->safe_psql('postgres', 'SELECT count(*) FROM shadow'), $rows,
	'plain columns of the restored copy stay readable');
$no_cmk->stop;

my $other_key = PostgreSQL::Test::Cluster->new('restored_other_service_key');
init_from_backup($other_key, 'with_cmk');
my $keyfile = $other_key->basedir . '/other.key';
PostgreSQL::Test::Utils::append_to_file($keyfile, ('ab' x 32) . "\n");
chmod 0600, $keyfile;
$other_key->append_conf('postgresql.conf', "atrest.service_key_file = '$keyfile'\n");
$other_key->start;
is(sqlstate($other_key, 'SELECT count(*) FROM docs WHERE note::text IS NOT NULL'),
	'AT001', 'with another service key (CMK accessible), reading the backup fails with AT001');
$other_key->stop;

# --- promotion ------------------------------------------------------------------------------
$primary->wait_for_catchup($standby);
$primary->stop;
$standby->promote;
is($standby->safe_psql('postgres', 'SELECT pg_is_in_recovery()'), 'f', 'the standby is promoted');
is($standby->safe_psql('postgres', $compare_sql), "0 0 $rows",
	'the promoted standby reads every value');
$standby->safe_psql('postgres',
	'SELECT write_rows(' . ($rows + 1) . ', ' . ($rows + 100) . ', 100)');
$rows += 100;
$standby->safe_psql('postgres', 'SELECT count(*) FROM atrest.rotate_data_key()');
$standby->safe_psql('postgres', 'SELECT atrest.rotate_database_key()');
$standby->safe_psql('postgres', 'SELECT atrest.disable_cmk()');
$standby->safe_psql('postgres',
	'SELECT write_rows(' . ($rows + 1) . ', ' . ($rows + 100) . ', 101)');
$rows += 100;
is($standby->safe_psql('postgres', $compare_sql), "0 0 $rows",
	'the promoted standby writes, changes keys and reads everything back');

$standby->stop;
done_testing();
