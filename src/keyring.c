/*
 * keyring.c
 *		The per-database key hierarchy, the backend's key cache and the SQL
 *		functions that change keys.
 *
 *		root key	service key, optionally under a customer-managed key (CMK)
 *		 wraps  database key		one active row in atrest.database_keys
 *		  wraps  data keys		per key class and version, atrest.data_keys
 *		   encrypt  values		envelope.c
 *
 * With a CMK the database key is wrapped twice: first under the service key,
 * then the result under the CMK by its provider (provider.h), so reading
 * needs both, and a provider only ever sees ciphertext.
 *
 * Cache invariants: each backend holds the database key and every data key of
 * its database in secure slots (secure_mem.c), loaded on first use by
 * scanning the key tables directly (no SQL, no privilege check: a role that
 * may read a column may decrypt it).  A statement trigger on each key table
 * sends a relcache invalidation for that table; our relcache callback only
 * marks the cache stale, and the next use drops and reloads it.  Because
 * invalidations are WAL-logged, hot standbys drop their caches too.  The
 * unwrapped database key is trusted for atrest.key_cache_ttl seconds; then
 * the root-key provider is asked again, so a revoked CMK stops all reads and
 * writes within that bound.
 *
 * Key-changing functions take an EXCLUSIVE lock on atrest.database_keys
 * (readers are not blocked), so they run one at a time, and do all their
 * writes in the caller's transaction: a crash leaves the old state or the
 * new, never a mix.
 */
#include "postgres.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/xact.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"
#if PG_VERSION_NUM >= 160000
#include "varatt.h"			/* VARDATA and friends moved out of postgres.h */
#endif

#include "envelope.h"
#include "keyring.h"
#include "pg_atrest.h"
#include "provider.h"
#include "secure_mem.h"

/* Column numbers of the key tables, as sql/pg_atrest--1.0.sql creates them. */
#define Anum_key_classes_id				1
#define Anum_key_classes_name			2
#define Anum_key_classes_active_version	3

#define Anum_database_keys_id			1
#define Anum_database_keys_active		2
#define Anum_database_keys_protector	5
#define Anum_database_keys_provider		6
#define Anum_database_keys_key_uri		7
#define Anum_database_keys_key_version	8
#define Anum_database_keys_wrapped		10

#define Anum_data_keys_class_id			1
#define Anum_data_keys_version			2
#define Anum_data_keys_database_key_id	3
#define Anum_data_keys_wrapped			5

typedef struct KeyClass
{
	int32		id;
	uint32		active_version;
	char		name[NAMEDATALEN];
} KeyClass;

/* What the active database_keys row says (non-secret). */
typedef struct RootInfo
{
	pg_uuid_t	id;
	bool		customer;
	char	   *provider;
	char	   *key_uri;
	char	   *key_version;
	bytea	   *wrapped;
} RootInfo;

static struct
{
	bool		loaded;
	bool		stale;
	TimestampTz verified_at;
	unsigned char *dbk;			/* secure slot */
	RootInfo	root;
	int			nclasses;
	KeyClass   *classes;
	HTAB	   *datakeys;
	MemoryContext cxt;
}			cache;

/* This session's view of the root, for atrest.key_status. */
static TimestampTz last_unwrap = 0;
static char *last_error = NULL;

/* Key table OIDs, resolved lazily; forgotten when the cache is dropped. */
static Oid	classes_oid = InvalidOid;
static Oid	dbkeys_oid = InvalidOid;
static Oid	datakeys_oid = InvalidOid;

static void KeyCacheDrop(void);
pg_noreturn static void ProviderFailed(const char *provider, const char *key_uri,
									   const char *reason);

/* ---------------------------------------------------------------------
 * Invalidation
 * --------------------------------------------------------------------- */

static void
KeyringRelcacheCallback(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == classes_oid ||
		relid == dbkeys_oid || relid == datakeys_oid)
		cache.stale = true;
}

void
KeyringInit(void)
{
	CacheRegisterRelcacheCallback(KeyringRelcacheCallback, (Datum) 0);
}

/*
 * Statement trigger on the key tables: tell every backend (this one at its
 * next command, others at commit, standbys at replay) to drop its key cache.
 */
PG_FUNCTION_INFO_V1(atrest_key_tables_changed);
Datum
atrest_key_tables_changed(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("atrest._key_tables_changed() must be called as a trigger")));
	CacheInvalidateRelcache(trigdata->tg_relation);
	return PointerGetDatum(NULL);
}

/* ---------------------------------------------------------------------
 * Reading the key tables directly
 * --------------------------------------------------------------------- */

static Oid
KeyTableOid(const char *relname)
{
	Oid			nsp = get_namespace_oid(ATREST_SCHEMA, true);
	Oid			relid = OidIsValid(nsp) ? get_relname_relid(relname, nsp) : InvalidOid;

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension \"pg_atrest\" is not installed in this database"),
				 errhint("Run CREATE EXTENSION pg_atrest.")));
	return relid;
}

static void
ResolveKeyTables(void)
{
	if (!OidIsValid(classes_oid))
	{
		classes_oid = KeyTableOid("key_classes");
		dbkeys_oid = KeyTableOid("database_keys");
		datakeys_oid = KeyTableOid("data_keys");
	}
}

typedef void (*RowCallback) (HeapTuple tup, TupleDesc desc, void *arg);

/*
 * A registered snapshot to read the key tables with: a fresh one (which also
 * sees this transaction's own changes).  A parallel worker may not take a
 * snapshot of its own: it uses the query's, which the leader shares.  The
 * caller unregisters it.
 */
static Snapshot
KeyTableSnapshot(void)
{
	return RegisterSnapshot(IsInParallelMode() && ActiveSnapshotSet() ?
							GetActiveSnapshot() : GetLatestSnapshot());
}

/*
 * Call "cb" for every row of a key table visible to "snapshot", or to a
 * KeyTableSnapshot() of its own when "snapshot" is NULL.
 */
static void
ScanKeyTable(Oid relid, Snapshot snapshot, RowCallback cb, void *arg)
{
	Relation	rel = table_open(relid, AccessShareLock);
	Snapshot	snap = snapshot ? snapshot : KeyTableSnapshot();
	TableScanDesc scan = table_beginscan(rel, snap, 0, NULL);
	HeapTuple	tup;

	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
		cb(tup, RelationGetDescr(rel), arg);
	table_endscan(scan);
	if (snapshot == NULL)
		UnregisterSnapshot(snap);
	table_close(rel, AccessShareLock);
}

static Datum
GetCol(HeapTuple tup, TupleDesc desc, int attnum, bool *isnull)
{
	return heap_getattr(tup, attnum, desc, isnull);
}

static char *
GetTextCol(HeapTuple tup, TupleDesc desc, int attnum)
{
	bool		isnull;
	Datum		d = GetCol(tup, desc, attnum, &isnull);

	return isnull ? NULL : TextDatumGetCString(d);
}

typedef struct ClassScan
{
	List	   *classes;
} ClassScan;

static void
ClassRow(HeapTuple tup, TupleDesc desc, void *arg)
{
	ClassScan  *cs = (ClassScan *) arg;
	KeyClass   *kc = palloc0(sizeof(KeyClass));
	bool		isnull;
	char	   *name;

	kc->id = DatumGetInt32(GetCol(tup, desc, Anum_key_classes_id, &isnull));
	kc->active_version = (uint32) DatumGetInt32(GetCol(tup, desc, Anum_key_classes_active_version, &isnull));
	name = GetTextCol(tup, desc, Anum_key_classes_name);
	strlcpy(kc->name, name ? name : "", NAMEDATALEN);
	cs->classes = lappend(cs->classes, kc);
}

static List *
ReadKeyClasses(Snapshot snapshot)
{
	ClassScan	cs = {NIL};

	ResolveKeyTables();
	ScanKeyTable(classes_oid, snapshot, ClassRow, &cs);
	return cs.classes;
}

/* A key class's id by name; -1 if missing and missing_ok. */
int32
KeyClassLookup(const char *name, bool missing_ok)
{
	ListCell   *lc;

	foreach(lc, ReadKeyClasses(NULL))
	{
		KeyClass   *kc = lfirst(lc);

		if (strcmp(kc->name, name) == 0)
			return kc->id;
	}
	if (!missing_ok)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("key class \"%s\" does not exist", name),
				 errhint("Create it with atrest.create_key_class(); before restoring a dump, create the source's key classes.")));
	return -1;
}

/* A key class's name by id (palloc'd), or NULL. */
char *
KeyClassNameLookup(int32 class_id)
{
	ListCell   *lc;

	if (cache.loaded && !cache.stale)
	{
		for (int i = 0; i < cache.nclasses; i++)
			if (cache.classes[i].id == class_id)
				return pstrdup(cache.classes[i].name);
	}
	foreach(lc, ReadKeyClasses(NULL))
	{
		KeyClass   *kc = lfirst(lc);

		if (kc->id == class_id)
			return pstrdup(kc->name);
	}
	return NULL;
}

typedef struct RootScan
{
	bool		found;
	RootInfo   *info;
} RootScan;

static void
RootRow(HeapTuple tup, TupleDesc desc, void *arg)
{
	RootScan   *rs = (RootScan *) arg;
	bool		isnull;
	char	   *protector;
	Datum		d;

	if (!DatumGetBool(GetCol(tup, desc, Anum_database_keys_active, &isnull)) || isnull)
		return;
	rs->found = true;
	memcpy(&rs->info->id, DatumGetUUIDP(GetCol(tup, desc, Anum_database_keys_id, &isnull)),
		   sizeof(pg_uuid_t));
	protector = GetTextCol(tup, desc, Anum_database_keys_protector);
	rs->info->customer = (protector != NULL && strcmp(protector, "customer") == 0);
	rs->info->provider = GetTextCol(tup, desc, Anum_database_keys_provider);
	rs->info->key_uri = GetTextCol(tup, desc, Anum_database_keys_key_uri);
	rs->info->key_version = GetTextCol(tup, desc, Anum_database_keys_key_version);
	d = GetCol(tup, desc, Anum_database_keys_wrapped, &isnull);
	rs->info->wrapped = isnull ? NULL : DatumGetByteaPCopy(d);
}

/*
 * Read the active database key row, as "snapshot" sees it, into palloc'd
 * memory.
 */
static void
ReadRoot(RootInfo *info, Snapshot snapshot)
{
	RootScan	rs = {false, info};

	ResolveKeyTables();
	memset(info, 0, sizeof(RootInfo));
	ScanKeyTable(dbkeys_oid, snapshot, RootRow, &rs);
	if (!rs.found || info->wrapped == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("database has no active database key"),
				 errdetail("atrest.database_keys has no active row with a wrapped key.")));
}

/* ---------------------------------------------------------------------
 * Unwrapping
 * --------------------------------------------------------------------- */

static size_t
DbkAad(const pg_uuid_t *id, unsigned char *aad)
{
	memcpy(aad, "pg_atrest:dbk:v1", 16);
	memcpy(aad + 16, id->data, UUID_LEN);
	return 16 + UUID_LEN;
}

static size_t
DataKeyAad(const pg_uuid_t *dbk_id, int32 class_id, uint32 version, unsigned char *aad)
{
	memcpy(aad, "pg_atrest:dk:v1:", 16);
	aad[16] = (unsigned char) (class_id >> 24);
	aad[17] = (unsigned char) (class_id >> 16);
	aad[18] = (unsigned char) (class_id >> 8);
	aad[19] = (unsigned char) class_id;
	aad[20] = (unsigned char) (version >> 24);
	aad[21] = (unsigned char) (version >> 16);
	aad[22] = (unsigned char) (version >> 8);
	aad[23] = (unsigned char) version;
	memcpy(aad + 24, dbk_id->data, UUID_LEN);
	return 24 + UUID_LEN;
}

static void
RememberError(const char *msg)
{
	if (last_error)
		free(last_error);
	last_error = strdup(msg);
}

/* Raise the documented AT001 error for a provider failure. */
static void
ProviderFailed(const char *provider, const char *key_uri, const char *reason)
{
	RememberError(psprintf("%s: %s: %s", provider, key_uri, reason));
	ereport(ERROR,
			(errcode(ERRCODE_ATREST_KEY_UNAVAILABLE),
			 errmsg("customer-managed key \"%s\" of provider \"%s\" is unavailable",
					key_uri, provider),
			 errdetail("The provider reported: %s.", reason),
			 errhint("Restore access to the key; pg_atrest resumes on its own within atrest.key_cache_ttl seconds, or at once after atrest.recheck_keys().")));
}

/*
 * Seal the database key under the service key: the inner wrapping, which is
 * what a CMK provider then wraps again.
 */
static bytea *
ServiceWrap(const unsigned char *dbk, const pg_uuid_t *id)
{
	unsigned char aad[64];
	size_t		aadlen = DbkAad(id, aad);

	return WrapKey(ServiceKeyGet(false), dbk, aad, aadlen);
}

/* Reload the service key, remembering a failure for key_status. */
static const unsigned char *
ServiceKeyReload(void)
{
	const unsigned char *svc = NULL;

	PG_TRY();
	{
		svc = ServiceKeyGet(true);
	}
	PG_CATCH();
	{
		RememberError("the service key could not be loaded");
		PG_RE_THROW();
	}
	PG_END_TRY();
	return svc;
}

/*
 * Unwrap the database key described by "root" into "out" (a secure slot),
 * asking the provider (for a CMK) and re-reading the service key.
 * ereport(ERROR) on failure.
 */
static void
UnwrapDatabaseKey(const RootInfo *root, unsigned char *out)
{
	bytea	   *inner = root->wrapped;
	unsigned char aad[64];
	size_t		aadlen = DbkAad(&root->id, aad);
	const unsigned char *svc;

	if (root->customer)
	{
		const AtrestProvider *p = ProviderLookup(root->provider);
		unsigned char *buf;
		size_t		len;
		char	   *reason = NULL;

		if (!p->unwrap(root->key_uri, root->key_version,
					   (unsigned char *) VARDATA_ANY(root->wrapped),
					   VARSIZE_ANY_EXHDR(root->wrapped), &buf, &len, &reason))
		{
			ProviderFailed(root->provider, root->key_uri, reason ? reason : "unknown failure");
		}
		inner = (bytea *) palloc(VARHDRSZ + len);
		SET_VARSIZE(inner, VARHDRSZ + len);
		memcpy(VARDATA(inner), buf, len);
	}

	svc = ServiceKeyReload();
	if (!UnwrapKey(svc, inner, aad, aadlen, out))
	{
		RememberError("the database key does not unwrap under the service key");
		ereport(ERROR,
				(errcode(ERRCODE_ATREST_KEY_UNAVAILABLE),
				 errmsg("database key cannot be unwrapped"),
				 errdetail("The service key is not the one this database's key was wrapped with, or the wrapped key was altered."),
				 errhint("Check atrest.service_key_command and atrest.service_key_file.")));
	}
	last_unwrap = GetCurrentTimestamp();
}

/* ---------------------------------------------------------------------
 * The cache
 * --------------------------------------------------------------------- */

static void
FreeDataKey(DataKey *dk)
{
	SecureKeyFree(dk->key);
	dk->key = NULL;
}

/* Drop every key this backend holds, wiping it. */
static void
KeyCacheDrop(void)
{
	if (cache.datakeys)
	{
		HASH_SEQ_STATUS status;
		DataKey    *dk;

		hash_seq_init(&status, cache.datakeys);
		while ((dk = hash_seq_search(&status)) != NULL)
			FreeDataKey(dk);
		hash_destroy(cache.datakeys);
	}
	SecureKeyFree(cache.dbk);
	ServiceKeyDrop();
	if (cache.cxt)
		MemoryContextDelete(cache.cxt);
	memset(&cache, 0, sizeof(cache));
	classes_oid = dbkeys_oid = datakeys_oid = InvalidOid;
}

typedef struct DataKeyScan
{
	const unsigned char *dbk;
	const pg_uuid_t *dbk_id;
	HTAB	   *hash;
} DataKeyScan;

static void
DataKeyRow(HeapTuple tup, TupleDesc desc, void *arg)
{
	DataKeyScan *ds = (DataKeyScan *) arg;
	bool		isnull;
	int32		class_id = DatumGetInt32(GetCol(tup, desc, Anum_data_keys_class_id, &isnull));
	uint32		version = (uint32) DatumGetInt32(GetCol(tup, desc, Anum_data_keys_version, &isnull));
	pg_uuid_t  *dbk_id = DatumGetUUIDP(GetCol(tup, desc, Anum_data_keys_database_key_id, &isnull));
	bytea	   *wrapped = DatumGetByteaPP(GetCol(tup, desc, Anum_data_keys_wrapped, &isnull));
	unsigned char aad[64];
	size_t		aadlen;
	uint64		hk = ((uint64) (uint32) class_id << 32) | version;
	DataKey    *dk;
	bool		found;

	if (memcmp(dbk_id->data, ds->dbk_id->data, UUID_LEN) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("data key version %u of key class %d is wrapped under a retired database key",
						version, class_id)));

	dk = hash_search(ds->hash, &hk, HASH_ENTER, &found);
	dk->class_id = class_id;
	dk->version = version;
	dk->key = SecureKeyAlloc();
	aadlen = DataKeyAad(ds->dbk_id, class_id, version, aad);
	if (!UnwrapKey(ds->dbk, wrapped, aad, aadlen, dk->key))
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("data key version %u of key class %d is corrupted", version, class_id),
				 errdetail("Its wrapped form in atrest.data_keys does not authenticate under the database key.")));
}

/*
 * Load the whole hierarchy of this database into the cache.  All three key
 * tables are read with one snapshot: a rotate_database_key() that commits
 * between two scans would otherwise give us the old database key and data
 * keys already re-wrapped under the new one.
 */
static void
KeyCacheLoad(void)
{
	MemoryContext old;
	List	   *classes;
	ListCell   *lc;
	HASHCTL		ctl;
	DataKeyScan ds;
	int			i = 0;
	Snapshot	snap = KeyTableSnapshot();

	cache.cxt = AllocSetContextCreate(TopMemoryContext, "pg_atrest key cache",
									  ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(cache.cxt);
	ReadRoot(&cache.root, snap);
	classes = ReadKeyClasses(snap);
	cache.nclasses = list_length(classes);
	cache.classes = palloc0(sizeof(KeyClass) * Max(cache.nclasses, 1));
	foreach(lc, classes)
		cache.classes[i++] = *(KeyClass *) lfirst(lc);
	MemoryContextSwitchTo(old);

	cache.dbk = SecureKeyAlloc();
	UnwrapDatabaseKey(&cache.root, cache.dbk);

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(uint64);
	ctl.entrysize = sizeof(DataKey);
	ctl.hcxt = cache.cxt;
	cache.datakeys = hash_create("pg_atrest data keys", 32, &ctl,
								 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	ds.dbk = cache.dbk;
	ds.dbk_id = &cache.root.id;
	ds.hash = cache.datakeys;
	ScanKeyTable(datakeys_oid, snap, DataKeyRow, &ds);
	UnregisterSnapshot(snap);

	cache.verified_at = GetCurrentTimestamp();
	cache.loaded = true;
}

/*
 * Past the TTL, ask the root-key provider again.  If the answer is the key
 * we hold, carry on; if the root is unusable, drop everything and fail.
 */
static void
KeyCacheVerifyRoot(void)
{
	unsigned char *check = SecureKeyAlloc();
	bool		same;

	PG_TRY();
	{
		UnwrapDatabaseKey(&cache.root, check);
	}
	PG_CATCH();
	{
		SecureKeyFree(check);
		KeyCacheDrop();
		PG_RE_THROW();
	}
	PG_END_TRY();
	same = CRYPTO_memcmp(check, cache.dbk, ATREST_KEY_LEN) == 0;
	SecureKeyFree(check);
	if (same)
		cache.verified_at = GetCurrentTimestamp();
	else
		cache.stale = true;
}

/* Make sure the cache is loaded, current and within its TTL. */
static void
KeyCacheEnsure(void)
{
	if (cache.stale)
		KeyCacheDrop();
	if (cache.loaded &&
		TimestampDifferenceExceeds(cache.verified_at, GetCurrentTimestamp(),
								   atrest_key_cache_ttl * 1000))
	{
		KeyCacheVerifyRoot();
		if (cache.stale)
			KeyCacheDrop();
	}
	if (!cache.loaded)
	{
		PG_TRY();
		{
			KeyCacheLoad();
		}
		PG_CATCH();
		{
			KeyCacheDrop();
			PG_RE_THROW();
		}
		PG_END_TRY();
	}
}

static KeyClass *
CachedClass(int32 class_id)
{
	for (int i = 0; i < cache.nclasses; i++)
		if (cache.classes[i].id == class_id)
			return &cache.classes[i];
	return NULL;
}

static DataKey *
CachedDataKey(int32 class_id, uint32 version)
{
	uint64		hk = ((uint64) (uint32) class_id << 32) | version;

	return (DataKey *) hash_search(cache.datakeys, &hk, HASH_FIND, NULL);
}

/* The data key new values of "class_id" are sealed with. */
DataKey *
KeyringActiveDataKey(int32 class_id)
{
	KeyClass   *kc;
	DataKey    *dk;

	KeyCacheEnsure();
	kc = CachedClass(class_id);
	if (kc == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("key class %d does not exist", class_id)));
	dk = CachedDataKey(class_id, kc->active_version);
	if (dk == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("key class \"%s\" has no data key version %u", kc->name, kc->active_version)));
	return dk;
}

uint32
KeyringActiveVersion(int32 class_id)
{
	return KeyringActiveDataKey(class_id)->version;
}

/*
 * The data key a stored value names, or NULL if there is none.  A miss
 * reloads the cache once, in case a key was added since it was loaded.
 */
DataKey *
KeyringFindDataKey(int32 class_id, uint32 version)
{
	DataKey    *dk;

	KeyCacheEnsure();
	dk = CachedDataKey(class_id, version);
	if (dk == NULL)
	{
		KeyCacheDrop();
		KeyCacheEnsure();
		dk = CachedDataKey(class_id, version);
	}
	return dk;
}

/* ---------------------------------------------------------------------
 * Changing keys (SQL-callable; EXECUTE is not granted to PUBLIC)
 * --------------------------------------------------------------------- */

static void
RandomKey(unsigned char *key)
{
	if (RAND_bytes(key, ATREST_KEY_LEN) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate a random key")));
}

static void
RandomUuid(pg_uuid_t *id)
{
	if (RAND_bytes(id->data, UUID_LEN) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate a random key id")));
	id->data[6] = (id->data[6] & 0x0f) | 0x40;
	id->data[8] = (id->data[8] & 0x3f) | 0x80;
}

static void
SpiExec(const char *sql, int nargs, Oid *types, Datum *values, const char *nulls, int expect)
{
	int			rc = SPI_execute_with_args(sql, nargs, types, values, nulls, false, 0);

	if (rc != expect)
		elog(ERROR, "pg_atrest: SPI failed (%d) for: %s", rc, sql);
}

/* Serialise key changes; readers keep going. */
static void
LockKeyTables(void)
{
	ResolveKeyTables();
	LockRelationOid(dbkeys_oid, ExclusiveLock);
	/* the lock may have let invalidations in: start from what is committed */
	KeyCacheDrop();
}

/* Append a row to atrest.key_events. */
static void
LogKeyEvent(const char *operation, const char *key_class, int32 key_version,
			const char *provider, const char *key_uri, const char *kver,
			const char *outcome, const char *detail)
{
	Oid			types[8] = {TEXTOID, TEXTOID, INT4OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID};
	Datum		values[8];
	char		nulls[8];
	const char *texts[8] = {operation, key_class, NULL, provider, key_uri, kver, outcome, detail};

	for (int i = 0; i < 8; i++)
	{
		nulls[i] = ' ';
		if (i == 2)
		{
			values[i] = Int32GetDatum(key_version);
			nulls[i] = key_version > 0 ? ' ' : 'n';
		}
		else if (texts[i] != NULL)
			values[i] = CStringGetTextDatum(texts[i]);
		else
		{
			values[i] = (Datum) 0;
			nulls[i] = 'n';
		}
	}
	SpiExec("INSERT INTO atrest.key_events "
			"(operation, key_class, key_version, provider, key_uri, provider_key_version, outcome, detail) "
			"VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
			8, types, values, nulls, SPI_OK_INSERT);
}

static void
InsertDataKey(const unsigned char *dbk, const pg_uuid_t *dbk_id, int32 class_id, uint32 version)
{
	unsigned char *key = SecureKeyAlloc();
	unsigned char aad[64];
	size_t		aadlen = DataKeyAad(dbk_id, class_id, version, aad);
	bytea	   *volatile wrapped = NULL;
	Oid			types[4] = {INT4OID, INT4OID, UUIDOID, BYTEAOID};
	Datum		values[4];

	PG_TRY();
	{
		RandomKey(key);
		wrapped = WrapKey(dbk, key, aad, aadlen);
	}
	PG_FINALLY();
	{
		SecureKeyFree(key);
	}
	PG_END_TRY();

	values[0] = Int32GetDatum(class_id);
	values[1] = Int32GetDatum((int32) version);
	values[2] = UUIDPGetDatum(dbk_id);
	values[3] = PointerGetDatum(wrapped);
	SpiExec("INSERT INTO atrest.data_keys (class_id, version, database_key_id, wrapped) "
			"VALUES ($1, $2, $3, $4)", 4, types, values, NULL, SPI_OK_INSERT);
	SpiExec("UPDATE atrest.key_classes SET active_version = $2 WHERE id = $1",
			2, types, values, NULL, SPI_OK_UPDATE);
}

/*
 * atrest._bootstrap(): run once by CREATE EXTENSION: a database key under the
 * service key and a first data key for every key class.
 */
PG_FUNCTION_INFO_V1(atrest_bootstrap);
Datum
atrest_bootstrap(PG_FUNCTION_ARGS)
{
	unsigned char *dbk = SecureKeyAlloc();
	pg_uuid_t  *id = palloc(sizeof(pg_uuid_t));

	SPI_connect();
	PG_TRY();
	{
		List	   *classes = ReadKeyClasses(NULL);
		ListCell   *lc;
		Oid			types[2] = {UUIDOID, BYTEAOID};
		Datum		values[2];

		RandomUuid(id);
		RandomKey(dbk);
		values[0] = UUIDPGetDatum(id);
		values[1] = PointerGetDatum(ServiceWrap(dbk, id));
		SpiExec("INSERT INTO atrest.database_keys (id, active, protector, wrapped) "
				"VALUES ($1, true, 'service', $2)", 2, types, values, NULL, SPI_OK_INSERT);
		foreach(lc, classes)
			InsertDataKey(dbk, id, ((KeyClass *) lfirst(lc))->id, 1);
		LogKeyEvent("create_database_key", NULL, 0, "service", NULL, NULL, "ok", NULL);
	}
	PG_FINALLY();
	{
		SecureKeyFree(dbk);
	}
	PG_END_TRY();
	SPI_finish();
	PG_RETURN_UUID_P(id);
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
 * atrest.create_key_class(name text) RETURNS integer: a new key class with
 * its first data key.
 */
PG_FUNCTION_INFO_V1(atrest_create_key_class);
Datum
atrest_create_key_class(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	int32		class_id;
	bool		isnull;
	Oid			types[1] = {TEXTOID};
	Datum		values[1];

	if (!ValidClassName(name))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_NAME),
				 errmsg("invalid key class name \"%s\"", name),
				 errdetail("A key class name has 1 to 63 characters: lower-case letters, digits and underscores, not starting with a digit.")));
	SPI_connect();
	LockKeyTables();
	KeyCacheEnsure();
	if (KeyClassLookup(name, true) >= 0)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("key class \"%s\" already exists", name)));
	values[0] = PointerGetDatum(PG_GETARG_TEXT_PP(0));
	SpiExec("INSERT INTO atrest.key_classes (id, name) "
			"VALUES (nextval('atrest.key_classes_id_seq'), $1) RETURNING id",
			1, types, values, NULL, SPI_OK_INSERT_RETURNING);
	class_id = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	InsertDataKey(cache.dbk, &cache.root.id, class_id, 1);
	LogKeyEvent("create_key_class", name, 1, NULL, NULL, NULL, "ok", NULL);
	SPI_finish();
	PG_RETURN_INT32(class_id);
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

	InitMaterializedSRF(fcinfo, 0);
	SPI_connect();
	LockKeyTables();
	if (only)
		only_id = KeyClassLookup(only, false);
	KeyCacheEnsure();
	for (int i = 0; i < cache.nclasses; i++)
	{
		KeyClass   *kc = &cache.classes[i];
		uint32		next = 0;
		Datum		values[2];
		bool		nulls[2] = {false, false};
		HASH_SEQ_STATUS status;
		DataKey    *dk;

		if (only && kc->id != only_id)
			continue;
		hash_seq_init(&status, cache.datakeys);
		while ((dk = hash_seq_search(&status)) != NULL)
			if (dk->class_id == kc->id && dk->version > next)
				next = dk->version;
		next++;
		InsertDataKey(cache.dbk, &cache.root.id, kc->id, next);
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
		ProviderFailed(provider, key_uri, reason ? reason : "wrap failed");
	if (!p->unwrap(key_uri, *key_version, outer, outerlen, &back, &backlen, &reason))
		ProviderFailed(provider, key_uri, reason ? reason : "unwrap failed");
	if (backlen != len || memcmp(back, in, len) != 0)
		ProviderFailed(provider, key_uri, "the key did not give back what it wrapped");

	result = (bytea *) palloc(VARHDRSZ + outerlen);
	SET_VARSIZE(result, VARHDRSZ + outerlen);
	memcpy(VARDATA(result), outer, outerlen);
	return result;
}

/*
 * Write a new wrapped form for the active database key (same id): under the
 * service key alone (provider NULL), or additionally under a CMK.  Returns
 * the provider's key version for a CMK.  The proof round trip happens before
 * anything is written; ereport(ERROR) leaves the state unchanged.
 */
static bytea *
ProtectDatabaseKey(const unsigned char *dbk, const pg_uuid_t *id,
				   const char *provider, const char *key_uri, char **key_version)
{
	bytea	   *inner = ServiceWrap(dbk, id);

	if (provider == NULL)
		return inner;
	return ProviderRoundTrip(provider, key_uri, (unsigned char *) VARDATA(inner),
							 VARSIZE(inner) - VARHDRSZ, key_version);
}

static void
UpdateActiveRoot(const char *protector, const char *provider, const char *key_uri,
				 const char *key_version, bytea *wrapped)
{
	Oid			types[5] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID, BYTEAOID};
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	const char *texts[4] = {protector, provider, key_uri, key_version};

	for (int i = 0; i < 4; i++)
	{
		if (texts[i])
			values[i] = CStringGetTextDatum(texts[i]);
		else
			nulls[i] = 'n';
	}
	values[4] = PointerGetDatum(wrapped);
	SpiExec("UPDATE atrest.database_keys SET protector = $1, provider = $2, key_uri = $3, "
			"key_version = $4, wrapped = $5, protected_since = now() WHERE active",
			5, types, values, nulls, SPI_OK_UPDATE);
}

/*
 * atrest.rotate_database_key() RETURNS uuid: a new database key under the
 * same protector; every data key is re-wrapped, no value is touched.
 */
PG_FUNCTION_INFO_V1(atrest_rotate_database_key);
Datum
atrest_rotate_database_key(PG_FUNCTION_ARGS)
{
	unsigned char *dbk = SecureKeyAlloc();
	pg_uuid_t  *id = palloc(sizeof(pg_uuid_t));

	SPI_connect();
	PG_TRY();
	{
		HASH_SEQ_STATUS status;
		DataKey    *dk;
		char	   *kver = NULL;
		bytea	   *wrapped;
		Oid			types[7] = {UUIDOID, BYTEAOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, UUIDOID};
		Datum		values[7];
		char		nulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};
		RootInfo   *old;

		LockKeyTables();
		KeyCacheEnsure();
		old = &cache.root;
		RandomUuid(id);
		RandomKey(dbk);
		wrapped = ProtectDatabaseKey(dbk, id, old->customer ? old->provider : NULL,
									 old->key_uri, &kver);
		values[0] = UUIDPGetDatum(id);
		values[1] = PointerGetDatum(wrapped);
		values[2] = CStringGetTextDatum(old->customer ? "customer" : "service");
		if (old->customer)
		{
			values[3] = CStringGetTextDatum(old->provider);
			values[4] = CStringGetTextDatum(old->key_uri);
			values[5] = CStringGetTextDatum(kver);
		}
		else
			nulls[3] = nulls[4] = nulls[5] = 'n';
		values[6] = UUIDPGetDatum(&old->id);
		SpiExec("UPDATE atrest.database_keys SET active = false, retired_at = now(), wrapped = NULL "
				"WHERE id = $7", 7, types, values, nulls, SPI_OK_UPDATE);
		SpiExec("INSERT INTO atrest.database_keys (id, active, protector, provider, key_uri, key_version, wrapped, protected_since) "
				"SELECT $1, true, $3, $4, $5, $6, $2, protected_since FROM atrest.database_keys WHERE id = $7",
				7, types, values, nulls, SPI_OK_INSERT);

		hash_seq_init(&status, cache.datakeys);
		while ((dk = hash_seq_search(&status)) != NULL)
		{
			unsigned char aad[64];
			size_t		aadlen = DataKeyAad(id, dk->class_id, dk->version, aad);
			Oid			dtypes[4] = {INT4OID, INT4OID, UUIDOID, BYTEAOID};
			Datum		dvalues[4];

			dvalues[0] = Int32GetDatum(dk->class_id);
			dvalues[1] = Int32GetDatum((int32) dk->version);
			dvalues[2] = UUIDPGetDatum(id);
			dvalues[3] = PointerGetDatum(WrapKey(dbk, dk->key, aad, aadlen));
			SpiExec("UPDATE atrest.data_keys SET database_key_id = $3, wrapped = $4 "
					"WHERE class_id = $1 AND version = $2", 4, dtypes, dvalues, NULL, SPI_OK_UPDATE);
		}
		LogKeyEvent("rotate_database_key", NULL, 0,
					old->customer ? old->provider : "service",
					old->customer ? old->key_uri : NULL, kver, "ok",
					psprintf("new database key %s",
							 DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(id)))));
	}
	PG_FINALLY();
	{
		SecureKeyFree(dbk);
	}
	PG_END_TRY();
	SPI_finish();
	PG_RETURN_UUID_P(id);
}

/*
 * atrest.enable_cmk(provider text, key_uri text): protect the database key
 * under a customer-managed key as well as the service key.
 */
PG_FUNCTION_INFO_V1(atrest_enable_cmk);
Datum
atrest_enable_cmk(PG_FUNCTION_ARGS)
{
	char	   *provider = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *key_uri = text_to_cstring(PG_GETARG_TEXT_PP(1));
	char	   *kver = NULL;
	bytea	   *wrapped;
	const char *from;

	(void) ProviderLookup(provider);
	SPI_connect();
	LockKeyTables();
	KeyCacheEnsure();
	from = cache.root.customer ? psprintf("customer %s %s", cache.root.provider, cache.root.key_uri) : "service";
	wrapped = ProtectDatabaseKey(cache.dbk, &cache.root.id, provider, key_uri, &kver);
	UpdateActiveRoot("customer", provider, key_uri, kver, wrapped);
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

	SPI_connect();
	LockKeyTables();
	KeyCacheEnsure();			/* a fresh load: it just asked the provider */
	if (!cache.root.customer)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("database key is not protected by a customer-managed key")));
	provider = pstrdup(cache.root.provider);
	key_uri = pstrdup(cache.root.key_uri);
	UpdateActiveRoot("service", NULL, NULL, NULL, ServiceWrap(cache.dbk, &cache.root.id));
	LogKeyEvent("disable_cmk", NULL, 0, provider, key_uri, NULL, "ok",
				"database key re-wrapped under the service key alone");
	SPI_finish();
	PG_RETURN_VOID();
}

/*
 * atrest.rewrap() RETURNS boolean: re-wrap under the CMK's current version
 * if it has changed.  Does nothing (false) otherwise, or without a CMK.
 */
PG_FUNCTION_INFO_V1(atrest_rewrap);
Datum
atrest_rewrap(PG_FUNCTION_ARGS)
{
	const AtrestProvider *p;
	char	   *current = NULL;
	char	   *reason = NULL;
	char	   *kver = NULL;
	bool		changed = false;

	SPI_connect();
	LockKeyTables();
	KeyCacheEnsure();
	if (cache.root.customer)
	{
		RootInfo   *root = &cache.root;

		p = ProviderLookup(root->provider);
		if (!p->current_version(root->key_uri, &current, &reason))
		{
			ProviderFailed(root->provider, root->key_uri, reason ? reason : "version lookup failed");
		}
		if (root->key_version == NULL || strcmp(current, root->key_version) != 0)
		{
			bytea	   *wrapped = ProtectDatabaseKey(cache.dbk, &root->id, root->provider,
													 root->key_uri, &kver);

			UpdateActiveRoot("customer", root->provider, root->key_uri, kver, wrapped);
			LogKeyEvent("rewrap", NULL, 0, root->provider, root->key_uri, kver, "ok",
						psprintf("re-wrapped from key version %s",
								 root->key_version ? root->key_version : "(unknown)"));
			changed = true;
		}
	}
	SPI_finish();
	PG_RETURN_BOOL(changed);
}

/*
 * atrest.recheck_keys(): every backend drops its key cache and asks the
 * root-key provider again on its next use.
 */
PG_FUNCTION_INFO_V1(atrest_recheck_keys);
Datum
atrest_recheck_keys(PG_FUNCTION_ARGS)
{
	SPI_connect();
	SpiExec("UPDATE atrest.database_keys SET recheck_at = now() WHERE active",
			0, NULL, NULL, NULL, SPI_OK_UPDATE);
	LogKeyEvent("recheck_keys", NULL, 0, NULL, NULL, NULL, "ok", NULL);
	SPI_finish();
	KeyCacheDrop();
	AtrestPkcs11Provider.reset();
	AtrestCommandProvider.reset();
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
	char	   *provider = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *key_uri = text_to_cstring(PG_GETARG_TEXT_PP(1));
	unsigned char probe[WRAPPED_KEY_LEN];
	char	   *kver = NULL;

	if (RAND_bytes(probe, sizeof(probe)) != 1)
		elog(ERROR, "pg_atrest: RAND_bytes failed");
	(void) ProviderRoundTrip(provider, key_uri, probe, sizeof(probe), &kver);
	PG_RETURN_TEXT_P(cstring_to_text(kver));
}

/*
 * atrest._session_key_state(): this backend's view, for atrest.key_status.
 */
PG_FUNCTION_INFO_V1(atrest_session_key_state);
Datum
atrest_session_key_state(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[5];
	bool		nulls[5] = {false, false, false, false, false};

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "pg_atrest: return type must be a row type");
	values[0] = BoolGetDatum(cache.loaded && !cache.stale);
	values[1] = TimestampTzGetDatum(last_unwrap);
	nulls[1] = (last_unwrap == 0);
	values[2] = last_error ? CStringGetTextDatum(last_error) : (Datum) 0;
	nulls[2] = (last_error == NULL);
	values[3] = BoolGetDatum(SecureMemLocked());
	values[4] = Int32GetDatum(SecureKeysInUse());
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
}

/* atrest._service_key_source() RETURNS text */
PG_FUNCTION_INFO_V1(atrest_service_key_source);
Datum
atrest_service_key_source(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(ServiceKeySource()));
}

/* atrest._active_key_version(class_id integer) RETURNS integer */
PG_FUNCTION_INFO_V1(atrest_active_key_version);
Datum
atrest_active_key_version(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32((int32) KeyringActiveVersion(PG_GETARG_INT32(0)));
}
