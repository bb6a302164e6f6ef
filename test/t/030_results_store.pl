# Copyright: pg_atrest authors; same license as pg_atrest.
#
# The models and analyze results store, through its functions only, as the application
# service would use it: a login role that is a member of atrest_service creates a model,
# runs an analyze operation to success and another to failure, reads them back and deletes
# one.  Every value carrying a marker (model definition and artifact, small and large
# results, errors) reads back intact through the functions, and no marker occurs in the
# heap or TOAST files of atrest.models and atrest.analyze_results, nor in the WAL.
#
# Delete: while the deleting transaction is open, another session still reads the result;
# once it commits, the result is gone (AT404), a second delete returns false, and a delete
# by the wrong model id deleted nothing.  The service role can read neither the store's
# tables nor the key tables.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use AtrestTest;
use AtrestFiles;

my $node = atrest_node(
	'results_store',
	cron => 0,
	pkcs11 => 0,
	conf => "autovacuum = off\nwal_level = replica\nwal_compression = off\n");

# The application's login role gets the store through atrest_service.
$node->safe_psql('postgres', 'CREATE ROLE app LOGIN IN ROLE atrest_service');
my @as_app = (extra_params => [ '-U', 'app' ]);

sub app_sql
{
	my ($sql) = @_;
	return $node->safe_psql('postgres', $sql, @as_app);
}

# --------------------------------------------------------------------------------------
# Markers
# --------------------------------------------------------------------------------------

my %marker = map { $_ => "MARK-$_-" . random_alnum(16) } qw(definition artifact result
  big_result error description);

# A large result: ~300 kB of page content (compressible), TOASTed after compression.
my $big_content = join ' ',
  map { "line $_ of the document $marker{big_result} " . random_alnum(8) } 1 .. 3000;

app_sql(
	qq{SELECT atrest.create_model('contoso-invoice-v3', 'custom model $marker{description}',
	       '{"baseModel": "prebuilt-invoice", "fields": ["$marker{definition}"]}',
	       convert_to('weights $marker{artifact} ' || repeat('0123456789', 2000), 'UTF8'))});

my $ok_id = app_sql(q{SELECT atrest.begin_analyze('contoso-invoice-v3')});
like($ok_id, qr/^[0-9a-f-]{36}$/, 'begin_analyze returns a result id');
is(app_sql(qq{SELECT status FROM atrest.get_analyze_result('contoso-invoice-v3', '$ok_id')}),
	'running', 'a new result is running');
app_sql(
	qq{SELECT atrest.complete_analyze('$ok_id',
	       '{"content": "Invoice $marker{result}", "pages": [{"pageNumber": 1}]}')});

my $big_id = app_sql(q{SELECT atrest.begin_analyze('contoso-invoice-v3')});
app_sql(
	qq{SELECT atrest.complete_analyze('$big_id', jsonb_build_object('content', '$big_content'))}
);

my $fail_id = app_sql(q{SELECT atrest.begin_analyze('contoso-invoice-v3')});
app_sql(
	qq{SELECT atrest.fail_analyze('$fail_id',
	       '{"code": "InvalidContent", "message": "$marker{error}"}')});

# --------------------------------------------------------------------------------------
# Read back through the functions
# --------------------------------------------------------------------------------------

is( app_sql(
		q{SELECT description || ' | ' || (definition -> 'fields' ->> 0) || ' | ' ||
		         split_part(convert_from(artifact, 'UTF8'), ' ', 2)
		  FROM atrest.get_model('contoso-invoice-v3')}),
	"custom model $marker{description} | $marker{definition} | $marker{artifact}",
	'get_model returns the definition and the artifact');
is( app_sql(
		qq{SELECT status || ' ' || (result ->> 'content')
		   FROM atrest.get_analyze_result('contoso-invoice-v3', '$ok_id')}),
	"succeeded Invoice $marker{result}",
	'a succeeded result reads back');
is( app_sql(
		qq{SELECT result ->> 'content' = '$big_content'
		   FROM atrest.get_analyze_result('contoso-invoice-v3', '$big_id')}),
	't',
	'a large result reads back identical');
is( app_sql(
		qq{SELECT status || ' ' || (error ->> 'message') || ' ' || (result IS NULL)
		   FROM atrest.get_analyze_result('contoso-invoice-v3', '$fail_id')}),
	"failed $marker{error} true",
	'a failed result reads back with its error');

# The large result went to TOAST (compressed, then encrypted).
my ($class, $compressed, $stored) = split /\|/,
  $node->safe_psql(
	'postgres',
	qq{SELECT e.key_class, e.compressed, e.stored_bytes
	   FROM atrest.analyze_results r, atrest.envelope(r.result) e WHERE r.result_id = '$big_id'});
is($class, 'result', 'results are encrypted under the key class "result"');
is($compressed, 't', 'the large result was compressed before encryption');
cmp_ok(
	$node->safe_psql(
		'postgres',
		q{SELECT pg_relation_size(reltoastrelid) FROM pg_class
		  WHERE oid = 'atrest.analyze_results'::regclass}),
	'>', 0,
	'the large result is stored in TOAST');

# --------------------------------------------------------------------------------------
# On disk: no marker in heap, TOAST or WAL (WAL page headers cut out: wal_contains)
# --------------------------------------------------------------------------------------

my @files = (
	relation_files($node, 'atrest.models'),
	relation_files($node, 'atrest.analyze_results'));
ok(@files >= 4, 'heap and TOAST files of both tables found (' . scalar(@files) . ')');
foreach my $what (qw(definition artifact result big_result error))
{
	is(files_contain($marker{$what}, @files), 0, "no $what marker in the store's table files");
	is(wal_contains($node, $marker{$what}), 0, "no $what marker in the WAL");
}
# The description column is plain text by design (it names the model, it is not customer
# data): the files do show it, which proves the search above can find plaintext.
cmp_ok(files_contain($marker{description}, @files),
	'>', 0, 'the plain description column is visible on disk (control)');
cmp_ok(wal_contains($node, $marker{description}),
	'>', 0, 'the plain description column is visible in the WAL (control)');

# --------------------------------------------------------------------------------------
# Privileges of the service role
# --------------------------------------------------------------------------------------

foreach my $table (qw(atrest.analyze_results atrest.models atrest.key_events
	atrest.data_keys atrest.database_keys))
{
	sql_fails_with($node, 'postgres', "SELECT count(*) FROM $table",
		'42501', "the service role cannot read $table", @as_app);
}
sql_fails_with($node, 'postgres', q{SELECT atrest.rotate_data_key('result')},
	'42501', 'the service role cannot rotate keys', @as_app);
sql_fails_with($node, 'postgres', 'SELECT atrest.purge_expired()',
	'42501', 'the service role cannot run the purge', @as_app);

# --------------------------------------------------------------------------------------
# Delete
# --------------------------------------------------------------------------------------

my $deleter = $node->background_psql('postgres', extra_params => [ '-U', 'app' ]);
$deleter->query_safe('BEGIN');
is( $deleter->query_safe(
		qq{SELECT atrest.delete_analyze_result('contoso-invoice-v3', '$ok_id')}),
	't', 'delete_analyze_result returns true for an existing result');
is(app_sql(qq{SELECT status FROM atrest.get_analyze_result('contoso-invoice-v3', '$ok_id')}),
	'succeeded', 'before the delete commits, other sessions still read the result');
$deleter->query_safe('COMMIT');
$deleter->quit;

my ($state, $message) = sql_error($node, 'postgres',
	qq{SELECT * FROM atrest.get_analyze_result('contoso-invoice-v3', '$ok_id')}, @as_app);
is($state, 'AT404', 'after commit, get_analyze_result raises AT404');
is($message, 'analyze result does not exist', '... with the documented message');
is( app_sql(qq{SELECT atrest.delete_analyze_result('contoso-invoice-v3', '$ok_id')}),
	'f', 'a second delete returns false');
is($node->safe_psql('postgres',
		qq{SELECT count(*) FROM atrest.analyze_results WHERE result_id = '$ok_id'}),
	'0', 'the row is gone');

app_sql(q{SELECT atrest.create_model('other-model')});
is( app_sql(qq{SELECT atrest.delete_analyze_result('other-model', '$fail_id')}),
	'f', 'a delete by the wrong model id returns false');
is(app_sql(qq{SELECT status FROM atrest.get_analyze_result('contoso-invoice-v3', '$fail_id')}),
	'failed', '... and deleted nothing');

# A result id that never existed gives the very same error as a deleted one.
my ($state2, $message2) = sql_error($node, 'postgres',
	q{SELECT * FROM atrest.get_analyze_result('contoso-invoice-v3', gen_random_uuid())},
	@as_app);
is("$state2 $message2", "$state $message", 'an unknown result id gives the same error');

# Deleting the model deletes its results.
is(app_sql(q{SELECT atrest.delete_model('contoso-invoice-v3')}), 't', 'delete_model');
is($node->safe_psql('postgres', 'SELECT count(*) FROM atrest.analyze_results'),
	'0', 'the model\'s results went with it');

$node->stop;

done_testing();
