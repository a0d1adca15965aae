//! `null-relay LISTEN UPSTREAM`: the cheapest relay tokio can be.
//!
//! It accepts TCP connections, connects each to UPSTREAM and copies bytes both
//! ways with `tokio::io::copy_bidirectional` on a single-threaded runtime. No
//! protocol parsing, no metrics, no limits. `benches/pgbench.sh` runs it as
//! the target `null-relay` to show what relaying alone costs on the machine at
//! hand: pgveil cannot be cheaper than this. It is a benchmark tool, not a
//! product; do not deploy it.
use std::process::ExitCode;

use tokio::net::{TcpListener, TcpStream};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, upstream] = args.as_slice() else {
        eprintln!(
            "usage: null-relay LISTEN_ADDR UPSTREAM_ADDR (e.g. 127.0.0.1:6000 127.0.0.1:5432)"
        );
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("null-relay: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(listen, upstream.clone())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("null-relay: cannot listen on {listen}: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(listen: &str, upstream: String) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    loop {
        let (mut client, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                eprintln!("null-relay: accept: {e}");
                continue;
            }
        };
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let mut server = match TcpStream::connect(&upstream).await {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("null-relay: connect {upstream}: {e}");
                    return;
                }
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        });
    }
}
