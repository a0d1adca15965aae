#!/usr/bin/env python3
"""Write-side enforcement seen from Python clients: psycopg 3, asyncpg, SQLAlchemy 2.0 ORM.

Run by proxy/tests/integration/python_clients.rs against pgveil in front of the
database that enforce_write::setup() creates (customers: phone and id_card
deterministic, address and points randomized, points of original type int4).
Every client writes known canary values as `writer_app` through every write path
it has, reads them back through pgveil (values and Python types), looks rows up
by phone, and sees forged envelopes refused. The Rust side then scans the
database directly: every protected value must be an envelope, no canary in clear.

Inputs:
  PGVEIL_PROXY_PORT  pgveil's port on 127.0.0.1 (trust auth, dbname postgres)
  PGVEIL_FORGED      an envelope of the phone domain computed in Rust with the
                     keyring: a client must not be able to store it

Every check is run and reported (a failure does not stop the others); the last
line of stdout is a JSON summary (with the canaries written), and the exit status
is 1 if any check failed.
"""
import asyncio
import json
import os
import sys
import traceback
from typing import Optional

import asyncpg
import psycopg
import sqlalchemy
from psycopg import sql
from sqlalchemy import Integer, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

HOST = "127.0.0.1"
PORT = int(os.environ["PGVEIL_PROXY_PORT"])
FORGED = os.environ["PGVEIL_FORGED"]
USER = "writer_app"
COLS = ("phone", "id_card", "address", "points")

passed = 0
failures = []
gaps = []
# What customers must hold, per id, after every write: {id: {col: value}}.
expected = {}
# Values written to protected columns, every one of which must be stored encrypted.
canaries = []
_serial = [0]


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


def sqlstate(exc):
    return getattr(exc, "sqlstate", None)


def describe(exc):
    return f"{type(exc).__name__} sqlstate={sqlstate(exc)}: {exc}"


def gap(label, fn, code="0A000"):
    """A path pgveil does not take yet: refused with `code`, it is recorded as a gap
    (reported, not a failure); any other error fails; if it works, its row is checked
    like any other."""
    try:
        fn()
        print(f"ok   {label} (no longer refused)", flush=True)
    except (psycopg.Error, asyncpg.PostgresError) as e:
        if sqlstate(e) == code:
            gaps.append(f"{label}: {describe(e)}")
            print(f"GAP  {label}: {describe(e)}", flush=True)
        else:
            check(f"{label}: refused with {code} if at all", False, describe(e))


async def gap_async(label, fn, code="0A000"):
    try:
        await fn()
        print(f"ok   {label} (no longer refused)", flush=True)
    except (psycopg.Error, asyncpg.PostgresError) as e:
        if sqlstate(e) == code:
            gaps.append(f"{label}: {describe(e)}")
            print(f"GAP  {label}: {describe(e)}", flush=True)
        else:
            check(f"{label}: refused with {code} if at all", False, describe(e))


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


def phone(tag=None):
    """A fresh mobile number; recorded as a canary (bulk paths pass tag=None and
    record a sample themselves)."""
    _serial[0] += 1
    p = f"137{_serial[0]:08d}"
    if tag is not None:
        canaries.append(p)
    return p


def canary(v):
    canaries.append(v)
    return v


def put(cid, **cols):
    row = expected.setdefault(cid, dict.fromkeys(COLS))
    row.update(cols)


def tricky_address(tag):
    # Quotes, backslash, tab, newline, non-ASCII and a CSV delimiter: every escaping layer.
    # The canary is its plain head: a row's text form would escape the rest.
    canary(f"{tag} 北京路")
    return f"{tag} 北京路 'q' \"dq\" back\\slash\ttab\nline, comma"


# ---------------------------------------------------------------- psycopg 3

INSERT_PG = "insert into customers (id, name, phone, id_card, address, points) values (%s, %s, %s, %s, %s, %s)"


def pconnect(**kw):
    kw.setdefault("autocommit", True)
    return psycopg.connect(host=HOST, port=PORT, user=USER, dbname="postgres", connect_timeout=10, **kw)


def psycopg_writes():
    with pconnect() as conn:
        # One INSERT with server-side parameters (extended protocol, text format).
        p, card, addr = phone(1), canary("110101199001011001"), canary("Psycopg single road")
        conn.execute(INSERT_PG, (10001, "pg-single", p, card, addr, 11))
        put(10001, phone=p, id_card=card, address=addr, points=11)

        # executemany: psycopg sends the rows in pipeline mode.
        rows = []
        for i in range(10010, 10060):
            rows.append((i, "pg-many", phone(), None, f"Psycopg many street {i}", i * 2))
            put(i, phone=rows[-1][2], address=rows[-1][4], points=i * 2)
        canaries.extend([rows[7][2], rows[7][4], rows[41][2], rows[41][4]])
        with conn.cursor() as cur:
            cur.executemany(INSERT_PG, rows)
            eq("psycopg executemany: rowcount", cur.rowcount, 50)

        # Client-side binding: literals in the SQL text, sent as a simple Query.
        with psycopg.ClientCursor(conn) as cc:
            p, addr = phone(1), tricky_address("ClientCursor")
            cc.execute(INSERT_PG, (10002, "pg-client", p, canary("110101199001011002"), addr, 70000))
            put(10002, phone=p, id_card="110101199001011002", address=addr, points=70000)
        p, addr = phone(1), tricky_address("sql.Literal")
        conn.execute(
            sql.SQL("insert into customers (id, phone, address, points) values ({}, {}, {}, {})").format(
                sql.Literal(10003), sql.Literal(p), sql.Literal(addr), sql.Literal(5)
            )
        )
        put(10003, phone=p, address=addr, points=5)

        # A negative number as a literal: psycopg renders it ` -5` (ClientCursor and
        # sql.Literal alike), which an unprotected database takes for an int4 column.
        def negative_literal():
            p = phone(1)
            with psycopg.ClientCursor(conn) as cc:
                cc.execute("insert into customers (id, phone, points) values (%s, %s, %s)", (10005, p, -5))
            put(10005, phone=p, points=-5)

        gap("psycopg literal negative points (ClientCursor: `... values (10005, '...', -5)`)", negative_literal)

        # UPSERT: the conflicting row takes EXCLUDED.phone.
        upsert = (
            "insert into customers (id, phone, address) values (%s, %s, %s) "
            "on conflict (id) do update set phone = excluded.phone"
        )
        p = phone(1)
        conn.execute(upsert, (10004, p, canary("Upsert first road")))
        put(10004, phone=p, address="Upsert first road")
        p = phone(1)
        conn.execute(upsert, (10004, p, canary("Upsert ignored road")))
        put(10004, phone=p)

        # UPDATE with parameters.
        p = phone(1)
        cur = conn.execute("update customers set phone = %s, points = %s where id = %s", (p, 12, 10001))
        eq("psycopg update: rowcount", cur.rowcount, 1)
        put(10001, phone=p, points=12)
        addr = canary("Psycopg updated road")
        conn.execute("update customers set address = %s where phone = %s", (addr, p))
        put(10001, address=addr)

        # COPY FROM STDIN, text format, row by row (psycopg escapes tabs, newlines, backslashes).
        with conn.cursor() as cur:
            with cur.copy("COPY customers (id, phone, address, points) FROM STDIN") as copy:
                for i in range(10100, 10200):
                    p = phone()
                    addr = tricky_address(f"Copy text {i}") if i % 25 == 0 else f"Copy text street {i}"
                    copy.write_row((i, p, addr, i))
                    put(i, phone=p, address=addr, points=i)
                    if i % 25 == 0:
                        canaries.append(p)
            eq("psycopg copy text: rowcount", cur.rowcount, 100)

        # COPY FROM STDIN, CSV, raw chunks that split rows and quoted fields.
        lines = ["id,phone,address,points\n"]
        for i in range(10200, 10300):
            p = phone()
            addr = f'Csv, "quoted"\nstreet {i}'
            lines.append(f'{i},{p},"{addr.replace(chr(34), chr(34) * 2)}",{i if i % 2 else ""}\n')
            put(i, phone=p, address=addr, points=i if i % 2 else None)
            if i % 33 == 0:
                canaries.extend([p, f"street {i}"])
        data = "".join(lines)
        with conn.cursor() as cur:
            with cur.copy("COPY customers (id, phone, address, points) FROM STDIN (FORMAT csv, HEADER true)") as copy:
                for k in range(0, len(data), 11):
                    copy.write(data[k : k + 11])
            eq("psycopg copy csv: rowcount", cur.rowcount, 100)

        # A pipeline: several statements in flight before any result is read.
        with conn.pipeline():
            for i in range(10300, 10320):
                p = phone()
                conn.execute(INSERT_PG, (i, "pg-pipe", p, None, f"Pipeline road {i}", i))
                put(i, phone=p, address=f"Pipeline road {i}", points=i)
            for i in range(10300, 10310):
                p = phone(1)
                conn.execute("update customers set phone = %s where id = %s", (p, i))
                put(i, phone=p)
        canaries.append("Pipeline road 10315")

        # One prepared statement (prepare=True: a named server-side statement) reused 200 times.
        for i in range(10400, 10600):
            p = phone()
            conn.execute(INSERT_PG, (i, "pg-prep", p, None, f"Prepared road {i}", i), prepare=True)
            put(i, phone=p, address=f"Prepared road {i}", points=i)
            if i % 50 == 0:
                canaries.extend([p, f"Prepared road {i}"])

        # Binary parameters (%b): points as a Python int, dumped as int2 or int4 by its size.
        for i, pts in [(10600, 7), (10601, 40000), (10602, -32768), (10603, 2**31 - 1)]:
            p, addr = phone(1), canary(f"Binary road {i}")
            conn.execute(
                "insert into customers (id, phone, id_card, address, points) values (%b, %b, %b, %b, %b)",
                (i, p, canary(f"11010119900101{i % 10000:04d}"), addr, pts),
            )
            put(i, phone=p, id_card=f"11010119900101{i % 10000:04d}", address=addr, points=pts)
        p = phone(1)
        conn.execute("update customers set phone = %b, points = %b where id = %b", (p, 8, 10600))
        put(10600, phone=p, points=8)

        # A non-autocommit transaction with several writes, committed.
        with pconnect(autocommit=False) as tx:
            for i in range(10700, 10705):
                p = phone(1)
                tx.execute(INSERT_PG, (i, "pg-tx", p, None, canary(f"Transaction road {i}"), i))
                put(i, phone=p, address=f"Transaction road {i}", points=i)
            tx.commit()

        # shipments.sender_phone shares the phone domain.
        sp = expected[10001]["phone"]
        conn.execute("insert into shipments (id, customer_id, sender_phone, note) values (%s, %s, %s, %s)", (1, 10001, sp, "py"))


def psycopg_lookups():
    with pconnect() as conn:
        for cid in (10001, 10002, 10055, 10150, 10250, 10305, 10500, 10601):
            p = expected[cid]["phone"]
            eq(f"psycopg lookup phone = %s ({cid})", conn.execute("select id from customers where phone = %s", (p,)).fetchall(), [(cid,)])
            eq(
                f"psycopg lookup phone = %b ({cid})",
                conn.execute("select id from customers where phone = %b", (p,)).fetchall(),
                [(cid,)],
            )
        with psycopg.ClientCursor(conn) as cc:
            p = expected[10003]["phone"]
            cc.execute("select id, address, points from customers where phone = %s", (p,))
            eq("psycopg literal lookup", cc.fetchall(), [(10003, expected[10003]["address"], expected[10003]["points"])])
            a, b = expected[10010]["phone"], expected[10011]["phone"]
            cc.execute("select id from customers where phone in (%s, %s) order by id", (a, b))
            eq("psycopg literal IN lookup", cc.fetchall(), [(10010,), (10011,)])
        card = expected[10002]["id_card"]
        eq("psycopg lookup id_card", conn.execute("select id from customers where id_card = %s", (card,)).fetchall(), [(10002,)])
        # A Python list: psycopg's usual list lookup, an array parameter (text and binary).
        phones = [expected[10001]["phone"], expected[10150]["phone"], "13999999999"]
        for fmt in ("%s", "%b"):
            eq(
                f"psycopg list lookup phone = any({fmt})",
                conn.execute(f"select id from customers where phone = any({fmt}) order by id", (phones,)).fetchall(),
                [(10001,), (10150,)],
            )
        r = conn.execute(
            "select c.id from customers c join shipments s on s.sender_phone = c.phone where s.id = %s", (1,)
        ).fetchall()
        eq("psycopg join on the phone domain", r, [(10001,)])


def psycopg_forged():
    with pconnect() as conn:
        for label, fn in [
            ("param", lambda: conn.execute("insert into customers (id, phone) values (%s, %s)", (19001, FORGED))),
            ("binary param", lambda: conn.execute("insert into customers (id, phone) values (%b, %b)", (19002, FORGED))),
            (
                "literal",
                lambda: psycopg.ClientCursor(conn).execute(
                    "insert into customers (id, phone) values (%s, %s)", (19003, FORGED)
                ),
            ),
            ("update param", lambda: conn.execute("update customers set phone = %s where id = %s", (FORGED, 10001))),
            (
                "lookup param",
                lambda: conn.execute("select id from customers where phone = %s", (FORGED,)),
            ),
        ]:
            try:
                fn()
                check(f"psycopg forged envelope ({label}) -> 42501", False, "it ran")
            except psycopg.Error as e:
                eq(f"psycopg forged envelope ({label}) -> 42501", sqlstate(e), "42501")
            eq(f"psycopg usable after forged ({label})", conn.execute("select 1").fetchone(), (1,))
        try:
            with conn.cursor() as cur:
                with cur.copy("COPY customers (id, phone) FROM STDIN") as copy:
                    copy.write_row((19004, FORGED))
            check("psycopg forged envelope (copy) refused", False, "it ran")
        except psycopg.Error as e:
            check("psycopg forged envelope (copy) refused", "envelope" in str(e), describe(e))
        eq("psycopg usable after forged copy", conn.execute("select 1").fetchone(), (1,))
        p = phone(1)
        conn.execute(INSERT_PG, (10800, "after-forged", p, None, None, None))
        put(10800, phone=p)
        eq("psycopg no forged row stored", conn.execute("select count(*) from customers where id >= 19000").fetchone(), (0,))


# ---------------------------------------------------------------- asyncpg

INSERT_A = "insert into customers (id, name, phone, id_card, address, points) values ($1, $2, $3, $4, $5, $6)"


async def aconnect():
    return await asyncpg.connect(host=HOST, port=PORT, user=USER, database="postgres", timeout=10, command_timeout=30)


async def asyncpg_writes():
    conn = await aconnect()
    try:
        p, card, addr = phone(1), canary("110101199001012001"), tricky_address("asyncpg execute")
        status = await conn.execute(INSERT_A, 20001, "a-single", p, card, addr, 21)
        eq("asyncpg execute: status", status, "INSERT 0 1")
        put(20001, phone=p, id_card=card, address=addr, points=21)

        rows = [(i, "a-many", phone(), None, f"Asyncpg many street {i}", i) for i in range(20010, 20060)]
        for r in rows:
            put(r[0], phone=r[2], address=r[4], points=r[5])
        canaries.extend([rows[3][2], rows[3][4], rows[30][2]])
        await conn.executemany(INSERT_A, rows)

        # asyncpg describes before binding: points must come back as int4 (its original
        # type), so a Python int is accepted and sent in binary.
        stmt = await conn.prepare("insert into customers (id, phone, address, points) values ($1, $2, $3, $4)")
        eq("asyncpg prepare: parameter types", [t.name for t in stmt.get_parameters()], ["int4", "text", "text", "int4"])
        for i in range(21000, 22000):
            p = phone()
            await stmt.fetch(i, p, f"Asyncpg prepared road {i}", i * 7)
            put(i, phone=p, address=f"Asyncpg prepared road {i}", points=i * 7)
            if i % 111 == 0:
                canaries.extend([p, f"Asyncpg prepared road {i}"])

        upd = await conn.prepare("update customers set phone = $1, points = $2 where id = $3")
        for i in range(20010, 20015):
            p = phone(1)
            await upd.fetch(p, -i, i)
            put(i, phone=p, points=-i)

        p = phone(1)
        await conn.execute(
            "insert into customers (id, phone) values ($1, $2) on conflict (id) do update set phone = excluded.phone",
            20001,
            p,
        )
        put(20001, phone=p)

        async with conn.transaction():
            for i in range(20100, 20105):
                p = phone(1)
                await conn.execute(INSERT_A, i, "a-tx", p, None, canary(f"Asyncpg tx road {i}"), i)
                put(i, phone=p, address=f"Asyncpg tx road {i}", points=i)

        # copy_records_to_table uses COPY ... (FORMAT binary), which pgveil cannot
        # transform (docs/security.md): refused with 0A000 when it touches protected columns.
        async def copy_records():
            p = phone(1)
            await conn.copy_records_to_table(
                "customers", records=[(20200, p, canary("Asyncpg copy road"), 5)], columns=["id", "phone", "address", "points"]
            )
            put(20200, phone=p, address="Asyncpg copy road", points=5)

        await gap_async("asyncpg copy_records_to_table (COPY ... FORMAT binary)", copy_records)
        eq("asyncpg usable after copy_records_to_table", await conn.fetchval("select 1"), 1)
        # Into columns pgveil does not protect, binary COPY works.
        n = await conn.copy_records_to_table(
            "shipments", records=[(100 + i, 20001, f"note {i}") for i in range(10)], columns=["id", "customer_id", "note"]
        )
        eq("asyncpg copy_records_to_table into unprotected columns", n, "COPY 10")
    finally:
        await conn.close()


async def asyncpg_lookups():
    conn = await aconnect()
    try:
        for cid in (20001, 20012, 20030, 21000, 21500, 21999, 20102, 10001, 10150):
            p = expected[cid]["phone"]
            r = await conn.fetchrow("select id, phone, address, points from customers where phone = $1", p)
            eq(
                f"asyncpg fetchrow where phone = $1 ({cid})",
                tuple(r) if r else None,
                (cid, p, expected[cid]["address"], expected[cid]["points"]),
            )
        stmt = await conn.prepare("select id from customers where phone = $1")
        for cid in (21001, 21002, 21003):
            eq(f"asyncpg prepared lookup ({cid})", await stmt.fetchval(expected[cid]["phone"]), cid)
        eq("asyncpg lookup of an unknown phone", await conn.fetchrow("select id from customers where phone = $1", "13999999999"), None)
        phones = [expected[21001]["phone"], expected[21003]["phone"]]
        got = await conn.fetch("select id from customers where phone = any($1) order by id", phones)
        eq("asyncpg list lookup phone = any($1)", [r[0] for r in got], [21001, 21003])
    finally:
        await conn.close()


async def asyncpg_forged():
    conn = await aconnect()
    try:
        for label, coro in [
            ("execute param", lambda: conn.execute("insert into customers (id, phone) values ($1, $2)", 29001, FORGED)),
            ("fetchrow lookup", lambda: conn.fetchrow("select id from customers where phone = $1", FORGED)),
            ("executemany", lambda: conn.executemany("insert into customers (id, phone) values ($1, $2)", [(29002, FORGED)])),
            ("literal", lambda: conn.execute(f"insert into customers (id, phone) values (29003, '{FORGED}')")),
        ]:
            try:
                await coro()
                check(f"asyncpg forged envelope ({label}) -> 42501", False, "it ran")
            except asyncpg.PostgresError as e:
                eq(f"asyncpg forged envelope ({label}) -> 42501", sqlstate(e), "42501")
            eq(f"asyncpg usable after forged ({label})", await conn.fetchval("select 1"), 1)
        p = phone(1)
        await conn.execute("insert into customers (id, phone) values ($1, $2)", 20900, p)
        put(20900, phone=p)
        eq("asyncpg no forged row stored", await conn.fetchval("select count(*) from customers where id >= 29000 and id < 30000"), 0)
    finally:
        await conn.close()


# ---------------------------------------------------------------- SQLAlchemy 2.0 ORM


class Base(DeclarativeBase):
    pass


class Customer(Base):
    __tablename__ = "customers"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    name: Mapped[Optional[str]]
    phone: Mapped[Optional[str]]
    id_card: Mapped[Optional[str]]
    address: Mapped[Optional[str]]
    points: Mapped[Optional[int]] = mapped_column(Integer)


def engine():
    return create_engine(f"postgresql+psycopg://{USER}@{HOST}:{PORT}/postgres", pool_size=1, max_overflow=0)


def sqlalchemy_orm():
    eng = engine()
    try:
        with Session(eng) as s:
            p, addr = phone(1), tricky_address("ORM add")
            s.add(Customer(id=30001, name="orm", phone=p, id_card=canary("110101199001013001"), address=addr, points=31))
            put(30001, phone=p, id_card="110101199001013001", address=addr, points=31)
            s.commit()
        with Session(eng) as s:
            objs = []
            for i in range(30010, 30040):
                p = phone()
                objs.append(Customer(id=i, name="orm-many", phone=p, address=f"ORM many road {i}", points=i))
                put(i, phone=p, address=f"ORM many road {i}", points=i)
            canaries.extend([objs[5].phone, objs[5].address])
            s.add_all(objs)
            s.commit()
        with Session(eng) as s:
            c = s.get(Customer, 30010)
            p = phone(1)
            c.phone = p
            c.points = 99
            c.address = canary("ORM updated road")
            s.commit()
            put(30010, phone=p, points=99, address="ORM updated road")
        with Session(eng) as s:
            for cid in (30001, 30010, 30020, 10001, 21500):
                want_phone = expected[cid]["phone"]
                got = s.scalars(select(Customer).where(Customer.phone == want_phone)).all()
                eq(
                    f"sqlalchemy select where phone == ({cid})",
                    [(c.id, c.phone, c.address, c.points) for c in got],
                    [(cid, want_phone, expected[cid]["address"], expected[cid]["points"])],
                )
            got = s.scalars(select(Customer).where(Customer.phone.in_([expected[30011]["phone"], expected[30012]["phone"]])).order_by(Customer.id)).all()
            eq("sqlalchemy select where phone in_", [c.id for c in got], [30011, 30012])
            c = s.get(Customer, 30001)
            check("sqlalchemy: points is an int", type(c.points) is int, repr(c.points))
        with Session(eng) as s:
            s.add(Customer(id=39001, phone=FORGED))
            try:
                s.commit()
                check("sqlalchemy forged envelope -> 42501", False, "it ran")
            except sqlalchemy.exc.DBAPIError as e:
                eq("sqlalchemy forged envelope -> 42501", sqlstate(e.orig), "42501")
                s.rollback()
            eq("sqlalchemy session usable after forged", s.scalar(select(sqlalchemy.func.count()).select_from(Customer).where(Customer.id >= 39000)), 0)
    finally:
        eng.dispose()


# ---------------------------------------------------------------- read back


def compare(label, got):
    """got: {id: (phone, id_card, address, points)} read through a client."""
    want = {cid: tuple(v[c] for c in COLS) for cid, v in expected.items()}
    eq(f"{label}: row ids", sorted(got), sorted(want))
    bad = [(cid, got.get(cid), want[cid]) for cid in sorted(want) if got.get(cid) != want[cid]]
    check(f"{label}: every value as written ({len(want)} rows)", not bad, f"{len(bad)} differ, first: {bad[:3]!r}")
    types = {type(v[3]) for v in got.values() if v[3] is not None}
    eq(f"{label}: points are Python ints", types, {int})


READ_SQL = "select id, phone, id_card, address, points from customers where id >= 10000 order by id"


def psycopg_read_back():
    with pconnect() as conn:
        compare("psycopg text", {r[0]: r[1:] for r in conn.execute(READ_SQL).fetchall()})
        compare("psycopg binary", {r[0]: r[1:] for r in conn.execute(READ_SQL, binary=True).fetchall()})
        with psycopg.ClientCursor(conn) as cc:
            cc.execute(READ_SQL)
            compare("psycopg client cursor", {r[0]: r[1:] for r in cc.fetchall()})
        got = {}
        with conn.cursor() as cur:
            with cur.copy("COPY (select id, phone, id_card, address, points from customers where id >= 10000) TO STDOUT") as copy:
                copy.set_types(["int4", "text", "text", "text", "int4"])
                for r in copy.rows():
                    got[r[0]] = r[1:]
        compare("psycopg copy to stdout", got)
        eq(
            "psycopg shipments sender_phone",
            conn.execute("select sender_phone from shipments where id = 1").fetchone(),
            (expected[10001]["phone"],),
        )


async def asyncpg_read_back():
    conn = await aconnect()
    try:
        compare("asyncpg fetch", {r["id"]: (r["phone"], r["id_card"], r["address"], r["points"]) for r in await conn.fetch(READ_SQL)})
        stmt = await conn.prepare(READ_SQL)
        eq("asyncpg read types", [a.type.name for a in stmt.get_attributes()], ["int4", "text", "text", "text", "int4"])
    finally:
        await conn.close()


def sqlalchemy_read_back():
    eng = engine()
    try:
        with Session(eng) as s:
            got = {c.id: (c.phone, c.id_card, c.address, c.points) for c in s.scalars(select(Customer).where(Customer.id >= 10000))}
            compare("sqlalchemy ORM", got)
    finally:
        eng.dispose()


def main():
    section("psycopg writes", psycopg_writes)
    section("psycopg lookups", psycopg_lookups)
    section("psycopg forged envelopes", psycopg_forged)
    section("asyncpg writes", asyncpg_writes)
    section("asyncpg lookups", asyncpg_lookups)
    section("asyncpg forged envelopes", asyncpg_forged)
    section("sqlalchemy ORM", sqlalchemy_orm)
    section("psycopg read back", psycopg_read_back)
    section("asyncpg read back", asyncpg_read_back)
    section("sqlalchemy read back", sqlalchemy_read_back)
    summary = {
        "ok": not failures,
        "passed": passed,
        "failed": len(failures),
        "failures": failures,
        "gaps": gaps,
        "rows": len(expected),
        "canaries": sorted(set(canaries)),
        "psycopg": psycopg.__version__,
        "libpq": psycopg.pq.version(),
        "asyncpg": asyncpg.__version__,
        "sqlalchemy": sqlalchemy.__version__,
    }
    print(json.dumps(summary, ensure_ascii=False), flush=True)
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
