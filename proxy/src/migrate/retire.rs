//! `pgveil keys retire`: remove a key version once no value in the database needs it.
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context};
use pgveil_policy::keyring::Keyring;

use super::{check, connect, plan::Plan, Op, Options};
use crate::output::outln;

/// Scan the policy's encrypted columns for envelopes under `version`; refuse while any remain
/// unless `force` (crypto-shredding), then remove the version from the keyring file.
pub fn run(
    file: &Path,
    version: u32,
    dsn: &str,
    policy: &Path,
    force: bool,
) -> anyhow::Result<ExitCode> {
    let mut keyring = Keyring::load(file)?;
    if version == keyring.active_version() {
        bail!(
            "version {version} is the active version of {}; run `pgveil keys add-version` and `pgveil rekey` first",
            file.display()
        );
    }
    if !keyring.has_version(version) {
        bail!("version {version} is not in {}", file.display());
    }
    let lowest = keyring.list().iter().map(|i| i.version).min() == Some(version);
    // The policy says which columns to scan; the key set samples decryption.
    let state = crate::enforce::PolicyState::load(policy, file).map_err(|e| anyhow::anyhow!(e))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let under = runtime.block_on(async {
        let client = connect(dsn).await?;
        let plan = Plan::build(
            &client,
            &state.policy,
            &state.keys,
            Op::Rekey,
            &Options::default(),
        )
        .await?;
        let report = check::scan(&client, &plan, &state.keys, false).await?;
        anyhow::Ok(report.under_version(version))
    })?;
    if under > 0 && !force {
        bail!(
            "refusing to retire version {version}: {under} values in the database are still encrypted under it; run `pgveil rekey` first (or --force to destroy them: crypto-shredding)"
        );
    }
    keyring
        .remove_version(version)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    keyring.save(file, false)?;
    if under > 0 {
        outln!(
            "{}: version {version} removed WITH --force: {under} values encrypted under it can no longer be decrypted with this keyring (crypto-shredded; copies of the old keyring file still can)",
            file.display()
        );
    } else {
        outln!(
            "{}: version {version} removed; no value in the policy's encrypted columns used it",
            file.display()
        );
    }
    if lowest {
        outln!(
            "note: version {version} was the lowest version, which derives `hash` pseudonyms; they change now"
        );
    }
    Ok(ExitCode::SUCCESS)
}
