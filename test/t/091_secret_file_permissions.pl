
# The service key file and the PKCS#11 PIN file follow PostgreSQL's rule for ssl_key_file
# (issue 9, finding 8): owned by the server's user with mode 0600 or less, or by root with
# 0640 or less; anything else is refused with AT001 before the secret is used.
#
# TAP tests run as the server's user and cannot chown, so the files owned by root and by
# another user (nobody) come from test/sandbox (setup_owned_files, $ATREST_OWNED_FILES),
# which runs as root: root:postgres 0640 (accepted), root:root 0644 (refused),
# nobody:postgres 0640 (refused, although the server can read it).

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use AtrestTest;

my $owned = $ENV{ATREST_OWNED_FILES};
die "ATREST_OWNED_FILES is not set: run this test with test/sandbox, which prepares files owned by root and by another user"
  unless $owned && -d $owned;

my $have_hsm = softhsm();
my $node = atrest_node('secretfiles', cron => 0, pkcs11 => 1, start => 0);
my $dir = $node->basedir;
my $svc_hex = '6b' x 32;		# the key in the sandbox's files
PostgreSQL::Test::Utils::append_to_file("$dir/own-0600.key", "$svc_hex\n");
chmod 0600, "$dir/own-0600.key";
PostgreSQL::Test::Utils::append_to_file("$dir/own-0644.key", "$svc_hex\n");
chmod 0644, "$dir/own-0644.key";
$node->append_conf('postgresql.conf', "atrest.service_key_file = '$dir/own-0600.key'\n");
$node->start;
$node->safe_psql('postgres', q{CREATE EXTENSION pg_atrest;
	CREATE TABLE t (v atrest.encrypted_text); INSERT INTO t VALUES ('readable');});

my $generation = 0;
sub set_conf
{
	my ($conf) = @_;
	$generation++;
	$node->append_conf('postgresql.conf', "$conf\nregress.generation = '$generation'\n");
	$node->reload;
	$node->poll_query_until('postgres',
		"SELECT current_setting('regress.generation', true) = '$generation'")
	  or die "the reload of postgresql.conf was not seen";
}

# Read in a new session (cold key cache); returns the value, or the error text.
# A fresh session reading a value.  Under a CMK, recheck_keys() first: the shared key cache
# would otherwise hand it the database key without asking the provider (and so without
# reading the PIN file) until the TTL ends.
sub read_value
{
	my ($out, $err) = ('', '');
	$node->safe_psql('postgres', 'SELECT atrest.recheck_keys()');
	my $rc = $node->psql('postgres', "\\set VERBOSITY verbose\nSELECT v FROM t",
		stdout => \$out, stderr => \$err);
	return $rc == 0 ? $out : $err;
}

my @cases = (
	[ 'owned by the server\'s user, 0600', 'own-0600', undef ],
	[ 'owned by the server\'s user, 0644', 'own-0644', qr/group or world access/ ],
	[ 'owned by root, 0640', 'root-0640', undef ],
	[ 'owned by root, 0644', 'root-0644', qr/group or world access/ ],
	[ 'owned by another user, 0640', 'other-0640', qr/owned by the database server's user or by root/ ],
);

# --- the service key file -------------------------------------------------------------
foreach my $case (@cases)
{
	my ($name, $which, $refused) = @$case;
	my $file = $which =~ /^own/ ? "$dir/$which.key" : "$owned/service-$which.key";
	set_conf("atrest.service_key_file = '$file'");
	my $got = read_value();
	if ($refused)
	{
		like($got, qr/AT001: service key is unavailable/, "service key file $name: refused with AT001");
		like($got, qr/DETAIL:.*$refused/, "service key file $name: the detail says why");
	}
	else
	{
		is($got, 'readable', "service key file $name: accepted");
	}
}
set_conf("atrest.service_key_file = '$dir/own-0600.key'");

# --- the PKCS#11 PIN file -------------------------------------------------------------
if (!$have_hsm)
{
	fail('no SoftHSM2 token (test/fixtures/softhsm-setup): the PIN file cases cannot run');
}
else
{
	my ($pinfile) = pkcs11_conf() =~ /atrest\.pkcs11_pin_file\s*=\s*'([^']+)'/;
	my $pin = PostgreSQL::Test::Utils::slurp_file($pinfile);
	foreach my $mode ('0600', '0644')
	{
		PostgreSQL::Test::Utils::append_to_file("$dir/own-$mode.pin", $pin);
		chmod oct($mode), "$dir/own-$mode.pin";
	}
	$node->safe_psql('postgres',
		q{SELECT atrest.enable_cmk('pkcs11', 'pkcs11:token=atrest;object=cmk')});

	foreach my $case (@cases)
	{
		my ($name, $which, $refused) = @$case;
		my $file = $which =~ /^own/ ? "$dir/$which.pin" : "$owned/pin-$which.pin";
		set_conf("atrest.pkcs11_pin_file = '$file'");
		my $offset = -s $node->logfile;
		my $got = read_value();
		if ($refused)
		{
			my $log = log_since($node, $offset);
			like($got, qr/AT001: customer-managed key .*is unavailable/, "PIN file $name: refused with AT001");
			like($log, qr/PIN file "\Q$file\E" cannot be used: .*$refused/,
				"PIN file $name: the server log says why");
			unlike($log, qr/C_Login/, "PIN file $name: no login was tried with it");
		}
		else
		{
			is($got, 'readable', "PIN file $name: accepted");
		}
	}
	set_conf("atrest.pkcs11_pin_file = '$pinfile'");
}

is(read_value(), 'readable', 'back to the first files: values read');
$node->stop;
done_testing();
