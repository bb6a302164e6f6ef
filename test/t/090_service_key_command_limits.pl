
# atrest.service_key_command runs under a time limit and can be cancelled (issue 9,
# finding 7): a command that hangs is killed with its whole process group after
# atrest.service_key_timeout and the statement fails with AT001; a statement waiting on
# the command ends promptly on pg_cancel_backend; no process of the command is left
# behind either way, and the key command works again afterwards.

use strict;
use warnings;

use Time::HiRes qw(time sleep);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use AtrestTest;

my $node = atrest_node('svccmd', cron => 0, pkcs11 => 0, start => 0);
my $dir = $node->basedir;
my $keyfile = "$dir/service.key";
PostgreSQL::Test::Utils::append_to_file($keyfile, ('3c' x 32) . "\n");
chmod 0600, $keyfile;
$node->append_conf('postgresql.conf', "atrest.service_key_command = 'cat $keyfile'\n");
$node->start;
$node->safe_psql('postgres', q{CREATE EXTENSION pg_atrest;
	CREATE TABLE t (v atrest.encrypted_text); INSERT INTO t VALUES ('kept');});

# A key command that never prints: a shell running a script that starts a background
# process and waits on a foreground one.  Every process carries the marker in its
# command line, so that we can tell whether any survived.
my $marker = "atrest-hang-$$";
my $hang = "$dir/$marker.sh";
PostgreSQL::Test::Utils::append_to_file($hang,
	"perl -e '\$0 = \"$marker-background\"; sleep 3600' &\n"
	  . "perl -e '\$0 = \"$marker-foreground\"; sleep 3600'\n");

# Wait up to 30 s for every process of the hanging command to be gone.
sub no_command_left
{
	my @left;
	for (1 .. 300)
	{
		@left = processes_matching(qr/\Q$marker\E/);
		return 1 unless @left;
		sleep 0.1;
	}
	diag("left running: @left");
	return 0;
}

sub set_conf
{
	my ($conf) = @_;
	$node->append_conf('postgresql.conf', $conf);
	$node->reload;
}

# --- the time limit -------------------------------------------------------------------
set_conf("atrest.service_key_command = 'sh $hang'\natrest.service_key_timeout = 2\n");
my ($out, $err, $timed_out) = ('', '', 0);
my $t0 = time;
$node->psql('postgres', "\\set VERBOSITY verbose\nSELECT v FROM t",
	stdout => \$out, stderr => \$err, timeout => 120, timed_out => \$timed_out);
my $elapsed = time - $t0;
ok(!$timed_out, 'a hanging key command does not hang the statement');
like($err, qr/ERROR:\s+AT001: service key is unavailable/, 'the statement fails with AT001');
like($err, qr/DETAIL:\s+atrest\.service_key_command did not finish within 2 s/,
	'the detail says the command ran out of time');
unlike($err, qr/\Q$dir\E/, 'the error names no path');
note(sprintf('the statement failed after %.1f s (limit 2 s)', $elapsed));
cmp_ok($elapsed, '<', 60, 'it fails soon after the 2 s limit (under 60 s)');
ok(no_command_left(), 'the command and the process it started in the background were killed');

# --- cancelling a statement that waits on the command ---------------------------------
set_conf("atrest.service_key_timeout = 600\n");
my $s = $node->background_psql('postgres', on_error_stop => 0);
my $pid = $s->query_safe('SELECT pg_backend_pid()');
$s->{stdin} .= "SELECT v FROM t;\n";
$s->{run}->pump_nb;
my $started = 0;
for (1 .. 600)
{
	if (processes_matching(qr/\Q$marker\E-foreground/)) { $started = 1; last; }
	sleep 0.1;
}
ok($started, 'the statement is waiting on the key command');
$t0 = time;
is($node->safe_psql('postgres', "SELECT pg_cancel_backend($pid)"), 't', 'cancel sent');
my $cancelled = 0;
while (time - $t0 < 60)
{
	$s->{run}->pump_nb;
	if ($s->{stderr} =~ /canceling statement due to user request/) { $cancelled = 1; last; }
	sleep 0.1;
}
$elapsed = time - $t0;
ok($cancelled, 'the waiting statement is cancelled');
note(sprintf('the cancel took effect after %.1f s', $elapsed));
cmp_ok($elapsed, '<', 30, 'promptly (under 30 s; the command would have slept an hour)');
ok(no_command_left(), 'the command and everything it started are gone after the cancel');

# The cancelled session carries on, and the key command works again.
set_conf("atrest.service_key_command = 'cat $keyfile'\n");
$s->{stderr} = '';
$s->{stdout} = '';
is($s->query('SELECT v FROM t'), 'kept', 'the cancelled session reads once the command works');

$s->quit;
# Whatever a failed run above left behind (these processes run as our user).
kill 'KILL', map { (split / /)[0] } processes_matching(qr/\Q$marker\E/);
$node->stop;
done_testing();
