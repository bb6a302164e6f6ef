# Copyright: pg_atrest authors; same license as pg_atrest.
#
# asyncpg (binary results, every statement a named prepared statement) sees the encrypted
# columns as the plain types: the application gets the same Python object from the
# encrypted column as from a plain column holding the same value (jsonb as str by
# default and as the decoded object once a jsonb codec is set, bytea as bytes, text as
# str), through fetch, prepared statements, cursors, RETURNING and COPY TO (the copied
# data is byte for byte the plain column's, text and binary).

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use AtrestTest;

my $node = atrest_node('asyncpg', cron => 0, pkcs11 => 0);
driver_fixture($node);

driver_checks($node, 'asyncpg', ['/usr/bin/python3'], <<'PY');
import asyncio, io, json
import asyncpg

PAIRS = [("doc", "pdoc"), ("blob", "pblob"), ("note", "pnote")]
COLS = ", ".join(f"{e}, {p}" for e, p in PAIRS)

def check(name, cond, why=""):
    print(("ok " if cond else "not ok ") + name + ("" if cond else " # " + why))

def same_row(name, row):
    for i, (e, p) in enumerate(PAIRS):
        a, b = row[2 * i], row[2 * i + 1]
        check(f"{name}: {e} is a {type(b).__name__} equal to {p}",
              type(a) is type(b) and a == b, f"{type(a).__name__} {a!r} vs {type(b).__name__} {b!r}")

def same_types(name, stmt):
    attrs = stmt.get_attributes()
    for i, (e, p) in enumerate(PAIRS):
        check(f"{name}: {e} is described as {attrs[2 * i + 1].type.name}",
              attrs[2 * i].type.oid == attrs[2 * i + 1].type.oid,
              f"{attrs[2 * i].type.name} vs {attrs[2 * i + 1].type.name}")

async def main():
    conn = await asyncpg.connect()
    for rnd in ("default codecs", "jsonb codec"):
        if rnd == "jsonb codec":
            await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads,
                                      schema="pg_catalog")
        for i in (1, 2, 3):
            same_row(f"{rnd}: fetchrow row {i}",
                     await conn.fetchrow(f"SELECT {COLS} FROM drv WHERE id = $1", i))
        stmt = await conn.prepare(f"SELECT {COLS} FROM drv WHERE id = $1")
        same_types(f"{rnd}: prepared statement", stmt)
        for n in range(3):
            same_row(f"{rnd}: prepared statement, run {n}", await stmt.fetchrow(1))
        async with conn.transaction():
            rows = [r async for r in conn.cursor(f"SELECT {COLS} FROM drv ORDER BY id", prefetch=1)]
            check(f"{rnd}: cursor: 3 rows", len(rows) == 3, str(len(rows)))
            for k, r in enumerate(rows):
                same_row(f"{rnd}: cursor row {k + 1}", r)
            cur = await conn.cursor(f"SELECT {COLS} FROM drv ORDER BY id")
            same_row(f"{rnd}: cursor fetch", (await cur.fetch(1))[0])
        tr = conn.transaction()
        await tr.start()
        same_row(f"{rnd}: INSERT RETURNING", await conn.fetchrow(
            f"INSERT INTO drv SELECT id + 10, {COLS} FROM drv WHERE id = 1 RETURNING {COLS}"))
        same_row(f"{rnd}: UPDATE RETURNING", await conn.fetchrow(
            f"UPDATE drv SET note = pnote WHERE id = 11 RETURNING {COLS}"))
        same_row(f"{rnd}: DELETE RETURNING", await conn.fetchrow(
            f"DELETE FROM drv WHERE id = 11 RETURNING {COLS}"))
        await tr.rollback()

    for fmt in ("text", "binary"):
        outs = {}
        for col in [c for pair in PAIRS for c in pair]:
            buf = io.BytesIO()
            await conn.copy_from_query(f"SELECT {col} FROM drv ORDER BY id", output=buf, format=fmt)
            outs[col] = buf.getvalue()
        for e, p in PAIRS:
            check(f"COPY {fmt}: {e} data equals {p}'s", outs[e] == outs[p] and len(outs[p]) > 0,
                  f"{outs[e]!r} vs {outs[p]!r}")
    await conn.close()

asyncio.run(main())
PY

done_testing();
