/*
 * operators.c
 *		Operators and operator-class support on the encrypted types: jsonb
 *		concatenation, the cast to json, and equality, ordering and hashing
 *		of the opened values.
 *
 * Every function here opens its encrypted arguments and applies the plain
 * type's own function, so results and errors are the plain type's.  The
 * opened values are freed before returning (sorts and hash tables call these
 * functions many times in one memory context); a constant argument (such as
 * the literal in doc || '{"k": 1}', which becomes an encrypted constant) is
 * opened once and kept in fn_extra for the expression's lifetime.
 *
 * Ordering of encrypted_text uses the database's default collation (the one
 * that the implicit cast to text gives), equality and hashing its bytes (the
 * default collation is deterministic).  Hash values are seeded with a random
 * number drawn once per backend, so a hash that reaches a temporary file
 * (hash aggregation or hash join spilling to disk) is not a fixed function
 * of the plaintext; no extended hash function (support function 2) is
 * offered, so the hash operator classes cannot partition tables.  Indexes
 * over encrypted values are refused elsewhere (index_guard.c).
 */
#include "postgres.h"

#include "catalog/pg_collation.h"
#include "common/hashfn.h"
#include "nodes/primnodes.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"

#include "envelope.h"

/* Opened values of arguments that stay the same for a whole query. */
typedef struct StableArgs
{
	bool		opened[2];
	Datum		value[2];
} StableArgs;

/*
 * Whether argument "argno" of the call is a constant.  Only a Const: a
 * bind parameter is stable within one execution, but plpgsql evaluates its
 * simple expressions again and again with one FmgrInfo and changing
 * parameter values, so an opened parameter must not be kept.
 */
static bool
ArgIsConst(FmgrInfo *flinfo, int argno)
{
	Node	   *expr;
	List	   *args;

	if (flinfo == NULL || flinfo->fn_expr == NULL)
		return false;
	expr = flinfo->fn_expr;
	if (IsA(expr, FuncExpr))
		args = ((FuncExpr *) expr)->args;
	else if (IsA(expr, OpExpr))
		args = ((OpExpr *) expr)->args;
	else
		return false;
	return argno < list_length(args) && IsA(list_nth(args, argno), Const);
}

/*
 * The opened value of argument "argno"; *must_free says whether the caller
 * frees it.
 */
static Datum
OpenArg(FunctionCallInfo fcinfo, AtrestKind kind, int argno, bool *must_free)
{
	struct varlena *sealed = (struct varlena *) PG_GETARG_POINTER(argno);
	StableArgs *cache;
	MemoryContext old;

	if (!ArgIsConst(fcinfo->flinfo, argno))
	{
		*must_free = true;
		return PointerGetDatum(EnvelopeOpen(kind, sealed));
	}

	*must_free = false;
	cache = (StableArgs *) fcinfo->flinfo->fn_extra;
	if (cache == NULL)
	{
		cache = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(StableArgs));
		fcinfo->flinfo->fn_extra = cache;
	}
	if (!cache->opened[argno])
	{
		/* lives as long as the expression, i.e. the query */
		old = MemoryContextSwitchTo(fcinfo->flinfo->fn_mcxt);
		cache->value[argno] = PointerGetDatum(EnvelopeOpen(kind, sealed));
		MemoryContextSwitchTo(old);
		cache->opened[argno] = true;
	}
	return cache->value[argno];
}

static void
FreeArg(Datum opened, bool must_free)
{
	if (must_free)
		pfree(DatumGetPointer(opened));
}

/* The plain type's three-way comparison. */
static int32
PlainCompare(AtrestKind kind, Datum a, Datum b)
{
	switch (kind)
	{
		case ATREST_KIND_JSONB:
			return DatumGetInt32(DirectFunctionCall2(jsonb_cmp, a, b));
		case ATREST_KIND_BYTEA:
			return DatumGetInt32(DirectFunctionCall2(byteacmp, a, b));
		case ATREST_KIND_TEXT:
			return DatumGetInt32(DirectFunctionCall2Coll(bttextcmp, DEFAULT_COLLATION_OID, a, b));
	}
	return 0;
}

/* The plain type's equality (cheaper than a comparison for bytea and text). */
static bool
PlainEqual(AtrestKind kind, Datum a, Datum b)
{
	switch (kind)
	{
		case ATREST_KIND_JSONB:
			return DatumGetBool(DirectFunctionCall2(jsonb_eq, a, b));
		case ATREST_KIND_BYTEA:
			return DatumGetBool(DirectFunctionCall2(byteaeq, a, b));
		case ATREST_KIND_TEXT:
			return DatumGetBool(DirectFunctionCall2Coll(texteq, DEFAULT_COLLATION_OID, a, b));
	}
	return false;
}

/* The per-backend hash seed (see the file header). */
static uint64
HashSeed(void)
{
	static uint64 seed = 0;
	static bool have_seed = false;

	if (!have_seed)
	{
		if (!pg_strong_random(&seed, sizeof(seed)))
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("could not generate a random hash seed")));
		have_seed = true;
	}
	return seed;
}

static uint32
PlainHash(AtrestKind kind, Datum v)
{
	Datum		seed = UInt64GetDatum(HashSeed());
	uint64		h = 0;

	switch (kind)
	{
		case ATREST_KIND_JSONB:
			h = DatumGetUInt64(DirectFunctionCall2(jsonb_hash_extended, v, seed));
			break;
		case ATREST_KIND_BYTEA:
			h = DatumGetUInt64(hash_any_extended((unsigned char *) VARDATA_ANY(DatumGetPointer(v)),
												 VARSIZE_ANY_EXHDR(DatumGetPointer(v)),
												 DatumGetUInt64(seed)));
			break;
		case ATREST_KIND_TEXT:
			h = DatumGetUInt64(DirectFunctionCall2Coll(hashtextextended, DEFAULT_COLLATION_OID, v, seed));
			break;
	}
	return (uint32) (h ^ (h >> 32));
}

static int32
CompareArgs(FunctionCallInfo fcinfo, AtrestKind kind)
{
	bool		fa,
				fb;
	Datum		a = OpenArg(fcinfo, kind, 0, &fa);
	Datum		b = OpenArg(fcinfo, kind, 1, &fb);
	int32		r = PlainCompare(kind, a, b);

	FreeArg(a, fa);
	FreeArg(b, fb);
	return r;
}

static bool
EqualArgs(FunctionCallInfo fcinfo, AtrestKind kind)
{
	bool		fa,
				fb;
	Datum		a = OpenArg(fcinfo, kind, 0, &fa);
	Datum		b = OpenArg(fcinfo, kind, 1, &fb);
	bool		r = PlainEqual(kind, a, b);

	FreeArg(a, fa);
	FreeArg(b, fb);
	return r;
}

static uint32
HashArg(FunctionCallInfo fcinfo, AtrestKind kind)
{
	bool		fa;
	Datum		a = OpenArg(fcinfo, kind, 0, &fa);
	uint32		r = PlainHash(kind, a);

	FreeArg(a, fa);
	return r;
}

/*
 * SQL names: atrest.encrypted_eq, _ne, _lt, _le, _gt, _ge, _cmp and _hash,
 * overloaded on the three types.
 */
#define ATREST_COMPARISON_FUNCTIONS(name, KIND) \
PG_FUNCTION_INFO_V1(name##_eq); \
Datum name##_eq(PG_FUNCTION_ARGS) { PG_RETURN_BOOL(EqualArgs(fcinfo, KIND)); } \
PG_FUNCTION_INFO_V1(name##_ne); \
Datum name##_ne(PG_FUNCTION_ARGS) { PG_RETURN_BOOL(!EqualArgs(fcinfo, KIND)); } \
PG_FUNCTION_INFO_V1(name##_lt); \
Datum name##_lt(PG_FUNCTION_ARGS) { PG_RETURN_BOOL(CompareArgs(fcinfo, KIND) < 0); } \
PG_FUNCTION_INFO_V1(name##_le); \
Datum name##_le(PG_FUNCTION_ARGS) { PG_RETURN_BOOL(CompareArgs(fcinfo, KIND) <= 0); } \
PG_FUNCTION_INFO_V1(name##_gt); \
Datum name##_gt(PG_FUNCTION_ARGS) { PG_RETURN_BOOL(CompareArgs(fcinfo, KIND) > 0); } \
PG_FUNCTION_INFO_V1(name##_ge); \
Datum name##_ge(PG_FUNCTION_ARGS) { PG_RETURN_BOOL(CompareArgs(fcinfo, KIND) >= 0); } \
PG_FUNCTION_INFO_V1(name##_cmp); \
Datum name##_cmp(PG_FUNCTION_ARGS) { PG_RETURN_INT32(CompareArgs(fcinfo, KIND)); } \
PG_FUNCTION_INFO_V1(name##_hash); \
Datum name##_hash(PG_FUNCTION_ARGS) { PG_RETURN_UINT32(HashArg(fcinfo, KIND)); }

ATREST_COMPARISON_FUNCTIONS(encrypted_jsonb, ATREST_KIND_JSONB)
ATREST_COMPARISON_FUNCTIONS(encrypted_bytea, ATREST_KIND_BYTEA)
ATREST_COMPARISON_FUNCTIONS(encrypted_text, ATREST_KIND_TEXT)

/*
 * atrest.jsonb_concat(encrypted_jsonb, encrypted_jsonb): the || operator,
 * so that doc || '{"k": 1}' merges as jsonb instead of resolving to text
 * concatenation (the literal becomes an encrypted_jsonb constant, opened
 * once per query).
 */
PG_FUNCTION_INFO_V1(encrypted_jsonb_concat);
Datum
encrypted_jsonb_concat(PG_FUNCTION_ARGS)
{
	bool		fa,
				fb;
	Datum		a = OpenArg(fcinfo, ATREST_KIND_JSONB, 0, &fa);
	Datum		b = OpenArg(fcinfo, ATREST_KIND_JSONB, 1, &fb);
	Datum		r = DirectFunctionCall2(jsonb_concat, a, b);

	/* jsonb_concat returns one of its arguments as is when the other is empty */
	FreeArg(a, fa && DatumGetPointer(r) != DatumGetPointer(a));
	FreeArg(b, fb && DatumGetPointer(r) != DatumGetPointer(b));
	PG_RETURN_DATUM(r);
}

/*
 * atrest.to_json(encrypted_jsonb): the explicit cast to json.  jsonb's and
 * json's builders (to_jsonb, jsonb_build_object, jsonb_agg, row_to_json...)
 * look for a cast to json on types they do not know, so with it an
 * encrypted document nests as a document, as a jsonb one does, instead of
 * becoming a JSON string.
 */
PG_FUNCTION_INFO_V1(encrypted_jsonb_to_json);
Datum
encrypted_jsonb_to_json(PG_FUNCTION_ARGS)
{
	bool		fa;
	Datum		a = OpenArg(fcinfo, ATREST_KIND_JSONB, 0, &fa);
	char	   *out = DatumGetCString(DirectFunctionCall1(jsonb_out, a));

	FreeArg(a, fa);
	PG_RETURN_TEXT_P(cstring_to_text(out));
}
