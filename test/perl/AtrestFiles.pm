# Copyright: pg_atrest authors; same license as pg_atrest.

=pod

=head1 NAME

AtrestFiles - raw-file and error helpers for pg_atrest's at-rest, corruption,
dump/restore, privilege and invalidation TAP tests

=head1 SYNOPSIS

  use AtrestFiles;

  my @wal = wal_files_from($node, $first_walfile);      # pg_wal segments from one on
  my @at  = byte_offsets(slurp_raw($file), $pattern);   # where a byte string occurs
  flip_byte($file, $offset);                            # corrupt one byte in place

  my ($sqlstate, $message, $stderr) = sql_error($node, 'postgres', 'SELECT ...');
  sql_fails_with($node, 'postgres', 'SELECT ...', '42501', 'name');

  my $s = random_alnum(1000);   my $b = random_bytes(1000);

=head1 DESCRIPTION

Complements AtrestTest (node set-up, relation files): these helpers read and write
files byte by byte and check the SQLSTATE of failing statements.  They never call
pg_atrest's own functions, so a test that uses them to look at the disk trusts no code
of the extension.

=cut

package AtrestFiles;

use strict;
use warnings;

use Exporter 'import';
use Test::More;

our @EXPORT = qw(
  slurp_raw
  wal_files_from
  wal_without_page_headers
  byte_offsets
  flip_byte
  sql_error
  sql_fails_with
  random_alnum
  random_bytes
);

=pod

=head1 FUNCTIONS

=over

=item slurp_raw(file)

The file's bytes.

=cut

sub slurp_raw
{
	my ($file) = @_;
	open my $fh, '<:raw', $file or die "could not open $file: $!";
	local $/;
	my $data = <$fh> // '';
	close $fh;
	return $data;
}

=pod

=item wal_files_from(node, walfile)

The absolute paths of the node's WAL segment files (in pg_wal) whose names sort at or
after walfile (a name from pg_walfile_name()), in order.  Segments recycled since keep
their old bytes under a later name, so they are included too.

=cut

sub wal_files_from
{
	my ($node, $first) = @_;
	my $dir = $node->data_dir . '/pg_wal';
	opendir my $dh, $dir or die "could not open $dir: $!";
	my @names = sort grep { /^[0-9A-F]{24}$/ && $_ ge $first } readdir $dh;
	closedir $dh;
	die "no WAL segment at or after $first in $dir" unless @names;
	return map { "$dir/$_" } @names;
}

=pod

=item wal_without_page_headers(bytes [, wal_block_size])

WAL bytes (whole segments) with the header of every WAL page cut out, so that a
record's data that straddles a page boundary is contiguous again and a search for a
string inside it cannot miss.  wal_block_size defaults to 8192 (SHOW wal_block_size).

=cut

sub wal_without_page_headers
{
	my ($data, $blcksz) = @_;
	$blcksz //= 8192;
	my $out = '';
	for (my $off = 0; $off < length($data); $off += $blcksz)
	{
		# XLogPageHeaderData: xlp_magic (2 bytes), xlp_info (2 bytes), ...; the long
		# header (XLP_LONG_HEADER, first page of a segment) is 40 bytes, the short 24.
		my $info = unpack('v', substr($data, $off + 2, 2));
		my $hdr = ($info & 0x0002) ? 40 : 24;
		$out .= substr($data, $off + $hdr, $blcksz - $hdr);
	}
	return $out;
}

=pod

=item byte_offsets(haystack, needle)

The offsets at which the byte string needle occurs in haystack (overlaps included).

=cut

sub byte_offsets
{
	my ($haystack, $needle) = @_;
	my @at;
	my $pos = index($haystack, $needle);
	while ($pos >= 0)
	{
		push @at, $pos;
		$pos = index($haystack, $needle, $pos + 1);
	}
	return @at;
}

=pod

=item flip_byte(file, offset)

Inverts every bit of the byte at offset in file, in place.  Returns the old and new
byte values.  The server must not have the file open for writing (stop it first).

=cut

sub flip_byte
{
	my ($file, $offset) = @_;
	open my $fh, '+<:raw', $file or die "could not open $file: $!";
	seek($fh, $offset, 0) or die "could not seek in $file: $!";
	my $n = read($fh, my $old, 1);
	die "could not read byte $offset of $file" unless $n && $n == 1;
	my $new = chr(ord($old) ^ 0xff);
	seek($fh, $offset, 0) or die "could not seek in $file: $!";
	print $fh $new or die "could not write $file: $!";
	close $fh or die "could not close $file: $!";
	return (ord($old), ord($new));
}

=pod

=item sql_error(node, dbname, sql, %psql_params)

Runs sql with psql (verbose error messages) and returns (sqlstate, message, stderr) of
the first ERROR, or (undef, undef, stderr) when there was none.  Extra parameters go to
$node->psql (e.g. extra_params => ['-U', 'alice']).

=cut

sub sql_error
{
	my ($node, $dbname, $sql, %params) = @_;
	my ($stdout, $stderr);
	$node->psql(
		$dbname, "\\set VERBOSITY verbose\n$sql",
		stdout => \$stdout,
		stderr => \$stderr,
		%params);
	if ($stderr =~ /^(?:psql:[^\n]*?)?ERROR:\s+([0-9A-Z]{5}):\s+([^\n]*)/m)
	{
		return ($1, $2, $stderr);
	}
	return (undef, undef, $stderr);
}

=pod

=item sql_fails_with(node, dbname, sql, sqlstate, test_name, %psql_params)

A test: sql fails with the given SQLSTATE.  Returns the error message.

=cut

sub sql_fails_with
{
	my ($node, $dbname, $sql, $sqlstate, $name, %params) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my ($state, $message, $stderr) = sql_error($node, $dbname, $sql, %params);
	is($state // 'no error', $sqlstate, $name)
	  or diag("statement: $sql\nstderr: $stderr");
	return $message;
}

=pod

=item random_alnum(n)

n random letters and digits (incompressible enough that neither pglz nor LZ4 shrinks
it by much).

=cut

my @ALNUM = ('a' .. 'z', 'A' .. 'Z', '0' .. '9');

sub random_alnum
{
	my ($n) = @_;
	return join '', map { $ALNUM[ int(rand(@ALNUM)) ] } 1 .. $n;
}

=pod

=item random_bytes(n)

n random bytes.

=cut

sub random_bytes
{
	my ($n) = @_;
	return join '', map { chr(int(rand(256))) } 1 .. $n;
}

=pod

=back

=cut

1;
