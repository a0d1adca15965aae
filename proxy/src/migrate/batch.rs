//! The batch loop: primary-key ranges, one short transaction per batch.
//!
//! Each batch runs `SELECT pk, cols ... WHERE pk > $last ORDER BY pk LIMIT n FOR UPDATE`,
//! transforms the values in memory and writes back only the rows that changed with one
//! `UPDATE ... FROM unnest(...)`, then commits. The row locks make read-transform-write atomic
//! per row, so a concurrent writer either commits before (and its value is transformed) or
//! waits and applies its change on top. A kill at any moment rolls back at most one batch:
//! every value is either as it was or fully transformed, and a re-run resumes by skipping
//! values already in the target state.
use std::fmt;
use std::time::{Duration, Instant};

use anyhow::Context;
use pgveil_policy::crypto::{envelope_key_version, is_envelope, DomainCipher, KeySet};
use tokio_postgres::Client;

use super::plan::TablePlan;
use super::progress::Progress;
use super::Options;

/// What a run does to each value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Plaintext to envelopes under the active key version.
    Encrypt,
    /// Envelopes back to plaintext.
    Decrypt,
    /// Envelopes under other versions re-encrypted under the active version.
    Rekey,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Encrypt => "encrypt",
            Op::Decrypt => "decrypt",
            Op::Rekey => "rekey",
        })
    }
}

/// What a run did to one table.
#[derive(Debug, Clone, Default)]
pub struct TableSummary {
    pub table: String,
    pub op: Option<Op>,
    pub rows: u64,
    /// Values transformed (encrypted, decrypted or re-encrypted).
    pub changed: u64,
    /// Non-NULL values already in the target state.
    pub skipped: u64,
    /// Values that could not be transformed (unknown key version, failed authentication, not
    /// UTF-8); left unchanged.
    pub failed: u64,
    pub batches: u64,
    pub elapsed: Duration,
}

impl TableSummary {
    pub fn rows_per_sec(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.rows as f64 / s
        } else {
            0.0
        }
    }
}

impl fmt::Display for TableSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = match self.op {
            Some(Op::Encrypt) | None => "encrypted",
            Some(Op::Decrypt) => "decrypted",
            Some(Op::Rekey) => "re-encrypted",
        };
        write!(
            f,
            "{}: {} rows scanned, {} values {verb}, {} skipped, {} failed, {} batches in {:.1}s ({:.0} rows/s)",
            self.table,
            self.rows,
            self.changed,
            self.skipped,
            self.failed,
            self.batches,
            self.elapsed.as_secs_f64(),
            self.rows_per_sec()
        )
    }
}

/// Per-value work, with reusable buffers.
struct Transformer<'a> {
    op: Op,
    active: u32,
    ciphers: Vec<DomainCipher>,
    table: &'a TablePlan,
    scratch: Vec<u8>,
    plain: Vec<u8>,
}

enum Outcome {
    Changed(String),
    Skipped,
    Null,
    /// The reason, never the value.
    Failed(String),
}

impl Transformer<'_> {
    fn apply(&mut self, col: usize, value: Option<&str>) -> Outcome {
        let Some(v) = value else {
            return Outcome::Null;
        };
        let cipher = &self.ciphers[col];
        let mode = self.table.columns[col].mode;
        match self.op {
            Op::Encrypt => {
                if is_envelope(v.as_bytes()) {
                    return Outcome::Skipped;
                }
                let mut out = String::with_capacity(v.len() * 4 / 3 + 48);
                match cipher.encrypt_into(mode, v.as_bytes(), &mut self.scratch, &mut out) {
                    Ok(()) => Outcome::Changed(out),
                    Err(e) => Outcome::Failed(e.to_string()),
                }
            }
            Op::Decrypt => {
                if !is_envelope(v.as_bytes()) {
                    return Outcome::Skipped;
                }
                match cipher.decrypt_into(v.as_bytes(), &mut self.plain) {
                    Ok(()) => match std::str::from_utf8(&self.plain) {
                        Ok(s) => Outcome::Changed(s.to_string()),
                        Err(_) => Outcome::Failed("decrypted value is not UTF-8 text".into()),
                    },
                    Err(e) => Outcome::Failed(e.to_string()),
                }
            }
            Op::Rekey => match envelope_key_version(v.as_bytes()) {
                Err(_) => Outcome::Skipped,
                Ok(ver) if ver == self.active => Outcome::Skipped,
                Ok(_) => {
                    if let Err(e) = cipher.decrypt_into(v.as_bytes(), &mut self.plain) {
                        return Outcome::Failed(e.to_string());
                    }
                    let mut out = String::with_capacity(v.len());
                    match cipher.encrypt_into(mode, &self.plain, &mut self.scratch, &mut out) {
                        Ok(()) => Outcome::Changed(out),
                        Err(e) => Outcome::Failed(e.to_string()),
                    }
                }
            },
        }
    }
}

/// How many times a batch is retried after a deadlock or serialization failure.
const RETRIES: u32 = 5;

/// Run `op` over every row of `table`, batch by batch.
pub async fn run_table(
    client: &mut Client,
    table: &TablePlan,
    keys: &KeySet,
    op: Op,
    opts: &Options,
) -> anyhow::Result<TableSummary> {
    let started = Instant::now();
    let cols: Vec<String> = table
        .columns
        .iter()
        .map(|c| format!("t.{}::text", c.ident))
        .collect();
    let select = |from: &str| {
        format!(
            // Qualified: a bare `ORDER BY id` would sort by the text output column `id`.
            "SELECT t.{pk}::text AS pgveil_key, {cols} FROM {t} AS t {from} \
             ORDER BY t.{pk} LIMIT $1 FOR UPDATE",
            pk = table.pk,
            cols = cols.join(", "),
            t = table.ident,
        )
    };
    let first = client
        .prepare(&select(""))
        .await
        .with_context(|| format!("preparing the batch query on {}", table.name))?;
    let next = client
        .prepare(&select(&format!(
            "WHERE t.{} > $2::text::{}",
            table.pk, table.pk_type
        )))
        .await
        .with_context(|| format!("preparing the batch query on {}", table.name))?;
    // SET col = coalesce(v.cN, t.col): a NULL in the arrays means "unchanged".
    let sets: Vec<String> = table
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{0} = coalesce(v.c{i}, t.{0})", c.ident))
        .collect();
    let arrays: Vec<String> = (0..table.columns.len())
        .map(|i| format!("${}::text[]", i + 2))
        .collect();
    let names: Vec<String> = (0..table.columns.len()).map(|i| format!("c{i}")).collect();
    let update = client
        .prepare(&format!(
            "UPDATE {t} AS t SET {sets} FROM unnest($1::text[], {arrays}) AS v(k, {names}) \
             WHERE t.{pk} = v.k::{pk_type}",
            t = table.ident,
            sets = sets.join(", "),
            arrays = arrays.join(", "),
            names = names.join(", "),
            pk = table.pk,
            pk_type = table.pk_type,
        ))
        .await
        .with_context(|| format!("preparing the batch update on {}", table.name))?;

    let mut tf = Transformer {
        op,
        active: keys.active_version(),
        ciphers: table
            .columns
            .iter()
            .map(|c| keys.domain(&c.domain))
            .collect(),
        table,
        scratch: Vec::new(),
        plain: Vec::new(),
    };
    let mut summary = TableSummary {
        table: table.name.clone(),
        op: Some(op),
        ..Default::default()
    };
    let progress = Progress::new(&table.name, op, table.est_rows, opts.report);
    let limit = i64::from(opts.batch_size);
    let mut last: Option<String> = None;
    let mut failures: Vec<String> = Vec::new();
    loop {
        let mut attempt = 0;
        let done = loop {
            let tx = client.transaction().await.context("starting a batch")?;
            let rows = match &last {
                None => tx.query(&first, &[&limit]).await,
                Some(k) => tx.query(&next, &[&limit, k]).await,
            };
            let rows = match rows {
                Ok(r) => r,
                Err(e) if retryable(&e) && attempt < RETRIES => {
                    attempt += 1;
                    drop(tx);
                    continue;
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("reading a batch of {}", table.name))
                }
            };
            let mut keys_col: Vec<String> = Vec::new();
            let mut new: Vec<Vec<Option<String>>> = vec![Vec::new(); table.columns.len()];
            let mut batch = TableSummary::default();
            let mut batch_failures = Vec::new();
            let mut batch_last = None;
            for row in &rows {
                let k: String = row.try_get(0).context("reading a primary key")?;
                let mut changed_row = false;
                let mut cells: Vec<Option<String>> = Vec::with_capacity(table.columns.len());
                for i in 0..table.columns.len() {
                    let v: Option<&str> = row.try_get(i + 1).context("reading a value")?;
                    match tf.apply(i, v) {
                        Outcome::Changed(s) => {
                            batch.changed += 1;
                            changed_row = true;
                            cells.push(Some(s));
                        }
                        Outcome::Skipped => {
                            batch.skipped += 1;
                            cells.push(None);
                        }
                        Outcome::Null => cells.push(None),
                        Outcome::Failed(reason) => {
                            batch.failed += 1;
                            batch_failures.push(format!(
                                "{}.{} (primary key {}): {reason}",
                                table.name, table.columns[i].name, k
                            ));
                            cells.push(None);
                        }
                    }
                }
                if changed_row {
                    for (col, cell) in new.iter_mut().zip(cells) {
                        col.push(cell);
                    }
                    keys_col.push(k.clone());
                }
                batch_last = Some(k);
            }
            if !keys_col.is_empty() {
                let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                    Vec::with_capacity(1 + new.len());
                params.push(&keys_col);
                for c in &new {
                    params.push(c);
                }
                match tx.execute(&update, &params).await {
                    Ok(_) => {}
                    Err(e) if retryable(&e) && attempt < RETRIES => {
                        attempt += 1;
                        drop(tx);
                        continue;
                    }
                    Err(e) => {
                        return Err(e).with_context(|| format!("writing a batch of {}", table.name))
                    }
                }
            }
            match tx.commit().await {
                Ok(()) => {}
                Err(e) if retryable(&e) && attempt < RETRIES => {
                    attempt += 1;
                    continue;
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("committing a batch of {}", table.name))
                }
            }
            summary.rows += rows.len() as u64;
            summary.changed += batch.changed;
            summary.skipped += batch.skipped;
            summary.failed += batch.failed;
            summary.batches += 1;
            failures.extend(batch_failures);
            progress.advance(rows.len() as u64);
            if batch_last.is_some() {
                last = batch_last;
            }
            break (rows.len() as i64) < limit;
        };
        if done {
            break;
        }
    }
    summary.elapsed = started.elapsed();
    progress.finish();
    if opts.report {
        const SHOWN: usize = 20;
        for f in failures.iter().take(SHOWN) {
            eprintln!("pgveil: left unchanged: {f}");
        }
        if failures.len() > SHOWN {
            eprintln!(
                "pgveil: ... and {} more values left unchanged",
                failures.len() - SHOWN
            );
        }
    }
    Ok(summary)
}

/// Deadlocks and serialization failures: the batch rolled back and can simply run again.
fn retryable(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code().map(|c| c.code()),
        Some("40P01") | Some("40001") | Some("55P03")
    )
}
