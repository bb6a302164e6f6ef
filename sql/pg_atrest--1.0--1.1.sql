/* pg_atrest--1.0--1.1.sql: update of an installed pg_atrest 1.0 to 1.1 */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION pg_atrest UPDATE TO '1.1'" to load this file. \quit

-- Every change below is mirrored in pg_atrest--1.1.sql; test/t/016_upgrade.pl checks
-- that an updated database and a fresh 1.1 install have the same objects, columns
-- (in the same order), definitions and privileges.

------------------------------------------------------------------------------
-- 1.1 (issue 10): jsonb operators on encrypted_jsonb (src/operators.c).  Every jsonb
-- operator and function applies to an encrypted document through the
-- implicit cast, except ||: with an untyped literal on one side, PostgreSQL
-- prefers its polymorphic text concatenation.  This || (in pg_catalog, so
-- that it is found whatever the search_path) makes doc || '{"k": 1}' merge
-- as jsonb; a plain jsonb operand still goes through jsonb's own ||.  The
-- explicit cast to json lets to_jsonb, jsonb_build_object, jsonb_agg and
-- the json builders nest an encrypted document as a document, as they do a
-- jsonb one, instead of quoting its text.
------------------------------------------------------------------------------

CREATE FUNCTION atrest.jsonb_concat(atrest.encrypted_jsonb, atrest.encrypted_jsonb) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'encrypted_jsonb_concat' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE OPERATOR pg_catalog.|| (
    LEFTARG = atrest.encrypted_jsonb, RIGHTARG = atrest.encrypted_jsonb,
    FUNCTION = atrest.jsonb_concat);
CREATE FUNCTION atrest.to_json(atrest.encrypted_jsonb) RETURNS json
    AS 'MODULE_PATHNAME', 'encrypted_jsonb_to_json' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE CAST (atrest.encrypted_jsonb AS json) WITH FUNCTION atrest.to_json(atrest.encrypted_jsonb);
GRANT EXECUTE ON FUNCTION atrest.jsonb_concat(atrest.encrypted_jsonb, atrest.encrypted_jsonb),
                          atrest.to_json(atrest.encrypted_jsonb) TO PUBLIC;

------------------------------------------------------------------------------
-- Equality, ordering and hashing of the opened values (src/operators.c), so
-- that DISTINCT, GROUP BY, UNION, INTERSECT, EXCEPT, IN (subquery) and
-- count(DISTINCT ...) compare plaintext in memory.  The operators live in
-- schema atrest: PostgreSQL finds them through the default operator classes,
-- and a comparison written in SQL (doc = '{...}') keeps resolving to the
-- plain type's operator through the implicit cast.  No index may use these
-- classes (src/guard.c refuses any index or extended statistics over an
-- encrypted column; the event trigger below makes sure the check is
-- loaded), and ANALYZE keeps only the null fraction and the width of
-- encrypted columns.
------------------------------------------------------------------------------

-- encrypted_jsonb
CREATE FUNCTION atrest.encrypted_eq(atrest.encrypted_jsonb, atrest.encrypted_jsonb) RETURNS boolean
    AS 'MODULE_PATHNAME', 'encrypted_jsonb_eq' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE FUNCTION atrest.encrypted_ne(atrest.encrypted_jsonb, atrest.encrypted_jsonb) RETURNS boolean
    AS 'MODULE_PATHNAME', 'encrypted_jsonb_ne' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE FUNCTION atrest.encrypted_lt(atrest.encrypted_jsonb, atrest.encrypted_jsonb) RETURNS boolean
    AS 'MODULE_PATHNAME', 'encrypted_jsonb_lt' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE FUNCTION atrest.encrypted_le(atrest.encrypted_jsonb, atrest.encrypted_jsonb) RETURNS boolean
    AS 'MODULE_PATHNAME', 'encrypted_jsonb_le' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE FUNCTION atrest.encrypted_gt(atrest.encrypted_jsonb, atrest.encrypted_jsonb) RETURNS boolean
    AS 'MODULE_PATHNAME', 'encrypted_jsonb_gt' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE FUNCTION atrest.encrypted_ge(atrest.encrypted_jsonb, atrest.encrypted_jsonb) RETURNS boolean
    AS 'MODULE_PATHNAME', 'encrypted_jsonb_ge' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE FUNCTION atrest.encrypted_cmp(atrest.encrypted_jsonb, atrest.encrypted_jsonb) RETURNS integer
    AS 'MODULE_PATHNAME', 'encrypted_jsonb_cmp' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE FUNCTION atrest.encrypted_hash(atrest.encrypted_jsonb) RETURNS integer
    AS 'MODULE_PATHNAME', 'encrypted_jsonb_hash' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE OPERATOR atrest.= (LEFTARG = atrest.encrypted_jsonb, RIGHTARG = atrest.encrypted_jsonb, FUNCTION = atrest.encrypted_eq,
    COMMUTATOR = OPERATOR(atrest.=), NEGATOR = OPERATOR(atrest.<>), RESTRICT = eqsel, JOIN = eqjoinsel, HASHES, MERGES);
CREATE OPERATOR atrest.<> (LEFTARG = atrest.encrypted_jsonb, RIGHTARG = atrest.encrypted_jsonb, FUNCTION = atrest.encrypted_ne,
    COMMUTATOR = OPERATOR(atrest.<>), NEGATOR = OPERATOR(atrest.=), RESTRICT = neqsel, JOIN = neqjoinsel);
CREATE OPERATOR atrest.< (LEFTARG = atrest.encrypted_jsonb, RIGHTARG = atrest.encrypted_jsonb, FUNCTION = atrest.encrypted_lt,
    COMMUTATOR = OPERATOR(atrest.>), NEGATOR = OPERATOR(atrest.>=), RESTRICT = scalarltsel, JOIN = scalarltjoinsel);
CREATE OPERATOR atrest.<= (LEFTARG = atrest.encrypted_jsonb, RIGHTARG = atrest.encrypted_jsonb, FUNCTION = atrest.encrypted_le,
    COMMUTATOR = OPERATOR(atrest.>=), NEGATOR = OPERATOR(atrest.>), RESTRICT = scalarlesel, JOIN = scalarlejoinsel);
CREATE OPERATOR atrest.> (LEFTARG = atrest.encrypted_jsonb, RIGHTARG = atrest.encrypted_jsonb, FUNCTION = atrest.encrypted_gt,
    COMMUTATOR = OPERATOR(atrest.<), NEGATOR = OPERATOR(atrest.<=), RESTRICT = scalargtsel, JOIN = scalargtjoinsel);
CREATE OPERATOR atrest.>= (LEFTARG = atrest.encrypted_jsonb, RIGHTARG = atrest.encrypted_jsonb, FUNCTION = atrest.encrypted_ge,
    COMMUTATOR = OPERATOR(atrest.<=), NEGATOR = OPERATOR(atrest.<), RESTRICT = scalargesel, JOIN = scalargejoinsel);
CREATE OPERATOR CLASS atrest.encrypted_jsonb_ops DEFAULT FOR TYPE atrest.encrypted_jsonb USING btree AS
    OPERATOR 1 atrest.< , OPERATOR 2 atrest.<= , OPERATOR 3 atrest.= , OPERATOR 4 atrest.>= , OPERATOR 5 atrest.> ,
    FUNCTION 1 atrest.encrypted_cmp(atrest.encrypted_jsonb, atrest.encrypted_jsonb);
CREATE OPERATOR CLASS atrest.encrypted_jsonb_hash_ops DEFAULT FOR TYPE atrest.encrypted_jsonb USING hash AS
    OPERATOR 1 atrest.= ,
    FUNCTION 1 atrest.encrypted_hash(atrest.encrypted_jsonb);
GRANT EXECUTE ON FUNCTION
    atrest.encrypted_eq(atrest.encrypted_jsonb, atrest.encrypted_jsonb),
    atrest.encrypted_ne(atrest.encrypted_jsonb, atrest.encrypted_jsonb),
    atrest.encrypted_lt(atrest.encrypted_jsonb, atrest.encrypted_jsonb),
    atrest.encrypted_le(atrest.encrypted_jsonb, atrest.encrypted_jsonb),
    atrest.encrypted_gt(atrest.encrypted_jsonb, atrest.encrypted_jsonb),
    atrest.encrypted_ge(atrest.encrypted_jsonb, atrest.encrypted_jsonb),
    atrest.encrypted_cmp(atrest.encrypted_jsonb, atrest.encrypted_jsonb),
    atrest.encrypted_hash(atrest.encrypted_jsonb)
TO PUBLIC;

-- encrypted_bytea
CREATE FUNCTION atrest.encrypted_eq(atrest.encrypted_bytea, atrest.encrypted_bytea) RETURNS boolean
    AS 'MODULE_PATHNAME', 'encrypted_bytea_eq' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE FUNCTION atrest.encrypted_ne(atrest.encrypted_bytea, atrest.encrypted_bytea) RETURNS boolean
    AS 'MODULE_PATHNAME', 'encrypted_bytea_ne' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE FUNCTION atrest.encrypted_lt(atrest.encrypted_bytea, atrest.encrypted_bytea) RETURNS boolean
    AS 'MODULE_PATHNAME', 'encrypted_bytea_lt' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE FUNCTION atrest.encrypted_le(atrest.encrypted_bytea, atrest.encrypted_bytea) RETURNS boolean
    AS 'MODULE_PATHNAME', 'encrypted_bytea_le' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE FUNCTION atrest.encrypted_gt(atrest.encrypted_bytea, atrest.encrypted_bytea) RETURNS boolean
    AS 'MODULE_PATHNAME', 'encrypted_bytea_gt' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE FUNCTION atrest.encrypted_ge(atrest.encrypted_bytea, atrest.encrypted_bytea) RETURNS boolean
    AS 'MODULE_PATHNAME', 'encrypted_bytea_ge' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE FUNCTION atrest.encrypted_cmp(atrest.encrypted_bytea, atrest.encrypted_bytea) RETURNS integer
    AS 'MODULE_PATHNAME', 'encrypted_bytea_cmp' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE FUNCTION atrest.encrypted_hash(atrest.encrypted_bytea) RETURNS integer
    AS 'MODULE_PATHNAME', 'encrypted_bytea_hash' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE OPERATOR atrest.= (LEFTARG = atrest.encrypted_bytea, RIGHTARG = atrest.encrypted_bytea, FUNCTION = atrest.encrypted_eq,
    COMMUTATOR = OPERATOR(atrest.=), NEGATOR = OPERATOR(atrest.<>), RESTRICT = eqsel, JOIN = eqjoinsel, HASHES, MERGES);
CREATE OPERATOR atrest.<> (LEFTARG = atrest.encrypted_bytea, RIGHTARG = atrest.encrypted_bytea, FUNCTION = atrest.encrypted_ne,
    COMMUTATOR = OPERATOR(atrest.<>), NEGATOR = OPERATOR(atrest.=), RESTRICT = neqsel, JOIN = neqjoinsel);
CREATE OPERATOR atrest.< (LEFTARG = atrest.encrypted_bytea, RIGHTARG = atrest.encrypted_bytea, FUNCTION = atrest.encrypted_lt,
    COMMUTATOR = OPERATOR(atrest.>), NEGATOR = OPERATOR(atrest.>=), RESTRICT = scalarltsel, JOIN = scalarltjoinsel);
CREATE OPERATOR atrest.<= (LEFTARG = atrest.encrypted_bytea, RIGHTARG = atrest.encrypted_bytea, FUNCTION = atrest.encrypted_le,
    COMMUTATOR = OPERATOR(atrest.>=), NEGATOR = OPERATOR(atrest.>), RESTRICT = scalarlesel, JOIN = scalarlejoinsel);
CREATE OPERATOR atrest.> (LEFTARG = atrest.encrypted_bytea, RIGHTARG = atrest.encrypted_bytea, FUNCTION = atrest.encrypted_gt,
    COMMUTATOR = OPERATOR(atrest.<), NEGATOR = OPERATOR(atrest.<=), RESTRICT = scalargtsel, JOIN = scalargtjoinsel);
CREATE OPERATOR atrest.>= (LEFTARG = atrest.encrypted_bytea, RIGHTARG = atrest.encrypted_bytea, FUNCTION = atrest.encrypted_ge,
    COMMUTATOR = OPERATOR(atrest.<=), NEGATOR = OPERATOR(atrest.<), RESTRICT = scalargesel, JOIN = scalargejoinsel);
CREATE OPERATOR CLASS atrest.encrypted_bytea_ops DEFAULT FOR TYPE atrest.encrypted_bytea USING btree AS
    OPERATOR 1 atrest.< , OPERATOR 2 atrest.<= , OPERATOR 3 atrest.= , OPERATOR 4 atrest.>= , OPERATOR 5 atrest.> ,
    FUNCTION 1 atrest.encrypted_cmp(atrest.encrypted_bytea, atrest.encrypted_bytea);
CREATE OPERATOR CLASS atrest.encrypted_bytea_hash_ops DEFAULT FOR TYPE atrest.encrypted_bytea USING hash AS
    OPERATOR 1 atrest.= ,
    FUNCTION 1 atrest.encrypted_hash(atrest.encrypted_bytea);
GRANT EXECUTE ON FUNCTION
    atrest.encrypted_eq(atrest.encrypted_bytea, atrest.encrypted_bytea),
    atrest.encrypted_ne(atrest.encrypted_bytea, atrest.encrypted_bytea),
    atrest.encrypted_lt(atrest.encrypted_bytea, atrest.encrypted_bytea),
    atrest.encrypted_le(atrest.encrypted_bytea, atrest.encrypted_bytea),
    atrest.encrypted_gt(atrest.encrypted_bytea, atrest.encrypted_bytea),
    atrest.encrypted_ge(atrest.encrypted_bytea, atrest.encrypted_bytea),
    atrest.encrypted_cmp(atrest.encrypted_bytea, atrest.encrypted_bytea),
    atrest.encrypted_hash(atrest.encrypted_bytea)
TO PUBLIC;

-- encrypted_text
CREATE FUNCTION atrest.encrypted_eq(atrest.encrypted_text, atrest.encrypted_text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'encrypted_text_eq' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE FUNCTION atrest.encrypted_ne(atrest.encrypted_text, atrest.encrypted_text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'encrypted_text_ne' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE FUNCTION atrest.encrypted_lt(atrest.encrypted_text, atrest.encrypted_text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'encrypted_text_lt' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE FUNCTION atrest.encrypted_le(atrest.encrypted_text, atrest.encrypted_text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'encrypted_text_le' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE FUNCTION atrest.encrypted_gt(atrest.encrypted_text, atrest.encrypted_text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'encrypted_text_gt' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE FUNCTION atrest.encrypted_ge(atrest.encrypted_text, atrest.encrypted_text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'encrypted_text_ge' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE FUNCTION atrest.encrypted_cmp(atrest.encrypted_text, atrest.encrypted_text) RETURNS integer
    AS 'MODULE_PATHNAME', 'encrypted_text_cmp' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE FUNCTION atrest.encrypted_hash(atrest.encrypted_text) RETURNS integer
    AS 'MODULE_PATHNAME', 'encrypted_text_hash' LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
CREATE OPERATOR atrest.= (LEFTARG = atrest.encrypted_text, RIGHTARG = atrest.encrypted_text, FUNCTION = atrest.encrypted_eq,
    COMMUTATOR = OPERATOR(atrest.=), NEGATOR = OPERATOR(atrest.<>), RESTRICT = eqsel, JOIN = eqjoinsel, HASHES, MERGES);
CREATE OPERATOR atrest.<> (LEFTARG = atrest.encrypted_text, RIGHTARG = atrest.encrypted_text, FUNCTION = atrest.encrypted_ne,
    COMMUTATOR = OPERATOR(atrest.<>), NEGATOR = OPERATOR(atrest.=), RESTRICT = neqsel, JOIN = neqjoinsel);
CREATE OPERATOR atrest.< (LEFTARG = atrest.encrypted_text, RIGHTARG = atrest.encrypted_text, FUNCTION = atrest.encrypted_lt,
    COMMUTATOR = OPERATOR(atrest.>), NEGATOR = OPERATOR(atrest.>=), RESTRICT = scalarltsel, JOIN = scalarltjoinsel);
CREATE OPERATOR atrest.<= (LEFTARG = atrest.encrypted_text, RIGHTARG = atrest.encrypted_text, FUNCTION = atrest.encrypted_le,
    COMMUTATOR = OPERATOR(atrest.>=), NEGATOR = OPERATOR(atrest.>), RESTRICT = scalarlesel, JOIN = scalarlejoinsel);
CREATE OPERATOR atrest.> (LEFTARG = atrest.encrypted_text, RIGHTARG = atrest.encrypted_text, FUNCTION = atrest.encrypted_gt,
    COMMUTATOR = OPERATOR(atrest.<), NEGATOR = OPERATOR(atrest.<=), RESTRICT = scalargtsel, JOIN = scalargtjoinsel);
CREATE OPERATOR atrest.>= (LEFTARG = atrest.encrypted_text, RIGHTARG = atrest.encrypted_text, FUNCTION = atrest.encrypted_ge,
    COMMUTATOR = OPERATOR(atrest.<=), NEGATOR = OPERATOR(atrest.<), RESTRICT = scalargesel, JOIN = scalargejoinsel);
CREATE OPERATOR CLASS atrest.encrypted_text_ops DEFAULT FOR TYPE atrest.encrypted_text USING btree AS
    OPERATOR 1 atrest.< , OPERATOR 2 atrest.<= , OPERATOR 3 atrest.= , OPERATOR 4 atrest.>= , OPERATOR 5 atrest.> ,
    FUNCTION 1 atrest.encrypted_cmp(atrest.encrypted_text, atrest.encrypted_text);
CREATE OPERATOR CLASS atrest.encrypted_text_hash_ops DEFAULT FOR TYPE atrest.encrypted_text USING hash AS
    OPERATOR 1 atrest.= ,
    FUNCTION 1 atrest.encrypted_hash(atrest.encrypted_text);
GRANT EXECUTE ON FUNCTION
    atrest.encrypted_eq(atrest.encrypted_text, atrest.encrypted_text),
    atrest.encrypted_ne(atrest.encrypted_text, atrest.encrypted_text),
    atrest.encrypted_lt(atrest.encrypted_text, atrest.encrypted_text),
    atrest.encrypted_le(atrest.encrypted_text, atrest.encrypted_text),
    atrest.encrypted_gt(atrest.encrypted_text, atrest.encrypted_text),
    atrest.encrypted_ge(atrest.encrypted_text, atrest.encrypted_text),
    atrest.encrypted_cmp(atrest.encrypted_text, atrest.encrypted_text),
    atrest.encrypted_hash(atrest.encrypted_text)
TO PUBLIC;

CREATE FUNCTION atrest.encrypted_typanalyze(internal) RETURNS boolean
    AS 'MODULE_PATHNAME', 'encrypted_typanalyze' LANGUAGE C STRICT PARALLEL SAFE;
GRANT EXECUTE ON FUNCTION atrest.encrypted_typanalyze(internal) TO PUBLIC;
ALTER TYPE atrest.encrypted_jsonb SET (ANALYZE = atrest.encrypted_typanalyze);
ALTER TYPE atrest.encrypted_bytea SET (ANALYZE = atrest.encrypted_typanalyze);
ALTER TYPE atrest.encrypted_text SET (ANALYZE = atrest.encrypted_typanalyze);

-- Loads the module before any statement that can create an index or
-- statistics, so that its check is in place where pg_atrest is not preloaded.
CREATE FUNCTION atrest._load_guard() RETURNS event_trigger
    AS 'MODULE_PATHNAME', 'atrest_load_guard' LANGUAGE C;
REVOKE ALL ON FUNCTION atrest._load_guard() FROM PUBLIC;
CREATE EVENT TRIGGER atrest_load_guard ON ddl_command_start
    WHEN TAG IN ('CREATE INDEX', 'CREATE TABLE', 'ALTER TABLE', 'CREATE SCHEMA', 'CREATE STATISTICS')
    EXECUTE FUNCTION atrest._load_guard();

------------------------------------------------------------------------------
-- 1.1 (issue 10): subscripting of encrypted_jsonb (src/subscript.c): doc['a'], doc[0] read
-- as on jsonb; UPDATE ... SET doc['a'] = ... opens, assigns and seals under
-- the column's key class.
------------------------------------------------------------------------------

CREATE FUNCTION atrest.encrypted_jsonb_subscript_handler(internal) RETURNS internal
    AS 'MODULE_PATHNAME' LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;
GRANT EXECUTE ON FUNCTION atrest.encrypted_jsonb_subscript_handler(internal) TO PUBLIC;
ALTER TYPE atrest.encrypted_jsonb SET (SUBSCRIPT = atrest.encrypted_jsonb_subscript_handler);
