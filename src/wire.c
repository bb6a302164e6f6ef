/*
 * wire.c
 *		Plain types on the wire: result columns that a client receives are
 *		reported and sent as jsonb, bytea or text, not as the encrypted types.
 *
 * A post_parse_analyze_hook rewrites the statements that a client sends:
 * the target list of a top-level SELECT, the RETURNING list of INSERT,
 * UPDATE and DELETE, and the query of DECLARE CURSOR (so that FETCH returns
 * plain types).  Each column of an encrypted type (or an array of one) is
 * coerced to its plain type by the implicit cast, atrest.decrypt, the same
 * function that an explicit ::jsonb calls; nothing else changes.  Where the
 * column also takes part in ORDER BY, GROUP BY, DISTINCT or a window, or the
 * query is a set operation (UNION, INTERSECT, EXCEPT), the query is wrapped
 * in a subquery and only the outer target list converts, so that grouping
 * and set operations still compare the encrypted values' plaintext.
 *
 * Invariants:
 * - Only a client's statements are rewritten: those analysed at nesting
 *   level 0 from the text the client sent (debug_query_string), or again
 *   for EXECUTE when a prepared statement's plan is rebuilt.  The executor,
 *   planner and utility hooks count levels as pg_stat_statements does, and
 *   the source text check excludes what runs outside any statement (a
 *   deferred trigger's queries at an implicit commit), so SPI,
 *   plpgsql, SQL functions (inlined or not), views, rules and the queries of
 *   CREATE TABLE AS, SELECT INTO, CREATE [MATERIALIZED] VIEW, COPY and
 *   EXPLAIN (analysed inside ProcessUtility, at level 1) keep the declared
 *   types.  CREATE TABLE AS and SELECT INTO arrive as utility statements and
 *   are left alone, so no statement creates a plaintext column.  PREPARE and
 *   EXECUTE stay at level 0, so a prepared statement gets the same result
 *   types when it is prepared and when its plan is rebuilt.
 * - When the module is loaded in the middle of a statement (it was not
 *   preloaded, and the statement is the first of the session that uses an
 *   encrypted value), the level counts are not trustworthy for that
 *   statement: it is left as it is and sends the encrypted types.  Every
 *   later statement is rewritten.  Preload the module to avoid this.
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/planner.h"
#include "parser/analyze.h"
#include "parser/parse_coerce.h"
#include "tcop/tcopprot.h"
#include "tcop/utility.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "pg_atrest.h"
#include "wire.h"

typedef enum
{
	CLIENT_TYPES_PLAIN,
	CLIENT_TYPES_ENCRYPTED
} ClientTypes;

static const struct config_enum_entry client_types_options[] = {
	{"plain", CLIENT_TYPES_PLAIN, false},
	{"encrypted", CLIENT_TYPES_ENCRYPTED, false},
	{NULL, 0, false}
};

static int	client_types = CLIENT_TYPES_PLAIN;

/* nesting depth of executor, planner and utility calls (0: a client's statement) */
static int	nesting_level = 0;

/* whether EXECUTE (of a statement PREPAREd by the client) is running */
static bool in_execute_stmt = false;

/* statement start time of the message during which the module was loaded */
static TimestampTz loaded_during = 0;
static bool loaded_mid_statement = true;

static post_parse_analyze_hook_type prev_post_parse_analyze_hook = NULL;
static planner_hook_type prev_planner_hook = NULL;
static ExecutorRun_hook_type prev_ExecutorRun = NULL;
static ExecutorFinish_hook_type prev_ExecutorFinish = NULL;
static ProcessUtility_hook_type prev_ProcessUtility = NULL;

/* The encrypted types of this database (InvalidOid when not installed). */
typedef struct
{
	Oid			encrypted[3];
	Oid			plain[3];
} WireTypes;

static bool
LookupWireTypes(WireTypes *types)
{
	static const char *const names[3] = {"encrypted_jsonb", "encrypted_bytea", "encrypted_text"};
	static const Oid plain[3] = {JSONBOID, BYTEAOID, TEXTOID};
	Oid			nsp = get_namespace_oid(ATREST_SCHEMA, true);

	if (!OidIsValid(nsp))
		return false;
	for (int i = 0; i < 3; i++)
	{
		types->encrypted[i] = GetSysCacheOid2(TYPENAMENSP, Anum_pg_type_oid,
											  CStringGetDatum(names[i]),
											  ObjectIdGetDatum(nsp));
		types->plain[i] = plain[i];
	}
	return true;
}

/*
 * The type a client should see instead of "type" (a domain's base type
 * counts, and arrays of them map to arrays), or InvalidOid to keep it.
 */
static Oid
ClientType(const WireTypes *types, Oid type)
{
	Oid			base;
	Oid			elem;

	if (type < FirstNormalObjectId)
		return InvalidOid;
	base = getBaseType(type);
	for (int i = 0; i < 3; i++)
		if (OidIsValid(types->encrypted[i]) && base == types->encrypted[i])
			return types->plain[i];
	elem = get_element_type(base);
	if (OidIsValid(elem))
	{
		elem = getBaseType(elem);
		for (int i = 0; i < 3; i++)
			if (OidIsValid(types->encrypted[i]) && elem == types->encrypted[i])
				return get_array_type(types->plain[i]);
	}
	return InvalidOid;
}

/*
 * The plain type that "type" (a domain over an encrypted type counts, and an
 * array of one maps to the plain array type) is sent as, or InvalidOid when
 * it is not an encrypted type (or pg_atrest is not installed here).
 */
Oid
AtrestPlainTypeOf(Oid type)
{
	WireTypes	types;

	if (type < FirstNormalObjectId || !LookupWireTypes(&types))
		return InvalidOid;
	return ClientType(&types, type);
}

/* Whether any non-junk entry of "tlist" has a type from outside the catalog. */
static bool
MayHaveEncrypted(List *tlist)
{
	ListCell   *lc;

	foreach(lc, tlist)
	{
		TargetEntry *tle = lfirst_node(TargetEntry, lc);

		if (!tle->resjunk && exprType((Node *) tle->expr) >= FirstNormalObjectId)
			return true;
	}
	return false;
}

/* "expr" coerced to "target" by the implicit cast. */
static Expr *
ToClientType(ParseState *pstate, Expr *expr, Oid target)
{
	Node	   *res;

	res = coerce_to_target_type(pstate, (Node *) expr, exprType((Node *) expr),
								target, -1, COERCION_IMPLICIT,
								COERCE_IMPLICIT_CAST, -1);
	if (res == NULL)
		elog(ERROR, "pg_atrest: no implicit cast from %s to %s",
			 format_type_be(exprType((Node *) expr)), format_type_be(target));
	return (Expr *) res;
}

/* Convert the encrypted entries of a RETURNING list (or a simple target list). */
static void
ConvertInPlace(ParseState *pstate, const WireTypes *types, List *tlist)
{
	ListCell   *lc;

	foreach(lc, tlist)
	{
		TargetEntry *tle = lfirst_node(TargetEntry, lc);
		Oid			target;

		if (tle->resjunk)
			continue;
		target = ClientType(types, exprType((Node *) tle->expr));
		if (OidIsValid(target))
			tle->expr = ToClientType(pstate, tle->expr, target);
	}
}

/*
 * Turn "query" (in place) into SELECT <converted columns> FROM (<query>):
 * the original query moves into a subquery RTE, and the outer target list
 * reads its columns, converting the encrypted ones.
 */
static void
WrapInSubquery(ParseState *pstate, const WireTypes *types, Query *query)
{
	Query	   *inner = makeNode(Query);
	RangeTblEntry *rte = makeNode(RangeTblEntry);
	RangeTblRef *rtr = makeNode(RangeTblRef);
	List	   *colnames = NIL;
	List	   *tlist = NIL;
	ListCell   *lc;

	memcpy(inner, query, sizeof(Query));

	foreach(lc, inner->targetList)
	{
		TargetEntry *tle = lfirst_node(TargetEntry, lc);
		TargetEntry *outer;
		Expr	   *var;
		Oid			target;

		if (tle->resjunk)
			continue;
		colnames = lappend(colnames, makeString(pstrdup(tle->resname ? tle->resname : "?column?")));
		var = (Expr *) makeVarFromTargetEntry(1, tle);
		target = ClientType(types, exprType((Node *) var));
		if (OidIsValid(target))
			var = ToClientType(pstate, var, target);
		outer = makeTargetEntry(var, tle->resno,
								tle->resname ? pstrdup(tle->resname) : NULL, false);
		outer->resorigtbl = tle->resorigtbl;
		outer->resorigcol = tle->resorigcol;
		tlist = lappend(tlist, outer);
	}

	rte->rtekind = RTE_SUBQUERY;
	rte->subquery = inner;
	rte->eref = makeAlias("atrest_client", colnames);
	rte->inFromCl = true;
	rtr->rtindex = 1;

	/* the outer query keeps the statement's identity, nothing else */
	{
		Query		saved = *query;

		memset(query, 0, sizeof(Query));
		query->type = T_Query;
		query->commandType = CMD_SELECT;
		query->querySource = saved.querySource;
		query->queryId = saved.queryId;
		query->canSetTag = saved.canSetTag;
		query->stmt_location = saved.stmt_location;
		query->stmt_len = saved.stmt_len;
	}
	query->rtable = list_make1(rte);
	query->jointree = makeFromExpr(list_make1(rtr), NULL);
	query->targetList = tlist;
}

/* Rewrite one analysed statement for the client; see the file header. */
static void
RewriteForClient(ParseState *pstate, const WireTypes *types, Query *query)
{
	ListCell   *lc;
	bool		wrap = false;
	bool		any = false;

	switch (query->commandType)
	{
		case CMD_UTILITY:
			if (query->utilityStmt && IsA(query->utilityStmt, DeclareCursorStmt))
			{
				DeclareCursorStmt *stmt = (DeclareCursorStmt *) query->utilityStmt;

				if (stmt->query && IsA(stmt->query, Query))
					RewriteForClient(pstate, types, (Query *) stmt->query);
			}
			return;
		case CMD_INSERT:
		case CMD_UPDATE:
		case CMD_DELETE:
			if (MayHaveEncrypted(query->returningList))
				ConvertInPlace(pstate, types, query->returningList);
			return;
		case CMD_SELECT:
			break;
		default:
			return;
	}

	if (query->utilityStmt != NULL || !MayHaveEncrypted(query->targetList))
		return;

	foreach(lc, query->targetList)
	{
		TargetEntry *tle = lfirst_node(TargetEntry, lc);

		if (tle->resjunk || !OidIsValid(ClientType(types, exprType((Node *) tle->expr))))
			continue;
		any = true;
		if (tle->ressortgroupref != 0)
			wrap = true;
	}
	if (!any)
		return;
	if (query->setOperations != NULL)
		wrap = true;

	if (!wrap)
		ConvertInPlace(pstate, types, query->targetList);
	else if (!query->hasModifyingCTE)
		WrapInSubquery(pstate, types, query);

	/*
	 * A data-modifying WITH must stay at the top level, so such a query
	 * keeps the encrypted types where its encrypted columns are grouped or
	 * sorted on.
	 */
}

static void
WirePostParseAnalyze(ParseState *pstate, Query *query, JumbleState *jstate)
{
	WireTypes	types;

	if (prev_post_parse_analyze_hook)
		prev_post_parse_analyze_hook(pstate, query, jstate);

	if (client_types != CLIENT_TYPES_PLAIN || nesting_level != 0 ||
		!IsTransactionState())
		return;
	/* a client's statement, or the re-analysis of one that EXECUTE prepares */
	if (pstate->p_sourcetext != debug_query_string && !in_execute_stmt)
		return;
	if (loaded_mid_statement)
	{
		if (GetCurrentStatementStartTimestamp() == loaded_during)
			return;
		loaded_mid_statement = false;
	}
	/* most statements return no column of a type from outside the catalog */
	if (query->commandType == CMD_SELECT ? !MayHaveEncrypted(query->targetList) :
		query->commandType == CMD_UTILITY ? !(query->utilityStmt &&
											  IsA(query->utilityStmt, DeclareCursorStmt)) :
		!MayHaveEncrypted(query->returningList))
		return;
	if (!LookupWireTypes(&types))
		return;
	RewriteForClient(pstate, &types, query);
}

static PlannedStmt *
WirePlanner(Query *parse, const char *query_string, int cursorOptions,
			ParamListInfo boundParams)
{
	PlannedStmt *result;

	nesting_level++;
	PG_TRY();
	{
		if (prev_planner_hook)
			result = prev_planner_hook(parse, query_string, cursorOptions, boundParams);
		else
			result = standard_planner(parse, query_string, cursorOptions, boundParams);
	}
	PG_FINALLY();
	{
		nesting_level--;
	}
	PG_END_TRY();
	return result;
}

/* 18 dropped ExecutorRun's execute_once argument. */
#if PG_VERSION_NUM >= 180000
#define EXECUTOR_RUN_ARGS_DECL QueryDesc *queryDesc, ScanDirection direction, uint64 count
#define EXECUTOR_RUN_ARGS queryDesc, direction, count
#else
#define EXECUTOR_RUN_ARGS_DECL QueryDesc *queryDesc, ScanDirection direction, uint64 count, \
	bool execute_once
#define EXECUTOR_RUN_ARGS queryDesc, direction, count, execute_once
#endif

static void
WireExecutorRun(EXECUTOR_RUN_ARGS_DECL)
{
	nesting_level++;
	PG_TRY();
	{
		if (prev_ExecutorRun)
			prev_ExecutorRun(EXECUTOR_RUN_ARGS);
		else
			standard_ExecutorRun(EXECUTOR_RUN_ARGS);
	}
	PG_FINALLY();
	{
		nesting_level--;
	}
	PG_END_TRY();
}

static void
WireExecutorFinish(QueryDesc *queryDesc)
{
	nesting_level++;
	PG_TRY();
	{
		if (prev_ExecutorFinish)
			prev_ExecutorFinish(queryDesc);
		else
			standard_ExecutorFinish(queryDesc);
	}
	PG_FINALLY();
	{
		nesting_level--;
	}
	PG_END_TRY();
}

static void
WireProcessUtility(PlannedStmt *pstmt, const char *queryString,
				   bool readOnlyTree, ProcessUtilityContext context,
				   ParamListInfo params, QueryEnvironment *queryEnv,
				   DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *parsetree = pstmt->utilityStmt;

	/*
	 * PREPARE analyses its query, and EXECUTE may analyse it again to
	 * rebuild its plan: both stay at the caller's level, so a prepared
	 * statement's result types do not depend on which of them did it.
	 */
	if (IsA(parsetree, PrepareStmt) || IsA(parsetree, ExecuteStmt))
	{
		bool		save_in_execute = in_execute_stmt;

		in_execute_stmt = IsA(parsetree, ExecuteStmt) && nesting_level == 0;
		PG_TRY();
		{
			if (prev_ProcessUtility)
				prev_ProcessUtility(pstmt, queryString, readOnlyTree, context,
									params, queryEnv, dest, qc);
			else
				standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
										params, queryEnv, dest, qc);
		}
		PG_FINALLY();
		{
			in_execute_stmt = save_in_execute;
		}
		PG_END_TRY();
		return;
	}

	nesting_level++;
	PG_TRY();
	{
		if (prev_ProcessUtility)
			prev_ProcessUtility(pstmt, queryString, readOnlyTree, context,
								params, queryEnv, dest, qc);
		else
			standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
									params, queryEnv, dest, qc);
	}
	PG_FINALLY();
	{
		nesting_level--;
	}
	PG_END_TRY();
}

void
WireInit(void)
{
	DefineCustomEnumVariable("atrest.client_types",
							 "Which types result columns of encrypted types have when they reach a client.",
							 "With plain (the default), a column of atrest.encrypted_jsonb, encrypted_bytea "
							 "or encrypted_text in a statement's result is sent as jsonb, bytea or text, "
							 "so drivers decode it as they decode the plain type. With encrypted, "
							 "clients see the encrypted types. Stored columns keep their types either way.",
							 &client_types,
							 CLIENT_TYPES_PLAIN,
							 client_types_options,
							 PGC_USERSET,
							 0,
							 NULL, NULL, NULL);

	/* see the file header: the statement running now may be half analysed */
	loaded_during = IsTransactionState() ? GetCurrentStatementStartTimestamp() : 0;
	loaded_mid_statement = IsTransactionState();

	prev_post_parse_analyze_hook = post_parse_analyze_hook;
	post_parse_analyze_hook = WirePostParseAnalyze;
	prev_planner_hook = planner_hook;
	planner_hook = WirePlanner;
	prev_ExecutorRun = ExecutorRun_hook;
	ExecutorRun_hook = WireExecutorRun;
	prev_ExecutorFinish = ExecutorFinish_hook;
	ExecutorFinish_hook = WireExecutorFinish;
	prev_ProcessUtility = ProcessUtility_hook;
	ProcessUtility_hook = WireProcessUtility;
}
