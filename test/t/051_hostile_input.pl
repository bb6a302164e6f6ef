# Hostile and broken input that one pg_regress session cannot set up (sql/hostile.sql has
# the rest):
#
#  - values corrupted in the table file on disk, with the server stopped: a flipped bit
#    is a clean XX001 on that row only; a value copied over another row's value of the
#    same type and class opens as the copied plaintext (values are bound to their type,
#    class and key version, not to their row: README, security)
#  - every root-key provider failure that needs no device, each a clean error with the
#    documented SQLSTATE that leaves the server serving: the service key file missing,
#    unreadable by mode, malformed; service_key_command failing or printing garbage; the
#    PKCS#11 module unset, missing, not a PKCS#11 module; the PIN file unset, missing,
#    empty, wrong; the KMS adapter unset, missing, failing, printing garbage, hanging
#  - a 100 MB value: the backend's peak memory and the time to write and read it
#
# Settings change with postgresql.conf and a reload; each check runs in a new session,
# so it starts with a cold key cache.

use strict;
use warnings;

use Time::HiRes qw(time);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use AtrestTest;

my $have_hsm = softhsm(fresh => 1);
my $node = atrest_node('hostile', cron => 0, pkcs11 => 0, checksums => 0, start => 0);
my $dir = $node->basedir;
my $svc_hex = '00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff';
PostgreSQL::Test::Utils::append_to_file("$dir/service.key", "$svc_hex\n");
chmod 0600, "$dir/service.key";
$node->append_conf('postgresql.conf', "atrest.service_key_file = '$dir/service.key'\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION pg_atrest');

# Run SQL in a new session; returns (stdout, stderr with SQLSTATEs shown).
sub try_sql
{
	my ($sql) = @_;
	my ($out, $err) = ('', '');
	$node->psql('postgres', $sql, stdout => \$out, stderr => \$err,
		extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	return ($out, $err);
}

# The primary error line (SQLSTATE and message) and the DETAIL line of stderr.
sub error_of
{
	my ($err) = @_;
	my ($msg) = $err =~ /ERROR:\s+(\S+: [^\n]*)/;
	my ($det) = $err =~ /DETAIL:\s+([^\n]*)/;
	return ($msg // '', $det // '');
}

# The last DETAIL line the server log gained since offset: key-provider failures give
# the client a detail without paths and labels, and the specifics to the log only.
sub logged_detail
{
	my ($offset) = @_;
	my @details = log_since($node, $offset) =~ /DETAIL:\s+([^\n]*)/g;
	return $details[-1] // '';
}

# Replace the settings block of postgresql.conf and reload.  A generation number in a
# placeholder setting tells when new sessions see the new file.
my $base_conf = PostgreSQL::Test::Utils::slurp_file($node->data_dir . '/postgresql.conf');
my $generation = 0;
sub set_conf
{
	my ($extra) = @_;
	$generation++;
	open my $fh, '>', $node->data_dir . '/postgresql.conf' or die $!;
	print $fh $base_conf . "\n# --- 051 ---\nregress.generation = '$generation'\n" . $extra;
	close $fh;
	$node->reload;
	$node->poll_query_until('postgres',
		"SELECT current_setting('regress.generation', true) = '$generation'")
	  or die "the reload of postgresql.conf was not seen";
}

$node->safe_psql('postgres', q{
	CREATE TABLE h (id int PRIMARY KEY, v atrest.encrypted_text);
	INSERT INTO h VALUES (1, 'secret-A-1234'), (2, 'secret-B-5678'), (3, 'secret-C-9012');
	CREATE FUNCTION raw(atrest.encrypted_text, bytea DEFAULT '') RETURNS bytea
	    LANGUAGE internal IMMUTABLE STRICT AS 'byteacat';
});

# ------------------------------------------------------------------------------------------
# Values corrupted in the table file
# ------------------------------------------------------------------------------------------
{
	my %sealed;
	foreach my $id (1 .. 3)
	{
		$sealed{$id} = pack('H*',
			$node->safe_psql('postgres', "SELECT encode(raw(v), 'hex') FROM h WHERE id = $id"));
	}
	my @files = relation_files($node, 'h');
	$node->stop;
	my ($file) = grep { files_contain($sealed{1}, $_) } @files;
	ok($file, 'the sealed bytes of row 1 are in the table file');
	open my $fh, '+<:raw', $file or die "could not open $file: $!";
	my $data = do { local $/; <$fh> };
	my $p1 = index($data, $sealed{1});
	my $p2 = index($data, $sealed{2});
	ok($p1 >= 0 && $p2 >= 0, 'rows 1 and 2 found in the same page');
	# row 1: one bit of ciphertext flipped; row 2: row 3's sealed bytes in its place
	substr($data, $p1 + 33, 1) = chr(ord(substr($data, $p1 + 33, 1)) ^ 0x01);
	substr($data, $p2, length($sealed{3})) = $sealed{3};
	seek $fh, 0, 0;
	print $fh $data;
	close $fh;
	$node->start;

	my ($out, $err) = try_sql('SELECT v FROM h WHERE id = 1');
	is_deeply([ error_of($err) ],
		[ 'XX001: encrypted_text value is corrupted',
		  'Its authentication tag does not match: the value was altered or sealed under another key.' ],
		'a bit flipped on disk: XX001, no bytes printed');
	unlike($err, qr/secret|\\x/, 'the error prints no plaintext or bytes');
	is($node->safe_psql('postgres', 'SELECT v FROM h WHERE id = 3'), 'secret-C-9012',
		'the other rows stay readable');
	is($node->safe_psql('postgres', 'SELECT count(*) FROM h'), '3', 'the table scans');
	is($node->safe_psql('postgres', 'SELECT v FROM h WHERE id = 2'), 'secret-C-9012',
		'a value copied over another row of the same class opens (values are not bound to rows)');
	$node->safe_psql('postgres', 'DELETE FROM h WHERE id = 1');
}

# ------------------------------------------------------------------------------------------
# The service key
# ------------------------------------------------------------------------------------------
my $read = 'SELECT v FROM h WHERE id = 3';
my @service_cases = (
	[ 'service key file missing', "atrest.service_key_file = '$dir/nosuch.key'\n",
	  qr/^Could not open service key file ".*nosuch\.key": No such file or directory\.$/ ],
	[ 'service key file readable by others', "atrest.service_key_file = '$dir/open.key'\n",
	  qr/has group or world access; it must have mode 0600 or less if owned by the database server's user, or 0640 or less if owned by root\.$/ ],
	[ 'service key file malformed', "atrest.service_key_file = '$dir/bad.key'\n",
	  qr/does not hold 64 hexadecimal digits\.$/ ],
	[ 'service key command failing', "atrest.service_key_command = 'exit 3'\n",
	  qr/^atrest\.service_key_command failed: child process exited with exit code 3\.$/ ],
	[ 'service key command printing garbage', "atrest.service_key_command = 'echo not-a-key'\n",
	  qr/^atrest\.service_key_command did not print usable service keys: line 1 does not hold 64 hexadecimal digits\.$/ ],
	[ 'another service key', "atrest.service_key_command = 'echo " . ('ab' x 32) . "'\n",
	  qr/^The service key is not the one this database's key was wrapped with/, 'database key cannot be unwrapped' ],
);
PostgreSQL::Test::Utils::append_to_file("$dir/open.key", "$svc_hex\n");
chmod 0644, "$dir/open.key";
PostgreSQL::Test::Utils::append_to_file("$dir/bad.key", "xyz\n");
chmod 0600, "$dir/bad.key";
foreach my $case (@service_cases)
{
	my ($name, $conf, $detail, $msg) = @$case;
	set_conf($conf);
	my $offset = -s $node->logfile;
	my ($out, $err) = try_sql($read);
	my ($m) = error_of($err);
	my $d = logged_detail($offset);
	is($m, 'AT001: ' . ($msg // 'service key is unavailable'), "$name: AT001");
	like($d, $detail, "$name: the detail in the server log says why");
	unlike($err, qr/$svc_hex|abababab/i, "$name: no key text in the error");
}
set_conf('');
is($node->safe_psql('postgres', $read), 'secret-C-9012', 'service key restored: values read again');

# ------------------------------------------------------------------------------------------
# PKCS#11 and KMS adapter failures (no device needed)
# ------------------------------------------------------------------------------------------
# a shared object that surely exists and is no PKCS#11 module: one of PostgreSQL's own
my $not_pkcs11 = $node->config_data('--pkglibdir') . '/pgcrypto.so';
die "$not_pkcs11 not found" unless -f $not_pkcs11;
my $uri = 'pkcs11:token=atrest;object=cmk';
my @provider_cases = (
	[ 'pkcs11 module unset', '', 'pkcs11', qr/atrest\.pkcs11_module is not set/ ],
	[ 'pkcs11 module missing', "atrest.pkcs11_module = '$dir/nosuch.so'\n", 'pkcs11',
	  qr/module ".*nosuch\.so" could not be loaded/ ],
	[ 'pkcs11 module not a shared object', "atrest.pkcs11_module = '$dir/bad.key'\n", 'pkcs11',
	  qr/module ".*bad\.key" could not be loaded/ ],
);
push @provider_cases,
  [ 'pkcs11 module without C_GetFunctionList', "atrest.pkcs11_module = '$not_pkcs11'\n", 'pkcs11',
	qr/has no C_GetFunctionList/ ];
if ($have_hsm)
{
	my ($module) = pkcs11_conf() =~ /atrest\.pkcs11_module\s*=\s*'([^']+)'/;
	my ($pinfile) = pkcs11_conf() =~ /atrest\.pkcs11_pin_file\s*=\s*'([^']+)'/;
	PostgreSQL::Test::Utils::append_to_file("$dir/empty.pin", '');
	PostgreSQL::Test::Utils::append_to_file("$dir/wrong.pin", "9999\n");
	chmod 0600, "$dir/empty.pin", "$dir/wrong.pin";
	push @provider_cases,
	  [ 'pkcs11 PIN file unset', "atrest.pkcs11_module = '$module'\n", 'pkcs11',
		qr/atrest\.pkcs11_pin_file is not set/ ],
	  [ 'pkcs11 PIN file missing', "atrest.pkcs11_module = '$module'\natrest.pkcs11_pin_file = '$dir/nosuch.pin'\n",
		'pkcs11', qr/could not open PIN file ".*nosuch\.pin"/ ],
	  [ 'pkcs11 PIN file empty', "atrest.pkcs11_module = '$module'\natrest.pkcs11_pin_file = '$dir/empty.pin'\n",
		'pkcs11', qr/PIN file ".*empty\.pin" is empty/ ],
	  [ 'pkcs11 wrong PIN', "atrest.pkcs11_module = '$module'\natrest.pkcs11_pin_file = '$dir/wrong.pin'\n",
		'pkcs11', qr/PIN/ ],
	  [ 'pkcs11 no such token', "atrest.pkcs11_module = '$module'\natrest.pkcs11_pin_file = '$pinfile'\n",
		'pkcs11:token=nosuchtoken;object=cmk', qr/no token labelled "nosuchtoken"/ ],
	  [ 'pkcs11 no such key', "atrest.pkcs11_module = '$module'\natrest.pkcs11_pin_file = '$pinfile'\n",
		'pkcs11:token=atrest;object=nosuchkey', qr/nosuchkey/ ];
}
else
{
  SKIP:
	{
		skip 'no SoftHSM2 token (test/fixtures/softhsm-setup): 6 PIN and token failures not tested', 1;
	}
}

# KMS adapters that fail in every way an adapter can
my $adapters = "$dir/adapters";
mkdir $adapters;
my %adapter = (
	fails   => "#!/bin/sh\necho 'the vault is sealed' >&2\nexit 1\n",
	garbage => "#!/bin/sh\ncat >/dev/null\necho 'this is not json'\n",
	hangs   => "#!/bin/sh\nexec sleep 60\n",
	huge    => "#!/bin/sh\ncat >/dev/null\nhead -c 200000 /dev/zero | tr '\\0' 'x'\n",
	empty   => "#!/bin/sh\ncat >/dev/null\n",
);
foreach my $name (keys %adapter)
{
	PostgreSQL::Test::Utils::append_to_file("$adapters/$name", $adapter{$name});
	chmod 0755, "$adapters/$name";
}
push @provider_cases,
  [ 'kms_command unset', '', 'kms:test', qr/atrest\.kms_command is not set/ ],
  [ 'kms_command missing', "atrest.kms_command = '$adapters/nosuch'\n", 'kms:test',
	qr/atrest\.kms_command cannot be used: No such file or directory/ ],
  [ 'kms adapter failing', "atrest.kms_command = '$adapters/fails'\n", 'kms:test', qr/the vault is sealed/ ],
  [ 'kms adapter printing garbage', "atrest.kms_command = '$adapters/garbage'\n", 'kms:test',
	qr/kms command's answer on \w+ is not valid JSON/ ],
  [ 'kms adapter printing nothing', "atrest.kms_command = '$adapters/empty'\n", 'kms:test',
	qr/kms command printed no answer on \w+/ ],
  [ 'kms adapter printing too much', "atrest.kms_command = '$adapters/huge'\n", 'kms:test',
	qr/kms command wrote more than 65536 bytes to standard output on \w+/ ],
  [ 'kms adapter hanging', "atrest.kms_command = '$adapters/hangs'\natrest.kms_timeout = 1\n", 'kms:test',
	qr/kms command timed out after 1 s on \w+/, 20 ];

foreach my $case (@provider_cases)
{
	my ($name, $conf, $what, $detail, $bound) = @$case;
	my ($provider, $key_uri) = $what eq 'pkcs11' ? ('pkcs11', $uri)
	  : $what =~ /^pkcs11:/ ? ('pkcs11', $what) : ('command', $what);
	set_conf($conf);
	my $offset = -s $node->logfile;
	my $t0 = time;
	my ($out, $err) = try_sql("SELECT atrest.enable_cmk('$provider', '$key_uri')");
	my $elapsed = time - $t0;
	my ($m) = error_of($err);
	my $d = logged_detail($offset);
	note("$name: $m / $d");
	like($m, qr/^AT001: customer-managed key of provider "$provider" is unavailable$/,
		"$name: AT001 naming the provider");
	like($d, qr/^Key "\Q$key_uri\E": the provider reported: /, "$name: the server log names the key");
	like($d, $detail, "$name: the detail in the server log says why");
	# The hanging adapter sleeps 60 s and atrest.kms_timeout is 1 s: 20 s leaves room for
	# a loaded machine and still proves the timeout cut it short.
	cmp_ok($elapsed, '<', $bound // 60, "$name: fails within " . ($bound // 60) . ' s');
	is($node->safe_psql('postgres', "SELECT protector FROM atrest.key_status"), 'service',
		"$name: the database key is still protected by the service key alone");
	is($node->safe_psql('postgres', $read), 'secret-C-9012', "$name: values still read");
}
set_conf('');
is($node->safe_psql('postgres', q{SELECT count(*) FROM atrest.key_events WHERE operation = 'enable_cmk'}),
	'0', 'no failed enable_cmk left an event');
# no adapter process is left behind
my ($ps) = run_command([ 'ps', '-eo', 'args' ]);
unlike($ps, qr/\Q$adapters\E/, 'no KMS adapter process is left running');

# ------------------------------------------------------------------------------------------
# A 100 MB value: peak memory and time
# ------------------------------------------------------------------------------------------
{
	my $mb = $ENV{ATREST_BIG_VALUE_MB} // 100;
	$node->safe_psql('postgres', qq{
		CREATE TABLE big (t atrest.encrypted_text);
		CREATE TABLE src (s text);
		ALTER TABLE src ALTER s SET STORAGE EXTERNAL;
		INSERT INTO src SELECT repeat(string_agg(md5(i::text), ''), $mb) FROM generate_series(1, 32768) i;
	});

	# Run one statement in a fresh session; returns (result, seconds, peak private memory
	# growth in MB).  VmHWM is the peak resident size, which also counts the shared buffers
	# the statement touched; those stay resident afterwards (RssShmem), so they are
	# subtracted to estimate the peak of the backend's own memory.
	my $measure = sub {
		my ($sql) = @_;
		my $s = $node->background_psql('postgres');
		my $pid = $s->query_safe('SELECT pg_backend_pid()');
		my $status = sub {
			my ($st) = run_command([ 'cat', "/proc/$pid/status" ]);
			my ($hwm) = $st =~ /VmHWM:\s+(\d+) kB/;
			my ($shm) = $st =~ /RssShmem:\s+(\d+) kB/;
			return ($hwm / 1024, $shm / 1024);
		};
		my ($hwm0, $shm0) = $status->();
		my $t0 = time;
		my $res = $s->query_safe($sql);
		my $secs = time - $t0;
		my ($hwm1, $shm1) = $status->();
		$s->quit;
		return ($res, $secs, ($hwm1 - $hwm0) - ($shm1 - $shm0), $hwm1 - $hwm0);
	};

	my (undef, $t_write, $m_write, $r_write) = $measure->(q{INSERT INTO big (t) SELECT s FROM src});
	my ($same, $t_read, $m_read, $r_read) =
	  $measure->(q{SELECT md5(t::text) = (SELECT md5(s) FROM src) FROM big});
	is($same, 't', "a $mb MB value reads back intact");
	my ($stored) = $node->safe_psql('postgres', 'SELECT (atrest.envelope(t)).stored_bytes FROM big');
	note(sprintf('%d MB value (stored %d bytes): write %.1f s, peak RSS +%.0f MB (own memory +%.0f MB); '
			  . 'read %.1f s, peak RSS +%.0f MB (own memory +%.0f MB)',
			$mb, $stored, $t_write, $r_write, $m_write, $t_read, $r_read, $m_read));
	# Sealing holds the plaintext and, one after the other, the LZ4 attempt's buffer and
	# the sealed value (2x the value); reading holds the sealed value, the plaintext and
	# the source that md5 compares with (3x).  Allow 4x: more means a copy too many.
	cmp_ok($m_write, '<', 4 * $mb, 'writing it grows the backend\'s own memory by under 4x its size');
	cmp_ok($m_read, '<', 4 * $mb, 'reading it grows the backend\'s own memory by under 4x its size');
	cmp_ok($t_write, '<', 120, 'writing it takes under 2 minutes');
	cmp_ok($t_read, '<', 120, 'reading it takes under 2 minutes');
}

$node->stop;
done_testing();
