
# Copyright: pg_atrest authors; same license as pg_atrest.

=pod

=head1 NAME

AtrestTest - helpers shared by pg_atrest's TAP tests

=head1 SYNOPSIS

  use PostgreSQL::Test::Cluster;
  use PostgreSQL::Test::Utils;
  use Test::More;
  use AtrestTest;

  # initdb, preload pg_cron and pg_atrest, start, CREATE EXTENSION pg_atrest
  my $node = atrest_node('main');

  # extra settings, no pg_cron, stay stopped
  my $n2 = atrest_node('replica', cron => 0, start => 0,
                       conf => "atrest.some_setting = on\n");

  # the raw bytes of a table's heap and TOAST files, after a CHECKPOINT
  my $bytes = relation_bytes($node, 'doc_results');
  unlike($bytes, qr/\Q$marker\E/, 'no plaintext on disk');

  # an HSM token, when test/fixtures/softhsm-setup exists
  plan skip_all => 'no SoftHSM2 token' unless softhsm();

=head1 DESCRIPTION

test/sandbox runs these tests as the postgres OS user with the pgxs perl directory and
test/perl on @INC, PATH starting with PostgreSQL's bin directory, and TESTDIR, PG_REGRESS,
PG_CONFIG and ATREST_SRCDIR set.  When it has set up a SoftHSM2 token, SOFTHSM2_CONF (and
whatever else test/fixtures/softhsm-setup exported) is in the environment, which the nodes'
postmasters inherit, and ATREST_PKCS11_CONF names a file of atrest.pkcs11_* settings.

=cut

package AtrestTest;

use strict;
use warnings;

use Exporter 'import';
use File::Basename qw(dirname);
use File::Spec;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

our @EXPORT = qw(
  atrest_node
  softhsm
  pkcs11_conf
  relation_files
  relation_bytes
  files_contain
  wal_contains
  srcdir
  kms_adapter
  psql_error
);

=pod

=head1 FUNCTIONS

=over

=item srcdir()

The top of the pg_atrest source tree being tested (for fixtures such as
test/fixtures/...): $ENV{ATREST_SRCDIR} when set, else two levels above this module.

=cut

sub srcdir
{
	return $ENV{ATREST_SRCDIR} if $ENV{ATREST_SRCDIR};
	return File::Spec->rel2abs(dirname(__FILE__) . '/../..');
}

my $softhsm_done;

=pod

=item softhsm([fresh => 1])

Makes sure a SoftHSM2 token is configured for this test and returns true if one is:
uses the one test/sandbox set up (SOFTHSM2_CONF in the environment), or else runs
test/fixtures/softhsm-setup into a temporary directory of this test and exports what
it prints.  With fresh => 1 it always makes a token of this test's own: use that in
tests that delete, disable or re-import key objects, so that later tests find the
shared token as the fixture made it.  Returns false when there is no fixture.  Call
it before starting the nodes that need the token: postmasters inherit the
environment at start.

=cut

sub softhsm
{
	my (%opts) = @_;
	return $softhsm_done if defined $softhsm_done && !$opts{fresh};

	if ($ENV{SOFTHSM2_CONF} && !$opts{fresh})
	{
		$softhsm_done = 1;
		return $softhsm_done;
	}

	my $setup = srcdir() . '/test/fixtures/softhsm-setup';
	if (!-f $setup)
	{
		$softhsm_done = 0;
		return $softhsm_done;
	}

	my $dir = PostgreSQL::Test::Utils::tempdir('softhsm');
	my ($stdout, $stderr) = run_command([ 'bash', $setup, $dir ]);
	my $conf = '';
	foreach my $line (split /\n/, $stdout)
	{
		if ($line =~ /^\s*(?:export\s+)?([A-Z_][A-Z0-9_]*)=(.*)$/)
		{
			my ($name, $value) = ($1, $2);
			$value =~ s/^"(.*)"$/$1/ or $value =~ s/^'(.*)'$/$1/;
			$ENV{$name} = $value;
		}
		elsif ($line =~ /^\s*atrest\./)
		{
			$conf .= "$line\n";
		}
	}
	die "test/fixtures/softhsm-setup exported no SOFTHSM2_CONF:\n$stdout"
	  unless $ENV{SOFTHSM2_CONF};

	my $conffile = "$dir/pkcs11.conf";
	PostgreSQL::Test::Utils::append_to_file($conffile, $conf);
	$ENV{ATREST_PKCS11_CONF} = $conffile;
	$softhsm_done = 1;
	return $softhsm_done;
}

=pod

=item pkcs11_conf()

The atrest.pkcs11_* settings for the SoftHSM2 token (lines for postgresql.conf), or
the empty string when there is none.

=cut

sub pkcs11_conf
{
	my $file = $ENV{ATREST_PKCS11_CONF};
	return '' unless $file && -f $file;
	return PostgreSQL::Test::Utils::slurp_file($file);
}

=pod

=item atrest_node(name, %options)

Creates a PostgreSQL::Test::Cluster node set up for pg_atrest and returns it.
Options:

=over

=item cron => 1

Preload pg_cron too (shared_preload_libraries = 'pg_cron,pg_atrest', with
cron.database_name = 'postgres' and background workers), as test/sandbox does.  With 0,
only pg_atrest is preloaded.

=item pkcs11 => 1

Append the SoftHSM2 token's atrest.pkcs11_* settings when there is a token (see
softhsm()).

=item conf => '...'

More lines for postgresql.conf, appended last.

=item init => { ... }

Options passed to $node->init (e.g. allows_streaming => 1).

=item checksums => 0

Initialise without data checksums, whatever the version's default (initdb turns them
on by default from PostgreSQL 18).  For tests that corrupt pages on disk to show that
pg_atrest notices: with checksums, PostgreSQL refuses the page first.

=item start => 1, create_extension => 1

Start the node, then CREATE EXTENSION pg_atrest in the database "postgres".

=back

=cut

sub atrest_node
{
	my ($name, %opts) = @_;
	my $cron = $opts{cron} // 1;
	my $pkcs11 = $opts{pkcs11} // 1;
	my $start = $opts{start} // 1;
	my $create = $opts{create_extension} // 1;

	softhsm() if $pkcs11;

	my $node = PostgreSQL::Test::Cluster->new($name);
	my %init = %{ $opts{init} // {} };
	if (defined $opts{checksums} && !$opts{checksums} && $node->pg_version >= 18)
	{
		$init{extra} = [ @{ $init{extra} // [] }, '--no-data-checksums' ];
	}
	$node->init(%init);

	my $conf = $cron
	  ? "shared_preload_libraries = 'pg_cron,pg_atrest'\n"
	  . "cron.database_name = 'postgres'\n"
	  . "cron.use_background_workers = on\n"
	  . "max_worker_processes = 32\n"
	  : "shared_preload_libraries = 'pg_atrest'\n";
	$conf .= pkcs11_conf() if $pkcs11;
	$conf .= $opts{conf} if defined $opts{conf};
	$node->append_conf('postgresql.conf', $conf);

	if ($start)
	{
		$node->start;
		$node->safe_psql('postgres', 'CREATE EXTENSION pg_atrest') if $create;
	}
	return $node;
}

=pod

=item relation_files(node, relation [, dbname])

Runs CHECKPOINT, so every changed page is in the files, and returns the absolute paths
of all segments of the relation's main fork and of its TOAST table's main fork.

=cut

sub relation_files
{
	my ($node, $rel, $dbname) = @_;
	$dbname //= 'postgres';
	$node->safe_psql($dbname, 'CHECKPOINT');
	my $quoted = $rel;
	$quoted =~ s/'/''/g;
	my $paths = $node->safe_psql(
		$dbname, qq{
		SELECT pg_relation_filepath(c.oid)
		FROM pg_class c WHERE c.oid = '$quoted'::regclass
		UNION ALL
		SELECT pg_relation_filepath(c.reltoastrelid)
		FROM pg_class c WHERE c.oid = '$quoted'::regclass AND c.reltoastrelid <> 0});
	my @files;
	foreach my $path (split /\n/, $paths)
	{
		my $base = $node->data_dir . '/' . $path;
		push @files, $base if -f $base;
		for (my $seg = 1; -f "$base.$seg"; $seg++)
		{
			push @files, "$base.$seg";
		}
	}
	die "no files for relation $rel" unless @files;
	return @files;
}

=pod

=item relation_bytes(node, relation [, dbname])

The raw bytes of the relation's heap and TOAST files (see relation_files()),
concatenated.

=cut

sub relation_bytes
{
	my @files = relation_files(@_);
	my $bytes = '';
	foreach my $f (@files)
	{
		open my $fh, '<:raw', $f or die "could not open $f: $!";
		local $/;
		$bytes .= <$fh> // '';
		close $fh;
	}
	return $bytes;
}

=pod

=item files_contain(needle, file, ...)

How many times the byte string needle occurs in the given files.

=cut

sub files_contain
{
	my ($needle, @files) = @_;
	my $count = 0;
	foreach my $f (@files)
	{
		open my $fh, '<:raw', $f or die "could not open $f: $!";
		local $/;
		my $data = <$fh> // '';
		close $fh;
		$count++ while $data =~ /\Q$needle\E/g;
	}
	return $count;
}

=pod

=item kms_adapter(keydir [, key...])

Makes a KMS adapter for the command provider: a small wrapper around
test/kms/openssl-kms that keeps its keys in "keydir", so that atrest.kms_command is all
a server needs.  Creates each named key (version 1).  Returns the wrapper's path, or
undef when test/kms/openssl-kms is missing.

=cut

sub kms_adapter
{
	my ($keydir, @keys) = @_;
	my $adapter = srcdir() . '/test/kms/openssl-kms';
	return undef unless -f $adapter;

	my $cmd = "$keydir.kms";
	PostgreSQL::Test::Utils::append_to_file($cmd,
		"#!/bin/sh\nATREST_KMS_DIR='$keydir' exec perl '$adapter' \"\$@\"\n");
	chmod 0755, $cmd;
	mkdir $keydir unless -d $keydir;
	foreach my $key (@keys)
	{
		my ($out, $err) = run_command([ $cmd, 'create', $key ]);
		die "openssl-kms create $key failed: $err" unless $out =~ m{kms:openssl/\Q$key\E/1};
	}
	return $cmd;
}

=pod

=item psql_error(node, sql [, dbname])

Runs "sql" with verbose error reports (so the SQLSTATE is in the text) and returns
what psql wrote to stderr if it failed, or the empty string if it succeeded.

=cut

sub psql_error
{
	my ($node, $sql, $dbname) = @_;
	my ($stdout, $stderr);
	my $rc = $node->psql($dbname // 'postgres', "\\set VERBOSITY verbose\n$sql",
		stdout => \$stdout, stderr => \$stderr);
	return $rc == 0 ? '' : $stderr;
}

=pod

=item wal_contains(node, needle)

How many times needle occurs in the node's WAL files (pg_wal), after a CHECKPOINT.

=cut

sub wal_contains
{
	my ($node, $needle) = @_;
	$node->safe_psql('postgres', 'CHECKPOINT');
	my $dir = $node->data_dir . '/pg_wal';
	opendir my $dh, $dir or die "could not open $dir: $!";
	my @files = map { "$dir/$_" } grep { /^[0-9A-F]{24}$/ } readdir $dh;
	closedir $dh;
	return files_contain($needle, @files);
}

=pod

=item schema_description(node, dbname)

One line per object of the extension and of the schema atrest, sorted: functions and
procedures with their full definitions, settings and privileges; tables, views and
sequences with their columns (attribute numbers included: the C code reads key tables by
column position), privileges and owners; indexes, constraints, triggers, types, casts,
and the extension's member list.  Two databases with equal descriptions have the same
pg_atrest, whichever way (install or update) they got it.

=cut

sub schema_description
{
	my ($node, $dbname) = @_;
	return $node->safe_psql(
		$dbname, q{
	WITH ns AS (SELECT oid FROM pg_namespace WHERE nspname = 'atrest'),
	lines AS (
		SELECT 'function ' || p.oid::regprocedure::text || ' acl=' || coalesce(p.proacl::text, '')
		       || E'\n' || pg_get_functiondef(p.oid) AS line
		  FROM pg_proc p WHERE p.pronamespace = (SELECT oid FROM ns) AND p.prokind <> 'a'
		UNION ALL
		SELECT 'relation ' || c.relname || ' kind=' || c.relkind::text
		       || ' owner=' || pg_get_userbyid(c.relowner) || ' acl=' || coalesce(c.relacl::text, '')
		       || ' persistence=' || c.relpersistence::text || ' options=' || coalesce(c.reloptions::text, '')
		       || ' columns=' || coalesce((
		            SELECT string_agg(a.attnum || ' ' || a.attname || ' '
		                              || format_type(a.atttypid, a.atttypmod)
		                              || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
		                              || CASE WHEN a.attidentity <> '' THEN ' identity ' || a.attidentity::text ELSE '' END
		                              || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '')
		                              || ' storage=' || a.attstorage::text
		                              || ' acl=' || coalesce(a.attacl::text, ''),
		                              ', ' ORDER BY a.attnum)
		              FROM pg_attribute a
		              LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
		             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '')
		       || CASE WHEN c.relkind IN ('v', 'm') THEN E'\n' || pg_get_viewdef(c.oid) ELSE '' END
		  FROM pg_class c WHERE c.relnamespace = (SELECT oid FROM ns) AND c.relkind <> 'i'
		UNION ALL
		SELECT 'sequence ' || s.sequencename || ' ' || s.data_type || ' ' || s.start_value || ' '
		       || s.min_value || ' ' || s.max_value || ' ' || s.increment_by || ' ' || s.cycle
		  FROM pg_sequences s WHERE s.schemaname = 'atrest'
		UNION ALL
		SELECT 'index ' || pg_get_indexdef(i.indexrelid)
		  FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
		 WHERE c.relnamespace = (SELECT oid FROM ns)
		UNION ALL
		SELECT 'constraint ' || co.conrelid::regclass::text || ' ' || co.conname || ' '
		       || pg_get_constraintdef(co.oid)
		  FROM pg_constraint co WHERE co.connamespace = (SELECT oid FROM ns)
		UNION ALL
		SELECT 'trigger ' || pg_get_triggerdef(t.oid) || ' enabled=' || t.tgenabled::text
		  FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
		 WHERE c.relnamespace = (SELECT oid FROM ns) AND NOT t.tgisinternal
		UNION ALL
		SELECT 'type ' || t.oid::regtype::text || ' ' || t.typtype::text || ' ' || t.typlen || ' '
		       || t.typalign::text || ' ' || t.typstorage::text || ' ' || t.typcategory::text || ' '
		       || t.typinput::text || ' ' || t.typoutput::text || ' ' || t.typreceive::text || ' '
		       || t.typsend::text || ' ' || t.typmodin::text || ' ' || t.typmodout::text
		       || ' acl=' || coalesce(t.typacl::text, '')
		  FROM pg_type t WHERE t.typnamespace = (SELECT oid FROM ns) AND t.typtype <> 'c'
		       AND t.typelem = 0
		UNION ALL
		SELECT 'cast ' || ca.castsource::regtype::text || ' -> ' || ca.casttarget::regtype::text
		       || ' ' || coalesce(nullif(ca.castfunc, 0)::regprocedure::text, '-') || ' '
		       || ca.castcontext::text || ca.castmethod::text
		  FROM pg_cast ca
		 WHERE ca.castsource IN (SELECT oid FROM pg_type WHERE typnamespace = (SELECT oid FROM ns))
		    OR ca.casttarget IN (SELECT oid FROM pg_type WHERE typnamespace = (SELECT oid FROM ns))
		UNION ALL
		SELECT 'operator ' || o.oid::regoperator::text || ' ' || o.oprcode::text
		  FROM pg_operator o WHERE o.oprnamespace = (SELECT oid FROM ns)
		UNION ALL
		SELECT 'schema owner=' || pg_get_userbyid(n.nspowner) || ' acl=' || coalesce(n.nspacl::text, '')
		  FROM pg_namespace n WHERE n.oid = (SELECT oid FROM ns)
		UNION ALL
		SELECT 'member ' || pg_describe_object(d.classid, d.objid, d.objsubid)
		  FROM pg_depend d JOIN pg_extension e ON d.refobjid = e.oid
		 WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
		       AND e.extname = 'pg_atrest')
	SELECT string_agg(replace(line, E'\n', ' '), E'\n' ORDER BY line) FROM lines});
}

=pod

=back

=cut

1;
