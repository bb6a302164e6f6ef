/*
 * envelope.c
 *		Sealing values with XAES-256-GCM (opening those of 1.0, AES-256-GCM,
 *		too).  Key wrapping is in keywrap.c.
 *
 * The hot path (EnvelopeSeal, EnvelopeOpen) takes an unwrapped data key from
 * the key cache and runs it through contexts that the backend makes once and
 * reuses: one AES-256-GCM context per direction and one AES-256 block context
 * for XAES-256-GCM's per-value key derivation.  Per value they get the data
 * key or the subkey derived from it, and afterwards an all-zero key, so there
 * is no key unwrap, no catalog lookup and no context allocation per value,
 * and no key's schedule stays in OpenSSL's heap, which is neither locked nor
 * kept out of core dumps; the derived subkey lives on envelope_core.c's
 * stack for one call and is wiped.  Payloads are compressed before
 * encryption when that saves space, with the key class's compressor (its
 * "compression": lz4, zstd or none, read from the key cache), since TOAST
 * cannot compress ciphertext.  Failures to open report SQLSTATE XX001 naming the type and
 * never print bytes.
 *
 * The format itself (header parsing, the AEAD steps, bounded LZ4 and zstd
 * decompression) is in envelope_core.c, which has no PostgreSQL dependency
 * so that test/fuzz can run it without a server; this file owns memory,
 * detoasting, the key cache and error reporting.
 */
#include "postgres.h"

#include <lz4.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "miscadmin.h"
#include "utils/memutils.h"
#if PG_VERSION_NUM >= 160000
#include "varatt.h"			/* VARDATA and friends moved out of postgres.h */
#endif

#include "keyring.h"
#include "envelope.h"
#include "pg_atrest.h"
#include "secure_mem.h"

/*
 * Scratch state of the LZ4 compressor and zstd's contexts, each made on first
 * use and kept for the backend's life (zstd's with malloc, by libzstd).
 */
static void *lz4_state = NULL;
static ZSTD_CCtx *zstd_cctx = NULL;
static ZSTD_DCtx *zstd_dctx = NULL;

/* A key class's compression as atrest.key_classes names it, by envelope flag. */
const char *
EnvelopeCompressionName(uint8 compression)
{
	switch (compression)
	{
		case ENVELOPE_FLAG_LZ4:
			return "lz4";
		case ENVELOPE_FLAG_ZSTD:
			return "zstd";
		case 0:
			return "none";
	}
	return "unknown";
}

/*
 * The envelope flag (0 for none) of a compression named as in
 * atrest.key_classes.compression; 22023 for any other name.
 */
uint8
EnvelopeCompressionByName(const char *name)
{
	int			flag = EnvelopeCompressionFlag(name);

	if (flag >= 0)
		return (uint8) flag;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unknown compression \"%s\"", name),
			 errhint("A key class's compression is lz4, zstd or none.")));
	return 0;					/* keep the compiler quiet */
}

const char *
AtrestKindTypeName(AtrestKind kind)
{
	switch (kind)
	{
		case ATREST_KIND_JSONB:
			return "encrypted_jsonb";
		case ATREST_KIND_BYTEA:
			return "encrypted_bytea";
		case ATREST_KIND_TEXT:
			return "encrypted_text";
	}
	return "encrypted value";
}

/*
 * Report a status of envelope_core.c other than ENVELOPE_OK (the caller
 * checks, so the hot path pays one comparison).  "what" names
 * the operation for OpenSSL failures.  The wording is part of the interface:
 * values that do not open raise XX001 naming the type, never bytes.
 */
pg_noreturn static void
EnvelopeFail(AtrestKind kind, EnvelopeStatus st, const char *what)
{
	const char *detail = NULL;

	switch (st)
	{
		case ENVELOPE_OK:
			break;
		case ENVELOPE_TRUNCATED:
			detail = "The value is truncated.";
			break;
		case ENVELOPE_BAD_FORMAT:
			detail = "The value has an unknown format version.";
			break;
		case ENVELOPE_WRONG_KIND:
			detail = "The value was sealed for another type.";
			break;
		case ENVELOPE_BAD_FLAGS:
			detail = "The value has unknown flags.";
			break;
		case ENVELOPE_TAG_MISMATCH:
			detail = "Its authentication tag does not match: the value was altered or sealed under another key.";
			break;
		case ENVELOPE_COMPRESSED_TRUNCATED:
			detail = "Its compressed payload is truncated.";
			break;
		case ENVELOPE_COMPRESSED_BAD_LENGTH:
			detail = "Its compressed payload has an impossible length.";
			break;
		case ENVELOPE_COMPRESSED_CORRUPT:
			detail = "Its compressed payload does not decompress.";
			break;
		case ENVELOPE_TOO_LARGE:
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("%s value is too large", AtrestKindTypeName(kind))));
			break;
		case ENVELOPE_CRYPTO_FAILED:
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("AES-256-GCM %s failed", what)));
			break;
	}
	if (detail == NULL)
		elog(ERROR, "pg_atrest: unknown envelope status %d", (int) st);
	ereport(ERROR,
			(errcode(ERRCODE_DATA_CORRUPTED),
			 errmsg("%s value is corrupted", AtrestKindTypeName(kind)),
			 errdetail("%s", detail)));
}

static void
CryptoFailure(const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_INTERNAL_ERROR),
			 errmsg("AES-256-GCM %s failed", what)));
}

/* Parse and check the header of a (detoasted) sealed value. */
static inline void
ParseHeader(AtrestKind kind, const unsigned char *p, Size len, EnvelopeHeader *hdr)
{
	EnvelopeStatus st = EnvelopeParseHeader(kind, p, len, hdr);

	if (unlikely(st != ENVELOPE_OK))
		EnvelopeFail(kind, st, "decryption");
}

/* Read only the header: fetches just the first bytes of a TOASTed value. */
void
EnvelopeReadHeader(AtrestKind kind, struct varlena *sealed, EnvelopeHeader *hdr)
{
	struct varlena *v = pg_detoast_datum_slice(sealed, 0, ENVELOPE_MAX_OVERHEAD);

	ParseHeader(kind, (unsigned char *) VARDATA_ANY(v), VARSIZE_ANY_EXHDR(v), hdr);
}

/*
 * The backend's two AES-256-GCM contexts, made once and reused for every
 * value; a key is set into one only for the length of one operation
 * (envelope_core.c), so OpenSSL's heap holds no key between operations.
 */
static EVP_CIPHER_CTX *
CipherContext(bool encrypting)
{
	static EVP_CIPHER_CTX *enc_ctx = NULL;
	static EVP_CIPHER_CTX *dec_ctx = NULL;
	EVP_CIPHER_CTX **ctx = encrypting ? &enc_ctx : &dec_ctx;

	if (unlikely(*ctx == NULL))
	{
		*ctx = EnvelopeNewContext(encrypting);
		if (*ctx == NULL)
			CryptoFailure("context set-up");
	}
	return *ctx;
}

/* The backend's AES-256 block context for XAES-256-GCM key derivation, likewise. */
static EVP_CIPHER_CTX *
KdfContext(void)
{
	static EVP_CIPHER_CTX *kdf_ctx = NULL;

	if (unlikely(kdf_ctx == NULL))
	{
		kdf_ctx = EnvelopeNewKdfContext();
		if (kdf_ctx == NULL)
			CryptoFailure("context set-up");
	}
	return kdf_ctx;
}

static DataKey *
FindKeyOrFail(AtrestKind kind, const EnvelopeHeader *hdr)
{
	DataKey    *dk = KeyringFindDataKey(hdr->class_id, hdr->key_version);

	if (dk == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("%s value is corrupted", AtrestKindTypeName(kind)),
				 errdetail("It names data key version %u of key class %d, which does not exist.",
						   hdr->key_version, hdr->class_id)));
	return dk;
}

/*
 * Nonces come from OpenSSL's CSPRNG a page at a time: one RAND_bytes() call
 * per value cost 2% of a bulk insert (the DRBG's locking and parameter
 * lookups), one per 42 values costs nothing measurable.  The bytes are as
 * random as RAND_bytes() makes them; they become public anyway (every value
 * stores its nonce) and are no key.  A process that did not fill the buffer
 * never takes from it (MyProcPid is set anew in every forked child), so two
 * processes cannot share nonces.
 */
#define NONCE_POOL_SIZE		1024

static unsigned char nonce_pool[NONCE_POOL_SIZE];
static Size nonce_pool_used = NONCE_POOL_SIZE;
static int	nonce_pool_pid = 0;

static void
NonceBytes(unsigned char *dst, Size n)
{
	Assert(n <= NONCE_POOL_SIZE);
	if (nonce_pool_pid != MyProcPid || NONCE_POOL_SIZE - nonce_pool_used < n)
	{
		nonce_pool_pid = 0;
		if (RAND_bytes(nonce_pool, NONCE_POOL_SIZE) != 1)
			CryptoFailure("nonce generation");
		nonce_pool_pid = MyProcPid;
		nonce_pool_used = 0;
	}
	memcpy(dst, nonce_pool + nonce_pool_used, n);
	/* what was handed out is not handed out again, nor kept */
	explicit_bzero(nonce_pool + nonce_pool_used, n);
	nonce_pool_used += n;
}

/*
 * Encrypt "len" payload bytes into a new sealed varlena under "dk", in the
 * current format with a fresh random nonce.
 */
static bytea *
SealPayload(AtrestKind kind, DataKey *dk, uint8 flags, const char *payload, Size len)
{
	Size		total = VARHDRSZ + EnvelopeOverhead(ENVELOPE_FORMAT) + len;
	bytea	   *out;
	unsigned char *p;
	EnvelopeStatus st;

	if (total > MaxAllocSize)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("%s value is too large", AtrestKindTypeName(kind))));

	out = (bytea *) palloc(total);
	SET_VARSIZE(out, total);
	p = (unsigned char *) VARDATA(out);
	EnvelopeWriteHeader(p, ENVELOPE_FORMAT, kind, flags, dk->class_id, dk->version);
	NonceBytes(p + ENVELOPE_HEADER_LEN, EnvelopeNonceLen(ENVELOPE_FORMAT));
	st = EnvelopeEncrypt(CipherContext(true), KdfContext(), dk->key, p,
						 (const unsigned char *) payload, len);
	if (unlikely(st != ENVELOPE_OK))
		EnvelopeFail(kind, st, "encryption");
	return out;
}

/*
 * Decrypt a sealed value's payload into palloc'd memory, leaving "reserve"
 * bytes free in front of it (so the caller can build a varlena in place).
 * Returns the buffer; *len is the payload length.
 */
static char *
OpenPayload(AtrestKind kind, const unsigned char *p, Size sealed_len,
			const EnvelopeHeader *hdr, Size reserve, Size *len)
{
	DataKey    *dk = FindKeyOrFail(kind, hdr);
	Size		ctlen = sealed_len - EnvelopeOverhead(hdr->format);
	char	   *buf = palloc(reserve + ctlen + 1);
	EnvelopeStatus st;

	st = EnvelopeDecrypt(CipherContext(false), KdfContext(), dk->key, p, sealed_len,
						 (unsigned char *) buf + reserve);
	if (unlikely(st != ENVELOPE_OK))
	{
		pfree(buf);
		EnvelopeFail(kind, st, "decryption");
	}
	*len = ctlen;
	return buf;
}

/*
 * Seal "len" plain bytes under "dk", compressed first with "compression" (an
 * envelope flag; 0: never) when that pays.
 */
static bytea *
SealPlain(AtrestKind kind, DataKey *dk, uint8 compression, const char *plain, Size len)
{
	char	   *cbuf;
	Size		clen = 0;

	if (compression == 0 || len < ENVELOPE_COMPRESS_MIN || len > (Size) LZ4_MAX_INPUT_SIZE)
		return SealPayload(kind, dk, 0, plain, len);

	if (compression == ENVELOPE_FLAG_ZSTD)
	{
		if (zstd_cctx == NULL)
		{
			zstd_cctx = EnvelopeZstdNewCompressor();
			if (zstd_cctx == NULL)
				ereport(ERROR,
						(errcode(ERRCODE_OUT_OF_MEMORY),
						 errmsg("out of memory"),
						 errdetail("Could not make a zstd compression context.")));
		}
		cbuf = palloc(EnvelopeZstdBound(len));
		clen = EnvelopeZstdCompress(zstd_cctx, plain, len, cbuf);
	}
	else
	{
		/* the compressor's scratch state lives as long as the backend */
		if (lz4_state == NULL)
			lz4_state = MemoryContextAlloc(TopMemoryContext, EnvelopeLz4StateSize());
		cbuf = palloc(EnvelopeLz4Bound(len));
		clen = EnvelopeLz4Compress(lz4_state, plain, len, cbuf);
	}

	if (clen > 0)
	{
		bytea	   *out = SealPayload(kind, dk, compression, cbuf, clen);

		pfree(cbuf);
		return out;
	}
	pfree(cbuf);
	return SealPayload(kind, dk, 0, plain, len);
}

/*
 * Seal a plain value's bytes under the active data key of "class_id",
 * compressed first with the class's compressor when that pays.  Returns the
 * varlena to store.
 */
bytea *
EnvelopeSeal(AtrestKind kind, int32 class_id, const char *plain, Size len)
{
	uint8		compression;
	DataKey    *dk = KeyringSealingKey(class_id, &compression);

	return SealPlain(kind, dk, compression, plain, len);
}

/*
 * Decompress a decrypted compressed payload of "len" bytes into a new
 * palloc'd varlena.
 */
static struct varlena *
DecompressPayload(AtrestKind kind, uint8 flags, const char *buf, Size len)
{
	uint32_t	rawlen = 0;
	struct varlena *out;
	EnvelopeStatus st;

	st = EnvelopeRawLength((const unsigned char *) buf, len, MaxAllocSize - VARHDRSZ, &rawlen);
	if (st != ENVELOPE_OK)
		EnvelopeFail(kind, st, "decryption");
	out = (struct varlena *) palloc(VARHDRSZ + rawlen);
	if ((flags & ENVELOPE_FLAG_ZSTD) != 0)
	{
		if (zstd_dctx == NULL)
		{
			zstd_dctx = EnvelopeZstdNewDecompressor();
			if (zstd_dctx == NULL)
				ereport(ERROR,
						(errcode(ERRCODE_OUT_OF_MEMORY),
						 errmsg("out of memory"),
						 errdetail("Could not make a zstd decompression context.")));
		}
		st = EnvelopeZstdDecompress(zstd_dctx, (const unsigned char *) buf, len,
									VARDATA(out), rawlen);
	}
	else
		st = EnvelopeLz4Decompress((const unsigned char *) buf, len, VARDATA(out), rawlen);
	if (st != ENVELOPE_OK)
		EnvelopeFail(kind, st, "decryption");
	SET_VARSIZE(out, VARHDRSZ + rawlen);
	return out;
}

/*
 * Decrypt a sealed value in place, in a buffer that the caller owns (a
 * detoasted copy).  Returns where the payload now starts; *len is its length.
 */
static char *
OpenInPlace(AtrestKind kind, unsigned char *p, Size sealed_len,
			const EnvelopeHeader *hdr, Size *len)
{
	DataKey    *dk = FindKeyOrFail(kind, hdr);
	unsigned char *ct = p + ENVELOPE_HEADER_LEN + EnvelopeNonceLen(hdr->format);
	EnvelopeStatus st;

	/* GCM decrypts in place; the tag after the ciphertext is not written */
	st = EnvelopeDecrypt(CipherContext(false), KdfContext(), dk->key, p, sealed_len, ct);
	if (unlikely(st != ENVELOPE_OK))
		EnvelopeFail(kind, st, "decryption");
	*len = sealed_len - EnvelopeOverhead(hdr->format);
	return (char *) ct;
}

/*
 * Open a sealed value: returns the plain type's varlena (jsonb, bytea or
 * text), in palloc'd memory.
 *
 * A value that came out of TOAST is a fresh palloc'd copy that nothing else
 * sees: it is decrypted in place and freed once the plain value is built, so
 * that opening a large value allocates what reading a plain one does (the
 * result) and not two more buffers of its size.  Memory per row is what
 * decides whether a scan makes malloc hand memory back to the kernel and
 * fault it in again on every row (test/bench, docs/performance.md).  An
 * inline value points into a shared buffer and is never written: it is
 * decrypted into a buffer of its own.
 */
struct varlena *
EnvelopeOpen(AtrestKind kind, struct varlena *sealed)
{
	struct varlena *v = pg_detoast_datum_packed(sealed);
	unsigned char *p = (unsigned char *) VARDATA_ANY(v);
	Size		sealed_len = VARSIZE_ANY_EXHDR(v);
	bool		own_copy = (v != sealed);
	EnvelopeHeader hdr;
	char	   *buf;
	Size		len;

	ParseHeader(kind, p, sealed_len, &hdr);

	if (!own_copy && (hdr.flags & ENVELOPE_FLAG_COMPRESSED) == 0)
	{
		/* inline, not compressed: decrypt straight into the result */
		buf = OpenPayload(kind, p, sealed_len, &hdr, VARHDRSZ, &len);
		SET_VARSIZE(buf, VARHDRSZ + len);
		return (struct varlena *) buf;
	}

	if (own_copy)
		buf = OpenInPlace(kind, p, sealed_len, &hdr, &len);
	else
		buf = OpenPayload(kind, p, sealed_len, &hdr, 0, &len);

	if ((hdr.flags & ENVELOPE_FLAG_COMPRESSED) == 0)
	{
		/* our copy, not compressed: move the plaintext down behind a 4-byte header */
		memmove(VARDATA(v), buf, len);
		SET_VARSIZE(v, VARHDRSZ + len);
		return v;
	}
	else
	{
		struct varlena *out = DecompressPayload(kind, hdr.flags, buf, len);

		pfree(own_copy ? (void *) v : (void *) buf);
		return out;
	}
}

/*
 * Whether a value with header "hdr" must be sealed again to be as a new value
 * of "class_id" would be: under the class's active data key "active_version",
 * in the current format, and not compressed with another compressor than the
 * class's "compression" (none included).  A plain value in a compressing
 * class stays plain: it was either not worth compressing or sealed before
 * the class compressed, and telling which would take decrypting it.
 */
static bool
ResealNeeded(const EnvelopeHeader *hdr, int32 class_id, uint32 active_version,
			 uint8 compression)
{
	uint8		compressed = hdr->flags & ENVELOPE_FLAG_COMPRESSED;

	return hdr->class_id != class_id || hdr->key_version != active_version ||
		hdr->format != ENVELOPE_FORMAT ||
		(compressed != 0 && compressed != compression);
}

/* ResealNeeded for a stored value, reading only its header. */
bool
EnvelopeNeedsReseal(AtrestKind kind, struct varlena *sealed, int32 class_id)
{
	EnvelopeHeader hdr;
	uint8		compression;
	uint32		active_version;

	EnvelopeReadHeader(kind, sealed, &hdr);
	active_version = KeyringSealingKey(class_id, &compression)->version;
	return ResealNeeded(&hdr, class_id, active_version, compression);
}

/*
 * Move a sealed value to the active data key of "class_id", in the current
 * format, unless it is there already (see ResealNeeded).  The payload stays
 * as it was, so only the AEAD is redone, except when it is compressed with
 * another compressor than the class's: then it is decompressed and sealed as
 * a new value of the class would be (recompressed with the class's
 * compressor, or plain), so that a value sealed under another class (a
 * literal is sealed under "default" before it is cast to its column's class)
 * never keeps a compressed size in a class that does not want one, and
 * atrest.reencrypt() moves a class's values to its compressor after
 * atrest.alter_key_class().  *changed says whether a new value was made.
 */
struct varlena *
EnvelopeReseal(AtrestKind kind, struct varlena *sealed, int32 class_id, bool *changed)
{
	EnvelopeHeader hdr;
	DataKey    *active;
	uint8		compression;
	uint8		compressed;
	struct varlena *v;
	char	   *payload;
	Size		len;
	bytea	   *out;

	EnvelopeReadHeader(kind, sealed, &hdr);
	active = KeyringSealingKey(class_id, &compression);
	if (!ResealNeeded(&hdr, class_id, active->version, compression))
	{
		*changed = false;
		return sealed;
	}

	v = pg_detoast_datum_packed(sealed);
	payload = OpenPayload(kind, (unsigned char *) VARDATA_ANY(v), VARSIZE_ANY_EXHDR(v),
						  &hdr, 0, &len);
	/* opening may have reloaded the key cache: look the active key up again */
	active = KeyringSealingKey(class_id, &compression);
	compressed = hdr.flags & ENVELOPE_FLAG_COMPRESSED;
	if (compressed != 0 && compressed != compression)
	{
		struct varlena *raw = DecompressPayload(kind, hdr.flags, payload, len);

		pfree(payload);
		out = SealPlain(kind, active, compression, VARDATA(raw), VARSIZE(raw) - VARHDRSZ);
		pfree(raw);
	}
	else
	{
		out = SealPayload(kind, active, hdr.flags, payload, len);
		pfree(payload);
	}
	*changed = true;
	return (struct varlena *) out;
}
