//! `pgveil keys ...`: generate, add-version, list.
use std::process::ExitCode;

/// Manage a keyring file.
#[derive(Debug, clap::Args)]
pub struct KeysArgs {}

pub fn run(_args: KeysArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("pgveil keys: not built yet (issue 3)")
}
