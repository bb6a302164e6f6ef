-- try(q): run a statement; "ok", or how it failed: SQLSTATE, message and detail.  Not a
-- test itself (REGRESS takes only sql/*.sql): tests include it with \i, try_schema set to
-- the schema to create it in, so that none depends on another's order.
CREATE FUNCTION :"try_schema".try(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    st text; msg text; det text;
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL;
    RETURN st || ': ' || msg || coalesce(nullif(' / ' || det, ' / '), '');
END
$$;
