
# Logical replication between encrypted columns: a publication on one cluster, subscriptions
# on another whose tables have encrypted columns too.  The walsender decrypts (the values
# travel as plaintext in the replication protocol, like pg_dump output), the apply worker
# seals them under the subscriber's own keys:
#   - the initial copy, then INSERT, UPDATE (also one that leaves a TOASTed value unchanged)
#     and DELETE arrive with the same plaintext, in text (binary = false) and in binary
#     (binary = true) mode, one subscriber database each;
#   - on the subscriber every value is sealed under its own keys: another database key id,
#     the subscriber's data-key versions, and the subscriber's column class (a key class that
#     exists only on the subscriber), as atrest.envelope() shows;
#   - key changes on either side (rotations, a CMK on the publisher) do not disturb it.
# No long mode: this test is deterministic.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use AtrestTest;

# The KMS: keys in a directory of this test, reached through a wrapper that names it, so the
# setting is all the server needs.
my $kms_cmd = AtrestTest::kms_adapter(PostgreSQL::Test::Utils::tempdir('kms') . '/keys', 'cmk1')
  or plan skip_all => 'no test/kms/openssl-kms';

my $pub = AtrestTest::atrest_node(
	'publisher',
	cron => 0,
	pkcs11 => 0,
	init => { allows_streaming => 'logical' },
	conf => "atrest.kms_command = '$kms_cmd'\n");
my $sub = AtrestTest::atrest_node('subscriber', cron => 0, pkcs11 => 0);

my $table = q{
	CREATE TABLE docs (id int PRIMARY KEY,
	                   doc atrest.encrypted_jsonb(result),
	                   blob atrest.encrypted_bytea,
	                   note atrest.encrypted_text(%s));};
$pub->safe_psql('postgres', sprintf($table, 'model'));
$pub->safe_psql(
	'postgres', q{
	CREATE FUNCTION write_rows(a int, b int) RETURNS void LANGUAGE sql AS $$
	    INSERT INTO docs
	    SELECT i, jsonb_build_object('id', i, 'r', md5(random()::text)),
	           CASE WHEN i % 25 = 0
	                THEN convert_to((SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 1500)), 'UTF8')
	                ELSE decode(md5(random()::text), 'hex') END,
	           'note ' || i || ' ' || md5(random()::text)
	      FROM generate_series(a, b) i;
	$$;
	SELECT write_rows(1, 500);
	-- the publisher is a few data-key versions ahead of the subscriber
	SELECT count(*) FROM atrest.rotate_data_key();
	SELECT count(*) FROM atrest.rotate_data_key();
	SELECT write_rows(501, 600);
	CREATE PUBLICATION pub FOR TABLE docs;});

# Two subscriber databases: text mode in "postgres", binary mode in "bin".  Each has the
# extension, so keys of its own, and a key class "replica" that the publisher does not have,
# used by its "note" column.
$sub->safe_psql('postgres', 'CREATE DATABASE bin');
$sub->safe_psql('bin', 'CREATE EXTENSION pg_atrest');
my %binary = (postgres => 'false', bin => 'true');
my $pub_conn = 'port=' . $pub->port . ' host=' . $pub->host . ' dbname=postgres';
for my $db (sort keys %binary)
{
	$sub->safe_psql($db, "SELECT atrest.create_key_class('replica')");
	$sub->safe_psql($db, sprintf($table, 'replica'));
	$sub->safe_psql($db,
		"CREATE SUBSCRIPTION sub_$db CONNECTION '$pub_conn' PUBLICATION pub "
		  . "WITH (binary = $binary{$db})");
	$sub->wait_for_subscription_sync($pub, "sub_$db");
}

# A digest of the plaintext of the whole table.
my $digest_sql = q{
	SELECT count(*) || ' ' || md5(string_agg(id || ':' || md5(doc::jsonb::text) || ':'
	                                         || md5(blob::bytea) || ':' || md5(note::text),
	                                         ',' ORDER BY id))
	  FROM docs};

sub same_plaintext
{
	my ($what) = @_;
	my $want = $pub->safe_psql('postgres', $digest_sql);
	for my $db (sort keys %binary)
	{
		$pub->wait_for_catchup("sub_$db");
		is($sub->safe_psql($db, $digest_sql), $want,
			"$what: the same plaintext arrives (binary = $binary{$db})");
	}
}

same_plaintext('initial copy');

# Sealed under the subscriber's own keys.
my $pub_key = $pub->safe_psql('postgres', 'SELECT database_key_id FROM atrest.key_status');
for my $db (sort keys %binary)
{
	my $sub_key = $sub->safe_psql($db, 'SELECT database_key_id FROM atrest.key_status');
	isnt($sub_key, $pub_key, "$db: the subscriber database has its own database key");
	is( $sub->safe_psql(
			$db, q{
			SELECT string_agg(DISTINCT v, ' ' ORDER BY v) FROM (
			    SELECT 'doc:' || (atrest.envelope(doc)).key_class || ':' || (atrest.envelope(doc)).key_version FROM docs
			    UNION ALL
			    SELECT 'blob:' || (atrest.envelope(blob)).key_class || ':' || (atrest.envelope(blob)).key_version FROM docs
			    UNION ALL
			    SELECT 'note:' || (atrest.envelope(note)).key_class || ':' || (atrest.envelope(note)).key_version FROM docs) s(v)}),
		'blob:default:1 doc:result:1 note:replica:1',
		"$db: every value is sealed under the subscriber's classes and its own data-key versions");
}
is( $pub->safe_psql(
		'postgres', q{
		SELECT string_agg(DISTINCT (atrest.envelope(note)).key_class || ':'
		                  || (atrest.envelope(note)).key_version, ' ')
		  FROM docs WHERE id <= 500}),
	'model:1',
	'(on the publisher the same values are under its class "model", version 1)');

# Changes, with key changes on both sides in between.
$pub->safe_psql('postgres', 'SELECT write_rows(601, 700)');
same_plaintext('inserts');

$pub->safe_psql('postgres', 'SELECT atrest.rotate_database_key()');
$sub->safe_psql('postgres', 'SELECT atrest.rotate_database_key()');
$sub->safe_psql('bin', "SELECT count(*) FROM atrest.rotate_data_key('replica')");
# only "note" changes: the TOASTed blobs travel as "unchanged" and must stay as they were
$pub->safe_psql('postgres',
	"UPDATE docs SET note = note || ' (updated)' WHERE id % 5 = 0");
same_plaintext('after key rotations on both sides, updates');

$pub->safe_psql('postgres', "SELECT atrest.enable_cmk('command', 'kms:openssl/cmk1')");
$pub->safe_psql('postgres',
	"UPDATE docs SET doc = doc::jsonb || '{\"more\": true}', blob = blob || '\\x00ff'::bytea WHERE id % 7 = 0");
$pub->safe_psql('postgres', 'DELETE FROM docs WHERE id % 11 = 0');
$pub->safe_psql('postgres', 'SELECT write_rows(701, 750)');
same_plaintext('with a CMK on the publisher, updates, deletes and inserts');

is( $sub->safe_psql(
		'bin', q{
		SELECT string_agg(DISTINCT (atrest.envelope(note)).key_version::text, ' ')
		  FROM docs WHERE note::text LIKE '%(updated)' OR id > 700}),
	'2',
	"values written after the subscriber's own rotation use its new data-key version");
is($sub->safe_psql('postgres', 'SELECT protector FROM atrest.key_status'),
	'service', 'the CMK of the publisher is not the subscriber\'s business');

for my $db (sort keys %binary)
{
	$sub->safe_psql($db, "DROP SUBSCRIPTION sub_$db");
}
$sub->stop;
$pub->stop;
done_testing();
