/*
 * kms_answer.c
 *		The parser of a KMS adapter's answer: one JSON object with the string
 *		fields "kid" and "value" (base64url), docs/kms-command-protocol.md.
 *
 * It uses only PostgreSQL's src/common JSON parser and encoding checks, so
 * it builds in the server (provider_command.c calls it) and, with FRONTEND
 * defined, in the fuzz harness (test/fuzz/fuzz_kms_answer.c, linked with
 * libpgcommon).  Invariant: an answer never makes the parser ERROR; what
 * would (deep nesting, non-ASCII \u escapes) is refused by a pre-scan
 * (parse_core.c) before the parser sees it, and a problem comes back as a
 * palloc'd sentence that never quotes the answer.
 */
#ifdef FRONTEND
#include "postgres_fe.h"
#else
#include "postgres.h"
#endif

#include "common/jsonapi.h"
#include "mb/pg_wchar.h"

#include "kms_answer.h"
#include "parse_core.h"

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

/* True if s is a key version we accept: 1..KMS_MAX_KID_LEN printable ASCII. */
static bool
KeyVersionIsValid(const char *s)
{
	return ParseKeyVersionIsValid(s, KMS_MAX_KID_LEN);
}

/*
 * Decode base64url (padding optional, canonical trailing bits required)
 * into a palloc'd buffer.  Returns false on any malformation.
 */
static bool
DecodeBase64Url(const char *s, unsigned char **out, size_t *outlen)
{
	size_t		len = strlen(s);
	unsigned char *buf = palloc(PARSE_BASE64URL_MAX_DECODED(len));

	if (!ParseBase64UrlDecode(s, len, buf, outlen))
	{
		pfree(buf);
		return false;
	}
	*out = buf;
	return true;
}

/*
 * Scan raw JSON for what PostgreSQL's parser would turn into an ERROR
 * rather than a return code (parse_core.c).  Returns a problem description
 * or NULL.
 */
static const char *
JsonPrescanProblem(const char *s, int len)
{
	return ParseJsonPrescan(s, (size_t) len, KMS_MAX_JSON_DEPTH);
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
 * Parse an adapter's answer.  Fills *kid and, when want_value, *value
 * (decoded) and returns NULL, or returns the reason it is unacceptable.
 */
char *
KmsParseAnswer(const char *opname, char *answer, int answer_len, bool want_value,
			   char **kid, unsigned char **value, size_t *value_len)
{
	JsonLexContext *lex;
	JsonSemAction sem;
	KmsAnswer	ans;
	JsonParseErrorType rc;
	const char *problem;

	if (answer_len == 0)
		return psprintf("kms command printed no answer on %s", opname);
	if (pg_encoding_verifymbstr(PG_UTF8, answer, answer_len) != answer_len)
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
