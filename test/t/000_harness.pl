
# Proves the TAP plumbing: a PostgreSQL::Test::Cluster node loads pg_atrest, the extension
# installs, a value survives an encrypt/decrypt round trip, and the AtrestTest helpers
# read table files from disk.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use_ok('AtrestTest');

my $node = PostgreSQL::Test::Cluster->new('harness');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'pg_atrest'\n");
$node->start;

is($node->safe_psql('postgres', 'SHOW shared_preload_libraries'),
	'pg_atrest', 'pg_atrest is preloaded');

$node->safe_psql('postgres', 'CREATE EXTENSION pg_atrest');
is( $node->safe_psql(
		'postgres',
		q{SELECT extversion FROM pg_extension WHERE extname = 'pg_atrest'}),
	'1.1',
	'CREATE EXTENSION pg_atrest installs version 1.1');

is( $node->safe_psql(
		'postgres', q{SELECT '{"a":1}'::atrest.encrypted_jsonb::jsonb}),
	'{"a": 1}',
	'encrypted_jsonb round trip');

# The on-disk helper finds plaintext where there is some.
$node->safe_psql(
	'postgres', q{
	CREATE TABLE plain (id int, doc jsonb);
	INSERT INTO plain VALUES (1, '{"marker": "harness-plaintext-marker"}');});
my @files = AtrestTest::relation_files($node, 'plain');
ok(@files >= 1, 'relation_files finds the heap file');
ok( AtrestTest::files_contain('harness-plaintext-marker', @files) == 1,
	'a plain jsonb value is readable in the table file');

$node->stop;

done_testing();
