# Copyright: pg_atrest authors; same license as pg_atrest.
#
# The shared key cache (README, "Key cache"): with pg_atrest preloaded, a database key under
# a customer-managed key is unwrapped once per server per atrest.key_cache_ttl, not once per
# backend.  Provider calls are counted by a KMS adapter that logs each call with the pid of
# the backend that ran it (AtrestTest::counting_kms_adapter).  What each check proves:
#
#  1. 60 fresh connections, each reading one value: exactly one unwrap call in all (the TTL
#     is long); key_status says the later sessions' key came from the shared cache and
#     expires when the first one's does (the TTL counts from the provider call).
#  2. ten sessions released at once from a barrier (an advisory lock) while the KMS takes
#     2 s per call: one unwrap call; the others waited (wait event Extension) and copied.
#  3. data-key rotation, GRANT on a key table, VACUUM and ANALYZE of the key tables: no
#     provider call, for established sessions and for a fresh one.
#  4. atrest.recheck_keys(): established sessions drop their copies at once, and all of
#     them plus fresh connections make exactly one unwrap call together.
#  5. a hot standby keeps its own cache: fresh connections there make one call of their
#     own; recheck_keys() works on the standby and costs exactly one more call there.
#  6. TTL lapse (atrest.key_cache_ttl = 3 s): five sessions reading for about 8 s make at
#     most one call per started TTL period in all, and at least two.
#  7. the key bytes while held: the backend's mapping of the shared segment is locked,
#     no-dump and no-fork, and the database key is in a /dev/shm/PostgreSQL.* file.  After
#     the TTL with every backend idle: no key of the backend in any /dev/shm/PostgreSQL.*
#     file, and none in a full dump (gdb gcore) of the idle backend.
#  8. revocation: the CMK disabled in the KMS, after the TTL reads fail in every session
#     (and a fresh one); enabled again, reads work in every session.
#  9. not preloaded, or preloaded with dynamic_shared_memory_type = mmap (keys would be in
#     files under the data directory; the log says the shared cache is off): every backend
#     asks the provider itself, once, and reads work.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);

use AtrestTest;

my $keydir = PostgreSQL::Test::Utils::tempdir('kms') . '/keys';
my $log = PostgreSQL::Test::Utils::tempdir('calls') . '/calls.log';
my $kms = counting_kms_adapter($keydir, $log, 'cmk1')
  or BAIL_OUT('test/kms/openssl-kms is missing');
my $kms_admin = "$keydir.kms";

my $node = atrest_node(
	'shared',
	cron => 0,
	pkcs11 => 0,
	init => { allows_streaming => 1 },
	conf => "atrest.kms_command = '$kms'\natrest.key_cache_ttl = 600\nmax_connections = 40\n");
$node->safe_psql(
	'postgres', q{
	SELECT atrest.enable_cmk('command', 'kms:openssl/cmk1');
	CREATE TABLE docs (id int, v atrest.encrypted_text);
	INSERT INTO docs SELECT i, 'value ' || i FROM generate_series(1, 100) i;
	CREATE ROLE reader_role;});

my $read = q{SELECT v FROM docs WHERE id = 7};
sub unwraps { return scalar(grep { $_->[1] eq 'unwrap' } provider_calls($log, @_)); }

sub fresh_read
{
	my ($n, $what) = @_;
	is($n->safe_psql('postgres', $read), 'value 7', $what);
}

# Forget the key in the shared cache and every backend (a new recheck_at), then start
# counting.
sub recheck_and_count
{
	my ($n) = @_;
	$n->safe_psql('postgres', 'SELECT atrest.recheck_keys()');
	unlink $log;
}

# --- 1. 60 fresh connections: one unwrap ------------------------------------------------
recheck_and_count($node);
my ($first_expiry, $later);
for my $i (1 .. 60)
{
	my $out = $node->safe_psql('postgres',
		"$read; SELECT session_key_source || '|' || session_key_expires_at FROM atrest.key_status");
	my (undef, $status) = split /\n/, $out;
	$first_expiry //= (split /\|/, $status)[1];
	$later = $status;
}
is(unwraps(), 1, '60 fresh connections each reading a value: exactly one unwrap call in all');
is($later, "shared cache|$first_expiry",
	'key_status: the last session\'s key came from the shared cache and expires with the first\'s');

# --- 2. a barrier: ten sessions at once, a slow KMS ---------------------------------------
{
	recheck_and_count($node);
	my $barrier = barrier_burst($node, 10, "$read;", key => 5454);
	is($barrier->{waiting}, 10, 'ten sessions wait on the barrier at the same time');
	PostgreSQL::Test::Utils::append_to_file("$log.delay", "2\n");
	barrier_release($barrier);
	# while the one provider call takes its 2 s, the others wait for it
	my $waiters = 0;
	my $deadline = time + 10;
	while (time < $deadline && $waiters == 0)
	{
		barrier_pump($barrier);
		$waiters = $node->safe_psql('postgres',
			q{SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Extension' AND wait_event = 'Extension'});
		sleep 0.1;
	}
	cmp_ok($waiters, '>=', 1, "sessions wait for the fetching one (wait event Extension; $waiters seen)");
	like($_, qr/value 7/, 'a session released from the barrier reads') foreach barrier_finish($barrier);
	unlink "$log.delay";
	is(unwraps(), 1, 'ten sessions released at once: one unwrap call');
}

# --- 3. key-table changes under the same root: no call -----------------------------------
{
	my @readers = map { $node->background_psql('postgres') } 1 .. 3;
	is($_->query_safe($read), 'value 7', 'an established session reads') foreach @readers;
	unlink $log;
	$node->safe_psql('postgres', q{SELECT * FROM atrest.rotate_data_key('default')});
	$node->safe_psql('postgres', q{INSERT INTO docs VALUES (101, 'value 101')});
	$node->safe_psql('postgres', 'GRANT SELECT ON atrest.key_events TO reader_role');
	$node->safe_psql('postgres', 'VACUUM atrest.data_keys, atrest.database_keys, atrest.key_classes');
	$node->safe_psql('postgres', 'ANALYZE atrest.data_keys, atrest.database_keys, atrest.key_classes');
	is($_->query_safe(q{SELECT v FROM docs WHERE id = 101}), 'value 101',
		'an established session reads a value of the new data key') foreach @readers;
	fresh_read($node, 'a fresh session reads');
	is(unwraps(), 0, 'data-key rotation, GRANT, VACUUM and ANALYZE: no provider call');
	$_->quit foreach @readers;
}

# --- 4. recheck_keys(): every backend at once, one call -----------------------------------
{
	my @readers = map { $node->background_psql('postgres') } 1 .. 5;
	is($_->query_safe($read), 'value 7', 'an established session reads') foreach @readers;
	my @before = map { $_->query_safe('SELECT session_key_expires_at FROM atrest.key_status') } @readers;
	unlink $log;
	sleep 1.1;		# so that a new expiry differs from the old one
	$node->safe_psql('postgres', 'SELECT atrest.recheck_keys()');
	is($_->query_safe($read), 'value 7', 'an established session reads after recheck_keys()') foreach @readers;
	fresh_read($node, 'a fresh session reads after recheck_keys()') for 1 .. 5;
	is(unwraps(), 1, 'recheck_keys(): exactly one unwrap call for all the readers after it');
	my @after = map { $_->query_safe('SELECT session_key_expires_at FROM atrest.key_status') } @readers;
	is(scalar(grep { $before[$_] ne $after[$_] } 0 .. $#readers), 5,
		'every established session dropped its copy: its key expires later now');
	$_->quit foreach @readers;
}

# --- 5. a hot standby: its own cache, its own recheck -------------------------------------
{
	$node->backup('b');
	my $standby = PostgreSQL::Test::Cluster->new('shared_standby');
	$standby->init_from_backup($node, 'b', has_streaming => 1);
	restore_key_modes($standby);
	$standby->start;
	$node->wait_for_catchup($standby);
	unlink $log;
	fresh_read($standby, 'a fresh session on the standby reads') for 1 .. 10;
	my @calls = grep { $_->[1] eq 'unwrap' } provider_calls($log);
	is(scalar(@calls), 1, 'ten fresh sessions on the standby: one unwrap call, the standby\'s own');
	my @readers = map { $standby->background_psql('postgres') } 1 .. 3;
	is($_->query_safe($read), 'value 7', 'an established standby session reads') foreach @readers;
	unlink $log;
	is($standby->safe_psql('postgres', 'SELECT atrest.recheck_keys()'), '', 'recheck_keys() works on the standby');
	is($_->query_safe($read), 'value 7', 'an established standby session reads after it') foreach @readers;
	fresh_read($standby, 'a fresh standby session reads after it') for 1 .. 3;
	is(unwraps(), 1, 'recheck_keys() on the standby: exactly one unwrap call there for all its readers');
	$_->quit foreach @readers;
	$standby->stop;
}

# --- 6. TTL lapse: one call per TTL for all backends --------------------------------------
my $ttl = 3;
$node->safe_psql('postgres', "ALTER SYSTEM SET atrest.key_cache_ttl = $ttl; SELECT pg_reload_conf()");
sleep 0.5;
{
	recheck_and_count($node);
	my @readers = map { $node->background_psql('postgres') } 1 .. 5;
	my $t0 = time;
	my $rounds = 0;
	while (time - $t0 < 8)
	{
		$_->query_safe($read) foreach @readers;
		$rounds++;
		sleep 0.2;
	}
	my $span = time - $t0;
	my $calls = unwraps();
	note sprintf('%d rounds of 5 reads over %.1f s: %d unwrap calls', $rounds, $span, $calls);
	cmp_ok($calls, '>=', 2, 'past the TTL the provider was asked again');
	cmp_ok($calls, '<=', 1 + int($span / $ttl),
		sprintf('five backends: at most one call per started TTL period in all (%.1f s, TTL %d s)', $span, $ttl));
	$_->quit foreach @readers;
}

# --- 7. no key anywhere after the TTL, every backend idle ---------------------------------
# How many /dev/shm/PostgreSQL.* files (dynamic shared memory segments, posix) hold "key".
# Segments of other servers or that vanish meanwhile (parallel queries) are skipped.
sub in_shm
{
	my ($key) = @_;
	my $n = 0;
	foreach my $file (glob('/dev/shm/PostgreSQL.*'))
	{
		open my $fh, '<:raw', $file or next;
		local $/;
		my $data = <$fh> // '';
		close $fh;
		$n++ if count_in($data, $key) > 0;
	}
	return $n;
}

{
	recheck_and_count($node);
	my $s = $node->background_psql('postgres');
	my $pid = $s->query_safe('SELECT pg_backend_pid()');
	my $t0 = time;
	is($s->query_safe($read), 'value 7', 'a session reads');
	my $other = $node->background_psql('postgres');
	is($other->query_safe($read), 'value 7', 'a second session reads');
	is($other->query_safe('SELECT session_key_source FROM atrest.key_status'), 'shared cache',
		'the second session\'s key came from the shared cache');
	my $opid = $other->query_safe('SELECT pg_backend_pid()');

	# the second backend's mapping of the shared segment
	my $shm_mapping = 0;
	open my $fh, '<', "/proc/$opid/smaps" or die "could not open /proc/$opid/smaps: $!";
	my $is_shm = 0;
	while (my $line = <$fh>)
	{
		if ($line =~ /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(\S*)/) { $is_shm = $1 =~ m{^/dev/shm/PostgreSQL\.}; }
		elsif ($is_shm && $line =~ /^VmFlags:(.*)$/)
		{
			my %f = map { $_ => 1 } split ' ', $1;
			$shm_mapping++ if $f{lo} && $f{dd} && $f{dc};
		}
	}
	close $fh;
	is($shm_mapping, 1, 'the backend maps the shared segment locked, no-dump and no-fork');

	my %seen;
	my @keys = grep { $_ ne "\0" x 32 && !$seen{$_}++ }
	  unpack('(a32)*', secure_bytes($opid, secure_mappings($opid)));
	cmp_ok(scalar(@keys), '>=', 2, 'the backend holds keys (the database key and a data key)');
	my @shared = grep { in_shm($_) } @keys;
	is(scalar(@shared), 1, 'one of them, the database key, is in a /dev/shm/PostgreSQL.* file');

	my $wait = $t0 + $ttl + 2 - time;
	sleep($wait) if $wait > 0;
	is(scalar(grep { in_shm($_) } @keys), 0,
		'after the TTL, every backend idle: no key in any /dev/shm/PostgreSQL.* file');
	my $full = core_dump($opid, 'idle', 1);
	is(scalar(grep { count_in($full, $_) > 0 } @keys), 0,
		'and none in a full dump of the idle backend (shared mapping included)');
	is($other->query_safe($read), 'value 7', 'the idle session reads again afterwards');
	$s->quit;
	$other->quit;
}

# --- 8. revocation: after the TTL reads fail everywhere, restored they work ---------------
{
	my @readers = map { $node->background_psql('postgres', on_error_stop => 0) } 1 .. 4;
	is($_->query($read), 'value 7', 'a session reads before the revocation') foreach @readers;
	my ($out, $err) = run_command([ $kms_admin, 'disable', 'cmk1' ]);
	my $t0 = time;
	sleep($t0 + $ttl + 0.5 - time);
	foreach my $r (@readers)
	{
		$r->{stderr} = '';
		$r->query($read);
		like($r->{stderr}, qr/customer-managed key of provider "command" is unavailable/,
			'after the TTL a session\'s read fails');
	}
	my ($rc, undef, $stderr) = $node->psql('postgres', $read);
	like($stderr, qr/customer-managed key of provider "command" is unavailable/,
		'and a fresh session\'s read fails');
	run_command([ $kms_admin, 'enable', 'cmk1' ]);
	is($_->query($read), 'value 7', 'restored: the session reads again') foreach @readers;
	fresh_read($node, 'restored: a fresh session reads');
	$_->quit foreach @readers;
}
$node->stop;

# --- 9. without the shared cache: per-backend calls ---------------------------------------
foreach my $case ([ 'not preloaded', "shared_preload_libraries = ''\n" ],
	[ 'dynamic_shared_memory_type = mmap', "dynamic_shared_memory_type = mmap\n" ])
{
	my ($what, $conf) = @$case;
	(my $name = $what) =~ s/\W+/_/g;
	my $n = atrest_node($name, cron => 0, pkcs11 => 0,
		conf => "atrest.kms_command = '$kms'\natrest.key_cache_ttl = 600\n$conf");
	$n->safe_psql(
		'postgres', q{
		SELECT atrest.enable_cmk('command', 'kms:openssl/cmk1');
		CREATE TABLE docs (id int, v atrest.encrypted_text);
		INSERT INTO docs SELECT i, 'value ' || i FROM generate_series(1, 10) i;});
	unlink $log;
	for (1 .. 5)
	{
		is( $n->safe_psql('postgres', "$read; SELECT session_key_source FROM atrest.key_status"),
			"value 7\nprovider", "$what: a fresh session reads, its key from the provider");
	}
	is(unwraps(), 5, "$what: five fresh sessions, five unwrap calls (one each)");
	if ($what =~ /mmap/)
	{
		like(slurp_file($n->logfile), qr/the pg_atrest shared key cache is off/,
			"$what: the server log says the shared cache is off");
	}
	$n->stop;
}

done_testing();
