/*
 * envelope.h
 *		Sealing and opening values of the encrypted types (XAES-256-GCM), and
 *		wrapping keys (AES-256-GCM).
 *
 * The stored format and the PostgreSQL-independent steps are in
 * envelope_core.h; this layer adds palloc'd results, detoasting, the key
 * cache and ereport with SQLSTATE XX001 for values that do not open.
 */
#ifndef ATREST_ENVELOPE_H
#define ATREST_ENVELOPE_H

#include "fmgr.h"

#include "envelope_core.h"

/* Wrapped keys: 1 byte format, nonce, 32 bytes of ciphertext, tag. */
#define WRAPPED_KEY_LEN			(1 + ENVELOPE_NONCE_LEN + 32 + ENVELOPE_TAG_LEN)

extern const char *AtrestKindTypeName(AtrestKind kind);
extern const char *EnvelopeCompressionName(uint8 compression);
extern uint8 EnvelopeCompressionByName(const char *name);

extern bytea *EnvelopeSeal(AtrestKind kind, int32 class_id,
						   const char *plain, Size len);
extern struct varlena *EnvelopeOpen(AtrestKind kind, struct varlena *sealed);
extern struct varlena *EnvelopeReseal(AtrestKind kind, struct varlena *sealed,
									  int32 class_id, bool *changed);
extern bool EnvelopeNeedsReseal(AtrestKind kind, struct varlena *sealed, int32 class_id);
extern void EnvelopeReadHeader(AtrestKind kind, struct varlena *sealed,
							   EnvelopeHeader *hdr);

extern bytea *WrapKey(const unsigned char *kek, const unsigned char *key,
					  const unsigned char *aad, size_t aadlen);
extern bool UnwrapKey(const unsigned char *kek, const bytea *wrapped,
					  const unsigned char *aad, size_t aadlen,
					  unsigned char *key);

#endif							/* ATREST_ENVELOPE_H */
