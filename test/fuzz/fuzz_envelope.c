/*
 * fuzz_envelope.c
 *		libFuzzer harness over the sealed-value parser and decryption
 *		(src/envelope_core.c), the code every read of an encrypted column runs.
 *
 * The first input byte picks a mode, the second a value kind:
 *
 *	 0  open: the rest is a stored value, opened the way EnvelopeOpen does
 *		(header, XAES-256-GCM or, for format 1, AES-256-GCM under a fixed
 *		test key, then the raw length prefix and LZ4 or zstd decompression).
 *		Covers truncations, bogus headers, bit flips and forged tags.
 *	 1  past the tag: the next byte is the flags nibble (bit 4 set: seal in
 *		format 1), the rest a payload sealed here under the test key and
 *		then opened, so the fuzzer reaches what only an authentic value
 *		reaches: bogus LZ4 or zstd data and huge or lying raw lengths.
 *	 2  round trip and tamper: the rest is a plaintext; it is sealed the way
 *		EnvelopeSeal does (compressed when that pays, with zstd when the first
 *		byte's bit 6 is set and LZ4 otherwise; in format 1, which only knows
 *		LZ4, when its top bit is set), must open to the same bytes, and must
 *		stop opening after any one bit flip or truncation chosen by the next
 *		input bytes.  A violation aborts.
 *	 3  header only: EnvelopeParseHeader for all three kinds.
 *
 * Every buffer handed to envelope_core.c ends exactly at an inaccessible
 * guard page, so even a write or read one byte past the end inside OpenSSL
 * liblz4 or libzstd (which are not built with AddressSanitizer) crashes at
 * once.
 * Set FUZZ_WRITE_SEEDS=DIR to write the seed inputs to DIR and exit.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "envelope_core.h"
#include "fuzz_guard.h"

/*
 * The server's limit on a raw length is MaxAllocSize - VARHDRSZ (about
 * 1 GiB); the harness uses a smaller one so that a lying prefix cannot make
 * it allocate more than the fuzzer's RSS limit.  The comparison is the same
 * code; the start-up self-test checks the server's limit exactly.
 */
#define FUZZ_MAX_RAW		(16u * 1024 * 1024)
#define SERVER_MAX_RAW		(0x3fffffffu - 4u)

static const unsigned char test_key[32] = {
	0x70, 0x67, 0x5f, 0x61, 0x74, 0x72, 0x65, 0x73, 0x74, 0x2d, 0x66, 0x75, 0x7a, 0x7a, 0x2d, 0x6b,
	0x65, 0x79, 0x2d, 0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x61, 0x62, 0x63
};
static EVP_CIPHER_CTX *enc_ctx;
static EVP_CIPHER_CTX *dec_ctx;
static EVP_CIPHER_CTX *kdf_ctx;
static void *lz4_state;			/* EnvelopeLz4Compress's scratch state */
static ZSTD_CCtx *zstd_cctx;	/* made once and reused, as the backend does */
static ZSTD_DCtx *zstd_dctx;

static void
Fail(const char *what)
{
	fprintf(stderr, "fuzz_envelope: invariant violated: %s\n", what);
	abort();
}

/* ---------------------------------------------------------------------
 * What envelope.c does around envelope_core.c, with guarded buffers in
 * place of palloc.
 * --------------------------------------------------------------------- */

/*
 * Open a stored value; on success *out (guarded, caller frees) holds the
 * plaintext of *outlen bytes.
 */
static EnvelopeStatus
OpenValue(AtrestKind kind, const unsigned char *p, size_t len,
		  Guarded *out, size_t *outlen)
{
	EnvelopeHeader hdr;
	EnvelopeStatus st;
	Guarded		pay;
	size_t		ctlen;
	uint32_t	rawlen = 0;

	memset(out, 0, sizeof(*out));
	st = EnvelopeParseHeader(kind, p, len, &hdr);
	if (st != ENVELOPE_OK)
		return st;
	if (hdr.kind != kind || (hdr.flags & ~ENVELOPE_FLAG_COMPRESSED) != 0 ||
		hdr.flags == ENVELOPE_FLAG_COMPRESSED ||
		(hdr.flags == ENVELOPE_FLAG_ZSTD && hdr.format != ENVELOPE_FORMAT_XAES) ||
		EnvelopeNonceLen(hdr.format) == 0 || len < EnvelopeOverhead(hdr.format))
		Fail("EnvelopeParseHeader accepted a bad header");

	ctlen = len - EnvelopeOverhead(hdr.format);
	GuardedAlloc(&pay, ctlen);
	st = EnvelopeDecrypt(dec_ctx, kdf_ctx, test_key, p, len, pay.p);
	if (st != ENVELOPE_OK || (hdr.flags & ENVELOPE_FLAG_COMPRESSED) == 0)
	{
		if (st == ENVELOPE_OK)
		{
			*out = pay;
			*outlen = ctlen;
		}
		else
			GuardedFree(&pay);
		return st;
	}

	st = EnvelopeRawLength(pay.p, ctlen, FUZZ_MAX_RAW, &rawlen);
	if (st == ENVELOPE_OK)
	{
		if (rawlen > FUZZ_MAX_RAW)
			Fail("EnvelopeRawLength let a length past the limit through");
		GuardedAlloc(out, rawlen);
		if (hdr.flags == ENVELOPE_FLAG_ZSTD)
			st = EnvelopeZstdDecompress(zstd_dctx, pay.p, ctlen, (char *) out->p, rawlen);
		else
			st = EnvelopeLz4Decompress(pay.p, ctlen, (char *) out->p, rawlen);
		if (st == ENVELOPE_OK)
			*outlen = rawlen;
		else
		{
			GuardedFree(out);
			memset(out, 0, sizeof(*out));
		}
	}
	GuardedFree(&pay);
	return st;
}

/* Seal "len" payload bytes with a header of our choosing (format and flags as given). */
static void
SealRaw(AtrestKind kind, uint8_t format, uint8_t flags, int32_t class_id, uint32_t version,
		const unsigned char *payload, size_t len, Guarded *sealed)
{
	GuardedAlloc(sealed, EnvelopeOverhead(format) + len);
	EnvelopeWriteHeader(sealed->p, format, kind, flags, class_id, version);
	/* a fixed nonce: the harness is deterministic; the server uses RAND_bytes */
	memset(sealed->p + ENVELOPE_HEADER_LEN, 0x5a, EnvelopeNonceLen(format));
	if (EnvelopeEncrypt(enc_ctx, kdf_ctx, test_key, sealed->p, payload, len) != ENVELOPE_OK)
		Fail("EnvelopeEncrypt failed");
}

static size_t
Lz4Compress(const char *plain, size_t len, char *out)
{
	return EnvelopeLz4Compress(lz4_state, plain, len, out);
}

static size_t
ZstdCompress(const char *plain, size_t len, char *out)
{
	return EnvelopeZstdCompress(zstd_cctx, plain, len, out);
}

/* The compressors a payload can name, each with its scratch state (above). */
typedef struct Compressor
{
	uint8_t		flag;			/* ENVELOPE_FLAG_LZ4 or _ZSTD */
	const char *name;			/* as in the seeds' names */
	size_t		(*bound) (size_t len);	/* room "compress" needs in "out" */
	size_t		(*compress) (const char *plain, size_t len, char *out);
} Compressor;

static const Compressor compressors[] = {
	{ENVELOPE_FLAG_LZ4, "lz4", EnvelopeLz4Bound, Lz4Compress},
	{ENVELOPE_FLAG_ZSTD, "zstd", EnvelopeZstdBound, ZstdCompress},
};
#define NCOMPRESSORS (sizeof(compressors) / sizeof(compressors[0]))

static const Compressor *
CompressorOf(uint8_t flag)
{
	for (size_t i = 0; i < NCOMPRESSORS; i++)
		if (compressors[i].flag == flag)
			return &compressors[i];
	Fail("no compressor for that flag");
	return NULL;
}

/*
 * Seal a plaintext the way EnvelopeSeal does: compressed with "compression"
 * (ENVELOPE_FLAG_LZ4 or _ZSTD) when that pays; in "format" (the server
 * writes only ENVELOPE_FORMAT; format 1 values are 1.0's).
 */
static void
SealValue(AtrestKind kind, uint8_t format, uint8_t compression, const unsigned char *plain,
		  size_t len, Guarded *sealed)
{
	if (len >= ENVELOPE_COMPRESS_MIN)
	{
		const Compressor *cmp = CompressorOf(compression);
		Guarded		c;
		size_t		clen;

		GuardedAlloc(&c, cmp->bound(len));
		clen = cmp->compress((const char *) plain, len, (char *) c.p);
		if (clen > 0)
		{
			if (clen >= len - len / 8)
				Fail("compressed a payload that does not save an eighth");
			SealRaw(kind, format, compression, 7, 3, c.p, clen, sealed);
			GuardedFree(&c);
			return;
		}
		GuardedFree(&c);
	}
	SealRaw(kind, format, 0, 7, 3, plain, len, sealed);
}

static AtrestKind
KindOf(uint8_t b)
{
	return (AtrestKind) (b % 3 + 1);
}

/* ---------------------------------------------------------------------
 * Modes
 * --------------------------------------------------------------------- */

static void
ModeOpen(AtrestKind kind, const unsigned char *p, size_t len)
{
	Guarded		out;
	size_t		outlen = 0;

	if (OpenValue(kind, p, len, &out, &outlen) == ENVELOPE_OK)
		GuardedFree(&out);
}

static void
ModePastTag(AtrestKind kind, const unsigned char *p, size_t len)
{
	Guarded		sealed,
				out;
	size_t		outlen = 0;
	EnvelopeStatus st;
	uint8_t		flags;
	uint8_t		format;

	if (len < 1)
		return;
	flags = p[0] & 0x0f;
	format = (p[0] & 0x10) ? ENVELOPE_FORMAT_GCM : ENVELOPE_FORMAT_XAES;
	SealRaw(kind, format, flags, 1, 1, p + 1, len - 1, &sealed);
	st = OpenValue(kind, sealed.p, EnvelopeOverhead(format) + len - 1, &out, &outlen);
	if (st == ENVELOPE_TAG_MISMATCH)
		Fail("a value sealed under the test key did not authenticate");
	if (st == ENVELOPE_OK && flags == 0 &&
		(outlen != len - 1 || memcmp(out.p, p + 1, outlen) != 0))
		Fail("an uncompressed payload did not come back as sealed");
	if (st == ENVELOPE_OK)
		GuardedFree(&out);
	GuardedFree(&sealed);
}

static void
ModeRoundTrip(AtrestKind kind, const unsigned char *p, size_t len)
{
	Guarded		sealed,
				out;
	size_t		outlen = 0,
				slen;
	size_t		pos;
	uint8_t		mask;
	uint8_t		format;
	uint8_t		compression;

	if (len < 3)
		return;
	format = (p[0] & 0x80) ? ENVELOPE_FORMAT_GCM : ENVELOPE_FORMAT_XAES;
	compression = (p[0] & 0x40) && format == ENVELOPE_FORMAT_XAES ?
		ENVELOPE_FLAG_ZSTD : ENVELOPE_FLAG_LZ4;
	pos = ((size_t) (p[0] & 0x3f) << 8) | p[1];
	mask = p[2] ? p[2] : 1;
	p += 3;
	len -= 3;

	SealValue(kind, format, compression, p, len, &sealed);
	slen = sealed.maplen - PAGE - (size_t) (sealed.p - sealed.base);
	if (OpenValue(kind, sealed.p, slen, &out, &outlen) != ENVELOPE_OK)
		Fail("a freshly sealed value did not open");
	if (outlen != len || memcmp(out.p, p, len) != 0)
		Fail("a round trip changed the plaintext");
	GuardedFree(&out);

	/* one flipped bit anywhere must stop the value from opening */
	pos %= slen;
	sealed.p[pos] ^= mask;
	if (OpenValue(kind, sealed.p, slen, &out, &outlen) == ENVELOPE_OK)
		Fail("a value with a flipped bit opened");
	sealed.p[pos] ^= mask;

	/* so must cutting it short, at any length */
	if (OpenValue(kind, sealed.p, pos, &out, &outlen) == ENVELOPE_OK)
		Fail("a truncated value opened");
	GuardedFree(&sealed);
}

static void
ModeHeader(const unsigned char *p, size_t len)
{
	for (int k = ATREST_KIND_JSONB; k <= ATREST_KIND_TEXT; k++)
	{
		EnvelopeHeader hdr;
		EnvelopeStatus st = EnvelopeParseHeader((AtrestKind) k, p, len, &hdr);

		/* flags: none, LZ4, or zstd in format 2 */
		if (st == ENVELOPE_OK && (len < 1 || EnvelopeNonceLen(p[0]) == 0 ||
								  len < EnvelopeOverhead(p[0]) ||
								  (p[1] >> 4) != k || (p[1] & 0x0c) != 0 ||
								  (p[1] & 0x03) == 0x03 ||
								  ((p[1] & 0x02) != 0 && p[0] != ENVELOPE_FORMAT_XAES)))
			Fail("EnvelopeParseHeader accepted a bad header");
		if (st == ENVELOPE_OK && (hdr.class_id != ((p[2] << 8) | p[3]) ||
								  hdr.key_version != (((uint32_t) p[4] << 24) | ((uint32_t) p[5] << 16) |
													  ((uint32_t) p[6] << 8) | p[7])))
			Fail("EnvelopeParseHeader misread the class or version");
	}
}

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int			LLVMFuzzerInitialize(int *argc, char ***argv);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	Guarded		in;
	AtrestKind	kind;
	int			mode;

	if (size < 2)
		return 0;
	mode = data[0] & 3;
	kind = KindOf(data[1]);

	/* a copy that ends at a guard page, so over-reads fault */
	GuardedAlloc(&in, size - 2);
	memcpy(in.p, data + 2, size - 2);
	switch (mode)
	{
		case 0:
			ModeOpen(kind, in.p, size - 2);
			break;
		case 1:
			ModePastTag(kind, in.p, size - 2);
			break;
		case 2:
			ModeRoundTrip(kind, in.p, size - 2);
			break;
		case 3:
			ModeHeader(in.p, size - 2);
			break;
	}
	GuardedFree(&in);
	return 0;
}

/* ---------------------------------------------------------------------
 * Start-up: keys, boundary self-test, seeds
 * --------------------------------------------------------------------- */

static void
SelfTest(void)
{
	unsigned char prefix[4];
	uint32_t	rawlen;

	/* the server's exact raw-length limit, and one past it */
	prefix[0] = (unsigned char) (SERVER_MAX_RAW >> 24);
	prefix[1] = (unsigned char) (SERVER_MAX_RAW >> 16);
	prefix[2] = (unsigned char) (SERVER_MAX_RAW >> 8);
	prefix[3] = (unsigned char) SERVER_MAX_RAW;
	if (EnvelopeRawLength(prefix, 4, SERVER_MAX_RAW, &rawlen) != ENVELOPE_OK ||
		rawlen != SERVER_MAX_RAW)
		Fail("the largest allowed raw length was refused");
	prefix[3]++;
	if (EnvelopeRawLength(prefix, 4, SERVER_MAX_RAW, &rawlen) != ENVELOPE_COMPRESSED_BAD_LENGTH)
		Fail("a raw length past the limit was accepted");
	memset(prefix, 0xff, 4);
	if (EnvelopeRawLength(prefix, 4, SIZE_MAX, &rawlen) != ENVELOPE_COMPRESSED_BAD_LENGTH)
		Fail("a raw length of 4 GiB was accepted");
	if (EnvelopeRawLength(prefix, 3, SERVER_MAX_RAW, &rawlen) != ENVELOPE_COMPRESSED_TRUNCATED)
		Fail("a 3-byte compressed payload was accepted");
}

static void
WriteSeed(const char *dir, const char *name, const unsigned char *p, size_t len)
{
	char		path[4096];
	FILE	   *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "wb");
	if (f == NULL || fwrite(p, 1, len, f) != len || fclose(f) != 0)
	{
		fprintf(stderr, "could not write %s: %s\n", path, strerror(errno));
		exit(1);
	}
}

/* Write one seed: mode byte, kind byte, then the body. */
static void
Seed(const char *dir, const char *name, int mode, AtrestKind kind,
	 const unsigned char *body, size_t len)
{
	unsigned char *buf = malloc(len + 2);

	buf[0] = (unsigned char) mode;
	buf[1] = (unsigned char) (kind - 1);
	memcpy(buf + 2, body, len);
	WriteSeed(dir, name, buf, len + 2);
	free(buf);
}

static void
WriteSeeds(const char *dir)
{
	static const char json[] = "{\"pages\": [{\"lines\": [\"ACME Corp\", \"Total 42.00\"]}], \"kind\": \"invoice\"}";
	unsigned char big[600];
	Guarded		s;
	size_t		slen;

	mkdir(dir, 0755);
	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (unsigned char) ("lorem ipsum dolor "[i % 18]);

	/* mode 0: authentic values in both formats, plain and compressed, and broken ones */
	for (int f = ENVELOPE_FORMAT_GCM; f <= ENVELOPE_FORMAT_XAES; f++)
	{
		const char *suffix = f == ENVELOPE_FORMAT_GCM ? "-format1" : "";
		char		name[64];

		SealValue(ATREST_KIND_JSONB, (uint8_t) f, ENVELOPE_FLAG_LZ4, (const unsigned char *) json,
				  sizeof(json) - 1, &s);
		slen = EnvelopeOverhead((uint8_t) f) + sizeof(json) - 1;
		snprintf(name, sizeof(name), "open-jsonb-plain%s", suffix);
		Seed(dir, name, 0, ATREST_KIND_JSONB, s.p, slen);
		snprintf(name, sizeof(name), "open-jsonb-truncated%s", suffix);
		Seed(dir, name, 0, ATREST_KIND_JSONB, s.p, slen - 9);
		s.p[0] = (unsigned char) (f == ENVELOPE_FORMAT_GCM ? ENVELOPE_FORMAT_XAES : ENVELOPE_FORMAT_GCM);
		snprintf(name, sizeof(name), "open-relabelled-format%s", suffix);
		Seed(dir, name, 0, ATREST_KIND_JSONB, s.p, slen);
		s.p[0] = 3;
		snprintf(name, sizeof(name), "open-bad-format%s", suffix);
		Seed(dir, name, 0, ATREST_KIND_JSONB, s.p, slen);
		GuardedFree(&s);

		SealValue(ATREST_KIND_TEXT, (uint8_t) f, ENVELOPE_FLAG_LZ4, big, sizeof(big), &s);
		slen = s.maplen - PAGE - (size_t) (s.p - s.base);
		snprintf(name, sizeof(name), "open-text-lz4%s", suffix);
		Seed(dir, name, 0, ATREST_KIND_TEXT, s.p, slen);
		snprintf(name, sizeof(name), "open-text-as-bytea%s", suffix);
		Seed(dir, name, 0, ATREST_KIND_BYTEA, s.p, slen);
		GuardedFree(&s);

		SealValue(ATREST_KIND_BYTEA, (uint8_t) f, ENVELOPE_FLAG_LZ4, (const unsigned char *) "", 0, &s);
		snprintf(name, sizeof(name), "open-bytea-empty%s", suffix);
		Seed(dir, name, 0, ATREST_KIND_BYTEA, s.p, EnvelopeOverhead((uint8_t) f));
		GuardedFree(&s);
	}
	/* a zstd value (format 2 only), as a class with compression 'zstd' seals it */
	SealValue(ATREST_KIND_TEXT, ENVELOPE_FORMAT_XAES, ENVELOPE_FLAG_ZSTD, big, sizeof(big), &s);
	slen = s.maplen - PAGE - (size_t) (s.p - s.base);
	if ((s.p[1] & 0x0f) != ENVELOPE_FLAG_ZSTD)
		Fail("seed value was not zstd-compressed");
	Seed(dir, "open-text-zstd", 0, ATREST_KIND_TEXT, s.p, slen);
	s.p[0] = ENVELOPE_FORMAT_GCM;
	Seed(dir, "open-text-zstd-relabelled-format1", 0, ATREST_KIND_TEXT, s.p, slen);
	GuardedFree(&s);

	/* mode 1: payloads behind an authentic tag, from each compressor */
	for (size_t i = 0; i < NCOMPRESSORS; i++)
	{
		const Compressor *cmp = &compressors[i];
		unsigned char *body = malloc(1 + cmp->bound(sizeof(big)));
		size_t		clen;
		unsigned char rawlen_low;
		char		name[64];

		if (body == NULL)
			Fail("out of memory");
		clen = cmp->compress((const char *) big, sizeof(big), (char *) body + 1);
		if (clen == 0)
			Fail("seed payload did not compress");
		body[0] = cmp->flag;
		snprintf(name, sizeof(name), "pasttag-%s-valid", cmp->name);
		Seed(dir, name, 1, ATREST_KIND_TEXT, body, 1 + clen);
		body[1] = 0x7f;			/* a raw length far beyond the data */
		snprintf(name, sizeof(name), "pasttag-%s-huge-length", cmp->name);
		Seed(dir, name, 1, ATREST_KIND_TEXT, body, 1 + clen);
		body[1] = 0;
		rawlen_low = body[4];
		body[4] = 0;			/* a raw length shorter than the data */
		snprintf(name, sizeof(name), "pasttag-%s-short-length", cmp->name);
		Seed(dir, name, 1, ATREST_KIND_TEXT, body, 1 + clen);
		if (cmp->flag == ENVELOPE_FLAG_LZ4)
		{
			Seed(dir, "pasttag-lz4-prefix-only", 1, ATREST_KIND_TEXT, body, 1 + 3);
			body[0] = 0;
			Seed(dir, "pasttag-plain", 1, ATREST_KIND_BYTEA, body, 1 + clen);
			body[0] = 0x10;		/* format 1 */
			Seed(dir, "pasttag-plain-format1", 1, ATREST_KIND_BYTEA, body, 1 + clen);
		}
		else
		{
			body[4] = rawlen_low;
			body[1 + clen / 2] ^= 0x5a; /* a damaged frame */
			Seed(dir, "pasttag-zstd-damaged", 1, ATREST_KIND_TEXT, body, 1 + clen);
			body[0] = ENVELOPE_FLAG_LZ4;	/* zstd data labelled LZ4 */
			body[1 + clen / 2] ^= 0x5a;
			Seed(dir, "pasttag-zstd-as-lz4", 1, ATREST_KIND_TEXT, body, 1 + clen);
		}
		free(body);
	}

	/* mode 2: plaintexts to seal, open and tamper with */
	{
		unsigned char body[3 + sizeof(big)];

		body[0] = 0;
		body[1] = 21;
		body[2] = 0x80;
		memcpy(body + 3, json, sizeof(json) - 1);
		Seed(dir, "roundtrip-json", 2, ATREST_KIND_JSONB, body, 3 + sizeof(json) - 1);
		memcpy(body + 3, big, sizeof(big));
		body[1] = 40;
		Seed(dir, "roundtrip-compressible", 2, ATREST_KIND_TEXT, body, 3 + sizeof(big));
		Seed(dir, "roundtrip-empty", 2, ATREST_KIND_BYTEA, body, 3);
		body[0] = 0x40;			/* zstd */
		Seed(dir, "roundtrip-compressible-zstd", 2, ATREST_KIND_TEXT, body, 3 + sizeof(big));
		body[0] = 0x80;			/* format 1 */
		Seed(dir, "roundtrip-compressible-format1", 2, ATREST_KIND_TEXT, body, 3 + sizeof(big));
	}

	/* mode 3: headers */
	{
		unsigned char hdr[ENVELOPE_MAX_OVERHEAD] = {2, 0x11, 0, 3, 0, 0, 0, 2};

		Seed(dir, "header-jsonb", 3, ATREST_KIND_JSONB, hdr, sizeof(hdr));
		Seed(dir, "header-jsonb-short", 3, ATREST_KIND_JSONB, hdr, ENVELOPE_MIN_OVERHEAD);
		hdr[0] = 1;
		Seed(dir, "header-jsonb-format1", 3, ATREST_KIND_JSONB, hdr, ENVELOPE_MIN_OVERHEAD);
		hdr[1] = 0x3f;
		Seed(dir, "header-bad-flags", 3, ATREST_KIND_JSONB, hdr, sizeof(hdr));
		hdr[0] = 2;
		hdr[1] = 0x12;
		Seed(dir, "header-zstd", 3, ATREST_KIND_JSONB, hdr, sizeof(hdr));
	}
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *seeds = getenv("FUZZ_WRITE_SEEDS");

	(void) argc;
	(void) argv;
	enc_ctx = EnvelopeNewContext(true);
	dec_ctx = EnvelopeNewContext(false);
	kdf_ctx = EnvelopeNewKdfContext();
	lz4_state = malloc(EnvelopeLz4StateSize());
	zstd_cctx = EnvelopeZstdNewCompressor();
	zstd_dctx = EnvelopeZstdNewDecompressor();
	if (lz4_state == NULL || zstd_cctx == NULL || zstd_dctx == NULL)
		Fail("out of memory");
	/* as the backend does: three contexts, a key set into them per value */
	if (enc_ctx == NULL || dec_ctx == NULL || kdf_ctx == NULL)
		Fail("could not set up AES-256-GCM");
	SelfTest();
	if (seeds != NULL && seeds[0] != '\0')
	{
		WriteSeeds(seeds);
		exit(0);
	}
	return 0;
}
