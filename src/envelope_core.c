/*
 * envelope_core.c
 *		Header parsing, XAES-256-GCM and AES-256-GCM sealing and opening, and
 *		bounded LZ4 and zstd decompression of sealed values, without
 *		PostgreSQL.
 *
 * Everything here works on caller-provided buffers and returns an
 * EnvelopeStatus: no allocation (but the reusable OpenSSL and zstd
 * contexts the callers make once), no error reporting, no global state, so
 * the hot path costs exactly what it did inside envelope.c and the fuzz
 * harness (test/fuzz) exercises the very code the server runs.  Invariants:
 * nothing is written outside the buffers whose sizes the header file
 * documents, nothing is read outside [p, p + len), and no length taken from
 * a value is trusted before it has been checked against the value's size;
 * no key (data key or derived subkey) is left in an OpenSSL context or in
 * a buffer of ours when a function returns.
 */
#include <limits.h>
#include <stdbool.h>
#include <string.h>

#include <lz4.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <zstd.h>

#include "envelope_core.h"

void
EnvelopeWriteHeader(unsigned char *p, uint8_t format, AtrestKind kind, uint8_t flags,
					int32_t class_id, uint32_t key_version)
{
	p[0] = format;
	p[1] = (uint8_t) ((kind << 4) | (flags & 0x0f));
	p[2] = (uint8_t) (class_id >> 8);
	p[3] = (uint8_t) class_id;
	p[4] = (uint8_t) (key_version >> 24);
	p[5] = (uint8_t) (key_version >> 16);
	p[6] = (uint8_t) (key_version >> 8);
	p[7] = (uint8_t) key_version;
}

EnvelopeStatus
EnvelopeParseHeader(AtrestKind kind, const unsigned char *p, size_t len,
					EnvelopeHeader *hdr)
{
	if (len < ENVELOPE_MIN_OVERHEAD)
		return ENVELOPE_TRUNCATED;
	hdr->format = p[0];
	hdr->kind = (AtrestKind) (p[1] >> 4);
	hdr->flags = p[1] & 0x0f;
	hdr->class_id = ((int32_t) p[2] << 8) | p[3];
	hdr->key_version = ((uint32_t) p[4] << 24) | ((uint32_t) p[5] << 16) |
		((uint32_t) p[6] << 8) | (uint32_t) p[7];
	if (EnvelopeNonceLen(hdr->format) == 0)
		return ENVELOPE_BAD_FORMAT;
	if (len < EnvelopeOverhead(hdr->format))
		return ENVELOPE_TRUNCATED;
	if (hdr->kind != kind)
		return ENVELOPE_WRONG_KIND;
	/* one compressor at most; zstd only in the format that introduced it */
	if ((hdr->flags & ~ENVELOPE_FLAG_COMPRESSED) != 0 ||
		hdr->flags == ENVELOPE_FLAG_COMPRESSED ||
		(hdr->flags == ENVELOPE_FLAG_ZSTD && hdr->format != ENVELOPE_FORMAT_XAES))
		return ENVELOPE_BAD_FLAGS;
	return ENVELOPE_OK;
}

/*
 * Replace the key schedule in "ctx" with that of an all-zero key, so that no
 * key outlives one operation in OpenSSL's (unlocked, dumpable) heap.
 */
static void
ScrubContext(EVP_CIPHER_CTX *ctx, bool encrypting)
{
	static const unsigned char zero_key[ENVELOPE_KEY_LEN];

	if (encrypting)
		(void) EVP_EncryptInit_ex(ctx, NULL, NULL, zero_key, NULL);
	else
		(void) EVP_DecryptInit_ex(ctx, NULL, NULL, zero_key, NULL);
}

/*
 * AES-256-GCM with a 96-bit nonce: "len" bytes at "in" to ciphertext and
 * tag at "out" (out == in is fine).  Scrubs "enc".
 */
static EnvelopeStatus
GcmSeal(EVP_CIPHER_CTX *enc, const unsigned char *key, const unsigned char *nonce,
		const unsigned char *aad, size_t aadlen,
		const unsigned char *in, size_t len, unsigned char *out)
{
	int			outl;
	bool		ok;

	ok = EVP_EncryptInit_ex(enc, NULL, NULL, key, nonce) == 1 &&
		(aadlen == 0 || EVP_EncryptUpdate(enc, NULL, &outl, aad, (int) aadlen) == 1) &&
		(len == 0 || EVP_EncryptUpdate(enc, out, &outl, in, (int) len) == 1) &&
		EVP_EncryptFinal_ex(enc, out + len, &outl) == 1 &&
		EVP_CIPHER_CTX_ctrl(enc, EVP_CTRL_GCM_GET_TAG, ENVELOPE_TAG_LEN, out + len) == 1;
	ScrubContext(enc, true);
	return ok ? ENVELOPE_OK : ENVELOPE_CRYPTO_FAILED;
}

/*
 * The inverse: "ctlen" bytes of ciphertext at "in", followed by the tag, to
 * "out" (out == in is fine: the tag is not overwritten).  Scrubs "dec".
 */
static EnvelopeStatus
GcmOpen(EVP_CIPHER_CTX *dec, const unsigned char *key, const unsigned char *nonce,
		const unsigned char *aad, size_t aadlen,
		const unsigned char *in, size_t ctlen, unsigned char *out)
{
	EnvelopeStatus st = ENVELOPE_CRYPTO_FAILED;
	int			outl;

	if (EVP_DecryptInit_ex(dec, NULL, NULL, key, nonce) == 1 &&
		(aadlen == 0 || EVP_DecryptUpdate(dec, NULL, &outl, aad, (int) aadlen) == 1) &&
		(ctlen == 0 || EVP_DecryptUpdate(dec, out, &outl, in, (int) ctlen) == 1) &&
		EVP_CIPHER_CTX_ctrl(dec, EVP_CTRL_GCM_SET_TAG, ENVELOPE_TAG_LEN,
							(void *) (in + ctlen)) == 1)
	{
		/* GCM's final step writes no bytes: it only checks the tag */
		st = EVP_DecryptFinal_ex(dec, out + ctlen, &outl) == 1 ?
			ENVELOPE_OK : ENVELOPE_TAG_MISMATCH;
	}
	ScrubContext(dec, false);
	return st;
}

/*
 * XAES-256-GCM key derivation (c2sp.org/XAES-256-GCM, "Detailed key
 * derivation algorithm"): the CMAC subkey K1 of "key", then
 *		Kx = AES-256(M1 xor K1) || AES-256(M2 xor K1),
 *		M(i) = 0x00 || i || 'X' || 0x00 || nonce[0..11]
 * that is the NIST SP 800-108r1 counter-mode KDF with AES-256-CMAC as the
 * PRF, each CMAC input one block.  Three AES-256 block operations in "kdf",
 * which is scrubbed; the intermediate values are wiped.
 */
EnvelopeStatus
EnvelopeXaesDeriveKey(EVP_CIPHER_CTX *kdf, const unsigned char *key,
					  const unsigned char *nonce, unsigned char *subkey)
{
	static const unsigned char zero_block[16];
	unsigned char k1[16];
	unsigned char m[32];
	unsigned char msb;
	int			outl;
	bool		ok;

	/* L = AES-256(key, 0^128) */
	ok = EVP_EncryptInit_ex(kdf, NULL, NULL, key, NULL) == 1 &&
		EVP_EncryptUpdate(kdf, k1, &outl, zero_block, 16) == 1 && outl == 16;
	if (ok)
	{
		/* K1 = L << 1, xor 0x87 when MSB(L) = 1 (without a branch on it) */
		msb = k1[0] >> 7;
		for (int i = 0; i < 15; i++)
			k1[i] = (unsigned char) ((k1[i] << 1) | (k1[i + 1] >> 7));
		k1[15] = (unsigned char) ((k1[15] << 1) ^ ((unsigned char) (0u - msb) & 0x87));

		m[0] = 0x00;
		m[1] = 0x01;
		m[2] = 0x58;
		m[3] = 0x00;
		memcpy(m + 4, nonce, 12);
		m[16] = 0x00;
		m[17] = 0x02;
		m[18] = 0x58;
		m[19] = 0x00;
		memcpy(m + 20, nonce, 12);
		for (int i = 0; i < 16; i++)
		{
			m[i] ^= k1[i];
			m[16 + i] ^= k1[i];
		}
		ok = EVP_EncryptUpdate(kdf, subkey, &outl, m, 32) == 1 && outl == 32;
	}
	ScrubContext(kdf, true);
	OPENSSL_cleanse(k1, sizeof(k1));
	OPENSSL_cleanse(m, sizeof(m));
	if (!ok)
		OPENSSL_cleanse(subkey, ENVELOPE_KEY_LEN);
	return ok ? ENVELOPE_OK : ENVELOPE_CRYPTO_FAILED;
}

EnvelopeStatus
EnvelopeXaesEncrypt(EVP_CIPHER_CTX *kdf, EVP_CIPHER_CTX *enc,
					const unsigned char *key, const unsigned char *nonce,
					const unsigned char *aad, size_t aadlen,
					const unsigned char *in, size_t len, unsigned char *out)
{
	unsigned char subkey[ENVELOPE_KEY_LEN];
	EnvelopeStatus st;

	if (len > (size_t) INT_MAX || aadlen > (size_t) INT_MAX)
		return ENVELOPE_TOO_LARGE;
	st = EnvelopeXaesDeriveKey(kdf, key, nonce, subkey);
	if (st == ENVELOPE_OK)
		st = GcmSeal(enc, subkey, nonce + 12, aad, aadlen, in, len, out);
	OPENSSL_cleanse(subkey, sizeof(subkey));
	return st;
}

EnvelopeStatus
EnvelopeXaesDecrypt(EVP_CIPHER_CTX *kdf, EVP_CIPHER_CTX *dec,
					const unsigned char *key, const unsigned char *nonce,
					const unsigned char *aad, size_t aadlen,
					const unsigned char *in, size_t ctlen, unsigned char *out)
{
	unsigned char subkey[ENVELOPE_KEY_LEN];
	EnvelopeStatus st;

	if (ctlen > (size_t) INT_MAX || aadlen > (size_t) INT_MAX)
		return ENVELOPE_TOO_LARGE;
	st = EnvelopeXaesDeriveKey(kdf, key, nonce, subkey);
	if (st == ENVELOPE_OK)
		st = GcmOpen(dec, subkey, nonce + 12, aad, aadlen, in, ctlen, out);
	OPENSSL_cleanse(subkey, sizeof(subkey));
	return st;
}

EnvelopeStatus
EnvelopeEncrypt(EVP_CIPHER_CTX *enc, EVP_CIPHER_CTX *kdf, const unsigned char *key,
				unsigned char *p, const unsigned char *payload, size_t len)
{
	uint8_t		format = p[0];
	size_t		nonce_len = EnvelopeNonceLen(format);
	const unsigned char *nonce = p + ENVELOPE_HEADER_LEN;
	unsigned char *ct = p + ENVELOPE_HEADER_LEN + nonce_len;

	if (nonce_len == 0)
		return ENVELOPE_BAD_FORMAT;
	if (len > (size_t) INT_MAX)
		return ENVELOPE_TOO_LARGE;
	if (format == ENVELOPE_FORMAT_XAES)
		return EnvelopeXaesEncrypt(kdf, enc, key, nonce, p, ENVELOPE_HEADER_LEN,
								   payload, len, ct);
	return GcmSeal(enc, key, nonce, p, ENVELOPE_HEADER_LEN, payload, len, ct);
}

EnvelopeStatus
EnvelopeDecrypt(EVP_CIPHER_CTX *dec, EVP_CIPHER_CTX *kdf, const unsigned char *key,
				const unsigned char *p, size_t sealed_len, unsigned char *out)
{
	uint8_t		format;
	size_t		nonce_len;
	size_t		ctlen;
	const unsigned char *nonce = p + ENVELOPE_HEADER_LEN;

	if (sealed_len < ENVELOPE_MIN_OVERHEAD)
		return ENVELOPE_TRUNCATED;
	format = p[0];
	nonce_len = EnvelopeNonceLen(format);
	if (nonce_len == 0)
		return ENVELOPE_BAD_FORMAT;
	if (sealed_len < EnvelopeOverhead(format))
		return ENVELOPE_TRUNCATED;
	ctlen = sealed_len - EnvelopeOverhead(format);
	if (ctlen > (size_t) INT_MAX)
		return ENVELOPE_TOO_LARGE;
	if (format == ENVELOPE_FORMAT_XAES)
		return EnvelopeXaesDecrypt(kdf, dec, key, nonce, p, ENVELOPE_HEADER_LEN,
								   nonce + nonce_len, ctlen, out);
	return GcmOpen(dec, key, nonce, p, ENVELOPE_HEADER_LEN, nonce + nonce_len, ctlen, out);
}

EVP_CIPHER_CTX *
EnvelopeNewContext(bool encrypting)
{
	static const unsigned char zero_key[ENVELOPE_KEY_LEN];
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	int			ok;

	if (ctx == NULL)
		return NULL;
	ok = encrypting ?
		EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, zero_key, NULL) :
		EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, zero_key, NULL);
	if (ok != 1)
	{
		EVP_CIPHER_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

EVP_CIPHER_CTX *
EnvelopeNewKdfContext(void)
{
	static const unsigned char zero_key[ENVELOPE_KEY_LEN];
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();

	if (ctx == NULL)
		return NULL;
	if (EVP_EncryptInit_ex(ctx, EVP_aes_256_ecb(), NULL, zero_key, NULL) != 1 ||
		EVP_CIPHER_CTX_set_padding(ctx, 0) != 1)
	{
		EVP_CIPHER_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

size_t
EnvelopeLz4Bound(size_t len)
{
	if (len > (size_t) LZ4_MAX_INPUT_SIZE)
		return 0;
	return ENVELOPE_RAWLEN_PREFIX + (size_t) LZ4_compressBound((int) len);
}

size_t
EnvelopeLz4StateSize(void)
{
	return sizeof(LZ4_stream_t);
}

/*
 * LZ4's fast mode at acceleration 1, run through LZ4's streaming entry point
 * on a freshly initialised stream.  For inputs under 64 KB the one-shot
 * LZ4_compress_default (what PostgreSQL's lz4 TOAST compression calls)
 * picks a table of 16-bit positions indexed by a hash of 4 bytes; a stream
 * always uses 32-bit positions and, on 64-bit machines, a hash of 5 bytes,
 * which finds longer matches in jsonb's binary form: on the benchmark's
 * 23 KB documents its output is 3.2% smaller at the same speed, and it
 * decompresses faster (test/bench/compressors.c, docs/performance.md).  The
 * stream is fresh each time (LZ4_initStream: no dictionary, nothing from the
 * previous value), so the output is a plain LZ4 block that
 * LZ4_decompress_safe reads like the one-shot mode's or LZ4HC's (1.0), and
 * values sealed with any of them open alike.
 */
size_t
EnvelopeLz4Compress(void *state, const char *plain, size_t len, char *out)
{
	LZ4_stream_t *stream;
	int			clen;

	if (len < ENVELOPE_COMPRESS_MIN || len > (size_t) LZ4_MAX_INPUT_SIZE)
		return 0;
	stream = LZ4_initStream(state, sizeof(LZ4_stream_t));
	if (stream == NULL)
		return 0;
	clen = LZ4_compress_fast_continue(stream, plain, out + ENVELOPE_RAWLEN_PREFIX, (int) len,
									  LZ4_compressBound((int) len), 1);
	/* keep it only if it saves at least an eighth */
	if (clen <= 0 || (size_t) clen + ENVELOPE_RAWLEN_PREFIX >= len - len / 8)
		return 0;
	out[0] = (char) (len >> 24);
	out[1] = (char) (len >> 16);
	out[2] = (char) (len >> 8);
	out[3] = (char) len;
	return (size_t) clen + ENVELOPE_RAWLEN_PREFIX;
}

EnvelopeStatus
EnvelopeRawLength(const unsigned char *payload, size_t len, size_t max_raw,
					 uint32_t *rawlen)
{
	uint32_t	n;

	if (len < ENVELOPE_RAWLEN_PREFIX)
		return ENVELOPE_COMPRESSED_TRUNCATED;
	n = ((uint32_t) payload[0] << 24) | ((uint32_t) payload[1] << 16) |
		((uint32_t) payload[2] << 8) | (uint32_t) payload[3];
	if (n > max_raw || n > (uint32_t) LZ4_MAX_INPUT_SIZE)
		return ENVELOPE_COMPRESSED_BAD_LENGTH;
	*rawlen = n;
	return ENVELOPE_OK;
}

EnvelopeStatus
EnvelopeLz4Decompress(const unsigned char *payload, size_t len, char *out,
					  uint32_t rawlen)
{
	if (len < ENVELOPE_RAWLEN_PREFIX)
		return ENVELOPE_COMPRESSED_TRUNCATED;
	if (len - ENVELOPE_RAWLEN_PREFIX > (size_t) INT_MAX ||
		rawlen > (uint32_t) LZ4_MAX_INPUT_SIZE)
		return ENVELOPE_COMPRESSED_BAD_LENGTH;
	if (LZ4_decompress_safe((const char *) payload + ENVELOPE_RAWLEN_PREFIX, out,
							(int) (len - ENVELOPE_RAWLEN_PREFIX), (int) rawlen) != (int) rawlen)
		return ENVELOPE_COMPRESSED_CORRUPT;
	return ENVELOPE_OK;
}

size_t
EnvelopeZstdBound(size_t len)
{
	if (len > (size_t) LZ4_MAX_INPUT_SIZE)
		return 0;
	return ENVELOPE_RAWLEN_PREFIX + ZSTD_compressBound(len);
}

ZSTD_CCtx *
EnvelopeZstdNewCompressor(void)
{
	ZSTD_CCtx  *cctx = ZSTD_createCCtx();

	if (cctx == NULL)
		return NULL;
	/* the raw length prefix says the size and the GCM tag authenticates */
	if (ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, ATREST_ZSTD_LEVEL)) ||
		ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 0)) ||
		ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 0)) ||
		ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_dictIDFlag, 0)))
	{
		ZSTD_freeCCtx(cctx);
		return NULL;
	}
	return cctx;
}

ZSTD_DCtx *
EnvelopeZstdNewDecompressor(void)
{
	return ZSTD_createDCtx();
}

/*
 * zstd at ATREST_ZSTD_LEVEL (see envelope_core.h for why that level), for
 * key classes that trade some CPU for size.  Compressed payloads follow the
 * LZ4 ones' rules: 128 bytes at least, kept only when they save an eighth.
 */
size_t
EnvelopeZstdCompress(ZSTD_CCtx *cctx, const char *plain, size_t len, char *out)
{
	size_t		clen;

	if (len < ENVELOPE_COMPRESS_MIN || len > (size_t) LZ4_MAX_INPUT_SIZE)
		return 0;
	/* compress2 keeps the parameters set above and starts a new frame */
	clen = ZSTD_compress2(cctx, out + ENVELOPE_RAWLEN_PREFIX, ZSTD_compressBound(len),
						  plain, len);
	if (ZSTD_isError(clen) || clen + ENVELOPE_RAWLEN_PREFIX >= len - len / 8)
		return 0;
	out[0] = (char) (len >> 24);
	out[1] = (char) (len >> 16);
	out[2] = (char) (len >> 8);
	out[3] = (char) len;
	return clen + ENVELOPE_RAWLEN_PREFIX;
}

EnvelopeStatus
EnvelopeZstdDecompress(ZSTD_DCtx *dctx, const unsigned char *payload, size_t len,
					   char *out, uint32_t rawlen)
{
	size_t		n;

	if (len < ENVELOPE_RAWLEN_PREFIX)
		return ENVELOPE_COMPRESSED_TRUNCATED;
	if (rawlen > (uint32_t) LZ4_MAX_INPUT_SIZE)
		return ENVELOPE_COMPRESSED_BAD_LENGTH;

	payload += ENVELOPE_RAWLEN_PREFIX;
	len -= ENVELOPE_RAWLEN_PREFIX;

	/*
	 * Exactly one standard zstd frame, as EnvelopeZstdCompress writes: no
	 * skippable or legacy frame (libzstd's legacy decoders allocate contexts
	 * of their own), nothing after the frame.
	 */
	if (len < 4 ||
		((uint32_t) payload[0] | ((uint32_t) payload[1] << 8) |
		 ((uint32_t) payload[2] << 16) | ((uint32_t) payload[3] << 24)) != ZSTD_MAGICNUMBER ||
		ZSTD_findFrameCompressedSize(payload, len) != len)
		return ENVELOPE_COMPRESSED_CORRUPT;

	/*
	 * One-shot decompression writes straight into "out" and never past
	 * rawlen (a frame that would go on fails with dstSize_tooSmall); it
	 * allocates no window buffer, whatever window size the frame claims.
	 */
	n = ZSTD_decompressDCtx(dctx, out, rawlen, payload, len);
	if (ZSTD_isError(n) || n != rawlen)
		return ENVELOPE_COMPRESSED_CORRUPT;
	return ENVELOPE_OK;
}

int
EnvelopeCompressionFlag(const char *name)
{
	if (strcmp(name, "lz4") == 0)
		return ENVELOPE_FLAG_LZ4;
	if (strcmp(name, "zstd") == 0)
		return ENVELOPE_FLAG_ZSTD;
	if (strcmp(name, "none") == 0)
		return 0;
	return -1;
}
