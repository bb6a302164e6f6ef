/*
 * types.c
 *		The SQL types encrypted_jsonb, encrypted_bytea and encrypted_text.
 *
 * Each type stores a sealed envelope (envelope.h) of its plain type's
 * internal bytes: the jsonb binary form, the raw bytea, the text.  Text and
 * binary I/O carry plaintext in the plain type's own formats, so COPY, pg_dump
 * and binary replication behave as they do for the plain type.
 *
 * The type modifier is the key class id.  Every way a value reaches a column
 * ends under that column's class: input and receive functions seal under the
 * typmod they are given (COPY passes the column's), and PostgreSQL then
 * applies our length-coercion cast (encrypted -> encrypted, with the column's
 * typmod) to literals and parameters that were sealed with typmod -1; that
 * cast re-seals under the column's class only when the value's class
 * differs, without recompressing.  The plain -> encrypted cast gets the
 * target typmod directly.
 */
#include "postgres.h"

#include "access/detoast.h"
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"
#if PG_VERSION_NUM >= 160000
#include "varatt.h"			/* VARDATA and friends moved out of postgres.h */
#endif

#include "envelope.h"
#include "keyring.h"
#include "keytables.h"

/* The key class a typmod stands for. */
static int32
ClassFromTypmod(int32 typmod)
{
	return typmod < 0 ? ATREST_DEFAULT_CLASS : typmod;
}

/* Seal a plain varlena datum under the class of "typmod". */
static Datum
SealDatum(AtrestKind kind, Datum plain, int32 typmod)
{
	struct varlena *v = PG_DETOAST_DATUM_PACKED(plain);

	return PointerGetDatum(EnvelopeSeal(kind, ClassFromTypmod(typmod),
										VARDATA_ANY(v), VARSIZE_ANY_EXHDR(v)));
}

static Datum
OpenDatum(AtrestKind kind, Datum sealed)
{
	return PointerGetDatum(EnvelopeOpen(kind, (struct varlena *) DatumGetPointer(sealed)));
}

static Datum
PlainIn(AtrestKind kind, char *str)
{
	switch (kind)
	{
		case ATREST_KIND_JSONB:
			return DirectFunctionCall1(jsonb_in, CStringGetDatum(str));
		case ATREST_KIND_BYTEA:
			return DirectFunctionCall1(byteain, CStringGetDatum(str));
		case ATREST_KIND_TEXT:
			return PointerGetDatum(cstring_to_text(str));
	}
	return (Datum) 0;
}

static char *
PlainOut(AtrestKind kind, Datum plain)
{
	switch (kind)
	{
		case ATREST_KIND_JSONB:
			return DatumGetCString(DirectFunctionCall1(jsonb_out, plain));
		case ATREST_KIND_BYTEA:
			return DatumGetCString(DirectFunctionCall1(byteaout, plain));
		case ATREST_KIND_TEXT:
			return TextDatumGetCString(plain);
	}
	return NULL;
}

static Datum
PlainRecv(AtrestKind kind, StringInfo buf)
{
	switch (kind)
	{
		case ATREST_KIND_JSONB:
			return DirectFunctionCall1(jsonb_recv, PointerGetDatum(buf));
		case ATREST_KIND_BYTEA:
			return DirectFunctionCall1(bytearecv, PointerGetDatum(buf));
		case ATREST_KIND_TEXT:
			return DirectFunctionCall1(textrecv, PointerGetDatum(buf));
	}
	return (Datum) 0;
}

static Datum
PlainSend(AtrestKind kind, Datum plain)
{
	switch (kind)
	{
		case ATREST_KIND_JSONB:
			return DirectFunctionCall1(jsonb_send, plain);
		case ATREST_KIND_BYTEA:
			return DirectFunctionCall1(byteasend, plain);
		case ATREST_KIND_TEXT:
			return DirectFunctionCall1(textsend, plain);
	}
	return (Datum) 0;
}

/*
 * The length-coercion cast: move the value to the class of "typmod" if it is
 * under another one.  Reads only the header when nothing needs doing.
 */
static Datum
CoerceToClass(AtrestKind kind, Datum sealed, int32 typmod)
{
	bool		changed;

	if (typmod < 0)
		return sealed;
	return PointerGetDatum(EnvelopeReseal(kind, (struct varlena *) DatumGetPointer(sealed),
										  typmod, &changed));
}

/*
 * One set of SQL-callable functions per type.  The SQL names are
 * atrest.<type>_in, _out, _recv, _send, the casts atrest.<type>(plain, int4,
 * bool) and atrest.<type>(<type>, int4, bool), and atrest.decrypt(<type>).
 */
#define ATREST_TYPE_FUNCTIONS(name, KIND) \
PG_FUNCTION_INFO_V1(name##_in); \
Datum \
name##_in(PG_FUNCTION_ARGS) \
{ \
	return SealDatum(KIND, PlainIn(KIND, PG_GETARG_CSTRING(0)), PG_GETARG_INT32(2)); \
} \
PG_FUNCTION_INFO_V1(name##_out); \
Datum \
name##_out(PG_FUNCTION_ARGS) \
{ \
	PG_RETURN_CSTRING(PlainOut(KIND, OpenDatum(KIND, PG_GETARG_DATUM(0)))); \
} \
PG_FUNCTION_INFO_V1(name##_recv); \
Datum \
name##_recv(PG_FUNCTION_ARGS) \
{ \
	return SealDatum(KIND, PlainRecv(KIND, (StringInfo) PG_GETARG_POINTER(0)), PG_GETARG_INT32(2)); \
} \
PG_FUNCTION_INFO_V1(name##_send); \
Datum \
name##_send(PG_FUNCTION_ARGS) \
{ \
	return PlainSend(KIND, OpenDatum(KIND, PG_GETARG_DATUM(0))); \
} \
PG_FUNCTION_INFO_V1(name##_from_plain); \
Datum \
name##_from_plain(PG_FUNCTION_ARGS) \
{ \
	return SealDatum(KIND, PG_GETARG_DATUM(0), PG_GETARG_INT32(1)); \
} \
PG_FUNCTION_INFO_V1(name##_coerce); \
Datum \
name##_coerce(PG_FUNCTION_ARGS) \
{ \
	return CoerceToClass(KIND, PG_GETARG_DATUM(0), PG_GETARG_INT32(1)); \
} \
PG_FUNCTION_INFO_V1(name##_decrypt); \
Datum \
name##_decrypt(PG_FUNCTION_ARGS) \
{ \
	return OpenDatum(KIND, PG_GETARG_DATUM(0)); \
} \
PG_FUNCTION_INFO_V1(name##_envelope); \
Datum \
name##_envelope(PG_FUNCTION_ARGS) \
{ \
	return EnvelopeInfo(fcinfo, KIND); \
} \
PG_FUNCTION_INFO_V1(name##_reseal); \
Datum \
name##_reseal(PG_FUNCTION_ARGS) \
{ \
	return CoerceToClass(KIND, PG_GETARG_DATUM(0), PG_GETARG_INT32(1)); \
} \
PG_FUNCTION_INFO_V1(name##_needs_reseal); \
Datum \
name##_needs_reseal(PG_FUNCTION_ARGS) \
{ \
	return NeedsReseal(KIND, PG_GETARG_DATUM(0), PG_GETARG_INT32(1)); \
}

/*
 * atrest.envelope(v) RETURNS (key_class text, key_version int,
 * compressed bool, stored_bytes int, format text, compression text): what a
 * value's header says; "compression" is the payload's compressor (lz4, zstd
 * or none).  1.0 declared the function without "format" and "compression":
 * with its declaration (a database not yet updated) the row has four
 * columns.
 */
static Datum
EnvelopeInfo(FunctionCallInfo fcinfo, AtrestKind kind)
{
	struct varlena *sealed = (struct varlena *) PG_GETARG_POINTER(0);
	EnvelopeHeader hdr;
	TupleDesc	tupdesc;
	Datum		values[6];
	bool		nulls[6] = {false, false, false, false, false, false};
	char	   *class_name;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "pg_atrest: return type must be a row type");
	EnvelopeReadHeader(kind, sealed, &hdr);
	class_name = KeyClassNameLookup(hdr.class_id);
	if (class_name)
		values[0] = CStringGetTextDatum(class_name);
	else
		values[0] = CStringGetTextDatum(psprintf("#%d", hdr.class_id));
	values[1] = Int32GetDatum((int32) hdr.key_version);
	values[2] = BoolGetDatum((hdr.flags & ENVELOPE_FLAG_COMPRESSED) != 0);
	values[3] = Int32GetDatum((int32) toast_raw_datum_size(PointerGetDatum(sealed)) - VARHDRSZ);
	values[4] = CStringGetTextDatum(hdr.format == ENVELOPE_FORMAT_XAES ? "xaes-256-gcm" : "aes-256-gcm");
	values[5] = CStringGetTextDatum(EnvelopeCompressionName(hdr.flags & ENVELOPE_FLAG_COMPRESSED));
	if (tupdesc->natts != 4 && tupdesc->natts != 6)
		elog(ERROR, "pg_atrest: atrest.envelope() must return 4 or 6 columns");
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
}

/*
 * Whether re-encryption must seal a value again: it is not yet under the
 * active data key of "class_id", or in an older format, or compressed with
 * another compressor than the class's (none included).
 */
static Datum
NeedsReseal(AtrestKind kind, Datum sealed, int32 class_id)
{
	return BoolGetDatum(EnvelopeNeedsReseal(kind, (struct varlena *) DatumGetPointer(sealed),
											class_id));
}

ATREST_TYPE_FUNCTIONS(encrypted_jsonb, ATREST_KIND_JSONB)
ATREST_TYPE_FUNCTIONS(encrypted_bytea, ATREST_KIND_BYTEA)
ATREST_TYPE_FUNCTIONS(encrypted_text, ATREST_KIND_TEXT)

/*
 * atrest.encrypted_typmod_in(cstring[]): the modifier is one key class name.
 */
PG_FUNCTION_INFO_V1(encrypted_typmod_in);
Datum
encrypted_typmod_in(PG_FUNCTION_ARGS)
{
	ArrayType  *ta = PG_GETARG_ARRAYTYPE_P(0);
	Datum	   *elems;
	int			n;
	int32		class_id;

	deconstruct_array(ta, CSTRINGOID, -2, false, TYPALIGN_CHAR, &elems, NULL, &n);
	if (n != 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("an encrypted type takes exactly one modifier, the key class"),
				 errhint("For example: atrest.encrypted_jsonb(result).")));
	class_id = KeyClassLookup(DatumGetCString(elems[0]), false);
	if (class_id > 0xffff)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("key class id %d is out of range", class_id)));
	PG_RETURN_INT32(class_id);
}

/* atrest.encrypted_typmod_out(integer): "(classname)". */
PG_FUNCTION_INFO_V1(encrypted_typmod_out);
Datum
encrypted_typmod_out(PG_FUNCTION_ARGS)
{
	int32		typmod = PG_GETARG_INT32(0);
	char	   *name;

	if (typmod < 0)
		PG_RETURN_CSTRING(pstrdup(""));
	name = KeyClassNameLookup(typmod);
	if (name == NULL)
		PG_RETURN_CSTRING(psprintf("(%d)", typmod));
	PG_RETURN_CSTRING(psprintf("(%s)", quote_identifier(name)));
}
