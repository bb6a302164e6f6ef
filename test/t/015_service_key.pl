
# The service key: generated beside the data on first use (race-free when several backends
# need it at once), or taken from atrest.service_key_file or atrest.service_key_command; a
# missing, malformed, over-exposed or wrong key is a clean AT001 error.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use AtrestTest;

my $node = AtrestTest::atrest_node('svc', cron => 0, pkcs11 => 0, create_extension => 0);
my $pgdata = $node->data_dir;

ok(!-e "$pgdata/pg_atrest/service.key", 'no service key before first use');

# Several backends create the extension at once: each needs the service key, and none
# exists yet.  A barrier makes them race: in each database a holder session takes an
# advisory lock, and the racer there asks for it (shared) before CREATE EXTENSION.  Once
# pg_locks shows all racers waiting at the same time, every holder is told to let go in one
# go (AtrestTest::barrier_burst).
my @dbs = map { "db$_" } 1 .. 6;
$node->safe_psql('postgres', "CREATE DATABASE $_") foreach @dbs;
my $barrier = barrier_burst($node, scalar @dbs, q{
	CREATE EXTENSION pg_atrest;
	CREATE TABLE t (v atrest.encrypted_text);
	INSERT INTO t VALUES ('generated-key value');
}, key => 4242, dbs => \@dbs);
is($barrier->{waiting}, scalar @dbs, 'all racers wait on the barrier at the same time (pg_locks)');
ok(!-e "$pgdata/pg_atrest/service.key", 'no service key while they wait');

barrier_release($barrier);
like($_, qr/^done$/m, 'a backend created the extension concurrently') foreach barrier_finish($barrier);

ok(-f "$pgdata/pg_atrest/service.key", 'the service key was generated');
is((stat("$pgdata/pg_atrest/service.key"))[2] & 07777, 0600, 'with mode 0600');
my @leftovers = glob("$pgdata/pg_atrest/*.tmp");
is(scalar @leftovers, 0, 'no temporary files left behind');
like(slurp_file("$pgdata/pg_atrest/service.key"), qr/^[0-9a-f]{64}\n$/, '64 hex digits');
my @generated = slurp_file($node->logfile) =~ /pg_atrest generated a service key/g;
is(scalar @generated, 1, 'the server log says a key was generated, once: one racer won');

$node->restart;
foreach my $db (@dbs)
{
	is($node->safe_psql($db, 'SELECT v FROM t'), 'generated-key value',
		"$db reads its data after a restart: every backend used the same key");
}
like($node->safe_psql('db1', 'SELECT protector_source FROM atrest.key_status'),
	qr/beside the data .*not for production/, 'key_status warns that the key sits beside the data');

# --- atrest.service_key_file ----------------------------------------------------------
my $keydir = PostgreSQL::Test::Utils::tempdir('keys');
my $keyfile = "$keydir/service.key";
PostgreSQL::Test::Utils::append_to_file($keyfile, ('5a' x 32) . "\n");
chmod 0600, $keyfile;
$node->append_conf('postgresql.conf', "atrest.service_key_file = '$keyfile'\n");
$node->restart;
$node->safe_psql('postgres', q{CREATE EXTENSION pg_atrest;
	CREATE TABLE t (v atrest.encrypted_jsonb); INSERT INTO t VALUES ('{"from": "key file"}');});
is($node->safe_psql('postgres', 'SELECT v ->> \'from\' FROM t'), 'key file',
	'a database created under atrest.service_key_file works');
like($node->safe_psql('postgres', 'SELECT protector_source FROM atrest.key_status'),
	qr/atrest.service_key_file/, 'key_status names the file setting');

my ($stdout, $stderr);
$node->psql('db1', "\\set VERBOSITY verbose\nSELECT v FROM t", stderr => \$stderr);
like($stderr, qr/AT001.*database key cannot be unwrapped/s,
	'a database made under another service key: AT001, not garbage');

chmod 0640, $keyfile;
$node->psql('postgres', "\\set VERBOSITY verbose\nSELECT v FROM t", stderr => \$stderr);
like($stderr, qr/AT001.*group or world access/s, 'a group-readable key file is refused');
chmod 0600, $keyfile;

# --- atrest.service_key_command -------------------------------------------------------
$node->append_conf('postgresql.conf', "atrest.service_key_command = 'cat $keyfile'\n");
$node->reload;
is($node->safe_psql('postgres', 'SELECT v ->> \'from\' FROM t'), 'key file',
	'the same key from atrest.service_key_command reads the same data');
like($node->safe_psql('postgres', 'SELECT protector_source FROM atrest.key_status'),
	qr/atrest.service_key_command/, 'key_status names the command setting');

$node->append_conf('postgresql.conf', "atrest.service_key_command = 'exit 7'\n");
$node->reload;
$node->psql('postgres', "\\set VERBOSITY verbose\nSELECT atrest.recheck_keys(); SELECT v FROM t",
	stderr => \$stderr);
like($stderr, qr/AT001.*service key is unavailable.*service_key_command failed/s,
	'a failing command: AT001');

$node->append_conf('postgresql.conf', "atrest.service_key_command = 'echo not-a-key'\n");
$node->reload;
$node->psql('postgres', "\\set VERBOSITY verbose\nSELECT v FROM t", stderr => \$stderr);
like($stderr, qr/AT001.*did not print usable service keys: line 1 does not hold 64 hexadecimal digits/s,
	'a command printing garbage: AT001');
unlike($stderr, qr/not-a-key/, 'the error does not echo what the command printed');

$node->append_conf('postgresql.conf', "atrest.service_key_command = ''\n");
$node->reload;
is($node->safe_psql('postgres', 'SELECT count(*) FROM t'), '1', 'plain queries never needed the key');
is($node->safe_psql('postgres', 'SELECT v ->> \'from\' FROM t'), 'key file', 'service back with the file');

$node->stop;
done_testing();
