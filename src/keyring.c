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
 * Service keys are versioned (provider_service.c): the active row records in
 * service_key_id (added by 1.1; absent in a 1.0 database, whose keys are all
 * under id 1) the service key its inner wrapping used, and unwrapping asks
 * for exactly that one.  New wraps use the newest service key; rewrap()
 * moves the inner wrapping to it, keeping the CMK layer (unwrap both, wrap
 * under the newest service key, wrap that under the CMK again).
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

#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/xact.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/transam.h"
#include "catalog/namespace.h"
#include "catalog/pg_am.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/bufmgr.h"
#include "storage/lmgr.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"
#if PG_VERSION_NUM >= 160000
#include "varatt.h"			/* VARDATA and friends moved out of postgres.h */
#endif

#include "envelope.h"
#include "keyring.h"
#include "keyscrub.h"
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
	uint8		compression;	/* ENVELOPE_FLAG_LZ4, _ZSTD or 0 (none) (1.1) */
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
	int32		service_key_id; /* of the inner wrapping; 1 in a 1.0 database */
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
	/* superseded wrapped keys: rewrite the key tables after commit (keyscrub.c) */
	if (!TRIGGER_FIRED_BY_INSERT(trigdata->tg_event) &&
		(strcmp(RelationGetRelationName(trigdata->tg_relation), "database_keys") == 0 ||
		 strcmp(RelationGetRelationName(trigdata->tg_relation), "data_keys") == 0))
		KeyScrubRequest(trigdata->tg_relation->rd_rel->relowner);
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
 * snapshot of its own: it uses the query's, which the leader shares.
 *
 * A walsender decoding a transaction for logical replication calls our output
 * functions with a historic snapshot active, which GetLatestSnapshot() would
 * hand back (or trip an assertion): it shows the key tables as of the decoded
 * change, and only as far as vacuum has left their old rows.  There we take a
 * current snapshot directly: data keys never change once written, only their
 * wrapping does, so today's key tables open every value any WAL record holds.
 * The caller unregisters it.
 */
static Snapshot
KeyTableSnapshot(void)
{
	if (HistoricSnapshotActive())
	{
		static SnapshotData current = {SNAPSHOT_MVCC};

		return RegisterSnapshot(GetSnapshotData(&current));
	}
	return RegisterSnapshot(IsInParallelMode() && ActiveSnapshotSet() ?
							GetActiveSnapshot() : GetLatestSnapshot());
}

/*
 * Call "cb" for every row of a key table visible to "snapshot", or to a
 * KeyTableSnapshot() of its own when "snapshot" is NULL.
 *
 * A systable scan, not heap_getnext(): while a walsender decodes a
 * transaction that has not committed yet (streaming = on, two_phase = on),
 * PostgreSQL allows only those, and they raise the error that tells the
 * decoder the transaction has aborted meanwhile.
 */
static void
ScanKeyTable(Oid relid, Snapshot snapshot, RowCallback cb, void *arg)
{
	Relation	rel = table_open(relid, AccessShareLock);
	Snapshot	snap = snapshot ? snapshot : KeyTableSnapshot();
	SysScanDesc scan = systable_beginscan(rel, InvalidOid, false, snap, 0, NULL);
	HeapTuple	tup;

	while ((tup = systable_getnext(scan)) != NULL)
		cb(tup, RelationGetDescr(rel), arg);
	systable_endscan(scan);
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
	int			compression_attnum;	/* 0: not looked up yet; -1: no such column */
} ClassScan;

/*
 * The attribute number of key_classes.compression, added by 1.1 at the end
 * of the table; -1 in a database still at 1.0, whose classes all use LZ4.
 */
static int
KeyClassesCompressionAttnum(TupleDesc desc)
{
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (!att->attisdropped && att->atttypid == TEXTOID &&
			strcmp(NameStr(att->attname), "compression") == 0)
			return i + 1;
	}
	return -1;
}

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
	if (cs->compression_attnum == 0)
		cs->compression_attnum = KeyClassesCompressionAttnum(desc);
	kc->compression = ENVELOPE_FLAG_LZ4;
	if (cs->compression_attnum > 0)
	{
		char	   *compression = GetTextCol(tup, desc, cs->compression_attnum);

		/* the column's CHECK admits only the names EnvelopeCompressionByName takes */
		if (compression)
			kc->compression = EnvelopeCompressionByName(compression);
	}
	cs->classes = lappend(cs->classes, kc);
}

static List *
ReadKeyClasses(Snapshot snapshot)
{
	ClassScan	cs = {NIL, 0};

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
	int			svc_attnum;		/* 0: not looked up yet; -1: no such column */
} RootScan;

/*
 * The attribute number of database_keys.service_key_id, added by 1.1 at the
 * end of the table; -1 in a database still at 1.0, whose database keys are
 * all wrapped under service key id 1.
 */
static int
ServiceKeyIdAttnum(TupleDesc desc)
{
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (!att->attisdropped && att->atttypid == INT4OID &&
			strcmp(NameStr(att->attname), "service_key_id") == 0)
			return i + 1;
	}
	return -1;
}

/* Whether atrest.database_keys has service_key_id (1.1), for writers. */
static bool
HasServiceKeyIdColumn(void)
{
	ResolveKeyTables();
	return get_attnum(dbkeys_oid, "service_key_id") != InvalidAttrNumber;
}

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
	if (rs->svc_attnum == 0)
		rs->svc_attnum = ServiceKeyIdAttnum(desc);
	rs->info->service_key_id = 1;
	if (rs->svc_attnum > 0)
	{
		d = GetCol(tup, desc, rs->svc_attnum, &isnull);
		if (!isnull)
			rs->info->service_key_id = DatumGetInt32(d);
	}
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
	RootScan	rs = {false, info, 0};

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

/*
 * Raise the documented AT001 error for a provider failure.  Whoever reads an
 * encrypted column may trigger it, so the client learns only which provider
 * failed: the key URI (token and object labels, vault names) and the
 * provider's reason (paths of the module and PIN file, dlerror text, the
 * tokens present) go to the server log, and to key_status for superusers.
 */
static void
ProviderFailed(const char *provider, const char *key_uri, const char *reason)
{
	RememberError(psprintf("%s: %s: %s", provider, key_uri, reason));
	ereport(ERROR,
			(errcode(ERRCODE_ATREST_KEY_UNAVAILABLE),
			 errmsg("customer-managed key of provider \"%s\" is unavailable", provider),
			 errdetail("The key and the provider's reason are in the server log."),
			 errdetail_log("Key \"%s\": the provider reported: %s.", key_uri, reason),
			 errhint("Restore access to the key; pg_atrest resumes on its own within atrest.key_cache_ttl seconds, or at once after atrest.recheck_keys().")));
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
	unsigned char aad[64];
	size_t		aadlen = DbkAad(id, aad);
	const unsigned char *svc;

	svc = ServiceKeyGet(HasServiceKeyIdColumn() ? 0 : 1, false, false, svc_id);
	return WrapKey(svc, dbk, aad, aadlen);
}

/*
 * Reload the service key source and return key "svc_id", remembering a
 * failure for key_status.
 */
static const unsigned char *
ServiceKeyReload(int32 svc_id)
{
	const unsigned char *svc = NULL;

	PG_TRY();
	{
		svc = ServiceKeyGet(svc_id, true, false, NULL);
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

	svc = ServiceKeyReload(root->service_key_id);
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
	{
		/* callers on an error path switch back to their own context first */
		Assert(CurrentMemoryContext != cache.cxt);
		MemoryContextDelete(cache.cxt);
	}
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
	Datum		wrapped_datum = GetCol(tup, desc, Anum_data_keys_wrapped, &isnull);
	bytea	   *wrapped;
	unsigned char aad[64];
	size_t		aadlen;
	uint64		hk = ((uint64) (uint32) class_id << 32) | version;
	DataKey    *dk;
	bool		found;

	if (isnull)
	{
		/* retired by atrest.retire_data_key(): remembered, never usable */
		dk = hash_search(ds->hash, &hk, HASH_ENTER, &found);
		dk->class_id = class_id;
		dk->version = version;
		dk->key = NULL;
		return;
	}
	wrapped = DatumGetByteaPP(wrapped_datum);

	if (memcmp(dbk_id->data, ds->dbk_id->data, UUID_LEN) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("data key version %u of key class %d is wrapped under a retired database key",
						version, class_id)));

	dk = hash_search(ds->hash, &hk, HASH_ENTER, &found);
	if (!found)
	{
		/* KeyCacheDrop frees every entry's slot: never leave one unset */
		dk->key = NULL;
		dk->class_id = class_id;
		dk->version = version;
		dk->key = SecureKeyAlloc();
	}
	aadlen = DataKeyAad(ds->dbk_id, class_id, version, aad);
	if (!UnwrapKey(ds->dbk, wrapped, aad, aadlen, dk->key))
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("data key version %u of key class %d is corrupted", version, class_id),
				 errdetail("Its wrapped form in atrest.data_keys does not authenticate under the database key.")));
}

/* Copy a palloc'd RootInfo into "cxt". */
static void
CopyRootInfo(RootInfo *dst, const RootInfo *src, MemoryContext cxt)
{
	dst->id = src->id;
	dst->customer = src->customer;
	dst->provider = src->provider ? MemoryContextStrdup(cxt, src->provider) : NULL;
	dst->key_uri = src->key_uri ? MemoryContextStrdup(cxt, src->key_uri) : NULL;
	dst->key_version = src->key_version ? MemoryContextStrdup(cxt, src->key_version) : NULL;
	dst->service_key_id = src->service_key_id;
	dst->wrapped = MemoryContextAlloc(cxt, VARSIZE(src->wrapped));
	memcpy(dst->wrapped, src->wrapped, VARSIZE(src->wrapped));
}

/*
 * Load the whole hierarchy of this database into the cache.  All three key
 * tables are read with one snapshot: a rotate_database_key() that commits
 * between two scans would otherwise give us the old database key and data
 * keys already re-wrapped under the new one.
 *
 * Any step may ERROR (a lock or statement timeout or a cancel while opening
 * a key table, a provider failure, a corrupted row); KeyCacheEnsure() then
 * drops what was built.  The rows are read in a scratch context, left again
 * on the way out whatever happens, and everything else runs in the caller's
 * context: the cleanup never deletes a current context, without relying on
 * errfinish() having switched to ErrorContext.
 */
static void
KeyCacheLoad(void)
{
	MemoryContext caller = CurrentMemoryContext;
	MemoryContext scratch;
	RootInfo	root;
	List	   *classes;
	ListCell   *lc;
	HASHCTL		ctl;
	DataKeyScan ds;
	int			i = 0;
	Snapshot	snap = KeyTableSnapshot();

	cache.cxt = AllocSetContextCreate(TopMemoryContext, "pg_atrest key cache",
									  ALLOCSET_SMALL_SIZES);
	/* the rows as read; freed at the end, or with cache.cxt on ERROR */
	scratch = AllocSetContextCreate(cache.cxt, "pg_atrest key cache load",
									ALLOCSET_DEFAULT_SIZES);
	MemoryContextSwitchTo(scratch);
	PG_TRY();
	{
		ReadRoot(&root, snap);
		classes = ReadKeyClasses(snap);
	}
	PG_FINALLY();
	{
		MemoryContextSwitchTo(caller);
	}
	PG_END_TRY();

	CopyRootInfo(&cache.root, &root, cache.cxt);
	cache.nclasses = list_length(classes);
	cache.classes = MemoryContextAllocZero(cache.cxt,
										   sizeof(KeyClass) * Max(cache.nclasses, 1));
	foreach(lc, classes)
		cache.classes[i++] = *(KeyClass *) lfirst(lc);

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
	MemoryContextDelete(scratch);

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
	MemoryContext caller = CurrentMemoryContext;
	unsigned char *check = SecureKeyAlloc();
	bool		same;

	PG_TRY();
	{
		UnwrapDatabaseKey(&cache.root, check);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(caller);
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
		MemoryContext caller = CurrentMemoryContext;

		PG_TRY();
		{
			KeyCacheLoad();
		}
		PG_CATCH();
		{
			/*
			 * Back to the caller's context before KeyCacheDrop() deletes the
			 * cache's, then leave the cache "not loaded", every slot wiped.
			 */
			MemoryContextSwitchTo(caller);
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
	return KeyringSealingKey(class_id, NULL);
}

/*
 * The same, and in *compression (when not NULL) the class's compressor as an
 * envelope flag (ENVELOPE_FLAG_LZ4 or _ZSTD; 0: its values are never
 * compressed): the class's policy, from the cache.
 */
DataKey *
KeyringSealingKey(int32 class_id, uint8 *compression)
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
	if (compression)
		*compression = kc->compression;
	return dk;
}

uint32
KeyringActiveVersion(int32 class_id)
{
	return KeyringActiveDataKey(class_id)->version;
}

typedef struct PendingScan
{
	int32		class_id;
	uint32		version;
	bool		found;
	TransactionId xmin;
} PendingScan;

static void
PendingRow(HeapTuple tup, TupleDesc desc, void *arg)
{
	PendingScan *ps = (PendingScan *) arg;
	bool		isnull;

	if (DatumGetInt32(GetCol(tup, desc, Anum_data_keys_class_id, &isnull)) == ps->class_id &&
		(uint32) DatumGetInt32(GetCol(tup, desc, Anum_data_keys_version, &isnull)) == ps->version)
	{
		ps->found = true;
		ps->xmin = HeapTupleHeaderGetXmin(tup->t_data);
	}
}

/*
 * A walsender found a value naming a data key that its snapshot of the key
 * tables does not show.  The transaction that wrote the key row may
 *  - have committed while still counted as running: the walsender decodes a
 *	  commit record as soon as it is flushed.  Wait until it is gone and
 *	  return true: a reload finds the key.
 *  - still be running or prepared: it is the transaction being decoded
 *	  (streaming = on, two_phase = on), which made the key and sealed values
 *	  under it.  Say so; decoding succeeds once it commits.
 * If the transaction being decoded has aborted meanwhile, raise the error
 * code logical decoding expects of a concurrent abort, so that it drops the
 * transaction instead of retrying it for ever.  Otherwise return false: the
 * value is corrupted.
 */
static bool
DecodingKeyMissing(int32 class_id, uint32 version)
{
	PendingScan ps = {class_id, version, false, InvalidTransactionId};
	SnapshotData dirty;

	if (TransactionIdIsValid(CheckXidAlive) &&
		!TransactionIdIsInProgress(CheckXidAlive) &&
		!TransactionIdDidCommit(CheckXidAlive))
		ereport(ERROR,
				(errcode(ERRCODE_TRANSACTION_ROLLBACK),
				 errmsg("transaction being decoded was aborted")));
	InitDirtySnapshot(dirty);
	ResolveKeyTables();
	ScanKeyTable(datakeys_oid, &dirty, PendingRow, &ps);
	if (!ps.found)
		return false;
	if (TransactionIdDidCommit(ps.xmin))
	{
		XactLockTableWait(ps.xmin, NULL, NULL, XLTW_None);
		return true;
	}
	if (TransactionIdIsInProgress(ps.xmin))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("data key version %u of key class %d is not committed yet",
						version, class_id),
				 errdetail("Logical decoding of a transaction that has not committed met a value sealed under a data key that the same transaction created."),
				 errhint("Decoding succeeds once the transaction commits.  With streaming = on or two_phase = on, create key classes and rotate data keys in transactions of their own.")));
	return false;
}

/*
 * The data key a stored value names, or NULL if there is none.  A miss
 * reloads the cache once, in case a key was added since it was loaded; in a
 * walsender, DecodingKeyMissing() may ask for one more.
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
	if (dk == NULL && HistoricSnapshotActive() &&
		DecodingKeyMissing(class_id, version))
	{
		KeyCacheDrop();
		KeyCacheEnsure();
		dk = CachedDataKey(class_id, version);
	}
	if (dk != NULL && dk->key == NULL)
	{
		char	   *name = KeyClassNameLookup(class_id);

		ereport(ERROR,
				(errcode(ERRCODE_ATREST_KEY_RETIRED),
				 errmsg("data key version %u of key class \"%s\" was retired", version,
						name ? name : "?"),
				 errdetail("A value sealed with it can no longer be decrypted."),
				 errhint("atrest.retire_data_key() refuses while values use a version; this value was restored or written from elsewhere after the version was retired.")));
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
		Oid			types[3] = {UUIDOID, BYTEAOID, INT4OID};
		Datum		values[3];
		int32		svc_id;

		RandomUuid(id);
		RandomKey(dbk);
		/*
		 * A missing generated service key may be generated only for the
		 * database's first key: with keys already there, a new one would
		 * open none of them.
		 */
		SpiExec("SELECT 1 FROM atrest.database_keys LIMIT 1", 0, NULL, NULL, NULL, SPI_OK_SELECT);
		(void) ServiceKeyGet(0, false, SPI_processed == 0, &svc_id);
		values[0] = UUIDPGetDatum(id);
		values[1] = PointerGetDatum(ServiceWrap(dbk, id, &svc_id));
		values[2] = Int32GetDatum(svc_id);
		if (HasServiceKeyIdColumn())
			SpiExec("INSERT INTO atrest.database_keys (id, active, protector, wrapped, service_key_id) "
					"VALUES ($1, true, 'service', $2, $3)", 3, types, values, NULL, SPI_OK_INSERT);
		else
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
	KeyCacheEnsure();
	if (KeyClassLookup(name, true) >= 0)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("key class \"%s\" already exists", name)));
	values[0] = PointerGetDatum(PG_GETARG_TEXT_PP(0));
	values[1] = CStringGetTextDatum(EnvelopeCompressionName(compression));
	if (with_policy)
		SpiExec("INSERT INTO atrest.key_classes (id, name, compression) "
				"VALUES (nextval('atrest.key_classes_id_seq'), $1, $2) RETURNING id",
				2, types, values, NULL, SPI_OK_INSERT_RETURNING);
	else
		SpiExec("INSERT INTO atrest.key_classes (id, name) "
				"VALUES (nextval('atrest.key_classes_id_seq'), $1) RETURNING id",
				1, types, values, NULL, SPI_OK_INSERT_RETURNING);
	class_id = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	InsertDataKey(cache.dbk, &cache.root.id, class_id, 1);
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
	SpiExec("UPDATE atrest.key_classes SET compression = $2 WHERE name = $1",
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
 * Store a new wrapped form of the active database key, with what wrapped it;
 * svc_id is the service key id of the inner wrapping (not stored in a 1.0
 * database, where it is always 1).
 */
static void
UpdateActiveRoot(const char *protector, const char *provider, const char *key_uri,
				 const char *key_version, bytea *wrapped, int32 svc_id)
{
	Oid			types[6] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID, BYTEAOID, INT4OID};
	Datum		values[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};
	const char *texts[4] = {protector, provider, key_uri, key_version};

	for (int i = 0; i < 4; i++)
	{
		if (texts[i])
			values[i] = CStringGetTextDatum(texts[i]);
		else
			nulls[i] = 'n';
	}
	values[4] = PointerGetDatum(wrapped);
	values[5] = Int32GetDatum(svc_id);
	if (HasServiceKeyIdColumn())
		SpiExec("UPDATE atrest.database_keys SET protector = $1, provider = $2, key_uri = $3, "
				"key_version = $4, wrapped = $5, service_key_id = $6, protected_since = now() WHERE active",
				6, types, values, nulls, SPI_OK_UPDATE);
	else
	{
		Assert(svc_id == 1);
		SpiExec("UPDATE atrest.database_keys SET protector = $1, provider = $2, key_uri = $3, "
				"key_version = $4, wrapped = $5, protected_since = now() WHERE active",
				5, types, values, nulls, SPI_OK_UPDATE);
	}
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
		Oid			types[8] = {UUIDOID, BYTEAOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, UUIDOID, INT4OID};
		Datum		values[8];
		char		nulls[8] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
		RootInfo   *old;
		int32		svc_id;

		LockKeyTables();
		KeyCacheEnsure();
		old = &cache.root;
		RandomUuid(id);
		RandomKey(dbk);
		wrapped = ProtectDatabaseKey(dbk, id, old->customer ? old->provider : NULL,
									 old->key_uri, &kver, &svc_id);
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
		values[7] = Int32GetDatum(svc_id);
		SpiExec("UPDATE atrest.database_keys SET active = false, retired_at = now(), wrapped = NULL "
				"WHERE id = $7", 7, types, values, nulls, SPI_OK_UPDATE);
		if (HasServiceKeyIdColumn())
			SpiExec("INSERT INTO atrest.database_keys (id, active, protector, provider, key_uri, key_version, wrapped, protected_since, service_key_id) "
					"SELECT $1, true, $3, $4, $5, $6, $2, protected_since, $8 FROM atrest.database_keys WHERE id = $7",
					8, types, values, nulls, SPI_OK_INSERT);
		else
			SpiExec("INSERT INTO atrest.database_keys (id, active, protector, provider, key_uri, key_version, wrapped, protected_since) "
					"SELECT $1, true, $3, $4, $5, $6, $2, protected_since FROM atrest.database_keys WHERE id = $7",
					7, types, values, nulls, SPI_OK_INSERT);

		hash_seq_init(&status, cache.datakeys);
		while ((dk = hash_seq_search(&status)) != NULL)
		{
			unsigned char aad[64];
			size_t		aadlen;
			Oid			dtypes[4] = {INT4OID, INT4OID, UUIDOID, BYTEAOID};
			Datum		dvalues[4];

			if (dk->key == NULL)
				continue;		/* retired: nothing left to re-wrap */
			aadlen = DataKeyAad(id, dk->class_id, dk->version, aad);

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
	char	   *provider;
	char	   *key_uri;
	char	   *kver = NULL;
	bytea	   *wrapped;
	const char *from;
	int32		svc_id;

	RequireArgument(fcinfo, 0, "atrest.enable_cmk", "provider");
	RequireArgument(fcinfo, 1, "atrest.enable_cmk", "key_uri");
	provider = text_to_cstring(PG_GETARG_TEXT_PP(0));
	key_uri = text_to_cstring(PG_GETARG_TEXT_PP(1));
	(void) ProviderLookup(provider);
	SPI_connect();
	LockKeyTables();
	KeyCacheEnsure();
	from = cache.root.customer ? psprintf("customer %s %s", cache.root.provider, cache.root.key_uri) : "service";
	wrapped = ProtectDatabaseKey(cache.dbk, &cache.root.id, provider, key_uri, &kver, &svc_id);
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

	SPI_connect();
	LockKeyTables();
	KeyCacheEnsure();			/* a fresh load: it just asked the provider */
	if (!cache.root.customer)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("database key is not protected by a customer-managed key")));
	provider = pstrdup(cache.root.provider);
	key_uri = pstrdup(cache.root.key_uri);
	wrapped = ServiceWrap(cache.dbk, &cache.root.id, &svc_id);
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
	RootInfo   *root;
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
	KeyCacheEnsure();			/* a fresh load: it just read the service key source */
	root = &cache.root;
	if (HasServiceKeyIdColumn())
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
			ProviderFailed(root->provider, root->key_uri, reason ? reason : "version lookup failed");
		cmk_changed = (root->key_version == NULL || strcmp(current, root->key_version) != 0);
	}
	if (!cmk_changed && !svc_changed)
	{
		SPI_finish();
		PG_RETURN_BOOL(false);
	}

	/* unwrapped through both layers by KeyCacheEnsure; wrap both again */
	wrapped = ProtectDatabaseKey(cache.dbk, &root->id, root->customer ? root->provider : NULL,
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
	RequireArgument(fcinfo, 0, "atrest._active_key_version", "class_id");
	PG_RETURN_INT32((int32) KeyringActiveVersion(PG_GETARG_INT32(0)));
}

/* ---------------------------------------------------------------------
 * Cutting old keys off: scrubbing the key tables, retiring data keys
 * (atrest.rekey() is SQL: rotate_database_key() then rotate_data_key())
 * --------------------------------------------------------------------- */

/* The owner of atrest.database_keys (and of every key table). */
static Oid
KeyTablesOwner(void)
{
	HeapTuple	tup;
	Oid			owner;

	ResolveKeyTables();
	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(dbkeys_oid));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "pg_atrest: cache lookup failed for relation %u", dbkeys_oid);
	owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
	ReleaseSysCache(tup);
	return owner;
}

/*
 * atrest.scrub_key_tables() RETURNS boolean: start the worker that rewrites
 * the key tables (keyscrub.c) now, as every key change does at commit; for
 * when that could not start a worker.  Returns true once it is registered;
 * the server log reports the rewrite when it is done.
 */
PG_FUNCTION_INFO_V1(atrest_scrub_key_tables);
Datum
atrest_scrub_key_tables(PG_FUNCTION_ARGS)
{
	if (RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("key tables cannot be rewritten during recovery"),
				 errhint("A standby replays the rewrite done on its primary.")));
	if (!KeyScrubLaunch(MyDatabaseId, KeyScrubRole(KeyTablesOwner()), ReadNextTransactionId()))
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("could not start a background worker to rewrite the key tables"),
				 errdetail("max_worker_processes is exhausted."),
				 errhint("Try again when fewer background workers run, or raise max_worker_processes.")));
	PG_RETURN_BOOL(true);
}

/*
 * Wait until every transaction of this database that is running now has
 * ended (as CREATE INDEX CONCURRENTLY does): one of them may hold a key
 * cache loaded while the version being retired was still active, and seal
 * a value with it after our scan.
 */
static void
WaitForRunningTransactions(void)
{
	int			n;
	VirtualTransactionId *vxids = GetCurrentVirtualXIDs(InvalidTransactionId, false, false,
														 PROC_IS_AUTOVACUUM | PROC_IN_VACUUM,
														 &n);

	for (int i = 0; i < n; i++)
	{
		CHECK_FOR_INTERRUPTS();
		(void) VirtualXactLock(vxids[i], true);
	}
	pfree(vxids);
}

/* The columns of one relation that hold values of an encrypted type. */
typedef struct SealedColumns
{
	Oid			relid;
	int			ncols;
	AttrNumber	attnums[MaxHeapAttributeNumber];
	AtrestKind	kinds[MaxHeapAttributeNumber];
} SealedColumns;

static AtrestKind
KindOfTypeName(const char *typname)
{
	if (strcmp(typname, "encrypted_jsonb") == 0)
		return ATREST_KIND_JSONB;
	if (strcmp(typname, "encrypted_bytea") == 0)
		return ATREST_KIND_BYTEA;
	return ATREST_KIND_TEXT;
}

/*
 * Does any row version of "sc"'s relation that a transaction may still read
 * (everything but HEAPTUPLE_DEAD) hold a value sealed with (class_id,
 * version)?  Reads only the envelope header (a slice of a TOASTed value);
 * decrypts nothing.  Sets *attnum to the column found.
 */
static bool
RelationUsesDataKey(SealedColumns *sc, int32 class_id, uint32 version, AttrNumber *attnum)
{
	Relation	rel = table_open(sc->relid, AccessShareLock);
	TupleDesc	desc = RelationGetDescr(rel);
	TransactionId oldest = GetOldestNonRemovableTransactionId(rel);
	TableScanDesc scan;
	HeapTuple	tup;
	bool		found = false;

	/* one tuple's header slices at a time */
	MemoryContext tmp = AllocSetContextCreate(CurrentMemoryContext, "pg_atrest retire scan",
											  ALLOCSET_SMALL_SIZES);

	if (rel->rd_rel->relam != HEAP_TABLE_AM_OID)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot check table %s for values of a data key version",
						quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
												   RelationGetRelationName(rel))),
				 errdetail("Only tables of the heap access method can be checked.")));

	scan = table_beginscan(rel, SnapshotAny, 0, NULL);
	while (!found && (tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		HeapScanDesc hscan = (HeapScanDesc) scan;
		HTSV_Result state;
		MemoryContext old;

		CHECK_FOR_INTERRUPTS();
		LockBuffer(hscan->rs_cbuf, BUFFER_LOCK_SHARE);
		state = HeapTupleSatisfiesVacuum(tup, oldest, hscan->rs_cbuf);
		LockBuffer(hscan->rs_cbuf, BUFFER_LOCK_UNLOCK);
		if (state == HEAPTUPLE_DEAD)
			continue;

		old = MemoryContextSwitchTo(tmp);
		for (int i = 0; i < sc->ncols && !found; i++)
		{
			bool		isnull;
			Datum		d = heap_getattr(tup, sc->attnums[i], desc, &isnull);
			EnvelopeHeader hdr;

			if (isnull)
				continue;
			EnvelopeReadHeader(sc->kinds[i], (struct varlena *) DatumGetPointer(d), &hdr);
			if (hdr.class_id == class_id && hdr.key_version == version)
			{
				found = true;
				*attnum = sc->attnums[i];
			}
		}
		MemoryContextSwitchTo(old);
		MemoryContextReset(tmp);
	}
	table_endscan(scan);
	MemoryContextDelete(tmp);
	table_close(rel, AccessShareLock);
	return found;
}

/*
 * Scan every column of an encrypted type (or a domain over one) in every
 * table and materialized view of this database, the extension's own
 * included.  ereport(ERROR) naming the first table and column that holds a
 * value sealed with (class_id, version), or a column whose values cannot be
 * checked (arrays or composites of an encrypted type).  Uses SPI.
 */
static void
CheckDataKeyUnused(const char *class_name, int32 class_id, uint32 version)
{
	const char *enc =
		"WITH RECURSIVE enc(oid, base) AS ("
		" SELECT t.oid, t.typname FROM pg_catalog.pg_type t"
		"  JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace"
		"  WHERE n.nspname = 'atrest'"
		"    AND t.typname IN ('encrypted_jsonb', 'encrypted_bytea', 'encrypted_text')"
		" UNION ALL"
		" SELECT d.oid, enc.base FROM pg_catalog.pg_type d JOIN enc ON d.typbasetype = enc.oid"
		"  WHERE d.typtype = 'd') ";
	StringInfoData q;
	List	   *rels = NIL;
	SealedColumns *cur = NULL;
	ListCell   *lc;

	/* values the header scan below cannot see: refuse rather than guess */
	initStringInfo(&q);
	appendStringInfo(&q, "%s"
					 "SELECT a.attrelid::pg_catalog.regclass::text, a.attname::text"
					 "  FROM pg_catalog.pg_attribute a"
					 "  JOIN pg_catalog.pg_class c ON c.oid = a.attrelid"
					 "  JOIN pg_catalog.pg_type t ON t.oid = a.atttypid"
					 " WHERE c.relkind IN ('r', 'm', 'f') AND a.attnum > 0 AND NOT a.attisdropped"
					 "   AND ((t.typelem IN (SELECT oid FROM enc) AND t.typcategory = 'A')"
					 "        OR (t.typtype = 'c' AND EXISTS (SELECT 1 FROM pg_catalog.pg_attribute ca"
					 "              WHERE ca.attrelid = t.typrelid AND ca.atttypid IN (SELECT oid FROM enc)))"
					 "        OR (c.relkind = 'f' AND t.oid IN (SELECT oid FROM enc)))"
					 " ORDER BY a.attrelid, a.attnum LIMIT 1", enc);
	SpiExec(q.data, 0, NULL, NULL, NULL, SPI_OK_SELECT);
	if (SPI_processed > 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot check column \"%s\" of %s for values of data key version %u of key class \"%s\"",
						SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2),
						SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1),
						version, class_name),
				 errdetail("Values of encrypted types inside arrays or composite types, and in foreign tables, are not checked."),
				 errhint("Move such values to plain encrypted columns, or drop the column, before retiring a data key version.")));

	resetStringInfo(&q);
	appendStringInfo(&q, "%s"
					 "SELECT a.attrelid, a.attnum, enc.base::text"
					 "  FROM pg_catalog.pg_attribute a"
					 "  JOIN enc ON enc.oid = a.atttypid"
					 "  JOIN pg_catalog.pg_class c ON c.oid = a.attrelid"
					 " WHERE c.relkind IN ('r', 'm') AND a.attnum > 0 AND NOT a.attisdropped"
					 " ORDER BY a.attrelid, a.attnum", enc);
	SpiExec(q.data, 0, NULL, NULL, NULL, SPI_OK_SELECT);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	row = SPI_tuptable->vals[i];
		TupleDesc	rd = SPI_tuptable->tupdesc;
		bool		isnull;
		Oid			relid = DatumGetObjectId(SPI_getbinval(row, rd, 1, &isnull));

		if (cur == NULL || cur->relid != relid)
		{
			cur = palloc0(sizeof(SealedColumns));
			cur->relid = relid;
			rels = lappend(rels, cur);
		}
		cur->attnums[cur->ncols] = DatumGetInt16(SPI_getbinval(row, rd, 2, &isnull));
		cur->kinds[cur->ncols] = KindOfTypeName(SPI_getvalue(row, rd, 3));
		cur->ncols++;
	}

	foreach(lc, rels)
	{
		SealedColumns *sc = lfirst(lc);
		AttrNumber	attnum;

		if (RelationUsesDataKey(sc, class_id, version, &attnum))
		{
			char	   *relname = get_rel_name(sc->relid);
			char	   *nspname = get_namespace_name(get_rel_namespace(sc->relid));

			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_IN_USE),
					 errmsg("data key version %u of key class \"%s\" is still in use", version, class_name),
					 errdetail("Column \"%s\" of table %s holds a value sealed with it (a row, or a row version an open transaction can still read).",
							   get_attname(sc->relid, attnum, false),
							   quote_qualified_identifier(nspname, relname)),
					 errhint("Re-encrypt that column with atrest.reencrypt(), wait for older transactions to end, and try again.")));
		}
	}
}

/*
 * atrest.retire_data_key(key_class text, key_version integer): destroy an
 * old data-key version once no stored value uses it.  The row stays (so the
 * version is never reused and a value that names it gets a clear error),
 * with its wrapped key set to NULL; the scrub worker then removes the old
 * row version's bytes from the files.
 */
PG_FUNCTION_INFO_V1(atrest_retire_data_key);
Datum
atrest_retire_data_key(PG_FUNCTION_ARGS)
{
	char	   *class_name;
	int32		version;
	int32		class_id;
	Oid			types[2] = {INT4OID, INT4OID};
	Datum		values[2];
	bool		isnull;
	bool		retired;
	int32		active;

	RequireArgument(fcinfo, 0, "atrest.retire_data_key", "key_class");
	RequireArgument(fcinfo, 1, "atrest.retire_data_key", "key_version");
	class_name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	version = PG_GETARG_INT32(1);

	/* before any lock of ours: the waited-for may be waiting for the key lock */
	WaitForRunningTransactions();

	SPI_connect();
	LockKeyTables();
	class_id = KeyClassLookup(class_name, false);
	values[0] = Int32GetDatum(class_id);
	values[1] = Int32GetDatum(version);
	SpiExec("SELECT d.wrapped IS NULL, c.active_version FROM atrest.data_keys d"
			" JOIN atrest.key_classes c ON c.id = d.class_id"
			" WHERE d.class_id = $1 AND d.version = $2",
			2, types, values, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("data key version %d of key class \"%s\" does not exist", version, class_name)));
	retired = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	active = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	if (retired)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("data key version %d of key class \"%s\" is already retired", version, class_name)));
	if (version == active)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_IN_USE),
				 errmsg("data key version %d of key class \"%s\" is the active version", version, class_name),
				 errhint("Make a new version first with atrest.rekey() or atrest.rotate_data_key(), then re-encrypt with atrest.reencrypt().")));

	CheckDataKeyUnused(class_name, class_id, (uint32) version);

	SpiExec("UPDATE atrest.data_keys SET wrapped = NULL, retired_at = now()"
			" WHERE class_id = $1 AND version = $2",
			2, types, values, NULL, SPI_OK_UPDATE);
	LogKeyEvent("retire_data_key", class_name, version, NULL, NULL, NULL, "ok",
				"wrapped key destroyed; no stored value uses it");
	SPI_finish();
	PG_RETURN_VOID();
}
