/*
 * subprocess.c
 *		Run a helper program from a backend: time limit, process-group kill,
 *		reaping, cancellable.
 *
 * The program is started with fork/exec (no shell unless the caller asks for
 * one), in a session and process group of its own, with only the three pipes
 * open and default signal dispositions.  Its standard output goes straight
 * into the caller's buffer; at most SUBPROCESS_MAX_STDERR_KEPT bytes of its
 * standard error are kept.
 *
 * Invariants: every child is reaped before we return or rethrow, whatever
 * happens (timeout, oversized output, query cancel, backend exit), and its
 * process group is killed before it is reaped, so no process it started or
 * zombie outlives the call.  Interrupts are checked between waits of at most
 * SUBPROCESS_POLL_SLICE_MS, so a query cancel takes effect promptly.
 */
#include "postgres.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#include <sys/syscall.h>
#endif

#include "miscadmin.h"
#include "storage/ipc.h"

#include "subprocess.h"

/* Longest single sleep in the wait loop, so a lost wakeup costs little. */
#define SUBPROCESS_POLL_SLICE_MS	100

/* Longest first line of stderr that SubprocessStderrLine returns. */
#define SUBPROCESS_MAX_REASON_LINE	200

/*
 * The program currently running, so that a backend exit in the middle of a
 * run (FATAL does not unwind through PG_CATCH) still kills and reaps it.
 */
static pid_t ActiveChildPid = 0;
static bool ExitCallbackRegistered = false;

/* State of one run, beside the caller's Subprocess. */
typedef struct RunState
{
	Subprocess *sp;
	pid_t		pid;
	int			stdin_fd;		/* our ends of the pipes, -1 once closed */
	int			stdout_fd;
	int			stderr_fd;
	size_t		input_sent;
	bool		reaped;
} RunState;

/* Milliseconds on the monotonic clock. */
static int64
MonotonicMs(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
CloseFd(int *fd)
{
	if (*fd >= 0)
	{
		close(*fd);
		*fd = -1;
	}
}

/*
 * Kill the program's process group (and the program itself, in case it has
 * not reached setsid yet) and reap it.  Safe to call on any run state; also
 * used from the PG_CATCH path, so it must not ERROR.
 */
static void
KillAndReap(RunState *run)
{
	if (run->pid > 0 && !run->reaped)
	{
		int			status = 0;
		pid_t		rc;

		(void) kill(-run->pid, SIGKILL);
		(void) kill(run->pid, SIGKILL);
		while ((rc = waitpid(run->pid, &status, 0)) < 0 && errno == EINTR)
			;
		run->sp->status = status;
		run->sp->status_lost = (rc != run->pid);
		run->reaped = true;
		ActiveChildPid = 0;
	}
	CloseFd(&run->stdin_fd);
	CloseFd(&run->stdout_fd);
	CloseFd(&run->stderr_fd);
}

/* on_proc_exit callback: kill and reap a program left running by a FATAL. */
static void
KillActiveChildAtExit(int code, Datum arg)
{
	if (ActiveChildPid > 0)
	{
		pid_t		pid = ActiveChildPid;

		ActiveChildPid = 0;
		(void) kill(-pid, SIGKILL);
		(void) kill(pid, SIGKILL);
		while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
			;
	}
}

/*
 * Close every descriptor from "lowfd" up.  Runs in the child between fork
 * and exec, so it only makes system calls.
 */
static void
CloseDescriptorsFrom(int lowfd)
{
	long		maxfd;

#if defined(__linux__) && defined(SYS_close_range)
	if (syscall(SYS_close_range, (unsigned int) lowfd, ~0U, 0) == 0)
		return;
#endif
	maxfd = sysconf(_SC_OPEN_MAX);
	if (maxfd < 0 || maxfd > (1L << 20))
		maxfd = 1L << 20;
	for (long fd = lowfd; fd < maxfd; fd++)
		(void) close((int) fd);
}

/*
 * The child side of fork: reset signals, start a new session, put the pipes
 * on 0/1/2, close everything else and exec the program.  On failure, send
 * errno over exec_fd (close-on-exec, so it stays silent on success) and
 * _exit.  No palloc, no ereport: this is a copy of a backend.
 */
static void
ExecChild(const char *path, char *const *argv, pid_t parent,
		  int in_fd, int out_fd, int err_fd, int exec_fd)
{
	struct sigaction sa;
	sigset_t	empty;
	int			saved_errno;
	int			report_fd = exec_fd;

	/*
	 * Backends ignore SIGPIPE and handle most other signals; ignored signals
	 * would stay ignored across exec.  Give the program default handling and
	 * an empty mask.
	 */
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_DFL;
	sigemptyset(&sa.sa_mask);
	for (int sig = 1; sig < NSIG; sig++)
		(void) sigaction(sig, &sa, NULL);
	sigemptyset(&empty);
	(void) sigprocmask(SIG_SETMASK, &empty, NULL);

	/* Own session and process group, so the parent can kill the group. */
	(void) setsid();

#ifdef __linux__
	/* Die with the backend even if it exits without running its callbacks. */
	(void) prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(127);
#endif

	/* Move our pipe ends above 2 first, so the dup2 calls cannot clobber them. */
	if ((in_fd = fcntl(in_fd, F_DUPFD_CLOEXEC, 3)) < 0 ||
		(out_fd = fcntl(out_fd, F_DUPFD_CLOEXEC, 3)) < 0 ||
		(err_fd = fcntl(err_fd, F_DUPFD_CLOEXEC, 3)) < 0 ||
		(exec_fd = fcntl(exec_fd, F_DUPFD_CLOEXEC, 3)) < 0)
		goto fail;
	if (dup2(in_fd, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(err_fd, 2) < 0)
		goto fail;
	if (exec_fd != 3)
	{
		if (dup2(exec_fd, 3) < 0)
			goto fail;
		exec_fd = 3;
	}
	if (fcntl(exec_fd, F_SETFD, FD_CLOEXEC) < 0)
		goto fail;
	CloseDescriptorsFrom(4);

	execv(path, argv);

fail:
	saved_errno = errno;
	if (write(exec_fd >= 0 ? exec_fd : report_fd, &saved_errno, sizeof(saved_errno)) < 0)
		_exit(127);				/* nothing more we can say */
	_exit(127);
}

/*
 * Read what is available on stdout into the caller's buffer.  Past out_cap,
 * sets out_overflow and stops reading.  Closes the pipe at EOF or on a hard
 * error.
 */
static void
ReadStdout(RunState *run)
{
	Subprocess *sp = run->sp;

	/* A bounded number of reads, so a chatty grandchild cannot trap us. */
	for (int i = 0; i < 64 && run->stdout_fd >= 0 && !sp->out_overflow; i++)
	{
		char		sink[64];
		size_t		room = sp->out_cap - sp->out_len;
		char	   *dst = (room > 0) ? sp->out + sp->out_len : sink;
		ssize_t		n = read(run->stdout_fd, dst, room > 0 ? room : sizeof(sink));

		if (n > 0)
		{
			if (dst == sink)
			{
				/* One byte too many is enough to know; leave no copy here. */
				explicit_bzero(sink, sizeof(sink));
				sp->out_overflow = true;
			}
			else
				sp->out_len += n;
		}
		else if (n == 0)
			CloseFd(&run->stdout_fd);
		else if (errno == EINTR)
			continue;
		else if (errno == EAGAIN || errno == EWOULDBLOCK)
			return;
		else
			CloseFd(&run->stdout_fd);
	}
}

/* Read what is available on stderr, keeping the first bytes only. */
static void
ReadStderr(RunState *run)
{
	StringInfo	err = &run->sp->err;
	char		chunk[4096];

	for (int i = 0; i < 64 && run->stderr_fd >= 0; i++)
	{
		ssize_t		n = read(run->stderr_fd, chunk, sizeof(chunk));

		if (n > 0)
		{
			size_t		room = (err->len < SUBPROCESS_MAX_STDERR_KEPT) ?
				SUBPROCESS_MAX_STDERR_KEPT - err->len : 0;

			if (n > 0 && room > 0)
				appendBinaryStringInfo(err, chunk, (int) Min((size_t) n, room));
		}
		else if (n == 0)
			CloseFd(&run->stderr_fd);
		else if (errno == EINTR)
			continue;
		else if (errno == EAGAIN || errno == EWOULDBLOCK)
			return;
		else
			CloseFd(&run->stderr_fd);
	}
}

/* Write as much of the input as the pipe takes; close stdin when done. */
static void
WriteAvailable(RunState *run)
{
	Subprocess *sp = run->sp;

	while (run->stdin_fd >= 0 && run->input_sent < sp->input_len)
	{
		ssize_t		n = write(run->stdin_fd, sp->input + run->input_sent,
							  sp->input_len - run->input_sent);

		if (n > 0)
			run->input_sent += n;
		else if (n < 0 && errno == EINTR)
			continue;
		else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		else
		{
			/* EPIPE and the like: the program stopped reading; its exit tells. */
			CloseFd(&run->stdin_fd);
			return;
		}
	}
	if (run->input_sent >= sp->input_len)
		CloseFd(&run->stdin_fd);
}

/*
 * Exchange data with the running program until it exits, its output
 * overflows or the deadline passes.  Checks for interrupts between waits;
 * the caller kills and reaps the child if that throws.
 */
static void
Serve(RunState *run, int64 deadline)
{
	Subprocess *sp = run->sp;

	for (;;)
	{
		struct pollfd fds[3];
		int			nfds = 0;
		int64		remaining;
		siginfo_t	info;
		int			rc;

		CHECK_FOR_INTERRUPTS();

		/* Has the program exited?  WNOWAIT keeps its pid (and group) ours. */
		memset(&info, 0, sizeof(info));
		rc = waitid(P_PID, (id_t) run->pid, &info, WEXITED | WNOHANG | WNOWAIT);
		if (rc < 0 && errno == ECHILD)
		{
			/*
			 * Someone else reaped it.  Its pid may already be reused, so
			 * signal nothing from now on.
			 */
			run->reaped = true;
			sp->status_lost = true;
			ActiveChildPid = 0;
		}
		if ((rc == 0 && info.si_pid == run->pid) || sp->status_lost)
		{
			/* Whatever it wrote before exiting is in the pipes now. */
			ReadStdout(run);
			ReadStderr(run);
			return;
		}

		if (sp->out_overflow)
			return;

		remaining = deadline - MonotonicMs();
		if (remaining <= 0)
		{
			sp->timed_out = true;
			return;
		}

		if (run->stdin_fd >= 0)
		{
			fds[nfds].fd = run->stdin_fd;
			fds[nfds].events = POLLOUT;
			fds[nfds++].revents = 0;
		}
		if (run->stdout_fd >= 0)
		{
			fds[nfds].fd = run->stdout_fd;
			fds[nfds].events = POLLIN;
			fds[nfds++].revents = 0;
		}
		if (run->stderr_fd >= 0)
		{
			fds[nfds].fd = run->stderr_fd;
			fds[nfds].events = POLLIN;
			fds[nfds++].revents = 0;
		}

		/*
		 * With all pipes closed we only wait for the exit, in short naps.  A
		 * signal (query cancel) interrupts poll with EINTR either way.
		 */
		rc = poll(fds, nfds, (int) Min(remaining, nfds > 0 ? SUBPROCESS_POLL_SLICE_MS : 5));
		if (rc < 0)
		{
			if (errno == EINTR)
				continue;
			/* Should not happen; fall back to napping until the deadline. */
			pg_usleep(5000L);
			continue;
		}

		for (int i = 0; i < nfds; i++)
		{
			if (fds[i].revents == 0)
				continue;
			if (fds[i].fd == run->stdin_fd)
			{
				if (fds[i].revents & (POLLERR | POLLHUP | POLLNVAL))
					CloseFd(&run->stdin_fd);
				else
					WriteAvailable(run);
			}
			else if (fds[i].fd == run->stdout_fd)
				ReadStdout(run);
			else if (fds[i].fd == run->stderr_fd)
				ReadStderr(run);
		}
	}
}

bool
RunSubprocess(Subprocess *sp, const char *what, char **reason)
{
	int			in_pipe[2] = {-1, -1};
	int			out_pipe[2] = {-1, -1};
	int			err_pipe[2] = {-1, -1};
	int			exec_pipe[2] = {-1, -1};
	RunState	run;
	int			exec_errno = 0;
	ssize_t		n;
	int64		deadline;
	struct sigaction old_chld;
	volatile bool restore_chld = false;
	pid_t		parent = getpid();

	sp->out_len = 0;
	sp->out_overflow = false;
	sp->timed_out = false;
	sp->status_lost = false;
	sp->status = 0;
	initStringInfo(&sp->err);

	if (!ExitCallbackRegistered)
	{
		on_proc_exit(KillActiveChildAtExit, (Datum) 0);
		ExitCallbackRegistered = true;
	}

	if (pipe2(in_pipe, O_CLOEXEC) != 0 || pipe2(out_pipe, O_CLOEXEC) != 0 ||
		pipe2(err_pipe, O_CLOEXEC) != 0 || pipe2(exec_pipe, O_CLOEXEC) != 0)
	{
		*reason = psprintf("could not create pipes for %s: %s", what, strerror(errno));
		for (int i = 0; i < 2; i++)
		{
			CloseFd(&in_pipe[i]);
			CloseFd(&out_pipe[i]);
			CloseFd(&err_pipe[i]);
			CloseFd(&exec_pipe[i]);
		}
		return false;
	}

	/*
	 * We need the child's exit status; if SIGCHLD is ignored, the kernel
	 * would reap it for us.  Restore default handling for the duration.
	 */
	if (sigaction(SIGCHLD, NULL, &old_chld) == 0 && old_chld.sa_handler == SIG_IGN)
	{
		struct sigaction dfl;

		memset(&dfl, 0, sizeof(dfl));
		dfl.sa_handler = SIG_DFL;
		sigemptyset(&dfl.sa_mask);
		restore_chld = (sigaction(SIGCHLD, &dfl, NULL) == 0);
	}

	memset(&run, 0, sizeof(run));
	run.sp = sp;
	run.stdin_fd = in_pipe[1];
	run.stdout_fd = out_pipe[0];
	run.stderr_fd = err_pipe[0];

	/* Don't let the child inherit unflushed stdio buffers. */
	fflush(stdout);
	fflush(stderr);

	run.pid = fork();
	if (run.pid == 0)
		ExecChild(sp->path, sp->argv, parent, in_pipe[0], out_pipe[1],
				  err_pipe[1], exec_pipe[1]);
	/* not reached in the child */

	CloseFd(&in_pipe[0]);
	CloseFd(&out_pipe[1]);
	CloseFd(&err_pipe[1]);
	CloseFd(&exec_pipe[1]);

	if (run.pid < 0)
	{
		*reason = psprintf("could not start %s: %s", what, strerror(errno));
		run.pid = 0;
		CloseFd(&exec_pipe[0]);
		KillAndReap(&run);
		if (restore_chld)
			(void) sigaction(SIGCHLD, &old_chld, NULL);
		return false;
	}
	ActiveChildPid = run.pid;

	/*
	 * Wait for exec: the pipe closes on success or carries errno on
	 * failure.  The child does nothing slow before exec, so blocking is fine.
	 */
	do
	{
		n = read(exec_pipe[0], &exec_errno, sizeof(exec_errno));
	} while (n < 0 && errno == EINTR);
	CloseFd(&exec_pipe[0]);
	if (n == sizeof(exec_errno))
	{
		KillAndReap(&run);
		if (restore_chld)
			(void) sigaction(SIGCHLD, &old_chld, NULL);
		*reason = psprintf("could not execute %s: %s", what, strerror(exec_errno));
		return false;
	}

	(void) fcntl(run.stdin_fd, F_SETFL, O_NONBLOCK);
	(void) fcntl(run.stdout_fd, F_SETFL, O_NONBLOCK);
	(void) fcntl(run.stderr_fd, F_SETFL, O_NONBLOCK);

	deadline = MonotonicMs() + (int64) sp->timeout_s * 1000;

	PG_TRY();
	{
		WriteAvailable(&run);
		Serve(&run, deadline);
	}
	PG_CATCH();
	{
		/* Query cancel or similar: leave no child behind, then rethrow. */
		KillAndReap(&run);
		if (restore_chld)
			(void) sigaction(SIGCHLD, &old_chld, NULL);
		PG_RE_THROW();
	}
	PG_END_TRY();

	/*
	 * Kill the group in every case: on timeout or overflow to stop the
	 * program, after a normal exit to stop anything it left running.  The
	 * unreaped zombie keeps the group id from being reused meanwhile.
	 */
	KillAndReap(&run);
	if (restore_chld)
		(void) sigaction(SIGCHLD, &old_chld, NULL);
	return true;
}

char *
SubprocessStderrLine(const Subprocess *sp)
{
	const char *p = sp->err.data;
	const char *end = sp->err.data + sp->err.len;
	StringInfoData line;

	while (p < end && (*p == '\n' || *p == '\r' || *p == ' ' || *p == '\t'))
		p++;
	if (p == end)
		return pstrdup("(no message on standard error)");

	initStringInfo(&line);
	while (p < end && *p != '\n' && *p != '\r' && line.len < SUBPROCESS_MAX_REASON_LINE)
	{
		unsigned char c = (unsigned char) *p++;

		appendStringInfoChar(&line, (c >= 0x20 && c <= 0x7e) ? (char) c : '?');
	}
	while (line.len > 0 && line.data[line.len - 1] == ' ')
		line.data[--line.len] = '\0';
	return line.data;
}
