
# Cutting an old key off for good: atrest.rekey() (a new database key and new data-key
# versions), atrest.reencrypt(), atrest.retire_data_key() (refuses, naming a table and
# column, while a stored value still uses the version; a value that names a retired
# version gets a clear error), and the key-table scrub.  Then a copy of the data
# directory, with the service key but with the CMK revoked, decrypts nothing, and none
# of the superseded wrapped keys is in its files.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use AtrestTest;

my $keydir = PostgreSQL::Test::Utils::tempdir('kms') . '/keys';
my $kms = kms_adapter($keydir, 'cmk1');
plan skip_all => 'no test/kms/openssl-kms' unless $kms;

my $node = atrest_node(
	'rekey',
	cron => 0,
	pkcs11 => 0,
	conf => "atrest.kms_command = '$kms'\n");

$node->safe_psql(
	'postgres', q{
	CREATE TABLE docs (id int PRIMARY KEY, doc atrest.encrypted_jsonb);
	CREATE TABLE notes (id int PRIMARY KEY, note atrest.encrypted_text(result));
	INSERT INTO docs SELECT i, jsonb_build_object('n', i) FROM generate_series(1, 100) i;
	INSERT INTO notes SELECT i, 'note ' || i FROM generate_series(1, 100) i;
	-- test-only: see a sealed value's raw bytes, and put raw bytes back
	CREATE CAST (atrest.encrypted_jsonb AS bytea) WITHOUT FUNCTION;
	CREATE CAST (bytea AS atrest.encrypted_jsonb) WITHOUT FUNCTION;
	CREATE TABLE stash AS SELECT doc::bytea AS raw FROM docs WHERE id = 1;});
my $readable = q{SELECT (SELECT count(*) FROM docs WHERE (doc ->> 'n')::int = id)
                      + (SELECT count(*) FROM notes WHERE note::text = 'note ' || id)};

sub wrapped_keys
{
	my $hex = $node->safe_psql(
		'postgres', q{
		SELECT encode(wrapped, 'hex') FROM atrest.database_keys WHERE wrapped IS NOT NULL
		UNION ALL
		SELECT encode(wrapped, 'hex') FROM atrest.data_keys WHERE wrapped IS NOT NULL});
	return map { pack('H*', $_) } split /\n/, $hex;
}

# everything wrapped under the service key alone, before the CMK
my %old = map { $_ => 1 } wrapped_keys();

$node->safe_psql('postgres', q{SELECT atrest.enable_cmk('command', 'kms:openssl/cmk1')});
$old{$_} = 1 foreach wrapped_keys();

# --- rekey -----------------------------------------------------------------------------------
is($node->safe_psql('postgres', q{SELECT key_class || ' ' || key_version FROM atrest.rekey('result')}),
	'result 2', 'rekey(class): a new database key and a new version of that class');
is( $node->safe_psql(
		'postgres', q{SELECT string_agg(key_class || ' ' || key_version, ',' ORDER BY key_class)
		              FROM atrest.rekey()}),
	'default 2,model 2,result 3',
	'rekey(): a new database key and a new version of every class');
$old{$_} = 1 foreach wrapped_keys();    # includes the old versions, re-wrapped
is($node->safe_psql('postgres', $readable), 200, 'every value still reads after rekey');
is( $node->safe_psql(
		'postgres', q{SELECT count(*) FROM atrest.key_events WHERE operation IN ('rotate_database_key', 'rotate_data_key')}),
	6, 'rekey logs its steps in atrest.key_events');

# --- retire refuses while values use a version -----------------------------------------------
my $err = psql_error($node, q{SELECT atrest.retire_data_key('default', 1)});
like($err, qr/55006: data key version 1 of key class "default" is still in use/,
	'retire_data_key refuses (55006) while values use the version');
like($err, qr/Column "doc" of table public\.docs/, 'and names the table and column');

like(psql_error($node, q{SELECT atrest.retire_data_key('result', 3)}),
	qr/55006: data key version 3 of key class "result" is the active version/,
	'the active version cannot be retired');
like(psql_error($node, q{SELECT atrest.retire_data_key('result', 9)}),
	qr/42704: data key version 9 of key class "result" does not exist/,
	'an unknown version is an error');

$node->safe_psql('postgres', q{CALL atrest.reencrypt('notes', 'note')});
$node->safe_psql('postgres', q{CALL atrest.reencrypt('docs', 'doc')});
is($node->safe_psql('postgres', $readable), 200, 'every value reads after reencrypt');
is( $node->safe_psql(
		'postgres', q{SELECT count(*) FROM docs WHERE (atrest.envelope(doc)).key_version <> 2}),
	0, 'docs are under the new version');

# retire every old version
my $old_versions = $node->safe_psql(
	'postgres', q{
	SELECT c.name || ' ' || d.version FROM atrest.data_keys d JOIN atrest.key_classes c ON c.id = d.class_id
	 WHERE d.version <> c.active_version ORDER BY 1});
is($old_versions, "default 1\nmodel 1\nresult 1\nresult 2", 'old versions to retire');
foreach my $line (split /\n/, $old_versions)
{
	my ($class, $version) = split / /, $line;
	$node->safe_psql('postgres', qq{SELECT atrest.retire_data_key('$class', $version)});
}
is( $node->safe_psql(
		'postgres', q{SELECT count(*) FROM atrest.data_keys WHERE wrapped IS NULL AND retired_at IS NOT NULL}),
	4, 'retired versions keep their row, without a wrapped key');
like(psql_error($node, q{SELECT atrest.retire_data_key('default', 1)}),
	qr/55000: data key version 1 of key class "default" is already retired/,
	'retiring twice is an error');
is($node->safe_psql('postgres', $readable), 200, 'every value reads after retiring');

# a retired version is never used again
is($node->safe_psql('postgres', q{SELECT key_version FROM atrest.rotate_data_key('default')}),
	3, 'the next version of a class skips past retired ones');
like(psql_error($node, q{SELECT raw::atrest.encrypted_jsonb::jsonb FROM stash}),
	qr/AT410: data key version 1 of key class "default" was retired/,
	'a value that names a retired version gets a clear error');

# --- privileges ------------------------------------------------------------------------------
$node->safe_psql('postgres', 'CREATE ROLE mallory LOGIN');
foreach my $call (q{atrest.rekey()}, q{atrest.retire_data_key('default', 2)})
{
	like(psql_error($node, "SET ROLE mallory; SELECT $call"),
		qr/permission denied/, "$call is not executable by PUBLIC");
}

# --- the scrub: no superseded wrapped key left in the files ------------------------------------
my %live = map { $_ => 1 } wrapped_keys();
my @gone = grep { !$live{$_} } keys %old;
ok(@gone >= 8, 'superseded wrapped keys to look for: ' . scalar(@gone));
is(wait_for_scrub($node, \@gone), 0, 'none of them is left in any file of the database');

# --- a copy of the data directory, the service key with it, the CMK revoked ---------------------
$node->stop;
$node->backup_fs_cold('cold');
my $copy = PostgreSQL::Test::Cluster->new('copy');
$copy->init_from_backup($node, 'cold');
restore_key_modes($copy);
ok(-f $copy->data_dir . '/pg_atrest/service.key', 'the copy holds the service key');
run_command([ $kms, 'disable', 'cmk1' ]);
$copy->start;

{
	my $left = 0;
	my @files = database_files($copy);
	$left += files_contain($_, @files) foreach @gone;
	is($left, 0, 'no superseded wrapped key at all in the copy\'s database files');
}
is( $copy->safe_psql(
		'postgres', q{SELECT count(*) FROM atrest.database_keys WHERE wrapped IS NOT NULL AND protector = 'service'}),
	0, 'the copy has no database key under the service key alone');
foreach my $q (q{SELECT count(*) FROM docs WHERE doc IS NOT NULL AND (doc ->> 'n') IS NOT NULL},
	q{SELECT count(*) FROM notes WHERE note::text <> ''})
{
	like(psql_error($copy, $q), qr/AT001: customer-managed key of provider "command" is unavailable/,
		"the copy decrypts nothing: $q");
}
like(psql_error($copy, q{SELECT atrest.disable_cmk()}), qr/AT001/,
	'and cannot fall back to the service key');

# the control: the copy's service key is good; the CMK was all that was missing
run_command([ $kms, 'enable', 'cmk1' ]);
$copy->safe_psql('postgres', 'SELECT atrest.recheck_keys()');
is($copy->safe_psql('postgres', $readable), 200, 'with the CMK back, the copy reads every value');

$copy->stop;
done_testing();
