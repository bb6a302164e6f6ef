/*
 * reencrypt.c
 *		The statements of atrest.reencrypt that touch the user's table.
 *
 * atrest.reencrypt (a procedure in pg_atrest--1.1.sql) walks a table and its
 * partitions or inheritance children, and commits after each batch.  Each
 * batch, and the check for rows it had to skip, is one call here, made as the
 * table's owner under SECURITY_RESTRICTED_OPERATION (owner.c): the table's
 * triggers and policies are its owner's code, and the caller is often a
 * superuser.
 *
 * Invariants: every statement names one relation with ONLY, so a ctid never
 * matches a row of another child; rows locked by other transactions are
 * skipped (SKIP LOCKED) and found again by atrest._reencrypt_pending.  These
 * functions are executable by PUBLIC but do nothing for a caller who could not
 * run atrest.reencrypt itself: the caller must have EXECUTE on it, and SELECT
 * and UPDATE on the column of the table that was named to it.
 */
#include "postgres.h"

#include "access/table.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_inherits.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/catcache.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "keyring.h"
#include "owner.h"
#include "pg_atrest.h"

/* Whether "typid" is one of our three encrypted types. */
static bool
IsEncryptedType(Oid typid)
{
	static const char *const names[] = {"encrypted_jsonb", "encrypted_bytea", "encrypted_text"};
	Oid			nsp = get_namespace_oid(ATREST_SCHEMA, false);

	for (int i = 0; i < lengthof(names); i++)
	{
		if (typid == GetSysCacheOid2(TYPENAMENSP, Anum_pg_type_oid,
									 CStringGetDatum(names[i]), ObjectIdGetDatum(nsp)))
			return true;
	}
	return false;
}

/* Whether the current user may SELECT and UPDATE column "attnum" of "relid". */
static bool
ColumnPrivilege(Oid relid, AttrNumber attnum, AclMode mode)
{
	Oid			userid = GetUserId();

	return pg_class_aclcheck(relid, userid, mode) == ACLCHECK_OK ||
		pg_attribute_aclcheck(relid, attnum, userid, mode) == ACLCHECK_OK;
}

/* The oid of the procedure atrest.reencrypt; InvalidOid if there is none. */
static Oid
ReencryptProcedure(void)
{
	Oid			nsp = get_namespace_oid(ATREST_SCHEMA, false);
	Oid			result = InvalidOid;
	CatCList   *list = SearchSysCacheList1(PROCNAMEARGSNSP, CStringGetDatum("reencrypt"));

	for (int i = 0; i < list->n_members; i++)
	{
		Form_pg_proc proc = (Form_pg_proc) GETSTRUCT(&list->members[i]->tuple);

		if (proc->pronamespace == nsp && proc->prokind == PROKIND_PROCEDURE)
			result = proc->oid;
	}
	ReleaseSysCacheList(list);
	return result;
}

/*
 * Check that the caller could run atrest.reencrypt(root, col) and that "part"
 * is root or one of its partitions or inheritance children.  Raises 42501,
 * 42703 or 42P01.
 */
static void
CheckCaller(Oid root, Oid part, const char *colname)
{
	Oid			proc;
	AttrNumber	attnum;
	char	   *relname = get_rel_name(root);

	proc = ReencryptProcedure();
	if (!OidIsValid(proc) || AtrestProcAclCheck(proc, GetUserId(), ACL_EXECUTE) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for procedure reencrypt")));
	if (relname == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", root)));
	attnum = get_attnum(root, colname);
	if (attnum == InvalidAttrNumber)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("column \"%s\" of relation \"%s\" does not exist", colname, relname)));
	if (!ColumnPrivilege(root, attnum, ACL_SELECT) || !ColumnPrivilege(root, attnum, ACL_UPDATE))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for table %s", relname),
				 errdetail("Re-encrypting a column needs SELECT and UPDATE on it.")));
	if (part != root && !list_member_oid(find_all_inheritors(root, NoLock, NULL), part))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("\"%s\" is not a partition or child of \"%s\"",
						get_rel_name(part), relname)));
}

/*
 * Open and lock "part" and check that "colname" is an encrypted column of it;
 * sets *class_id to the column's key class.
 */
static Relation
OpenTarget(Oid part, const char *colname, LOCKMODE lockmode, int32 *class_id)
{
	Relation	rel = try_table_open(part, lockmode);
	Oid			typid;
	int32		typmod;

	if (rel == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", part)));
	if (rel->rd_rel->relkind != RELKIND_RELATION)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not a table", RelationGetRelationName(rel))));
	if (ColumnOfType(rel, colname, &typid, &typmod) == InvalidAttrNumber)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("column \"%s\" of relation \"%s\" does not exist",
						colname, RelationGetRelationName(rel))));
	if (!IsEncryptedType(typid))
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("column \"%s\" of relation \"%s\" is not of an encrypted type",
						colname, RelationGetRelationName(rel))));
	*class_id = typmod < 0 ? ATREST_DEFAULT_CLASS : typmod;
	return rel;
}

/*
 * atrest._reencrypt_targets(rel regclass, col name) RETURNS regclass[]
 *
 * The tables whose rows atrest.reencrypt(rel, col) rewrites: rel itself
 * unless it is partitioned, and every partition and inheritance child below it
 * that stores rows (foreign tables are left out).
 */
PG_FUNCTION_INFO_V1(atrest_reencrypt_targets);
Datum
atrest_reencrypt_targets(PG_FUNCTION_ARGS)
{
	Oid			root;
	char	   *colname;
	char		relkind;
	Oid			typid;
	int32		typmod;
	Oid			collation;
	AttrNumber	attnum;
	List	   *all;
	ListCell   *lc;
	Datum	   *elems;
	int			n = 0;

	RequireArgument(fcinfo, 0, "atrest._reencrypt_targets", "rel");
	RequireArgument(fcinfo, 1, "atrest._reencrypt_targets", "col");
	root = PG_GETARG_OID(0);
	colname = NameStr(*PG_GETARG_NAME(1));
	CheckCaller(root, root, colname);
	relkind = get_rel_relkind(root);
	if (relkind != RELKIND_RELATION && relkind != RELKIND_PARTITIONED_TABLE)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not a table", get_rel_name(root))));
	attnum = get_attnum(root, colname);
	get_atttypetypmodcoll(root, attnum, &typid, &typmod, &collation);
	if (!IsEncryptedType(typid))
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("column \"%s\" of relation \"%s\" is not of an encrypted type",
						colname, get_rel_name(root))));

	all = find_all_inheritors(root, NoLock, NULL);
	elems = palloc(sizeof(Datum) * list_length(all));
	foreach(lc, all)
	{
		Oid			relid = lfirst_oid(lc);

		if (get_rel_relkind(relid) == RELKIND_RELATION)
			elems[n++] = ObjectIdGetDatum(relid);
	}
	PG_RETURN_ARRAYTYPE_P(construct_array(elems, n, REGCLASSOID, sizeof(Oid), true, TYPALIGN_INT));
}

/*
 * atrest._reencrypt_batch(root regclass, part regclass, col name,
 *                         batch_size integer) RETURNS bigint
 *
 * Re-seal at most batch_size values of column col of part (root, or one of
 * its partitions or children) that are not under their class's active key,
 * skipping rows other transactions have locked.  Returns how many.
 */
PG_FUNCTION_INFO_V1(atrest_reencrypt_batch);
Datum
atrest_reencrypt_batch(PG_FUNCTION_ARGS)
{
	Oid			root;
	Oid			part;
	char	   *colname;
	int32		batch_size;
	Relation	rel;
	int32		class_id;
	char	   *relname;
	const char *col;
	char	   *query;
	Oid			argtypes[2] = {INT4OID, INT4OID};
	Datum		args[2];
	AsOwnerState owner;
	int			rc;
	uint64		done;

	RequireArgument(fcinfo, 0, "atrest._reencrypt_batch", "root");
	RequireArgument(fcinfo, 1, "atrest._reencrypt_batch", "part");
	RequireArgument(fcinfo, 2, "atrest._reencrypt_batch", "col");
	RequireArgument(fcinfo, 3, "atrest._reencrypt_batch", "batch_size");
	root = PG_GETARG_OID(0);
	part = PG_GETARG_OID(1);
	colname = NameStr(*PG_GETARG_NAME(2));
	batch_size = PG_GETARG_INT32(3);
	if (batch_size < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("batch_size must be at least 1")));
	CheckCaller(root, part, colname);
	rel = OpenTarget(part, colname, RowExclusiveLock, &class_id);
	relname = QualifiedRelationName(rel);
	col = quote_identifier(colname);
	query = psprintf("UPDATE ONLY %s SET %s = atrest._reseal(%s, $1) WHERE ctid = ANY (ARRAY("
					 "SELECT ctid FROM ONLY %s WHERE %s IS NOT NULL AND atrest._needs_reseal(%s, $1) "
					 "LIMIT $2 FOR UPDATE SKIP LOCKED))",
					 relname, col, col, relname, col, col);
	args[0] = Int32GetDatum(class_id);
	args[1] = Int32GetDatum(batch_size);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	BeginAsOwner(rel->rd_rel->relowner, &owner);
	rc = SPI_execute_with_args(query, 2, argtypes, args, NULL, false, 0);
	if (rc != SPI_OK_UPDATE)
		elog(ERROR, "SPI_execute_with_args returned %s", SPI_result_code_string(rc));
	done = SPI_processed;
	EndAsOwner(&owner);
	SPI_finish();

	table_close(rel, NoLock);
	PG_RETURN_INT64((int64) done);
}

/*
 * atrest._reencrypt_pending(root regclass, part regclass, col name)
 * RETURNS boolean
 *
 * Whether some value of col in part is still not under its class's active
 * key: after batches that found nothing more to do, these are rows that were
 * locked by other transactions.
 */
PG_FUNCTION_INFO_V1(atrest_reencrypt_pending);
Datum
atrest_reencrypt_pending(PG_FUNCTION_ARGS)
{
	Oid			root;
	Oid			part;
	char	   *colname;
	Relation	rel;
	int32		class_id;
	const char *col;
	char	   *query;
	Oid			argtypes[1] = {INT4OID};
	Datum		args[1];
	AsOwnerState owner;
	int			rc;
	bool		pending;

	RequireArgument(fcinfo, 0, "atrest._reencrypt_pending", "root");
	RequireArgument(fcinfo, 1, "atrest._reencrypt_pending", "part");
	RequireArgument(fcinfo, 2, "atrest._reencrypt_pending", "col");
	root = PG_GETARG_OID(0);
	part = PG_GETARG_OID(1);
	colname = NameStr(*PG_GETARG_NAME(2));
	CheckCaller(root, part, colname);
	rel = OpenTarget(part, colname, AccessShareLock, &class_id);
	col = quote_identifier(colname);
	query = psprintf("SELECT 1 FROM ONLY %s WHERE %s IS NOT NULL AND atrest._needs_reseal(%s, $1) LIMIT 1",
					 QualifiedRelationName(rel), col, col);
	args[0] = Int32GetDatum(class_id);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	BeginAsOwner(rel->rd_rel->relowner, &owner);
	rc = SPI_execute_with_args(query, 1, argtypes, args, NULL, true, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute_with_args returned %s", SPI_result_code_string(rc));
	pending = SPI_processed > 0;
	EndAsOwner(&owner);
	SPI_finish();

	table_close(rel, NoLock);
	PG_RETURN_BOOL(pending);
}
