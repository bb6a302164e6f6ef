# Copyright: pg_atrest authors; same license as pg_atrest.
#
# atrest.encrypt_column turns a plain jsonb column into atrest.encrypted_jsonb online:
#   - a table of ~13 KB documents (ATREST_CONVERT_ROWS rows, 2000 unless told; the issue's
#     size is 100000) is converted while two sessions keep updating, inserting and reading;
#     no lock wait of theirs lasts 1 second (log_lock_waits with deadlock_timeout = 100ms
#     logs every wait longer than 100 ms);
#   - no row is lost or changed (count and checksum of the rows the writers did not touch,
#     and every row the writers inserted or updated is there), every value is sealed, the
#     default and NOT NULL stay;
#   - after the procedure returns (and a CHECKPOINT), none of the documents' plaintext
#     markers is in the table's heap or TOAST files, dead tuples and free space included,
#     while a plain control table's file still holds its marker;
#   - atrest.decrypt_column goes back, with the same content;
#   - the table work runs as the table's owner: a BEFORE UPDATE trigger of a plain role's
#     table that runs ALTER ROLE ... SUPERUSER fails when a superuser converts that table;
#   - NULL arguments give 22004; a role that does not own the table gets 42501.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(time);

use AtrestTest;

my $rows = $ENV{ATREST_CONVERT_ROWS} // 2000;
my $node = atrest_node('encrypt_column', cron => 0, pkcs11 => 0,
	conf => "log_lock_waits = on\ndeadlock_timeout = 100ms\n");

# ~13 KB of incompressible text (random hex) after a marker
my $body = q{(SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 400))};

$node->safe_psql(
	'postgres', qq{
	CREATE ROLE app_owner;
	CREATE TABLE docs (id int PRIMARY KEY, doc jsonb NOT NULL DEFAULT '{"empty": true}', note text);
	ALTER TABLE docs OWNER TO app_owner;
	INSERT INTO docs
	    SELECT i, jsonb_build_object('marker', 'PLAINMARK-' || i, 'body', $body), 'n' || i
	      FROM generate_series(1, $rows) i;
	CREATE TABLE plain_ctl (id int, doc jsonb);
	INSERT INTO plain_ctl VALUES (1, jsonb_build_object('marker', 'PLAINMARK-ctl', 'body', $body));
	CREATE TABLE stop_flag (x int);
});

# the rows the writers leave alone: id % 10 not in (0, 5)
my $checksum_sql = q{SELECT count(*) || ':' || md5(string_agg(id || ':' || md5(doc::text), ',' ORDER BY id))
	FROM docs WHERE id % 10 NOT IN (0, 5) AND id < 1000000};
my $before = $node->safe_psql('postgres', $checksum_sql);
ok(files_contain('PLAINMARK-', relation_files($node, 'docs')) > 0,
	'before: the markers are in the table files');

# --- two writers -------------------------------------------------------------------------
sub writer_script
{
	my ($k, $n) = @_;
	my $s = "\\set ON_ERROR_STOP 0\n";
	for my $i (1 .. $n)
	{
		my $id = 10 * (1 + int(rand($rows / 10 - 1))) - ($k == 2 ? 5 : 0);
		my $new = $k * 1000000 + $i;
		$s .= "\\timing on\n"
		  . "UPDATE docs SET doc = jsonb_set(doc, '{v}', '$i') WHERE id = $id;\n"
		  . "INSERT INTO docs (id, doc) VALUES ($new, jsonb_build_object('marker', 'PLAINMARK-$new', 'body', $body));\n"
		  . "SELECT length(doc->>'marker') FROM docs WHERE id = $id;\n"
		  . "\\timing off\n"
		  . "SELECT pg_sleep(0.02);\n"
		  . "SELECT EXISTS (SELECT FROM stop_flag) AS stop \\gset\n"
		  . "\\if :stop\n\\q\n\\endif\n";
	}
	return $s;
}

my (@writers, @outs);
for my $k (1, 2)
{
	my $file = $node->basedir . "/writer$k.sql";
	open my $fh, '>', $file or die;
	print $fh writer_script($k, 20000);
	close $fh;
	my $out = '';
	push @outs, \$out;
	push @writers,
	  IPC::Run::start([ 'psql', '-X', '-d', $node->connstr('postgres'), '-f', $file ],
		'>&', $outs[-1]);
}
sleep 2;

my $log_offset = -s $node->logfile;
my $t0 = time();
my ($out, $err);
$node->psql('postgres', q{CALL atrest.encrypt_column('docs', 'doc', batch_size => 1000)},
	stdout => \$out, stderr => \$err, on_error_stop => 1);
my $elapsed = time() - $t0;
is($err, '', 'encrypt_column returns without error');
note sprintf('encrypt_column on %d rows took %.1f s', $rows, $elapsed);
sleep 1;
$node->safe_psql('postgres', 'INSERT INTO stop_flag VALUES (1)');
$_->finish foreach @writers;

# --- lock waits and statement times ----------------------------------------------------
my $log = slurp_file($node->logfile, $log_offset);
my $max_wait = 0;
while ($log =~ /(?:still waiting for|acquired) \S+ .*? after ([0-9.]+) ms/g)
{
	$max_wait = $1 if $1 > $max_wait;
}
my ($max_stmt, $nstmt) = (0, 0);
for my $o (@outs)
{
	while ($$o =~ /^Time: ([0-9.]+) ms/mg)
	{
		$nstmt++;
		$max_stmt = $1 if $1 > $max_stmt;
	}
}
ok($max_wait < 1000, "no writer waited 1 s for a lock (longest logged wait: $max_wait ms)");
note "writers ran $nstmt timed statements, the slowest took $max_stmt ms";
ok($nstmt > 0, 'the writers ran while the procedure did');
my $errors = join '', map { $$_ =~ /^(?:psql:.*)?ERROR:.*$/mg } @outs;
is($errors, '', 'no writer statement failed');

# --- content -----------------------------------------------------------------------------
is($node->safe_psql('postgres', q{SELECT format_type(atttypid, atttypmod) || ' ' || attnotnull
	FROM pg_attribute WHERE attrelid = 'docs'::regclass AND attname = 'doc'}),
	q{atrest.encrypted_jsonb("default") true}, 'doc is encrypted_jsonb and still NOT NULL');
is($node->safe_psql('postgres', $checksum_sql), $before, 'untouched rows: same count and content');
my $inserted = 0;
$inserted += () = $$_ =~ /^INSERT 0 1$/mg foreach @outs;
is($node->safe_psql('postgres', q{SELECT count(*) FROM docs WHERE id >= 1000000
	AND doc->>'marker' = 'PLAINMARK-' || id}), $inserted, "the $inserted rows the writers inserted are there");
is($node->safe_psql('postgres', qq{SELECT count(*) FROM docs WHERE id < 1000000
	AND doc->>'marker' = 'PLAINMARK-' || id}), $rows, 'every original row is there with its marker');
is($node->safe_psql('postgres', q{SELECT count(*) FROM docs WHERE (atrest.envelope(doc)).key_class IS DISTINCT FROM 'default'}),
	'0', 'every value is sealed under the default class');
$node->safe_psql('postgres', 'INSERT INTO docs (id) VALUES (-1)');
is($node->safe_psql('postgres', q{SELECT doc FROM docs WHERE id = -1}), '{"empty": true}',
	'the default moved to the new column');

# --- files -------------------------------------------------------------------------------
is(files_contain('PLAINMARK-', relation_files($node, 'docs')), 0,
	'after: no marker in the heap or TOAST files of docs');
ok(files_contain('PLAINMARK-ctl', relation_files($node, 'plain_ctl')) > 0,
	'the plain control table still holds its marker');

# --- back --------------------------------------------------------------------------------
my $enc = $node->safe_psql('postgres', q{SELECT md5(string_agg(id || ':' || md5(doc::text), ',' ORDER BY id)) FROM docs});
$node->safe_psql('postgres', q{CALL atrest.decrypt_column('docs', 'doc')});
is($node->safe_psql('postgres', q{SELECT format_type(atttypid, atttypmod) FROM pg_attribute
	WHERE attrelid = 'docs'::regclass AND attname = 'doc'}), 'jsonb', 'decrypt_column: doc is jsonb again');
is($node->safe_psql('postgres', q{SELECT md5(string_agg(id || ':' || md5(doc::text), ',' ORDER BY id)) FROM docs}),
	$enc, 'decrypt_column: same content');

# --- as the owner ------------------------------------------------------------------------
$node->safe_psql(
	'postgres', q{
	CREATE TABLE esc (id int, doc text);
	CREATE TABLE esc_log (who name, what text);
	INSERT INTO esc VALUES (1, 'secret-one'), (2, NULL);
	CREATE FUNCTION esc_trg() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
	    BEGIN
	        EXECUTE 'ALTER ROLE app_owner SUPERUSER';
	        INSERT INTO public.esc_log VALUES (current_user, 'escalated');
	    EXCEPTION WHEN others THEN
	        INSERT INTO public.esc_log VALUES (current_user, SQLERRM);
	    END;
	    RETURN NEW;
	END $$;
	CREATE TRIGGER esc_trg BEFORE UPDATE ON esc FOR EACH ROW EXECUTE FUNCTION esc_trg();
	ALTER TABLE esc OWNER TO app_owner;
	ALTER TABLE esc_log OWNER TO app_owner;
	ALTER FUNCTION esc_trg() OWNER TO app_owner;
	CALL atrest.encrypt_column('esc', 'doc');
});
is($node->safe_psql('postgres', q{SELECT rolsuper FROM pg_roles WHERE rolname = 'app_owner'}),
	'f', 'a trigger of the table cannot make its owner a superuser');
like($node->safe_psql('postgres', q{SELECT string_agg(DISTINCT who || ': ' || what, '; ') FROM esc_log}),
	# PostgreSQL 16 reworded the refusal: "permission denied to alter role"
	qr/^app_owner: (must be superuser|permission denied to alter role)/,
	'the trigger ran as the owner and was refused');
is($node->safe_psql('postgres', q{SELECT string_agg(coalesce(doc, 'NULL'), ',' ORDER BY id) || ' '
	|| pg_typeof(doc) FROM esc GROUP BY pg_typeof(doc)}),
	'secret-one,NULL atrest.encrypted_text', 'text column converted, NULL kept');

# --- arguments and privileges -------------------------------------------------------------
like(psql_error($node, q{CALL atrest.encrypt_column(NULL, 'doc')}), qr/22004/, 'NULL rel: 22004');
like(psql_error($node, q{CALL atrest.encrypt_column('docs', NULL)}), qr/22004/, 'NULL col: 22004');
like(psql_error($node, q{CALL atrest.encrypt_column('docs', 'doc', NULL)}), qr/22004/, 'NULL key_class: 22004');
like(psql_error($node, q{CALL atrest.decrypt_column('docs', NULL)}), qr/22004/, 'decrypt_column NULL col: 22004');
$node->safe_psql('postgres', q{CREATE ROLE other_role; GRANT EXECUTE ON PROCEDURE atrest.encrypt_column TO other_role});
like(psql_error($node, q{SET ROLE other_role; CALL atrest.encrypt_column('docs', 'doc')}),
	qr/42501.*must be owner of table docs/s, 'a role that does not own the table: 42501');
like(psql_error($node, q{SET ROLE app_owner; CALL atrest.encrypt_column('docs', 'doc')}),
	qr/42501/, 'without EXECUTE on the procedure: 42501');

done_testing();
