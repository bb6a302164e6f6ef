/*
 * envelope.h
 *		The sealed value format and the AEAD primitives built on AES-256-GCM.
 *
 * A sealed value (the varlena payload of encrypted_jsonb, encrypted_bytea and
 * encrypted_text) is:
 *
 *		byte 0		format version (1)
 *		byte 1		high nibble: value kind (jsonb, bytea, text);
 *					low nibble: flags (bit 0: payload is LZ4-compressed)
 *		bytes 2-3	key class id, big-endian
 *		bytes 4-7	data-key version, big-endian
 *		bytes 8-19	nonce (random, 96 bits)
 *		...			ciphertext
 *		last 16		GCM tag
 *
 * Bytes 0-7 are the additional authenticated data, so a value cannot be
 * moved to another kind, class or key version without failing to open.
 * A compressed payload is a 4-byte big-endian raw length followed by LZ4 data.
 */
#ifndef ATREST_ENVELOPE_H
#define ATREST_ENVELOPE_H

#include "fmgr.h"

#define ENVELOPE_FORMAT			1
#define ENVELOPE_HEADER_LEN		8
#define ENVELOPE_NONCE_LEN		12
#define ENVELOPE_TAG_LEN		16
#define ENVELOPE_OVERHEAD		(ENVELOPE_HEADER_LEN + ENVELOPE_NONCE_LEN + ENVELOPE_TAG_LEN)
#define ENVELOPE_FLAG_LZ4		0x01

typedef enum AtrestKind
{
	ATREST_KIND_JSONB = 1,
	ATREST_KIND_BYTEA = 2,
	ATREST_KIND_TEXT = 3
} AtrestKind;

typedef struct EnvelopeHeader
{
	uint8		format;
	AtrestKind	kind;
	uint8		flags;
	int32		class_id;
	uint32		key_version;
} EnvelopeHeader;

/* Wrapped keys: 1 byte format, nonce, 32 bytes of ciphertext, tag. */
#define WRAPPED_KEY_LEN			(1 + ENVELOPE_NONCE_LEN + 32 + ENVELOPE_TAG_LEN)

extern const char *AtrestKindTypeName(AtrestKind kind);

extern bytea *EnvelopeSeal(AtrestKind kind, int32 class_id,
						   const char *plain, Size len);
extern struct varlena *EnvelopeOpen(AtrestKind kind, struct varlena *sealed);
extern struct varlena *EnvelopeReseal(AtrestKind kind, struct varlena *sealed,
									  int32 class_id, bool *changed);
extern void EnvelopeReadHeader(AtrestKind kind, struct varlena *sealed,
							   EnvelopeHeader *hdr);

extern bytea *WrapKey(const unsigned char *kek, const unsigned char *key,
					  const unsigned char *aad, size_t aadlen);
extern bool UnwrapKey(const unsigned char *kek, const bytea *wrapped,
					  const unsigned char *aad, size_t aadlen,
					  unsigned char *key);

#endif							/* ATREST_ENVELOPE_H */
