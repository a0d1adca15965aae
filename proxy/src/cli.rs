//! Command-line interface (clap). Each subcommand's logic lives in its own module.
use clap::{Parser, Subcommand};

use crate::commands::{audit::AuditArgs, keys::KeysArgs, policy::PolicyArgs};
use crate::config::ServeArgs;
use crate::demo::DemoArgs;
use crate::migrate::MigrateArgs;

/// pgveil: a transparent encrypting proxy for PostgreSQL.
///
/// Applications change only the host and port in their connection string; pgveil
/// encrypts classified columns on the way in and decrypts, masks or denies them on
/// the way out, according to a declarative policy.
#[derive(Debug, Parser)]
#[command(name = "pgveil", version, about, long_about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy in front of a PostgreSQL server.
    Serve(Box<ServeArgs>),
    /// Start a throwaway PostgreSQL with sample data and pgveil in front of it, and show a tour.
    Demo(DemoArgs),
    /// Check, explain and review a policy file.
    Policy(PolicyArgs),
    /// Generate and manage keyring files.
    Keys(KeysArgs),
    /// Verify audit logs and review access.
    Audit(AuditArgs),
    /// Encrypt the policy's `encrypt:` columns of live tables in place, in batches (resumable).
    Encrypt(MigrateArgs),
    /// Decrypt them back to plaintext and restore the original column types.
    Decrypt(MigrateArgs),
    /// Re-encrypt every envelope not under the keyring's active version.
    Rekey(MigrateArgs),
}
