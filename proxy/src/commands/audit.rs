//! `pgveil audit ...`: verify the integrity chain, and the access review.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use pgveil_policy::keyring::Keyring;

use crate::audit::{report, verify};
use crate::output::{out, outln};

/// Check and review audit logs.
#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: AuditCommand,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    Text,
    Csv,
    Json,
}

#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Verify the chain of audit files, given oldest first (rotated files, then the active one).
    /// Exits 0 when intact, 1 with the first bad record otherwise.
    Verify {
        /// The keyring the log was written with.
        #[arg(long, env = "PGVEIL_KEYRING", value_name = "FILE")]
        keyring: PathBuf,
        /// The last log may still be open (being written): do not require its closing
        /// checkpoint. Records after its last checkpoint are then reported, not checked for
        /// truncation.
        #[arg(long)]
        open: bool,
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Access review: per login and policy role, the classified columns used (action, rows,
    /// statements), and the grants no statement used in the window.
    Report {
        #[arg(long, value_name = "FILE")]
        policy: PathBuf,
        /// The window, e.g. 90d, 12h [default: everything in the files].
        #[arg(long, value_name = "DURATION")]
        since: Option<String>,
        #[arg(long, value_enum, default_value = "text")]
        format: ReportFormat,
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
}

pub fn run(args: AuditArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        AuditCommand::Verify {
            keyring,
            open,
            files,
        } => {
            let keys = Keyring::load(&keyring)?.into_key_set();
            match verify::verify(&files, &keys, verify::Options { open }) {
                Ok(s) => {
                    for n in &s.notes {
                        outln!("note: {n}");
                    }
                    outln!(
                        "ok: {} records in {} file(s), {} log(s), {} checkpoint(s); {}",
                        s.records,
                        s.files,
                        s.logs.len(),
                        s.checkpoints,
                        if s.closed {
                            "closed".to_string()
                        } else {
                            format!("open: {} record(s) after the last checkpoint", s.unanchored)
                        }
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(b) => {
                    eprintln!("{b}");
                    Ok(ExitCode::from(1))
                }
            }
        }
        AuditCommand::Report {
            policy,
            since,
            format,
            files,
        } => {
            let (p, source) = pgveil_policy::load::load_path(&policy)
                .map_err(|d| anyhow::anyhow!("{}: {d}", policy.display()))?;
            let compiled = pgveil_policy::compile::CompiledPolicy::compile(p, &source);
            let since = match since {
                Some(s) => {
                    let d = humantime::parse_duration(&s)
                        .with_context(|| format!("--since {s:?}: use e.g. 90d or 12h"))?;
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs());
                    Some(i64::try_from(now.saturating_sub(d.as_secs())).unwrap_or(0))
                }
                None => None,
            };
            let rep = report::build(&files, &compiled, since)?;
            let out = match format {
                ReportFormat::Text => rep.to_text(),
                ReportFormat::Csv => rep.to_csv(),
                ReportFormat::Json => rep.to_json() + "\n",
            };
            out!("{out}");
            Ok(ExitCode::SUCCESS)
        }
    }
}
