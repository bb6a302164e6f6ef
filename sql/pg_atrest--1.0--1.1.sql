/* pg_atrest--1.0--1.1.sql: update of an installed pg_atrest 1.0 to 1.1 */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION pg_atrest UPDATE TO '1.1'" to load this file. \quit

-- Every change below is mirrored in pg_atrest--1.1.sql; test/t/016_upgrade.pl checks
-- that an updated database and a fresh 1.1 install have the same objects, columns
-- (in the same order), definitions and privileges.
