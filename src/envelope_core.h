/*
 * envelope_core.h
 *		The sealed value format, and the parts of sealing and opening that do
 *		not depend on PostgreSQL.
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
 *
 * This header and envelope_core.c include no PostgreSQL header and never
 * allocate: callers pass buffers of the sizes documented here and get an
 * EnvelopeStatus back.  envelope.c turns statuses into ereports; the fuzz
 * harness (test/fuzz) runs the same code without a server.
 */
#ifndef ATREST_ENVELOPE_CORE_H
#define ATREST_ENVELOPE_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#define ENVELOPE_FORMAT			1
#define ENVELOPE_HEADER_LEN		8
#define ENVELOPE_NONCE_LEN		12
#define ENVELOPE_TAG_LEN		16
#define ENVELOPE_OVERHEAD		(ENVELOPE_HEADER_LEN + ENVELOPE_NONCE_LEN + ENVELOPE_TAG_LEN)
#define ENVELOPE_FLAG_LZ4		0x01
#define ENVELOPE_LZ4_PREFIX		4	/* raw length in front of LZ4 data */
#define ENVELOPE_COMPRESS_MIN	128 /* shorter payloads are never compressed */

typedef enum AtrestKind
{
	ATREST_KIND_JSONB = 1,
	ATREST_KIND_BYTEA = 2,
	ATREST_KIND_TEXT = 3
} AtrestKind;

typedef struct EnvelopeHeader
{
	uint8_t		format;
	AtrestKind	kind;
	uint8_t		flags;
	int32_t		class_id;
	uint32_t	key_version;
} EnvelopeHeader;

typedef enum EnvelopeStatus
{
	ENVELOPE_OK = 0,
	ENVELOPE_TRUNCATED,			/* shorter than the fixed overhead */
	ENVELOPE_BAD_FORMAT,		/* unknown format version */
	ENVELOPE_WRONG_KIND,		/* sealed for another type */
	ENVELOPE_BAD_FLAGS,			/* unknown flag bits */
	ENVELOPE_TOO_LARGE,			/* payload longer than OpenSSL takes in one call */
	ENVELOPE_CRYPTO_FAILED,		/* OpenSSL refused an operation (not the data's fault) */
	ENVELOPE_TAG_MISMATCH,		/* authentication failed */
	ENVELOPE_LZ4_TRUNCATED,		/* compressed payload shorter than its length prefix */
	ENVELOPE_LZ4_BAD_LENGTH,	/* raw length beyond the caller's limit */
	ENVELOPE_LZ4_CORRUPT		/* LZ4 data does not decompress to the raw length */
} EnvelopeStatus;

/* Write the 8 header bytes at "p". */
extern void EnvelopeWriteHeader(unsigned char *p, AtrestKind kind, uint8_t flags,
								int32_t class_id, uint32_t key_version);

/*
 * Parse and check the header of a sealed value of "len" bytes, which must
 * be of "kind".  Fills *hdr as far as it could read.
 */
extern EnvelopeStatus EnvelopeParseHeader(AtrestKind kind, const unsigned char *p,
										  size_t len, EnvelopeHeader *hdr);

/*
 * Encrypt in place: "p" holds the header and nonce already, and has room
 * for ENVELOPE_OVERHEAD + len bytes; the ciphertext and tag are written
 * after the nonce.  "enc" is a context from EnvelopeNewContext(true), reused
 * for every value: the 32-byte "key" is set into it for this one operation
 * and replaced by an all-zero key before returning, so no data key's schedule
 * stays in OpenSSL's heap (which is neither locked nor kept out of core dumps).
 */
extern EnvelopeStatus EnvelopeEncrypt(EVP_CIPHER_CTX *enc, const unsigned char *key,
									  unsigned char *p,
									  const unsigned char *payload, size_t len);

/*
 * Decrypt and authenticate the sealed value "p" of "sealed_len" bytes
 * (header already checked) into "out", which has room for
 * sealed_len - ENVELOPE_OVERHEAD bytes, with "key" set into "dec" (from
 * EnvelopeNewContext(false)) for this operation only, as for encryption.
 * On ENVELOPE_TAG_MISMATCH "out" holds unauthenticated bytes that the
 * caller must not use.
 */
extern EnvelopeStatus EnvelopeDecrypt(EVP_CIPHER_CTX *dec, const unsigned char *key,
									  const unsigned char *p, size_t sealed_len,
									  unsigned char *out);

/* A reusable AES-256-GCM context holding no real key; NULL if out of memory. */
extern EVP_CIPHER_CTX *EnvelopeNewContext(bool encrypting);

/*
 * Room needed in "out" by EnvelopeLz4Compress for "len" bytes (0 if "len"
 * is beyond what LZ4 takes).
 */
extern size_t EnvelopeLz4Bound(size_t len);

/*
 * Size of the compressor state that EnvelopeLz4Compress works in (about
 * 256 kB): allocate it once, aligned for a pointer, and reuse it.
 */
extern size_t EnvelopeLz4StateSize(void);

/*
 * Compress "len" bytes into "out" (room for EnvelopeLz4Bound(len) bytes) as
 * a compressed payload: the raw length prefix, then LZ4 data (LZ4HC at its
 * lowest level: plain LZ4 block format, any LZ4 decoder reads it).  "state"
 * is scratch space of EnvelopeLz4StateSize() bytes.  Returns the payload's
 * length, or 0 when compressing is not worth it (short input, or it saves
 * less than an eighth): then the caller seals the plain bytes.
 */
extern size_t EnvelopeLz4Compress(void *state, const char *plain, size_t len, char *out);

/*
 * Read the raw length prefix of a compressed payload of "len" bytes;
 * ENVELOPE_LZ4_BAD_LENGTH if it exceeds "max_raw".
 */
extern EnvelopeStatus EnvelopeLz4RawLength(const unsigned char *payload, size_t len,
										   size_t max_raw, uint32_t *rawlen);

/*
 * Decompress a compressed payload of "len" bytes whose prefix said
 * "rawlen" into "out" (room for rawlen bytes); it must decompress to
 * exactly rawlen bytes.
 */
extern EnvelopeStatus EnvelopeLz4Decompress(const unsigned char *payload, size_t len,
											char *out, uint32_t rawlen);

#endif							/* ATREST_ENVELOPE_CORE_H */
