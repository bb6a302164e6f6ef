/*
 * keyretire.c
 *		Cutting old keys off: starting the key-table scrub worker and
 *		retiring data-key versions (atrest.rekey() is SQL:
 *		rotate_database_key() then rotate_data_key()).
 *
 * atrest.retire_data_key() destroys a version's wrapped key only after
 * every transaction that could still seal with it has ended and a scan of
 * every encrypted column (envelope headers only, nothing decrypted) found no
 * value that names it, under the key tables' lock (keyadmin.c).
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/transam.h"
#include "access/xlog.h"
#include "catalog/pg_am.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/bufmgr.h"
#include "storage/lmgr.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "envelope.h"
#include "keyadmin.h"
#include "keyscrub.h"
#include "keytables.h"
#include "pg_atrest.h"

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
	KeyTablesSpiExec(q.data, 0, NULL, NULL, NULL, SPI_OK_SELECT);
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
	KeyTablesSpiExec(q.data, 0, NULL, NULL, NULL, SPI_OK_SELECT);
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
	KeyTablesSpiExec("SELECT d.wrapped IS NULL, c.active_version FROM atrest.data_keys d"
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

	KeyTablesSpiExec("UPDATE atrest.data_keys SET wrapped = NULL, retired_at = now()"
			" WHERE class_id = $1 AND version = $2",
			2, types, values, NULL, SPI_OK_UPDATE);
	LogKeyEvent("retire_data_key", class_name, version, NULL, NULL, NULL, "ok",
				"wrapped key destroyed; no stored value uses it");
	SPI_finish();
	PG_RETURN_VOID();
}
