/*
 * keyring.c
 *		The per-database key hierarchy as this backend holds it: the key
 *		cache.
 *
 *		root key	service key, optionally under a customer-managed key (CMK)
 *		 wraps  database key		one active row in atrest.database_keys
 *		  wraps  data keys		per key class and version, atrest.data_keys
 *		   encrypt  values		envelope.c
 *
 * With a CMK the database key is wrapped twice: first under the service key,
 * then the result under the CMK by its provider (provider.h), so reading
 * needs both, and a provider only ever sees ciphertext.  Service keys are
 * versioned (provider_service.c): the active row records in service_key_id
 * (absent in a 1.0 database, whose keys are all under id 1) the service key
 * the inner wrapping used, and unwrapping asks for exactly that one.
 *
 * Cache invariants: each backend holds the database key of its database in
 * a secure slot (secure_mem.c), read on first use from the key tables
 * (keytables.c) with the key classes, and each data-key version in a slot
 * of its own, unwrapped when a value first needs it (any number of
 * versions; one row read each).  A statement trigger on each key table
 * sends a relcache invalidation for that table; our relcache callback only
 * marks the cache stale, and the next use re-reads the key tables.  It
 * keeps the unwrapped database key when the active row names the same key
 * with the same wrapped bytes and recheck_at, so only a change of the root
 * (a new database key, a re-wrap, enabling or disabling a CMK,
 * recheck_keys()) costs a provider call; the classes and data keys are
 * dropped and rebuilt.  Because invalidations are WAL-logged, hot standbys
 * re-read too.  Under a CMK the unwrap goes through the shared key cache
 * (keyshare.c, with shared_preload_libraries): one provider call per server
 * per TTL, and atrest.recheck_keys() reaches every backend through it.  The
 * unwrapped database key is trusted for atrest.key_cache_ttl seconds from
 * that provider call; then the root-key provider is asked again,
 * so a revoked CMK stops all reads and writes within that bound, and a
 * backend idle at that moment wipes every key it holds (KeyringWipeTimeout).
 *
 * The functions that change keys (keyadmin.c, keyretire.c) sit above this
 * file; key wrapping (keywrap.c) and the key tables below it.
 */
#include "postgres.h"

#include <openssl/crypto.h>

#include "access/xact.h"
#include "miscadmin.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timeout.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"
#if PG_VERSION_NUM >= 160000
#include "varatt.h"			/* VARDATA and friends moved out of postgres.h */
#endif

#include "keyring.h"
#include "keyshare.h"
#include "keytables.h"
#include "keywrap.h"
#include "pg_atrest.h"
#include "provider.h"
#include "secure_mem.h"
#include "service_key.h"

static struct
{
	bool		loaded;
	bool		stale;
	TimestampTz verified_at;
	unsigned char *dbk;			/* secure slot */
	RootInfo	root;
	int			nclasses;
	KeyClass   *classes;
	HTAB	   *datakeys;
	int			wipe_count;		/* SecureMemWipeCount() when dbk was unwrapped */
	const char *source;			/* where dbk came from, for key_status */
	MemoryContext cxt;			/* root: what the active row says */
	MemoryContext rowcxt;		/* classes and data keys, rebuilt on refresh */
	int			nmissing;		/* entries of datakeys that are "missing" */
}			cache;

/*
 * At most this many versions are remembered as missing: values naming ever
 * new versions that do not exist must not grow the cache without bound.
 */
#define MAX_MISSING_VERSIONS	1024

/*
 * An entry of cache.datakeys: a data key unwrapped when a value first
 * needed it, a retired version (no key), or a version found missing (no
 * row) by the statement that started at "checked".
 */
typedef struct CachedKey
{
	DataKey		dk;				/* first: its hashkey is the hash key */
	bool		missing;
	TimestampTz checked;
} CachedKey;

/* This session's view of the root, for atrest.key_status. */
static TimestampTz last_unwrap = 0;
static char *last_error = NULL;

static void KeyCacheDrop(void);

/* The idle wipe: a timeout at the end of the TTL (RegisterTimeout id, or -1). */
static int	wipe_timeout = -1;

/* ---------------------------------------------------------------------
 * Invalidation
 * --------------------------------------------------------------------- */

static void
KeyringRelcacheCallback(Datum arg, Oid relid)
{
	if (KeyTablesInclude(relid))
		cache.stale = true;
}

void
KeyringInit(void)
{
	CacheRegisterRelcacheCallback(KeyringRelcacheCallback, (Datum) 0);
}

/* ---------------------------------------------------------------------
 * Unwrapping
 * --------------------------------------------------------------------- */

static void
RememberError(const char *msg)
{
	if (last_error)
		free(last_error);
	last_error = strdup(msg);
}

/*
 * Raise the documented AT001 error for a provider failure.  Whoever reads an
 * encrypted column may trigger it, so the client learns only which provider
 * failed: the key URI (token and object labels, vault names) and the
 * provider's reason (paths of the module and PIN file, dlerror text, the
 * tokens present) go to the server log, and to key_status for superusers.
 */
void
KeyringProviderFailed(const char *provider, const char *key_uri, const char *reason)
{
	RememberError(psprintf("%s: %s: %s", provider, key_uri, reason));
	ereport(ERROR,
			(errcode(ERRCODE_ATREST_KEY_UNAVAILABLE),
			 errmsg("customer-managed key of provider \"%s\" is unavailable", provider),
			 errdetail("The key and the provider's reason are in the server log."),
			 errdetail_log("Key \"%s\": the provider reported: %s.", key_uri, reason),
			 errhint("Restore access to the key; pg_atrest resumes on its own within atrest.key_cache_ttl seconds, or at once after atrest.recheck_keys().")));
}

/*
 * Reload the service key source and return key "svc_id", remembering a
 * failure for key_status.
 */
static const unsigned char *
ServiceKeyReload(int32 svc_id)
{
	const unsigned char *svc = NULL;

	PG_TRY();
	{
		svc = ServiceKeyGet(svc_id, true, false, NULL);
	}
	PG_CATCH();
	{
		RememberError("the service key could not be loaded");
		PG_RE_THROW();
	}
	PG_END_TRY();
	return svc;
}

/*
 * Unwrap the database key described by "root" into "out" (a secure slot),
 * asking the provider (for a CMK) and re-reading the service key.
 * ereport(ERROR) on failure.
 */
static void
UnwrapFromRoot(const RootInfo *root, unsigned char *out)
{
	bytea	   *inner = root->wrapped;
	unsigned char aad[KEY_AAD_MAXLEN];
	size_t		aadlen = DatabaseKeyAad(&root->id, aad);
	const unsigned char *svc;

	if (root->customer)
	{
		const AtrestProvider *p = ProviderLookup(root->provider);
		unsigned char *buf;
		size_t		len;
		char	   *reason = NULL;

		if (!p->unwrap(root->key_uri, root->key_version,
					   (unsigned char *) VARDATA_ANY(root->wrapped),
					   VARSIZE_ANY_EXHDR(root->wrapped), &buf, &len, &reason))
		{
			KeyringProviderFailed(root->provider, root->key_uri, reason ? reason : "unknown failure");
		}
		inner = (bytea *) palloc(VARHDRSZ + len);
		SET_VARSIZE(inner, VARHDRSZ + len);
		memcpy(VARDATA(inner), buf, len);
	}

	svc = ServiceKeyReload(root->service_key_id);
	if (!UnwrapKey(svc, inner, aad, aadlen, out))
	{
		RememberError("the database key does not unwrap under the service key");
		ereport(ERROR,
				(errcode(ERRCODE_ATREST_KEY_UNAVAILABLE),
				 errmsg("database key cannot be unwrapped"),
				 errdetail("The service key is not the one this database's key was wrapped with, or the wrapped key was altered."),
				 errhint("Check atrest.service_key_command and atrest.service_key_file.")));
	}
	last_unwrap = GetCurrentTimestamp();
}

/*
 * The database key described by "root" into "out" (a secure slot): under a
 * CMK through the shared cache (keyshare.c), which asks the provider at
 * most once per server per TTL; under the service key alone directly.
 * Returns when the key was last fetched from its root, where the TTL
 * starts, and in *source where it came from, for key_status.
 * ereport(ERROR) on failure.
 */
static TimestampTz
UnwrapDatabaseKey(const RootInfo *root, unsigned char *out, const char **source)
{
	TimestampTz fetched_at;

	SharedKeyNoteRecheck();
	if (root->customer)
	{
		fetched_at = SharedKeyGet(root, out, UnwrapFromRoot, source);
		/* key_status: when this session last took its key, from either source */
		last_unwrap = GetCurrentTimestamp();
		return fetched_at;
	}
	fetched_at = GetCurrentTimestamp();
	UnwrapFromRoot(root, out);
	*source = "service key";
	return fetched_at;
}

/* ---------------------------------------------------------------------
 * The cache
 * --------------------------------------------------------------------- */

static void
FreeDataKey(DataKey *dk)
{
	SecureKeyFree(dk->key);
	dk->key = NULL;
}

/* Drop the key classes and data keys, wiping every data key; keep the root. */
static void
KeyCacheDropRows(void)
{
	if (cache.datakeys)
	{
		HASH_SEQ_STATUS status;
		DataKey    *dk;

		hash_seq_init(&status, cache.datakeys);
		while ((dk = hash_seq_search(&status)) != NULL)
			FreeDataKey(dk);
		hash_destroy(cache.datakeys);
	}
	cache.datakeys = NULL;
	cache.classes = NULL;
	cache.nclasses = 0;
	cache.nmissing = 0;
	if (cache.rowcxt)
	{
		/* callers on an error path switch back to their own context first */
		Assert(CurrentMemoryContext != cache.rowcxt);
		MemoryContextDelete(cache.rowcxt);
	}
	cache.rowcxt = NULL;
}

/* Drop every key this backend holds, wiping it. */
static void
KeyCacheDrop(void)
{
	if (wipe_timeout >= 0)
		disable_timeout(wipe_timeout, false);
	KeyCacheDropRows();
	SecureKeyFree(cache.dbk);
	ServiceKeyDrop();
	if (cache.cxt)
	{
		Assert(CurrentMemoryContext != cache.cxt);
		MemoryContextDelete(cache.cxt);
	}
	memset(&cache, 0, sizeof(cache));
	KeyTablesForget();
}

/*
 * Enter one atrest.data_keys row into the cache, unwrapped under the
 * database key "dbk" (whose id is "dbk_id"); a retired row is remembered
 * with no key.  On ERROR the entry is gone.
 */
static DataKey *
CacheDataKeyRow(const DataKeyRow *row, const unsigned char *dbk, const pg_uuid_t *dbk_id)
{
	unsigned char aad[KEY_AAD_MAXLEN];
	size_t		aadlen;
	uint64		hk = ((uint64) (uint32) row->class_id << 32) | row->version;
	CachedKey  *ck;
	bool		found;

	if (row->wrapped != NULL && memcmp(row->dbk_id.data, dbk_id->data, UUID_LEN) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("data key version %u of key class %d is wrapped under a retired database key",
						row->version, row->class_id)));

	ck = hash_search(cache.datakeys, &hk, HASH_ENTER, &found);
	if (found && ck->missing)
		cache.nmissing--;
	if (!found || ck->missing)
	{
		/* KeyCacheDrop frees every entry's slot: never leave one unset */
		ck->dk.key = NULL;
		ck->dk.class_id = row->class_id;
		ck->dk.version = row->version;
		ck->missing = false;
	}
	if (row->wrapped == NULL)
	{
		/* retired by atrest.retire_data_key(): remembered, never usable */
		FreeDataKey(&ck->dk);
		return &ck->dk;
	}
	if (ck->dk.key == NULL)
		ck->dk.key = SecureKeyAlloc();
	aadlen = DataKeyAad(dbk_id, row->class_id, row->version, aad);
	if (!UnwrapKey(dbk, row->wrapped, aad, aadlen, ck->dk.key))
	{
		FreeDataKey(&ck->dk);
		hash_search(cache.datakeys, &hk, HASH_REMOVE, NULL);
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("data key version %u of key class %d is corrupted", row->version, row->class_id),
				 errdetail("Its wrapped form in atrest.data_keys does not authenticate under the database key.")));
	}
	return &ck->dk;
}

/*
 * The idle wipe (SIGALRM handler).  At the end of the TTL every key slot of
 * the backend is wiped, even if no query comes to trigger the re-check, so
 * that after a revocation no unwrapped key stays in an idle backend beyond
 * the TTL.  A signal handler may only write memory: it wipes the slots
 * (SecureMemWipeAll) and the next key use, seeing SecureMemWipeCount()
 * changed, drops the bookkeeping and asks the provider again.  It does so
 * only while the backend waits for its client (ClientRead), when no key is
 * in use; a busy backend is looked at again a second later, and re-checks
 * the TTL at its next key use anyway.
 */
static void
KeyringWipeTimeout(void)
{
	int			save_errno = errno;

	if (*(volatile uint32 *) my_wait_event_info == WAIT_EVENT_CLIENT_READ)
		SecureMemWipeAll();
	else
		enable_timeout_after(wipe_timeout, 1000);
	errno = save_errno;
}

/* After an idle wipe every slot is zero: drop the cache's bookkeeping too. */
static void
KeyCacheForgetWiped(void)
{
	if (cache.dbk != NULL && cache.wipe_count != SecureMemWipeCount())
		KeyCacheDrop();
}

/*
 * Arm the idle wipe for the end of the TTL that started at verified_at.
 * Only in client backends: background workers and walsenders do not sit
 * idle holding keys between commands of a client.
 */
static void
KeyCacheArmWipe(void)
{
	if (MyBackendType != B_BACKEND)
		return;
	if (wipe_timeout < 0)
		wipe_timeout = RegisterTimeout(USER_TIMEOUT, KeyringWipeTimeout);
	enable_timeout_at(wipe_timeout,
					  TimestampTzPlusMilliseconds(cache.verified_at,
												  (int64) atrest_key_cache_ttl * 1000));
}

/* Copy a palloc'd RootInfo into "cxt". */
static void
CopyRootInfo(RootInfo *dst, const RootInfo *src, MemoryContext cxt)
{
	dst->id = src->id;
	dst->customer = src->customer;
	dst->provider = src->provider ? MemoryContextStrdup(cxt, src->provider) : NULL;
	dst->key_uri = src->key_uri ? MemoryContextStrdup(cxt, src->key_uri) : NULL;
	dst->key_version = src->key_version ? MemoryContextStrdup(cxt, src->key_version) : NULL;
	dst->service_key_id = src->service_key_id;
	dst->recheck_at = src->recheck_at;
	dst->wrapped = MemoryContextAlloc(cxt, VARSIZE(src->wrapped));
	memcpy(dst->wrapped, src->wrapped, VARSIZE(src->wrapped));
}

/*
 * Does the active row "b" describe the same wrapped database key as "a"?
 * atrest.recheck_keys() sets recheck_at, so that every backend asks again.
 */
static bool
SameRoot(const RootInfo *a, const RootInfo *b)
{
#define STR_EQ(x, y) (((x) == NULL && (y) == NULL) || \
					  ((x) != NULL && (y) != NULL && strcmp((x), (y)) == 0))
	return memcmp(a->id.data, b->id.data, UUID_LEN) == 0 &&
		a->customer == b->customer &&
		a->service_key_id == b->service_key_id &&
		a->recheck_at == b->recheck_at &&
		STR_EQ(a->provider, b->provider) &&
		STR_EQ(a->key_uri, b->key_uri) &&
		STR_EQ(a->key_version, b->key_version) &&
		VARSIZE_ANY_EXHDR(a->wrapped) == VARSIZE_ANY_EXHDR(b->wrapped) &&
		memcmp(VARDATA_ANY(a->wrapped), VARDATA_ANY(b->wrapped),
			   VARSIZE_ANY_EXHDR(a->wrapped)) == 0;
#undef STR_EQ
}

/*
 * Load the hierarchy of this database into the cache, or refresh a loaded
 * cache that an invalidation marked stale, as "snap" sees the key tables
 * (NULL: a KeyTableSnapshot() of its own).  The active database key row and
 * the key classes are read with one snapshot, and CachedDataKey() passes the
 * one it read a data key's row with: a rotate_database_key() that commits
 * between two scans would otherwise give us the old database key and data
 * keys already re-wrapped under the new one.
 *
 * A refresh keeps the unwrapped database key when the active row still
 * names the same key with the same wrapped bytes (a data-key rotation, a
 * new key class, GRANT, VACUUM, ANALYZE or the scrub worker's rewrite of the
 * key tables): it asks no provider and keeps the TTL running.  Otherwise it
 * starts over, asking the provider.
 *
 * Any step may ERROR (a lock or statement timeout or a cancel while opening
 * a key table, a provider failure, a corrupted row); KeyCacheEnsure() then
 * drops everything.  The rows are read in a scratch context that is deleted
 * on the way out whatever happens, and everything else runs in the caller's
 * context: the cleanup never deletes a current context, without relying on
 * errfinish() having switched to ErrorContext.
 */
static void
KeyCacheLoad(Snapshot snap)
{
	MemoryContext caller = CurrentMemoryContext;
	/* the rows as read; deleted on the way out */
	MemoryContext scratch = AllocSetContextCreate(TopMemoryContext,
												  "pg_atrest key cache load",
												  ALLOCSET_DEFAULT_SIZES);

	PG_TRY();
	{
		RootInfo	root;
		List	   *classes;
		ListCell   *lc;
		HASHCTL		ctl;
		int			i = 0;
		Snapshot	own = snap ? NULL : KeyTableSnapshot();
		Snapshot	use = snap ? snap : own;

		/* the extension may have been dropped and created again meanwhile */
		KeyTablesForget();
		MemoryContextSwitchTo(scratch);
		ReadRoot(&root, use);
		classes = ReadKeyClasses(use);
		if (own)
			UnregisterSnapshot(own);
		MemoryContextSwitchTo(caller);

		if (cache.loaded && !SameRoot(&cache.root, &root))
		{
			/* invalidations that came in while we read, maybe of later commits */
			bool		stale = cache.stale;

			KeyCacheDrop();
			cache.stale = stale;
			/* which forgot the key tables: the relcache callback needs them */
			(void) KeyTablesDatabaseKeysOid();
		}
		KeyCacheDropRows();
		cache.loaded = false;
		if (cache.dbk == NULL)
		{
			cache.cxt = AllocSetContextCreate(TopMemoryContext, "pg_atrest key cache",
											  ALLOCSET_SMALL_SIZES);
			CopyRootInfo(&cache.root, &root, cache.cxt);
			cache.dbk = SecureKeyAlloc();
			cache.wipe_count = SecureMemWipeCount();
			cache.verified_at = UnwrapDatabaseKey(&cache.root, cache.dbk, &cache.source);
			KeyCacheArmWipe();
		}

		cache.rowcxt = AllocSetContextCreate(TopMemoryContext, "pg_atrest key cache rows",
											 ALLOCSET_SMALL_SIZES);
		cache.nclasses = list_length(classes);
		cache.classes = MemoryContextAllocZero(cache.rowcxt,
											   sizeof(KeyClass) * Max(cache.nclasses, 1));
		foreach(lc, classes)
			cache.classes[i++] = *(KeyClass *) lfirst(lc);

		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = sizeof(uint64);
		ctl.entrysize = sizeof(CachedKey);
		ctl.hcxt = cache.rowcxt;
		cache.datakeys = hash_create("pg_atrest data keys", 32, &ctl,
									 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
		cache.loaded = true;
	}
	PG_FINALLY();
	{
		MemoryContextSwitchTo(caller);
		MemoryContextDelete(scratch);
	}
	PG_END_TRY();
}

/*
 * Past the TTL, ask the root-key provider again.  If the answer is the key
 * we hold, carry on; if the root is unusable, drop everything and fail.
 */
static void
KeyCacheVerifyRoot(void)
{
	MemoryContext caller = CurrentMemoryContext;
	unsigned char *check = SecureKeyAlloc();
	bool		same;
	const char *source = NULL;
	TimestampTz fetched_at = 0;

	PG_TRY();
	{
		fetched_at = UnwrapDatabaseKey(&cache.root, check, &source);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(caller);
		SecureKeyFree(check);
		KeyCacheDrop();
		PG_RE_THROW();
	}
	PG_END_TRY();
	same = CRYPTO_memcmp(check, cache.dbk, ATREST_KEY_LEN) == 0;
	SecureKeyFree(check);
	if (same)
	{
		cache.verified_at = fetched_at;
		cache.source = source;
		KeyCacheArmWipe();
	}
	else
		cache.stale = true;
}

/*
 * KeyCacheLoad(snap), leaving the cache "not loaded", every slot wiped, if
 * it fails.
 */
static void
KeyCacheReload(Snapshot snap)
{
	MemoryContext caller = CurrentMemoryContext;

	PG_TRY();
	{
		KeyCacheLoad(snap);
	}
	PG_CATCH();
	{
		/* back to the caller's context before KeyCacheDrop() deletes ours */
		MemoryContextSwitchTo(caller);
		KeyCacheDrop();
		PG_RE_THROW();
	}
	PG_END_TRY();
}

/* Make sure the cache is loaded, current and within its TTL. */
static void
KeyCacheEnsure(void)
{
	KeyCacheForgetWiped();
	/* atrest.recheck_keys() here or in another backend (keyshare.c) */
	if (cache.dbk != NULL && SharedKeyRechecked())
		KeyCacheDrop();
	if (cache.stale)
	{
		/* invalidations arriving while we read mark it again */
		cache.stale = false;
		if (cache.loaded)
			KeyCacheReload(NULL);
	}
	if (cache.loaded &&
		TimestampDifferenceExceeds(cache.verified_at, GetCurrentTimestamp(),
								   atrest_key_cache_ttl * 1000))
	{
		KeyCacheVerifyRoot();
		if (cache.stale)
			KeyCacheDrop();
	}
	if (!cache.loaded)
		KeyCacheReload(NULL);
}

static KeyClass *
CachedClass(int32 class_id)
{
	for (int i = 0; i < cache.nclasses; i++)
		if (cache.classes[i].id == class_id)
			return &cache.classes[i];
	return NULL;
}

/* Forget every version remembered as missing (they hold no key). */
static void
ForgetAllMissing(void)
{
	HASH_SEQ_STATUS status;
	CachedKey  *ck;

	hash_seq_init(&status, cache.datakeys);
	while ((ck = hash_seq_search(&status)) != NULL)
		if (ck->missing)
			hash_search(cache.datakeys, &ck->dk.hashkey, HASH_REMOVE, NULL);
	cache.nmissing = 0;
}

/*
 * The data key (class_id, version), unwrapped from its row the first time
 * it is needed; NULL if there is no such row.  A miss is remembered for the
 * rest of the statement, so a value naming a version that does not exist
 * costs one scan of atrest.data_keys per statement, no provider call and no
 * reload of the rest.  The scan lets in invalidations: if they made the
 * cache stale, it is refreshed (the root may have changed) and the lookup
 * repeated once.
 *
 * The row is read later than the cached root, and a database key rotation
 * may have committed in between without its invalidation having come in yet
 * (a commit is visible a moment before its invalidations are sent, and a
 * backend takes them in only when it opens a relation by name or locks one
 * anew): then the row names a database key the cache does not hold.  So the
 * root is re-read with the snapshot the row was read with, and the cache
 * refreshed from that: rotate_database_key() re-wraps every data key in the
 * transaction that makes the new database key active, so in one snapshot a
 * row's database key is the active one.  Further rotations committing
 * meanwhile cannot make the two disagree (reading the root with a snapshot of
 * its own, later still, could); a row that disagrees with the root of its
 * own snapshot is wrong.  The refresh keeps the unwrapped key if the root is
 * unchanged and asks the provider only if it truly changed.  It does not
 * clear "stale": invalidations that came in during the scans may be of
 * commits the snapshot does not see, and the next use re-reads for them.
 */
static DataKey *
CachedDataKey(int32 class_id, uint32 version)
{
	uint64		hk = ((uint64) (uint32) class_id << 32) | version;
	bool		refreshed = false;

	for (;;)
	{
		CachedKey  *ck = hash_search(cache.datakeys, &hk, HASH_FIND, NULL);
		TimestampTz stmt = GetCurrentStatementStartTimestamp();
		DataKeyRow	row;
		bool		found;
		Snapshot	snap;
		DataKey    *dk;

		if (ck != NULL && !ck->missing)
			return &ck->dk;
		if (ck != NULL && ck->checked == stmt)
			return NULL;

		snap = KeyTableSnapshot();
		found = ReadDataKey(class_id, version, snap, &row);
		if (cache.stale && !refreshed)
		{
			UnregisterSnapshot(snap);
			refreshed = true;
			KeyCacheEnsure();
			continue;
		}
		if (found && row.wrapped != NULL &&
			memcmp(row.dbk_id.data, cache.root.id.data, UUID_LEN) != 0)
		{
			/* the root this row was wrapped under, as the same snapshot shows it */
			KeyCacheReload(snap);
		}
		UnregisterSnapshot(snap);
		if (!found)
		{
			if (ck == NULL && cache.nmissing >= MAX_MISSING_VERSIONS)
				ForgetAllMissing();
			ck = hash_search(cache.datakeys, &hk, HASH_ENTER, &found);
			if (!found)
				cache.nmissing++;
			ck->dk.class_id = class_id;
			ck->dk.version = version;
			ck->dk.key = NULL;
			ck->missing = true;
			ck->checked = stmt;
			return NULL;
		}
		PG_TRY();
		{
			dk = CacheDataKeyRow(&row, cache.dbk, &cache.root.id);
		}
		PG_CATCH();
		{
			/* a data key that does not unwrap: wipe every key, as a failed load does */
			KeyCacheDrop();
			PG_RE_THROW();
		}
		PG_END_TRY();
		return dk;
	}
}

/* Forget that (class_id, version) was found missing. */
static void
ForgetMissing(int32 class_id, uint32 version)
{
	uint64		hk = ((uint64) (uint32) class_id << 32) | version;
	CachedKey  *ck = hash_search(cache.datakeys, &hk, HASH_FIND, NULL);

	if (ck != NULL && ck->missing)
	{
		hash_search(cache.datakeys, &hk, HASH_REMOVE, NULL);
		cache.nmissing--;
	}
}

/* The data key new values of "class_id" are sealed with. */
DataKey *
KeyringActiveDataKey(int32 class_id)
{
	return KeyringSealingKey(class_id, NULL);
}

/*
 * The same, and in *compression (when not NULL) the class's compressor as an
 * envelope flag (ENVELOPE_FLAG_LZ4 or _ZSTD; 0: its values are never
 * compressed): the class's policy, from the cache.
 */
DataKey *
KeyringSealingKey(int32 class_id, uint8 *compression)
{
	KeyClass   *kc;
	DataKey    *dk;

	KeyCacheEnsure();
	kc = CachedClass(class_id);
	if (kc == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("key class %d does not exist", class_id)));
	dk = CachedDataKey(class_id, kc->active_version);
	if (dk == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("key class \"%s\" has no data key version %u", kc->name, kc->active_version)));
	if (compression)
		*compression = kc->compression;
	return dk;
}

uint32
KeyringActiveVersion(int32 class_id)
{
	return KeyringActiveDataKey(class_id)->version;
}

/*
 * The data key a stored value names, or NULL if there is none.  In a
 * walsender, DecodingKeyMissing() may ask for one more look.
 */
DataKey *
KeyringFindDataKey(int32 class_id, uint32 version)
{
	DataKey    *dk;

	KeyCacheEnsure();
	dk = CachedDataKey(class_id, version);
	if (dk == NULL && HistoricSnapshotActive() &&
		DecodingKeyMissing(class_id, version))
	{
		KeyCacheEnsure();
		ForgetMissing(class_id, version);
		dk = CachedDataKey(class_id, version);
	}
	if (dk != NULL && dk->key == NULL)
	{
		char	   *name = KeyClassNameLookup(class_id);

		ereport(ERROR,
				(errcode(ERRCODE_ATREST_KEY_RETIRED),
				 errmsg("data key version %u of key class \"%s\" was retired", version,
						name ? name : "?"),
				 errdetail("A value sealed with it can no longer be decrypted."),
				 errhint("atrest.retire_data_key() refuses while values use a version; this value was restored or written from elsewhere after the version was retired.")));
	}
	return dk;
}

/* A key class's name by id (palloc'd), or NULL. */
char *
KeyClassNameLookup(int32 class_id)
{
	ListCell   *lc;

	if (cache.loaded && !cache.stale)
	{
		for (int i = 0; i < cache.nclasses; i++)
			if (cache.classes[i].id == class_id)
				return pstrdup(cache.classes[i].name);
	}
	foreach(lc, ReadKeyClasses(NULL))
	{
		KeyClass   *kc = lfirst(lc);

		if (kc->id == class_id)
			return pstrdup(kc->name);
	}
	return NULL;
}

/*
 * The unwrapped database key (a secure slot owned by the cache, valid until
 * the next KeyringXxx call) and in *root what its active row says, loading
 * the cache first if need be.
 */
const unsigned char *
KeyringDatabaseKey(const RootInfo **root)
{
	KeyCacheEnsure();
	*root = &cache.root;
	return cache.dbk;
}

/* Drop every key this backend holds, wiping it; the next use reloads. */
void
KeyringDrop(void)
{
	KeyCacheDrop();
}

/*
 * Re-read the key tables on next use, as after an invalidation: the
 * database key is kept if its row is unchanged.
 */
void
KeyringRefresh(void)
{
	cache.stale = true;
}

/* ---------------------------------------------------------------------
 * This session's view, for atrest.key_status
 * --------------------------------------------------------------------- */

/*
 * atrest._session_key_state(): this backend's view, for atrest.key_status.
 */
PG_FUNCTION_INFO_V1(atrest_session_key_state);
Datum
atrest_session_key_state(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[5];
	bool		nulls[5] = {false, false, false, false, false};

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "pg_atrest: return type must be a row type");
	KeyCacheForgetWiped();
	values[0] = BoolGetDatum(cache.loaded && !cache.stale);
	values[1] = TimestampTzGetDatum(last_unwrap);
	nulls[1] = (last_unwrap == 0);
	values[2] = last_error ? CStringGetTextDatum(last_error) : (Datum) 0;
	nulls[2] = (last_error == NULL);
	values[3] = BoolGetDatum(SecureMemLocked());
	values[4] = Int32GetDatum(SecureKeysInUse());
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
}

/*
 * atrest._session_key_source(OUT key_source text, OUT key_expires_at
 * timestamptz): where this session's database key came from ("provider":
 * unwrapped through the customer-managed key; "service key": under the
 * service key alone) and when the TTL ends, when the backend wipes it even
 * if idle; NULLs when it holds none.
 */
PG_FUNCTION_INFO_V1(atrest_session_key_source);
Datum
atrest_session_key_source(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[2];
	bool		nulls[2] = {true, true};

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "pg_atrest: return type must be a row type");
	KeyCacheForgetWiped();
	if (cache.dbk != NULL && cache.source != NULL)
	{
		values[0] = CStringGetTextDatum(cache.source);
		values[1] = TimestampTzGetDatum(TimestampTzPlusMilliseconds(cache.verified_at,
																	(int64) atrest_key_cache_ttl * 1000));
		nulls[0] = nulls[1] = false;
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
}

/* atrest._service_key_source() RETURNS text */
PG_FUNCTION_INFO_V1(atrest_service_key_source);
Datum
atrest_service_key_source(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(ServiceKeySource()));
}

/* atrest._active_key_version(class_id integer) RETURNS integer */
PG_FUNCTION_INFO_V1(atrest_active_key_version);
Datum
atrest_active_key_version(PG_FUNCTION_ARGS)
{
	RequireArgument(fcinfo, 0, "atrest._active_key_version", "class_id");
	PG_RETURN_INT32((int32) KeyringActiveVersion(PG_GETARG_INT32(0)));
}
