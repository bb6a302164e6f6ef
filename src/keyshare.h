/*
 * keyshare.h
 *		The shared key cache: database keys under a customer-managed key,
 *		unwrapped once per server per atrest.key_cache_ttl (keyshare.c).
 */
#ifndef ATREST_KEYSHARE_H
#define ATREST_KEYSHARE_H

#include "datatype/timestamp.h"

struct RootInfo;

/* Unwraps the database key described by a root into a 32-byte secure slot. */
typedef void (*SharedKeyFetcher) (const struct RootInfo *root, unsigned char *out);

extern void SharedKeyCacheInit(void);
extern TimestampTz SharedKeyGet(const struct RootInfo *root, unsigned char *out,
								SharedKeyFetcher fetch, const char **source);
extern void SharedKeyNoteRecheck(void);
extern bool SharedKeyRechecked(void);
extern void SharedKeyRecheck(Oid dboid);
extern void SharedKeyRecheckAtCommit(Oid dboid);

#endif							/* ATREST_KEYSHARE_H */
