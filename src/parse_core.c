/*
 * parse_core.c
 *		Decoders for PKCS#11 key URIs and KMS adapter answers, free of
 *		PostgreSQL so that the fuzz harnesses run them without a server.
 *
 * Invariants: no allocation, no global state; every function reads only
 * the bytes it is given (NUL-terminated strings up to their NUL, the rest
 * up to their length) and writes only into the caller's buffer within the
 * size parse_core.h documents.  The callers own the wording of errors.
 */
#include <string.h>
#include <strings.h>

#include "parse_core.h"

int
ParseHexDigit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

bool
ParseHexDecode(const char *s, size_t slen, unsigned char *out)
{
	if (slen == 0 || slen % 2 != 0)
		return false;
	for (size_t i = 0; i < slen / 2; i++)
	{
		int			hi = ParseHexDigit(s[2 * i]);
		int			lo = ParseHexDigit(s[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return false;
		out[i] = (unsigned char) (hi << 4 | lo);
	}
	return true;
}

ParsePercentStatus
ParsePercentDecode(const char *s, size_t slen, char *out, size_t *outlen)
{
	size_t		n = 0;

	for (size_t i = 0; i < slen; i++)
	{
		unsigned char c = (unsigned char) s[i];

		if (c == '%')
		{
			int			hi = i + 2 < slen ? ParseHexDigit(s[i + 1]) : -1;
			int			lo = hi >= 0 ? ParseHexDigit(s[i + 2]) : -1;

			if (lo < 0)
				return PARSE_PERCENT_BAD_ESCAPE;
			out[n++] = (char) (hi << 4 | lo);
			i += 2;
		}
		else if (c <= ' ' || c == 0x7f || c == '?' || c == '#')
			return PARSE_PERCENT_BAD_CHAR;
		else
			out[n++] = (char) c;
	}
	*outlen = n;
	return PARSE_PERCENT_OK;
}

ParseUriStatus
ParsePkcs11Uri(const char *uri, char *buf, size_t buflen, ParsedUri *parsed)
{
	const char *p;
	size_t		used = 0;

	memset(parsed, 0, sizeof(*parsed));
	parsed->kind = PARSE_URI_KIND_ANY;

	if (strncasecmp(uri, "pkcs11:", 7) != 0)
		return PARSE_URI_NO_SCHEME;
	p = uri + 7;
	if (strchr(p, '?') != NULL)
		return PARSE_URI_QUERY;
	if (strchr(p, '#') != NULL)
		return PARSE_URI_FRAGMENT;

	for (;;)
	{
		const char *end = strchr(p, ';');
		size_t		seglen = end ? (size_t) (end - p) : strlen(p);
		const char *eq = memchr(p, '=', seglen);
		const char *raw;
		size_t		namelen,
					rawlen,
					valuelen = 0;
		char	   *value;

		if (seglen == 0)
			return PARSE_URI_EMPTY_ATTRIBUTE;
		namelen = eq ? (size_t) (eq - p) : seglen;
		if (namelen == 0 || namelen > PARSE_URI_NAME_MAX ||
			strspn(p, "abcdefghijklmnopqrstuvwxyz0123456789-_") < namelen)
			return PARSE_URI_BAD_NAME;
		memcpy(parsed->attr, p, namelen);
		parsed->attr[namelen] = '\0';
		if (eq == NULL)
			return PARSE_URI_NO_VALUE;
		raw = eq + 1;
		rawlen = seglen - namelen - 1;

		/*
		 * The value decodes to at most rawlen bytes plus a NUL, and the
		 * segment took rawlen + namelen + 1 >= rawlen + 2 bytes of the URI,
		 * so the values of all segments fit in strlen(uri) + 1 bytes.
		 */
		if (used + rawlen + 1 > buflen)
			return PARSE_URI_BAD_CHAR;	/* caller's buffer too small: can't happen */
		value = buf + used;
		switch (ParsePercentDecode(raw, rawlen, value, &valuelen))
		{
			case PARSE_PERCENT_OK:
				break;
			case PARSE_PERCENT_BAD_ESCAPE:
				return PARSE_URI_BAD_ESCAPE;
			case PARSE_PERCENT_BAD_CHAR:
				return PARSE_URI_BAD_CHAR;
		}
		value[valuelen] = '\0';
		used += valuelen + 1;
		if (valuelen == 0)
			return PARSE_URI_EMPTY_VALUE;

		if (strcmp(parsed->attr, "token") == 0 || strcmp(parsed->attr, "object") == 0)
		{
			const char **field = parsed->attr[0] == 't' ? &parsed->token : &parsed->object;

			if (*field != NULL)
				return PARSE_URI_DUPLICATE;
			if (strlen(value) != valuelen)
				return PARSE_URI_NUL_IN_LABEL;
			if (parsed->attr[0] == 't' && valuelen > PARSE_TOKEN_LABEL_LEN)
				return PARSE_URI_LABEL_TOO_LONG;
			*field = value;
		}
		else if (strcmp(parsed->attr, "id") == 0)
		{
			if (parsed->id != NULL)
				return PARSE_URI_DUPLICATE;
			if (memchr(raw, '%', rawlen) != NULL)
			{
				/* RFC 7512 style: the percent-decoded bytes are the id */
				parsed->id = (const unsigned char *) value;
				parsed->idlen = valuelen;
			}
			else if (ParseHexDecode(value, valuelen, (unsigned char *) value))
			{
				parsed->id = (const unsigned char *) value;
				parsed->idlen = valuelen / 2;
			}
			else
				return PARSE_URI_BAD_ID;
		}
		else if (strcmp(parsed->attr, "type") == 0)
		{
			if (strcmp(value, "secret-key") == 0)
				parsed->kind = PARSE_URI_KIND_AES;
			else if (strcmp(value, "private") == 0 || strcmp(value, "public") == 0)
				parsed->kind = PARSE_URI_KIND_RSA;
			else
				return PARSE_URI_BAD_TYPE;
		}
		else
			return PARSE_URI_UNKNOWN_ATTRIBUTE;

		if (end == NULL)
			break;
		p = end + 1;
	}

	parsed->attr[0] = '\0';
	if (parsed->token == NULL)
		return PARSE_URI_NO_TOKEN;
	if (parsed->object == NULL)
		return PARSE_URI_NO_OBJECT;
	return PARSE_URI_OK;
}

static int
Base64UrlDigit(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '-')
		return 62;
	if (c == '_')
		return 63;
	return -1;
}

bool
ParseBase64UrlDecode(const char *s, size_t len, unsigned char *out, size_t *outlen)
{
	size_t		n = 0;
	unsigned int acc = 0;
	int			bits = 0;

	/* Strip padding, which must complete a 4-character group. */
	if (len % 4 == 0)
	{
		if (len >= 1 && s[len - 1] == '=')
			len--;
		if (len >= 1 && s[len - 1] == '=')
			len--;
	}
	if (len % 4 == 1)
		return false;

	for (size_t i = 0; i < len; i++)
	{
		int			d = Base64UrlDigit(s[i]);

		if (d < 0)
			return false;
		acc = ((acc << 6) | (unsigned int) d) & 0xffffff;
		bits += 6;
		if (bits >= 8)
		{
			bits -= 8;
			out[n++] = (unsigned char) ((acc >> bits) & 0xff);
		}
	}
	/* Left-over bits must be zero, so that each value has one encoding. */
	if (bits > 0 && (acc & ((1U << bits) - 1)) != 0)
		return false;
	*outlen = n;
	return true;
}

const char *
ParseJsonPrescan(const char *s, size_t len, int max_depth)
{
	int			depth = 0;
	bool		in_string = false;

	for (size_t i = 0; i < len; i++)
	{
		char		c = s[i];

		if (in_string)
		{
			if (c == '"')
				in_string = false;
			else if (c == '\\' && i + 1 < len)
			{
				i++;
				if (s[i] == 'u')
				{
					/* \uXXXX: anything above 007F is refused. */
					if (i + 4 < len &&
						(s[i + 1] != '0' || s[i + 2] != '0' ||
						 !(s[i + 3] >= '0' && s[i + 3] <= '7')))
						return "it uses \\u escapes for non-ASCII characters";
				}
			}
		}
		else if (c == '"')
			in_string = true;
		else if (c == '{' || c == '[')
		{
			if (++depth > max_depth)
				return "it is nested too deeply";
		}
		else if (c == '}' || c == ']')
			depth--;
	}
	return NULL;
}

bool
ParseKeyVersionIsValid(const char *s, size_t maxlen)
{
	size_t		len = strlen(s);

	if (len == 0 || len > maxlen)
		return false;
	for (size_t i = 0; i < len; i++)
	{
		if ((unsigned char) s[i] < 0x20 || (unsigned char) s[i] > 0x7e)
			return false;
	}
	return true;
}
