# test/demo.sh: the narrated pg_atrest walk-through for a DBA.  Sourced by
# `test/sandbox demo`, which has built and installed the extension and started a throwaway
# cluster; PGHOST/PGPORT/PGUSER/PGDATABASE point at it and $ATREST_PGDATA is its data
# directory (readable here: the demo runs as root).
#
# The demo is a list of chapters, one bash function each, run in order by demo_main.  To add
# a chapter: write a function `chapter_xxx` that starts with `chapter "Title"`, uses `say`,
# `sql` and `shell` below, and add its name to DEMO_CHAPTERS at the right place.  Chapters
# may rely on the tables made by earlier ones.  A chapter fails the demo (non-zero exit) when
# a statement fails or a `expect_*` check does not hold, so the demo doubles as a smoke test.
#
# `test/sandbox demo` runs every chapter; `test/sandbox demo NAME...` runs only the named
# ones (chapter_ prefix optional) after "setup"; `test/sandbox demo --list` lists them.
# DEMO_PAUSE=1 waits for Enter between chapters when run from a terminal.

DEMO_CHAPTERS=(
	chapter_setup
	chapter_on_disk
	chapter_read_back
	chapter_rotation
	chapter_store
	chapter_cmk
	chapter_key_status
)

# Chapters kept in files of their own.
# shellcheck source=test/demo/store.sh
source "$(dirname "${BASH_SOURCE[0]}")/demo/store.sh"

# ---------------------------------------------------------------------------------------
# Narration helpers
# ---------------------------------------------------------------------------------------

if [ -t 1 ]; then
	D_HEAD=$'\e[1;34m'; D_SQL=$'\e[36m'; D_SH=$'\e[33m'; D_OK=$'\e[32m'; D_BAD=$'\e[1;31m'; D_OFF=$'\e[0m'
else
	D_HEAD=""; D_SQL=""; D_SH=""; D_OK=""; D_BAD=""; D_OFF=""
fi
DEMO_CHAPTER_NO=0

# chapter "Title": a numbered heading.
chapter() {
	DEMO_CHAPTER_NO=$((DEMO_CHAPTER_NO + 1))
	local title="$DEMO_CHAPTER_NO. $*"
	printf '\n%s%s\n%s%s\n\n' "$D_HEAD" "$title" "$(printf '%*s' ${#title} '' | tr ' ' '=')" "$D_OFF"
}

# say "text...": narration, wrapped for reading.
say() {
	printf '%s\n' "$*" | fold -s -w 92
	echo
}

# sql "statements": show the SQL as typed at a psql prompt, then run it with psql and show
# the result.  Several statements and psql meta-commands (\x) are fine; the first error
# stops the demo.
sql() {
	local q=$1 prompt='=' line
	while IFS= read -r line; do
		printf '%spostgres%s# %s%s\n' "$D_SQL" "$prompt" "$line" "$D_OFF"
		# the next line starts a new statement after a ';' or a meta-command
		if [[ $line =~ \;[[:space:]]*$ || $line =~ ^[[:space:]]*\\ ]]; then
			prompt='='
		else
			prompt='-'
		fi
	done <<<"$q"
	psql -X -v ON_ERROR_STOP=1 -P pager=off -f - <<<"$q"
	echo
}

# sql_value "query": run a query quietly and print its single value (for the script's use).
sql_value() {
	psql -X -v ON_ERROR_STOP=1 -qAt -c "$1"
}

# shell "command": show a shell command, then run it (as root) and show its output.
shell() {
	printf '%s# %s%s\n' "$D_SH" "$1" "$D_OFF"
	bash -c "$1" || true
	echo
}

ok()   { printf '%s   ok: %s%s\n\n' "$D_OK" "$*" "$D_OFF"; }
fail() { printf '%sFAIL: %s%s\n' "$D_BAD" "$*" "$D_OFF" >&2; exit 1; }

# relation_files REL: the files on disk holding REL's heap and its TOAST table (all
# segments), after a CHECKPOINT has written them.  Paths are absolute.
relation_files() {
	local rel=$1 path f
	for path in $(sql_value "SELECT pg_relation_filepath(c.oid) || ' ' || coalesce(pg_relation_filepath(NULLIF(c.reltoastrelid, 0)), '')
	                         FROM pg_class c WHERE c.oid = '$rel'::regclass"); do
		for f in "$ATREST_PGDATA/$path" "$ATREST_PGDATA/$path".[0-9]*; do
			[ -f "$f" ] && echo "$f"
		done
	done
}

# count_in_files MARKER FILE...: how many times MARKER occurs in the raw bytes of the files.
count_in_files() {
	local marker=$1 n=0 c f
	shift
	for f in "$@"; do
		c=$(grep -a -o -F -- "$marker" "$f" | wc -l)
		n=$((n + c))
	done
	echo "$n"
}

# grep_relation REL MARKER found|absent: show, from the shell, whether MARKER is in REL's
# files on disk, and check it is as expected.
grep_relation() {
	local rel=$1 marker=$2 expect=$3 files f n
	mapfile -t files < <(relation_files "$rel")
	[ ${#files[@]} -gt 0 ] || fail "no files found for $rel"
	for f in "${files[@]}"; do
		shell "grep -a -o -F '$marker' \$PGDATA/${f#"$ATREST_PGDATA"/} | wc -l    # a file of $(stat -c %s "$f") bytes"
	done
	n=$(count_in_files "$marker" "${files[@]}")
	if [ "$expect" = absent ]; then
		[ "$n" -eq 0 ] || fail "'$marker' found $n time(s) in the files of $rel: it is stored in the clear"
		ok "'$marker' does not occur anywhere in the files of $rel"
	else
		[ "$n" -gt 0 ] || fail "'$marker' not found in the files of $rel (expected plaintext there)"
		ok "'$marker' occurs $n time(s) in the files of $rel: anyone with the files can read it"
	fi
}

# dump_tuple_area REL: the last bytes of REL's first heap page, where PostgreSQL puts the
# first tuples it inserts.
dump_tuple_area() {
	local files f
	mapfile -t files < <(relation_files "$1")
	f=${files[0]}
	shell "dd if=\$PGDATA/${f#"$ATREST_PGDATA"/} bs=8192 count=1 status=none | tail -c 160 | od -A d -t c -w16 -v"
}

# ---------------------------------------------------------------------------------------
# Chapters
# ---------------------------------------------------------------------------------------

# An abridged analyze result (document-intelligence style) with one marker string that the
# on-disk chapter looks for.
DEMO_MARKER='INV-2024-004711'
DEMO_RESULT='{"status": "succeeded", "modelId": "prebuilt-invoice", "apiVersion": "2024-02-29",
 "content": "CONTOSO LTD. Invoice INV-2024-004711 Bill to: Jane Q. Public, 42 Elm Street, Springfield. Total due: 1,234.56 EUR",
 "pages": [{"pageNumber": 1, "width": 8.5, "height": 11, "unit": "inch",
            "lines": [{"content": "CONTOSO LTD.", "polygon": [0.5, 0.4, 2.1, 0.4, 2.1, 0.6, 0.5, 0.6]},
                      {"content": "Invoice INV-2024-004711", "polygon": [5.2, 0.4, 7.9, 0.4, 7.9, 0.6, 5.2, 0.6]}]}],
 "documents": [{"docType": "invoice", "confidence": 0.97,
                "fields": {"InvoiceId": {"type": "string", "content": "INV-2024-004711", "confidence": 0.99},
                           "CustomerName": {"type": "string", "content": "Jane Q. Public", "confidence": 0.95},
                           "InvoiceTotal": {"type": "currency", "content": "1,234.56 EUR", "confidence": 0.98}}}]}'
DEMO_RESULT2='{"status": "succeeded", "modelId": "prebuilt-receipt", "apiVersion": "2024-02-29",
 "content": "Fabrikam Coffee Receipt R-88120 Total 7.40 EUR",
 "pages": [{"pageNumber": 1, "width": 3.1, "height": 8.0, "unit": "inch", "lines": []}],
 "documents": [{"docType": "receipt", "confidence": 0.91,
                "fields": {"MerchantName": {"type": "string", "content": "Fabrikam Coffee", "confidence": 0.93},
                           "Total": {"type": "currency", "content": "7.40 EUR", "confidence": 0.96}}}]}'
DEMO_MODEL_MARKER='contoso-invoice-v3'

chapter_setup() {
	chapter "Install the extension and create encrypted columns"
	say "pg_atrest is preloaded (shared_preload_libraries = 'pg_cron,pg_atrest') and installed" \
		"per database with CREATE EXTENSION.  Its objects live in the schema atrest."
	sql "CREATE EXTENSION pg_atrest;
\\dx pg_atrest"
	say "An encrypted column is declared with one of the types atrest.encrypted_jsonb," \
		"atrest.encrypted_bytea or atrest.encrypted_text.  The type modifier names a key class:" \
		"each class has its own data keys, rotated independently.  Without one, the default" \
		"class is used.  Analyze results go in the class 'result':"
	sql "CREATE TABLE doc_results (
    id     int PRIMARY KEY,
    model  text,
    result atrest.encrypted_jsonb(result)
);"
	say "Values are written as ordinary jsonb literals; pg_atrest encrypts them (AES-256-GCM)" \
		"before they reach the table:"
	sql "INSERT INTO doc_results VALUES (1, 'prebuilt-invoice', '$DEMO_RESULT');"
	say "Custom model definitions and their trained artifacts go in the class 'model':"
	sql "CREATE TABLE models (
    name       text PRIMARY KEY,
    definition atrest.encrypted_jsonb(model),
    artifact   atrest.encrypted_bytea(model)
);"
	sql "INSERT INTO models
SELECT '$DEMO_MODEL_MARKER',
       '{\"name\": \"$DEMO_MODEL_MARKER\", \"baseModel\": \"prebuilt-invoice\", \"fields\": [\"PONumber\", \"CostCenter\"], \"trainedOn\": 412}',
       convert_to('$DEMO_MODEL_MARKER weights ' || string_agg(md5(i::text), ''), 'UTF8')
FROM generate_series(1, 400) AS i;"
	say "For comparison, the same analyze result in a plain jsonb table:"
	sql "CREATE TABLE doc_results_plain (id int PRIMARY KEY, result jsonb);
INSERT INTO doc_results_plain SELECT id, result::jsonb FROM doc_results;"
}

chapter_on_disk() {
	chapter "What is on disk: ciphertext"
	say "A CHECKPOINT writes every changed page to the table files.  Then we read those files" \
		"from the shell, byte for byte, the way someone who got hold of the disk, a file" \
		"backup or a base backup would."
	sql "CHECKPOINT;"
	sql "SELECT relname, pg_relation_filepath(c.oid) AS heap_file,
       pg_relation_filepath(NULLIF(c.reltoastrelid, 0)) AS toast_file
FROM pg_class c
WHERE relname IN ('doc_results', 'models', 'doc_results_plain')
ORDER BY relname;"
	say "The invoice number '$DEMO_MARKER' is in the analyze result.  In the plain jsonb table:"
	grep_relation doc_results_plain "$DEMO_MARKER" found
	dump_tuple_area doc_results_plain
	say "In the encrypted table, heap and TOAST:"
	grep_relation doc_results "$DEMO_MARKER" absent
	dump_tuple_area doc_results
	say "The same holds for the model definition and its artifact:"
	grep_relation models "$DEMO_MODEL_MARKER weights" absent
	grep_relation models 'CostCenter' absent
}

chapter_read_back() {
	chapter "Reading is unchanged"
	say "Queries need no change: an encrypted_jsonb value casts implicitly to jsonb, so the" \
		"usual operators work and the application sees plain JSON."
	sql "SELECT id, result -> 'pages' -> 0 -> 'pageNumber' AS page,
       result #>> '{documents,0,fields,InvoiceTotal,content}' AS total
FROM doc_results;"
	sql "SELECT result -> 'pages' AS pages FROM doc_results;"
	sql "SELECT name, definition ->> 'baseModel' AS base_model, length(artifact::bytea) AS artifact_bytes
FROM models;"
	say "atrest.envelope() shows how a value is stored, without decrypting it: its key class," \
		"the version of the data key that encrypted it, whether it was compressed first, its" \
		"size on disk, and its format (xaes-256-gcm: a key derived for each value)."
	sql "SELECT d.id, e.* FROM doc_results d, atrest.envelope(d.result) AS e;"
}

chapter_rotation() {
	chapter "Rotating a data key"
	say "atrest.rotate_data_key makes a new version of a key class's data key.  New values" \
		"use it at once; existing values stay readable under their old version."
	sql "SELECT * FROM atrest.rotate_data_key('result');"
	sql "INSERT INTO doc_results VALUES (2, 'prebuilt-receipt', '$DEMO_RESULT2');"
	sql "SELECT d.id, d.result ->> 'modelId' AS model_id, e.key_version
FROM doc_results d, atrest.envelope(d.result) AS e
ORDER BY d.id;"
	local versions
	versions=$(sql_value "SELECT count(DISTINCT e.key_version) FROM doc_results d, atrest.envelope(d.result) e")
	[ "$versions" = 2 ] || fail "expected rows under two key versions after rotation, found $versions"
	ok "both rows read back; they are encrypted under different key versions"
	say "The write-ahead log, which also goes into backups and to replicas, holds the same" \
		"ciphertext.  The receipt number 'R-88120' was only ever written to the encrypted table:"
	sql "CHECKPOINT;"
	shell "grep -a -o -F 'R-88120' \$PGDATA/pg_wal/0000* | wc -l"
	local n
	n=$(count_in_files 'R-88120' "$ATREST_PGDATA"/pg_wal/0000*)
	[ "$n" -eq 0 ] || fail "'R-88120' found $n time(s) in the WAL"
	ok "'R-88120' does not occur in the WAL"
	say "atrest.reencrypt rewrites a column's values under the current key version (for example" \
		"before retiring an old version) and returns how many rows it rewrote:"
	sql "CALL atrest.reencrypt('doc_results', 'result');"
	sql "SELECT d.id, e.key_version FROM doc_results d, atrest.envelope(d.result) AS e ORDER BY d.id;"
	versions=$(sql_value "SELECT count(DISTINCT e.key_version) FROM doc_results d, atrest.envelope(d.result) e")
	[ "$versions" = 1 ] || fail "expected one key version after reencrypt, found $versions"
	ok "every row is now under the current key version"
}

# sql_may_fail "statements": like sql, for a statement that is expected to fail: shows the
# error (with its SQLSTATE) instead of stopping the demo.
sql_may_fail() {
	printf '%spostgres=# %s%s\n' "$D_SQL" "$1" "$D_OFF"
	psql -X -P pager=off -v VERBOSITY=verbose -c "$1" 2>&1 || true
	echo
}

# hsm ARGS...: the SoftHSM helper of test/fixtures, as the server's OS user.
hsm() {
	local dir=$ATREST_SANDBOX/hsm
	runuser -u postgres -- "$dir/bin/pkcs11_tool" --module /usr/lib/softhsm/libsofthsm2.so \
		--token atrest --pin-file "$dir/pin" "$@"
}

chapter_cmk() {
	chapter "A customer-managed key in an HSM"
	if [ ! -x "$ATREST_SANDBOX/hsm/bin/pkcs11_tool" ]; then
		say "(skipped: no SoftHSM2 token in this sandbox)"
		return
	fi
	local cmk='pkcs11:token=atrest;object=cmk'
	say "So far the database key is wrapped by the service key.  A customer can put their own" \
		"key over it, held in an HSM (here SoftHSM2 through PKCS#11) that never hands it out." \
		"The token 'atrest' holds an AES-256 key labelled 'cmk':"
	shell "runuser -u postgres -- pkcs11-tool --module /usr/lib/softhsm/libsofthsm2.so --token-label atrest --pin \$(cat $ATREST_SANDBOX/hsm/pin) --list-objects --type secrkey 2>/dev/null | grep -E 'Secret Key|label|ID'"
	say "Enabling the key re-wraps the database key only: no value is rewritten, so it takes" \
		"the same time for a hundred rows as for a hundred thousand.  Let us add 100,000 rows" \
		"and time it:"
	sql "CREATE TABLE bulk_results (id int, result atrest.encrypted_jsonb(result));
INSERT INTO bulk_results SELECT i, jsonb_build_object('id', i, 'status', 'succeeded') FROM generate_series(1, 100000) i;
SELECT (SELECT count(*) FROM doc_results) + (SELECT count(*) FROM bulk_results) AS encrypted_rows;"
	sql "\\timing on
SELECT atrest.enable_cmk('pkcs11', '$cmk');"
	sql "SELECT protector, provider, key_uri, key_version, protected_since FROM atrest.key_status;"
	sql "SELECT count(*) AS readable FROM bulk_results WHERE (result ->> 'id')::int = id;"
	say "Disabling and enabling again are re-wraps too, equally fast:"
	sql "\\timing on
SELECT atrest.disable_cmk();
SELECT atrest.enable_cmk('pkcs11', '$cmk');"
	say "Revocation: the customer deletes the key from the HSM.  Every backend notices within" \
		"atrest.key_cache_ttl seconds; atrest.recheck_keys() makes them ask at once.  Reads and" \
		"writes of encrypted values then fail with SQLSTATE AT001, naming the provider and the" \
		"key, with the HSM's own reason; plain columns keep working."
	shell "runuser -u postgres -- $ATREST_SANDBOX/hsm/bin/pkcs11_tool --module /usr/lib/softhsm/libsofthsm2.so --token atrest --pin-file $ATREST_SANDBOX/hsm/pin delete cmk 01"
	sql "SELECT atrest.recheck_keys();"
	sql_may_fail "SELECT result ->> 'modelId' FROM doc_results;"
	local out
	out=$(psql -X -qAt -c "SELECT count(*) FROM doc_results WHERE result IS NOT NULL AND length(result::text) > 0" 2>&1 || true)
	[[ $out == *"is unavailable"* ]] || fail "reads still work after the key was deleted: $out"
	ok "encrypted values are unreadable while the key is gone"
	sql "SELECT id, model FROM doc_results ORDER BY id;"
	say "The customer restores the key (the same key material, from their backup):"
	shell "runuser -u postgres -- $ATREST_SANDBOX/hsm/bin/pkcs11_tool --module /usr/lib/softhsm/libsofthsm2.so --token atrest --pin-file $ATREST_SANDBOX/hsm/pin import-aes cmk 01 $ATREST_SANDBOX/hsm/keys/cmk-01.key"
	sql "SELECT atrest.recheck_keys();
SELECT id, result ->> 'modelId' AS model_id FROM doc_results ORDER BY id;
SELECT count(*) AS readable FROM bulk_results WHERE (result ->> 'id')::int = id;"
	out=$(sql_value "SELECT count(*) FROM bulk_results WHERE (result ->> 'id')::int = id")
	[ "$out" = 100000 ] || fail "expected 100000 readable rows after the key came back, found $out"
	ok "service is back, nothing lost, no restart"
	say "Every key operation is on record:"
	sql "SELECT event_time::time(0), role_name, operation, provider, provider_key_version, outcome
FROM atrest.key_events ORDER BY id;"
}

chapter_key_status() {
	chapter "Key status"
	say "atrest.key_status is the one place to look at the key hierarchy of this database:" \
		"what protects it (the root key and its provider), the database key, the active" \
		"data-key version of each key class, and how this session's key cache is doing."
	sql "\\x on
SELECT * FROM atrest.key_status;"
}

# ---------------------------------------------------------------------------------------

# demo_chapters [NAME...]: the chapter functions to run, one a line: all of them, or setup
# followed by the named ones.
demo_chapters() {
	local c
	if [ $# -eq 0 ]; then
		printf '%s\n' "${DEMO_CHAPTERS[@]}"
		return
	fi
	echo chapter_setup
	for c in "$@"; do
		c=chapter_${c#chapter_}
		declare -F "$c" >/dev/null || fail "no demo chapter '${c#chapter_}' (see: test/sandbox demo --list)"
		[ "$c" = chapter_setup ] || echo "$c"
	done
}

demo_main() {
	local chapters c
	if [ "${1:-}" = --list ]; then
		printf '%s\n' "${DEMO_CHAPTERS[@]#chapter_}"
		return 0
	fi
	chapters=$(demo_chapters "$@")
	export PGDATA="$ATREST_PGDATA"	# for the shell commands shown; psql ignores it
	printf '%spg_atrest demo%s: PostgreSQL %s on 127.0.0.1:%s, data directory $PGDATA = %s\n' \
		"$D_HEAD" "$D_OFF" "$(sql_value 'SHOW server_version')" "$PGPORT" "$ATREST_PGDATA"
	for c in $chapters; do
		"$c"
		if [ "${DEMO_PAUSE:-}" = 1 ] && [ -t 0 ]; then
			read -r -p "-- press Enter to continue --" _
		fi
	done
	printf '\n%sThe demo ran to the end.%s\n' "$D_OK" "$D_OFF"
}
