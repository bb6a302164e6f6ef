/*
 * fuzz_pkcs11_uri.c
 *		libFuzzer harness over the PKCS#11 key URI parser and its percent and
 *		hex decoders (src/parse_core.c), what atrest.enable_cmk('pkcs11', uri)
 *		and every later unwrap run on a URI a database owner chose.
 *
 * The first input byte picks a mode; the rest is the input:
 *
 *	 0  URI: the rest, up to its first NUL, is parsed the way
 *		provider_pkcs11.c's ParseUri does, into a buffer of exactly
 *		strlen + 1 bytes.  A URI that parses must give a NUL-free token of at
 *		most 32 bytes and a NUL-free object, both inside the buffer, and must
 *		parse again to the same token, object, id and kind when written back
 *		with every byte percent-encoded.
 *	 1  percent-decoding of the rest (NUL bytes included) into exactly as
 *		many bytes as it has; a value that decodes must decode to the same
 *		bytes again after being percent-encoded, and must hold no character
 *		that must be encoded.
 *	 2  hex decoding of the rest, decoded in place as ParsePkcs11Uri does;
 *		must agree with a reference decoder and round-trip.
 *
 * Every buffer ends at an inaccessible page (fuzz_guard.h).  Set
 * FUZZ_WRITE_SEEDS=DIR to write the seed inputs to DIR and exit.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "parse_core.h"
#include "fuzz_guard.h"

static void
Fail(const char *what)
{
	fprintf(stderr, "fuzz_pkcs11_uri: invariant violated: %s\n", what);
	abort();
}

static bool
Inside(const void *p, size_t n, const Guarded *g, size_t glen)
{
	const unsigned char *c = p;

	return c >= g->p && c + n <= g->p + glen;
}

/* Append "%XX" for every byte of p to out (room for 3 * n bytes). */
static size_t
PercentEncodeAll(const unsigned char *p, size_t n, char *out)
{
	static const char digits[] = "0123456789ABCDEF";

	for (size_t i = 0; i < n; i++)
	{
		out[3 * i] = '%';
		out[3 * i + 1] = digits[p[i] >> 4];
		out[3 * i + 2] = digits[p[i] & 15];
	}
	return 3 * n;
}

static void
FuzzUri(const uint8_t *data, size_t size)
{
	size_t		len = strnlen((const char *) data, size);
	Guarded		in,
				buf,
				buf2,
				in2;
	ParsedUri	parsed,
				again;
	ParseUriStatus st;
	size_t		tlen,
				olen,
				n = 0;
	static const char *const kinds[] = {NULL, "secret-key", "private"};

	GuardedAlloc(&in, len + 1);
	memcpy(in.p, data, len);
	in.p[len] = '\0';
	GuardedAlloc(&buf, len + 1);
	st = ParsePkcs11Uri((const char *) in.p, (char *) buf.p, len + 1, &parsed);
	if (st != PARSE_URI_OK)
	{
		if (strlen(parsed.attr) > PARSE_URI_NAME_MAX)
			Fail("attribute name longer than its buffer");
		GuardedFree(&buf);
		GuardedFree(&in);
		return;
	}
	if (parsed.token == NULL || parsed.object == NULL)
		Fail("OK without token or object");
	tlen = strlen(parsed.token);
	olen = strlen(parsed.object);
	if (tlen == 0 || tlen > PARSE_TOKEN_LABEL_LEN || olen == 0)
		Fail("token or object of a bad length");
	if (!Inside(parsed.token, tlen + 1, &buf, len + 1) ||
		!Inside(parsed.object, olen + 1, &buf, len + 1) ||
		(parsed.id != NULL && !Inside(parsed.id, parsed.idlen, &buf, len + 1)))
		Fail("a value outside the caller's buffer");
	if (parsed.id != NULL && parsed.idlen == 0)
		Fail("an empty id");
	if (parsed.kind > PARSE_URI_KIND_RSA)
		Fail("unknown kind");

	/* write it back with every byte percent-encoded and parse that */
	GuardedAlloc(&in2, 64 + 3 * (tlen + olen + parsed.idlen) + 1);
	n += (size_t) sprintf((char *) in2.p + n, "PKCS11:object=");
	n += PercentEncodeAll((const unsigned char *) parsed.object, olen, (char *) in2.p + n);
	n += (size_t) sprintf((char *) in2.p + n, ";token=");
	n += PercentEncodeAll((const unsigned char *) parsed.token, tlen, (char *) in2.p + n);
	if (parsed.id != NULL)
	{
		n += (size_t) sprintf((char *) in2.p + n, ";id=");
		n += PercentEncodeAll(parsed.id, parsed.idlen, (char *) in2.p + n);
	}
	if (parsed.kind != PARSE_URI_KIND_ANY)
		n += (size_t) sprintf((char *) in2.p + n, ";type=%s", kinds[parsed.kind]);
	in2.p[n] = '\0';
	GuardedAlloc(&buf2, n + 1);
	if (ParsePkcs11Uri((const char *) in2.p, (char *) buf2.p, n + 1, &again) != PARSE_URI_OK)
		Fail("a parsed URI written back does not parse");
	if (strcmp(again.token, parsed.token) != 0 || strcmp(again.object, parsed.object) != 0 ||
		again.kind != parsed.kind || again.idlen != parsed.idlen ||
		(again.id == NULL) != (parsed.id == NULL) ||
		(parsed.id != NULL && memcmp(again.id, parsed.id, parsed.idlen) != 0))
		Fail("a parsed URI written back parses to something else");
	GuardedFree(&buf2);
	GuardedFree(&in2);
	GuardedFree(&buf);
	GuardedFree(&in);
}

static void
FuzzPercent(const uint8_t *data, size_t size)
{
	Guarded		in,
				out,
				enc,
				out2;
	size_t		outlen = 0,
				outlen2 = 0,
				n;

	GuardedAlloc(&in, size);
	memcpy(in.p, data, size);
	GuardedAlloc(&out, size);
	if (ParsePercentDecode((const char *) in.p, size, (char *) out.p, &outlen) != PARSE_PERCENT_OK)
	{
		GuardedFree(&out);
		GuardedFree(&in);
		return;
	}
	if (outlen > size)
		Fail("percent-decoding grew the value");
	for (size_t i = 0; i < size; i++)
	{
		unsigned char c = in.p[i];

		if (c != '%' && (c <= ' ' || c == 0x7f || c == '?' || c == '#'))
			Fail("an unencoded character that must be percent-encoded was accepted");
	}
	GuardedAlloc(&enc, 3 * outlen);
	n = PercentEncodeAll(out.p, outlen, (char *) enc.p);
	GuardedAlloc(&out2, n);
	if (ParsePercentDecode((const char *) enc.p, n, (char *) out2.p, &outlen2) != PARSE_PERCENT_OK ||
		outlen2 != outlen || memcmp(out.p, out2.p, outlen) != 0)
		Fail("percent-encoding then decoding does not round-trip");
	GuardedFree(&out2);
	GuardedFree(&enc);
	GuardedFree(&out);
	GuardedFree(&in);
}

static int
RefHex(unsigned char c)
{
	const char *digits = "0123456789abcdef0123456789ABCDEF";
	const char *p = c ? strchr(digits, c) : NULL;

	return p ? (int) ((p - digits) % 16) : -1;
}

static void
FuzzHex(const uint8_t *data, size_t size)
{
	Guarded		in;
	bool		ok,
				ref = size > 0 && size % 2 == 0;
	unsigned char expect[4096];

	if (size > 2 * sizeof(expect))
		size = 2 * sizeof(expect);
	for (size_t i = 0; ref && i < size / 2; i++)
	{
		int			hi = RefHex(data[2 * i]),
					lo = RefHex(data[2 * i + 1]);

		if (hi < 0 || lo < 0)
			ref = false;
		else
			expect[i] = (unsigned char) (hi << 4 | lo);
	}
	GuardedAlloc(&in, size);
	memcpy(in.p, data, size);
	/* in place, as ParsePkcs11Uri decodes an id */
	ok = ParseHexDecode((const char *) in.p, size, in.p);
	if (ok != ref)
		Fail("ParseHexDecode disagrees with the reference decoder on what is hex");
	if (ok && memcmp(in.p, expect, size / 2) != 0)
		Fail("ParseHexDecode decodes to other bytes than the reference decoder");
	GuardedFree(&in);
}

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int			LLVMFuzzerInitialize(int *argc, char ***argv);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	switch (data[0] % 3)
	{
		case 0:
			FuzzUri(data + 1, size - 1);
			break;
		case 1:
			FuzzPercent(data + 1, size - 1);
			break;
		case 2:
			FuzzHex(data + 1, size - 1);
			break;
	}
	return 0;
}

static void
WriteSeed(const char *dir, int i, uint8_t mode, const char *s, size_t len)
{
	char		path[4096];
	FILE	   *f;

	snprintf(path, sizeof(path), "%s/seed-%02d", dir, i);
	f = fopen(path, "wb");
	if (f == NULL || fwrite(&mode, 1, 1, f) != 1 || fwrite(s, 1, len, f) != len || fclose(f) != 0)
	{
		perror(path);
		exit(1);
	}
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *seeds = getenv("FUZZ_WRITE_SEEDS");
	static const char *const uris[] = {
		"pkcs11:token=atrest;object=cmk",
		"pkcs11:token=atrest;object=cmk;id=0102a0ff",
		"pkcs11:token=My%20Token;object=key%2dlabel;id=%01%02%00;type=secret-key",
		"PKCS11:object=rsa;token=t;type=private",
		"pkcs11:token=t;object=o;type=public;id=00",
		"pkcs11:token=0123456789abcdef0123456789abcdef;object=o",
		"pkcs11:token=t;object=o;pin-value=1234",
		"pkcs11:token=t;;object=o",
		"pkcs11:token=t;object=o?module-path=/x",
		"pkcs11:token=%zz;object=o",
		"pkcs11:token=t%00x;object=o",
		"pkcs11:token=t;token=u;object=o",
	};
	int			i = 0;

	if (seeds == NULL)
		return 0;
	if (mkdir(seeds, 0755) != 0 && errno != EEXIST)
	{
		perror(seeds);
		exit(1);
	}
	for (size_t k = 0; k < sizeof(uris) / sizeof(uris[0]); k++, i++)
		WriteSeed(seeds, i, 0, uris[k], strlen(uris[k]));
	WriteSeed(seeds, i++, 1, "My%20Token%2", 12);
	WriteSeed(seeds, i++, 1, "a%00b%ffc", 9);
	WriteSeed(seeds, i++, 2, "0102a0FF", 8);
	WriteSeed(seeds, i++, 2, "0g", 2);
	exit(0);
}
