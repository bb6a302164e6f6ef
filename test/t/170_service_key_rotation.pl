
# Versioned service keys (issue 17).  A trial server's generated service key moves to a
# managed file without losing anything; the file then holds several keys ("ID:HEX", a bare
# line is id 1); new wraps use the newest; atrest.rewrap() moves each database's key to it
# (under a CMK too: the service layer changes, the CMK stays) without touching data keys;
# service_key_check() tells, database by database, which still need the old key; once none
# does, the old key leaves the file and everything still reads.  A base backup taken before
# the rotation, started with only the new key, fails with AT001 naming the missing id in
# the server log (not to the client), and reads again once the old key is put back.

use strict;
use warnings;

use File::Copy qw(copy move);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use AtrestTest;

my $kms = AtrestTest::kms_adapter(PostgreSQL::Test::Utils::tempdir('kms') . '/keys', 'cmk1');
plan skip_all => 'no test/kms/openssl-kms' unless $kms;

my $keydir = PostgreSQL::Test::Utils::tempdir('svckeys');
my $keyfile = "$keydir/service.key";

# A key as the README makes one.
sub new_key
{
	my ($out) = run_command([ 'openssl', 'rand', '-hex', '32' ]);
	chomp $out;
	die "openssl rand printed '$out'" unless $out =~ /^[0-9a-f]{64}$/;
	return $out;
}

# Replace "file" with these lines, mode 0600 (written beside, then renamed into place).
sub write_keys
{
	my ($file, @lines) = @_;
	unlink "$file.new";
	PostgreSQL::Test::Utils::append_to_file("$file.new", join("\n", @lines) . "\n");
	chmod 0600, "$file.new";
	rename "$file.new", $file or die "rename: $!";
}

# --- a trial server: the generated key ------------------------------------------------
my $node = AtrestTest::atrest_node(
	'rotate',
	cron => 0,
	pkcs11 => 0,
	init => { allows_streaming => 1 },
	conf => "atrest.kms_command = '$kms'\n");
my $pgdata = $node->data_dir;
ok(-f "$pgdata/pg_atrest/service.key", 'the trial server generated its service key');

my %count = (postgres => 50, db1 => 100, db2 => 200, dbc => 300);
sub fill
{
	my ($db) = @_;
	$node->safe_psql(
		$db, qq{
		CREATE TABLE docs (id int PRIMARY KEY, j atrest.encrypted_jsonb, t atrest.encrypted_text(result));
		INSERT INTO docs SELECT i, jsonb_build_object('n', i), 'text ' || i
		  FROM generate_series(1, $count{$db}) i;});
}
my $readable = q{SELECT count(*) FROM docs WHERE (j ->> 'n')::int = id AND t::text = 'text ' || id};
sub reads
{
	my ($n, $db) = @_;
	my ($rc, $out) = $n->psql($db, $readable);
	return $rc == 0 ? $out : "error $rc";
}
fill('postgres');

# --- trial to production: the generated key moves to a managed file --------------------
copy("$pgdata/pg_atrest/service.key", $keyfile) or die "copy: $!";
chmod 0600, $keyfile;
$node->append_conf('postgresql.conf', "atrest.service_key_file = '$keyfile'\n");
$node->stop;
move("$pgdata/pg_atrest/service.key", "$keydir/generated.key.moved") or die "move: $!";
$node->start;
is(reads($node, 'postgres'), $count{postgres},
	'after the move to atrest.service_key_file (the generated file gone), every value reads');
like($node->safe_psql('postgres', 'SELECT protector_source FROM atrest.key_status'),
	qr/^atrest\.service_key_file \(/, 'key_status names the managed file');
ok(!-e "$pgdata/pg_atrest/service.key", 'no key was generated again');

# The managed file holds the trial key as a bare line: service key id 1.
my $trial = slurp_file($keyfile);
chomp $trial;
# databases made now are wrapped under the file's newest key; one key: id 1
$node->safe_psql('postgres', "CREATE DATABASE $_") foreach qw(db1 db2 dbc);
foreach my $db (qw(db1 db2 dbc))
{
	$node->safe_psql($db, 'CREATE EXTENSION pg_atrest');
	fill($db);
}
$node->safe_psql('dbc', q{SELECT atrest.enable_cmk('command', 'kms:openssl/cmk1')});
is($node->safe_psql('dbc', 'SELECT protector, key_uri, service_key_id FROM atrest.key_status'),
	'customer|kms:openssl/cmk1|1', 'dbc is under its CMK, over service key id 1');
foreach my $db (qw(postgres db1 db2 dbc))
{
	is($node->safe_psql($db, 'SELECT service_key_id FROM atrest.key_status'),
		1, "$db: key_status shows service key id 1");
}

# a base backup taken before the rotation
$node->backup('before_rotation');

# --- add a second key --------------------------------------------------------------------
my $k2 = new_key();
write_keys($keyfile, '# service keys of the rotate node', $trial, "2:$k2");
is( $node->safe_psql('db1', 'SELECT * FROM atrest.service_key_check()'),
	'db1|1|t|2|t', 'service_key_check: db1 is on id 1, which the file holds; the newest is 2');
foreach my $db (qw(postgres db1 db2 dbc))
{
	is(reads($node, $db), $count{$db}, "$db reads with two keys in the file");
}
$node->safe_psql('postgres', 'CREATE DATABASE db3');
$node->safe_psql('db3', 'CREATE EXTENSION pg_atrest');
is($node->safe_psql('db3', 'SELECT service_key_id FROM atrest.key_status'),
	2, 'a database created now is wrapped under the newest key (id 2)');

# --- rewrap in each database -------------------------------------------------------------
my $data_keys = q{SELECT md5(string_agg(class_id || ':' || version || ':' || encode(wrapped, 'hex'),
                                        ',' ORDER BY class_id, version)) FROM atrest.data_keys};
my $values = q{SELECT md5(string_agg(j::text || t::text, ',' ORDER BY id)) FROM docs};
my $cmk_row = q{SELECT protector, provider, key_uri FROM atrest.database_keys WHERE active};
foreach my $db (qw(postgres db1 db2 dbc))
{
	my $dk_before = $node->safe_psql($db, $data_keys);
	my $val_before = $node->safe_psql($db, $values);
	my $cmk_before = $node->safe_psql($db, $cmk_row);
	is($node->safe_psql($db, 'SELECT atrest.rewrap()'), 't', "$db: rewrap() moves the key");
	is($node->safe_psql($db, 'SELECT service_key_id FROM atrest.key_status'),
		2, "$db: now under service key id 2");
	is($node->safe_psql($db, $data_keys), $dk_before, "$db: data keys untouched");
	is($node->safe_psql($db, $values), $val_before, "$db: stored values untouched");
	is($node->safe_psql($db, $cmk_row), $cmk_before, "$db: protector unchanged");
	is($node->safe_psql($db, 'SELECT atrest.rewrap()'), 'f', "$db: a second rewrap() has nothing to do");
	is(reads($node, $db), $count{$db}, "$db reads after the rewrap");
}
like(
	$node->safe_psql('dbc',
		q{SELECT provider || ' ' || detail FROM atrest.key_events WHERE operation = 'rewrap' ORDER BY id DESC LIMIT 1}),
	qr/^command service layer re-wrapped from service key id 1 to 2$/,
	'dbc: the event log says the service layer moved under the CMK');

# The documented loop over every database (README, "Rotating the service key").
my $loop = <<'EOS';
psql -XAt -d postgres -c "SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1" |
while IFS= read -r db; do
  v=$(psql -XAt -d "$db" -c "SELECT extversion FROM pg_extension WHERE extname = 'pg_atrest'" </dev/null)
  case "$v" in
    '') ;;
    1.0) echo "$db|1|pg_atrest 1.0: run ALTER EXTENSION pg_atrest UPDATE there" ;;
    *) psql -XAt -d "$db" -c "SELECT * FROM atrest.service_key_check()" </dev/null ;;
  esac
done
EOS
{
	local $ENV{PGHOST} = $node->host;
	local $ENV{PGPORT} = $node->port;
	my ($out, $err) = run_command([ 'bash', '-c', $loop ]);
	is($out, join("\n", map { "$_|2|t|2|f" } qw(db1 db2 db3 dbc postgres)),
		'the loop over all databases shows none needs service key id 1 any more');
}

# --- remove the first key ------------------------------------------------------------------
write_keys($keyfile, "2:$k2");
$node->restart;
foreach my $db (qw(postgres db1 db2 dbc))
{
	is(reads($node, $db), $count{$db}, "$db reads with only service key id 2 in the file");
}
is($node->safe_psql('dbc', 'SELECT protector, key_uri, service_key_id FROM atrest.key_status'),
	'customer|kms:openssl/cmk1|2', 'dbc stays under its CMK, over service key id 2');

# --- a backup from before the rotation, with only the new key ------------------------------
my $restored = PostgreSQL::Test::Cluster->new('restored');
$restored->init_from_backup($node, 'before_rotation');
my $restored_keys = "$keydir/restored.key";
write_keys($restored_keys, "2:$k2");
$restored->append_conf('postgresql.conf', "atrest.service_key_file = '$restored_keys'\n");
$restored->start;
my $err = AtrestTest::psql_error_with_log($restored, $readable, 'db1');
my ($client, $log) = split /\n--- server log ---\n/, $err, 2;
like($client, qr/AT001: service key is unavailable/, 'the old backup fails with AT001');
unlike($client, qr/\Q$keydir\E|id 1\b/, 'the client is told neither the file nor the id');
like($log, qr/holds no key with id 1; this database's key is wrapped with service key id 1/,
	'the server log names the missing service key id');
ok(!-e $restored->data_dir . '/pg_atrest/service.key', 'nothing was generated');

write_keys($restored_keys, $trial, "2:$k2");
is(reads($restored, 'db1'), $count{db1}, 'with the old key put back, the backup reads');
is(reads($restored, 'dbc'), $count{dbc}, 'and so does its CMK-protected database');
is($restored->safe_psql('db1', 'SELECT atrest.rewrap()'), 't', 'and rewrap() moves it to id 2');
$restored->stop;

# --- a key source the parser refuses -------------------------------------------------------
write_keys($keyfile, "2:$k2", '2:' . new_key());
like(AtrestTest::psql_error($node, 'SELECT atrest.recheck_keys(); ' . $readable, 'db1'),
	qr/AT001: service key is unavailable.*key id 2 appears twice/s,
	'a file with an id twice is refused, naming the id');
write_keys($keyfile, "2:$k2");
is(reads($node, 'db1'), $count{db1}, 'and reads resume once it is fixed');

done_testing();
