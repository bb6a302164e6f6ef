#!/usr/bin/perl
# proxy.pl: the results store through pg_atrest_proxy (PL/Proxy) against one server
# directly, run by bench.pl's section "proxy" (test/sandbox bench --only proxy).
#
# Runs as root with the sandbox cluster up (PGHOST, PGPORT, ATREST_SANDBOX, PG_BIN in the
# environment).  Starts four shard clusters of its own (pg_atrest, sockets only, in
# $ATREST_SANDBOX/bench-proxy), puts the proxy database (pg_atrest_proxy) and the direct
# database (pg_atrest) in the sandbox cluster, and runs the same pgbench script against
# both: 8 clients, each transaction begin_analyze + complete_analyze + get_analyze_result
# on one of 64 models.  The runs alternate (direct, proxy, direct, proxy, ...); the median
# of each is reported.
#
# What the figure means: everything (pgbench, the proxy, four shards) shares this
# machine's cores.  On a small machine the ratio is the proxy's overhead (a second hop,
# twice the backends), not the gain from spreading the shards over machines.
#
# Output: a table on stdout, and test/bench/results/proxy.md and proxy.csv.

use strict;
use warnings;

use Cwd qw(abs_path);
use File::Basename qw(dirname);
use File::Path qw(make_path remove_tree);
use Getopt::Long;
use POSIX qw(strftime);

$| = 1;

my $here = dirname(abs_path($0));
my $results = "$here/results";
my $SB = $ENV{ATREST_SANDBOX} or die "proxy.pl: ATREST_SANDBOX is not set (run test/sandbox bench)\n";
my $PG_BIN = $ENV{PG_BIN} // '/usr/lib/postgresql/15/bin';
my $RUNUSER = -x '/usr/sbin/runuser' ? '/usr/sbin/runuser' : '/sbin/runuser';

my $quick = 0;
GetOptions('quick' => \$quick) or die "usage: proxy.pl [--quick]\n";
my $seconds = $ENV{ATREST_BENCH_PROXY_SECONDS} // ($quick ? 8 : 20);
my $rounds = $quick ? 2 : 3;
my $clients = 8;
my $nshards = 4;
my $models = 64;

my $dir = "$SB/bench-proxy";
my @ports = map { 25432 + $_ } 0 .. $nshards - 1;    # sockets only, in $dir: no TCP port taken

sub step { print '==> ', strftime('%H:%M:%S', localtime), " $_[0]\n"; }

sub as_pg
{
	my $cmd = join(' ', $RUNUSER, '-u', 'postgres', '--', @_);
	my $out = `$cmd 2>&1`;
	die "proxy.pl: failed: @_\n$out\n" if $?;
	return $out;
}

sub psql
{
	my ($sql, %o) = @_;
	my $conn = $o{port} ? "-h $dir -p $o{port}" : '';
	my $f = "$dir/q.sql";
	open(my $fh, '>', $f) or die "proxy.pl: $f: $!\n";
	print $fh $sql, "\n";
	close $fh;
	chmod 0644, $f;
	my $out = as_pg("$PG_BIN/psql -X -q -At -v ON_ERROR_STOP=1 $conn -d " . ($o{db} // 'postgres') . " -f $f");
	chomp $out;
	return $out;
}

sub stop_shards
{
	foreach my $i (0 .. $nshards - 1)
	{
		next unless -f "$dir/shard$i/postmaster.pid";
		system("$RUNUSER -u postgres -- $PG_BIN/pg_ctl -D $dir/shard$i -m fast -w stop >/dev/null 2>&1");
	}
}
END { stop_shards() if $dir && -d $dir; }

remove_tree($dir);
make_path($dir, $results);
system('chown', 'postgres:postgres', $dir);

step("starting $nshards shard clusters (sockets in $dir)");
foreach my $i (0 .. $nshards - 1)
{
	as_pg("$PG_BIN/initdb -D $dir/shard$i -U postgres -A trust -E UTF8 --locale=C --no-sync");
	open(my $fh, '>>', "$dir/shard$i/postgresql.conf") or die;
	print $fh "listen_addresses = ''\nport = $ports[$i]\nunix_socket_directories = '$dir'\n"
	  . "shared_preload_libraries = 'pg_atrest'\nshared_buffers = 32MB\nfsync = off\n"
	  . "max_connections = 40\nlc_messages = 'C'\n";
	close $fh;
	as_pg("$PG_BIN/pg_ctl -D $dir/shard$i -l $dir/shard$i.log -w start");
	psql('CREATE EXTENSION pg_atrest', port => $ports[$i]);
}

step('the direct database and the proxy database in the sandbox cluster');
psql("DROP DATABASE IF EXISTS atrest_bench_direct; DROP DATABASE IF EXISTS atrest_bench_proxy;\n"
	  . "CREATE DATABASE atrest_bench_direct; CREATE DATABASE atrest_bench_proxy;");
psql('CREATE EXTENSION IF NOT EXISTS pg_atrest', db => 'atrest_bench_direct');
my $partitions = join(', ', map { "p$_ 'host=$dir port=$ports[$_] dbname=postgres'" } 0 .. $nshards - 1);
psql("CREATE EXTENSION pg_atrest_proxy CASCADE;\n"
	  . "CREATE SERVER atrest_shards FOREIGN DATA WRAPPER plproxy OPTIONS ($partitions);\n"
	  . "CREATE USER MAPPING FOR postgres SERVER atrest_shards OPTIONS (user 'postgres');",
	db => 'atrest_bench_proxy');
psql("SELECT atrest.create_model('bench-' || i) FROM generate_series(1, $models) i", db => 'atrest_bench_direct');
psql("SELECT atrest_proxy.create_model('bench-' || i) FROM generate_series(1, $models) i", db => 'atrest_bench_proxy');
my $spread = join(' ', map { psql('SELECT count(*) FROM atrest.models', port => $_) } @ports);
print "   models per shard: $spread\n";

my $result = '{"pages": [{"page": 1, "lines": ["Invoice 4711", "Total 118.00 EUR"]}], "status": "succeeded"}';
foreach my $schema ('atrest', 'atrest_proxy')
{
	open(my $fh, '>', "$dir/$schema.pgbench") or die;
	print $fh "\\set m random(1, $models)\n"
	  . "SELECT $schema.begin_analyze('bench-' || :m::text) AS id \\gset\n"
	  . "SELECT $schema.complete_analyze(:id, '$result');\n"
	  . "SELECT status FROM $schema.get_analyze_result('bench-' || :m::text, :id);\n";
	close $fh;
	chmod 0644, "$dir/$schema.pgbench";
}

sub pgbench
{
	my ($db, $script) = @_;
	my $out = as_pg("$PG_BIN/pgbench -n -M prepared -c $clients -j 2 -T $seconds -f $script $db");
	my ($tps) = $out =~ /tps = ([\d.]+) \(without initial connection time\)/;
	my ($lat) = $out =~ /latency average = ([\d.]+) ms/;
	my ($failed) = $out =~ /number of failed transactions: (\d+)/;
	die "proxy.pl: no tps in pgbench output:\n$out\n" unless defined $tps;
	die "proxy.pl: $failed failed transactions:\n$out\n" if $failed;
	return ($tps, $lat);
}

my %runs = (direct => [], proxy => []);
my @csv = ("round,target,tps,latency_ms");
step("warm-up, then $rounds rounds of $seconds s each, $clients clients");
pgbench('atrest_bench_direct', "$dir/atrest.pgbench");
pgbench('atrest_bench_proxy', "$dir/atrest_proxy.pgbench");
foreach my $r (1 .. $rounds)
{
	foreach my $t ($r % 2 ? qw(direct proxy) : qw(proxy direct))
	{
		my ($tps, $lat) = $t eq 'direct'
		  ? pgbench('atrest_bench_direct', "$dir/atrest.pgbench")
		  : pgbench('atrest_bench_proxy', "$dir/atrest_proxy.pgbench");
		push @{ $runs{$t} }, [ $tps, $lat ];
		push @csv, "$r,$t,$tps,$lat";
		printf "   round %d %-6s %8.1f tps (x3 calls), %6.2f ms per transaction\n", $r, $t, $tps, $lat;
	}
}

sub median
{
	my @s = sort { $a <=> $b } @_;
	return @s % 2 ? $s[$#s / 2] : ($s[@s / 2 - 1] + $s[@s / 2]) / 2;
}
my $d = median(map { $_->[0] } @{ $runs{direct} });
my $p = median(map { $_->[0] } @{ $runs{proxy} });
my $dl = median(map { $_->[1] } @{ $runs{direct} });
my $pl = median(map { $_->[1] } @{ $runs{proxy} });
my $cores = `nproc`;
chomp $cores;
my @md = (
	"| store, $clients clients (begin + complete + get per transaction) | transactions/s | latency |",
	'|---|---:|---:|',
	sprintf('| one server directly (atrest.*) | %.0f | %.1f ms |', $d, $dl),
	sprintf('| proxy to %d shards (atrest_proxy.*, PL/Proxy) | %.0f | %.1f ms |', $nshards, $p, $pl),
	sprintf('| proxy / direct | %.2f | |', $p / $d),
	'',
	"Measured on $cores cores shared by pgbench, the proxy and all $nshards shards: the ratio "
	  . 'is the cost of the proxy (a second hop and a second backend for every call), not the '
	  . 'gain of spreading the shards over machines, which this machine cannot show.');
print "\n", join("\n", @md), "\n";
open(my $fh, '>', "$results/proxy.md") or die;
print $fh join("\n", @md), "\n";
close $fh;
open($fh, '>', "$results/proxy.csv") or die;
print $fh join("\n", @csv), "\n";
close $fh;

psql('DROP DATABASE atrest_bench_direct; DROP DATABASE atrest_bench_proxy;');
stop_shards();
remove_tree($dir);
$dir = undef;
print "results: $results/proxy.md, proxy.csv\n";
exit 0;
