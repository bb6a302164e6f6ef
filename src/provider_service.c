/*
 * provider_service.c
 *		The service key: the default root of every database's key hierarchy.
 *
 * The service key comes from atrest.service_key_command (a shell command that
 * prints it, like ssl_passphrase_command), else atrest.service_key_file, else
 * a file generated on first use at $PGDATA/pg_atrest/service.key.
 *
 * A source holds one or more versioned keys, one a line: "ID:HEX" with ID a
 * positive integer and HEX 64 hexadecimal digits; a bare "HEX" line is id 1
 * (what a generated file and every 1.0-era file hold).  Blank lines and lines
 * starting with '#' are skipped.  New wraps use the newest key (the highest
 * id); each wrapped database key records the id it was wrapped with, and
 * unwrapping asks for exactly that id (keyring.c).  The keys are decoded
 * straight into locked key slots (secure_mem.c) and the text they came in,
 * read into a stack buffer, is wiped there: no key text is ever palloc'd.
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

#include "service_key.h"
#include "pg_atrest.h"
#include "provider.h"
#include "secure_mem.h"
#include "subprocess.h"

#define SERVICE_KEY_DIR		"pg_atrest"
#define SERVICE_KEY_NAME	"service.key"
#define SERVICE_KEY_PATH	SERVICE_KEY_DIR "/" SERVICE_KEY_NAME
#define MAX_SERVICE_KEYS	32
/* room for MAX_SERVICE_KEYS lines "ID:HEX" with comments */
#define KEY_TEXT_MAX		4096

/*
 * The keys of the source as last read (ids and slot pointers are not
 * secret; the slots are).  Sorted by nothing; ids are unique.
 */
typedef struct ServiceKeySet
{
	int			n;
	int32		ids[MAX_SERVICE_KEYS];
	unsigned char *keys[MAX_SERVICE_KEYS];
} ServiceKeySet;

static ServiceKeySet service_keys;
static int	service_keys_wiped;	/* SecureMemWipeCount() when loaded */
static bool service_keys_loaded = false;

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

/* Wipe and release every slot of "set". */
static void
KeySetFree(ServiceKeySet *set)
{
	for (int i = 0; i < set->n; i++)
		SecureKeyFree(set->keys[i]);
	set->n = 0;
}

/* Decode exactly 64 hex digits at "hex" into "key"; false if they are not. */
static bool
DecodeHexKey(const char *hex, size_t len, unsigned char *key)
{
	if (len != ATREST_KEY_LEN * 2)
		return false;
	for (int i = 0; i < ATREST_KEY_LEN; i++)
	{
		int			hi = HexDigitValue(hex[2 * i]);
		int			lo = HexDigitValue(hex[2 * i + 1]);

		if (hi < 0 || lo < 0)
		{
			explicit_bzero(key, ATREST_KEY_LEN);
			return false;
		}
		key[i] = (unsigned char) ((hi << 4) | lo);
	}
	return true;
}

/*
 * Decode the text of a key source (see the file header) into "set", whose
 * slots the caller frees with KeySetFree also on failure.  Returns NULL, or
 * why the text cannot be used (a constant or palloc'd sentence naming a line
 * number at most, never the text).  Works in place: no copy of the text.
 */
static const char *
DecodeKeySource(const char *text, size_t len, ServiceKeySet *set)
{
	size_t		pos = 0;
	int			lineno = 0;

	while (pos < len)
	{
		size_t		start = pos,
					end,
					next;
		const char *colon;
		int64		id = 1;

		while (pos < len && text[pos] != '\n')
			pos++;
		end = pos;
		next = pos + 1;
		lineno++;
		while (start < end && isspace((unsigned char) text[start]))
			start++;
		while (end > start && isspace((unsigned char) text[end - 1]))
			end--;
		pos = next;
		if (start == end || text[start] == '#')
			continue;

		colon = memchr(text + start, ':', end - start);
		if (colon != NULL)
		{
			const char *p = text + start;

			if (p == colon)
				return psprintf("line %d has no key id before the colon", lineno);
			id = 0;
			for (; p < colon; p++)
			{
				if (*p < '0' || *p > '9')
					return psprintf("the key id on line %d is not a number", lineno);
				id = id * 10 + (*p - '0');
				if (id > PG_INT32_MAX)
					return psprintf("the key id on line %d is too large", lineno);
			}
			if (id < 1)
				return psprintf("the key id on line %d is not positive", lineno);
			start = colon + 1 - text;
		}
		for (int i = 0; i < set->n; i++)
			if (set->ids[i] == (int32) id)
				return psprintf("key id %d appears twice (a line without an id is id 1)",
								(int32) id);
		if (set->n >= MAX_SERVICE_KEYS)
			return psprintf("it holds more than %d keys", MAX_SERVICE_KEYS);
		set->keys[set->n] = SecureKeyAlloc();
		set->ids[set->n] = (int32) id;
		set->n++;
		if (!DecodeHexKey(text + start, end - start, set->keys[set->n - 1]))
			return psprintf("line %d does not hold 64 hexadecimal digits", lineno);
	}
	if (set->n == 0)
		return "it holds no key";
	return NULL;
}

pg_noreturn static void ServiceKeyFail(const char *detail, const char *detail_log);

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

/* Read a key file into "set"; ereport(ERROR) if it cannot be used. */
static void
ReadKeyFile(const char *path, ServiceKeySet *set)
{
	char		text[KEY_TEXT_MAX];
	struct stat st;
	const char *problem;
	int			fd;
	ssize_t		n;

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
	if (n <= 0)
		problem = "it is empty or could not be read";
	else if (n >= (ssize_t) sizeof(text))
		problem = "it is too long";
	else
		problem = DecodeKeySource(text, n, set);
	explicit_bzero(text, sizeof(text));
	if (problem != NULL)
		ServiceKeyFail(psprintf("The service key file cannot be used: %s.", problem),
					   psprintf("Service key file \"%s\" cannot be used: %s.", path, problem));
}

/*
 * Run atrest.service_key_command through the shell and decode what it
 * prints.  Its output lands only in a stack buffer that is wiped here, also
 * when a query cancel interrupts the run.
 */
static void
RunKeyCommand(const char *command, ServiceKeySet *set)
{
	char		text[KEY_TEXT_MAX];
	char	   *argv[4];
	Subprocess	sp;
	char	   *reason = NULL;
	char	   *stderr_line;
	bool		started;
	bool		ok;
	const char *problem = NULL;

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
		  WIFEXITED(sp.status) && WEXITSTATUS(sp.status) == 0 && sp.out_len > 0);
	if (ok)
		problem = DecodeKeySource(text, sp.out_len, set);
	explicit_bzero(text, sizeof(text));
	if (ok && problem == NULL)
		return;
	if (ok)
		ServiceKeyFail(psprintf("atrest.service_key_command did not print usable service keys: %s.",
								problem), NULL);

	if (!started)
		ServiceKeyFail("Could not run atrest.service_key_command.",
					   psprintf("%s.", reason));
	if (sp.timed_out)
		ServiceKeyFail(psprintf("atrest.service_key_command did not finish within %d s (atrest.service_key_timeout) and was killed.",
								sp.timeout_s), NULL);
	if (sp.out_overflow)
		ServiceKeyFail(psprintf("atrest.service_key_command printed more than %d bytes.",
								KEY_TEXT_MAX - 1), NULL);
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
	ServiceKeyFail("atrest.service_key_command printed nothing.", NULL);
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
 * Read the source into this backend's key set if it holds none yet or
 * "reload" is set.  "may_generate": the caller is creating the database's
 * first key, so a missing generated key file may be generated; otherwise
 * that is an error.  ereport(ERROR, AT001) if the source cannot be used;
 * the keys held before stay as they were then.
 */
static void
ServiceKeysLoad(bool reload, bool may_generate)
{
	ServiceKeySet set;

	/* keys wiped while the backend sat idle (keyring.c) are read again */
	if (service_keys_loaded && !reload && service_keys_wiped == SecureMemWipeCount())
		return;

	memset(&set, 0, sizeof(set));
	PG_TRY();
	{
		if (atrest_service_key_command && atrest_service_key_command[0])
			RunKeyCommand(atrest_service_key_command, &set);
		else if (atrest_service_key_file && atrest_service_key_file[0])
			ReadKeyFile(atrest_service_key_file, &set);
		else
			ReadKeyFile(EnsureGeneratedKeyFile(may_generate), &set);
	}
	PG_CATCH();
	{
		KeySetFree(&set);
		PG_RE_THROW();
	}
	PG_END_TRY();

	KeySetFree(&service_keys);
	service_keys = set;
	service_keys_loaded = true;
	service_keys_wiped = SecureMemWipeCount();
}

/* The id of the newest key of the loaded set (the highest). */
static int32
NewestId(void)
{
	int32		newest = 0;

	for (int i = 0; i < service_keys.n; i++)
		newest = Max(newest, service_keys.ids[i]);
	return newest;
}

/*
 * Service key "id" (0: the newest), loading the source if this backend holds
 * no keys yet or if "reload" is set; *got_id (when not NULL) says which id it
 * is.  The returned slot stays valid until the next ServiceKeyGet or
 * ServiceKeyDrop.  See ServiceKeysLoad for "may_generate".  ereport(ERROR,
 * AT001) if the source cannot be read or does not hold that id; the id goes
 * to the server log only, as every specific of this error does.
 */
const unsigned char *
ServiceKeyGet(int32 id, bool reload, bool may_generate, int32 *got_id)
{
	if (id == 0 && got_id == NULL)
		elog(ERROR, "pg_atrest: the newest service key asked for without its id");
	ServiceKeysLoad(reload, may_generate);
	if (id == 0)
		id = NewestId();
	for (int i = 0; i < service_keys.n; i++)
	{
		if (service_keys.ids[i] == id)
		{
			if (got_id)
				*got_id = id;
			return service_keys.keys[i];
		}
	}
	ServiceKeyFail("The service key source does not hold the key this database's key is wrapped with.",
				   psprintf("The service key source (%s) holds no key with id %d; this database's key is wrapped with service key id %d. Put that key back into the source, then run atrest.rewrap() in this database to move it to the newest key.",
							ServiceKeySource(), id, id));
	return NULL;				/* keep compiler quiet */
}

/* The id of the newest service key the source holds (loading it if needed). */
int32
ServiceKeyNewestId(bool reload)
{
	ServiceKeysLoad(reload, false);
	return NewestId();
}

/* Whether the source, as last loaded, holds service key "id". */
bool
ServiceKeyHasId(int32 id)
{
	ServiceKeysLoad(false, false);
	for (int i = 0; i < service_keys.n; i++)
		if (service_keys.ids[i] == id)
			return true;
	return false;
}

void
ServiceKeyDrop(void)
{
	KeySetFree(&service_keys);
	service_keys_loaded = false;
}
