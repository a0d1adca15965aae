"""Chinese text through an enforcing pgveil in legacy client encodings (GBK, GB18030, EUC_CN,
BIG5), with psycopg 3: every write path, reads by each role in text and binary, lookups, COPY
both ways, refusals, and the server's own errors for bytes and characters the encoding lacks.

The oracle for what a masked role reads is the same statement in a UTF-8 session; for what
the server says about bad bytes, the same statement sent to PostgreSQL directly.

Environment: PGVEIL_PROXY_PORT, PGVEIL_DIRECT_PORT, PGVEIL_ROWS (JSON: encoding -> rows of
[id, name, address, id_card, nickname]), PGVEIL_FOREIGN (JSON: encoding -> a character it
lacks, or null). Prints one JSON summary line last.
"""
import json
import os
import sys
import traceback

import psycopg

PROXY = int(os.environ["PGVEIL_PROXY_PORT"])
DIRECT = int(os.environ["PGVEIL_DIRECT_PORT"])
ROWS = json.loads(os.environ["PGVEIL_ROWS"])
FOREIGN = json.loads(os.environ["PGVEIL_FOREIGN"])
COLS = "id, name, address, id_card, nickname"

passed = 0
failures = []


def check(cond, what):
    global passed
    if cond:
        passed += 1
    else:
        failures.append(what)
        print("FAIL:", what, flush=True)


def connect(user, enc, port=PROXY):
    return psycopg.connect(
        host="127.0.0.1", port=port, user=user, dbname="postgres",
        autocommit=True, client_encoding=enc,
    )


def error_of(conn, query, params=None):
    """(sqlstate, primary message) of a statement expected to fail."""
    try:
        conn.execute(query, params)
    except psycopg.Error as e:
        return (e.sqlstate, e.diag.message_primary)
    return (None, None)


def rows_of(conn, query, params=None, binary=False):
    with conn.cursor(binary=binary) as cur:
        cur.execute(query, params)
        return [tuple(r) for r in cur.fetchall()]


def copy_raw(conn, query):
    """The bytes of a COPY TO, as the server (or pgveil) sent them. (psycopg's own row parser
    reads escapes byte by byte, so a trail byte 0x5C of GBK or BIG5 trips it: raw bytes are
    compared instead.)"""
    with conn.cursor() as cur:
        with cur.copy(query) as cp:
            return b"".join(bytes(b) for b in cp)


def run_encoding(enc, rows):
    ids = [r[0] for r in rows]
    where = f"id IN ({', '.join(str(i) for i in ids)})"
    w = connect("writer_app", enc)
    check(w.info.encoding.upper().replace("-", "") != "UTF8", f"{enc}: session encoding {w.info.encoding}")
    first, second, third, *rest = rows
    # 1. A literal in a simple Query, in an escape string (E'...': a trail byte 0x5C is part
    #    of its character, not a backslash).
    i, name, address, id_card, nick = first
    w.execute(f"INSERT INTO passengers ({COLS}) VALUES ({i}, E'{name}', '{address}', '{id_card}', '{nick}')")
    # 2. Text parameters (extended protocol).
    w.execute(f"INSERT INTO passengers ({COLS}) VALUES (%s, %s, %s, %s, %s)", second)
    # 3. Binary parameters.
    with w.cursor(binary=True) as cur:
        cur.execute(f"INSERT INTO passengers ({COLS}) VALUES (%b, %b, %b, %b, %b)", third)
    # 4. COPY FROM STDIN, text format, rows cut wherever psycopg cuts them.
    with w.cursor() as cur:
        with cur.copy(f"COPY passengers ({COLS}) FROM STDIN") as cp:
            for r in rest:
                cp.write_row(r)
    want = sorted(tuple(r) for r in rows)
    got = rows_of(w, f"SELECT {COLS} FROM passengers WHERE {where} ORDER BY id")
    check(got == want, f"{enc}: writer reads back {got} for {want}")
    got = rows_of(w, f"SELECT {COLS} FROM passengers WHERE {where} ORDER BY id", binary=True)
    check(got == want, f"{enc}: writer reads back in binary {got}")
    # Lookups on the deterministic column: parameter, literal, IN list, ANY(array).
    for r in rows:
        found = rows_of(w, "SELECT id FROM passengers WHERE name = %s", (r[1],))
        check(found == [(r[0],)], f"{enc}: lookup by parameter {r[1]}: {found}")
        found = rows_of(w, f"SELECT id FROM passengers WHERE name = '{r[1]}'")
        check(found == [(r[0],)], f"{enc}: lookup by literal {r[1]}: {found}")
    # (psycopg escapes backslashes in an array's encoded bytes, which breaks a character with
    # a trail byte 0x5C for the server as well: those names are looked up one by one above.)
    codec = psycopg._encodings.pg2pyenc(enc.encode())
    names = [r[1] for r in rows if b"\\" not in r[1].encode(codec)]
    ids_any = sorted(r[0] for r in rows if r[1] in names)
    found = rows_of(w, "SELECT id FROM passengers WHERE name = ANY(%s) ORDER BY id", (names,))
    check(found == [(i,) for i in ids_any] and len(ids_any) >= 2, f"{enc}: lookup by ANY: {found}")
    # The same rows in a plain table, written directly: what the server itself sends for them.
    direct = connect("postgres", enc, DIRECT)
    with direct.cursor() as cur:
        cur.executemany(f"INSERT INTO passengers_plain ({COLS}) VALUES (%s, %s, %s, %s, %s)", rows)
    plain_q = f"SELECT {COLS} FROM passengers_plain WHERE {where} ORDER BY id"
    check(got == rows_of(direct, plain_q), f"{enc}: writer reads unlike the server")
    # COPY TO: decrypted values come back in the client encoding, byte for byte as the server
    # writes the same text (a trail byte 0x5C stays unescaped, as in the server's output).
    for opts in ("", " (FORMAT csv)"):
        via = copy_raw(w, f"COPY (SELECT {COLS} FROM passengers WHERE {where} ORDER BY id) TO STDOUT{opts}")
        want_raw = copy_raw(direct, f"COPY ({plain_q}) TO STDOUT{opts}")
        check(via == want_raw and len(via) > 0, f"{enc}: writer COPY TO{opts} {via!r} vs server {want_raw!r}")

    # The masked role, against the same statements in a UTF-8 session.
    d = connect("desk_app", enc)
    u = connect("desk_app", "UTF8")
    q = f"SELECT id, name, address, nickname FROM passengers WHERE {where} ORDER BY id"
    masked = rows_of(d, q)
    check(masked == rows_of(u, q), f"{enc}: desk reads {masked}, UTF-8 desk {rows_of(u, q)}")
    check(masked == rows_of(d, q, binary=True), f"{enc}: desk binary differs")
    check(all(m[1] != r[1] and m[3] != r[4] for m, r in zip(masked, want)), f"{enc}: desk reads clear text {masked}")
    got = copy_raw(d, f"COPY ({q}) TO STDOUT").decode(codec)
    want_copy = copy_raw(u, f"COPY ({q}) TO STDOUT").decode("utf-8")
    check(got == want_copy and len(got) > 0, f"{enc}: desk COPY TO {got} vs UTF-8 {want_copy}")
    # Lookup allowed for the desk role (lookup: true): finds the row, shows the mask.
    by_id = {m[0]: m for m in masked}
    found = rows_of(d, "SELECT id, name FROM passengers WHERE name = %s", (second[1],))
    check(found == [(second[0], by_id[second[0]][1])], f"{enc}: desk lookup {found}")
    # Refusals keep the session usable: id_card is denied to the desk.
    code, msg = error_of(d, f"SELECT id_card FROM passengers WHERE {where}")
    check(code == "42501", f"{enc}: desk id_card gives {code} {msg}")
    check(rows_of(d, "SELECT 1") == [(1,)], f"{enc}: session unusable after refusal")
    code, msg = error_of(d, "SELECT upper(name) FROM passengers")
    check(code == "42501", f"{enc}: desk upper(name) gives {code} {msg}")

    # Bytes the encoding does not have: the server's own error, through pgveil and directly.
    bad = b"SELECT id FROM passengers WHERE name = '\x81'"
    via = error_of(w, bad)
    direct = error_of(connect("postgres", enc, DIRECT), bad)
    check(via[0] in ("22021", "22P05") and via == direct, f"{enc}: invalid bytes: {via} vs direct {direct}")
    bad = b"SELECT id FROM passengers WHERE name = '\x8d\x20'"
    via, direct = error_of(w, bad), error_of(connect("postgres", enc, DIRECT), bad)
    check(via[0] == "22021" and via == direct, f"{enc}: invalid bytes 0x8d 0x20: {via} vs direct {direct}")
    # A character the encoding lacks, stored by a UTF-8 session: reading it in clear fails as
    # the server fails on a plain column.
    foreign = FOREIGN.get(enc)
    if foreign is not None:
        fid = 900 + ids[0]
        connect("writer_app", "UTF8").execute(
            f"INSERT INTO passengers (id, name) VALUES (%s, %s)", (fid, foreign))
        via = error_of(w, "SELECT name FROM passengers WHERE id = %s", (fid,))
        direct = error_of(connect("postgres", enc, DIRECT), "SELECT chr(%s)", (ord(foreign),))
        check(via[0] == "22P05" and via == direct, f"{enc}: untranslatable {via} vs direct {direct}")
        check(rows_of(w, "SELECT 1") == [(1,)], f"{enc}: session unusable after 22P05")
        connect("writer_app", "UTF8").execute("DELETE FROM passengers WHERE id = %s", (fid,))
    # A session that switches encoding mid-way (SET, then RESET) reads the same rows each time.
    sw = connect("writer_app", "UTF8")
    q = f"SELECT {COLS} FROM passengers WHERE {where} ORDER BY id"
    for step in (f"SET client_encoding TO '{enc}'", "RESET client_encoding", f"SET client_encoding = '{enc}'"):
        sw.execute(step)
        got = rows_of(sw, q)
        check(got == want, f"{enc}: after {step} ({sw.info.encoding}): {got}")
        found = rows_of(sw, "SELECT id FROM passengers WHERE name = %s", (first[1],))
        check(found == [(first[0],)], f"{enc}: lookup after {step}: {found}")
    sw.close()
    # A UTF-8 session finds what the legacy session wrote (the plaintext encrypted is UTF-8).
    uw = connect("writer_app", "UTF8")
    found = rows_of(uw, "SELECT id FROM passengers WHERE name = %s", (first[1],))
    check(found == [(first[0],)], f"{enc}: UTF-8 lookup of {first[1]}: {found}")
    for c in (w, d, u, uw):
        c.close()


def main():
    for enc, rows in ROWS.items():
        try:
            run_encoding(enc, [tuple(r) for r in rows])
        except Exception:
            failures.append(f"{enc}: {traceback.format_exc()}")
            print(traceback.format_exc(), flush=True)
    print(json.dumps({"ok": not failures, "passed": passed, "failed": len(failures)}))


if __name__ == "__main__":
    sys.exit(main())
