# Copyright: pg_atrest authors; same license as pg_atrest.
#
# psycopg 3 sees the encrypted columns as the plain types: for each of jsonb, bytea and
# text, the application gets the same Python object (dict/list, bytes, str) from the
# encrypted column as from a plain column holding the same value, in text and binary
# results, through named prepared statements, server-side cursors (text and binary),
# RETURNING and COPY TO (text and binary, with and without declared types); the columns'
# type OIDs in cursor.description are jsonb's, bytea's and text's, also after the table
# changes and a prepared statement's plan is rebuilt.  COPY FROM into the
# encrypted columns stores what a plain column would.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use AtrestTest;

my $node = atrest_node('psycopg', cron => 0, pkcs11 => 0);
driver_fixture($node);

driver_checks($node, 'psycopg', ['/usr/bin/python3'], <<'PY');
import psycopg

PAIRS = [("doc", "pdoc"), ("blob", "pblob"), ("note", "pnote")]
COLS = ", ".join(f"{e}, {p}" for e, p in PAIRS)

def check(name, cond, why=""):
    print(("ok " if cond else "not ok ") + name + ("" if cond else " # " + why))

def same_row(name, row, desc=None):
    for i, (e, p) in enumerate(PAIRS):
        a, b = row[2 * i], row[2 * i + 1]
        check(f"{name}: {e} is a {type(b).__name__} equal to {p}",
              type(a) is type(b) and a == b, f"{type(a).__name__} {a!r} vs {type(b).__name__} {b!r}")
        if desc is not None:
            check(f"{name}: {e} has the type oid of {p}",
                  desc[2 * i].type_code == desc[2 * i + 1].type_code,
                  f"{desc[2 * i].type_code} vs {desc[2 * i + 1].type_code}")

with psycopg.connect() as conn:
    cur = conn.cursor()
    for binary in (False, True):
        fmt = "binary" if binary else "text"
        for i in (1, 2, 3):
            cur.execute(f"SELECT {COLS} FROM drv WHERE id = %s", (i,), binary=binary)
            same_row(f"{fmt} row {i}", cur.fetchone(), cur.description)

    # named prepared statements (prepare=True makes psycopg PREPARE it server-side)
    for n in range(3):
        cur.execute(f"SELECT {COLS} FROM drv WHERE id = %s", (1,), prepare=True)
        same_row(f"prepared statement, run {n}", cur.fetchone(), cur.description)
    cur.execute(f"SELECT {COLS} FROM drv WHERE id = %s", (2,), prepare=True, binary=True)
    same_row("prepared statement, binary", cur.fetchone(), cur.description)
    # the prepared statement's plan is rebuilt after the table changes
    cur.execute("ALTER TABLE drv ADD COLUMN extra int")
    cur.execute(f"SELECT {COLS} FROM drv WHERE id = %s", (1,), prepare=True)
    same_row("prepared statement, after ALTER TABLE", cur.fetchone(), cur.description)
    cur.execute("ALTER TABLE drv DROP COLUMN extra")
    cur.execute(f"SELECT {COLS} FROM drv WHERE id = %s", (2,), prepare=True, binary=True)
    same_row("prepared statement, binary, after ALTER TABLE", cur.fetchone(), cur.description)
    conn.commit()
    cur.execute("SELECT count(*) FROM pg_prepared_statements WHERE NOT from_sql AND statement LIKE '%FROM drv WHERE id%'")
    n = cur.fetchone()[0]
    check("the statements were prepared server-side under a name", n >= 1, str(n))

    # server-side cursors
    for binary in (False, True):
        with conn.transaction():
            with conn.cursor(name="drv_cursor", binary=binary) as sc:
                sc.execute(f"SELECT {COLS} FROM drv ORDER BY id")
                rows = sc.fetchmany(2) + sc.fetchall()
                check(f"server-side cursor ({binary=}): 3 rows", len(rows) == 3, str(len(rows)))
                for k, row in enumerate(rows):
                    same_row(f"server-side cursor ({binary=}) row {k + 1}", row, sc.description)

    # RETURNING
    for binary in (False, True):
        with conn.transaction():
            cur.execute(f"""INSERT INTO drv SELECT id + 10, {COLS.replace(', ', ', ')} FROM drv WHERE id = 1
                            RETURNING {COLS}""", binary=binary)
            same_row(f"INSERT RETURNING ({binary=})", cur.fetchone(), cur.description)
            cur.execute(f"UPDATE drv SET note = pnote WHERE id = 11 RETURNING {COLS}", binary=binary)
            same_row(f"UPDATE RETURNING ({binary=})", cur.fetchone(), cur.description)
            cur.execute(f"DELETE FROM drv WHERE id = 11 RETURNING {COLS}", binary=binary)
            same_row(f"DELETE RETURNING ({binary=})", cur.fetchone(), cur.description)

    # COPY TO: the encrypted column's data is byte for byte the plain column's
    for fmt in ("text", "binary"):
        outs = {}
        for col in [c for pair in PAIRS for c in pair]:
            with cur.copy(f"COPY (SELECT {col} FROM drv ORDER BY id) TO STDOUT (FORMAT {fmt})") as cp:
                outs[col] = b"".join(bytes(d) for d in cp)
        for e, p in PAIRS:
            check(f"COPY {fmt}: {e} data equals {p}'s", outs[e] == outs[p] and len(outs[p]) > 0,
                  f"{outs[e]!r} vs {outs[p]!r}")
    with cur.copy(f"COPY (SELECT {COLS} FROM drv ORDER BY id) TO STDOUT (FORMAT BINARY)") as cp:
        cp.set_types(["jsonb", "jsonb", "bytea", "bytea", "text", "text"])
        rows = list(cp.rows())
    for k, row in enumerate(rows):
        same_row(f"COPY binary with types, row {k + 1}", row)

    # COPY FROM into the encrypted columns
    with conn.transaction():
        cur.execute("SELECT pdoc, pblob, pnote FROM drv WHERE id = 1")
        src = cur.fetchone()
        with cur.copy("COPY drv (id, doc, pdoc, blob, pblob, note, pnote) FROM STDIN") as cp:
            cp.write_row((21, psycopg.types.json.Jsonb(src[0]), psycopg.types.json.Jsonb(src[0]),
                          src[1], src[1], src[2], src[2]))
        cur.execute(f"SELECT {COLS} FROM drv WHERE id = 21")
        same_row("COPY FROM then SELECT", cur.fetchone(), cur.description)
        raise psycopg.Rollback()
PY

done_testing();
