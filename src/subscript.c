/*
 * subscript.c
 *		Subscripting of encrypted_jsonb: v['a'], v['a']['b'], v[0] read as on
 *		jsonb, and UPDATE t SET v['a'] = ... assigns.
 *
 * The handler wraps jsonb's own subscripting routines, so subscripts, results
 * and errors are jsonb's: a fetch opens the document and applies jsonb's
 * fetch (the result is jsonb); an assignment opens the document (a NULL one
 * starts empty, as on jsonb), applies jsonb's assignment and seals the new
 * document under the key class of the container's typmod, which for
 * UPDATE ... SET v[...] is the column's.  jsonb's steps keep their own
 * workspace; ours holds it and is swapped in around each call.
 */
#include "postgres.h"

#include "executor/execExpr.h"
#include "nodes/subscripting.h"
#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"

#include "envelope.h"
#include "keyring.h"

typedef struct EncryptedSubsWorkspace
{
	void	   *inner;			/* jsonb's workspace */
	SubscriptExecSteps steps;	/* jsonb's steps */
	int32		typmod;			/* the container's typmod (its key class) */
} EncryptedSubsWorkspace;

static const SubscriptRoutines *
JsonbRoutines(void)
{
	return (const SubscriptRoutines *)
		DatumGetPointer(DirectFunctionCall1(jsonb_subscript_handler, (Datum) 0));
}

static void
EncryptedSubsTransform(SubscriptingRef *sbsref, List *indirection,
					   struct ParseState *pstate, bool isSlice, bool isAssignment)
{
	int32		typmod = sbsref->reftypmod;

	JsonbRoutines()->transform(sbsref, indirection, pstate, isSlice, isAssignment);
	/* a fetch gives jsonb; an assignment gives the container, with its typmod */
	sbsref->reftypmod = isAssignment ? typmod : -1;
}

/* Run jsonb's step "fn" with jsonb's workspace in place. */
static void
CallJsonbStep(ExecEvalSubroutine fn, ExprState *state, ExprEvalStep *op,
			  ExprContext *econtext)
{
	SubscriptingRefState *sbsrefstate = op->d.sbsref.state;
	EncryptedSubsWorkspace *ws = (EncryptedSubsWorkspace *) sbsrefstate->workspace;

	sbsrefstate->workspace = ws->inner;
	PG_TRY();
	{
		fn(state, op, econtext);
	}
	PG_FINALLY();
	{
		sbsrefstate->workspace = ws;
	}
	PG_END_TRY();
}

static bool
EncryptedSubsCheck(ExprState *state, ExprEvalStep *op, ExprContext *econtext)
{
	SubscriptingRefState *sbsrefstate = op->d.sbsref.state;
	EncryptedSubsWorkspace *ws = (EncryptedSubsWorkspace *) sbsrefstate->workspace;
	bool		result = false;

	sbsrefstate->workspace = ws->inner;
	PG_TRY();
	{
		result = ws->steps.sbs_check_subscripts(state, op, econtext);
	}
	PG_FINALLY();
	{
		sbsrefstate->workspace = ws;
	}
	PG_END_TRY();
	return result;
}

static Datum
OpenContainer(Datum sealed)
{
	return PointerGetDatum(EnvelopeOpen(ATREST_KIND_JSONB, (struct varlena *) DatumGetPointer(sealed)));
}

static void
EncryptedSubsFetch(ExprState *state, ExprEvalStep *op, ExprContext *econtext)
{
	EncryptedSubsWorkspace *ws = (EncryptedSubsWorkspace *) op->d.sbsref.state->workspace;

	/* fetch is strict: the container is not null here */
	*op->resvalue = OpenContainer(*op->resvalue);
	CallJsonbStep(ws->steps.sbs_fetch, state, op, econtext);
}

static void
EncryptedSubsFetchOld(ExprState *state, ExprEvalStep *op, ExprContext *econtext)
{
	EncryptedSubsWorkspace *ws = (EncryptedSubsWorkspace *) op->d.sbsref.state->workspace;
	Datum		sealed = *op->resvalue;

	/* the assignment step after this one reads the sealed container again */
	if (!*op->resnull)
		*op->resvalue = OpenContainer(sealed);
	CallJsonbStep(ws->steps.sbs_fetch_old, state, op, econtext);
	*op->resvalue = sealed;
}

static void
EncryptedSubsAssign(ExprState *state, ExprEvalStep *op, ExprContext *econtext)
{
	EncryptedSubsWorkspace *ws = (EncryptedSubsWorkspace *) op->d.sbsref.state->workspace;
	struct varlena *plain;

	if (!*op->resnull)
		*op->resvalue = OpenContainer(*op->resvalue);
	CallJsonbStep(ws->steps.sbs_assign, state, op, econtext);
	/* jsonb's assignment never gives NULL */
	plain = (struct varlena *) PG_DETOAST_DATUM_PACKED(*op->resvalue);
	*op->resvalue = PointerGetDatum(EnvelopeSeal(ATREST_KIND_JSONB,
												 ws->typmod < 0 ? ATREST_DEFAULT_CLASS : ws->typmod,
												 VARDATA_ANY(plain), VARSIZE_ANY_EXHDR(plain)));
}

static void
EncryptedSubsExecSetup(const SubscriptingRef *sbsref, SubscriptingRefState *sbsrefstate,
					   SubscriptExecSteps *methods)
{
	EncryptedSubsWorkspace *ws = palloc0(sizeof(EncryptedSubsWorkspace));

	JsonbRoutines()->exec_setup(sbsref, sbsrefstate, &ws->steps);
	ws->inner = sbsrefstate->workspace;
	ws->typmod = sbsref->reftypmod;
	sbsrefstate->workspace = ws;

	methods->sbs_check_subscripts = EncryptedSubsCheck;
	methods->sbs_fetch = EncryptedSubsFetch;
	methods->sbs_assign = EncryptedSubsAssign;
	methods->sbs_fetch_old = EncryptedSubsFetchOld;
}

/* atrest.encrypted_jsonb_subscript_handler(internal) */
PG_FUNCTION_INFO_V1(encrypted_jsonb_subscript_handler);
Datum
encrypted_jsonb_subscript_handler(PG_FUNCTION_ARGS)
{
	static SubscriptRoutines routines = {
		.transform = EncryptedSubsTransform,
		.exec_setup = EncryptedSubsExecSetup,
		.fetch_strict = true,		/* as jsonb's */
		.fetch_leakproof = false,	/* opening a value may fail */
		.store_leakproof = false
	};

	PG_RETURN_POINTER(&routines);
}
