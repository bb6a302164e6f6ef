/*
 * provider_command.c
 *		The command root-key provider: wrap and unwrap through a KMS adapter.
 *
 * Cloud KMS services (Azure Key Vault, AWS KMS, Vault transit) are reached
 * through an adapter program named by atrest.kms_command.  Each operation
 * runs the program once, writes one JSON request to its standard input and
 * reads one JSON answer from its standard output; docs/kms-command-protocol.md
 * is the contract.  The program is run by subprocess.c (fork/exec, no
 * shell, own process group, time limit atrest.kms_timeout, cancellable,
 * always killed and reaped) with nothing but its path on its command line.
 *
 * Invariants: no adapter process or zombie outlives the call (subprocess.c
 * sees to that).  Failures never ERROR: they come back as false
 * with a palloc'd reason that carries no wrapped or unwrapped bytes, only
 * the adapter's first line of stderr, which the adapter must keep free of
 * secrets.
 */
#include "postgres.h"

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/jsonapi.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/memutils.h"

#include "provider.h"
#include "subprocess.h"

/* Longest key URI and key version we accept, in bytes. */
#define KMS_MAX_URI_LEN			1024
#define KMS_MAX_KID_LEN			1024

/* Longest value we send; the key ring sends about 61 bytes. */
#define KMS_MAX_VALUE_LEN		8192

/* Cap on what we read back from the adapter. */
#define KMS_MAX_STDOUT			(64 * 1024)

/* Deepest JSON nesting we let the parser see (it recurses). */
#define KMS_MAX_JSON_DEPTH		32

/* Settings. */
static char *kms_command = NULL;
static int	kms_timeout = 10;

typedef enum KmsOperation
{
	KMS_OP_WRAP,
	KMS_OP_UNWRAP,
	KMS_OP_VERSION
} KmsOperation;

static const char *const KmsOperationNames[] = {"wrap", "unwrap", "version"};

/* What the JSON parse of an answer found. */
typedef struct KmsAnswer
{
	int			depth;
	bool		is_object;
	int			field;			/* KMS_FIELD_* of the top-level field being read */
	bool		field_is_string;
	char	   *kid;
	char	   *value;
	const char *problem;		/* first problem found, or NULL */
} KmsAnswer;

#define KMS_FIELD_OTHER		0
#define KMS_FIELD_KID		1
#define KMS_FIELD_VALUE		2

static const char Base64UrlAlphabet[] =
"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/*
 * Why a key URI is unacceptable, or NULL if it is fine: non-empty, at most
 * KMS_MAX_URI_LEN bytes, valid UTF-8, no control characters.
 */
static const char *
KeyUriProblem(const char *key_uri)
{
	size_t		len;

	if (key_uri == NULL || key_uri[0] == '\0')
		return "The key URI is empty.";
	len = strlen(key_uri);
	if (len > KMS_MAX_URI_LEN)
		return "The key URI is longer than 1024 bytes.";
	for (size_t i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) key_uri[i];

		if (c < 0x20 || c == 0x7f)
			return "The key URI contains a control character.";
	}
	if (!pg_verify_mbstr(PG_UTF8, key_uri, (int) len, true))
		return "The key URI is not valid UTF-8.";
	return NULL;
}

/* True if s is a key version we accept: 1..KMS_MAX_KID_LEN printable ASCII. */
static bool
KeyVersionIsValid(const char *s)
{
	size_t		len = strlen(s);

	if (len == 0 || len > KMS_MAX_KID_LEN)
		return false;
	for (size_t i = 0; i < len; i++)
	{
		if ((unsigned char) s[i] < 0x20 || (unsigned char) s[i] > 0x7e)
			return false;
	}
	return true;
}

/* Append the unpadded base64url encoding of data to buf. */
static void
AppendBase64Url(StringInfo buf, const unsigned char *data, size_t len)
{
	size_t		i;

	for (i = 0; i + 2 < len; i += 3)
	{
		uint32		v = (data[i] << 16) | (data[i + 1] << 8) | data[i + 2];

		appendStringInfoChar(buf, Base64UrlAlphabet[(v >> 18) & 63]);
		appendStringInfoChar(buf, Base64UrlAlphabet[(v >> 12) & 63]);
		appendStringInfoChar(buf, Base64UrlAlphabet[(v >> 6) & 63]);
		appendStringInfoChar(buf, Base64UrlAlphabet[v & 63]);
	}
	if (len - i == 1)
	{
		uint32		v = data[i] << 16;

		appendStringInfoChar(buf, Base64UrlAlphabet[(v >> 18) & 63]);
		appendStringInfoChar(buf, Base64UrlAlphabet[(v >> 12) & 63]);
	}
	else if (len - i == 2)
	{
		uint32		v = (data[i] << 16) | (data[i + 1] << 8);

		appendStringInfoChar(buf, Base64UrlAlphabet[(v >> 18) & 63]);
		appendStringInfoChar(buf, Base64UrlAlphabet[(v >> 12) & 63]);
		appendStringInfoChar(buf, Base64UrlAlphabet[(v >> 6) & 63]);
	}
}

static int
Base64UrlDigit(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '-')
		return 62;
	if (c == '_')
		return 63;
	return -1;
}

/*
 * Decode base64url (padding optional, canonical trailing bits required)
 * into a palloc'd buffer.  Returns false on any malformation.
 */
static bool
DecodeBase64Url(const char *s, unsigned char **out, size_t *outlen)
{
	size_t		len = strlen(s);
	unsigned char *buf;
	size_t		n = 0;
	uint32		acc = 0;
	int			bits = 0;

	/* Strip padding, which must complete a 4-character group. */
	if (len % 4 == 0)
	{
		if (len >= 1 && s[len - 1] == '=')
			len--;
		if (len >= 1 && s[len - 1] == '=')
			len--;
	}
	if (len % 4 == 1)
		return false;

	buf = palloc(len * 3 / 4 + 1);
	for (size_t i = 0; i < len; i++)
	{
		int			d = Base64UrlDigit(s[i]);

		if (d < 0)
		{
			pfree(buf);
			return false;
		}
		acc = (acc << 6) | (uint32) d;
		bits += 6;
		if (bits >= 8)
		{
			bits -= 8;
			buf[n++] = (unsigned char) ((acc >> bits) & 0xff);
		}
	}
	/* Left-over bits must be zero, so that each value has one encoding. */
	if (bits > 0 && (acc & ((1U << bits) - 1)) != 0)
	{
		pfree(buf);
		return false;
	}
	*out = buf;
	*outlen = n;
	return true;
}

/*
 * Check that atrest.kms_command names something we can run.  Returns a
 * reason or NULL.  The reason does not repeat the path: it may be shown to
 * users who may not read the superuser-only setting.
 */
static char *
CommandProblem(void)
{
	struct stat st;

	if (kms_command == NULL || kms_command[0] == '\0')
		return pstrdup("atrest.kms_command is not set; set it to the absolute path of a KMS adapter program");
	if (stat(kms_command, &st) != 0)
		return psprintf("atrest.kms_command cannot be used: %s", strerror(errno));
	if (!S_ISREG(st.st_mode))
		return pstrdup("atrest.kms_command does not name a regular file");
	if (access(kms_command, X_OK) != 0)
		return psprintf("atrest.kms_command is not executable by the server: %s",
						strerror(errno));
	return NULL;
}

/*
 * Run the adapter once with "request" on its stdin.  On success returns true
 * with its stdout in *answer (palloc'd, NUL-terminated, *answer_len bytes).
 * On failure returns false with a reason.  Never leaves a child behind;
 * rethrows a query cancel after killing and reaping the child.
 */
static bool
RunAdapter(KmsOperation op, const char *request, size_t request_len,
		   char **answer, int *answer_len, char **reason)
{
	const char *opname = KmsOperationNames[op];
	char	   *problem;
	char	   *argv[2];
	Subprocess	sp;

	if ((problem = CommandProblem()) != NULL)
	{
		*reason = problem;
		return false;
	}

	argv[0] = kms_command;
	argv[1] = NULL;
	memset(&sp, 0, sizeof(sp));
	sp.path = kms_command;
	sp.argv = argv;
	sp.input = request;
	sp.input_len = request_len;
	sp.out = palloc(KMS_MAX_STDOUT + 1);
	sp.out_cap = KMS_MAX_STDOUT;
	sp.timeout_s = kms_timeout;

	if (!RunSubprocess(&sp, "atrest.kms_command", reason))
		return false;

	if (sp.timed_out)
	{
		*reason = psprintf("kms command timed out after %d s on %s",
						   sp.timeout_s, opname);
		return false;
	}
	if (sp.out_overflow)
	{
		*reason = psprintf("kms command wrote more than %d bytes to standard output on %s",
						   KMS_MAX_STDOUT, opname);
		return false;
	}
	if (sp.status_lost)
	{
		*reason = psprintf("the exit status of the kms command was lost on %s", opname);
		return false;
	}
	if (WIFSIGNALED(sp.status))
	{
		*reason = psprintf("kms command was terminated by signal %d (%s) on %s",
						   WTERMSIG(sp.status), pg_strsignal(WTERMSIG(sp.status)),
						   opname);
		return false;
	}
	if (!WIFEXITED(sp.status))
	{
		*reason = psprintf("kms command ended with unrecognized status %d on %s",
						   sp.status, opname);
		return false;
	}
	if (WEXITSTATUS(sp.status) != 0)
	{
		*reason = psprintf("kms command exited with code %d on %s: %s",
						   WEXITSTATUS(sp.status), opname, SubprocessStderrLine(&sp));
		return false;
	}

	sp.out[sp.out_len] = '\0';
	*answer = sp.out;
	*answer_len = (int) sp.out_len;
	return true;
}

/*
 * Scan raw JSON for what PostgreSQL's parser would turn into an ERROR
 * rather than a return code: nesting deep enough to hit the stack check,
 * and \u escapes of non-ASCII characters (converted to the server encoding,
 * which may fail).  Returns a problem description or NULL.
 */
static const char *
JsonPrescanProblem(const char *s, int len)
{
	int			depth = 0;
	bool		in_string = false;

	for (int i = 0; i < len; i++)
	{
		char		c = s[i];

		if (in_string)
		{
			if (c == '"')
				in_string = false;
			else if (c == '\\' && i + 1 < len)
			{
				i++;
				if (s[i] == 'u')
				{
					/* \uXXXX: anything above 007F is refused. */
					if (i + 4 < len &&
						(s[i + 1] != '0' || s[i + 2] != '0' ||
						 !(s[i + 3] >= '0' && s[i + 3] <= '7')))
						return "it uses \\u escapes for non-ASCII characters";
				}
			}
		}
		else if (c == '"')
			in_string = true;
		else if (c == '{' || c == '[')
		{
			if (++depth > KMS_MAX_JSON_DEPTH)
				return "it is nested too deeply";
		}
		else if (c == '}' || c == ']')
			depth--;
	}
	return NULL;
}

/* JSON parser callbacks collecting the top-level "kid" and "value" strings. */
#if PG_VERSION_NUM >= 160000
#define JSON_CB_TYPE JsonParseErrorType
#define JSON_CB_RETURN return JSON_SUCCESS
#else
#define JSON_CB_TYPE void
#define JSON_CB_RETURN return
#endif

static void
AnswerProblem(KmsAnswer *ans, const char *problem)
{
	if (ans->problem == NULL)
		ans->problem = problem;
}

static JSON_CB_TYPE
AnswerObjectStart(void *state)
{
	KmsAnswer  *ans = (KmsAnswer *) state;

	if (ans->depth == 0)
		ans->is_object = true;
	ans->depth++;
	JSON_CB_RETURN;
}

static JSON_CB_TYPE
AnswerNestEnd(void *state)
{
	KmsAnswer  *ans = (KmsAnswer *) state;

	ans->depth--;
	JSON_CB_RETURN;
}

static JSON_CB_TYPE
AnswerArrayStart(void *state)
{
	KmsAnswer  *ans = (KmsAnswer *) state;

	ans->depth++;
	JSON_CB_RETURN;
}

static JSON_CB_TYPE
AnswerFieldStart(void *state, char *fname, bool isnull)
{
	KmsAnswer  *ans = (KmsAnswer *) state;

	if (ans->depth != 1)
		JSON_CB_RETURN;
	ans->field_is_string = false;
	if (strcmp(fname, "kid") == 0)
	{
		if (ans->kid != NULL)
			AnswerProblem(ans, "it has \"kid\" twice");
		ans->field = KMS_FIELD_KID;
	}
	else if (strcmp(fname, "value") == 0)
	{
		if (ans->value != NULL)
			AnswerProblem(ans, "it has \"value\" twice");
		ans->field = KMS_FIELD_VALUE;
	}
	else
		ans->field = KMS_FIELD_OTHER;
	JSON_CB_RETURN;
}

static JSON_CB_TYPE
AnswerFieldEnd(void *state, char *fname, bool isnull)
{
	KmsAnswer  *ans = (KmsAnswer *) state;

	if (ans->depth != 1)
		JSON_CB_RETURN;
	if (ans->field == KMS_FIELD_KID && !ans->field_is_string)
		AnswerProblem(ans, "its \"kid\" is not a string");
	else if (ans->field == KMS_FIELD_VALUE && !ans->field_is_string)
		AnswerProblem(ans, "its \"value\" is not a string");
	ans->field = KMS_FIELD_OTHER;
	JSON_CB_RETURN;
}

static JSON_CB_TYPE
AnswerScalar(void *state, char *token, JsonTokenType tokentype)
{
	KmsAnswer  *ans = (KmsAnswer *) state;

	if (ans->depth != 1 || ans->field == KMS_FIELD_OTHER ||
		tokentype != JSON_TOKEN_STRING)
		JSON_CB_RETURN;
	ans->field_is_string = true;
	if (ans->field == KMS_FIELD_KID && ans->kid == NULL)
		ans->kid = token;
	else if (ans->field == KMS_FIELD_VALUE && ans->value == NULL)
		ans->value = token;
	JSON_CB_RETURN;
}

/*
 * Parse the adapter's answer.  Fills *kid and, when want_value, *value
 * (decoded) and returns NULL, or returns the reason it is unacceptable.
 */
static char *
ParseAnswer(KmsOperation op, char *answer, int answer_len, bool want_value,
			char **kid, unsigned char **value, size_t *value_len)
{
	const char *opname = KmsOperationNames[op];
	JsonLexContext *lex;
	JsonSemAction sem;
	KmsAnswer	ans;
	JsonParseErrorType rc;
	const char *problem;

	if (answer_len == 0)
		return psprintf("kms command printed no answer on %s", opname);
	if (!pg_verify_mbstr(PG_UTF8, answer, answer_len, true))
		return psprintf("kms command's answer on %s is not valid UTF-8", opname);
	if ((problem = JsonPrescanProblem(answer, answer_len)) != NULL)
		return psprintf("kms command's answer on %s is not acceptable JSON: %s",
						opname, problem);

	memset(&ans, 0, sizeof(ans));
	memset(&sem, 0, sizeof(sem));
	sem.semstate = &ans;
	sem.object_start = AnswerObjectStart;
	sem.object_end = AnswerNestEnd;
	sem.array_start = AnswerArrayStart;
	sem.array_end = AnswerNestEnd;
	sem.object_field_start = AnswerFieldStart;
	sem.object_field_end = AnswerFieldEnd;
	sem.scalar = AnswerScalar;

#if PG_VERSION_NUM >= 170000
	lex = makeJsonLexContextCstringLen(NULL, answer, answer_len, PG_UTF8, true);
#else
	lex = makeJsonLexContextCstringLen(answer, answer_len, PG_UTF8, true);
#endif
	rc = pg_parse_json(lex, &sem);

	/* No parser detail: it would quote the answer, which holds the value. */
	if (rc != JSON_SUCCESS)
		return psprintf("kms command's answer on %s is not valid JSON", opname);
	if (!ans.is_object)
		return psprintf("kms command's answer on %s is not a JSON object", opname);
	if (ans.problem != NULL)
		return psprintf("kms command's answer on %s is not acceptable: %s",
						opname, ans.problem);
	if (ans.kid == NULL)
		return psprintf("kms command's answer on %s lacks \"kid\"", opname);
	if (!KeyVersionIsValid(ans.kid))
		return psprintf("kms command's answer on %s has a \"kid\" that is empty, longer than %d bytes or not printable ASCII",
						opname, KMS_MAX_KID_LEN);
	if (want_value)
	{
		if (ans.value == NULL)
			return psprintf("kms command's answer on %s lacks \"value\"", opname);
		if (!DecodeBase64Url(ans.value, value, value_len))
			return psprintf("kms command's answer on %s has a \"value\" that is not base64url",
							opname);
		if (*value_len == 0)
			return psprintf("kms command's answer on %s has an empty \"value\"", opname);
	}
	*kid = ans.kid;
	return NULL;
}

/* Build the JSON request line for one operation. */
static void
BuildRequest(StringInfo req, KmsOperation op, const char *key_uri,
			 const char *key_version, const unsigned char *in, size_t len)
{
	appendStringInfo(req, "{\"version\":1,\"operation\":\"%s\",\"key\":",
					 KmsOperationNames[op]);
	escape_json(req, key_uri);
	if (key_version != NULL)
	{
		appendStringInfoString(req, ",\"kid\":");
		escape_json(req, key_version);
	}
	if (in != NULL)
	{
		appendStringInfoString(req, ",\"value\":\"");
		AppendBase64Url(req, in, len);
		appendStringInfoChar(req, '"');
	}
	appendStringInfoString(req, "}\n");
}

/*
 * One operation end to end: check the arguments, run the adapter, parse
 * its answer and copy the results into the caller's memory context.
 */
static bool
CommandOperation(KmsOperation op, const char *key_uri, const char *key_version,
				 const unsigned char *in, size_t len,
				 unsigned char **out, size_t *outlen,
				 char **kid_out, char **reason)
{
	MemoryContext callcxt = CurrentMemoryContext;
	MemoryContext runcxt;
	const char *opname = KmsOperationNames[op];
	const char *uri_problem;
	StringInfoData req;
	char	   *answer = NULL;
	int			answer_len = 0;
	char	   *kid = NULL;
	unsigned char *value = NULL;
	size_t		value_len = 0;
	char	   *problem = NULL;
	bool		ok;

	if ((uri_problem = KeyUriProblem(key_uri)) != NULL)
	{
		*reason = psprintf("invalid key URI for the command provider: %s", uri_problem);
		return false;
	}
	if (op == KMS_OP_UNWRAP && (key_version == NULL || !KeyVersionIsValid(key_version)))
	{
		*reason = pstrdup("invalid key version for the command provider");
		return false;
	}
	if (op != KMS_OP_VERSION && (len == 0 || len > KMS_MAX_VALUE_LEN))
	{
		*reason = psprintf("the value to %s must be 1 to %d bytes long",
						   opname, KMS_MAX_VALUE_LEN);
		return false;
	}

	/* Request, pipes' buffers and parse trees live only for this call. */
	runcxt = AllocSetContextCreate(callcxt, "atrest kms command",
								   ALLOCSET_SMALL_SIZES);
	MemoryContextSwitchTo(runcxt);

	initStringInfo(&req);
	BuildRequest(&req, op, key_uri, op == KMS_OP_UNWRAP ? key_version : NULL,
				 op == KMS_OP_VERSION ? NULL : in, len);

	/* On ERROR (query cancel) runcxt goes away with its parent context. */
	ok = RunAdapter(op, req.data, req.len, &answer, &answer_len, &problem);
	if (ok)
	{
		problem = ParseAnswer(op, answer, answer_len, op != KMS_OP_VERSION,
							  &kid, &value, &value_len);
		ok = (problem == NULL);
	}
	if (ok && op == KMS_OP_UNWRAP && strcmp(kid, key_version) != 0)
	{
		problem = psprintf("kms command answered unwrap with key version \"%s\", not the one asked for",
						   kid);
		ok = false;
	}

	MemoryContextSwitchTo(callcxt);
	if (ok)
	{
		if (kid_out != NULL)
			*kid_out = pstrdup(kid);
		if (out != NULL)
		{
			*out = palloc(value_len);
			memcpy(*out, value, value_len);
			*outlen = value_len;
		}
	}
	else
		*reason = pstrdup(problem);

	/* Unwrapped bytes are still ciphertext, but leave no copy behind. */
	if (value != NULL)
		explicit_bzero(value, value_len);
	if (answer != NULL)
		explicit_bzero(answer, answer_len);
	MemoryContextDelete(runcxt);
	return ok;
}

/* validate_uri: the shape check of KeyUriProblem, as an ERROR. */
static void
CommandValidateUri(const char *key_uri)
{
	const char *problem = KeyUriProblem(key_uri);

	if (problem != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid key URI for the command provider"),
				 errdetail("%s", problem),
				 errhint("A command provider key URI is any string the KMS adapter understands, such as \"kms:openssl/cmk1\" or \"https://myvault.vault.azure.net/keys/cmk1\".")));
}

/* wrap: the adapter encrypts under the key's current version and names it. */
static bool
CommandWrap(const char *key_uri, const unsigned char *in, size_t len,
			unsigned char **out, size_t *outlen, char **key_version, char **reason)
{
	return CommandOperation(KMS_OP_WRAP, key_uri, NULL, in, len,
							out, outlen, key_version, reason);
}

/* unwrap: the adapter decrypts with the key version that wrap named. */
static bool
CommandUnwrap(const char *key_uri, const char *key_version,
			  const unsigned char *in, size_t len,
			  unsigned char **out, size_t *outlen, char **reason)
{
	return CommandOperation(KMS_OP_UNWRAP, key_uri, key_version, in, len,
							out, outlen, NULL, reason);
}

/* current_version: the version the adapter's wrap would use now. */
static bool
CommandCurrentVersion(const char *key_uri, char **key_version, char **reason)
{
	return CommandOperation(KMS_OP_VERSION, key_uri, NULL, NULL, 0,
							NULL, NULL, key_version, reason);
}

/* The provider keeps no state between calls: each run starts afresh. */
static void
CommandReset(void)
{
}

const AtrestProvider AtrestCommandProvider = {
	"command",
	CommandValidateUri,
	CommandWrap,
	CommandUnwrap,
	CommandCurrentVersion,
	CommandReset
};

/* Define the provider's settings; called from _PG_init. */
void
CommandProviderInit(void)
{
	DefineCustomStringVariable("atrest.kms_command",
							   "Path of the KMS adapter program used by the command provider.",
							   "The program is run without arguments for each wrap, unwrap "
							   "or version request; it reads one JSON request on standard input "
							   "and writes one JSON answer on standard output. "
							   "It must be an absolute path. Empty disables the command provider.",
							   &kms_command,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   CheckAbsolutePathSetting, NULL, NULL);

	DefineCustomIntVariable("atrest.kms_timeout",
							"Time limit for one run of the KMS adapter program.",
							"A run that has not finished by then is killed with its process "
							"group and reported as a failure.",
							&kms_timeout,
							10, 1, 600,
							PGC_SUSET,
							GUC_UNIT_S,
							NULL, NULL, NULL);
}
