
# Customer-managed keys in a KMIP server: the kmip provider against a real PyKMIP server
# (AtrestTest::kmip_server: TLS 1.2, client certificates made here, its own sqlite
# database), keys created with PyKMIP's client library (test/kms/pykmip-admin).
# provider_selftest by name and by id; enable by name; read; the wrong client certificate
# (another CA: TLS refused; same CA, another CN: the key is not visible) fails with AT001
# and changes nothing; a server that is down or silent, or answers with something
# oversized or malformed (test/kms/kmip-fake-server), fails with AT001 within
# atrest.kmip_timeout, and service resumes, nothing lost, once it is back; rotation by a
# new key with the same name plus rewrap(); the old key revoked afterwards does not
# matter; disable; the current key revoked makes reads fail with AT001 within
# atrest.key_cache_ttl (a second database, whose data that ends).  Client-visible errors
# name neither the server nor a file; the server log has the reason.

use strict;
use warnings;

use IO::Socket::INET;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);

use AtrestTest;

my $dir = PostgreSQL::Test::Utils::tempdir('kmip');
my $kmip = AtrestTest::kmip_server($dir);
plan skip_all => 'PyKMIP is not installed (apt-get install python3-pykmip)' unless $kmip;

my $ttl = 3;
my $uid1 = $kmip->{admin}->('create', 'atrest-cmk');
ok($uid1 ne '', "PyKMIP created key atrest-cmk ($uid1)");

my $node = AtrestTest::atrest_node(
	'kmip',
	cron => 0,
	pkcs11 => 0,
	conf => "atrest.key_cache_ttl = $ttl\n" . $kmip->{conf});

$node->safe_psql(
	'postgres', q{
	CREATE TABLE docs (id int PRIMARY KEY, doc atrest.encrypted_jsonb(result));
	INSERT INTO docs SELECT i, jsonb_build_object('n', i) FROM generate_series(1, 200) i;});

my $readable = q{SELECT count(*) FROM docs WHERE (doc ->> 'n')::int = id};
my $status = q{SELECT protector || ' ' || coalesce(key_uri, '-') || ' ' || coalesce(key_version, '-')
                 FROM atrest.key_status};
my $root_row = q{SELECT md5(string_agg(protector || coalesce(key_version, '') || encode(wrapped, 'hex'), ','))
                   FROM atrest.database_keys WHERE active};

sub set_conf
{
	my ($name, $value) = @_;
	$node->safe_psql('postgres',
		"ALTER SYSTEM SET atrest.$name = '$value'; SELECT pg_reload_conf()");
	sleep 0.3;
}

sub reset_conf
{
	my ($name) = @_;
	$node->safe_psql('postgres', "ALTER SYSTEM RESET atrest.$name; SELECT pg_reload_conf()");
	sleep 0.3;
}

my $log_pos = -s $node->logfile;

# Run $sql, which must fail with AT001 and a message that names neither the server's
# address nor a file (the client sees the key URI it passed, no more); the reason, matched
# by $reason_re, must be in the server log (the kmip provider's LOG line), with the details
# in its DETAIL line.  Returns the client's error text.
sub fails_with
{
	my ($sql, $reason_re, $what, $db) = @_;
	my $err = AtrestTest::psql_error($node, $sql, $db);
	like($err, qr/AT001.*customer-managed key of provider "kmip" is unavailable/s,
		"$what: AT001");
	unlike($err, qr/127\.0\.0\.1|\Q$dir\E|$kmip->{port}/,
		"$what: the error names no host, port or file");
	my $log = slurp_file($node->logfile, $log_pos);
	like($log, qr/kmip provider: \w[\w ]* failed for key "kmip:[^"]*": [^\n]*$reason_re/,
		"$what: the server log says why");
	$log_pos = -s $node->logfile;
	return $err;
}

# --- selftest, enable, read ------------------------------------------------------------
is($node->safe_psql('postgres', "SELECT atrest.provider_selftest('kmip', 'kmip:name=atrest-cmk')"),
	$uid1, 'provider_selftest by name reports the key\'s Unique Identifier');
is($node->safe_psql('postgres', "SELECT atrest.provider_selftest('kmip', 'kmip:id=$uid1')"),
	$uid1, 'provider_selftest by id');
like(AtrestTest::psql_error($node, "SELECT atrest.provider_selftest('kmip', 'kmip:label=x')"),
	qr/22023.*invalid key URI for the kmip provider/s, 'a malformed key URI is refused');

$node->safe_psql('postgres', "SELECT atrest.enable_cmk('kmip', 'kmip:name=atrest-cmk')");
is($node->safe_psql('postgres', $status), "customer kmip:name=atrest-cmk $uid1",
	'enabled by name; the key version is the Unique Identifier');
$node->safe_psql('postgres', 'SELECT atrest.recheck_keys()');
is($node->safe_psql('postgres', $readable), 200, 'all rows readable through the KMIP server');
is($node->safe_psql('postgres', 'SELECT atrest.rewrap()'), 'f', 'rewrap() does nothing at first');

# One Decrypt per TTL, not one per value: after recheck_keys() has emptied the key caches
# (the shared one too), a session reading the 200 values three times asks the server once
# (PyKMIP logs each operation it processes).
sub server_decrypts
{
	my $log = slurp_file("$dir/pykmip.log");
	return scalar(() = $log =~ /Processing operation: Decrypt/g);
}
$node->safe_psql('postgres', 'SELECT atrest.recheck_keys()');
my $decrypts = server_decrypts();
is($node->safe_psql('postgres', "$readable; $readable; $readable"), "200\n200\n200",
	'a session reads every value three times');
is(server_decrypts() - $decrypts, 1, 'with one Decrypt on the KMIP server');
my $root0 = $node->safe_psql('postgres', $root_row);

# --- the wrong client certificate ---------------------------------------------------------
set_conf('kmip_client_cert', $kmip->{stranger_cert});
set_conf('kmip_client_key', $kmip->{stranger_key});
fails_with("SELECT atrest.provider_selftest('kmip', 'kmip:name=atrest-cmk')",
	qr/the TLS handshake with the KMIP server failed/, 'a client certificate from another CA');
$node->safe_psql('postgres', 'SELECT atrest.recheck_keys()');
fails_with($readable, qr/the TLS handshake/, 'reading with a certificate from another CA');

set_conf('kmip_client_cert', $kmip->{intruder_cert});
set_conf('kmip_client_key', $kmip->{intruder_key});
fails_with("SELECT atrest.provider_selftest('kmip', 'kmip:name=atrest-cmk')",
	qr/no Active key with this name/, 'another client of the same CA: the key is not visible');
fails_with("SELECT atrest.provider_selftest('kmip', 'kmip:id=$uid1')",
	qr/does not know the key|may not use it/, 'another client of the same CA, by id');
# enable_cmk first unwraps the current database key: the other client may not Decrypt.
fails_with("SELECT atrest.enable_cmk('kmip', 'kmip:name=atrest-cmk')",
	qr/may not use it/, 'enable_cmk as another client');
reset_conf('kmip_client_cert');
reset_conf('kmip_client_key');
$node->safe_psql('postgres', 'SELECT atrest.recheck_keys()');
is($node->safe_psql('postgres', $readable), 200, 'readable again with the right certificate');
fails_with("SELECT atrest.provider_selftest('kmip', 'kmip:name=no-such-key')",
	qr/no Active key with this name/, 'a name the server does not know');
fails_with("SELECT atrest.provider_selftest('kmip', 'kmip:id=999999')",
	qr/does not know the key/, 'an id the server does not know');
is($node->safe_psql('postgres', $root_row), $root0, 'none of the failures changed the key state');

# --- the server down, then silent ----------------------------------------------------------
$kmip->{stop}->();
$node->safe_psql('postgres', 'SELECT atrest.recheck_keys()');
fails_with($readable, qr/refused the connection or cannot be reached/, 'server down');

# A listener that never answers: the connection opens, the TLS handshake never finishes.
my $silent = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $kmip->{port},
	Listen => 5, ReuseAddr => 1, Proto => 'tcp')
  or die "cannot listen on $kmip->{port}: $!";
set_conf('kmip_timeout', '2');
my $t0 = time;
fails_with($readable, qr/did not finish within atrest\.kmip_timeout/, 'silent server');
my $elapsed = time - $t0;
cmp_ok($elapsed, '>=', 1.9, 'the silent server was waited for, up to the timeout');
# 2 s timeout; 30 s is generous on a loaded machine and still proves there is no hang
cmp_ok($elapsed, '<', 30, 'and not longer: no hang');

# A query waiting on a silent server is cancellable: with a 60 s timeout, a cancel ends it
# at once, and the next query of that session works.
set_conf('kmip_timeout', '60');
$node->safe_psql('postgres', 'SELECT atrest.recheck_keys()');
my $waiter = $node->background_psql('postgres', on_error_stop => 0);
$waiter->query_until(qr/started/, "\\echo started\n$readable;\n");
$node->poll_query_until('postgres',
	q{SELECT count(*) > 0 FROM pg_stat_activity WHERE query LIKE 'SELECT count(*) FROM docs%' AND wait_event_type = 'Extension'})
  or die 'the waiting query did not show up';
$t0 = time;
$node->safe_psql('postgres',
	q{SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE 'SELECT count(*) FROM docs%' AND wait_event_type = 'Extension'});
$waiter->{stderr} = '';
$waiter->query('SELECT 1');
like($waiter->{stderr}, qr/canceling statement due to user request/, 'a cancel ends the wait on a silent server');
cmp_ok(time - $t0, '<', 30, 'long before the 60 s timeout');
$waiter->{stderr} = '';
is($waiter->query('SELECT 42'), '42', 'the session goes on');
$waiter->quit;
set_conf('kmip_timeout', '2');
close $silent;

# A TLS server that answers wrongly: a 2 GiB answer announced, an answer that is not TTLV,
# no answer after the handshake.
foreach my $case ([ 'oversized', qr/larger than pg_atrest accepts/ ],
	[ 'malformed', qr/answer is malformed/ ],
	[ 'silent', qr/did not answer within atrest\.kmip_timeout/ ])
{
	my ($mode, $reason) = @$case;
	my ($out, $errout) = ('', '');
	my $fake = IPC::Run::start(
		[ '/usr/bin/python3', AtrestTest::srcdir() . '/test/kms/kmip-fake-server',
			$kmip->{port}, $kmip->{server_cert}, $kmip->{server_key}, $kmip->{ca}, $mode ],
		'>', \$out, '2>', \$errout, IPC::Run::timeout(120));
	$fake->pump until $out =~ /ready/;
	$t0 = time;
	fails_with($readable, $reason, "a server answering $mode");
	cmp_ok(time - $t0, '<', 30, "a server answering $mode: no hang");
	$fake->kill_kill;
}
reset_conf('kmip_timeout');

$kmip->{start}->();
$node->safe_psql('postgres', 'SELECT atrest.recheck_keys()');
is($node->safe_psql('postgres', $readable), 200, 'the server back: readable again, nothing lost');

# --- rotation: a new key with the same name, then rewrap -------------------------------------
sleep 1.1;    # PyKMIP orders Locate by Initial Date, in whole seconds
my $uid2 = $kmip->{admin}->('create', 'atrest-cmk');
isnt($uid2, $uid1, "a second key named atrest-cmk ($uid2)");
is($node->safe_psql('postgres', 'SELECT atrest.rewrap()'), 't', 'rewrap() moves to the new key');
is($node->safe_psql('postgres', $status), "customer kmip:name=atrest-cmk $uid2",
	'now under the new key');
$kmip->{admin}->('revoke', $uid1);
$node->safe_psql('postgres', 'SELECT atrest.recheck_keys()');
is($node->safe_psql('postgres', $readable), 200, 'readable after the old key is revoked');
is($node->safe_psql('postgres', "SELECT atrest.provider_selftest('kmip', 'kmip:name=atrest-cmk')"),
	$uid2, 'the name now finds the new key');
fails_with("SELECT atrest.provider_selftest('kmip', 'kmip:id=$uid1')",
	qr/not Active/, 'the revoked key no longer encrypts');

# --- disable ---------------------------------------------------------------------------------
$node->safe_psql('postgres', 'SELECT atrest.disable_cmk()');
is($node->safe_psql('postgres', $status), 'service - -', 'disabled');
$kmip->{stop}->();
$node->safe_psql('postgres', 'SELECT atrest.recheck_keys()');
is($node->safe_psql('postgres', $readable), 200, 'readable without the KMIP server once disabled');
$kmip->{start}->();

# --- revocation of the current key: AT001 within the TTL (a second database) ------------------
my $uid3 = $kmip->{admin}->('create', 'atrest-cmk-db2');
$node->safe_psql('postgres', 'CREATE DATABASE db2');
$node->safe_psql('db2', 'CREATE EXTENSION pg_atrest');
$node->safe_psql(
	'db2', q{
	CREATE TABLE docs (id int PRIMARY KEY, doc atrest.encrypted_jsonb(result));
	INSERT INTO docs SELECT i, jsonb_build_object('n', i) FROM generate_series(1, 20) i;
	SELECT atrest.enable_cmk('kmip', 'kmip:name=atrest-cmk-db2');});
my $reader = $node->background_psql('db2', on_error_stop => 0);
is($reader->query($readable), 20, 'db2: the reader session reads');
$kmip->{admin}->('revoke', $uid3);
# The reader loaded its keys before the revocation: once the TTL has passed since then, its
# next read must fail.  One read after the TTL, not a poll against a wall-clock bound.
my $start = time;
sleep($start + $ttl + 0.2 - time) while time < $start + $ttl + 0.2;
$reader->{stderr} = '';
$reader->query($readable);
like($reader->{stderr},
	qr/customer-managed key of provider "kmip" is unavailable/,
	"db2: the first read once the TTL ($ttl s) has passed since the revocation fails with AT001");
$reader->quit;
$log_pos = -s $node->logfile;
fails_with($readable, qr/not Active/, 'db2: a new session after the revocation', 'db2');
is($node->safe_psql('postgres', $readable), 200, 'the first database is not affected');

$node->stop;
$kmip->{stop}->();
done_testing();
