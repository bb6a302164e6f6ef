/*
 * guard.c
 *		What stays out of indexes and statistics: no index may hold encrypted
 *		values or anything computed from them, and ANALYZE keeps no
 *		plaintext-derived statistics.
 *
 * The encrypted types have btree and hash operator classes so that
 * DISTINCT, GROUP BY, set operations and count(DISTINCT) can compare
 * plaintext in memory (operators.c).  An index built with them would keep
 * the plaintext's order and equality (and an expression index the
 * expression's plaintext result) in the index's files and in WAL, outside
 * the encryption.  So every new index is checked when index_create()
 * announces it (OAT_POST_CREATE, before the index is built) and refused if
 * any key column, INCLUDE column, expression or predicate uses a column of
 * an encrypted type (or of a domain, array, range or composite type over
 * one).  The check catches every way an index comes to exist: CREATE INDEX,
 * UNIQUE, PRIMARY KEY and exclusion constraints, ALTER TABLE ... TYPE
 * rebuilding an index, partitions inheriting an index, REINDEX
 * CONCURRENTLY.
 *
 * Extended statistics (CREATE STATISTICS) over an encrypted column are
 * refused the same way, and ANALYZE of an encrypted column records only its
 * null fraction and width (encrypted_typanalyze).
 *
 * The object access hook only runs once the module is loaded.  An event
 * trigger on ddl_command_start (atrest._load_guard) calls into the module
 * before every statement that can create an index, which loads it, so the
 * hook is in place even where pg_atrest is not preloaded.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/indexing.h"
#include "catalog/objectaccess.h"
#include "catalog/pg_class.h"
#include "catalog/pg_index.h"
#include "catalog/pg_statistic_ext.h"
#include "commands/event_trigger.h"
#include "commands/vacuum.h"
#include "nodes/nodeFuncs.h"
#include "miscadmin.h"
#include "optimizer/optimizer.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/typcache.h"

#include "pg_atrest.h"
#include "wire.h"

static object_access_hook_type prev_object_access_hook = NULL;

/* Whether values of "type" hold encrypted values (directly or inside). */
static bool
HoldsEncrypted(Oid type, int depth)
{
	TupleDesc	tupdesc;
	bool		found = false;

	if (type < FirstNormalObjectId)
		return false;
	if (OidIsValid(AtrestPlainTypeOf(type)))
		return true;
	check_stack_depth();
	type = getBaseType(type);
	if (OidIsValid(get_element_type(type)))
		return HoldsEncrypted(get_element_type(type), depth + 1);
	if (OidIsValid(get_multirange_range(type)))
		return HoldsEncrypted(get_multirange_range(type), depth + 1);
	if (OidIsValid(get_range_subtype(type)))
		return HoldsEncrypted(get_range_subtype(type), depth + 1);
	if (!type_is_rowtype(type) || type == RECORDOID || depth > 16)
		return false;
	tupdesc = lookup_rowtype_tupdesc(type, -1);
	for (int i = 0; i < tupdesc->natts && !found; i++)
	{
		Form_pg_attribute att = TupleDescAttr(tupdesc, i);

		if (!att->attisdropped)
			found = HoldsEncrypted(att->atttypid, depth + 1);
	}
	ReleaseTupleDesc(tupdesc);
	return found;
}

/* The first column of "rel" that holds encrypted values, or 0. */
static AttrNumber
FirstEncryptedColumn(Relation rel, Bitmapset *attnos, bool whole_row)
{
	TupleDesc	tupdesc = RelationGetDescr(rel);

	for (int i = 0; i < tupdesc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(tupdesc, i);

		if (att->attisdropped)
			continue;
		if (!whole_row &&
			!bms_is_member(att->attnum - FirstLowInvalidHeapAttributeNumber, attnos))
			continue;
		if (HoldsEncrypted(att->atttypid, 0))
			return att->attnum;
	}
	return 0;
}

/*
 * Raise an error if a column in "keys" (stored as they are) or in "exprs"
 * (used by expressions) of relation "relid" holds encrypted values; the
 * object being created is an index, or extended statistics when
 * "statistics" is set.
 */
static void
RefuseEncrypted(Oid relid, Bitmapset *keys, Bitmapset *exprs, bool statistics)
{
	Relation	heap = table_open(relid, NoLock);
	bool		computed = false;
	AttrNumber	bad;
	char	   *colname;
	char	   *relname;

	bad = FirstEncryptedColumn(heap, keys, false);
	if (bad == 0)
	{
		bad = FirstEncryptedColumn(heap, exprs,
								   bms_is_member(0 - FirstLowInvalidHeapAttributeNumber, exprs));
		computed = true;
	}
	if (bad == 0)
	{
		table_close(heap, NoLock);
		return;
	}
	colname = pstrdup(NameStr(TupleDescAttr(RelationGetDescr(heap), bad - 1)->attname));
	relname = pstrdup(RelationGetRelationName(heap));
	table_close(heap, NoLock);

	if (statistics)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot create statistics on encrypted column \"%s\" of table \"%s\"",
						colname, relname),
				 errdetail("Extended statistics would keep distinct counts, dependencies or common "
						   "values of the plaintext outside the encryption."),
				 errhint("Create the statistics on the table's plain columns only.")));
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("cannot create an index on encrypted column \"%s\" of table \"%s\"",
					colname, relname),
			 computed ?
			 errdetail("The index would keep values computed from the plaintext in its files "
					   "and in WAL, outside the encryption.") :
			 errdetail("The index would keep the plaintext's order and equality in its files "
					   "and in WAL, outside the encryption."),
			 errhint("Keep what must be searched in a separate plain column (for example "
					 "a keyed hash of the value computed by the application, or an "
					 "attribute that is not sensitive) and index that column.")));
}

/* Refuse the index "indexoid", just created, if it covers encrypted values. */
static void
CheckNewIndex(Oid indexoid)
{
	static const int exprcols[2] = {Anum_pg_index_indexprs, Anum_pg_index_indpred};
	Relation	pg_index;
	SysScanDesc scan;
	ScanKeyData key;
	HeapTuple	tup;
	Form_pg_index idx;
	Bitmapset  *keys = NULL;
	Bitmapset  *exprs = NULL;

	pg_index = table_open(IndexRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_index_indexrelid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(indexoid));
	/* the pg_index row was inserted by this very command: SnapshotSelf sees it */
	scan = systable_beginscan(pg_index, IndexRelidIndexId, true, SnapshotSelf, 1, &key);
	tup = systable_getnext(scan);
	if (!HeapTupleIsValid(tup))
	{
		systable_endscan(scan);
		table_close(pg_index, AccessShareLock);
		return;
	}
	idx = (Form_pg_index) GETSTRUCT(tup);

	/* key and INCLUDE columns */
	for (int i = 0; i < idx->indnatts; i++)
		if (idx->indkey.values[i] != 0)
			keys = bms_add_member(keys, idx->indkey.values[i] - FirstLowInvalidHeapAttributeNumber);
	/* columns that expressions and the predicate use */
	for (int i = 0; i < lengthof(exprcols); i++)
	{
		bool		isnull;
		Datum		d = heap_getattr(tup, exprcols[i], RelationGetDescr(pg_index), &isnull);

		if (!isnull)
			pull_varattnos(stringToNode(TextDatumGetCString(d)), 1, &exprs);
	}

	RefuseEncrypted(idx->indrelid, keys, exprs, false);
	systable_endscan(scan);
	table_close(pg_index, AccessShareLock);
}

/* Refuse the extended statistics object "statoid", just created, likewise. */
static void
CheckNewStatistics(Oid statoid)
{
	Relation	pg_stext;
	SysScanDesc scan;
	ScanKeyData key;
	HeapTuple	tup;
	Form_pg_statistic_ext stx;
	Bitmapset  *keys = NULL;
	Bitmapset  *exprs = NULL;
	bool		isnull;
	Datum		d;

	pg_stext = table_open(StatisticExtRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_statistic_ext_oid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(statoid));
	scan = systable_beginscan(pg_stext, StatisticExtOidIndexId, true, SnapshotSelf, 1, &key);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup))
	{
		stx = (Form_pg_statistic_ext) GETSTRUCT(tup);
		for (int i = 0; i < stx->stxkeys.dim1; i++)
			keys = bms_add_member(keys, stx->stxkeys.values[i] - FirstLowInvalidHeapAttributeNumber);
		d = heap_getattr(tup, Anum_pg_statistic_ext_stxexprs, RelationGetDescr(pg_stext), &isnull);
		if (!isnull)
			pull_varattnos(stringToNode(TextDatumGetCString(d)), 1, &exprs);
		/* statistics keep values computed from both */
		RefuseEncrypted(stx->stxrelid, keys, exprs, true);
	}
	systable_endscan(scan);
	table_close(pg_stext, AccessShareLock);
}

static void
GuardObjectAccess(ObjectAccessType access, Oid classId, Oid objectId,
				  int subId, void *arg)
{
	if (prev_object_access_hook)
		prev_object_access_hook(access, classId, objectId, subId, arg);

	if (access != OAT_POST_CREATE || subId != 0 || !IsTransactionState())
		return;
	if (classId == RelationRelationId)
		CheckNewIndex(objectId);
	else if (classId == StatisticExtRelationId)
		CheckNewStatistics(objectId);
}

/*
 * atrest._load_guard(): event trigger on ddl_command_start.  Calling it
 * loads the module, which installs the hook above; there is nothing else to
 * do.
 */
PG_FUNCTION_INFO_V1(atrest_load_guard);
Datum
atrest_load_guard(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_EVENT_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("function \"%s\" was not called by an event trigger manager",
						"atrest._load_guard")));
	PG_RETURN_VOID();
}

/*
 * ANALYZE of an encrypted column: the null fraction and the average stored
 * width only.  The standard statistics would open every sampled value and
 * keep most common values and a histogram in plaintext order.
 */
static void
TrivialStats(VacAttrStats *stats, AnalyzeAttrFetchFunc fetchfunc,
			 int samplerows, double totalrows)
{
	int			nulls = 0;
	int			nonnulls = 0;
	double		width = 0;

	for (int i = 0; i < samplerows; i++)
	{
		bool		isnull;
		Datum		value;

#if PG_VERSION_NUM >= 180000
		vacuum_delay_point(true);
#else
		vacuum_delay_point();
#endif
		value = fetchfunc(stats, i, &isnull);
		if (isnull)
		{
			nulls++;
			continue;
		}
		nonnulls++;
		width += VARSIZE_ANY(DatumGetPointer(value));
	}
	stats->stats_valid = true;
	stats->stanullfrac = samplerows > 0 ? (double) nulls / samplerows : 0;
	stats->stawidth = nonnulls > 0 ? (int32) (width / nonnulls) : 0;
	stats->stadistinct = 0.0;	/* unknown */
}

/* atrest.encrypted_typanalyze(internal): see TrivialStats. */
PG_FUNCTION_INFO_V1(encrypted_typanalyze);
Datum
encrypted_typanalyze(PG_FUNCTION_ARGS)
{
	VacAttrStats *stats = (VacAttrStats *) PG_GETARG_POINTER(0);

#if PG_VERSION_NUM >= 170000
	/* 17 keeps the target in VacAttrStats itself (attr is gone) */
	if (stats->attstattarget < 0)
		stats->attstattarget = default_statistics_target;
	stats->compute_stats = TrivialStats;
	stats->minrows = 300 * stats->attstattarget;
#else
	if (stats->attr->attstattarget < 0)
		stats->attr->attstattarget = default_statistics_target;
	stats->compute_stats = TrivialStats;
	stats->minrows = 300 * stats->attr->attstattarget;
#endif
	PG_RETURN_BOOL(true);
}

void
IndexGuardInit(void)
{
	prev_object_access_hook = object_access_hook;
	object_access_hook = GuardObjectAccess;
}
