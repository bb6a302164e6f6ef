/*
 * kms_answer.h
 *		Parsing a KMS adapter's answer (kms_answer.c).
 *
 * Usable from the server and, with FRONTEND defined, from a program linked
 * with libpgcommon (the fuzz harness).
 */
#ifndef ATREST_KMS_ANSWER_H
#define ATREST_KMS_ANSWER_H

/* Longest key version we accept, in bytes. */
#define KMS_MAX_KID_LEN			1024

/* Deepest JSON nesting we let the parser see (it recurses). */
#define KMS_MAX_JSON_DEPTH		32

/*
 * Parse answer_len bytes of an adapter's answer to operation opname.
 * Returns NULL and sets *kid (palloc'd, a valid key version) and, when
 * want_value, *value and *value_len (palloc'd, decoded, non-empty); or
 * returns the reason it is unacceptable (palloc'd, naming opname).
 */
extern char *KmsParseAnswer(const char *opname, char *answer, int answer_len,
							bool want_value, char **kid,
							unsigned char **value, size_t *value_len);

#endif							/* ATREST_KMS_ANSWER_H */
