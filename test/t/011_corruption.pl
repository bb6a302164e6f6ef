# Copyright: pg_atrest authors; same license as pg_atrest.
#
# Corrupted values: with the server stopped, flip one byte of a stored value in the data
# files (the ciphertext of an inline value in the heap, the ciphertext of a TOASTed value
# in the TOAST table, and the key-version byte of another value's header).  After a
# restart, reading each of them fails with SQLSTATE XX001 and a message that names the
# type and prints no bytes; the backend survives (the same session goes on), the server
# does not restart, and every other row stays readable.
#
# The bytes to flip are found by their envelope header (envelope_core.h): format 0x02, kind in
# the high nibble and flags in the low one, the class id and the data-key version.  Each
# corrupted value is the only one in its file under its (class, version): the other rows
# are written after a data-key rotation.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use AtrestTest;
use AtrestFiles;

my $node = atrest_node('corruption', cron => 0, pkcs11 => 0, checksums => 0,
	conf => "autovacuum = off\n");

is($node->safe_psql('postgres', 'SHOW data_checksums'),
	'off', 'no data checksums: only pg_atrest can notice the corruption');

# class ids of the built-in classes (sql/pg_atrest--1.0.sql)
is( $node->safe_psql(
		'postgres', q{SELECT string_agg(format('%s=%s', name, id), ',' ORDER BY id)
		               FROM atrest.key_classes}),
	'default=1,model=2,result=3',
	'built-in key class ids');

sub jsonb_literal
{
	my ($n) = @_;
	return q('{"k": ") . random_alnum($n) . q("}');
}

$node->safe_psql(
	'postgres', qq{
	CREATE TABLE c (id int PRIMARY KEY, j atrest.encrypted_jsonb(result));
	CREATE TABLE ct (id int PRIMARY KEY, t atrest.encrypted_text(model));
	-- under version 1: the values to corrupt
	INSERT INTO c VALUES (1, @{[ jsonb_literal(300) ]});      -- inline
	INSERT INTO c VALUES (2, @{[ jsonb_literal(20000) ]});    -- TOASTed
	INSERT INTO ct VALUES (1, '@{[ random_alnum(300) ]}');
	SELECT atrest.rotate_data_key('result');
	SELECT atrest.rotate_data_key('model');
	-- under version 2: rows that stay intact
	INSERT INTO c VALUES (3, @{[ jsonb_literal(300) ]});
	INSERT INTO c VALUES (4, @{[ jsonb_literal(20000) ]});
	INSERT INTO ct VALUES (2, '@{[ random_alnum(300) ]}');
});

is( $node->safe_psql(
		'postgres', q{
	SELECT string_agg(format('%s:v%s', id, (atrest.envelope(j)).key_version), ' ' ORDER BY id)
	  FROM c}),
	'1:v1 2:v1 3:v2 4:v2',
	'rows 1 and 2 under version 1, rows 3 and 4 under version 2');
is( $node->safe_psql(
		'postgres', q{
	SELECT string_agg(format('%s:%s', id,
	           pg_column_size(j) > 2000), ' ' ORDER BY id) FROM c}),
	'1:f 2:t 3:f 4:t',
	'rows 2 and 4 are the large (TOASTed) ones');

my %md5;
foreach my $row (split /\n/,
	$node->safe_psql('postgres', 'SELECT id, md5(j::text) FROM c ORDER BY id'))
{
	my ($id, $m) = split /\|/, $row;
	$md5{"c$id"} = $m;
}
foreach my $row (split /\n/,
	$node->safe_psql('postgres', 'SELECT id, md5(t::text) FROM ct ORDER BY id'))
{
	my ($id, $m) = split /\|/, $row;
	$md5{"ct$id"} = $m;
}

my $datadir = $node->data_dir;
my ($c_heap, $c_toast, $ct_heap) = split /\n/, $node->safe_psql(
	'postgres', q{
	SELECT pg_relation_filepath('c');
	SELECT pg_relation_filepath(reltoastrelid) FROM pg_class WHERE oid = 'c'::regclass;
	SELECT pg_relation_filepath('ct');
});
$_ = "$datadir/$_" for ($c_heap, $c_toast, $ct_heap);

$node->safe_psql('postgres', 'CHECKPOINT');
$node->stop;

# The envelope header of a value: format, kind|flags (either flag value), class, version.
sub header_re
{
	my ($kind, $class, $version) = @_;
	my $k = $kind << 4;
	return sprintf('\x02[\x%02x\x%02x]', $k, $k | 1)
	  . quotemeta(pack('n', $class) . pack('N', $version));
}

# Finds the single value matching header_re in file; flips the byte at offset "delta"
# from its start.  Returns the hex of the 32 stored bytes around it (before and after the
# flip), which no error message may show.
sub corrupt
{
	my ($what, $file, $re, $delta) = @_;
	my $data = slurp_raw($file);
	my @at;
	push @at, $-[0] while $data =~ /$re/g;
	is(scalar(@at), 1, "$what: exactly one value under its class and version in the file")
	  or return ();
	my $pos = $at[0] + $delta;
	my $before = unpack('H*', substr($data, $pos - 16, 32));
	flip_byte($file, $pos);
	my $after = unpack('H*', substr(slurp_raw($file), $pos - 16, 32));
	isnt($after, $before, "$what: byte flipped");
	return ($before, $after);
}

my @secret_hex;
# ciphertext of the inline value: header (8) + nonce (24) + 88 bytes into the ciphertext
push @secret_hex, corrupt('inline jsonb value in the heap', $c_heap, header_re(1, 3, 1), 120);
# ciphertext of the TOASTed value, inside its first TOAST chunk
push @secret_hex, corrupt('TOASTed jsonb value', $c_toast, header_re(1, 3, 1), 500);
# the low byte of the data-key version in a text value's header: version 1 becomes 254
push @secret_hex, corrupt('key version of a text value', $ct_heap, header_re(3, 2, 1), 7);

$node->start;
my $log_offset = -s $node->logfile;

# --------------------------------------------------------------------------------------
# Reading the corrupted values
# --------------------------------------------------------------------------------------

my @messages;

sub read_fails
{
	my ($sql, $type, $detail_re, $name) = @_;
	my ($state, $message, $stderr) = sql_error($node, 'postgres', $sql);
	is($state // 'no error', 'XX001', "$name: SQLSTATE XX001");
	is($message // '', "$type value is corrupted", "$name: the message names the type");
	like($stderr, $detail_re, "$name: the detail says what is wrong");
	push @messages, $stderr;
}

read_fails('SELECT j FROM c WHERE id = 1', 'encrypted_jsonb',
	qr/DETAIL:\s+Its authentication tag does not match/,
	'inline value, text output');
read_fails(q{SELECT j -> 'k' FROM c WHERE id = 1}, 'encrypted_jsonb',
	qr/authentication tag/, 'inline value, through the implicit cast to jsonb');
read_fails('SELECT j FROM c WHERE id = 2', 'encrypted_jsonb',
	qr/authentication tag/, 'TOASTed value, text output');
read_fails('SELECT md5(j::text) FROM c WHERE id = 2', 'encrypted_jsonb',
	qr/authentication tag/, 'TOASTed value, cast to jsonb');
read_fails('SELECT t FROM ct WHERE id = 1', 'encrypted_text',
	qr/DETAIL:\s+It names data key version 254 of key class 2, which does not exist/,
	'value naming a key version that does not exist');
read_fails(q{COPY (SELECT j FROM c) TO STDOUT (FORMAT binary)}, 'encrypted_jsonb',
	qr/authentication tag/, 'binary COPY of the table');
read_fails(q{CALL atrest.reencrypt('c', 'j')}, 'encrypted_jsonb',
	qr/authentication tag/, 'atrest.reencrypt over the corrupted values');

# The header of a value whose ciphertext was altered is still readable.
is( $node->safe_psql(
		'postgres',
		q{SELECT format('%s/%s', (atrest.envelope(j)).key_class, (atrest.envelope(j)).key_version)
		    FROM c WHERE id = 1}),
	'result/1',
	'atrest.envelope still reads the header of the altered value');

# No message shows bytes: neither the stored bytes around a flipped one (in 8-byte
# pieces, before and after the flip), nor any long run of hex digits, nor a bytea literal.
my %pieces;
foreach my $hex (@secret_hex)
{
	$pieces{ substr($hex, $_, 16) } = 1 for (0, 16, 32, 48);
}
my $all = lc join "\n", @messages;
my @shown = grep { index($all, $_) >= 0 } sort keys %pieces;
is(scalar(@shown), 0,
	'error messages show none of the ' . scalar(keys %pieces) . ' stored 8-byte pieces')
  or diag("shown: @shown");
unlike($all, qr/[0-9a-fA-F]{16}/, 'error messages contain no run of hex digits');
unlike($all, qr/\\x[0-9a-fA-F]{2}/, 'error messages contain no bytea literal');

# --------------------------------------------------------------------------------------
# The rest stays readable; the backend and the server survive
# --------------------------------------------------------------------------------------

foreach my $id (3, 4)
{
	is($node->safe_psql('postgres', "SELECT md5(j::text) FROM c WHERE id = $id"),
		$md5{"c$id"}, "row $id of c reads back identical");
}
is($node->safe_psql('postgres', 'SELECT md5(t::text) FROM ct WHERE id = 2'),
	$md5{ct2}, 'row 2 of ct reads back identical');
is($node->safe_psql('postgres', 'SELECT count(*), sum(id) FROM c'),
	'4|10', 'every row of c is still there');

# One session: a failing read, then good reads on the same connection (the backend's
# pid before the errors and after them is the same: no reconnect, no crash).
{
	my ($stdout, $stderr);
	my $ret = $node->psql(
		'postgres',
		"SELECT pg_backend_pid();\n"
		  . "SELECT j FROM c WHERE id = 2;\n"
		  . "SELECT md5(j::text) FROM c WHERE id = 4;\n"
		  . "SELECT t FROM ct WHERE id = 1;\n"
		  . "SELECT md5(t::text) FROM ct WHERE id = 2;\n"
		  . "SELECT pg_backend_pid();\n",
		stdout => \$stdout,
		stderr => \$stderr,
		on_error_stop => 0);
	my ($pid_before, @rest) = split /\n/, $stdout;
	my $pid_after = pop @rest;
	like($pid_before // '', qr/^\d+$/, 'the session reports its backend pid');
	is($pid_after, $pid_before, 'the same backend serves the statements after the errors');
	is(join("\n", @rest), "$md5{c4}\n$md5{ct2}",
		'the session that hit the errors goes on reading good rows');
	like($stderr, qr/value is corrupted.*value is corrupted/s, 'and it hit both errors');
}

ok($node->safe_psql('postgres', 'SELECT 1') eq '1', 'the server accepts connections');
my $log = substr(slurp_file($node->logfile), $log_offset);
unlike($log, qr/terminated by signal|was terminated|reinitializing|PANIC/,
	'no backend crashed and the server did not reinitialize');
@shown = grep { index(lc $log, $_) >= 0 } sort keys %pieces;
is(scalar(@shown), 0, 'the server log shows none of the stored pieces either')
  or diag("shown: @shown");

$node->stop;

done_testing();
