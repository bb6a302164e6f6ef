/*
 * service_key.h
 *		The service key: the root of the key hierarchy that pg_atrest reads
 *		from atrest.service_key_command or atrest.service_key_file, by id
 *		(provider_service.c).
 */
#ifndef ATREST_SERVICE_KEY_H
#define ATREST_SERVICE_KEY_H

extern const unsigned char *ServiceKeyGet(int32 id, bool reload, bool may_generate,
										  int32 *got_id);
extern int32 ServiceKeyNewestId(bool reload);
extern bool ServiceKeyHasId(int32 id);
extern void ServiceKeyDrop(void);
extern char *ServiceKeySource(void);

#endif							/* ATREST_SERVICE_KEY_H */
