# Known-answer tests of the sealed-value format, without a server: test/unit/
# envelope_core_test.c is compiled against src/envelope_core.c and run.  It checks
# XAES-256-GCM (the format new values are sealed in) against the C2SP specification's
# vectors and its accumulated randomized test, that a value sealed by pg_atrest 1.0
# (format 1, AES-256-GCM) still opens, the layout of a format-2 value, and bounded
# decompression of zstd payloads (hostile frames and lying raw lengths).

use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use AtrestTest;

my $src = AtrestTest::srcdir();
my $dir = PostgreSQL::Test::Utils::tempdir('unit');
my $bin = "$dir/envelope_core_test";
my $cc = $ENV{CC} // 'cc';

my ($out, $err) = ('', '');
my $built = IPC::Run::run(
	[
		$cc, '-O1', '-Wall', '-Wextra', '-Werror', "-I$src/src",
		"$src/test/unit/envelope_core_test.c", "$src/src/envelope_core.c",
		'-lcrypto', '-llz4', '-lzstd', '-o', $bin
	],
	'>', \$out, '2>', \$err);
ok($built, 'test/unit/envelope_core_test.c builds against src/envelope_core.c')
  or diag("$out$err");

SKIP:
{
	skip 'the unit test did not build', 1 unless $built;
	my ($stdout, $stderr) = ('', '');
	my $ran = IPC::Run::run([$bin], '>', \$stdout, '2>', \$stderr);
	note($stdout);
	ok($ran && $stdout !~ /^not ok/m && $stdout =~ /^1\.\.(\d+)$/m && $1 >= 20,
		'every known-answer check passes')
	  or diag("$stdout$stderr");
}

done_testing();
