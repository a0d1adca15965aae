//! psycopg 3, asyncpg and SQLAlchemy as clients of an enforcing pgveil:
//! `proxy/tests/python/read_side.py` checks masks, decrypts, hashes, refusals
//! (42501, then 25P02 inside a transaction) and untouched unprotected reads
//! over the simple, extended and binary protocols, prepared statements,
//! asyncpg's type introspection, cursors and pools;
//! `proxy/tests/python/write_side.py` writes canaries through every write path
//! of each client (parameters in text and binary, client-side literals,
//! executemany, pipelines, prepared statements, COPY, upserts, the ORM), reads
//! them back, looks them up, and sees forged envelopes refused, after which the
//! database is scanned directly: only envelopes, no canary in clear.
//!
//! Needs `python3` (or `$PGVEIL_PYTHON`) and a venv holding the versions
//! pinned by `proxy/tests/python/requirements.txt`: `$PGVEIL_PYTHON_VENV`
//! (set by `.ci/run`), or else one created here with `python3 -m venv` and
//! `pip install -r` in a cache under the cargo target directory, keyed by the
//! requirements file. Missing pieces fail the test; they never skip it.
use pgveil_policy::crypto::Mode;
use pgveil_policy::keyring::Keyring;
use serde_json::json;

use crate::support::python::*;
use crate::support::read_fixture::{mask, setup, ROWS};
use crate::support::write_fixture as enforce_write;
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_and_asyncpg_see_the_policy() {
    let python = tokio::task::block_in_place(python_with_clients);
    let s = setup().await;
    let k = &s.keys;
    // Types asyncpg has no built-in codec for, so that it runs its introspection queries.
    direct(&s.cluster)
        .await
        .batch_execute(
            "create type ticket_state as enum ('open', 'closed');
             create type order_line as (amount numeric(10,2), note text);",
        )
        .await
        .unwrap();

    // What each policy role must read, per customer id, computed with pgveil's own masks.
    let mut support = serde_json::Map::new();
    let mut dispatcher = serde_json::Map::new();
    let mut analyst = serde_json::Map::new();
    for (id, name, phone, id_card, address, birth) in ROWS {
        support.insert(
            id.to_string(),
            json!({
                "name": mask("cn_name", name, k),
                "phone": mask("cn_mobile", phone, k),
                "address": mask("address", address, k),
                "birth": mask("date", birth, k),
            }),
        );
        dispatcher.insert(
            id.to_string(),
            json!({
                "name": name, "phone": phone, "address": address, "birth": birth,
                "id_card": mask("cn_id_card", id_card, k),
            }),
        );
        analyst.insert(
            id.to_string(),
            json!({
                "name": mask("cn_name", name, k),
                "phone": mask("hash", phone, k),
                "birth": birth,
            }),
        );
    }
    let expected = json!({ "support": support, "dispatcher": dispatcher, "analyst": analyst });

    let summary = run_script(
        &python,
        "read_side.py",
        &[
            ("PGVEIL_PROXY_PORT", s.proxy.addr.port().to_string()),
            ("PGVEIL_EXPECTED", expected.to_string()),
        ],
        180,
    )
    .await;
    assert_script_ok(&summary);
    assert!(
        summary.json["passed"].as_u64().unwrap_or(0) >= 100,
        "fewer checks ran than expected:\n{}",
        summary.stdout
    );
    println!("{}", summary.stdout);
    s.proxy.shutdown().await;
}

/// The write-side invariant from Python clients: whatever psycopg, asyncpg and the
/// SQLAlchemy ORM write as `writer_app` is stored encrypted and reads back as written.
/// Paths pgveil refuses with 0A000 by design or not yet (binary COPY, a negative number
/// literal) are reported by the script as gaps, not failures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_side_python_clients_store_only_ciphertext() {
    let python = tokio::task::block_in_place(python_with_clients);
    let s = enforce_write::setup().await;
    // A valid envelope made with the keyring: a client that replays one must be refused.
    let forged = Keyring::load(&s.keyring)
        .unwrap()
        .into_key_set()
        .domain("phone")
        .encrypt(Mode::Deterministic, b"13900000001")
        .unwrap();
    let started = std::time::Instant::now();
    let summary = run_script(
        &python,
        "write_side.py",
        &[
            ("PGVEIL_PROXY_PORT", s.proxy.addr.port().to_string()),
            ("PGVEIL_FORGED", forged.clone()),
        ],
        120,
    )
    .await;
    let elapsed = started.elapsed();
    assert_script_ok(&summary);
    println!("{}", summary.stdout);
    println!("write_side.py: {:.1} s", elapsed.as_secs_f64());
    assert!(
        summary.json["passed"].as_u64().unwrap_or(0) >= 80,
        "fewer checks ran than expected:\n{}",
        summary.stdout
    );
    let canaries: Vec<String> = summary.json["canaries"]
        .as_array()
        .expect("canaries in the summary")
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    assert!(
        canaries.len() >= 100,
        "too few canaries: {}",
        canaries.len()
    );

    // Directly in the database: every protected value an envelope that decrypts, no
    // canary in clear, and every row the script wrote is there.
    enforce_write::assert_all_ciphertext(&s, &canaries).await;
    let db = direct(&s.cluster).await;
    let stored: i64 = db
        .query_one("select count(*) from customers where id >= 10000", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(Some(stored as u64), summary.json["rows"].as_u64());
    let forged_rows: i64 = db
        .query_one(
            "select count(*) from customers where phone = $1",
            &[&forged],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(forged_rows, 0, "a forged envelope was stored");
    s.proxy.shutdown().await;
}
