/*
 * keyscrub.h
 *		Scrubbing the key tables after a key change, so that superseded
 *		wrapped keys leave their files.
 */
#ifndef ATREST_KEYSCRUB_H
#define ATREST_KEYSCRUB_H

#include "fmgr.h"

extern void KeyScrubRequest(Oid key_tables_owner);
extern bool KeyScrubLaunch(Oid dboid, Oid roleid, TransactionId limit);
extern Oid	KeyScrubRole(Oid key_tables_owner);

extern PGDLLEXPORT void atrest_keyscrub_main(Datum main_arg);

#endif							/* ATREST_KEYSCRUB_H */
