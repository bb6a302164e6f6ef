
# A generated service key that goes missing once data depends on it is not silently
# replaced (issue 9, finding 11): after $PGDATA/pg_atrest/service.key is removed (a
# restore or a standby that lost it) and the server restarted, reading an encrypted
# column fails with AT001 saying the file is missing and naming what to restore, and no
# new key file appears; once the file is put back, the data reads again.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use AtrestTest;

my $node = atrest_node('lostkey', cron => 0, pkcs11 => 0);
my $keyfile = $node->data_dir . '/pg_atrest/service.key';
$node->safe_psql('postgres', q{CREATE TABLE t (v atrest.encrypted_text);
	INSERT INTO t VALUES ('under the generated key');});
ok(-f $keyfile, 'a service key was generated');
my $key = PostgreSQL::Test::Utils::slurp_file($keyfile);

$node->stop;
unlink $keyfile or die "could not remove $keyfile: $!";
$node->start;

my $err = psql_error($node, 'SELECT v FROM t');
like($err, qr/ERROR:\s+AT001: service key file "pg_atrest\/service\.key" is missing/,
	'reading fails with AT001: the service key file is missing');
like($err, qr/DETAIL:\s+This database's keys are wrapped under the service key/,
	'the detail says why no new key is made');
like($err, qr/HINT:\s+Restore "pg_atrest\/service\.key"/,
	'the hint says what to restore, relative to the data directory');
unlike($err, qr/\Q${\ $node->data_dir }\E/, 'the error shows no absolute path');
ok(!-e $keyfile, 'no new service key file was generated');
my @tmp = glob($node->data_dir . '/pg_atrest/*.tmp');
is(scalar @tmp, 0, 'nor a temporary one left behind');

# Key functions refuse the same way instead of wrapping under a new key.
like(psql_error($node, q{SELECT atrest.rotate_database_key()}), qr/AT001: service key file .* is missing/,
	'rotate_database_key refuses too');
like(psql_error($node, q{SELECT atrest._bootstrap()}), qr/AT001: service key file .* is missing/,
	'so does the first-key function when the database already has keys');
ok(!-e $keyfile, 'still no new service key file');

# Put it back: everything reads again, without a restart.
PostgreSQL::Test::Utils::append_to_file($keyfile, $key);
chmod 0600, $keyfile;
is($node->safe_psql('postgres', 'SELECT v FROM t'), 'under the generated key',
	'with the file restored, the data reads');
is(PostgreSQL::Test::Utils::slurp_file($keyfile), $key, 'and the restored key is the one in use');

$node->stop;
done_testing();
