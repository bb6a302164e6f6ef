# A short fuzz run of every libFuzzer harness (test/fuzz/run 10): the sealed-value parser
# and decryption (envelope), the PKCS#11 key URI parser with its percent and hex decoders
# (pkcs11_uri), and the KMS adapter's answer parser with its JSON pre-scan and base64url
# decoder (kms_answer), and the KMIP TTLV decoder that reads every KMIP server's answer
# (kmip_ttlv).  Each harness's committed corpus is replayed, then libFuzzer
# mutates it for 10 seconds under AddressSanitizer and UndefinedBehaviorSanitizer.
# Passes when nothing crashed, leaked, hung or broke one of the harnesses' invariants (a
# sealed value opens to what was sealed and stops opening after a flipped bit; a parsed
# URI written back parses to the same key; decoders round-trip and refuse non-canonical
# input; the pre-scan lets no deep nesting or non-ASCII \u escape reach the JSON parser;
# a decoded KMIP message stays inside its input and re-encodes to the same bytes),
# and every harness ran at least a thousand inputs.  Needs no server.
#
# Skipped, saying so, when clang's libFuzzer is not installed and this test cannot install
# it (it runs as the postgres user): `apt-get install clang libclang-rt-14-dev`, or run
# `test/sandbox fuzz` once as root.  ATREST_FUZZ_SECONDS overrides the duration per
# harness.

use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use AtrestTest;

my $seconds = $ENV{ATREST_FUZZ_SECONDS} // 10;
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
like($stdout, qr/no crash, leak, hang or invariant violation in envelope pkcs11_uri kms_answer kmip_ttlv/,
	'the fuzzer reports a clean run of all four harnesses');
for my $h (qw(envelope pkcs11_uri kms_answer kmip_ttlv))
{
	like($stdout, qr/^$h: stat::number_of_executed_units:\s+[1-9]\d{3,}/m,
		"the $h harness executed at least a thousand inputs");
}
diag("fuzz run failed:\n$stdout\n$stderr") if $rc != 0;

done_testing();
