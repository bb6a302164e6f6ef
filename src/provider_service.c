/*
 * provider_service.c
 *		The service key: the default root of every database's key hierarchy.
 *
 * The service key comes from atrest.service_key_command (a shell command that
 * prints it, like ssl_passphrase_command), else atrest.service_key_file, else
 * a file generated on first use at $PGDATA/pg_atrest/service.key.  The key is
 * 64 hexadecimal digits; it is decoded straight into a locked key slot and
 * the text it came in is wiped from the stack.
 *
 * The command runs through subprocess.c: within atrest.service_key_timeout,
 * cancellable, its process group killed and reaped whatever happens, its
 * output read straight into a stack buffer.  Key files must pass
 * SecretFilePermissionProblem (PostgreSQL's rule for ssl_key_file).  Error
 * details that name a path or quote the command's stderr go to the server
 * log only; the client gets the same sentence without them.
 *
 * Generation is race-free: each backend writes a private temporary file and
 * link()s it into place, which fails if another backend got there first; the
 * loser removes its file and reads the winner's.  It happens only for a
 * database that has no database key yet: when the file is missing under a
 * database whose keys it wraps (a restore or standby that lost it), a new key
 * would open nothing, so we refuse and say what to restore.  Paths of the
 * generated file are relative to the data directory (the backend's working
 * directory), so messages show no absolute path.
 */
#include "postgres.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/rand.h>

#include <sys/wait.h>

#include "miscadmin.h"
#include "port.h"
#include "storage/fd.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#include "keyring.h"
#include "pg_atrest.h"
#include "provider.h"
#include "secure_mem.h"
#include "subprocess.h"

#define SERVICE_KEY_DIR		"pg_atrest"
#define SERVICE_KEY_NAME	"service.key"
#define SERVICE_KEY_PATH	SERVICE_KEY_DIR "/" SERVICE_KEY_NAME
#define KEY_TEXT_MAX		256

static unsigned char *service_key = NULL;

/* Setting: time limit for atrest.service_key_command, in seconds. */
static int	service_key_timeout = 10;

/* Define the service key's own settings; the key itself is loaded lazily. */
void
ServiceKeyInit(void)
{
	DefineCustomIntVariable("atrest.service_key_timeout",
							"Time limit for one run of atrest.service_key_command.",
							"A command that has not printed the key and exited by then is killed "
							"with its process group, and the statement that needed the key fails.",
							&service_key_timeout,
							10, 1, 600,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);
}

/* Which source the service key comes from, as key_status shows it. */
char *
ServiceKeySource(void)
{
	if (atrest_service_key_command && atrest_service_key_command[0])
		return pstrdup("atrest.service_key_command");
	if (atrest_service_key_file && atrest_service_key_file[0])
		return psprintf("atrest.service_key_file (%s)", atrest_service_key_file);
	return psprintf("generated file %s/%s/%s beside the data (for trying pg_atrest out, not for production)",
					DataDir, SERVICE_KEY_DIR, SERVICE_KEY_NAME);
}

/* The value of one hexadecimal digit, or -1 (shared with provider_pkcs11.c). */
int
HexDigitValue(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * Decode 64 hex digits (surrounding white space allowed) into "key".
 * Returns false if the text is anything else; never reports the text.
 */
static bool
DecodeKeyText(const char *text, size_t len, unsigned char *key)
{
	size_t		start = 0,
				end = len;

	while (start < end && isspace((unsigned char) text[start]))
		start++;
	while (end > start && isspace((unsigned char) text[end - 1]))
		end--;
	if (end - start != ATREST_KEY_LEN * 2)
		return false;
	for (int i = 0; i < ATREST_KEY_LEN; i++)
	{
		int			hi = HexDigitValue(text[start + 2 * i]);
		int			lo = HexDigitValue(text[start + 2 * i + 1]);

		if (hi < 0 || lo < 0)
		{
			explicit_bzero(key, ATREST_KEY_LEN);
			return false;
		}
		key[i] = (unsigned char) ((hi << 4) | lo);
	}
	return true;
}

static void ServiceKeyFail(const char *detail, const char *detail_log) pg_attribute_noreturn();

/*
 * Raise AT001 "service key is unavailable".  "detail" goes to the client and
 * must name no path; "detail_log", when given, replaces it in the server log
 * with the specifics (paths, the command's stderr).
 */
static void
ServiceKeyFail(const char *detail, const char *detail_log)
{
	ereport(ERROR,
			(errcode(ERRCODE_ATREST_KEY_UNAVAILABLE),
			 errmsg("service key is unavailable"),
			 errdetail_internal("%s", detail),
			 detail_log ? errdetail_log("%s", detail_log) : 0,
			 errhint("Check atrest.service_key_command and atrest.service_key_file.")));
}

/* Read a key file into "key"; ereport(ERROR) if it cannot be used. */
static void
ReadKeyFile(const char *path, unsigned char *key)
{
	char		text[KEY_TEXT_MAX];
	struct stat st;
	const char *problem;
	int			fd;
	ssize_t		n;
	bool		ok;

	fd = OpenTransientFile(path, O_RDONLY | PG_BINARY);
	if (fd < 0)
	{
		const char *err = strerror(errno);

		ServiceKeyFail(psprintf("Could not open the service key file: %s.", err),
					   psprintf("Could not open service key file \"%s\": %s.", path, err));
	}
	if (fstat(fd, &st) != 0)
	{
		const char *err = strerror(errno);

		CloseTransientFile(fd);
		ServiceKeyFail(psprintf("Could not stat the service key file: %s.", err),
					   psprintf("Could not stat service key file \"%s\": %s.", path, err));
	}
	if ((problem = SecretFilePermissionProblem(&st)) != NULL)
	{
		CloseTransientFile(fd);
		ServiceKeyFail(psprintf("The service key file cannot be used: %s.", problem),
					   psprintf("Service key file \"%s\" cannot be used: %s.", path, problem));
	}
	n = read(fd, text, sizeof(text));
	CloseTransientFile(fd);
	ok = (n > 0 && n < (ssize_t) sizeof(text) && DecodeKeyText(text, n, key));
	explicit_bzero(text, sizeof(text));
	if (!ok)
		ServiceKeyFail("The service key file does not hold 64 hexadecimal digits.",
					   psprintf("Service key file \"%s\" does not hold 64 hexadecimal digits.", path));
}

/*
 * Run atrest.service_key_command through the shell and decode what it
 * prints.  Its output lands only in a stack buffer that is wiped here, also
 * when a query cancel interrupts the run.
 */
static void
RunKeyCommand(const char *command, unsigned char *key)
{
	char		text[KEY_TEXT_MAX];
	char	   *argv[4];
	Subprocess	sp;
	char	   *reason = NULL;
	char	   *stderr_line;
	bool		started;
	bool		ok;

	argv[0] = "sh";
	argv[1] = "-c";
	argv[2] = unconstify(char *, command);
	argv[3] = NULL;
	memset(&sp, 0, sizeof(sp));
	sp.path = "/bin/sh";
	sp.argv = argv;
	sp.out = text;
	sp.out_cap = sizeof(text) - 1;
	sp.timeout_s = service_key_timeout;

	PG_TRY();
	{
		started = RunSubprocess(&sp, "atrest.service_key_command", &reason);
	}
	PG_CATCH();
	{
		explicit_bzero(text, sizeof(text));
		PG_RE_THROW();
	}
	PG_END_TRY();

	ok = (started && !sp.timed_out && !sp.out_overflow && !sp.status_lost &&
		  WIFEXITED(sp.status) && WEXITSTATUS(sp.status) == 0 &&
		  sp.out_len > 0 && DecodeKeyText(text, sp.out_len, key));
	explicit_bzero(text, sizeof(text));
	if (ok)
		return;

	if (!started)
		ServiceKeyFail("Could not run atrest.service_key_command.",
					   psprintf("%s.", reason));
	if (sp.timed_out)
		ServiceKeyFail(psprintf("atrest.service_key_command did not finish within %d s (atrest.service_key_timeout) and was killed.",
								sp.timeout_s), NULL);
	if (sp.out_overflow)
		ServiceKeyFail("atrest.service_key_command printed more than a key.", NULL);
	if (sp.status_lost)
		ServiceKeyFail("The exit status of atrest.service_key_command was lost.", NULL);
	if (!WIFEXITED(sp.status) || WEXITSTATUS(sp.status) != 0)
	{
		char	   *status = wait_result_to_str(sp.status);

		/* its stderr may name paths: server log only */
		stderr_line = sp.err.len > 0 ? SubprocessStderrLine(&sp) : NULL;
		ServiceKeyFail(psprintf("atrest.service_key_command failed: %s.", status),
					   stderr_line == NULL ? NULL :
					   psprintf("atrest.service_key_command failed: %s. Its standard error began: %s",
								status, stderr_line));
	}
	ServiceKeyFail("atrest.service_key_command did not print 64 hexadecimal digits.", NULL);
}

/*
 * Make sure pg_atrest/service.key exists in the data directory, generating
 * it if needed and "may_generate" (the database has no key yet).  Several
 * backends may race here; link() lets exactly one win.  Returns the path,
 * relative to the data directory.
 */
static const char *
EnsureGeneratedKeyFile(bool may_generate)
{
	const char *dir = SERVICE_KEY_DIR;
	const char *path = SERVICE_KEY_PATH;
	char	   *tmp;
	unsigned char raw[ATREST_KEY_LEN];
	char		text[ATREST_KEY_LEN * 2 + 2];
	int			fd;
	bool		ok;

	/* Any other failure than "missing" is reported by ReadKeyFile. */
	if (access(path, F_OK) == 0 || errno != ENOENT)
		return path;

	/*
	 * This database's keys are wrapped under the key that was in this file:
	 * a new one would open none of them, and databases created from now on
	 * would depend on a different key.  Say what to put back instead.
	 */
	if (!may_generate)
		ereport(ERROR,
				(errcode(ERRCODE_ATREST_KEY_UNAVAILABLE),
				 errmsg("service key file \"%s\" is missing", path),
				 errdetail("This database's keys are wrapped under the service key that was generated into that file in the data directory; a new key would open none of them, so none is generated."),
				 errhint("Restore \"%s\" (mode 0600) in the data directory from a backup of this server or from its primary, or set atrest.service_key_file or atrest.service_key_command to that key.",
						 path)));

	if (MakePGDirectory(dir) < 0 && errno != EEXIST)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not create directory \"%s\": %m", dir)));

	tmp = psprintf("%s.%d.tmp", path, MyProcPid);
	fd = OpenTransientFilePerm(tmp, O_WRONLY | O_CREAT | O_EXCL | PG_BINARY, S_IRUSR | S_IWUSR);
	if (fd < 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not create file \"%s\": %m", tmp)));

	if (RAND_bytes(raw, sizeof(raw)) != 1)
	{
		CloseTransientFile(fd);
		unlink(tmp);
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate random bytes for the service key")));
	}
	for (int i = 0; i < ATREST_KEY_LEN; i++)
		snprintf(text + 2 * i, 3, "%02x", raw[i]);
	text[ATREST_KEY_LEN * 2] = '\n';
	ok = (write(fd, text, ATREST_KEY_LEN * 2 + 1) == ATREST_KEY_LEN * 2 + 1 &&
		  pg_fsync(fd) == 0);
	explicit_bzero(raw, sizeof(raw));
	explicit_bzero(text, sizeof(text));
	CloseTransientFile(fd);
	if (!ok)
	{
		unlink(tmp);
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not write file \"%s\": %m", tmp)));
	}

	if (link(tmp, path) == 0)
	{
		fsync_fname(dir, true);
		ereport(LOG,
				(errmsg("pg_atrest generated a service key in \"%s\"", path),
				 errdetail("The key sits beside the data it protects: fine for trying pg_atrest out, not for production."),
				 errhint("Set atrest.service_key_file or atrest.service_key_command to keep the service key elsewhere.")));
	}
	else if (errno != EEXIST)
	{
		int			save_errno = errno;

		unlink(tmp);
		errno = save_errno;
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not link \"%s\" to \"%s\": %m", tmp, path)));
	}
	unlink(tmp);
	pfree(tmp);
	return path;
}

/*
 * The service key, loading it if this backend does not hold it yet or if
 * "reload" is set.  The returned slot stays valid until ServiceKeyDrop.
 * "may_generate": the caller is creating the database's first key, so a
 * missing generated key file may be generated; otherwise that is an error.
 * ereport(ERROR, AT001) if it cannot be had.
 */
const unsigned char *
ServiceKeyGet(bool reload, bool may_generate)
{
	unsigned char *key;

	if (service_key != NULL && !reload)
		return service_key;

	key = SecureKeyAlloc();
	PG_TRY();
	{
		if (atrest_service_key_command && atrest_service_key_command[0])
			RunKeyCommand(atrest_service_key_command, key);
		else if (atrest_service_key_file && atrest_service_key_file[0])
			ReadKeyFile(atrest_service_key_file, key);
		else
			ReadKeyFile(EnsureGeneratedKeyFile(may_generate), key);
	}
	PG_CATCH();
	{
		SecureKeyFree(key);
		PG_RE_THROW();
	}
	PG_END_TRY();

	SecureKeyFree(service_key);
	service_key = key;
	return service_key;
}

void
ServiceKeyDrop(void)
{
	SecureKeyFree(service_key);
	service_key = NULL;
}
