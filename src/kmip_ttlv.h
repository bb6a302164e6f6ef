/*
 * kmip_ttlv.h
 *		KMIP's Tag-Type-Length-Value encoding: a bounded encoder and a
 *		validating decoder, free of PostgreSQL so that the fuzz harness
 *		(test/fuzz/fuzz_kmip_ttlv.c) builds it on its own.
 *
 * The encoder writes into a buffer the caller owns and never allocates; the
 * decoder never allocates either: it fills a caller-supplied array of items
 * that point into the input.  Neither copies key material anywhere.
 */
#ifndef ATREST_KMIP_TTLV_H
#define ATREST_KMIP_TTLV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Item types (KMIP 1.x section 9.1.1.2). */
#define TTLV_STRUCTURE		0x01
#define TTLV_INTEGER		0x02
#define TTLV_LONG_INTEGER	0x03
#define TTLV_BIG_INTEGER	0x04
#define TTLV_ENUMERATION	0x05
#define TTLV_BOOLEAN		0x06
#define TTLV_TEXT_STRING	0x07
#define TTLV_BYTE_STRING	0x08
#define TTLV_DATE_TIME		0x09
#define TTLV_INTERVAL		0x0A

/* The tags we use. */
#define KMIP_TAG_ATTRIBUTE				0x420008
#define KMIP_TAG_ATTRIBUTE_NAME			0x42000A
#define KMIP_TAG_ATTRIBUTE_VALUE		0x42000B
#define KMIP_TAG_BATCH_COUNT			0x42000D
#define KMIP_TAG_BATCH_ITEM				0x42000F
#define KMIP_TAG_BLOCK_CIPHER_MODE		0x420011
#define KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM 0x420028
#define KMIP_TAG_CRYPTOGRAPHIC_PARAMETERS 0x42002B
#define KMIP_TAG_IV_COUNTER_NONCE		0x42003D
#define KMIP_TAG_MAXIMUM_ITEMS			0x42004F
#define KMIP_TAG_MAXIMUM_RESPONSE_SIZE	0x420050
#define KMIP_TAG_NAME					0x420053
#define KMIP_TAG_NAME_TYPE				0x420054
#define KMIP_TAG_NAME_VALUE				0x420055
#define KMIP_TAG_OPERATION				0x42005C
#define KMIP_TAG_PROTOCOL_VERSION		0x420069
#define KMIP_TAG_PROTOCOL_VERSION_MAJOR	0x42006A
#define KMIP_TAG_PROTOCOL_VERSION_MINOR	0x42006B
#define KMIP_TAG_REQUEST_HEADER			0x420077
#define KMIP_TAG_REQUEST_MESSAGE		0x420078
#define KMIP_TAG_REQUEST_PAYLOAD		0x420079
#define KMIP_TAG_RESPONSE_HEADER		0x42007A
#define KMIP_TAG_RESPONSE_MESSAGE		0x42007B
#define KMIP_TAG_RESPONSE_PAYLOAD		0x42007C
#define KMIP_TAG_RESULT_MESSAGE			0x42007D
#define KMIP_TAG_RESULT_REASON			0x42007E
#define KMIP_TAG_RESULT_STATUS			0x42007F
#define KMIP_TAG_STATE					0x42008D
#define KMIP_TAG_UNIQUE_IDENTIFIER		0x420094
#define KMIP_TAG_DATA					0x4200C2
#define KMIP_TAG_TAG_LENGTH				0x4200CE
#define KMIP_TAG_AEAD_ADDITIONAL_DATA	0x4200FE
#define KMIP_TAG_AEAD_TAG				0x4200FF

/* Enumeration values we use. */
#define KMIP_OP_LOCATE					0x08
#define KMIP_OP_ENCRYPT					0x1F
#define KMIP_OP_DECRYPT					0x20
#define KMIP_STATUS_SUCCESS				0
#define KMIP_MODE_GCM					0x09
#define KMIP_ALG_AES					0x03
#define KMIP_STATE_ACTIVE				0x02
#define KMIP_NAME_TYPE_TEXT				0x01

/* Bounds on what the decoder accepts. */
#define TTLV_MAX_DEPTH		16
#define TTLV_HEADER_LEN		8

/* ---------------------------------------------------------------------
 * Encoder
 * --------------------------------------------------------------------- */

typedef struct TtlvWriter
{
	unsigned char *buf;
	size_t		cap;
	size_t		len;
	int			depth;
	size_t		open[TTLV_MAX_DEPTH];	/* offsets of open structures */
	bool		failed;			/* out of room or unbalanced; sticky */
} TtlvWriter;

extern void TtlvWriterInit(TtlvWriter *w, unsigned char *buf, size_t cap);
extern void TtlvBegin(TtlvWriter *w, uint32_t tag);
extern void TtlvEnd(TtlvWriter *w);
extern void TtlvInteger(TtlvWriter *w, uint32_t tag, int32_t v);
extern void TtlvEnum(TtlvWriter *w, uint32_t tag, uint32_t v);
extern void TtlvText(TtlvWriter *w, uint32_t tag, const char *s, size_t len);
extern void TtlvBytes(TtlvWriter *w, uint32_t tag, const unsigned char *p, size_t len);
/* Any non-structure item, value as it goes on the wire (big-endian, unpadded). */
extern void TtlvScalar(TtlvWriter *w, uint32_t tag, uint8_t type, const unsigned char *p, size_t len);

/* True when everything fit and every structure was closed. */
extern bool TtlvWriterDone(const TtlvWriter *w);

/* ---------------------------------------------------------------------
 * Decoder
 * --------------------------------------------------------------------- */

typedef struct TtlvItem
{
	uint32_t	tag;
	uint8_t		type;
	uint32_t	len;			/* value length, without padding */
	const unsigned char *value; /* into the decoded buffer */
	int			parent;			/* index, -1 for the top item */
	int			first_child;	/* index or -1 */
	int			next_sibling;	/* index or -1 */
} TtlvItem;

/*
 * Decode exactly one top-level item filling buf[0..len).  Fills items[0..
 * *nitems); item 0 is the top.  Returns NULL on success, or a static string
 * saying what is wrong (it never quotes the input).  Checks every length
 * against its container, the fixed lengths of the scalar types, padding,
 * nesting depth and the item count.
 */
extern const char *TtlvDecode(const unsigned char *buf, size_t len,
							  TtlvItem *items, int max_items, int *nitems);

/* Length of a whole message from its 8-byte header, or 0 if the header is not a structure. */
extern size_t TtlvMessageLength(const unsigned char header[TTLV_HEADER_LEN]);

/* The first child of "parent" with "tag" (and, if type != 0, that type), or -1. */
extern int	TtlvChild(const TtlvItem *items, int parent, uint32_t tag, uint8_t type);

/* The next sibling after "idx" with the same tag and type, or -1. */
extern int	TtlvNextSame(const TtlvItem *items, int idx);

/* Number of children of "parent" with "tag". */
extern int	TtlvCount(const TtlvItem *items, int parent, uint32_t tag);

/* Value of an Integer or Enumeration item (the caller checked the type). */
extern uint32_t TtlvU32(const TtlvItem *item);

#endif							/* ATREST_KMIP_TTLV_H */
