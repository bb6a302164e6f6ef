
# pg_atrest_proxy's key administration (issue 13): atrest_proxy.enable_cmk and the other
# fleet functions run on every shard and return one row per shard.  With one shard
# stopped, enable_cmk reports that shard's failure and the others' success; the stopped
# shard keeps its old protector, the others their new one; once the shard is back, the
# same call converges.  key_status shows every shard with its number (and the error of
# one that cannot be asked).  A plain PL/Proxy RUN ON ALL call, for contrast, fails as a whole.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use AtrestTest;

plan skip_all => 'PL/Proxy is not packaged for this PostgreSQL version' unless plproxy_available();

my $kms = kms_adapter(PostgreSQL::Test::Utils::tempdir('kms') . '/keys', 'cmk1');
plan skip_all => 'no test/kms/openssl-kms' unless $kms;

my ($proxy, @shards) = proxy_fleet(shards => 4, shard_conf => "atrest.kms_command = '$kms'\n");

sub fleet
{
	my ($call) = @_;
	return $proxy->safe_psql('postgres',
		"SELECT string_agg(shard || ':' || left(ok::text, 1), ' ' ORDER BY shard) FROM atrest_proxy.$call");
}

sub protectors
{
	my @which = @_ ? @_ : (0 .. 3);
	return join ' ',
	  map { "$_:" . $shards[$_]->safe_psql('postgres', 'SELECT protector FROM atrest.key_status') } @which;
}

# some sealed data on every shard, read back at the end
$proxy->safe_psql('postgres', q{
	SELECT atrest_proxy.create_model(format('model-%s', i), definition => jsonb_build_object('n', i))
	  FROM generate_series(1, 40) i});

is(protectors(), '0:service 1:service 2:service 3:service', 'every shard starts under the service key');

# --- enable_cmk with shard 2 stopped ----------------------------------------------------
$shards[2]->stop;
# what the fleet functions are built around: one statement RUN ON ALL fails as a whole
$proxy->safe_psql('postgres', q{
	CREATE FUNCTION public.naive_enable_cmk(provider text, key_uri text) RETURNS SETOF text
	LANGUAGE plproxy AS $$
		CLUSTER 'atrest_shards';
		RUN ON ALL;
		SELECT 'done'::text FROM atrest.enable_cmk(provider, key_uri);
	$$;});
like(psql_error($proxy, q{SELECT public.naive_enable_cmk('command', 'kms:openssl/cmk1')}),
	qr/ERROR:\s+XX000: .*naive_enable_cmk/, 'a RUN ON ALL call fails as a whole with a shard stopped');
# (whether the other shards ran it depends on timing: the error says nothing about them)
note('after the failed RUN ON ALL call: ' . protectors(0, 1, 3));
my $rows = $proxy->safe_psql('postgres',
	q{SELECT shard, ok, detail FROM atrest_proxy.enable_cmk('command', 'kms:openssl/cmk1') ORDER BY shard});
my @rows = map { [ split /\|/, $_, 3 ] } split /\n/, $rows;
is(scalar(@rows), 4, 'enable_cmk returns one row per shard');
is(join(' ', map { "$_->[0]:$_->[1]" } @rows), '0:t 1:t 2:f 3:t',
	'shard 2 failed, the others succeeded');
like($rows[0][2], qr/protected by command \(kms:openssl\/cmk1\)/, 'a success says what the key is');
like($rows[2][2], qr/^[0-9A-Z]{5}: .*(connect|refused|No such file)/i, "shard 2's row says it could not be reached: $rows[2][2]");

is( $proxy->safe_psql('postgres',
		q{SELECT string_agg(shard || ':' || coalesce(protector, 'unreachable'), ' ' ORDER BY shard) FROM atrest_proxy.key_status}),
	'0:customer 1:customer 2:unreachable 3:customer',
	'key_status shows every shard, the stopped one with its error');
is($proxy->safe_psql('postgres', q{SELECT error IS NOT NULL FROM atrest_proxy.key_status WHERE shard = 2}),
	't', "the stopped shard's row carries the error");

$shards[2]->start;
is(protectors(), '0:customer 1:customer 2:service 3:customer',
	'the failed shard kept its old state, the others their new one');

# --- the same call again converges ------------------------------------------------------
is(fleet(q{enable_cmk('command', 'kms:openssl/cmk1')}), '0:t 1:t 2:t 3:t', 'enable_cmk again succeeds everywhere');
is(protectors(), '0:customer 1:customer 2:customer 3:customer', 'every shard is under the CMK');
is( $proxy->safe_psql('postgres',
		q{SELECT count(DISTINCT key_uri) || ' ' || min(key_uri) FROM atrest_proxy.key_status WHERE error IS NULL}),
	'1 kms:openssl/cmk1', 'key_status agrees');

# --- the rest of the fleet administration -----------------------------------------------
is(fleet('rewrap()'), '0:t 1:t 2:t 3:t', 'rewrap on every shard');
is(fleet('recheck_keys()'), '0:t 1:t 2:t 3:t', 'recheck_keys on every shard');
is(fleet(q{rotate_data_key('model')}), '0:t 1:t 2:t 3:t', 'rotate_data_key on every shard');
is( $proxy->safe_psql('postgres',
		q{SELECT string_agg(DISTINCT (active_data_key_versions ->> 'model'), ',') FROM atrest_proxy.key_status}),
	'2', 'every shard has version 2 of the model key class');
is(fleet('rotate_database_key()'), '0:t 1:t 2:t 3:t', 'rotate_database_key on every shard');
is(fleet(q{rotate_data_key('no-such-class')}), '0:f 1:f 2:f 3:f', 'an error on every shard is a row per shard');

$shards[1]->stop;
is(fleet('disable_cmk()'), '0:t 1:f 2:t 3:t', 'disable_cmk with shard 1 stopped');
$shards[1]->start;
is(protectors(), '0:service 1:customer 2:service 3:service', 'only shard 1 is still under the CMK');
is(fleet('disable_cmk()'), '0:t 1:t 2:t 3:t', 'disable_cmk again converges (nothing to do where it is done)');
is(protectors(), '0:service 1:service 2:service 3:service', 'every shard is back under the service key');

is( $proxy->safe_psql('postgres',
		q{SELECT count(*) FROM generate_series(1, 40) i,
		         atrest_proxy.get_model(format('model-%s', i)) m
		   WHERE (m.definition ->> 'n')::int = i}),
	40, 'every model is readable through the proxy after all of it');

done_testing();
