/*
 * pg_atrest.c
 *		Module entry point: settings and subsystem initialisation.
 *
 * _PG_init may run in the postmaster (shared_preload_libraries) or in a
 * backend.  It only defines settings and registers callbacks; no key
 * material is touched here, so nothing secret is ever inherited by forked
 * processes.  Every key is loaded lazily by the backend that needs it.
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/guc.h"

#include "pg_atrest.h"
#include "keyshare.h"
#include "provider.h"
#include "wire.h"

PG_MODULE_MAGIC;

char	   *atrest_service_key_command = NULL;
char	   *atrest_service_key_file = NULL;
int			atrest_key_cache_ttl = 300;

void		_PG_init(void);

void
_PG_init(void)
{
	DefineCustomStringVariable("atrest.service_key_command",
							   "Command that prints the service key as 64 hexadecimal digits.",
							   "When set, it takes precedence over atrest.service_key_file. "
							   "The command runs through the shell in the backend that needs the key.",
							   &atrest_service_key_command,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("atrest.service_key_file",
							   "File that holds the service key as 64 hexadecimal digits.",
							   "When neither this nor atrest.service_key_command is set, a key is generated "
							   "into pg_atrest/service.key inside the data directory, which is fine for trying "
							   "pg_atrest out but not for production.",
							   &atrest_service_key_file,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("atrest.key_cache_ttl",
							"How long a backend trusts an unwrapped database key before asking the root-key provider again.",
							"This bounds how long encrypted data stays readable after a customer-managed key is revoked.",
							&atrest_key_cache_ttl,
							300, 1, 86400,
							PGC_SUSET,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	ServiceKeyInit();
	Pkcs11ProviderInit();
	CommandProviderInit();
	AzureProviderInit();
	KmipProviderInit();
	KeyringInit();
	SharedKeyCacheInit();
	StoreInit();
	WireInit();
	IndexGuardInit();

	MarkGUCPrefixReserved("atrest");
}

/*
 * ereport 22004 if argument "argno" (named "what") of SQL function "fn" is
 * NULL.  SQL functions are declared CALLED ON NULL INPUT where a NULL
 * argument means nothing, so that it is an error rather than a NULL result
 * that looks like success.
 */
void
RequireArgument(FunctionCallInfo fcinfo, int argno, const char *fn, const char *what)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("argument \"%s\" of %s must not be null", what, fn)));
}
