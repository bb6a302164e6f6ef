/*
 * keytables.h
 *		Reading and writing the key tables (atrest.key_classes,
 *		atrest.database_keys, atrest.data_keys, atrest.key_events).
 *
 * Everything here is ciphertext or metadata: wrapped keys are read into and
 * written from palloc'd memory, never an unwrapped one.
 */
#ifndef ATREST_KEYTABLES_H
#define ATREST_KEYTABLES_H

#include "datatype/timestamp.h"
#include "nodes/pg_list.h"
#include "utils/snapshot.h"
#include "utils/uuid.h"

typedef struct KeyClass
{
	int32		id;
	uint32		active_version;
	uint8		compression;	/* ENVELOPE_FLAG_LZ4, _ZSTD or 0 (none) (1.1) */
	char		name[NAMEDATALEN];
} KeyClass;

/* What the active database_keys row says (non-secret). */
typedef struct RootInfo
{
	pg_uuid_t	id;
	bool		customer;
	char	   *provider;
	char	   *key_uri;
	char	   *key_version;
	int32		service_key_id; /* of the inner wrapping; 1 in a 1.0 database */
	bytea	   *wrapped;
	TimestampTz recheck_at;		/* set by atrest.recheck_keys(); 0: never */
} RootInfo;

/* One row of atrest.data_keys. */
typedef struct DataKeyRow
{
	int32		class_id;
	uint32		version;
	pg_uuid_t	dbk_id;			/* the database key it is wrapped under */
	bytea	   *wrapped;		/* NULL: retired by atrest.retire_data_key() */
} DataKeyRow;

/* Which tables, for the key cache's relcache callback. */
extern bool KeyTablesInclude(Oid relid);
extern void KeyTablesForget(void);
extern Oid	KeyTablesDatabaseKeysOid(void);
extern Oid	KeyTablesOwner(void);

/* Reading, directly (no SQL, no privilege check) */
extern Snapshot KeyTableSnapshot(void);
extern void ReadRoot(RootInfo *info, Snapshot snapshot);
extern List *ReadKeyClasses(Snapshot snapshot);
extern List *ReadDataKeys(Snapshot snapshot);
extern bool ReadDataKey(int32 class_id, uint32 version, Snapshot snapshot,
						DataKeyRow *row);
extern bool KeyTablesHaveServiceKeyId(void);
extern bool DecodingKeyMissing(int32 class_id, uint32 version);
extern int32 KeyClassLookup(const char *name, bool missing_ok);

/* Writing, through SPI: the caller has called SPI_connect() */
extern void KeyTablesSpiExec(const char *sql, int nargs, Oid *types, Datum *values,
							 const char *nulls, int expect);
extern void LogKeyEvent(const char *operation, const char *key_class, int32 key_version,
						const char *provider, const char *key_uri, const char *kver,
						const char *outcome, const char *detail);
extern void InsertDataKey(const unsigned char *dbk, const pg_uuid_t *dbk_id,
						  int32 class_id, uint32 version);
extern void UpdateActiveRoot(const char *protector, const char *provider,
							 const char *key_uri, const char *key_version,
							 bytea *wrapped, int32 svc_id);

#endif							/* ATREST_KEYTABLES_H */
