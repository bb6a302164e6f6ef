/*
 * provider_kmip.c
 *		The kmip root-key provider: wraps with a key that stays in a KMIP server.
 *
 * Speaks KMIP 1.4 (TTLV, kmip_ttlv.c) over TLS 1.2 or later with a client
 * certificate, through OpenSSL.  Key URIs are kmip:id=<Unique Identifier>
 * (one key) and kmip:name=<Name> (the newest Active symmetric key with that
 * name, found with Locate); the key version recorded is the key's Unique
 * Identifier.  Wrap and unwrap are the server's Encrypt and Decrypt with
 * AES-GCM (12-byte nonce chosen here, 16-byte tag, fixed additional data);
 * the stored form is 0x01 || nonce || tag || ciphertext.  The key is never
 * fetched (no Get): it never leaves the server.
 *
 * Invariants: one TLS connection per operation (kmip_conn.c), opened and
 * closed within it whatever happens, ERROR included, so nothing is kept
 * between calls and reset() has nothing to drop; the whole operation
 * (connect, handshake, Locate, Encrypt or Decrypt) fits in
 * atrest.kmip_timeout.  A response larger than KMIP_MAX_RESPONSE is refused
 * from its header, before it is read, and decoded by kmip_ttlv.c, which
 * trusts nothing in it.  Failures come back as reasons without host names,
 * file paths or anything the server said; those go to the server log only
 * (LOG_SERVER_ONLY).
 */
#include "postgres.h"

#include <openssl/rand.h>

#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#include "kmip_conn.h"
#include "kmip_ttlv.h"
#include "provider.h"

#define KMIP_URI_ID_PREFIX		"kmip:id="
#define KMIP_URI_NAME_PREFIX	"kmip:name="
#define KMIP_MAX_IDENT_LEN		255		/* longest id or name we accept */
#define KMIP_MAX_VALUE_LEN		8192	/* longest value we wrap */
#define KMIP_MAX_REQUEST		(16 * 1024)
#define KMIP_MAX_RESPONSE		(64 * 1024)
#define KMIP_MAX_ITEMS			512
#define KMIP_FORMAT_V1			0x01
#define GCM_IV_LEN				12
#define GCM_TAG_LEN				16
#define GCM_AAD					"pg_atrest database key"
#define KMIP_WRAPPED_OVERHEAD	(1 + GCM_IV_LEN + GCM_TAG_LEN)

/* Settings. */
static char *kmip_host = NULL;
static int	kmip_port = 5696;
static char *kmip_client_cert = NULL;
static char *kmip_client_key = NULL;
static char *kmip_ca_cert = NULL;
static int	kmip_timeout = 10;


/* ---------------------------------------------------------------------
 * Key URIs
 * --------------------------------------------------------------------- */

/*
 * Split a key URI into its kind and its identifier.  Returns NULL if it is
 * acceptable, otherwise a sentence saying why not.
 */
static const char *
KmipUriParse(const char *key_uri, bool *by_name, const char **ident)
{
	size_t		len;

	if (key_uri == NULL)
		return "The key URI is empty.";
	if (strncmp(key_uri, KMIP_URI_ID_PREFIX, strlen(KMIP_URI_ID_PREFIX)) == 0)
	{
		*by_name = false;
		*ident = key_uri + strlen(KMIP_URI_ID_PREFIX);
	}
	else if (strncmp(key_uri, KMIP_URI_NAME_PREFIX, strlen(KMIP_URI_NAME_PREFIX)) == 0)
	{
		*by_name = true;
		*ident = key_uri + strlen(KMIP_URI_NAME_PREFIX);
	}
	else
		return "A kmip key URI starts with \"kmip:id=\" or \"kmip:name=\".";

	len = strlen(*ident);
	if (len == 0)
		return "The key URI names no key.";
	if (len > KMIP_MAX_IDENT_LEN)
		return "The key's identifier or name is longer than 255 bytes.";
	for (size_t i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) (*ident)[i];

		if (c < 0x20 || c == 0x7f)
			return "The key URI contains a control character.";
	}
	if (!pg_verify_mbstr(PG_UTF8, *ident, (int) len, true))
		return "The key URI is not valid UTF-8.";
	return NULL;
}

/* A key version (Unique Identifier) we accept: 1..255 printable ASCII. */
static bool
KmipVersionIsValid(const char *s, size_t len)
{
	if (len == 0 || len > KMIP_MAX_IDENT_LEN)
		return false;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char) s[i] < 0x20 || (unsigned char) s[i] > 0x7e)
			return false;
	return true;
}

/* ---------------------------------------------------------------------
 * Messages
 * --------------------------------------------------------------------- */

/* Start a request message with one batch item for "op"; the caller adds the payload. */
static void
RequestBegin(TtlvWriter *w, uint32_t op)
{
	TtlvBegin(w, KMIP_TAG_REQUEST_MESSAGE);
	TtlvBegin(w, KMIP_TAG_REQUEST_HEADER);
	TtlvBegin(w, KMIP_TAG_PROTOCOL_VERSION);
	TtlvInteger(w, KMIP_TAG_PROTOCOL_VERSION_MAJOR, 1);
	TtlvInteger(w, KMIP_TAG_PROTOCOL_VERSION_MINOR, 4);
	TtlvEnd(w);
	TtlvInteger(w, KMIP_TAG_MAXIMUM_RESPONSE_SIZE, KMIP_MAX_RESPONSE);
	TtlvInteger(w, KMIP_TAG_BATCH_COUNT, 1);
	TtlvEnd(w);
	TtlvBegin(w, KMIP_TAG_BATCH_ITEM);
	TtlvEnum(w, KMIP_TAG_OPERATION, op);
	TtlvBegin(w, KMIP_TAG_REQUEST_PAYLOAD);
}

static void
RequestEnd(TtlvWriter *w)
{
	TtlvEnd(w);					/* payload */
	TtlvEnd(w);					/* batch item */
	TtlvEnd(w);					/* message */
}

/* Cryptographic Parameters: AES-GCM with a 16-byte tag. */
static void
PutGcmParameters(TtlvWriter *w)
{
	TtlvBegin(w, KMIP_TAG_CRYPTOGRAPHIC_PARAMETERS);
	TtlvEnum(w, KMIP_TAG_BLOCK_CIPHER_MODE, KMIP_MODE_GCM);
	TtlvEnum(w, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, KMIP_ALG_AES);
	TtlvInteger(w, KMIP_TAG_TAG_LENGTH, GCM_TAG_LEN);
	TtlvEnd(w);
}

static const char *
ResultReasonText(uint32_t reason)
{
	switch (reason)
	{
		case 0x01:
			return "the KMIP server does not know the key, or does not let this client see it";
		case 0x03:
			return "the KMIP server did not accept this client's credentials";
		case 0x05:
		case 0x08:
			return "the KMIP server does not support the operation or AES-GCM";
		case 0x0A:
			return "the KMIP server could not decrypt the value (altered, or not wrapped with this key)";
		case 0x0B:
		case 0x0C:
			return "the KMIP server refused the operation: the key is not Active (revoked, deactivated or destroyed) or this client may not use it";
		default:
			return "the KMIP server answered with an error";
	}
}

/* Copy a server-supplied text into a printable, bounded string for the log. */
static char *
LogSafeText(const TtlvItem *it)
{
	size_t		n = Min(it->len, 200);
	char	   *s = palloc(n + 1);

	for (size_t i = 0; i < n; i++)
	{
		unsigned char c = it->value[i];

		s[i] = (c >= 0x20 && c < 0x7f) ? (char) c : '?';
	}
	s[n] = '\0';
	return s;
}

/*
 * Decode a response message for one batch item of "op" and find its
 * payload.  *items is palloc'd; *payload is an index into it.
 */
static bool
ParseResponse(const unsigned char *resp, size_t resplen, uint32_t op,
			  TtlvItem **items_out, int *payload, KmipFailure *f)
{
	TtlvItem   *items = palloc(sizeof(TtlvItem) * KMIP_MAX_ITEMS);
	int			nitems;
	const char *problem;
	int			hdr,
				ver,
				major,
				count,
				batch,
				it;

	*items_out = items;
	problem = TtlvDecode(resp, resplen, items, KMIP_MAX_ITEMS, &nitems);
	if (problem != NULL)
	{
		f->reason = "the KMIP server's answer is malformed";
		f->detail = pstrdup(problem);
		return false;
	}
	if (items[0].tag != KMIP_TAG_RESPONSE_MESSAGE || items[0].type != TTLV_STRUCTURE ||
		(hdr = TtlvChild(items, 0, KMIP_TAG_RESPONSE_HEADER, TTLV_STRUCTURE)) < 0 ||
		(ver = TtlvChild(items, hdr, KMIP_TAG_PROTOCOL_VERSION, TTLV_STRUCTURE)) < 0 ||
		(major = TtlvChild(items, ver, KMIP_TAG_PROTOCOL_VERSION_MAJOR, TTLV_INTEGER)) < 0 ||
		(count = TtlvChild(items, hdr, KMIP_TAG_BATCH_COUNT, TTLV_INTEGER)) < 0)
	{
		f->reason = "the KMIP server's answer is malformed";
		f->detail = pstrdup("response header incomplete");
		return false;
	}
	if (TtlvU32(&items[major]) != 1)
	{
		f->reason = "the KMIP server does not speak KMIP 1.x";
		f->detail = psprintf("response protocol version major %u", TtlvU32(&items[major]));
		return false;
	}
	if (TtlvU32(&items[count]) != 1 || TtlvCount(items, 0, KMIP_TAG_BATCH_ITEM) != 1 ||
		(batch = TtlvChild(items, 0, KMIP_TAG_BATCH_ITEM, TTLV_STRUCTURE)) < 0)
	{
		f->reason = "the KMIP server's answer is malformed";
		f->detail = pstrdup("response does not hold exactly one batch item");
		return false;
	}
	it = TtlvChild(items, batch, KMIP_TAG_OPERATION, TTLV_ENUMERATION);
	if (it >= 0 && TtlvU32(&items[it]) != op)
	{
		f->reason = "the KMIP server's answer is for another operation";
		return false;
	}
	it = TtlvChild(items, batch, KMIP_TAG_RESULT_STATUS, TTLV_ENUMERATION);
	if (it < 0)
	{
		f->reason = "the KMIP server's answer is malformed";
		f->detail = pstrdup("batch item without a result status");
		return false;
	}
	if (TtlvU32(&items[it]) != KMIP_STATUS_SUCCESS)
	{
		int			rr = TtlvChild(items, batch, KMIP_TAG_RESULT_REASON, TTLV_ENUMERATION);
		int			rm = TtlvChild(items, batch, KMIP_TAG_RESULT_MESSAGE, TTLV_TEXT_STRING);
		uint32_t	reason = rr >= 0 ? TtlvU32(&items[rr]) : 0;

		f->reason = ResultReasonText(reason);
		f->detail = psprintf("result status %u, result reason 0x%x, message \"%s\"",
							 TtlvU32(&items[it]), reason,
							 rm >= 0 ? LogSafeText(&items[rm]) : "");
		return false;
	}
	*payload = TtlvChild(items, batch, KMIP_TAG_RESPONSE_PAYLOAD, TTLV_STRUCTURE);
	if (*payload < 0)
	{
		f->reason = "the KMIP server's answer is malformed";
		f->detail = pstrdup("successful batch item without a payload");
		return false;
	}
	return true;
}

/* Send a built request and parse the response; see ParseResponse. */
static bool
KmipCall(TtlvWriter *w, uint32_t op, TtlvItem **items, int *payload, KmipFailure *f)
{
	unsigned char *resp = NULL;
	size_t		resplen = 0;

	if (!TtlvWriterDone(w))
	{
		f->reason = "the KMIP request does not fit";
		return false;
	}
	if (!KmipConnExchange(w->buf, w->len, KMIP_MAX_RESPONSE, &resp, &resplen, f))
		return false;
	return ParseResponse(resp, resplen, op, items, payload, f);
}

/* Locate the newest Active symmetric key named "name"; *uid palloc'd. */
static bool
KmipLocate(const char *name, char **uid, KmipFailure *f)
{
	unsigned char buf[KMIP_MAX_REQUEST];
	TtlvWriter	w;
	TtlvItem   *items;
	int			payload,
				id;

	TtlvWriterInit(&w, buf, sizeof(buf));
	RequestBegin(&w, KMIP_OP_LOCATE);
	/* KMIP 1.3+ servers list the most recent Initial Date first. */
	TtlvInteger(&w, KMIP_TAG_MAXIMUM_ITEMS, 1);
	TtlvBegin(&w, KMIP_TAG_ATTRIBUTE);
	TtlvText(&w, KMIP_TAG_ATTRIBUTE_NAME, "Object Type", strlen("Object Type"));
	TtlvEnum(&w, KMIP_TAG_ATTRIBUTE_VALUE, 2);	/* Symmetric Key */
	TtlvEnd(&w);
	TtlvBegin(&w, KMIP_TAG_ATTRIBUTE);
	TtlvText(&w, KMIP_TAG_ATTRIBUTE_NAME, "Name", strlen("Name"));
	TtlvBegin(&w, KMIP_TAG_ATTRIBUTE_VALUE);
	TtlvText(&w, KMIP_TAG_NAME_VALUE, name, strlen(name));
	TtlvEnum(&w, KMIP_TAG_NAME_TYPE, KMIP_NAME_TYPE_TEXT);
	TtlvEnd(&w);
	TtlvEnd(&w);
	TtlvBegin(&w, KMIP_TAG_ATTRIBUTE);
	TtlvText(&w, KMIP_TAG_ATTRIBUTE_NAME, "State", strlen("State"));
	TtlvEnum(&w, KMIP_TAG_ATTRIBUTE_VALUE, KMIP_STATE_ACTIVE);
	TtlvEnd(&w);
	RequestEnd(&w);

	if (!KmipCall(&w, KMIP_OP_LOCATE, &items, &payload, f))
		return false;
	id = TtlvChild(items, payload, KMIP_TAG_UNIQUE_IDENTIFIER, TTLV_TEXT_STRING);
	if (id < 0)
	{
		f->reason = "the KMIP server has no Active key with this name that this client may use";
		return false;
	}
	if (!KmipVersionIsValid((const char *) items[id].value, items[id].len))
	{
		f->reason = "the KMIP server named the key with an unusable Unique Identifier";
		return false;
	}
	*uid = pnstrdup((const char *) items[id].value, items[id].len);
	return true;
}

/* True if the payload's Unique Identifier is "uid" (absent counts as a match). */
static bool
PayloadIsFor(const TtlvItem *items, int payload, const char *uid)
{
	int			id = TtlvChild(items, payload, KMIP_TAG_UNIQUE_IDENTIFIER, TTLV_TEXT_STRING);

	return id < 0 || (items[id].len == strlen(uid) &&
					  memcmp(items[id].value, uid, items[id].len) == 0);
}

/* Encrypt in[0..len) with key uid: out = 0x01 || nonce || tag || ciphertext. */
static bool
KmipEncrypt(const char *uid, const unsigned char *in, size_t len,
			unsigned char **out, size_t *outlen, KmipFailure *f)
{
	unsigned char buf[KMIP_MAX_REQUEST];
	unsigned char nonce[GCM_IV_LEN];
	TtlvWriter	w;
	TtlvItem   *items;
	int			payload,
				data,
				tag;

	if (RAND_bytes(nonce, sizeof(nonce)) != 1)
	{
		f->reason = "no random nonce could be drawn";
		return false;
	}
	TtlvWriterInit(&w, buf, sizeof(buf));
	RequestBegin(&w, KMIP_OP_ENCRYPT);
	TtlvText(&w, KMIP_TAG_UNIQUE_IDENTIFIER, uid, strlen(uid));
	PutGcmParameters(&w);
	TtlvBytes(&w, KMIP_TAG_DATA, in, len);
	TtlvBytes(&w, KMIP_TAG_IV_COUNTER_NONCE, nonce, sizeof(nonce));
	TtlvBytes(&w, KMIP_TAG_AEAD_ADDITIONAL_DATA,
			  (const unsigned char *) GCM_AAD, strlen(GCM_AAD));
	RequestEnd(&w);

	if (!KmipCall(&w, KMIP_OP_ENCRYPT, &items, &payload, f))
		return false;
	data = TtlvChild(items, payload, KMIP_TAG_DATA, TTLV_BYTE_STRING);
	tag = TtlvChild(items, payload, KMIP_TAG_AEAD_TAG, TTLV_BYTE_STRING);
	if (!PayloadIsFor(items, payload, uid) || data < 0 || items[data].len != len ||
		tag < 0 || items[tag].len != GCM_TAG_LEN)
	{
		f->reason = "the KMIP server's answer to Encrypt is not AES-GCM output for this key";
		f->detail = psprintf("data %d bytes (expected %zu), tag %d bytes",
							 data < 0 ? -1 : (int) items[data].len, len,
							 tag < 0 ? -1 : (int) items[tag].len);
		return false;
	}
	*outlen = KMIP_WRAPPED_OVERHEAD + len;
	*out = palloc(*outlen);
	(*out)[0] = KMIP_FORMAT_V1;
	memcpy(*out + 1, nonce, GCM_IV_LEN);
	memcpy(*out + 1 + GCM_IV_LEN, items[tag].value, GCM_TAG_LEN);
	memcpy(*out + KMIP_WRAPPED_OVERHEAD, items[data].value, len);
	return true;
}

/* The inverse of KmipEncrypt. */
static bool
KmipDecrypt(const char *uid, const unsigned char *in, size_t len,
			unsigned char **out, size_t *outlen, KmipFailure *f)
{
	unsigned char buf[KMIP_MAX_REQUEST];
	TtlvWriter	w;
	TtlvItem   *items;
	int			payload,
				data;

	if (len <= KMIP_WRAPPED_OVERHEAD || in[0] != KMIP_FORMAT_V1)
	{
		f->reason = "the wrapped key is not in the kmip provider's format";
		return false;
	}
	TtlvWriterInit(&w, buf, sizeof(buf));
	RequestBegin(&w, KMIP_OP_DECRYPT);
	TtlvText(&w, KMIP_TAG_UNIQUE_IDENTIFIER, uid, strlen(uid));
	PutGcmParameters(&w);
	TtlvBytes(&w, KMIP_TAG_DATA, in + KMIP_WRAPPED_OVERHEAD, len - KMIP_WRAPPED_OVERHEAD);
	TtlvBytes(&w, KMIP_TAG_IV_COUNTER_NONCE, in + 1, GCM_IV_LEN);
	TtlvBytes(&w, KMIP_TAG_AEAD_ADDITIONAL_DATA,
			  (const unsigned char *) GCM_AAD, strlen(GCM_AAD));
	TtlvBytes(&w, KMIP_TAG_AEAD_TAG, in + 1 + GCM_IV_LEN, GCM_TAG_LEN);
	RequestEnd(&w);

	if (!KmipCall(&w, KMIP_OP_DECRYPT, &items, &payload, f))
		return false;
	data = TtlvChild(items, payload, KMIP_TAG_DATA, TTLV_BYTE_STRING);
	if (!PayloadIsFor(items, payload, uid) || data < 0 ||
		items[data].len != len - KMIP_WRAPPED_OVERHEAD)
	{
		f->reason = "the KMIP server's answer to Decrypt is not the plaintext of this value";
		return false;
	}
	*outlen = items[data].len;
	*out = palloc(*outlen);
	memcpy(*out, items[data].value, *outlen);
	return true;
}

/* ---------------------------------------------------------------------
 * One operation end to end
 * --------------------------------------------------------------------- */

typedef enum KmipOp
{
	KMIP_WRAP,
	KMIP_UNWRAP,
	KMIP_VERSION
} KmipOp;

/*
 * The network part of one operation: connect, find the key, encrypt or
 * decrypt.  Runs inside KmipOperation's PG_TRY, which closes the connection.
 */
static bool
KmipRun(KmipOp op, bool by_name, const char *ident, const char *key_version,
		const unsigned char *in, size_t len,
		char **uid, unsigned char **res, size_t *reslen, KmipFailure *f)
{
	KmipServer	srv = {kmip_host, kmip_port, kmip_client_cert, kmip_client_key,
	kmip_ca_cert, kmip_timeout};

	if (!KmipConnOpen(&srv, f))
		return false;
	if (op == KMIP_UNWRAP)
		*uid = pstrdup(key_version);
	else if (by_name)
	{
		if (!KmipLocate(ident, uid, f))
			return false;
	}
	else
		*uid = pstrdup(ident);

	if (op == KMIP_WRAP)
		return KmipEncrypt(*uid, in, len, res, reslen, f);
	if (op == KMIP_UNWRAP)
		return KmipDecrypt(*uid, in, len, res, reslen, f);
	return true;
}

/*
 * Run one provider operation in a connection of its own.  The results are
 * copied into the caller's memory context; failures are logged with their
 * detail and returned as a reason.
 */
static bool
KmipOperation(KmipOp op, const char *key_uri, const char *key_version,
			  const unsigned char *in, size_t len,
			  unsigned char **out, size_t *outlen, char **version_out, char **reason)
{
	MemoryContext callcxt = CurrentMemoryContext;
	MemoryContext opcxt;
	KmipFailure f = {NULL, NULL};
	const char *problem;
	const char *ident;
	bool		by_name;
	char	   *uid = NULL;
	unsigned char *res = NULL;
	size_t		reslen = 0;
	volatile bool ok = false;

	if ((problem = KmipUriParse(key_uri, &by_name, &ident)) != NULL)
	{
		*reason = psprintf("invalid key URI for the kmip provider: %s", problem);
		return false;
	}
	if (op == KMIP_UNWRAP &&
		(key_version == NULL || !KmipVersionIsValid(key_version, strlen(key_version))))
	{
		*reason = pstrdup("invalid key version for the kmip provider");
		return false;
	}
	if (op != KMIP_VERSION && (len == 0 || len > KMIP_MAX_VALUE_LEN))
	{
		*reason = psprintf("the value to wrap or unwrap must be 1 to %d bytes long",
						   KMIP_MAX_VALUE_LEN);
		return false;
	}

	/* kmip:id= names one key: it is its own current version. */
	if (op == KMIP_VERSION && !by_name)
	{
		*version_out = pstrdup(ident);
		return true;
	}

	/* Requests, responses and decoded items live only for this call. */
	opcxt = AllocSetContextCreate(callcxt, "atrest kmip", ALLOCSET_SMALL_SIZES);
	MemoryContextSwitchTo(opcxt);

	PG_TRY();
	{
		ok = KmipRun(op, by_name, ident, key_version, in, len, &uid, &res, &reslen, &f);
	}
	PG_FINALLY();
	{
		KmipConnClose();
	}
	PG_END_TRY();

	MemoryContextSwitchTo(callcxt);
	if (ok)
	{
		if (version_out != NULL)
			*version_out = pstrdup(uid);
		if (out != NULL)
		{
			*out = palloc(reslen);
			memcpy(*out, res, reslen);
			*outlen = reslen;
		}
	}
	else
	{
		*reason = pstrdup(f.reason ? f.reason : "the KMIP operation failed");
		ereport(LOG_SERVER_ONLY,
				(errmsg("kmip provider: %s failed for key \"%s\": %s",
						op == KMIP_WRAP ? "wrap" : op == KMIP_UNWRAP ? "unwrap" : "version lookup",
						key_uri, *reason),
				 f.detail ? errdetail("%s", f.detail) : 0));
	}
	/* The unwrapped bytes are still ciphertext, but leave no copy behind. */
	if (res != NULL)
		explicit_bzero(res, reslen);
	MemoryContextDelete(opcxt);
	return ok;
}

/* ---------------------------------------------------------------------
 * The provider
 * --------------------------------------------------------------------- */

static void
KmipValidateUri(const char *key_uri)
{
	const char *ident;
	bool		by_name;
	const char *problem = KmipUriParse(key_uri, &by_name, &ident);

	if (problem != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid key URI for the kmip provider"),
				 errdetail("%s", problem),
				 errhint("A kmip key URI is \"kmip:id=<Unique Identifier>\" or \"kmip:name=<Name>\".")));
}

static bool
KmipWrap(const char *key_uri, const unsigned char *in, size_t len,
		 unsigned char **out, size_t *outlen, char **key_version, char **reason)
{
	return KmipOperation(KMIP_WRAP, key_uri, NULL, in, len, out, outlen, key_version, reason);
}

static bool
KmipUnwrap(const char *key_uri, const char *key_version,
		   const unsigned char *in, size_t len,
		   unsigned char **out, size_t *outlen, char **reason)
{
	return KmipOperation(KMIP_UNWRAP, key_uri, key_version, in, len, out, outlen, NULL, reason);
}

static bool
KmipCurrentVersion(const char *key_uri, char **key_version, char **reason)
{
	return KmipOperation(KMIP_VERSION, key_uri, NULL, NULL, 0, NULL, NULL, key_version, reason);
}

/* Nothing outlives an operation (see the file header). */
static void
KmipReset(void)
{
	KmipConnClose();
}

const AtrestProvider AtrestKmipProvider = {
	"kmip",
	KmipValidateUri,
	KmipWrap,
	KmipUnwrap,
	KmipCurrentVersion,
	KmipReset
};

/* Define the provider's settings; called from _PG_init. */
void
KmipProviderInit(void)
{
	DefineCustomStringVariable("atrest.kmip_host",
							   "Host name or address of the KMIP server used by the kmip provider.",
							   "The server's certificate must name this host (or address). "
							   "Empty disables the kmip provider.",
							   &kmip_host, "",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);
	DefineCustomIntVariable("atrest.kmip_port",
							"TCP port of the KMIP server.",
							NULL,
							&kmip_port, 5696, 1, 65535,
							PGC_SIGHUP, GUC_SUPERUSER_ONLY,
							NULL, NULL, NULL);
	DefineCustomStringVariable("atrest.kmip_client_cert",
							   "Path of the PEM client certificate (chain) presented to the KMIP server.",
							   "It must be an absolute path.",
							   &kmip_client_cert, "",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY,
							   CheckAbsolutePathSetting, NULL, NULL);
	DefineCustomStringVariable("atrest.kmip_client_key",
							   "Path of the PEM private key of the KMIP client certificate.",
							   "It must be an absolute path, readable only by the server's OS user.",
							   &kmip_client_key, "",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY,
							   CheckAbsolutePathSetting, NULL, NULL);
	DefineCustomStringVariable("atrest.kmip_ca_cert",
							   "Path of the PEM CA certificates that the KMIP server's certificate must chain to.",
							   "It must be an absolute path. Empty uses the system's CA certificates.",
							   &kmip_ca_cert, "",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY,
							   CheckAbsolutePathSetting, NULL, NULL);
	DefineCustomIntVariable("atrest.kmip_timeout",
							"Time limit for one operation with the KMIP server.",
							"Connecting, the TLS handshake, the request and the answer must all "
							"finish within this time, or the operation fails.",
							&kmip_timeout, 10, 1, 600,
							PGC_SIGHUP, GUC_UNIT_S | GUC_SUPERUSER_ONLY,
							NULL, NULL, NULL);
}
