/*
 * pg_atrest.h
 *		Declarations shared by every part of pg_atrest: settings, SQLSTATEs and
 *		the identities of the key tables.
 *
 * The extension lives in the fixed schema "atrest" (the control file makes it
 * non-relocatable), so C code may name its tables by schema and name.
 */
#ifndef PG_ATREST_H
#define PG_ATREST_H

#include "fmgr.h"
#include "utils/elog.h"

#if PG_VERSION_NUM < 150000
#error "pg_atrest needs PostgreSQL 15 or later"
#endif

/*
 * PostgreSQL 18 replaced pg_attribute_noreturn(), written after a declaration,
 * with pg_noreturn, written before it.  Earlier versions get pg_noreturn from
 * the old macro (GCC and clang accept the attribute in front).
 */
#ifndef pg_noreturn
#define pg_noreturn pg_attribute_noreturn()
#endif

#define ATREST_SCHEMA			"atrest"

/*
 * SQLSTATEs of our own, in class "AT".  AT001: the root of the key hierarchy
 * (service key or customer-managed key) cannot be used right now.  AT404: an
 * analyze result or model does not exist (or no longer exists).
 */
#define ERRCODE_ATREST_KEY_UNAVAILABLE	MAKE_SQLSTATE('A','T','0','0','1')
#define ERRCODE_ATREST_NOT_FOUND		MAKE_SQLSTATE('A','T','4','0','4')
/* AT410: a value names a data key version that atrest.retire_data_key() destroyed */
#define ERRCODE_ATREST_KEY_RETIRED		MAKE_SQLSTATE('A','T','4','1','0')

/* settings (pg_atrest.c) */
extern char *atrest_service_key_command;
extern char *atrest_service_key_file;
extern int	atrest_key_cache_ttl;

/* small helpers */
extern int	HexDigitValue(char c);
extern void RequireArgument(FunctionCallInfo fcinfo, int argno, const char *fn, const char *what);

/* subsystem initialisation, called from _PG_init */
extern void KeyringInit(void);
extern void ServiceKeyInit(void);
extern void StoreInit(void);

/*
 * Privilege checks by object: PostgreSQL 16 replaced pg_proc_aclcheck() and
 * pg_class_ownercheck() by object_aclcheck() and object_ownercheck().
 * Callers include utils/acl.h, catalog/pg_class.h and catalog/pg_proc.h.
 */
#if PG_VERSION_NUM >= 160000
#define AtrestProcAclCheck(proc, role, mode) \
	object_aclcheck(ProcedureRelationId, (proc), (role), (mode))
#define AtrestRelOwnerCheck(relid, role) \
	object_ownercheck(RelationRelationId, (relid), (role))
#else
#define AtrestProcAclCheck(proc, role, mode) pg_proc_aclcheck((proc), (role), (mode))
#define AtrestRelOwnerCheck(relid, role) pg_class_ownercheck((relid), (role))
#endif

#endif							/* PG_ATREST_H */
