
# Copyright: pg_atrest authors; same license as pg_atrest.
#
# A wrong PIN file is not retried (README, provider pkcs11: after a wrong PIN, a backend does
# not try the same PIN file again until the file changes, so a typo cannot lock the token).
#
# The server loads OpenSC's pkcs11-spy.so as its PKCS#11 module, which passes every call on
# to SoftHSM2 (PKCS11SPY) and writes it to a log (PKCS11SPY_OUTPUT): the C_Login lines there
# are the login attempts the token saw.  One backend, with the PIN file holding a wrong PIN,
# reads encrypted values four times (atrest.recheck_keys() before each, so each time it goes
# to the provider): four AT001 errors, one C_Login.  (Before that, another backend reads
# with the right PIN, so the setup is known to work through the spy.)  Once the file holds the right PIN, the
# same backend logs in again (a second C_Login) and reads.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use AtrestTest;

my $spy = (grep { -f } map { "$_/pkcs11-spy.so" }
	  ('/usr/lib/x86_64-linux-gnu', '/usr/lib/x86_64-linux-gnu/pkcs11', '/usr/lib/pkcs11'))[0]
  or BAIL_OUT('OpenSC\'s pkcs11-spy.so is missing (apt-get install opensc-pkcs11)');
softhsm(fresh => 1) or BAIL_OUT('no SoftHSM2 fixture (test/fixtures/softhsm-setup)');
my ($module) = pkcs11_conf() =~ /atrest\.pkcs11_module\s*=\s*'([^']+)'/;
my ($good_pin_file) = pkcs11_conf() =~ /atrest\.pkcs11_pin_file\s*=\s*'([^']+)'/;
my $good_pin = slurp_file($good_pin_file);

my $dir = PostgreSQL::Test::Utils::tempdir('pin');
my $spylog = "$dir/spy.log";
$ENV{PKCS11SPY} = $module;
$ENV{PKCS11SPY_OUTPUT} = $spylog;
my $pin_file = "$dir/pin";
PostgreSQL::Test::Utils::append_to_file($pin_file, $good_pin);
chmod 0600, $pin_file;

my $node = atrest_node(
	'wrong_pin',
	cron => 0,
	conf => "atrest.pkcs11_module = '$spy'\natrest.pkcs11_pin_file = '$pin_file'\n");
$node->safe_psql(
	'postgres', q{
	SELECT atrest.enable_cmk('pkcs11', 'pkcs11:token=atrest;object=cmk');
	CREATE TABLE t (v atrest.encrypted_text);
	INSERT INTO t VALUES ('under the CMK');});

sub logins { return scalar(() = slurp_file($spylog) =~ /^\d+: C_Login\b/mg); }
ok(logins() >= 1, 'the spy module logged the logins so far (' . logins() . ')');
is($node->safe_psql('postgres', 'SELECT protector FROM atrest.key_status'), 'customer',
	'the database key is under the CMK');
is($node->safe_psql('postgres', 'SELECT v FROM t'), 'under the CMK', 'a backend reads with the right PIN');

# A typo in the PIN file: same file, wrong content.  (A backend logs in once and keeps its
# session, so the test session starts after the change: its first provider call logs in.)
open my $fh, '>', $pin_file or die $!;
print $fh "9999\n";
close $fh;
my $s = $node->background_psql('postgres', on_error_stop => 0);
$s->query_safe('\set VERBOSITY verbose');
my $before = logins();
my @errors;
foreach my $try (1 .. 4)
{
	$s->{stderr} = '';
	$s->query('SELECT atrest.recheck_keys()');
	$s->query('SELECT v FROM t');
	push @errors, $s->{stderr};
}
is(scalar(grep { /AT001/ } @errors), 4, 'four reads with the wrong PIN: four AT001 errors');
is(logins() - $before, 1, 'the token saw one login attempt, not four');
like($errors[0], qr/AT001/, 'the first error is AT001');
ok($node->log_contains(qr/CKR_PIN_INCORRECT/),
	'the server log has the token\'s answer (CKR_PIN_INCORRECT)');

# The file is fixed: the same backend tries it, since it changed.
open $fh, '>', $pin_file or die $!;
print $fh $good_pin;
close $fh;
# a different size is a change whatever the clock's resolution; also move the mtime on
utime(time + 2, time + 2, $pin_file);
$before = logins();
$s->{stderr} = '';
$s->query('SELECT atrest.recheck_keys()');
is($s->query('SELECT v FROM t'), 'under the CMK', 'once the file holds the right PIN, the same session reads');
is($s->{stderr}, '', 'without error');
is(logins() - $before, 1, 'after one new login');
$s->quit;

$node->stop;
done_testing();
