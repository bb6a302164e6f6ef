
# Updating an installed pg_atrest 1.0 to the current version: CREATE EXTENSION ... VERSION
# '1.0' (its script as shipped), data of every type in several classes, a stored model and
# analyze result, a customer-managed key; then ALTER EXTENSION pg_atrest UPDATE.  Everything
# reads back, key operations go on working, and the updated schema is the same, object for
# object, as a fresh install of the current version in another database.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use AtrestTest;

my $kms = AtrestTest::kms_adapter(PostgreSQL::Test::Utils::tempdir('kms') . '/keys', 'cmk1');
plan skip_all => 'no test/kms/openssl-kms' unless $kms;

my $node = AtrestTest::atrest_node(
	'upgrade',
	pkcs11 => 0,
	create_extension => 0,
	conf => "atrest.kms_command = '$kms'\n");

my $current = $node->safe_psql('postgres',
	q{SELECT default_version FROM pg_available_extensions WHERE name = 'pg_atrest'});
isnt($current, '1.0', "the current version ($current) is not 1.0");

$node->safe_psql('postgres', 'CREATE DATABASE old');
$node->safe_psql('postgres', 'CREATE DATABASE fresh');
$node->safe_psql('old', q{CREATE EXTENSION pg_atrest VERSION '1.0'});
is($node->safe_psql('old', q{SELECT extversion FROM pg_extension WHERE extname = 'pg_atrest'}),
	'1.0', 'version 1.0 installs from its own script');

# --- data under 1.0 -------------------------------------------------------------------
$node->safe_psql(
	'old', q{
	SELECT atrest.create_key_class('legacy');
	CREATE TABLE docs (
		id int PRIMARY KEY,
		j atrest.encrypted_jsonb(model),
		b atrest.encrypted_bytea(legacy),
		t atrest.encrypted_text);
	INSERT INTO docs
	SELECT i, jsonb_build_object('n', i, 'pad', repeat('x', i * 10)),
	       sha256(i::text::bytea), 'row ' || i
	  FROM generate_series(1, 300) i;
	SELECT atrest.create_model('m1', 'a model sealed by 1.0', '{"fields": ["total"]}');
});
my $rid = $node->safe_psql('old', q{SELECT atrest.begin_analyze('m1')});
$node->safe_psql('old', qq{SELECT atrest.complete_analyze('$rid', '{"total": 42}')});
$node->safe_psql('old', q{SELECT atrest.rotate_data_key('model')});
$node->safe_psql('old',
	q{INSERT INTO docs VALUES (301, '{"after": "rotation"}', '\x01', 'rotated')});
$node->safe_psql('old', q{SELECT atrest.enable_cmk('command', 'kms:openssl/cmk1')});

my $fingerprint = q{
	SELECT md5(string_agg(id || ':' || j::jsonb::text || ':' || encode(b::bytea, 'hex')
	                      || ':' || t::text, ',' ORDER BY id))
	  FROM docs};
my $before = $node->safe_psql('old', $fingerprint);

# The current module against the 1.0 schema: envelope() as 1.0 declared it (four
# columns), and a privilege on create_key_class(text), which the update must carry over
# to create_key_class(text, boolean).
is($node->safe_psql('old', q{SELECT (atrest.envelope(j)).* FROM docs WHERE id = 301}),
	'model|2|f|' . $node->safe_psql('old', q{SELECT (atrest.envelope(j)).stored_bytes FROM docs WHERE id = 301}),
	'envelope() works with its 1.0 declaration');
$node->safe_psql('old', q{
	CREATE ROLE key_admin;
	GRANT EXECUTE ON FUNCTION atrest.create_key_class(text) TO key_admin;
	CREATE ROLE store_caller;
	GRANT EXECUTE ON FUNCTION atrest.begin_analyze(text) TO store_caller;
});
# An operation begun under 1.0 and never finished: 1.1's purge times it out too.
my $orphan10 = $node->safe_psql('old', q{SELECT atrest.begin_analyze('m1')});
$node->safe_psql('old',
	qq{UPDATE atrest.analyze_results SET created_at = created_at - interval '25 hours'
	   WHERE result_id = '$orphan10'});
my $status = q{SELECT protector || ' ' || coalesce(key_uri, '-') FROM atrest.key_status};
is($node->safe_psql('old', $status), 'customer kms:openssl/cmk1', '1.0 is under the CMK');

# 1.0 let ANALYZE copy wrapped keys into pg_statistic; the update drops them.
my $key_stats = q{SELECT count(*) FROM pg_statistic s JOIN pg_attribute a
                   ON a.attrelid = s.starelid AND a.attnum = s.staattnum
                  WHERE s.starelid IN ('atrest.database_keys'::regclass, 'atrest.data_keys'::regclass)
                    AND a.attname = 'wrapped'};
$node->safe_psql('old', 'ANALYZE atrest.database_keys, atrest.data_keys');
is($node->safe_psql('old', $key_stats), 2, '1.0: ANALYZE keeps statistics of wrapped keys');

# --- the update -----------------------------------------------------------------------
$node->safe_psql('old', 'ALTER EXTENSION pg_atrest UPDATE');
is($node->safe_psql('old', $key_stats), 0, 'the update drops the statistics of wrapped keys');
is($node->safe_psql('old', q{SELECT extversion FROM pg_extension WHERE extname = 'pg_atrest'}),
	$current, "ALTER EXTENSION pg_atrest UPDATE reaches $current");

# A new session, so no key cached by the old one is used.
is($node->safe_psql('old', $fingerprint), $before, 'every value sealed by 1.0 reads back');
is($node->safe_psql('old', $status), 'customer kms:openssl/cmk1', 'still under the CMK');
is( $node->safe_psql('old',
		q{SELECT (SELECT service_key_id FROM atrest.key_status),
		         (SELECT string_agg(service_key_id::text, ',') FROM atrest.database_keys)}),
	'1|1', 'the database key 1.0 wrapped reads as service key id 1');
is($node->safe_psql('old', q{SELECT * FROM atrest.service_key_check()}),
	'old|1|t|1|f', 'service_key_check: on id 1, the newest; nothing to re-wrap');
is( $node->safe_psql('old',
		qq{SELECT (atrest.get_model('m1')).description,
		          (atrest.get_analyze_result('m1', '$rid')).result ->> 'total'}),
	'a model sealed by 1.0|42',
	'the stored model and analyze result read back');

is( $node->safe_psql('old',
		q{SELECT string_agg(name || '=' || compress, ',' ORDER BY id) FROM atrest.key_classes}),
	'default=true,model=true,result=true,legacy=true',
	'existing key classes keep compressing');
is( $node->safe_psql('old',
		q{SELECT has_function_privilege('key_admin', 'atrest.create_key_class(text, boolean)', 'EXECUTE'),
		         has_function_privilege('key_admin', 'atrest.alter_key_class(text, boolean)', 'EXECUTE')}),
	't|f', 'the grant on create_key_class is carried over; alter_key_class is not granted');
# begin_analyze gained document and content_type (DROP and CREATE): the grant on the 1.0
# function is carried over, calls with the model id alone keep working, and the purge
# times out the operation 1.0 left running.
is( $node->safe_psql('old',
		q{SELECT has_function_privilege('store_caller', 'atrest.begin_analyze(text, bytea, text)', 'EXECUTE')}),
	't', 'the grant on begin_analyze(text) is carried over to begin_analyze(text, bytea, text)');
like($node->safe_psql('old', q{SELECT atrest.begin_analyze('m1')}),
	qr/^[0-9a-f-]{36}$/, 'begin_analyze(model_id) still works after the update');
is( $node->safe_psql('old',
		q{SELECT (atrest.get_analyze_document('m1', atrest.begin_analyze('m1', '\x0102', 'image/png'))).document}),
	'\x0102', 'begin_analyze keeps a document after the update');
$node->safe_psql('old', q{SELECT atrest.purge_expired()});
is( $node->safe_psql('old',
		qq{SELECT status || ' ' || (error ->> 'code') FROM atrest.get_analyze_result('m1', '$orphan10')}),
	'failed Timeout', 'the operation 1.0 left running is timed out by the purge');
is($node->safe_psql('old', q{SELECT (atrest.envelope(j)).format FROM docs WHERE id = 301}),
	'xaes-256-gcm', 'envelope() reports the format after the update');
# The role 1.0 created is adopted (so 1.1 installs in other databases accept it), and
# atrest.reencrypt is now a procedure.
is( $node->safe_psql('old',
		q{SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = 'atrest_service'}),
	'pg_atrest application service role (created by CREATE EXTENSION pg_atrest)',
	"the update marks 1.0's atrest_service as pg_atrest's");
is($node->safe_psql('old', q{CALL atrest.reencrypt('docs', 'j')}),
	'300', 'CALL atrest.reencrypt moves the 300 values sealed before the rotation');

# Key operations after the update, and values sealed by the new version next to the old.
$node->safe_psql(
	'old', q{
	SELECT atrest.rotate_data_key('legacy');
	SELECT atrest.rotate_database_key();
	INSERT INTO docs VALUES (302, '{"after": "update"}', '\x02', 'updated');
	SELECT atrest.disable_cmk();
});
is($node->safe_psql('old', q{SELECT count(*) FROM docs WHERE t::text IS NOT NULL}),
	302, 'old and new values read after key operations');
is($node->safe_psql('old', q{SELECT j::jsonb ->> 'after' FROM docs WHERE id = 302}),
	'update', 'a value sealed after the update reads back');

# Retiring a data-key version in an updated database: model version 1 still seals m1.
like(
	AtrestTest::psql_error($node, q{SELECT atrest.retire_data_key('model', 1)}, 'old'),
	qr/55006: data key version 1 of key class "model" is still in use.*Column "(definition|artifact)" of table atrest\.models/s,
	'retire_data_key refuses while the store holds a value of the version, naming it');
# Issue 10 on data stored by 1.0: grouping, jsonb ||, subscripting, and no index.
is( $node->safe_psql(
		'old', q{
	SELECT count(DISTINCT j), count(DISTINCT t), (SELECT count(*) FROM (SELECT b FROM docs UNION SELECT b FROM docs) u)
	  FROM docs}),
	'302|302|302',
	'count(DISTINCT ...) and UNION work on columns created under 1.0');
is($node->safe_psql('old', q{SELECT j || '{"x": 1}' ->> 'x', j['n'] FROM docs WHERE id = 1}),
	'1|1', '|| merges and subscripting reads on a column created under 1.0');
$node->safe_psql('old', q{UPDATE docs SET j['n'] = '-1' WHERE id = 2});
is($node->safe_psql('old', q{SELECT j ->> 'n', (atrest.envelope(j)).key_class FROM docs WHERE id = 2}),
	'-1|model', 'a subscripted assignment seals under the column\'s class');
my ($irc, $iout, $ierr) = $node->psql('old', 'CREATE INDEX docs_j ON docs (j)');
like($ierr, qr/cannot create an index on encrypted column "j"/, 'an index on a 1.0 column is refused');

# --- same schema as a fresh install ---------------------------------------------------
# (DROP OWNED: from 17 on, a grant the update script carried over is one of the extension's
# initial privileges, recorded in pg_init_privs, and only DROP OWNED releases the role.)
$node->safe_psql('old', q{
	REVOKE EXECUTE ON FUNCTION atrest.create_key_class(text, boolean) FROM key_admin;
	DROP OWNED BY key_admin;
	DROP ROLE key_admin;
	REVOKE EXECUTE ON FUNCTION atrest.begin_analyze(text, bytea, text) FROM store_caller;
	DROP OWNED BY store_caller;
	DROP ROLE store_caller;
});
$node->safe_psql('fresh', 'CREATE EXTENSION pg_atrest');
my $old_schema = AtrestTest::schema_description($node, 'old');
my $fresh_schema = AtrestTest::schema_description($node, 'fresh');
ok(length($fresh_schema) > 1000, 'the schema description is not empty');
if ($old_schema eq $fresh_schema)
{
	pass('the updated schema equals a fresh install of the current version');
}
else
{
	my %fresh = map { $_ => 1 } split /\n/, $fresh_schema;
	my %old = map { $_ => 1 } split /\n/, $old_schema;
	diag("only after the update: $_") foreach grep { !$fresh{$_} } split /\n/, $old_schema;
	diag("only in a fresh install: $_") foreach grep { !$old{$_} } split /\n/, $fresh_schema;
	fail('the updated schema equals a fresh install of the current version');
}

$node->stop;
done_testing();
