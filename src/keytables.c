/*
 * keytables.c
 *		Reading and writing the key tables.
 *
 * Reads go straight to the tables with systable scans (no SQL, no privilege
 * check: a role that may read a column may decrypt it) under a snapshot that
 * KeyTableSnapshot() chooses; the key cache (keyring.c) reads all it needs
 * with one snapshot.  Writes go through SPI, in the caller's transaction,
 * from the key administration functions (keyadmin.c), which hold the key
 * tables' lock.  The statement trigger on the key tables lives here too: it
 * turns every change into a relcache invalidation that the key cache
 * listens for, and asks the scrub worker (keyscrub.c) to rewrite the tables
 * when a wrapped key was superseded.
 *
 * Only wrapped keys (ciphertext) pass through this file: InsertDataKey()
 * makes a data key in a secure slot and writes it wrapped.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/transam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "storage/lmgr.h"
#include "storage/procarray.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "envelope_core.h"
#include "keyscrub.h"
#include "keytables.h"
#include "keywrap.h"
#include "pg_atrest.h"
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
#define Anum_database_keys_recheck_at	11

#define Anum_data_keys_class_id			1
#define Anum_data_keys_version			2
#define Anum_data_keys_database_key_id	3
#define Anum_data_keys_wrapped			5

/* Key table OIDs, resolved lazily; forgotten when the key cache is dropped. */
static Oid	classes_oid = InvalidOid;
static Oid	dbkeys_oid = InvalidOid;
static Oid	datakeys_oid = InvalidOid;

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

/* Is "relid" one of the key tables (InvalidOid: maybe, every relation changed)? */
bool
KeyTablesInclude(Oid relid)
{
	return relid == InvalidOid || relid == classes_oid ||
		relid == dbkeys_oid || relid == datakeys_oid;
}

/* Resolve the key tables' OIDs again on next use (the extension may be recreated). */
void
KeyTablesForget(void)
{
	classes_oid = dbkeys_oid = datakeys_oid = InvalidOid;
}

/* atrest.database_keys, which key changes lock. */
Oid
KeyTablesDatabaseKeysOid(void)
{
	ResolveKeyTables();
	return dbkeys_oid;
}

/* The owner of atrest.database_keys (and of every key table). */
Oid
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
Snapshot
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

		if (compression)
		{
			/* the column's CHECK admits only these names */
			int			flag = EnvelopeCompressionFlag(compression);

			if (flag < 0)
				ereport(ERROR,
						(errcode(ERRCODE_DATA_CORRUPTED),
						 errmsg("key class \"%s\" has an unknown compression \"%s\"", kc->name, compression)));
			kc->compression = (uint8) flag;
		}
	}
	cs->classes = lappend(cs->classes, kc);
}

List *
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
bool
KeyTablesHaveServiceKeyId(void)
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
	d = GetCol(tup, desc, Anum_database_keys_recheck_at, &isnull);
	rs->info->recheck_at = isnull ? 0 : DatumGetTimestampTz(d);
}

/*
 * Read the active database key row, as "snapshot" sees it, into palloc'd
 * memory.
 */
void
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

typedef struct DataKeyScan
{
	List	   *rows;
	int32		class_id;		/* only this one, with version; -1: all */
	uint32		version;
} DataKeyScan;

static void
DataKeyRowCb(HeapTuple tup, TupleDesc desc, void *arg)
{
	DataKeyScan *ds = (DataKeyScan *) arg;
	bool		isnull;
	int32		class_id = DatumGetInt32(GetCol(tup, desc, Anum_data_keys_class_id, &isnull));
	uint32		version = (uint32) DatumGetInt32(GetCol(tup, desc, Anum_data_keys_version, &isnull));
	Datum		wrapped;
	DataKeyRow *row;

	if (ds->class_id >= 0 && (class_id != ds->class_id || version != ds->version))
		return;
	row = palloc0(sizeof(DataKeyRow));
	row->class_id = class_id;
	row->version = version;
	memcpy(row->dbk_id.data,
		   DatumGetUUIDP(GetCol(tup, desc, Anum_data_keys_database_key_id, &isnull))->data,
		   UUID_LEN);
	wrapped = GetCol(tup, desc, Anum_data_keys_wrapped, &isnull);
	row->wrapped = isnull ? NULL : DatumGetByteaPCopy(wrapped);
	ds->rows = lappend(ds->rows, row);
}

/* Every row of atrest.data_keys as "snapshot" sees it (DataKeyRow *, palloc'd). */
List *
ReadDataKeys(Snapshot snapshot)
{
	DataKeyScan ds = {NIL, -1, 0};

	ResolveKeyTables();
	ScanKeyTable(datakeys_oid, snapshot, DataKeyRowCb, &ds);
	return ds.rows;
}

/* One row of atrest.data_keys into *row (palloc'd); false if there is none. */
bool
ReadDataKey(int32 class_id, uint32 version, Snapshot snapshot, DataKeyRow *row)
{
	DataKeyScan ds = {NIL, class_id, version};

	ResolveKeyTables();
	ScanKeyTable(datakeys_oid, snapshot, DataKeyRowCb, &ds);
	if (ds.rows == NIL)
		return false;
	*row = *(DataKeyRow *) linitial(ds.rows);
	return true;
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
bool
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

/* ---------------------------------------------------------------------
 * Writing the key tables (through SPI, in the caller's transaction)
 * --------------------------------------------------------------------- */

void
KeyTablesSpiExec(const char *sql, int nargs, Oid *types, Datum *values, const char *nulls, int expect)
{
	int			rc = SPI_execute_with_args(sql, nargs, types, values, nulls, false, 0);

	if (rc != expect)
		elog(ERROR, "pg_atrest: SPI failed (%d) for: %s", rc, sql);
}

/* Append a row to atrest.key_events. */
void
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
	KeyTablesSpiExec("INSERT INTO atrest.key_events "
			"(operation, key_class, key_version, provider, key_uri, provider_key_version, outcome, detail) "
			"VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
			8, types, values, nulls, SPI_OK_INSERT);
}

/* A new random data key (class_id, version), wrapped under "dbk", made active. */
void
InsertDataKey(const unsigned char *dbk, const pg_uuid_t *dbk_id, int32 class_id, uint32 version)
{
	unsigned char *key = SecureKeyAlloc();
	unsigned char aad[KEY_AAD_MAXLEN];
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
	KeyTablesSpiExec("INSERT INTO atrest.data_keys (class_id, version, database_key_id, wrapped) "
			"VALUES ($1, $2, $3, $4)", 4, types, values, NULL, SPI_OK_INSERT);
	KeyTablesSpiExec("UPDATE atrest.key_classes SET active_version = $2 WHERE id = $1",
			2, types, values, NULL, SPI_OK_UPDATE);
}

/*
 * Store a new wrapped form of the active database key, with what wrapped it;
 * svc_id is the service key id of the inner wrapping (not stored in a 1.0
 * database, where it is always 1).
 */
void
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
	if (KeyTablesHaveServiceKeyId())
		KeyTablesSpiExec("UPDATE atrest.database_keys SET protector = $1, provider = $2, key_uri = $3, "
				"key_version = $4, wrapped = $5, service_key_id = $6, protected_since = now() WHERE active",
				6, types, values, nulls, SPI_OK_UPDATE);
	else
	{
		Assert(svc_id == 1);
		KeyTablesSpiExec("UPDATE atrest.database_keys SET protector = $1, provider = $2, key_uri = $3, "
				"key_version = $4, wrapped = $5, protected_since = now() WHERE active",
				5, types, values, nulls, SPI_OK_UPDATE);
	}
}
