//! `pgveil demo`: a throwaway PostgreSQL with sample data, pgveil in front of
//! it, and a short tour.
pub mod data;

use std::process::ExitCode;

/// Options of the demo.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Seed of the sample-data generator (the same seed gives the same data).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Number of customers to generate.
    #[arg(long, default_value_t = 200)]
    pub customers: usize,
    /// Keep running after the tour until Ctrl-C, so you can connect with psql.
    #[arg(long)]
    pub keep: bool,
}

pub fn run(_args: DemoArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("demo: under construction")
}
