# A short fuzz run of both libFuzzer harnesses (test/fuzz/run 20): the sealed-value parser
# and decryption (fuzz_envelope) and the KMIP TTLV decoder that reads every KMIP server's
# answer (fuzz_kmip_ttlv).  Each committed corpus is replayed, then libFuzzer mutates it
# for 20 seconds per harness under AddressSanitizer and UndefinedBehaviorSanitizer.  Passes
# when nothing crashed, leaked, hung or broke one of the harnesses' invariants (a sealed
# value opens to what was sealed; one flipped bit or a truncation stops it from opening; a
# decoded KMIP message stays inside its input and re-encodes to the same bytes).  Needs no
# server.
#
# Skipped, saying so, when clang's libFuzzer is not installed and this test cannot install
# it (it runs as the postgres user): `apt-get install clang libclang-rt-14-dev`, or run
# `test/sandbox fuzz` once as root.  ATREST_FUZZ_SECONDS overrides the duration.

use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use AtrestTest;

my $seconds = $ENV{ATREST_FUZZ_SECONDS} // 20;
my $run = srcdir() . '/test/fuzz/run';
plan skip_all => "no $run" unless -f $run;

my ($stdout, $stderr);
my $ok = IPC::Run::run([ 'bash', $run, $seconds ], '>', \$stdout, '2>', \$stderr);
my $rc = $? >> 8;
note($stdout);
note($stderr) if $stderr;

if (!$ok && $rc == 2 && $stderr =~ /not installed/)
{
	plan skip_all => "clang's libFuzzer is not installed: apt-get install clang libclang-rt-14-dev";
}

is($rc, 0, "test/fuzz/run $seconds exits 0");
like($stdout, qr/no crash, leak, hang or invariant violation/, 'the fuzzer reports a clean run');
foreach my $harness ('fuzz_envelope', 'fuzz_kmip_ttlv')
{
	like($stdout, qr/==> fuzzing $harness for .*?\nstat::number_of_executed_units:\s+[1-9]\d{3,}\n/s,
		"$harness executed at least a thousand inputs");
}
diag("fuzz run failed:\n$stdout\n$stderr") if $rc != 0;

done_testing();
