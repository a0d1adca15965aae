//! `pgveil keys ...`: generate, add-version, list, retire.
use std::path::PathBuf;
use std::process::ExitCode;

use pgveil_policy::keyring::Keyring;

use crate::output::outln;

/// Manage a keyring file.
#[derive(Debug, clap::Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub command: KeysCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Create a new keyring with one fresh key (version 1), mode 0600. Never overwrites.
    Generate {
        #[arg(long)]
        out: PathBuf,
    },
    /// Add a fresh key as the next version and make it active; old versions still decrypt.
    AddVersion { file: PathBuf },
    /// List versions, creation times and fingerprints (never key material).
    List { file: PathBuf },
    /// Remove a key version. Refused while the database holds values encrypted under it (run
    /// `pgveil rekey` first); --force removes it anyway, destroying those values
    /// (crypto-shredding). The active version is never removed.
    #[command(disable_version_flag = true)]
    Retire {
        file: PathBuf,
        #[arg(long)]
        version: u32,
        /// Connection string of the database to scan (directly, not through pgveil).
        #[arg(long)]
        dsn: String,
        /// The policy: which columns to scan.
        #[arg(long)]
        policy: PathBuf,
        /// Remove the version even though values are still encrypted under it: they become
        /// undecryptable (deliberate crypto-shredding).
        #[arg(long)]
        force: bool,
    },
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub fn run(args: KeysArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        KeysCommand::Generate { out } => {
            let k = Keyring::generate(now())?;
            k.save(&out, true)?;
            let info = k.list();
            let fp = info.first().map(|i| i.fingerprint.as_str()).unwrap_or("");
            outln!(
                "{}: new keyring, version 1 active (fingerprint {fp})",
                out.display()
            );
        }
        KeysCommand::AddVersion { file } => {
            let mut k = Keyring::load(&file)?;
            let v = k.add_version(now())?;
            k.save(&file, false)?;
            outln!(
                "{}: version {v} added and active; earlier versions still decrypt",
                file.display()
            );
        }
        KeysCommand::Retire {
            file,
            version,
            dsn,
            policy,
            force,
        } => return crate::migrate::retire::run(&file, version, &dsn, &policy, force),
        KeysCommand::List { file } => {
            let k = Keyring::load(&file)?;
            outln!(
                "{:<8}  {:<20}  {:<16}  active",
                "version",
                "created",
                "fingerprint"
            );
            for i in k.list() {
                outln!(
                    "{:<8}  {:<20}  {:<16}  {}",
                    i.version,
                    i.created,
                    i.fingerprint,
                    if i.active { "*" } else { "" }
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
