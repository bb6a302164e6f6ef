
# Customer-managed keys through the azure provider, against a local HTTPS server that
# implements Key Vault's REST contract (test/kms/azure-keyvault-mock: get key, wrapkey and
# unwrapkey with real RSA-OAEP-256 and A256KW, the managed identity and service principal
# token endpoints with expiring tokens).  No Azure account is reachable here: this proves
# the provider keeps the contract as Microsoft's REST reference describes it, not that it
# works against Azure itself.  The server's certificate comes from a CA the test makes;
# atrest.azure_connect_to sends the vault's and the authority's host names to 127.0.0.1,
# so the provider still asks for and verifies https://testvault.vault.azure.net.
#
# Scenarios: key URI checks; selftest with RSA 2048/3072/4096 and a Managed HSM AES key;
# enable, read, a handful of provider calls for many values; key disabled then AT001 with
# KeyDisabled and the request id in the server log, enabled again then reads resume; key
# deleted (404) then recovered; a token revoked early (401) is replaced; expiring tokens are
# renewed; throttled once (429 with Retry-After) then success, throttled throughout then
# AT001 within the timeout; a 500; a new key version then rewrap() moves to it; the server
# down then AT001, a silent server then AT001 within atrest.azure_timeout; a query
# cancelled during a slow answer; a user-assigned managed identity; a service principal
# (secret file permissions, wrong secret); disable_cmk.

use strict;
use warnings;

use HTTP::Tiny;
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);

use AtrestTest;

my $mock = AtrestTest::srcdir() . '/test/kms/azure-keyvault-mock';
plan skip_all => 'python3 with the cryptography module is not installed'
  unless system('python3 -c "import cryptography" 2>/dev/null') == 0;

my $dir = PostgreSQL::Test::Utils::tempdir('azure');
my $ttl = 3;
my $vault = 'testvault.vault.azure.net';
my $hsm = 'testhsm.managedhsm.azure.net';

# --- a CA and a server certificate for the vault, the HSM and the authority ------------
sub openssl
{
	my ($out, $err) = run_command([ 'openssl', @_ ]);
	return $out;
}
openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', "$dir/ca.key",
	'-out', "$dir/ca.crt", '-days', '2', '-subj', '/CN=pg_atrest test CA',
	'-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign');
openssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', "$dir/server.key",
	'-out', "$dir/server.csr", '-subj', "/CN=$vault");
PostgreSQL::Test::Utils::append_to_file("$dir/ext.cnf",
	"subjectAltName=DNS:$vault,DNS:$hsm,DNS:login.microsoftonline.com\n");
openssl('x509', '-req', '-in', "$dir/server.csr", '-CA', "$dir/ca.crt", '-CAkey',
	"$dir/ca.key", '-CAcreateserial', '-out', "$dir/server.crt", '-days', '2',
	'-extfile', "$dir/ext.cnf");
ok(-s "$dir/server.crt", 'test CA and server certificate made with openssl');

# --- the mock Key Vault ----------------------------------------------------------------
my $mock_h = IPC::Run::start(
	[ 'python3', $mock, '--cert', "$dir/server.crt", '--key', "$dir/server.key",
		'--ports-file', "$dir/ports" ],
	'<', \undef, '>>', "$dir/mock.log", '2>>', "$dir/mock.log");
my $waited = 0;
sleep(0.1), $waited += 0.1 while !-s "$dir/ports" && $waited < 60;
my ($tls_port, $http_port) = split ' ', PostgreSQL::Test::Utils::slurp_file("$dir/ports");
ok($tls_port && $http_port, 'mock Key Vault listening');

my $http = HTTP::Tiny->new(timeout => 30);

sub control
{
	my ($op, %q) = @_;
	my $r = $http->get("http://127.0.0.1:$http_port/control/$op?"
		  . $http->www_form_urlencode(\%q));
	die "control $op failed: $r->{status} $r->{content}" unless $r->{success};
	return decode_json($r->{content});
}
sub stats { return control('stats')->{stats}{ $_[0] } // 0 }
sub last_of { return control('stats')->{last}{ $_[0] } }

my $v1 = control('create', key => 'cmk1', size => 2048)->{version};
control('create', key => 'cmk3072', size => 3072);
control('create', key => 'cmk4096', size => 4096);
control('create', host => $hsm, key => 'hsmaes', kty => 'oct-HSM', size => 256);
control('create', host => $hsm, key => 'hsmaes128', kty => 'oct-HSM', size => 128);

my $connect_to = join(',', map { "$_:443:127.0.0.1:$tls_port" } $vault, $hsm,
	'login.microsoftonline.com');
my $node = AtrestTest::atrest_node(
	'azure',
	cron => 0,
	pkcs11 => 0,
	conf => "atrest.key_cache_ttl = $ttl\n"
	  . "atrest.azure_identity_endpoint = 'http://127.0.0.1:$http_port/metadata/identity/oauth2/token'\n"
	  . "atrest.azure_ca_file = '$dir/ca.crt'\n"
	  . "atrest.azure_connect_to = '$connect_to'\n");

my $readable = q{SELECT count(*) FROM docs WHERE (doc ->> 'n')::int = id};

sub fails { return AtrestTest::psql_error($node, @_) }

# Every backend forgets its keys, then a new session reads everything.
sub fresh_read
{
	$node->safe_psql('postgres', 'SELECT atrest.recheck_keys()');
	return $node->safe_psql('postgres', $readable);
}

sub set_conf
{
	my ($name, $value) = @_;
	$node->safe_psql('postgres',
		defined $value
		? "ALTER SYSTEM SET $name = '$value'; SELECT pg_reload_conf()"
		: "ALTER SYSTEM RESET $name; SELECT pg_reload_conf()");
	sleep 0.3;    # let the reload reach every process before the next session
}

my $uri = "https://$vault/keys/cmk1";

# --- settings: superuser-only, reloaded with the configuration ---------------------------
my @named = map { "atrest.azure_$_" }
  qw(identity_endpoint client_id tenant_id client_secret_file authority ca_file connect_to);
is( $node->safe_psql(
		'postgres',
		"SELECT string_agg(DISTINCT context, ',') FROM pg_settings WHERE name IN ("
		  . join(',', map { "'$_'" } @named) . ")"),
	'sighup',
	'the azure settings that name endpoints, identities and files change only with a reload');
$node->safe_psql('postgres', 'CREATE ROLE azure_user');
foreach my $s (@named)
{
	like(fails("SET ROLE azure_user; SHOW $s"), qr/42501/, "$s: hidden from other roles");
}
like(fails("SET ROLE azure_user; SET atrest.azure_timeout = 600"), qr/42501/,
	'atrest.azure_timeout: only a superuser sets it');
like(fails("ALTER SYSTEM SET atrest.azure_authority = 'http://login.example.com'"),
	qr/22023/, 'the authority must be https (the client secret is sent there)');

# --- key URIs --------------------------------------------------------------------------
foreach my $bad ("https://evil.example.com/keys/cmk1", "http://$vault/keys/cmk1",
	"https://$vault/secrets/cmk1", "https://$vault:8443/keys/cmk1",
	"https://$vault/keys/cmk1?x=1", "https://$vault/keys/cm_k1")
{
	like(fails("SELECT atrest.provider_selftest('azure', '$bad')"),
		qr/22023.*invalid key URI for the azure provider/s, "URI refused: $bad");
}

# --- RSA 2048, 3072, 4096 and a Managed HSM AES key --------------------------------------
foreach my $k ("https://$vault/keys/cmk1", "https://$vault/keys/cmk3072",
	"https://$vault/keys/cmk4096", "https://$hsm/keys/hsmaes")
{
	like($node->safe_psql('postgres', "SELECT atrest.provider_selftest('azure', '$k')"),
		qr/^[0-9a-f]{32}$/, "selftest wraps and unwraps with $k");
}
is(last_of('wrapkey')->{alg}, 'A256KW', 'the Managed HSM AES key wraps with A256KW');
like(fails("SELECT atrest.provider_selftest('azure', 'https://$hsm/keys/hsmaes128')"),
	qr/AT001/, 'an AES-128 key cannot do A256KW: AT001');

# --- enable and read -------------------------------------------------------------------------
$node->safe_psql(
	'postgres', q{
	CREATE TABLE docs (id int PRIMARY KEY, doc atrest.encrypted_jsonb(result));
	INSERT INTO docs SELECT i, jsonb_build_object('n', i) FROM generate_series(1, 500) i;});
my $status = q{SELECT protector || ' ' || coalesce(key_uri, '-') || ' ' || coalesce(key_version, '-')
                 FROM atrest.key_status};

$node->safe_psql('postgres', "SELECT atrest.enable_cmk('azure', '$uri')");
is($node->safe_psql('postgres', $status), "customer $uri $v1",
	'enabled: the key\'s current version is recorded');
is(last_of('wrapkey')->{alg}, 'RSA-OAEP-256', 'the RSA key wraps with RSA-OAEP-256');
my $calls0 = stats('vault_request');
is($node->safe_psql('postgres', $readable), 500, 'all 500 rows readable in a new session');
my $calls = stats('vault_request') - $calls0;
cmp_ok($calls, '<=', 2, "reading 500 values cost $calls Key Vault requests (get key + unwrapkey), not one per value");

# --- key disabled, then enabled again ------------------------------------------------------
my $reader = $node->background_psql('postgres', on_error_stop => 0);
is($reader->query($readable), 500, 'reader session reads');
control('disable', key => 'cmk1');
$node->safe_psql('postgres', 'SELECT atrest.recheck_keys()');
my $off = -s $node->logfile;
$reader->{stderr} = '';
$reader->query($readable);
like($reader->{stderr}, qr/customer-managed key .*"azure".* is unavailable/,
	'key disabled in Key Vault: the next read after recheck_keys() fails with AT001');
my $err = last_of('error');
is($err->{inner}, 'KeyDisabled', 'the mock answered 403 KeyDisabled');
my $log = log_since($node, $off);
like($log, qr/HTTP 403, error Forbidden\/KeyDisabled, request id \Q$err->{request_id}\E/,
	'the server log has Key Vault\'s error code and request id');
unlike($reader->{stderr}, qr/\Q$err->{request_id}\E|KeyDisabled|vault\.azure\.net|cmk1/,
	'the client sees neither the request id, the error code nor the key');
control('enable', key => 'cmk1');
$node->safe_psql('postgres', 'SELECT atrest.recheck_keys()');
$reader->{stderr} = '';
is($reader->query($readable), 500, 'key enabled again: reads resume in the same session');
is($reader->{stderr}, '', 'without error');

# --- key deleted (404), then recovered -----------------------------------------------------
control('delete', key => 'cmk1');
$off = -s $node->logfile;
like(fails("SELECT atrest.recheck_keys(); $readable"), qr/AT001/, 'key deleted: AT001');
like(log_since($node, $off), qr/HTTP 404, error KeyNotFound, request id [0-9a-f-]{36}/,
	'the server log says KeyNotFound with the request id');
control('recover', key => 'cmk1');
is(fresh_read(), 500,
	'key recovered: readable');

# --- tokens: revoked early, expiring -------------------------------------------------------
my $tok0 = stats('token_mi');
control('revoke-tokens');
$reader->{stderr} = '';
$node->safe_psql('postgres', 'SELECT atrest.recheck_keys()');
is($reader->query($readable), 500, 'a token the vault rejects with 401 is replaced by a fresh one');
is(stats('token_mi') - $tok0, 1, 'exactly one new token was asked for');
cmp_ok(stats('rejected_token'), '>=', 1, 'the vault did reject the revoked token');

control('set', token_lifetime => 4);
control('revoke-tokens');
$node->safe_psql('postgres', 'SELECT atrest.recheck_keys()');
is($reader->query($readable), 500, 'reads with a 4 s token');
$tok0 = stats('token_mi');
my $rej0 = stats('rejected_token');
sleep 4.5;
$node->safe_psql('postgres', 'SELECT atrest.recheck_keys()');
is($reader->query($readable), 500, 'reads after the token expired');
is(stats('token_mi') - $tok0, 1, 'the expired token was renewed before use');
is(stats('rejected_token') - $rej0, 0, 'no request went out with the expired token');
control('set', token_lifetime => 3600);

# --- throttling and server errors ----------------------------------------------------------
control('set', throttle => 1, throttle_retry_after => 1);
my $thr0 = stats('throttled');
my $t0 = time;
is(fresh_read(), 500,
	'throttled once (429, Retry-After: 1): the request is retried and succeeds');
is(stats('throttled') - $thr0, 1, 'one 429 was served');
cmp_ok(time - $t0, '>=', 1, 'the retry waited for Retry-After');

set_conf('atrest.azure_timeout', 3);
control('set', throttle => 1000, throttle_retry_after => 1);
$off = -s $node->logfile;
$t0 = time;
like(fails("SELECT atrest.recheck_keys(); $readable"), qr/AT001/,
	'throttled throughout: AT001');
cmp_ok(time - $t0, '<', 20, 'within the 3 s timeout (generous bound under load)');
like(log_since($node, $off), qr/still throttled \(HTTP 429/, 'the server log says it was throttled');
control('set', throttle => 0);

control('set', fail => 1, fail_status => 500);
$off = -s $node->logfile;
like(fails("SELECT atrest.recheck_keys(); $readable"), qr/AT001/, 'HTTP 500: AT001');
like(log_since($node, $off), qr/HTTP 500, error InternalServerError, request id [0-9a-f-]{36}/,
	'the server log has the 500 with the request id');
is(fresh_read(), 500,
	'readable once the server answers again');

# --- rotation: a new key version, then rewrap() ---------------------------------------------
is($node->safe_psql('postgres', 'SELECT atrest.rewrap()'), 'f', 'rewrap() does nothing at first');
my $v2 = control('new-version', key => 'cmk1')->{version};
is($node->safe_psql('postgres', 'SELECT atrest.rewrap()'), 't', 'rewrap() after a new key version');
is($node->safe_psql('postgres', $status), "customer $uri $v2", 'now under the new version');
is(fresh_read(), 500,
	'readable under the new version');
is(last_of('unwrapkey')->{version}, $v2, 'unwrapkey used the new version');

# --- the server down, silent, slow ------------------------------------------------------------
set_conf('atrest.azure_connect_to', join(',', map { "$_:443:127.0.0.1:1" } $vault, $hsm));
$off = -s $node->logfile;
$t0 = time;
like(fails("SELECT atrest.recheck_keys(); $readable"), qr/AT001/, 'server down: AT001');
cmp_ok(time - $t0, '<', 20, 'at once, not after a hang');
like(log_since($node, $off), qr/curl error 7/, 'the server log says it could not connect');
set_conf('atrest.azure_connect_to', $connect_to);

control('set', delay => 30, delay_count => 1);
$t0 = time;
like(fails("SELECT atrest.recheck_keys(); $readable"), qr/AT001/,
	'a server that does not answer: AT001');
cmp_ok(time - $t0, '<', 20, 'within the 3 s atrest.azure_timeout, not after the 30 s delay');
sleep 0.5;
set_conf('atrest.azure_timeout', undef);

control('set', delay => 30, delay_count => 1);
$t0 = time;
like(
	fails("SELECT atrest.recheck_keys(); SET atrest.azure_timeout = 60; SET statement_timeout = '1s'; $readable"),
	qr/57014.*canceling statement due to statement timeout/s,
	'a query waiting on a slow Key Vault can be cancelled');
cmp_ok(time - $t0, '<', 20, 'the cancel took effect during the transfer, not after 30 s');
control('set', delay_count => 0);
is(fresh_read(), 500,
	'readable afterwards');

# --- a user-assigned managed identity ---------------------------------------------------------
set_conf('atrest.azure_client_id', 'mi-user-assigned');
is(fresh_read(), 500,
	'readable with a user-assigned managed identity');
is(last_of('token_mi')->{client_id}, 'mi-user-assigned', 'its client id was sent to the identity endpoint');

# --- a service principal -----------------------------------------------------------------------
my $secret = "$dir/client.secret";
PostgreSQL::Test::Utils::append_to_file($secret, "test-secret\n");
chmod 0644, $secret;
set_conf('atrest.azure_tenant_id', 'test-tenant');
set_conf('atrest.azure_client_id', 'sp-app');
set_conf('atrest.azure_client_secret_file', $secret);
$off = -s $node->logfile;
like(fails("SELECT atrest.recheck_keys(); $readable"), qr/AT001/,
	'a client secret file readable by others: AT001');
like(log_since($node, $off), qr/azure_client_secret_file is refused: it has group or world access/,
	'the server log says why');
chmod 0600, $secret;
my $sp0 = stats('token_sp');
is(fresh_read(), 500,
	'readable with a service principal');
is(stats('token_sp') - $sp0, 1, 'the token came from the authority');
is(last_of('token_sp')->{tenant}, 'test-tenant', 'for the configured tenant');
control('set', secret => 'rotated-secret');
control('revoke-tokens');
$off = -s $node->logfile;
like(fails("SELECT atrest.recheck_keys(); $readable"), qr/AT001/, 'a wrong client secret: AT001');
like(log_since($node, $off), qr/HTTP 401, error invalid_client/, 'the server log has the authority\'s error');
control('set', secret => 'test-secret');

# --- disable ------------------------------------------------------------------------------------
$node->safe_psql('postgres', 'SELECT atrest.disable_cmk()');
is($node->safe_psql('postgres', $status), 'service - -', 'disabled');
control('disable', key => 'cmk1');
is(fresh_read(), 500,
	'readable after disable_cmk, without Key Vault');

$reader->quit;
$node->stop;
$mock_h->kill_kill;
done_testing();
