/*
 * azure_client.h
 *		The Azure REST client under the azure provider (provider_azure.c):
 *		HTTPS through libcurl within a deadline, JSON fields through
 *		PostgreSQL's own parser, and access tokens from a managed identity or
 *		a service principal, cached per backend.  It also owns the provider's
 *		settings, which all configure how Azure is reached.
 */
#ifndef ATREST_AZURE_CLIENT_H
#define ATREST_AZURE_CLIENT_H

#include <curl/curl.h>

#include "lib/stringinfo.h"

/* Longest answer we accept; longer ones fail the request. */
#define AZ_MAX_RESPONSE			(64 * 1024)

/* One HTTP exchange; AzureHttpInit prepares it. */
typedef struct AzHttp
{
	long		status;
	StringInfoData body;		/* capacity AZ_MAX_RESPONSE + 1, fixed */
	bool		overflow;
	bool		interrupted;
	char		request_id[96]; /* x-ms-request-id, "" if none */
	int			retry_after;	/* seconds, -1 if absent */
	char		errbuf[CURL_ERROR_SIZE];
	CURLcode	code;
} AzHttp;

/*
 * The scalars of a JSON object at a few dotted paths ("key.kid"): set
 * fields and nfields, zero the rest, call AzureParseJsonFields.
 */
#define AZ_JSON_MAX_FIELDS	8
#define AZ_JSON_PATH_DEPTH	4

typedef struct AzJson
{
	int			depth;			/* objects and arrays open */
	int			array_depth;	/* arrays open */
	bool		is_object;
	char	   *path[AZ_JSON_PATH_DEPTH];
	int			nfields;
	const char *const *fields;	/* dotted paths, e.g. "key.kid" */
	char	   *values[AZ_JSON_MAX_FIELDS];
	bool		is_string[AZ_JSON_MAX_FIELDS];
} AzJson;

/* atrest.azure_timeout, in seconds: the limit for one provider operation. */
extern int	azure_timeout;

/* A letter, a digit or a hyphen: what Key Vault names are made of. */
extern bool AzureIsNameChar(char c);

/* Milliseconds on the monotonic clock (deadlines). */
extern int64 AzureMonotonicMs(void);

/* A copy of s fit for a message: printable ASCII, at most 200 bytes. */
extern char *AzurePrintable(const char *s);

/* Append the unpadded base64url encoding of data. */
extern void AzureAppendBase64Url(StringInfo buf, const unsigned char *data, size_t len);

/* Parse a JSON object and collect its fields; false if it is not one.  Never ERRORs. */
extern bool AzureParseJsonFields(char *text, int len, AzJson *js);

extern void AzureHttpInit(AzHttp *h);

/*
 * A GET (body NULL) or POST, retried on 429 and 503 within the deadline.
 * True with any HTTP answer in *h; false with a reason when none came.
 * Throws a pending query cancel once the transfer is cleaned up.
 */
extern bool AzureHttpRequest(const char *what, const char *url,
							 const char *const *headers, int nheaders,
							 const char *body, bool no_proxy, int64 deadline,
							 AzHttp *h, char **reason);

/*
 * An access token for "resource" (https://vault.azure.net, ...): the cached
 * one unless it is due for renewal or "fresh" is asked for (*cached says
 * which).  Returns NULL, or a reason.
 */
extern char *AzureGetToken(const char *resource, bool fresh, int64 deadline,
						   const char **token, bool *cached);

/* Forget every cached access token. */
extern void AzureDropTokens(void);

/* Define the settings (atrest.azure_*). */
extern void AzureClientInit(void);

#endif							/* ATREST_AZURE_CLIENT_H */
