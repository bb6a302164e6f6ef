/*
 * retention.c
 *		The statements of the retention purge that touch a policy's table.
 *
 * Policies, their record and the loop over them are SQL (pg_atrest--1.1.sql);
 * the two statements that read or delete rows of a policy's table live here,
 * because they must run as the table's owner (owner.c): the purge runs as a
 * superuser or as the pg_cron job, and the table's triggers, policies and
 * column type are its owner's code.
 *
 * Invariant: before each statement the table is locked (the lock is held to
 * the end of the transaction) and its time column checked again to be of type
 * timestamptz or timestamp, so that the comparison and the sort are the
 * built-in ones of pg_catalog whatever the owner has done since the policy was
 * added.
 */
#include "postgres.h"

#include "access/table.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

#include "owner.h"
#include "pg_atrest.h"

/*
 * Open and lock the table of a policy and check its time column.  With
 * missing_ok, return NULL when the check fails; otherwise raise the reason.
 */
static Relation
OpenPolicyTable(Oid relid, const char *colname, LOCKMODE lockmode, bool missing_ok)
{
	Relation	rel;
	AttrNumber	attnum;
	Oid			typid;
	int32		typmod;

	rel = try_table_open(relid, lockmode);
	if (rel == NULL)
	{
		if (missing_ok)
			return NULL;
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", relid)));
	}
	if (rel->rd_rel->relkind != RELKIND_RELATION)
	{
		if (missing_ok)
		{
			table_close(rel, lockmode);
			return NULL;
		}
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not a table", RelationGetRelationName(rel))));
	}
	attnum = ColumnOfType(rel, colname, &typid, &typmod);
	if (attnum == InvalidAttrNumber)
	{
		if (missing_ok)
		{
			table_close(rel, lockmode);
			return NULL;
		}
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("column \"%s\" of relation \"%s\" does not exist",
						colname, RelationGetRelationName(rel)),
				 errhint("Drop the policy with atrest.remove_retention_policy, or add it again with the column's new name.")));
	}
	if (typid != TIMESTAMPTZOID && typid != TIMESTAMPOID)
	{
		if (missing_ok)
		{
			table_close(rel, lockmode);
			return NULL;
		}
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("column \"%s\" of relation \"%s\" is of type %s, not a timestamp",
						colname, RelationGetRelationName(rel), format_type_be(typid)),
				 errhint("A retention policy needs a column of type timestamp with time zone or timestamp without time zone.")));
	}
	return rel;
}

/*
 * atrest._purge_batch(rel regclass, time_column name, cutoff timestamptz,
 *                     batch_size integer) RETURNS bigint
 *
 * Delete one batch of at most batch_size rows of rel whose time_column is
 * before cutoff, oldest first, through the column's index; rows that another
 * transaction has locked are left for the next run.  Returns the count.  The
 * planner settings keep it on the index even when most of the table has
 * expired (a sequential scan and sort would read every expired row for each
 * batch); without an index it still runs, by a sequential scan.
 */
PG_FUNCTION_INFO_V1(atrest_purge_batch);
Datum
atrest_purge_batch(PG_FUNCTION_ARGS)
{
	Oid			relid;
	Name		colname;
	TimestampTz cutoff;
	int32		batch_size;
	Relation	rel;
	char	   *relname;
	const char *col;
	char	   *query;
	Oid			argtypes[2] = {TIMESTAMPTZOID, INT4OID};
	Datum		args[2];
	AsOwnerState owner;
	int			rc;
	uint64		deleted;

	RequireArgument(fcinfo, 0, "atrest._purge_batch", "rel");
	RequireArgument(fcinfo, 1, "atrest._purge_batch", "time_column");
	RequireArgument(fcinfo, 2, "atrest._purge_batch", "cutoff");
	RequireArgument(fcinfo, 3, "atrest._purge_batch", "batch_size");
	relid = PG_GETARG_OID(0);
	colname = PG_GETARG_NAME(1);
	cutoff = PG_GETARG_TIMESTAMPTZ(2);
	batch_size = PG_GETARG_INT32(3);
	if (batch_size < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("batch_size must be at least 1")));

	rel = OpenPolicyTable(relid, NameStr(*colname), RowExclusiveLock, false);
	relname = QualifiedRelationName(rel);
	col = quote_identifier(NameStr(*colname));
	query = psprintf("DELETE FROM ONLY %s WHERE ctid = ANY (ARRAY("
					 "SELECT ctid FROM ONLY %s WHERE %s < $1 ORDER BY %s LIMIT $2 "
					 "FOR UPDATE SKIP LOCKED))",
					 relname, relname, col, col);
	args[0] = TimestampTzGetDatum(cutoff);
	args[1] = Int32GetDatum(batch_size);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	BeginAsOwner(rel->rd_rel->relowner, &owner);
	SetLocalSetting("enable_seqscan", "off");
	SetLocalSetting("enable_bitmapscan", "off");
	SetLocalSetting("enable_sort", "off");
	rc = SPI_execute_with_args(query, 2, argtypes, args, NULL, false, 0);
	if (rc != SPI_OK_DELETE)
		elog(ERROR, "SPI_execute_with_args returned %s", SPI_result_code_string(rc));
	deleted = SPI_processed;
	EndAsOwner(&owner);
	SPI_finish();

	table_close(rel, NoLock);
	PG_RETURN_INT64((int64) deleted);
}

/*
 * atrest._expired_rows(rel regclass, time_column name, cutoff timestamptz)
 * RETURNS bigint
 *
 * How many rows of rel have a time_column before cutoff, counted as the
 * table's owner; NULL when the table or its timestamp column is gone.
 */
PG_FUNCTION_INFO_V1(atrest_expired_rows);
Datum
atrest_expired_rows(PG_FUNCTION_ARGS)
{
	Oid			relid;
	Name		colname;
	TimestampTz cutoff;
	Relation	rel;
	char	   *query;
	Oid			argtypes[1] = {TIMESTAMPTZOID};
	Datum		args[1];
	AsOwnerState owner;
	int			rc;
	bool		isnull;
	int64		count;

	RequireArgument(fcinfo, 0, "atrest._expired_rows", "rel");
	RequireArgument(fcinfo, 1, "atrest._expired_rows", "time_column");
	RequireArgument(fcinfo, 2, "atrest._expired_rows", "cutoff");
	relid = PG_GETARG_OID(0);
	colname = PG_GETARG_NAME(1);
	cutoff = PG_GETARG_TIMESTAMPTZ(2);
	rel = OpenPolicyTable(relid, NameStr(*colname), AccessShareLock, true);
	if (rel == NULL)
		PG_RETURN_NULL();
	query = psprintf("SELECT pg_catalog.count(*) FROM ONLY %s WHERE %s < $1",
					 QualifiedRelationName(rel), quote_identifier(NameStr(*colname)));
	args[0] = TimestampTzGetDatum(cutoff);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	BeginAsOwner(rel->rd_rel->relowner, &owner);
	rc = SPI_execute_with_args(query, 1, argtypes, args, NULL, true, 1);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "SPI_execute_with_args returned %s", SPI_result_code_string(rc));
	count = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	EndAsOwner(&owner);
	SPI_finish();

	table_close(rel, NoLock);
	PG_RETURN_INT64(count);
}
