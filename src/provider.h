/*
 * provider.h
 *		The interface every root-key provider implements.
 *
 * A provider wraps and unwraps a short byte string under a key that it names
 * with a URI and never hands out: an HSM object (pkcs11), a key in a KMIP
 * server (kmip), or a key held by a KMS behind an adapter program (command).  What pg_atrest asks a provider to
 * wrap is the database key already sealed under the service key, so a
 * provider only ever sees ciphertext: its buffers may be palloc'd.
 *
 * Providers report failure by returning false with a palloc'd reason that
 * never contains key material; the key ring turns that into the documented
 * "customer-managed key unavailable" error.  A provider may keep per-backend
 * state (a loaded module, a logged-in session); reset() drops it so that the
 * next call starts from scratch.
 */
#ifndef ATREST_PROVIDER_H
#define ATREST_PROVIDER_H

#include "utils/guc.h"

typedef struct AtrestProvider
{
	const char *name;

	/*
	 * Check the key URI's syntax and ereport(ERROR, ERRCODE_INVALID_PARAMETER_VALUE)
	 * if it is malformed.  Touches no device.
	 */
	void		(*validate_uri) (const char *key_uri);

	/*
	 * Wrap "len" bytes at "in" under the current version of the key named by
	 * key_uri.  On success, *out (palloc'd) and *outlen hold the wrapped
	 * bytes and *key_version (palloc'd) names the exact key version used, so
	 * that unwrap can find it again after the key has been rotated.
	 */
	bool		(*wrap) (const char *key_uri,
						 const unsigned char *in, size_t len,
						 unsigned char **out, size_t *outlen,
						 char **key_version, char **reason);

	/* The inverse of wrap, using the key version that wrap reported. */
	bool		(*unwrap) (const char *key_uri, const char *key_version,
						   const unsigned char *in, size_t len,
						   unsigned char **out, size_t *outlen,
						   char **reason);

	/* The key's current version (the one wrap would use now). */
	bool		(*current_version) (const char *key_uri,
									char **key_version, char **reason);

	/* Forget per-backend state (sessions, handles); the next call redoes it. */
	void		(*reset) (void);
} AtrestProvider;

extern const AtrestProvider AtrestPkcs11Provider;
extern const AtrestProvider AtrestCommandProvider;
extern const AtrestProvider AtrestAzureProvider;
extern const AtrestProvider AtrestKmipProvider;

/* Find a provider by name; ereport(ERROR) naming the known ones if unknown. */
extern const AtrestProvider *ProviderLookup(const char *name);

/* GUC check hook: empty or an absolute path (for module and program settings). */
extern bool CheckAbsolutePathSetting(char **newval, void **extra, GucSource source);

/*
 * Why a file holding a secret (the service key, a PKCS#11 PIN) must not be
 * used, given its fstat, or NULL if it may: PostgreSQL's rule for
 * ssl_key_file.  The text names no path.
 */
struct stat;
extern const char *SecretFilePermissionProblem(const struct stat *st);

/* Settings owned by the providers, defined in their files. */
extern void Pkcs11ProviderInit(void);
extern void CommandProviderInit(void);
extern void AzureProviderInit(void);
extern void KmipProviderInit(void);

#endif							/* ATREST_PROVIDER_H */
