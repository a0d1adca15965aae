//! `pgveil policy ...`: check, matrix, schema, explain.
use std::process::ExitCode;

/// Work with a policy file.
#[derive(Debug, clap::Args)]
pub struct PolicyArgs {}

pub fn run(_args: PolicyArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("pgveil policy: not built yet (issue 3)")
}
