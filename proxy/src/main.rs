//! The `pgveil` binary: parse the command line and dispatch.
use std::process::ExitCode;

use clap::Parser;
use pgveil::cli::{Cli, Command};
use pgveil::config::Config;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Demo(args) => pgveil::demo::run(args),
        Command::Policy(args) => pgveil::commands::policy::run(args),
        Command::Keys(args) => pgveil::commands::keys::run(args),
        Command::Audit(args) => pgveil::commands::audit::run(args),
        Command::Encrypt(args) => pgveil::migrate::run(pgveil::migrate::Op::Encrypt, args),
        Command::Decrypt(args) => pgveil::migrate::run(pgveil::migrate::Op::Decrypt, args),
        Command::Rekey(args) => pgveil::migrate::run(pgveil::migrate::Op::Rekey, args),
    };
    let code = match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pgveil: {e:#}");
            ExitCode::FAILURE
        }
    };
    // Output to a reader that went away (`| head`) was dropped quietly; other write errors
    // fail the command.
    pgveil::output::flush();
    match pgveil::output::failure() {
        Some(e) => {
            eprintln!("pgveil: cannot write to standard output: {e}");
            ExitCode::FAILURE
        }
        None => code,
    }
}

fn serve(args: pgveil::config::ServeArgs) -> anyhow::Result<ExitCode> {
    let config = Config::resolve(&args)?;
    pgveil::logging::init(config.log_format, &config.log_level);
    // One worker: a single-threaded runtime, with no cross-thread wake-ups at
    // all (pgbouncer's model). More: tokio's work-stealing scheduler.
    let runtime = if config.worker_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.worker_threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(async {
        let proxy = pgveil::app::RunningProxy::start(config).await?;
        proxy.run_until_signal().await
    })?;
    Ok(ExitCode::SUCCESS)
}
