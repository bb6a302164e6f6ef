
# Customer-managed keys through the command provider and the example adapter
# test/kms/openssl-kms: enable, switch, disable; a failing, garbage-printing, hanging or
# missing adapter gives a clear error and changes nothing; revocation (key disabled in the
# KMS) and recovery; rotation by a new key version plus rewrap().

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);

use AtrestTest;

my $adapter = AtrestTest::srcdir() . '/test/kms/openssl-kms';
plan skip_all => 'no test/kms/openssl-kms' unless -x $adapter;

my $kms_dir = PostgreSQL::Test::Utils::tempdir('kms');
$ENV{ATREST_KMS_DIR} = $kms_dir;    # the postmaster, so every adapter run, inherits it
my $ttl = 3;

sub kms
{
	my ($out, $err) = run_command([ $adapter, @_ ]);
	return $out;
}
kms('create', 'cmk1');
kms('create', 'cmk2');

my $scripts = PostgreSQL::Test::Utils::tempdir('adapters');
my %bad = (
	failing => "#!/bin/sh\necho 'access denied by policy' >&2\nexit 3\n",
	garbage => "#!/bin/sh\ncat >/dev/null\necho 'this is not json'\n",
	hanging => "#!/bin/sh\nexec sleep 60\n",);
foreach my $name (keys %bad)
{
	PostgreSQL::Test::Utils::append_to_file("$scripts/$name", $bad{$name});
	chmod 0755, "$scripts/$name";
}

my $node = AtrestTest::atrest_node(
	'cmdkms',
	cron => 0,
	pkcs11 => 0,
	conf => "atrest.key_cache_ttl = $ttl\natrest.kms_command = '$adapter'\n");

$node->safe_psql(
	'postgres', q{
	CREATE TABLE docs (id int PRIMARY KEY, doc atrest.encrypted_jsonb(result));
	INSERT INTO docs SELECT i, jsonb_build_object('n', i) FROM generate_series(1, 200) i;});

my $readable = q{SELECT count(*) FROM docs WHERE (doc ->> 'n')::int = id};
my $status = q{SELECT protector || ' ' || coalesce(key_uri, '-') || ' ' || coalesce(key_version, '-')
                 FROM atrest.key_status};
my $root_row = q{SELECT md5(string_agg(protector || coalesce(key_version, '') || encode(wrapped, 'hex'), ','))
                   FROM atrest.database_keys WHERE active};

sub fails
{
	return AtrestTest::psql_error($node, @_);
}

sub set_command
{
	my ($value) = @_;
	$node->safe_psql('postgres',
		"ALTER SYSTEM SET atrest.kms_command = '$value'; SELECT pg_reload_conf()");
}

is($node->safe_psql('postgres', "SELECT atrest.provider_selftest('command', 'kms:openssl/cmk1')"),
	'kms:openssl/cmk1/1', 'the adapter proves the key works');

# --- enable, switch, disable ----------------------------------------------------------
$node->safe_psql('postgres', "SELECT atrest.enable_cmk('command', 'kms:openssl/cmk1')");
is($node->safe_psql('postgres', $status), 'customer kms:openssl/cmk1 kms:openssl/cmk1/1',
	'enabled under cmk1, version 1');
is($node->safe_psql('postgres', $readable), 200, 'all rows readable');
$node->safe_psql('postgres', "SELECT atrest.enable_cmk('command', 'kms:openssl/cmk2')");
is($node->safe_psql('postgres', $status), 'customer kms:openssl/cmk2 kms:openssl/cmk2/1',
	'switched to cmk2');
is($node->safe_psql('postgres', $readable), 200, 'all rows readable under cmk2');
$node->safe_psql('postgres', 'SELECT atrest.disable_cmk()');
is($node->safe_psql('postgres', $status), 'service - -', 'disabled');
$node->safe_psql('postgres', "SELECT atrest.enable_cmk('command', 'kms:openssl/cmk1')");
is($node->safe_psql('postgres', $readable), 200, 'readable after enabling again');

# --- a broken adapter: clear errors, nothing changes ------------------------------------
my $root0 = $node->safe_psql('postgres', $root_row);
set_command("$scripts/failing");
like(AtrestTest::psql_error_with_log($node, "SELECT atrest.enable_cmk('command', 'kms:openssl/cmk2')"),
	qr/AT001.*access denied by policy/s, 'a failing adapter: AT001, its own reason in the server log');
set_command("$scripts/garbage");
like(fails("SELECT atrest.enable_cmk('command', 'kms:openssl/cmk2')"),
	qr/AT001/, 'an adapter printing garbage: AT001');
set_command("$scripts/hanging");
$node->safe_psql('postgres', "ALTER SYSTEM SET atrest.kms_timeout = 1; SELECT pg_reload_conf()");
my $t0 = time;
like(AtrestTest::psql_error_with_log($node, "SELECT atrest.enable_cmk('command', 'kms:openssl/cmk2')"),
	qr/AT001.*timed out/s, 'a hanging adapter: AT001 after the timeout');
# the adapter sleeps 60 s, the timeout is 1 s: 30 s is generous and still proves the cut
cmp_ok(time - $t0, '<', 30, 'no hang: the 1 s timeout cut the 60 s adapter short');
set_command("$scripts/missing");
like(fails("SELECT atrest.enable_cmk('command', 'kms:openssl/cmk2')"),
	qr/AT001/, 'a missing adapter: AT001');
$node->safe_psql('postgres', "ALTER SYSTEM RESET atrest.kms_timeout; SELECT pg_reload_conf()");
set_command($adapter);
like(AtrestTest::psql_error_with_log($node, "SELECT atrest.enable_cmk('command', 'kms:openssl/nosuchkey')"),
	qr/AT001.*kms:openssl\/nosuchkey/s, 'a key the KMS does not hold: AT001, the key named in the server log');
is($node->safe_psql('postgres', $root_row), $root0, 'none of the failures changed the key state');
is($node->safe_psql('postgres', $readable), 200, 'still readable');

# --- revocation and recovery -------------------------------------------------------------
my $reader = $node->background_psql('postgres', on_error_stop => 0);
is($reader->query($readable), 200, 'reader session reads');
kms('disable', 'cmk1');
# The reader loaded its keys before the key was disabled: once the TTL has passed since then,
# its next read must fail.  One read after the TTL, not a poll against a wall-clock bound.
my $start = time;
sleep($start + $ttl + 0.2 - time) while time < $start + $ttl + 0.2;
$reader->{stderr} = '';
$reader->query($readable);
like($reader->{stderr},
	qr/customer-managed key of provider "command" is unavailable/,
	"the first read once the TTL ($ttl s) has passed since the KMS key was disabled fails with the documented error");
kms('enable', 'cmk1');
$node->safe_psql('postgres', 'SELECT atrest.recheck_keys()');
$reader->{stderr} = '';
is($reader->query($readable), 200, 'service resumes in the same session after recheck_keys()');
is($reader->{stderr}, '', 'without error');

# --- rotation -------------------------------------------------------------------------------
is($node->safe_psql('postgres', 'SELECT atrest.rewrap()'), 'f', 'rewrap() does nothing at first');
kms('new-version', 'cmk1');
is($node->safe_psql('postgres', 'SELECT atrest.rewrap()'), 't', 'rewrap() after a new key version');
is($node->safe_psql('postgres', 'SELECT key_version FROM atrest.key_status'),
	'kms:openssl/cmk1/2', 'now under version 2');
kms('delete-version', 'cmk1', '1');
$node->safe_psql('postgres', 'SELECT atrest.recheck_keys()');
is($node->safe_psql('postgres', $readable), 200, 'readable after the old version is deleted');
$node->safe_psql('postgres', 'SELECT atrest.disable_cmk()');
is($node->safe_psql('postgres', $readable), 200, 'readable after disable_cmk');

$reader->quit;
$node->stop;
done_testing();
