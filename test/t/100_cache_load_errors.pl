# Copyright: pg_atrest authors; same license as pg_atrest.
#
# An ERROR while the backend's key cache loads: session A holds atrest.key_classes in
# ACCESS EXCLUSIVE mode, session B reads an encrypted column with a cold cache and its
# load waits for that lock until lock_timeout, statement_timeout or a cancel ends it.
# Each time B keeps working: other queries run, its cache is "not loaded" and it holds no
# key in secure memory; once A lets go, the same session B reads every value.  No backend
# crashes (also run against an assert-enabled server).

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use AtrestTest;

my $node = atrest_node('cache_load_errors', cron => 0, pkcs11 => 0);
$node->safe_psql(
	'postgres', q{
	CREATE TABLE t (id int PRIMARY KEY, note atrest.encrypted_text);
	INSERT INTO t SELECT i, 'note ' || i FROM generate_series(1, 20) i;
	CREATE TABLE plain (id int);
	INSERT INTO plain SELECT generate_series(1, 7);});
my $readable =
  "SELECT count(*) FILTER (WHERE note::text = 'note ' || id) FROM t";
my $state = 'SELECT cache_loaded, keys_held FROM atrest._session_key_state()';

my $a = $node->background_psql('postgres');
my $b = $node->background_psql('postgres', on_error_stop => 0);
my $b_pid = $b->query_safe('SELECT pg_backend_pid()');

$a->query_safe('BEGIN');
$a->query_safe('LOCK atrest.key_classes IN ACCESS EXCLUSIVE MODE');

# B runs $sql, which must fail with $error; then B goes on working.
sub b_fails_then_works
{
	my ($sql, $error, $what) = @_;
	$b->{stderr} = '';
	$b->query($sql);
	like($b->{stderr}, $error, "$what: the read fails");
	$b->{stderr} = '';
	is($b->query('SELECT 1'), '1', "$what: the session answers");
	is($b->query('SELECT count(*) FROM plain'), '7', "$what: reads a plain table");
	is($b->query('SELECT count(*) FROM t'), '20', "$what: counts the encrypted table");
	is($b->query($state), 'f|0', "$what: cache not loaded, no key held in secure memory");
	is($b->query('SELECT pg_backend_pid()'), $b_pid, "$what: the same backend");
	is($b->{stderr}, '', "$what: without any error");
}

# 1. lock_timeout, twice in a row
$b->query_safe("SET lock_timeout = '100ms'");
b_fails_then_works('SELECT note FROM t WHERE id = 1',
	qr/canceling statement due to lock timeout/, 'lock_timeout');
b_fails_then_works($readable,
	qr/canceling statement due to lock timeout/, 'lock_timeout again');
$b->query_safe('RESET lock_timeout');

# 2. statement_timeout
$b->query_safe("SET statement_timeout = '200ms'");
b_fails_then_works('SELECT note FROM t WHERE id = 2',
	qr/canceling statement due to statement timeout/, 'statement_timeout');
$b->query_safe('RESET statement_timeout');

# 3. a cancel while B waits for the lock
$b->{stderr} = '';
$b->query_until(qr/reading/, "\\echo reading\nSELECT note FROM t WHERE id = 3;\n");
ok( $node->poll_query_until(
		'postgres',
		"SELECT count(*) = 1 FROM pg_locks WHERE pid = $b_pid AND NOT granted "
		  . "AND relation = 'atrest.key_classes'::regclass"),
	'B waits for the key_classes lock');
$node->safe_psql('postgres', "SELECT pg_cancel_backend($b_pid)");
b_fails_then_works('SELECT 1', qr/canceling statement due to user request/, 'a cancel');

# A lets go: the same session reads everything.
$a->query_safe('COMMIT');
$b->{stderr} = '';
is($b->query($readable), '20', 'once the lock is released, B reads every value');
is($b->query('SELECT cache_loaded, keys_held > 0 FROM atrest._session_key_state()'),
	't|t', 'and its cache is loaded');
is($b->query('SELECT pg_backend_pid()'), $b_pid, 'still the same backend');
is($b->{stderr}, '', 'without any error');
is($node->safe_psql('postgres', $readable), '20', 'a new session reads every value');

$a->quit;
$b->quit;
$node->stop;
unlike(slurp_file($node->logfile), qr/TRAP|terminated by signal|server process .* was terminated/,
	'no backend crashed');
done_testing();
