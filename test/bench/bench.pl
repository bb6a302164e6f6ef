#!/usr/bin/perl
#
# bench.pl: pg_atrest's benchmarks, run by test/bench/run inside "test/sandbox bench".
#
# Runs as root with the sandbox cluster up (PGHOST, PGPORT, ATREST_SANDBOX, PG_BIN in the
# environment); psql and pgbench run as the postgres OS user.  Everything happens in a
# database of its own, atrest_bench, in the throwaway sandbox cluster.
#
# Sections (all by default; --only picks some, for development):
#   data     generate the analyze results (gen_analyze_result.pl) into a staging table
#   insert   bulk INSERT ... SELECT of every row into each variant          (needs data)
#   read     read every row back as JSON text                               (needs insert)
#   lookup   point lookups by id, pgbench, 4 clients                        (needs insert)
#   size     heap + TOAST size of each variant                              (needs insert)
#   keyops   rotate_database_key, enable_cmk, disable_cmk against row counts
#   provider root-key provider calls of a backend reading 100,000 values   (needs keyops)
#   connections  fresh connections each reading one value, and pgbench point lookups with 8
#            clients, under the service key and under a CMK behind a KMS adapter with 20 ms
#            of latency: first-read time and KMS unwrap calls; then the pgbench again
#            with the server restarted under glibc.malloc.trim_threshold=8388608 (a
#            diagnostic: no backend trims its heap)                          (needs insert)
#   purge    atrest.purge_expired() over full-size expired results (the generated
#            documents, TOASTed), under 4 clients; lock waits from log_lock_waits
#            (needs data; when the store exists)
#   compressors  compressors.c over the staging documents' jsonb binary form: CPU time
#            and size of pglz, LZ4 fast, LZ4HC and zstd candidates (needs data; not in
#            the default set: --only compressors, or --compressors with the others)
#   proxy    the store through pg_atrest_proxy to four shards against one server directly,
#            8 clients (test/bench/proxy.pl; starts four clusters of its own; not in the
#            default set: --only proxy)
#
# Method: the variants get the same rows in the same run; every data workload gets one
# untimed warm-up round, then is repeated with the repeats interleaved (each round visits
# the variants in a rotated order, so that no variant always runs first or last); the
# median of the repeats is reported with its ratio to plain jsonb as PostgreSQL ships it
# (pglz TOAST compression) and to jsonb with COMPRESSION lz4 (what a user who cares about
# speed sets).  Timing goals are reported (met or missed) in a goal table, never asserted;
# a variant that reads back other text than plain jsonb fails the run (exit status 1).
#
# Outputs, under test/bench/results/ (git-ignored): bench.csv (every measurement),
# summary.csv, summary.md (the tables for docs/performance.md), goals.csv, bench.png (the
# chart), compressors.txt and compressors.csv, machine.txt.

use strict;
use warnings;

use Cwd qw(abs_path);
use File::Basename qw(dirname);
use File::Path qw(make_path remove_tree);
use Getopt::Long;
use POSIX qw(strftime floor WNOHANG);
use Time::HiRes qw(time sleep);

$| = 1;

my $here = dirname(abs_path($0));
# ATREST_BENCH_RESULTS: another output directory (test/sandbox bench --pg N: results/pgN)
my $results = $ENV{ATREST_BENCH_RESULTS} // "$here/results";
my $SB = $ENV{ATREST_SANDBOX} or die "bench.pl: ATREST_SANDBOX is not set (run test/sandbox bench)\n";
my $PG_BIN = $ENV{PG_BIN} // '/usr/lib/postgresql/15/bin';
my $RUNUSER = -x '/usr/sbin/runuser' ? '/usr/sbin/runuser' : '/sbin/runuser';
my $DB = 'atrest_bench';
my $work = "$SB/bench";

my $quick = 0;
my $only = '';
my $with_compressors = 0;
GetOptions('quick' => \$quick, 'only=s' => \$only, 'compressors' => \$with_compressors,
	'help' => sub { system('sed', '-n', '2,34p', $0); exit 0; })
  or die "usage: test/sandbox bench [--quick] [--only SECTION,...] [--compressors]\n";

# ---------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------

# purge_rows: expired results of the full size (the generated documents, ~13 KB of JSON,
# TOASTed), so a purge deletes TOAST chunks as it does in use.
my %C = $quick
  ? (rows => 1000, repeats => 3, lookup_seconds => 2, keyop_sizes => [ 10_000, 100_000 ],
	keyop_repeats => 5, provider_reads => 100_000, ttl_seconds => 3,
	purge_rows => 10_000, purge_live => 1000, compressor_docs => 1000, compressor_rounds => 5)
  : (rows => 20_000, repeats => 5, lookup_seconds => 6, keyop_sizes => [ 10_000, 100_000, 1_000_000 ],
	keyop_repeats => 15, provider_reads => 100_000, ttl_seconds => 5,
	purge_rows => 100_000, purge_live => 10_000, compressor_docs => 4000, compressor_rounds => 7);
$C{rows} = $ENV{ATREST_BENCH_ROWS} if $ENV{ATREST_BENCH_ROWS};
$C{purge_rows} = $ENV{ATREST_BENCH_PURGE_ROWS} if $ENV{ATREST_BENCH_PURGE_ROWS};
$C{repeats} = $ENV{ATREST_BENCH_REPEATS} if $ENV{ATREST_BENCH_REPEATS};
$C{lookup_seconds} = $ENV{ATREST_BENCH_LOOKUP_SECONDS} if $ENV{ATREST_BENCH_LOOKUP_SECONDS};
$C{seed} = $ENV{ATREST_BENCH_SEED} // 42;
$C{cmk_uri} = $ENV{ATREST_BENCH_CMK_URI} // 'pkcs11:token=atrest;object=cmk';
$C{clients} = 4;

my %want = map { $_ => 1 } ($only ? split(/,/, $only)
	: qw(data insert read lookup size keyops provider connections purge));

# The proxy comparison is a script of its own, with its own clusters and report.
if ($want{proxy})
{
	system('perl', "$here/proxy.pl", $quick ? ('--quick') : ()) == 0
	  or die "bench.pl: test/bench/proxy.pl failed\n";
	delete $want{proxy};
	exit 0 unless %want;
}
$want{compressors} = 1 if $with_compressors;
$want{data} = 1 if $want{insert} || $want{read} || $want{lookup} || $want{size} || $want{purge} || $want{compressors}
  || $want{connections};
$want{insert} = 1 if $want{read} || $want{lookup} || $want{size} || $want{connections};
$want{keyops} = 1 if $want{provider};

# The variants: same rows, same statements, different column types.
my $PASS = 'bench passphrase 7f3a';
my $AESKEY = "'\\x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f'::bytea";
my @VARIANTS = (
	{ name => 'jsonb', label => 'jsonb', col => 'doc jsonb',
	  put => 'doc', get => 'doc::text' },
	{ name => 'lz4', label => 'jsonb lz4', col => 'doc jsonb COMPRESSION lz4',
	  put => 'doc', get => 'doc::text' },
	{ name => 'atrest', label => 'encrypted_jsonb', col => 'doc atrest.encrypted_jsonb(result)',
	  put => 'doc', get => 'doc::text' },
	# the same under a key class that compresses with zstd (created below)
	{ name => 'atrest_zstd', label => 'encrypted_jsonb zstd', col => 'doc atrest.encrypted_jsonb(bench_zstd)',
	  put => 'doc', get => 'doc::text' },
	{ name => 'pgp', label => 'pgp_sym_encrypt', col => 'doc bytea',
	  put => "pgp_sym_encrypt(doc::text, '$PASS', 'cipher-algo=aes256')",
	  get => "pgp_sym_decrypt(doc, '$PASS')" },
	{ name => 'aes', label => 'encrypt aes', col => 'doc bytea',
	  put => "encrypt(convert_to(doc::text, 'UTF8'), $AESKEY, 'aes')",
	  get => "convert_from(decrypt(doc, $AESKEY, 'aes'), 'UTF8')" },
);

# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------

my @RAW;		# [section, workload, variant, rows, repeat, value, unit]
my %MED;		# "$section/$workload/$variant/$rows" => median
my @NOTES;		# lines for the report
my @FAILURES;	# what makes the run fail (exit 1): wrong results, not missed goals
my @CHILDREN;	# processes to stop on exit
my $perf_probes = 0;

sub note { push @NOTES, $_[0]; print "   $_[0]\n"; }
sub step { print '==> ', strftime('%H:%M:%S', localtime), " $_[0]\n"; }

sub median
{
	my @s = sort { $a <=> $b } @_;
	return undef unless @s;
	return $s[$#s / 2] if @s % 2;
	return ($s[ @s / 2 - 1 ] + $s[ @s / 2 ]) / 2;
}

sub min_of { my @s = sort { $a <=> $b } @_; return $s[0]; }

sub record
{
	my ($section, $workload, $variant, $rows, $repeat, $value, $unit) = @_;
	push @RAW, [ $section, $workload, $variant, $rows, $repeat, $value, $unit ];
}

sub med
{
	my ($section, $workload, $variant, $rows) = @_;
	my $key = "$section/$workload/$variant/$rows";
	return $MED{$key} if exists $MED{$key};
	my @v = map { $_->[5] } grep {
		$_->[0] eq $section && $_->[1] eq $workload && $_->[2] eq $variant && $_->[3] eq $rows
	} @RAW;
	return $MED{$key} = median(@v);
}

sub slurp
{
	my $f = shift;
	open(my $fh, '<', $f) or return '';
	local $/;
	my $s = <$fh>;
	close $fh;
	return $s // '';
}

sub spew
{
	my ($f, $s) = @_;
	open(my $fh, '>', $f) or die "cannot write $f: $!\n";
	print $fh $s;
	close $fh;
}

# Run SQL in one psql session as postgres; returns its output (-At format).  Dies on
# error unless allow_fail, in which case it returns (undef, stderr), or keep_going, which
# runs every statement whatever fails and returns (stdout, stderr).
my $qn = 0;
sub psql
{
	my ($sql, %o) = @_;
	my $db = $o{db} // $DB;
	my $f = sprintf('%s/q%04d.sql', $work, ++$qn);
	spew($f, $sql . "\n");
	chmod 0644, $f;
	my $stop = $o{keep_going} ? '' : '-v ON_ERROR_STOP=1';
	my $out = `$RUNUSER -u postgres -- $PG_BIN/psql -X -q -At $stop -d $db -f $f 2>$work/psql.err`;
	my $rc = $?;
	my $err = slurp("$work/psql.err");
	return ($out, $err) if $o{keep_going};
	if ($rc != 0)
	{
		return (undef, $err) if $o{allow_fail};
		die "bench.pl: psql failed on $f:\n$err\n";
	}
	unlink $f;
	return wantarray ? ($out, $err) : $out;
}

sub psql1
{
	my $out = psql(@_);
	chomp $out;
	return $out;
}

# Run "pre" untimed, then each statement of @stmts timed (psql \timing: from sending the
# statement to receiving its whole result, in one session).  Returns ([ms...], [lines]).
sub timed { return timed_db($DB, @_); }

sub timed_db
{
	my ($db, $pre, @stmts) = @_;
	my $sql = ($pre ? "$pre\n" : '') . "\\timing on\n" . join("\n", @stmts) . "\n\\timing off\n";
	my $out = psql($sql, db => $db);
	my @t = ($out =~ /^Time: ([\d.]+) ms/mg);
	die "bench.pl: expected " . scalar(@stmts) . " timings, got " . scalar(@t) . ":\n$out\n"
	  unless @t == @stmts;
	my @lines = grep { $_ ne '' && !/^Time: / } split /\n/, $out;
	return (\@t, \@lines);
}

# Like timed() for one statement, and also the backend's own CPU time and run-queue wait
# over that statement, from /proc/self/schedstat (nanoseconds on a CPU, nanoseconds
# runnable but waiting for one): on a shared machine the wall-clock time includes
# waiting for a CPU, the CPU time does not.  Returns (ms, cpu s, wait s, [lines]).
sub timed_cpu
{
	my ($pre, $stmt) = @_;
	my $ss = "SELECT 'schedstat ' || pg_read_file('/proc/self/schedstat');";
	my $sql = ($pre ? "$pre\n" : '') . "$ss\n\\timing on\n$stmt\n\\timing off\n$ss\n";
	my $out = psql($sql);
	my @t = ($out =~ /^Time: ([\d.]+) ms/mg);
	my @ss = ($out =~ /^schedstat (\d+) (\d+)/mg);
	die "bench.pl: no timing or schedstat in:\n$out\n" unless @t == 1 && @ss == 4;
	my @lines = grep { $_ ne '' && !/^Time: / && !/^schedstat / } split /\n/, $out;
	return ($t[0], ($ss[2] - $ss[0]) / 1e9, ($ss[3] - $ss[1]) / 1e9, \@lines);
}

sub pgbench
{
	my ($script, $seconds, %o) = @_;
	my @args = ('-n', '-M', 'prepared', '-c', $o{clients} // $C{clients}, '-j', 2, '-T', $seconds, '-f', $script);
	push @args, '-l', "--log-prefix=$o{log}" if $o{log};
	my $cmd = join(' ', $RUNUSER, '-u', 'postgres', '--', "$PG_BIN/pgbench", @args, $DB);
	my $out = `$cmd 2>&1`;
	die "bench.pl: pgbench failed:\n$out\n" if $?;
	my ($tps) = $out =~ /tps = ([\d.]+) \(without initial connection time\)/;
	my ($lat) = $out =~ /latency average = ([\d.]+) ms/;
	my ($failed) = $out =~ /number of failed transactions: (\d+)/;
	die "bench.pl: no tps in pgbench output:\n$out\n" unless defined $tps;
	return ($tps, $lat, $failed // 0);
}

sub rotated
{
	my ($round, @list) = @_;
	my $k = $round % @list;
	return (@list[ $k .. $#list ], @list[ 0 .. $k - 1 ]);
}

sub fmt
{
	my ($v, $d) = @_;
	return 'n/a' unless defined $v;
	return sprintf("%.${d}f", $v);
}

sub ratio_str { my ($a, $b) = @_; return (defined $a && defined $b && $b > 0) ? sprintf('%.2fx', $a / $b) : 'n/a'; }

sub commify
{
	my $n = reverse shift;
	$n =~ s/(\d{3})(?=\d)/$1,/g;
	return scalar reverse $n;
}

sub cleanup
{
	for my $pid (@CHILDREN)
	{
		kill 'TERM', $pid;
		waitpid($pid, 0);
	}
	@CHILDREN = ();
	if ($perf_probes)
	{
		system("perf probe -q -d 'atrestbench:*' >/dev/null 2>&1");
		$perf_probes = 0;
	}
}
END { cleanup(); }
$SIG{INT} = $SIG{TERM} = sub { cleanup(); exit 130; };

# ---------------------------------------------------------------------------------------
# Set-up
# ---------------------------------------------------------------------------------------

make_path($results, $work);
system('chown', 'postgres:postgres', $work) == 0 or die "chown $work failed\n";
chdir $SB or die "cannot enter $SB: $!\n";
my $t_start = time;

my $nproc = `nproc`; chomp $nproc;
my ($cpu) = `lscpu` =~ /^Model name:\s*(.+)$/m;
my ($mem_kb) = slurp('/proc/meminfo') =~ /^MemTotal:\s+(\d+)/m;
my $load_start = (split ' ', slurp('/proc/loadavg'))[0];
my $pg_version = psql1('SHOW server_version', db => 'postgres');
my $openssl = `openssl version 2>/dev/null`; chomp $openssl;

step(sprintf('pg_atrest benchmarks (%s): %d cores, %s, %.1f GB, PostgreSQL %s, load %s',
	$quick ? 'quick' : 'full', $nproc, $cpu // '?', ($mem_kb // 0) / 1048576, $pg_version, $load_start));

psql("DROP DATABASE IF EXISTS $DB;\nCREATE DATABASE $DB;", db => 'postgres');
# Fewer, predictable checkpoints: every timed statement starts right after one.
psql("ALTER SYSTEM SET max_wal_size = '8GB';\nALTER SYSTEM SET checkpoint_timeout = '30min';\n"
	  . "SELECT pg_reload_conf();", db => 'postgres');
psql("CREATE EXTENSION pg_atrest;\nCREATE EXTENSION pgcrypto;");
# the key class of the "encrypted_jsonb zstd" variant; "result" (the other one) uses lz4
psql("SELECT atrest.create_key_class('bench_zstd', compression => 'zstd');");

unless (psql1("SELECT 'lz4' = ANY (enumvals) FROM pg_settings WHERE name = 'default_toast_compression'") eq 't')
{
	note('this PostgreSQL has no lz4 TOAST compression: the "jsonb lz4" variant is left out');
	@VARIANTS = grep { $_->{name} ne 'lz4' } @VARIANTS;
}

# ---------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------

my %DATA;
if ($want{data})
{
	step("generating $C{rows} analyze results (seed $C{seed}) into a staging table");
	# EXTERNAL: the staging copy is stored uncompressed, so reading it costs every
	# variant the same and little.
	psql("CREATE TABLE staging (id int PRIMARY KEY, doc jsonb) WITH (autovacuum_enabled = off);\n"
		  . "ALTER TABLE staging ALTER doc SET STORAGE external;");
	my $t0 = time;
	my $half = int($C{rows} / 2);
	my @parts = ([ 1, $half ], [ $half + 1, $C{rows} - $half ]);
	my @pids;
	unlink glob("$work/gen*.err");
	for my $p (@parts)
	{
		next if $p->[1] <= 0;
		my $pid = fork() // die "fork: $!\n";
		if ($pid == 0)
		{
			exec('/bin/sh', '-c',
				"perl '$here/gen_analyze_result.pl' --first $p->[0] --rows $p->[1] --seed $C{seed} 2>$work/gen$p->[0].err | "
				  . "$RUNUSER -u postgres -- $PG_BIN/psql -X -q -v ON_ERROR_STOP=1 -d $DB "
				  . "-c 'COPY staging (id, doc) FROM STDIN'")
			  or POSIX::_exit(127);
		}
		push @pids, $pid;
	}
	for my $pid (@pids)
	{
		waitpid($pid, 0);
		die "bench.pl: loading the generated documents failed\n" if $?;
	}
	psql("VACUUM ANALYZE staging;\nCHECKPOINT;");
	my $s = psql1("SELECT count(*), round(avg(length(doc::text))), min(length(doc::text)), "
		  . "max(length(doc::text)), round(avg(pg_column_size(doc))), sum(length(doc::text)) FROM staging");
	@DATA{qw(rows avg_text min_text max_text avg_jsonb sum_text)} = split /\|/, $s;
	my $compact = 0;
	$compact += $_ for map { slurp($_) =~ /(\d+) bytes of JSON/ ? $1 : 0 } glob("$work/gen*.err");
	$DATA{avg_compact} = $compact / $DATA{rows};
	note(sprintf('%d documents in %.1f s: compact JSON %.1f KB on average; as jsonb prints it %.1f KB (%.1f to %.1f KB); '
		  . 'jsonb binary %.1f KB', $DATA{rows}, time - $t0, $DATA{avg_compact} / 1024, $DATA{avg_text} / 1024,
		$DATA{min_text} / 1024, $DATA{max_text} / 1024, $DATA{avg_jsonb} / 1024));

	for my $v (@VARIANTS)
	{
		psql("CREATE TABLE b_$v->{name} (id int PRIMARY KEY, $v->{col}) "
			  . "WITH (autovacuum_enabled = off, toast.autovacuum_enabled = off);");
	}
}

# ---------------------------------------------------------------------------------------
# Bulk insert, size
# ---------------------------------------------------------------------------------------

my $N = $DATA{rows} // 0;
if ($want{insert})
{
	step("bulk insert: INSERT INTO <variant> SELECT ... FROM staging ($N rows), a warm-up and $C{repeats} rounds");
	# Warm-up, untimed: the staging table and the variants' relations in the cache, the
	# key cache loaded, pgcrypto's and the extension's libraries loaded.
	for my $v (@VARIANTS)
	{
		psql("TRUNCATE b_$v->{name};\nINSERT INTO b_$v->{name} (id, doc) SELECT id, $v->{put} FROM staging;");
	}
	for my $r (1 .. $C{repeats})
	{
		my @line;
		for my $v (rotated($r - 1, @VARIANTS))
		{
			my $t = "b_$v->{name}";
			my ($ms, $cpu, $wait) = timed_cpu("TRUNCATE $t;\nCHECKPOINT;",
				"INSERT INTO $t (id, doc) SELECT id, $v->{put} FROM staging;");
			record('data', 'insert', $v->{name}, $N, $r, $ms / 1000, 's');
			record('data', 'insert_cpu', $v->{name}, $N, $r, $cpu, 's');
			record('data', 'insert_wait', $v->{name}, $N, $r, $wait, 's');
			my ($heap, $total) = split /\|/, psql1("SELECT pg_table_size('$t'), pg_total_relation_size('$t')");
			record('data', 'size', $v->{name}, $N, $r, $heap / 1048576, 'MB');
			record('data', 'size_total', $v->{name}, $N, $r, $total / 1048576, 'MB');
			push @line, sprintf('%s %.2f s (cpu %.2f)', $v->{label}, $ms / 1000, $cpu);
		}
		print "   round $r: ", join(', ', @line), "\n";
	}
	psql(join("\n", map { "VACUUM (ANALYZE) b_$_->{name};" } @VARIANTS) . "\nCHECKPOINT;");
	for my $v (@VARIANTS)
	{
		my $s = psql1("SELECT round(avg(pg_column_size(doc))) FROM b_$v->{name}");
		record('data', 'value_bytes', $v->{name}, $N, 1, $s, 'bytes');
	}
	for my $v (grep { $_->{name} =~ /^atrest/ } @VARIANTS)
	{
		my $env = psql1("SELECT string_agg(c || ' ' || n, ', ' ORDER BY c) FROM (SELECT (atrest.envelope(doc)).compression AS c, "
			  . "count(*) AS n FROM b_$v->{name} GROUP BY 1) s");
		note("$v->{label}: values by compressor before encryption: $env");
	}
}

# ---------------------------------------------------------------------------------------
# Full read
# ---------------------------------------------------------------------------------------

if ($want{read})
{
	step("full read: SELECT sum(length(<doc as JSON text>)), sum(hashtext(...)) FROM <variant>, a warm-up and $C{repeats} rounds");
	# What each variant reads back must be what plain jsonb reads back: the total length
	# and a checksum of the text, compared in every round (warm-up included).
	my %sum;
	my $check = sub {
		my ($v, $r, $got) = @_;
		$sum{jsonb}{$r} = $got if $v->{name} eq 'jsonb';
		push @{ $sum{got}{$r} }, [ $v, $got ];
	};
	for my $v (@VARIANTS)
	{
		my $out = psql1("SELECT sum(length($v->{get})) || '/' || sum(hashtext($v->{get})::bigint) FROM b_$v->{name};");
		$check->($v, 0, $out);
	}
	for my $r (1 .. $C{repeats})
	{
		my @line;
		for my $v (rotated($r - 1, @VARIANTS))
		{
			my ($ms, $cpu, $wait, $out) = timed_cpu(undef,
				"SELECT sum(length($v->{get})) || '/' || sum(hashtext($v->{get})::bigint) FROM b_$v->{name};");
			$check->($v, $r, $out->[0]);
			record('data', 'read', $v->{name}, $N, $r, $ms / 1000, 's');
			record('data', 'read_cpu', $v->{name}, $N, $r, $cpu, 's');
			record('data', 'read_wait', $v->{name}, $N, $r, $wait, 's');
			push @line, sprintf('%s %.2f s (cpu %.2f)', $v->{label}, $ms / 1000, $cpu);
		}
		print "   round $r: ", join(', ', @line), "\n";
	}
	for my $r (sort { $a <=> $b } keys %{ $sum{got} })
	{
		for my $g (@{ $sum{got}{$r} })
		{
			next if $g->[1] eq $sum{jsonb}{$r};
			push @FAILURES, sprintf('%s read back other text than jsonb in %s: length/checksum %s, jsonb %s',
				$g->[0]{label}, $r ? "round $r" : 'the warm-up', $g->[1], $sum{jsonb}{$r});
			note("FAILURE: $FAILURES[-1]");
		}
	}
}

# ---------------------------------------------------------------------------------------
# Point lookups
# ---------------------------------------------------------------------------------------

if ($want{lookup})
{
	step("point lookups: pgbench, $C{clients} clients, $C{repeats} rounds of $C{lookup_seconds} s per variant");
	for my $v (@VARIANTS)
	{
		my $f = "$work/lookup_$v->{name}.sql";
		spew($f, "\\set id random(1, $N)\nSELECT $v->{get} FROM b_$v->{name} WHERE id = :id;\n");
		chmod 0644, $f;
	}
	# warm-up, untimed: one second per variant
	pgbench("$work/lookup_$_->{name}.sql", 1) for @VARIANTS;
	for my $r (1 .. $C{repeats})
	{
		my @line;
		for my $v (rotated($r - 1, @VARIANTS))
		{
			my ($tps, $lat) = pgbench("$work/lookup_$v->{name}.sql", $C{lookup_seconds});
			record('data', 'lookup', $v->{name}, $N, $r, $tps, 'tps');
			record('data', 'lookup_latency', $v->{name}, $N, $r, $lat, 'ms');
			push @line, sprintf('%s %.0f', $v->{label}, $tps);
		}
		print "   round $r (TPS): ", join(', ', @line), "\n";
	}
}

# ---------------------------------------------------------------------------------------
# Candidate compressors (compressors.c) over the staging documents
# ---------------------------------------------------------------------------------------

my $COMPRESSORS;
if ($want{compressors})
{
	my $n = $C{compressor_docs} < $N ? $C{compressor_docs} : $N;
	step("compressors: pglz, LZ4 fast (acceleration 1..8), LZ4HC 2, zstd (-5..3) over $n documents' jsonb binary form, "
		  . "$C{compressor_rounds} rounds");
	# The staging column is STORAGE external, so its TOAST chunks hold each document's jsonb
	# binary form uncompressed: exactly the bytes TOAST and encrypted_jsonb compress.
	my $toast = psql1("SELECT reltoastrelid::regclass FROM pg_class WHERE oid = 'staging'::regclass");
	my $docs = "$work/compressor_docs.txt";
	# (every staging document is TOASTed: the smallest is ~10 KB)
	psql("\\copy (SELECT string_agg(chunk_data, '' ORDER BY chunk_seq) FROM $toast "
		  . "GROUP BY chunk_id ORDER BY chunk_id LIMIT $n) TO '$docs'");
	my $got = () = slurp($docs) =~ /^\\\\x/mg;
	die "bench.pl: exported $got documents for the compressor benchmark, expected $n\n" unless $got == $n;
	# COPY doubles the backslash of "\x"
	system('sed', '-i', 's/^\\\\\\\\x/\\\\x/', $docs) == 0 or die "sed failed\n";
	my $bin = "$work/compressors";
	# libpgcommon.a (pglz) is in the system installation's pkglibdir (postgresql-server-dev-15)
	my $pgc = $ENV{PG_CONFIG} // "$PG_BIN/pg_config";
	my $libdir = `$pgc --pkglibdir`;
	chomp $libdir;
	my $cc = "cc -O2 -Wall -Wextra -o $bin $here/compressors.c $libdir/libpgcommon.a $libdir/libpgport.a -llz4 -lzstd -lcrypto";
	my $out = `$cc 2>&1`;
	if ($?)
	{
		note("compressors: building compressors.c failed (it needs liblz4-dev, libzstd-dev, libssl-dev): $out");
	}
	else
	{
		$COMPRESSORS = `$bin --rounds $C{compressor_rounds} --csv $results/compressors.csv $docs 2>/dev/null`;
		die "bench.pl: compressors failed\n" if $?;
		spew("$results/compressors.txt", $COMPRESSORS);
		print $COMPRESSORS;
	}
	unlink $docs;
}

# ---------------------------------------------------------------------------------------
# Key operations against the number of encrypted rows
# ---------------------------------------------------------------------------------------

my $cmk = 0;
my @KEYOPS;
my $pkcs11_module = '';
my %KDB;	# row count => database holding that many encrypted rows
if ($want{keyops})
{
	step('key operations: is the PKCS#11 provider usable?');
	my ($kv, $err) = psql("SELECT atrest.provider_selftest('pkcs11', '$C{cmk_uri}')", allow_fail => 1);
	if (defined $kv)
	{
		chomp $kv;
		$cmk = 1;
		$pkcs11_module = psql1('SHOW atrest.pkcs11_module');
		note("provider_selftest('pkcs11', '$C{cmk_uri}'): ok, key version $kv ($pkcs11_module)");
	}
	else
	{
		$err =~ s/\s+$//;
		note("no usable PKCS#11 key ($err): enable_cmk and disable_cmk are not measured");
	}
	@KEYOPS = ([ 'rotate', 'rotate_database_key() (service key)', 'SELECT atrest.rotate_database_key();' ]);
	push @KEYOPS,
	  [ 'enable_cmk', 'enable_cmk() (SoftHSM)', "SELECT atrest.enable_cmk('pkcs11', '$C{cmk_uri}');" ],
	  [ 'rotate_cmk', 'rotate_database_key() (under the CMK)', 'SELECT atrest.rotate_database_key();' ],
	  [ 'disable_cmk', 'disable_cmk()', 'SELECT atrest.disable_cmk();' ]
	  if $cmk;

	# One database per row count, each with its own key hierarchy, so that the rounds can
	# visit them in turn (interleaved, like the other workloads).
	for my $size (@{ $C{keyop_sizes} })
	{
		my $db = "atrest_bench_k$size";
		$KDB{$size} = $db;
		my $t0 = time;
		psql("DROP DATABASE IF EXISTS $db;\nCREATE DATABASE $db;", db => 'postgres');
		psql("CREATE EXTENSION pg_atrest;\n"
			  . "CREATE TABLE k (id int, v atrest.encrypted_jsonb(result)) WITH (autovacuum_enabled = off);\n"
			  . "INSERT INTO k SELECT g, jsonb_build_object('id', g, 'note', md5(g::text)) "
			  . "FROM generate_series(1, $size) g;\nVACUUM ANALYZE k;", db => $db);
		note(sprintf('key operations: %s encrypted rows loaded into %s in %.1f s', commify($size), $db, time - $t0));
	}
	psql('CHECKPOINT;');
	step(sprintf('key operations: %d rounds over %s encrypted rows', $C{keyop_repeats},
		join(', ', map { commify($_) } @{ $C{keyop_sizes} })));
	# Each round opens a session per database, warms it up untimed (the key cache, and the
	# PKCS#11 module's load and login, which a session pays once), then times each
	# operation in its own transaction.
	my $warm = 'SELECT count(v::jsonb) FROM k WHERE id = 1;'
	  . ($cmk ? "\nSELECT atrest.provider_selftest('pkcs11', '$C{cmk_uri}');" : '');
	for my $r (1 .. $C{keyop_repeats})
	{
		for my $size (rotated($r - 1, @{ $C{keyop_sizes} }))
		{
			my ($ms) = timed_db($KDB{$size}, $warm, map { $_->[2] } @KEYOPS);
			my $i = 0;
			record('keys', $_->[0], 'atrest', $size, $r, $ms->[ $i++ ], 'ms') for @KEYOPS;
		}
	}
	for my $size (@{ $C{keyop_sizes} })
	{
		print "   ", commify($size), ' rows: ',
		  join(', ', map { sprintf('%s %.1f ms', $_->[0], med('keys', $_->[0], 'atrest', $size)) } @KEYOPS), "\n";
		# The values are untouched by all this and still open.
		my $step = $size >= 100_000 ? 997 : 97;
		my $ok = psql1("SELECT count(*) = count(*) FILTER (WHERE (v->>'id')::int = id) AND count(*) = $size / $step "
			  . "FROM k WHERE id % $step = 0", db => $KDB{$size});
		die "bench.pl: values do not read back after the key operations\n" unless $ok eq 't';
	}
}

# ---------------------------------------------------------------------------------------
# Root-key provider calls
# ---------------------------------------------------------------------------------------

my %PROV;
sub perf_setup
{
	return 0 unless $pkcs11_module && -f $pkcs11_module;
	return 0 if system('command -v perf >/dev/null 2>&1') != 0;
	system("perf probe -q -d 'atrestbench:*' >/dev/null 2>&1");
	my @ev;
	for my $p ([ 'decrypt_init', 'C_DecryptInit' ], [ 'encrypt_init', 'C_EncryptInit' ],
		[ 'open_session', 'C_OpenSession' ], [ 'login', 'C_Login' ], [ 'initialize', 'C_Initialize' ])
	{
		push @ev, '-a', "atrestbench:$p->[0]=$p->[1]";
	}
	my $out = `perf probe -q -x '$pkcs11_module' @ev 2>&1`;
	if ($?)
	{
		note("perf probe failed, counting by session_last_unwrap only: $out");
		return 0;
	}
	$perf_probes = 1;
	return 1;
}

sub perf_start
{
	my $data = "$work/perf.data";
	unlink $data;
	my $pid = fork() // die "fork: $!\n";
	if ($pid == 0)
	{
		open(STDOUT, '>', '/dev/null');
		open(STDERR, '>', "$work/perf.err");
		exec('perf', 'record', '-q', '-a', '-e', 'sched:sched_process_fork', '-e', 'atrestbench:*', '-o', $data)
		  or POSIX::_exit(127);
	}
	push @CHILDREN, $pid;
	sleep 1.5;	# perf record needs a moment before its probes fire
	return $pid;
}

# Stop perf and count the probe hits of each process: { pid => { event => n } }, and
# which processes the sandbox's postmaster forked while it ran (parallel workers).
sub perf_stop
{
	my $pid = shift;
	kill 'INT', $pid;
	waitpid($pid, 0);
	@CHILDREN = grep { $_ != $pid } @CHILDREN;
	my (%count, %parent);
	for (`perf script -i $work/perf.data -F pid,event,trace 2>/dev/null`)
	{
		if (/^\s*(\d+)\s+atrestbench:(\w+)/)
		{
			$count{$1}{$2}++;
		}
		elsif (/sched_process_fork:.*\bpid=(\d+).*child_pid=(\d+)/)
		{
			$parent{$2} = $1;
		}
	}
	my ($postmaster) = slurp("$ENV{ATREST_PGDATA}/postmaster.pid") =~ /^(\d+)/;
	my %forked = map { $_ => 1 } grep { $postmaster && $parent{$_} == $postmaster } keys %parent;
	return (\%count, \%forked);
}

# Sum of one probe's hits over a set of processes.
sub hits
{
	my ($count, $event, @pids) = @_;
	my $n = 0;
	$n += $count->{$_}{$event} // 0 for @pids;
	return $n;
}

if ($want{provider} && $cmk)
{
	my $reads = $C{provider_reads};
	my ($big) = sort { $b <=> $a } keys %KDB;
	$reads = $big if $reads > $big;
	my $kdb = $KDB{$big};
	step("provider calls of one backend reading " . commify($reads) . " values under the CMK");
	psql("SELECT atrest.enable_cmk('pkcs11', '$C{cmk_uri}');", db => $kdb);
	my $use_perf = perf_setup();
	my $perf = $use_perf ? perf_start() : undef;
	# a serial plan: this is about one backend (parallel workers are measured below)
	my ($ms, $lines) = timed_db($kdb, 'SET max_parallel_workers_per_gather = 0;',
		'SELECT pg_backend_pid();',
		'SELECT session_last_unwrap IS NULL FROM atrest.key_status;',
		'SELECT length(v::text) > 0 FROM k WHERE id = 1;',
		"SELECT to_char(session_last_unwrap, 'HH24:MI:SS.US') FROM atrest.key_status;",
		"SELECT count(*), sum(length(v::text)) FROM k WHERE id <= $reads;",
		"SELECT to_char(session_last_unwrap, 'HH24:MI:SS.US') FROM atrest.key_status;");
	my ($bpid, $before, $one, $t1, $cnt, $t2) = @$lines;
	my ($counts) = $perf ? perf_stop($perf) : (undef);
	($cnt) = split /\|/, $cnt;
	$PROV{reads} = $cnt;
	$PROV{read_ms} = $ms->[4];
	$PROV{ts_unwraps} = ($before eq 't' && $t1 eq $t2) ? 1 : undef;
	note(sprintf('read %s values in %.0f ms; session_last_unwrap: none before, %s after the first value, %s after all (%s)',
		commify($cnt), $ms->[4], $t1, $t2,
		defined $PROV{ts_unwraps} ? 'one unwrap' : 'MORE THAN ONE unwrap'));
	if ($counts)
	{
		my $c = $counts->{$bpid} // {};
		$PROV{perf_unwraps} = $c->{decrypt_init} // 0;
		$PROV{perf_detail} = join(', ', map { "$_ " . ($c->{$_} // 0) } qw(initialize open_session login decrypt_init encrypt_init));
		note("PKCS#11 calls of that backend (perf uprobes on $pkcs11_module): $PROV{perf_detail}");
	}

	if ($use_perf)
	{
		# One call per TTL: a backend reading for a few TTLs.
		my $secs = $C{ttl_seconds};
		$perf = perf_start();
		my ($ms2, $lines2) = timed_db($kdb, "SET max_parallel_workers_per_gather = 0;\nSET atrest.key_cache_ttl = 1;\nSELECT pg_backend_pid();",
			"DO \$\$ DECLARE t0 timestamptz := clock_timestamp(); BEGIN "
			  . "WHILE clock_timestamp() < t0 + interval '$secs s' LOOP "
			  . "PERFORM sum(length(v::text)) FROM k WHERE id <= 20000; END LOOP; END \$\$;");
		($counts) = perf_stop($perf);
		$PROV{ttl_unwraps} = $counts->{ $lines2->[0] }{decrypt_init} // 0;
		$PROV{ttl_seconds} = $ms2->[0] / 1000;
		# the first use unwraps, then one more each time a second has passed
		$PROV{ttl_expected} = 1 + floor($PROV{ttl_seconds});
		note(sprintf('with atrest.key_cache_ttl = 1 s, a backend reading for %.1f s made %d unwrap calls (expected at most %d)',
			$PROV{ttl_seconds}, $PROV{ttl_unwraps}, $PROV{ttl_expected}));

		# Parallel queries: each worker is a process of its own, with a key cache of its own.
		# (a parallel plan even for the quick run's smaller table; the workers do all the
		# scanning and the rows to decrypt are spread over the table, so that every worker
		# that starts decrypts some)
		my $q = "SELECT sum(length(v::text)) FROM k WHERE id % 50 = 0;";
		my $par_set = "SET parallel_setup_cost = 0;\nSET parallel_tuple_cost = 0;\nSET min_parallel_table_scan_size = 0;\n"
		  . "SET parallel_leader_participation = off;\n";
		my $plan = psql("${par_set}EXPLAIN (COSTS OFF) $q", db => $kdb);
		my ($planned) = $plan =~ /Workers Planned: (\d+)/;
		my $nq = 10;
		$perf = perf_start();
		my ($out, $err) = psql("${par_set}SELECT pg_backend_pid();\n" . join("\n", ($q) x $nq), db => $kdb, keep_going => 1);
		my ($counts3, $forked) = perf_stop($perf);
		my ($lpid) = ($out // '') =~ /^(\d+)$/m;
		my @workers = grep { $_ != ($lpid // 0) } keys %$forked;
		my @callers = grep { hits($counts3, 'decrypt_init', $_) } @workers;
		$PROV{par_started} = scalar @workers;
		$PROV{par_planned} = $planned // 0;
		$PROV{par_queries} = $nq;
		$PROV{par_leader} = hits($counts3, 'decrypt_init', $lpid // 0);
		$PROV{par_workers} = scalar @callers;
		$PROV{par_calls} = hits($counts3, 'decrypt_init', @workers);
		$PROV{par_logins} = hits($counts3, 'login', @workers);
		$PROV{par_errors} = () = ($err // '') =~ /ERROR:/g;
		($PROV{par_error}) = ($err // '') =~ /(ERROR:.*\n(?:DETAIL:.*)?)/;
		note(sprintf('%d parallel queries (%d workers planned each, %d processes started): the leader made %d unwrap call(s); '
			  . '%d worker processes made %d (%d logins); %d queries failed%s', $nq, $PROV{par_planned}, $PROV{par_started},
			$PROV{par_leader}, $PROV{par_workers},
			$PROV{par_calls}, $PROV{par_logins}, $PROV{par_errors},
			$PROV{par_error} ? ": $PROV{par_error}" =~ s/\n/ /gr : ''));
	}
	cleanup();
	psql('SELECT atrest.disable_cmk();', db => $kdb);
}

# ---------------------------------------------------------------------------------------
# Fresh connections under a customer-managed key behind a slow KMS (issue 11)
# ---------------------------------------------------------------------------------------
# An application without a connection pooler opens a connection per request.  Under a
# CMK, what does each fresh connection's first read cost, and how many calls does the KMS
# see?  The KMS is the example adapter (test/kms/openssl-kms) behind a wrapper that logs
# every call and sleeps 20 ms first, as a cloud KMS's round trip would.  The service key
# gives the reference: same table, same statements, no provider.

my %CONN;

# The first read of a fresh connection: psql's \timing of one point lookup, the
# connection set-up excluded.  Returns the milliseconds.
sub first_read_ms
{
	my ($id) = @_;
	my $out = `$RUNUSER -u postgres -- $PG_BIN/psql -X -q -At -d $DB -c '\\timing on' -c 'SELECT length(doc::text) FROM b_atrest WHERE id = $id' 2>&1`;
	die "bench.pl: first read failed:\n$out\n" if $?;
	my ($ms) = $out =~ /^Time: ([\d.]+) ms/m;
	die "bench.pl: no timing in:\n$out\n" unless defined $ms;
	return $ms;
}

# glibc's malloc tunable that keeps every backend from trimming its heap (see below).
my $NOTRIM = 'GLIBC_TUNABLES=glibc.malloc.trim_threshold=8388608';

# Restart the sandbox cluster, with one more variable in the postmaster's environment
# (its backends inherit it) or, with undef, without.
sub restart_server
{
	my ($env) = @_;
	my @cmd = ($RUNUSER, '-u', 'postgres', '--', 'env', defined $env ? ($env) : (),
		"$PG_BIN/pg_ctl", '-D', $ENV{ATREST_PGDATA}, '-l', "$SB/server.log", '-w', '-t', '60', 'restart');
	my $out = `@{[ join(' ', map { "'$_'" } @cmd) ]} 2>&1`;
	die "bench.pl: restarting the server failed:\n$out\n" if $?;
}

# $n fresh connections, one after another; returns their first-read times.
sub fresh_connections
{
	my ($n) = @_;
	return map { first_read_ms(1 + ($_ * 7919) % $N) } 1 .. $n;
}

# $n fresh connections at once (forked psql processes, each waiting on an advisory lock
# held here until all are connected, so that their first reads really race).
sub connection_burst
{
	my ($n) = @_;
	my $hold = "$work/burst_hold.sql";
	spew($hold, "SELECT pg_advisory_lock(4711);\n"
		  . "DO \$\$ BEGIN FOR i IN 1 .. 3000 LOOP EXIT WHEN (SELECT count(*) FROM pg_locks "
		  . "WHERE locktype = 'advisory' AND objid = 4711 AND NOT granted) >= $n; PERFORM pg_sleep(0.01); "
		  . "END LOOP; END \$\$;\n");
	chmod 0644, $hold;
	my @pids;
	my $holder = fork();
	if ($holder == 0)
	{
		exec($RUNUSER, '-u', 'postgres', '--', "$PG_BIN/psql", '-X', '-q', '-At', '-d', $DB, '-f', $hold) or exit 1;
	}
	sleep 0.05 until psql1("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4711 AND granted") eq '1';
	for my $i (1 .. $n)
	{
		my $pid = fork();
		if ($pid == 0)
		{
			open(STDOUT, '>', '/dev/null');
			exec($RUNUSER, '-u', 'postgres', '--', "$PG_BIN/psql", '-X', '-q', '-At', '-d', $DB,
				'-c', "SELECT pg_advisory_lock_shared(4711)",
				'-c', "SELECT length(doc::text) FROM b_atrest WHERE id = $i") or exit 1;
		}
		push @pids, $pid;
	}
	# the holder's pg_sleep ends as soon as it sees all $n waiting (or after 30 s)
	my $bad = 0;
	for my $pid ($holder, @pids) { waitpid($pid, 0); $bad++ if $?; }
	die "bench.pl: $bad of the burst's psql processes failed\n" if $bad;
}

sub kms_unwraps
{
	my $log = "$work/kms/calls.log";
	return 0 unless -f $log;
	return scalar(() = slurp($log) =~ /^\d+ unwrap$/mg);
}

if ($want{connections})
{
	my $n = $quick ? 20 : 60;
	my $rounds = $quick ? 2 : 3;
	my $kms = "$work/kms";
	remove_tree($kms);
	make_path("$kms/keys");
	system('cp', "$here/../kms/openssl-kms", "$kms/openssl-kms") == 0 or die "bench.pl: no test/kms/openssl-kms\n";
	spew("$kms/slow-kms", <<"EOS");
#!/bin/sh
# test/bench: the example KMS adapter with 20 ms of latency, logging each call
req=\$(cat)
op=\$(printf '%s' "\$req" | sed -n 's/.*"operation" *: *"\\([a-z]*\\)".*/\\1/p')
echo "\$\$ \$op" >>'$kms/calls.log'
sleep 0.02
printf '%s' "\$req" | ATREST_KMS_DIR='$kms/keys' exec perl '$kms/openssl-kms'
EOS
	chmod 0755, "$kms/slow-kms", "$kms/openssl-kms";
	system('chown', '-R', 'postgres:postgres', $kms) == 0 or die;
	system("$RUNUSER -u postgres -- env ATREST_KMS_DIR=$kms/keys perl $kms/openssl-kms create benchcmk >/dev/null") == 0
	  or die "bench.pl: openssl-kms create failed\n";
	my $t0 = time;
	system("echo '{\"version\":1,\"operation\":\"version\",\"key\":\"kms:openssl/benchcmk\"}' | $RUNUSER -u postgres -- $kms/slow-kms >/dev/null") == 0
	  or die "bench.pl: the slow KMS adapter does not answer\n";
	$CONN{adapter_ms} = (time - $t0) * 1000;
	unlink "$kms/calls.log";
	psql("ALTER SYSTEM SET atrest.kms_command = '$kms/slow-kms';\nSELECT pg_reload_conf();", db => 'postgres');
	sleep 0.5;
	my $enable = "SELECT atrest.enable_cmk('command', 'kms:openssl/benchcmk');";
	my $pgb = "$work/conn_lookup.sql";
	spew($pgb, "\\set id random(1, $N)\nSELECT length(doc::text) FROM b_atrest WHERE id = :id;\n");
	chmod 0644, $pgb;
	step(sprintf('fresh connections: %d connections each reading one value, service key and a CMK behind a KMS '
		  . 'adapter of %.0f ms (20 ms of it a sleep); then pgbench point lookups, 8 clients, %d rounds', $n, $CONN{adapter_ms}, $rounds));
	fresh_connections(3);	# warm-up, untimed
	for my $r (1 .. $rounds)
	{
		for my $k (rotated($r - 1, 'service', 'cmk'))
		{
			psql($enable) if $k eq 'cmk';
			my $before = kms_unwraps();
			my @ms = fresh_connections($n);
			record('conn', 'first_read', $k, $n, $r, median(@ms), 'ms');
			my $seq = kms_unwraps() - $before;
			record('conn', 'unwraps', $k, $n, $r, $seq, 'calls');
			# the same number at once, behind a barrier, after recheck_keys() made the
			# key cache forget the database key
			psql('SELECT atrest.recheck_keys();');
			$before = kms_unwraps();
			connection_burst($n);
			my $burst = kms_unwraps() - $before;
			record('conn', 'burst_unwraps', $k, $n, $r, $burst, 'calls');
			my ($tps) = pgbench($pgb, $C{lookup_seconds}, clients => 8);
			record('conn', 'lookup', $k, $n, $r, $tps, 'tps');
			psql('SELECT atrest.disable_cmk();') if $k eq 'cmk';
			print sprintf("   round %d, %s: first read median %.2f ms; %d unwrap calls in %d connections one after another, "
				  . "%d in %d at once; pgbench %.0f TPS\n", $r, $k, median(@ms), $seq, $n, $burst, $n, $tps);
		}
	}
	# The same pgbench with glibc's heap trimming out of the way: a diagnostic, not a goal.
	# A point lookup of a 23 KB document frees well over 128 KB at the end of each query;
	# whether glibc then gives the top of the heap back to the kernel (and the next query
	# faults it in again) depends on where each backend's earlier allocations landed, not
	# on the key.  With the postmaster started under a trim threshold of 8 MB no backend
	# trims, so the ratio below compares only what each query does.
	step("fresh connections: pgbench point lookups again, the server restarted with $NOTRIM");
	restart_server($NOTRIM);
	for my $r (1 .. $rounds)
	{
		for my $k (rotated($r - 1, 'service', 'cmk'))
		{
			psql($enable) if $k eq 'cmk';
			my ($tps) = pgbench($pgb, $C{lookup_seconds}, clients => 8);
			record('conn', 'lookup_notrim', $k, $n, $r, $tps, 'tps');
			psql('SELECT atrest.disable_cmk();') if $k eq 'cmk';
			print sprintf("   round %d, %s, no heap trimming: pgbench %.0f TPS\n", $r, $k, $tps);
		}
	}
	restart_server(undef);
	psql("ALTER SYSTEM RESET atrest.kms_command;\nSELECT pg_reload_conf();", db => 'postgres');
	$CONN{n} = $n;
	$CONN{rounds} = $rounds;
}

# ---------------------------------------------------------------------------------------
# Retention purge under load
# ---------------------------------------------------------------------------------------

my %PURGE;
if ($want{purge})
{
	my $have_store = psql1("SELECT to_regprocedure('atrest.purge_expired(integer)') IS NOT NULL "
		  . "AND to_regclass('atrest.analyze_results') IS NOT NULL "
		  . "AND to_regprocedure('atrest.get_analyze_result(text,uuid)') IS NOT NULL");
	if ($have_store ne 't')
	{
		note('purge: pending (atrest.purge_expired and the results store are not in this build)');
		$PURGE{pending} = 1;
	}
	else
	{
		my $n = $C{purge_rows};
		my $live = $C{purge_live};
		step("purge: loading " . commify($n) . " expired and " . commify($live) . " live full-size analyze results");
		my $t0 = time;
		# Expired results as complete_analyze leaves them, but inserted in bulk (begin and
		# complete calls for each would take longer than the purge), with ids and times in
		# ascending order so that the load appends to the indexes.  Every result, expired
		# or live, is a full-size generated document from the staging table (13 KB of JSON
		# on average), sealed and TOASTed as in use, so that the purge deletes TOAST chunks.
		psql(<<"EOF");
SELECT atrest.create_model('bench-model', 'benchmark');
-- bulk set-up only: skip the per-row foreign-key trigger (the model exists)
SET session_replication_role = replica;
INSERT INTO atrest.analyze_results
    (result_id, model_id, status, created_at, last_updated_at, completed_at, expires_at, result)
SELECT ('00000000-0000-4000-8000-' || lpad(to_hex(g), 12, '0'))::uuid, 'bench-model', 'succeeded',
       c - interval '3 s', c, c, c + interval '24 hours', s.doc
  FROM generate_series(1, $n) g
  JOIN staging s ON s.id = 1 + (g % $N),
       LATERAL (SELECT now() - interval '25 hours' - ($n - g) * interval '10 ms' AS c) t;
INSERT INTO atrest.analyze_results
    (result_id, model_id, status, created_at, last_updated_at, completed_at, expires_at, result)
SELECT ('00000000-0000-4000-9000-' || lpad(to_hex(g), 12, '0'))::uuid, 'bench-model', 'succeeded',
       now(), now(), now(), now() + interval '24 hours', s.doc
  FROM generate_series(1, $live) g
  JOIN staging s ON s.id = 1 + ((g * 7) % $N);
RESET session_replication_role;
VACUUM ANALYZE atrest.analyze_results;
CHECKPOINT;
EOF
		my ($avg, $toast) = split /\|/, psql1("SELECT round(avg(pg_column_size(result))), "
			  . "pg_size_pretty(pg_relation_size((SELECT reltoastrelid FROM pg_class "
			  . "WHERE oid = 'atrest.analyze_results'::regclass))) FROM atrest.analyze_results");
		$PURGE{value_bytes} = $avg;
		note(sprintf('loaded in %.1f s: %s bytes per stored result on average, TOAST table %s', time - $t0, $avg, $toast));
		my $script = "$work/purge_load.sql";
		spew($script, <<"EOF");
\\set r random(1, $live)
SELECT status FROM atrest.get_analyze_result('bench-model', ('00000000-0000-4000-9000-' || lpad(to_hex(:r::int), 12, '0'))::uuid);
SELECT atrest.complete_analyze(atrest.begin_analyze('bench-model'), '{"status": "succeeded", "analyzeResult": {"content": "new"}}');
EOF
		chmod 0644, $script;

		# Lock waits: every wait longer than deadlock_timeout is logged (log_lock_waits), and
		# deadlock_timeout is 1 ms while the purge is measured, so the server log lists every
		# wait of any consequence, by process.  Both are reset afterwards.
		psql("ALTER SYSTEM SET log_lock_waits = on;\nALTER SYSTEM SET deadlock_timeout = '1ms';\n"
			  . "SELECT pg_reload_conf();", db => 'postgres');
		sleep 0.5;
		my $server_log = "$SB/server.log";

		# Baseline: the same clients without a purge (after a warm-up).
		my $base_s = $quick ? 3 : 10;
		step("purge: baseline, $C{clients} clients reading and inserting results for $base_s s (after 1 s of warm-up)");
		remove_tree("$work/pblog");
		make_path("$work/pblog");
		system('chown', 'postgres:postgres', "$work/pblog");
		pgbench($script, 1);
		my $log0 = -s $server_log // 0;
		my ($btps) = pgbench($script, $base_s, log => "$work/pblog/base");
		my @blat = map { $_->[1] } read_pgbench_logs("$work/pblog/base");
		$PURGE{base_tps} = $btps;
		$PURGE{base_p99} = percentile(99, @blat);
		$PURGE{base_max} = percentile(100, @blat);
		$PURGE{base_waits} = scalar(my @bw = lock_waits($server_log, $log0, -s $server_log // 0));

		step("purge: SELECT atrest.purge_expired() while the clients keep going");
		my $stop = "$work/pblog/stop";
		my $loader = fork() // die "fork: $!\n";
		if ($loader == 0)
		{
			# pgbench in 5-second chunks until told to stop, so that the load covers the
			# whole purge however long it takes
			my $i = 0;
			while (!-e $stop)
			{
				$i++;
				system("$RUNUSER -u postgres -- $PG_BIN/pgbench -n -M prepared -c $C{clients} -j 2 -T 5 "
					  . "-f $script -l --log-prefix=$work/pblog/load$i $DB >$work/pblog/load$i.out 2>&1");
			}
			POSIX::_exit(0);
		}
		push @CHILDREN, $loader;
		sleep 3;
		my $log1 = -s $server_log // 0;
		my $p0 = time;
		my ($ms, $lines) = timed(undef, 'SELECT pg_backend_pid();', 'SELECT atrest.purge_expired();');
		my $p1 = time;
		my $log2 = -s $server_log // 0;
		spew($stop, '');
		waitpid($loader, 0);
		@CHILDREN = ();
		psql("ALTER SYSTEM RESET log_lock_waits;\nALTER SYSTEM RESET deadlock_timeout;\nSELECT pg_reload_conf();",
			db => 'postgres');
		my ($purge_pid, $purged) = @$lines;
		$PURGE{rows} = $purged;
		$PURGE{seconds} = $ms->[1] / 1000;
		$PURGE{rate} = $PURGE{rows} / $PURGE{seconds};
		record('purge', 'purge_expired', 'atrest', $n, 1, $PURGE{rate}, 'rows/s');

		my @during = grep { $_->[0] >= $p0 && $_->[0] <= $p1 } read_pgbench_logs("$work/pblog/load");
		my @lat = map { $_->[1] } @during;
		$PURGE{load_tps} = @during / ($p1 - $p0);
		$PURGE{load_p99} = percentile(99, @lat);
		$PURGE{load_max} = percentile(100, @lat);
		my @waits = lock_waits($server_log, $log1, $log2);
		my @client_waits = grep { $_->{pid} != $purge_pid } @waits;
		my @purge_waits = grep { $_->{pid} == $purge_pid } @waits;
		$PURGE{lock_waits} = scalar @client_waits;
		$PURGE{purge_lock_waits} = scalar @purge_waits;
		$PURGE{lock_wait_max} = 0;
		for (@client_waits) { $PURGE{lock_wait_max} = $_->{ms} if $_->{ms} > $PURGE{lock_wait_max}; }
		$PURGE{lock_wait_first} = @client_waits ? $client_waits[0]{text} : undef;
		my $left = psql1("SELECT count(*) FROM atrest.analyze_results WHERE expires_at < now()");
		$PURGE{left} = $left;
		note(sprintf('purged %s rows in %.1f s: %s rows/s; %s left expired', commify($PURGE{rows}),
			$PURGE{seconds}, commify(int($PURGE{rate})), $left));
		note(sprintf('clients: baseline %.0f TPS, p99 %.1f ms, max %.1f ms; during the purge %.0f TPS, p99 %.1f ms, max %.1f ms',
			$PURGE{base_tps}, $PURGE{base_p99}, $PURGE{base_max}, $PURGE{load_tps}, $PURGE{load_p99}, $PURGE{load_max}));
		note(sprintf('lock waits longer than 1 ms (log_lock_waits): %d by clients during the purge (longest %.1f ms), '
			  . '%d by the purge, %d by clients in the baseline', $PURGE{lock_waits}, $PURGE{lock_wait_max},
			$PURGE{purge_lock_waits}, $PURGE{base_waits}));
		note("first client lock wait: $PURGE{lock_wait_first}") if $PURGE{lock_wait_first};
	}
}

# Lock waits that log_lock_waits reported in the server log between two byte offsets:
# one entry per wait (process and lock), { pid, ms (the longest it was reported waiting,
# or the time it acquired the lock after), text (the first line about it) }.
sub lock_waits
{
	my ($file, $from, $to) = @_;
	open(my $fh, '<', $file) or return ();
	seek($fh, $from, 0);
	my $chunk = '';
	read($fh, $chunk, $to - $from) if $to > $from;
	close $fh;
	my %w;
	for (split /\n/, $chunk)
	{
		next unless /LOG:\s+process (\d+) (?:still waiting for|acquired) (.+?) after ([\d.]+) ms/;
		my ($pid, $lock, $ms) = ($1, $2, $3);
		my $key = "$pid/$lock";
		$w{$key} //= { pid => $pid, ms => 0, text => $_ };
		$w{$key}{ms} = $ms if $ms > $w{$key}{ms};
	}
	return sort { $a->{text} cmp $b->{text} } values %w;
}

# pgbench per-transaction logs (-l): [end time (epoch s), latency ms] for every transaction.
sub read_pgbench_logs
{
	my $prefix = shift;
	my @tx;
	for my $f (glob("$prefix*"))
	{
		next if $f =~ /\.out$/;
		open(my $fh, '<', $f) or next;
		while (<$fh>)
		{
			my @c = split;
			next unless @c >= 6;
			push @tx, [ $c[4] + $c[5] / 1e6, $c[2] / 1000 ];
		}
		close $fh;
	}
	return @tx;
}

sub percentile
{
	my ($p, @v) = @_;
	return undef unless @v;
	@v = sort { $a <=> $b } @v;
	my $i = int(($p / 100) * $#v + 0.5);
	return $v[$i];
}

# ---------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------

my $load_end = (split ' ', slurp('/proc/loadavg'))[0];
my $elapsed = time - $t_start;
my @report;
my @md;
my @goals;

# One row of the goal table: verdict (undef: not measured), what, target, measured.
sub goal
{
	my ($ok, $what, $target, $measured) = @_;
	my $mark = !defined $ok ? 'not measured' : $ok ? 'met' : 'MISSED';
	push @goals, [ $mark, $what, $target, $measured ];
}

my $machine = sprintf('%d cores (%s), %.1f GB RAM, PostgreSQL %s, %s; load average %s at the start, %s at the end',
	$nproc, $cpu // '?', ($mem_kb // 0) / 1048576, $pg_version, $openssl, $load_start, $load_end);
push @report, sprintf('pg_atrest benchmark, %s run, %s', $quick ? 'quick' : 'full', strftime('%Y-%m-%d %H:%M UTC', gmtime));
push @report, "machine: $machine";

if ($want{insert})
{
	my @V = @VARIANTS;
	push @report, '',
	  sprintf('%d analyze results, %.1f KB of compact JSON on average (%.1f KB as jsonb prints it, %.1f KB as jsonb); median of %d interleaved rounds',
		$N, $DATA{avg_compact} / 1024, $DATA{avg_text} / 1024, $DATA{avg_jsonb} / 1024, $C{repeats});
	my @rows = (
		[ "bulk insert, $N rows (s)", 'insert', 2, 0 ],
		[ '  backend CPU time (s)', 'insert_cpu', 2, 0 ],
		[ '  waiting for a CPU (s)', 'insert_wait', 2, 0 ],
		[ 'full read as JSON text (s)', 'read', 2, 0 ],
		[ '  backend CPU time (s)', 'read_cpu', 2, 0 ],
		[ '  waiting for a CPU (s)', 'read_wait', 2, 0 ],
		[ "point lookups, $C{clients} clients (TPS)", 'lookup', 0, 1 ],
		[ 'size, heap + TOAST (MB)', 'size', 1, 0 ],
		[ 'size with the primary key (MB)', 'size_total', 1, 0 ],
		[ 'bytes per value (pg_column_size)', 'value_bytes', 0, 0 ],
	);
	my $w = 34;
	my $cw = 2 + (sort { $b <=> $a } 15, map { length $_->{label} } @V)[0];
	push @report, sprintf("%-${w}s", 'workload') . join('', map { sprintf('%*s', $cw, $_->{label}) } @V);
	push @md, '| workload | ' . join(' | ', map { $_->{label} eq 'encrypt aes' ? "`encrypt(..., 'aes')`" : "`$_->{label}`" } @V) . ' |',
	  '|---|' . join('', map { '---:|' } @V);
	for my $row (@rows)
	{
		my ($title, $wl, $dec, $higher) = @$row;
		next if ($wl =~ /^read/ && !$want{read}) || ($wl eq 'lookup' && !$want{lookup});
		my $base = med('data', $wl, 'jsonb', $N);
		my $base4 = (grep { $_->{name} eq 'lz4' } @V) ? med('data', $wl, 'lz4', $N) : undef;
		my @vals = map { med('data', $wl, $_->{name}, $N) } @V;
		push @report, sprintf("%-${w}s", $title) . join('', map { sprintf('%*s', $cw, fmt($_, $dec)) } @vals);
		unless ($wl eq 'value_bytes' || $wl =~ /_wait$/)
		{
			push @report, sprintf("%-${w}s", '  ratio to jsonb (pglz)') . join('', map { sprintf('%*s', $cw, ratio_str($_, $base)) } @vals);
			push @report, sprintf("%-${w}s", '  ratio to jsonb lz4') . join('', map { sprintf('%*s', $cw, ratio_str($_, $base4)) } @vals)
			  if defined $base4;
		}
		push @md, "| $title | " . join(' | ', map {
			my $r = ratio_str($vals[$_], $base);
			my $r4 = ratio_str($vals[$_], $base4);
			($wl eq 'value_bytes' || $wl =~ /_wait$/) ? fmt($vals[$_], $dec)
			  : fmt($vals[$_], $dec) . " ($r" . (defined $base4 ? "; $r4 of lz4" : '') . ')'
		} 0 .. $#V) . ' |';
	}
	# The goals of issue 16: encryption costs (almost) nothing against jsonb as a user who
	# cares about speed stores it (COMPRESSION lz4), and stays no slower than jsonb as
	# PostgreSQL ships it (pglz).  Time: lower is better; size: lower is better.
	# Each encrypted_jsonb variant (LZ4, the default, and zstd) is held to the same goals.
	my $has_lz4 = grep { $_->{name} eq 'lz4' } @VARIANTS;
	for my $ev (grep { $_->{name} =~ /^atrest/ } @VARIANTS)
	{
		my ($vn, $vl) = ($ev->{name}, $ev->{label});
		for my $g (
			[ 'insert', 'bulk insert', 'lz4', 1.10 ],
			[ 'read', 'full read', 'lz4', 1.05 ],
			[ 'size', 'size (heap + TOAST)', 'lz4', 1.00 ],
			[ 'insert', 'bulk insert', 'jsonb', 1.05 ],
			[ 'read', 'full read', 'jsonb', 1.05 ])
		{
			my ($wl, $what, $base, $max) = @$g;
			my $basename = $base eq 'lz4' ? 'jsonb lz4' : 'jsonb (pglz)';
			if (($wl eq 'read' && !$want{read}) || ($base eq 'lz4' && !$has_lz4))
			{
				goal(undef, "$vl $what", sprintf('<= %.2fx of %s', $max, $basename), 'not measured');
				next;
			}
			my $r = med('data', $wl, $vn, $N) / med('data', $wl, $base, $N);
			my $cpu = $wl eq 'size' ? '' : sprintf(' (CPU %.2fx)',
				med('data', "${wl}_cpu", $vn, $N) / med('data', "${wl}_cpu", $base, $N));
			goal($r <= $max, "$vl $what", sprintf('<= %.2fx of %s', $max, $basename), sprintf('%.2fx%s', $r, $cpu));
		}
		if ($want{lookup})
		{
			my $lk = med('data', 'lookup', $vn, $N) / med('data', 'lookup', 'jsonb', $N);
			my $lk4 = $has_lz4 ? sprintf(' (%.2fx of jsonb lz4)', med('data', 'lookup', $vn, $N) / med('data', 'lookup', 'lz4', $N)) : '';
			goal($lk >= 0.9, "$vl point-lookup TPS", '>= 0.90x of jsonb (pglz)', sprintf('%.2fx%s', $lk, $lk4));
		}
	}
	my $pi = med('data', 'insert', 'pgp', $N) / med('data', 'insert', 'atrest', $N);
	my $pr = $want{read} ? med('data', 'read', 'pgp', $N) / med('data', 'read', 'atrest', $N) : undef;
	goal((defined $pr ? ($pi >= 5 && $pr >= 5) : undef), 'faster than pgp_sym_encrypt, insert and read', '>= 5x',
		sprintf('insert %.1fx, read %s', $pi, defined $pr ? sprintf('%.1fx', $pr) : 'n/a'));
}

if (@KEYOPS)
{
	my @sizes = @{ $C{keyop_sizes} };
	my ($lo, $hi) = ($sizes[0], $sizes[-1]);
	push @report, '', sprintf('key operations, ms (median of %d rounds, each operation in its own transaction; fastest of all rounds in brackets)', $C{keyop_repeats});
	push @report, sprintf('%-40s', 'operation') . join('', map { sprintf('%14s', commify($_) . ' rows') } @sizes)
	  . sprintf('%14s', 'ratio');
	push @md, '', '| key operation (ms) | ' . join(' | ', map { commify($_) . ' rows' } @sizes)
	  . ' | ' . commify($hi) . ' / ' . commify($lo) . ' |',
	  '|---|' . join('', map { '---:|' } @sizes) . '---:|';
	my ($flat, $fast) = (1, 1);
	my @worst;
	for my $op (@KEYOPS)
	{
		my @m = map { med('keys', $op->[0], 'atrest', $_) } @sizes;
		my $r = $m[-1] / $m[0];
		$flat = 0 if $r > 1.2;
		$fast = 0 if grep { $_ >= 50 } @m;
		push @worst, sprintf('%s %.2fx', $op->[0], $r);
		my @mins = map { my $s = $_; min_of(map { $_->[5] } grep { $_->[0] eq 'keys' && $_->[1] eq $op->[0] && $_->[3] == $s } @RAW) } @sizes;
		push @report, sprintf('%-40s', $op->[1]) . join('', map { sprintf('%14s', sprintf('%.1f (%.1f)', $m[$_], $mins[$_])) } 0 .. $#m)
		  . sprintf('%13.2fx', $r);
		push @md, "| `$op->[1]` | " . join(' | ', map { sprintf('%.1f', $_) } @m) . sprintf(' | %.2fx |', $r);
	}
	my $maxms = 0;
	for my $op (@KEYOPS) { for (@sizes) { my $m = med('keys', $op->[0], 'atrest', $_); $maxms = $m if $m > $maxms; } }
	goal($flat && $fast, 'key operations flat in the row count, and fast',
		sprintf('%s rows within 1.2x of %s; < 50 ms', commify($hi), commify($lo)),
		sprintf('%s; slowest median %.1f ms', join(', ', @worst), $maxms));
}

if (%PROV)
{
	push @report, '', 'root-key provider calls (CMK on SoftHSM)';
	my $line = sprintf('one backend reading %s values: ', commify($PROV{reads}));
	if (defined $PROV{perf_unwraps})
	{
		$line .= "$PROV{perf_unwraps} unwrap call(s) counted at the PKCS#11 module ($PROV{perf_detail})";
	}
	else
	{
		$line .= defined $PROV{ts_unwraps} ? 'one unwrap (session_last_unwrap unchanged after the first value)'
		  : 'more than one unwrap (session_last_unwrap changed)';
	}
	push @report, $line;
	push @report, sprintf('with atrest.key_cache_ttl = 1 s, reading for %.1f s: %d unwrap calls (at most %d expected)',
		$PROV{ttl_seconds}, $PROV{ttl_unwraps}, $PROV{ttl_expected}) if defined $PROV{ttl_unwraps};
	my $par;
	if (defined $PROV{par_queries})
	{
		$par = sprintf('%d parallel queries (%d workers planned each): leader %d unwrap call(s), %d worker processes %d calls '
			  . '(%d PKCS#11 logins); %d of the queries failed', $PROV{par_queries}, $PROV{par_planned}, $PROV{par_leader},
			$PROV{par_workers}, $PROV{par_calls}, $PROV{par_logins}, $PROV{par_errors});
		push @report, $par;
		push @report, "  first failure: " . ($PROV{par_error} =~ s/\n/ /gr) if $PROV{par_error};
	}
	my $one = defined $PROV{perf_unwraps} ? $PROV{perf_unwraps} == 1 : defined $PROV{ts_unwraps};
	my $ttl_ok = !defined $PROV{ttl_unwraps} || ($PROV{ttl_unwraps} <= $PROV{ttl_expected} && $PROV{ttl_unwraps} >= $PROV{ttl_expected} - 1);
	goal($one && $ttl_ok, 'root-key provider calls', 'one per backend per key-cache TTL',
		$line
		  . (defined $PROV{ttl_unwraps} ? sprintf('; %d calls in %.1f s at a 1 s TTL', $PROV{ttl_unwraps}, $PROV{ttl_seconds}) : '')
		  . (defined $PROV{par_queries} ? sprintf('; %d parallel queries made %d calls in workers%s',
			$PROV{par_queries}, $PROV{par_calls}, $PROV{par_errors} ? " and $PROV{par_errors} failed" : '') : ''));
	push @md, '', "Provider calls: $line."
	  . (defined $PROV{ttl_unwraps} ? sprintf(' With `atrest.key_cache_ttl = 1`, a backend reading for %.1f s made %d unwrap calls.',
		$PROV{ttl_seconds}, $PROV{ttl_unwraps}) : '')
	  . ($par ? " $par." : '');
}
elsif ($want{provider})
{
	goal(undef, 'root-key provider calls', 'one per backend per key-cache TTL', 'no usable PKCS#11 key in this sandbox');
}

if (%CONN)
{
	my $n = $CONN{n};
	my @u = map { $_->[5] } grep { $_->[0] eq 'conn' && $_->[1] eq 'unwraps' && $_->[2] eq 'cmk' } @RAW;
	my @b = map { $_->[5] } grep { $_->[0] eq 'conn' && $_->[1] eq 'burst_unwraps' && $_->[2] eq 'cmk' } @RAW;
	my ($umax) = sort { $b <=> $a } @u, @b;
	my ($fs, $fc) = map { med('conn', 'first_read', $_, $n) } qw(service cmk);
	my ($ts, $tc) = map { med('conn', 'lookup', $_, $n) } qw(service cmk);
	push @report, '', sprintf('fresh connections under a CMK (KMS adapter: %.0f ms a call, 20 ms of it a sleep), %d rounds', $CONN{adapter_ms}, $CONN{rounds}),
	  sprintf('  first read of a fresh connection, median of %d: service key %.2f ms, CMK %.2f ms (%.2fx)', $n, $fs, $fc, $fc / $fs),
	  sprintf('  KMS unwrap calls per %d connections: one after another %s; all at once %s', $n, join(', ', @u), join(', ', @b)),
	  sprintf('  pgbench point lookups, 8 clients: service key %.0f TPS, CMK %.0f TPS (%.2fx)', $ts, $tc, $tc / $ts);
	push @md, '', sprintf('Fresh connections under a CMK behind a KMS adapter of %.0f ms: %d connections made %s unwrap calls one after '
		  . 'another and %s all at once; a fresh connection\'s first read took %.2f ms against %.2f ms on the service key (%.2fx); '
		  . 'point lookups with 8 clients ran at %.0f TPS against %.0f (%.2fx).',
		$CONN{adapter_ms}, $n, join('/', @u), join('/', @b), $fc, $fs, $fc / $fs, $tc, $ts, $tc / $ts);
	goal($umax <= 2, "$n fresh connections under a CMK", '<= 2 KMS unwrap calls', sprintf('at most %d (one after another: %s; at once: %s)',
		$umax, join(', ', @u), join(', ', @b)));
	goal($fc / $fs <= 1.2, 'first read of a fresh connection under a CMK', '<= 1.20x of the service key', sprintf('%.2fx', $fc / $fs));
	goal($tc / $ts >= 0.98, 'point-lookup TPS, 8 clients, under a CMK', '>= 0.98x of the service key', sprintf('%.2fx', $tc / $ts));
	my ($ns, $nc) = map { med('conn', 'lookup_notrim', $_, $n) } qw(service cmk);
	if (defined $ns && defined $nc)
	{
		push @report, sprintf('  the same with glibc\'s heap trimming off (%s; a diagnostic): service key %.0f TPS, CMK %.0f TPS (%.2fx)',
			$NOTRIM, $ns, $nc, $nc / $ns);
		$md[-1] .= sprintf(' With glibc\'s heap trimming off (`%s`, a diagnostic): %.0f TPS against %.0f (%.2fx).',
			$NOTRIM, $nc, $ns, $nc / $ns);
	}
}

if ($PURGE{pending})
{
	push @report, '', 'retention purge: pending (atrest.purge_expired is not in this build)';
	goal(undef, 'retention purge of full-size results', '>= 20,000 rows/s; no client lock wait > 1 ms',
		'pending: the results store is not in this build');
}
elsif (%PURGE)
{
	my $waits = sprintf('%d client lock wait(s) longer than 1 ms during the purge%s (%d in the %d s baseline); '
		  . 'the purge itself waited %d time(s)', $PURGE{lock_waits},
		$PURGE{lock_waits} ? sprintf(', the longest %.1f ms', $PURGE{lock_wait_max}) : '',
		$PURGE{base_waits}, $quick ? 3 : 10, $PURGE{purge_lock_waits});
	push @report, '', sprintf('retention purge of %s expired full-size results (%s bytes each as stored): %s rows in %.1f s = %s rows/s (%s left expired)',
		commify($C{purge_rows}), $PURGE{value_bytes}, commify($PURGE{rows}), $PURGE{seconds}, commify(int($PURGE{rate})), $PURGE{left});
	push @report, sprintf('  %d clients reading and inserting results: baseline %.0f TPS (p99 %.1f ms, max %.1f ms), '
		  . 'during the purge %.0f TPS (p99 %.1f ms, max %.1f ms)',
		$C{clients}, $PURGE{base_tps}, $PURGE{base_p99}, $PURGE{base_max}, $PURGE{load_tps}, $PURGE{load_p99},
		$PURGE{load_max});
	push @report, "  lock waits (log_lock_waits, deadlock_timeout = 1 ms): $waits";
	push @report, "  first client lock wait: $PURGE{lock_wait_first}" if $PURGE{lock_wait_first};
	push @md, '', sprintf('Retention: `atrest.purge_expired()` removed %s expired full-size results (%s bytes each as stored) in %.1f s '
		  . '(%s rows/s) while %d clients read and inserted results: %.0f TPS during the purge against %.0f without it, '
		  . 'p99 latency %.1f ms against %.1f ms, max %.1f ms against %.1f ms. Lock waits logged by `log_lock_waits` '
		  . '(`deadlock_timeout = 1ms`): %s.',
		commify($PURGE{rows}), $PURGE{value_bytes}, $PURGE{seconds}, commify(int($PURGE{rate})), $C{clients}, $PURGE{load_tps},
		$PURGE{base_tps}, $PURGE{load_p99}, $PURGE{base_p99}, $PURGE{load_max}, $PURGE{base_max}, $waits);
	goal($PURGE{rate} >= 20000 && $PURGE{lock_waits} == 0, 'retention purge of full-size results',
		'>= 20,000 rows/s; no client lock wait > 1 ms',
		sprintf('%s rows/s; %d client lock wait(s)', commify(int($PURGE{rate})), $PURGE{lock_waits}));
}

if ($COMPRESSORS)
{
	push @report, '', 'candidate compressors (compressors.c, CPU time per document):', map { "  $_" } split /\n/, $COMPRESSORS;
	push @md, '', '```', (split /\n/, $COMPRESSORS), '```';
}

{
	my ($w1, $w2) = (46, 30);
	for (@goals) { $w1 = length($_->[1]) if length($_->[1]) > $w1; $w2 = length($_->[2]) if length($_->[2]) > $w2; }
	push @report, '', 'goals (reported, never asserted):',
	  sprintf("  %-12s  %-${w1}s  %-${w2}s  %s", 'verdict', 'goal', 'target', 'measured'),
	  map { sprintf("  %-12s  %-${w1}s  %-${w2}s  %s", @$_) } @goals;
}
push @report, '', 'FAILED:', map { "  $_" } @FAILURES if @FAILURES;
push @report, '', 'notes:', map { "  $_" } @NOTES if @NOTES;
push @report, '', sprintf('total time %.1f min', $elapsed / 60);

push @md, '', '| goal | target | measured | verdict |', '|---|---|---|---|',
  map { "| $_->[1] | $_->[2] | $_->[3] | **$_->[0]** |" } @goals;
unshift @md, "Machine: $machine.", '';

print "\n", join("\n", @report), "\n";

# CSV, Markdown, machine description
{
	my $csv = "section,workload,variant,rows,repeat,value,unit\n";
	$csv .= join(',', @$_) . "\n" for @RAW;
	spew("$results/bench.csv", $csv);
	my %seen;
	my $sum = "section,workload,variant,rows,median,unit,ratio_to_jsonb,ratio_to_jsonb_lz4\n";
	for my $r (@RAW)
	{
		my $key = join('/', @$r[ 0 .. 3 ]);
		next if $seen{$key}++;
		my $m = med(@$r[ 0 .. 3 ]);
		my $base = $r->[0] eq 'data' ? med('data', $r->[1], 'jsonb', $r->[3]) : undef;
		my $base4 = $r->[0] eq 'data' ? med('data', $r->[1], 'lz4', $r->[3]) : undef;
		$sum .= join(',', @$r[ 0 .. 3 ], sprintf('%.4f', $m), $r->[6],
			defined $base && $base > 0 ? sprintf('%.4f', $m / $base) : '',
			defined $base4 && $base4 > 0 ? sprintf('%.4f', $m / $base4) : '') . "\n";
	}
	spew("$results/summary.csv", $sum);
	spew("$results/goals.csv", "verdict,goal,target,measured\n"
		  . join('', map { join(',', map { my $f = $_; $f =~ s/"/""/g; "\"$f\"" } @$_) . "\n" } @goals));
	spew("$results/summary.md", join("\n", @md) . "\n");
	spew("$results/report.txt", join("\n", @report) . "\n");
	spew("$results/machine.txt", "$machine\n" . `lscpu 2>/dev/null` . "\n" . slurp('/proc/meminfo'));
}

# Chart
sub chart
{
	my $term;
	for my $t ('pngcairo size 1200,520 font "sans,10"', 'png size 1200,520')
	{
		my $probe = `echo 'set terminal $t' | gnuplot 2>&1`;
		if ($? == 0 && $probe eq '')
		{
			$term = $t;
			last;
		}
	}
	return 'gnuplot with a PNG terminal not found' unless $term;
	my @V = grep { $_->{name} ne 'jsonb' } @VARIANTS;
	my @wl = ([ 'insert', 'bulk insert' ], [ 'read', 'full read' ], [ 'lookup', 'point lookup' ], [ 'size', 'size' ]);
	@wl = grep { ($_->[0] ne 'read' || $want{read}) && ($_->[0] ne 'lookup' || $want{lookup}) } @wl;
	my $dat = '"workload" ' . join(' ', map { "\"$_->{label}\"" } @V) . "\n";
	for my $w (@wl)
	{
		my $base = med('data', $w->[0], 'jsonb', $N);
		$dat .= "\"$w->[1]\" " . join(' ', map {
			my $m = med('data', $w->[0], $_->{name}, $N);
			# cost relative to jsonb: time and size as they are, lookups as time per lookup
			$w->[0] eq 'lookup' ? sprintf('%.4f', $base / $m) : sprintf('%.4f', $m / $base)
		} @V) . "\n";
	}
	spew("$results/chart_ratios.dat", $dat);
	my $kd = '';
	my @sizes = @KEYOPS ? @{ $C{keyop_sizes} } : ();
	for my $s (@sizes)
	{
		$kd .= join(' ', $s, map { sprintf('%.3f', med('keys', $_->[0], 'atrest', $s)) } @KEYOPS) . "\n";
	}
	spew("$results/chart_keyops.dat", $kd);
	my $gp = <<"EOF";
set terminal $term
set termoption noenhanced
set output '$results/bench.png'
set multiplot layout 1,2 title sprintf("pg_atrest benchmark: %d analyze results of %.1f KB JSON, %d cores", $N, @{[ sprintf('%.1f', ($DATA{avg_compact} // 0) / 1024) ]}, $nproc)
set title "cost relative to plain jsonb: time, 1/TPS, size (lower is better; log scale)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set logscale y 2
set yrange [0.05:*]
set ytics ("1/16" 0.0625, "1/8" 0.125, "1/4" 0.25, "1/2" 0.5, "1" 1, "2" 2, "4" 4, "8" 8, "16" 16, "32" 32, "64" 64)
set grid ytics
set key top left
set xtics nomirror
set arrow from graph 0, first 1 to graph 1, first 1 nohead dt 2 lw 1.5 lc rgb "black"
plot for [i=2:@{[ scalar(@V) + 1 ]}] '$results/chart_ratios.dat' using i:xtic(1) title columnheader(i)
unset arrow
unset logscale y
unset style
set style data linespoints
set title "key operations against encrypted rows (median ms; goal: flat, < 50 ms)"
set logscale x 10
set xrange [5000:2000000]
set xtics ("10 k" 10000, "100 k" 100000, "1 M" 1000000)
set yrange [0:*]
set ytics auto
unset xlabel
set ylabel "ms"
set key below
EOF
	if (@KEYOPS)
	{
		$gp .= 'plot ' . join(', ', map { sprintf(q{'%s' using 1:%d title '%s' lw 2 pt 7}, "$results/chart_keyops.dat", $_ + 2, $KEYOPS[$_][1]) } 0 .. $#KEYOPS) . "\n";
	}
	$gp .= "unset multiplot\n";
	spew("$results/chart.gp", $gp);
	my $out = `gnuplot '$results/chart.gp' 2>&1`;
	return $? ? "gnuplot failed: $out" : undef;
}

if ($want{insert})
{
	my $err = chart();
	print $err ? "chart: $err\n" : "chart: $results/bench.png\n";
}
print "results: $results/ (bench.csv, summary.csv, summary.md, report.txt)\n";

psql(join("\n", map { "DROP DATABASE IF EXISTS $_;" } $DB, values %KDB), db => 'postgres', allow_fail => 1);
if (@FAILURES)
{
	print "bench: FAILED: ", join('; ', @FAILURES), "\n";
	exit 1;
}
exit 0;
