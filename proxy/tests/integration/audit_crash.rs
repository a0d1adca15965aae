//! The audit log when pgveil is killed: SIGKILL under load, then the log still verifies up to
//! where it was cut, and every statement a client saw complete before the kill has its record,
//! except at most what was still queued in memory (measured and printed here; the records
//! reach the file in batches as soon as the writer runs, and `fsync: interval` bounds what a
//! power failure, unlike a process kill, can take to about one second). After a restart, the
//! crashed log verifies without `--open`: the new log's start record vouches for the crash and
//! says how many records after the last signed one the crash may have cut.
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pgveil_policy::keyring::Keyring;

use crate::support::write_fixture::{policy_files, PolicyFiles, POLICY};
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_keeps_the_records_of_completed_statements() {
    let cluster = pg_trust();
    let PolicyFiles {
        dir,
        policy,
        keyring,
    } = policy_files(POLICY);
    let db = direct(&cluster).await;
    db.batch_execute(
        "create role writer_app login;
         create table customers (id int primary key, name text, phone text, id_card text,
                                 address text, points text);
         create table shipments (id int primary key, customer_id int, sender_phone text, note text);
         insert into customers (id, phone) select i, '1390000' || lpad(i::text, 4, '0') from generate_series(1, 20) i;
         grant all on all tables in schema public to public;",
    )
    .await
    .unwrap();
    let log = dir.path().join("audit.jsonl");
    let config = dir.path().join("audit.yaml");
    std::fs::write(
        &config,
        format!("audit:\n  file: {}\n  fsync: interval\n", log.display()),
    )
    .unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let start_pgveil = || serve(&config, port, cluster.port(), &policy, &keyring);
    let mut child = start_pgveil();
    wait_up(port).await;

    // Four clients read a classified column as fast as they can; each counts the statements
    // it saw complete.
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let info = format!("host=127.0.0.1 port={port} user=writer_app dbname=postgres");
        let (c, conn) = tokio_postgres::connect(&info, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let st = c
                .prepare("select phone from customers where id = $1")
                .await
                .unwrap();
            let mut i = 0i32;
            loop {
                i = i % 20 + 1;
                if c.query(&st, &[&i]).await.is_err() {
                    break;
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // SIGKILL: no shutdown, no closing checkpoint, no flush.
    let seen = done.load(Ordering::SeqCst);
    child.kill().unwrap();
    let _ = child.wait();
    for t in tasks {
        let _ = t.await;
    }
    let completed = done.load(Ordering::SeqCst);
    assert!(
        completed > 1000,
        "too little load to mean anything: {completed}"
    );

    let text = std::fs::read_to_string(&log).unwrap();
    let records = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["kind"] == "statement")
        .count() as u64;
    let lost = completed.saturating_sub(records);
    println!(
        "SIGKILL after {seen}..{completed} completed statements: {records} statement records on file, {lost} lost"
    );
    // Records are queued before the answer goes out, and the writer writes each batch it takes
    // from the queue (at most 512 records) at once: what a kill can take is the batch in hand.
    // Measured: 0, 1 and 0 lost of about 38,000 in three runs.
    assert!(lost <= 512, "{lost} records lost");
    // The cut log verifies as an open log (no closing checkpoint).
    let keys = Keyring::load(&keyring).unwrap().into_key_set();
    let summary = pgveil::audit::verify(
        &[&log],
        &keys,
        pgveil::audit::verify::Options { open: true },
    );
    assert!(summary.is_ok(), "{summary:?}");

    // pgveil comes back, runs one statement and stops cleanly. The crashed log, now followed by
    // a start record that vouches for the crash, verifies without `--open`.
    let crashed_end = last_and_signed(&log);
    let mut child = start_pgveil();
    wait_up(port).await;
    let info = format!("host=127.0.0.1 port={port} user=writer_app dbname=postgres");
    let (c, conn) = tokio_postgres::connect(&info, tokio_postgres::NoTls)
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    c.simple_query("select phone from customers where id = 1")
        .await
        .unwrap();
    drop(c);
    let _ = conn.await;
    // SAFETY: kill(2) on the child's pid, which has not been waited for yet.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");

    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with("audit.jsonl.")
        })
        .collect();
    files.sort();
    files.push(log.clone());
    assert_eq!(files.len(), 2, "{files:?}");
    assert_eq!(last_and_signed(&files[0]), crashed_end);
    let out = Command::new(env!("CARGO_BIN_EXE_pgveil"))
        .args(["audit", "verify", "--keyring"])
        .arg(&keyring)
        .args(&files)
        .env_remove("PGVEIL_KEYRING")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    let (last, signed) = crashed_end;
    let note = format!(
        "ends at seq {last} without its closing checkpoint: pgveil crashed (its open marker was \
         still there at the restart). Records after seq {signed}, its last signed record, are \
         vouched for by the chain only: {} of them are here",
        last - signed
    );
    assert!(stdout.contains(&note), "{stdout}");
    assert!(
        stdout.contains("ok: ") && stdout.contains("closed"),
        "{stdout}"
    );
    println!("{stdout}");
}

/// Starts `pgveil serve` on `port` in front of PostgreSQL on `pg_port`.
fn serve(
    config: &std::path::Path,
    port: u16,
    pg_port: u16,
    policy: &std::path::Path,
    keyring: &std::path::Path,
) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_pgveil"))
        .args(["serve", "--config"])
        .arg(config)
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--upstream-host",
            "127.0.0.1",
            "--upstream-port",
            &pg_port.to_string(),
            "--upstream-tls-mode",
            "disable",
            "--metrics-listen",
            "off",
            "--catalog-user",
            "postgres",
            "--policy",
        ])
        .arg(policy)
        .arg("--keyring")
        .arg(keyring)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

async fn wait_up(port: u16) {
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("pgveil did not start");
}

/// The seq of a log file's last complete record and of its last signed one (start, rotation
/// or checkpoint).
fn last_and_signed(file: &std::path::Path) -> (u64, u64) {
    let text = std::fs::read_to_string(file).unwrap();
    let records: Vec<serde_json::Value> = text
        .split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let last = records.last().unwrap()["seq"].as_u64().unwrap();
    let signed = records
        .iter()
        .rev()
        .find(|r| ["start", "rotation", "checkpoint"].contains(&r["kind"].as_str().unwrap()))
        .unwrap()["seq"]
        .as_u64()
        .unwrap();
    (last, signed)
}
