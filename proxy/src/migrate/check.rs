//! `--check`: scan every encrypted column and count plaintext, envelopes per key version and
//! NULLs; decrypt a sample of envelopes to prove they authenticate with the keyring. Values are
//! never printed.
use std::collections::BTreeMap;

use anyhow::Context;
use futures_util::{pin_mut, TryStreamExt};
use pgveil_policy::crypto::{envelope_key_version, KeySet};
use tokio_postgres::Client;

use super::plan::Plan;
use super::Op;
use crate::output::outln;

/// Envelopes decrypted per column to check authentication.
const SAMPLE: u64 = 1000;

/// What one column holds.
#[derive(Debug, Clone, Default)]
pub struct ColumnReport {
    pub table: String,
    pub column: String,
    pub plaintext: u64,
    pub nulls: u64,
    /// Envelopes per key version.
    pub versions: BTreeMap<u32, u64>,
    pub sampled: u64,
    /// Sampled envelopes that did not decrypt (altered, or a different key for their version).
    pub sample_failures: u64,
}

impl ColumnReport {
    pub fn envelopes(&self) -> u64 {
        self.versions.values().sum()
    }
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub columns: Vec<ColumnReport>,
}

impl Report {
    /// Values left to do for `op`: plaintext (encrypt), envelopes (decrypt), envelopes under
    /// other versions (rekey); plus sampled envelopes that failed to decrypt.
    pub fn remaining(&self, op: Op, active: u32) -> u64 {
        self.columns
            .iter()
            .map(|c| {
                let left = match op {
                    Op::Encrypt => c.plaintext,
                    Op::Decrypt => c.envelopes(),
                    Op::Rekey => c
                        .versions
                        .iter()
                        .filter(|(v, _)| **v != active)
                        .map(|(_, n)| n)
                        .sum(),
                };
                left + c.sample_failures
            })
            .sum()
    }

    /// Envelopes under `version`, in every column.
    pub fn under_version(&self, version: u32) -> u64 {
        self.columns
            .iter()
            .filter_map(|c| c.versions.get(&version))
            .sum()
    }
}

/// Scan the plan's columns. With `print`, one line per column and a verdict.
pub async fn scan(
    client: &Client,
    plan: &Plan,
    keys: &KeySet,
    print: bool,
) -> anyhow::Result<Report> {
    let mut report = Report::default();
    for t in &plan.tables {
        let cols: Vec<String> = t
            .columns
            .iter()
            .map(|c| format!("{}::text", c.ident))
            .collect();
        let sql = format!("SELECT {} FROM {}", cols.join(", "), t.ident);
        let ciphers: Vec<_> = t.columns.iter().map(|c| keys.domain(&c.domain)).collect();
        let mut reports: Vec<ColumnReport> = t
            .columns
            .iter()
            .map(|c| ColumnReport {
                table: t.name.clone(),
                column: c.name.clone(),
                ..Default::default()
            })
            .collect();
        // Spread the sample over the table.
        let stride = (t.est_rows / SAMPLE).max(1);
        let mut plain = Vec::new();
        let stream = client
            .query_raw(&sql, std::iter::empty::<&str>())
            .await
            .with_context(|| format!("scanning {}", t.name))?;
        pin_mut!(stream);
        let mut n: u64 = 0;
        while let Some(row) = stream
            .try_next()
            .await
            .with_context(|| format!("scanning {}", t.name))?
        {
            for (i, r) in reports.iter_mut().enumerate() {
                let v: Option<&str> = row.try_get(i).context("reading a value")?;
                let Some(v) = v else {
                    r.nulls += 1;
                    continue;
                };
                match envelope_key_version(v.as_bytes()) {
                    Err(_) => r.plaintext += 1,
                    Ok(ver) => {
                        *r.versions.entry(ver).or_default() += 1;
                        if r.sampled < SAMPLE && n % stride == 0 {
                            r.sampled += 1;
                            if ciphers[i].decrypt_into(v.as_bytes(), &mut plain).is_err() {
                                r.sample_failures += 1;
                            }
                        }
                    }
                }
            }
            n += 1;
        }
        report.columns.extend(reports);
    }
    if print {
        for c in &report.columns {
            let versions: Vec<String> = c
                .versions
                .iter()
                .map(|(v, n)| format!("v{v}: {n}"))
                .collect();
            outln!(
                "{}.{}: {} plaintext, {} envelopes ({}), {} NULL; {} sampled envelopes decrypted, {} failed",
                c.table,
                c.column,
                c.plaintext,
                c.envelopes(),
                if versions.is_empty() {
                    "none".to_string()
                } else {
                    versions.join(", ")
                },
                c.nulls,
                c.sampled - c.sample_failures,
                c.sample_failures
            );
        }
        let plaintext: u64 = report.columns.iter().map(|c| c.plaintext).sum();
        let failures: u64 = report.columns.iter().map(|c| c.sample_failures).sum();
        if plaintext == 0 {
            outln!(
                "check: no plaintext left in {} encrypted columns",
                report.columns.len()
            );
        } else {
            let cols: Vec<String> = report
                .columns
                .iter()
                .filter(|c| c.plaintext > 0)
                .map(|c| format!("{}.{} ({})", c.table, c.column, c.plaintext))
                .collect();
            outln!(
                "check: {plaintext} plaintext values remain in {}",
                cols.join(", ")
            );
        }
        if failures > 0 {
            outln!("check: {failures} sampled envelopes failed to decrypt with this keyring");
        }
    }
    Ok(report)
}
