/*
 * keyadmin.h
 *		What the key administration functions share (keyadmin.c, keyretire.c).
 */
#ifndef ATREST_KEYADMIN_H
#define ATREST_KEYADMIN_H

extern void LockKeyTables(void);

#endif							/* ATREST_KEYADMIN_H */
