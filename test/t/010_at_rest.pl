# Copyright: pg_atrest authors; same license as pg_atrest.
#
# At rest: values carrying a marker string, stored in encrypted_jsonb, encrypted_bytea and
# encrypted_text columns (inline, TOASTed, and large but compressible), leave no trace of
# the marker in the table's heap and TOAST files, in the WAL written since the insert, or
# anywhere under PGDATA; the same values in plain jsonb/bytea/text columns do show their
# markers, so the test can see plaintext where there is some.  The files are read from disk
# here, not through any function of ours.
#
# Write paths: a literal, a bind parameter over the extended protocol (typed as the
# encrypted type, as the plain type, and untyped), COPY FROM in text and in binary format,
# INSERT ... SELECT from plain columns and from encrypted columns of another class, an
# explicit cast to another class, UPDATE, and ALTER COLUMN ... TYPE: each lands
# ciphertext under the column's key class and reads back identical.

use strict;
use warnings;

use Digest::MD5 qw(md5_hex);
use File::Find;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use AtrestTest;
use AtrestFiles;

my $node = atrest_node(
	'at_rest',
	cron => 0,
	pkcs11 => 0,
	conf => "autovacuum = off\nwal_level = replica\nwal_compression = off\n");

# --------------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------------

# A value of each kind and size, with its own marker.  "E" markers go into encrypted
# columns, "P" markers into plain ones; otherwise the values are built alike.
my %sizes = (
	small => sub { random_alnum(150) },      # stays in the heap tuple
	large => sub { random_alnum(20000) },    # TOASTed, incompressible
	compressible =>
	  sub { 'lorem ipsum dolor sit amet, consectetur adipiscing elit ' x 1000 },
);
my @sizes = qw(small large compressible);
my @kinds = qw(jsonb bytea text);
my %row_of_size = (small => 1, large => 2, compressible => 3);

sub sql_str
{
	my ($s) = @_;
	$s =~ s/'/''/g;
	return "'$s'";
}

# Returns (marker, SQL literal of the plain type, md5 of the plain value's canonical
# bytes or undef for jsonb, whose canonical text the server computes, the padding bytes).
# The marker comes first in the stored form, so it is never split across TOAST chunks.
sub make_value
{
	my ($tag, $kind, $size) = @_;
	my $marker = "PGATREST-$tag-$kind-$size-" . random_alnum(12);
	my $pad = $sizes{$size}->();
	if ($kind eq 'jsonb')
	{
		# jsonb stores values in key order, shorter keys first: "m" puts the marker
		# ahead of the padding, in the first TOAST chunk
		return ($marker, sql_str(qq({"m": "$marker", "pad": "$pad"})) . '::jsonb',
			undef, $pad);
	}
	elsif ($kind eq 'bytea')
	{
		my $bytes =
		  $marker . ($size eq 'compressible' ? $pad : random_bytes(length $pad));
		return ($marker, "'\\x" . unpack('H*', $bytes) . "'::bytea", md5_hex($bytes),
			substr($bytes, length $marker));
	}
	else
	{
		my $text = "$marker $pad";
		return ($marker, sql_str($text) . '::text', md5_hex($text), $pad);
	}
}

my (%enc, %plain);
foreach my $kind (@kinds)
{
	foreach my $size (@sizes)
	{
		my @e = make_value('E', $kind, $size);
		my @p = make_value('P', $kind, $size);
		$enc{$kind}{$size} =
		  { marker => $e[0], literal => $e[1], md5 => $e[2], pad => $e[3] };
		$plain{$kind}{$size} =
		  { marker => $p[0], literal => $p[1], md5 => $p[2], pad => $p[3] };
	}
}

# --------------------------------------------------------------------------------------
# Store them
# --------------------------------------------------------------------------------------

$node->safe_psql(
	'postgres', q{
	CREATE TABLE enc (id int PRIMARY KEY,
	                  j atrest.encrypted_jsonb(result),
	                  b atrest.encrypted_bytea(model),
	                  t atrest.encrypted_text);
	CREATE TABLE plain (id int PRIMARY KEY, j jsonb, b bytea, t text);
	-- no pglz compression, so the plain markers sit in the files as they are
	ALTER TABLE plain ALTER COLUMN j SET STORAGE EXTERNAL,
	                  ALTER COLUMN b SET STORAGE EXTERNAL,
	                  ALTER COLUMN t SET STORAGE EXTERNAL;
});

my $first_wal = $node->safe_psql('postgres',
	'SELECT pg_walfile_name(pg_current_wal_lsn())');

foreach my $size (@sizes)
{
	my $id = $row_of_size{$size};
	$node->safe_psql('postgres',
		    "INSERT INTO enc VALUES ($id, $enc{jsonb}{$size}{literal}, "
		  . "$enc{bytea}{$size}{literal}, $enc{text}{$size}{literal})");
}
foreach my $size (@sizes)
{
	my $id = $row_of_size{$size};
	$node->safe_psql('postgres',
		    "INSERT INTO plain VALUES ($id, $plain{jsonb}{$size}{literal}, "
		  . "$plain{bytea}{$size}{literal}, $plain{text}{$size}{literal})");
}

# --------------------------------------------------------------------------------------
# The WAL written since the inserts (committed, so flushed to pg_wal)
# --------------------------------------------------------------------------------------

# Pieces of the random padding of the large values: 16 windows of 24 bytes each.  Every
# one of them sits somewhere in plaintext storage, unless a TOAST chunk or WAL page
# boundary happens to cut it.
sub windows
{
	my ($pad) = @_;
	my $step = int((length($pad) - 24) / 15);
	return map { substr($pad, $_ * $step, 24) } 0 .. 15;
}

# Checks one storage area (a byte string) for the markers and padding windows: every
# encrypted value leaves no trace, every plain value shows.
sub check_area
{
	my ($area, $enc_bytes, $plain_bytes) = @_;
	foreach my $kind (@kinds)
	{
		foreach my $size (@sizes)
		{
			my $e = $enc{$kind}{$size};
			my $p = $plain{$kind}{$size};
			ok(index($plain_bytes, $p->{marker}) >= 0,
				"$area: plain $kind ($size) marker is visible");
			ok(index($enc_bytes, $e->{marker}) < 0,
				"$area: encrypted $kind ($size) marker is absent");
			next unless $size eq 'large';
			my $seen = grep { index($plain_bytes, $_) >= 0 } windows($p->{pad});
			cmp_ok($seen, '>=', 12,
				"$area: plain $kind ($size) padding is visible ($seen of 16 pieces)");
			my $leaked = grep { index($enc_bytes, $_) >= 0 } windows($e->{pad});
			is($leaked, 0, "$area: no piece of the encrypted $kind ($size) padding");
		}
	}
}

my @wal = wal_files_from($node, $first_wal);
note 'WAL segments read: ' . join(', ', map { s{.*/}{}r } @wal);
my $wal_block_size = $node->safe_psql('postgres', 'SHOW wal_block_size');
{
	my $raw = join '', map { slurp_raw($_) } @wal;
	my $records = wal_without_page_headers($raw, $wal_block_size);
	# plaintext must show in the record stream; ciphertext must show in neither form
	check_area('WAL', $raw . $records, $records);
}

# --------------------------------------------------------------------------------------
# The tables' heap and TOAST files, after a CHECKPOINT
# --------------------------------------------------------------------------------------

my @enc_files = AtrestTest::relation_files($node, 'enc');    # runs CHECKPOINT
my @plain_files = AtrestTest::relation_files($node, 'plain');
note "encrypted table files: @enc_files";
note "plain table files: @plain_files";

is( $node->safe_psql(
		'postgres', q{
	SELECT string_agg(format('%s=%s', relname,
	           pg_relation_size(reltoastrelid) > 0), ',' ORDER BY relname)
	  FROM pg_class WHERE relname IN ('enc', 'plain')}),
	'enc=t,plain=t',
	'both tables have TOASTed values (their TOAST tables are not empty)');
ok(scalar(@enc_files) >= 2, 'heap and TOAST files of the encrypted table found');

check_area(
	'heap+TOAST files',
	join('', map { slurp_raw($_) } @enc_files),
	join('', map { slurp_raw($_) } @plain_files));

# The encrypted markers are nowhere under PGDATA (catalogs, free space maps, WAL, ...).
my @found;
find(
	{
		no_chdir => 1,
		wanted => sub {
			return unless -f $_;
			my $data = eval { slurp_raw($_) };
			return unless defined $data;
			foreach my $kind (@kinds)
			{
				foreach my $size (@sizes)
				{
					push @found, "$_ ($kind $size)"
					  if index($data, $enc{$kind}{$size}{marker}) >= 0;
				}
			}
		}
	},
	$node->data_dir);
is(scalar(@found), 0, 'no encrypted marker anywhere under PGDATA')
  or diag("found in: @found");

# --------------------------------------------------------------------------------------
# Read back: identical plaintext; envelope headers as expected
# --------------------------------------------------------------------------------------

foreach my $size (@sizes)
{
	my $id = $row_of_size{$size};
	my ($got_j, $got_b, $got_t) = split /\|/,
	  $node->safe_psql('postgres',
		"SELECT md5(j::jsonb::text), md5(b::bytea), md5(t::text) FROM enc WHERE id = $id");
	my $want_j = $node->safe_psql('postgres',
		"SELECT md5(($enc{jsonb}{$size}{literal})::text)");
	is($got_j, $want_j, "read back: encrypted jsonb ($size) is identical");
	is($got_b, $enc{bytea}{$size}{md5}, "read back: encrypted bytea ($size) is identical");
	is($got_t, $enc{text}{$size}{md5}, "read back: encrypted text ($size) is identical");
}

is( $node->safe_psql(
		'postgres', q{
	SELECT string_agg(format('%s:%s/%s/%s', id,
	           (atrest.envelope(j)).key_class, (atrest.envelope(b)).key_class,
	           (atrest.envelope(t)).key_class), ' ' ORDER BY id) FROM enc}),
	'1:result/model/default 2:result/model/default 3:result/model/default',
	'each column sealed under its own key class');

# Large compressible values are LZ4-compressed before encryption; random ones are not.
is( $node->safe_psql(
		'postgres', q{
	SELECT string_agg(format('%s:%s%s%s', id,
	           (atrest.envelope(j)).compressed::int, (atrest.envelope(b)).compressed::int,
	           (atrest.envelope(t)).compressed::int), ' ' ORDER BY id) FROM enc}),
	'1:000 2:000 3:111',
	'only the compressible values are compressed');
ok( $node->safe_psql(
		'postgres', q{
	SELECT bool_and((atrest.envelope(t)).stored_bytes < octet_length(t::text) / 4)
	  FROM enc WHERE id = 3}),
	'a compressible value is stored in much less than its plaintext length');

# --------------------------------------------------------------------------------------
# Write paths
# --------------------------------------------------------------------------------------

# One set of values for every path: a TOASTed jsonb (4 kB of random text, so the class
# coercion also handles out-of-line input), a small bytea, a text, and a jsonb for a
# column declared with an explicit ("default") class.
my $wp_pad = random_alnum(4000);
my %wp = (
	j => qq({"kind": "write path", "n": [1, 2, 3], "pad": "$wp_pad"}),
	b => '\x' . unpack('H*', random_bytes(40)),
	t => "write path text, with 'quotes' and \\ backslash and ünïcödé",
	d => '{"d": true, "s": "default class"}',
);

$node->safe_psql(
	'postgres', qq{
	CREATE TABLE wp (id serial PRIMARY KEY, path text NOT NULL,
	                 j atrest.encrypted_jsonb(result),
	                 b atrest.encrypted_bytea(model),
	                 t atrest.encrypted_text(model),
	                 d atrest.encrypted_jsonb("default"));
	CREATE TABLE wp_plain (j jsonb, b bytea, t text, d jsonb);
	INSERT INTO wp_plain VALUES (@{[ sql_str($wp{j}) ]}, @{[ sql_str($wp{b}) ]},
	                             @{[ sql_str($wp{t}) ]}, @{[ sql_str($wp{d}) ]});
	-- the same values under other classes than wp's columns
	CREATE TABLE wp_other (j atrest.encrypted_jsonb(model),
	                       b atrest.encrypted_bytea(result),
	                       t atrest.encrypted_text(result),
	                       d atrest.encrypted_jsonb(result));
	INSERT INTO wp_other SELECT * FROM wp_plain;
});
is( $node->safe_psql(
		'postgres', q{
	SELECT format('%s/%s/%s/%s', (atrest.envelope(j)).key_class,
	              (atrest.envelope(b)).key_class, (atrest.envelope(t)).key_class,
	              (atrest.envelope(d)).key_class) FROM wp_other}),
	'model/result/result/result',
	'source values of other classes are under those classes');

my ($j, $b, $t, $d) = map { sql_str($wp{$_}) } qw(j b t d);
my @paths;

# literal
$node->safe_psql('postgres',
	"INSERT INTO wp (path, j, b, t, d) VALUES ('literal', $j, $b, $t, $d)");
push @paths, 'literal';

# server-side prepared statements, parameters typed as the encrypted and the plain types
$node->safe_psql(
	'postgres', qq{
	PREPARE p_enc(atrest.encrypted_jsonb, atrest.encrypted_bytea,
	              atrest.encrypted_text, atrest.encrypted_jsonb) AS
	    INSERT INTO wp (path, j, b, t, d) VALUES ('prepare encrypted', \$1, \$2, \$3, \$4);
	EXECUTE p_enc($j, $b, $t, $d);
	PREPARE p_plain(jsonb, bytea, text, jsonb) AS
	    INSERT INTO wp (path, j, b, t, d) VALUES ('prepare plain', \$1, \$2, \$3, \$4);
	EXECUTE p_plain($j, $b, $t, $d);
});
push @paths, 'prepare encrypted', 'prepare plain';

# bind parameters over the extended protocol (pgbench sends :variables as $n parameters
# of unspecified type, which the server resolves to the column's type, typmod -1)
foreach my $mode (qw(extended prepared))
{
	my $script = "INSERT INTO wp (path, j, b, t, d) VALUES ('bind $mode', :j, :b, :t, :d);\n";
	$node->command_ok(
		[
			'pgbench', '-n', '-t', '1', '-M', $mode,
			'-D', "j=$wp{j}", '-D', "b=$wp{b}", '-D', "t=$wp{t}", '-D', "d=$wp{d}",
			'-f', write_script("bind_$mode.sql", $script), 'postgres'
		],
		"pgbench -M $mode inserts a row with bind parameters");
	push @paths, "bind $mode";
}

sub write_script
{
	my ($name, $text) = @_;
	my $file = $node->basedir . "/$name";
	PostgreSQL::Test::Utils::append_to_file($file, $text);
	return $file;
}

# COPY FROM STDIN, text format (psql reads the data from its script)
{
	my @fields = ('copy text', @wp{qw(j b t d)});
	my $line = join "\t", map {
		my $f = $_;
		$f =~ s/\\/\\\\/g;
		$f =~ s/\t/\\t/g;
		$f =~ s/\n/\\n/g;
		$f
	} @fields;
	$node->safe_psql('postgres', "COPY wp (path, j, b, t, d) FROM STDIN;\n$line\n\\.\n");
	push @paths, 'copy text';
}

# COPY FROM a file in binary format: written by COPY TO from plain columns and from
# encrypted columns of other classes (whose send functions write the plain binary format)
{
	my $dir = PostgreSQL::Test::Utils::tempdir();
	foreach my $src (qw(wp_plain wp_other))
	{
		my $file = "$dir/$src.bin";
		$node->safe_psql(
			'postgres', qq{
			COPY (SELECT 'copy binary from $src', j, b, t, d FROM $src)
			    TO '$file' (FORMAT binary);
			COPY wp (path, j, b, t, d) FROM '$file' (FORMAT binary);
		});
		push @paths, "copy binary from $src";
	}
}

# INSERT ... SELECT from plain columns and from encrypted columns of other classes
$node->safe_psql(
	'postgres', q{
	INSERT INTO wp (path, j, b, t, d) SELECT 'insert select plain', j, b, t, d FROM wp_plain;
	INSERT INTO wp (path, j, b, t, d) SELECT 'insert select other class', j, b, t, d FROM wp_other;
});
push @paths, 'insert select plain', 'insert select other class';

# a literal explicitly cast to another class than the column's
$node->safe_psql('postgres',
	    "INSERT INTO wp (path, j, b, t, d) VALUES ('cast to other class', "
	  . "${j}::atrest.encrypted_jsonb(model), ${b}::atrest.encrypted_bytea(result), "
	  . "${t}::atrest.encrypted_text(\"default\"), ${d}::atrest.encrypted_jsonb(model))");
push @paths, 'cast to other class';

# UPDATE of every column, from other values
$node->safe_psql(
	'postgres', qq{
	INSERT INTO wp (path, j, b, t, d) VALUES ('update', '{}', '\\x00', '', '[]');
	UPDATE wp SET j = $j, b = $b, t = $t, d = $d WHERE path = 'update';
});
push @paths, 'update';

is( $node->safe_psql('postgres', 'SELECT count(*) FROM wp'),
	scalar(@paths), 'one row per write path');

# ALTER TABLE ... ALTER COLUMN ... TYPE, rewriting the table: plain columns become
# encrypted ones, and encrypted columns change class.
$node->safe_psql(
	'postgres', q{
	CREATE TABLE wp_alter_plain AS SELECT 'alter type from plain'::text AS path, * FROM wp_plain;
	CREATE TABLE wp_alter_other AS SELECT 'alter type from other class'::text AS path, * FROM wp_other;
	ALTER TABLE wp_alter_plain
	    ALTER COLUMN j TYPE atrest.encrypted_jsonb(result),
	    ALTER COLUMN b TYPE atrest.encrypted_bytea(model),
	    ALTER COLUMN t TYPE atrest.encrypted_text(model),
	    ALTER COLUMN d TYPE atrest.encrypted_jsonb("default");
	ALTER TABLE wp_alter_other
	    ALTER COLUMN j TYPE atrest.encrypted_jsonb(result),
	    ALTER COLUMN b TYPE atrest.encrypted_bytea(model),
	    ALTER COLUMN t TYPE atrest.encrypted_text(model),
	    ALTER COLUMN d TYPE atrest.encrypted_jsonb("default");
});

my $want = $node->safe_psql('postgres',
	'SELECT md5(j::text), md5(b), md5(t), md5(d::text) FROM wp_plain');
foreach my $where ((map { [ 'wp', $_ ] } @paths),
	[ 'wp_alter_plain', 'alter type from plain' ],
	[ 'wp_alter_other', 'alter type from other class' ])
{
	my ($table, $path) = @$where;
	my $q = sql_str($path);
	is( $node->safe_psql(
			'postgres', qq{
		SELECT format('%s/%s/%s/%s', (atrest.envelope(j)).key_class,
		              (atrest.envelope(b)).key_class, (atrest.envelope(t)).key_class,
		              (atrest.envelope(d)).key_class)
		  FROM $table WHERE path = $q}),
		'result/model/model/default',
		"$path: every value is under its column's class");
	is( $node->safe_psql(
			'postgres', qq{
		SELECT md5(j::jsonb::text), md5(b::bytea), md5(t::text), md5(d::jsonb::text)
		  FROM $table WHERE path = $q}),
		$want,
		"$path: reads back identical plaintext");
}

# A column declared without a class modifier: plaintext arrives under "default"; a value
# copied from an encrypted column of another class keeps its class (PostgreSQL applies no
# length coercion to a typmod -1 column, as the README says), is readable, and
# atrest.reencrypt moves it to "default".
$node->safe_psql(
	'postgres', qq{
	CREATE TABLE nomod (path text, t atrest.encrypted_text);
	INSERT INTO nomod VALUES ('literal', $t);
	INSERT INTO nomod SELECT 'insert select plain', t FROM wp_plain;
	INSERT INTO nomod SELECT 'insert select other class', t FROM wp_other;
});
is( $node->safe_psql(
		'postgres', q{
	SELECT string_agg(format('%s=%s', path, (atrest.envelope(t)).key_class), ',' ORDER BY path)
	  FROM nomod WHERE path <> 'insert select other class'}),
	'insert select plain=default,literal=default',
	'no modifier: plaintext lands under the default class');
is( $node->safe_psql(
		'postgres', q{
	SELECT count(*) FROM nomod n, wp_plain p WHERE n.t::text = p.t}),
	'3', 'no modifier: every value reads back identical');
$node->safe_psql('postgres', q{CALL atrest.reencrypt('nomod', 't')});
is( $node->safe_psql(
		'postgres', q{
	SELECT string_agg(DISTINCT (atrest.envelope(t)).key_class, ',') FROM nomod}),
	'default',
	'no modifier: after atrest.reencrypt every value is under the default class');

$node->stop;

done_testing();
