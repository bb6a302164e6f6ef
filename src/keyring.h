/*
 * keyring.h
 *		The backend's key cache: the unwrapped database key and data keys of
 *		this database (keyring.c).
 */
#ifndef ATREST_KEYRING_H
#define ATREST_KEYRING_H

#include "pg_atrest.h"			/* pg_noreturn */

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

/* for sealing and opening values (envelope.c, types.c) */
extern DataKey *KeyringActiveDataKey(int32 class_id);
extern DataKey *KeyringSealingKey(int32 class_id, uint8 *compression);
extern DataKey *KeyringFindDataKey(int32 class_id, uint32 version);
extern uint32 KeyringActiveVersion(int32 class_id);
extern char *KeyClassNameLookup(int32 class_id);

/* for the key administration functions (keyadmin.c) */
struct RootInfo;
extern const unsigned char *KeyringDatabaseKey(const struct RootInfo **root);
extern void KeyringDrop(void);
extern void KeyringRefresh(void);
pg_noreturn extern void KeyringProviderFailed(const char *provider, const char *key_uri,
											  const char *reason);

#endif							/* ATREST_KEYRING_H */
