/*
 * fuzz_kms_answer.c
 *		libFuzzer harness over the KMS adapter's answer parser: the JSON
 *		pre-scan and base64url decoder (src/parse_core.c) and the answer parser
 *		itself (src/kms_answer.c on PostgreSQL's src/common JSON parser, built
 *		with FRONTEND and linked with libpgcommon).  An adapter's standard
 *		output is input from outside the server.
 *
 * The first input byte picks a mode; the rest is the input:
 *
 *	 0, 1  an answer, parsed as provider_command.c does for unwrap (mode 0,
 *		wants "kid" and "value") or version (mode 1, wants "kid").  An
 *		accepted answer has a printable-ASCII kid of 1..1024 bytes and, when
 *		asked for, a non-empty value; a refused one gets a short reason that
 *		never quotes the answer.
 *	 2  base64url: the rest decoded into a buffer of exactly the documented
 *		size; what decodes must encode back (unpadded) to the input with its
 *		padding stripped (one encoding per value).
 *	 3  pre-scan against the parser: JSON that passes ParseJsonPrescan and
 *		that PostgreSQL's parser accepts is nested at most KMS_MAX_JSON_DEPTH
 *		deep, and, when the input is all ASCII, every string the parser
 *		de-escapes is ASCII too (a non-ASCII \u escape would be converted to
 *		the server encoding, which can ERROR).
 *
 * Every buffer ends at an inaccessible page (fuzz_guard.h), which matters
 * for libpgcommon: it is not built with AddressSanitizer.  palloc is a
 * memory context reset after every input, as in the server.  Set
 * FUZZ_WRITE_SEEDS=DIR to write the seed inputs to DIR and exit.
 */
#include "postgres_fe.h"

#include <errno.h>
#include <sys/stat.h>

#include "common/jsonapi.h"
#include "mb/pg_wchar.h"

#include "kms_answer.h"
#include "parse_core.h"
#include "fuzz_guard.h"

static void
Fail(const char *what)
{
	fprintf(stderr, "fuzz_kms_answer: invariant violated: %s\n", what);
	abort();
}

/* ---------------------------------------------------------------------
 * A memory context for one input.  In the server, everything the answer
 * parser and PostgreSQL's JSON parser palloc lives in provider_command.c's
 * run context, deleted after each call; libpgcommon's frontend palloc is
 * plain malloc with nothing to free it.  These definitions take the place
 * of libpgcommon's (fe_memutils.o is then not linked), so that each input's
 * allocations are freed when it is done, as the run context would be, and
 * the leak checker still sees anything allocated outside them.
 * --------------------------------------------------------------------- */

typedef struct Chunk
{
	struct Chunk *prev;
	struct Chunk *next;
	size_t		size;
	max_align_t align[];
} Chunk;

static Chunk context = {&context, &context, 0};

static void *
ContextAlloc(size_t size, bool zero)
{
	Chunk	   *c = zero ? calloc(1, sizeof(Chunk) + size) : malloc(sizeof(Chunk) + size);

	if (c == NULL)
		Fail("out of memory");
	c->size = size;
	c->next = &context;
	c->prev = context.prev;
	context.prev->next = c;
	context.prev = c;
	return c->align;
}

static Chunk *
ChunkOf(void *p)
{
	return (Chunk *) ((char *) p - offsetof(Chunk, align));
}

static void
ContextReset(void)
{
	while (context.next != &context)
	{
		Chunk	   *c = context.next;

		context.next = c->next;
		free(c);
	}
	context.prev = &context;
}

void *
palloc(Size size)
{
	return ContextAlloc(size, false);
}

void *
palloc0(Size size)
{
	return ContextAlloc(size, true);
}

void
pfree(void *pointer)
{
	Chunk	   *c = ChunkOf(pointer);

	c->prev->next = c->next;
	c->next->prev = c->prev;
	free(c);
}

void *
repalloc(void *pointer, Size size)
{
	Chunk	   *c = ChunkOf(pointer);
	Chunk	   *n = realloc(c, sizeof(Chunk) + size);

	if (n == NULL)
		Fail("out of memory");
	n->size = size;
	n->prev->next = n;
	n->next->prev = n;
	return n->align;
}

char *
pstrdup(const char *in)
{
	size_t		len = strlen(in);
	char	   *out = palloc(len + 1);

	memcpy(out, in, len + 1);
	return out;
}

static void
FuzzAnswer(const uint8_t *data, size_t size, bool want_value)
{
	Guarded		in;
	char	   *kid = NULL;
	unsigned char *value = NULL;
	size_t		value_len = 0;
	char	   *problem;

	if (size > 64 * 1024)		/* RunAdapter's KMS_MAX_STDOUT */
		size = 64 * 1024;
	GuardedAlloc(&in, size);
	memcpy(in.p, data, size);
	problem = KmsParseAnswer(want_value ? "unwrap" : "version", (char *) in.p, (int) size,
							 want_value, &kid, &value, &value_len);
	if (problem != NULL)
	{
		if (strncmp(problem, "kms command", 11) != 0 || strlen(problem) > 160)
			Fail("a refusal that is not one of the fixed sentences");
		for (const char *c = problem; *c; c++)
			if ((unsigned char) *c < 0x20 || (unsigned char) *c > 0x7e)
				Fail("a refusal with a non-printable byte");
		pfree(problem);
	}
	else
	{
		size_t		kl;

		if (kid == NULL)
			Fail("accepted without a kid");
		kl = strlen(kid);
		if (kl == 0 || kl > KMS_MAX_KID_LEN)
			Fail("accepted a kid of a bad length");
		for (size_t i = 0; i < kl; i++)
			if ((unsigned char) kid[i] < 0x20 || (unsigned char) kid[i] > 0x7e)
				Fail("accepted a kid that is not printable ASCII");
		if (want_value && (value == NULL || value_len == 0))
			Fail("accepted without a value");
		if (value != NULL)
			pfree(value);
	}
	GuardedFree(&in);
}

static void
FuzzBase64Url(const uint8_t *data, size_t size)
{
	static const char alphabet[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	Guarded		in,
				out;
	size_t		outlen = 0,
				stripped = size,
				n = 0;
	char	   *enc;

	GuardedAlloc(&in, size);
	memcpy(in.p, data, size);
	GuardedAlloc(&out, PARSE_BASE64URL_MAX_DECODED(size));
	if (!ParseBase64UrlDecode((const char *) in.p, size, out.p, &outlen))
	{
		GuardedFree(&out);
		GuardedFree(&in);
		return;
	}
	if (size % 4 == 0)
	{
		if (stripped > 0 && data[stripped - 1] == '=')
			stripped--;
		if (stripped > 0 && data[stripped - 1] == '=')
			stripped--;
	}
	if (outlen != stripped * 6 / 8)
		Fail("base64url decoded to the wrong number of bytes");
	enc = malloc(stripped + 4);
	for (size_t i = 0; i < outlen; i += 3)
	{
		uint32_t	v = (uint32_t) out.p[i] << 16;
		size_t		left = outlen - i;

		if (left > 1)
			v |= (uint32_t) out.p[i + 1] << 8;
		if (left > 2)
			v |= out.p[i + 2];
		enc[n++] = alphabet[(v >> 18) & 63];
		enc[n++] = alphabet[(v >> 12) & 63];
		if (left > 1)
			enc[n++] = alphabet[(v >> 6) & 63];
		if (left > 2)
			enc[n++] = alphabet[v & 63];
	}
	if (n != stripped || memcmp(enc, data, n) != 0)
		Fail("base64url accepted a non-canonical encoding (it does not encode back to itself)");
	free(enc);
	GuardedFree(&out);
	GuardedFree(&in);
}

/* Mode 3: the parser's view of what the pre-scan let through. */

/* PostgreSQL 16 made the JSON parser's callbacks return an error code. */
#if PG_VERSION_NUM >= 160000
#define SCAN_CB_TYPE JsonParseErrorType
#define SCAN_CB_RETURN return JSON_SUCCESS
#else
#define SCAN_CB_TYPE void
#define SCAN_CB_RETURN return
#endif

typedef struct ScanState
{
	int			depth;
	int			max_depth;
	bool		non_ascii;
} ScanState;

static SCAN_CB_TYPE
ScanNestStart(void *state)
{
	ScanState  *s = state;

	if (++s->depth > s->max_depth)
		s->max_depth = s->depth;
	SCAN_CB_RETURN;
}

static SCAN_CB_TYPE
ScanNestEnd(void *state)
{
	((ScanState *) state)->depth--;
	SCAN_CB_RETURN;
}

static SCAN_CB_TYPE
ScanField(void *state, char *fname, bool isnull)
{
	for (const char *c = fname; c && *c; c++)
		if ((unsigned char) *c >= 0x80)
			((ScanState *) state)->non_ascii = true;
	SCAN_CB_RETURN;
}

static SCAN_CB_TYPE
ScanScalar(void *state, char *token, JsonTokenType tokentype)
{
	for (const char *c = token; c && *c; c++)
		if ((unsigned char) *c >= 0x80)
			((ScanState *) state)->non_ascii = true;
	SCAN_CB_RETURN;
}

static void
FuzzPrescan(const uint8_t *data, size_t size)
{
	Guarded		in;
	JsonLexContext *lex;
	JsonSemAction sem;
	ScanState	st = {0};
	bool		ascii = true;

	if (size > 64 * 1024)
		size = 64 * 1024;
	GuardedAlloc(&in, size);
	memcpy(in.p, data, size);
	if (ParseJsonPrescan((const char *) in.p, size, KMS_MAX_JSON_DEPTH) != NULL ||
		pg_encoding_verifymbstr(PG_UTF8, (const char *) in.p, (int) size) != (int) size)
	{
		GuardedFree(&in);
		return;
	}
	for (size_t i = 0; i < size; i++)
		if (in.p[i] >= 0x80)
			ascii = false;
	memset(&sem, 0, sizeof(sem));
	sem.semstate = &st;
	sem.object_start = ScanNestStart;
	sem.object_end = ScanNestEnd;
	sem.array_start = ScanNestStart;
	sem.array_end = ScanNestEnd;
	sem.object_field_start = ScanField;
	sem.scalar = ScanScalar;
#if PG_VERSION_NUM >= 170000
	lex = makeJsonLexContextCstringLen(NULL, (char *) in.p, (int) size, PG_UTF8, true);
#else
	lex = makeJsonLexContextCstringLen((char *) in.p, (int) size, PG_UTF8, true);
#endif
	if (pg_parse_json(lex, &sem) == JSON_SUCCESS)
	{
		if (st.max_depth > KMS_MAX_JSON_DEPTH)
			Fail("the pre-scan let through JSON nested deeper than the limit");
		if (ascii && st.non_ascii)
			Fail("the pre-scan let through a \\u escape of a non-ASCII character");
	}
	GuardedFree(&in);
}

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int			LLVMFuzzerInitialize(int *argc, char ***argv);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	switch (data[0] % 4)
	{
		case 0:
		case 1:
			FuzzAnswer(data + 1, size - 1, data[0] % 4 == 0);
			break;
		case 2:
			FuzzBase64Url(data + 1, size - 1);
			break;
		case 3:
			FuzzPrescan(data + 1, size - 1);
			break;
	}
	ContextReset();
	return 0;
}

static void
WriteSeed(const char *dir, int i, uint8_t mode, const char *s)
{
	char		path[4096];
	FILE	   *f;
	size_t		len = strlen(s);

	snprintf(path, sizeof(path), "%s/seed-%02d", dir, i);
	f = fopen(path, "wb");
	if (f == NULL || fwrite(&mode, 1, 1, f) != 1 || fwrite(s, 1, len, f) != len || fclose(f) != 0)
	{
		perror(path);
		exit(1);
	}
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *seeds = getenv("FUZZ_WRITE_SEEDS");
	static const struct
	{
		uint8_t		mode;
		const char *s;
	}			s[] = {
		{0, "{\"kid\":\"v1\",\"value\":\"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8\"}\n"},
		{0, "{\"kid\": \"projects/p/keys/k/versions/3\", \"value\": \"3q2-7w==\", \"extra\": [1, {\"a\": null}]}"},
		{0, "{\"kid\":\"v1\",\"kid\":\"v2\",\"value\":\"AA\"}"},
		{0, "{\"kid\":1,\"value\":\"AA\"}"},
		{0, "{\"kid\":\"v\\u0031\",\"value\":\"A\"}"},
		{0, "{\"kid\":\"v\\u00e9\",\"value\":\"AA\"}"},
		{0, "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]"},
		{0, "{\"kid\":\"v1\",\"value\":\"\"}"},
		{1, "{\"kid\":\"2024-01-01\"}"},
		{1, "\"just a string\""},
		{2, "AAECAw"},
		{2, "3q2-7w=="},
		{2, "3q2-7x=="},
		{2, "A==="},
		{3, "{\"a\":[\"\\u007f\",\"\\ud83d\\ude00\",{\"b\":{}}]}"},
		{3, "{\"\\u0041\\n\\t\\\"\":\"\\/\"}"},
	};

	if (seeds == NULL)
		return 0;
	if (mkdir(seeds, 0755) != 0 && errno != EEXIST)
	{
		perror(seeds);
		exit(1);
	}
	for (size_t k = 0; k < sizeof(s) / sizeof(s[0]); k++)
		WriteSeed(seeds, (int) k, s[k].mode, s[k].s);
	exit(0);
}
