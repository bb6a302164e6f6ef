/*
 * envelope.h
 *		Sealing and opening values of the encrypted types (XAES-256-GCM).
 *
 * The stored format and the PostgreSQL-independent steps are in
 * envelope_core.h; this layer adds palloc'd results, detoasting, the key
 * cache and ereport with SQLSTATE XX001 for values that do not open.
 */
#ifndef ATREST_ENVELOPE_H
#define ATREST_ENVELOPE_H

#include "fmgr.h"

#include "envelope_core.h"

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

#endif							/* ATREST_ENVELOPE_H */
