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

#include "kms_answer.h"
#include "parse_core.h"
#include "provider.h"
#include "subprocess.h"

/* Longest key URI and key version we accept, in bytes. */
#define KMS_MAX_URI_LEN			1024

/* Longest value we send; the key ring sends about 61 bytes. */
#define KMS_MAX_VALUE_LEN		8192

/* Cap on what we read back from the adapter. */
#define KMS_MAX_STDOUT			(64 * 1024)

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
	return ParseKeyVersionIsValid(s, KMS_MAX_KID_LEN);
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
 * Parse the adapter's answer (kms_answer.c).  Fills *kid and, when
 * want_value, *value (decoded) and returns NULL, or returns the reason it is
 * unacceptable.
 */
static char *
ParseAnswer(KmsOperation op, char *answer, int answer_len, bool want_value,
			char **kid, unsigned char **value, size_t *value_len)
{
	return KmsParseAnswer(KmsOperationNames[op], answer, answer_len, want_value,
						  kid, value, value_len);
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
