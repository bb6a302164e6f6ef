/*
 * envelope_core.h
 *		The sealed value format, and the parts of sealing and opening that do
 *		not depend on PostgreSQL.
 *
 * A sealed value (the varlena payload of encrypted_jsonb, encrypted_bytea and
 * encrypted_text) is:
 *
 *		byte 0		format: 2 (XAES-256-GCM) for every value sealed since 1.1;
 *					1 (AES-256-GCM) for values sealed by 1.0, still read
 *		byte 1		high nibble: value kind (jsonb, bytea, text);
 *					low nibble: flags (bit 0: payload is LZ4-compressed,
 *					bit 1: payload is zstd-compressed, since 1.1; at most one)
 *		bytes 2-3	key class id, big-endian
 *		bytes 4-7	data-key version, big-endian
 *		bytes 8-	nonce, random: 24 bytes (format 2) or 12 bytes (format 1)
 *		...			ciphertext
 *		last 16		GCM tag
 *
 * Bytes 0-7 are the additional authenticated data, so a value cannot be
 * moved to another kind, class, key version or format without failing to
 * open.  A compressed payload is a 4-byte big-endian raw length followed by
 * the compressor's data: an LZ4 block (flag bit 0), or one zstd frame without
 * content size, checksum or dictionary id (flag bit 1; the raw length says
 * the size, the GCM tag authenticates).  Either decompresses into a buffer of
 * exactly the raw length and must fill it.
 *
 * Format 2 is XAES-256-GCM (https://c2sp.org/XAES-256-GCM): per value, an
 * AES-256-GCM key is derived from the data key and the nonce's first 12
 * bytes (NIST SP 800-108r1 counter-mode KDF with AES-256-CMAC, three AES-256
 * block operations), and AES-256-GCM runs under it with the nonce's last 12
 * bytes.  Random 192-bit nonces make the number of values a data key may seal
 * practically unbounded (2^80 messages for a collision risk of 2^-32, says
 * the specification), where format 1's random 96-bit nonces limited a key to
 * 2^32 encryptions (NIST SP 800-38D, section 8.3).
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
#include <zstd.h>

#define ENVELOPE_FORMAT_GCM		1	/* AES-256-GCM, 96-bit nonce: 1.0, read only */
#define ENVELOPE_FORMAT_XAES	2	/* XAES-256-GCM, 192-bit nonce */
#define ENVELOPE_FORMAT			ENVELOPE_FORMAT_XAES	/* what new values are sealed in */
#define ENVELOPE_HEADER_LEN		8
#define ENVELOPE_NONCE_LEN		12	/* an AES-256-GCM nonce (format 1, wrapped keys) */
#define ENVELOPE_XNONCE_LEN		24	/* an XAES-256-GCM nonce (format 2) */
#define ENVELOPE_TAG_LEN		16
#define ENVELOPE_MIN_OVERHEAD	(ENVELOPE_HEADER_LEN + ENVELOPE_NONCE_LEN + ENVELOPE_TAG_LEN)
#define ENVELOPE_MAX_OVERHEAD	(ENVELOPE_HEADER_LEN + ENVELOPE_XNONCE_LEN + ENVELOPE_TAG_LEN)
#define ENVELOPE_KEY_LEN		32
#define ENVELOPE_FLAG_LZ4		0x01
#define ENVELOPE_FLAG_ZSTD		0x02	/* 1.1, format 2 only */
#define ENVELOPE_FLAG_COMPRESSED	(ENVELOPE_FLAG_LZ4 | ENVELOPE_FLAG_ZSTD)
#define ENVELOPE_RAWLEN_PREFIX	4	/* raw length in front of compressed data */

/*
 * The zstd level of key classes with compression 'zstd'.  The compressor
 * study (test/sandbox bench --compressors, docs/performance.md) measured on
 * the benchmark's 23 KB documents: level -1 stores 0.74x of LZ4 fast's size
 * for about 23 us more per document, level -3 0.90x for about 16 us more;
 * decompression about 16 us against LZ4's 7.  Level -1 is the one that
 * brings an encrypted value below jsonb lz4's size, envelope included.
 */
#define ATREST_ZSTD_LEVEL		(-1)
#define ENVELOPE_COMPRESS_MIN	128 /* shorter payloads are never compressed */

typedef enum AtrestKind
{
	ATREST_KIND_JSONB = 1,
	ATREST_KIND_BYTEA = 2,
	ATREST_KIND_TEXT = 3
} AtrestKind;

typedef struct EnvelopeHeader
{
	uint8_t		format;			/* ENVELOPE_FORMAT_GCM or ENVELOPE_FORMAT_XAES */
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
	ENVELOPE_BAD_FLAGS,			/* unknown flag bits, or both compressors */
	ENVELOPE_TOO_LARGE,			/* payload longer than OpenSSL takes in one call */
	ENVELOPE_CRYPTO_FAILED,		/* OpenSSL refused an operation (not the data's fault) */
	ENVELOPE_TAG_MISMATCH,		/* authentication failed */
	ENVELOPE_COMPRESSED_TRUNCATED,	/* compressed payload shorter than its length prefix */
	ENVELOPE_COMPRESSED_BAD_LENGTH, /* raw length beyond the caller's limit */
	ENVELOPE_COMPRESSED_CORRUPT /* LZ4 or zstd data does not decompress to the raw length */
} EnvelopeStatus;

/* Nonce length of a format (0 for an unknown one). */
static inline size_t
EnvelopeNonceLen(uint8_t format)
{
	return format == ENVELOPE_FORMAT_XAES ? ENVELOPE_XNONCE_LEN :
		format == ENVELOPE_FORMAT_GCM ? ENVELOPE_NONCE_LEN : 0;
}

/* Header, nonce and tag: the bytes a sealed value has beyond its payload. */
static inline size_t
EnvelopeOverhead(uint8_t format)
{
	return ENVELOPE_HEADER_LEN + EnvelopeNonceLen(format) + ENVELOPE_TAG_LEN;
}

/* Write the 8 header bytes at "p". */
extern void EnvelopeWriteHeader(unsigned char *p, uint8_t format, AtrestKind kind,
								uint8_t flags, int32_t class_id, uint32_t key_version);

/*
 * Parse and check the header of a sealed value of "len" bytes, which must
 * be of "kind" and at least EnvelopeOverhead(format) long.  Fills *hdr as
 * far as it could read.
 */
extern EnvelopeStatus EnvelopeParseHeader(AtrestKind kind, const unsigned char *p,
										  size_t len, EnvelopeHeader *hdr);

/*
 * Encrypt in place: "p" holds the header (of either format) and the nonce
 * already, and has room for EnvelopeOverhead(format) + len bytes; the
 * ciphertext and tag are written after the nonce.  "enc" is a context from
 * EnvelopeNewContext(true) and "kdf" one from EnvelopeNewKdfContext(), each
 * made once and reused for every value: the 32-byte data key "key" (and for
 * format 2 the subkey derived from it, which lives on this function's stack
 * only) is set into them for this one operation and replaced by an all-zero
 * key before returning, so no key's schedule stays in OpenSSL's heap (which
 * is neither locked nor kept out of core dumps).
 */
extern EnvelopeStatus EnvelopeEncrypt(EVP_CIPHER_CTX *enc, EVP_CIPHER_CTX *kdf,
									  const unsigned char *key, unsigned char *p,
									  const unsigned char *payload, size_t len);

/*
 * Decrypt and authenticate the sealed value "p" of "sealed_len" bytes
 * (header already checked) into "out", which has room for
 * sealed_len - EnvelopeOverhead(format) bytes, with "dec" from
 * EnvelopeNewContext(false) and "kdf" used as for encryption.  On
 * ENVELOPE_TAG_MISMATCH "out" holds unauthenticated bytes that the caller
 * must not use.
 */
extern EnvelopeStatus EnvelopeDecrypt(EVP_CIPHER_CTX *dec, EVP_CIPHER_CTX *kdf,
									  const unsigned char *key, const unsigned char *p,
									  size_t sealed_len, unsigned char *out);

/* A reusable AES-256-GCM context holding no real key; NULL if out of memory. */
extern EVP_CIPHER_CTX *EnvelopeNewContext(bool encrypting);

/*
 * A reusable AES-256 single-block (ECB, no padding) context for XAES-256-GCM
 * key derivation, holding no real key; NULL if out of memory.
 */
extern EVP_CIPHER_CTX *EnvelopeNewKdfContext(void);

/*
 * XAES-256-GCM as the C2SP specification defines it, on separate buffers
 * with any additional data: the building blocks of format 2, exposed for the
 * known-answer tests (test/unit).  EnvelopeXaesDeriveKey writes the derived
 * 32-byte AES-256-GCM key Kx for "key" and the first 12 bytes of the 24-byte
 * "nonce" to "subkey".  EnvelopeXaesEncrypt writes len bytes of ciphertext
 * and the 16-byte tag to "out"; EnvelopeXaesDecrypt reads ctlen bytes of
 * ciphertext followed by the tag at "in" and writes ctlen bytes to "out".
 * Contexts as for EnvelopeEncrypt; every key is scrubbed before returning.
 */
extern EnvelopeStatus EnvelopeXaesDeriveKey(EVP_CIPHER_CTX *kdf, const unsigned char *key,
											const unsigned char *nonce, unsigned char *subkey);
extern EnvelopeStatus EnvelopeXaesEncrypt(EVP_CIPHER_CTX *kdf, EVP_CIPHER_CTX *enc,
										  const unsigned char *key, const unsigned char *nonce,
										  const unsigned char *aad, size_t aadlen,
										  const unsigned char *in, size_t len,
										  unsigned char *out);
extern EnvelopeStatus EnvelopeXaesDecrypt(EVP_CIPHER_CTX *kdf, EVP_CIPHER_CTX *dec,
										  const unsigned char *key, const unsigned char *nonce,
										  const unsigned char *aad, size_t aadlen,
										  const unsigned char *in, size_t ctlen,
										  unsigned char *out);

/*
 * Room needed in "out" by EnvelopeLz4Compress for "len" bytes (0 if "len"
 * is beyond what LZ4 takes).
 */
extern size_t EnvelopeLz4Bound(size_t len);

/*
 * Size of the compressor state that EnvelopeLz4Compress works in (an
 * LZ4_stream_t, about 16 kB): allocate it once, aligned for a pointer, and
 * reuse it.
 */
extern size_t EnvelopeLz4StateSize(void);

/*
 * Compress "len" bytes into "out" (room for EnvelopeLz4Bound(len) bytes) as
 * a compressed payload: the raw length prefix, then LZ4 data (LZ4's fast
 * mode through a fresh stream: plain LZ4 block format, any LZ4 decoder
 * reads it).  "state"
 * is scratch space of EnvelopeLz4StateSize() bytes.  Returns the payload's
 * length, or 0 when compressing is not worth it (short input, or it saves
 * less than an eighth): then the caller seals the plain bytes.
 */
extern size_t EnvelopeLz4Compress(void *state, const char *plain, size_t len, char *out);

/*
 * Read the raw length prefix of a compressed payload (LZ4 or zstd) of "len"
 * bytes; ENVELOPE_COMPRESSED_BAD_LENGTH if it exceeds "max_raw".
 */
extern EnvelopeStatus EnvelopeRawLength(const unsigned char *payload, size_t len,
										size_t max_raw, uint32_t *rawlen);

/*
 * Decompress a compressed payload of "len" bytes whose prefix said
 * "rawlen" into "out" (room for rawlen bytes); it must decompress to
 * exactly rawlen bytes.
 */
extern EnvelopeStatus EnvelopeLz4Decompress(const unsigned char *payload, size_t len,
											char *out, uint32_t rawlen);

/*
 * Room needed in "out" by EnvelopeZstdCompress for "len" bytes (0 if "len"
 * is beyond what a compressed payload may declare).
 */
extern size_t EnvelopeZstdBound(size_t len);

/*
 * The envelope flag of a key class's compression name ("lz4", "zstd",
 * "none": ENVELOPE_FLAG_LZ4, ENVELOPE_FLAG_ZSTD, 0); -1 for any other name.
 */
extern int	EnvelopeCompressionFlag(const char *name);

/*
 * A reusable zstd compression context set to ATREST_ZSTD_LEVEL, without
 * content size, checksum or dictionary id in its frames; a reusable
 * decompression context.  NULL if out of memory.  zstd allocates them (with
 * malloc): make each once per process and reuse it for every value.
 */
extern ZSTD_CCtx *EnvelopeZstdNewCompressor(void);
extern ZSTD_DCtx *EnvelopeZstdNewDecompressor(void);

/*
 * Compress "len" bytes into "out" (room for EnvelopeZstdBound(len) bytes) as
 * a compressed payload: the raw length prefix, then one zstd frame.  Returns
 * the payload's length, or 0 when compressing is not worth it (as for
 * EnvelopeLz4Compress) or zstd failed: then the caller seals the plain bytes.
 */
extern size_t EnvelopeZstdCompress(ZSTD_CCtx *cctx, const char *plain, size_t len, char *out);

/*
 * Decompress a zstd payload of "len" bytes whose prefix said "rawlen" into
 * "out" (room for rawlen bytes): zstd writes at most rawlen bytes, and
 * anything but exactly rawlen bytes (an error, a shorter result, data that
 * would go on) is ENVELOPE_COMPRESSED_CORRUPT.
 */
extern EnvelopeStatus EnvelopeZstdDecompress(ZSTD_DCtx *dctx, const unsigned char *payload,
											 size_t len, char *out, uint32_t rawlen);

#endif							/* ATREST_ENVELOPE_CORE_H */
