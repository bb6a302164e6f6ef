-- Every jsonb operator and a broad set of jsonb functions give the same
-- result (or the same error) with encrypted_jsonb operands as with jsonb,
-- with the encrypted value on either side or both.

CREATE TABLE od (
    id  int PRIMARY KEY,
    e   atrest.encrypted_jsonb, p  jsonb,    -- the document, encrypted and plain
    e2  atrest.encrypted_jsonb, p2 jsonb     -- a second one
);
INSERT INTO od (id, p, p2) VALUES
    (1, '{"a": 1, "b": [1, 2, {"c": "x"}], "n": null, "s": "str"}', '{"a": 2, "z": true}'),
    (2, '[1, "a", {"b": 2}, null, [3]]', '[4]'),
    (3, '"scalar"', '{"a": 1}'),
    (4, '42', 'null'),
    (5, '{}', '[]'),
    (6, NULL, '{"a": 1}');
UPDATE od SET e = p, e2 = p2;

-- compare(expr): expr evaluated on each row with {E}, {E2} standing for the
-- encrypted documents and with them standing for the plain ones ({P2} is
-- always the plain second document).  Returns the expression, the type of
-- the encrypted form's result, on how many of the 6 rows it raised an error,
-- and whether every row gave the same result
-- (or the same error) of the same type (an expression that passes an
-- encrypted document through, like coalesce, keeps its type).
CREATE FUNCTION compare(expr text, OUT expression text, OUT result_type text, OUT errors int,
                        OUT same boolean)
LANGUAGE plpgsql AS $$
DECLARE
    enc text := replace(replace(replace(expr, '{E2}', 'e2'), '{E}', 'e'), '{P2}', 'p2');
    pla text := replace(replace(replace(expr, '{E2}', 'p2'), '{E}', 'p'), '{P2}', 'p2');
    r_enc text; r_pla text; t_enc text; t_pla text; i int;
BEGIN
    expression := expr;
    same := true;
    errors := 0;
    FOR i IN SELECT id FROM od ORDER BY id LOOP
        BEGIN
            EXECUTE format('SELECT (%s)::text, pg_typeof(%s)::text FROM od WHERE id = $1', enc, enc)
                INTO r_enc, t_enc USING i;
        EXCEPTION WHEN others THEN r_enc := 'ERROR: ' || SQLERRM; t_enc := NULL; errors := errors + 1;
        END;
        BEGIN
            EXECUTE format('SELECT (%s)::text, pg_typeof(%s)::text FROM od WHERE id = $1', pla, pla)
                INTO r_pla, t_pla USING i;
        EXCEPTION WHEN others THEN r_pla := 'ERROR: ' || SQLERRM; t_pla := NULL;
        END;
        IF r_enc IS DISTINCT FROM r_pla
           OR replace(t_enc, 'atrest.encrypted_jsonb', 'jsonb') IS DISTINCT FROM t_pla THEN
            RAISE NOTICE 'row %: % gives % (%), plain gives % (%)', i, expr, r_enc, t_enc, r_pla, t_pla;
            same := false;
        END IF;
        result_type := coalesce(result_type, t_enc);
    END LOOP;
END $$;

SELECT c.* FROM (VALUES
    -- operators
    ($${E} -> 'a'$$), ($${E} -> 1$$), ($${E} -> -1$$), ($${E} ->> 'a'$$), ($${E} ->> 0$$),
    ($${E} #> '{b,2}'$$), ($${E} #>> '{b,2,c}'$$),
    ($${E} @> '{"a": 1}'$$), ($$'{"a": 1}' @> {E}$$), ($${E} <@ '{"a": 1, "z": true}'$$),
    ($$'{"a": 1}' <@ {E}$$), ($${E} @> {E2}$$), ($${E} <@ {E2}$$), ($${E2} @> {E}$$), ($${E} @> {P2}$$), ($${P2} <@ {E}$$),
    ($${E} ? 'a'$$), ($${E} ?| '{a,z}'$$), ($${E} ?& '{a,b}'$$), ($${E} ?| ARRAY['n', 'q']$$),
    ($${E} || '{"x": 1}'$$), ($$'{"x": 1}' || {E}$$), ($${E} || '[1, 2]'$$), ($$'[0]' || {E}$$),
    ($${E} || {E2}$$), ($${E2} || {E}$$), ($${E} || {P2}$$), ($${P2} || {E}$$), ($${E} || {E}$$), ($${E} || NULL$$),
    ($${E} || '"s"'$$), ($${E} || 'not json'$$),
    ($${E} - 'a'$$), ($${E} - '{a,b}'::text[]$$), ($${E} - 0$$), ($${E} - -1$$), ($${E} - 'zz'$$),
    ($${E} #- '{b,0}'$$), ($${E} #- '{a}'$$), ($${E} #- '{0}'$$),
    ($${E} @? '$.a'$$), ($${E} @? '$.b[*] ? (@ > 1)'$$), ($${E} @? '$[*] ? (@ == "a")'$$),
    ($${E} @@ '$.a == 1'$$), ($${E} @@ '$[0] == 1'$$), ($${E} @@ 'exists($.q)'$$),
    ($${E} = '{"a": 1}'$$), ($${E} = {E2}$$), ($${E} = {P2}$$), ($${E} <> {E2}$$), ($${E} < {E2}$$), ($${E} >= {P2}$$),
    -- functions
    ($$jsonb_typeof({E})$$), ($$jsonb_array_length({E})$$),
    ($$array(SELECT jsonb_object_keys({E}))$$), ($$array(SELECT jsonb_each({E}))$$),
    ($$array(SELECT jsonb_each_text({E}))$$), ($$array(SELECT jsonb_array_elements({E}))$$),
    ($$array(SELECT jsonb_array_elements_text({E}))$$), ($$(SELECT count(*) FROM jsonb_each({E}))$$),
    ($$jsonb_extract_path({E}, 'b', '2')$$), ($$jsonb_extract_path_text({E}, 'a')$$),
    ($$jsonb_strip_nulls({E})$$), ($$jsonb_pretty({E})$$),
    ($$jsonb_set({E}, '{a}', '2')$$), ($$jsonb_set({E}, '{0}', {E2})$$), ($$jsonb_set_lax({E}, '{a}', NULL)$$),
    ($$jsonb_insert({E}, '{b,0}', '9')$$), ($$jsonb_insert({E}, '{0}', '9', true)$$),
    ($$jsonb_concat({E}, {E2})$$), ($$jsonb_contains({E}, {E2})$$), ($$jsonb_exists({E}, 'a')$$),
    ($$jsonb_delete({E}, 'a')$$), ($$jsonb_delete_path({E}, '{b}')$$),
    ($$jsonb_path_query_array({E}, '$.**')$$), ($$jsonb_path_query_first({E}, '$.b[2]')$$),
    ($$array(SELECT jsonb_path_query({E}, 'strict $.*'))$$),
    ($$jsonb_path_exists({E}, '$.a')$$), ($$jsonb_path_match({E}, 'exists($.a)')$$),
    ($$jsonb_path_query_array({E}, '$.a ? (@ > $x)', '{"x": 0}')$$),
    ($$to_jsonb({E})$$), ($$to_json({E})$$), ($$jsonb_build_object('k', {E})$$), ($$jsonb_build_array({E}, {E2})$$),
    ($$json_build_object('k', {E})$$), ($$row_to_json(row({E}))$$), ($$to_jsonb(row({E}, {E2}))$$),
    ($$jsonb_build_object('k', {E}) -> 'k' -> 'a'$$), ($$jsonb_object(ARRAY['k', {E} ->> 'a'])$$),
    ($$(SELECT jsonb_agg(x) FROM (VALUES ({E}), ({E2})) v(x))$$),
    ($$(SELECT jsonb_object_agg(k, x) FROM (VALUES ('one', {E}), ('two', {E2})) v(k, x))$$),
    ($$(SELECT r FROM jsonb_to_record({E}) AS r(a int, s text))$$),
    ($$(SELECT array_agg(r) FROM jsonb_to_recordset({E}) AS r(b int))$$),
    ($${E}::text$$), ($${E}::json$$), ($${E}::jsonb$$), ($$length({E}::text)$$), ($${E} IS NULL$$),
    ($$coalesce({E}, {E2})$$), ($$CASE WHEN {E} @> '{}' THEN {E} ELSE {E2} END$$), ($$greatest({E}, {E2})$$),
    ($$({E} -> 'b') || {E2}$$), ($${E} ->> 'a' || 'x'$$)
) AS t(x), LATERAL compare(x) c;

-- no row disagreed above; what the trap of 1.0 gave
SELECT e || '{"x": 1}' AS merged, pg_typeof(e || '{"x": 1}') FROM od WHERE id = 1;
SELECT p || '{"x": 1}' AS merged, pg_typeof(p || '{"x": 1}') FROM od WHERE id = 1;
-- concatenation with text stays text, as for jsonb
SELECT pg_typeof(e || 'abc'::text), pg_typeof(p || 'abc'::text) FROM od WHERE id = 1;
-- the literal becomes an encrypted_jsonb constant (operators.c opens it once
-- per query, not per row)
EXPLAIN (COSTS OFF, VERBOSE) SELECT e || '{"x": 1}' FROM od;

-- encrypted_text and encrypted_bytea keep their plain types' operators
CREATE TABLE ot (t atrest.encrypted_text, pt text, b atrest.encrypted_bytea, pb bytea);
INSERT INTO ot VALUES ('abc', 'abc', '\x0102', '\x0102');
SELECT t || 'x', pt || 'x', t || t, 'x' || t, t LIKE 'a%', upper(t), t < 'b', t = pt,
       b || b, b || '\x03'::bytea, length(b), get_byte(b, 1), b = pb, position('\x02'::bytea IN b)
  FROM ot;

-- plpgsql evaluates an expression again with new variable values: nothing
-- opened for one value is reused for the next
DO $$
DECLARE a atrest.encrypted_jsonb; b atrest.encrypted_jsonb; r text := '';
BEGIN
    FOR i IN 1..3 LOOP
        a := jsonb_build_object('i', i);
        b := jsonb_build_object('j', i * 10);
        r := r || (a || b)::text || ' ' || (a OPERATOR(atrest.=) b)::text || ' '
               || (a OPERATOR(atrest.=) jsonb_build_object('i', i)::atrest.encrypted_jsonb)::text || '; ';
    END LOOP;
    RAISE NOTICE '%', r;
END $$;

-- a role without any grant beyond the table uses the operators and casts
CREATE ROLE op_user;
GRANT SELECT ON od TO op_user;
SET ROLE op_user;
SELECT e || '{"x": 1}' AS merged, to_jsonb(e) -> 'a' AS nested, e['s'] AS sub, count(*) OVER (PARTITION BY e)
  FROM od WHERE id = 1;
SELECT count(DISTINCT e) FROM od;
RESET ROLE;
DROP OWNED BY op_user;
DROP ROLE op_user;

DROP TABLE ot;
DROP FUNCTION compare(text);
DROP TABLE od;
