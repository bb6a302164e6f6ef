# Copyright: pg_atrest authors; same license as pg_atrest.
#
# `make installcheck` passes against a server that has pg_atrest installed but not
# preloaded (shared_preload_libraries empty) and no atrest.* setting in its configuration,
# as a DBA runs it against a packaged cluster: every pg_regress test runs in the database
# pg_regress creates, and the module is loaded by whatever first needs it.  The test runs
# the Makefile's own installcheck target from a copy of the Makefile, sql/ and expected/
# (what a source tarball or a package's test step has), so nothing of the sandbox's own
# configuration (pg_cron, the SoftHSM token's settings) helps.

use strict;
use warnings;

use File::Copy qw(copy);
use File::Path qw(make_path);
use IPC::Run ();
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use AtrestTest;

my $node = atrest_node('plain', cron => 0, pkcs11 => 0, create_extension => 0,
	conf => "shared_preload_libraries = ''\n");
is($node->safe_psql('postgres', 'SHOW shared_preload_libraries'), '', 'nothing is preloaded');
is($node->safe_psql('postgres', q{SELECT count(*) FROM pg_settings WHERE name LIKE 'atrest.%'}),
	'0', 'no atrest setting is known before the module is loaded');

# a copy of what installcheck needs, outside the tree being tested
my $src = srcdir();
my $dir = PostgreSQL::Test::Utils::tempdir('installcheck');
make_path("$dir/sql/include", "$dir/expected");
copy("$src/Makefile", "$dir/Makefile") or die "copy Makefile: $!";
# sql/include holds what the tests include (\i), not tests
for my $sub ('sql', 'sql/include', 'expected')
{
	opendir(my $dh, "$src/$sub") or die "$src/$sub: $!";
	for my $f (grep { /\.(sql|out)$/ } readdir $dh)
	{
		copy("$src/$sub/$f", "$dir/$sub/$f") or die "copy $sub/$f: $!";
	}
	closedir $dh;
}

my $pg_config = $ENV{PG_CONFIG} // 'pg_config';
my ($stdout, $stderr);
my $ok = IPC::Run::run(
	[ 'make', '-C', $dir, "PG_CONFIG=$pg_config", 'installcheck' ],
	'>', \$stdout, '2>', \$stderr,
	init => sub {
		$ENV{PGHOST} = $node->host;
		$ENV{PGPORT} = $node->port;
		$ENV{PGUSER} = 'postgres';
		delete $ENV{PGDATABASE};
	});
my @tests = grep { !/^pg_atrest(_proxy)?--/ } map { s{.*/}{}r =~ s/\.sql$//r } glob("$src/sql/*.sql");
ok($ok, 'make installcheck passes against a server without shared_preload_libraries')
  or diag("stdout:\n$stdout\nstderr:\n$stderr\n"
	  . (-f "$dir/regression.diffs" ? slurp_file("$dir/regression.diffs") : ''));
like($stdout, qr/All ${\ scalar @tests} tests passed/, 'every pg_regress test ran (' . scalar(@tests) . ')');
is($node->safe_psql('postgres', 'SHOW shared_preload_libraries'), '', 'still nothing preloaded');

done_testing();
