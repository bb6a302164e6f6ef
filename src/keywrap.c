/*
 * keywrap.c
 *		Key wrapping (AES-256-GCM) and the associated data of wrapped keys.
 *
 * The database key is wrapped under the service key with associated data
 * naming its id; each data key under the database key with associated data
 * naming its class, version and database key, so that a wrapped key moved
 * to another row does not unwrap.  Not a hot path: each call uses an OpenSSL
 * context of its own.  Wrapped keys are ciphertext and may live in palloc'd
 * memory; the keys they are unwrapped into are secure slots (secure_mem.c)
 * that the caller owns.
 */
#include "postgres.h"

#include <openssl/evp.h>
#include <openssl/rand.h>

#if PG_VERSION_NUM >= 160000
#include "varatt.h"			/* VARDATA and friends moved out of postgres.h */
#endif

#include "keywrap.h"

static void
WrapFailure(const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_INTERNAL_ERROR),
			 errmsg("AES-256-GCM %s failed", what)));
}

/*
 * Wrap a 32-byte key under a key-encryption key, binding "aad".  Not a hot
 * path: uses a context of its own.  The result is ciphertext (palloc'd).
 */
bytea *
WrapKey(const unsigned char *kek, const unsigned char *key,
		const unsigned char *aad, size_t aadlen)
{
	bytea	   *out = (bytea *) palloc(VARHDRSZ + WRAPPED_KEY_LEN);
	unsigned char *p = (unsigned char *) VARDATA(out);
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	int			outl;
	bool		ok;

	SET_VARSIZE(out, VARHDRSZ + WRAPPED_KEY_LEN);
	p[0] = 1;
	ok = ctx != NULL &&
		RAND_bytes(p + 1, ENVELOPE_NONCE_LEN) == 1 &&
		EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, kek, p + 1) == 1 &&
		EVP_EncryptUpdate(ctx, NULL, &outl, aad, (int) aadlen) == 1 &&
		EVP_EncryptUpdate(ctx, p + 1 + ENVELOPE_NONCE_LEN, &outl, key, ATREST_KEY_LEN) == 1 &&
		EVP_EncryptFinal_ex(ctx, p + 1 + ENVELOPE_NONCE_LEN + ATREST_KEY_LEN, &outl) == 1 &&
		EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, ENVELOPE_TAG_LEN,
							p + 1 + ENVELOPE_NONCE_LEN + ATREST_KEY_LEN) == 1;
	EVP_CIPHER_CTX_free(ctx);
	if (!ok)
		WrapFailure("key wrapping");
	return out;
}

/*
 * Unwrap into "key" (a secure slot).  Returns false, leaving "key" zeroed,
 * if the wrapped key is malformed or does not authenticate.
 */
bool
UnwrapKey(const unsigned char *kek, const bytea *wrapped,
		  const unsigned char *aad, size_t aadlen, unsigned char *key)
{
	const unsigned char *p = (const unsigned char *) VARDATA_ANY(wrapped);
	EVP_CIPHER_CTX *ctx;
	int			outl;
	bool		ok;

	if (VARSIZE_ANY_EXHDR(wrapped) != WRAPPED_KEY_LEN || p[0] != 1)
		return false;
	ctx = EVP_CIPHER_CTX_new();
	ok = ctx != NULL &&
		EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, kek, p + 1) == 1 &&
		EVP_DecryptUpdate(ctx, NULL, &outl, aad, (int) aadlen) == 1 &&
		EVP_DecryptUpdate(ctx, key, &outl, p + 1 + ENVELOPE_NONCE_LEN, ATREST_KEY_LEN) == 1 &&
		EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, ENVELOPE_TAG_LEN,
							(void *) (p + 1 + ENVELOPE_NONCE_LEN + ATREST_KEY_LEN)) == 1 &&
		EVP_DecryptFinal_ex(ctx, key + ATREST_KEY_LEN, &outl) == 1;
	EVP_CIPHER_CTX_free(ctx);
	if (!ok)
		explicit_bzero(key, ATREST_KEY_LEN);
	return ok;
}

/* The associated data of a wrapped database key: it names the key's id. */
size_t
DatabaseKeyAad(const pg_uuid_t *id, unsigned char *aad)
{
	memcpy(aad, "pg_atrest:dbk:v1", 16);
	memcpy(aad + 16, id->data, UUID_LEN);
	return 16 + UUID_LEN;
}

/*
 * The associated data of a wrapped data key: its class, version and the
 * database key it is wrapped under.
 */
size_t
DataKeyAad(const pg_uuid_t *dbk_id, int32 class_id, uint32 version, unsigned char *aad)
{
	memcpy(aad, "pg_atrest:dk:v1:", 16);
	aad[16] = (unsigned char) (class_id >> 24);
	aad[17] = (unsigned char) (class_id >> 16);
	aad[18] = (unsigned char) (class_id >> 8);
	aad[19] = (unsigned char) class_id;
	aad[20] = (unsigned char) (version >> 24);
	aad[21] = (unsigned char) (version >> 16);
	aad[22] = (unsigned char) (version >> 8);
	aad[23] = (unsigned char) version;
	memcpy(aad + 24, dbk_id->data, UUID_LEN);
	return 24 + UUID_LEN;
}

/* A fresh random key into "key" (a secure slot). */
void
RandomKey(unsigned char *key)
{
	if (RAND_bytes(key, ATREST_KEY_LEN) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate a random key")));
}

/* A fresh random (version 4) UUID for a database key. */
void
RandomUuid(pg_uuid_t *id)
{
	if (RAND_bytes(id->data, UUID_LEN) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate a random key id")));
	id->data[6] = (id->data[6] & 0x0f) | 0x40;
	id->data[8] = (id->data[8] & 0x3f) | 0x80;
}
