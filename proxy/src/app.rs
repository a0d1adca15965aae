//! Running a proxy: bind the listeners, serve, stop on a signal or on request.
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::context::ServerContext;
use crate::metrics::{serve_http, Metrics};
use crate::server;

/// A proxy running inside this process.
pub struct RunningProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    /// Where `/metrics`, `/healthz` and `/readyz` are served, if enabled.
    pub metrics_addr: Option<SocketAddr>,
    pub metrics: Arc<Metrics>,
    /// Policy enforcement, when a policy is configured (for reloads).
    pub enforcement: Option<Arc<crate::enforce::Enforcement>>,
    /// The audit log's sink, when `audit.file` is set (also in `ServerContext::audit`).
    pub audit: Option<crate::audit::AuditSink>,
    audit_handle: Option<crate::audit::AuditHandle>,
    stop: CancellationToken,
    server: JoinHandle<()>,
}

impl RunningProxy {
    /// Bind the listeners and start serving in the background.
    pub async fn start(config: Config) -> anyhow::Result<RunningProxy> {
        let metrics = Arc::new(Metrics::new().context("cannot register metrics")?);
        let mut ctx = ServerContext::new(config.clone(), metrics.clone())?;
        let (audit, audit_handle) = start_audit(&config, &metrics).await?;
        ctx.audit = audit.clone();
        let ctx = Arc::new(ctx);
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
                let target = std::sync::Arc::new(ctx.upstream.address().clone());
                tokio::spawn(serve_http(l, metrics.clone(), target, stop.clone()));
                Some(bound)
            }
            None => None,
        };
        let upstream = ctx.upstream.addr();
        let enforcement = ctx.enforcement.clone();
        if let Some(enf) = &enforcement {
            tokio::spawn(watch_policy_files(enf.clone(), stop.clone()));
        }
        let server = tokio::spawn(server::run(listener, ctx, stop.clone()));
        let metrics_at = metrics_addr.map_or_else(|| "off".to_string(), |a| a.to_string());
        tracing::info!(%addr, %upstream, metrics = %metrics_at, "pgveil listening");
        Ok(RunningProxy {
            addr,
            metrics_addr,
            metrics,
            enforcement,
            audit,
            audit_handle,
            stop,
            server,
        })
    }

    /// Stop accepting and wait for sessions to drain (up to the shutdown timeout).
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.server.await;
        if let Some(h) = self.audit_handle {
            if let Err(e) = h.close().await {
                tracing::error!(error = %e, "audit: closing the log failed");
            }
        }
    }

    /// Run until SIGTERM or SIGINT, then shut down gracefully. SIGHUP reloads the policy
    /// and keyring.
    pub async fn run_until_signal(self) -> anyhow::Result<()> {
        wait_for_signal(self.enforcement.clone()).await?;
        tracing::info!("signal received; shutting down");
        self.shutdown().await;
        Ok(())
    }
}

/// Starts the audit writer when `audit.file` is set; its keys come from the keyring.
async fn start_audit(
    config: &Config,
    metrics: &Metrics,
) -> anyhow::Result<(
    Option<crate::audit::AuditSink>,
    Option<crate::audit::AuditHandle>,
)> {
    let Some(a) = &config.audit else {
        return Ok((None, None));
    };
    let enf = config
        .enforcement
        .as_ref()
        .context("audit.file: needs a keyring (set policy: and keyring:) to key the log's chain")?;
    let keys = pgveil_policy::keyring::Keyring::load(&enf.keyring)?.into_key_set();
    let (sink, handle) = crate::audit::start(a, &keys, metrics)
        .await
        .with_context(|| format!("audit.file: cannot open {}", a.file.display()))?;
    tracing::info!(file = %a.file.display(), "audit log open");
    Ok((Some(sink), Some(handle)))
}

async fn wait_for_signal(enf: Option<Arc<crate::enforce::Enforcement>>) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot install SIGHUP handler")?;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            _ = hup.recv() => match &enf {
                Some(e) => {
                    tracing::info!("SIGHUP: reloading policy and keyring");
                    let _ = e.reload();
                }
                None => tracing::info!("SIGHUP ignored: no policy configured"),
            },
        }
    }
}

/// How often the policy and keyring files are checked for changes.
const WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// Reload when the policy or keyring file changes (modification time or size).
async fn watch_policy_files(enf: Arc<crate::enforce::Enforcement>, stop: CancellationToken) {
    let stamp = |p: &std::path::Path| {
        std::fs::metadata(p)
            .ok()
            .map(|m| (m.modified().ok(), m.len()))
    };
    let files = enf.files.clone();
    let mut last = (stamp(&files.policy), stamp(&files.keyring));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(WATCH_INTERVAL) => {}
        }
        let now = (stamp(&files.policy), stamp(&files.keyring));
        if now != last {
            last = now;
            tracing::info!("policy or keyring file changed; reloading");
            let _ = enf.reload();
        }
    }
}
