# Copyright: pg_atrest authors; same license as pg_atrest.
#
# DBD::Pg sees the encrypted columns as the plain types: the application gets from the
# encrypted column what it gets from a plain column holding the same value (jsonb as its
# text, bytea unescaped to raw bytes, text as a character string), with server-side
# prepared statements on and off, through a server-side cursor, RETURNING and COPY TO
# (the copied data is the plain column's); $sth->{pg_type} names the plain types.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use AtrestTest;

my $node = atrest_node('dbdpg', cron => 0, pkcs11 => 0);
driver_fixture($node);

driver_checks($node, 'dbd_pg', [$^X], <<'PL');
use strict;
use warnings;
use DBI;

my @pairs = (['doc', 'pdoc'], ['blob', 'pblob'], ['note', 'pnote']);
my $cols = join(', ', map { "$_->[0], $_->[1]" } @pairs);

sub check
{
	my ($name, $cond, $why) = @_;
	print(($cond ? 'ok ' : 'not ok ') . $name . ($cond ? '' : " # $why") . "\n");
}

sub show { defined $_[0] ? unpack('H*', $_[0]) . (utf8::is_utf8($_[0]) ? ' (utf8)' : '') : 'undef' }

sub same_row
{
	my ($name, $row) = @_;
	for my $i (0 .. $#pairs)
	{
		my ($a, $b) = ($row->[2 * $i], $row->[2 * $i + 1]);
		my $same = (!defined $a && !defined $b)
		  || (defined $a && defined $b && $a eq $b && (utf8::is_utf8($a) ? 1 : 0) == (utf8::is_utf8($b) ? 1 : 0));
		check("$name: $pairs[$i][0] equals $pairs[$i][1]", $same, show($a) . ' vs ' . show($b));
	}
}

sub same_types
{
	my ($name, $sth) = @_;
	my $t = $sth->{pg_type};
	for my $i (0 .. $#pairs)
	{
		check("$name: $pairs[$i][0] has type $t->[2 * $i + 1]", $t->[2 * $i] eq $t->[2 * $i + 1],
			"$t->[2 * $i] vs $t->[2 * $i + 1]");
	}
}

my $dbh = DBI->connect('dbi:Pg:', undef, undef,
	{ RaiseError => 1, AutoCommit => 1, pg_enable_utf8 => 1, PrintError => 0 });

for my $server_prepare (1, 0)
{
	$dbh->{pg_server_prepare} = $server_prepare;
	my $sth = $dbh->prepare("SELECT $cols FROM drv WHERE id = ?");
	for my $id (1, 2, 3)
	{
		$sth->execute($id);
		same_row("server_prepare=$server_prepare row $id", $sth->fetchrow_arrayref);
		same_types("server_prepare=$server_prepare row $id", $sth);
		$sth->finish;
	}
	my $named = $dbh->selectrow_array(
		q{SELECT count(*) FROM pg_prepared_statements WHERE NOT from_sql AND statement LIKE '%FROM drv WHERE id%'});
	check("server_prepare=$server_prepare: named prepared statement " . ($server_prepare ? 'used' : 'not used'),
		($named >= 1) == $server_prepare, $named);
}
$dbh->{pg_server_prepare} = 1;

$dbh->begin_work;
$dbh->do("DECLARE c CURSOR FOR SELECT $cols FROM drv ORDER BY id");
for my $k (1 .. 3)
{
	my $sth = $dbh->prepare('FETCH 1 FROM c');
	$sth->execute;
	same_row("cursor row $k", $sth->fetchrow_arrayref);
	same_types("cursor row $k", $sth);
}
$dbh->do('CLOSE c');

for my $stmt ("INSERT INTO drv SELECT id + 10, $cols FROM drv WHERE id = 1 RETURNING $cols",
	"UPDATE drv SET note = pnote WHERE id = 11 RETURNING $cols",
	"DELETE FROM drv WHERE id = 11 RETURNING $cols")
{
	my $sth = $dbh->prepare($stmt);
	$sth->execute;
	same_row((split / /, $stmt)[0] . ' RETURNING', $sth->fetchrow_arrayref);
	same_types((split / /, $stmt)[0] . ' RETURNING', $sth);
}
$dbh->rollback;

for my $fmt ('text', 'binary')
{
	my %out;
	for my $col (map { @$_ } @pairs)
	{
		$dbh->do("COPY (SELECT $col FROM drv ORDER BY id) TO STDOUT (FORMAT $fmt)");
		my ($data, $buf) = ('', '');
		$data .= $buf while $dbh->pg_getcopydata($buf) >= 0;
		$out{$col} = $data;
	}
	for my $p (@pairs)
	{
		check("COPY $fmt: $p->[0] data equals $p->[1]'s",
			$out{ $p->[0] } eq $out{ $p->[1] } && length($out{ $p->[1] }) > 0,
			show($out{ $p->[0] }) . ' vs ' . show($out{ $p->[1] }));
	}
}
$dbh->disconnect;
PL

done_testing();
