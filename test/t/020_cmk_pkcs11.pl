
# Customer-managed keys through the pkcs11 provider, against a real SoftHSM2 token:
# enable, disable, enable again and switch keys by re-wrapping only; clear errors that
# change nothing; revocation by deleting or disabling the HSM object while sessions are
# open, and service coming back when the key does; rotation by a new object version.

use strict;
use warnings;

use File::Basename qw(dirname);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);

use AtrestTest;

AtrestTest::softhsm(fresh => 1)
  or plan skip_all => 'no SoftHSM2 fixture (test/fixtures/softhsm-setup)';

my $hsm = dirname($ENV{SOFTHSM2_CONF});
my @tool = (
	"$hsm/bin/pkcs11_tool", '--module', '/usr/lib/softhsm/libsofthsm2.so',
	'--token', 'atrest', '--pin-file', "$hsm/pin");
my $aes = 'pkcs11:token=atrest;object=cmk';
my $rsa = 'pkcs11:token=atrest;object=cmk-rsa';
my $ttl = 3;

sub hsm
{
	my @args = @_;
	my ($out, $err) = run_command([ @tool, @args ]);
	return $out;
}

my $node = AtrestTest::atrest_node('cmk', cron => 0,
	conf => "atrest.key_cache_ttl = $ttl\n");

$node->safe_psql(
	'postgres', q{
	CREATE TABLE docs (id int PRIMARY KEY, doc atrest.encrypted_jsonb(result),
	                   art atrest.encrypted_bytea(model), note atrest.encrypted_text);
	CREATE TABLE shadow (id int PRIMARY KEY, doc jsonb, art bytea, note text);
	INSERT INTO shadow SELECT i, jsonb_build_object('page', i, 'words', repeat('w', i * 20)),
	       sha256(i::text::bytea), 'note ' || i FROM generate_series(1, 300) i;
	INSERT INTO docs SELECT * FROM shadow;});

my $table_state = q{
	SELECT pg_relation_filenode('docs') || ':' || md5(string_agg(xmin::text, ',' ORDER BY id))
	  FROM docs};
my $before_table = $node->safe_psql('postgres', $table_state);

# How many rows read back exactly as written.
sub readable
{
	my ($session) = @_;
	my $sql = q{SELECT count(*) FROM docs d JOIN shadow s USING (id)
	             WHERE d.doc = s.doc AND d.art = s.art AND d.note = s.note};
	return $session ? $session->query($sql) : $node->safe_psql('postgres', $sql);
}

# Run SQL expecting failure; returns the verbose error text.
sub fails
{
	return AtrestTest::psql_error($node, @_);
}

my $root_row = q{SELECT md5(string_agg(id || protector || coalesce(key_uri, '')
                                       || coalesce(key_version, '') || encode(wrapped, 'hex'), ','))
                   FROM atrest.database_keys WHERE active};
my $status = q{SELECT protector || ' ' || coalesce(provider, '-') || ' '
                      || coalesce(key_uri, '-') || ' ' || coalesce(key_version, '-')
                 FROM atrest.key_status};

is(readable(), 300, 'all rows readable under the service key');
is($node->safe_psql('postgres', "SELECT atrest.provider_selftest('pkcs11', '$aes')"),
	'01', 'the provider proves the AES key works (version is its CKA_ID)');

# A second session with its key cache loaded before the change.
my $other = $node->background_psql('postgres', on_error_stop => 0);
$other->query_safe("SET atrest.key_cache_ttl = 300");
is(readable($other), 300, 'second session reads (its key cache is loaded)');
my $other_unwrap = $other->query_safe(
	'SELECT session_last_unwrap FROM atrest.key_status');

# --- errors before any change: nothing changes -------------------------------------
my $root0 = $node->safe_psql('postgres', $root_row);
like(fails("SELECT atrest.enable_cmk('pkcs11', 'pkcs11:token=atrest;object=nosuch')"),
	qr/AT001.*customer-managed key of provider "pkcs11" is unavailable/s,
	'a key the HSM does not hold: AT001 naming the provider');
ok($node->log_contains('Key "pkcs11:token=atrest;object=nosuch": the provider reported: no '),
	'the server log names the key and gives the provider\'s reason');
like(fails("SELECT atrest.enable_cmk('pkcs11', 'garbage')"),
	qr/22023/, 'a malformed key URI: 22023');
like(fails("SELECT atrest.enable_cmk('nosuch', 'x')"),
	qr/22023.*unknown key provider "nosuch"/s, 'an unknown provider: 22023');

PostgreSQL::Test::Utils::append_to_file("$hsm/wrong-pin", "9999\n");
chmod 0600, "$hsm/wrong-pin";
$node->safe_psql('postgres',
	"ALTER SYSTEM SET atrest.pkcs11_pin_file = '$hsm/wrong-pin'; SELECT pg_reload_conf()");
like(AtrestTest::psql_error_with_log($node, "SELECT atrest.enable_cmk('pkcs11', '$aes')"),
	qr/AT001.*CKR_PIN_INCORRECT/s, 'a wrong PIN: AT001, the HSM reason in the server log');
$node->safe_psql('postgres',
	"ALTER SYSTEM SET atrest.pkcs11_module = '/nonexistent/libnope.so'; SELECT pg_reload_conf()");
like(AtrestTest::psql_error_with_log($node, "SELECT atrest.enable_cmk('pkcs11', '$aes')"),
	qr/AT001.*nonexistent/s, 'a missing module: AT001, the module named in the server log');
$node->safe_psql('postgres',
	"ALTER SYSTEM RESET atrest.pkcs11_module; ALTER SYSTEM RESET atrest.pkcs11_pin_file; SELECT pg_reload_conf()");
is($node->safe_psql('postgres', $root_row), $root0, 'failed calls changed nothing');
is($node->safe_psql('postgres', 'SELECT protector FROM atrest.key_status'),
	'service', 'still under the service key');

# --- enable: the database key row is what changes ---------------------------------
my $t0 = time;
$node->safe_psql('postgres', "SELECT atrest.enable_cmk('pkcs11', '$aes')");
note sprintf('enable_cmk took %.1f ms for 300 rows', (time - $t0) * 1000);
is($node->safe_psql('postgres', $status), "customer pkcs11 $aes 01",
	'key_status shows the customer key and its version');
isnt($node->safe_psql('postgres', $root_row), $root0, 'the database key row changed');
is( $node->safe_psql('postgres',
		q{SELECT count(*) FROM atrest.database_keys}),
	'1', 'the same database key, re-wrapped (no new key)');
is($node->safe_psql('postgres', $table_state), $before_table,
	'no table rewritten: same relfilenode, same row xmins');
is(readable(), 300, 'all rows readable under the CMK');

# The other session drops its cache at once and unwraps through the HSM.
is(readable($other), 300, 'second session reads after enable_cmk');
isnt($other->query_safe('SELECT session_last_unwrap FROM atrest.key_status'),
	$other_unwrap, 'second session unwrapped again at once (invalidation), not after its TTL');

# --- disable, enable again, switch to an RSA key -----------------------------------
$node->safe_psql('postgres', 'SELECT atrest.disable_cmk()');
is($node->safe_psql('postgres', $status), 'service - - -', 'disable_cmk: back to the service key');
is(readable(), 300, 'all rows readable after disable_cmk');
$node->safe_psql('postgres', "SELECT atrest.enable_cmk('pkcs11', '$aes')");
is(readable(), 300, 'all rows readable after enabling again');
$node->safe_psql('postgres', "SELECT atrest.enable_cmk('pkcs11', '$rsa')");
is($node->safe_psql('postgres', $status), "customer pkcs11 $rsa 01",
	'switched to the RSA key (RSA-OAEP)');
is(readable(), 300, 'all rows readable under the RSA key');
is(readable($other), 300, 'second session reads under the RSA key');
$node->safe_psql('postgres', "SELECT atrest.enable_cmk('pkcs11', '$aes')");
is($node->safe_psql('postgres', $table_state), $before_table,
	'after every step: no table rewritten');

# --- revocation by deleting the object -----------------------------------------------
my $reader = $node->background_psql('postgres', on_error_stop => 0);
$reader->query_safe('\set VERBOSITY verbose');
is(readable($reader), 300, 'reader session reads (cache loaded)');
hsm('delete', 'cmk', '01');
# The reader loaded its keys before the deletion, so once the TTL has passed since the
# deletion its cache has expired and its next read must fail.  One read after the TTL (not a
# poll against a wall-clock bound): however slow the machine, the check means the same.
my $start = time;
sleep($start + $ttl + 0.2 - time) while time < $start + $ttl + 0.2;
$reader->{stderr} = '';
my $out = $reader->query('SELECT count(*) FROM docs WHERE doc IS NOT NULL AND length(doc::text) > 0');
ok($reader->{stderr} =~ /AT001/,
	"the first read once the TTL ($ttl s) has passed since the HSM object was deleted fails with AT001");
like($reader->{stderr}, qr/customer-managed key of provider "pkcs11" is unavailable/,
	'the error names the provider');
like($reader->{stderr}, qr/DETAIL:  The key and the provider's reason are in the server log\./,
	'the detail points to the server log');
ok($node->log_contains(qr/Key "\Q$aes\E": the provider reported: /),
	'the server log names the key and gives the provider\'s reason');
$reader->{stderr} = '';
$reader->query(q{INSERT INTO docs VALUES (1000, '{}', '\x00', 'x')});
like($reader->{stderr}, qr/AT001/, 'writes fail too');
$reader->{stderr} = '';
is($reader->query('SELECT count(*) FROM shadow'), '300', 'plain tables keep working');
is($reader->{stderr}, '', 'without error');
like(fails('SELECT count(*) FROM docs WHERE note IS NOT NULL AND length(note) > 0'),
	qr/AT001/, 'a new session fails the same way');

# Access comes back: same key material re-imported.
hsm('import-aes', 'cmk', '01', "$hsm/keys/cmk-01.key");
$start = time;
my $ok = 0;
while (time - $start < $ttl + 10)
{
	$reader->{stderr} = '';
	$out = readable($reader);
	if ($reader->{stderr} eq '' && $out eq '300') { $ok = 1; last; }
	sleep(0.5);
}
ok($ok, 'service resumes in the same session after re-import, without restart');
is(readable(), 300, 'all rows intact');

# --- revocation seen at once after recheck_keys() --------------------------------
$reader->query_safe('SET atrest.key_cache_ttl = 300');
is(readable($reader), 300, 'reader with a long TTL reads');
hsm('disable', 'cmk', '01');
is(readable($reader), 300, 'within its TTL the reader still uses its cached key');
$node->safe_psql('postgres', 'SELECT atrest.recheck_keys()');
$reader->{stderr} = '';
$reader->query('SELECT count(*) FROM docs WHERE length(doc::text) > 0');
like($reader->{stderr}, qr/AT001/, 'after recheck_keys() the next read fails at once (use disabled)');
like(fails('SELECT atrest.disable_cmk()'), qr/AT001/,
	'disable_cmk needs the CMK: fails while it is unusable');
is($node->safe_psql('postgres', 'SELECT protector FROM atrest.key_status'),
	'customer', 'and changes nothing');
hsm('enable', 'cmk', '01');
$node->safe_psql('postgres', 'SELECT atrest.recheck_keys()');
$reader->{stderr} = '';
is(readable($reader), 300, 'after the key is enabled and recheck_keys(), the reader reads');
is($reader->{stderr}, '', 'without error');

# --- rotation: a new object version, rewrap(), then the old object goes ---------------
is($node->safe_psql('postgres', 'SELECT atrest.rewrap()'), 'f',
	'rewrap() does nothing while the version is current');
hsm('gen-aes', 'cmk', '02');
is($node->safe_psql('postgres', 'SELECT atrest.rewrap()'), 't',
	'rewrap() re-wraps under the new version');
is($node->safe_psql('postgres', 'SELECT key_version FROM atrest.key_status'),
	'02', 'key_status shows version 02');
hsm('delete', 'cmk', '01');
$node->safe_psql('postgres', 'SELECT atrest.recheck_keys()');
is(readable(), 300, 'data readable after the old object is deleted');
is(readable($reader), 300, 'also in the open session');

# --- disable for good ---------------------------------------------------------------------
$node->safe_psql('postgres', 'SELECT atrest.disable_cmk()');
is(readable(), 300, 'all rows readable after the final disable_cmk');
is($node->safe_psql('postgres', $table_state), $before_table,
	'the table was never rewritten');

is( $node->safe_psql(
		'postgres', q{
	SELECT string_agg(operation || ':' || coalesce(provider_key_version, '-'), ' ' ORDER BY id)
	  FROM atrest.key_events
	 WHERE operation IN ('enable_cmk', 'disable_cmk', 'rewrap')}),
	'enable_cmk:01 disable_cmk:- enable_cmk:01 enable_cmk:01 enable_cmk:01 rewrap:02 disable_cmk:-',
	'key_events records every change with the key version');
is( $node->safe_psql(
		'postgres', q{SELECT count(*) FROM atrest.key_events WHERE role_name IS NULL OR event_time IS NULL}),
	'0', 'every event has a role and a time');

$other->quit;
$reader->quit;
$node->stop;
done_testing();
