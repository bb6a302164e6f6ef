/*
 * provider.c
 *		The registry of root-key providers.
 */
#include "postgres.h"

#include "provider.h"

static const AtrestProvider *const providers[] = {
	&AtrestPkcs11Provider,
	&AtrestCommandProvider,
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
			 errhint("The providers are \"pkcs11\" and \"command\".")));
	return NULL;				/* keep compiler quiet */
}
