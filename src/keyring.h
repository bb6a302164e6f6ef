/*
 * keyring.h
 *		The per-database key hierarchy and the backend's key cache.
 */
#ifndef ATREST_KEYRING_H
#define ATREST_KEYRING_H

#define ATREST_DEFAULT_CLASS	1	/* "default": columns without a modifier */

/*
 * An unwrapped data key.  Owned by the key cache: valid until the next
 * KeyringXxx call.
 */
typedef struct DataKey
{
	uint64		hashkey;		/* class id << 32 | version */
	int32		class_id;
	uint32		version;
	unsigned char *key;			/* a secure slot; NULL: retired version */
} DataKey;

extern DataKey *KeyringActiveDataKey(int32 class_id);
extern DataKey *KeyringSealingKey(int32 class_id, uint8 *compression);
extern DataKey *KeyringFindDataKey(int32 class_id, uint32 version);
extern uint32 KeyringActiveVersion(int32 class_id);

extern int32 KeyClassLookup(const char *name, bool missing_ok);
extern char *KeyClassNameLookup(int32 class_id);

/* the service key (provider_service.c) */
extern const unsigned char *ServiceKeyGet(int32 id, bool reload, bool may_generate,
										  int32 *got_id);
extern int32 ServiceKeyNewestId(bool reload);
extern bool ServiceKeyHasId(int32 id);
extern void ServiceKeyDrop(void);
extern char *ServiceKeySource(void);

#endif							/* ATREST_KEYRING_H */
