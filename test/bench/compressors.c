/*
 * compressors.c
 *		Micro-benchmark of candidate compressors for sealed values, over the
 *		benchmark's own documents, without a server.
 *
 * Reads documents, one per line: "\x<hex>" (a bytea as psql prints it: what
 * test/bench/compressors exports, the jsonb binary form that encrypted_jsonb
 * compresses and that TOAST compresses) or plain text (gen_analyze_result.pl
 * --json).  For every candidate (pglz as TOAST uses it, LZ4 fast at
 * accelerations 1..8 as LZ4_compress_fast, LZ4 fast through a fresh stream
 * as envelope_core.c uses it, LZ4HC at level 2 as 1.0 used it, zstd at
 * levels -5..3) it compresses and decompresses every document, checks the
 * round trip, and measures the thread's CPU time (CLOCK_THREAD_CPUTIME_ID:
 * unlike wall-clock time it does not count waiting for a CPU on a shared
 * machine).  Rounds are interleaved,
 * each visiting the candidates in a rotated order; the table shows the median
 * of the rounds and ratios against LZ4 fast at acceleration 1 (what
 * PostgreSQL's lz4 TOAST compression calls: LZ4_compress_default) and
 * against pglz.  It also times AES-256-GCM sealing and opening of each
 * candidate's output, the rest of what encrypted_jsonb does per value.
 *
 *	 compressors [--rounds N] [--csv FILE] [DOCUMENTS]	(stdin by default)
 *
 * Size is what each would store: the compressed bytes, or the raw bytes where
 * compression does not pay (pglz's own rule for pglz; for the others when the
 * output is not smaller).
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lz4.h>
#include <lz4hc.h>
#include <openssl/evp.h>
#include <zstd.h>

/* from PostgreSQL's common/pg_lzcompress.h (libpgcommon.a) */
typedef struct PGLZ_Strategy PGLZ_Strategy;
extern const PGLZ_Strategy *const PGLZ_strategy_default;
extern int32_t pglz_compress(const char *source, int32_t slen, char *dest,
							 const PGLZ_Strategy *strategy);
extern int32_t pglz_decompress(const char *source, int32_t slen, char *dest,
							   int32_t rawsize, bool check_complete);

#define PGLZ_MAX_OUTPUT(_dlen)	((_dlen) + 4)

typedef enum
{
	ALG_PGLZ,
	ALG_LZ4,
	ALG_LZ4_STREAM,
	ALG_LZ4HC,
	ALG_ZSTD
} Alg;

typedef struct
{
	const char *name;
	Alg			alg;
	int			level;			/* acceleration, HC level or zstd level */
	/* results */
	double	   *comp_s;			/* per round */
	double	   *decomp_s;
	double	   *gcm_s;
	size_t		stored;			/* bytes stored over all documents */
	size_t		compressed_docs;
} Candidate;

typedef struct
{
	unsigned char *data;
	size_t		len;
} Doc;

static Doc *docs;
static size_t ndocs;
static size_t maxlen;
static size_t rawtotal;

static void *lz4_state;
static void *lz4hc_state;
static ZSTD_CCtx *zcctx;
static ZSTD_DCtx *zdctx;
static EVP_CIPHER_CTX *gcm;
static char *cbuf;
static char *dbuf;
static size_t cbuf_len;

static double
cpu_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int
hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static void
read_docs(FILE *f)
{
	char	   *line = NULL;
	size_t		cap = 0;
	ssize_t		n;
	size_t		alloc = 0;

	while ((n = getline(&line, &cap, f)) > 0)
	{
		Doc			d;

		while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
			line[--n] = '\0';
		if (n == 0)
			continue;
		if (n >= 2 && line[0] == '\\' && line[1] == 'x')
		{
			d.len = (size_t) (n - 2) / 2;
			d.data = malloc(d.len ? d.len : 1);
			for (size_t i = 0; i < d.len; i++)
			{
				int			hi = hexval(line[2 + 2 * i]);
				int			lo = hexval(line[3 + 2 * i]);

				if (hi < 0 || lo < 0)
				{
					fprintf(stderr, "compressors: bad hex in document %zu\n", ndocs + 1);
					exit(2);
				}
				d.data[i] = (unsigned char) (hi << 4 | lo);
			}
		}
		else
		{
			d.len = (size_t) n;
			d.data = malloc(d.len);
			memcpy(d.data, line, d.len);
		}
		if (ndocs == alloc)
		{
			alloc = alloc ? alloc * 2 : 1024;
			docs = realloc(docs, alloc * sizeof(Doc));
		}
		docs[ndocs++] = d;
		if (d.len > maxlen)
			maxlen = d.len;
		rawtotal += d.len;
	}
	free(line);
}

/* Compress doc into cbuf; returns the compressed length, or 0 if it does not pay. */
static size_t
compress_one(const Candidate *c, const Doc *d)
{
	int			r = 0;

	switch (c->alg)
	{
		case ALG_PGLZ:
			r = pglz_compress((const char *) d->data, (int32_t) d->len, cbuf, PGLZ_strategy_default);
			break;
		case ALG_LZ4:
			r = LZ4_compress_fast_extState(lz4_state, (const char *) d->data, cbuf, (int) d->len,
										   (int) cbuf_len, c->level);
			break;
		case ALG_LZ4_STREAM:
			{
				/* what envelope_core.c does: a fresh stream, 32-bit positions */
				LZ4_stream_t *st = LZ4_initStream(lz4_state, sizeof(LZ4_stream_t));

				r = st == NULL ? -1 : LZ4_compress_fast_continue(st, (const char *) d->data, cbuf,
																 (int) d->len, (int) cbuf_len, c->level);
				break;
			}
		case ALG_LZ4HC:
			r = LZ4_compress_HC_extStateHC(lz4hc_state, (const char *) d->data, cbuf, (int) d->len,
										   (int) cbuf_len, c->level);
			break;
		case ALG_ZSTD:
			{
				size_t		z = ZSTD_compressCCtx(zcctx, cbuf, cbuf_len, d->data, d->len, c->level);

				r = ZSTD_isError(z) ? -1 : (int) z;
				break;
			}
	}
	if (r <= 0 || (size_t) r >= d->len)
		return 0;
	return (size_t) r;
}

static void
decompress_one(const Candidate *c, const Doc *d, size_t clen)
{
	long		r = -1;

	switch (c->alg)
	{
		case ALG_PGLZ:
			r = pglz_decompress(cbuf, (int32_t) clen, dbuf, (int32_t) d->len, true);
			break;
		case ALG_LZ4:
		case ALG_LZ4_STREAM:
		case ALG_LZ4HC:
			r = LZ4_decompress_safe(cbuf, dbuf, (int) clen, (int) d->len);
			break;
		case ALG_ZSTD:
			{
				size_t		z = ZSTD_decompressDCtx(zdctx, dbuf, d->len, cbuf, clen);

				r = ZSTD_isError(z) ? -1 : (long) z;
				break;
			}
	}
	if (r != (long) d->len || memcmp(dbuf, d->data, d->len) != 0)
	{
		fprintf(stderr, "compressors: %s does not round-trip\n", c->name);
		exit(1);
	}
}

/* AES-256-GCM seal then open of len bytes at p (a fixed key; only the time matters). */
static void
gcm_one(const unsigned char *p, size_t len, unsigned char *out)
{
	static const unsigned char key[32] = {1, 2, 3};
	static unsigned char iv[12];
	unsigned char tag[16];
	int			n;

	iv[0]++;
	if (EVP_EncryptInit_ex(gcm, EVP_aes_256_gcm(), NULL, key, iv) != 1 ||
		EVP_EncryptUpdate(gcm, out, &n, p, (int) len) != 1 ||
		EVP_EncryptFinal_ex(gcm, out + n, &n) != 1 ||
		EVP_CIPHER_CTX_ctrl(gcm, EVP_CTRL_GCM_GET_TAG, 16, tag) != 1)
		exit(3);
	if (EVP_DecryptInit_ex(gcm, EVP_aes_256_gcm(), NULL, key, iv) != 1 ||
		EVP_DecryptUpdate(gcm, (unsigned char *) dbuf, &n, out, (int) len) != 1 ||
		EVP_CIPHER_CTX_ctrl(gcm, EVP_CTRL_GCM_SET_TAG, 16, tag) != 1 ||
		EVP_DecryptFinal_ex(gcm, (unsigned char *) dbuf + n, &n) != 1)
		exit(3);
}

static void
run_candidate(Candidate *c, int round)
{
	double		comp = 0,
				decomp = 0,
				gcmt = 0;
	size_t		stored = 0,
				ncomp = 0;
	unsigned char *gout = malloc(cbuf_len + 16);

	for (size_t i = 0; i < ndocs; i++)
	{
		double		t0 = cpu_now(),
					t1,
					t2,
					t3;
		size_t		clen = compress_one(c, &docs[i]);

		t1 = cpu_now();
		if (clen > 0)
			decompress_one(c, &docs[i], clen);
		t2 = cpu_now();
		gcm_one(clen > 0 ? (unsigned char *) cbuf : docs[i].data, clen > 0 ? clen : docs[i].len, gout);
		t3 = cpu_now();
		comp += t1 - t0;
		decomp += t2 - t1;
		gcmt += t3 - t2;
		stored += clen > 0 ? clen : docs[i].len;
		ncomp += clen > 0;
	}
	free(gout);
	c->comp_s[round] = comp;
	c->decomp_s[round] = decomp;
	c->gcm_s[round] = gcmt;
	c->stored = stored;
	c->compressed_docs = ncomp;
}

static int
cmp_double(const void *a, const void *b)
{
	double		x = *(const double *) a,
				y = *(const double *) b;

	return x < y ? -1 : x > y;
}

static double
median(const double *v, int n)
{
	double	   *s = malloc(n * sizeof(double));
	double		m;

	memcpy(s, v, n * sizeof(double));
	qsort(s, n, sizeof(double), cmp_double);
	m = n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
	free(s);
	return m;
}

int
main(int argc, char **argv)
{
	int			rounds = 5;
	const char *csv = NULL;
	const char *input = NULL;
	Candidate	cands[32];
	int			nc = 0;
	static char names[32][24];
	int			ref_lz4 = -1,
				ref_pglz = -1;
	FILE	   *cf = NULL;

	for (int i = 1; i < argc; i++)
	{
		if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc)
			rounds = atoi(argv[++i]);
		else if (strcmp(argv[i], "--csv") == 0 && i + 1 < argc)
			csv = argv[++i];
		else if (argv[i][0] == '-' && argv[i][1] != '\0')
		{
			fprintf(stderr, "usage: compressors [--rounds N] [--csv FILE] [DOCUMENTS]\n");
			return 2;
		}
		else
			input = argv[i];
	}
	if (rounds < 1)
		rounds = 1;
	if (input && strcmp(input, "-") != 0)
	{
		FILE	   *f = fopen(input, "r");

		if (!f)
		{
			perror(input);
			return 2;
		}
		read_docs(f);
		fclose(f);
	}
	else
		read_docs(stdin);
	if (ndocs == 0)
	{
		fprintf(stderr, "compressors: no documents\n");
		return 2;
	}

	/* the candidates */
	cands[nc++] = (Candidate) {.name = "pglz (TOAST default)", .alg = ALG_PGLZ, .level = 0};
	ref_pglz = nc - 1;
	for (int a = 1; a <= 8; a++)
	{
		snprintf(names[nc], sizeof(names[nc]), "lz4 fast accel %d", a);
		cands[nc] = (Candidate) {.name = names[nc], .alg = ALG_LZ4, .level = a};
		if (a == 1)
			ref_lz4 = nc;
		nc++;
	}
	cands[nc++] = (Candidate) {.name = "lz4 fast, stream (ours)", .alg = ALG_LZ4_STREAM, .level = 1};
	cands[nc++] = (Candidate) {.name = "lz4hc level 2 (1.0)", .alg = ALG_LZ4HC, .level = 2};
	for (int l = -5; l <= 3; l++)
	{
		if (l == 0)
			continue;			/* 0 means the default level, 3 */
		snprintf(names[nc], sizeof(names[nc]), "zstd level %d", l);
		cands[nc] = (Candidate) {.name = names[nc], .alg = ALG_ZSTD, .level = l};
		nc++;
	}
	for (int i = 0; i < nc; i++)
	{
		cands[i].comp_s = calloc(rounds, sizeof(double));
		cands[i].decomp_s = calloc(rounds, sizeof(double));
		cands[i].gcm_s = calloc(rounds, sizeof(double));
	}

	cbuf_len = maxlen + maxlen / 8 + 1024;
	if (ZSTD_compressBound(maxlen) > cbuf_len)
		cbuf_len = ZSTD_compressBound(maxlen);
	if ((size_t) LZ4_compressBound((int) maxlen) > cbuf_len)
		cbuf_len = LZ4_compressBound((int) maxlen);
	if (PGLZ_MAX_OUTPUT(maxlen) > cbuf_len)
		cbuf_len = PGLZ_MAX_OUTPUT(maxlen);
	cbuf = malloc(cbuf_len);
	dbuf = malloc(maxlen + 16);
	lz4_state = malloc(LZ4_sizeofState());
	lz4hc_state = malloc(LZ4_sizeofStateHC());
	zcctx = ZSTD_createCCtx();
	zdctx = ZSTD_createDCtx();
	gcm = EVP_CIPHER_CTX_new();

	/* one untimed warm-up pass over everything (page faults, caches, OpenSSL init) */
	for (int i = 0; i < nc; i++)
		run_candidate(&cands[i], 0);

	for (int r = 0; r < rounds; r++)
	{
		for (int k = 0; k < nc; k++)
			run_candidate(&cands[(k + r) % nc], r);
		fprintf(stderr, "round %d of %d done\n", r + 1, rounds);
	}

	printf("%zu documents, %.1f KB on average (%zu bytes); CPU time per document, median of %d interleaved rounds\n",
		   ndocs, rawtotal / 1024.0 / ndocs, rawtotal, rounds);
	printf("libraries: lz4 %s, zstd %s, pglz from PostgreSQL's libpgcommon, %s\n\n",
		   LZ4_versionString(), ZSTD_versionString(), OpenSSL_version(OPENSSL_VERSION));
	printf("%-22s %7s %9s %8s %8s %8s %8s %10s %10s %10s %10s\n",
		   "compressor", "ratio", "bytes/doc", "comp us", "dec us", "c+d us", "gcm us",
		   "c+d/lz4", "size/lz4", "c+d/pglz", "size/pglz");
	if (csv)
	{
		cf = fopen(csv, "w");
		if (cf)
			fprintf(cf, "compressor,alg,level,docs,raw_bytes,stored_bytes,compressed_docs,comp_us,decomp_us,gcm_us,cd_vs_lz4,size_vs_lz4,cd_vs_pglz,size_vs_pglz\n");
	}
	{
		double		lz4_cd = median(cands[ref_lz4].comp_s, rounds) + median(cands[ref_lz4].decomp_s, rounds);
		double		pglz_cd = median(cands[ref_pglz].comp_s, rounds) + median(cands[ref_pglz].decomp_s, rounds);

		for (int i = 0; i < nc; i++)
		{
			Candidate  *c = &cands[i];
			double		cm = median(c->comp_s, rounds) / ndocs * 1e6;
			double		dm = median(c->decomp_s, rounds) / ndocs * 1e6;
			double		gm = median(c->gcm_s, rounds) / ndocs * 1e6;
			double		cd = (cm + dm) * ndocs / 1e6;

			printf("%-22s %6.2fx %9.0f %8.1f %8.1f %8.1f %8.1f %9.2fx %9.3fx %9.2fx %9.3fx\n",
				   c->name, (double) rawtotal / c->stored, (double) c->stored / ndocs, cm, dm, cm + dm, gm,
				   cd / lz4_cd, (double) c->stored / cands[ref_lz4].stored,
				   cd / pglz_cd, (double) c->stored / cands[ref_pglz].stored);
			if (cf)
				fprintf(cf, "%s,%s,%d,%zu,%zu,%zu,%zu,%.3f,%.3f,%.3f,%.4f,%.4f,%.4f,%.4f\n",
						c->name, c->alg == ALG_PGLZ ? "pglz" : c->alg == ALG_LZ4 ? "lz4" :
						c->alg == ALG_LZ4_STREAM ? "lz4stream" :
						c->alg == ALG_LZ4HC ? "lz4hc" : "zstd", c->level, ndocs, rawtotal, c->stored,
						c->compressed_docs, cm, dm, gm, cd / lz4_cd,
						(double) c->stored / cands[ref_lz4].stored, cd / pglz_cd,
						(double) c->stored / cands[ref_pglz].stored);
		}
	}
	if (cf)
		fclose(cf);
	return 0;
}
