/*
 * envelope_core_test.c
 *		Known-answer tests of the sealed-value core (src/envelope_core.c),
 *		without a server: run by test/t/080_envelope_core.pl.
 *
 *	- XAES-256-GCM against the two vectors of the C2SP specification
 *	  (https://c2sp.org/XAES-256-GCM): the derived key Kx and the ciphertext
 *	  with its tag, MSB1(L) = 0 and 1, with and without additional data;
 *	- the specification's accumulated randomized test (10,000 iterations,
 *	  SHAKE-128 as RNG and as hash);
 *	- a value sealed by pg_atrest 1.0 (format 1, AES-256-GCM with a 96-bit
 *	  nonce), produced by 1.0's envelope_core.c with a fixed key and nonce,
 *	  still opens;
 *	- a value in today's format (2) has the documented layout, opens, and
 *	  stops opening when its format byte is changed;
 *	- LZ4 payloads (flag bit 0): what EnvelopeLz4Compress writes is a plain
 *	  LZ4 block (LZ4_decompress_safe, no dictionary, reads it), depends on
 *	  nothing but its input (the same bytes after any other value), and
 *	  blocks written the earlier ways (one-shot LZ4_compress_default before
 *	  this release, LZ4HC level 2 by 1.0) open;
 *	- zstd payloads (flag bit 1): a compressible text round-trips smaller
 *	  than LZ4 makes it; a frame that is corrupt, truncated, followed by more
 *	  bytes, legacy or skippable, or whose declared raw length lies either
 *	  way, is ENVELOPE_COMPRESSED_CORRUPT and writes nothing past the raw
 *	  length; the flag combinations the header admits.
 *
 * Prints one "ok" or "not ok" line per check (TAP) and exits non-zero when
 * any failed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lz4.h>
#include <lz4hc.h>
#include <openssl/evp.h>

#include "envelope_core.h"

static int	failures = 0;
static int	checks = 0;

static void
Check(int ok, const char *what)
{
	checks++;
	printf("%s %d - %s\n", ok ? "ok" : "not ok", checks, what);
	if (!ok)
		failures++;
}

static size_t
FromHex(const char *hex, unsigned char *out)
{
	size_t		n = strlen(hex) / 2;

	for (size_t i = 0; i < n; i++)
	{
		unsigned int b;

		if (sscanf(hex + 2 * i, "%2x", &b) != 1)
			abort();
		out[i] = (unsigned char) b;
	}
	return n;
}

static EVP_CIPHER_CTX *enc_ctx;
static EVP_CIPHER_CTX *dec_ctx;
static EVP_CIPHER_CTX *kdf_ctx;

typedef struct Vector
{
	const char *name;
	const char *key;			/* hex */
	const char *nonce;			/* ASCII, 24 bytes */
	const char *kx;				/* hex */
	const char *plaintext;		/* ASCII */
	const char *aad;			/* ASCII */
	const char *sealed;			/* hex: ciphertext || tag */
} Vector;

static const Vector vectors[] = {
	{
		"C2SP vector 1 (MSB1(L) = 0, no AAD)",
		"0101010101010101010101010101010101010101010101010101010101010101",
		"ABCDEFGHIJKLMNOPQRSTUVWX",
		"c8612c9ed53fe43e8e005b828a1631a0bbcb6ab2f46514ec4f439fcfd0fa969b",
		"XAES-256-GCM", "",
		"ce546ef63c9cc60765923609b33a9a1974e96e52daf2fcf7075e2271"
	},
	{
		"C2SP vector 2 (MSB1(L) = 1, with AAD)",
		"0303030303030303030303030303030303030303030303030303030303030303",
		"ABCDEFGHIJKLMNOPQRSTUVWX",
		"e9c621d4cdd9b11b00a6427ad7e559aeedd66b3857646677748f8ca796cb3fd8",
		"XAES-256-GCM", "c2sp.org/XAES-256-GCM",
		"986ec1832593df5443a179437fd083bf3fdb41abd740a21f71eb769d"
	},
};

static void
SpecVectors(void)
{
	for (size_t v = 0; v < sizeof(vectors) / sizeof(vectors[0]); v++)
	{
		const Vector *t = &vectors[v];
		unsigned char key[32], kx[32], want_kx[32], sealed[64], want[64], back[64];
		size_t		ptlen = strlen(t->plaintext);
		size_t		n;
		char		what[200];

		FromHex(t->key, key);
		FromHex(t->kx, want_kx);
		n = FromHex(t->sealed, want);

		Check(EnvelopeXaesDeriveKey(kdf_ctx, key, (const unsigned char *) t->nonce, kx) == ENVELOPE_OK &&
			  memcmp(kx, want_kx, 32) == 0,
			  (snprintf(what, sizeof(what), "%s: derived key Kx", t->name), what));
		Check(n == ptlen + ENVELOPE_TAG_LEN &&
			  EnvelopeXaesEncrypt(kdf_ctx, enc_ctx, key, (const unsigned char *) t->nonce,
								  (const unsigned char *) t->aad, strlen(t->aad),
								  (const unsigned char *) t->plaintext, ptlen, sealed) == ENVELOPE_OK &&
			  memcmp(sealed, want, n) == 0,
			  (snprintf(what, sizeof(what), "%s: ciphertext and tag", t->name), what));
		Check(EnvelopeXaesDecrypt(kdf_ctx, dec_ctx, key, (const unsigned char *) t->nonce,
								  (const unsigned char *) t->aad, strlen(t->aad),
								  want, ptlen, back) == ENVELOPE_OK &&
			  memcmp(back, t->plaintext, ptlen) == 0,
			  (snprintf(what, sizeof(what), "%s: opens", t->name), what));
		want[n - 1] ^= 1;
		Check(EnvelopeXaesDecrypt(kdf_ctx, dec_ctx, key, (const unsigned char *) t->nonce,
								  (const unsigned char *) t->aad, strlen(t->aad),
								  want, ptlen, back) == ENVELOPE_TAG_MISMATCH,
			  (snprintf(what, sizeof(what), "%s: a flipped tag bit does not open", t->name), what));
	}
}

/*
 * The specification's accumulated test: key[32], nonce[24], plaintext<0..255>
 * and aad<0..255> (one length byte each) are read from one SHAKE-128 stream
 * over the empty input; every ciphertext (with its tag) goes into a second
 * SHAKE-128, whose first 32 bytes are compared.  OpenSSL 3.0 squeezes a
 * SHAKE only once, so the RNG stream is produced in one go, long enough for
 * the worst case.
 */
static void
Accumulated(int iterations, const char *expected)
{
	size_t		streamlen = (size_t) iterations * (32 + 24 + 1 + 255 + 1 + 255);
	unsigned char *stream = malloc(streamlen);
	unsigned char *pos = stream;
	EVP_MD_CTX *rng = EVP_MD_CTX_new();
	EVP_MD_CTX *hash = EVP_MD_CTX_new();
	unsigned char digest[32], want[32];
	unsigned char ct[255 + ENVELOPE_TAG_LEN], back[255];
	int			opened_all = 1;
	char		what[100];

	if (stream == NULL || rng == NULL || hash == NULL ||
		EVP_DigestInit_ex(rng, EVP_shake128(), NULL) != 1 ||
		EVP_DigestFinalXOF(rng, stream, streamlen) != 1 ||
		EVP_DigestInit_ex(hash, EVP_shake128(), NULL) != 1)
		abort();
	for (int i = 0; i < iterations; i++)
	{
		const unsigned char *key = pos, *nonce = pos + 32, *pt, *aad;
		size_t		ptlen, aadlen;

		pos += 56;
		ptlen = *pos++;
		pt = pos;
		pos += ptlen;
		aadlen = *pos++;
		aad = pos;
		pos += aadlen;
		if (EnvelopeXaesEncrypt(kdf_ctx, enc_ctx, key, nonce, aad, aadlen, pt, ptlen, ct) != ENVELOPE_OK)
			abort();
		EVP_DigestUpdate(hash, ct, ptlen + ENVELOPE_TAG_LEN);
		if (EnvelopeXaesDecrypt(kdf_ctx, dec_ctx, key, nonce, aad, aadlen, ct, ptlen, back) != ENVELOPE_OK ||
			memcmp(back, pt, ptlen) != 0)
			opened_all = 0;
	}
	EVP_DigestFinalXOF(hash, digest, sizeof(digest));
	FromHex(expected, want);
	snprintf(what, sizeof(what), "C2SP accumulated test, %d iterations: hash", iterations);
	Check(memcmp(digest, want, 32) == 0, what);
	snprintf(what, sizeof(what), "C2SP accumulated test, %d iterations: every value opens", iterations);
	Check(opened_all, what);
	EVP_MD_CTX_free(rng);
	EVP_MD_CTX_free(hash);
	free(stream);
}

/*
 * Format 1, as pg_atrest 1.0 sealed it: kind jsonb, class 3, version 2, key
 * a0 a1 ... bf, nonce 10 11 ... 1b, made by 1.0's src/envelope_core.c.
 */
static void
LegacyValue(void)
{
	static const char legacy_hex[] =
		"0110000300000002101112131415161718191a1bef94066bbf2bd0d6ba1b1533a3139ec4940d7dbb9d9a"
		"c0b679aa2d1ca5baab3e729e625fa6d66239bef7d57dd8ce";
	static const char plain[] = "{\"sealed by\": \"pg_atrest 1.0\"}";
	unsigned char key[32], v[128], out[128];
	size_t		len = FromHex(legacy_hex, v);
	EnvelopeHeader hdr;

	for (int i = 0; i < 32; i++)
		key[i] = (unsigned char) (0xa0 + i);
	Check(EnvelopeParseHeader(ATREST_KIND_JSONB, v, len, &hdr) == ENVELOPE_OK &&
		  hdr.format == ENVELOPE_FORMAT_GCM && hdr.class_id == 3 && hdr.key_version == 2 &&
		  EnvelopeOverhead(hdr.format) == 36,
		  "format 1 (pg_atrest 1.0): the header parses");
	Check(EnvelopeDecrypt(dec_ctx, kdf_ctx, key, v, len, out) == ENVELOPE_OK &&
		  len - 36 == strlen(plain) && memcmp(out, plain, strlen(plain)) == 0,
		  "format 1 (pg_atrest 1.0): the value opens to what 1.0 sealed");
	v[20] ^= 1;
	Check(EnvelopeDecrypt(dec_ctx, kdf_ctx, key, v, len, out) == ENVELOPE_TAG_MISMATCH,
		  "format 1: a flipped ciphertext bit does not open");
}

static void
CurrentFormat(void)
{
	static const char plain[] = "{\"sealed by\": \"pg_atrest 1.1\"}";
	size_t		len = strlen(plain);
	unsigned char key[32], v[128], out[128];
	EnvelopeHeader hdr;

	memset(key, 0x42, sizeof(key));
	Check(ENVELOPE_FORMAT == ENVELOPE_FORMAT_XAES && EnvelopeOverhead(ENVELOPE_FORMAT) == 48,
		  "new values are sealed in format 2 (XAES-256-GCM), 48 bytes of overhead");
	EnvelopeWriteHeader(v, ENVELOPE_FORMAT, ATREST_KIND_TEXT, 0, 7, 9);
	memcpy(v + ENVELOPE_HEADER_LEN, "ABCDEFGHIJKLMNOPQRSTUVWX", ENVELOPE_XNONCE_LEN);
	Check(EnvelopeEncrypt(enc_ctx, kdf_ctx, key, v, (const unsigned char *) plain, len) == ENVELOPE_OK,
		  "format 2: seals");
	Check(EnvelopeParseHeader(ATREST_KIND_TEXT, v, len + 48, &hdr) == ENVELOPE_OK &&
		  hdr.format == ENVELOPE_FORMAT_XAES && hdr.class_id == 7 && hdr.key_version == 9,
		  "format 2: the header parses");
	/* the ciphertext is XAES-256-GCM of the plaintext with the header as AAD */
	{
		unsigned char ref[128];

		Check(EnvelopeXaesEncrypt(kdf_ctx, enc_ctx, key, v + 8, v, 8,
								  (const unsigned char *) plain, len, ref) == ENVELOPE_OK &&
			  memcmp(ref, v + 32, len + 16) == 0,
			  "format 2: ciphertext and tag are XAES-256-GCM with the 8 header bytes as AAD");
	}
	Check(EnvelopeDecrypt(dec_ctx, kdf_ctx, key, v, len + 48, out) == ENVELOPE_OK &&
		  memcmp(out, plain, len) == 0,
		  "format 2: opens");
	v[0] = ENVELOPE_FORMAT_GCM;
	Check(EnvelopeParseHeader(ATREST_KIND_TEXT, v, len + 48, &hdr) == ENVELOPE_OK &&
		  EnvelopeDecrypt(dec_ctx, kdf_ctx, key, v, len + 48, out) == ENVELOPE_TAG_MISMATCH,
		  "format 2 relabelled as format 1 does not open");
	v[0] = 3;
	Check(EnvelopeParseHeader(ATREST_KIND_TEXT, v, len + 48, &hdr) == ENVELOPE_BAD_FORMAT,
		  "format 3 is unknown");
	v[0] = ENVELOPE_FORMAT_XAES;
	Check(EnvelopeParseHeader(ATREST_KIND_TEXT, v, 47, &hdr) == ENVELOPE_TRUNCATED,
		  "format 2 shorter than 48 bytes is truncated");
}

/* JSON-like records with hex digests, as the benchmark's documents mix them */
static size_t
JsonLike(char *buf, size_t size, unsigned seed)
{
	size_t		pos = 0;

	for (int i = 0; pos + 80 < size; i++)
		pos += (size_t) snprintf(buf + pos, size - pos,
								 "{\"id\": %d, \"word\": \"word%d\", \"digest\": \"%08x%08x\"}, ",
								 i, i + (int) seed, (unsigned) ((i + seed) * 2654435761u),
								 (unsigned) (i * 40503u));
	return pos;
}

static void
Lz4Payloads(void)
{
	static char plain[23000], other[23000];
	static char lz[32000], again[32000], ref[32000], out[32000];
	static unsigned char lz4_state[1 << 17] __attribute__((aligned(16)));
	size_t		len = JsonLike(plain, sizeof(plain), 0);
	size_t		olen = JsonLike(other, sizeof(other), 7);
	size_t		llen, alen;
	int			rlen;
	uint32_t	rawlen = 0;

	Check(EnvelopeLz4Bound(len) <= sizeof(lz) && EnvelopeLz4StateSize() <= sizeof(lz4_state),
		  "lz4: the test's buffers are large enough");
	llen = EnvelopeLz4Compress(lz4_state, plain, len, lz);
	Check(llen > ENVELOPE_RAWLEN_PREFIX && EnvelopeRawLength((unsigned char *) lz, llen, len, &rawlen) ==
		  ENVELOPE_OK && rawlen == len, "lz4: a compressible text compresses, its raw length in front");
	rlen = LZ4_decompress_safe(lz + ENVELOPE_RAWLEN_PREFIX, out, (int) (llen - ENVELOPE_RAWLEN_PREFIX),
							   (int) sizeof(out));
	Check(rlen == (int) len && memcmp(out, plain, len) == 0,
		  "lz4: the payload is a plain LZ4 block (LZ4_decompress_safe, no dictionary, reads it)");

	/* after another value, the same input gives the same bytes: nothing carried over */
	Check(EnvelopeLz4Compress(lz4_state, other, olen, again) > 0, "lz4: another text compresses");
	alen = EnvelopeLz4Compress(lz4_state, plain, len, again);
	Check(alen == llen && memcmp(again, lz, llen) == 0,
		  "lz4: the output depends only on the input, not on the value compressed before");

	/*
	 * The one-shot mode PostgreSQL's lz4 TOAST compression calls, and what
	 * values sealed before this release hold.  (Which of the two is smaller
	 * depends on the input: the benchmark measures it on its documents.)
	 */
	rlen = LZ4_compress_default(plain, ref, (int) len, (int) sizeof(ref));
	memcpy(again, lz, ENVELOPE_RAWLEN_PREFIX);
	memcpy(again + ENVELOPE_RAWLEN_PREFIX, ref, (size_t) rlen);
	memset(out, 0, sizeof(out));
	Check(rlen > 0 && EnvelopeLz4Decompress((unsigned char *) again, (size_t) rlen + ENVELOPE_RAWLEN_PREFIX,
											out, rawlen) == ENVELOPE_OK && memcmp(out, plain, len) == 0,
		  "lz4: a block from LZ4_compress_default (values sealed before this release) opens");
	rlen = LZ4_compress_HC(plain, ref, (int) len, (int) sizeof(ref), 2);
	memcpy(again + ENVELOPE_RAWLEN_PREFIX, ref, (size_t) rlen);
	memset(out, 0, sizeof(out));
	Check(rlen > 0 && EnvelopeLz4Decompress((unsigned char *) again, (size_t) rlen + ENVELOPE_RAWLEN_PREFIX,
											out, rawlen) == ENVELOPE_OK && memcmp(out, plain, len) == 0,
		  "lz4: a block from LZ4HC level 2 (values sealed by 1.0) opens");
	Check(EnvelopeLz4Compress(lz4_state, plain, 100, lz) == 0, "lz4: shorter than 128 bytes is not compressed");
}

static void
ZstdPayloads(void)
{
	static char plain[23000];
	static char lz[32000], zs[32000], out[32000];
	static unsigned char bad[32000];
	static unsigned char lz4_state[1 << 17] __attribute__((aligned(16)));
	ZSTD_CCtx  *cctx = EnvelopeZstdNewCompressor();
	ZSTD_DCtx  *dctx = EnvelopeZstdNewDecompressor();
	size_t		len = sizeof(plain), zlen, llen, pos = 0;
	uint32_t	rawlen = 0;
	unsigned char hdrbuf[64];
	EnvelopeHeader hdr;

	Check(cctx != NULL && dctx != NULL, "zstd: contexts made");
	if (cctx == NULL || dctx == NULL)
		return;
	/* JSON-like records with hex digests, as the benchmark's documents mix them */
	for (int i = 0; pos + 80 < len; i++)
		pos += (size_t) snprintf(plain + pos, len - pos,
								 "{\"id\": %d, \"word\": \"word%d\", \"digest\": \"%08x%08x\"}, ",
								 i, i, (unsigned) (i * 2654435761u), (unsigned) (i * 40503u));
	len = pos;
	Check(EnvelopeZstdBound(len) <= sizeof(zs) && EnvelopeLz4StateSize() <= sizeof(lz4_state),
		  "zstd: the test's buffers are large enough");
	zlen = EnvelopeZstdCompress(cctx, plain, len, zs);
	llen = EnvelopeLz4Compress(lz4_state, plain, len, lz);
	Check(zlen > 0 && llen > 0 && zlen < llen, "zstd: a compressible text compresses, smaller than LZ4");
	Check(EnvelopeRawLength((unsigned char *) zs, zlen, len, &rawlen) == ENVELOPE_OK && rawlen == len,
		  "zstd: the raw length prefix says the plaintext's length");
	Check(EnvelopeZstdDecompress(dctx, (unsigned char *) zs, zlen, out, rawlen) == ENVELOPE_OK &&
		  memcmp(out, plain, len) == 0, "zstd: decompresses to the plaintext");
	Check(EnvelopeZstdCompress(cctx, plain, 100, zs + 20000) == 0,
		  "zstd: shorter than 128 bytes is not compressed");

	/* lying raw lengths: one byte short (the frame would go on), one byte more */
	memset(out, 0x5a, sizeof(out));
	Check(EnvelopeZstdDecompress(dctx, (unsigned char *) zs, zlen, out, rawlen - 1) ==
		  ENVELOPE_COMPRESSED_CORRUPT && (unsigned char) out[rawlen - 1] == 0x5a,
		  "zstd: a raw length one short is corrupt, nothing written past it");
	Check(EnvelopeZstdDecompress(dctx, (unsigned char *) zs, zlen, out, rawlen + 1) ==
		  ENVELOPE_COMPRESSED_CORRUPT, "zstd: a raw length one more is corrupt");
	Check(EnvelopeZstdDecompress(dctx, (unsigned char *) zs, zlen, out, 0) ==
		  ENVELOPE_COMPRESSED_CORRUPT, "zstd: a raw length of 0 is corrupt");
	/* truncated, extended, corrupted frames */
	Check(EnvelopeZstdDecompress(dctx, (unsigned char *) zs, zlen - 1, out, rawlen) ==
		  ENVELOPE_COMPRESSED_CORRUPT, "zstd: a frame one byte short is corrupt");
	Check(EnvelopeZstdDecompress(dctx, (unsigned char *) zs, 3, out, rawlen) ==
		  ENVELOPE_COMPRESSED_TRUNCATED, "zstd: a payload shorter than its prefix is truncated");
	memcpy(bad, zs, zlen);
	bad[zlen] = 0;
	Check(EnvelopeZstdDecompress(dctx, bad, zlen + 1, out, rawlen) == ENVELOPE_COMPRESSED_CORRUPT,
		  "zstd: a byte after the frame is corrupt");
	memcpy(bad + zlen, zs + ENVELOPE_RAWLEN_PREFIX, zlen - ENVELOPE_RAWLEN_PREFIX);
	Check(EnvelopeZstdDecompress(dctx, bad, 2 * zlen - ENVELOPE_RAWLEN_PREFIX, out, 2 * rawlen) ==
		  ENVELOPE_COMPRESSED_CORRUPT, "zstd: two concatenated frames are corrupt");
	memcpy(bad, zs, zlen);
	bad[ENVELOPE_RAWLEN_PREFIX] ^= 1;
	Check(EnvelopeZstdDecompress(dctx, bad, zlen, out, rawlen) == ENVELOPE_COMPRESSED_CORRUPT,
		  "zstd: a wrong magic number is corrupt");
	memcpy(bad, zs, zlen);
	/* a skippable frame (magic 0x184D2A50, 4-byte size) in front of nothing */
	bad[4] = 0x50; bad[5] = 0x2a; bad[6] = 0x4d; bad[7] = 0x18;
	bad[8] = 0; bad[9] = 0; bad[10] = 0; bad[11] = 0;
	Check(EnvelopeZstdDecompress(dctx, bad, 12, out, 0) == ENVELOPE_COMPRESSED_CORRUPT,
		  "zstd: a skippable frame is corrupt");
	memcpy(bad, zs, zlen);
	for (size_t i = zlen / 2; i < zlen / 2 + 16; i++)
		bad[i] ^= 0xa5;
	memset(out, 0x5a, sizeof(out));
	{
		/*
		 * Frames carry no checksum (the GCM tag authenticates the payload), so
		 * corrupted data may still decode to rawlen bytes; it must never write
		 * past them or fail in another way.
		 */
		EnvelopeStatus st = EnvelopeZstdDecompress(dctx, bad, zlen, out, rawlen);

		Check((st == ENVELOPE_OK || st == ENVELOPE_COMPRESSED_CORRUPT) &&
			  (unsigned char) out[rawlen] == 0x5a,
			  "zstd: corrupted data writes nothing past the raw length");
	}
	Check(EnvelopeZstdDecompress(dctx, (unsigned char *) zs, zlen, out, rawlen) == ENVELOPE_OK &&
		  memcmp(out, plain, len) == 0, "zstd: the context still works after failures");
	Check(EnvelopeLz4Decompress((unsigned char *) zs, zlen, out, rawlen) == ENVELOPE_COMPRESSED_CORRUPT,
		  "zstd data read as LZ4 does not decompress");

	/* the header's flag combinations */
	memset(hdrbuf, 0, sizeof(hdrbuf));
	EnvelopeWriteHeader(hdrbuf, ENVELOPE_FORMAT_XAES, ATREST_KIND_TEXT, ENVELOPE_FLAG_ZSTD, 1, 1);
	Check(EnvelopeParseHeader(ATREST_KIND_TEXT, hdrbuf, 48, &hdr) == ENVELOPE_OK &&
		  hdr.flags == ENVELOPE_FLAG_ZSTD, "zstd flag: format 2 admits it");
	EnvelopeWriteHeader(hdrbuf, ENVELOPE_FORMAT_XAES, ATREST_KIND_TEXT, ENVELOPE_FLAG_COMPRESSED, 1, 1);
	Check(EnvelopeParseHeader(ATREST_KIND_TEXT, hdrbuf, 48, &hdr) == ENVELOPE_BAD_FLAGS,
		  "zstd and LZ4 flags together are refused");
	EnvelopeWriteHeader(hdrbuf, ENVELOPE_FORMAT_GCM, ATREST_KIND_TEXT, ENVELOPE_FLAG_ZSTD, 1, 1);
	Check(EnvelopeParseHeader(ATREST_KIND_TEXT, hdrbuf, 48, &hdr) == ENVELOPE_BAD_FLAGS,
		  "zstd flag in format 1 (1.0 never wrote it) is refused");
	EnvelopeWriteHeader(hdrbuf, ENVELOPE_FORMAT_GCM, ATREST_KIND_TEXT, ENVELOPE_FLAG_LZ4, 1, 1);
	Check(EnvelopeParseHeader(ATREST_KIND_TEXT, hdrbuf, 48, &hdr) == ENVELOPE_OK,
		  "LZ4 flag in format 1 (1.0's compressed values) is admitted");
	ZSTD_freeCCtx(cctx);
	ZSTD_freeDCtx(dctx);
}

int
main(void)
{
	enc_ctx = EnvelopeNewContext(true);
	dec_ctx = EnvelopeNewContext(false);
	kdf_ctx = EnvelopeNewKdfContext();
	if (enc_ctx == NULL || dec_ctx == NULL || kdf_ctx == NULL)
	{
		fprintf(stderr, "could not set up the cipher contexts\n");
		return 2;
	}
	SpecVectors();
	Accumulated(10000, "e6b9edf2df6cec60c8cbd864e2211b597fb69a529160cd040d56c0c210081939");
	LegacyValue();
	CurrentFormat();
	Lz4Payloads();
	ZstdPayloads();
	printf("1..%d\n", checks);
	return failures == 0 ? 0 : 1;
}
