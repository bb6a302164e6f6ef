/*
 * provider.c
 *		The registry of root-key providers.
 */
#include "postgres.h"

#include "utils/guc.h"

#include "provider.h"

static const AtrestProvider *const providers[] = {
	&AtrestPkcs11Provider,
	&AtrestCommandProvider,
	&AtrestKmipProvider,
};

const AtrestProvider *
ProviderLookup(const char *name)
{
	for (int i = 0; i < lengthof(providers); i++)
		if (strcmp(providers[i]->name, name) == 0)
			return providers[i];
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unknown key provider \"%s\"", name),
			 errhint("The providers are \"pkcs11\", \"command\" and \"kmip\".")));
	return NULL;				/* keep compiler quiet */
}

/*
 * GUC check hook shared by the settings that name a program or a module:
 * empty, or an absolute path (a relative one would depend on the backend's
 * working directory).
 */
bool
CheckAbsolutePathSetting(char **newval, void **extra, GucSource source)
{
	if (*newval != NULL && (*newval)[0] != '\0' && !is_absolute_path(*newval))
	{
		GUC_check_errdetail("The setting must be empty or an absolute path.");
		return false;
	}
	return true;
}
