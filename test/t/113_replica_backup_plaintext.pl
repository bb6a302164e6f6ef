
# Copyright: pg_atrest authors; same license as pg_atrest.
#
# No plaintext in a standby's files or in a base backup's files (README, security: values
# are sealed before they reach a page, so WAL, replicas and backups carry only ciphertext).
#
# The primary stores markers in encrypted columns (jsonb, bytea, text; small values and
# TOASTed ones) and, as the control, in plain columns stored uncompressed.  Rows go in before
# the base backup (pg_basebackup, tar format, unpacked, and the plain format) and after it,
# so the standby made from the backup gets the later ones through streaming replication.
# Once the standby has replayed everything and made a restartpoint (CHECKPOINT), every file
# under its data directory, and every file of the base backups, is searched (WAL files with
# their page headers cut out too): the plain markers are found (the search works), the
# encrypted ones nowhere.  The standby reads the encrypted values (they are really there).

use strict;
use warnings;

use File::Find;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use AtrestTest;
use AtrestFiles;

my $keydir = PostgreSQL::Test::Utils::tempdir('svc');
PostgreSQL::Test::Utils::append_to_file("$keydir/service.key", ('3c' x 32) . "\n");
chmod 0600, "$keydir/service.key";

my $primary = atrest_node(
	'primary',
	cron => 0,
	pkcs11 => 0,
	init => { allows_streaming => 1 },
	conf => "atrest.service_key_file = '$keydir/service.key'\n"
	  . "autovacuum = off\nwal_compression = off\n");
$primary->safe_psql(
	'postgres', q{
	CREATE TABLE enc (id int, j atrest.encrypted_jsonb(result), b atrest.encrypted_bytea(model),
	                  t atrest.encrypted_text);
	CREATE TABLE plain (id int, j jsonb, b bytea, t text);
	ALTER TABLE plain ALTER j SET STORAGE EXTERNAL, ALTER b SET STORAGE EXTERNAL,
	                  ALTER t SET STORAGE EXTERNAL;});

my %marker;    # phase => kind => [encrypted marker, plain marker]

sub store
{
	my ($phase) = @_;
	foreach my $kind (qw(j b t))
	{
		my @m = map { "MARK-$phase-$kind-$_-" . random_alnum(20) } qw(enc plain);
		$marker{$phase}{$kind} = \@m;
	}
	# a small value and a TOASTed one (random padding: nothing compresses it away)
	my $pad = random_alnum(6000);
	my $values = sub {
		my ($which, $big) = @_;
		my $p = $big ? $pad : '';
		my %v = map { $_ => $marker{$phase}{$_}[$which] . $p } qw(j b t);
		return sprintf(q{jsonb_build_object('m', '%s'), convert_to('%s', 'UTF8'), '%s'},
			$v{j}, $v{b}, $v{t});
	};
	foreach my $big (0, 1)
	{
		$primary->safe_psql('postgres',
			"INSERT INTO enc VALUES ($big, " . $values->(0, $big) . ')');
		$primary->safe_psql('postgres',
			"INSERT INTO plain VALUES ($big, " . $values->(1, $big) . ')');
	}
}

# Every file under the directories, as one list of [path, bytes to search].  WAL segments
# are searched as they are and with their page headers cut out.
sub area_files
{
	my (@dirs) = @_;
	my @out;
	find(
		{
			no_chdir => 1,
			wanted => sub {
				return unless -f $_;
				my $data = eval { slurp_raw($_) };
				return unless defined $data;
				push @out, [ $_, $data ];
				push @out, [ "$_ (page headers cut)", wal_without_page_headers($data) ]
				  if m{/pg_wal/[0-9A-F]{24}$} || m{/[0-9A-F]{24}$};
			}
		},
		@dirs);
	return @out;
}

sub check_area
{
	my ($area, $phases, @dirs) = @_;
	my @files = area_files(@dirs);
	ok(@files > 0, "$area: " . scalar(@files) . ' files read');
	foreach my $phase (@$phases)
	{
		foreach my $kind (qw(j b t))
		{
			my ($enc, $plain) = @{ $marker{$phase}{$kind} };
			my @plain_in = grep { index($_->[1], $plain) >= 0 } @files;
			my @enc_in = grep { index($_->[1], $enc) >= 0 } @files;
			ok(@plain_in > 0, "$area: the plain $kind marker ($phase) is found (control)");
			is(join(', ', map { $_->[0] } @enc_in), '',
				"$area: the encrypted $kind marker ($phase) is in no file");
		}
	}
}

# --- before the backup ------------------------------------------------------------------
store('before');
$primary->safe_psql('postgres', 'CHECKPOINT');
$primary->backup('plainbackup');
$primary->backup('tarbackup', backup_options => [ '--format=tar', '--wal-method=fetch' ]);

# --- after it: only the standby gets these, by streaming ---------------------------------
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'plainbackup', has_streaming => 1);
$standby->start;
store('after');
$primary->wait_for_catchup($standby, 'replay', $primary->lsn('insert'));
$standby->safe_psql('postgres', 'CHECKPOINT');    # a restartpoint: pages reach the files

is( $standby->safe_psql(
		'postgres',
		q{SELECT count(*) FROM enc WHERE j ->> 'm' LIKE 'MARK-%-j-enc-%'
		  AND convert_from(b::bytea, 'UTF8') LIKE 'MARK-%-b-enc-%' AND t::text LIKE 'MARK-%-t-enc-%'}),
	'4', 'the standby reads all four encrypted rows (two before the backup, two after)');

check_area('standby data directory', [qw(before after)], $standby->data_dir);

# The tar backup, unpacked (base.tar and pg_wal.tar), and the plain one.
my $tardir = $primary->backup_dir . '/tarbackup';
my $unpacked = PostgreSQL::Test::Utils::tempdir('unpacked');
foreach my $tar (glob("$tardir/*.tar"))
{
	my ($out, $err) = run_command([ 'tar', '-C', $unpacked, '-xf', $tar ]);
	is($err, '', "unpacked " . ($tar =~ s{.*/}{}r));
}
check_area('base backup (plain format)', ['before'], $primary->backup_dir . '/plainbackup');
check_area('base backup (tar format, the tar files)', ['before'], $tardir);
check_area('base backup (tar format, unpacked)', ['before'], $unpacked);

$standby->stop;
$primary->stop;
done_testing();
