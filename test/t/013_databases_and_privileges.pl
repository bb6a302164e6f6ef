# Copyright: pg_atrest authors; same license as pg_atrest.
#
# Databases: two databases of one cluster have independent key hierarchies.  Their
# database key ids differ; rotating a data key or the database key in one leaves the other
# alone; and a table file copied byte for byte from one database into the other (server
# stopped) arrives intact but its values do not open there (XX001), while the same copy
# inside the first database opens fine.
#
# Privileges: a role without superuser or any grant on pg_atrest's objects can make tables
# with encrypted columns in its own schema, write and read plaintext, but cannot read the
# key tables or atrest.key_status, change the key tables, or call any key function
# (SQLSTATE 42501 each time, and nothing changes).  A role granted EXECUTE on
# atrest.rotate_data_key can rotate, and still cannot read the key tables.

use strict;
use warnings;

use File::Copy qw(copy);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use AtrestTest;
use AtrestFiles;

my $node = atrest_node('dbs_privs', cron => 0, pkcs11 => 0, conf => "autovacuum = off\n");

# --------------------------------------------------------------------------------------
# Two databases
# --------------------------------------------------------------------------------------

foreach my $db (qw(db1 db2))
{
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	$node->safe_psql(
		$db, q{
		CREATE EXTENSION pg_atrest;
		-- no index: the copied heap file is all there is to read
		CREATE TABLE x (id int, v atrest.encrypted_jsonb(result));
		CREATE TABLE x_copy (LIKE x);});
}
$node->safe_psql(
	'db1', q{
	INSERT INTO x SELECT i, jsonb_build_object('i', i, 's', md5(i::text)) FROM generate_series(1, 5) i;
});
my $x_plain = $node->safe_psql('db1', q{SELECT string_agg(v::text, ',' ORDER BY id) FROM x});

my %dbk;
$dbk{$_} = $node->safe_psql($_, 'SELECT database_key_id FROM atrest.key_status')
  for qw(db1 db2);
isnt($dbk{db1}, $dbk{db2}, 'two databases have different database keys');
is( $node->safe_psql(
		'db1', q{SELECT count(*) FROM atrest.database_keys WHERE id = '} . $dbk{db2} . q{'}),
	'0', "db1 does not hold db2's database key");

# Copy x's file of db1 over the (empty) files of x in db2 and of x_copy in db1.
my %file;
foreach my $db (qw(db1 db2))
{
	foreach my $rel (qw(x x_copy))
	{
		$file{"$db.$rel"} = $node->data_dir . '/'
		  . $node->safe_psql($db, "SELECT pg_relation_filepath('$rel')");
	}
}
is( $node->safe_psql(
		'db1', q{SELECT pg_column_size(v) < 200 FROM x LIMIT 1}),
	't', 'the values are small enough to live in the heap page (no TOAST)');
$node->safe_psql('db1', 'CHECKPOINT');
$node->stop;
ok(-s $file{'db1.x'} > 0 && -z $file{'db2.x'} && -z $file{'db1.x_copy'},
	'source file holds the rows, target files are empty');
copy($file{'db1.x'}, $file{'db2.x'}) or die "copy: $!";
copy($file{'db1.x'}, $file{'db1.x_copy'}) or die "copy: $!";
$node->start;

is($node->safe_psql('db1', q{SELECT string_agg(v::text, ',' ORDER BY id) FROM x_copy}),
	$x_plain, 'control: the copied file opens in the same database');
is( $node->safe_psql(
		'db2', q{
	SELECT count(*), min((atrest.envelope(v)).key_class), min((atrest.envelope(v)).key_version)
	  FROM x}),
	'5|result|1',
	'the copied rows arrived in db2 (class result, version 1, like db2 has)');
my ($state, $message, $stderr) = sql_error($node, 'db2', 'SELECT v FROM x WHERE id = 1');
is($state, 'XX001', "db1's ciphertext does not open in db2 (XX001)");
like($stderr, qr/authentication tag does not match/,
	'it fails authentication under db2\'s data key');

# Independent rotation.
$node->safe_psql('db1', q{SELECT atrest.rotate_data_key('result')});
is( $node->safe_psql('db1', q{SELECT active_data_key_versions ->> 'result' FROM atrest.key_status}),
	'2', 'db1 rotated its result data key');
is( $node->safe_psql('db2', q{SELECT active_data_key_versions ->> 'result' FROM atrest.key_status}),
	'1', "db2's result data key did not change");

my $new_db2 = $node->safe_psql('db2', 'SELECT atrest.rotate_database_key()');
is($node->safe_psql('db2', 'SELECT database_key_id FROM atrest.key_status'),
	$new_db2, 'db2 rotated its database key');
isnt($new_db2, $dbk{db2}, 'to a new id');
is($node->safe_psql('db1', 'SELECT database_key_id FROM atrest.key_status'),
	$dbk{db1}, "db1's database key did not change");
is( $node->safe_psql(
		'db2', q{
	INSERT INTO x_copy VALUES (1, '{"db2": true}');
	SELECT v::text || '/' || (atrest.envelope(v)).key_version FROM x_copy}),
	'{"db2": true}/1', 'db2 still writes and reads under its own keys');
is($node->safe_psql('db1', q{SELECT string_agg(v::text, ',' ORDER BY id) FROM x}),
	$x_plain, 'db1 still reads its values');

# --------------------------------------------------------------------------------------
# A plain role
# --------------------------------------------------------------------------------------

$node->safe_psql(
	'db1', q{
	CREATE ROLE alice LOGIN;
	CREATE ROLE bob LOGIN;
	CREATE ROLE keyadmin LOGIN;
	CREATE SCHEMA alice AUTHORIZATION alice;
	GRANT EXECUTE ON FUNCTION atrest.rotate_data_key(text) TO keyadmin;
});
is( $node->safe_psql(
		'db1', q{SELECT bool_or(rolsuper OR rolcreaterole OR rolcreatedb OR rolbypassrls)
		          FROM pg_roles WHERE rolname IN ('alice', 'bob', 'keyadmin')}),
	'f', 'alice, bob and keyadmin are plain roles');

my @as_alice = (extra_params => [ '-U', 'alice' ]);
my @as_keyadmin = (extra_params => [ '-U', 'keyadmin' ]);

sub psql_as
{
	my ($role, $sql) = @_;
	my ($stdout, $stderr);
	my $ret = $node->psql('db1', $sql,
		stdout => \$stdout, stderr => \$stderr, extra_params => [ '-U', $role ]);
	die "psql as $role failed: $stderr\n$sql" if $ret != 0;
	return $stdout;
}

psql_as(
	'alice', q{
	CREATE TABLE alice.notes (id int PRIMARY KEY,
	                          doc atrest.encrypted_jsonb(result),
	                          blob atrest.encrypted_bytea(model),
	                          note atrest.encrypted_text);
	INSERT INTO alice.notes VALUES
	    (1, '{"owner": "alice", "n": 1}', '\xdeadbeef', 'alice''s note'),
	    (2, '{"owner": "alice", "n": 2}', NULL, repeat('long note ', 1000));
});
is( psql_as(
		'alice', q{
	SELECT doc ->> 'owner', encode(blob, 'hex'), left(note, 12), length(note)
	  FROM alice.notes ORDER BY id}),
	"alice|deadbeef|alice's note|12\nalice||long note lo|10000",
	'alice reads her plaintext in a fresh session');
is( psql_as(
		'alice', q{
	SELECT string_agg(format('%s/%s/%s', (atrest.envelope(doc)).key_class,
	           (atrest.envelope(blob)).key_class, (atrest.envelope(note)).key_class),
	           ' ' ORDER BY id) FROM alice.notes}),
	'result/model/default result//default',
	"alice's values are under their columns' classes");
is( psql_as('alice', q{COPY alice.notes (id, doc) TO STDOUT}),
	qq(1\t{"n": 1, "owner": "alice"}\n2\t{"n": 2, "owner": "alice"}),
	'alice copies her plaintext out');

my %before = (
	dbk => $node->safe_psql('db1', 'SELECT database_key_id FROM atrest.key_status'),
	keys => $node->safe_psql(
		'db1', q{
		SELECT string_agg(format('%s/%s/%s', class_id, version, encode(wrapped, 'hex')), ','
		                  ORDER BY class_id, version) FROM atrest.data_keys}),
	classes => $node->safe_psql(
		'db1', q{SELECT string_agg(format('%s=%s', name, active_version), ',' ORDER BY id)
		           FROM atrest.key_classes}),
	events => $node->safe_psql('db1', 'SELECT count(*) FROM atrest.key_events'),
);

my @denied = (
	'SELECT * FROM atrest.data_keys',
	'SELECT * FROM atrest.database_keys',
	'SELECT * FROM atrest.key_classes',
	'SELECT * FROM atrest.key_events',
	'SELECT * FROM atrest.key_status',
	'SELECT wrapped FROM atrest.data_keys WHERE false',
	q{INSERT INTO atrest.key_classes (id, name) VALUES (500, 'mine')},
	'UPDATE atrest.key_classes SET active_version = 1',
	'DELETE FROM atrest.data_keys',
	'TRUNCATE atrest.key_events',
	q{SELECT nextval('atrest.key_classes_id_seq')},
	'SELECT atrest.rotate_data_key()',
	q{SELECT atrest.rotate_data_key('result')},
	'SELECT atrest.rotate_database_key()',
	q{SELECT atrest.enable_cmk('pkcs11', 'pkcs11:token=a;object=b')},
	'SELECT atrest.disable_cmk()',
	'SELECT atrest.rewrap()',
	'SELECT atrest.recheck_keys()',
	q{SELECT atrest.create_key_class('mine')},
	q{CALL atrest.reencrypt('alice.notes', 'doc')},
	q{SELECT atrest.provider_selftest('pkcs11', 'pkcs11:token=a;object=b')},
	'SELECT atrest._bootstrap()',
	'SELECT * FROM atrest._session_key_state()',
	'SELECT atrest._service_key_source()',
);
foreach my $sql (@denied)
{
	sql_fails_with($node, 'db1', $sql, '42501', "alice: $sql: permission denied", @as_alice);
}

is($node->safe_psql('db1', 'SELECT database_key_id FROM atrest.key_status'),
	$before{dbk}, 'after those attempts: same database key');
is( $node->safe_psql(
		'db1', q{
	SELECT string_agg(format('%s/%s/%s', class_id, version, encode(wrapped, 'hex')), ','
	                  ORDER BY class_id, version) FROM atrest.data_keys}),
	$before{keys}, 'after those attempts: same data keys');
is( $node->safe_psql(
		'db1', q{SELECT string_agg(format('%s=%s', name, active_version), ',' ORDER BY id)
		           FROM atrest.key_classes}),
	$before{classes}, 'after those attempts: same key classes');
is($node->safe_psql('db1', 'SELECT count(*) FROM atrest.key_events'),
	$before{events}, 'after those attempts: no key event');

# Encryption does not widen table privileges: bob cannot read alice's table.
sql_fails_with($node, 'db1', 'SELECT * FROM alice.notes', '42501',
	"bob cannot read alice's table", extra_params => [ '-U', 'bob' ]);

# A role granted EXECUTE on rotate_data_key rotates (SECURITY DEFINER) but reads no keys.
is( psql_as('keyadmin', q{SELECT * FROM atrest.rotate_data_key('result')}),
	'result|3', 'keyadmin, granted EXECUTE, rotates the result data key');
is( $node->safe_psql(
		'db1', q{
	SELECT role_name || ':' || operation || ':' || key_class || ':' || key_version
	  FROM atrest.key_events ORDER BY id DESC LIMIT 1}),
	'keyadmin:rotate_data_key:result:3',
	'the key event names keyadmin');
sql_fails_with($node, 'db1', 'SELECT * FROM atrest.data_keys', '42501',
	'keyadmin still cannot read the data keys', @as_keyadmin);
sql_fails_with($node, 'db1', 'SELECT atrest.rotate_database_key()', '42501',
	'keyadmin cannot rotate the database key', @as_keyadmin);

# alice, in a new session, reads old values and writes under the new version.
psql_as('alice', q{INSERT INTO alice.notes VALUES (3, '{"owner": "alice", "n": 3}', NULL, 'new')});
is( psql_as(
		'alice', q{
	SELECT string_agg(format('%s:%s:%s', id, doc ->> 'n', (atrest.envelope(doc)).key_version),
	                  ' ' ORDER BY id) FROM alice.notes}),
	'1:1:2 2:2:2 3:3:3',
	'alice reads values of both versions and writes under the new one');

$node->stop;

done_testing();
