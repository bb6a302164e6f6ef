/*
 * provider_service.c
 *		The service key: the default root of every database's key hierarchy.
 *
 * The service key comes from atrest.service_key_command (a program that
 * prints it, like ssl_passphrase_command), else atrest.service_key_file, else
 * a file generated on first use at $PGDATA/pg_atrest/service.key.  The key is
 * 64 hexadecimal digits; it is decoded straight into a locked key slot and
 * the text it came in is wiped from the stack.
 *
 * Generation is race-free: each backend writes a private temporary file and
 * link()s it into place, which fails if another backend got there first; the
 * loser removes its file and reads the winner's.
 */
#include "postgres.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "miscadmin.h"
#include "storage/fd.h"
#include "utils/memutils.h"

#include "keyring.h"
#include "pg_atrest.h"
#include "secure_mem.h"

#define SERVICE_KEY_DIR		"pg_atrest"
#define SERVICE_KEY_NAME	"service.key"
#define KEY_TEXT_MAX		256

static unsigned char *service_key = NULL;

void
ServiceKeyInit(void)
{
	/* nothing to set up before first use: the key is loaded lazily */
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

static void
ServiceKeyFail(const char *detail_fmt, const char *arg)
{
	ereport(ERROR,
			(errcode(ERRCODE_ATREST_KEY_UNAVAILABLE),
			 errmsg("service key is unavailable"),
			 errdetail(detail_fmt, arg),
			 errhint("Check atrest.service_key_command and atrest.service_key_file.")));
}

/* Read a key file into "key"; ereport(ERROR) if it cannot be used. */
static void
ReadKeyFile(const char *path, unsigned char *key)
{
	char		text[KEY_TEXT_MAX];
	struct stat st;
	int			fd;
	ssize_t		n;
	bool		ok;

	fd = OpenTransientFile(path, O_RDONLY | PG_BINARY);
	if (fd < 0)
		ereport(ERROR,
				(errcode(ERRCODE_ATREST_KEY_UNAVAILABLE),
				 errmsg("service key is unavailable"),
				 errdetail("Could not open service key file \"%s\": %m.", path)));
	if (fstat(fd, &st) == 0 && st.st_uid == geteuid() &&
		(st.st_mode & (S_IRWXG | S_IRWXO)) != 0)
	{
		CloseTransientFile(fd);
		ServiceKeyFail("Service key file \"%s\" has group or world access; it must be mode 0600 or stricter.",
					   path);
	}
	n = read(fd, text, sizeof(text));
	CloseTransientFile(fd);
	ok = (n > 0 && n < (ssize_t) sizeof(text) && DecodeKeyText(text, n, key));
	explicit_bzero(text, sizeof(text));
	if (!ok)
		ServiceKeyFail("Service key file \"%s\" does not hold 64 hexadecimal digits.", path);
}

/* Run atrest.service_key_command and decode what it prints. */
static void
RunKeyCommand(const char *command, unsigned char *key)
{
	char		text[KEY_TEXT_MAX];
	FILE	   *fh;
	size_t		n;
	int			rc;
	bool		ok;

	fflush(NULL);
	fh = OpenPipeStream(command, "r");
	if (fh == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_ATREST_KEY_UNAVAILABLE),
				 errmsg("service key is unavailable"),
				 errdetail("Could not run atrest.service_key_command: %m.")));
	/* unbuffered, so the key text lands only in our wiped stack buffer */
	setvbuf(fh, NULL, _IONBF, 0);
	n = fread(text, 1, sizeof(text), fh);
	rc = ClosePipeStream(fh);
	ok = (rc == 0 && n > 0 && n < sizeof(text) && DecodeKeyText(text, n, key));
	explicit_bzero(text, sizeof(text));
	if (rc != 0)
	{
		char	   *reason = wait_result_to_str(rc);

		ServiceKeyFail("atrest.service_key_command failed: %s.", reason);
	}
	if (!ok)
		ServiceKeyFail("%s did not print 64 hexadecimal digits.", "atrest.service_key_command");
}

/*
 * Make sure $PGDATA/pg_atrest/service.key exists, generating it if needed.
 * Several backends may race here; link() lets exactly one win.
 */
static char *
EnsureGeneratedKeyFile(void)
{
	char	   *dir = psprintf("%s/%s", DataDir, SERVICE_KEY_DIR);
	char	   *path = psprintf("%s/%s", dir, SERVICE_KEY_NAME);
	char	   *tmp;
	unsigned char raw[ATREST_KEY_LEN];
	char		text[ATREST_KEY_LEN * 2 + 2];
	int			fd;
	bool		ok;

	if (access(path, F_OK) == 0)
		return path;

	if (MakePGDirectory(dir) < 0 && errno != EEXIST)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not create directory \"%s\": %m", dir)));

	tmp = psprintf("%s/%s.%d.tmp", dir, SERVICE_KEY_NAME, MyProcPid);
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
	return path;
}

/*
 * The service key, loading it if this backend does not hold it yet or if
 * "reload" is set.  The returned slot stays valid until ServiceKeyDrop.
 * ereport(ERROR, AT001) if it cannot be had.
 */
const unsigned char *
ServiceKeyGet(bool reload)
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
			ReadKeyFile(EnsureGeneratedKeyFile(), key);
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
