# Copyright: pg_atrest authors; same license as pg_atrest.
#
# CREATE EXTENSION pg_atrest refuses a schema "atrest" or a role "atrest_service" that it
# did not make:
#   - a database owner without superuser creates schema atrest first: the install fails
#     (42501) with a hint saying what to do, and leaves nothing behind; once the schema is
#     gone, the install succeeds;
#   - a role atrest_service that someone else created (LOGIN, or a member of another role,
#     or without pg_atrest's marker): the install fails (42710), names what is wrong, and
#     the role receives no grant;
#   - the role pg_atrest itself created, in another database of the cluster, is accepted:
#     several databases install fine, in turn or at the same time.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use AtrestTest;

my $node = atrest_node('install_squatting', cron => 0, pkcs11 => 0, create_extension => 0);

# Runs sql in db with verbose messages; returns stderr ('' on success).
sub err_of
{
	my ($db, $sql, @user) = @_;
	my ($out, $err) = ('', '');
	my $rc = $node->psql($db, "\\set VERBOSITY verbose\n$sql",
		stdout => \$out, stderr => \$err, extra_params => [@user]);
	return $rc == 0 ? '' : $err;
}

# --- a squatted schema ----------------------------------------------------------------
$node->safe_psql(
	'postgres', q{
	CREATE ROLE dbowner LOGIN;
	CREATE DATABASE owned OWNER dbowner;
});
is(err_of('owned', 'CREATE SCHEMA atrest', '-U', 'dbowner'), '',
	'the database owner creates schema atrest');
my $err = err_of('owned', 'CREATE EXTENSION pg_atrest');
like($err, qr/ERROR:  42501: schema "atrest" belongs to role "dbowner"/,
	'CREATE EXTENSION refuses a schema atrest owned by a role without superuser (42501)');
like($err, qr/HINT:  .*DROP SCHEMA atrest/s, 'the hint says what to do');
is($node->safe_psql('owned', q{SELECT count(*) FROM pg_extension WHERE extname = 'pg_atrest'}),
	'0', 'the extension is not installed');
is( $node->safe_psql('owned',
		q{SELECT count(*) FROM pg_proc WHERE pronamespace = 'atrest'::regnamespace}),
	'0', 'no function was left in her schema');

# A superuser's schema where she may create objects is refused as well.
$node->safe_psql('owned', q{DROP SCHEMA atrest; CREATE SCHEMA atrest; GRANT CREATE ON SCHEMA atrest TO dbowner});
like(err_of('owned', 'CREATE EXTENSION pg_atrest'),
	qr/ERROR:  42501: role "dbowner" may create objects in schema "atrest"/,
	'CREATE EXTENSION refuses a schema where a role without superuser has CREATE');
$node->safe_psql('owned', 'DROP SCHEMA atrest');
is(err_of('owned', 'CREATE EXTENSION pg_atrest'), '',
	'once the schema is gone, CREATE EXTENSION succeeds');
is( $node->safe_psql('owned',
		q{SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'atrest'}),
	$node->safe_psql('owned', 'SELECT current_user'),
	'and the schema belongs to the superuser who installed it');
$node->safe_psql('owned', 'DROP EXTENSION pg_atrest');

# --- a squatted role ------------------------------------------------------------------
$node->safe_psql('postgres', 'DROP ROLE IF EXISTS atrest_service');
foreach my $case (
	[ 'LOGIN role', q{CREATE ROLE atrest_service LOGIN PASSWORD 'x'}, qr/may log in/ ],
	[ 'member of another role', q{CREATE ROLE atrest_service NOLOGIN IN ROLE dbowner},
		qr/is a member of role "dbowner"/ ],
	[ 'role without the marker', q{CREATE ROLE atrest_service NOLOGIN},
		qr/was not created by pg_atrest/ ])
{
	my ($label, $create, $reason) = @$case;
	$node->safe_psql('postgres', 'DROP ROLE IF EXISTS atrest_service');
	$node->safe_psql('postgres', $create);
	$node->safe_psql('postgres', 'DROP DATABASE IF EXISTS r; CREATE DATABASE r');
	$err = err_of('r', 'CREATE EXTENSION pg_atrest');
	like($err, qr/ERROR:  42710: role "atrest_service" already exists and is not pg_atrest's/,
		"$label: CREATE EXTENSION refuses it (42710)");
	like($err, $reason, "$label: the detail says why");
	like($err, qr/HINT:  .*DROP ROLE atrest_service/s, "$label: the hint says what to do");
	is( $node->safe_psql('postgres',
			q{SELECT count(*) FROM pg_shdepend d JOIN pg_roles r ON r.oid = d.refobjid
			   WHERE r.rolname = 'atrest_service'}),
		'0', "$label: the role received no grant");
}
$node->safe_psql('postgres', 'DROP ROLE atrest_service; DROP DATABASE r');

# --- pg_atrest's own role, shared by several databases -----------------------------------
foreach my $db (qw(db1 db2))
{
	$node->safe_psql('postgres', "CREATE DATABASE $db");
}
is(err_of('db1', 'CREATE EXTENSION pg_atrest'), '', 'db1 installs and creates atrest_service');
is(err_of('db2', 'CREATE EXTENSION pg_atrest'), '', 'db2 installs next to it, with the same role');
is( $node->safe_psql('db1',
		q{SELECT rolcanlogin || '/' || shobj_description(oid, 'pg_authid') FROM pg_roles
		   WHERE rolname = 'atrest_service'}),
	'false/pg_atrest application service role (created by CREATE EXTENSION pg_atrest)',
	'the role is NOLOGIN and carries the marker');
# the application's login role as a member is how it is meant to be used
$node->safe_psql('postgres', 'CREATE ROLE app LOGIN IN ROLE atrest_service');
$node->safe_psql('postgres', 'CREATE DATABASE db3');
is(err_of('db3', 'CREATE EXTENSION pg_atrest'), '', 'a third database installs while the role has a member');

# Concurrently, in fresh databases, with the role gone.
foreach my $db (qw(db1 db2 db3))
{
	$node->safe_psql($db, 'DROP EXTENSION pg_atrest');
}
$node->safe_psql('postgres', 'DROP ROLE app; DROP ROLE atrest_service');
my @dbs = map { "c$_" } 1 .. 3;
$node->safe_psql('postgres', "CREATE DATABASE $_") foreach @dbs;
my @sessions = map { $node->background_psql($_, wait => 0, on_error_stop => 0) } @dbs;
$_->{stdin} .= "CREATE EXTENSION pg_atrest;\n\\echo done\n" foreach @sessions;
foreach my $s (@sessions)
{
	$s->{run}->pump until $s->{stdout} =~ /done/ || $s->{timeout}->is_expired;
	$s->quit;
}
is( join(',',
		map { $node->safe_psql($_, q{SELECT count(*) FROM pg_extension WHERE extname = 'pg_atrest'}) }
		  @dbs),
	'1,1,1', 'three databases installing at the same time all succeed');

$node->stop;
done_testing();
