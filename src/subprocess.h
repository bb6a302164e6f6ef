/*
 * subprocess.h
 *		Run a helper program from a backend: time limit, process-group kill,
 *		reaping, cancellable.
 *
 * Used by the service key command (provider_service.c) and the KMS adapter
 * (provider_command.c).  The program gets its own session and process
 * group, only the three pipes and default signal dispositions.  Whatever
 * happens (deadline, oversized output, query cancel, backend exit), its
 * process group is killed and the program reaped before RunSubprocess
 * returns or rethrows, so nothing it started outlives the call.
 */
#ifndef ATREST_SUBPROCESS_H
#define ATREST_SUBPROCESS_H

#include "lib/stringinfo.h"

/* How much of the program's standard error is kept. */
#define SUBPROCESS_MAX_STDERR_KEPT	4096

typedef struct Subprocess
{
	/* Set by the caller. */
	const char *path;			/* absolute path of the program to execute */
	char	   *const *argv;	/* its argument vector, NULL-terminated */
	const char *input;			/* written to its stdin, which is then closed */
	size_t		input_len;
	char	   *out;			/* its stdout goes straight here (the caller's
								 * buffer: a secret can land on the stack and
								 * be wiped there, never in palloc'd memory) */
	size_t		out_cap;
	int			timeout_s;		/* killed if still running after this */

	/* Set by RunSubprocess once the program has run. */
	size_t		out_len;		/* bytes of stdout in out */
	bool		out_overflow;	/* it wrote more than out_cap bytes */
	bool		timed_out;
	bool		status_lost;	/* someone else reaped it */
	int			status;			/* waitpid status */
	StringInfoData err;			/* the first SUBPROCESS_MAX_STDERR_KEPT bytes
								 * of its stderr (palloc'd) */
} Subprocess;

/*
 * Run sp->path and wait for it.  Returns false with a palloc'd *reason
 * (naming the program as "what", never its path) if it could not be
 * started; true once it has run, with the outcome in *sp.  A query cancel
 * or other ERROR while it runs kills and reaps it, then propagates.
 */
extern bool RunSubprocess(Subprocess *sp, const char *what, char **reason);

/*
 * The first non-empty line of its stderr, shortened and made printable
 * ASCII; or a placeholder when it said nothing.
 */
extern char *SubprocessStderrLine(const Subprocess *sp);

#endif							/* ATREST_SUBPROCESS_H */
