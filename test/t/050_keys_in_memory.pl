# Keys in a backend's memory: where they live, what a core dump gets, and what is left
# after the key cache is dropped.
#
# The node uses a known service key (atrest.service_key_file), so the test knows 32 of the
# key bytes in advance; the others (the database key and every data key) it reads out of
# the backend's secure pages with gdb.  What each check proves:
#
#  1. /proc/PID/smaps: before the first key use the backend has no mapping that is locked
#     (VmFlags "lo"), excluded from core dumps ("dd") and not inherited by children
#     ("dc"); after it, it has such 4 KiB mappings, fully resident and locked (Locked =
#     Size), and key_status agrees.  This proves the flags the kernel applies, not what is
#     stored there.
#  2. gdb "dump binary memory" of those pages: they hold exactly keys_held non-zero
#     32-byte slots, one of them the known service key.  So the secure pages are where
#     the keys are, and the test now knows every key the backend holds.
#  3. A core dump made the way the kernel makes one (gdb's gcore honours MADV_DONTDUMP,
#     like the kernel does): the service key and the database key are not in it; a dump
#     with dump-excluded-mappings on has them (so the search works).  No data key is in
#     an ordinary core dump either, although values were just sealed and opened: a data
#     key is set into OpenSSL's cipher context (its heap is neither locked nor excluded,
#     and an AES-256 key schedule starts with the key) only for one operation, and an
#     all-zero key replaces it afterwards.  Nor is the key XAES-256-GCM derived for each
#     value opened (computed here from the data keys and the values' nonces), which lives
#     on the stack for one call and in the GCM context for one operation.
#  4. After atrest.recheck_keys() (the cache is dropped): no byte string of any of those
#     keys is left anywhere in the process, secure pages and heap included (a full dump
#     with dump-excluded-mappings on).  This does not prove that no copy ever reached
#     swap (the pages are locked before a key is written to them), CPU registers, the
#     kernel, another backend (each has its own cache), or files such as the key file.
#  5. With atrest.service_key_command, the hex text the command printed must not stay
#     behind in the process either.
#
# Needs gdb (apt-get install gdb) for 2-5; without it they are skipped with a message.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use AtrestTest;

# a service key that is easy to recognise and cannot occur by chance
my $svc_hex = '9f3c6a0152e8b7d4c1a0f98e7d6c5b4a3928170615f4e3d2c1b0a99887766554';
my $svc = pack('H*', $svc_hex);

my $have_gdb = system('command -v gdb >/dev/null 2>&1 && command -v gcore >/dev/null 2>&1') == 0;

my $node = atrest_node('keysmem', cron => 0, pkcs11 => 0, start => 0);
my $keyfile = $node->basedir . '/service.key';
PostgreSQL::Test::Utils::append_to_file($keyfile, "$svc_hex\n");
chmod 0600, $keyfile;
$node->append_conf('postgresql.conf',
	"atrest.service_key_file = '$keyfile'\natrest.key_cache_ttl = 3600\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION pg_atrest');
$node->safe_psql('postgres',
	q{CREATE TABLE t (id int, doc atrest.encrypted_jsonb(result), note atrest.encrypted_text);
	  INSERT INTO t VALUES (1, '{"a": 1}', 'hello');
	  SELECT atrest.rotate_data_key('model');
	  CREATE FUNCTION raw(atrest.encrypted_text, bytea DEFAULT '') RETURNS bytea
	      LANGUAGE internal IMMUTABLE STRICT AS 'byteacat';
	  CREATE FUNCTION raw(atrest.encrypted_jsonb, bytea DEFAULT '') RETURNS bytea
	      LANGUAGE internal IMMUTABLE STRICT AS 'byteacat';});

# AES-256 in ECB mode of whole blocks, with the openssl command.
sub aes256_ecb
{
	my ($key, $blocks) = @_;
	my ($out, $err);
	IPC::Run::run(
		[ 'openssl', 'enc', '-aes-256-ecb', '-nopad', '-nosalt', '-K', unpack('H*', $key) ],
		'<', \$blocks, '>', \$out, '2>', \$err)
	  or die "openssl enc failed: $err";
	return $out;
}

# The AES-256-GCM key XAES-256-GCM derives from "key" and a nonce's first 12 bytes
# (c2sp.org/XAES-256-GCM, "Detailed key derivation algorithm").
sub xaes_subkey
{
	my ($key, $nonce12) = @_;
	my @l = unpack('C16', aes256_ecb($key, "\0" x 16));
	my $msb = $l[0] >> 7;
	my @k1 = map { (($l[$_] << 1) | ($_ < 15 ? $l[$_ + 1] >> 7 : 0)) & 0xff } 0 .. 15;
	$k1[15] ^= 0x87 if $msb;
	my $k1 = pack('C16', @k1);
	return aes256_ecb($key, (("\x00\x01X\x00" . $nonce12) ^ $k1) . (("\x00\x02X\x00" . $nonce12) ^ $k1));
}
is( unpack('H*', xaes_subkey("\x01" x 32, 'ABCDEFGHIJKL')),
	'c8612c9ed53fe43e8e005b828a1631a0bbcb6ab2f46514ec4f439fcfd0fa969b',
	'the derivation here gives the C2SP test vector');

# secure_mappings, secure_bytes, core_dump and count_in are in AtrestTest.pm.

# --- 1. smaps ---------------------------------------------------------------------------
my $s = $node->background_psql('postgres');
my $pid = $s->query_safe('SELECT pg_backend_pid()');
$s->query_safe('SELECT count(*) FROM pg_class');
my @before = secure_mappings($pid);
is(scalar(@before), 0, 'no locked, no-dump mapping before the first key use');

is($s->query_safe(q{SELECT doc::text || note FROM t}), '{"a": 1}hello', 'first key use decrypts');
my @after = secure_mappings($pid);
cmp_ok(scalar(@after), '>=', 1, 'after first key use: a mapping with VmFlags lo, dd and dc');
is_deeply([ map { $_->{size} % 4 } @after ], [ map { 0 } @after ], 'the secure mappings are whole 4 KiB pages');
is_deeply([ map { $_->{locked} } @after ], [ map { $_->{size} } @after ],
	'every page of the secure mappings is locked in RAM (Locked = Size)');
my ($locked, $held) = split /\|/,
  $s->query_safe('SELECT memory_locked, keys_held FROM atrest._session_key_state()');
is($locked, 't', 'key_status: session memory locked');
# data keys are unwrapped when a value first needs one: those of "result" and "default"
# (the read above), not the other versions and classes in atrest.data_keys
cmp_ok($s->query_safe('SELECT count(*) FROM atrest.data_keys'), '>', 2, 'the key tables hold more than two data keys');
is($held, 4, 'the session holds the service key, the database key and the two data keys it used');

SKIP:
{
	skip 'gdb is not installed (apt-get install gdb): core dump checks skipped', 17 unless $have_gdb;

	# --- 2. what the secure pages hold -----------------------------------------------------
	my $page = secure_bytes($pid, @after);
	my @slots = grep { $_ ne "\0" x 32 } unpack('(a32)*', $page);
	is(scalar(@slots), $held, 'the secure pages hold exactly keys_held non-zero 32-byte slots');
	is(scalar(grep { $_ eq $svc } @slots), 1, 'one slot is the known service key');
	my @dbk_and_svc = grep { $_ ne $svc } @slots[0 .. 1];
	# The first slots are the database key and the service key (load order: database key
	# slot, then the service key, then the data keys); the rest are data keys.
	my %is_data = map { $_ => 1 } @slots[2 .. $#slots];
	is(scalar(@dbk_and_svc), 1, 'the first two slots are the database key and the service key');
	my $dbk = $dbk_and_svc[0];

	# --- 3. core dumps while the keys are loaded -------------------------------------------
	my $full = core_dump($pid, 'full', 1);
	ok(count_in($full, $svc) >= 1, 'a dump including excluded mappings has the service key (the search works)');
	ok(count_in($full, $dbk) >= 1, '... and the database key');
	is(scalar(grep { count_in($full, $_) == 0 } keys %is_data), 0, '... and every data key');
	undef $full;

	my $core = core_dump($pid, 'core', 0);
	ok(length($core) > 1_000_000, 'gcore made an ordinary core dump');
	is(count_in($core, $svc), 0, 'the service key is not in an ordinary core dump');
	is(count_in($core, $dbk), 0, 'the database key is not in an ordinary core dump');
	is(count_in($core, $svc_hex), 0, 'nor the hex text of the service key');
	my $data_in_core = scalar(grep { count_in($core, $_) > 0 } keys %is_data);
	undef $core;
	is($data_in_core, 0, 'no data key is in an ordinary core dump');
	note("data keys found in an ordinary core dump: $data_in_core of " . scalar(keys %is_data));

	# the values the session opened are in format 2; the key derived for each (tried with
	# every data key the session holds) is nowhere in the process, excluded pages included
	my @nonces = map { pack('H*', $_) } split /\n/, $s->query_safe(
		q{SELECT encode(substr(r, 9, 12), 'hex') FROM t,
		         LATERAL (VALUES (raw(doc)), (raw(note))) v(r) WHERE get_byte(r, 0) = 2});
	is(scalar(@nonces), 2, 'both values are sealed in format 2');
	my @subkeys = map { my $n = $_; map { xaes_subkey($_, $n) } keys %is_data } @nonces;
	$full = core_dump($pid, 'subkeys', 1);
	is(scalar(grep { count_in($full, $_) > 0 } @subkeys), 0,
		'no key derived for a value is left in the process memory');
	undef $full;

	# --- 4. after the cache is dropped ---------------------------------------------------
	$s->query_safe('SELECT atrest.recheck_keys()');
	is($s->query_safe('SELECT keys_held FROM atrest._session_key_state()'), 0,
		'after recheck_keys the session holds no key');
	my @still = secure_mappings($pid);
	my $wiped = secure_bytes($pid, @still);
	is($wiped =~ tr/\0//c, 0, 'the secure pages are all zero bytes');
	$full = core_dump($pid, 'after', 1);
	my @left = grep { count_in($full, $_) > 0 } ($svc, $dbk, keys %is_data);
	is(scalar(@left), 0,
		'no key (service, database or data key) is left anywhere in the process memory');
	is(count_in($full, $svc_hex), 0, 'nor the hex text of the service key');
	undef $full;
}

# and the session goes on working: the keys come back on the next use
is($s->query_safe(q{SELECT note::text FROM t}), 'hello', 'keys reload on the next use');
$s->quit;

# --- 5. a service key from atrest.service_key_command --------------------------------------
SKIP:
{
	skip 'gdb is not installed: service_key_command check skipped', 2 unless $have_gdb;

	$node->append_conf('postgresql.conf', "atrest.service_key_command = 'cat $keyfile'\n");
	$node->reload;
	my $c = $node->background_psql('postgres');
	my $cpid = $c->query_safe('SELECT pg_backend_pid()');
	is($c->query_safe(q{SELECT note::text FROM t}), 'hello', 'service_key_command: values read');
	my $full = core_dump($cpid, 'cmd', 1);
	is(count_in($full, $svc_hex), 0,
		'the hex text printed by service_key_command is not left in the process');
	undef $full;
	$c->quit;
}

$node->stop;
done_testing();
