/*
 * provider_command.c
 *		The command root-key provider: wrap and unwrap through a KMS adapter.
 *
 * Cloud KMS services (Azure Key Vault, AWS KMS, Vault transit) are reached
 * through an adapter program named by atrest.kms_command.  Each operation
 * runs the program once, writes one JSON request to its standard input and
 * reads one JSON answer from its standard output; docs/kms-command-protocol.md
 * is the contract.  The program is started with fork/exec (no shell), in a
 * session and process group of its own, with only the three pipes open and
 * default signal dispositions, and nothing but its path on its command line.
 *
 * Invariants: every child is reaped before we return or rethrow, whatever
 * happens (timeout, oversized output, query cancel, backend exit), and its
 * process group is killed before it is reaped, so no adapter process or
 * zombie outlives the call.  Failures never ERROR: they come back as false
 * with a palloc'd reason that carries no wrapped or unwrapped bytes, only
 * the adapter's first line of stderr, which the adapter must keep free of
 * secrets.
 */
#include "postgres.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#include <sys/syscall.h>
#endif

#include "common/jsonapi.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/memutils.h"

#include "kms_answer.h"
#include "parse_core.h"
#include "provider.h"

/* Longest key URI and key version we accept, in bytes. */
#define KMS_MAX_URI_LEN			1024

/* Longest value we send; the key ring sends about 61 bytes. */
#define KMS_MAX_VALUE_LEN		8192

/* Caps on what we read back from the adapter. */
#define KMS_MAX_STDOUT			(64 * 1024)
#define KMS_MAX_STDERR_KEPT		4096
#define KMS_MAX_REASON_LINE		200

/* Longest single sleep in the wait loop, so a lost wakeup costs little. */
#define KMS_POLL_SLICE_MS		100

/* Settings. */
static char *kms_command = NULL;
static int	kms_timeout = 10;

/*
 * The adapter currently running, so that a backend exit in the middle of a
 * run (FATAL does not unwind through PG_CATCH) still kills and reaps it.
 */
static pid_t ActiveChildPid = 0;
static bool ExitCallbackRegistered = false;

typedef enum KmsOperation
{
	KMS_OP_WRAP,
	KMS_OP_UNWRAP,
	KMS_OP_VERSION
} KmsOperation;

static const char *const KmsOperationNames[] = {"wrap", "unwrap", "version"};

/* State of one adapter run; lives in the run's memory context. */
typedef struct KmsRun
{
	pid_t		pid;
	int			stdin_fd;		/* our ends of the pipes, -1 once closed */
	int			stdout_fd;
	int			stderr_fd;
	const char *request;
	size_t		request_len;
	size_t		request_sent;
	StringInfoData out;
	StringInfoData err;
	bool		out_overflow;
	bool		exited;			/* child is a zombie (seen with WNOWAIT) */
	bool		timed_out;
	bool		reaped;
	bool		status_lost;	/* someone else reaped it */
	int			status;			/* waitpid status once reaped */
} KmsRun;

static const char Base64UrlAlphabet[] =
"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/*
 * Why a key URI is unacceptable, or NULL if it is fine: non-empty, at most
 * KMS_MAX_URI_LEN bytes, valid UTF-8, no control characters.
 */
static const char *
KeyUriProblem(const char *key_uri)
{
	size_t		len;

	if (key_uri == NULL || key_uri[0] == '\0')
		return "The key URI is empty.";
	len = strlen(key_uri);
	if (len > KMS_MAX_URI_LEN)
		return "The key URI is longer than 1024 bytes.";
	for (size_t i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) key_uri[i];

		if (c < 0x20 || c == 0x7f)
			return "The key URI contains a control character.";
	}
	if (!pg_verify_mbstr(PG_UTF8, key_uri, (int) len, true))
		return "The key URI is not valid UTF-8.";
	return NULL;
}

/* True if s is a key version we accept: 1..KMS_MAX_KID_LEN printable ASCII. */
static bool
KeyVersionIsValid(const char *s)
{
	return ParseKeyVersionIsValid(s, KMS_MAX_KID_LEN);
}

/* Append the unpadded base64url encoding of data to buf. */
static void
AppendBase64Url(StringInfo buf, const unsigned char *data, size_t len)
{
	size_t		i;

	for (i = 0; i + 2 < len; i += 3)
	{
		uint32		v = (data[i] << 16) | (data[i + 1] << 8) | data[i + 2];

		appendStringInfoChar(buf, Base64UrlAlphabet[(v >> 18) & 63]);
		appendStringInfoChar(buf, Base64UrlAlphabet[(v >> 12) & 63]);
		appendStringInfoChar(buf, Base64UrlAlphabet[(v >> 6) & 63]);
		appendStringInfoChar(buf, Base64UrlAlphabet[v & 63]);
	}
	if (len - i == 1)
	{
		uint32		v = data[i] << 16;

		appendStringInfoChar(buf, Base64UrlAlphabet[(v >> 18) & 63]);
		appendStringInfoChar(buf, Base64UrlAlphabet[(v >> 12) & 63]);
	}
	else if (len - i == 2)
	{
		uint32		v = (data[i] << 16) | (data[i + 1] << 8);

		appendStringInfoChar(buf, Base64UrlAlphabet[(v >> 18) & 63]);
		appendStringInfoChar(buf, Base64UrlAlphabet[(v >> 12) & 63]);
		appendStringInfoChar(buf, Base64UrlAlphabet[(v >> 6) & 63]);
	}
}

/*
 * The first non-empty line of the adapter's stderr, at most
 * KMS_MAX_REASON_LINE bytes, with anything but printable ASCII replaced by
 * '?'; or a placeholder when it said nothing.
 */
static char *
StderrLine(const StringInfo err)
{
	const char *p = err->data;
	const char *end = err->data + err->len;
	StringInfoData line;

	while (p < end && (*p == '\n' || *p == '\r' || *p == ' ' || *p == '\t'))
		p++;
	if (p == end)
		return pstrdup("(no message on standard error)");

	initStringInfo(&line);
	while (p < end && *p != '\n' && *p != '\r' && line.len < KMS_MAX_REASON_LINE)
	{
		unsigned char c = (unsigned char) *p++;

		appendStringInfoChar(&line, (c >= 0x20 && c <= 0x7e) ? (char) c : '?');
	}
	while (line.len > 0 && line.data[line.len - 1] == ' ')
		line.data[--line.len] = '\0';
	return line.data;
}

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
 * Kill the adapter's process group (and the adapter itself, in case it has
 * not reached setsid yet) and reap it.  Safe to call on any run state; also
 * used from the PG_CATCH path, so it must not ERROR.
 */
static void
KillAndReap(KmsRun *run)
{
	if (run->pid > 0 && !run->reaped)
	{
		int			status = 0;
		pid_t		rc;

		(void) kill(-run->pid, SIGKILL);
		(void) kill(run->pid, SIGKILL);
		while ((rc = waitpid(run->pid, &status, 0)) < 0 && errno == EINTR)
			;
		run->status = status;
		run->status_lost = (rc != run->pid);
		run->reaped = true;
		ActiveChildPid = 0;
	}
	CloseFd(&run->stdin_fd);
	CloseFd(&run->stdout_fd);
	CloseFd(&run->stderr_fd);
}

/* on_proc_exit callback: kill and reap an adapter left running by a FATAL. */
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
 * on 0/1/2, close everything else and exec the adapter with no arguments.
 * On failure, send errno over exec_fd (close-on-exec, so it stays silent on
 * success) and _exit.  No palloc, no ereport: this is a copy of a backend.
 */
static void
ExecAdapterChild(const char *path, pid_t parent,
				 int in_fd, int out_fd, int err_fd, int exec_fd)
{
	struct sigaction sa;
	sigset_t	empty;
	char	   *argv[2];
	int			saved_errno;
	int			report_fd = exec_fd;

	/*
	 * Backends ignore SIGPIPE and handle most other signals; ignored signals
	 * would stay ignored across exec.  Give the adapter default handling and
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

	argv[0] = unconstify(char *, path);
	argv[1] = NULL;
	execv(path, argv);

fail:
	saved_errno = errno;
	if (write(exec_fd >= 0 ? exec_fd : report_fd, &saved_errno, sizeof(saved_errno)) < 0)
		_exit(127);				/* nothing more we can say */
	_exit(127);
}

/*
 * Read what is available on *fd into buf (up to "cap" bytes kept; beyond
 * that, stdout sets *overflow and stderr is discarded).  Closes *fd at EOF
 * or on a hard error.
 */
static void
ReadAvailable(int *fd, StringInfo buf, size_t cap, bool *overflow)
{
	char		chunk[4096];

	/* A bounded number of reads, so a chatty grandchild cannot trap us. */
	for (int i = 0; i < 64 && *fd >= 0; i++)
	{
		ssize_t		n = read(*fd, chunk, sizeof(chunk));

		if (n > 0)
		{
			size_t		room = (buf->len < (int) cap) ? cap - buf->len : 0;

			if ((size_t) n > room)
			{
				if (overflow)
					*overflow = true;
				n = room;
			}
			if (n > 0)
				appendBinaryStringInfo(buf, chunk, (int) n);
			if (overflow && *overflow)
				return;
		}
		else if (n == 0)
			CloseFd(fd);
		else if (errno == EINTR)
			continue;
		else if (errno == EAGAIN || errno == EWOULDBLOCK)
			return;
		else
			CloseFd(fd);
	}
}

/* Write as much of the request as the pipe takes; close stdin when done. */
static void
WriteAvailable(KmsRun *run)
{
	while (run->stdin_fd >= 0 && run->request_sent < run->request_len)
	{
		ssize_t		n = write(run->stdin_fd, run->request + run->request_sent,
							  run->request_len - run->request_sent);

		if (n > 0)
			run->request_sent += n;
		else if (n < 0 && errno == EINTR)
			continue;
		else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		else
		{
			/* EPIPE and the like: the adapter stopped reading; its exit tells. */
			CloseFd(&run->stdin_fd);
			return;
		}
	}
	if (run->request_sent >= run->request_len)
		CloseFd(&run->stdin_fd);
}

/*
 * Exchange data with the running adapter until it exits, its output
 * overflows or the deadline passes.  Checks for interrupts between waits;
 * the caller kills and reaps the child if that throws.
 */
static void
ServeAdapter(KmsRun *run, int64 deadline)
{
	for (;;)
	{
		struct pollfd fds[3];
		int			nfds = 0;
		int64		remaining;
		siginfo_t	info;
		int			rc;

		CHECK_FOR_INTERRUPTS();

		/* Has the adapter exited?  WNOWAIT keeps its pid (and group) ours. */
		memset(&info, 0, sizeof(info));
		rc = waitid(P_PID, (id_t) run->pid, &info, WEXITED | WNOHANG | WNOWAIT);
		if (rc < 0 && errno == ECHILD)
		{
			/*
			 * Someone else reaped it.  Its pid may already be reused, so
			 * signal nothing from now on.
			 */
			run->reaped = true;
			run->status_lost = true;
			ActiveChildPid = 0;
		}
		if ((rc == 0 && info.si_pid == run->pid) || run->status_lost)
		{
			/* Whatever it wrote before exiting is in the pipes now. */
			ReadAvailable(&run->stdout_fd, &run->out, KMS_MAX_STDOUT, &run->out_overflow);
			ReadAvailable(&run->stderr_fd, &run->err, KMS_MAX_STDERR_KEPT, NULL);
			run->exited = true;
			return;
		}

		if (run->out_overflow)
			return;

		remaining = deadline - MonotonicMs();
		if (remaining <= 0)
		{
			run->timed_out = true;
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
		rc = poll(fds, nfds, (int) Min(remaining, nfds > 0 ? KMS_POLL_SLICE_MS : 5));
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
				ReadAvailable(&run->stdout_fd, &run->out, KMS_MAX_STDOUT, &run->out_overflow);
			else if (fds[i].fd == run->stderr_fd)
				ReadAvailable(&run->stderr_fd, &run->err, KMS_MAX_STDERR_KEPT, NULL);
		}
	}
}

/*
 * Check that atrest.kms_command names something we can run.  Returns a
 * reason or NULL.  The reason does not repeat the path: it may be shown to
 * users who may not read the superuser-only setting.
 */
static char *
CommandProblem(void)
{
	struct stat st;

	if (kms_command == NULL || kms_command[0] == '\0')
		return pstrdup("atrest.kms_command is not set; set it to the absolute path of a KMS adapter program");
	if (stat(kms_command, &st) != 0)
		return psprintf("atrest.kms_command cannot be used: %s", strerror(errno));
	if (!S_ISREG(st.st_mode))
		return pstrdup("atrest.kms_command does not name a regular file");
	if (access(kms_command, X_OK) != 0)
		return psprintf("atrest.kms_command is not executable by the server: %s",
						strerror(errno));
	return NULL;
}

/*
 * Run the adapter once with "request" on its stdin.  On success returns true
 * with its stdout in *answer (palloc'd, NUL-terminated, *answer_len bytes).
 * On failure returns false with a reason.  Never leaves a child behind;
 * rethrows a query cancel after killing and reaping the child.
 */
static bool
RunAdapter(KmsOperation op, const char *request, size_t request_len,
		   char **answer, int *answer_len, char **reason)
{
	const char *opname = KmsOperationNames[op];
	char	   *problem;
	int			in_pipe[2] = {-1, -1};
	int			out_pipe[2] = {-1, -1};
	int			err_pipe[2] = {-1, -1};
	int			exec_pipe[2] = {-1, -1};
	KmsRun	   *run;
	int			exec_errno = 0;
	ssize_t		n;
	int64		deadline;
	struct sigaction old_chld;
	volatile bool restore_chld = false;
	int			timeout_s = kms_timeout;
	pid_t		parent = getpid();

	if ((problem = CommandProblem()) != NULL)
	{
		*reason = problem;
		return false;
	}

	if (!ExitCallbackRegistered)
	{
		on_proc_exit(KillActiveChildAtExit, (Datum) 0);
		ExitCallbackRegistered = true;
	}

	if (pipe2(in_pipe, O_CLOEXEC) != 0 || pipe2(out_pipe, O_CLOEXEC) != 0 ||
		pipe2(err_pipe, O_CLOEXEC) != 0 || pipe2(exec_pipe, O_CLOEXEC) != 0)
	{
		*reason = psprintf("could not create pipes for the kms command: %s",
						   strerror(errno));
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

	run = palloc0(sizeof(KmsRun));
	run->stdin_fd = in_pipe[1];
	run->stdout_fd = out_pipe[0];
	run->stderr_fd = err_pipe[0];
	run->request = request;
	run->request_len = request_len;
	initStringInfo(&run->out);
	initStringInfo(&run->err);

	/* Don't let the child inherit unflushed stdio buffers. */
	fflush(stdout);
	fflush(stderr);

	run->pid = fork();
	if (run->pid == 0)
		ExecAdapterChild(kms_command, parent, in_pipe[0], out_pipe[1],
						 err_pipe[1], exec_pipe[1]);
	/* not reached in the child */

	CloseFd(&in_pipe[0]);
	CloseFd(&out_pipe[1]);
	CloseFd(&err_pipe[1]);
	CloseFd(&exec_pipe[1]);

	if (run->pid < 0)
	{
		*reason = psprintf("could not start the kms command: %s", strerror(errno));
		run->pid = 0;
		CloseFd(&exec_pipe[0]);
		KillAndReap(run);
		if (restore_chld)
			(void) sigaction(SIGCHLD, &old_chld, NULL);
		return false;
	}
	ActiveChildPid = run->pid;

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
		KillAndReap(run);
		if (restore_chld)
			(void) sigaction(SIGCHLD, &old_chld, NULL);
		*reason = psprintf("could not execute atrest.kms_command: %s",
						   strerror(exec_errno));
		return false;
	}

	(void) fcntl(run->stdin_fd, F_SETFL, O_NONBLOCK);
	(void) fcntl(run->stdout_fd, F_SETFL, O_NONBLOCK);
	(void) fcntl(run->stderr_fd, F_SETFL, O_NONBLOCK);

	deadline = MonotonicMs() + (int64) timeout_s * 1000;

	PG_TRY();
	{
		WriteAvailable(run);
		ServeAdapter(run, deadline);
	}
	PG_CATCH();
	{
		/* Query cancel or similar: leave no child behind, then rethrow. */
		KillAndReap(run);
		if (restore_chld)
			(void) sigaction(SIGCHLD, &old_chld, NULL);
		PG_RE_THROW();
	}
	PG_END_TRY();

	/*
	 * Kill the group in every case: on timeout or overflow to stop the
	 * adapter, after a normal exit to stop anything it left running.  The
	 * unreaped zombie keeps the group id from being reused meanwhile.
	 */
	KillAndReap(run);
	if (restore_chld)
		(void) sigaction(SIGCHLD, &old_chld, NULL);

	if (run->timed_out)
	{
		*reason = psprintf("kms command timed out after %d s on %s",
						   timeout_s, opname);
		return false;
	}
	if (run->out_overflow)
	{
		*reason = psprintf("kms command wrote more than %d bytes to standard output on %s",
						   KMS_MAX_STDOUT, opname);
		return false;
	}
	if (run->status_lost)
	{
		*reason = psprintf("the exit status of the kms command was lost on %s", opname);
		return false;
	}
	if (WIFSIGNALED(run->status))
	{
		*reason = psprintf("kms command was terminated by signal %d (%s) on %s",
						   WTERMSIG(run->status), pg_strsignal(WTERMSIG(run->status)),
						   opname);
		return false;
	}
	if (!WIFEXITED(run->status))
	{
		*reason = psprintf("kms command ended with unrecognized status %d on %s",
						   run->status, opname);
		return false;
	}
	if (WEXITSTATUS(run->status) != 0)
	{
		*reason = psprintf("kms command exited with code %d on %s: %s",
						   WEXITSTATUS(run->status), opname, StderrLine(&run->err));
		return false;
	}

	*answer = run->out.data;
	*answer_len = run->out.len;
	return true;
}

/*
 * Parse the adapter's answer (kms_answer.c).  Fills *kid and, when
 * want_value, *value (decoded) and returns NULL, or returns the reason it is
 * unacceptable.
 */
static char *
ParseAnswer(KmsOperation op, char *answer, int answer_len, bool want_value,
			char **kid, unsigned char **value, size_t *value_len)
{
	return KmsParseAnswer(KmsOperationNames[op], answer, answer_len, want_value,
						  kid, value, value_len);
}

/* Build the JSON request line for one operation. */
static void
BuildRequest(StringInfo req, KmsOperation op, const char *key_uri,
			 const char *key_version, const unsigned char *in, size_t len)
{
	appendStringInfo(req, "{\"version\":1,\"operation\":\"%s\",\"key\":",
					 KmsOperationNames[op]);
	escape_json(req, key_uri);
	if (key_version != NULL)
	{
		appendStringInfoString(req, ",\"kid\":");
		escape_json(req, key_version);
	}
	if (in != NULL)
	{
		appendStringInfoString(req, ",\"value\":\"");
		AppendBase64Url(req, in, len);
		appendStringInfoChar(req, '"');
	}
	appendStringInfoString(req, "}\n");
}

/*
 * One operation end to end: check the arguments, run the adapter, parse
 * its answer and copy the results into the caller's memory context.
 */
static bool
CommandOperation(KmsOperation op, const char *key_uri, const char *key_version,
				 const unsigned char *in, size_t len,
				 unsigned char **out, size_t *outlen,
				 char **kid_out, char **reason)
{
	MemoryContext callcxt = CurrentMemoryContext;
	MemoryContext runcxt;
	const char *opname = KmsOperationNames[op];
	const char *uri_problem;
	StringInfoData req;
	char	   *answer = NULL;
	int			answer_len = 0;
	char	   *kid = NULL;
	unsigned char *value = NULL;
	size_t		value_len = 0;
	char	   *problem = NULL;
	bool		ok;

	if ((uri_problem = KeyUriProblem(key_uri)) != NULL)
	{
		*reason = psprintf("invalid key URI for the command provider: %s", uri_problem);
		return false;
	}
	if (op == KMS_OP_UNWRAP && (key_version == NULL || !KeyVersionIsValid(key_version)))
	{
		*reason = pstrdup("invalid key version for the command provider");
		return false;
	}
	if (op != KMS_OP_VERSION && (len == 0 || len > KMS_MAX_VALUE_LEN))
	{
		*reason = psprintf("the value to %s must be 1 to %d bytes long",
						   opname, KMS_MAX_VALUE_LEN);
		return false;
	}

	/* Request, pipes' buffers and parse trees live only for this call. */
	runcxt = AllocSetContextCreate(callcxt, "atrest kms command",
								   ALLOCSET_SMALL_SIZES);
	MemoryContextSwitchTo(runcxt);

	initStringInfo(&req);
	BuildRequest(&req, op, key_uri, op == KMS_OP_UNWRAP ? key_version : NULL,
				 op == KMS_OP_VERSION ? NULL : in, len);

	/* On ERROR (query cancel) runcxt goes away with its parent context. */
	ok = RunAdapter(op, req.data, req.len, &answer, &answer_len, &problem);
	if (ok)
	{
		problem = ParseAnswer(op, answer, answer_len, op != KMS_OP_VERSION,
							  &kid, &value, &value_len);
		ok = (problem == NULL);
	}
	if (ok && op == KMS_OP_UNWRAP && strcmp(kid, key_version) != 0)
	{
		problem = psprintf("kms command answered unwrap with key version \"%s\", not the one asked for",
						   kid);
		ok = false;
	}

	MemoryContextSwitchTo(callcxt);
	if (ok)
	{
		if (kid_out != NULL)
			*kid_out = pstrdup(kid);
		if (out != NULL)
		{
			*out = palloc(value_len);
			memcpy(*out, value, value_len);
			*outlen = value_len;
		}
	}
	else
		*reason = pstrdup(problem);

	/* Unwrapped bytes are still ciphertext, but leave no copy behind. */
	if (value != NULL)
		explicit_bzero(value, value_len);
	if (answer != NULL)
		explicit_bzero(answer, answer_len);
	MemoryContextDelete(runcxt);
	return ok;
}

/* validate_uri: the shape check of KeyUriProblem, as an ERROR. */
static void
CommandValidateUri(const char *key_uri)
{
	const char *problem = KeyUriProblem(key_uri);

	if (problem != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid key URI for the command provider"),
				 errdetail("%s", problem),
				 errhint("A command provider key URI is any string the KMS adapter understands, such as \"kms:openssl/cmk1\" or \"https://myvault.vault.azure.net/keys/cmk1\".")));
}

/* wrap: the adapter encrypts under the key's current version and names it. */
static bool
CommandWrap(const char *key_uri, const unsigned char *in, size_t len,
			unsigned char **out, size_t *outlen, char **key_version, char **reason)
{
	return CommandOperation(KMS_OP_WRAP, key_uri, NULL, in, len,
							out, outlen, key_version, reason);
}

/* unwrap: the adapter decrypts with the key version that wrap named. */
static bool
CommandUnwrap(const char *key_uri, const char *key_version,
			  const unsigned char *in, size_t len,
			  unsigned char **out, size_t *outlen, char **reason)
{
	return CommandOperation(KMS_OP_UNWRAP, key_uri, key_version, in, len,
							out, outlen, NULL, reason);
}

/* current_version: the version the adapter's wrap would use now. */
static bool
CommandCurrentVersion(const char *key_uri, char **key_version, char **reason)
{
	return CommandOperation(KMS_OP_VERSION, key_uri, NULL, NULL, 0,
							NULL, NULL, key_version, reason);
}

/* The provider keeps no state between calls: each run starts afresh. */
static void
CommandReset(void)
{
}

const AtrestProvider AtrestCommandProvider = {
	"command",
	CommandValidateUri,
	CommandWrap,
	CommandUnwrap,
	CommandCurrentVersion,
	CommandReset
};

/* Define the provider's settings; called from _PG_init. */
void
CommandProviderInit(void)
{
	DefineCustomStringVariable("atrest.kms_command",
							   "Path of the KMS adapter program used by the command provider.",
							   "The program is run without arguments for each wrap, unwrap "
							   "or version request; it reads one JSON request on standard input "
							   "and writes one JSON answer on standard output. "
							   "It must be an absolute path. Empty disables the command provider.",
							   &kms_command,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   CheckAbsolutePathSetting, NULL, NULL);

	DefineCustomIntVariable("atrest.kms_timeout",
							"Time limit for one run of the KMS adapter program.",
							"A run that has not finished by then is killed with its process "
							"group and reported as a failure.",
							&kms_timeout,
							10, 1, 600,
							PGC_SUSET,
							GUC_UNIT_S,
							NULL, NULL, NULL);
}
