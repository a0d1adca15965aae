//! `migrate-bench`: rows/s of `pgveil encrypt` (the library code the command runs) on a
//! table with 3 encrypted columns, against a plain `UPDATE ... SET col = col` over the same
//! batches of the same rows, on a throwaway PostgreSQL (testkit, fsync off).
//!
//! Usage: migrate-bench [ROWS] [BATCH]      (defaults: 1000000 1000)
//! Run:   cargo run --release -p pgveil-benches --bin migrate-bench
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use pgveil_testkit::{ClusterOptions, PgCluster};

const POLICY: &str = r#"
version: 1
levels: [core, important, general]
roles:
  reader: [nobody]
tables:
  public.t_enc:
    phone:   { level: important, kind: cn_mobile, encrypt: deterministic, domain: phone }
    id_card: { level: core, kind: cn_id_card, encrypt: deterministic, domain: id_card }
    email:   { level: important, kind: email, encrypt: randomized, domain: email }
rules: []
defaults: { core: deny, important: mask, general: allow }
"#;

fn load(table: &str, rows: u64) -> String {
    format!(
        "create table {table} (id int8 primary key, phone text, id_card text, email text, note text);
         insert into {table} select g, '138' || lpad(g::text, 8, '0'),
             '110101' || lpad((g * 7)::text, 12, '0'), 'user' || g || '@example.com', 'note'
           from generate_series(1, {rows}) g;"
    )
}

fn main() -> ExitCode {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap_or(0))
        .collect();
    let rows = args
        .first()
        .copied()
        .filter(|n| *n > 0)
        .unwrap_or(1_000_000);
    let batch = args.get(1).copied().filter(|n| *n > 0).unwrap_or(1000);
    match run(rows, batch) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("migrate-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(rows: u64, batch: u64) -> anyhow::Result<()> {
    let cluster = PgCluster::start(ClusterOptions::default())
        .map_err(|e| anyhow::anyhow!("cannot start PostgreSQL: {e}"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let (mut db, conn) = tokio_postgres::connect(
            &cluster.superuser_conninfo("postgres"),
            tokio_postgres::NoTls,
        )
        .await
        .context("connect")?;
        tokio::spawn(conn);
        eprintln!("loading 2 x {rows} rows ...");
        db.batch_execute(&load("t_plain", rows)).await?;
        db.batch_execute(&load("t_enc", rows)).await?;
        for sql in [
            "vacuum analyze t_plain",
            "vacuum analyze t_enc",
            "checkpoint",
        ] {
            db.batch_execute(sql).await?;
        }

        // Baseline: the same batches (primary-key ranges of `batch` rows, one transaction
        // each), rewriting the same three columns with their own values.
        eprintln!("plain UPDATE t SET col = col in batches of {batch} ...");
        let update = db
            .prepare(
                "update t_plain set phone = phone, id_card = id_card, email = email \
                 where id > $1 and id <= $2",
            )
            .await?;
        let started = Instant::now();
        let mut from: i64 = 0;
        while from < rows as i64 {
            let to = from + batch as i64;
            let tx = db.transaction().await?;
            tx.execute(&update, &[&from, &to]).await?;
            tx.commit().await?;
            from = to;
        }
        let plain = started.elapsed();
        db.batch_execute("checkpoint").await?;

        eprintln!("pgveil encrypt in batches of {batch} ...");
        let dir = cluster.dir().join("bench-policy.yaml");
        std::fs::write(&dir, POLICY)?;
        let policy =
            pgveil_policy::CompiledPolicy::from_path(&dir).map_err(|d| anyhow::anyhow!("{d}"))?;
        let keys = pgveil_policy::keyring::Keyring::generate(0)?.into_key_set();
        let opts = pgveil::migrate::Options {
            batch_size: batch as u32,
            ..Default::default()
        };
        let started = Instant::now();
        let done = pgveil::migrate::encrypt(&mut db, &policy, &keys, &opts).await?;
        let enc = started.elapsed();
        let values: u64 = done.iter().map(|s| s.changed).sum();
        anyhow::ensure!(
            values == rows * 3,
            "encrypted {values} values, expected {}",
            rows * 3
        );

        let rate = |d: Duration| rows as f64 / d.as_secs_f64();
        println!("rows: {rows}, batch: {batch}, encrypted columns: 3");
        println!(
            "plain UPDATE SET col = col: {:.1} s, {:.0} rows/s",
            plain.as_secs_f64(),
            rate(plain)
        );
        println!(
            "pgveil encrypt:             {:.1} s, {:.0} rows/s ({values} values)",
            enc.as_secs_f64(),
            rate(enc)
        );
        println!(
            "encrypt / plain time: {:.2}x",
            enc.as_secs_f64() / plain.as_secs_f64()
        );
        anyhow::Ok(())
    })
}
