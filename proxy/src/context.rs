//! What every session of one server shares: configuration, the upstream address, TLS,
//! metrics, cancel keys, connection slots, and policy enforcement.
//!
//! It lives apart from `server` (accept loop, shutdown) so that `session` depends on this
//! and not on the listener: imports run `server → session → enforce`.
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::cancel::CancelRegistry;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::tls;
use crate::upstream::Upstream;

/// State shared by every session of one server.
pub struct ServerContext {
    pub config: Config,
    pub upstream: Upstream,
    pub client_tls: Option<TlsAcceptor>,
    /// DER of the leaf certificate pgveil presents to clients.
    pub client_cert_der: Option<Vec<u8>>,
    pub metrics: Arc<Metrics>,
    pub cancels: CancelRegistry,
    /// One permit per allowed client connection.
    pub slots: Arc<Semaphore>,
    /// Cancelled when sessions must stop now (the shutdown drain timed out).
    pub force_close: CancellationToken,
    /// Policy enforcement; `None` runs the pure pass-through relay.
    pub enforcement: Option<Arc<crate::enforce::Enforcement>>,
    /// The audit log's sink, when `audit.file` is set (set by `RunningProxy::start`).
    pub audit: Option<crate::audit::AuditSink>,
}

impl ServerContext {
    /// Build the shared state; fails on TLS files that cannot be used.
    pub fn new(config: Config, metrics: Arc<Metrics>) -> anyhow::Result<ServerContext> {
        let upstream = Upstream::new(&config.upstream)?;
        let (client_tls, client_cert_der) = match &config.client_tls {
            Some(t) => {
                let (server_config, leaf) = tls::server_config(&t.cert_file, &t.key_file)?;
                (Some(TlsAcceptor::from(server_config)), Some(leaf))
            }
            None => (None, None),
        };
        let enforcement = match &config.enforcement {
            Some(e) => Some(Arc::new(enforcement(&config, e, metrics.clone())?)),
            None => None,
        };
        Ok(ServerContext {
            enforcement,
            slots: Arc::new(Semaphore::new(config.max_client_connections)),
            config,
            upstream,
            client_tls,
            client_cert_der,
            metrics,
            cancels: CancelRegistry::default(),
            force_close: CancellationToken::new(),
            audit: None,
        })
    }
}

/// Load the policy and keyring; any problem stops start-up with a one-line reason.
fn enforcement(
    config: &Config,
    e: &crate::config::EnforcementConfig,
    metrics: Arc<Metrics>,
) -> anyhow::Result<crate::enforce::Enforcement> {
    use crate::enforce::{Enforcement, PolicyFiles, PolicyState};
    let state = PolicyState::load(&e.policy, &e.keyring).map_err(|m| anyhow::anyhow!(m))?;
    // The catalog connection reaches the server as the sessions do: same address, same TLS
    // mode and CA, same host name checked.
    let upstream = Arc::new(Upstream::new(&config.upstream)?);
    let dial: crate::catalog::Dial = Arc::new(move || {
        let upstream = upstream.clone();
        Box::pin(async move { upstream.connect().await.map_err(|e| e.to_string()) })
    });
    let source = crate::catalog::CatalogSource {
        dial,
        user: e.catalog_user.clone(),
        password: e.catalog_password.clone(),
        connect_timeout: config.upstream.connect_timeout,
        counters: Some(crate::catalog::CatalogCounters {
            reads: metrics.enforcement.catalog_reads.clone(),
            connections: metrics.enforcement.catalog_connections.clone(),
        }),
    };
    tracing::info!(policy = %e.policy.display(), version = %state.policy.version(), "enforcing policy");
    for w in state.policy.policy().warnings() {
        tracing::warn!(policy = %e.policy.display(), line = w.pos.line, "{}", w.message);
    }
    if e.catalog_password.is_none() {
        tracing::warn!(
            catalog_user = %e.catalog_user,
            "catalog.password is not set (nor PGVEIL_CATALOG_PASSWORD): the server must let the catalog login in without one (trust, peer or a certificate), or statements on protected data will be refused with 57P03"
        );
    }
    Ok(Enforcement::new(
        state,
        PolicyFiles {
            policy: e.policy.clone(),
            keyring: e.keyring.clone(),
        },
        source,
        e.catalog_refresh,
        e.parse_cache_size,
        metrics,
    ))
}
