# Copyright: pg_atrest authors; same license as pg_atrest.
#
# pg_atrest not preloaded (loaded by the first statement of a session that needs it):
# - plain types on the wire: a statement analysed before the module is loaded keeps the
#   encrypted types (documented); every statement after the load gets the plain types;
# - the index guard: CREATE INDEX, ALTER TABLE ... ADD UNIQUE and CREATE TABLE ... UNIQUE
#   on an encrypted column, as the very first statement of a session, by a superuser and
#   by a table owner without other rights, are refused (the event trigger loads the
#   module before the statement runs), and nothing was built;
# - the settings: every one the README documents exists once the module is loaded (LOAD or
#   the first use of an encrypted value); values from postgresql.conf and from SET before
#   the load are in force after it, and a bad value SET before the load is refused with a
#   WARNING at the load (PostgreSQL's placeholder rules); ALTER SYSTEM works after LOAD.

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

# --- settings without preloading ---------------------------------------------------
my $readme = slurp_file(srcdir() . '/README.md');
my ($table) = $readme =~ /^### Settings\n(.*?)^### /ms;
my @documented = sort($table =~ /^\| `(atrest\.[a-z0-9_]+)` \|/mg);
cmp_ok(scalar(@documented), '>=', 20, 'the README documents the settings in a table');
is($node->safe_psql('postgres', q{SELECT count(*) FROM pg_settings WHERE name LIKE 'atrest.%'}),
	'0', 'before the load a session knows no atrest setting');
my $after_load = $node->safe_psql('postgres',
	q{LOAD 'pg_atrest'; SELECT name FROM pg_settings WHERE name LIKE 'atrest.%' ORDER BY name COLLATE "C"});
is_deeply([ split /\n/, $after_load ], \@documented,
	'after LOAD every documented setting exists, and every setting is documented');

# postgresql.conf (sighup) and SET before the load (user and superuser settings)
$node->append_conf('postgresql.conf', "atrest.kms_timeout = '25s'\natrest.service_key_timeout = '7s'\n");
$node->reload;
$out = $node->safe_psql(
	'postgres', q{
	SET atrest.result_ttl = '2 hours';
	SET atrest.client_types = encrypted;
	SET atrest.key_cache_ttl = 60;
	SELECT note FROM t;
	SHOW atrest.result_ttl;
	SHOW atrest.client_types;
	SHOW atrest.key_cache_ttl;
	SHOW atrest.kms_timeout;
	SHOW atrest.service_key_timeout;
	SELECT atrest._result_ttl();});
is_deeply(
	[ split /\n/, $out ],
	[ 'one', '2 hours', 'encrypted', '1min', '25s', '7s', '02:00:00' ],
	'postgresql.conf values and values SET before the first use are in force after it');

($rc, $stdout, $stderr) = $node->psql('postgres', q{
	SET atrest.result_ttl = '-1 hour';
	SELECT note FROM t;
	SHOW atrest.result_ttl;});
is($stdout, "one\n24 hours", 'a bad value SET before the load leaves the default');
like($stderr, qr/WARNING:  invalid value for parameter "atrest.result_ttl": "-1 hour"/,
	'and is reported when the module loads');

# ALTER SYSTEM needs the setting known in the session (PostgreSQL 15 and 16): LOAD first
$node->safe_psql('postgres', q{LOAD 'pg_atrest'; ALTER SYSTEM SET atrest.key_cache_ttl = 120; SELECT pg_reload_conf();});
$node->poll_query_until('postgres', q{LOAD 'pg_atrest'; SELECT current_setting('atrest.key_cache_ttl') = '2min'},
	"LOAD\nt")
  or die 'ALTER SYSTEM value not in force';
pass('ALTER SYSTEM sets a pg_atrest setting after LOAD');

done_testing();
