/*
 * secure_mem.c
 *		A per-backend slab of 32-byte key slots in locked, no-dump memory.
 *
 * Key material never lives in palloc'd memory.  Slots come from anonymous
 * pages mapped lazily by the backend that first needs a key (never by the
 * postmaster), locked into RAM with mlock(), excluded from core dumps with
 * MADV_DONTDUMP and withheld from child processes with MADV_DONTFORK (a
 * provider may fork an adapter program).  A slot is wiped with
 * explicit_bzero() when it is freed.  The bookkeeping (which slots are in
 * use) is not secret and lives in ordinary static memory.
 *
 * If the operating system refuses mlock() (RLIMIT_MEMLOCK), the pages are
 * still kept out of core dumps and a WARNING says so once; key_status
 * reports it.
 */
#include "postgres.h"

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include "utils/memutils.h"

#include "pg_atrest.h"
#include "secure_mem.h"

#define SECURE_PAGE_SIZE	4096
#define SLOTS_PER_PAGE		(SECURE_PAGE_SIZE / ATREST_KEY_LEN)

typedef struct SecurePage
{
	unsigned char *base;
	uint64		used[SLOTS_PER_PAGE / 64];
} SecurePage;

/* grown as needed (TopMemoryContext): no limit but the memory lock limit */
static SecurePage *pages = NULL;
static int	npages = 0;
static int	maxpages = 0;
static int	nslots_used = 0;
static bool all_locked = true;
/* how many times SecureMemWipeAll() ran; changed from a signal handler */
static volatile sig_atomic_t wipe_count = 0;
static bool lock_warned = false;

/*
 * Exclude the mapping at "base" (page-aligned, "len" bytes) from core dumps
 * and child processes, and lock it into RAM.  If the lock is refused
 * (RLIMIT_MEMLOCK), say so once with a WARNING and carry on: key_status
 * reports it.  Also used for the shared key cache's segment (keyshare.c)
 * in every process that maps it.
 */
void
SecureMemProtect(void *base, size_t len)
{
#ifdef MADV_DONTDUMP
	(void) madvise(base, len, MADV_DONTDUMP);
#endif
#ifdef MADV_DONTFORK
	(void) madvise(base, len, MADV_DONTFORK);
#endif
	if (mlock(base, len) != 0)
	{
		all_locked = false;
		if (!lock_warned)
		{
			lock_warned = true;
			ereport(WARNING,
					(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
					 errmsg("could not lock key memory into RAM: %m"),
					 errhint("Raise the memlock limit (RLIMIT_MEMLOCK) of the PostgreSQL server.")));
		}
	}
}

/* Map, lock and hide one more page; ereport(ERROR) if it cannot be mapped. */
static SecurePage *
SecurePageAdd(void)
{
	SecurePage *page;
	void	   *base;

	if (npages >= maxpages)
	{
		int			newmax = Max(maxpages * 2, 8);

		/* the bookkeeping is not secret: ordinary memory */
		pages = pages == NULL ?
			MemoryContextAlloc(TopMemoryContext, sizeof(SecurePage) * newmax) :
			repalloc(pages, sizeof(SecurePage) * newmax);
		maxpages = newmax;
	}

	base = mmap(NULL, SECURE_PAGE_SIZE, PROT_READ | PROT_WRITE,
				MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (base == MAP_FAILED)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not map memory for keys: %m")));

	SecureMemProtect(base, SECURE_PAGE_SIZE);

	page = &pages[npages++];
	page->base = base;
	memset(page->used, 0, sizeof(page->used));
	return page;
}

/*
 * Hand out a zeroed 32-byte slot.  The caller must give it back with
 * SecureKeyFree, including on error paths that it controls.
 */
unsigned char *
SecureKeyAlloc(void)
{
	for (int p = 0;; p++)
	{
		SecurePage *page = (p < npages) ? &pages[p] : SecurePageAdd();

		for (int w = 0; w < SLOTS_PER_PAGE / 64; w++)
		{
			if (page->used[w] != UINT64_MAX)
			{
				for (int b = 0; b < 64; b++)
				{
					if ((page->used[w] & ((uint64) 1 << b)) == 0)
					{
						page->used[w] |= ((uint64) 1 << b);
						nslots_used++;
						return page->base + (w * 64 + b) * ATREST_KEY_LEN;
					}
				}
			}
		}
	}
}

/* Wipe a slot and return it; NULL is accepted. */
void
SecureKeyFree(unsigned char *key)
{
	if (key == NULL)
		return;

	for (int p = 0; p < npages; p++)
	{
		unsigned char *base = pages[p].base;

		if (key >= base && key < base + SECURE_PAGE_SIZE)
		{
			int			slot = (key - base) / ATREST_KEY_LEN;

			explicit_bzero(key, ATREST_KEY_LEN);
			pages[p].used[slot / 64] &= ~((uint64) 1 << (slot % 64));
			nslots_used--;
			return;
		}
	}
	elog(ERROR, "pg_atrest: freeing a key slot that is not ours");
}

bool
SecureMemLocked(void)
{
	return all_locked;
}

int
SecureKeysInUse(void)
{
	return nslots_used;
}

/*
 * Wipe every slot, leaving the bookkeeping alone: the owners find out through
 * SecureMemWipeCount() and free their (now zero) slots on next use.  Only
 * memory writes to pages this backend mapped: safe in a signal handler, which
 * is where the idle wipe (keyring.c) calls it.
 */
void
SecureMemWipeAll(void)
{
	for (int p = 0; p < npages; p++)
		explicit_bzero(pages[p].base, SECURE_PAGE_SIZE);
	wipe_count = wipe_count + 1;
}

/* Changes whenever SecureMemWipeAll() has run. */
int
SecureMemWipeCount(void)
{
	return wipe_count;
}
