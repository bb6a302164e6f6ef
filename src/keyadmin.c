/*
 * keyadmin.c
 *		The SQL functions that make and change keys: bootstrap, key classes,
 *		data-key and database-key rotation, customer-managed keys, rewrap,
 *		recheck and the provider self-test.  EXECUTE on them is not granted
 *		to PUBLIC.
 *
 * Key-changing functions take an EXCLUSIVE lock on atrest.database_keys
 * (readers are not blocked), so they run one at a time, and do all their
 * writes in the caller's transaction: a crash leaves the old state or the
 * new, never a mix.  They take unwrapped keys from the key cache
 * (keyring.c), write wrapped ones through keytables.c, and hold fresh keys
 * only in secure slots.
 */
#include "postgres.h"

#include <openssl/rand.h>

#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/uuid.h"
#if PG_VERSION_NUM >= 160000
#include "varatt.h"			/* VARDATA and friends moved out of postgres.h */
#endif

#include "envelope.h"
#include "keyadmin.h"
#include "keyring.h"
#include "keyshare.h"
#include "keytables.h"
#include "keywrap.h"
#include "pg_atrest.h"
#include "provider.h"
#include "secure_mem.h"
#include "service_key.h"

/*
 * Serialise key changes; readers keep going.  The caller has called
 * SPI_connect().
 */
void
LockKeyTables(void)
{
	LockRelationOid(KeyTablesDatabaseKeysOid(), ExclusiveLock);

	/*
	 * The lock may have let invalidations in: start from what is committed.
	 * A re-read, which keeps the database key if its row is unchanged.
	 */
	KeyringRefresh();
}

/*
 * Seal the database key under the service key: the inner wrapping, which is
 * what a CMK provider then wraps again.  It uses the newest service key, and
 * says which in *svc_id; in a 1.0 database, which cannot record that id, it
 * uses id 1.
 */
static bytea *
ServiceWrap(const unsigned char *dbk, const pg_uuid_t *id, int32 *svc_id)
{
	unsigned char aad[KEY_AAD_MAXLEN];
	size_t		aadlen = DatabaseKeyAad(id, aad);
	const unsigned char *svc;

	svc = ServiceKeyGet(KeyTablesHaveServiceKeyId() ? 0 : 1, false, false, svc_id);
	return WrapKey(svc, dbk, aad, aadlen);
}

/*
 * Stores a new database key, "dbk" and "id" already made, and whatever goes
 * with it.  Runs connected to SPI; may ereport(ERROR).
 */
typedef void (*DatabaseKeyWriter) (const unsigned char *dbk, const pg_uuid_t *id);

/*
 * Make a new database key, random id and key, and have "write" store it.  The
 * key lives only in a secure slot, wiped on the way out, on error too.
 * Returns the new key's id, allocated in the caller's memory context.
 */
static pg_uuid_t *
MakeDatabaseKey(DatabaseKeyWriter write)
{
	unsigned char *dbk = SecureKeyAlloc();
	pg_uuid_t  *id = palloc(sizeof(pg_uuid_t));

	SPI_connect();
	PG_TRY();
	{
		RandomUuid(id);
		RandomKey(dbk);
		write(dbk, id);
	}
	PG_FINALLY();
	{
		SecureKeyFree(dbk);
	}
	PG_END_TRY();
	SPI_finish();
	return id;
}

/*
 * The database's first key, under the service key, with a first data key
 * for every key class.
 */
static void
WriteFirstDatabaseKey(const unsigned char *dbk, const pg_uuid_t *id)
{
	List	   *classes = ReadKeyClasses(NULL);
	ListCell   *lc;
	Oid			types[3] = {UUIDOID, BYTEAOID, INT4OID};
	Datum		values[3];
	int32		svc_id;

	/*
	 * A missing generated service key may be generated only for the
	 * database's first key: with keys already there, a new one would open
	 * none of them.
	 */
	KeyTablesSpiExec("SELECT 1 FROM atrest.database_keys LIMIT 1", 0, NULL, NULL, NULL, SPI_OK_SELECT);
	(void) ServiceKeyGet(0, false, SPI_processed == 0, &svc_id);
	values[0] = UUIDPGetDatum(id);
	values[1] = PointerGetDatum(ServiceWrap(dbk, id, &svc_id));
	values[2] = Int32GetDatum(svc_id);
	if (KeyTablesHaveServiceKeyId())
		KeyTablesSpiExec("INSERT INTO atrest.database_keys (id, active, protector, wrapped, service_key_id) "
				"VALUES ($1, true, 'service', $2, $3)", 3, types, values, NULL, SPI_OK_INSERT);
	else
		KeyTablesSpiExec("INSERT INTO atrest.database_keys (id, active, protector, wrapped) "
				"VALUES ($1, true, 'service', $2)", 2, types, values, NULL, SPI_OK_INSERT);
	foreach(lc, classes)
		InsertDataKey(dbk, id, ((KeyClass *) lfirst(lc))->id, 1);
	LogKeyEvent("create_database_key", NULL, 0, "service", NULL, NULL, "ok", NULL);
}

/*
 * atrest._bootstrap(): run once by CREATE EXTENSION: a database key under the
 * service key and a first data key for every key class.
 */
PG_FUNCTION_INFO_V1(atrest_bootstrap);
Datum
atrest_bootstrap(PG_FUNCTION_ARGS)
{
	PG_RETURN_UUID_P(MakeDatabaseKey(WriteFirstDatabaseKey));
}

static bool
ValidClassName(const char *name)
{
	size_t		len = strlen(name);

	if (len == 0 || len >= NAMEDATALEN || (name[0] >= '0' && name[0] <= '9'))
		return false;
	for (size_t i = 0; i < len; i++)
		if (!((name[i] >= 'a' && name[i] <= 'z') || (name[i] >= '0' && name[i] <= '9') || name[i] == '_'))
			return false;
	return true;
}

/*
 * atrest.create_key_class(name text, compression text DEFAULT 'lz4')
 * RETURNS integer: a new key class with its first data key.  1.0 declared
 * it STRICT with the name only (and had no compression column): called that
 * way, the class compresses with LZ4 as all classes of 1.0 do.
 */
PG_FUNCTION_INFO_V1(atrest_create_key_class);
Datum
atrest_create_key_class(PG_FUNCTION_ARGS)
{
	bool		with_policy = PG_NARGS() >= 2;
	char	   *name;
	uint8		compression = ENVELOPE_FLAG_LZ4;
	int32		class_id;
	bool		isnull;
	Oid			types[2] = {TEXTOID, TEXTOID};
	Datum		values[2];
	const unsigned char *dbk;
	const RootInfo *root;

	RequireArgument(fcinfo, 0, "atrest.create_key_class", "name");
	if (with_policy)
	{
		RequireArgument(fcinfo, 1, "atrest.create_key_class", "compression");
		compression = EnvelopeCompressionByName(text_to_cstring(PG_GETARG_TEXT_PP(1)));
	}
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	if (!ValidClassName(name))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_NAME),
				 errmsg("invalid key class name \"%s\"", name),
				 errdetail("A key class name has 1 to 63 characters: lower-case letters, digits and underscores, not starting with a digit.")));
	SPI_connect();
	LockKeyTables();
	dbk = KeyringDatabaseKey(&root);
	if (KeyClassLookup(name, true) >= 0)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("key class \"%s\" already exists", name)));
	values[0] = PointerGetDatum(PG_GETARG_TEXT_PP(0));
	values[1] = CStringGetTextDatum(EnvelopeCompressionName(compression));
	if (with_policy)
		KeyTablesSpiExec("INSERT INTO atrest.key_classes (id, name, compression) "
				"VALUES (nextval('atrest.key_classes_id_seq'), $1, $2) RETURNING id",
				2, types, values, NULL, SPI_OK_INSERT_RETURNING);
	else
		KeyTablesSpiExec("INSERT INTO atrest.key_classes (id, name) "
				"VALUES (nextval('atrest.key_classes_id_seq'), $1) RETURNING id",
				1, types, values, NULL, SPI_OK_INSERT_RETURNING);
	class_id = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	InsertDataKey(dbk, &root->id, class_id, 1);
	LogKeyEvent("create_key_class", name, 1, NULL, NULL, NULL, "ok",
				with_policy ? psprintf("compression = %s", EnvelopeCompressionName(compression)) : NULL);
	SPI_finish();
	PG_RETURN_INT32(class_id);
}

/*
 * atrest.alter_key_class(name text, compression text): change a key class's
 * compressor (lz4, zstd or none).  It applies to values sealed from now on
 * (every backend reloads its key cache); atrest.reencrypt() moves the
 * class's compressed values to the new compressor, or out of compression.
 */
PG_FUNCTION_INFO_V1(atrest_alter_key_class);
Datum
atrest_alter_key_class(PG_FUNCTION_ARGS)
{
	char	   *name;
	uint8		compression;
	Oid			types[2] = {TEXTOID, TEXTOID};
	Datum		values[2];

	RequireArgument(fcinfo, 0, "atrest.alter_key_class", "name");
	RequireArgument(fcinfo, 1, "atrest.alter_key_class", "compression");
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	compression = EnvelopeCompressionByName(text_to_cstring(PG_GETARG_TEXT_PP(1)));
	SPI_connect();
	LockKeyTables();
	(void) KeyClassLookup(name, false);
	values[0] = PointerGetDatum(PG_GETARG_TEXT_PP(0));
	values[1] = CStringGetTextDatum(EnvelopeCompressionName(compression));
	KeyTablesSpiExec("UPDATE atrest.key_classes SET compression = $2 WHERE name = $1",
			2, types, values, NULL, SPI_OK_UPDATE);
	LogKeyEvent("alter_key_class", name, 0, NULL, NULL, NULL, "ok",
				psprintf("compression = %s", EnvelopeCompressionName(compression)));
	SPI_finish();
	PG_RETURN_VOID();
}

/*
 * atrest.rotate_data_key(class text DEFAULT NULL)
 *		RETURNS TABLE (key_class text, key_version integer)
 * A new data-key version for one class, or for every class when NULL.
 */
PG_FUNCTION_INFO_V1(atrest_rotate_data_key);
Datum
atrest_rotate_data_key(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *only = PG_ARGISNULL(0) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(0));
	int32		only_id = -1;
	const unsigned char *dbk;
	const RootInfo *root;
	List	   *rows;
	ListCell   *lc;

	InitMaterializedSRF(fcinfo, 0);
	SPI_connect();
	LockKeyTables();
	if (only)
		only_id = KeyClassLookup(only, false);
	dbk = KeyringDatabaseKey(&root);
	/* under the lock: the rows as committed, retired versions included */
	rows = ReadDataKeys(NULL);
	foreach(lc, ReadKeyClasses(NULL))
	{
		KeyClass   *kc = lfirst(lc);
		uint32		next = 0;
		Datum		values[2];
		bool		nulls[2] = {false, false};
		ListCell   *rc;

		if (only && kc->id != only_id)
			continue;
		foreach(rc, rows)
		{
			DataKeyRow *row = lfirst(rc);

			if (row->class_id == kc->id && row->version > next)
				next = row->version;
		}
		next++;
		InsertDataKey(dbk, &root->id, kc->id, next);
		LogKeyEvent("rotate_data_key", kc->name, next, NULL, NULL, NULL, "ok", NULL);
		values[0] = CStringGetTextDatum(kc->name);
		values[1] = Int32GetDatum((int32) next);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	SPI_finish();
	return (Datum) 0;
}

/*
 * Wrap "len" bytes at "in" under a CMK and prove the key works: unwrap the
 * result again and compare.  Returns the wrapped bytes; *key_version names
 * the key version used.  ereport(ERROR, AT001) on any failure.
 */
static bytea *
ProviderRoundTrip(const char *provider, const char *key_uri,
				  const unsigned char *in, size_t len, char **key_version)
{
	const AtrestProvider *p = ProviderLookup(provider);
	unsigned char *outer,
			   *back;
	size_t		outerlen,
				backlen;
	char	   *reason = NULL;
	bytea	   *result;

	p->validate_uri(key_uri);
	if (!p->wrap(key_uri, in, len, &outer, &outerlen, key_version, &reason))
		KeyringProviderFailed(provider, key_uri, reason ? reason : "wrap failed");
	if (!p->unwrap(key_uri, *key_version, outer, outerlen, &back, &backlen, &reason))
		KeyringProviderFailed(provider, key_uri, reason ? reason : "unwrap failed");
	if (backlen != len || memcmp(back, in, len) != 0)
		KeyringProviderFailed(provider, key_uri, "the key did not give back what it wrapped");

	result = (bytea *) palloc(VARHDRSZ + outerlen);
	SET_VARSIZE(result, VARHDRSZ + outerlen);
	memcpy(VARDATA(result), outer, outerlen);
	return result;
}

/*
 * Write a new wrapped form for the active database key (same id): under the
 * newest service key alone (provider NULL), or additionally under a CMK.
 * Sets *svc_id to the service key's id, and *key_version to the provider's
 * key version for a CMK.  The proof round trip happens before
 * anything is written; ereport(ERROR) leaves the state unchanged.
 */
static bytea *
ProtectDatabaseKey(const unsigned char *dbk, const pg_uuid_t *id,
				   const char *provider, const char *key_uri, char **key_version,
				   int32 *svc_id)
{
	bytea	   *inner = ServiceWrap(dbk, id, svc_id);

	if (provider == NULL)
		return inner;
	return ProviderRoundTrip(provider, key_uri, (unsigned char *) VARDATA(inner),
							 VARSIZE(inner) - VARHDRSZ, key_version);
}

/*
 * A new database key under the active one's protector, replacing it: every
 * data key is re-wrapped under the new key, the old row retired.
 */
static void
WriteRotatedDatabaseKey(const unsigned char *dbk, const pg_uuid_t *id)
{
	char	   *kver = NULL;
	bytea	   *wrapped;
	Oid			types[8] = {UUIDOID, BYTEAOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, UUIDOID, INT4OID};
	Datum		values[8];
	char		nulls[8] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	const RootInfo *cached;
	RootInfo	old;
	int32		svc_id;
	List	   *rows;
	ListCell   *lc;

	LockKeyTables();
	(void) KeyringDatabaseKey(&cached);
	/* a copy: the cache may reload below, and goes stale with our writes */
	old = *cached;
	old.provider = old.provider ? pstrdup(old.provider) : NULL;
	old.key_uri = old.key_uri ? pstrdup(old.key_uri) : NULL;
	wrapped = ProtectDatabaseKey(dbk, id, old.customer ? old.provider : NULL,
								 old.key_uri, &kver, &svc_id);

	/*
	 * Every data key wrapped under the new database key, before any write:
	 * our writes make the cache stale, and a reload would see the new
	 * database key with data keys still wrapped under the old one.
	 */
	rows = ReadDataKeys(NULL);
	foreach(lc, rows)
	{
		DataKeyRow *row = lfirst(lc);
		unsigned char aad[KEY_AAD_MAXLEN];
		size_t		aadlen;

		if (row->wrapped == NULL)
			continue;			/* retired: nothing left to re-wrap */
		aadlen = DataKeyAad(id, row->class_id, row->version, aad);
		row->wrapped = WrapKey(dbk, KeyringFindDataKey(row->class_id, row->version)->key,
							   aad, aadlen);
	}

	values[0] = UUIDPGetDatum(id);
	values[1] = PointerGetDatum(wrapped);
	values[2] = CStringGetTextDatum(old.customer ? "customer" : "service");
	if (old.customer)
	{
		values[3] = CStringGetTextDatum(old.provider);
		values[4] = CStringGetTextDatum(old.key_uri);
		values[5] = CStringGetTextDatum(kver);
	}
	else
		nulls[3] = nulls[4] = nulls[5] = 'n';
	values[6] = UUIDPGetDatum(&old.id);
	values[7] = Int32GetDatum(svc_id);
	KeyTablesSpiExec("UPDATE atrest.database_keys SET active = false, retired_at = now(), wrapped = NULL "
					 "WHERE id = $7", 7, types, values, nulls, SPI_OK_UPDATE);
	if (KeyTablesHaveServiceKeyId())
		KeyTablesSpiExec("INSERT INTO atrest.database_keys (id, active, protector, provider, key_uri, key_version, wrapped, protected_since, service_key_id) "
						 "SELECT $1, true, $3, $4, $5, $6, $2, protected_since, $8 FROM atrest.database_keys WHERE id = $7",
						 8, types, values, nulls, SPI_OK_INSERT);
	else
		KeyTablesSpiExec("INSERT INTO atrest.database_keys (id, active, protector, provider, key_uri, key_version, wrapped, protected_since) "
						 "SELECT $1, true, $3, $4, $5, $6, $2, protected_since FROM atrest.database_keys WHERE id = $7",
						 7, types, values, nulls, SPI_OK_INSERT);

	foreach(lc, rows)
	{
		DataKeyRow *row = lfirst(lc);
		Oid			dtypes[4] = {INT4OID, INT4OID, UUIDOID, BYTEAOID};
		Datum		dvalues[4];

		if (row->wrapped == NULL)
			continue;
		dvalues[0] = Int32GetDatum(row->class_id);
		dvalues[1] = Int32GetDatum((int32) row->version);
		dvalues[2] = UUIDPGetDatum(id);
		dvalues[3] = PointerGetDatum(row->wrapped);
		KeyTablesSpiExec("UPDATE atrest.data_keys SET database_key_id = $3, wrapped = $4 "
						 "WHERE class_id = $1 AND version = $2", 4, dtypes, dvalues, NULL, SPI_OK_UPDATE);
	}
	LogKeyEvent("rotate_database_key", NULL, 0,
				old.customer ? old.provider : "service",
				old.customer ? old.key_uri : NULL, kver, "ok",
				psprintf("new database key %s",
						 DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(id)))));
}

/*
 * atrest.rotate_database_key() RETURNS uuid: a new database key under the
 * same protector; every data key is re-wrapped, no value is touched.
 */
PG_FUNCTION_INFO_V1(atrest_rotate_database_key);
Datum
atrest_rotate_database_key(PG_FUNCTION_ARGS)
{
	PG_RETURN_UUID_P(MakeDatabaseKey(WriteRotatedDatabaseKey));
}

/*
 * atrest.enable_cmk(provider text, key_uri text): protect the database key
 * under a customer-managed key as well as the service key.
 */
PG_FUNCTION_INFO_V1(atrest_enable_cmk);
Datum
atrest_enable_cmk(PG_FUNCTION_ARGS)
{
	char	   *provider;
	char	   *key_uri;
	char	   *kver = NULL;
	bytea	   *wrapped;
	const char *from;
	int32		svc_id;
	const unsigned char *dbk;
	const RootInfo *root;

	RequireArgument(fcinfo, 0, "atrest.enable_cmk", "provider");
	RequireArgument(fcinfo, 1, "atrest.enable_cmk", "key_uri");
	provider = text_to_cstring(PG_GETARG_TEXT_PP(0));
	key_uri = text_to_cstring(PG_GETARG_TEXT_PP(1));
	(void) ProviderLookup(provider);
	SPI_connect();
	LockKeyTables();
	dbk = KeyringDatabaseKey(&root);
	from = root->customer ? psprintf("customer %s %s", root->provider, root->key_uri) : "service";
	wrapped = ProtectDatabaseKey(dbk, &root->id, provider, key_uri, &kver, &svc_id);
	UpdateActiveRoot("customer", provider, key_uri, kver, wrapped, svc_id);
	LogKeyEvent("enable_cmk", NULL, 0, provider, key_uri, kver, "ok",
				psprintf("database key re-wrapped; previously protected by %s", from));
	SPI_finish();
	PG_RETURN_VOID();
}

/*
 * atrest.disable_cmk(): back to the service key alone.  Needs the CMK: the
 * database key is unwrapped through it now, whatever the cache holds.
 */
PG_FUNCTION_INFO_V1(atrest_disable_cmk);
Datum
atrest_disable_cmk(PG_FUNCTION_ARGS)
{
	char	   *provider;
	char	   *key_uri;
	bytea	   *wrapped;
	int32		svc_id;
	const unsigned char *dbk;
	const RootInfo *root;

	SPI_connect();
	LockKeyTables();
	KeyringDrop();
	dbk = KeyringDatabaseKey(&root);	/* a fresh load: it just asked the provider */
	if (!root->customer)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("database key is not protected by a customer-managed key")));
	provider = pstrdup(root->provider);
	key_uri = pstrdup(root->key_uri);
	wrapped = ServiceWrap(dbk, &root->id, &svc_id);
	UpdateActiveRoot("service", NULL, NULL, NULL, wrapped, svc_id);
	LogKeyEvent("disable_cmk", NULL, 0, provider, key_uri, NULL, "ok",
				"database key re-wrapped under the service key alone");
	SPI_finish();
	PG_RETURN_VOID();
}

/*
 * atrest.rewrap() RETURNS boolean: re-wrap the database key when what wraps
 * it has a newer version: the CMK (its current version differs from the one
 * recorded) or the service key (the source holds a newer id than the one the
 * inner wrapping used).  The inner wrapping always moves to the newest
 * service key; a CMK stays the protector, re-wrapping the new inner form
 * under its current version.  Data keys and values are not touched.  Does
 * nothing (false) when both are current.
 */
PG_FUNCTION_INFO_V1(atrest_rewrap);
Datum
atrest_rewrap(PG_FUNCTION_ARGS)
{
	const RootInfo *root;
	const unsigned char *dbk;
	char	   *current = NULL;
	char	   *reason = NULL;
	char	   *kver = NULL;
	bool		cmk_changed = false;
	bool		svc_changed;
	int32		newest;
	int32		svc_id;
	bytea	   *wrapped;
	StringInfoData detail;

	SPI_connect();
	LockKeyTables();
	KeyringDrop();
	dbk = KeyringDatabaseKey(&root);	/* a fresh load: it just read the service key source */
	if (KeyTablesHaveServiceKeyId())
		newest = ServiceKeyNewestId(false);
	else
	{
		newest = 1;
		if (ServiceKeyNewestId(false) != 1)
			ereport(WARNING,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("database key stays under service key id 1"),
					 errdetail("This database is at pg_atrest 1.0, which cannot record another service key id."),
					 errhint("Run ALTER EXTENSION pg_atrest UPDATE, then atrest.rewrap().")));
	}
	svc_changed = (root->service_key_id != newest);

	if (root->customer)
	{
		const AtrestProvider *p = ProviderLookup(root->provider);

		if (!p->current_version(root->key_uri, &current, &reason))
			KeyringProviderFailed(root->provider, root->key_uri, reason ? reason : "version lookup failed");
		cmk_changed = (root->key_version == NULL || strcmp(current, root->key_version) != 0);
	}
	if (!cmk_changed && !svc_changed)
	{
		SPI_finish();
		PG_RETURN_BOOL(false);
	}

	/* unwrapped through both layers by the load; wrap both again */
	wrapped = ProtectDatabaseKey(dbk, &root->id, root->customer ? root->provider : NULL,
								 root->key_uri, &kver, &svc_id);
	UpdateActiveRoot(root->customer ? "customer" : "service",
					 root->customer ? root->provider : NULL,
					 root->customer ? root->key_uri : NULL,
					 root->customer ? kver : NULL, wrapped, svc_id);

	initStringInfo(&detail);
	if (cmk_changed)
		appendStringInfo(&detail, "re-wrapped from key version %s",
						 root->key_version ? root->key_version : "(unknown)");
	if (svc_changed)
		appendStringInfo(&detail, "%sservice layer re-wrapped from service key id %d to %d",
						 cmk_changed ? "; " : "", root->service_key_id, svc_id);
	LogKeyEvent("rewrap", NULL, 0, root->customer ? root->provider : "service",
				root->customer ? root->key_uri : NULL, root->customer ? kver : NULL,
				"ok", detail.data);
	SPI_finish();
	PG_RETURN_BOOL(true);
}

/*
 * atrest.service_key_check() RETURNS TABLE (database name, service_key_id
 * integer, service_key_available boolean, newest_service_key_id integer,
 * rewrap_needed boolean): which service key this database's key is wrapped
 * with, whether the source (read afresh) still holds it, and whether
 * atrest.rewrap() has work to do before an older key may leave the source.
 * Reads the key table directly, so it works while the key is unavailable.
 */
PG_FUNCTION_INFO_V1(atrest_service_key_check);
Datum
atrest_service_key_check(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	RootInfo	root;
	Datum		values[5];
	bool		nulls[5] = {false, false, false, false, false};
	int32		newest;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "pg_atrest: return type must be a row type");
	ReadRoot(&root, NULL);
	newest = ServiceKeyNewestId(true);
	values[0] = CStringGetDatum(get_database_name(MyDatabaseId));
	values[0] = DirectFunctionCall1(namein, values[0]);
	values[1] = Int32GetDatum(root.service_key_id);
	values[2] = BoolGetDatum(ServiceKeyHasId(root.service_key_id));
	values[3] = Int32GetDatum(newest);
	values[4] = BoolGetDatum(root.service_key_id != newest);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
}

/*
 * atrest.recheck_keys(): every backend drops its key cache and asks the
 * root-key provider again on its next use.  On a primary the new recheck_at
 * reaches every backend (and standbys) by invalidation, and at commit the
 * shared key cache (keyshare.c) forgets this database's key.  A hot standby
 * cannot write the row: there the shared cache forgets it at once, which
 * every backend of the standby notices at its next key use (with
 * shared_preload_libraries; without it, only this backend forgets).
 */
PG_FUNCTION_INFO_V1(atrest_recheck_keys);
Datum
atrest_recheck_keys(PG_FUNCTION_ARGS)
{
	if (RecoveryInProgress())
		SharedKeyRecheck(MyDatabaseId);
	else
	{
		SPI_connect();
		KeyTablesSpiExec("UPDATE atrest.database_keys SET recheck_at = now() WHERE active",
						 0, NULL, NULL, NULL, SPI_OK_UPDATE);
		LogKeyEvent("recheck_keys", NULL, 0, NULL, NULL, NULL, "ok", NULL);
		SPI_finish();
		SharedKeyRecheckAtCommit(MyDatabaseId);
	}
	KeyringDrop();
	AtrestPkcs11Provider.reset();
	AtrestCommandProvider.reset();
	AtrestKmipProvider.reset();
	PG_RETURN_VOID();
}

/*
 * atrest.provider_selftest(provider text, key_uri text) RETURNS text: a wrap
 * and unwrap round trip of random bytes; returns the key version used.
 * Changes nothing.
 */
PG_FUNCTION_INFO_V1(atrest_provider_selftest);
Datum
atrest_provider_selftest(PG_FUNCTION_ARGS)
{
	char	   *provider;
	char	   *key_uri;
	unsigned char probe[WRAPPED_KEY_LEN];
	char	   *kver = NULL;

	RequireArgument(fcinfo, 0, "atrest.provider_selftest", "provider");
	RequireArgument(fcinfo, 1, "atrest.provider_selftest", "key_uri");
	provider = text_to_cstring(PG_GETARG_TEXT_PP(0));
	key_uri = text_to_cstring(PG_GETARG_TEXT_PP(1));
	if (RAND_bytes(probe, sizeof(probe)) != 1)
		elog(ERROR, "pg_atrest: RAND_bytes failed");
	(void) ProviderRoundTrip(provider, key_uri, probe, sizeof(probe), &kver);
	PG_RETURN_TEXT_P(cstring_to_text(kver));
}
