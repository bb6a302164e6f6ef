/*
 * convert.c
 *		The steps of atrest.encrypt_column and atrest.decrypt_column: turning a
 *		plain jsonb, bytea or text column into the matching encrypted type (or
 *		back) while the application keeps reading and writing.
 *
 * The procedures (pg_atrest--1.1.sql) commit between the steps here:
 *
 *   1. prepare: add a shadow column of the target type, and a BEFORE trigger
 *      that fills it from the column on every INSERT and UPDATE;
 *   2. batches: UPDATE the rows whose shadow is still NULL, a few hundred at a
 *      time, so that the trigger fills it (rows other transactions have locked
 *      are skipped and found again);
 *   3. swap: under a short ACCESS EXCLUSIVE lock, drop the trigger and the old
 *      column and give the shadow its name (its default and NOT NULL too);
 *   4. (encrypt_column only) rewrite: UPDATE every row version written before
 *      the swap, so no live tuple keeps the dropped column's plaintext inline
 *      or in TOAST;
 *   5. (encrypt_column only) scrub: once no snapshot can see those versions,
 *      prune every heap and TOAST page and zero its free space (pagescrub.c).
 *
 * Every statement on the user's table runs as its owner under
 * SECURITY_RESTRICTED_OPERATION (owner.c): its triggers, defaults and policies
 * are the owner's code, and the caller is often a superuser.  The trigger
 * function is not SECURITY DEFINER: it converts with the rights of whoever
 * writes the row, and calls only the casts everyone may call.
 *
 * Invariants: no step holds a lock that blocks writers for longer than
 * CONVERT_LOCK_TIMEOUT plus a few catalog updates (ACCESS EXCLUSIVE is only
 * requested with lock_timeout set, and the procedure retries), and no batch
 * keeps row locks for much longer than CONVERT_BATCH_MS.  Every function here
 * checks that the caller owns the table.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "access/transam.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "parser/parse_coerce.h"
#include "catalog/pg_proc.h"
#include "utils/catcache.h"
#include "portability/instr_time.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "storage/procarray.h"
#include "catalog/namespace.h"
#include "catalog/pg_inherits.h"

#include "keytables.h"
#include "owner.h"
#include "pagescrub.h"
#include "pg_atrest.h"

/* How long a step waits for ACCESS EXCLUSIVE before giving up (and retrying). */
#define CONVERT_LOCK_TIMEOUT	"300ms"
/* A batch stops taking more rows after this long, so row locks stay short. */
#define CONVERT_BATCH_MS		250.0
#define CONVERT_FIRST_CHUNK		50

/* The trigger's name: BEFORE ROW triggers fire in name order, ours last. */
#define CONVERT_TRIGGER			"zz_atrest_convert"

/* The plain type matching an encrypted type name, and back. */
static const struct
{
	Oid			plain;
	const char *plain_name;
	const char *encrypted;
}			type_pairs[] = {
	{JSONBOID, "jsonb", "encrypted_jsonb"},
	{BYTEAOID, "bytea", "encrypted_bytea"},
	{TEXTOID, "text", "encrypted_text"},
};

/* Whether the caller may execute atrest.encrypt_column or atrest.decrypt_column. */
static bool
MayConvert(void)
{
	static const char *const names[] = {"encrypt_column", "decrypt_column"};
	Oid			nsp = get_namespace_oid(ATREST_SCHEMA, false);
	bool		result = false;

	for (int i = 0; i < lengthof(names) && !result; i++)
	{
		CatCList   *list = SearchSysCacheList1(PROCNAMEARGSNSP, CStringGetDatum(names[i]));

		for (int j = 0; j < list->n_members && !result; j++)
		{
			Form_pg_proc proc = (Form_pg_proc) GETSTRUCT(&list->members[j]->tuple);

			if (proc->pronamespace == nsp &&
				AtrestProcAclCheck(proc->oid, GetUserId(), ACL_EXECUTE) == ACLCHECK_OK)
				result = true;
		}
		ReleaseSysCacheList(list);
	}
	return result;
}

/*
 * Open "relid" with "lockmode" after checking that the caller may convert
 * columns, owns it, and that it is a plain table outside any inheritance tree.
 */
static Relation
OpenOwnedTable(Oid relid, LOCKMODE lockmode)
{
	Relation	rel;

	if (!MayConvert())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for procedure encrypt_column")));
	rel = try_table_open(relid, lockmode);

	if (rel == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", relid)));
	if (!AtrestRelOwnerCheck(relid, GetUserId()))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("must be owner of table %s", RelationGetRelationName(rel)),
				 errdetail("Converting a column changes the table's definition.")));
	if (rel->rd_rel->relkind != RELKIND_RELATION)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not a table", RelationGetRelationName(rel))));
	if (rel->rd_rel->relhassubclass || rel->rd_rel->relispartition ||
		has_superclass(relid))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("\"%s\" is part of an inheritance tree or partitioned table",
						RelationGetRelationName(rel)),
				 errdetail("Only a plain table without parents or children can be converted online.")));
	return rel;
}

/* The oid of atrest.<name>. */
static Oid
AtrestType(const char *name)
{
	return GetSysCacheOid2(TYPENAMENSP, Anum_pg_type_oid, CStringGetDatum(name),
						   ObjectIdGetDatum(get_namespace_oid(ATREST_SCHEMA, false)));
}

/*
 * The type name ("atrest.encrypted_jsonb('cls')" or "jsonb") that column type
 * "typid" converts to; NULL if it converts to nothing in this direction.
 */
static char *
TargetTypeName(Oid typid, bool encrypt, const char *key_class)
{
	for (int i = 0; i < lengthof(type_pairs); i++)
	{
		if (encrypt && typid == type_pairs[i].plain)
			return psprintf("%s.%s(%s)", ATREST_SCHEMA, type_pairs[i].encrypted,
							quote_literal_cstr(key_class));
		if (!encrypt && typid == AtrestType(type_pairs[i].encrypted))
			return pstrdup(type_pairs[i].plain_name);
	}
	return NULL;
}

/* Whether "typid" is the type a conversion in this direction produces. */
static bool
IsTargetType(Oid typid, bool encrypt)
{
	for (int i = 0; i < lengthof(type_pairs); i++)
	{
		Oid			target = encrypt ? AtrestType(type_pairs[i].encrypted)
			: type_pairs[i].plain;

		if (typid == target)
			return true;
	}
	return false;
}

/* Run "sql" through SPI, expecting "expected"; the caller is connected. */
static uint64
RunSql(const char *sql, int nargs, Oid *argtypes, Datum *args, int expected)
{
	int			rc = SPI_execute_with_args(sql, nargs, argtypes, args, NULL, false, 0);

	if (rc != expected)
		elog(ERROR, "SPI_execute_with_args returned %s for %s", SPI_result_code_string(rc), sql);
	return SPI_processed;
}

/*
 * Refuse a column that other objects depend on (indexes, constraints, views,
 * rules, policies, statistics, triggers naming it): dropping it would drop
 * them or fail.  Its default is carried over instead.
 */
static void
CheckNoDependents(Relation rel, AttrNumber attnum, const char *colname)
{
	Oid			argtypes[2] = {OIDOID, INT4OID};
	Datum		args[2] = {ObjectIdGetDatum(RelationGetRelid(rel)), Int32GetDatum(attnum)};

	RunSql("SELECT pg_catalog.pg_describe_object(classid, objid, objsubid) FROM pg_catalog.pg_depend "
		   "WHERE refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND refobjid = $1 "
		   "AND refobjsubid = $2 AND classid <> 'pg_catalog.pg_attrdef'::pg_catalog.regclass "
		   /* 18 records NOT NULL as a constraint; the swap carries NOT NULL over itself */
		   "AND NOT (classid = 'pg_catalog.pg_constraint'::pg_catalog.regclass AND EXISTS "
		   "(SELECT 1 FROM pg_catalog.pg_constraint c WHERE c.oid = objid AND c.contype = 'n')) "
		   "LIMIT 1",
		   2, argtypes, args, SPI_OK_SELECT);
	if (SPI_processed > 0)
		ereport(ERROR,
				(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
				 errmsg("other objects depend on column \"%s\" of table \"%s\"",
						colname, RelationGetRelationName(rel)),
				 errdetail("%s depends on it.",
						   SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1)),
				 errhint("Drop that object first, and create it again after the conversion; an index on an encrypted column is not possible.")));
}

/* The shadow column's name for column number "attnum". */
static char *
ShadowName(AttrNumber attnum)
{
	return psprintf("atrest_shadow_%d", attnum);
}

/*
 * atrest._convert_prepare(rel regclass, col name, key_class text,
 *                         encrypt boolean) RETURNS name
 *
 * Add the shadow column and the trigger that keeps it in step (or find them
 * from an interrupted run).  Returns the shadow's name, or NULL when "col" is
 * already of the target type.  Takes ACCESS EXCLUSIVE with lock_timeout: a
 * lock_not_available error means "try again".
 */
PG_FUNCTION_INFO_V1(atrest_convert_prepare);
Datum
atrest_convert_prepare(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	char	   *colname = NameStr(*PG_GETARG_NAME(1));
	char	   *key_class = text_to_cstring(PG_GETARG_TEXT_PP(2));
	bool		encrypt = PG_GETARG_BOOL(3);
	Relation	rel;
	AttrNumber	attnum;
	Oid			typid;
	int32		typmod;
	char	   *target;
	char	   *shadow;
	char	   *relname;
	AsOwnerState owner;
	Oid			relowner;
	bool		notnull;

	rel = OpenOwnedTable(relid, AccessShareLock);
	attnum = ColumnOfType(rel, colname, &typid, &typmod);
	if (attnum == InvalidAttrNumber)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("column \"%s\" of relation \"%s\" does not exist",
						colname, RelationGetRelationName(rel))));
	if (IsTargetType(typid, encrypt))
	{
		table_close(rel, AccessShareLock);
		PG_RETURN_NULL();
	}
	if (encrypt)
		(void) KeyClassLookup(key_class, false);
	target = TargetTypeName(typid, encrypt, key_class);
	if (target == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("column \"%s\" of relation \"%s\" is not of type %s",
						colname, RelationGetRelationName(rel),
						encrypt ? "jsonb, bytea or text" : "encrypted_jsonb, encrypted_bytea or encrypted_text")));
	shadow = ShadowName(attnum);
	relname = QualifiedRelationName(rel);
	relowner = rel->rd_rel->relowner;
	notnull = TupleDescAttr(RelationGetDescr(rel), attnum - 1)->attnotnull;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	CheckNoDependents(rel, attnum, colname);
	/* ALTER TABLE refuses a table this session has open: keep only the lock */
	table_close(rel, NoLock);
	BeginAsOwner(relowner, &owner);
	SetLocalSetting("lock_timeout", CONVERT_LOCK_TIMEOUT);
	RunSql(psprintf("LOCK TABLE ONLY %s IN ACCESS EXCLUSIVE MODE", relname),
		   0, NULL, NULL, SPI_OK_UTILITY);
	if (get_attnum(relid, shadow) == InvalidAttrNumber)
	{
		RunSql(psprintf("ALTER TABLE ONLY %s ADD COLUMN %s %s", relname,
						quote_identifier(shadow), target), 0, NULL, NULL, SPI_OK_UTILITY);
		/* a NOT NULL column: a CHECK that VALIDATE proves, so SET NOT NULL need not scan */
		if (notnull)
			RunSql(psprintf("ALTER TABLE ONLY %s ADD CONSTRAINT %s CHECK (%s IS NOT NULL) NOT VALID",
							relname, quote_identifier(shadow), quote_identifier(shadow)),
				   0, NULL, NULL, SPI_OK_UTILITY);
	}
	RunSql(psprintf("CREATE OR REPLACE TRIGGER %s BEFORE INSERT OR UPDATE ON %s "
					"FOR EACH ROW EXECUTE FUNCTION %s._convert_trigger(%s, %s)",
					CONVERT_TRIGGER, relname, ATREST_SCHEMA,
					quote_literal_cstr(colname), quote_literal_cstr(shadow)),
		   0, NULL, NULL, SPI_OK_UTILITY);
	EndAsOwner(&owner);
	SPI_finish();

	PG_RETURN_DATUM(DirectFunctionCall1(namein, CStringGetDatum(shadow)));
}

/*
 * Run "sql" (an UPDATE whose $1 is a row limit, $2.. the caller's "args") in
 * chunks as the owner of "rel", until "batch_size" rows are done, a chunk
 * finds fewer rows than it asked for, or CONVERT_BATCH_MS have passed.
 * Chunks grow while they are quick.  Returns the number of rows updated.
 */
static int64
RunBatch(Relation rel, const char *sql, int nargs, Oid *argtypes, Datum *args, int32 batch_size)
{
	AsOwnerState owner;
	Oid			types[4];
	Datum		values[4];
	int64		done = 0;
	int32		chunk = Min(batch_size, CONVERT_FIRST_CHUNK);
	instr_time	start,
				now;

	Assert(nargs < 4);
	types[0] = INT4OID;
	for (int i = 0; i < nargs; i++)
	{
		types[i + 1] = argtypes[i];
		values[i + 1] = args[i];
	}
	INSTR_TIME_SET_CURRENT(start);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	BeginAsOwner(rel->rd_rel->relowner, &owner);
	for (;;)
	{
		uint64		n;
		double		ms;

		values[0] = Int32GetDatum(Min(chunk, batch_size - done));
		n = RunSql(sql, nargs + 1, types, values, SPI_OK_UPDATE);
		done += n;
		INSTR_TIME_SET_CURRENT(now);
		INSTR_TIME_SUBTRACT(now, start);
		ms = INSTR_TIME_GET_MILLISEC(now);
		if (n < (uint64) DatumGetInt32(values[0]) || done >= batch_size || ms >= CONVERT_BATCH_MS)
			break;
		if (ms < CONVERT_BATCH_MS / 4 && chunk < batch_size / 2)
			chunk *= 2;
		CHECK_FOR_INTERRUPTS();
	}
	EndAsOwner(&owner);
	SPI_finish();
	return done;
}

/*
 * atrest._convert_batch(rel regclass, col name, shadow name,
 *                       batch_size integer) RETURNS bigint
 *
 * Fill the shadow of at most batch_size rows (through the trigger), skipping
 * rows that other transactions have locked.  Returns how many.
 */
PG_FUNCTION_INFO_V1(atrest_convert_batch);
Datum
atrest_convert_batch(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	const char *col = quote_identifier(NameStr(*PG_GETARG_NAME(1)));
	const char *shadow = quote_identifier(NameStr(*PG_GETARG_NAME(2)));
	int32		batch_size = PG_GETARG_INT32(3);
	Relation	rel = OpenOwnedTable(relid, RowExclusiveLock);
	char	   *relname = QualifiedRelationName(rel);
	int64		done;

	done = RunBatch(rel,
					psprintf("UPDATE ONLY %s SET %s = %s WHERE ctid OPERATOR(pg_catalog.=) ANY (ARRAY("
							 "SELECT ctid FROM ONLY %s WHERE %s IS NULL AND %s IS NOT NULL "
							 "LIMIT $1 FOR UPDATE SKIP LOCKED))",
							 relname, col, col, relname, shadow, col),
					0, NULL, NULL, batch_size);
	table_close(rel, NoLock);
	PG_RETURN_INT64(done);
}

/*
 * atrest._convert_pending(rel regclass, col name, shadow name) RETURNS boolean
 *
 * Whether some row still has a value in col and none in the shadow: after
 * batches that found nothing more to do, rows other transactions had locked.
 */
PG_FUNCTION_INFO_V1(atrest_convert_pending);
Datum
atrest_convert_pending(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	const char *col = quote_identifier(NameStr(*PG_GETARG_NAME(1)));
	const char *shadow = quote_identifier(NameStr(*PG_GETARG_NAME(2)));
	Relation	rel = OpenOwnedTable(relid, AccessShareLock);
	AsOwnerState owner;
	bool		pending;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	BeginAsOwner(rel->rd_rel->relowner, &owner);
	RunSql(psprintf("SELECT 1 FROM ONLY %s WHERE %s IS NULL AND %s IS NOT NULL LIMIT 1",
					QualifiedRelationName(rel), shadow, col),
		   0, NULL, NULL, SPI_OK_SELECT);
	pending = SPI_processed > 0;
	EndAsOwner(&owner);
	SPI_finish();
	table_close(rel, NoLock);
	PG_RETURN_BOOL(pending);
}

/*
 * atrest._convert_validate(rel regclass, shadow name) RETURNS void
 *
 * Validate the shadow's NOT NULL check, if it has one, under SHARE UPDATE
 * EXCLUSIVE (which does not block writers), so the swap need not scan.
 */
PG_FUNCTION_INFO_V1(atrest_convert_validate);
Datum
atrest_convert_validate(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	char	   *shadow = NameStr(*PG_GETARG_NAME(1));
	Relation	rel = OpenOwnedTable(relid, AccessShareLock);
	Oid			argtypes[2] = {OIDOID, NAMEOID};
	Datum		args[2] = {ObjectIdGetDatum(relid), CStringGetDatum(shadow)};
	AsOwnerState owner;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	args[1] = DirectFunctionCall1(namein, CStringGetDatum(shadow));
	RunSql("SELECT 1 FROM pg_catalog.pg_constraint WHERE conrelid = $1 AND conname = $2 AND NOT convalidated",
		   2, argtypes, args, SPI_OK_SELECT);
	if (SPI_processed > 0)
	{
		char	   *relname = QualifiedRelationName(rel);
		Oid			relowner = rel->rd_rel->relowner;

		/* ALTER TABLE refuses a table this session has open: keep only the lock */
		table_close(rel, NoLock);
		BeginAsOwner(relowner, &owner);
		RunSql(psprintf("ALTER TABLE ONLY %s VALIDATE CONSTRAINT %s", relname, quote_identifier(shadow)),
			   0, NULL, NULL, SPI_OK_UTILITY);
		EndAsOwner(&owner);
	}
	else
		table_close(rel, NoLock);
	SPI_finish();
	PG_RETURN_VOID();
}

/*
 * atrest._convert_swap(rel regclass, col name, shadow name) RETURNS xid
 *
 * Under ACCESS EXCLUSIVE (with lock_timeout: lock_not_available means "try
 * again"): convert any row the trigger missed (a disabled trigger, a
 * replication apply), move the default and NOT NULL to the shadow, drop the
 * trigger and the column, and give the shadow the column's name.  Returns
 * this transaction's id: every row version written before the swap has an
 * xmin at or before it.
 */
PG_FUNCTION_INFO_V1(atrest_convert_swap);
Datum
atrest_convert_swap(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	char	   *colname = NameStr(*PG_GETARG_NAME(1));
	char	   *shadow = NameStr(*PG_GETARG_NAME(2));
	Relation	rel = OpenOwnedTable(relid, AccessShareLock);
	char	   *relname = QualifiedRelationName(rel);
	Oid			relowner = rel->rd_rel->relowner;
	const char *col = quote_identifier(colname);
	const char *qshadow = quote_identifier(shadow);
	AsOwnerState owner;
	Oid			typid;
	int32		typmod;
	AttrNumber	attnum;
	bool		hasdef;
	bool		notnull;
	TransactionId xid;

	/* ALTER TABLE refuses a table this session has open: keep only the lock */
	table_close(rel, NoLock);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	BeginAsOwner(relowner, &owner);
	SetLocalSetting("lock_timeout", CONVERT_LOCK_TIMEOUT);
	RunSql(psprintf("LOCK TABLE ONLY %s IN ACCESS EXCLUSIVE MODE", relname),
		   0, NULL, NULL, SPI_OK_UTILITY);
	rel = table_open(relid, NoLock);
	attnum = ColumnOfType(rel, colname, &typid, &typmod);
	if (attnum == InvalidAttrNumber ||
		ColumnOfType(rel, shadow, &typid, &typmod) == InvalidAttrNumber)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table \"%s\" changed during the conversion of column \"%s\"",
						RelationGetRelationName(rel), colname)));
	CheckNoDependents(rel, attnum, colname);
	hasdef = TupleDescAttr(RelationGetDescr(rel), attnum - 1)->atthasdef;
	notnull = TupleDescAttr(RelationGetDescr(rel), attnum - 1)->attnotnull;
	table_close(rel, NoLock);

	RunSql(psprintf("UPDATE ONLY %s SET %s = %s WHERE %s IS NULL AND %s IS NOT NULL",
					relname, col, col, qshadow, col),
		   0, NULL, NULL, SPI_OK_UPDATE);
	RunSql(psprintf("DROP TRIGGER %s ON %s", CONVERT_TRIGGER, relname),
		   0, NULL, NULL, SPI_OK_UTILITY);
	if (hasdef)
	{
		Oid			argtypes[2] = {OIDOID, INT2OID};
		Datum		args[2] = {ObjectIdGetDatum(relid), Int16GetDatum(attnum)};

		/* deparsed under our search_path, so every name outside pg_catalog is qualified */
		RunSql("SELECT pg_catalog.pg_get_expr(adbin, adrelid) FROM pg_catalog.pg_attrdef "
			   "WHERE adrelid = $1 AND adnum = $2", 2, argtypes, args, SPI_OK_SELECT);
		if (SPI_processed == 1)
			RunSql(psprintf("ALTER TABLE ONLY %s ALTER COLUMN %s SET DEFAULT %s", relname, qshadow,
							SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1)),
				   0, NULL, NULL, SPI_OK_UTILITY);
	}
	if (notnull)
	{
		/* proven by the validated CHECK: no scan */
		RunSql(psprintf("ALTER TABLE ONLY %s ALTER COLUMN %s SET NOT NULL", relname, qshadow),
			   0, NULL, NULL, SPI_OK_UTILITY);
		RunSql(psprintf("ALTER TABLE ONLY %s DROP CONSTRAINT IF EXISTS %s", relname, qshadow),
			   0, NULL, NULL, SPI_OK_UTILITY);
	}
	RunSql(psprintf("ALTER TABLE ONLY %s DROP COLUMN %s", relname, col),
		   0, NULL, NULL, SPI_OK_UTILITY);
	RunSql(psprintf("ALTER TABLE ONLY %s RENAME COLUMN %s TO %s", relname, qshadow, col),
		   0, NULL, NULL, SPI_OK_UTILITY);
	EndAsOwner(&owner);
	SPI_finish();

	/* the subtransaction the procedure runs us in: every write above used it */
	xid = GetCurrentTransactionId();
	PG_RETURN_TRANSACTIONID(xid);
}

/*
 * atrest._convert_rewrite(rel regclass, col name, since xid,
 *                         batch_size integer) RETURNS bigint
 *
 * Rewrite at most batch_size rows whose current version was written by
 * transaction "since" or earlier (frozen rows included), skipping locked rows:
 * the new version leaves out the dropped column, and the old version's TOAST
 * values of that column are deleted with it.
 */
PG_FUNCTION_INFO_V1(atrest_convert_rewrite);
Datum
atrest_convert_rewrite(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	const char *col = quote_identifier(NameStr(*PG_GETARG_NAME(1)));
	Datum		since = PG_GETARG_DATUM(2);
	int32		batch_size = PG_GETARG_INT32(3);
	Relation	rel = OpenOwnedTable(relid, RowExclusiveLock);
	char	   *relname = QualifiedRelationName(rel);
	Oid			argtypes[1] = {XIDOID};
	int64		done;

	/* age() counts back from one stable point: age(xmin) >= age(since) iff xmin <= since */
	done = RunBatch(rel,
					psprintf("UPDATE ONLY %s SET %s = %s WHERE ctid OPERATOR(pg_catalog.=) ANY (ARRAY("
							 "SELECT ctid FROM ONLY %s WHERE pg_catalog.age(xmin) OPERATOR(pg_catalog.>=) pg_catalog.age($2) "
							 "LIMIT $1 FOR UPDATE SKIP LOCKED))",
							 relname, col, col, relname),
					1, argtypes, &since, batch_size);
	table_close(rel, NoLock);
	PG_RETURN_INT64(done);
}

/*
 * atrest._convert_rewrite_pending(rel regclass, since xid) RETURNS boolean
 *
 * Whether some row's current version was written by "since" or earlier.
 */
PG_FUNCTION_INFO_V1(atrest_convert_rewrite_pending);
Datum
atrest_convert_rewrite_pending(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	Datum		since = PG_GETARG_DATUM(1);
	Relation	rel = OpenOwnedTable(relid, AccessShareLock);
	Oid			argtypes[1] = {XIDOID};
	AsOwnerState owner;
	bool		pending;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	BeginAsOwner(rel->rd_rel->relowner, &owner);
	RunSql(psprintf("SELECT 1 FROM ONLY %s WHERE pg_catalog.age(xmin) OPERATOR(pg_catalog.>=) pg_catalog.age($1) LIMIT 1",
					QualifiedRelationName(rel)),
		   1, argtypes, &since, SPI_OK_SELECT);
	pending = SPI_processed > 0;
	EndAsOwner(&owner);
	SPI_finish();
	table_close(rel, NoLock);
	PG_RETURN_BOOL(pending);
}

/*
 * atrest._convert_scrub(rel regclass, since xid) RETURNS boolean
 *
 * Once no snapshot can see a row version deleted before transaction "since"
 * (the first id after the rewrite), prune every page of the table and of its
 * TOAST table and zero what the removed versions left.  Returns false, and
 * changes nothing, while older snapshots remain, or if a page still held a
 * removable version (the procedure tries again).
 */
PG_FUNCTION_INFO_V1(atrest_convert_scrub);
Datum
atrest_convert_scrub(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	TransactionId since = PG_GETARG_TRANSACTIONID(1);
	Relation	rel = OpenOwnedTable(relid, AccessShareLock);
	TransactionId horizon = GetOldestNonRemovableTransactionId(rel);
	bool		clean;

	table_close(rel, NoLock);
	if (!TransactionIdFollowsOrEquals(horizon, since))
		PG_RETURN_BOOL(false);
	clean = ScrubRelationPages(relid, true);
	PG_RETURN_BOOL(clean);
}

/*
 * atrest._convert_trigger(): BEFORE INSERT OR UPDATE FOR EACH ROW, arguments
 * (col, shadow).  Sets the shadow to col cast to the shadow's type (with its
 * typmod: the key class), unless an UPDATE left col as it was and the shadow
 * is already filled.  Runs with the rights of the writer.
 */
PG_FUNCTION_INFO_V1(atrest_convert_trigger);
Datum
atrest_convert_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	TupleDesc	desc;
	HeapTuple	tuple;
	int			src,
				dst;
	Datum		value;
	bool		isnull,
				dstnull;
	Form_pg_attribute srcatt,
				dstatt;
	Oid			funcid;
	int			cols[1];
	Datum		newval[1];
	bool		newnull[1];

	if (!CALLED_AS_TRIGGER(fcinfo) ||
		!TRIGGER_FIRED_BEFORE(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) ||
		!(TRIGGER_FIRED_BY_INSERT(trigdata->tg_event) || TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event)) ||
		trigdata->tg_trigger->tgnargs != 2)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("atrest._convert_trigger() must be a BEFORE INSERT OR UPDATE row trigger with two arguments")));

	desc = RelationGetDescr(trigdata->tg_relation);
	tuple = TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) ? trigdata->tg_newtuple : trigdata->tg_trigtuple;
	src = SPI_fnumber(desc, trigdata->tg_trigger->tgargs[0]);
	dst = SPI_fnumber(desc, trigdata->tg_trigger->tgargs[1]);
	if (src <= 0 || dst <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("table \"%s\" has no column \"%s\" or \"%s\"",
						RelationGetRelationName(trigdata->tg_relation),
						trigdata->tg_trigger->tgargs[0], trigdata->tg_trigger->tgargs[1])));
	srcatt = TupleDescAttr(desc, src - 1);
	dstatt = TupleDescAttr(desc, dst - 1);

	value = heap_getattr(tuple, src, desc, &isnull);
	(void) heap_getattr(tuple, dst, desc, &dstnull);
	if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) && !dstnull)
	{
		bool		oldnull;
		Datum		old = heap_getattr(trigdata->tg_trigtuple, src, desc, &oldnull);

		if (oldnull == isnull &&
			(isnull || datumIsEqual(old, value, srcatt->attbyval, srcatt->attlen)))
			return PointerGetDatum(tuple);
	}

	newnull[0] = isnull;
	newval[0] = (Datum) 0;
	if (!isnull)
	{
		if (find_coercion_pathway(dstatt->atttypid, srcatt->atttypid, COERCION_ASSIGNMENT,
								  &funcid) != COERCION_PATH_FUNC)
			ereport(ERROR,
					(errcode(ERRCODE_CANNOT_COERCE),
					 errmsg("no cast from %s to %s", format_type_be(srcatt->atttypid),
							format_type_be(dstatt->atttypid))));
		if (get_func_nargs(funcid) == 3)
			newval[0] = OidFunctionCall3(funcid, value, Int32GetDatum(dstatt->atttypmod),
										 BoolGetDatum(false));
		else
			newval[0] = OidFunctionCall1(funcid, value);
	}
	cols[0] = dst;
	return PointerGetDatum(heap_modify_tuple_by_cols(tuple, desc, 1, cols, newval, newnull));
}
