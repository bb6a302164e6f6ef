/*
 * envelope_core.c
 *		Header parsing, AES-256-GCM sealing and opening, and bounded LZ4
 *		decompression of sealed values, without PostgreSQL.
 *
 * Everything here works on caller-provided buffers and returns an
 * EnvelopeStatus: no allocation, no error reporting, no global state, so
 * the hot path costs exactly what it did inside envelope.c and the fuzz
 * harness (test/fuzz) exercises the very code the server runs.  Invariants:
 * nothing is written outside the buffers whose sizes the header file
 * documents, nothing is read outside [p, p + len), and no length taken from
 * a value is trusted before it has been checked against the value's size.
 */
#include <limits.h>
#include <stdbool.h>

#include <lz4.h>
#include <lz4hc.h>
#include <openssl/evp.h>

#include "envelope_core.h"

void
EnvelopeWriteHeader(unsigned char *p, AtrestKind kind, uint8_t flags,
					int32_t class_id, uint32_t key_version)
{
	p[0] = ENVELOPE_FORMAT;
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
	if (len < ENVELOPE_OVERHEAD)
		return ENVELOPE_TRUNCATED;
	hdr->format = p[0];
	hdr->kind = (AtrestKind) (p[1] >> 4);
	hdr->flags = p[1] & 0x0f;
	hdr->class_id = ((int32_t) p[2] << 8) | p[3];
	hdr->key_version = ((uint32_t) p[4] << 24) | ((uint32_t) p[5] << 16) |
		((uint32_t) p[6] << 8) | (uint32_t) p[7];
	if (hdr->format != ENVELOPE_FORMAT)
		return ENVELOPE_BAD_FORMAT;
	if (hdr->kind != kind)
		return ENVELOPE_WRONG_KIND;
	if ((hdr->flags & ~ENVELOPE_FLAG_LZ4) != 0)
		return ENVELOPE_BAD_FLAGS;
	return ENVELOPE_OK;
}

/*
 * Replace the key schedule in "ctx" with that of an all-zero key, so that no
 * data key outlives one operation in OpenSSL's (unlocked, dumpable) heap.
 */
static void
ScrubContext(EVP_CIPHER_CTX *ctx, bool encrypting)
{
	static const unsigned char zero_key[32];

	if (encrypting)
		(void) EVP_EncryptInit_ex(ctx, NULL, NULL, zero_key, NULL);
	else
		(void) EVP_DecryptInit_ex(ctx, NULL, NULL, zero_key, NULL);
}

static EnvelopeStatus
EncryptWithKey(EVP_CIPHER_CTX *enc, const unsigned char *key, unsigned char *p,
			   const unsigned char *payload, size_t len)
{
	const unsigned char *nonce = p + ENVELOPE_HEADER_LEN;
	unsigned char *ct = p + ENVELOPE_HEADER_LEN + ENVELOPE_NONCE_LEN;
	int			outl;

	if (EVP_EncryptInit_ex(enc, NULL, NULL, key, nonce) != 1 ||
		EVP_EncryptUpdate(enc, NULL, &outl, p, ENVELOPE_HEADER_LEN) != 1)
		return ENVELOPE_CRYPTO_FAILED;
	if (len > 0 && EVP_EncryptUpdate(enc, ct, &outl, payload, (int) len) != 1)
		return ENVELOPE_CRYPTO_FAILED;
	if (EVP_EncryptFinal_ex(enc, ct + len, &outl) != 1 ||
		EVP_CIPHER_CTX_ctrl(enc, EVP_CTRL_GCM_GET_TAG, ENVELOPE_TAG_LEN, ct + len) != 1)
		return ENVELOPE_CRYPTO_FAILED;
	return ENVELOPE_OK;
}

EnvelopeStatus
EnvelopeEncrypt(EVP_CIPHER_CTX *enc, const unsigned char *key, unsigned char *p,
				const unsigned char *payload, size_t len)
{
	EnvelopeStatus st;

	if (len > (size_t) INT_MAX)
		return ENVELOPE_TOO_LARGE;
	st = EncryptWithKey(enc, key, p, payload, len);
	ScrubContext(enc, true);
	return st;
}

static EnvelopeStatus
DecryptWithKey(EVP_CIPHER_CTX *dec, const unsigned char *key, const unsigned char *p,
			   size_t ctlen, unsigned char *out)
{
	const unsigned char *nonce = p + ENVELOPE_HEADER_LEN;
	const unsigned char *ct = nonce + ENVELOPE_NONCE_LEN;
	int			outl;

	if (EVP_DecryptInit_ex(dec, NULL, NULL, key, nonce) != 1 ||
		EVP_DecryptUpdate(dec, NULL, &outl, p, ENVELOPE_HEADER_LEN) != 1)
		return ENVELOPE_CRYPTO_FAILED;
	if (ctlen > 0 && EVP_DecryptUpdate(dec, out, &outl, ct, (int) ctlen) != 1)
		return ENVELOPE_CRYPTO_FAILED;
	if (EVP_CIPHER_CTX_ctrl(dec, EVP_CTRL_GCM_SET_TAG, ENVELOPE_TAG_LEN,
							(void *) (ct + ctlen)) != 1)
		return ENVELOPE_CRYPTO_FAILED;
	/* GCM's final step writes no bytes: it only checks the tag */
	if (EVP_DecryptFinal_ex(dec, out + ctlen, &outl) != 1)
		return ENVELOPE_TAG_MISMATCH;
	return ENVELOPE_OK;
}

EnvelopeStatus
EnvelopeDecrypt(EVP_CIPHER_CTX *dec, const unsigned char *key, const unsigned char *p,
				size_t sealed_len, unsigned char *out)
{
	EnvelopeStatus st;
	size_t		ctlen;

	if (sealed_len < ENVELOPE_OVERHEAD)
		return ENVELOPE_TRUNCATED;
	ctlen = sealed_len - ENVELOPE_OVERHEAD;
	if (ctlen > (size_t) INT_MAX)
		return ENVELOPE_TOO_LARGE;
	st = DecryptWithKey(dec, key, p, ctlen, out);
	ScrubContext(dec, false);
	return st;
}

EVP_CIPHER_CTX *
EnvelopeNewContext(bool encrypting)
{
	static const unsigned char zero_key[32];
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

size_t
EnvelopeLz4Bound(size_t len)
{
	if (len > (size_t) LZ4_MAX_INPUT_SIZE)
		return 0;
	return ENVELOPE_LZ4_PREFIX + (size_t) LZ4_compressBound((int) len);
}

size_t
EnvelopeLz4StateSize(void)
{
	return (size_t) LZ4_sizeofStateHC();
}

/*
 * LZ4HC at its lowest level: on 23 kB jsonb documents it compresses 4x
 * slower than LZ4's fast mode but 3x faster than TOAST's pglz, and its
 * output is 17% smaller than fast mode's and 7% smaller than pglz's, which
 * is what keeps an encrypted column no larger than a plain one (test/bench).
 */
size_t
EnvelopeLz4Compress(void *state, const char *plain, size_t len, char *out)
{
	int			clen;

	if (len < ENVELOPE_COMPRESS_MIN || len > (size_t) LZ4_MAX_INPUT_SIZE)
		return 0;
	clen = LZ4_compress_HC_extStateHC(state, plain, out + ENVELOPE_LZ4_PREFIX, (int) len,
									  LZ4_compressBound((int) len), LZ4HC_CLEVEL_MIN);
	/* keep it only if it saves at least an eighth */
	if (clen <= 0 || (size_t) clen + ENVELOPE_LZ4_PREFIX >= len - len / 8)
		return 0;
	out[0] = (char) (len >> 24);
	out[1] = (char) (len >> 16);
	out[2] = (char) (len >> 8);
	out[3] = (char) len;
	return (size_t) clen + ENVELOPE_LZ4_PREFIX;
}

EnvelopeStatus
EnvelopeLz4RawLength(const unsigned char *payload, size_t len, size_t max_raw,
					 uint32_t *rawlen)
{
	uint32_t	n;

	if (len < ENVELOPE_LZ4_PREFIX)
		return ENVELOPE_LZ4_TRUNCATED;
	n = ((uint32_t) payload[0] << 24) | ((uint32_t) payload[1] << 16) |
		((uint32_t) payload[2] << 8) | (uint32_t) payload[3];
	if (n > max_raw || n > (uint32_t) LZ4_MAX_INPUT_SIZE)
		return ENVELOPE_LZ4_BAD_LENGTH;
	*rawlen = n;
	return ENVELOPE_OK;
}

EnvelopeStatus
EnvelopeLz4Decompress(const unsigned char *payload, size_t len, char *out,
					  uint32_t rawlen)
{
	if (len < ENVELOPE_LZ4_PREFIX)
		return ENVELOPE_LZ4_TRUNCATED;
	if (len - ENVELOPE_LZ4_PREFIX > (size_t) INT_MAX ||
		rawlen > (uint32_t) LZ4_MAX_INPUT_SIZE)
		return ENVELOPE_LZ4_BAD_LENGTH;
	if (LZ4_decompress_safe((const char *) payload + ENVELOPE_LZ4_PREFIX, out,
							(int) (len - ENVELOPE_LZ4_PREFIX), (int) rawlen) != (int) rawlen)
		return ENVELOPE_LZ4_CORRUPT;
	return ENVELOPE_OK;
}
