
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
use IO::Socket::INET;
use IPC::Run ();
use POSIX ();
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use AtrestFiles ();

our @EXPORT = qw(
  secure_mappings
  secure_bytes
  core_dump
  count_in
  atrest_node
  softhsm
  pkcs11_conf
  relation_files
  relation_bytes
  files_contain
  wal_contains
  srcdir
  kms_adapter
  counting_kms_adapter
  provider_calls
  psql_error
  psql_error_with_log
  barrier_burst
  barrier_release
  barrier_pump
  barrier_finish
  advisory_waiters
  processes_matching
  log_since
  database_files
  wait_for_scrub
  restore_key_modes
  kmip_server
  driver_fixture
  driver_checks
  plproxy_available
  proxy_fleet
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

=item counting_kms_adapter(keydir, log [, key...])

Like kms_adapter(), but the command it returns (for atrest.kms_command) first appends a
line "PID OPERATION" to the file "log" for every call it serves: PID is the process that
ran it (the backend: the command provider execs the adapter directly) and OPERATION the
request's "operation" (version, wrap, unwrap).  Lines are short single writes to a file
opened for appending, so concurrent calls do not mix.  While a file "log.delay" exists,
each call first sleeps for the number of seconds it holds (a slow KMS).  Returns undef when
test/kms/openssl-kms is missing.

=cut

sub counting_kms_adapter
{
	my ($keydir, $log, @keys) = @_;
	my $inner = kms_adapter($keydir, @keys) or return undef;
	my $cmd = "$keydir.counting-kms";
	my $script = <<'EOS';
#!/bin/sh
req=$(cat)
op=$(printf '%s' "$req" | sed -n 's/.*"operation" *: *"\([a-z]*\)".*/\1/p')
echo "$PPID $op" >>'@LOG@'
[ -f '@LOG@.delay' ] && sleep "$(cat '@LOG@.delay')"
printf '%s' "$req" | exec '@INNER@'
EOS
	$script =~ s/\@LOG\@/$log/g;
	$script =~ s/\@INNER\@/$inner/;
	PostgreSQL::Test::Utils::append_to_file($cmd, $script);
	chmod 0755, $cmd;
	return $cmd;
}

=pod

=item provider_calls(log [, pid])

The lines of a counting adapter's log (see counting_kms_adapter()) as a list of
[pid, operation] pairs, only those of process "pid" when it is given.

=cut

sub provider_calls
{
	my ($log, $pid) = @_;
	return () unless -f $log;
	my @calls = map { [ split / / ] } split /\n/, PostgreSQL::Test::Utils::slurp_file($log);
	return defined $pid ? grep { $_->[0] == $pid } @calls : @calls;
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

=item processes_matching(regex)

The live processes (zombies left out) whose command line matches regex, as
"pid command-line" strings: for checking that no helper program outlived its call.

=cut

sub processes_matching
{
	my ($re) = @_;
	my ($ps) = run_command([ 'ps', '-eo', 'pid=,stat=,args=' ]);
	my @found;
	foreach my $line (split /\n/, $ps)
	{
		my ($pid, $stat, $args) = $line =~ /^\s*(\d+)\s+(\S+)\s+(.*)$/ or next;
		next if $stat =~ /^Z/ || $pid == $$;
		push @found, "$pid $args" if $args =~ $re;
	}
	return @found;
}

=pod

=item log_since(node, offset)

What the node's server log gained since byte offset (take it with -s $node->logfile
before the statement).

=cut

sub log_since
{
	my ($node, $offset) = @_;
	return PostgreSQL::Test::Utils::slurp_file($node->logfile, $offset);
}

=pod

=item psql_error_with_log(node, sql [, dbname])

Like psql_error, followed by what the server log gained meanwhile: key-provider errors
give the client a generic detail and the provider's reason (paths, labels) to the server
log only, so a check of that reason looks at both.

=cut

sub psql_error_with_log
{
	my ($node, $sql, $dbname) = @_;
	my $offset = -s $node->logfile;
	my $err = psql_error($node, $sql, $dbname);
	return $err eq '' ? '' : $err . "\n--- server log ---\n" . log_since($node, $offset);
}

=pod

=item barrier_burst(node, n, sql, key => 4711, dbs => [dbname...])

Starts n psql sessions (background_psql) that each wait on an advisory lock
(pg_advisory_lock_shared(key)) held by a holder session, then run "sql" followed by
C<\echo done>, so that all n run it at the same moment once released.  Without dbs all
sessions connect to postgres; with dbs (n names) session i connects to the i-th, and each
database gets a holder of its own (advisory locks belong to a database).  It returns once
pg_locks shows all n waiting at the same time, or after $PostgreSQL::Test::Utils::timeout_default;
the returned barrier's {waiting} says how many it saw, for the test to check.  IPC::Run
hands a session its input only while that session is pumped: the helpers pump them.

Then barrier_release(barrier) lets them all go in one go (the unlocks are queued to every
holder first, then sent), barrier_pump(barrier) pumps the sessions without blocking (for a
test that polls the server while they run), and barrier_finish(barrier) waits until each
session has printed "done" (or its timeout expired), ends the sessions and the holders,
and returns what each session printed, in order.

=cut

sub barrier_burst
{
	my ($node, $n, $sql, %opts) = @_;
	my $key = $opts{key} // 4711;
	my @dbs = $opts{dbs} ? @{ $opts{dbs} } : ('postgres') x $n;
	die "barrier_burst: dbs names $n databases, not " . scalar(@dbs) . "\n" unless @dbs == $n;
	my %seen;
	my @holders = map { $node->background_psql($_) } grep { !$seen{$_}++ } @dbs;
	$_->query_safe("SELECT pg_advisory_lock($key)") foreach @holders;
	my @sessions = map { $node->background_psql($_, wait => 0) } @dbs;
	$_->wait_connect foreach @sessions;
	$_->{stdin} .= "SELECT pg_advisory_lock_shared($key);\n$sql\n\\echo done\n" foreach @sessions;
	my $b = { node => $node, key => $key, holders => \@holders, sessions => \@sessions };
	$b->{waiting} = advisory_waiters($node, $key, $n, mode => 'ShareLock', pump => \@sessions);
	return $b;
}

sub barrier_release
{
	my ($b) = @_;
	$_->{stdin} .= "SELECT pg_advisory_unlock($b->{key});\n" foreach @{ $b->{holders} };
	$_->{run}->pump_nb foreach @{ $b->{holders} };
	return;
}

sub barrier_pump
{
	my ($b) = @_;
	$_->{run}->pump_nb foreach @{ $b->{sessions} };
	return;
}

sub barrier_finish
{
	my ($b) = @_;
	my @out;
	foreach my $s (@{ $b->{sessions} })
	{
		$s->{run}->pump until $s->{stdout} =~ /^done$/m || $s->{timeout}->is_expired;
		push @out, $s->{stdout};
		$s->quit;
	}
	$_->quit foreach @{ $b->{holders} };
	return @out;
}

=pod

=item advisory_waiters(observer, key, n, mode => 'ShareLock', pump => [sessions])

Pumps the background psql sessions in pump (IPC::Run feeds a session only while it is
pumped) until pg_locks shows n sessions waiting for advisory lock key (in mode, when
given), or $PostgreSQL::Test::Utils::timeout_default passes; returns the last count seen.
observer is a node (asked through its postgres database) or a background psql session.

=cut

sub advisory_waiters
{
	my ($observer, $key, $n, %opts) = @_;
	my $mode = defined $opts{mode} ? " AND mode = '$opts{mode}'" : '';
	my $sql = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = $key$mode AND NOT granted";
	my $count = 0;
	my $deadline = time + $PostgreSQL::Test::Utils::timeout_default;
	while (time < $deadline)
	{
		$_->{run}->pump_nb foreach @{ $opts{pump} // [] };
		$count = $observer->isa('PostgreSQL::Test::Cluster')
		  ? $observer->safe_psql('postgres', $sql)
		  : $observer->query_safe($sql);
		last if $count == $n;
		select(undef, undef, undef, 0.1);
	}
	return $count;
}

=pod

=item wal_contains(node, needle)

How many times needle occurs in the WAL records in the node's pg_wal: every segment file
is read with the header of each WAL page cut out (AtrestFiles::wal_without_page_headers),
so that a string a page boundary cuts in two is still found.  Committed transactions'
WAL is on disk already; segments recycled by a checkpoint keep their old bytes under a
later name and are read too.  Pair every "absent" check with a plain control that the
same call does find.

=cut

sub wal_contains
{
	my ($node, $needle) = @_;
	my $blcksz = $node->safe_psql('postgres', 'SHOW wal_block_size');
	my $dir = $node->data_dir . '/pg_wal';
	opendir my $dh, $dir or die "could not open $dir: $!";
	my @files = map { "$dir/$_" } sort grep { /^[0-9A-F]{24}$/ } readdir $dh;
	closedir $dh;
	my $count = 0;
	foreach my $f (@files)
	{
		my $records = AtrestFiles::wal_without_page_headers(AtrestFiles::slurp_raw($f), $blcksz);
		$count++ while $records =~ /\Q$needle\E/g;
	}
	return $count;
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
		       || ' subscript=' || t.typsubscript::text || ' analyze=' || t.typanalyze::text
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
		       || ' com=' || o.oprcom::regoperator::text || ' neg=' || o.oprnegate::regoperator::text
		       || ' ' || o.oprrest::text || ' ' || o.oprjoin::text
		       || ' hashes=' || o.oprcanhash || ' merges=' || o.oprcanmerge
		  FROM pg_operator o
		 WHERE o.oprnamespace = (SELECT oid FROM ns)
		    OR o.oprleft IN (SELECT oid FROM pg_type WHERE typnamespace = (SELECT oid FROM ns))
		    OR o.oprright IN (SELECT oid FROM pg_type WHERE typnamespace = (SELECT oid FROM ns))
		UNION ALL
		SELECT 'operator class ' || opc.opcname || ' ' || am.amname || ' default=' || opc.opcdefault
		       || ' ' || opc.opcintype::regtype::text || ' members=' || coalesce((
		            SELECT string_agg(x, ', ' ORDER BY x) FROM (
		              SELECT 'op ' || ao.amopstrategy || ' ' || ao.amopopr::regoperator::text AS x
		                FROM pg_amop ao WHERE ao.amopfamily = opc.opcfamily
		              UNION ALL
		              SELECT 'proc ' || ap.amprocnum || ' ' || ap.amproc::regprocedure::text
		                FROM pg_amproc ap WHERE ap.amprocfamily = opc.opcfamily) m), '')
		  FROM pg_opclass opc JOIN pg_am am ON am.oid = opc.opcmethod
		 WHERE opc.opcnamespace = (SELECT oid FROM ns)
		UNION ALL
		SELECT 'event trigger ' || e.evtname || ' ' || e.evtevent || ' ' || e.evtfoid::regproc::text
		       || ' enabled=' || e.evtenabled::text || ' tags=' || coalesce(e.evttags::text, '')
		  FROM pg_event_trigger e
		 WHERE e.evtfoid IN (SELECT oid FROM pg_proc WHERE pronamespace = (SELECT oid FROM ns))
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

=item kmip_server(dir)

A PyKMIP server (Debian: python3-pykmip) for the kmip provider's tests, run from "dir" on
127.0.0.1 and a free port with TLS 1.2 and client certificates.  Makes with openssl a CA,
the server's certificate (for 127.0.0.1), the client certificate "client" (CN pg_atrest,
extendedKeyUsage clientAuth; PyKMIP keys belong to the CN that created them), "intruder"
(same CA, CN intruder) and "stranger" (signed by another CA), writes the server's
configuration with its own sqlite database in "dir", and starts the server, waiting (with
a deadline) until it accepts connections.  Returns undef, saying why with diag, when
PyKMIP is not installed.  The returned hash holds port, ca, the paths of each certificate
and key (client_cert, client_key, intruder_cert, ...), conf (postgresql.conf lines for
the kmip provider with the "client" certificate), and code references start, stop and
admin (test/kms/pykmip-admin's commands: admin->('create', NAME) returns the new key's
Unique Identifier).  The server is stopped when the test script exits, failure included.

=cut

my @kmip_servers;

sub kmip_server
{
	my ($dir) = @_;
	my $pykmip = '/usr/bin/pykmip-server';
	if (!-x $pykmip)
	{
		diag('PyKMIP is not installed (apt-get install python3-pykmip)');
		return undef;
	}
	my $openssl = sub {
		my ($out, $err);
		IPC::Run::run([ 'openssl', @_ ], '>', \$out, '2>', \$err)
		  or die "openssl @_ failed: $err";
	};
	my %k = (dir => $dir);
	foreach my $ca ('ca', 'otherca')
	{
		$openssl->(
			'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', "$dir/$ca.key",
			'-out', "$dir/$ca.crt", '-days', '2', '-subj', "/CN=atrest test $ca");
	}
	my %leaf = (
		server => [ 'ca', '127.0.0.1', 'serverAuth' ],
		client => [ 'ca', 'pg_atrest', 'clientAuth' ],
		intruder => [ 'ca', 'intruder', 'clientAuth' ],
		stranger => [ 'otherca', 'pg_atrest', 'clientAuth' ],);
	foreach my $name (sort keys %leaf)
	{
		my ($ca, $cn, $eku) = @{ $leaf{$name} };
		PostgreSQL::Test::Utils::append_to_file("$dir/$name.ext",
			"basicConstraints=CA:FALSE\nextendedKeyUsage=$eku\nsubjectAltName=IP:127.0.0.1\n");
		$openssl->(
			'req', '-newkey', 'rsa:2048', '-nodes', '-keyout', "$dir/$name.key",
			'-out', "$dir/$name.csr", '-subj', "/CN=$cn");
		$openssl->(
			'x509', '-req', '-in', "$dir/$name.csr", '-CA', "$dir/$ca.crt",
			'-CAkey', "$dir/$ca.key", '-CAcreateserial', '-out', "$dir/$name.crt",
			'-days', '2', '-extfile', "$dir/$name.ext");
		chmod 0600, "$dir/$name.key";
		$k{"${name}_cert"} = "$dir/$name.crt";
		$k{"${name}_key"} = "$dir/$name.key";
	}
	$k{ca} = "$dir/ca.crt";
	$k{port} = PostgreSQL::Test::Cluster::get_free_port();
	mkdir "$dir/policies";
	PostgreSQL::Test::Utils::append_to_file(
		"$dir/server.conf", "[server]
hostname=127.0.0.1
port=$k{port}
certificate_path=$dir/server.crt
key_path=$dir/server.key
ca_path=$dir/ca.crt
auth_suite=TLS1.2
policy_path=$dir/policies
enable_tls_client_auth=True
logging_level=INFO
database_path=$dir/pykmip.db
");
	$k{conf} =
	    "atrest.kmip_host = '127.0.0.1'\natrest.kmip_port = $k{port}\n"
	  . "atrest.kmip_client_cert = '$k{client_cert}'\natrest.kmip_client_key = '$k{client_key}'\n"
	  . "atrest.kmip_ca_cert = '$k{ca}'\n";

	# The server runs in a session and process group of its own: PyKMIP serves each
	# connection in a child process, and those must go with it.
	my ($server, $pgid);
	$k{stop} = sub {
		return unless $server;
		kill 'TERM', -$pgid;
		# TERM, then KILL if it has not exited within 15 s; then whatever is left of its group.
		eval { $server->kill_kill(grace => 15) };
		kill 'KILL', -$pgid;
		$server = undef;
	};
	$k{start} = sub {
		my ($out, $err) = ('', '');
		$server = IPC::Run::start(
			[ $pykmip, '--config_path', "$dir/server.conf", '--log_path', "$dir/pykmip.log" ],
			init => sub { POSIX::setsid() },
			'>', \$out, '2>', \$err);
		$pgid = $server->{KIDS}[0]{PID};
		push @kmip_servers, $pgid;
		# PyKMIP takes a few seconds to start, more on a loaded machine.
		my $deadline = time() + 180;
		while (time() < $deadline)
		{
			die "pykmip-server exited: $err" unless $server->pumpable;
			my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $k{port},
				Proto => 'tcp', Timeout => 2);
			if ($sock) { close $sock; return; }
			sleep 1;
		}
		die "pykmip-server did not listen on port $k{port} within 180 s: $err";
	};
	my $admin = srcdir() . '/test/kms/pykmip-admin';
	$k{admin} = sub {
		my ($cmd, $arg) = @_;
		my ($out, $err);
		IPC::Run::run([ '/usr/bin/python3', $admin, '127.0.0.1', $k{port},
				$k{client_cert}, $k{client_key}, $k{ca}, $cmd, $arg ],
			'>', \$out, '2>', \$err)
		  or die "pykmip-admin $cmd $arg failed: $err";
		chomp $out;
		return $out;
	};
	$k{start}->();
	return \%k;
}

END
{
	# Whatever a failed test left running: its whole process group.
	kill 'KILL', -$_ foreach @kmip_servers;
}

=pod

=item driver_fixture(node [, dbname])

Creates table "drv" for the driver tests (120-122): each encrypted column next to a plain
column of the plain type holding the same value (doc/pdoc jsonb, blob/pblob bytea,
note/pnote text), rows 1 and 2 with nested JSON, numbers, Unicode, a NUL and high bytes,
a tab and a newline, and row 3 all NULL.

=cut

sub driver_fixture
{
	my ($node, $db) = @_;
	$node->safe_psql(
		$db // 'postgres', q{
		CREATE TABLE drv (
		    id int PRIMARY KEY,
		    doc atrest.encrypted_jsonb, pdoc jsonb,
		    blob atrest.encrypted_bytea, pblob bytea,
		    note atrest.encrypted_text, pnote text);
		INSERT INTO drv (id, pdoc, pblob, pnote) VALUES
		    (1, '{"a": 1, "b": [1.5, true, null, "x"], "c": {"d": "é€😀"}}',
		        '\x00ff10807f', E'plain words \u00e9\t and a tab'),
		    (2, '[1, 2, {"k": "v"}]', '\x', E'line\nbreak'),
		    (3, NULL, NULL, NULL);
		UPDATE drv SET doc = pdoc, blob = pblob, note = pnote;});
	return;
}

=pod

=item driver_checks(node, name, [interpreter...], script)

Writes script to a file, runs it with the interpreter and PGHOST, PGPORT, PGDATABASE
(postgres) and PGUSER set for node, and turns each line "ok NAME" or "not ok NAME # WHY"
that it prints into a Test::More result named "NAME" (prefixed with name).  Fails when the
script exits non-zero or reports nothing.  Returns the number of checks.

=cut

sub driver_checks
{
	my ($node, $name, $interp, $script) = @_;
	my $file = PostgreSQL::Test::Utils::tempdir() . "/$name.script";
	open(my $fh, '>', $file) or die "could not write $file: $!";
	print $fh $script;
	close($fh);

	local $ENV{PGHOST} = $node->host;
	local $ENV{PGPORT} = $node->port;
	local $ENV{PGDATABASE} = 'postgres';
	local $ENV{PGUSER} = $ENV{PGUSER} // scalar getpwuid($<);
	my ($stdout, $stderr);
	my $ok = IPC::Run::run([ @$interp, $file ], '>', \$stdout, '2>', \$stderr);
	my $n = 0;
	for my $line (split /\n/, $stdout)
	{
		if ($line =~ /^(not )?ok (.*?)(?: # (.*))?$/)
		{
			ok(!defined $1, "$name: $2") or diag($3 // '');
			$n++;
		}
		else
		{
			note("$name: $line");
		}
	}
	ok($ok, "$name: script exits 0") or diag($stderr);
	ok($n > 0, "$name: script reported checks") or diag($stderr);
	return $n;
}

=pod

=back

=cut


=pod

=item database_files(node [, dbname])

Runs CHECKPOINT and returns the absolute paths of every file in the database's
directory (base/<oid>): all relations of the database, whatever their names, and the
files of dropped or rewritten relations that are not unlinked yet.

=cut

sub database_files
{
	my ($node, $dbname) = @_;
	$dbname //= 'postgres';
	$node->safe_psql($dbname, 'CHECKPOINT');
	my $oid = $node->safe_psql($dbname,
		'SELECT oid FROM pg_database WHERE datname = current_database()');
	my $dir = $node->data_dir . "/base/$oid";
	opendir my $dh, $dir or die "could not open $dir: $!";
	my @files = map { "$dir/$_" } grep { -f "$dir/$_" } readdir $dh;
	closedir $dh;
	return @files;
}

=pod

=item wait_for_scrub(node, needles [, dbname [, timeout]])

Waits (60 seconds unless told) until none of the byte strings in the array
"needles" occurs in any file of the database (database_files()), polling once a
second.  Returns how many occurrences were left at the end (0 on success).

=cut

sub wait_for_scrub
{
	my ($node, $needles, $dbname, $timeout) = @_;
	$timeout //= 60;
	my $left;
	my $deadline = time() + $timeout;
	while (1)
	{
		my @files = database_files($node, $dbname);
		$left = 0;
		$left += files_contain($_, @files) foreach @$needles;
		last if $left == 0 || time() >= $deadline;
		sleep 1;
	}
	return $left;
}


=pod

=item restore_key_modes(node)

Puts the modes of a copied node's generated service key back (0700 directory, 0600
file): init_from_backup copies with File::Copy, which leaves files 0644, and pg_atrest
refuses a key file that others can read.  A restore with cp -p or tar keeps the modes.

=cut

sub restore_key_modes
{
	my ($node) = @_;
	chmod 0700, $node->data_dir . '/pg_atrest';
	chmod 0600, $node->data_dir . '/pg_atrest/service.key';
	return;
}


=pod

=item secure_mappings(pid), secure_bytes(pid, maps...), core_dump(pid, name, all), count_in(haystack, needle)

A process's locked, no-dump, no-fork mappings from /proc/PID/smaps ([start, end, size
kB, locked kB] hashes); the bytes of such mappings read with gdb; a core dump made with
gdb's gcore, honouring MADV_DONTDUMP as the kernel does, or with every mapping when "all"
is true; how often "needle" occurs in "haystack".  For the tests of keys in memory (050,
051); gdb must be installed for the last three.

=cut

# The locked, no-dump, no-fork mappings of a process: [start, end, size kB, locked kB].
sub secure_mappings
{
	my ($pid) = @_;
	my @maps;
	my $cur;
	open my $fh, '<', "/proc/$pid/smaps" or die "could not open /proc/$pid/smaps: $!";
	while (my $line = <$fh>)
	{
		if ($line =~ /^([0-9a-f]+)-([0-9a-f]+) /)
		{
			$cur = { start => hex($1), end => hex($2), size => 0, locked => 0 };
		}
		elsif ($line =~ /^Size:\s+(\d+) kB/) { $cur->{size} = $1; }
		elsif ($line =~ /^Locked:\s+(\d+) kB/) { $cur->{locked} = $1; }
		elsif ($line =~ /^VmFlags:(.*)$/)
		{
			my %f = map { $_ => 1 } split ' ', $1;
			push @maps, $cur if $f{lo} && $f{dd} && $f{dc};
		}
	}
	close $fh;
	return @maps;
}

sub slurp_raw
{
	my ($path) = @_;
	open my $fh, '<:raw', $path or die "could not open $path: $!";
	local $/;
	my $data = <$fh>;
	close $fh;
	return $data;
}

sub count_in
{
	my ($hay, $needle) = @_;
	my ($n, $pos) = (0, 0);
	while (($pos = index($hay, $needle, $pos)) >= 0) { $n++; $pos++; }
	return $n;
}


# A core dump of the process: honouring MADV_DONTDUMP as the kernel does, or not.
sub core_dump
{
	my ($pid, $name, $all) = @_;
	my $file = PostgreSQL::Test::Utils::tempdir('core') . "/$name";
	my @cmd = ('gdb', '-nx', '-p', $pid, '-batch');
	push @cmd, '-ex', 'set dump-excluded-mappings on' if $all;
	push @cmd, '-ex', "gcore $file";
	my ($out, $err) = run_command(\@cmd);
	die "gdb could not dump process $pid:\n$out\n$err" unless -s $file;
	my $data = slurp_raw($file);
	unlink $file;
	return $data;
}

# The bytes of the secure mappings, read with gdb.
sub secure_bytes
{
	my ($pid, @maps) = @_;
	my $bytes = '';
	foreach my $m (@maps)
	{
		my $file = PostgreSQL::Test::Utils::tempdir('secure') . "/secure";
		my ($out, $err) = run_command([
			'gdb', '-nx', '-p', $pid, '-batch', '-ex',
			sprintf('dump binary memory %s 0x%x 0x%x', $file, $m->{start}, $m->{end}) ]);
		die "gdb could not read the secure pages:\n$out\n$err" unless -s $file;
		$bytes .= slurp_raw($file);
		unlink $file;
	}
	return $bytes;
}

=pod

=item plproxy_available()

True when PL/Proxy is installed for the PostgreSQL under test (its plproxy.control is
in the share directory).  Dies on PostgreSQL 15, where test/sandbox installs
postgresql-15-plproxy: only versions without a PL/Proxy package may skip the proxy tests.

=cut

sub plproxy_available
{
	my ($sharedir) = run_command([ 'pg_config', '--sharedir' ]);
	my ($version) = run_command([ 'pg_config', '--version' ]);
	chomp($sharedir, $version);
	return 1 if -f "$sharedir/extension/plproxy.control";
	die "PL/Proxy is not installed for $version (test/sandbox installs postgresql-15-plproxy)\n"
	  if $version =~ /^PostgreSQL 15\./;
	return 0;
}

=pod

=item proxy_fleet(shards => 4, shard_conf => '...')

Starts "shards" pg_atrest clusters (shard0, shard1, ..., no pg_cron, no HSM, small:
1MB of shared buffers) and a proxy cluster with pg_atrest_proxy, the foreign server
atrest_shards listing the shards' sockets as p0, p1, ..., and two users on every node:
postgres (mapped to postgres) and the login role svc (mapped to svc, a member of
atrest_service on the shards, granted the proxy's store: atrest_proxy.grant_store).  Returns
($proxy, @shards).  Query the proxy as svc with extra_params => [ '-U', 'svc' ].

=cut

sub proxy_fleet
{
	my (%opts) = @_;
	my $n = $opts{shards} // 4;
	my $small = "shared_buffers = 1MB\nfsync = off\nmax_connections = 30\n";
	my @shards;
	foreach my $i (0 .. $n - 1)
	{
		my $shard = atrest_node("shard$i", cron => 0, pkcs11 => 0,
			conf => $small . ($opts{shard_conf} // ''));
		$shard->safe_psql('postgres', 'CREATE ROLE svc LOGIN IN ROLE atrest_service');
		push @shards, $shard;
	}

	my $proxy = PostgreSQL::Test::Cluster->new('proxy');
	$proxy->init;
	$proxy->append_conf('postgresql.conf', $small);
	$proxy->start;
	my $partitions = join(",\n",
		map { sprintf("p%d 'host=%s port=%d dbname=postgres'", $_, $shards[$_]->host, $shards[$_]->port) }
		  0 .. $n - 1);
	$proxy->safe_psql(
		'postgres', qq{
		CREATE EXTENSION pg_atrest_proxy CASCADE;
		CREATE SERVER atrest_shards FOREIGN DATA WRAPPER plproxy OPTIONS (
			connection_lifetime '1800',
			$partitions);
		CREATE ROLE svc LOGIN;
		CREATE USER MAPPING FOR postgres SERVER atrest_shards OPTIONS (user 'postgres');
		CREATE USER MAPPING FOR svc SERVER atrest_shards OPTIONS (user 'svc');
		GRANT USAGE ON FOREIGN SERVER atrest_shards TO svc;
		SELECT atrest_proxy.grant_store('svc');});
	return ($proxy, @shards);
}

1;
