//! `pgveil encrypt`, `decrypt`, `rekey` and `keys retire`: migrating live tables in place.
//!
//! - [`plan`]: which tables and columns, their primary keys and types, what would block;
//! - [`alter`]: the type changes to `text` and back, recorded in `pgveil.original_types`;
//! - [`batch`]: the batch loop (primary-key ranges, one short transaction per batch);
//! - [`check`]: the scan that proves no plaintext (or no old key version) is left;
//! - [`progress`]: progress bars and the one-line summaries.
//!
//! See docs/encryption.md for the behaviour and its limits.
pub mod alter;
pub mod batch;
pub mod check;
pub mod plan;
pub mod progress;
pub mod retire;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use pgveil_policy::crypto::KeySet;
use pgveil_policy::CompiledPolicy;

use crate::output::outln;

pub use batch::{Op, TableSummary};

/// Exit code when `--check` (or a run) finds values left to do.
pub const EXIT_REMAINING: u8 = 3;

/// Exit code of `--dry-run` when the real run would refuse a column.
pub const EXIT_REFUSED: u8 = 4;

/// Options shared by `encrypt`, `decrypt` and `rekey`.
#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// The policy file: which columns are encrypted, in which mode and key domain.
    #[arg(long)]
    pub policy: PathBuf,
    /// The keyring file.
    #[arg(long)]
    pub keyring: PathBuf,
    /// libpq-style connection string of the database, e.g. "host=db user=owner dbname=tms"
    /// (connect directly to PostgreSQL as the tables' owner, not through pgveil).
    #[arg(long)]
    pub dsn: String,
    /// Only these tables (schema.table, as the policy names them); repeatable. Default: every
    /// table with encrypted columns.
    #[arg(long = "table", value_name = "SCHEMA.TABLE")]
    pub tables: Vec<String>,
    /// Rows per batch; each batch is one short transaction.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch_size: u32,
    /// Print what would be done (tables, columns, type changes, row counts); change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Change nothing; scan every encrypted column and report what is left to do.
    /// Exit code 3 when something is left.
    #[arg(long, conflicts_with = "dry_run")]
    pub check: bool,
}

/// What a library caller (the demo, benchmarks) sets.
#[derive(Debug, Clone)]
pub struct Options {
    /// Policy table names; empty means all.
    pub tables: Vec<String>,
    pub batch_size: u32,
    /// Print per-table summaries (and progress bars on a terminal).
    pub report: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            tables: Vec::new(),
            batch_size: 1000,
            report: false,
        }
    }
}

/// Run `pgveil encrypt|decrypt|rekey` from the command line.
pub fn run(op: Op, args: MigrateArgs) -> anyhow::Result<ExitCode> {
    let state = crate::enforce::PolicyState::load(&args.policy, &args.keyring)
        .map_err(|e| anyhow::anyhow!(e))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let mut client = connect(&args.dsn).await?;
        let opts = Options {
            tables: args.tables.clone(),
            batch_size: args.batch_size,
            report: true,
        };
        let plan = plan::Plan::build(&client, &state.policy, &state.keys, op, &opts).await?;
        if args.dry_run {
            if plan.print_dry_run(op) {
                return Ok(ExitCode::SUCCESS);
            }
            eprintln!("pgveil: the run would refuse the columns marked REFUSED above (nothing was changed)");
            return Ok(ExitCode::from(EXIT_REFUSED));
        }
        if args.check {
            let report = check::scan(&client, &plan, &state.keys, true).await?;
            let active = state.keys.active_version();
            let left = report.remaining(op, active);
            match op {
                Op::Encrypt => {}
                Op::Decrypt => outln!("check: {left} values are still envelopes"),
                Op::Rekey => {
                    outln!("check: {left} envelopes are not under the active version v{active}")
                }
            }
            return Ok(if left == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_REMAINING)
            });
        }
        let summaries = execute(&mut client, &plan, &state.keys, op, &opts).await?;
        let failed: u64 = summaries.iter().map(|s| s.failed).sum();
        if failed > 0 {
            eprintln!(
                "pgveil: {failed} values could not be processed and were left unchanged (see above)"
            );
            return Ok(ExitCode::from(EXIT_REMAINING));
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Encrypt every encrypted column of `policy` in place (the demo and benchmarks).
pub async fn encrypt(
    client: &mut tokio_postgres::Client,
    policy: &CompiledPolicy,
    keys: &KeySet,
    opts: &Options,
) -> anyhow::Result<Vec<TableSummary>> {
    let plan = plan::Plan::build(client, policy, keys, Op::Encrypt, opts).await?;
    execute(client, &plan, keys, Op::Encrypt, opts).await
}

/// Carry out a plan: type changes before (encrypt) or after (decrypt) the batches.
pub async fn execute(
    client: &mut tokio_postgres::Client,
    plan: &plan::Plan,
    keys: &KeySet,
    op: Op,
    opts: &Options,
) -> anyhow::Result<Vec<TableSummary>> {
    plan.refuse_blockers(op)?;
    let mut out = Vec::new();
    for table in &plan.tables {
        if op == Op::Encrypt {
            alter::to_text(client, table).await?;
        }
        let summary = batch::run_table(client, table, keys, op, opts).await?;
        if opts.report {
            outln!("{summary}");
        }
        if op == Op::Decrypt {
            if summary.failed > 0 {
                outln!(
                    "{}: original column types not restored: {} values are still envelopes",
                    table.name,
                    summary.failed
                );
            } else {
                alter::restore_types(client, table, opts.report).await?;
            }
        }
        out.push(summary);
    }
    Ok(out)
}

/// Connect for a migration. Errors never print the connection string (it may hold a password).
pub async fn connect(dsn: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(dsn, tokio_postgres::NoTls)
        .await
        .context("cannot connect to PostgreSQL (--dsn)")?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            eprintln!("pgveil: database connection lost: {e}");
        }
    });
    Ok(client)
}

/// `"name"` with embedded quotes doubled.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::quote_ident;

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("phone"), "\"phone\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
