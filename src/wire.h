/*
 * wire.h
 *		What clients see of the encrypted types (wire.c), and the guard that
 *		keeps indexes off encrypted values (index_guard.c).
 */
#ifndef ATREST_WIRE_H
#define ATREST_WIRE_H

extern void WireInit(void);
extern Oid	AtrestPlainTypeOf(Oid type);

extern void IndexGuardInit(void);

#endif							/* ATREST_WIRE_H */
