/*
 * azure_client.c
 *		The Azure REST client under the azure provider: HTTPS through libcurl,
 *		JSON through PostgreSQL's parser, and Microsoft Entra access tokens.
 *
 * Tokens come from a managed identity (the instance metadata endpoint) or a
 * service principal (client credentials, the secret read from a file at each
 * request); each backend caches them in TopMemoryContext until shortly
 * before they expire, and wipes them when it drops them.
 *
 * Invariants: nothing inside a libcurl transfer can ERROR (the callbacks
 * only copy into buffers sized beforehand and look at interrupt flags), so
 * every curl handle is cleaned up before we return or throw; a query cancel
 * aborts the transfer through the progress callback and is thrown after the
 * cleanup.  No request outlasts its deadline, retries of throttled requests
 * included.  Reasons never carry a token or the client secret.
 */
#include "postgres.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "common/base64.h"
#include "common/jsonapi.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/wait_event.h"

#include "azure_client.h"
#include "parse_core.h"
#include "provider.h"

#define AZ_IMDS_API_VERSION		"2018-02-01"
#define AZ_MAX_TOKEN_LEN		(16 * 1024)
#define AZ_MAX_SECRET_LEN		1024
#define AZ_MAX_JSON_DEPTH		16
#define AZ_MAX_MESSAGE			200
#define AZ_TOKEN_SLOTS			4

/* Settings. */
static char *azure_identity_endpoint = NULL;
static char *azure_client_id = NULL;
static char *azure_tenant_id = NULL;
static char *azure_client_secret_file = NULL;
static char *azure_authority = NULL;
static char *azure_ca_file = NULL;
static char *azure_connect_to = NULL;
int			azure_timeout = 10;

static bool curl_ready = false;

/* A cached access token, in TopMemoryContext. */
typedef struct AzToken
{
	char	   *resource;
	char	   *identity;		/* which credentials got it */
	char	   *token;
	time_t		refresh_at;
} AzToken;

static AzToken tokens[AZ_TOKEN_SLOTS];

/* ---------------------------------------------------------------------
 * Small helpers
 * --------------------------------------------------------------------- */

bool
AzureIsNameChar(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		(c >= '0' && c <= '9') || c == '-';
}

int64
AzureMonotonicMs(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Append s percent-encoded (RFC 3986 unreserved characters kept). */
static void
AppendUrlEncoded(StringInfo buf, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";

	for (; *s; s++)
	{
		unsigned char c = (unsigned char) *s;

		if (AzureIsNameChar((char) c) || c == '.' || c == '_' || c == '~')
			appendStringInfoChar(buf, (char) c);
		else
		{
			appendStringInfoChar(buf, '%');
			appendStringInfoChar(buf, hex[c >> 4]);
			appendStringInfoChar(buf, hex[c & 15]);
		}
	}
}

/* Append the unpadded base64url encoding of data (PostgreSQL's base64, translated). */
void
AzureAppendBase64Url(StringInfo buf, const unsigned char *data, size_t len)
{
	int			enclen = pg_b64_enc_len((int) len);
	char	   *enc = palloc(enclen + 1);
#if PG_VERSION_NUM >= 180000
	int			n = pg_b64_encode(data, (int) len, enc, enclen);
#else
	int			n = pg_b64_encode((const char *) data, (int) len, enc, enclen);
#endif

	for (int i = 0; i < n; i++)
	{
		char		c = enc[i];

		if (c == '=')
			break;
		appendStringInfoChar(buf, c == '+' ? '-' : c == '/' ? '_' : c);
	}
	pfree(enc);
}

/* A copy of s for a message: printable ASCII only, at most AZ_MAX_MESSAGE bytes. */
char *
AzurePrintable(const char *s)
{
	StringInfoData out;

	initStringInfo(&out);
	for (; s && *s && out.len < AZ_MAX_MESSAGE; s++)
		appendStringInfoChar(&out, (*s >= 0x20 && *s <= 0x7e) ? *s : '?');
	return out.data;
}

/* ---------------------------------------------------------------------
 * JSON: collect the scalars at a few dotted paths
 * --------------------------------------------------------------------- */

#if PG_VERSION_NUM >= 160000
#define JSON_CB_TYPE JsonParseErrorType
#define JSON_CB_RETURN return JSON_SUCCESS
#else
#define JSON_CB_TYPE void
#define JSON_CB_RETURN return
#endif

static JSON_CB_TYPE
JsObjectStart(void *state)
{
	AzJson	   *js = (AzJson *) state;

	if (js->depth == 0)
		js->is_object = true;
	js->depth++;
	JSON_CB_RETURN;
}

static JSON_CB_TYPE
JsObjectEnd(void *state)
{
	((AzJson *) state)->depth--;
	JSON_CB_RETURN;
}

static JSON_CB_TYPE
JsArrayStart(void *state)
{
	AzJson	   *js = (AzJson *) state;

	js->depth++;
	js->array_depth++;
	JSON_CB_RETURN;
}

static JSON_CB_TYPE
JsArrayEnd(void *state)
{
	AzJson	   *js = (AzJson *) state;

	js->depth--;
	js->array_depth--;
	JSON_CB_RETURN;
}

static JSON_CB_TYPE
JsFieldStart(void *state, char *fname, bool isnull)
{
	AzJson	   *js = (AzJson *) state;

	if (js->array_depth == 0 && js->depth >= 1 && js->depth <= AZ_JSON_PATH_DEPTH)
		js->path[js->depth - 1] = fname;
	JSON_CB_RETURN;
}

static JSON_CB_TYPE
JsScalar(void *state, char *token, JsonTokenType tokentype)
{
	AzJson	   *js = (AzJson *) state;
	StringInfoData dotted;

	if (js->array_depth > 0 || js->depth < 1 || js->depth > AZ_JSON_PATH_DEPTH)
		JSON_CB_RETURN;
	initStringInfo(&dotted);
	for (int i = 0; i < js->depth; i++)
		appendStringInfo(&dotted, "%s%s", i ? "." : "", js->path[i] ? js->path[i] : "");
	for (int i = 0; i < js->nfields; i++)
		if (js->values[i] == NULL && strcmp(dotted.data, js->fields[i]) == 0)
		{
			js->values[i] = token;
			js->is_string[i] = (tokentype == JSON_TOKEN_STRING);
		}
	pfree(dotted.data);
	JSON_CB_RETURN;
}

/*
 * Parse "text" as a JSON object and fill js->values[i] with the scalar at
 * js->fields[i] (NULL if absent).  Returns false if it is not a JSON object
 * we may parse; never ERRORs (what would make the parser ERROR is refused
 * by the pre-scan first).
 */
bool
AzureParseJsonFields(char *text, int len, AzJson *js)
{
	JsonLexContext *lex;
	JsonSemAction sem;

	if (len == 0 || pg_encoding_verifymbstr(PG_UTF8, text, len) != len)
		return false;
	if (ParseJsonPrescan(text, (size_t) len, AZ_MAX_JSON_DEPTH) != NULL)
		return false;
	memset(&sem, 0, sizeof(sem));
	sem.semstate = js;
	sem.object_start = JsObjectStart;
	sem.object_end = JsObjectEnd;
	sem.array_start = JsArrayStart;
	sem.array_end = JsArrayEnd;
	sem.object_field_start = JsFieldStart;
	sem.scalar = JsScalar;
#if PG_VERSION_NUM >= 170000
	lex = makeJsonLexContextCstringLen(NULL, text, len, PG_UTF8, true);
#else
	lex = makeJsonLexContextCstringLen(text, len, PG_UTF8, true);
#endif
	return pg_parse_json(lex, &sem) == JSON_SUCCESS && js->is_object;
}

/* ---------------------------------------------------------------------
 * HTTP through libcurl
 * --------------------------------------------------------------------- */

/* Write callback: copy into the preallocated body; never allocates. */
static size_t
CurlWrite(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	AzHttp	   *h = (AzHttp *) userdata;
	size_t		n = size * nmemb;

	if (h->body.len + n > AZ_MAX_RESPONSE)
	{
		h->overflow = true;
		return 0;				/* makes curl fail with CURLE_WRITE_ERROR */
	}
	memcpy(h->body.data + h->body.len, ptr, n);
	h->body.len += n;
	h->body.data[h->body.len] = '\0';
	return n;
}

/* Header callback: keep x-ms-request-id and Retry-After; never allocates. */
static size_t
CurlHeader(char *ptr, size_t size, size_t nitems, void *userdata)
{
	AzHttp	   *h = (AzHttp *) userdata;
	size_t		n = size * nitems;
	size_t		vlen;
	const char *v;

	if (n > 16 && pg_strncasecmp(ptr, "x-ms-request-id:", 16) == 0)
	{
		v = ptr + 16;
		vlen = n - 16;
		while (vlen > 0 && (*v == ' ' || *v == '\t'))
			v++, vlen--;
		while (vlen > 0 && (v[vlen - 1] == '\r' || v[vlen - 1] == '\n' || v[vlen - 1] == ' '))
			vlen--;
		vlen = Min(vlen, sizeof(h->request_id) - 1);
		for (size_t i = 0; i < vlen; i++)
			h->request_id[i] = (v[i] >= 0x21 && v[i] <= 0x7e) ? v[i] : '?';
		h->request_id[vlen] = '\0';
	}
	else if (n > 12 && pg_strncasecmp(ptr, "retry-after:", 12) == 0)
	{
		int			secs = 0;
		size_t		i = 12;

		while (i < n && ptr[i] == ' ')
			i++;
		if (i < n && ptr[i] >= '0' && ptr[i] <= '9')
		{
			for (; i < n && ptr[i] >= '0' && ptr[i] <= '9' && secs < 100000; i++)
				secs = secs * 10 + (ptr[i] - '0');
			h->retry_after = secs;
		}
	}
	return n;
}

/*
 * Progress callback: abort the transfer when a query cancel or a
 * termination is pending; the caller throws it after cleaning up.
 */
static int
CurlProgress(void *clientp, curl_off_t dltotal, curl_off_t dlnow,
			 curl_off_t ultotal, curl_off_t ulnow)
{
	AzHttp	   *h = (AzHttp *) clientp;

	if (QueryCancelPending || ProcDiePending)
	{
		h->interrupted = true;
		return 1;
	}
	return 0;
}

/*
 * One HTTP request.  "headers" are extra header lines; "body" (may be NULL)
 * makes it a POST.  Fills *h; returns false with a reason if no HTTP answer
 * came back.  Throws a pending query cancel after cleaning up.
 */
static bool
HttpOnce(const char *url, const char *const *headers, int nheaders,
		 const char *body, bool no_proxy, int64 deadline, AzHttp *h, char **reason)
{
	CURL	   *curl;
	struct curl_slist *hdrs = NULL;
	struct curl_slist *connect_to = NULL;
	char	   *connect_copy = NULL;
	int64		remaining = deadline - AzureMonotonicMs();
	bool		setup_ok = true;

	h->status = 0;
	h->overflow = false;
	h->interrupted = false;
	h->request_id[0] = '\0';
	h->retry_after = -1;
	h->errbuf[0] = '\0';
	resetStringInfo(&h->body);

	if (remaining <= 0)
	{
		*reason = psprintf("no answer within atrest.azure_timeout (%d s)", azure_timeout);
		return false;
	}
	/* Everything that may palloc happens before curl_easy_init. */
	if (azure_connect_to != NULL && azure_connect_to[0] != '\0')
		connect_copy = pstrdup(azure_connect_to);

	if (!curl_ready)
	{
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		{
			*reason = pstrdup("libcurl could not be initialised");
			return false;
		}
		curl_ready = true;
	}
	curl = curl_easy_init();
	if (curl == NULL)
	{
		*reason = pstrdup("libcurl could not create a handle");
		return false;
	}
	for (int i = 0; i < nheaders && setup_ok; i++)
	{
		struct curl_slist *t = curl_slist_append(hdrs, headers[i]);

		if (t == NULL)
			setup_ok = false;
		else
			hdrs = t;
	}
	if (setup_ok && connect_copy != NULL)
	{
		char	   *save = NULL;

		for (char *tok = strtok_r(connect_copy, ", ", &save); tok && setup_ok;
			 tok = strtok_r(NULL, ", ", &save))
		{
			struct curl_slist *t = curl_slist_append(connect_to, tok);

			if (t == NULL)
				setup_ok = false;
			else
				connect_to = t;
		}
	}

	if (setup_ok)
	{
		curl_easy_setopt(curl, CURLOPT_URL, url);
		curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);	/* the backend owns SIGALRM */
#if LIBCURL_VERSION_NUM >= 0x075500
		curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
#else
		curl_easy_setopt(curl, CURLOPT_PROTOCOLS, (long) (CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
		curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
		curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, (long) remaining);
		curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, (long) remaining);
		curl_easy_setopt(curl, CURLOPT_SSLVERSION, (long) CURL_SSLVERSION_TLSv1_2);
		curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 1L);
		curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 2L);
		if (azure_ca_file != NULL && azure_ca_file[0] != '\0')
			curl_easy_setopt(curl, CURLOPT_CAINFO, azure_ca_file);
		if (connect_to != NULL)
			curl_easy_setopt(curl, CURLOPT_CONNECT_TO, connect_to);
		if (no_proxy)
			curl_easy_setopt(curl, CURLOPT_PROXY, "");
		curl_easy_setopt(curl, CURLOPT_USERAGENT, "pg_atrest");
		curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hdrs);
		curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, CurlWrite);
		curl_easy_setopt(curl, CURLOPT_WRITEDATA, h);
		curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, CurlHeader);
		curl_easy_setopt(curl, CURLOPT_HEADERDATA, h);
		curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, CurlProgress);
		curl_easy_setopt(curl, CURLOPT_XFERINFODATA, h);
		curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
		curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, h->errbuf);
		if (body != NULL)
		{
			curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
			curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long) strlen(body));
		}
		h->code = curl_easy_perform(curl);
		if (h->code == CURLE_OK)
			curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &h->status);
	}
	curl_easy_cleanup(curl);
	curl_slist_free_all(hdrs);
	curl_slist_free_all(connect_to);
	if (connect_copy)
		pfree(connect_copy);

	if (h->interrupted)
		CHECK_FOR_INTERRUPTS();

	if (!setup_ok)
	{
		*reason = pstrdup("libcurl ran out of memory");
		return false;
	}
	if (h->code == CURLE_OK)
		return true;
	if (h->overflow)
		*reason = psprintf("the answer was longer than %d bytes", AZ_MAX_RESPONSE);
	else if (h->interrupted)
		*reason = pstrdup("the request was interrupted");
	else if (h->code == CURLE_OPERATION_TIMEDOUT)
		*reason = psprintf("no answer within atrest.azure_timeout (%d s)", azure_timeout);
	else
		*reason = psprintf("%s (curl error %d)",
						   AzurePrintable(h->errbuf[0] ? h->errbuf : curl_easy_strerror(h->code)),
						   (int) h->code);
	return false;
}

/*
 * An HTTP request with retries of 429 and 503 answers (honouring
 * Retry-After, else backing off from half a second), all within the
 * deadline.  Returns false with a reason if no usable answer came back.
 */
bool
AzureHttpRequest(const char *what, const char *url, const char *const *headers, int nheaders,
			const char *body, bool no_proxy, int64 deadline, AzHttp *h, char **reason)
{
	int64		backoff = 500;

	for (;;)
	{
		int64		wait;
		char	   *problem = NULL;

		if (!HttpOnce(url, headers, nheaders, body, no_proxy, deadline, h, &problem))
		{
			*reason = psprintf("%s: %s", what, problem);
			return false;
		}
		if (h->status != 429 && h->status != 503)
			return true;

		wait = h->retry_after >= 0 ? (int64) h->retry_after * 1000 : backoff;
		backoff = Min(backoff * 2, 8000);
		if (AzureMonotonicMs() + wait >= deadline)
		{
			*reason = psprintf("%s: still throttled (HTTP %ld%s%s) when atrest.azure_timeout (%d s) ran out",
							   what, h->status,
							   h->request_id[0] ? ", request id " : "", h->request_id,
							   azure_timeout);
			return false;
		}
		/* The latch may be set for unrelated reasons: sleep the full wait. */
		for (int64 until = AzureMonotonicMs() + wait, left = wait; left > 0;
			 left = until - AzureMonotonicMs())
		{
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 (long) left, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
		}
	}
}

void
AzureHttpInit(AzHttp *h)
{
	memset(h, 0, sizeof(*h));
	initStringInfo(&h->body);
	enlargeStringInfo(&h->body, AZ_MAX_RESPONSE + 1);
}

/* ---------------------------------------------------------------------
 * Access tokens
 * --------------------------------------------------------------------- */

static bool
UseServicePrincipal(void)
{
	return azure_tenant_id != NULL && azure_tenant_id[0] != '\0';
}

/* Which credentials a token comes from, so that a reload invalidates it. */
static char *
IdentityFingerprint(void)
{
	if (UseServicePrincipal())
		return psprintf("sp|%s|%s|%s|%s", azure_authority, azure_tenant_id,
						azure_client_id, azure_client_secret_file);
	return psprintf("mi|%s|%s", azure_identity_endpoint, azure_client_id);
}

static void
DropToken(AzToken *t)
{
	if (t->token)
	{
		explicit_bzero(t->token, strlen(t->token));
		pfree(t->token);
	}
	if (t->resource)
		pfree(t->resource);
	if (t->identity)
		pfree(t->identity);
	memset(t, 0, sizeof(*t));
}

/*
 * Read the client secret file into buf (NUL-terminated, trailing white
 * space cut).  The file must be a regular file owned by the server's user
 * with no group or world access, or owned by root with at most group read
 * (PostgreSQL's rule for ssl_key_file).  Returns NULL or a reason, which
 * does not name the path (it may reach a client).
 */
static char *
ReadClientSecret(char *buf, size_t bufsize)
{
	struct stat st;
	const char *problem;
	int			fd;
	ssize_t		n;

	if (azure_client_secret_file == NULL || azure_client_secret_file[0] == '\0')
		return pstrdup("atrest.azure_tenant_id is set but atrest.azure_client_secret_file is not");
	fd = open(azure_client_secret_file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return psprintf("could not open atrest.azure_client_secret_file: %s", strerror(errno));
	if (fstat(fd, &st) != 0)
	{
		int			save_errno = errno;

		close(fd);
		return psprintf("could not stat atrest.azure_client_secret_file: %s", strerror(save_errno));
	}
	if ((problem = SecretFilePermissionProblem(&st)) != NULL)
	{
		close(fd);
		return psprintf("atrest.azure_client_secret_file is refused: %s", problem);
	}
	n = read(fd, buf, bufsize - 1);
	close(fd);
	if (n < 0)
		return psprintf("could not read atrest.azure_client_secret_file: %s", strerror(errno));
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' ||
					 buf[n - 1] == ' ' || buf[n - 1] == '\t'))
		n--;
	buf[n] = '\0';
	if (n == 0 || (size_t) n >= bufsize - 1)
	{
		explicit_bzero(buf, bufsize);
		return pstrdup("atrest.azure_client_secret_file is empty or longer than 1023 bytes");
	}
	return NULL;
}

/*
 * Ask the token endpoint for a token for "resource".  On success stores it
 * in *slot and returns NULL, else returns a reason.
 */
static char *
FetchToken(const char *resource, int64 deadline, AzToken *slot)
{
	AzHttp		h;
	StringInfoData url;
	StringInfoData form;
	const char *headers[2];
	int			nheaders = 0;
	char	   *problem = NULL;
	bool		sp = UseServicePrincipal();
	bool		ok;
	static const char *const fields[] = {
		"access_token", "expires_in", "expires_on", "error", "error_description"
	};
	AzJson		js;
	long		lifetime = -1;
	const char *what = sp ? "token request to atrest.azure_authority" :
		"token request to atrest.azure_identity_endpoint";

	AzureHttpInit(&h);
	initStringInfo(&url);
	initStringInfo(&form);
	if (sp)
	{
		char		secret[AZ_MAX_SECRET_LEN + 1];

		if ((problem = ReadClientSecret(secret, sizeof(secret))) != NULL)
			return problem;
		if (azure_client_id == NULL || azure_client_id[0] == '\0')
		{
			explicit_bzero(secret, sizeof(secret));
			return pstrdup("atrest.azure_tenant_id is set but atrest.azure_client_id is not");
		}
		appendStringInfoString(&url, azure_authority);
		while (url.len > 0 && url.data[url.len - 1] == '/')
			url.data[--url.len] = '\0';
		appendStringInfoChar(&url, '/');
		AppendUrlEncoded(&url, azure_tenant_id);
		appendStringInfoString(&url, "/oauth2/v2.0/token");
		appendStringInfoString(&form, "grant_type=client_credentials&client_id=");
		AppendUrlEncoded(&form, azure_client_id);
		appendStringInfoString(&form, "&scope=");
		AppendUrlEncoded(&form, psprintf("%s/.default", resource));
		appendStringInfoString(&form, "&client_secret=");
		AppendUrlEncoded(&form, secret);
		explicit_bzero(secret, sizeof(secret));
		headers[nheaders++] = "Content-Type: application/x-www-form-urlencoded";
		headers[nheaders++] = "Expect:";
	}
	else
	{
		appendStringInfo(&url, "%s?api-version=%s&resource=",
						 azure_identity_endpoint, AZ_IMDS_API_VERSION);
		AppendUrlEncoded(&url, resource);
		if (azure_client_id != NULL && azure_client_id[0] != '\0')
		{
			appendStringInfoString(&url, "&client_id=");
			AppendUrlEncoded(&url, azure_client_id);
		}
		headers[nheaders++] = "Metadata: true";
	}

	ok = AzureHttpRequest(what, url.data, headers, nheaders, sp ? form.data : NULL,
					 !sp, deadline, &h, &problem);
	explicit_bzero(form.data, form.maxlen);
	if (!ok)
		return problem;

	memset(&js, 0, sizeof(js));
	js.fields = fields;
	js.nfields = lengthof(fields);
	if (!AzureParseJsonFields(h.body.data, h.body.len, &js))
	{
		explicit_bzero(h.body.data, h.body.len);
		return psprintf("%s: HTTP %ld with an answer that is not a JSON object", what, h.status);
	}
	if (h.status != 200)
		return psprintf("%s: HTTP %ld, error %s: %s", what, h.status,
						js.values[3] ? AzurePrintable(js.values[3]) : "(none)",
						js.values[4] ? AzurePrintable(js.values[4]) : "(no description)");
	if (js.values[1] != NULL)
		lifetime = strtol(js.values[1], NULL, 10);
	else if (js.values[2] != NULL)
		lifetime = strtol(js.values[2], NULL, 10) - (long) time(NULL);
	if (js.values[0] == NULL || !js.is_string[0] || js.values[0][0] == '\0' ||
		strlen(js.values[0]) > AZ_MAX_TOKEN_LEN || lifetime <= 0)
	{
		explicit_bzero(h.body.data, h.body.len);
		return psprintf("%s: the answer lacks a usable access_token or expiry", what);
	}
	for (const char *c = js.values[0]; *c; c++)
		if (*c <= 0x20 || *c > 0x7e)
		{
			explicit_bzero(h.body.data, h.body.len);
			return psprintf("%s: the access token is not printable ASCII", what);
		}

	DropToken(slot);
	slot->resource = MemoryContextStrdup(TopMemoryContext, resource);
	slot->identity = MemoryContextStrdup(TopMemoryContext, IdentityFingerprint());
	slot->token = MemoryContextStrdup(TopMemoryContext, js.values[0]);
	/* Renew a little before expiry: 5 minutes, or half the lifetime if shorter. */
	slot->refresh_at = time(NULL) + lifetime - Min(300, lifetime / 2);
	explicit_bzero(js.values[0], strlen(js.values[0]));
	explicit_bzero(h.body.data, h.body.len);
	return NULL;
}

/*
 * A token for "resource": the cached one unless it is due for renewal or
 * "fresh" is asked for.  *cached tells which.  Returns NULL or a reason.
 */
char *
AzureGetToken(const char *resource, bool fresh, int64 deadline, const char **token, bool *cached)
{
	char	   *identity = IdentityFingerprint();
	AzToken    *slot = NULL;
	char	   *problem;

	for (int i = 0; i < AZ_TOKEN_SLOTS; i++)
		if (tokens[i].resource && strcmp(tokens[i].resource, resource) == 0)
			slot = &tokens[i];
	if (slot && !fresh && strcmp(slot->identity, identity) == 0 &&
		time(NULL) < slot->refresh_at)
	{
		*token = slot->token;
		*cached = true;
		return NULL;
	}
	if (slot == NULL)
	{
		for (int i = 0; i < AZ_TOKEN_SLOTS && slot == NULL; i++)
			if (tokens[i].resource == NULL)
				slot = &tokens[i];
		if (slot == NULL)
			slot = &tokens[0];
	}
	DropToken(slot);
	if ((problem = FetchToken(resource, deadline, slot)) != NULL)
		return problem;
	*token = slot->token;
	*cached = false;
	return NULL;
}

/* Forget every cached access token (the provider's reset). */
void
AzureDropTokens(void)
{
	for (int i = 0; i < AZ_TOKEN_SLOTS; i++)
		DropToken(&tokens[i]);
}

/* ---------------------------------------------------------------------
 * Settings
 * --------------------------------------------------------------------- */

static bool
CheckHttpUrl(char **newval, void **extra, GucSource source)
{
	const char *v = *newval;

	if (v == NULL || (strncmp(v, "http://", 7) != 0 && strncmp(v, "https://", 8) != 0))
	{
		GUC_check_errdetail("The setting must be an http:// or https:// URL.");
		return false;
	}
	for (; *v; v++)
		if (*v <= 0x20 || *v > 0x7e || *v == '?' || *v == '#')
		{
			GUC_check_errdetail("The setting must be a URL without spaces, query or fragment.");
			return false;
		}
	return true;
}

static bool
CheckHttpsUrl(char **newval, void **extra, GucSource source)
{
	if (*newval == NULL || strncmp(*newval, "https://", 8) != 0)
	{
		GUC_check_errdetail("The setting must be an https:// URL: the client secret is sent there.");
		return false;
	}
	return CheckHttpUrl(newval, extra, source);
}

/* Client and tenant ids: GUIDs or names, never anything needing quoting. */
static bool
CheckIdentifier(char **newval, void **extra, GucSource source)
{
	for (const char *v = *newval ? *newval : ""; *v; v++)
		if (!(AzureIsNameChar(*v) || *v == '.' || *v == '_'))
		{
			GUC_check_errdetail("The setting may only hold letters, digits, hyphens, dots and underscores.");
			return false;
		}
	return true;
}

/* HOST:PORT:CONNECT-TO-HOST:CONNECT-TO-PORT entries separated by commas. */
static bool
CheckConnectTo(char **newval, void **extra, GucSource source)
{
	for (const char *v = *newval ? *newval : ""; *v; v++)
		if (!(AzureIsNameChar(*v) || *v == '.' || *v == ':' || *v == ',' || *v == ' ' ||
			  *v == '[' || *v == ']'))
		{
			GUC_check_errdetail("The setting is a comma-separated list of HOST:PORT:CONNECT-TO-HOST:CONNECT-TO-PORT entries.");
			return false;
		}
	return true;
}

/* Define the azure provider's settings; called from AzureProviderInit. */
void
AzureClientInit(void)
{
	DefineCustomStringVariable("atrest.azure_identity_endpoint",
							   "Token endpoint of the managed identity used by the azure provider.",
							   "The instance metadata service's endpoint; it is asked for a token for "
							   "Key Vault or Managed HSM with the header \"Metadata: true\". Used unless "
							   "atrest.azure_tenant_id is set.",
							   &azure_identity_endpoint,
							   "http://169.254.169.254/metadata/identity/oauth2/token",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY,
							   CheckHttpUrl, NULL, NULL);
	DefineCustomStringVariable("atrest.azure_client_id",
							   "Client id of the identity the azure provider authenticates as.",
							   "With a managed identity, it picks a user-assigned identity (empty: the "
							   "system-assigned one); with a service principal, it is the application's id.",
							   &azure_client_id, "",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY,
							   CheckIdentifier, NULL, NULL);
	DefineCustomStringVariable("atrest.azure_tenant_id",
							   "Tenant of the service principal the azure provider authenticates as.",
							   "When set, the azure provider uses a service principal (client credentials: "
							   "atrest.azure_client_id and atrest.azure_client_secret_file) instead of a "
							   "managed identity.",
							   &azure_tenant_id, "",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY,
							   CheckIdentifier, NULL, NULL);
	DefineCustomStringVariable("atrest.azure_client_secret_file",
							   "File holding the service principal's client secret.",
							   "It must be owned by the server's user with mode 0600 or less, or by root "
							   "with mode 0640 or less. It must be an absolute path.",
							   &azure_client_secret_file, "",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY,
							   CheckAbsolutePathSetting, NULL, NULL);
	DefineCustomStringVariable("atrest.azure_authority",
							   "Microsoft Entra authority the service principal gets its tokens from.",
							   "The tenant id and /oauth2/v2.0/token are appended. Change it for a "
							   "sovereign cloud.",
							   &azure_authority, "https://login.microsoftonline.com",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY,
							   CheckHttpsUrl, NULL, NULL);
	DefineCustomStringVariable("atrest.azure_ca_file",
							   "File of CA certificates the azure provider trusts.",
							   "Empty uses the system's trusted CAs. It must be an absolute path.",
							   &azure_ca_file, "",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY,
							   CheckAbsolutePathSetting, NULL, NULL);
	DefineCustomStringVariable("atrest.azure_connect_to",
							   "Where the azure provider connects instead of what DNS says.",
							   "A comma-separated list of HOST:PORT:CONNECT-TO-HOST:CONNECT-TO-PORT "
							   "entries (libcurl's CURLOPT_CONNECT_TO), for a private endpoint without DNS, "
							   "or for tests. Requests still name and verify the original host's "
							   "certificate.",
							   &azure_connect_to, "",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY,
							   CheckConnectTo, NULL, NULL);
	DefineCustomIntVariable("atrest.azure_timeout",
							"Time limit for one operation of the azure provider.",
							"It covers getting a token, looking the key up, wrapping or unwrapping, and "
							"waiting for throttled requests to be retried.",
							&azure_timeout,
							10, 1, 600,
							PGC_SUSET, GUC_UNIT_S,
							NULL, NULL, NULL);
}
