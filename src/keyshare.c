/*
 * keyshare.c
 *		The shared key cache: a database key under a customer-managed key
 *		(CMK) is unwrapped once per server per atrest.key_cache_ttl, not
 *		once per backend.
 *
 * Only with pg_atrest in shared_preload_libraries.  The main shared memory
 * segment (which the postmaster maps and its core dumps include) holds only
 * a control struct: a lock, a condition variable, the handle of a dynamic
 * shared memory (DSM) segment, per-entry state and per-database recheck
 * counters; no key bytes.  The key bytes live in one DSM segment created by
 * the first backend that fetches a key and pinned; every process that maps
 * it (backends when they first need it, the wipe worker) excludes it from
 * core dumps and child processes and locks it into RAM (SecureMemProtect).
 * The postmaster never maps it.  With dynamic_shared_memory_type = mmap the
 * segment would be a file under the data directory, and with
 * min_dynamic_shared_memory > 0 it could be carved out of the main segment:
 * then the shared cache is off (logged once at startup) and each backend
 * asks the provider itself, as without preloading.
 *
 * An entry is keyed by database OID, database key id and a SHA-256 digest
 * of everything the active database_keys row says about the root (wrapped
 * bytes, provider, key URI and version, service key id, recheck_at), so a
 * changed root never matches an old entry.  States: empty, fetching (by
 * "fetcher", a live process) and valid (fetched_at, expires_at =
 * fetched_at + the fetcher's TTL).  Locking protocol: every read or write of
 * an entry or of the segment's bytes holds "lock" exclusively, and nobody
 * holds it across a provider call.  A backend that finds its entry being
 * fetched sleeps on "cv" (wait event Extension) and looks again each second,
 * taking the fetch over if the fetcher has gone; a fetcher that fails (ERROR
 * or FATAL) empties the entry and wakes the waiters, which then retry one at
 * a time (each takes the entry over under the lock).  So at most one
 * provider call per database per TTL is made by the whole server.
 *
 * A backend copies the key into its own secure slot (keyring.c) and trusts
 * it until the entry's fetched_at plus its TTL: the bound counts from the
 * provider call.  atrest.recheck_keys() empties the database's entries and
 * bumps its recheck counter (an atomic, one of RECHECK_BUCKETS by database
 * OID), which every backend reads at each key use to drop its copy.
 *
 * The idle wipe: LWLocks cannot be taken in a timeout handler, and a
 * lock-free (seqlock) wipe from a backend's SIGALRM would race with a
 * fetcher writing the same slot and needs some backend to be there.  So a
 * small background worker ("pg_atrest key cache wipe", registered at
 * preload, no database connection) sleeps on its latch until the next
 * expiry and wipes every entry past it (its expires_at, or fetched_at plus
 * the server's atrest.key_cache_ttl if that is earlier), even when every
 * backend is idle; backends also wipe expired entries they meet.  When it
 * exits (shutdown) it wipes every entry.
 */
#include "postgres.h"

#include <openssl/evp.h>

#include "access/xact.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/condition_variable.h"
#include "storage/dsm.h"
#include "storage/dsm_impl.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "storage/shmem.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "keyshare.h"
#include "keytables.h"
#include "pg_atrest.h"
#include "secure_mem.h"

#define SHARED_KEY_ENTRIES	64
#define SHARED_KEY_SEGMENT	4096	/* one page: the entries' key bytes */
#define RECHECK_BUCKETS		64
#define DIGEST_LEN			32
#define TRANCHE_NAME		"pg_atrest key cache"

StaticAssertDecl(SHARED_KEY_ENTRIES * ATREST_KEY_LEN <= SHARED_KEY_SEGMENT,
				 "the shared key cache's keys must fit its segment");

typedef enum EntryState
{
	ENTRY_EMPTY = 0,
	ENTRY_FETCHING,
	ENTRY_VALID
} EntryState;

/* Not secret: which key an entry is for and whether it holds it. */
typedef struct SharedKeyEntry
{
	Oid			dboid;
	pg_uuid_t	key_id;
	unsigned char digest[DIGEST_LEN];
	EntryState	state;
	int			fetcher;		/* pid, while fetching */
	TimestampTz fetched_at;		/* when the provider was asked */
	TimestampTz expires_at;
} SharedKeyEntry;

typedef struct SharedKeyControl
{
	LWLock	   *lock;
	ConditionVariable cv;
	bool		usable;			/* false: dynamic shared memory refused */
	dsm_handle	handle;			/* the key bytes; DSM_HANDLE_INVALID until made */
	Latch	   *worker_latch;	/* the wipe worker's, or NULL */
	pg_atomic_uint64 recheck[RECHECK_BUCKETS];
	SharedKeyEntry entries[SHARED_KEY_ENTRIES];
} SharedKeyControl;

static SharedKeyControl *ctl = NULL;
static unsigned char *keys = NULL;	/* this process's mapping of the segment */
static uint64 seen_recheck = 0;
static bool exit_registered = false;
static Oid	recheck_pending = InvalidOid;
static bool xact_registered = false;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

PGDLLEXPORT void SharedKeyWipeMain(Datum arg);

/* ---------------------------------------------------------------------
 * Set-up
 * --------------------------------------------------------------------- */

static void
SharedKeyShmemRequest(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(SharedKeyControl)));
	RequestNamedLWLockTranche(TRANCHE_NAME, 1);
}

static void
SharedKeyShmemStartup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	ctl = ShmemInitStruct("pg_atrest shared key cache", sizeof(SharedKeyControl), &found);
	if (!found)
	{
		memset(ctl, 0, sizeof(SharedKeyControl));
		ctl->lock = &(GetNamedLWLockTranche(TRANCHE_NAME))->lock;
		ConditionVariableInit(&ctl->cv);
		ctl->handle = DSM_HANDLE_INVALID;
		for (int i = 0; i < RECHECK_BUCKETS; i++)
			pg_atomic_init_u64(&ctl->recheck[i], 0);
		ctl->usable = dynamic_shared_memory_type != DSM_IMPL_MMAP &&
			min_dynamic_shared_memory == 0;
		if (!ctl->usable)
			ereport(LOG,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("the pg_atrest shared key cache is off: each backend asks the key provider itself"),
					 errdetail("Its keys would be in memory that is a file under the data directory or part of the main shared memory segment (dynamic_shared_memory_type = mmap, or min_dynamic_shared_memory above 0).")));
	}
	LWLockRelease(AddinShmemInitLock);
}

/*
 * From _PG_init: with shared_preload_libraries, reserve the control struct
 * and register the wipe worker (a static worker: it takes one of
 * max_worker_processes for as long as the server runs).  Otherwise nothing: every backend keeps its
 * own cache (keyring.c).
 */
void
SharedKeyCacheInit(void)
{
	BackgroundWorker worker;

	if (!process_shared_preload_libraries_in_progress)
		return;

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = SharedKeyShmemRequest;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = SharedKeyShmemStartup;

	/* no worker where the cache is off (SharedKeyShmemStartup says why) */
	if (dynamic_shared_memory_type == DSM_IMPL_MMAP || min_dynamic_shared_memory != 0)
		return;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS;
	worker.bgw_start_time = BgWorkerStart_PostmasterStart;
	worker.bgw_restart_time = 1;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "pg_atrest");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "SharedKeyWipeMain");
	snprintf(worker.bgw_name, BGW_MAXLEN, "pg_atrest key cache wipe");
	snprintf(worker.bgw_type, BGW_MAXLEN, "pg_atrest key cache wipe");
	RegisterBackgroundWorker(&worker);
}

static bool
SharedKeyCacheOn(void)
{
	return ctl != NULL && ctl->usable;
}

/*
 * Map the key segment into this process, making it first if need be.
 * Caller holds ctl->lock exclusively.  False if no segment can be had (the
 * server's limit on segments): the caller does without the shared cache.
 */
static bool
MapSegment(void)
{
	dsm_segment *seg;

	if (keys != NULL)
		return true;
	if (ctl->handle == DSM_HANDLE_INVALID)
	{
		seg = dsm_create(SHARED_KEY_SEGMENT, DSM_CREATE_NULL_IF_MAXSEGMENTS);
		if (seg == NULL)
			return false;
		dsm_pin_segment(seg);
		ctl->handle = dsm_segment_handle(seg);
	}
	else
	{
		seg = dsm_attach(ctl->handle);
		if (seg == NULL)
			elog(ERROR, "pg_atrest: the shared key cache's segment is gone");
	}
	dsm_pin_mapping(seg);
	keys = dsm_segment_address(seg);
	SecureMemProtect(keys, SHARED_KEY_SEGMENT);
	return true;
}

static unsigned char *
EntryKey(SharedKeyEntry *e)
{
	return keys + (e - ctl->entries) * ATREST_KEY_LEN;
}

/* Empty an entry, wiping its key.  Caller holds ctl->lock exclusively. */
static void
WipeEntry(SharedKeyEntry *e)
{
	if (keys != NULL)
		explicit_bzero(EntryKey(e), ATREST_KEY_LEN);
	memset(e, 0, sizeof(SharedKeyEntry));
	e->state = ENTRY_EMPTY;
}

/*
 * When entry "e" (valid) must be gone at the latest: its expires_at, or
 * fetched_at plus "ttl" seconds if that is earlier.
 */
static TimestampTz
EntryEnd(const SharedKeyEntry *e, int ttl)
{
	return Min(e->expires_at, TimestampTzPlusMilliseconds(e->fetched_at, (int64) ttl * 1000));
}

/* A digest of everything the active row says about the root. */
static void
RootDigest(const RootInfo *root, unsigned char *digest)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	const char *strs[3] = {root->provider, root->key_uri, root->key_version};
	uint32		len;
	bool		ok;

	ok = md != NULL && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1;
	ok = ok && EVP_DigestUpdate(md, root->id.data, UUID_LEN) == 1;
	ok = ok && EVP_DigestUpdate(md, &root->customer, sizeof(root->customer)) == 1;
	ok = ok && EVP_DigestUpdate(md, &root->service_key_id, sizeof(root->service_key_id)) == 1;
	ok = ok && EVP_DigestUpdate(md, &root->recheck_at, sizeof(root->recheck_at)) == 1;
	for (int i = 0; i < 3; i++)
	{
		/* length-prefixed, with UINT32_MAX for NULL: no two rows collide */
		len = strs[i] ? (uint32) strlen(strs[i]) : UINT32_MAX;
		ok = ok && EVP_DigestUpdate(md, &len, sizeof(len)) == 1;
		if (strs[i])
			ok = ok && EVP_DigestUpdate(md, strs[i], len) == 1;
	}
	len = VARSIZE_ANY_EXHDR(root->wrapped);
	ok = ok && EVP_DigestUpdate(md, &len, sizeof(len)) == 1;
	ok = ok && EVP_DigestUpdate(md, VARDATA_ANY(root->wrapped), len) == 1;
	ok = ok && EVP_DigestFinal_ex(md, digest, NULL) == 1;
	EVP_MD_CTX_free(md);
	if (!ok)
		elog(ERROR, "pg_atrest: SHA-256 failed");
}

/* Empty the entries this process was fetching and wake their waiters. */
static void
AbandonFetches(int code, Datum arg)
{
	bool		any = false;

	if (ctl == NULL)
		return;
	if (LWLockHeldByMe(ctl->lock))
		LWLockRelease(ctl->lock);
	LWLockAcquire(ctl->lock, LW_EXCLUSIVE);
	for (int i = 0; i < SHARED_KEY_ENTRIES; i++)
	{
		SharedKeyEntry *e = &ctl->entries[i];

		if (e->state == ENTRY_FETCHING && e->fetcher == MyProcPid)
		{
			WipeEntry(e);
			any = true;
		}
	}
	LWLockRelease(ctl->lock);
	if (any)
		ConditionVariableBroadcast(&ctl->cv);
}

/* ---------------------------------------------------------------------
 * Fetching
 * --------------------------------------------------------------------- */

static SharedKeyEntry *
FindEntry(const RootInfo *root, const unsigned char *digest)
{
	for (int i = 0; i < SHARED_KEY_ENTRIES; i++)
	{
		SharedKeyEntry *e = &ctl->entries[i];

		if (e->state != ENTRY_EMPTY && e->dboid == MyDatabaseId &&
			memcmp(e->key_id.data, root->id.data, UUID_LEN) == 0 &&
			memcmp(e->digest, digest, DIGEST_LEN) == 0)
			return e;
	}
	return NULL;
}

/*
 * An entry to fetch into: an empty one, else one past its end (wiped), else
 * the valid one fetched longest ago (evicted: its readers ask again).  NULL
 * if every entry is being fetched.
 */
static SharedKeyEntry *
PickEntry(TimestampTz now)
{
	SharedKeyEntry *oldest = NULL;

	for (int i = 0; i < SHARED_KEY_ENTRIES; i++)
	{
		SharedKeyEntry *e = &ctl->entries[i];

		if (e->state == ENTRY_VALID && now >= EntryEnd(e, atrest_key_cache_ttl))
			WipeEntry(e);
		if (e->state == ENTRY_EMPTY)
			return e;
		if (e->state == ENTRY_VALID && (oldest == NULL || e->fetched_at < oldest->fetched_at))
			oldest = e;
	}
	if (oldest != NULL)
		WipeEntry(oldest);
	return oldest;
}

/*
 * Remember this database's recheck counter, before a key is unwrapped: a
 * recheck_keys() from now on makes SharedKeyRechecked() true.
 */
void
SharedKeyNoteRecheck(void)
{
	if (ctl != NULL)
		seen_recheck = pg_atomic_read_u64(&ctl->recheck[MyDatabaseId % RECHECK_BUCKETS]);
}

/*
 * Did atrest.recheck_keys() run for this database (or one sharing its
 * counter) since SharedKeyNoteRecheck()?  One atomic read.
 */
bool
SharedKeyRechecked(void)
{
	return ctl != NULL &&
		pg_atomic_read_u64(&ctl->recheck[MyDatabaseId % RECHECK_BUCKETS]) != seen_recheck;
}

/*
 * Fetch into entry "e", which this process has marked as fetching, and
 * share the result unless a recheck_keys() emptied the entry meanwhile.
 */
static TimestampTz
FetchInto(SharedKeyEntry *e, const RootInfo *root, unsigned char *out, SharedKeyFetcher fetch)
{
	TimestampTz started = GetCurrentTimestamp();

	PG_TRY();
	{
		fetch(root, out);
	}
	PG_CATCH();
	{
		AbandonFetches(0, (Datum) 0);
		PG_RE_THROW();
	}
	PG_END_TRY();

	LWLockAcquire(ctl->lock, LW_EXCLUSIVE);
	if (e->state == ENTRY_FETCHING && e->fetcher == MyProcPid)
	{
		memcpy(EntryKey(e), out, ATREST_KEY_LEN);
		e->state = ENTRY_VALID;
		e->fetcher = 0;
		e->fetched_at = started;
		e->expires_at = TimestampTzPlusMilliseconds(started, (int64) atrest_key_cache_ttl * 1000);
		/* an older root of this database is of no use to anyone now */
		for (int i = 0; i < SHARED_KEY_ENTRIES; i++)
		{
			SharedKeyEntry *o = &ctl->entries[i];

			if (o != e && o->state == ENTRY_VALID && o->dboid == MyDatabaseId &&
				o->fetched_at <= started)
				WipeEntry(o);
		}
		if (ctl->worker_latch != NULL)
			SetLatch(ctl->worker_latch);
	}
	LWLockRelease(ctl->lock);
	ConditionVariableBroadcast(&ctl->cv);
	return started;
}

/*
 * Unwrap the database key described by "root" (a CMK root) into "out" (a
 * secure slot): from the shared cache if it holds it within this backend's
 * TTL, else by "fetch" (the provider call), at most one process at a time
 * per key, storing the result for the others.  Returns when the key was
 * fetched from the provider (the start of the TTL), and in *source "shared
 * cache" or "provider".  Without the shared cache, just calls "fetch".
 * ereport(ERROR) as "fetch" does, or on an interrupt while waiting.
 */
TimestampTz
SharedKeyGet(const RootInfo *root, unsigned char *out, SharedKeyFetcher fetch,
			 const char **source)
{
	unsigned char digest[DIGEST_LEN];
	SharedKeyEntry *e = NULL;
	TimestampTz started;

	*source = "provider";
	if (!SharedKeyCacheOn())
	{
		started = GetCurrentTimestamp();
		fetch(root, out);
		return started;
	}
	RootDigest(root, digest);
	if (!exit_registered)
	{
		before_shmem_exit(AbandonFetches, (Datum) 0);
		exit_registered = true;
	}

	for (;;)
	{
		TimestampTz now = GetCurrentTimestamp();

		LWLockAcquire(ctl->lock, LW_EXCLUSIVE);
		if (!MapSegment())
		{
			LWLockRelease(ctl->lock);
			e = NULL;
			break;
		}
		e = FindEntry(root, digest);
		if (e != NULL && e->state == ENTRY_VALID)
		{
			if (now < EntryEnd(e, atrest_key_cache_ttl))
			{
				TimestampTz fetched_at = e->fetched_at;

				memcpy(out, EntryKey(e), ATREST_KEY_LEN);
				LWLockRelease(ctl->lock);
				ConditionVariableCancelSleep();
				*source = "shared cache";
				return fetched_at;
			}
			/* past this backend's TTL: fetch it again */
		}
		else if (e != NULL && e->state == ENTRY_FETCHING && e->fetcher != MyProcPid &&
				 BackendPidGetProc(e->fetcher) != NULL)
		{
			LWLockRelease(ctl->lock);
			(void) ConditionVariableTimedSleep(&ctl->cv, 1000, PG_WAIT_EXTENSION);
			continue;
		}
		if (e == NULL)
			e = PickEntry(now);
		if (e != NULL)
		{
			WipeEntry(e);
			e->dboid = MyDatabaseId;
			e->key_id = root->id;
			memcpy(e->digest, digest, DIGEST_LEN);
			e->state = ENTRY_FETCHING;
			e->fetcher = MyProcPid;
		}
		LWLockRelease(ctl->lock);
		break;
	}
	ConditionVariableCancelSleep();

	if (e == NULL)
	{
		/* every entry is being fetched, or no segment: do without */
		started = GetCurrentTimestamp();
		fetch(root, out);
		return started;
	}
	return FetchInto(e, root, out, fetch);
}

/* ---------------------------------------------------------------------
 * recheck_keys()
 * --------------------------------------------------------------------- */

/*
 * Empty every entry of database "dboid", for every backend at once, and
 * bump its recheck counter so each backend drops its own copy at its next
 * key use.  A fetch in progress is abandoned (its result is not shared).
 */
void
SharedKeyRecheck(Oid dboid)
{
	if (ctl == NULL)
		return;
	LWLockAcquire(ctl->lock, LW_EXCLUSIVE);
	for (int i = 0; i < SHARED_KEY_ENTRIES; i++)
	{
		SharedKeyEntry *e = &ctl->entries[i];

		if (e->state != ENTRY_EMPTY && e->dboid == dboid)
			WipeEntry(e);
	}
	pg_atomic_fetch_add_u64(&ctl->recheck[dboid % RECHECK_BUCKETS], 1);
	LWLockRelease(ctl->lock);
	ConditionVariableBroadcast(&ctl->cv);
}

static void
RecheckXactCallback(XactEvent event, void *arg)
{
	if (!OidIsValid(recheck_pending))
		return;
	if (event == XACT_EVENT_COMMIT)
		SharedKeyRecheck(recheck_pending);
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PREPARE)
		recheck_pending = InvalidOid;
}

/*
 * SharedKeyRecheck(dboid) when the current transaction commits: after the
 * new recheck_at is visible, so a backend that drops its copy re-reads the
 * row it changed and no provider call is made for the old one.
 */
void
SharedKeyRecheckAtCommit(Oid dboid)
{
	if (ctl == NULL)
		return;
	if (!xact_registered)
	{
		RegisterXactCallback(RecheckXactCallback, NULL);
		xact_registered = true;
	}
	recheck_pending = dboid;
}

/* ---------------------------------------------------------------------
 * The wipe worker
 * --------------------------------------------------------------------- */

/*
 * Wipe every valid entry past its end; returns the milliseconds until the
 * next end (-1: none).
 */
static long
WipeExpired(bool all)
{
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz next = 0;

	LWLockAcquire(ctl->lock, LW_EXCLUSIVE);
	if (ctl->handle != DSM_HANDLE_INVALID && !MapSegment())
		elog(ERROR, "pg_atrest: could not map the shared key cache");
	for (int i = 0; i < SHARED_KEY_ENTRIES; i++)
	{
		SharedKeyEntry *e = &ctl->entries[i];
		TimestampTz end;

		if (e->state != ENTRY_VALID)
			continue;
		end = EntryEnd(e, atrest_key_cache_ttl);
		if (all || now >= end)
			WipeEntry(e);
		else if (next == 0 || end < next)
			next = end;
	}
	LWLockRelease(ctl->lock);
	if (next == 0)
		return -1;
	/* a millisecond late rather than early */
	return (long) ((next - now + 999) / 1000);
}

static void
WipeWorkerExit(int code, Datum arg)
{
	(void) WipeExpired(true);
	LWLockAcquire(ctl->lock, LW_EXCLUSIVE);
	if (ctl->worker_latch == MyLatch)
		ctl->worker_latch = NULL;
	LWLockRelease(ctl->lock);
}

/*
 * The background worker that wipes entries at the end of their TTL even if
 * every backend is idle, and all of them when it stops.
 */
void
SharedKeyWipeMain(Datum arg)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	if (!SharedKeyCacheOn())
		proc_exit(0);			/* exit code 0: not restarted */

	LWLockAcquire(ctl->lock, LW_EXCLUSIVE);
	ctl->worker_latch = MyLatch;
	LWLockRelease(ctl->lock);
	before_shmem_exit(WipeWorkerExit, (Datum) 0);

	for (;;)
	{
		long		timeout;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		timeout = WipeExpired(false);
		(void) WaitLatch(MyLatch,
						 WL_LATCH_SET | WL_EXIT_ON_PM_DEATH | (timeout >= 0 ? WL_TIMEOUT : 0),
						 timeout, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
