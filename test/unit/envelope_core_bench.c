/*
 * envelope_core_bench.c
 *		Micro benchmark of the per-value cost of sealing and opening in format
 *		1 (AES-256-GCM under the data key) and format 2 (XAES-256-GCM: a key
 *		derived per value, then AES-256-GCM), through the very functions the
 *		server calls, with reused contexts as a backend has them.
 *
 *	cc -O2 -Isrc test/unit/envelope_core_bench.c src/envelope_core.c -lcrypto -llz4
 *	./a.out [values] [payload bytes] [runs]		(default 10000 13312 7)
 *
 * Prints, per format, the median over the runs of the time to seal and to
 * open all values, and the median cost per value.  Timing only: run it on a
 * quiet machine and compare medians; it asserts nothing.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>

#include "envelope_core.h"

static double
Now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int
CompareDoubles(const void *a, const void *b)
{
	double		x = *(const double *) a,
				y = *(const double *) b;

	return (x > y) - (x < y);
}

int
main(int argc, char **argv)
{
	int			values = argc > 1 ? atoi(argv[1]) : 10000;
	size_t		len = argc > 2 ? (size_t) atol(argv[2]) : 13312;
	int			runs = argc > 3 ? atoi(argv[3]) : 7;
	EVP_CIPHER_CTX *enc = EnvelopeNewContext(true);
	EVP_CIPHER_CTX *dec = EnvelopeNewContext(false);
	EVP_CIPHER_CTX *kdf = EnvelopeNewKdfContext();
	unsigned char key[ENVELOPE_KEY_LEN];
	unsigned char *plain = malloc(len);
	unsigned char *sealed = malloc(ENVELOPE_MAX_OVERHEAD + len);
	unsigned char *out = malloc(len);
	double	   *seal_t = calloc(2 * runs, sizeof(double));
	double	   *open_t = calloc(2 * runs, sizeof(double));

	if (enc == NULL || dec == NULL || kdf == NULL || !plain || !sealed || !out)
		return 2;
	memset(key, 0x42, sizeof(key));
	for (size_t i = 0; i < len; i++)
		plain[i] = (unsigned char) ("{\"text\": \"word\", \"confidence\": 0.9}, "[i % 38]);

	printf("%d values of %zu bytes, %d runs, formats alternating (medians)\n", values, len, runs);
	/* the formats alternate within each run, so that load on a shared machine hits both */
	for (int r = 0; r < runs; r++)
	{
		for (int format = ENVELOPE_FORMAT_GCM; format <= ENVELOPE_FORMAT_XAES; format++)
		{
			size_t		sealed_len = EnvelopeOverhead((uint8_t) format) + len;
			double		t0 = Now();

			for (int v = 0; v < values; v++)
			{
				EnvelopeWriteHeader(sealed, (uint8_t) format, ATREST_KIND_JSONB, 0, 3, 1);
				memset(sealed + ENVELOPE_HEADER_LEN, v, EnvelopeNonceLen((uint8_t) format));
				if (EnvelopeEncrypt(enc, kdf, key, sealed, plain, len) != ENVELOPE_OK)
					return 1;
			}
			seal_t[(format - 1) * runs + r] = Now() - t0;
			t0 = Now();
			for (int v = 0; v < values; v++)
				if (EnvelopeDecrypt(dec, kdf, key, sealed, sealed_len, out) != ENVELOPE_OK)
					return 1;
			open_t[(format - 1) * runs + r] = Now() - t0;
		}
	}
	for (int format = ENVELOPE_FORMAT_GCM; format <= ENVELOPE_FORMAT_XAES; format++)
	{
		double	   *st = seal_t + (format - 1) * runs;
		double	   *ot = open_t + (format - 1) * runs;

		qsort(st, runs, sizeof(double), CompareDoubles);
		qsort(ot, runs, sizeof(double), CompareDoubles);
		printf("format %d (%s): seal %.1f ms (%.2f us/value), open %.1f ms (%.2f us/value)\n",
			   format, format == ENVELOPE_FORMAT_XAES ? "XAES-256-GCM" : "AES-256-GCM",
			   st[runs / 2] * 1e3, st[runs / 2] * 1e6 / values,
			   ot[runs / 2] * 1e3, ot[runs / 2] * 1e6 / values);
	}
	return 0;
}
