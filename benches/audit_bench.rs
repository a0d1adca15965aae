//! Audit throughput: how many statement records per second the audit log's writer sustains
//! (HMAC chain with key ratchet, JSON lines, file writes, fsync at most once a second), fed by
//! 8 concurrent producers, as pgveil's sessions feed it. Prints records/s; the log is verified
//! afterwards, so the figure is for a correct chain.
//!
//! cargo run --release -p pgveil-benches --bin audit-bench -- [RECORDS]     (default 400000)
use std::time::Instant;

use pgveil::audit::{AuditConfig, FsyncPolicy, Outcome, StatementEvent, StatementRecord};
use pgveil_policy::keyring::Keyring;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let n: u64 = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(400_000);
    let dir = std::env::temp_dir().join(format!("pgveil-audit-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let keys = Keyring::generate(1_700_000_000)?.into_key_set();
    let metrics = pgveil::metrics::Metrics::new()?;
    let mut cfg = AuditConfig::new(dir.join("audit.jsonl"));
    cfg.fsync = FsyncPolicy::Interval;
    let (sink, handle) = pgveil::audit::start(&cfg, &keys, &metrics).await?;
    let producers = 8u64;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..producers {
        let sink = sink.clone();
        tasks.push(tokio::spawn(async move {
            let ev = StatementEvent {
                session: p,
                login: "support_app".into(),
                roles: vec!["support".into()],
                client: "127.0.0.1:50000".into(),
                application_name: "pgbench".into(),
                command: "SELECT".into(),
                sql: "SELECT id, name, phone, id_card FROM customers WHERE id BETWEEN ? AND ? + ?"
                    .into(),
                columns: vec![
                    (
                        "public.customers.name".into(),
                        "important".into(),
                        "mask".into(),
                    ),
                    (
                        "public.customers.phone".into(),
                        "important".into(),
                        "mask".into(),
                    ),
                    (
                        "public.customers.id_card".into(),
                        "core".into(),
                        "mask".into(),
                    ),
                ],
                rows: 0,
                outcome: Outcome::Ok,
                reason: None,
            };
            // As a session does: its fields and the statement's are serialized once (per
            // session and per analysed statement); each record adds its time and rows.
            let base = ev.to_statement_record();
            for i in 0..n / producers {
                let r = StatementRecord {
                    time: std::time::SystemTime::now(),
                    rows: 10 + i % 3,
                    ..base.clone()
                };
                if sink.statement_record(r).await.is_err() {
                    break;
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    sink.flush().await?;
    let secs = started.elapsed().as_secs_f64();
    drop(sink);
    handle.close().await?;
    // Rotated files (named after their rotation time) first, oldest first; the live file last.
    let live = cfg.file.clone();
    let mut files: Vec<_> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort_by_key(|p| (*p == live, p.clone()));
    let summary = pgveil::audit::verify(&files, &keys, Default::default())
        .map_err(|b| anyhow::anyhow!("the benchmark's log does not verify: {b:?}"))?;
    println!(
        "{} records in {secs:.2} s: {:.0} records/s (8 producers, fsync interval); verified: {} records, {} checkpoints",
        n / producers * producers,
        (n / producers * producers) as f64 / secs,
        summary.records,
        summary.checkpoints
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
