-- Subscripting encrypted_jsonb reads and assigns as on jsonb, with jsonb's
-- semantics and errors; an assignment seals under the column's key class.

CREATE TABLE sb (id int PRIMARY KEY, e atrest.encrypted_jsonb(result), p jsonb);
INSERT INTO sb (id, p) VALUES
    (1, '{"a": 1, "b": {"c": [1, 2, 3]}, "n": null}'),
    (2, '[10, 20, [30, 40]]'),
    (3, '"scalar"'),
    (4, NULL);
UPDATE sb SET e = p;

-- reads
SELECT id, e['a'] AS a, e['b']['c'] AS bc, e['b']['c'][1] AS bc1, e[0] AS "0", e[2][1] AS "21", e[-1] AS "-1",
       e['zz'] AS zz, e[NULL] AS null_sub, e['b'][NULL] AS b_null_sub
  FROM sb ORDER BY id;
SELECT bool_and(e['a'] IS NOT DISTINCT FROM p['a'] AND e['b']['c'][1] IS NOT DISTINCT FROM p['b']['c'][1]
            AND e[0] IS NOT DISTINCT FROM p[0] AND e[2][1] IS NOT DISTINCT FROM p[2][1]
            AND e[-1] IS NOT DISTINCT FROM p[-1] AND e['x'] IS NOT DISTINCT FROM p['x']) AS same_reads
  FROM sb;
SELECT pg_typeof(e['a']) FROM sb WHERE id = 1;
SELECT id FROM sb WHERE e['a'] = '1';

-- assignments, on the encrypted and on the plain column alike
CREATE FUNCTION assign_both(assignment text) RETURNS TABLE (id int, encrypted text, plain text, same boolean)
LANGUAGE plpgsql AS $$
DECLARE err_e text; err_p text;
BEGIN
    BEGIN
        EXECUTE 'UPDATE sb SET ' || replace(assignment, 'V', 'e');
    EXCEPTION WHEN others THEN err_e := SQLERRM;
    END;
    BEGIN
        EXECUTE 'UPDATE sb SET ' || replace(assignment, 'V', 'p');
    EXCEPTION WHEN others THEN err_p := SQLERRM;
    END;
    IF err_e IS NOT NULL OR err_p IS NOT NULL THEN
        RETURN QUERY SELECT 0, 'ERROR: ' || err_e, 'ERROR: ' || err_p, err_e IS NOT DISTINCT FROM err_p;
        RETURN;
    END IF;
    RETURN QUERY SELECT s.id, s.e::text, s.p::text, s.e::jsonb IS NOT DISTINCT FROM s.p FROM sb s ORDER BY s.id;
END $$;

SELECT * FROM assign_both($$V['a'] = '2' WHERE id = 1$$);
SELECT * FROM assign_both($$V['b']['c'][1] = '"two"', V['new'] = '{"k": true}' WHERE id = 1$$);
SELECT * FROM assign_both($$V['b']['d']['e'] = '5' WHERE id = 1$$);
SELECT * FROM assign_both($$V[1] = '21' WHERE id = 2$$);
SELECT * FROM assign_both($$V[5] = '60' WHERE id = 2$$);           -- pads with nulls
SELECT * FROM assign_both($$V[-1] = '"last"' WHERE id = 2$$);
SELECT * FROM assign_both($$V[-20] = '1' WHERE id = 2$$);          -- out of range
SELECT * FROM assign_both($$V['x'] = '1' WHERE id = 2$$);          -- object key on an array
SELECT * FROM assign_both($$V[0] = '1' WHERE id = 3$$);            -- through a scalar
SELECT * FROM assign_both($$V['a'] = '1' WHERE id = 3$$);
SELECT * FROM assign_both($$V[NULL] = '1' WHERE id = 1$$);         -- null subscript
SELECT * FROM assign_both($$V['a'] = NULL WHERE id = 1$$);         -- SQL NULL becomes JSON null
SELECT * FROM assign_both($$V['made'] = '"from null"' WHERE id = 4$$);  -- a NULL document starts empty
SELECT * FROM assign_both($$V['a'] = V['a'] || '[3]' WHERE id = 1$$);

-- assignments seal under the column's class, not the default one
SELECT id, (atrest.envelope(e)).key_class FROM sb ORDER BY id;
-- and the value on disk is sealed, not plain jsonb
SELECT id, atrest.decrypt(e) = p AS opens FROM sb ORDER BY id;

-- slices are not supported on jsonb, nor here
SELECT e[0:1] FROM sb WHERE id = 2;
SELECT p[0:1] FROM sb WHERE id = 2;

DROP FUNCTION assign_both(text);
DROP TABLE sb;
