//! COPY FROM STDIN into an encrypted column, read by pgveil as PostgreSQL reads it: random
//! rows of text and CSV (tabs, commas, quotes, backslashes, escapes, CR and LF, `\N`, `\.`),
//! cut into random CopyData pieces, loaded directly into a plaintext table and through pgveil
//! into a table whose column `b` is encrypted. Both loads must succeed or fail together, the
//! encrypted table must hold only envelopes, and what it holds must decrypt to exactly what the
//! server stored in the plaintext table.
use bytes::Bytes;
use futures_util::SinkExt;
use rand::{Rng, SeedableRng};

use crate::support::write_fixture::{policy_files, PolicyFiles};
use crate::support::*;

const POLICY: &str = r#"
version: 1
levels: [core]
roles:
  owner: [loader]
tables:
  public.copy_enc:
    b: { level: core, kind: text, encrypt: randomized }
rules:
  - { roles: [owner], level: core, action: allow }
defaults: { core: deny }
"#;

/// Pieces of field text that exercise every rule of the readers.
const TEXT_PIECES: &[&str] = &[
    "a", "b c", "\\t", "\\\t", "\\n", "\\\n", "\\\\", "\\N", "N", "\\.", ".", "\\101", "\\x41",
    "\\x", "\\q", "\\0", "é", "李", "\"", ",", "\\r", "x\\", "138",
];
const CSV_PIECES: &[&str] = &[
    "a",
    "b c",
    "\"",
    "\"\"",
    ",",
    "\"a,b\"",
    "\"x\ny\"",
    "\"p\r\nq\"",
    "\\",
    "\\N",
    "\\.",
    "é",
    "李",
    "\t",
    " ",
    "138",
];

/// One random COPY input of `rows` rows, in format `csv` or text.
fn random_input(rng: &mut rand_chacha::ChaCha8Rng, csv: bool, rows: usize) -> Vec<u8> {
    let pieces = if csv { CSV_PIECES } else { TEXT_PIECES };
    let eol: &[u8] = match rng.random_range(0..10) {
        0 => b"\r\n",
        1 => b"\r",
        _ => b"\n",
    };
    let mut out = Vec::new();
    for r in 0..rows {
        out.extend_from_slice(format!("{}", r + 1).as_bytes());
        for _ in 0..2 {
            out.push(if csv { b',' } else { b'\t' });
            if rng.random_range(0..8) == 0 {
                if !csv {
                    out.extend_from_slice(b"\\N");
                }
                continue;
            }
            for _ in 0..rng.random_range(0..4) {
                out.extend_from_slice(pieces[rng.random_range(0..pieces.len())].as_bytes());
            }
        }
        out.extend_from_slice(eol);
    }
    if rng.random_range(0..6) == 0 {
        out.extend_from_slice(b"\\.");
        out.extend_from_slice(eol);
        out.extend_from_slice(b"9\tafter the marker\n");
    }
    out
}

/// Send `data` as COPY into `table` in random pieces; the error text, if it failed.
async fn copy(
    c: &tokio_postgres::Client,
    table: &str,
    csv: bool,
    data: &[u8],
    rng: &mut rand_chacha::ChaCha8Rng,
) -> Result<u64, String> {
    let sql = format!(
        "COPY {table} (id, a, b) FROM STDIN{}",
        if csv { " WITH (FORMAT csv)" } else { "" }
    );
    let sink = c.copy_in(&sql).await.map_err(|e| e.to_string())?;
    let mut sink = Box::pin(sink);
    let mut rest = data;
    while !rest.is_empty() {
        let n = rng.random_range(1..=rest.len().min(17));
        let (piece, tail) = rest.split_at(n);
        sink.send(Bytes::copy_from_slice(piece))
            .await
            .map_err(|e| e.to_string())?;
        rest = tail;
    }
    sink.as_mut().finish().await.map_err(|e| e.to_string())
}

type Row = (i32, Option<String>, Option<String>);

async fn rows(c: &tokio_postgres::Client, table: &str) -> Vec<Row> {
    c.query(&format!("select id, a, b from {table} order by id"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_from_stdin_is_read_as_postgres_reads_it() {
    let cluster = pg_trust();
    let files: PolicyFiles = policy_files(POLICY);
    let db = direct(&cluster).await;
    db.batch_execute(
        "create role loader login;
         create table copy_plain (id int, a text, b text);
         create table copy_enc (id int, a text, b text);
         grant all on copy_plain, copy_enc to loader;",
    )
    .await
    .unwrap();
    let proxy = files.proxy(&cluster).await;
    let through = client_as(&proxy, "loader", "").await;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x9e37_79b9);
    let (mut loaded, mut failed) = (0, 0);
    for case in 0..160 {
        let csv = case % 2 == 1;
        let n = rng.random_range(1..5);
        let data = random_input(&mut rng, csv, n);
        db.batch_execute("truncate copy_plain; truncate copy_enc")
            .await
            .unwrap();
        let direct_result = copy(&db, "copy_plain", csv, &data, &mut rng).await;
        let proxied = copy(&through, "copy_enc", csv, &data, &mut rng).await;
        let shown = String::from_utf8_lossy(&data).into_owned();
        match (&direct_result, &proxied) {
            (Ok(a), Ok(b)) => {
                assert_eq!(a, b, "case {case} {shown:?}: row counts differ");
                loaded += 1;
            }
            (Err(_), Err(_)) => {
                failed += 1;
                continue;
            }
            _ => panic!(
                "case {case} {shown:?}: directly {direct_result:?}, through pgveil {proxied:?}"
            ),
        }
        // What pgveil stored decrypts to what the server stored from the same bytes.
        assert_eq!(
            rows(&through, "copy_enc").await,
            rows(&db, "copy_plain").await,
            "case {case} {shown:?}"
        );
        // And the encrypted column holds only envelopes.
        for (_, _, b) in rows(&db, "copy_enc").await {
            if let Some(b) = b {
                assert!(
                    pgveil_policy::crypto::is_envelope(b.as_bytes()),
                    "case {case}: plaintext stored: {b:?}"
                );
            }
        }
    }
    assert!(
        loaded >= 60,
        "only {loaded} inputs loaded ({failed} failed both ways)"
    );
}
