# Copyright: pg_atrest authors; same license as pg_atrest.
#
# pg_atrest not preloaded (loaded by the first statement of a session that needs it):
# - plain types on the wire: a statement analysed before the module is loaded keeps the
#   encrypted types (documented); every statement after the load gets the plain types;
# - the index guard: CREATE INDEX, ALTER TABLE ... ADD UNIQUE and CREATE TABLE ... UNIQUE
#   on an encrypted column, as the very first statement of a session, by a superuser and
#   by a table owner without other rights, are refused (the event trigger loads the
#   module before the statement runs), and nothing was built.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use AtrestTest;

my $node = atrest_node('lazy', cron => 0, pkcs11 => 0, conf => "shared_preload_libraries = ''\n");
is($node->safe_psql('postgres', 'SHOW shared_preload_libraries'), '', 'pg_atrest is not preloaded');
$node->safe_psql(
	'postgres', q{
	CREATE TABLE t (id int, doc atrest.encrypted_jsonb, note atrest.encrypted_text);
	INSERT INTO t VALUES (1, '{"a": 1}', 'one');
	CREATE ROLE owner_role LOGIN;
	GRANT CREATE, USAGE ON SCHEMA public TO owner_role;
	CREATE TABLE owned (id int, doc atrest.encrypted_jsonb);
	ALTER TABLE owned OWNER TO owner_role;});

# one session: Describe before the module is loaded, a statement that loads it, Describe
my $out = $node->safe_psql(
	'postgres', q{
	SELECT count(*) FROM pg_class WHERE relname = 't';
	SELECT doc, note FROM t \gdesc
	SELECT doc, note FROM t;
	SELECT doc, note FROM t \gdesc
});
my @lines = split /\n/, $out;
is_deeply(
	\@lines,
	[ '1',
	  'doc|atrest.encrypted_jsonb', 'note|atrest.encrypted_text',
	  '{"a": 1}|one',
	  'doc|jsonb', 'note|text' ],
	'before the load a Describe sees the encrypted types, after it the plain types');

# the index guard, first statement of fresh sessions
for my $stmt ('CREATE INDEX t_doc ON t (doc)', 'ALTER TABLE t ADD UNIQUE (note)',
	'CREATE TABLE t2 (doc atrest.encrypted_jsonb PRIMARY KEY)')
{
	my ($rc, $stdout, $stderr) = $node->psql('postgres', $stmt);
	isnt($rc, 0, "first statement \"$stmt\" fails");
	like($stderr, qr/cannot create an index on encrypted column/, "\"$stmt\" is refused by the guard");
}
my ($rc, $stdout, $stderr) =
  $node->psql('postgres', 'CREATE INDEX owned_doc ON owned (doc)', extra_params => [ '-U', 'owner_role' ]);
isnt($rc, 0, 'a table owner\'s CREATE INDEX fails');
like($stderr, qr/cannot create an index on encrypted column "doc" of table "owned"/,
	'a table owner\'s CREATE INDEX is refused by the guard');
is( $node->safe_psql(
		'postgres', q{SELECT count(*) FROM pg_index WHERE indrelid IN ('t'::regclass, 'owned'::regclass)}),
	'0',
	'no index exists');
is($node->safe_psql('postgres', q{SELECT to_regclass('t2') IS NULL}), 't', 't2 was not created');

done_testing();
