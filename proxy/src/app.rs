//! Running a proxy: bind the listeners, serve, stop on a signal or on request.
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::metrics::{serve_http, Metrics};
use crate::server::{self, ServerContext};

/// A proxy running inside this process.
pub struct RunningProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    /// Where `/metrics`, `/healthz` and `/readyz` are served, if enabled.
    pub metrics_addr: Option<SocketAddr>,
    pub metrics: Arc<Metrics>,
    stop: CancellationToken,
    server: JoinHandle<()>,
}

impl RunningProxy {
    /// Bind the listeners and start serving in the background.
    pub async fn start(config: Config) -> anyhow::Result<RunningProxy> {
        let metrics = Arc::new(Metrics::new().context("cannot register metrics")?);
        let ctx = Arc::new(ServerContext::new(config.clone(), metrics.clone())?);
        let listener = TcpListener::bind(&config.listen)
            .await
            .with_context(|| format!("listen: cannot bind {}", config.listen))?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let metrics_addr = match &config.metrics_listen {
            Some(listen) => {
                let l = TcpListener::bind(listen)
                    .await
                    .with_context(|| format!("metrics.listen: cannot bind {listen}"))?;
                let bound = l.local_addr()?;
                let target = ctx.upstream.address().clone();
                tokio::spawn(serve_http(l, metrics.clone(), target, stop.clone()));
                Some(bound)
            }
            None => None,
        };
        let upstream = ctx.upstream.addr();
        let server = tokio::spawn(server::run(listener, ctx, stop.clone()));
        tracing::info!(
            %addr,
            %upstream,
            metrics = ?metrics_addr,
            "pgveil listening"
        );
        Ok(RunningProxy {
            addr,
            metrics_addr,
            metrics,
            stop,
            server,
        })
    }

    /// Stop accepting and wait for sessions to drain (up to the shutdown timeout).
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.server.await;
    }

    /// Run until SIGTERM or SIGINT, then shut down gracefully.
    pub async fn run_until_signal(self) -> anyhow::Result<()> {
        wait_for_signal().await?;
        tracing::info!("signal received; shutting down");
        self.shutdown().await;
        Ok(())
    }
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    Ok(())
}
