/*
 * kmip_ttlv.c
 *		KMIP's Tag-Type-Length-Value encoding (see kmip_ttlv.h).
 *
 * An item is a 3-byte tag, a 1-byte type, a 4-byte big-endian length and
 * the value, padded with zeros to a multiple of 8 bytes; a Structure's
 * value is a sequence of items.  The decoder trusts nothing in its input:
 * every length is checked against the bytes its container still holds
 * before anything is read, nesting and the item count are bounded, and it
 * keeps no pointer past the end of the buffer.  It uses an explicit stack,
 * not recursion, so a deep input costs no C stack.
 */
#include "kmip_ttlv.h"

#include <string.h>

/* ---------------------------------------------------------------------
 * Encoder
 * --------------------------------------------------------------------- */

void
TtlvWriterInit(TtlvWriter *w, unsigned char *buf, size_t cap)
{
	memset(w, 0, sizeof(*w));
	w->buf = buf;
	w->cap = cap;
}

static void
PutU32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char) (v >> 24);
	p[1] = (unsigned char) (v >> 16);
	p[2] = (unsigned char) (v >> 8);
	p[3] = (unsigned char) v;
}

/* Write an item's header and value, padded; value NULL for a structure. */
static void
PutItem(TtlvWriter *w, uint32_t tag, uint8_t type, const void *value, size_t len)
{
	size_t		padded = (len + 7) & ~(size_t) 7;

	if (w->failed)
		return;
	if (len > 0xFFFFFFF0u || w->cap - w->len < TTLV_HEADER_LEN ||
		(value != NULL && w->cap - w->len - TTLV_HEADER_LEN < padded))
	{
		w->failed = true;
		return;
	}
	w->buf[w->len] = (unsigned char) (tag >> 16);
	w->buf[w->len + 1] = (unsigned char) (tag >> 8);
	w->buf[w->len + 2] = (unsigned char) tag;
	w->buf[w->len + 3] = type;
	PutU32(w->buf + w->len + 4, (uint32_t) len);
	w->len += TTLV_HEADER_LEN;
	if (value != NULL)
	{
		if (len > 0)
			memcpy(w->buf + w->len, value, len);
		memset(w->buf + w->len + len, 0, padded - len);
		w->len += padded;
	}
}

void
TtlvBegin(TtlvWriter *w, uint32_t tag)
{
	if (w->failed)
		return;
	if (w->depth >= TTLV_MAX_DEPTH)
	{
		w->failed = true;
		return;
	}
	w->open[w->depth] = w->len;
	PutItem(w, tag, TTLV_STRUCTURE, NULL, 0);
	if (!w->failed)
		w->depth++;
}

void
TtlvEnd(TtlvWriter *w)
{
	size_t		start;

	if (w->failed)
		return;
	if (w->depth == 0)
	{
		w->failed = true;
		return;
	}
	start = w->open[--w->depth];
	PutU32(w->buf + start + 4, (uint32_t) (w->len - start - TTLV_HEADER_LEN));
}

void
TtlvInteger(TtlvWriter *w, uint32_t tag, int32_t v)
{
	unsigned char b[4];

	PutU32(b, (uint32_t) v);
	PutItem(w, tag, TTLV_INTEGER, b, 4);
}

void
TtlvEnum(TtlvWriter *w, uint32_t tag, uint32_t v)
{
	unsigned char b[4];

	PutU32(b, v);
	PutItem(w, tag, TTLV_ENUMERATION, b, 4);
}

void
TtlvText(TtlvWriter *w, uint32_t tag, const char *s, size_t len)
{
	PutItem(w, tag, TTLV_TEXT_STRING, s, len);
}

void
TtlvBytes(TtlvWriter *w, uint32_t tag, const unsigned char *p, size_t len)
{
	PutItem(w, tag, TTLV_BYTE_STRING, p, len);
}

void
TtlvScalar(TtlvWriter *w, uint32_t tag, uint8_t type, const unsigned char *p, size_t len)
{
	if (type == TTLV_STRUCTURE)
	{
		w->failed = true;
		return;
	}
	PutItem(w, tag, type, p, len);
}

bool
TtlvWriterDone(const TtlvWriter *w)
{
	return !w->failed && w->depth == 0 && w->len > 0;
}

/* ---------------------------------------------------------------------
 * Decoder
 * --------------------------------------------------------------------- */

static uint32_t
GetU32(const unsigned char *p)
{
	return ((uint32_t) p[0] << 24) | ((uint32_t) p[1] << 16) |
		((uint32_t) p[2] << 8) | (uint32_t) p[3];
}

size_t
TtlvMessageLength(const unsigned char header[TTLV_HEADER_LEN])
{
	if (header[3] != TTLV_STRUCTURE)
		return 0;
	return TTLV_HEADER_LEN + (size_t) GetU32(header + 4);
}

/* The value length a scalar type must have, 0 if variable. */
static uint32_t
FixedLength(uint8_t type)
{
	switch (type)
	{
		case TTLV_INTEGER:
		case TTLV_ENUMERATION:
		case TTLV_INTERVAL:
			return 4;
		case TTLV_LONG_INTEGER:
		case TTLV_BOOLEAN:
		case TTLV_DATE_TIME:
			return 8;
		default:
			return 0;
	}
}

typedef struct DecodeLevel
{
	int			parent;			/* item index owning this level, -1 at the top */
	size_t		end;			/* offset where the level's bytes end */
	int			last;			/* last item added at this level, -1 if none */
} DecodeLevel;

const char *
TtlvDecode(const unsigned char *buf, size_t len,
		   TtlvItem *items, int max_items, int *nitems)
{
	DecodeLevel stack[TTLV_MAX_DEPTH + 1];
	int			sp = 1;
	int			n = 0;
	size_t		pos = 0;

	*nitems = 0;
	if (buf == NULL || len == 0)
		return "the message is empty";
	stack[0].parent = -1;
	stack[0].end = len;
	stack[0].last = -1;

	while (sp > 0)
	{
		DecodeLevel *lv = &stack[sp - 1];
		uint32_t	tag;
		uint8_t		type;
		uint32_t	vlen;
		size_t		padded;
		TtlvItem   *it;

		if (pos == lv->end)
		{
			sp--;
			continue;
		}
		if (sp == 1 && lv->last != -1)
			return "the message has bytes after its end";
		if (lv->end - pos < TTLV_HEADER_LEN)
			return "an item header is truncated";
		tag = ((uint32_t) buf[pos] << 16) | ((uint32_t) buf[pos + 1] << 8) | buf[pos + 2];
		type = buf[pos + 3];
		vlen = GetU32(buf + pos + 4);
		if (type < TTLV_STRUCTURE || type > TTLV_INTERVAL)
			return "an item has an unknown type";
		if ((tag >> 16) != 0x42 && (tag >> 16) != 0x54)
			return "an item has a tag outside the KMIP and extension ranges";
		if (FixedLength(type) != 0 && vlen != FixedLength(type))
			return "a fixed-length item has the wrong length";
		if ((type == TTLV_STRUCTURE || type == TTLV_BIG_INTEGER) && vlen % 8 != 0)
			return "a structure or big integer length is not a multiple of 8";
		padded = ((size_t) vlen + 7) & ~(size_t) 7;
		if (padded > lv->end - pos - TTLV_HEADER_LEN)
			return "an item is longer than what contains it";
		if (n >= max_items)
			return "the message has too many items";

		it = &items[n];
		it->tag = tag;
		it->type = type;
		it->len = vlen;
		it->value = buf + pos + TTLV_HEADER_LEN;
		it->parent = lv->parent;
		it->first_child = -1;
		it->next_sibling = -1;
		if (lv->last != -1)
			items[lv->last].next_sibling = n;
		else if (lv->parent != -1)
			items[lv->parent].first_child = n;
		lv->last = n;

		pos += TTLV_HEADER_LEN;
		if (type == TTLV_STRUCTURE)
		{
			if (sp > TTLV_MAX_DEPTH)
				return "the message nests too deeply";
			stack[sp].parent = n;
			stack[sp].end = pos + vlen;
			stack[sp].last = -1;
			sp++;
		}
		else
		{
			for (size_t i = vlen; i < padded; i++)
				if (buf[pos + i] != 0)
					return "an item's padding is not zero";
			pos += padded;
		}
		n++;
	}
	*nitems = n;
	return NULL;
}

int
TtlvChild(const TtlvItem *items, int parent, uint32_t tag, uint8_t type)
{
	if (parent < 0 || items[parent].type != TTLV_STRUCTURE)
		return -1;
	for (int i = items[parent].first_child; i != -1; i = items[i].next_sibling)
		if (items[i].tag == tag && (type == 0 || items[i].type == type))
			return i;
	return -1;
}

int
TtlvNextSame(const TtlvItem *items, int idx)
{
	for (int i = items[idx].next_sibling; i != -1; i = items[i].next_sibling)
		if (items[i].tag == items[idx].tag && items[i].type == items[idx].type)
			return i;
	return -1;
}

int
TtlvCount(const TtlvItem *items, int parent, uint32_t tag)
{
	int			c = 0;

	if (parent < 0 || items[parent].type != TTLV_STRUCTURE)
		return 0;
	for (int i = items[parent].first_child; i != -1; i = items[i].next_sibling)
		if (items[i].tag == tag)
			c++;
	return c;
}

uint32_t
TtlvU32(const TtlvItem *item)
{
	return GetU32(item->value);
}
