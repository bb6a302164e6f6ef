/*
 * provider.c
 *		The registry of root-key providers, and checks they share.
 */
#include "postgres.h"

#include <sys/stat.h>
#include <unistd.h>

#include "utils/guc.h"

#include "provider.h"

static const AtrestProvider *const providers[] = {
	&AtrestPkcs11Provider,
	&AtrestCommandProvider,
	&AtrestKmipProvider,
	&AtrestAzureProvider,
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
			 errhint("The providers are \"pkcs11\", \"command\", \"kmip\" and \"azure\".")));
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

/*
 * PostgreSQL's rule for ssl_key_file (check_ssl_key_file in
 * be-secure-common.c), applied to the service key file and the PIN file: a
 * regular file, owned by the server's user with no group or world access
 * (0600 or less), or owned by root with at most group read (0640 or less),
 * so that a file managed by the system's key distribution can be shared
 * through a group.  Anything else is refused, whoever can read it.
 */
const char *
SecretFilePermissionProblem(const struct stat *st)
{
	if (!S_ISREG(st->st_mode))
		return "it is not a regular file";
	if (st->st_uid != geteuid() && st->st_uid != 0)
		return "it must be owned by the database server's user or by root";
	if ((st->st_uid == geteuid() && (st->st_mode & (S_IRWXG | S_IRWXO)) != 0) ||
		(st->st_uid == 0 && (st->st_mode & (S_IWGRP | S_IXGRP | S_IRWXO)) != 0))
		return "it has group or world access; it must have mode 0600 or less if owned by the database server's user, or 0640 or less if owned by root";
	return NULL;
}
