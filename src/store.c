/*
 * store.c
 *		The settings of the models and analyze results store: atrest.result_ttl,
 *		atrest.input_ttl and atrest.operation_timeout.
 *
 * The store itself (tables, functions, retention policies, the pg_cron job)
 * is SQL in pg_atrest--1.1.sql.  Only the settings live here, because
 * settings under the reserved prefix "atrest." must be defined before
 * _PG_init calls MarkGUCPrefixReserved.
 *
 * Invariant: each value is always a positive interval.  The check hook parses
 * it without throwing and hands the parsed Interval to the assign hook as
 * "extra", so atrest._result_ttl() (and its siblings) return the value in
 * force without parsing it again.  The SQL functions call them rather than
 * current_setting(), which also makes sure this library (and so the setting)
 * is loaded in the backend before the value is read.
 */
#include "postgres.h"

#include "common/int128.h"
#include "fmgr.h"
#include "utils/datetime.h"
#include "utils/guc.h"
#include "utils/timestamp.h"

#include "pg_atrest.h"

/* the settings as written; ResultTtl, InputTtl, OperationTimeout are their values */
static char *result_ttl_string = NULL;
static char *input_ttl_string = NULL;
static char *operation_timeout_string = NULL;

/* the parsed values; set by the assign hooks */
static Interval ResultTtl = {.time = USECS_PER_DAY, .day = 0, .month = 0};
static Interval InputTtl = {.time = USECS_PER_DAY, .day = 0, .month = 0};
static Interval OperationTimeout = {.time = USECS_PER_DAY, .day = 0, .month = 0};

/*
 * Parse "str" as an interval into *result without raising an error; false if
 * it is not one.  The same steps as interval_in (utils/adt/timestamp.c).
 */
static bool
ParseInterval(const char *str, Interval *result)
{
	struct pg_itm_in itm_in = {0};
	char		workbuf[256];
	char	   *field[MAXDATEFIELDS];
	int			ftype[MAXDATEFIELDS];
	int			nf;
	int			dtype = 0;
	int			dterr;
	char	   *copy;

	dterr = ParseDateTime(str, workbuf, sizeof(workbuf), field, ftype,
						  MAXDATEFIELDS, &nf);
	if (dterr == 0)
		dterr = DecodeInterval(field, ftype, nf, INTERVAL_FULL_RANGE,
							   &dtype, &itm_in);
	if (dterr == DTERR_BAD_FORMAT)
	{
		/* DecodeISO8601Interval wants a writable string */
		copy = pstrdup(str);
		memset(&itm_in, 0, sizeof(itm_in));
		dterr = DecodeISO8601Interval(copy, &dtype, &itm_in);
		pfree(copy);
	}
	if (dterr != 0 || dtype != DTK_DELTA)
		return false;
	return itmin2interval(&itm_in, result) == 0;
}

/* Whether an interval is longer than zero, comparing as interval_cmp does. */
static bool
IntervalIsPositive(const Interval *span)
{
	INT128		usecs = int64_to_int128(span->time);

	int128_add_int64_mul_int64(&usecs, span->day, USECS_PER_DAY);
	int128_add_int64_mul_int64(&usecs, span->month, DAYS_PER_MONTH * USECS_PER_DAY);
	return int128_compare(usecs, int64_to_int128(0)) > 0;
}

/*
 * Check hook shared by the interval settings: "name" is the setting's name
 * for the error detail.
 */
static bool
CheckPositiveInterval(const char *name, char **newval, void **extra)
{
	Interval	span;
	Interval   *parsed;

	if (*newval == NULL || !ParseInterval(*newval, &span))
	{
		GUC_check_errdetail("%s must be an interval, such as '24 hours'.", name);
		return false;
	}
	if (!IntervalIsPositive(&span))
	{
		GUC_check_errdetail("%s must be longer than zero.", name);
		return false;
	}
#if PG_VERSION_NUM >= 160000
	/* the GUC machinery guc_free()s extra (a pfree from 16 on): use guc_malloc */
	parsed = (Interval *) guc_malloc(LOG, sizeof(Interval));
#else
	/* the GUC machinery free()s extra, so it must come from malloc */
	parsed = (Interval *) malloc(sizeof(Interval));
#endif
	if (parsed == NULL)
		return false;
	*parsed = span;
	*extra = parsed;
	return true;
}

static bool
CheckResultTtl(char **newval, void **extra, GucSource source)
{
	return CheckPositiveInterval("atrest.result_ttl", newval, extra);
}

static void
AssignResultTtl(const char *newval, void *extra)
{
	ResultTtl = *(Interval *) extra;
}

static bool
CheckInputTtl(char **newval, void **extra, GucSource source)
{
	return CheckPositiveInterval("atrest.input_ttl", newval, extra);
}

static void
AssignInputTtl(const char *newval, void *extra)
{
	InputTtl = *(Interval *) extra;
}

static bool
CheckOperationTimeout(char **newval, void **extra, GucSource source)
{
	return CheckPositiveInterval("atrest.operation_timeout", newval, extra);
}

static void
AssignOperationTimeout(const char *newval, void *extra)
{
	OperationTimeout = *(Interval *) extra;
}

/* Define the store's settings; called from _PG_init. */
void
StoreInit(void)
{
	DefineCustomStringVariable("atrest.result_ttl",
							   "How long a completed analyze result is kept, as an interval.",
							   "The expiry time of a result is fixed when it completes "
							   "(atrest.complete_analyze or atrest.fail_analyze): completion time "
							   "plus this interval.  Changing it later does not move the expiry of "
							   "results that have already completed.",
							   &result_ttl_string,
							   "24 hours",
							   PGC_SUSET,
							   0,
							   CheckResultTtl, AssignResultTtl, NULL);

	DefineCustomStringVariable("atrest.input_ttl",
							   "How long a submitted document is kept, as an interval.",
							   "The expiry time of a document is fixed when it is submitted "
							   "(atrest.begin_analyze): submission time plus this interval, "
							   "whatever the state of its analyze operation.",
							   &input_ttl_string,
							   "24 hours",
							   PGC_SUSET,
							   0,
							   CheckInputTtl, AssignInputTtl, NULL);

	DefineCustomStringVariable("atrest.operation_timeout",
							   "How long an analyze operation may stay unfinished, as an interval.",
							   "The purge fails a single or batch analyze operation that is still "
							   "notStarted or running this long after it began, with an error saying "
							   "it timed out; it then expires like any failed result.",
							   &operation_timeout_string,
							   "24 hours",
							   PGC_SUSET,
							   0,
							   CheckOperationTimeout, AssignOperationTimeout, NULL);
}

/*
 * atrest._result_ttl(): the value of atrest.result_ttl in force, as an
 * interval.
 */
PG_FUNCTION_INFO_V1(atrest_result_ttl_value);
Datum
atrest_result_ttl_value(PG_FUNCTION_ARGS)
{
	Interval   *result = (Interval *) palloc(sizeof(Interval));

	*result = ResultTtl;
	PG_RETURN_INTERVAL_P(result);
}

/* atrest._input_ttl(): the value of atrest.input_ttl in force, as an interval. */
PG_FUNCTION_INFO_V1(atrest_input_ttl_value);
Datum
atrest_input_ttl_value(PG_FUNCTION_ARGS)
{
	Interval   *result = (Interval *) palloc(sizeof(Interval));

	*result = InputTtl;
	PG_RETURN_INTERVAL_P(result);
}

/*
 * atrest._operation_timeout(): the value of atrest.operation_timeout in
 * force, as an interval.
 */
PG_FUNCTION_INFO_V1(atrest_operation_timeout_value);
Datum
atrest_operation_timeout_value(PG_FUNCTION_ARGS)
{
	Interval   *result = (Interval *) palloc(sizeof(Interval));

	*result = OperationTimeout;
	PG_RETURN_INTERVAL_P(result);
}
