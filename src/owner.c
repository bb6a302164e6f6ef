/*
 * owner.c
 *		Running statements on a user's table as that table's owner.
 *
 * The retention purge, the retention status and re-encryption touch tables
 * that belong to other roles, on behalf of a superuser or of the pg_cron job.
 * Whatever such a statement runs of the table's own (triggers, defaults, check
 * constraints, index expressions, row-level security policies, functions of
 * the column's type) must run with the owner's rights only.  We do what VACUUM,
 * ANALYZE and REFRESH MATERIALIZED VIEW do: switch to the owner's user id with
 * SECURITY_RESTRICTED_OPERATION, and open a GUC nest level whose search_path
 * is "pg_catalog, pg_temp", so neither the caller's nor the owner's settings
 * choose the functions and operators our statements name.
 *
 * Invariant: BeginAsOwner and EndAsOwner pair up within one C function call,
 * and no transaction ends between them.  An ERROR between them needs no
 * PG_TRY: (sub)transaction abort restores the user id, the security context
 * and the GUC nest level, as it does for REFRESH MATERIALIZED VIEW.
 */
#include "postgres.h"

#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "owner.h"

/*
 * Become "owner" under SECURITY_RESTRICTED_OPERATION with a safe search_path
 * until EndAsOwner(state).
 */
void
BeginAsOwner(Oid owner, AsOwnerState *state)
{
	GetUserIdAndSecContext(&state->save_userid, &state->save_sec_context);
	SetUserIdAndSecContext(owner,
						   state->save_sec_context |
						   SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	state->save_nestlevel = NewGUCNestLevel();
	SetLocalSetting("search_path", "pg_catalog, pg_temp");
}

/* Undo BeginAsOwner: the settings made since, then the user id. */
void
EndAsOwner(AsOwnerState *state)
{
	AtEOXact_GUC(false, state->save_nestlevel);
	SetUserIdAndSecContext(state->save_userid, state->save_sec_context);
}

/* Set a setting until EndAsOwner; only between BeginAsOwner and EndAsOwner. */
void
SetLocalSetting(const char *name, const char *value)
{
	(void) set_config_option(name, value, PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
}

/* The schema-qualified, quoted name of "rel", for building a statement. */
char *
QualifiedRelationName(Relation rel)
{
	return quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
									  RelationGetRelationName(rel));
}

/*
 * The attribute number of column "colname" of "rel", with its type and typmod;
 * InvalidAttrNumber if it has no such (live, user) column.  Read from the
 * relation's descriptor, so it holds as long as the caller's lock does.
 */
AttrNumber
ColumnOfType(Relation rel, const char *colname, Oid *typid, int32 *typmod)
{
	TupleDesc	desc = RelationGetDescr(rel);

	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (!att->attisdropped && strcmp(NameStr(att->attname), colname) == 0)
		{
			*typid = att->atttypid;
			*typmod = att->atttypmod;
			return att->attnum;
		}
	}
	return InvalidAttrNumber;
}
