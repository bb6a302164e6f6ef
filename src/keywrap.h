/*
 * keywrap.h
 *		Wrapping one key under another (AES-256-GCM), the associated data that
 *		binds a wrapped key to its place in the hierarchy, and fresh keys and
 *		key ids.  The bottom of the key hierarchy: no key tables, no cache.
 */
#ifndef ATREST_KEYWRAP_H
#define ATREST_KEYWRAP_H

#include "utils/uuid.h"

#include "envelope_core.h"
#include "secure_mem.h"

/* Wrapped keys: 1 byte format, nonce, 32 bytes of ciphertext, tag. */
#define WRAPPED_KEY_LEN			(1 + ENVELOPE_NONCE_LEN + ATREST_KEY_LEN + ENVELOPE_TAG_LEN)

/* Room for the longest associated data below. */
#define KEY_AAD_MAXLEN			64

extern bytea *WrapKey(const unsigned char *kek, const unsigned char *key,
					  const unsigned char *aad, size_t aadlen);
extern bool UnwrapKey(const unsigned char *kek, const bytea *wrapped,
					  const unsigned char *aad, size_t aadlen,
					  unsigned char *key);

extern size_t DatabaseKeyAad(const pg_uuid_t *id, unsigned char *aad);
extern size_t DataKeyAad(const pg_uuid_t *dbk_id, int32 class_id, uint32 version,
						 unsigned char *aad);

extern void RandomKey(unsigned char *key);
extern void RandomUuid(pg_uuid_t *id);

#endif							/* ATREST_KEYWRAP_H */
