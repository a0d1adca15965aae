#!/usr/bin/env python3
"""Read-side enforcement seen from Python clients: psycopg 3 and asyncpg.

Run by proxy/tests/integration/python_clients.rs against pgveil in front of the
`customers`/`orders` database that enforce_read::setup() seeds. Inputs:

  PGVEIL_PROXY_PORT  pgveil's port on 127.0.0.1 (trust auth, dbname postgres)
  PGVEIL_EXPECTED    JSON computed in Rust: per policy role ("support",
                     "dispatcher", "analyst") and customer id, the values that
                     role must read (masks and hashes come from pgveil's own
                     code, not re-implemented here); dates as ISO strings.

Every check is run and reported (a failure does not stop the others); the last
line of stdout is a JSON summary, and the exit status is 1 if any check failed.
"""
import asyncio
import datetime
import decimal
import json
import os
import sys
import traceback

import asyncpg
import psycopg
from psycopg.pq import TransactionStatus

HOST = "127.0.0.1"
PORT = int(os.environ["PGVEIL_PROXY_PORT"])
EXP = json.loads(os.environ["PGVEIL_EXPECTED"])
USERS = {"support": "support_ann", "dispatcher": "dispatch_app", "analyst": "bi_reader"}
TEXT_OID = 25
DATE_OID = 1082

passed = 0
failures = []


def check(label, cond, detail=""):
    global passed
    if cond:
        passed += 1
        print(f"ok   {label}", flush=True)
    else:
        failures.append(f"{label}: {detail}")
        print(f"FAIL {label}: {detail}", flush=True)


def eq(label, got, want):
    check(label, got == want, f"got {got!r}, want {want!r}")


def want(role, cid, col):
    """The value `role` must read for customer `cid`'s column `col`."""
    v = EXP[role][str(cid)][col]
    if col == "birth" and role != "support":
        return datetime.date.fromisoformat(v)  # unmasked: still a date
    return v


def sqlstate(exc):
    return getattr(exc, "sqlstate", None)


def describe(exc):
    return f"{type(exc).__name__} sqlstate={sqlstate(exc)}: {exc}"


def expect_refused(label, fn, code="42501", contains=None):
    """fn() must raise with SQLSTATE `code`; returns the exception."""
    try:
        fn()
    except (psycopg.Error, asyncpg.PostgresError) as e:
        eq(f"{label} -> {code}", sqlstate(e), code)
        if contains is not None:
            check(f"{label}: message names {contains}", contains in str(e), str(e))
        return e
    check(f"{label} -> {code}", False, "it ran")
    return None


async def expect_refused_async(label, coro, code="42501", contains=None):
    try:
        await coro
    except (psycopg.Error, asyncpg.PostgresError) as e:
        eq(f"{label} -> {code}", sqlstate(e), code)
        if contains is not None:
            check(f"{label}: message names {contains}", contains in str(e), str(e))
        return e
    check(f"{label} -> {code}", False, "it ran")
    return None


def section(name, fn):
    print(f"== {name}", flush=True)
    try:
        result = fn()
        if asyncio.iscoroutine(result):
            asyncio.run(result)
    except Exception as e:  # noqa: BLE001 - every unexpected error is a failure to report
        failures.append(f"{name}: unexpected {describe(e)}")
        print(f"FAIL {name}: unexpected {describe(e)}", flush=True)
        traceback.print_exc()


# ---------------------------------------------------------------- psycopg 3


def pconnect(role, **kw):
    kw.setdefault("autocommit", True)
    return psycopg.connect(
        host=HOST, port=PORT, user=USERS[role], dbname="postgres", connect_timeout=10, **kw
    )


CUSTOMER_SQL = "select id, name, phone, address, birth from customers order by id"


def psycopg_simple_protocol():
    # No parameters and text results: psycopg sends a simple Query message.
    with pconnect("support") as conn:
        cur = conn.execute(CUSTOMER_SQL)
        rows = cur.fetchall()
        for r in rows:
            cid = r[0]
            for i, col in enumerate(["name", "phone", "address", "birth"], 1):
                eq(f"psycopg simple: support {col} of {cid}", r[i], want("support", cid, col))
        eq(
            "psycopg simple: masked birth is reported as text",
            cur.description[4].type_code,
            TEXT_OID,
        )
        expect_refused(
            "psycopg simple: support order by phone",
            lambda: conn.execute("select id from customers order by phone"),
        )
        expect_refused(
            "psycopg simple: support id_card",
            lambda: conn.execute("select id_card from customers"),
            contains="public.customers.id_card",
        )
        eq("psycopg simple: connection usable after refusals", conn.execute("select 1").fetchone(), (1,))

    with pconnect("dispatcher") as conn:
        cur = conn.execute(CUSTOMER_SQL)
        for r in cur.fetchall():
            cid = r[0]
            for i, col in enumerate(["name", "phone", "address", "birth"], 1):
                eq(f"psycopg simple: dispatcher {col} of {cid}", r[i], want("dispatcher", cid, col))
        eq("psycopg simple: unmasked birth stays a date", cur.description[4].type_code, DATE_OID)

    with pconnect("analyst") as conn:
        a = conn.execute("select id, phone from customers order by id").fetchall()
        b = conn.execute("select phone from customers where id = 1").fetchone()
        for cid, phone in a:
            eq(f"psycopg simple: analyst phone hash of {cid}", phone, want("analyst", cid, "phone"))
        eq("psycopg simple: analyst hash stable across calls", b[0], a[0][1])
        check("psycopg simple: analyst hashes differ per phone", a[0][1] != a[1][1], repr(a))


def psycopg_params():
    # With parameters psycopg uses the extended protocol (Parse/Bind with
    # server-side $n parameters); after 5 runs of one query it prepares it by name.
    sql = "select name, phone, birth, id from customers where id = %s"
    with pconnect("support") as conn:
        for n in range(7):
            cur = conn.execute(sql, (2,))
            r = cur.fetchone()
            eq(f"psycopg params #{n}: support name", r[0], want("support", 2, "name"))
            eq(f"psycopg params #{n}: support phone", r[1], want("support", 2, "phone"))
            eq(f"psycopg params #{n}: support birth as text", r[2], want("support", 2, "birth"))
            eq(f"psycopg params #{n}: id", r[3], 2)
        eq("psycopg params: birth column type", cur.description[2].type_code, TEXT_OID)
        r = conn.execute(sql, (1,), prepare=True).fetchone()
        eq("psycopg params prepare=True: support name", r[0], want("support", 1, "name"))
        expect_refused(
            "psycopg params: name like %s",
            lambda: conn.execute("select name from customers where name like %s", ("王%",)),
        )
        expect_refused(
            "psycopg params: order by phone",
            lambda: conn.execute("select id from customers where id > %s order by phone", (0,)),
        )
        r = conn.execute(sql, (1,)).fetchone()
        eq("psycopg params: prepared statement usable after refusal", r[0], want("support", 1, "name"))
        r = conn.execute(
            "select id, customer_id, amount, note from orders where id = %s", (1,)
        ).fetchone()
        eq("psycopg params: orders row", r, (1, 1, decimal.Decimal("12.50"), "first"))

    with pconnect("dispatcher") as conn:
        r = conn.execute("select phone, address, birth from customers where id = %s", (1,)).fetchone()
        eq("psycopg params: dispatcher phone", r[0], want("dispatcher", 1, "phone"))
        eq("psycopg params: dispatcher address", r[1], want("dispatcher", 1, "address"))
        eq("psycopg params: dispatcher birth", r[2], want("dispatcher", 1, "birth"))

    with pconnect("analyst") as conn:
        got = [
            conn.execute("select phone from customers where id = %s", (1,)).fetchone()[0]
            for _ in range(3)
        ]
        eq("psycopg params: analyst phone hash stable", got, [want("analyst", 1, "phone")] * 3)


def psycopg_binary():
    with pconnect("support") as conn:
        cur = conn.cursor(binary=True)
        cur.execute(CUSTOMER_SQL)
        for r in cur.fetchall():
            cid = r[0]
            for i, col in enumerate(["name", "phone", "address", "birth"], 1):
                eq(f"psycopg binary: support {col} of {cid}", r[i], want("support", cid, col))
        eq("psycopg binary: masked birth reported as text", cur.description[4].type_code, TEXT_OID)
        cur.execute("select name, birth from customers where id = %s", (2,))
        eq(
            "psycopg binary params: support",
            cur.fetchone(),
            (want("support", 2, "name"), want("support", 2, "birth")),
        )
        expect_refused(
            "psycopg binary: order by phone",
            lambda: cur.execute("select id from customers order by phone"),
        )
        cur.execute("select id, customer_id, amount, note from orders order by id")
        eq(
            "psycopg binary: orders rows",
            cur.fetchall(),
            [(1, 1, decimal.Decimal("12.50"), "first"), (2, 2, decimal.Decimal("99.99"), "second")],
        )

    with pconnect("dispatcher") as conn:
        r = conn.execute(
            "select phone, birth from customers where id = %s", (2,), binary=True
        ).fetchone()
        eq("psycopg binary: dispatcher phone", r[0], want("dispatcher", 2, "phone"))
        eq("psycopg binary: dispatcher birth is a date", r[1], want("dispatcher", 2, "birth"))

    with pconnect("analyst") as conn:
        r = conn.execute("select phone from customers order by id", binary=True).fetchall()
        eq(
            "psycopg binary: analyst hashes",
            [x[0] for x in r],
            [want("analyst", 1, "phone"), want("analyst", 2, "phone")],
        )


def psycopg_transactions():
    # psycopg's default: not autocommit, the first statement opens a transaction.
    with pconnect("support", autocommit=False) as conn:
        r = conn.execute("select name from customers where id = 1").fetchone()
        eq("psycopg tx: read before the refusal", r[0], want("support", 1, "name"))
        expect_refused("psycopg tx: min(phone)", lambda: conn.execute("select min(phone) from customers"))
        eq("psycopg tx: transaction is in error", conn.info.transaction_status, TransactionStatus.INERROR)
        expect_refused("psycopg tx: next statement", lambda: conn.execute("select 1"), code="25P02")
        expect_refused(
            "psycopg tx: next statement with params",
            lambda: conn.execute("select %s::int", (1,)),
            code="25P02",
        )
        conn.rollback()
        eq("psycopg tx: works after rollback", conn.execute("select 1").fetchone(), (1,))
        expect_refused(
            "psycopg tx: refused with params",
            lambda: conn.execute("select id from customers where phone = %s", ("x",)),
        )
        expect_refused("psycopg tx: next after params refusal", lambda: conn.execute("select 1"), code="25P02")
        conn.rollback()
        # The context manager form rolls back on the error and leaves the connection usable.
        try:
            with conn.transaction():
                conn.execute("select id from customers order by phone")
            check("psycopg tx block: refused", False, "it ran")
        except psycopg.Error as e:
            eq("psycopg tx block: refused", sqlstate(e), "42501")
        eq("psycopg tx block: usable after", conn.execute("select count(*) from orders").fetchone(), (2,))
        conn.commit()


def psycopg_unprotected():
    with pconnect("support", autocommit=False) as conn:
        with conn.cursor() as cur:
            cur.executemany(
                "insert into orders values (%s, %s, %s, %s)",
                [(200, 1, decimal.Decimal("1.25"), "psycopg-a"), (201, 2, decimal.Decimal("3.50"), "psycopg-b")],
            )
            cur.execute("select id, amount, note from orders where id >= 200 order by id")
            eq(
                "psycopg executemany: rows",
                cur.fetchall(),
                [(200, decimal.Decimal("1.25"), "psycopg-a"), (201, decimal.Decimal("3.50"), "psycopg-b")],
            )
        conn.rollback()
        # A server-side (named) cursor: DECLARE ... CURSOR on an unprotected table.
        with conn.cursor(name="py_orders") as cur:
            cur.itersize = 1
            cur.execute("select id, amount from orders order by id")
            eq(
                "psycopg named cursor on orders",
                list(cur),
                [(1, decimal.Decimal("12.50")), (2, decimal.Decimal("99.99"))],
            )
        conn.rollback()


# ---------------------------------------------------------------- asyncpg


async def aconnect(role):
    return await asyncpg.connect(
        host=HOST, port=PORT, user=USERS[role], database="postgres", timeout=10, command_timeout=30
    )


async def asyncpg_fetch():
    conn = await aconnect("support")
    try:
        rows = await conn.fetch(CUSTOMER_SQL)
        for r in rows:
            cid = r["id"]
            for col in ["name", "phone", "address", "birth"]:
                eq(f"asyncpg fetch: support {col} of {cid}", r[col], want("support", cid, col))
        r = await conn.fetchrow("select name, phone, birth, id from customers where id = $1", 2)
        eq(
            "asyncpg fetchrow: support",
            tuple(r),
            (want("support", 2, "name"), want("support", 2, "phone"), want("support", 2, "birth"), 2),
        )
        v = await conn.fetchval("select birth from customers where id = $1", 1)
        eq("asyncpg fetchval: masked birth is a str", v, want("support", 1, "birth"))
    finally:
        await conn.close()

    conn = await aconnect("dispatcher")
    try:
        r = await conn.fetchrow("select phone, address, birth, id_card from customers where id = $1", 1)
        eq("asyncpg: dispatcher phone", r["phone"], want("dispatcher", 1, "phone"))
        eq("asyncpg: dispatcher address", r["address"], want("dispatcher", 1, "address"))
        eq("asyncpg: dispatcher birth is a date", r["birth"], want("dispatcher", 1, "birth"))
        eq("asyncpg: dispatcher id_card masked", r["id_card"], want("dispatcher", 1, "id_card"))
    finally:
        await conn.close()

    conn = await aconnect("analyst")
    try:
        a = await conn.fetch("select id, phone from customers order by id")
        b = await conn.fetchval("select phone from customers where id = $1", 1)
        c = await conn.fetchval("select phone from customers where id = $1", 1)
        for r in a:
            eq(f"asyncpg: analyst phone hash of {r['id']}", r["phone"], want("analyst", r["id"], "phone"))
        eq("asyncpg: analyst hash stable", [b, c], [a[0]["phone"], a[0]["phone"]])
    finally:
        await conn.close()


async def asyncpg_prepared():
    conn = await aconnect("support")
    try:
        stmt = await conn.prepare("select name, phone, birth, id from customers where id = $1")
        eq(
            "asyncpg prepare: result types",
            [a.type.name for a in stmt.get_attributes()],
            ["text", "text", "text", "int4"],
        )
        eq("asyncpg prepare: parameter types", [t.name for t in stmt.get_parameters()], ["int4"])
        for n in range(3):
            r = await stmt.fetchrow(2)
            eq(
                f"asyncpg prepared reuse #{n}",
                tuple(r),
                (want("support", 2, "name"), want("support", 2, "phone"), want("support", 2, "birth"), 2),
            )
        await expect_refused_async(
            "asyncpg prepare: name like $1",
            conn.prepare("select name from customers where name like $1"),
        )
        r = await stmt.fetchrow(1)
        eq("asyncpg prepared usable after a refused prepare", r["name"], want("support", 1, "name"))
    finally:
        await conn.close()

    conn = await aconnect("dispatcher")
    try:
        stmt = await conn.prepare("select phone, birth from customers where id = $1")
        eq(
            "asyncpg prepare: dispatcher types",
            [a.type.name for a in stmt.get_attributes()],
            ["text", "date"],
        )
        r = await stmt.fetchrow(2)
        eq("asyncpg prepare: dispatcher row", tuple(r), (want("dispatcher", 2, "phone"), want("dispatcher", 2, "birth")))
    finally:
        await conn.close()


async def asyncpg_introspection():
    # asyncpg looks up non-builtin types with large pg_catalog queries (aliases
    # such as `t.typname AS name`) on the same connection.
    conn = await aconnect("support")
    try:
        await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
        eq("asyncpg set_type_codec(json)", await conn.fetchval("""select '{"a": 1}'::json"""), {"a": 1})
        eq("asyncpg introspects an enum", await conn.fetchval("select 'open'::ticket_state"), "open")
        r = await conn.fetchval("select (12.5, 'x')::order_line")
        eq("asyncpg introspects a composite", (r["amount"], r["note"]), (decimal.Decimal("12.50"), "x"))
        r = await conn.fetchrow(
            "select name, 'closed'::ticket_state as state from customers where id = $1", 1
        )
        eq("asyncpg enum beside a masked column", tuple(r), (want("support", 1, "name"), "closed"))
        eq(
            "asyncpg introspects an enum parameter",
            await conn.fetchval("select $1::ticket_state::text", "closed"),
            "closed",
        )
        await conn.reload_schema_state()
        eq("asyncpg after reload_schema_state", await conn.fetchval("select 'closed'::ticket_state"), "closed")
    finally:
        await conn.close()


async def asyncpg_refusals():
    conn = await aconnect("support")
    try:
        # execute() without arguments: simple Query; fetch(): extended protocol.
        await expect_refused_async("asyncpg execute: order by phone", conn.execute("select id from customers order by phone"))
        await expect_refused_async("asyncpg fetch: order by phone", conn.fetch("select id from customers order by phone"))
        await expect_refused_async(
            "asyncpg fetch: id_card",
            conn.fetch("select id_card from customers"),
            contains="public.customers.id_card",
        )
        eq("asyncpg usable after refusals", await conn.fetchval("select 1"), 1)

        tr = conn.transaction()
        await tr.start()
        eq("asyncpg tx: read before", await conn.fetchval("select name from customers where id = 1"), want("support", 1, "name"))
        await expect_refused_async("asyncpg tx: min(phone)", conn.fetch("select min(phone) from customers"))
        await expect_refused_async("asyncpg tx: next statement", conn.fetchval("select 1"), code="25P02")
        await expect_refused_async("asyncpg tx: next simple statement", conn.execute("select 1"), code="25P02")
        await tr.rollback()
        eq("asyncpg tx: usable after rollback", await conn.fetchval("select 1"), 1)

        try:
            async with conn.transaction():
                await conn.fetch("select id from customers where phone = $1", "x")
            check("asyncpg tx block: refused", False, "it ran")
        except asyncpg.PostgresError as e:
            eq("asyncpg tx block: refused", sqlstate(e), "42501")
        eq("asyncpg tx block: usable after", await conn.fetchval("select count(*) from orders"), 2)
    finally:
        await conn.close()


async def asyncpg_cursor():
    conn = await aconnect("support")
    try:
        async with conn.transaction():
            got = [
                tuple(r)
                async for r in conn.cursor("select id, name, phone from customers order by id", prefetch=1)
            ]
            eq(
                "asyncpg cursor iteration (prefetch 1)",
                got,
                [(cid, want("support", cid, "name"), want("support", cid, "phone")) for cid in (1, 2)],
            )
            cur = await conn.cursor("select id, birth from customers where id >= $1 order by id", 1)
            first = await cur.fetch(1)
            rest = await cur.fetch(5)
            eq(
                "asyncpg cursor fetch(n)",
                [tuple(r) for r in first + rest],
                [(1, want("support", 1, "birth")), (2, want("support", 2, "birth"))],
            )
            got = [tuple(r) async for r in conn.cursor("select id, amount from orders order by id", prefetch=1)]
            eq("asyncpg cursor on orders", got, [(1, decimal.Decimal("12.50")), (2, decimal.Decimal("99.99"))])
    finally:
        await conn.close()


async def asyncpg_unprotected():
    conn = await aconnect("support")
    try:
        r = await conn.fetchrow("select id, customer_id, amount, note from orders where id = $1", 2)
        eq("asyncpg orders row", tuple(r), (2, 2, decimal.Decimal("99.99"), "second"))
        stmt = await conn.prepare("select id, customer_id, amount, note from orders")
        eq("asyncpg orders types", [a.type.name for a in stmt.get_attributes()], ["int4", "int4", "numeric", "text"])
        tr = conn.transaction()
        await tr.start()
        await conn.executemany(
            "insert into orders values ($1, $2, $3, $4)",
            [(100 + i, 1 + i % 2, decimal.Decimal(f"{i}.25"), f"asyncpg-{i}") for i in range(5)],
        )
        got = await conn.fetch("select id, amount, note from orders where id >= 100 order by id")
        eq(
            "asyncpg executemany rows",
            [tuple(r) for r in got],
            [(100 + i, decimal.Decimal(f"{i}.25"), f"asyncpg-{i}") for i in range(5)],
        )
        await tr.rollback()
        eq("asyncpg executemany rolled back", await conn.fetchval("select count(*) from orders"), 2)
    finally:
        await conn.close()


async def asyncpg_pool():
    # A pool resets each connection on release (pg_advisory_unlock_all, CLOSE ALL,
    # UNLISTEN *, RESET ALL in one simple Query).
    pool = await asyncpg.create_pool(
        host=HOST, port=PORT, user=USERS["support"], database="postgres", min_size=1, max_size=1, timeout=10
    )
    try:
        for n in range(3):
            async with pool.acquire() as c:
                eq(
                    f"asyncpg pool acquire #{n}",
                    await c.fetchval("select phone from customers where id = $1", 2),
                    want("support", 2, "phone"),
                )
    finally:
        await asyncio.wait_for(pool.close(), 10)


def main():
    section("psycopg simple protocol", psycopg_simple_protocol)
    section("psycopg parameters", psycopg_params)
    section("psycopg binary", psycopg_binary)
    section("psycopg transactions", psycopg_transactions)
    section("psycopg unprotected", psycopg_unprotected)
    section("asyncpg fetch", asyncpg_fetch)
    section("asyncpg prepared", asyncpg_prepared)
    section("asyncpg introspection", asyncpg_introspection)
    section("asyncpg refusals", asyncpg_refusals)
    section("asyncpg cursor", asyncpg_cursor)
    section("asyncpg unprotected", asyncpg_unprotected)
    section("asyncpg pool", asyncpg_pool)
    summary = {
        "ok": not failures,
        "passed": passed,
        "failed": len(failures),
        "failures": failures,
        "psycopg": psycopg.__version__,
        "libpq": psycopg.pq.version(),
        "asyncpg": asyncpg.__version__,
    }
    print(json.dumps(summary, ensure_ascii=False), flush=True)
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
