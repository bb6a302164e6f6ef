
# Errors a reader of an encrypted column can trigger show no superuser-only settings and no
# HSM contents (issue 9, finding 9): when the HSM is gone, its module is missing, the PIN
# file is missing or over-exposed, or the service key file is unreadable, a non-superuser
# reading a column gets AT001 with no path, module name, token or object label or key URI
# in the message, detail, hint or context; the server log has the specifics.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use AtrestTest;

softhsm() or die 'this test needs the SoftHSM2 token of test/fixtures/softhsm-setup';
my $node = atrest_node('hidden', cron => 0, pkcs11 => 1, start => 0);
my $dir = $node->basedir;
PostgreSQL::Test::Utils::append_to_file("$dir/service.key", ('4d' x 32) . "\n");
chmod 0600, "$dir/service.key";
$node->append_conf('postgresql.conf', "atrest.service_key_file = '$dir/service.key'\n");
$node->start;

my $uri = 'pkcs11:token=atrest;object=cmk';
$node->safe_psql('postgres', qq{CREATE EXTENSION pg_atrest;
	CREATE TABLE t (v atrest.encrypted_text); INSERT INTO t VALUES ('visible');
	CREATE ROLE reader LOGIN;
	GRANT SELECT ON t TO reader;
	SELECT atrest.enable_cmk('pkcs11', '$uri');});
is($node->safe_psql('postgres', 'SELECT v FROM t', connstr => $node->connstr('postgres') . ' user=reader'),
	'visible', 'the reader reads the column while the key is there');

my ($module) = pkcs11_conf() =~ /atrest\.pkcs11_module\s*=\s*'([^']+)'/;
my ($pinfile) = pkcs11_conf() =~ /atrest\.pkcs11_pin_file\s*=\s*'([^']+)'/;
my $base_conf = PostgreSQL::Test::Utils::slurp_file($node->data_dir . '/postgresql.conf');

# What the reader must never see: our directories (every file of this test lives under
# the node's base directory or the token's), the module, the labels, the key URI.
my $hsmdir = $ENV{SOFTHSM2_CONF} =~ s{/[^/]*$}{}r;
my @secrets = (qr/\Q$dir\E/, qr/\Q$hsmdir\E/, qr/\Q$module\E/, qr/softhsm/i, qr/\.so\b/,
	qr/token=/, qr/object=/, qr/"atrest"/, qr/\bcmk\b/, qr/PIN file/i, qr/C_\w+/, qr/CKR_/);

# Read as the reader in a new session with every error field shown; returns what psql
# printed on stderr and what the server log gained meanwhile.
sub read_as_reader
{
	my ($out, $err) = ('', '');
	my $offset = -s $node->logfile;
	$node->psql('postgres', "\\set VERBOSITY verbose\n\\set SHOW_CONTEXT always\nSELECT v FROM t",
		stdout => \$out, stderr => \$err,
		connstr => $node->connstr('postgres') . ' user=reader');
	return ($err, log_since($node, $offset));
}

sub check_case
{
	my ($name, $logged) = @_;
	my ($err, $log) = read_as_reader();
	like($err, qr/ERROR:\s+AT001: /, "$name: AT001");
	foreach my $secret (@secrets)
	{
		unlike($err, $secret, "$name: the client sees nothing matching $secret");
	}
	like($log, $logged, "$name: the server log has the specifics");
}

# The HSM gone: the token directory is empty (SoftHSM2 pointed elsewhere at start).
{
	my $empty = "$dir/empty-hsm";
	mkdir $empty;
	mkdir "$empty/tokens";
	PostgreSQL::Test::Utils::append_to_file("$empty/softhsm2.conf",
		"directories.tokendir = $empty/tokens\nobjectstore.backend = file\nlog.level = ERROR\n");
	local $ENV{SOFTHSM2_CONF} = "$empty/softhsm2.conf";
	$node->restart;
	check_case('HSM gone', qr/no token labelled "atrest"/);
}
$node->restart;

my $generation = 0;
sub set_conf
{
	my ($conf) = @_;
	$generation++;
	open my $fh, '>', $node->data_dir . '/postgresql.conf' or die $!;
	print $fh $base_conf . "\nregress.generation = '$generation'\n" . $conf;
	close $fh;
	$node->reload;
	$node->poll_query_until('postgres',
		"SELECT current_setting('regress.generation', true) = '$generation'")
	  or die "the reload of postgresql.conf was not seen";
}

set_conf("atrest.pkcs11_module = '$dir/gone/libsofthsm2.so'\n");
check_case('PKCS#11 module missing', qr/\Q$dir\E\/gone\/libsofthsm2\.so/);

set_conf("atrest.pkcs11_pin_file = '$dir/nosuch.pin'\n");
check_case('PIN file missing', qr/PIN file "\Q$dir\E\/nosuch\.pin"/);

PostgreSQL::Test::Utils::append_to_file("$dir/open.pin", PostgreSQL::Test::Utils::slurp_file($pinfile));
chmod 0644, "$dir/open.pin";
set_conf("atrest.pkcs11_pin_file = '$dir/open.pin'\n");
check_case('PIN file readable by others', qr/PIN file "\Q$dir\E\/open\.pin"/);

set_conf('');
chmod 0000, "$dir/service.key";
check_case('service key file unreadable', qr/service key file "\Q$dir\E\/service\.key"/i);
chmod 0600, "$dir/service.key";

is($node->safe_psql('postgres', 'SELECT v FROM t', connstr => $node->connstr('postgres') . ' user=reader'),
	'visible', 'everything restored: the reader reads again');
$node->stop;
done_testing();
