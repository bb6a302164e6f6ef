# Copyright: pg_atrest authors; same license as pg_atrest.
#
# Idle backends forget (README, "Key cache"): when atrest.key_cache_ttl runs out, a backend
# that sits idle wipes its keys without waiting for a query, so after a revocation no
# unwrapped key stays in its memory beyond the TTL.  What each check proves:
#
#  1. key_status says where this session's database key came from and when it expires
#     (the end of the TTL that started when the key was unwrapped).
#  2. While the keys are held, the secure pages hold the known service key, the database
#     key and the data keys the session used, and a full dump of the process (gdb's gcore
#     with dump-excluded-mappings on) finds each of them (so the search works).
#  3. After the TTL and two seconds more with the backend idle (no statement sent to it):
#     a full dump of the process has none of those keys anywhere, and the secure pages
#     are all zero.
#  4. The session then says it holds no key, and its next read unwraps again and works.
#
# Needs gdb for 2-3; without it they are skipped with a message.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use AtrestTest;

my $svc_hex = '5a1e7d3c9b2f4a6e8d0c1b3a59687746352413f2e1d0c9b8a7968574635241f0';
my $svc = pack('H*', $svc_hex);
my $ttl = 4;

my $have_gdb = system('command -v gdb >/dev/null 2>&1 && command -v gcore >/dev/null 2>&1') == 0;

my $node = atrest_node('idlewipe', cron => 0, pkcs11 => 0, start => 0);
my $keyfile = $node->basedir . '/service.key';
PostgreSQL::Test::Utils::append_to_file($keyfile, "$svc_hex\n");
chmod 0600, $keyfile;
$node->append_conf('postgresql.conf', "atrest.service_key_file = '$keyfile'\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION pg_atrest');
$node->safe_psql('postgres',
	q{CREATE TABLE t (id int, doc atrest.encrypted_jsonb(result), note atrest.encrypted_text);
	  INSERT INTO t VALUES (1, '{"a": 1}', 'hello');});

# --- 1. key_status: source and expiry -------------------------------------------------
my $s = $node->background_psql('postgres');
my $pid = $s->query_safe('SELECT pg_backend_pid()');
$s->query_safe("SET atrest.key_cache_ttl = $ttl");
is($s->query_safe(q{SELECT session_key_source IS NULL FROM atrest.key_status}), 't',
	'key_status: no database key held before the first key use');
my $t0 = time;
is($s->query_safe(q{SELECT doc::text || note FROM t}), '{"a": 1}hello', 'the session reads');
is( $s->query_safe(
		qq{SELECT session_key_source, session_key_expires_at > now(),
		          session_key_expires_at <= now() + interval '$ttl seconds'
		     FROM atrest.key_status}),
	'service key|t|t',
	'key_status: the key came from the service key and expires within the TTL');
my $held = $s->query_safe('SELECT keys_held FROM atrest._session_key_state()');
is($held, 4, 'the session holds the service key, the database key and two data keys');

my @keys;
SKIP:
{
	skip 'gdb is not installed (apt-get install gdb): core dump checks skipped', 3 unless $have_gdb;

	# --- 2. the keys are there while held -----------------------------------------------
	my @maps = secure_mappings($pid);
	@keys = grep { $_ ne "\0" x 32 } unpack('(a32)*', secure_bytes($pid, @maps));
	is(scalar(@keys), $held, 'the secure pages hold keys_held keys');
	is(scalar(grep { $_ eq $svc } @keys), 1, 'one of them the known service key');
	my $full = core_dump($pid, 'held', 1);
	is(scalar(grep { count_in($full, $_) == 0 } @keys), 0,
		'a full dump of the process finds every one of them');
}

# --- 3. idle past the TTL ---------------------------------------------------------------
my $wait = $t0 + $ttl + 2 - time;
sleep($wait) if $wait > 0;
SKIP:
{
	skip 'gdb is not installed (apt-get install gdb): core dump checks skipped', 2 unless $have_gdb;

	my @maps = secure_mappings($pid);
	my $pages = secure_bytes($pid, @maps);
	is($pages =~ tr/\0//c, 0, 'after the TTL, idle: the secure pages are all zero');
	my $full = core_dump($pid, 'idle', 1);
	my @left = grep { count_in($full, $_) > 0 } @keys;
	is(scalar(@left), 0,
		'and a full dump of the idle backend has none of its keys (service, database, data keys)');
}

# --- 4. the session afterwards ----------------------------------------------------------
is($s->query_safe('SELECT cache_loaded, keys_held FROM atrest._session_key_state()'), 'f|0',
	'the session holds no key after the idle wipe');
is($s->query_safe(q{SELECT session_key_source IS NULL FROM atrest.key_status}), 't',
	'key_status shows no database key');
is($s->query_safe(q{SELECT doc::text || note FROM t}), '{"a": 1}hello',
	'the next read unwraps again and works');
is($s->query_safe(q{SELECT session_key_source FROM atrest.key_status}), 'service key',
	'key_status: held again');
$s->quit;

$node->stop;
done_testing();
