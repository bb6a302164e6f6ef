/*
 * keyscrub.c
 *		Scrubbing the key tables after a key change, so that superseded
 *		wrapped keys leave their files.
 *
 * A key change (enable_cmk, disable_cmk, rewrap, rotate_database_key,
 * retire_data_key) UPDATEs rows of atrest.database_keys and atrest.data_keys.
 * The previous row versions keep the superseded wrapped keys (the database
 * key under the service key alone, data keys under a database key that no
 * longer exists) in the heap pages, and pruning or VACUUM only mark them
 * unused: their bytes stay in the page's free space.  So after every change
 * that supersedes a wrapped key, a background worker scrubs both tables (and
 * their TOAST tables): a lazy VACUUM removes the dead row versions, then
 * every page is rewritten in place with each byte that belongs to no live
 * tuple set to zero, and WAL-logged as a full page image, so standbys get
 * the scrubbed pages too.  No lock that blocks readers or writers is taken
 * (VACUUM's SHARE UPDATE EXCLUSIVE without waiting, TRUNCATE off; the page
 * pass needs ACCESS SHARE and a buffer lock per page) and no file is
 * replaced.  (VACUUM's update of pg_class statistics still makes backends
 * reload their key caches once.)
 *
 * Invariants: the worker is registered from the committing backend's
 * XACT_EVENT_COMMIT callback (or by atrest.scrub_key_tables()), never in the
 * postmaster and without shared_preload_libraries.  Before rewriting it waits
 * until the removable horizon has passed every transaction id the change
 * could have used ("limit", read at commit): until then VACUUM would
 * have to keep the old row versions, which an older snapshot may still read.
 * It never waits in the lock queue (SKIP_LOCKED; it tries again a second
 * later).  It holds no key material.
 *
 * One worker per database works at a time, holding a session advisory lock;
 * a committing key change that finds it taken (at pre-commit) starts none,
 * and a worker that finds it taken exits at once.  The holder releases the lock
 * and only then looks for key-table row versions written or deleted by a
 * transaction id at or after its "limit"; if it finds one (a change it may
 * not have covered, whose own worker may have exited), it takes the lock
 * again and does another round.  So a burst of key changes costs one waiting
 * worker, not one per change.
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/transam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_authid.h"
#include "commands/vacuum.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/parse_node.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/bufmgr.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lock.h"
#include "storage/procarray.h"
#include "tcop/tcopprot.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "keyscrub.h"
#include "pagescrub.h"
#include "pg_atrest.h"

#define SCRUB_POLL_MS			500		/* horizon checks while waiting */
#define SCRUB_RETRY_MS			1000	/* after a table was locked */
#define SCRUB_MAX_ATTEMPTS		600		/* about ten minutes of retries */
#define SCRUB_COVER_WAIT_MS		5000	/* a committing backend waits for a starting worker */

/* The advisory lock that keeps one worker per database at work. */
#define SCRUB_LOCK_KEY1			0x61747265	/* "atre" */
#define SCRUB_LOCK_KEY2			0x73637262	/* "scrb" */
#define SCRUB_LOCK_FIELD4		0x5343		/* not 1 or 2: no clash with pg_advisory_lock */

/* What the registering backend hands the worker (bgw_extra). */
typedef struct KeyScrubArgs
{
	Oid			roleid;
	TransactionId limit;		/* every xid of the change precedes this */
} KeyScrubArgs;

static const char *const scrub_tables[2] = {"database_keys", "data_keys"};

/* This backend's pending request: set by a key change, acted on at commit. */
static bool scrub_pending = false;
static Oid	scrub_role = InvalidOid;
static bool callback_registered = false;

/* The last worker this backend registered (in TopMemoryContext), or NULL. */
static BackgroundWorkerHandle *scrub_handle = NULL;

/* ---------------------------------------------------------------------
 * The lock that keeps one worker per database at work
 * --------------------------------------------------------------------- */

/*
 * Take the session advisory lock of "dboid"'s scrub without waiting, or, with
 * "release", give it back.  Returns false if someone else holds it.  The
 * caller is in a transaction.
 */
static bool
ScrubLockTry(Oid dboid, bool release)
{
	LOCKTAG		tag;

	SET_LOCKTAG_ADVISORY(tag, dboid, SCRUB_LOCK_KEY1, SCRUB_LOCK_KEY2, SCRUB_LOCK_FIELD4);
	if (release)
		return LockRelease(&tag, ExclusiveLock, true);
	return LockAcquire(&tag, ExclusiveLock, true, true) != LOCKACQUIRE_NOT_AVAIL;
}

/* ---------------------------------------------------------------------
 * The requesting side (a backend that changed keys)
 * --------------------------------------------------------------------- */

/*
 * The role the worker connects as: the key tables' owner (a superuser, as
 * the extension requires one), or the bootstrap superuser when that owner
 * may not log in (PostgreSQL 15 checks rolcanlogin for workers too).
 */
Oid
KeyScrubRole(Oid key_tables_owner)
{
	HeapTuple	tup = SearchSysCache1(AUTHOID, ObjectIdGetDatum(key_tables_owner));
	bool		canlogin = false;

	if (HeapTupleIsValid(tup))
	{
		canlogin = ((Form_pg_authid) GETSTRUCT(tup))->rolcanlogin;
		ReleaseSysCache(tup);
	}
	return canlogin ? key_tables_owner : BOOTSTRAP_SUPERUSERID;
}

/*
 * Register a scrub worker for "dboid" that waits for "limit".  Returns false
 * when no worker slot is free (max_worker_processes).  Never raises an
 * ERROR for that, so it may run after the commit record is written.
 */
bool
KeyScrubLaunch(Oid dboid, Oid roleid, TransactionId limit)
{
	BackgroundWorker worker;
	KeyScrubArgs args;
	MemoryContext oldcxt;
	BackgroundWorkerHandle *handle = NULL;
	bool		registered;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	strlcpy(worker.bgw_library_name, "pg_atrest", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, "atrest_keyscrub_main", BGW_MAXLEN);
	snprintf(worker.bgw_name, BGW_MAXLEN, "pg_atrest key scrub for database %u", dboid);
	strlcpy(worker.bgw_type, "pg_atrest key scrub", BGW_MAXLEN);
	worker.bgw_main_arg = ObjectIdGetDatum(dboid);
	worker.bgw_notify_pid = 0;
	args.roleid = roleid;
	args.limit = limit;
	memcpy(worker.bgw_extra, &args, sizeof(args));

	/* the handle outlives the transaction: the next key change looks at it */
	oldcxt = MemoryContextSwitchTo(TopMemoryContext);
	registered = RegisterDynamicBackgroundWorker(&worker, &handle);
	MemoryContextSwitchTo(oldcxt);
	if (registered)
	{
		if (scrub_handle != NULL)
			pfree(scrub_handle);
		scrub_handle = handle;
	}
	return registered;
}

/*
 * Has the last worker this backend registered not started yet?  Then it will
 * cover a change committed now: its "limit" precedes every xid of the change,
 * and when it starts it either takes the lock (and, after its round, finds
 * the change's row versions newer than its limit and goes round again) or
 * finds the lock taken by a worker whose re-check comes after this commit.
 * Without this, a burst of key changes in one session registers a worker per
 * change faster than they start, and with the default max_worker_processes
 * (8) the slots run out.
 */
static bool
KeyScrubWorkerPending(void)
{
	pid_t		pid;

	return scrub_handle != NULL &&
		GetBackgroundWorkerPid(scrub_handle, &pid) == BGWH_NOT_YET_STARTED;
}

/*
 * No worker slot was free for a change that has committed.  If this
 * backend's last worker is still alive, it holds a slot and is either about
 * to take the lock, at work, or past its last look for newer changes and
 * exiting; wait (a few seconds at most) until the lock is held by some
 * worker, whose look for newer changes comes after this commit, so it covers
 * the change: return true; or until that worker is gone (its slot is free
 * again): return false, and the caller tries once more.
 */
static bool
KeyScrubCoveredByRunningWorker(void)
{
	for (int i = 0; i < SCRUB_COVER_WAIT_MS / 10; i++)
	{
		pid_t		pid;

		if (scrub_handle == NULL ||
			GetBackgroundWorkerPid(scrub_handle, &pid) == BGWH_STOPPED)
			return false;
		if (!ScrubLockTry(MyDatabaseId, false))
			return true;
		ScrubLockTry(MyDatabaseId, true);
		pg_usleep(10 * 1000L);
	}
	return false;
}

static void
KeyScrubXactCallback(XactEvent event, void *arg)
{
	TransactionId limit;

	if (!scrub_pending)
		return;

	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:

			/*
			 * A worker at work on this database will see our change when it
			 * looks for newer ones (our rows are written already), or waits
			 * for us: do not start another.
			 */
			if (ScrubLockTry(MyDatabaseId, false))
				ScrubLockTry(MyDatabaseId, true);
			else
				scrub_pending = false;
			break;
		case XACT_EVENT_COMMIT:
			scrub_pending = false;
			if (KeyScrubWorkerPending())
				break;
			/* every xid this transaction (and its subtransactions) used precedes it */
			limit = ReadNextTransactionId();
			if (!KeyScrubLaunch(MyDatabaseId, scrub_role, limit) &&
				!KeyScrubCoveredByRunningWorker() &&
				!KeyScrubLaunch(MyDatabaseId, scrub_role, limit))
				ereport(WARNING,
						(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
						 errmsg("superseded wrapped keys were not removed from the key tables' files"),
						 errdetail("No background worker could be started to rewrite the key tables; max_worker_processes is exhausted."),
						 errhint("Run SELECT atrest.scrub_key_tables() once a worker slot is free; the next key change tries again too.")));
			break;
		case XACT_EVENT_PREPARE:
			scrub_pending = false;
			ereport(WARNING,
					(errcode(ERRCODE_WARNING),
					 errmsg("key change in a prepared transaction: superseded wrapped keys stay in the key tables' files"),
					 errhint("After COMMIT PREPARED, run SELECT atrest.scrub_key_tables().")));
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			scrub_pending = false;
			break;
		default:
			break;
	}
}

/*
 * A key table's rows were updated or deleted in this transaction: when it
 * commits, rewrite the key tables.  The caller is in a transaction that may
 * read the catalogs.
 */
void
KeyScrubRequest(Oid key_tables_owner)
{
	if (!callback_registered)
	{
		RegisterXactCallback(KeyScrubXactCallback, NULL);
		callback_registered = true;
	}
	scrub_role = KeyScrubRole(key_tables_owner);
	scrub_pending = true;
}

/* ---------------------------------------------------------------------
 * The worker
 * --------------------------------------------------------------------- */

static void
Nap(long ms)
{
	(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					 ms, PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
}

/* The key tables' OIDs; false if the extension is gone.  In a transaction. */
static bool
KeyTableOids(Oid *oids)
{
	Oid			nsp = get_namespace_oid(ATREST_SCHEMA, true);

	for (int i = 0; i < 2; i++)
	{
		oids[i] = OidIsValid(nsp) ? get_relname_relid(scrub_tables[i], nsp) : InvalidOid;
		if (!OidIsValid(oids[i]))
			return false;
	}
	return true;
}

/*
 * Wait until no snapshot can still see row versions the change replaced:
 * the removable horizon of the key tables has reached "limit".  Each check
 * runs in a transaction of its own, so that our own snapshot does not hold
 * the horizon back.  Returns false if the extension was dropped meanwhile.
 */
static bool
WaitForHorizon(TransactionId limit)
{
	TimestampTz start = GetCurrentTimestamp();
	bool		told = false;

	for (;;)
	{
		Oid			oids[2];
		TransactionId horizon = InvalidTransactionId;
		bool		exists;

		StartTransactionCommand();
		exists = KeyTableOids(oids);
		if (exists)
		{
			Relation	rel = table_open(oids[0], AccessShareLock);

			horizon = GetOldestNonRemovableTransactionId(rel);
			table_close(rel, AccessShareLock);
		}
		CommitTransactionCommand();

		if (!exists)
			return false;
		if (TransactionIdFollowsOrEquals(horizon, limit))
			return true;
		if (!told && TimestampDifferenceExceeds(start, GetCurrentTimestamp(), 60 * 1000))
		{
			ereport(LOG,
					(errcode(ERRCODE_SUCCESSFUL_COMPLETION),
					 errmsg("pg_atrest key scrub is waiting for transactions older than a key change"),
					 errdetail("Superseded wrapped keys stay in the key tables' files until every transaction, replication slot or standby feedback older than transaction %u is gone.",
							   limit)));
			told = true;
		}
		Nap(SCRUB_POLL_MS);
	}
}

/*
 * One try: VACUUM (DISABLE_PAGE_SKIPPING, SKIP_LOCKED, TRUNCATE false) of
 * the key tables not done yet ("done" says which are), which removes the
 * dead row versions without any lock that blocks readers or writers; then
 * zero what removing them left in the pages.  Returns true when both tables
 * are done.  An error is logged and counts as a failed try.
 */
static bool
ScrubAttempt(bool *done)
{
	volatile bool failed = false;

	PG_TRY();
	{
		Oid			oids[2];
		List	   *rels = NIL;
		VacuumStmt *stmt;
		MemoryContext old;
		bool		exists;

		StartTransactionCommand();
		exists = KeyTableOids(oids);
		if (exists)
		{
			/* VACUUM commits transactions: build the statement in PortalContext */
			old = MemoryContextSwitchTo(PortalContext);
			for (int i = 0; i < 2; i++)
				if (!done[i])
					rels = lappend(rels,
								   makeVacuumRelation(makeRangeVar(ATREST_SCHEMA, (char *) scrub_tables[i], -1),
													  InvalidOid, NIL));
			stmt = makeNode(VacuumStmt);
			stmt->options = list_make3(makeDefElem("disable_page_skipping", NULL, -1),
									   makeDefElem("skip_locked", NULL, -1),
									   makeDefElem("truncate", (Node *) makeString("false"), -1));
			stmt->rels = rels;
			stmt->is_vacuumcmd = true;
			MemoryContextSwitchTo(old);

			PushActiveSnapshot(GetTransactionSnapshot());
			ExecVacuum(make_parsestate(NULL), stmt, true);
		}
		CommitTransactionCommand();

		if (!exists)
			done[0] = done[1] = true;	/* nothing left to scrub */
		else
		{
			StartTransactionCommand();
			for (int i = 0; i < 2; i++)
				if (!done[i])
					done[i] = ScrubRelationPages(oids[i], false);
			CommitTransactionCommand();
		}
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(TopMemoryContext);
		EmitErrorReport();
		FlushErrorState();
		AbortOutOfAnyTransaction();
		failed = true;
	}
	PG_END_TRY();
	MemoryContextReset(PortalContext);
	return !failed && done[0] && done[1];
}

/*
 * Take (or, with "release", give back) the session advisory lock of this
 * database's scrub.  Returns false if another worker holds it.
 */
static bool
ScrubLock(bool release)
{
	bool		result;

	StartTransactionCommand();
	result = ScrubLockTry(MyDatabaseId, release);
	CommitTransactionCommand();
	return result;
}

/*
 * Has any row version of the key tables been written (xmin) or deleted
 * (xmax, not a mere row lock) by a transaction id at or after "limit"?  Such
 * a change may have come after our rewrite.  Frozen and special xids are
 * older than any limit.
 */
static bool
KeyTablesChangedSince(TransactionId limit)
{
	Oid			oids[2];
	bool		changed = false;

	StartTransactionCommand();
	if (KeyTableOids(oids))
	{
		for (int i = 0; i < 2 && !changed; i++)
		{
			Relation	rel = table_open(oids[i], AccessShareLock);
			TableScanDesc scan = table_beginscan(rel, SnapshotAny, 0, NULL);
			HeapTuple	tup;

			while (!changed && (tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
			{
				HeapScanDesc hscan = (HeapScanDesc) scan;
				HeapTupleHeader h = tup->t_data;
				TransactionId xmin,
							xmax;

				LockBuffer(hscan->rs_cbuf, BUFFER_LOCK_SHARE);
				xmin = HeapTupleHeaderGetXmin(h);
				xmax = HeapTupleHeaderGetRawXmax(h);
				if (TransactionIdIsNormal(xmin) && TransactionIdFollowsOrEquals(xmin, limit))
					changed = true;
				else if (TransactionIdIsNormal(xmax) &&
						 !(h->t_infomask & HEAP_XMAX_IS_MULTI) &&
						 !HEAP_XMAX_IS_LOCKED_ONLY(h->t_infomask) &&
						 TransactionIdFollowsOrEquals(xmax, limit))
					changed = true;
				LockBuffer(hscan->rs_cbuf, BUFFER_LOCK_UNLOCK);
			}
			table_endscan(scan);
			table_close(rel, AccessShareLock);
		}
	}
	CommitTransactionCommand();
	return changed;
}

/*
 * Entry point of the worker: connect; unless another worker is at work on
 * this database, wait for the horizon, rewrite the key tables, and go round
 * again while changes newer than the last round show up.
 */
void
atrest_keyscrub_main(Datum main_arg)
{
	KeyScrubArgs args;
	TransactionId limit;
	int			rounds = 0;

	memcpy(&args, MyBgworkerEntry->bgw_extra, sizeof(args));
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(DatumGetObjectId(main_arg), args.roleid, 0);
	/* VACUUM keeps its cross-transaction memory under PortalContext */
	PortalContext = AllocSetContextCreate(TopMemoryContext, "pg_atrest key scrub",
										  ALLOCSET_DEFAULT_SIZES);

	if (!ScrubLock(false))
		proc_exit(0);			/* the worker at work re-checks after us */

	limit = args.limit;
	for (;;)
	{
		bool		done[2] = {false, false};
		TransactionId next;

		pgstat_report_activity(STATE_RUNNING, "pg_atrest: waiting for older transactions");
		if (!WaitForHorizon(limit))
			break;				/* the extension was dropped */

		pgstat_report_activity(STATE_RUNNING, "pg_atrest: scrubbing the key tables");
		for (int attempt = 1; !ScrubAttempt(done); attempt++)
		{
			if (attempt >= SCRUB_MAX_ATTEMPTS)
			{
				ereport(WARNING,
						(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
						 errmsg("superseded wrapped keys were not removed from the key tables' files"),
						 errdetail("The key tables could not be rewritten in %d attempts.", attempt),
						 errhint("Run SELECT atrest.scrub_key_tables() when the key tables are not in use.")));
				proc_exit(1);
			}
			Nap(SCRUB_RETRY_MS);
		}
		rounds++;

		/* release first: a newcomer that finds the lock taken relies on this check */
		ScrubLock(true);
		next = ReadNextTransactionId();
		if (!KeyTablesChangedSince(limit) || !ScrubLock(false))
			break;
		limit = next;
	}
	if (rounds > 0)
		ereport(LOG,
				(errcode(ERRCODE_SUCCESSFUL_COMPLETION),
				 errmsg("pg_atrest: key tables rewritten; superseded wrapped keys removed from their files"),
				 errdetail("atrest.database_keys and atrest.data_keys were rewritten %d time(s).", rounds)));
	pgstat_report_activity(STATE_IDLE, NULL);
	proc_exit(0);
}
