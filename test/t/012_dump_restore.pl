# Copyright: pg_atrest authors; same license as pg_atrest.
#
# pg_dump and restore: a database with encrypted columns of several key classes (inline
# and TOASTed values, NULLs, a view over them, values under a rotated data key) is dumped
# in plain (COPY and --column-inserts), custom and directory format and restored into
# fresh databases, CREATE EXTENSION coming from the dump.  Each restored database holds
# the same plaintext, sealed under keys of its own (another database key id, fresh data
# keys at version 1, none of the source's key events); the dumps hold the plaintext and
# none of the key tables' rows or wrapped keys.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use AtrestTest;
use AtrestFiles;

my $node = atrest_node('dump', cron => 0, pkcs11 => 0);
my $dir = PostgreSQL::Test::Utils::tempdir();

my $marker = 'DUMP-MARKER-' . random_alnum(16);
my $big = random_alnum(30000);

$node->safe_psql('postgres', 'CREATE DATABASE src');
$node->safe_psql(
	'src', qq{
	CREATE EXTENSION pg_atrest;
	CREATE TABLE docs (
	    id  int PRIMARY KEY,
	    r   atrest.encrypted_jsonb(result),
	    m   atrest.encrypted_jsonb(model),
	    b   atrest.encrypted_bytea(model),
	    t   atrest.encrypted_text,
	    td  atrest.encrypted_text("default"));
	INSERT INTO docs VALUES
	    (1, '{"marker": "$marker-r1", "pages": [1, 2]}', '{"w": [0.5, 1.5]}',
	        convert_to('$marker-b1', 'UTF8'), '$marker-t1', 'tab\there, newline\nthere'),
	    (2, NULL, NULL, NULL, NULL, NULL);
	-- rotate: what follows is under result version 2 in the source
	SELECT atrest.rotate_data_key('result');
	INSERT INTO docs VALUES
	    (3, '{"marker": "$marker-r3", "big": "$big"}', '{"big": "$big"}',
	        convert_to('$marker-b3 $big', 'UTF8'), '$marker-t3 $big', '\\\\ backslash');
	CREATE VIEW doc_pages AS SELECT id, r -> 'pages' AS pages, length(t) AS tlen FROM docs;
});

sub fingerprint
{
	my ($db) = @_;
	return $node->safe_psql(
		$db, q{
		SELECT id, md5(r::text), md5(m::text), md5(b::bytea), md5(t::text), md5(td::text)
		  FROM docs ORDER BY id;
		SELECT * FROM doc_pages ORDER BY id;});
}

sub envelopes
{
	my ($db) = @_;
	return $node->safe_psql(
		$db, q{
		SELECT string_agg(format('%s:%s/%s %s/%s %s/%s %s/%s %s/%s', id,
		           (atrest.envelope(r)).key_class, (atrest.envelope(r)).key_version,
		           (atrest.envelope(m)).key_class, (atrest.envelope(m)).key_version,
		           (atrest.envelope(b)).key_class, (atrest.envelope(b)).key_version,
		           (atrest.envelope(t)).key_class, (atrest.envelope(t)).key_version,
		           (atrest.envelope(td)).key_class, (atrest.envelope(td)).key_version),
		           ', ' ORDER BY id)
		  FROM docs WHERE id <> 2});
}

my $src_fp = fingerprint('src');
is( envelopes('src'),
	'1:result/1 model/1 model/1 default/1 default/1, '
	  . '3:result/2 model/1 model/1 default/1 default/1',
	'source: values under their classes, row 3 under result version 2');

my $src_dbk = $node->safe_psql('src', 'SELECT database_key_id FROM atrest.key_status');
my @src_wrapped = split /\n/, $node->safe_psql(
	'src', q{
	SELECT encode(wrapped, 'hex') FROM atrest.data_keys
	UNION ALL
	SELECT encode(wrapped, 'hex') FROM atrest.database_keys WHERE wrapped IS NOT NULL});
cmp_ok(scalar(@src_wrapped), '>=', 5, 'source has wrapped keys to look for');

# --------------------------------------------------------------------------------------
# Dump in every format; restore each into a fresh database
# --------------------------------------------------------------------------------------

my %dumps = (
	plain => { dump => [ '-Fp', '-f', "$dir/src.sql" ], script => "$dir/src.sql" },
	inserts => {
		dump => [ '-Fp', '--column-inserts', '-f', "$dir/src_inserts.sql" ],
		script => "$dir/src_inserts.sql"
	},
	custom => { dump => [ '-Fc', '-f', "$dir/src.dump" ], archive => "$dir/src.dump" },
	directory => {
		dump => [ '-Fd', '-j', '2', '-f', "$dir/src.dir" ],
		archive => "$dir/src.dir",
		restore => [ '-j', '2' ]
	},
);

my %dbk = (src => $src_dbk);
foreach my $format (sort keys %dumps)
{
	my $d = $dumps{$format};
	my $target = "dst_$format";

	$node->command_ok([ 'pg_dump', @{ $d->{dump} }, '-d', 'src' ],
		"$format: pg_dump succeeds");

	# the dump as an SQL script, to look at
	my $script = $d->{script} // "$dir/$format.restored.sql";
	$node->command_ok([ 'pg_restore', '-f', $script, $d->{archive} ],
		"$format: pg_restore turns the archive into a script")
	  if $d->{archive};
	my $text = slurp_file($script);
	ok(index($text, "$marker-r1") >= 0 && index($text, "$marker-t3") >= 0,
		"$format: the dump holds the plaintext");
	like($text, qr/CREATE EXTENSION IF NOT EXISTS pg_atrest/,
		"$format: the dump creates the extension");
	unlike(
		$text,
		qr/^(?:COPY|INSERT INTO) atrest\.(?:key_classes|database_keys|data_keys|key_events)\b/m,
		"$format: the dump holds no rows of the key tables");
	my @leaked = grep { index($text, $_) >= 0 } @src_wrapped;
	is(scalar(@leaked), 0, "$format: the dump holds none of the source's wrapped keys");
	ok(index($text, $src_dbk) < 0, "$format: the dump does not name the source's database key");

	$node->safe_psql('postgres', "CREATE DATABASE $target");
	if ($d->{archive})
	{
		$node->command_ok(
			[
				'pg_restore', '--exit-on-error', @{ $d->{restore} // [] },
				'-d', $target, $d->{archive}
			],
			"$format: pg_restore into a fresh database succeeds");
	}
	else
	{
		$node->command_ok(
			[ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-f', $script, '-d', $target ],
			"$format: psql restores the script into a fresh database");
	}

	is( $node->safe_psql($target,
			q{SELECT extversion FROM pg_extension WHERE extname = 'pg_atrest'}),
		'1.1', "$format: the extension came with the dump");
	is(fingerprint($target), $src_fp, "$format: same plaintext as the source");
	is( envelopes($target),
		'1:result/1 model/1 model/1 default/1 default/1, '
		  . '3:result/1 model/1 model/1 default/1 default/1',
		"$format: values under their classes, at the target's own version 1");

	$dbk{$target} = $node->safe_psql($target, 'SELECT database_key_id FROM atrest.key_status');
	is( $node->safe_psql(
			$target, q{
		SELECT count(*), count(*) FILTER (WHERE d.database_key_id = s.database_key_id)
		  FROM atrest.data_keys d, atrest.key_status s}),
		'3|3',
		"$format: the target has its own three data keys, under its own database key");
	is( $node->safe_psql(
			$target, q{
		SELECT string_agg(operation, ',' ORDER BY id) FROM atrest.key_events}),
		$node->safe_psql(
			'postgres', q{
		SELECT string_agg(operation, ',' ORDER BY id) FROM atrest.key_events}),
		"$format: the target's key events are those of a fresh CREATE EXTENSION");
	my $in = join ',', map { "'$_'" } @src_wrapped;
	is( $node->safe_psql(
			$target, qq{
		SELECT count(*) FROM (SELECT wrapped FROM atrest.data_keys
		                      UNION ALL SELECT wrapped FROM atrest.database_keys) k
		 WHERE encode(wrapped, 'hex') IN ($in)}),
		'0',
		"$format: no wrapped key of the source in the target");

	# the restored database works: writes, rotation
	$node->safe_psql(
		$target, q{
		INSERT INTO docs (id, r, t) VALUES (4, '{"new": true}', 'new');
		SELECT atrest.rotate_data_key('result');
		INSERT INTO docs (id, r) VALUES (5, '{"newer": true}');});
	is( $node->safe_psql(
			$target, q{
		SELECT string_agg(format('%s:%s', id, (atrest.envelope(r)).key_version) || r::text,
		                  ' ' ORDER BY id)
		  FROM docs WHERE id >= 4}),
		'4:1{"new": true} 5:2{"newer": true}',
		"$format: the restored database takes writes and rotates its keys");
}

my %seen;
$seen{$_}++ for values %dbk;
is(scalar(keys %seen), scalar(keys %dbk),
	'the source and every restored database have different database keys');
is( $node->safe_psql('src', 'SELECT database_key_id FROM atrest.key_status'),
	$src_dbk, 'the source kept its database key');
is(fingerprint('src'), $src_fp, 'the source still reads the same');

# --------------------------------------------------------------------------------------
# A key class made with atrest.create_key_class
# --------------------------------------------------------------------------------------

$node->safe_psql('postgres', 'CREATE DATABASE src_custom');
$node->safe_psql(
	'src_custom', qq{
	CREATE EXTENSION pg_atrest;
	SELECT atrest.create_key_class('audit');
	CREATE TABLE audit_log (id int, entry atrest.encrypted_text(audit));
	INSERT INTO audit_log VALUES (1, '$marker-audit');
});
$node->command_ok([ 'pg_dump', '-Fp', '-f', "$dir/custom_class.sql", '-d', 'src_custom' ],
	'custom class: pg_dump succeeds');
# Key classes are part of the key tables, which are not dumped: a table that uses a class
# made with atrest.create_key_class restores only where that class exists.  Without it, the
# restore stops with 42704 and a hint; with the class created first (as README says), the
# dump restores and the value lands under the target's class of that name.
$node->safe_psql('postgres', 'CREATE DATABASE dst_no_class');
{
	my ($ret, $stdout, $stderr) = $node->psql(
		'dst_no_class', "\\set VERBOSITY verbose\n" . slurp_file("$dir/custom_class.sql"),
		on_error_stop => 1);
	isnt($ret, 0, 'custom class missing in the target: the restore stops');
	like($stderr, qr/42704.*key class "audit" does not exist/s,
		'with 42704 and a hint to create the class first');
}

$node->safe_psql('postgres', 'CREATE DATABASE dst_custom_class');
$node->safe_psql('dst_custom_class',
	q{CREATE EXTENSION pg_atrest; SELECT atrest.create_key_class('audit');});
{
	# The dump's CREATE SCHEMA atrest meets the schema CREATE EXTENSION made: that one
	# error is expected and harmless; nothing else may fail.
	my ($ret, $stdout, $stderr) = $node->psql(
		'dst_custom_class', slurp_file("$dir/custom_class.sql"),
		on_error_stop => 0);
	my @errors = grep { /ERROR/ } split /\n/, $stderr;
	is(scalar(@errors), 1, 'custom class created first: the dump restores with one error')
	  or diag($stderr);
	like($errors[0] // '', qr/schema "atrest" already exists/, 'which is the existing schema');
	is( $node->safe_psql(
			'dst_custom_class', q{
		SELECT string_agg(entry::text || '/' || (atrest.envelope(entry)).key_class, ',')
		  FROM audit_log}),
		"$marker-audit/audit",
		'custom class: the value is restored under its class');
}

$node->stop;

done_testing();
