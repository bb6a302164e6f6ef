/*
 * provider_azure.c
 *		The azure root-key provider: Azure Key Vault and Managed HSM keys,
 *		through their REST API (get key, wrapkey, unwrapkey; api-version 7.4).
 *
 * A key URI is a Key Vault key identifier,
 * https://<vault>.vault.azure.net/keys/<name>[/<version>] (or Managed HSM's
 * <hsm>.managedhsm.azure.net, or a sovereign cloud's suffix).  Without a
 * version the key's current version is used and recorded, so a rotation in
 * Key Vault followed by atrest.rewrap() moves to the new version.  RSA keys
 * wrap with RSA-OAEP-256; AES keys (Managed HSM) with A256KW, over the input
 * padded to a multiple of 8 bytes (PKCS#7 style, removed on unwrap).
 *
 * The host must be a Key Vault or Managed HSM host, so whoever may call
 * enable_cmk cannot send the server's access token anywhere else.  HTTP,
 * JSON and tokens are azure_client.c's.  Failures come back as false with a
 * reason naming Key Vault's error code and request id, never a token or the
 * wrapped bytes.  The provider is called once per database key unwrap (per
 * backend, per atrest.key_cache_ttl), never per value.
 */
#include "postgres.h"

#include "lib/stringinfo.h"
#include "utils/memutils.h"

#include "azure_client.h"
#include "parse_core.h"
#include "provider.h"

#define AZ_API_VERSION			"7.4"
#define AZ_MAX_URI_LEN			1024
#define AZ_MAX_HOST_LEN			253
#define AZ_MAX_NAME_LEN			127
#define AZ_MAX_VERSION_LEN		64
#define AZ_MAX_VALUE_LEN		4096	/* what we send; the key ring sends ~61 bytes */

/* DNS suffixes of Key Vault and Managed HSM; the token resource is https://<suffix>. */
static const struct
{
	const char *suffix;
	bool		managed_hsm;
}			AzureSuffixes[] = {
	{"vault.azure.net", false},
	{"vault.azure.cn", false},
	{"vault.usgovcloudapi.net", false},
	{"vault.microsoftazure.de", false},
	{"managedhsm.azure.net", true},
	{"managedhsm.azure.cn", true},
	{"managedhsm.usgovcloudapi.net", true},
};

/* A parsed key identifier. */
typedef struct AzureKeyRef
{
	char		host[AZ_MAX_HOST_LEN + 1];	/* lower case */
	char		resource[64];	/* https://vault.azure.net, ... */
	char		name[AZ_MAX_NAME_LEN + 1];
	char		version[AZ_MAX_VERSION_LEN + 1];	/* "" when none */
} AzureKeyRef;

/* ---------------------------------------------------------------------
 * Key URIs
 * --------------------------------------------------------------------- */

static bool
IsVersionString(const char *s, size_t len)
{
	if (len == 0 || len > AZ_MAX_VERSION_LEN)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
			  (s[i] >= '0' && s[i] <= '9')))
			return false;
	return true;
}

/*
 * Parse https://<vault>.<suffix>/keys/<name>[/<version>][/] into *ref.
 * Returns NULL or a sentence saying what is wrong.
 */
static const char *
ParseKeyUri(const char *uri, AzureKeyRef *ref)
{
	const char *p;
	const char *host_end;
	const char *dot;
	size_t		len,
				hostlen,
				label;
	bool		known = false;

	memset(ref, 0, sizeof(*ref));
	if (uri == NULL || uri[0] == '\0')
		return "The key URI is empty.";
	len = strlen(uri);
	if (len > AZ_MAX_URI_LEN)
		return "The key URI is longer than 1024 bytes.";
	if (strncmp(uri, "https://", 8) != 0)
		return "The key URI does not start with \"https://\".";
	p = uri + 8;
	host_end = strchr(p, '/');
	if (host_end == NULL)
		return "The key URI has no path.";
	hostlen = host_end - p;
	if (hostlen == 0 || hostlen > AZ_MAX_HOST_LEN)
		return "The key URI's host name is empty or too long.";
	for (size_t i = 0; i < hostlen; i++)
	{
		char		c = p[i];

		if (!(AzureIsNameChar(c) || c == '.'))
			return "The key URI's host name may only hold letters, digits, hyphens and dots (no port, no user name).";
		ref->host[i] = pg_ascii_tolower(c);
	}
	dot = strchr(ref->host, '.');
	label = dot ? (size_t) (dot - ref->host) : hostlen;
	if (dot == NULL || label < 3 || label > 24)
		return "The key URI's vault name must have 3 to 24 characters.";
	for (int i = 0; i < lengthof(AzureSuffixes); i++)
		if (strcmp(dot + 1, AzureSuffixes[i].suffix) == 0)
		{
			snprintf(ref->resource, sizeof(ref->resource), "https://%s",
					 AzureSuffixes[i].suffix);
			known = true;
		}
	if (!known)
		return "The key URI's host is not a Key Vault or Managed HSM host (such as myvault.vault.azure.net or myhsm.managedhsm.azure.net).";

	p = host_end;
	if (strncmp(p, "/keys/", 6) != 0)
		return "The key URI's path does not start with \"/keys/\".";
	p += 6;
	len = 0;
	while (AzureIsNameChar(p[len]))
		len++;
	if (len == 0 || len > AZ_MAX_NAME_LEN)
		return "The key URI's key name must have 1 to 127 letters, digits or hyphens.";
	memcpy(ref->name, p, len);
	p += len;
	if (*p == '/' && p[1] != '\0')
	{
		p++;
		len = strcspn(p, "/");
		if (!IsVersionString(p, len))
			return "The key URI's key version must have 1 to 64 letters or digits.";
		memcpy(ref->version, p, len);
		p += len;
	}
	if (*p == '/')
		p++;
	if (*p != '\0')
		return "The key URI has something after the key version (a query, a fragment or more path).";
	return NULL;
}

/* ---------------------------------------------------------------------
 * Key Vault calls
 * --------------------------------------------------------------------- */

/* The reason for a Key Vault error answer: status, error codes, request id, message. */
static char *
VaultError(const char *op, const AzureKeyRef *ref, AzHttp *h)
{
	static const char *const fields[] = {
		"error.code", "error.innererror.code", "error.message"
	};
	AzJson		js;
	bool		parsed;

	memset(&js, 0, sizeof(js));
	js.fields = fields;
	js.nfields = lengthof(fields);
	parsed = AzureParseJsonFields(h->body.data, h->body.len, &js);
	return psprintf("%s on key \"%s\" of %s: HTTP %ld, error %s%s%s, request id %s%s%s",
					op, ref->name, ref->host, h->status,
					parsed && js.values[0] ? AzurePrintable(js.values[0]) : "(none)",
					parsed && js.values[1] ? "/" : "",
					parsed && js.values[1] ? AzurePrintable(js.values[1]) : "",
					h->request_id[0] ? h->request_id : "(none)",
					parsed && js.values[2] ? ": " : "",
					parsed && js.values[2] ? AzurePrintable(js.values[2]) : "");
}

/*
 * One call to Key Vault: GET (body NULL) or POST of "path" below the key
 * (e.g. "/<version>/wrapkey").  Gets a token first; on 401 with a cached
 * token, gets a fresh one and tries once more.  Returns true with any HTTP
 * answer in *h, false with a reason if none came.
 */
static bool
VaultCall(const char *op, const AzureKeyRef *ref, const char *path, const char *body,
		  int64 deadline, AzHttp *h, char **reason)
{
	char	   *url = psprintf("https://%s/keys/%s%s?api-version=%s",
							   ref->host, ref->name, path, AZ_API_VERSION);
	bool		fresh = false;

	for (;;)
	{
		const char *token = NULL;
		bool		cached = false;
		char	   *problem;
		const char *headers[3];
		char	   *auth;
		bool		ok;

		if ((problem = AzureGetToken(ref->resource, fresh, deadline, &token, &cached)) != NULL)
		{
			*reason = problem;
			return false;
		}
		auth = psprintf("Authorization: Bearer %s", token);
		headers[0] = auth;
		headers[1] = "Content-Type: application/json";
		headers[2] = "Expect:";
		ok = AzureHttpRequest(psprintf("%s on key \"%s\" of %s", op, ref->name, ref->host),
						 url, headers, 3, body, false, deadline, h, reason);
		explicit_bzero(auth, strlen(auth));
		pfree(auth);
		if (!ok)
			return false;
		if (h->status == 401 && cached)
		{
			fresh = true;		/* revoked or expired early: one more try */
			continue;
		}
		return true;
	}
}

/* What GET key told us. */
typedef struct AzKeyInfo
{
	char		version[AZ_MAX_VERSION_LEN + 1];
	const char *alg;			/* RSA-OAEP-256 or A256KW */
	bool		aes;
} AzKeyInfo;

/*
 * GET the key (the version in ref, or the current one) and learn its
 * version and wrapping algorithm.  Returns NULL or a reason.
 */
static char *
GetKeyInfo(const AzureKeyRef *ref, int64 deadline, AzKeyInfo *info)
{
	static const char *const fields[] = {"key.kid", "key.kty", "attributes.enabled"};
	AzHttp		h;
	AzJson		js;
	char	   *reason = NULL;
	char	   *prefix;
	const char *kid,
			   *kty;

	AzureHttpInit(&h);
	if (!VaultCall("get key", ref, ref->version[0] ? psprintf("/%s", ref->version) : "",
				   NULL, deadline, &h, &reason))
		return reason;
	if (h.status != 200)
		return VaultError("get key", ref, &h);

	memset(&js, 0, sizeof(js));
	js.fields = fields;
	js.nfields = lengthof(fields);
	if (!AzureParseJsonFields(h.body.data, h.body.len, &js) ||
		(kid = js.values[0]) == NULL || (kty = js.values[1]) == NULL)
		return psprintf("get key on key \"%s\" of %s: the answer is not a key bundle (request id %s)",
						ref->name, ref->host, h.request_id[0] ? h.request_id : "(none)");
	prefix = psprintf("https://%s/keys/%s/", ref->host, ref->name);
	if (pg_strncasecmp(kid, prefix, strlen(prefix)) != 0 ||
		!IsVersionString(kid + strlen(prefix), strlen(kid + strlen(prefix))))
		return psprintf("get key on key \"%s\" of %s: the answer's kid does not name a version of this key",
						ref->name, ref->host);
	strlcpy(info->version, kid + strlen(prefix), sizeof(info->version));
	if (ref->version[0] && strcmp(info->version, ref->version) != 0)
		return psprintf("get key on key \"%s\" of %s: the answer names another version",
						ref->name, ref->host);
	if (js.values[2] != NULL && strcmp(js.values[2], "false") == 0)
		return psprintf("get key on key \"%s\" of %s: key version %s is disabled (request id %s)",
						ref->name, ref->host, info->version,
						h.request_id[0] ? h.request_id : "(none)");
	if (strcmp(kty, "RSA") == 0 || strcmp(kty, "RSA-HSM") == 0)
	{
		info->alg = "RSA-OAEP-256";
		info->aes = false;
	}
	else if (strcmp(kty, "oct") == 0 || strcmp(kty, "oct-HSM") == 0)
	{
		info->alg = "A256KW";
		info->aes = true;
	}
	else
		return psprintf("key \"%s\" of %s has key type \"%s\", which cannot wrap keys; use an RSA key or a Managed HSM AES key",
						ref->name, ref->host, AzurePrintable(kty));
	return NULL;
}

/*
 * POST wrapkey or unwrapkey with "value"; on success *out (palloc'd in the
 * current context) holds the decoded result.  Returns NULL or a reason.
 */
static char *
KeyOperation(const char *op, const AzureKeyRef *ref, const AzKeyInfo *info,
			 const unsigned char *value, size_t len, int64 deadline,
			 unsigned char **out, size_t *outlen)
{
	static const char *const fields[] = {"kid", "value"};
	StringInfoData body;
	AzHttp		h;
	AzJson		js;
	char	   *reason = NULL;
	char	   *kid;
	size_t		vlen;

	initStringInfo(&body);
	appendStringInfo(&body, "{\"alg\":\"%s\",\"value\":\"", info->alg);
	AzureAppendBase64Url(&body, value, len);
	appendStringInfoString(&body, "\"}");

	AzureHttpInit(&h);
	if (!VaultCall(op, ref, psprintf("/%s/%s", info->version, op), body.data,
				   deadline, &h, &reason))
		return reason;
	if (h.status != 200)
		return VaultError(op, ref, &h);

	memset(&js, 0, sizeof(js));
	js.fields = fields;
	js.nfields = lengthof(fields);
	if (!AzureParseJsonFields(h.body.data, h.body.len, &js) ||
		js.values[1] == NULL || !js.is_string[1])
		return psprintf("%s on key \"%s\" of %s: the answer has no value (request id %s)",
						op, ref->name, ref->host, h.request_id[0] ? h.request_id : "(none)");
	kid = psprintf("https://%s/keys/%s/%s", ref->host, ref->name, info->version);
	if (js.values[0] != NULL && pg_strcasecmp(js.values[0], kid) != 0)
		return psprintf("%s on key \"%s\" of %s: the answer names another key version",
						op, ref->name, ref->host);
	vlen = strlen(js.values[1]);
	*out = palloc(PARSE_BASE64URL_MAX_DECODED(vlen));
	if (!ParseBase64UrlDecode(js.values[1], vlen, *out, outlen) || *outlen == 0)
		return psprintf("%s on key \"%s\" of %s: the answer's value is not base64url",
						op, ref->name, ref->host);
	explicit_bzero(js.values[1], vlen);
	explicit_bzero(h.body.data, h.body.len);
	return NULL;
}

/* ---------------------------------------------------------------------
 * The provider
 * --------------------------------------------------------------------- */

/* Common start of every operation: parse the URI. */
static char *
Prepare(const char *key_uri, AzureKeyRef *ref)
{
	const char *problem = ParseKeyUri(key_uri, ref);

	if (problem != NULL)
		return psprintf("invalid key URI for the azure provider: %s", problem);
	return NULL;
}

static int64
Deadline(void)
{
	return AzureMonotonicMs() + (int64) azure_timeout * 1000;
}

static void
AzureValidateUri(const char *key_uri)
{
	AzureKeyRef ref;
	const char *problem = ParseKeyUri(key_uri, &ref);

	if (problem != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid key URI for the azure provider"),
				 errdetail("%s", problem),
				 errhint("An azure key URI is a Key Vault key identifier, such as \"https://myvault.vault.azure.net/keys/cmk1\" or \"https://myhsm.managedhsm.azure.net/keys/cmk1/<version>\".")));
}

/*
 * The operations run in a memory context of their own (requests, answers
 * and parse trees live only for the call); results are copied out to the
 * caller's context.
 */
static bool
AzureWrap(const char *key_uri, const unsigned char *in, size_t len,
		  unsigned char **out, size_t *outlen, char **key_version, char **reason)
{
	MemoryContext callcxt = CurrentMemoryContext;
	MemoryContext runcxt;
	AzureKeyRef ref;
	AzKeyInfo	info;
	int64		deadline = Deadline();
	char	   *problem;
	unsigned char *result = NULL;
	size_t		resultlen = 0;

	if (len == 0 || len > AZ_MAX_VALUE_LEN)
	{
		*reason = psprintf("the value to wrap must be 1 to %d bytes long", AZ_MAX_VALUE_LEN);
		return false;
	}
	runcxt = AllocSetContextCreate(callcxt, "atrest azure", ALLOCSET_SMALL_SIZES);
	MemoryContextSwitchTo(runcxt);
	problem = Prepare(key_uri, &ref);
	if (problem == NULL)
		problem = GetKeyInfo(&ref, deadline, &info);
	if (problem == NULL)
	{
		const unsigned char *value = in;
		size_t		vlen = len;

		if (info.aes)
		{
			/* A256KW takes a multiple of 8 bytes, at least 16: pad PKCS#7 style. */
			size_t		padded = Max(16, (len / 8 + 1) * 8);
			unsigned char *buf = palloc(padded);

			memcpy(buf, in, len);
			memset(buf + len, (int) (padded - len), padded - len);
			value = buf;
			vlen = padded;
		}
		problem = KeyOperation("wrapkey", &ref, &info, value, vlen, deadline,
							   &result, &resultlen);
	}
	MemoryContextSwitchTo(callcxt);
	if (problem == NULL)
	{
		*out = palloc(resultlen);
		memcpy(*out, result, resultlen);
		*outlen = resultlen;
		*key_version = pstrdup(info.version);
	}
	else
		*reason = pstrdup(problem);
	MemoryContextDelete(runcxt);
	return problem == NULL;
}

static bool
AzureUnwrap(const char *key_uri, const char *key_version,
			const unsigned char *in, size_t len,
			unsigned char **out, size_t *outlen, char **reason)
{
	MemoryContext callcxt = CurrentMemoryContext;
	MemoryContext runcxt;
	AzureKeyRef ref;
	AzKeyInfo	info;
	int64		deadline = Deadline();
	char	   *problem;
	unsigned char *result = NULL;
	size_t		resultlen = 0;

	if (key_version == NULL || !IsVersionString(key_version, strlen(key_version)))
	{
		*reason = pstrdup("invalid key version for the azure provider");
		return false;
	}
	if (len == 0 || len > AZ_MAX_VALUE_LEN)
	{
		*reason = psprintf("the value to unwrap must be 1 to %d bytes long", AZ_MAX_VALUE_LEN);
		return false;
	}
	runcxt = AllocSetContextCreate(callcxt, "atrest azure", ALLOCSET_SMALL_SIZES);
	MemoryContextSwitchTo(runcxt);
	problem = Prepare(key_uri, &ref);
	if (problem == NULL)
	{
		/* The recorded version, not the URI's current one. */
		strlcpy(ref.version, key_version, sizeof(ref.version));
		problem = GetKeyInfo(&ref, deadline, &info);
	}
	if (problem == NULL)
		problem = KeyOperation("unwrapkey", &ref, &info, in, len, deadline,
							   &result, &resultlen);
	if (problem == NULL && info.aes)
	{
		/* Remove and check the padding added on wrap. */
		int			pad = resultlen > 0 ? result[resultlen - 1] : 0;

		if (resultlen < 16 || resultlen % 8 != 0 || pad < 1 || pad > 16 ||
			(size_t) pad > resultlen)
			problem = pstrdup("unwrapkey gave back a value without valid padding");
		else
		{
			for (int i = 1; i <= pad && problem == NULL; i++)
				if (result[resultlen - i] != pad)
					problem = pstrdup("unwrapkey gave back a value without valid padding");
			resultlen -= pad;
		}
	}
	MemoryContextSwitchTo(callcxt);
	if (problem == NULL)
	{
		*out = palloc(resultlen);
		memcpy(*out, result, resultlen);
		*outlen = resultlen;
	}
	else
		*reason = pstrdup(problem);
	if (result != NULL)
		explicit_bzero(result, resultlen);
	MemoryContextDelete(runcxt);
	return problem == NULL;
}

static bool
AzureCurrentVersion(const char *key_uri, char **key_version, char **reason)
{
	MemoryContext callcxt = CurrentMemoryContext;
	MemoryContext runcxt;
	AzureKeyRef ref;
	AzKeyInfo	info;
	char	   *problem;

	runcxt = AllocSetContextCreate(callcxt, "atrest azure", ALLOCSET_SMALL_SIZES);
	MemoryContextSwitchTo(runcxt);
	problem = Prepare(key_uri, &ref);
	if (problem == NULL)
		problem = GetKeyInfo(&ref, Deadline(), &info);
	MemoryContextSwitchTo(callcxt);
	if (problem == NULL)
		*key_version = pstrdup(info.version);
	else
		*reason = pstrdup(problem);
	MemoryContextDelete(runcxt);
	return problem == NULL;
}

/* Forget the cached access tokens; the next call asks for new ones. */
static void
AzureReset(void)
{
	AzureDropTokens();
}

const AtrestProvider AtrestAzureProvider = {
	"azure",
	AzureValidateUri,
	AzureWrap,
	AzureUnwrap,
	AzureCurrentVersion,
	AzureReset
};

/* Define the provider's settings (azure_client.c owns them); called from _PG_init. */
void
AzureProviderInit(void)
{
	AzureClientInit();
}
