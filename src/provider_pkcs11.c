/*
 * provider_pkcs11.c
 *		The pkcs11 root-key provider: wraps under a key that stays in an HSM.
 *
 * A key is named by an RFC 7512 URI, pkcs11:token=T;object=L[;id=HEX][;type=K].
 * Its versions are the key objects labelled L on token T; a version is the
 * object's CKA_ID in lower-case hex, and the current version is the highest
 * id (a longer id is higher; ids of equal length compare as unsigned bytes),
 * so rotating means adding an object with the same label and a higher id.
 * AES secret keys wrap with CKM_AES_GCM (output: 12-byte IV || ciphertext ||
 * 16-byte tag, AAD fixed); RSA key pairs wrap with the public key object
 * under CKM_RSA_PKCS_OAEP (SHA-1, MGF1-SHA1) and unwrap with the private key
 * object.  unwrap uses exactly the object whose id wrap reported.
 *
 * Invariants: the module is dlopen'ed and C_Initialize'd lazily, in the
 * backend that needs it, never in the postmaster (PKCS#11 modules are not
 * fork-safe).  A backend keeps one session and one login, reused across
 * calls, until reset() or a change of atrest.pkcs11_module.  Object handles
 * are never kept across calls: every call finds its objects anew, so that a
 * key deleted (revoked) or re-imported in the HSM is noticed at once.  The
 * user PIN is read from atrest.pkcs11_pin_file (refused unless its owner
 * and mode pass SecretFilePermissionProblem) into a stack buffer just
 * before C_Login and wiped right after; after CKR_PIN_INCORRECT the backend
 * does not try the same PIN file again (HSMs lock a PIN after a few
 * failures) until the file changes, not even after reset().  Failures are
 * returned as reasons naming the PKCS#11 call and its return value, never
 * raised as errors; reasons may name paths and labels, so the key ring
 * sends them to the server log only.  A return value saying that the
 * session or a handle went stale drops the session, and an operation that
 * failed so on a reused session is retried once on a new one.
 */
#include "postgres.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#include "pg_atrest.h"
#include "parse_core.h"
#include "provider.h"

#define GCM_IV_LEN			12
#define GCM_TAG_LEN			16
#define GCM_AAD				"pg_atrest database key"
#define TOKEN_LABEL_LEN		32
StaticAssertDecl(TOKEN_LABEL_LEN == PARSE_TOKEN_LABEL_LEN,
				 "parse_core.c checks token labels against the same length");
#define MAX_PIN_LEN			256

/*
 * SoftHSM 2.6 and p11-kit both lay CK_GCM_PARAMS out as in the PKCS#11 v2.40
 * header (pIv, ulIvLen, ulIvBits, pAAD, ulAADLen, ulTagBits), and SoftHSM
 * insists on ulParameterLen == sizeof that struct; the five-field layout in
 * the v2.40 mechanisms text (no ulIvBits) is rejected.  Fail the build if the
 * header ever changes under us.
 */
StaticAssertDecl(offsetof(CK_GCM_PARAMS, ulIvBits) ==
				 offsetof(CK_GCM_PARAMS, ulIvLen) + sizeof(CK_ULONG),
				 "CK_GCM_PARAMS must have ulIvBits after ulIvLen");

/* Which kinds of key objects a URI may select (its type= attribute). */
typedef enum KeyKind
{
	KEY_KIND_ANY,
	KEY_KIND_AES,				/* type=secret-key */
	KEY_KIND_RSA				/* type=private or type=public */
} KeyKind;

/* A parsed key URI; strings palloc'd and NUL-free. */
typedef struct Pkcs11Uri
{
	char	   *token;
	char	   *object;
	unsigned char *id;			/* NULL when the URI gives no id */
	size_t		idlen;
	KeyKind		kind;
} Pkcs11Uri;

/* A key object found on the token, valid for one call only. */
typedef struct KeyObject
{
	CK_OBJECT_HANDLE handle;
	CK_OBJECT_CLASS cls;
	CK_KEY_TYPE type;
	unsigned char *id;
	CK_ULONG	idlen;
} KeyObject;

/* What one call asks of the token, and what it gets back. */
typedef struct Pkcs11Call
{
	const Pkcs11Uri *uri;
	const unsigned char *version;	/* unwrap: the id to use, else NULL */
	size_t		versionlen;
	bool		encrypt;		/* wrap (true) or unwrap (false) */
	bool		operate;		/* false for current_version */
	const unsigned char *in;
	size_t		len;
	unsigned char **out;
	size_t	   *outlen;
	char	  **key_version;
} Pkcs11Call;

/* Settings */
static char *Pkcs11ModulePath = NULL;
static char *Pkcs11PinFile = NULL;

/* Per-backend state: the loaded module and our one session */
static CK_FUNCTION_LIST_PTR p11 = NULL; /* set while the module is initialized */
static char *loadedModulePath = NULL;	/* in TopMemoryContext */
static int	loadedPid = 0;
static bool haveSession = false;
static CK_SESSION_HANDLE session;
static char sessionToken[TOKEN_LABEL_LEN + 1];

/* The PIN file that last gave CKR_PIN_INCORRECT, so we don't retry it */
static bool badPinKnown = false;
static char *badPinPath = NULL; /* in TopMemoryContext */
static struct stat badPinStat;

/* The PKCS#11 return value of the latest failure (CKR_OK if none) */
static CK_RV lastFailureRv = CKR_OK;

#define RV_NAME(rv) { rv, #rv }
static const struct
{
	CK_RV		rv;
	const char *name;
}			rvNames[] =
{
	RV_NAME(CKR_OK),
	RV_NAME(CKR_CANCEL),
	RV_NAME(CKR_HOST_MEMORY),
	RV_NAME(CKR_SLOT_ID_INVALID),
	RV_NAME(CKR_GENERAL_ERROR),
	RV_NAME(CKR_FUNCTION_FAILED),
	RV_NAME(CKR_ARGUMENTS_BAD),
	RV_NAME(CKR_NO_EVENT),
	RV_NAME(CKR_NEED_TO_CREATE_THREADS),
	RV_NAME(CKR_CANT_LOCK),
	RV_NAME(CKR_ATTRIBUTE_READ_ONLY),
	RV_NAME(CKR_ATTRIBUTE_SENSITIVE),
	RV_NAME(CKR_ATTRIBUTE_TYPE_INVALID),
	RV_NAME(CKR_ATTRIBUTE_VALUE_INVALID),
	RV_NAME(CKR_ACTION_PROHIBITED),
	RV_NAME(CKR_DATA_INVALID),
	RV_NAME(CKR_DATA_LEN_RANGE),
	RV_NAME(CKR_DEVICE_ERROR),
	RV_NAME(CKR_DEVICE_MEMORY),
	RV_NAME(CKR_DEVICE_REMOVED),
	RV_NAME(CKR_ENCRYPTED_DATA_INVALID),
	RV_NAME(CKR_ENCRYPTED_DATA_LEN_RANGE),
	RV_NAME(CKR_FUNCTION_CANCELED),
	RV_NAME(CKR_FUNCTION_NOT_PARALLEL),
	RV_NAME(CKR_FUNCTION_NOT_SUPPORTED),
	RV_NAME(CKR_KEY_HANDLE_INVALID),
	RV_NAME(CKR_KEY_SIZE_RANGE),
	RV_NAME(CKR_KEY_TYPE_INCONSISTENT),
	RV_NAME(CKR_KEY_NOT_NEEDED),
	RV_NAME(CKR_KEY_CHANGED),
	RV_NAME(CKR_KEY_NEEDED),
	RV_NAME(CKR_KEY_INDIGESTIBLE),
	RV_NAME(CKR_KEY_FUNCTION_NOT_PERMITTED),
	RV_NAME(CKR_KEY_NOT_WRAPPABLE),
	RV_NAME(CKR_KEY_UNEXTRACTABLE),
	RV_NAME(CKR_MECHANISM_INVALID),
	RV_NAME(CKR_MECHANISM_PARAM_INVALID),
	RV_NAME(CKR_OBJECT_HANDLE_INVALID),
	RV_NAME(CKR_OPERATION_ACTIVE),
	RV_NAME(CKR_OPERATION_NOT_INITIALIZED),
	RV_NAME(CKR_PIN_INCORRECT),
	RV_NAME(CKR_PIN_INVALID),
	RV_NAME(CKR_PIN_LEN_RANGE),
	RV_NAME(CKR_PIN_EXPIRED),
	RV_NAME(CKR_PIN_LOCKED),
	RV_NAME(CKR_SESSION_CLOSED),
	RV_NAME(CKR_SESSION_COUNT),
	RV_NAME(CKR_SESSION_HANDLE_INVALID),
	RV_NAME(CKR_SESSION_PARALLEL_NOT_SUPPORTED),
	RV_NAME(CKR_SESSION_READ_ONLY),
	RV_NAME(CKR_SESSION_EXISTS),
	RV_NAME(CKR_SESSION_READ_ONLY_EXISTS),
	RV_NAME(CKR_SESSION_READ_WRITE_SO_EXISTS),
	RV_NAME(CKR_SIGNATURE_INVALID),
	RV_NAME(CKR_SIGNATURE_LEN_RANGE),
	RV_NAME(CKR_TEMPLATE_INCOMPLETE),
	RV_NAME(CKR_TEMPLATE_INCONSISTENT),
	RV_NAME(CKR_TOKEN_NOT_PRESENT),
	RV_NAME(CKR_TOKEN_NOT_RECOGNIZED),
	RV_NAME(CKR_TOKEN_WRITE_PROTECTED),
	RV_NAME(CKR_UNWRAPPING_KEY_HANDLE_INVALID),
	RV_NAME(CKR_UNWRAPPING_KEY_SIZE_RANGE),
	RV_NAME(CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT),
	RV_NAME(CKR_USER_ALREADY_LOGGED_IN),
	RV_NAME(CKR_USER_NOT_LOGGED_IN),
	RV_NAME(CKR_USER_PIN_NOT_INITIALIZED),
	RV_NAME(CKR_USER_TYPE_INVALID),
	RV_NAME(CKR_USER_ANOTHER_ALREADY_LOGGED_IN),
	RV_NAME(CKR_USER_TOO_MANY_TYPES),
	RV_NAME(CKR_WRAPPED_KEY_INVALID),
	RV_NAME(CKR_WRAPPED_KEY_LEN_RANGE),
	RV_NAME(CKR_WRAPPING_KEY_HANDLE_INVALID),
	RV_NAME(CKR_WRAPPING_KEY_SIZE_RANGE),
	RV_NAME(CKR_WRAPPING_KEY_TYPE_INCONSISTENT),
	RV_NAME(CKR_RANDOM_SEED_NOT_SUPPORTED),
	RV_NAME(CKR_RANDOM_NO_RNG),
	RV_NAME(CKR_DOMAIN_PARAMS_INVALID),
	RV_NAME(CKR_CURVE_NOT_SUPPORTED),
	RV_NAME(CKR_BUFFER_TOO_SMALL),
	RV_NAME(CKR_SAVED_STATE_INVALID),
	RV_NAME(CKR_INFORMATION_SENSITIVE),
	RV_NAME(CKR_STATE_UNSAVEABLE),
	RV_NAME(CKR_CRYPTOKI_NOT_INITIALIZED),
	RV_NAME(CKR_CRYPTOKI_ALREADY_INITIALIZED),
	RV_NAME(CKR_MUTEX_BAD),
	RV_NAME(CKR_MUTEX_NOT_LOCKED),
	RV_NAME(CKR_NEW_PIN_MODE),
	RV_NAME(CKR_NEXT_OTP),
	RV_NAME(CKR_EXCEEDED_MAX_ITERATIONS),
	RV_NAME(CKR_FIPS_SELF_TEST_FAILED),
	RV_NAME(CKR_LIBRARY_LOAD_FAILED),
	RV_NAME(CKR_PIN_TOO_WEAK),
	RV_NAME(CKR_PUBLIC_KEY_INVALID),
	RV_NAME(CKR_FUNCTION_REJECTED),
};

static void DropSession(void);
static void UnloadModule(void);

/* The name of a PKCS#11 return value, or its number in hex. */
static const char *
RvName(CK_RV rv)
{
	static char unknown[32];

	for (int i = 0; i < lengthof(rvNames); i++)
		if (rvNames[i].rv == rv)
			return rvNames[i].name;
	snprintf(unknown, sizeof(unknown), "0x%08lX", (unsigned long) rv);
	return unknown;
}

/*
 * Does this return value suggest that our session, login or handles went
 * stale (so that starting over on a new session may help)?
 */
static bool
IsStaleRv(CK_RV rv)
{
	switch (rv)
	{
		case CKR_SESSION_HANDLE_INVALID:
		case CKR_SESSION_CLOSED:
		case CKR_OBJECT_HANDLE_INVALID:
		case CKR_KEY_HANDLE_INVALID:
		case CKR_USER_NOT_LOGGED_IN:
		case CKR_DEVICE_REMOVED:
		case CKR_TOKEN_NOT_PRESENT:
		case CKR_OPERATION_ACTIVE:
		case CKR_CRYPTOKI_NOT_INITIALIZED:
			return true;
		default:
			return false;
	}
}

/* Format a reason in the current memory context. */
static char *
FormatReason(const char *fmt, va_list args)
pg_attribute_printf(1, 0);

static char *
FormatReason(const char *fmt, va_list args)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (;;)
	{
		va_list		copy;
		int			needed;

		va_copy(copy, args);
		needed = appendStringInfoVA(&buf, fmt, copy);
		va_end(copy);
		if (needed == 0)
			break;
		enlargeStringInfo(&buf, needed);
	}
	return buf.data;
}

/* Fail with a reason that involves no PKCS#11 return value. */
static bool
Fail(char **reason, const char *fmt,...)
pg_attribute_printf(2, 3);

static bool
Fail(char **reason, const char *fmt,...)
{
	va_list		args;

	lastFailureRv = CKR_OK;
	va_start(args, fmt);
	*reason = FormatReason(fmt, args);
	va_end(args);
	return false;
}

/*
 * Fail because a PKCS#11 call returned rv: the reason reads "<what> failed:
 * CKR_...".  A stale-session return value drops the session (and an
 * uninitialized library the module) so that the next call starts afresh.
 */
static bool
FailRv(char **reason, CK_RV rv, const char *fmt,...)
pg_attribute_printf(3, 4);

static bool
FailRv(char **reason, CK_RV rv, const char *fmt,...)
{
	va_list		args;
	char	   *what;

	va_start(args, fmt);
	what = FormatReason(fmt, args);
	va_end(args);
	*reason = psprintf("%s failed: %s", what, RvName(rv));
	pfree(what);

	lastFailureRv = rv;
	if (rv == CKR_CRYPTOKI_NOT_INITIALIZED)
		UnloadModule();
	else if (IsStaleRv(rv))
		DropSession();
	return false;
}

/* Lower-case hex of a byte string, palloc'd. */
static char *
HexEncode(const unsigned char *p, size_t len)
{
	static const char digits[] = "0123456789abcdef";
	char	   *s = palloc(len * 2 + 1);

	for (size_t i = 0; i < len; i++)
	{
		s[2 * i] = digits[p[i] >> 4];
		s[2 * i + 1] = digits[p[i] & 0x0f];
	}
	s[len * 2] = '\0';
	return s;
}

/* Decode a non-empty, even-length hex string into palloc'd bytes; false if it is not one. */
static bool
HexDecode(const char *s, size_t slen, unsigned char **out, size_t *outlen)
{
	unsigned char *buf = palloc(slen / 2 + 1);

	if (!ParseHexDecode(s, slen, buf))
	{
		pfree(buf);
		return false;
	}
	*out = buf;
	*outlen = slen / 2;
	return true;
}

/*
 * Order of key versions: a longer CKA_ID is higher; ids of equal length
 * compare as unsigned big-endian numbers (bytewise).
 */
static int
CompareIds(const unsigned char *a, size_t alen,
		   const unsigned char *b, size_t blen)
{
	if (alen != blen)
		return alen < blen ? -1 : 1;
	return alen == 0 ? 0 : memcmp(a, b, alen);
}

/* Does the token's space-padded label equal the URI's token label? */
static bool
TokenLabelMatches(const CK_UTF8CHAR *label, const char *want)
{
	size_t		len = TOKEN_LABEL_LEN;
	size_t		wantlen = strlen(want);

	while (len > 0 && label[len - 1] == ' ')
		len--;
	while (wantlen > 0 && want[wantlen - 1] == ' ')
		wantlen--;
	return len == wantlen && memcmp(label, want, len) == 0;
}

/* A token's label without its padding, palloc'd. */
static char *
TokenLabelString(const CK_UTF8CHAR *label)
{
	size_t		len = TOKEN_LABEL_LEN;

	while (len > 0 && label[len - 1] == ' ')
		len--;
	return pnstrdup((const char *) label, len);
}

/*
 * Parse a key URI (parse_core.c does the decoding).  Returns false with a
 * full sentence in *detail if it is malformed.  Messages name attributes but
 * never quote values other than labels, in case someone puts a PIN into the
 * URI.  The strings in *uri are palloc'd (one buffer).
 */
static bool
ParseUri(const char *key_uri, Pkcs11Uri *uri, char **detail)
{
	size_t		buflen = strlen(key_uri) + 1;
	char	   *buf = palloc(buflen);
	ParsedUri	parsed;
	ParseUriStatus status = ParsePkcs11Uri(key_uri, buf, buflen, &parsed);
	const char *name = parsed.attr;

	memset(uri, 0, sizeof(*uri));
	switch (status)
	{
		case PARSE_URI_OK:
			uri->token = unconstify(char *, parsed.token);
			uri->object = unconstify(char *, parsed.object);
			uri->id = unconstify(unsigned char *, parsed.id);
			uri->idlen = parsed.idlen;
			uri->kind = parsed.kind == PARSE_URI_KIND_AES ? KEY_KIND_AES :
				parsed.kind == PARSE_URI_KIND_RSA ? KEY_KIND_RSA : KEY_KIND_ANY;
			return true;
		case PARSE_URI_NO_SCHEME:
			return Fail(detail, "A pkcs11 key URI starts with \"pkcs11:\".");
		case PARSE_URI_QUERY:
			return Fail(detail, "Query attributes (after \"?\") are not accepted: the module comes from atrest.pkcs11_module and the PIN from atrest.pkcs11_pin_file.");
		case PARSE_URI_FRAGMENT:
			return Fail(detail, "A pkcs11 key URI has no fragment (\"#\").");
		case PARSE_URI_EMPTY_ATTRIBUTE:
			return Fail(detail, "The key URI has an empty attribute (a stray \";\").");
		case PARSE_URI_BAD_NAME:
			return Fail(detail, "The key URI has a malformed attribute name.");
		case PARSE_URI_NO_VALUE:
			return Fail(detail, "Attribute \"%s\" has no value.", name);
		case PARSE_URI_BAD_ESCAPE:
			return Fail(detail, "The value of attribute \"%s\" has a \"%%\" not followed by two hex digits.",
						name);
		case PARSE_URI_BAD_CHAR:
			return Fail(detail, "The value of attribute \"%s\" contains a character that must be percent-encoded.",
						name);
		case PARSE_URI_EMPTY_VALUE:
			return Fail(detail, "Attribute \"%s\" is empty.", name);
		case PARSE_URI_DUPLICATE:
			return Fail(detail, "Attribute \"%s\" is given twice.", name);
		case PARSE_URI_NUL_IN_LABEL:
			return Fail(detail, "The value of attribute \"%s\" contains a NUL byte.", name);
		case PARSE_URI_LABEL_TOO_LONG:
			return Fail(detail, "A token label has at most %d bytes.", TOKEN_LABEL_LEN);
		case PARSE_URI_BAD_ID:
			return Fail(detail, "Attribute \"id\" must be the CKA_ID in hex (an even number of hex digits) or percent-encoded bytes.");
		case PARSE_URI_BAD_TYPE:
			return Fail(detail, "Attribute \"type\" must be secret-key, private or public.");
		case PARSE_URI_UNKNOWN_ATTRIBUTE:
			return Fail(detail, "Attribute \"%s\" is not supported: a key URI has token, object and optionally id and type.",
						name);
		case PARSE_URI_NO_TOKEN:
			return Fail(detail, "The key URI must name the token (token=...).");
		case PARSE_URI_NO_OBJECT:
			return Fail(detail, "The key URI must name the key object (object=...).");
	}
	return Fail(detail, "The key URI is malformed.");	/* keep compiler quiet */
}

/*
 * Read the user PIN into pin, which has room for MAX_PIN_LEN + 1 bytes.  On
 * success the caller must explicit_bzero(pin) once done with it; on failure
 * pin has been wiped already.
 */
static bool
ReadPin(char *pin, size_t *pinlen, struct stat *st, char **reason)
{
	int			fd;
	size_t		total = 0;
	int			save_errno;
	const char *problem;

	if (Pkcs11PinFile == NULL || Pkcs11PinFile[0] == '\0')
		return Fail(reason, "atrest.pkcs11_pin_file is not set; set it to the path of a file holding the token's user PIN");

	fd = open(Pkcs11PinFile, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
	{
		save_errno = errno;
		return Fail(reason, "could not open PIN file \"%s\": %s",
					Pkcs11PinFile, strerror(save_errno));
	}
	if (fstat(fd, st) != 0)
	{
		save_errno = errno;
		close(fd);
		return Fail(reason, "could not stat PIN file \"%s\": %s",
					Pkcs11PinFile, strerror(save_errno));
	}
	if ((problem = SecretFilePermissionProblem(st)) != NULL)
	{
		close(fd);
		return Fail(reason, "PIN file \"%s\" cannot be used: %s",
					Pkcs11PinFile, problem);
	}
	while (total < MAX_PIN_LEN + 1)
	{
		ssize_t		n = read(fd, pin + total, MAX_PIN_LEN + 1 - total);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
		{
			save_errno = errno;
			close(fd);
			explicit_bzero(pin, MAX_PIN_LEN + 1);
			return Fail(reason, "could not read PIN file \"%s\": %s",
						Pkcs11PinFile, strerror(save_errno));
		}
		if (n == 0)
			break;
		total += n;
	}
	close(fd);

	if (total > MAX_PIN_LEN)
	{
		explicit_bzero(pin, MAX_PIN_LEN + 1);
		return Fail(reason, "PIN file \"%s\" is longer than %d bytes",
					Pkcs11PinFile, MAX_PIN_LEN);
	}
	while (total > 0 && (pin[total - 1] == '\n' || pin[total - 1] == '\r'))
		total--;
	if (total == 0)
	{
		explicit_bzero(pin, MAX_PIN_LEN + 1);
		return Fail(reason, "PIN file \"%s\" is empty", Pkcs11PinFile);
	}
	*pinlen = total;
	return true;
}

/*
 * Is the PIN file we just read the one that gave CKR_PIN_INCORRECT?  Same
 * path, same file, same size and the same modification and change times (to
 * the nanosecond, so that rewriting it in place is noticed).
 */
static bool
SamePinFile(const struct stat *st)
{
	return strcmp(badPinPath, Pkcs11PinFile) == 0 &&
		st->st_dev == badPinStat.st_dev && st->st_ino == badPinStat.st_ino &&
		st->st_size == badPinStat.st_size &&
		st->st_mtim.tv_sec == badPinStat.st_mtim.tv_sec &&
		st->st_mtim.tv_nsec == badPinStat.st_mtim.tv_nsec &&
		st->st_ctim.tv_sec == badPinStat.st_ctim.tv_sec &&
		st->st_ctim.tv_nsec == badPinStat.st_ctim.tv_nsec;
}

/* Close our session, if any; the next call opens a new one and logs in. */
static void
DropSession(void)
{
	if (haveSession && p11 != NULL && loadedPid == MyProcPid)
		(void) p11->C_CloseSession(session);
	haveSession = false;
	sessionToken[0] = '\0';
}

/*
 * Finalize the module and forget it.  The shared object stays mapped: a
 * module may have registered exit handlers or thread-local destructors that
 * would crash the backend on exit were its code unmapped, and dlopen of the
 * same path later just finds it again.
 */
static void
UnloadModule(void)
{
	DropSession();
	if (p11 != NULL && loadedPid == MyProcPid)
		(void) p11->C_Finalize(NULL);
	p11 = NULL;
	if (loadedModulePath != NULL)
		pfree(loadedModulePath);
	loadedModulePath = NULL;
	loadedPid = 0;
}

/* dlopen and C_Initialize the module named by atrest.pkcs11_module. */
static bool
LoadModule(char **reason)
{
	const char *path = Pkcs11ModulePath;
	void	   *dl;
	CK_C_GetFunctionList getlist;
	CK_FUNCTION_LIST_PTR functions = NULL;
	CK_C_INITIALIZE_ARGS args;
	CK_RV		rv;

	if (path == NULL || path[0] == '\0')
		return Fail(reason, "atrest.pkcs11_module is not set; set it to the path of the PKCS#11 module");
	if (IsPostmasterEnvironment && !IsUnderPostmaster)
		return Fail(reason, "the PKCS#11 module is never loaded in the postmaster");

	dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (dl == NULL)
		return Fail(reason, "module \"%s\" could not be loaded: %s", path, dlerror());
	getlist = (CK_C_GetFunctionList) dlsym(dl, "C_GetFunctionList");
	if (getlist == NULL)
		return Fail(reason, "module \"%s\" could not be loaded: it has no C_GetFunctionList", path);
	rv = getlist(&functions);
	if (rv != CKR_OK || functions == NULL)
		return FailRv(reason, rv, "C_GetFunctionList of module \"%s\"", path);

	/* The module may use OS threads and locks; we never call it concurrently. */
	memset(&args, 0, sizeof(args));
	args.flags = CKF_OS_LOCKING_OK;
	rv = functions->C_Initialize(&args);
	if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED)
		return FailRv(reason, rv, "C_Initialize of module \"%s\"", path);

	p11 = functions;
	loadedModulePath = MemoryContextStrdup(TopMemoryContext, path);
	loadedPid = MyProcPid;
	return true;
}

/* Find the slot holding the token labelled "token". */
static bool
FindSlot(const char *token, CK_SLOT_ID *slot, char **reason)
{
	CK_SLOT_ID *slots = NULL;
	CK_ULONG	nslots = 0;
	CK_RV		rv;
	int			found = 0;
	StringInfoData present;

	/* The slot list may grow between the two calls; try a few times. */
	for (int attempt = 0;; attempt++)
	{
		rv = p11->C_GetSlotList(CK_TRUE, NULL, &nslots);
		if (rv != CKR_OK)
			return FailRv(reason, rv, "C_GetSlotList");
		slots = palloc((nslots + 1) * sizeof(CK_SLOT_ID));
		rv = p11->C_GetSlotList(CK_TRUE, slots, &nslots);
		if (rv == CKR_OK)
			break;
		pfree(slots);
		if (rv != CKR_BUFFER_TOO_SMALL || attempt >= 2)
			return FailRv(reason, rv, "C_GetSlotList");
	}

	initStringInfo(&present);
	for (CK_ULONG i = 0; i < nslots; i++)
	{
		CK_TOKEN_INFO info;

		/* a token removed since C_GetSlotList is simply not there */
		if (p11->C_GetTokenInfo(slots[i], &info) != CKR_OK)
			continue;
		if (!(info.flags & CKF_TOKEN_INITIALIZED))
			continue;
		if (TokenLabelMatches(info.label, token))
		{
			if (found++ == 0)
				*slot = slots[i];
		}
		else
		{
			char	   *label = TokenLabelString(info.label);

			appendStringInfo(&present, "%s\"%s\"", present.len ? ", " : "", label);
			pfree(label);
		}
	}
	pfree(slots);

	if (found == 1)
	{
		pfree(present.data);
		return true;
	}
	if (found > 1)
		return Fail(reason, "%d tokens are labelled \"%s\"; token labels must be unique",
					found, token);
	return Fail(reason, "no token labelled \"%s\" (tokens present: %s)",
				token, present.len ? present.data : "none");
}

/*
 * Open a session on the token and log in as the user.  Logging in reads the
 * PIN from atrest.pkcs11_pin_file and wipes it right after C_Login.
 */
static bool
OpenSession(const char *token, char **reason)
{
	CK_SLOT_ID	slot = 0;
	CK_SESSION_HANDLE h;
	CK_TOKEN_INFO info;
	CK_RV		rv;
	char		pin[MAX_PIN_LEN + 1];
	size_t		pinlen = 0;
	struct stat st;

	if (!FindSlot(token, &slot, reason))
		return false;
	rv = p11->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &h);
	if (rv != CKR_OK)
		return FailRv(reason, rv, "C_OpenSession on token \"%s\"", token);

	rv = p11->C_GetTokenInfo(slot, &info);
	if (rv != CKR_OK)
	{
		(void) p11->C_CloseSession(h);
		return FailRv(reason, rv, "C_GetTokenInfo on token \"%s\"", token);
	}
	if (info.flags & CKF_LOGIN_REQUIRED)
	{
		if (info.flags & CKF_USER_PIN_LOCKED)
		{
			(void) p11->C_CloseSession(h);
			return Fail(reason, "the user PIN of token \"%s\" is locked", token);
		}
		if (!ReadPin(pin, &pinlen, &st, reason))
		{
			(void) p11->C_CloseSession(h);
			return false;
		}
		if (badPinKnown && SamePinFile(&st))
		{
			explicit_bzero(pin, sizeof(pin));
			(void) p11->C_CloseSession(h);
			return Fail(reason, "C_Login on token \"%s\" failed: CKR_PIN_INCORRECT (this backend does not try that PIN file again until it changes, so as not to lock the PIN)",
						token);
		}
		rv = p11->C_Login(h, CKU_USER, (CK_UTF8CHAR_PTR) pin, pinlen);
		explicit_bzero(pin, sizeof(pin));
		if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN)
		{
			(void) p11->C_CloseSession(h);
			if (rv == CKR_PIN_INCORRECT)
			{
				if (badPinPath != NULL)
					pfree(badPinPath);
				badPinPath = MemoryContextStrdup(TopMemoryContext, Pkcs11PinFile);
				badPinStat = st;
				badPinKnown = true;
			}
			return FailRv(reason, rv, "C_Login on token \"%s\"", token);
		}
		badPinKnown = false;
	}

	session = h;
	haveSession = true;
	strlcpy(sessionToken, token, sizeof(sessionToken));
	return true;
}

/*
 * Make sure we have a logged-in session on the token, loading the module if
 * need be.  *fresh tells whether the session was opened by this call.
 */
static bool
EnsureSession(const char *token, bool *fresh, char **reason)
{
	*fresh = false;

	/* State inherited across fork is not ours to use, nor to finalize. */
	if (p11 != NULL && loadedPid != MyProcPid)
		UnloadModule();
	if (p11 != NULL &&
		strcmp(loadedModulePath, Pkcs11ModulePath ? Pkcs11ModulePath : "") != 0)
		UnloadModule();
	if (haveSession && strcmp(sessionToken, token) != 0)
		DropSession();
	if (haveSession)
		return true;

	if (p11 == NULL && !LoadModule(reason))
		return false;
	if (!OpenSession(token, reason))
		return false;
	*fresh = true;
	return true;
}

/*
 * Find the key objects labelled "label" (and with that CKA_ID, if id is not
 * NULL) in our session.  Objects other than secret, public and private keys
 * are skipped, and so are objects deleted while we look.
 */
static bool
FindKeyObjects(const char *label, const unsigned char *id, size_t idlen,
			   KeyObject **objs, int *nobjs, char **reason)
{
	CK_ATTRIBUTE tmpl[2];
	CK_ULONG	ntmpl = 0;
	CK_OBJECT_HANDLE *handles;
	int			nhandles = 0;
	int			maxhandles = 16;
	CK_RV		rv;
	int			n = 0;

	tmpl[ntmpl].type = CKA_LABEL;
	tmpl[ntmpl].pValue = (void *) label;
	tmpl[ntmpl].ulValueLen = strlen(label);
	ntmpl++;
	if (id != NULL)
	{
		tmpl[ntmpl].type = CKA_ID;
		tmpl[ntmpl].pValue = (void *) id;
		tmpl[ntmpl].ulValueLen = idlen;
		ntmpl++;
	}

	rv = p11->C_FindObjectsInit(session, tmpl, ntmpl);
	if (rv != CKR_OK)
		return FailRv(reason, rv, "C_FindObjectsInit");
	handles = palloc(maxhandles * sizeof(CK_OBJECT_HANDLE));
	for (;;)
	{
		CK_ULONG	count = 0;

		if (nhandles == maxhandles)
		{
			maxhandles *= 2;
			handles = repalloc(handles, maxhandles * sizeof(CK_OBJECT_HANDLE));
		}
		rv = p11->C_FindObjects(session, handles + nhandles,
								maxhandles - nhandles, &count);
		if (rv != CKR_OK)
		{
			(void) p11->C_FindObjectsFinal(session);
			pfree(handles);
			return FailRv(reason, rv, "C_FindObjects");
		}
		if (count == 0)
			break;
		nhandles += count;
	}
	rv = p11->C_FindObjectsFinal(session);
	if (rv != CKR_OK)
	{
		pfree(handles);
		return FailRv(reason, rv, "C_FindObjectsFinal");
	}

	*objs = palloc0(Max(nhandles, 1) * sizeof(KeyObject));
	for (int i = 0; i < nhandles; i++)
	{
		KeyObject  *o = &(*objs)[n];
		CK_ATTRIBUTE a[3];

		o->handle = handles[i];
		a[0].type = CKA_CLASS;
		a[0].pValue = &o->cls;
		a[0].ulValueLen = sizeof(o->cls);
		rv = p11->C_GetAttributeValue(session, o->handle, a, 1);
		if (rv == CKR_OBJECT_HANDLE_INVALID)
			continue;
		if (rv != CKR_OK)
		{
			pfree(handles);
			return FailRv(reason, rv, "C_GetAttributeValue(CKA_CLASS)");
		}
		if (o->cls != CKO_SECRET_KEY && o->cls != CKO_PUBLIC_KEY &&
			o->cls != CKO_PRIVATE_KEY)
			continue;

		a[0].type = CKA_KEY_TYPE;
		a[0].pValue = &o->type;
		a[0].ulValueLen = sizeof(o->type);
		a[1].type = CKA_ID;
		a[1].pValue = NULL;
		a[1].ulValueLen = 0;
		rv = p11->C_GetAttributeValue(session, o->handle, a, 2);
		if (rv == CKR_OBJECT_HANDLE_INVALID)
			continue;
		if (rv != CKR_OK)
		{
			pfree(handles);
			return FailRv(reason, rv, "C_GetAttributeValue(CKA_KEY_TYPE, CKA_ID)");
		}
		o->idlen = a[1].ulValueLen == CK_UNAVAILABLE_INFORMATION ? 0 : a[1].ulValueLen;
		o->id = palloc(Max(o->idlen, 1));
		if (o->idlen > 0)
		{
			a[0].type = CKA_ID;
			a[0].pValue = o->id;
			a[0].ulValueLen = o->idlen;
			rv = p11->C_GetAttributeValue(session, o->handle, a, 1);
			if (rv == CKR_OBJECT_HANDLE_INVALID)
				continue;
			if (rv != CKR_OK)
			{
				pfree(handles);
				return FailRv(reason, rv, "C_GetAttributeValue(CKA_ID)");
			}
			o->idlen = a[0].ulValueLen;
		}
		n++;
	}
	pfree(handles);
	*nobjs = n;
	return true;
}

/* " with id 0a0b" for messages, or "" */
static char *
WithId(const unsigned char *id, size_t idlen)
{
	char	   *hex;
	char	   *s;

	if (id == NULL)
		return pstrdup("");
	hex = HexEncode(id, idlen);
	s = psprintf(" with id %s", hex);
	pfree(hex);
	return s;
}

/*
 * Pick the key object a call works with: for unwrap, the one with the given
 * version id; otherwise the current version (highest id) among the objects
 * the URI names.  AES secret keys serve both ways; of an RSA key pair,
 * wrapping uses the public key object and unwrapping the private one.
 */
static bool
SelectKey(const Pkcs11Call *call, KeyObject *key, char **reason)
{
	const Pkcs11Uri *uri = call->uri;
	const unsigned char *filter = call->version ? call->version : uri->id;
	size_t		filterlen = call->version ? call->versionlen : uri->idlen;
	KeyObject  *objs;
	int			nobjs = 0;
	int			best = -1;
	int			naes = 0,
				npub = 0,
				npriv = 0;
	KeyObject  *aes = NULL,
			   *pub = NULL,
			   *priv = NULL;
	const char *what;
	char	   *withid;

	if (!FindKeyObjects(uri->object, filter, filterlen, &objs, &nobjs, reason))
		return false;

	/* keep the kinds the URI's type= allows */
	for (int i = 0; i < nobjs; i++)
	{
		bool		keep = uri->kind == KEY_KIND_ANY ||
			(uri->kind == KEY_KIND_AES) == (objs[i].cls == CKO_SECRET_KEY);

		if (!keep)
			continue;
		if (best < 0 || CompareIds(objs[i].id, objs[i].idlen,
								   objs[best].id, objs[best].idlen) > 0)
			best = i;
	}
	if (best < 0)
		return Fail(reason, "no %sobject labelled \"%s\"%s on token \"%s\"",
					uri->kind == KEY_KIND_AES ? "secret key " :
					uri->kind == KEY_KIND_RSA ? "RSA key " : "",
					uri->object, WithId(filter, filterlen), uri->token);
	if (objs[best].idlen == 0)
		return Fail(reason, "the key object labelled \"%s\" on token \"%s\" has no CKA_ID; pg_atrest needs one as the key version",
					uri->object, uri->token);

	/* all objects sharing the chosen id: the key (or the key pair) */
	for (int i = 0; i < nobjs; i++)
	{
		KeyObject  *o = &objs[i];

		if (CompareIds(o->id, o->idlen, objs[best].id, objs[best].idlen) != 0)
			continue;
		if (o->cls == CKO_SECRET_KEY && uri->kind != KEY_KIND_RSA)
		{
			if (o->type == CKK_AES)
			{
				naes++;
				aes = o;
			}
		}
		else if (o->cls != CKO_SECRET_KEY && uri->kind != KEY_KIND_AES)
		{
			if (o->type != CKK_RSA)
				continue;
			if (o->cls == CKO_PUBLIC_KEY)
			{
				npub++;
				pub = o;
			}
			else
			{
				npriv++;
				priv = o;
			}
		}
	}

	withid = WithId(objs[best].id, objs[best].idlen);
	if (naes > 0 && npub + npriv > 0)
		return Fail(reason, "both an AES key and an RSA key are labelled \"%s\"%s on token \"%s\"; add type=secret-key or type=private to the key URI",
					uri->object, withid, uri->token);
	if (naes > 1)
		return Fail(reason, "%d AES keys are labelled \"%s\"%s on token \"%s\"",
					naes, uri->object, withid, uri->token);
	if (naes == 1)
	{
		*key = *aes;
		return true;
	}
	if (npub + npriv == 0)
		return Fail(reason, "the key labelled \"%s\"%s on token \"%s\" is neither an AES secret key nor an RSA key pair",
					uri->object, withid, uri->token);

	what = call->encrypt ? "public" : "private";
	if ((call->encrypt ? npub : npriv) == 0)
		return Fail(reason, "no RSA %s key object labelled \"%s\"%s on token \"%s\" (%s uses the %s key)",
					what, uri->object, withid, uri->token,
					call->encrypt ? "wrapping" : "unwrapping", what);
	if ((call->encrypt ? npub : npriv) > 1)
		return Fail(reason, "%d RSA %s keys are labelled \"%s\"%s on token \"%s\"",
					call->encrypt ? npub : npriv, what, uri->object, withid, uri->token);
	*key = call->encrypt ? *pub : *priv;
	return true;
}

/*
 * Run one single-part C_Encrypt or C_Decrypt into a palloc'd buffer that
 * starts with "headroom" bytes for the caller to fill.
 */
static bool
RunCipher(bool encrypt, CK_MECHANISM *mech, const KeyObject *key,
		  const char *keyname, const unsigned char *in, size_t len,
		  size_t headroom, unsigned char **out, size_t *outlen, char **reason)
{
	const char *op = encrypt ? "C_Encrypt" : "C_Decrypt";
	CK_ULONG	need = 0;
	unsigned char *buf;
	CK_RV		rv;

	rv = encrypt ? p11->C_EncryptInit(session, mech, key->handle)
		: p11->C_DecryptInit(session, mech, key->handle);
	if (rv != CKR_OK)
		return FailRv(reason, rv, "%sInit with %s", op, keyname);

	/* ask for the output size, then do it (the operation stays active) */
	rv = encrypt ? p11->C_Encrypt(session, (CK_BYTE_PTR) in, len, NULL, &need)
		: p11->C_Decrypt(session, (CK_BYTE_PTR) in, len, NULL, &need);
	if (rv != CKR_OK)
		return FailRv(reason, rv, "%s with %s", op, keyname);
	buf = palloc(headroom + need + 1);
	rv = encrypt ? p11->C_Encrypt(session, (CK_BYTE_PTR) in, len, buf + headroom, &need)
		: p11->C_Decrypt(session, (CK_BYTE_PTR) in, len, buf + headroom, &need);
	if (rv != CKR_OK)
	{
		pfree(buf);
		return FailRv(reason, rv, "%s with %s", op, keyname);
	}
	*out = buf;
	*outlen = headroom + need;
	return true;
}

/* Wrap, unwrap or report the current version, on our session. */
static bool
DoCall(Pkcs11Call *call, char **reason)
{
	const Pkcs11Uri *uri = call->uri;
	KeyObject	key = {0};
	char	   *version;
	char	   *keyname;
	CK_MECHANISM mech;

	if (!SelectKey(call, &key, reason))
		return false;
	version = HexEncode(key.id, key.idlen);
	if (!call->operate)
	{
		*call->key_version = version;
		return true;
	}
	keyname = psprintf("key \"%s\" id %s on token \"%s\"",
					   uri->object, version, uri->token);

	if (key.cls == CKO_SECRET_KEY)
	{
		CK_GCM_PARAMS gcm;
		unsigned char iv[GCM_IV_LEN];

		if (call->encrypt)
		{
			if (!pg_strong_random(iv, sizeof(iv)))
				return Fail(reason, "could not generate a random IV");
		}
		else
		{
			if (call->len < GCM_IV_LEN + GCM_TAG_LEN)
				return Fail(reason, "the wrapped key is %zu bytes, too short for AES-GCM",
							call->len);
			memcpy(iv, call->in, GCM_IV_LEN);
		}
		memset(&gcm, 0, sizeof(gcm));
		gcm.pIv = iv;
		gcm.ulIvLen = GCM_IV_LEN;
		gcm.ulIvBits = GCM_IV_LEN * 8;
		gcm.pAAD = (CK_BYTE_PTR) GCM_AAD;
		gcm.ulAADLen = strlen(GCM_AAD);
		gcm.ulTagBits = GCM_TAG_LEN * 8;
		mech.mechanism = CKM_AES_GCM;
		mech.pParameter = &gcm;
		mech.ulParameterLen = sizeof(gcm);

		if (call->encrypt)
		{
			if (!RunCipher(true, &mech, &key, keyname, call->in, call->len,
						   GCM_IV_LEN, call->out, call->outlen, reason))
				return false;
			memcpy(*call->out, iv, GCM_IV_LEN);
		}
		else if (!RunCipher(false, &mech, &key, keyname,
							call->in + GCM_IV_LEN, call->len - GCM_IV_LEN,
							0, call->out, call->outlen, reason))
			return false;
	}
	else
	{
		/* SoftHSM implements OAEP with SHA-1 and MGF1-SHA1 only */
		CK_RSA_PKCS_OAEP_PARAMS oaep;

		memset(&oaep, 0, sizeof(oaep));
		oaep.hashAlg = CKM_SHA_1;
		oaep.mgf = CKG_MGF1_SHA1;
		oaep.source = CKZ_DATA_SPECIFIED;
		oaep.pSourceData = NULL;
		oaep.ulSourceDataLen = 0;
		mech.mechanism = CKM_RSA_PKCS_OAEP;
		mech.pParameter = &oaep;
		mech.ulParameterLen = sizeof(oaep);
		if (!RunCipher(call->encrypt, &mech, &key, keyname, call->in, call->len,
					   0, call->out, call->outlen, reason))
			return false;
	}

	if (call->key_version)
		*call->key_version = version;
	return true;
}

/*
 * Run a call on a logged-in session.  If it fails in a way that says a
 * reused session went stale (the HSM restarted, the token was reinserted),
 * the session has been dropped: try once more on a new one.
 */
static bool
RunWithSession(Pkcs11Call *call, char **reason)
{
	for (int attempt = 0;; attempt++)
	{
		bool		fresh;

		if (!EnsureSession(call->uri->token, &fresh, reason))
			return false;
		lastFailureRv = CKR_OK;
		if (DoCall(call, reason))
			return true;
		if (attempt > 0 || fresh || !IsStaleRv(lastFailureRv))
			return false;
		pfree(*reason);
		*reason = NULL;
	}
}

/* validate_uri: ereport if the key URI is malformed; touches no device. */
static void
Pkcs11ValidateUri(const char *key_uri)
{
	Pkcs11Uri	uri;
	char	   *detail = NULL;

	if (!ParseUri(key_uri, &uri, &detail))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid pkcs11 key URI"),
				 errdetail("%s", detail),
				 errhint("A pkcs11 key URI looks like pkcs11:token=<token label>;object=<key label>[;id=<hex>].")));
}

/* Parse the URI for a call, turning a malformed one into a reason. */
static bool
ParseUriForCall(const char *key_uri, Pkcs11Uri *uri, char **reason)
{
	char	   *detail = NULL;

	if (ParseUri(key_uri, uri, &detail))
		return true;
	*reason = psprintf("invalid pkcs11 key URI: %s", detail);
	pfree(detail);
	return false;
}

static bool
Pkcs11Wrap(const char *key_uri, const unsigned char *in, size_t len,
		   unsigned char **out, size_t *outlen, char **key_version,
		   char **reason)
{
	Pkcs11Uri	uri;
	Pkcs11Call	call = {0};

	if (!ParseUriForCall(key_uri, &uri, reason))
		return false;
	call.uri = &uri;
	call.encrypt = true;
	call.operate = true;
	call.in = in;
	call.len = len;
	call.out = out;
	call.outlen = outlen;
	call.key_version = key_version;
	return RunWithSession(&call, reason);
}

static bool
Pkcs11Unwrap(const char *key_uri, const char *key_version,
			 const unsigned char *in, size_t len,
			 unsigned char **out, size_t *outlen, char **reason)
{
	Pkcs11Uri	uri;
	Pkcs11Call	call = {0};
	unsigned char *version;
	size_t		versionlen;

	if (!ParseUriForCall(key_uri, &uri, reason))
		return false;
	if (key_version == NULL ||
		!HexDecode(key_version, strlen(key_version), &version, &versionlen))
		return Fail(reason, "key version \"%s\" is not a CKA_ID in hex",
					key_version ? key_version : "");
	call.uri = &uri;
	call.version = version;
	call.versionlen = versionlen;
	call.encrypt = false;
	call.operate = true;
	call.in = in;
	call.len = len;
	call.out = out;
	call.outlen = outlen;
	return RunWithSession(&call, reason);
}

static bool
Pkcs11CurrentVersion(const char *key_uri, char **key_version, char **reason)
{
	Pkcs11Uri	uri;
	Pkcs11Call	call = {0};

	if (!ParseUriForCall(key_uri, &uri, reason))
		return false;
	call.uri = &uri;
	call.encrypt = true;		/* the version wrap would use now */
	call.operate = false;
	call.key_version = key_version;
	return RunWithSession(&call, reason);
}

/*
 * reset: log out and finalize the module.  A PIN file known to be wrong stays
 * known (it is recognised by its identity, so editing it lifts that): callers
 * reset after every failure, and retrying a wrong PIN on each would soon lock
 * the token's PIN.
 */
static void
Pkcs11Reset(void)
{
	UnloadModule();
}

const AtrestProvider AtrestPkcs11Provider = {
	"pkcs11",
	Pkcs11ValidateUri,
	Pkcs11Wrap,
	Pkcs11Unwrap,
	Pkcs11CurrentVersion,
	Pkcs11Reset
};

/* Define the provider's settings; called from _PG_init. */
void
Pkcs11ProviderInit(void)
{
	DefineCustomStringVariable("atrest.pkcs11_module",
							   "Sets the path of the PKCS#11 module that holds the customer-managed keys.",
							   "Each backend loads the module the first time it needs a key, never in the postmaster. "
							   "When the setting changes, backends finalize the old module and load the new one.",
							   &Pkcs11ModulePath,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   CheckAbsolutePathSetting, NULL, NULL);

	DefineCustomStringVariable("atrest.pkcs11_pin_file",
							   "Sets the path of the file holding the user PIN of the PKCS#11 token.",
							   "The file's contents less trailing newlines are the PIN. "
							   "A backend reads it when it logs in to the token and wipes it from memory right after. "
							   "A relative path is taken relative to the data directory.",
							   &Pkcs11PinFile,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);
}
