/*
 * parse_core.h
 *		The decoders for what the root-key providers read from outside the
 *		server: PKCS#11 key URIs (RFC 7512 subset, percent-encoding, hex ids
 *		and versions) and the KMS adapter's answers (base64url values, the
 *		JSON pre-scan, key versions).
 *
 * Like envelope_core.h, this header and parse_core.c include no PostgreSQL
 * header and never allocate: callers pass buffers of the sizes documented
 * here.  provider_pkcs11.c and provider_command.c turn the statuses into
 * their messages; the fuzz harnesses (test/fuzz) run the same code without a
 * server.  Nothing here ever reads outside [s, s + len) of an input.
 */
#ifndef ATREST_PARSE_CORE_H
#define ATREST_PARSE_CORE_H

#include <stdbool.h>
#include <stddef.h>

/* Longest PKCS#11 token label (CK_TOKEN_INFO.label is 32 padded bytes). */
#define PARSE_TOKEN_LABEL_LEN	32

/* Longest attribute name of a key URI we look at, in bytes. */
#define PARSE_URI_NAME_MAX		32

/* The value of one hexadecimal digit, or -1. */
extern int	ParseHexDigit(char c);

/*
 * Decode a non-empty, even-length hex string of slen characters into
 * slen / 2 bytes at out (which may be s itself: decoding in place is safe).
 * Returns false, out partly written, if it is not one.
 */
extern bool ParseHexDecode(const char *s, size_t slen, unsigned char *out);

typedef enum ParsePercentStatus
{
	PARSE_PERCENT_OK = 0,
	PARSE_PERCENT_BAD_ESCAPE,	/* a "%" not followed by two hex digits */
	PARSE_PERCENT_BAD_CHAR		/* a control character, space, DEL, "?" or "#" */
} ParsePercentStatus;

/*
 * Percent-decode slen bytes at s into out (room for slen bytes; may be s
 * itself), setting *outlen.  The output may contain NUL bytes.
 */
extern ParsePercentStatus ParsePercentDecode(const char *s, size_t slen,
											 char *out, size_t *outlen);

typedef enum ParseUriKind
{
	PARSE_URI_KIND_ANY = 0,
	PARSE_URI_KIND_AES,			/* type=secret-key */
	PARSE_URI_KIND_RSA			/* type=private or type=public */
} ParseUriKind;

typedef enum ParseUriStatus
{
	PARSE_URI_OK = 0,
	PARSE_URI_NO_SCHEME,		/* does not start with "pkcs11:" */
	PARSE_URI_QUERY,			/* has a "?" */
	PARSE_URI_FRAGMENT,			/* has a "#" */
	PARSE_URI_EMPTY_ATTRIBUTE,	/* a stray ";" */
	PARSE_URI_BAD_NAME,			/* malformed attribute name */
	PARSE_URI_NO_VALUE,			/* attribute without "=" (name in attr) */
	PARSE_URI_BAD_ESCAPE,		/* see ParsePercentStatus (name in attr) */
	PARSE_URI_BAD_CHAR,			/* (name in attr) */
	PARSE_URI_EMPTY_VALUE,		/* (name in attr) */
	PARSE_URI_DUPLICATE,		/* an attribute given twice (name in attr) */
	PARSE_URI_NUL_IN_LABEL,		/* token or object with a %00 (name in attr) */
	PARSE_URI_LABEL_TOO_LONG,	/* token label over PARSE_TOKEN_LABEL_LEN */
	PARSE_URI_BAD_ID,			/* id neither hex nor percent-encoded */
	PARSE_URI_BAD_TYPE,			/* type not secret-key, private or public */
	PARSE_URI_UNKNOWN_ATTRIBUTE,	/* (name in attr) */
	PARSE_URI_NO_TOKEN,
	PARSE_URI_NO_OBJECT
} ParseUriStatus;

/*
 * A parsed key URI.  token and object are NUL-terminated and NUL-free; id
 * is NULL when the URI has none.  All three point into the caller's buffer.
 * attr names the attribute a failure is about, when there is one.
 */
typedef struct ParsedUri
{
	const char *token;
	const char *object;
	const unsigned char *id;
	size_t		idlen;
	ParseUriKind kind;
	char		attr[PARSE_URI_NAME_MAX + 1];
} ParsedUri;

/*
 * Parse a NUL-terminated key URI, pkcs11:token=T;object=L[;id=HEX][;type=K].
 * buf must have room for strlen(uri) + 1 bytes; the decoded values live
 * there.  An id is hex (the CKA_ID) unless it contains a "%", in which case
 * the percent-decoded bytes are the id (RFC 7512).
 */
extern ParseUriStatus ParsePkcs11Uri(const char *uri, char *buf, size_t buflen,
									 ParsedUri *parsed);

/*
 * Room ParseBase64UrlDecode needs for len characters of input.
 */
#define PARSE_BASE64URL_MAX_DECODED(len)	((len) / 4 * 3 + 3)

/*
 * Decode len characters of base64url (padding optional but, when present,
 * completing a 4-character group; unused trailing bits zero, so each value
 * has one encoding) into out, setting *outlen.  Returns false on any
 * malformation.
 */
extern bool ParseBase64UrlDecode(const char *s, size_t len, unsigned char *out,
								 size_t *outlen);

/*
 * Scan len bytes of raw JSON for what PostgreSQL's parser would turn into
 * an ERROR rather than a return code: nesting deeper than max_depth (the
 * parser recurses), and \u escapes of non-ASCII characters (converted to the
 * server encoding, which may fail).  Returns a problem description (a
 * phrase: "it is nested too deeply") or NULL.
 */
extern const char *ParseJsonPrescan(const char *s, size_t len, int max_depth);

/* True if s is 1..maxlen bytes of printable ASCII (a KMS key version). */
extern bool ParseKeyVersionIsValid(const char *s, size_t maxlen);

#endif							/* ATREST_PARSE_CORE_H */
