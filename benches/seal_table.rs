//! `seal-table`: encrypt, in place, every column a policy marks `encrypt:` (the benchmark's
//! setup), with the code of `pgveil encrypt`.
//!
//! Usage: seal-table DSN POLICY KEYRING
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dsn, policy, keyring] = args.as_slice() else {
        eprintln!("usage: seal-table DSN POLICY KEYRING");
        return ExitCode::from(2);
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("seal-table: {e}");
            return ExitCode::FAILURE;
        }
    };
    let run = async {
        let state = pgveil::enforce::PolicyState::load(policy.as_ref(), keyring.as_ref())
            .map_err(|e| anyhow::anyhow!(e))?;
        let (mut client, conn) = tokio_postgres::connect(dsn, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        let opts = pgveil::migrate::Options::default();
        let done = pgveil::migrate::encrypt(&mut client, &state.policy, &state.keys, &opts).await?;
        anyhow::Ok(done.iter().map(|s| s.changed).sum::<u64>())
    };
    match rt.block_on(run) {
        Ok(n) => {
            println!("sealed {n} values");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("seal-table: {e:#}");
            ExitCode::FAILURE
        }
    }
}
