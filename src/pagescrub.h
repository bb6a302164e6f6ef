/*
 * pagescrub.h
 *		Zeroing the bytes of heap pages that belong to no tuple.
 */
#ifndef ATREST_PAGESCRUB_H
#define ATREST_PAGESCRUB_H

#include "postgres.h"

extern bool ScrubRelationPages(Oid relid, bool prune);

#endif							/* ATREST_PAGESCRUB_H */
