/*
 * secure_mem.h
 *		Locked, no-dump memory for key material.
 */
#ifndef ATREST_SECURE_MEM_H
#define ATREST_SECURE_MEM_H

#define ATREST_KEY_LEN	32		/* every key pg_atrest holds is AES-256 */

extern unsigned char *SecureKeyAlloc(void);
extern void SecureKeyFree(unsigned char *key);
extern bool SecureMemLocked(void);
extern int	SecureKeysInUse(void);
extern void SecureMemWipeAll(void);
extern void SecureMemProtect(void *base, size_t len);
extern int	SecureMemWipeCount(void);

#endif							/* ATREST_SECURE_MEM_H */
