
# Crash safety of key changes: the server is killed in the middle of atrest.enable_cmk,
# disable_cmk, rotate_database_key, rotate_data_key and reencrypt, either by kill -9 of the
# backend doing the work (its pid from pg_backend_pid() in that session; the postmaster then
# reinitialises and runs crash recovery) or by an immediate shutdown of the whole server
# (pg_ctl stop -m immediate, then start).  A background session loops one kind of key
# change; the kill comes after a random number of acknowledged calls, at a random point of
# the next one (reencrypt: at a random point of its measured duration).  After recovery:
#   - every value decrypts to what was written (md5 of the plaintext against a plain shadow
#     table written in the same transactions), in a fresh session that unwraps the keys anew;
#   - atrest.key_status shows exactly one consistent state: one active database key, every
#     data key wrapped under it, each class's active version its newest, the protector and
#     its provider/key URI/key version as the last committed key event says;
#   - atrest.key_events agrees: the key operations that committed are exactly the ones psql
#     saw acknowledged, plus at most the one in flight (old state or new, never a mix), the
#     number of database keys and data-key versions matches the events;
#   - a column whose re-encryption was acknowledged is entirely on the new key version; the
#     one in flight (reencrypt commits per batch) has values only under its old versions
#     and the new one;
#   - new values can be written and read under whatever keys are now active.
#
# Iterations (one kill each) cycle through the targets (cmk = enable_cmk/disable_cmk
# alternating, rotate_database_key, rotate_data_key, reencrypt) and the two kill modes.
#   ATREST_CRASH_ITERATIONS=N   number of kills (default 8: each target x kill mode once)
#   ATREST_LONG=1               50 iterations (the issue's long run), unless N is given
#   ATREST_CRASH_ROWS=N         rows in the table (default 12000; 20000 with ATREST_LONG)
#   ATREST_SEED=N               random seed (printed, so a failing run can be repeated)
# e.g.  ATREST_CRASH_ITERATIONS=50 test/sandbox check t/040_crash_key_changes.pl, or
# test/long/run (docs/reliability.md).  The CMK is a key of the example KMS adapter
# test/kms/openssl-kms (command provider).

use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);

use AtrestTest;

my $long = $ENV{ATREST_LONG} ? 1 : 0;
my $iterations = $ENV{ATREST_CRASH_ITERATIONS} // ($long ? 50 : 8);
my $rows = $ENV{ATREST_CRASH_ROWS} // ($long ? 20000 : 12000);
my $seed = $ENV{ATREST_SEED} // (time() ^ $$) % 1000000;
srand($seed);
note "ATREST_SEED=$seed iterations=$iterations rows=$rows";

# The KMS: keys in a directory of this test, reached through a wrapper that names it, so the
# setting is all the server needs.
my $kms_cmd = AtrestTest::kms_adapter(PostgreSQL::Test::Utils::tempdir('kms') . '/keys', 'cmk1')
  or plan skip_all => 'no test/kms/openssl-kms';
my $cmk = 'kms:openssl/cmk1';

# wal_level = replica, not the TAP default "minimal": under minimal, PostgreSQL 15 restores a
# sequence that was created and first used in one transaction (atrest.key_events' identity,
# used by CREATE EXTENSION's bootstrap event) to its state at that commit after a crash, so
# key_events ids are handed out again ("duplicate key value violates unique constraint
# key_events_pkey").  See docs/reliability.md.
my $node = AtrestTest::atrest_node(
	'crash',
	cron => 0,
	pkcs11 => 0,
	init => { allows_streaming => 1 },
	conf => "atrest.kms_command = '$kms_cmd'\n"
	  . "restart_after_crash = on\n");

# --- data -----------------------------------------------------------------------------
# docs: three encrypted columns of three classes; shadow: the same plaintext, unencrypted.
$node->safe_psql(
	'postgres', q{
	CREATE TABLE docs (id int PRIMARY KEY, gen int NOT NULL,
	                   doc atrest.encrypted_jsonb(result),
	                   blob atrest.encrypted_bytea,
	                   note atrest.encrypted_text(model));
	CREATE TABLE shadow (id int PRIMARY KEY, gen int NOT NULL, doc jsonb, blob bytea, note text);
	-- Write rows [a, b] of generation g to both tables in one statement (one transaction).
	-- Every 400th value is large enough to go to TOAST; a few are NULL.
	CREATE FUNCTION write_rows(a int, b int, g int) RETURNS void LANGUAGE sql AS $$
	    WITH src AS MATERIALIZED (
	        SELECT i AS id,
	               jsonb_build_object('id', i, 'gen', g, 'words', repeat(md5(i::text) || ' ', 6),
	                                  'r', random(), 'list', jsonb_build_array(i, g, md5(random()::text))) AS doc,
	               CASE WHEN i % 400 = 0
	                    THEN convert_to((SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 2500)), 'UTF8')
	                    WHEN i % 97 = 0 THEN NULL
	                    ELSE decode(md5(random()::text) || md5(i::text), 'hex') END AS blob,
	               'note ' || i || ' of generation ' || g || ' ' || md5(random()::text) AS note
	          FROM generate_series(a, b) i),
	    s AS (INSERT INTO shadow SELECT id, g, doc, blob, note FROM src)
	    INSERT INTO docs SELECT id, g, doc, blob, note FROM src;
	$$;
	-- Change some existing rows in both tables.
	CREATE FUNCTION update_rows(g int) RETURNS void LANGUAGE sql AS $$
	    WITH pick AS MATERIALIZED (
	        SELECT id, 'note ' || id || ' updated in generation ' || g || ' ' || md5(random()::text) AS note
	          FROM shadow WHERE id % 53 = g % 53),
	    s AS (UPDATE shadow t SET note = p.note, gen = g FROM pick p WHERE t.id = p.id)
	    UPDATE docs t SET note = p.note, gen = g FROM pick p WHERE t.id = p.id;
	$$;});
$node->safe_psql('postgres', "SELECT write_rows(1, $rows, 0)");
my $next_id = $rows + 1;

# Every row of docs against shadow: missing rows, and rows whose plaintext differs.
my $compare_sql = q{
	SELECT count(*) FILTER (WHERE d.id IS NULL OR s.id IS NULL) || ' '
	    || count(*) FILTER (WHERE d.id IS NOT NULL AND s.id IS NOT NULL AND (
	           md5(d.doc::jsonb::text) IS DISTINCT FROM md5(s.doc::text)
	        OR md5(d.blob::bytea) IS DISTINCT FROM md5(s.blob)
	        OR md5(d.note::text) IS DISTINCT FROM md5(s.note)
	        OR d.gen <> s.gen)) || ' '
	    || count(*)
	  FROM docs d FULL JOIN shadow s USING (id)};

# The key state, one value per line, each of which must hold.
my $state_sql = q{
	WITH active AS (SELECT * FROM atrest.database_keys WHERE active),
	last_root AS (
	    SELECT * FROM atrest.key_events
	     WHERE operation IN ('enable_cmk', 'disable_cmk', 'rotate_database_key', 'rewrap')
	     ORDER BY id DESC LIMIT 1),
	last_rotation AS (
	    SELECT * FROM atrest.key_events WHERE operation = 'rotate_database_key'
	     ORDER BY id DESC LIMIT 1)
	SELECT 'active_keys=' || (SELECT count(*) FROM active)
	UNION ALL SELECT 'status_rows=' || (SELECT count(*) FROM atrest.key_status)
	UNION ALL SELECT 'status_is_active=' || (SELECT bool_and(s.database_key_id = a.id)
	    FROM atrest.key_status s, active a)
	UNION ALL SELECT 'retired_rows_wiped=' || (SELECT count(*) = 0 FROM atrest.database_keys
	    WHERE NOT active AND (wrapped IS NOT NULL OR retired_at IS NULL))
	UNION ALL SELECT 'database_keys_match_events=' || ((SELECT count(*) FROM atrest.database_keys)
	    = (SELECT count(*) FROM atrest.key_events
	        WHERE operation IN ('create_database_key', 'rotate_database_key')))
	UNION ALL SELECT 'last_rotation_is_active=' || coalesce((SELECT lr.detail = 'new database key ' || a.id
	    FROM last_rotation lr, active a), true)
	UNION ALL SELECT 'data_keys_under_active=' || (SELECT count(*) = 0 FROM atrest.data_keys
	    WHERE database_key_id <> (SELECT id FROM active))
	UNION ALL SELECT 'active_versions_newest=' || (SELECT bool_and(c.active_version
	    = (SELECT max(version) FROM atrest.data_keys k WHERE k.class_id = c.id)) FROM atrest.key_classes c)
	UNION ALL SELECT 'versions_match_events=' || (SELECT bool_and(
	    (SELECT count(*) FROM atrest.data_keys k WHERE k.class_id = c.id)
	    = 1 + (SELECT count(*) FROM atrest.key_events e
	            WHERE e.operation = 'rotate_data_key' AND e.key_class = c.name))
	    FROM atrest.key_classes c)
	UNION ALL SELECT 'protector_matches_events=' || (SELECT CASE
	    WHEN lr.operation IS NULL OR lr.operation = 'disable_cmk'
	         OR (lr.operation = 'rotate_database_key' AND lr.provider = 'service')
	      THEN a.protector = 'service' AND a.provider IS NULL AND a.key_uri IS NULL
	    ELSE a.protector = 'customer' AND a.provider = lr.provider AND a.key_uri = lr.key_uri
	         AND a.key_version = lr.provider_key_version END
	    FROM active a LEFT JOIN last_root lr ON true)};

my %state_expect = (
	active_keys => 1,
	status_rows => 1,
	map { $_ => 'true' }
	  qw(status_is_active retired_rows_wiped database_keys_match_events last_rotation_is_active
	  data_keys_under_active active_versions_newest versions_match_events
	  protector_matches_events));

sub protector
{
	return $node->safe_psql('postgres', 'SELECT protector FROM atrest.key_status');
}

sub last_event_id
{
	return $node->safe_psql('postgres', 'SELECT coalesce(max(id), 0) FROM atrest.key_events');
}

# Per-column count of values by data-key version, e.g. "1:300 2:11700".
sub versions_of
{
	my ($col) = @_;
	return $node->safe_psql(
		'postgres', qq{
		SELECT coalesce(string_agg(v || ':' || n, ' ' ORDER BY v), '')
		  FROM (SELECT (atrest.envelope($col)).key_version AS v, count(*) AS n
		          FROM docs WHERE $col IS NOT NULL GROUP BY 1) s});
}

sub active_version
{
	my ($class) = @_;
	return $node->safe_psql('postgres',
		"SELECT active_version FROM atrest.key_classes WHERE name = '$class'");
}

# Start psql on a file of statements, in the background; returns (harness, \stdout,
# \stderr, backend pid) once the session has printed its pid.
sub start_session
{
	my ($sql) = @_;
	my $file = $node->basedir . '/session.sql';
	unlink $file;
	PostgreSQL::Test::Utils::append_to_file($file,
		"SELECT 'pid ' || pg_backend_pid();\n$sql");
	my ($out, $err) = ('', '');
	my $timer = IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default);
	my $h = IPC::Run::start(
		[
			'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1',
			'-d', $node->connstr('postgres'), '-f', $file
		],
		'<', \undef, '>', \$out, '2>', \$err, $timer);
	$h->pump until $out =~ /^pid (\d+)$/m || $timer->is_expired || !$h->pumpable;
	die "background session did not start: $err" unless $out =~ /^pid (\d+)$/m;
	return ($h, \$out, \$err, $1);
}

# Kill the server in the chosen way and wait until it accepts connections again.  The
# session must still be running (an error in it would end it early: that is a failure).
sub crash
{
	my ($mode, $pid, $h, $err) = @_;
	$h->pump_nb;
	die "the background session failed before the kill: $$err" if $$err =~ /ERROR|FATAL/;
	die "the background session ended before the kill" unless $h->pumpable;
	if ($mode eq 'backend')
	{
		my $offset = -s $node->logfile;
		kill 'KILL', $pid or die "could not kill $pid: $!";
		$node->wait_for_log(qr/all server processes terminated; reinitializing/, $offset);
		$node->wait_for_log(qr/database system is ready to accept connections/, $offset);
	}
	else
	{
		$node->stop('immediate');
		$node->start;
	}
	$node->poll_query_until('postgres', 'SELECT NOT pg_is_in_recovery()')
	  or die "server did not come back";
}

# Wait for the background psql to exit (it lost its connection) and return what it printed.
sub finish_session
{
	my ($h, $out) = @_;
	eval { $h->finish; };
	return $$out;
}

# The calls each target makes in a loop: [event it logs, SQL expression].
my @classes = qw(default model result);
sub loop_calls
{
	my ($target, $n) = @_;
	my @calls;
	if ($target eq 'cmk')
	{
		my $on = protector() eq 'customer';
		for my $i (1 .. $n)
		{
			push @calls,
			  $on
			  ? [ 'disable_cmk', 'atrest.disable_cmk()' ]
			  : [ 'enable_cmk', "atrest.enable_cmk('command', '$cmk')" ];
			$on = !$on;
		}
	}
	elsif ($target eq 'rotate_database_key')
	{
		push @calls, [ 'rotate_database_key', 'atrest.rotate_database_key()' ] for 1 .. $n;
	}
	elsif ($target eq 'rotate_data_key')
	{
		for my $i (1 .. $n)
		{
			my $c = $classes[ int(rand(@classes)) ];
			push @calls,
			  [ "rotate_data_key:$c", "(SELECT count(*) FROM atrest.rotate_data_key('$c'))" ];
		}
	}
	return @calls;
}

# A script that makes the calls one transaction each; "done N|..." once N is acknowledged.
sub loop_script
{
	my $i = 0;
	return join('', map { $i++; "SELECT 'done $i', $_->[1];\n" } @_)
	  . "SELECT 'idle', pg_sleep(300);\n";    # so that there is a backend to kill
}

# How many calls a loop makes: the kill comes after a random number of them, so a loop of
# rotate_data_key adds at most this many versions.
my %loop_calls = (cmk => 10, rotate_database_key => 50, rotate_data_key => 50);

# How long re-encrypting the whole table takes (one column after another).
$node->safe_psql('postgres', 'SELECT count(*) FROM atrest.rotate_data_key()');
my $t0 = time;
$node->safe_psql('postgres',
	join('', map { "CALL atrest.reencrypt('docs', '$_', 500);\n" } qw(doc blob note)));
my $reencrypt_time = time - $t0;
note sprintf("re-encrypting %d rows x 3 columns: %.2f s", $rows, $reencrypt_time);

is($node->safe_psql('postgres', $compare_sql), "0 0 $rows",
	'before any crash: every value matches the shadow table');

# --- the loop ---------------------------------------------------------------------------
my @targets = qw(cmk rotate_database_key rotate_data_key reencrypt);
my @modes = qw(backend immediate);
my %hit;    # what was in flight when the kill came, for the summary

for my $it (1 .. $iterations)
{
	my $target = $targets[ ($it - 1) % @targets ];
	my $mode = $modes[ int(($it - 1) / @targets) % @modes ];
	my $before = last_event_id();
	my $label = "iteration $it ($target, kill $mode)";
	my ($h, $out, $err, $pid, @stmts, %reenc_before, $delay, $inflight);
	my $t_start = time;

	if ($target eq 'reencrypt')
	{
		# New data-key versions first, so that re-encryption has work to do.
		$node->safe_psql('postgres', 'SELECT count(*) FROM atrest.rotate_data_key()');
		$reenc_before{$_} = versions_of($_) for qw(doc blob note);
		($h, $out, $err, $pid) = start_session(
			join('',
				map { "CALL atrest.reencrypt('docs', '$_', 500);\nSELECT 'done $_ 1';\n" }
				  qw(doc blob note))
			  . "SELECT 'idle', pg_sleep(300);\n");
		$t_start = time;
		$delay = rand($reencrypt_time * 1.1);
		sleep($delay);
	}
	else
	{
		# Let the session finish a random number k of calls, then kill it in call k + 1.
		@stmts = loop_calls($target, $loop_calls{$target});
		($h, $out, $err, $pid) = start_session(loop_script(@stmts));
		$t_start = time;
		my $k = int(rand(@stmts - 2));
		# CMK loops: the kill is meant for enable_cmk and disable_cmk in turn
		if ($target eq 'cmk')
		{
			# (crossed with the kill modes: all four pairs come in 16 iterations)
			my $round = int(($it - 1) / @targets);
			my $want = ($round + int($round / 2)) % 2 ? 'disable_cmk' : 'enable_cmk';
			$k++ if $stmts[$k][0] ne $want;
		}
		# Watch the acknowledgements come in, timing each kind of call, then kill at a random
		# point within the time such a call has taken so far.
		my $timer = IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default);
		my (%took, %seen);
		my $prev = $t_start;
		for my $j (1 .. $k)
		{
			$h->pump
			  until $$out =~ /^done $j\|/m || $timer->is_expired || !$h->pumpable;
			(my $op = $stmts[ $j - 1 ][0]) =~ s/:.*//;
			$took{$op} += time - $prev;
			$seen{$op}++;
			$prev = time;
		}
		(my $next = $stmts[$k][0]) =~ s/:.*//;
		my $nap = rand($seen{$next} ? 0.9 * $took{$next} / $seen{$next} : 0.05);
		sleep($nap);
		$delay = time - $t_start;
		note sprintf("%s: kill planned in call %d (%s), %.3f s into it; took %s", $label,
			$k + 1, $next, $nap, join(', ', map { sprintf('%s %.3f s', $_, $took{$_} / $seen{$_}) } sort keys %seen));
	}

	crash($mode, $pid, $h, $err);
	my $printed = finish_session($h, $out);

	# What committed must be what psql saw acknowledged, plus at most the statement in
	# flight; and the committed statements are a prefix of what the session ran.
	if ($target eq 'reencrypt')
	{
		my @acked = ($printed =~ /^done (\w+) \d+$/mg);
		my $inflight_col = (grep { my $c = $_; !grep { $_ eq $c } @acked } qw(doc blob note))[0];
		$inflight = $inflight_col ? "reencrypt($inflight_col)" : 'none (finished)';
		my %class_of = (doc => 'result', blob => 'default', note => 'model');
		for my $col (qw(doc blob note))
		{
			my $now = versions_of($col);
			my $active = active_version($class_of{$col});
			if (grep { $_ eq $col } @acked)
			{
				like($now, qr/^\Q$active\E:\d+$/,
					"$label: acknowledged reencrypt of $col moved every value");
			}
			else
			{
				# reencrypt commits per batch: the column in flight may be partly moved,
				# every value under a version it had before or the active one
				my %allowed = map { (split /:/)[0] => 1 } split / /, $reenc_before{$col};
				$allowed{$active} = 1;
				my @strays = grep { !$allowed{ (split /:/)[0] } } split / /, $now;
				ok(!@strays,
					"$label: $col has values only under its old versions or the active one ($reenc_before{$col} -> $now)");
			}
		}
	}
	else
	{
		my @acked = ($printed =~ /^done (\d+)\|/mg);
		my $n_acked = scalar @acked;
		is_deeply(\@acked, [ 1 .. $n_acked ], "$label: acknowledgements in order");
		my $events = $node->safe_psql('postgres',
			"SELECT coalesce(string_agg(operation || coalesce(':' || key_class, ''), ' ' ORDER BY id), '')
			   FROM atrest.key_events WHERE id > $before");
		my @events = split / /, $events;
		# rotate_data_key logs its class; the others log none
		my @expected = map { $_->[0] } @stmts;
		my $n_events = scalar @events;
		ok($n_events == $n_acked || $n_events == $n_acked + 1,
			"$label: $n_acked acknowledged, $n_events committed");
		is_deeply(\@events, [ @expected[ 0 .. $n_events - 1 ] ],
			"$label: the committed key changes are the ones the session ran, in order");
		if ($n_acked >= @stmts)
		{
			$inflight = 'none (finished)';
		}
		else
		{
			$inflight = $expected[$n_acked];
			$inflight =~ s/:.*//;
			$inflight .= $n_events > $n_acked ? ' (committed, not acknowledged)' : '';
		}
	}
	$hit{"$inflight, kill $mode"}++;
	note sprintf("%s: killed after %.3f s, in flight: %s", $label, $delay, $inflight);

	# One consistent key state, which the events agree with.
	my %state = map { split /=/, $_, 2 } split /\n/, $node->safe_psql('postgres', $state_sql);
	is_deeply(\%state, \%state_expect, "$label: key_status shows one consistent state");

	# Every value decrypts to what was written, in a fresh session.
	is($node->safe_psql('postgres', $compare_sql), '0 0 ' . ($next_id - 1),
		"$label: every value matches the shadow table");

	# And the server keeps working under whatever keys are now active.
	my $first = $next_id;
	$next_id += 40;
	$node->safe_psql('postgres',
		"SELECT write_rows($first, " . ($next_id - 1) . ", $it); SELECT update_rows($it)");
	is( $node->safe_psql(
			'postgres', qq{
			SELECT count(*) FROM docs d JOIN shadow s USING (id)
			 WHERE d.gen = $it AND md5(d.note::text) = md5(s.note)}),
		$node->safe_psql('postgres', "SELECT count(*) FROM shadow WHERE gen = $it"),
		"$label: new writes after recovery read back");
}

note "in flight at the kill: $_ x $hit{$_}" for sort keys %hit;

# A last full check with the cache of a long-lived session: every class readable.
is($node->safe_psql('postgres', $compare_sql), '0 0 ' . ($next_id - 1),
	'after all crashes: every value matches the shadow table');
ok( !$node->log_contains(qr/XX001|data_corrupted|wrapped under a retired database key/),
	'no data-corruption error in the server log');

$node->stop;
done_testing();
