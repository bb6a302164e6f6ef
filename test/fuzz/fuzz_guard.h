/*
 * fuzz_guard.h
 *		Guarded buffers for the fuzz harnesses: the last byte of a buffer is
 *		the last byte before a PROT_NONE page, so that even a read or write
 *		one byte past the end inside code not built with AddressSanitizer
 *		(OpenSSL, liblz4, PostgreSQL's libpgcommon) crashes at once.
 */
#ifndef ATREST_FUZZ_GUARD_H
#define ATREST_FUZZ_GUARD_H

#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

#define PAGE				4096u

typedef struct Guarded
{
	unsigned char *base;
	size_t		maplen;
	unsigned char *p;
} Guarded;

static inline void
GuardedAlloc(Guarded *g, size_t n)
{
	size_t		pages = (n + PAGE - 1) / PAGE + 1;

	g->maplen = pages * PAGE;
	g->base = mmap(NULL, g->maplen, PROT_READ | PROT_WRITE,
				   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (g->base == MAP_FAILED)
	{
		perror("mmap");
		abort();
	}
	if (mprotect(g->base + g->maplen - PAGE, PAGE, PROT_NONE) != 0)
	{
		perror("mprotect");
		abort();
	}
	g->p = g->base + g->maplen - PAGE - n;
}

static inline void
GuardedFree(Guarded *g)
{
	munmap(g->base, g->maplen);
}

#endif							/* ATREST_FUZZ_GUARD_H */
