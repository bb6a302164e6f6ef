-- test/upgrade/source.sql: the data the upgrade test carries from 15 to 17 to 18 (run in
-- database "app" of the oldest server).  Several key classes, a custom class, values
-- inline and TOASTed, NULLs, a rotated data key, a CMK over the database key, and the
-- models and analyze-results store.
\set ON_ERROR_STOP 1
CREATE EXTENSION pg_atrest;
SELECT atrest.create_key_class('invoice');

CREATE TABLE docs (
    id  int PRIMARY KEY,
    r   atrest.encrypted_jsonb(result),
    m   atrest.encrypted_jsonb(model),
    b   atrest.encrypted_bytea(model),
    t   atrest.encrypted_text,
    inv atrest.encrypted_text(invoice));
INSERT INTO docs VALUES
    (1, '{"marker": "UPGRADE-r1", "pages": [1, 2], "nested": {"k": null}}', '{"w": [0.5, 1.5]}',
        '\x00ff0102', 'UPGRADE-t1 tab	and ''quote''', 'INV-0001'),
    (2, NULL, NULL, NULL, NULL, NULL);
-- what follows is under result version 2
SELECT atrest.rotate_data_key('result');
INSERT INTO docs
SELECT 3, jsonb_build_object('marker', 'UPGRADE-r3', 'big', repeat('r3-', 20000)),
       jsonb_build_object('big', repeat('m3-', 20000)),
       convert_to(repeat('b3-', 20000), 'UTF8'), repeat('t3-ü-', 20000), 'INV-0003 €';
INSERT INTO docs
SELECT i, jsonb_build_object('i', i, 'sq', i * i), NULL, int4send(i), 'row ' || i, NULL
  FROM generate_series(10, 209) i;
CREATE VIEW doc_pages AS SELECT id, r -> 'pages' AS pages, length(t) AS tlen FROM docs;

-- the models and analyze-results store
SELECT atrest.create_model('upgrade-model', 'carried across majors',
                           '{"layers": [64, 32], "act": "relu"}', '\xdeadbeef');
SELECT atrest.complete_analyze(atrest.begin_analyze('upgrade-model'),
                               '{"pages": 3, "text": "UPGRADE-result"}');
SELECT atrest.fail_analyze(atrest.begin_analyze('upgrade-model'),
                           '{"code": "E42", "message": "UPGRADE-error"}');
SELECT atrest.begin_analyze('upgrade-model');

-- a customer-managed key over the database key (the SoftHSM2 token of test/sandbox)
SELECT atrest.enable_cmk('pkcs11', 'pkcs11:token=atrest;object=cmk');
