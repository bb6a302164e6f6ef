
# Copyright: pg_atrest authors; same license as pg_atrest.
#
# The mlock-refused fallback (README, "Key cache"): if mlock is refused (a low
# RLIMIT_MEMLOCK), pg_atrest warns once and carries on with the pages still excluded from
# core dumps; atrest.key_status.session_memory_locked shows it.
#
# The postmaster's RLIMIT_MEMLOCK is lowered to 0 (prlimit, soft limit) once it runs, which
# every backend forked afterwards inherits, as if the server had been started under
# "ulimit -l 0".  A backend from before (control) has its key memory locked; one from after
# reads and writes encrypted values, warns exactly once (client and server log, with the
# hint), reports session_memory_locked = false, and its key pages are still marked
# "dd" (MADV_DONTDUMP) and "dc" (MADV_DONTFORK) in /proc/PID/smaps, without "lo".

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use AtrestTest;

my $node = atrest_node('mlock', cron => 0, pkcs11 => 0);
$node->safe_psql('postgres', q{
	CREATE TABLE t (id int, v atrest.encrypted_text, j atrest.encrypted_jsonb(result));
	INSERT INTO t VALUES (1, 'before', '{"a": 1}');});

# The key pages of a backend: VmFlags of its 4 KiB anonymous mappings with "dd" (the secure
# pages are the only ones pg_atrest marks so).  Returns a list of flag strings.
sub key_page_flags
{
	my ($pid) = @_;
	my $smaps = slurp_file("/proc/$pid/smaps");
	my @flags;
	foreach my $block (split /(?=^[0-9a-f]+-[0-9a-f]+ )/m, $smaps)
	{
		my ($size) = $block =~ /^Size:\s+(\d+) kB/m;
		my ($vmflags) = $block =~ /^VmFlags:\s*([^\n]*)/m;
		next unless defined $size && defined $vmflags && $size == 4;
		push @flags, $vmflags if $vmflags =~ /\bdd\b/;
	}
	return @flags;
}

my $status = q{SELECT session_memory_locked FROM atrest.key_status};

# --- control: the limit as it was ------------------------------------------------------
my $before = $node->background_psql('postgres');
is($before->query_safe('SELECT v FROM t WHERE id = 1'), 'before', 'a backend reads');
is($before->query_safe($status), 't', 'control: with the usual limit its key memory is locked');
my $before_pid = $before->query_safe('SELECT pg_backend_pid()');
ok((grep { /\blo\b/ } key_page_flags($before_pid)), 'control: its key pages are locked ("lo")');
$before->quit;

# --- RLIMIT_MEMLOCK 0 ---------------------------------------------------------------------
# the postmaster is the parent of every backend forked from now on
my ($pm_pid) = slurp_file($node->data_dir . '/postmaster.pid') =~ /^(\d+)/;
my ($out, $err) = run_command([ 'prlimit', "--pid=$pm_pid", '--memlock=0:' ]);
is($err, '', 'prlimit lowered the postmaster\'s soft RLIMIT_MEMLOCK to 0');
($out) = run_command([ 'prlimit', "--pid=$pm_pid", '--memlock', '--noheadings', '--output=SOFT' ]);
like($out, qr/^\s*0\s*$/, 'the postmaster now has RLIMIT_MEMLOCK 0');

my $log_offset = -s $node->logfile;
my ($stdout, $stderr);
$node->psql(
	'postgres', q{
	SELECT pg_backend_pid();
	INSERT INTO t VALUES (2, 'after', '{"b": 2}');
	SELECT string_agg(v::text || ' ' || (j ->> 'a')::text, ',' ORDER BY id) FROM t WHERE id = 1;
	SELECT string_agg(v::text || ' ' || (j ->> 'b')::text, ',' ORDER BY id) FROM t WHERE id = 2;
	SELECT atrest.rotate_data_key('result') IS NOT NULL;
	SELECT session_memory_locked FROM atrest.key_status;},
	stdout => \$stdout,
	stderr => \$stderr);
my ($pid, @results) = split /\n/, $stdout;
is(join('|', @results[0 .. 3]), 'before 1|after 2|t|f',
	'under RLIMIT_MEMLOCK 0 the backend writes, reads and rotates keys; session_memory_locked is false');
my @warnings = $stderr =~ /WARNING:\s+could not lock key memory into RAM/g;
is(scalar @warnings, 1, 'the client got the warning once, though the backend holds several keys');
my $log = substr(slurp_file($node->logfile), $log_offset);
my @logged = $log =~ /\[$pid\][^\n]*WARNING:\s+could not lock key memory into RAM: [^\n]+\n[^\n]*HINT:\s+Raise the memlock limit \(RLIMIT_MEMLOCK\)/g;
is(scalar @logged, 1, 'the server log has the warning once, with the hint to raise RLIMIT_MEMLOCK');

# The backend is gone by now; look at the pages of a live one.
my $after = $node->background_psql('postgres');
my $after_pid = $after->query_safe('SELECT pg_backend_pid()');
$after->{stderr} = '';
is($after->query('SELECT v FROM t WHERE id = 2'), 'after', 'another new backend reads');
like($after->{stderr}, qr/could not lock key memory into RAM/, '... and warns too');
my @flags = key_page_flags($after_pid);
ok(@flags > 0, 'it has key pages marked "dd" (excluded from core dumps)');
# (Other code in the backend may mark a 4 kB page of its own "dd" without "dc": one such
# page shows up with PostgreSQL 17 on Debian 13; pg_atrest's key pages have both.)
ok((grep { /\bdc\b/ } @flags), 'its key pages are also "dc" (not inherited by children)');
is(scalar(grep { /\blo\b/ } @flags), 0, 'none of them locked ("lo")');
$after->quit;

$node->stop;
done_testing();
