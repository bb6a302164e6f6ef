/*
 * fuzz_kmip_ttlv.c
 *		libFuzzer harness over the KMIP TTLV decoder (src/kmip_ttlv.c), the
 *		code that reads every answer of a KMIP server.
 *
 * Each input is one response as it would come off the wire.  It is copied
 * into a buffer of exactly its size (so AddressSanitizer catches a read one
 * byte past it) and decoded twice, with room for 512 items (the provider's
 * limit) and for 8 (so the item limit is reached often).  When the decoder
 * accepts it, the harness checks what the provider relies on and aborts on
 * a violation:
 *	 - every item's value lies inside the input, and its links (parent,
 *	   first child, next sibling) point at items of the right parent;
 *	 - the lookups (TtlvChild, TtlvNextSame, TtlvCount, TtlvU32) stay on
 *	   items of the tree;
 *	 - re-encoding the tree with the encoder gives back the input byte for
 *	   byte (the decoder accepts exactly the canonical encoding);
 *	 - the message length read from the header is the input's length.
 * Set FUZZ_WRITE_SEEDS=DIR to write the seed inputs to DIR and exit: KMIP
 * 1.4 responses to Locate, Encrypt and Decrypt as PyKMIP sends them, an
 * error response, and a few broken ones.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "kmip_ttlv.h"

#define MAX_ITEMS	512
#define MAX_INPUT	(64 * 1024)

static TtlvItem items[MAX_ITEMS];

static void
Fail(const char *what)
{
	fprintf(stderr, "invariant violated: %s\n", what);
	abort();
}

/* Re-encode item i (and its children) with the encoder. */
static void
Reencode(TtlvWriter *w, const TtlvItem *it, int i)
{
	if (it[i].type == TTLV_STRUCTURE)
	{
		TtlvBegin(w, it[i].tag);
		for (int c = it[i].first_child; c != -1; c = it[c].next_sibling)
			Reencode(w, it, c);
		TtlvEnd(w);
	}
	else
		TtlvScalar(w, it[i].tag, it[i].type, it[i].value, it[i].len);
}

static void
Check(const unsigned char *buf, size_t len, int max_items)
{
	int			n;
	const char *problem = TtlvDecode(buf, len, items, max_items, &n);
	unsigned char *again;
	TtlvWriter	w;

	if (problem != NULL)
	{
		if (problem[0] == '\0')
			Fail("empty problem text");
		return;
	}
	if (n < 1 || n > max_items)
		Fail("item count out of range");
	if (items[0].parent != -1)
		Fail("the top item has a parent");
	if (items[0].type == TTLV_STRUCTURE && TtlvMessageLength(buf) != len)
		Fail("the header's length is not the message's");
	for (int i = 0; i < n; i++)
	{
		const TtlvItem *it = &items[i];
		size_t		padded = ((size_t) it->len + 7) & ~(size_t) 7;

		if (it->value < buf || it->value > buf + len ||
			padded > (size_t) (buf + len - it->value))
			Fail("an item's value lies outside the input");
		if (i > 0 && (it->parent < 0 || it->parent >= i ||
					  items[it->parent].type != TTLV_STRUCTURE))
			Fail("an item's parent is not an earlier structure");
		if (it->first_child != -1 &&
			(it->type != TTLV_STRUCTURE || it->first_child <= i || it->first_child >= n ||
			 items[it->first_child].parent != i))
			Fail("a first child is not a child");
		if (it->next_sibling != -1 &&
			(it->next_sibling <= i || it->next_sibling >= n ||
			 items[it->next_sibling].parent != it->parent))
			Fail("a next sibling is not a sibling");
		if (it->type == TTLV_STRUCTURE)
		{
			int			c = TtlvChild(items, i, KMIP_TAG_UNIQUE_IDENTIFIER, 0);
			int			count = TtlvCount(items, i, KMIP_TAG_UNIQUE_IDENTIFIER);

			if (c != -1 && (c >= n || items[c].parent != i))
				Fail("TtlvChild found an item of another parent");
			if ((c == -1) != (count == 0))
				Fail("TtlvChild and TtlvCount disagree");
			while (c != -1)
			{
				count--;
				c = TtlvNextSame(items, c);
				if (c != -1 && (c >= n || items[c].parent != i))
					Fail("TtlvNextSame left the parent");
			}
			if (count < 0)
				Fail("TtlvNextSame found more items than TtlvCount");
		}
		else if (it->type == TTLV_INTEGER || it->type == TTLV_ENUMERATION)
		{
			if (it->len != 4)
				Fail("a 4-byte type with another length");
			(void) TtlvU32(it);
		}
	}

	/* the decoder accepts only the canonical encoding: re-encoding gives the input */
	again = malloc(len);
	if (again == NULL)
		Fail("out of memory");
	TtlvWriterInit(&w, again, len);
	Reencode(&w, items, 0);
	if (!TtlvWriterDone(&w) || w.len != len || memcmp(again, buf, len) != 0)
		Fail("re-encoding a decoded message did not give it back");
	free(again);
}

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int			LLVMFuzzerInitialize(int *argc, char ***argv);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	unsigned char *buf;

	if (size > MAX_INPUT)
		return 0;
	/* exactly "size" bytes, so a read past the end is caught */
	buf = malloc(size ? size : 1);
	if (buf == NULL)
		Fail("out of memory");
	memcpy(buf, data, size);
	Check(buf, size, MAX_ITEMS);
	Check(buf, size, 8);
	free(buf);
	return 0;
}

/* ---------------------------------------------------------------------
 * Seeds
 * --------------------------------------------------------------------- */

static void
WriteSeed(const char *dir, const char *name, const unsigned char *p, size_t len)
{
	char		path[4096];
	FILE	   *f;
	int			n;

	/* the well-formed seeds must decode: the encoder and decoder agree */
	if (strcmp(name, "truncated") != 0 && strcmp(name, "lying-length") != 0 &&
		TtlvDecode(p, len, items, MAX_ITEMS, &n) != NULL)
		Fail("a well-formed seed does not decode");

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "wb");
	if (f == NULL || fwrite(p, 1, len, f) != len || fclose(f) != 0)
	{
		fprintf(stderr, "could not write %s: %s\n", path, strerror(errno));
		exit(1);
	}
}

static void
ResponseBegin(TtlvWriter *w, uint32_t op, uint32_t status)
{
	unsigned char ts[8] = {0, 0, 0, 0, 0x69, 0x2e, 0x3c, 0x80};

	TtlvBegin(w, KMIP_TAG_RESPONSE_MESSAGE);
	TtlvBegin(w, KMIP_TAG_RESPONSE_HEADER);
	TtlvBegin(w, KMIP_TAG_PROTOCOL_VERSION);
	TtlvInteger(w, KMIP_TAG_PROTOCOL_VERSION_MAJOR, 1);
	TtlvInteger(w, KMIP_TAG_PROTOCOL_VERSION_MINOR, 4);
	TtlvEnd(w);
	TtlvScalar(w, 0x420092, TTLV_DATE_TIME, ts, 8);	/* Time Stamp */
	TtlvInteger(w, KMIP_TAG_BATCH_COUNT, 1);
	TtlvEnd(w);
	TtlvBegin(w, KMIP_TAG_BATCH_ITEM);
	TtlvEnum(w, KMIP_TAG_OPERATION, op);
	TtlvEnum(w, KMIP_TAG_RESULT_STATUS, status);
}

static void
ResponseEnd(TtlvWriter *w)
{
	TtlvEnd(w);
	TtlvEnd(w);
}

static void
WriteSeeds(const char *dir)
{
	unsigned char buf[2048];
	unsigned char data[61];
	unsigned char tag[16];
	TtlvWriter	w;

	mkdir(dir, 0755);
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (unsigned char) (i * 37 + 11);
	for (size_t i = 0; i < sizeof(tag); i++)
		tag[i] = (unsigned char) (0xa0 + i);

	/* Locate: two identifiers */
	TtlvWriterInit(&w, buf, sizeof(buf));
	ResponseBegin(&w, KMIP_OP_LOCATE, KMIP_STATUS_SUCCESS);
	TtlvBegin(&w, KMIP_TAG_RESPONSE_PAYLOAD);
	TtlvInteger(&w, 0x4200D5, 2);	/* Located Items */
	TtlvText(&w, KMIP_TAG_UNIQUE_IDENTIFIER, "7", 1);
	TtlvText(&w, KMIP_TAG_UNIQUE_IDENTIFIER, "3", 1);
	TtlvEnd(&w);
	ResponseEnd(&w);
	WriteSeed(dir, "locate", buf, w.len);

	/* Encrypt: data and tag */
	TtlvWriterInit(&w, buf, sizeof(buf));
	ResponseBegin(&w, KMIP_OP_ENCRYPT, KMIP_STATUS_SUCCESS);
	TtlvBegin(&w, KMIP_TAG_RESPONSE_PAYLOAD);
	TtlvText(&w, KMIP_TAG_UNIQUE_IDENTIFIER, "7", 1);
	TtlvBytes(&w, KMIP_TAG_DATA, data, sizeof(data));
	TtlvBytes(&w, KMIP_TAG_AEAD_TAG, tag, sizeof(tag));
	TtlvEnd(&w);
	ResponseEnd(&w);
	WriteSeed(dir, "encrypt", buf, w.len);

	/* Decrypt */
	TtlvWriterInit(&w, buf, sizeof(buf));
	ResponseBegin(&w, KMIP_OP_DECRYPT, KMIP_STATUS_SUCCESS);
	TtlvBegin(&w, KMIP_TAG_RESPONSE_PAYLOAD);
	TtlvText(&w, KMIP_TAG_UNIQUE_IDENTIFIER, "7", 1);
	TtlvBytes(&w, KMIP_TAG_DATA, data, sizeof(data));
	TtlvEnd(&w);
	ResponseEnd(&w);
	WriteSeed(dir, "decrypt", buf, w.len);

	/* an error: Permission Denied with a message */
	TtlvWriterInit(&w, buf, sizeof(buf));
	ResponseBegin(&w, KMIP_OP_DECRYPT, 1);
	TtlvEnum(&w, KMIP_TAG_RESULT_REASON, 0x0C);
	TtlvText(&w, KMIP_TAG_RESULT_MESSAGE, "The decryption key must be in the Active state.",
			 strlen("The decryption key must be in the Active state."));
	ResponseEnd(&w);
	WriteSeed(dir, "error", buf, w.len);

	/* broken: a truncated Encrypt answer, and one with a lying length */
	TtlvWriterInit(&w, buf, sizeof(buf));
	ResponseBegin(&w, KMIP_OP_ENCRYPT, KMIP_STATUS_SUCCESS);
	TtlvBegin(&w, KMIP_TAG_RESPONSE_PAYLOAD);
	TtlvBytes(&w, KMIP_TAG_DATA, data, sizeof(data));
	TtlvEnd(&w);
	ResponseEnd(&w);
	WriteSeed(dir, "truncated", buf, w.len - 13);
	buf[7] ^= 0x40;
	WriteSeed(dir, "lying-length", buf, w.len);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *seeds = getenv("FUZZ_WRITE_SEEDS");

	(void) argc;
	(void) argv;
	if (seeds != NULL)
	{
		WriteSeeds(seeds);
		exit(0);
	}
	return 0;
}
