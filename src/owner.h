/*
 * owner.h
 *		Running statements on a user's table as that table's owner.
 */
#ifndef ATREST_OWNER_H
#define ATREST_OWNER_H

#include "utils/relcache.h"

/* What BeginAsOwner saved, for EndAsOwner to restore. */
typedef struct AsOwnerState
{
	Oid			save_userid;
	int			save_sec_context;
	int			save_nestlevel;
} AsOwnerState;

extern void BeginAsOwner(Oid owner, AsOwnerState *state);
extern void EndAsOwner(AsOwnerState *state);
extern void SetLocalSetting(const char *name, const char *value);

extern char *QualifiedRelationName(Relation rel);
extern AttrNumber ColumnOfType(Relation rel, const char *colname, Oid *typid, int32 *typmod);

#endif							/* ATREST_OWNER_H */
