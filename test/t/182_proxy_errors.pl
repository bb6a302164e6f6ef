
# pg_atrest_proxy's errors show an application role nothing of how the shards are reached:
# with one of two shards stopped, every routed store function called as svc for a model or
# result on that shard fails with 08001 and a message naming the shard by its number, and
# the message, detail, hint and context carry no socket directory, host, port, dbname= or
# user= of its connect string, nor PL/Proxy's or libpq's own words (also with
# client_min_messages = debug5).  The proxy's server log has libpq's message for the DBA.
# A shard that refuses the mapped user (PQconnectPoll rather than PQconnectStart) is 08001
# too, naming neither the shard's socket nor the user.
# Remote errors from the running shard (AT404, 22004, ...) keep their SQLSTATE, message,
# detail and hint; once the shard is back, the same calls work.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use AtrestTest;

plan skip_all => 'PL/Proxy is not packaged for this PostgreSQL version' unless plproxy_available();

my ($proxy, @shards) = proxy_fleet(shards => 2);

sub svc
{
	my ($sql) = @_;
	return $proxy->safe_psql('postgres', $sql, extra_params => [ '-U', 'svc' ]);
}

# The whole stderr (VERBOSITY verbose) of a statement run as svc on the proxy, '' when it
# succeeds.
sub svc_error
{
	my ($sql) = @_;
	my ($stdout, $stderr);
	my $rc = $proxy->psql('postgres', "\\set VERBOSITY verbose\n$sql",
		stdout => \$stdout, stderr => \$stderr, extra_params => [ '-U', 'svc' ]);
	return $rc == 0 ? '' : $stderr;
}

# one model on each shard (and another on shard 1, never created)
my @on;
foreach my $i (1 .. 100)
{
	my $s = svc(qq{SELECT atrest_proxy.model_shard('m-$i')});
	push @{ $on[$s] }, "m-$i";
}
my ($m0) = @{ $on[0] };
my ($m1, $m1new) = @{ $on[1] };
svc(qq{SELECT atrest_proxy.create_model('$m0'), atrest_proxy.create_model('$m1')});
my $id1 = svc(qq{SELECT atrest_proxy.begin_analyze('$m1')});
my $batch1 = svc(qq{SELECT atrest_proxy.begin_analyze_batch('$m1', '{}')});
is(svc(qq{SELECT atrest_proxy.model_shard('$m1'), atrest_proxy.result_hash('$id1') & 1,
                 atrest_proxy.result_hash('$batch1') & 1}),
	'1|1|1', "model $m1, its result and its batch live on shard 1");

# What svc must never see of the shards (and of the connect strings in general).
my ($host, $port) = ($shards[1]->host, $shards[1]->port);
my $ports = join '|', map { $_->port } @shards;
my @secrets = (
	[ qr/\Q$host\E/, 'the socket directory or host' ],
	[ qr/\b(?:$ports)\b/, 'the port' ],
	[ qr/\.s\.PGSQL/, 'the socket file' ],
	[ qr/dbname\s*=|user\s*=|host\s*=|port\s*=/i, 'a connect string' ],
	[ qr/PQconnect|libpq|PL\/Proxy function|No such file|refused/i, "PL/Proxy's or libpq's words" ]);

$shards[1]->stop;

my @calls = (
	qq{SELECT atrest_proxy.create_model('$m1new')},
	qq{SELECT * FROM atrest_proxy.get_model('$m1')},
	qq{SELECT atrest_proxy.delete_model('$m1')},
	qq{SELECT atrest_proxy.begin_analyze('$m1')},
	qq{SELECT atrest_proxy.complete_analyze('$id1', '{}')},
	qq{SELECT atrest_proxy.fail_analyze('$id1', '{}')},
	qq{SELECT * FROM atrest_proxy.get_analyze_result('$m1', '$id1')},
	qq{SELECT atrest_proxy.delete_analyze_result('$m1', '$id1')},
	qq{SELECT * FROM atrest_proxy.get_analyze_document('$m1', '$id1')},
	qq{SELECT atrest_proxy.put_analyze_output('$id1', 'pdf', NULL, '\\x01')},
	qq{SELECT atrest_proxy.get_analyze_result_pdf('$m1', '$id1')},
	qq{SELECT atrest_proxy.get_analyze_result_figure('$m1', '$id1', '1')},
	qq{SELECT atrest_proxy.begin_analyze_batch('$m1', '{}')},
	qq{SELECT atrest_proxy.update_analyze_batch('$batch1', 'running', 10, NULL)},
	qq{SELECT * FROM atrest_proxy.get_analyze_batch_result('$m1', '$batch1')},
	qq{SELECT * FROM atrest_proxy.list_analyze_batch_results('$m1')},
	qq{SELECT atrest_proxy.delete_analyze_batch_result('$m1', '$batch1')});

foreach my $sql (@calls)
{
	my ($fn) = $sql =~ /atrest_proxy\.(\w+)/;
	my $offset = -s $proxy->logfile;
	my $err = svc_error($sql);
	like($err, qr/ERROR:\s+08001: shard 1 of pg_atrest_proxy cannot be reached/,
		"$fn: 08001 naming shard 1 with shard 1 stopped");
	foreach my $s (@secrets)
	{
		unlike($err, $s->[0], "$fn: svc sees no $s->[1]");
	}
	like(log_since($proxy, $offset), qr/\Q$host\E.*\b$port\b|\b$port\b.*\Q$host\E/,
		"$fn: the proxy's server log names the shard's socket (or host) and port");
}
note('what svc sees: ' . svc_error($calls[1]));

# LOG lines must not reach svc either
my $err = svc_error(qq{SET client_min_messages = debug5;\nSELECT * FROM atrest_proxy.get_model('$m1')});
like($err, qr/ERROR:\s+08001:/, '08001 with client_min_messages = debug5');
foreach my $s (@secrets)
{
	unlike($err, $s->[0], "with client_min_messages = debug5, svc sees no $s->[1]");
}

# the other shard serves, and its errors come through as the shard raises them
is(svc(qq{SELECT count(*) FROM atrest_proxy.get_model('$m0')}), 1, 'shard 0 still serves its model');
my $direct = psql_error($shards[0], q{SET ROLE svc; SELECT * FROM atrest.get_model('no-such-model')});
my ($msg, $detail, $hint) = (
	$direct =~ /ERROR:\s+AT404: (.*)/ ? $1 : 'no message',
	$direct =~ /DETAIL:\s+(.*)/ ? $1 : undef,
	$direct =~ /HINT:\s+(.*)/ ? $1 : undef);
my $nowhere = 'nw00';
$nowhere++ while svc(qq{SELECT atrest_proxy.model_shard('$nowhere')}) != 0;
my $remote = svc_error(qq{SELECT * FROM atrest_proxy.get_model('$nowhere')});
my $direct_nowhere = $msg =~ s/no-such-model/$nowhere/r;
like($remote, qr/ERROR:\s+AT404: .*\Q$direct_nowhere\E/, 'AT404 of the running shard, with its message');
like($remote, qr/DETAIL:.*\Q$detail\E/, 'and its detail') if defined $detail;
like($remote, qr/HINT:.*\Q$hint\E/, 'and its hint') if defined $hint;
like(svc_error(q{SELECT atrest_proxy.begin_analyze(NULL)}), qr/ERROR:\s+22004:/, '22004 for a NULL model id');
like(svc_error(qq{SELECT atrest_proxy.create_model('$m0')}), qr/ERROR:\s+23505:/,
	'23505 of the running shard for a duplicate model');

# a shard that refuses the mapped user (here: no such role there; the same for a wrong
# password) is unreachable too, and names no more
$proxy->safe_psql('postgres', q{
	CREATE ROLE svc2 LOGIN;
	CREATE USER MAPPING FOR svc2 SERVER atrest_shards OPTIONS (user 'no_such_role');
	GRANT USAGE ON FOREIGN SERVER atrest_shards TO svc2;
	SELECT atrest_proxy.grant_store('svc2');});
my ($out2, $err2);
my $offset = -s $proxy->logfile;
$proxy->psql('postgres', "\\set VERBOSITY verbose\nSELECT * FROM atrest_proxy.get_model('$m0')",
	stdout => \$out2, stderr => \$err2, extra_params => [ '-U', 'svc2' ]);
like($err2, qr/ERROR:\s+08001: shard 0 of pg_atrest_proxy cannot be reached/,
	'a shard refusing the mapped user: 08001 naming shard 0');
foreach my $s (@secrets, [ qr/no_such_role/, 'the mapped user' ])
{
	unlike($err2, $s->[0], "a shard refusing the mapped user: svc2 sees no $s->[1]");
}
like(log_since($proxy, $offset), qr/PQconnectPoll.*no_such_role/s,
	"the proxy's server log says why (libpq's message naming the user)");

$shards[1]->start;
is(svc(qq{SELECT description IS NULL FROM atrest_proxy.get_model('$m1')}), 't', 'shard 1 serves again once started');
is(svc(qq{SELECT atrest_proxy.complete_analyze('$id1', '{"ok": 1}') IS NOT NULL}), 't',
	'a result on shard 1 is completed by its id again');

done_testing();
