/*
 * pagescrub.c
 *		Zeroing the bytes of heap pages that belong to no tuple, so that row
 *		versions that were removed leave the relation's files.
 *
 * Pruning and VACUUM only mark removed row versions unused and compact the
 * page: the bytes of those versions stay in the page's free space.  The key
 * table scrub (keyscrub.c) and the column conversion (convert.c) rewrite each
 * page in place with every byte outside the line pointer array, the live line
 * pointers' storage and the special space set to zero, WAL-logged as a full
 * page image so standbys get the scrubbed page too.  No file is replaced and
 * no lock that blocks readers or writers is taken: ACCESS SHARE on the
 * relation and, per page, an exclusive content lock (a cleanup lock when the
 * page is pruned first), as opportunistic pruning does.
 *
 * Invariant: only bytes that belong to no line pointer's storage change.
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xloginsert.h"
#include "miscadmin.h"
#include "storage/bufmgr.h"
#include "storage/bufpage.h"
#include "storage/procarray.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "pagescrub.h"

/*
 * Zero every byte of a heap page that belongs to no line pointer's storage:
 * the free space between pd_lower and pd_upper and any gap between tuples,
 * where pruning and compaction leave the bytes of removed row versions.  If
 * anything changed, the page is WAL-logged as a full image, so standbys get
 * the scrubbed page too.  Returns false if the page still holds a tuple that
 * is dead to everyone (VACUUM has not removed it yet).  The caller holds an
 * exclusive content lock on "buf".
 */
static bool
ScrubPage(Relation rel, Buffer buf, TransactionId oldest)
{
	Page		page = BufferGetPage(buf);
	PageHeader	ph = (PageHeader) page;
	static bool keep[BLCKSZ];
	bool		dirty = false;
	bool		clean = true;
	OffsetNumber maxoff;

	if (PageIsNew(page))
		return true;
	memset(keep, 0, sizeof(keep));
	memset(keep, 1, ph->pd_lower);
	memset(keep + ph->pd_special, 1, BLCKSZ - ph->pd_special);
	maxoff = PageGetMaxOffsetNumber(page);
	for (OffsetNumber off = FirstOffsetNumber; off <= maxoff; off++)
	{
		ItemId		id = PageGetItemId(page, off);

		if (!ItemIdHasStorage(id))
			continue;
		memset(keep + ItemIdGetOffset(id), 1, ItemIdGetLength(id));
		if (ItemIdIsNormal(id))
		{
			HeapTupleData tup;

			tup.t_data = (HeapTupleHeader) PageGetItem(page, id);
			tup.t_len = ItemIdGetLength(id);
			tup.t_tableOid = RelationGetRelid(rel);
			ItemPointerSet(&tup.t_self, BufferGetBlockNumber(buf), off);
			if (HeapTupleSatisfiesVacuum(&tup, oldest, buf) == HEAPTUPLE_DEAD)
				clean = false;
		}
	}
	for (int i = 0; i < BLCKSZ && !dirty; i++)
		dirty = !keep[i] && ((char *) page)[i] != 0;
	if (dirty)
	{
		START_CRIT_SECTION();
		for (int i = 0; i < BLCKSZ; i++)
			if (!keep[i])
				((char *) page)[i] = 0;
		MarkBufferDirty(buf);
		if (RelationNeedsWAL(rel))
			log_newpage_buffer(buf, true);
		END_CRIT_SECTION();
	}
	return clean;
}

/*
 * Scrub every page of a relation and of its TOAST table (ScrubPage).  With
 * "prune", each page is first pruned under a cleanup lock, so row versions
 * that are dead to every snapshot lose their storage without a VACUUM (which
 * cannot run inside a procedure).  Returns false if a page still holds a
 * tuple that is dead to everyone.
 */
bool
ScrubRelationPages(Oid relid, bool prune)
{
	Relation	rel = table_open(relid, AccessShareLock);
	TransactionId oldest = GetOldestNonRemovableTransactionId(rel);
	GlobalVisState *vistest = GlobalVisTestFor(rel);
	BlockNumber nblocks = RelationGetNumberOfBlocks(rel);
	Oid			toast = rel->rd_rel->reltoastrelid;
	bool		clean = true;

	for (BlockNumber blkno = 0; blkno < nblocks; blkno++)
	{
		Buffer		buf = ReadBufferExtended(rel, MAIN_FORKNUM, blkno, RBM_NORMAL, NULL);

		CHECK_FOR_INTERRUPTS();
		if (prune)
		{
			OffsetNumber off_loc;

			LockBufferForCleanup(buf);
#if PG_VERSION_NUM >= 170000
			{
				PruneFreezeResult presult;

				heap_page_prune_and_freeze(rel, buf, vistest, 0, NULL, &presult,
										   PRUNE_ON_ACCESS, &off_loc, NULL, NULL);
			}
#elif PG_VERSION_NUM >= 160000
			{
				PruneResult presult;

				heap_page_prune(rel, buf, vistest, &presult, &off_loc);
			}
#else
			{
				int			ndeleted;

				(void) heap_page_prune(rel, buf, InvalidTransactionId, vistest,
									   InvalidTransactionId, 0, &ndeleted, &off_loc);
			}
#endif
		}
		else
			LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
		if (!ScrubPage(rel, buf, oldest))
			clean = false;
		UnlockReleaseBuffer(buf);
	}
	table_close(rel, AccessShareLock);
	if (OidIsValid(toast) && !ScrubRelationPages(toast, prune))
		clean = false;
	return clean;
}
