//! `pgveil serve` settings: a YAML file, `PGVEIL_*` environment variables and
//! command-line flags. Flags beat environment variables, which beat the file,
//! which beats the defaults.
use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;
use serde::Deserialize;

/// A configuration problem, reported on one line naming the key.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// How pgveil talks TLS to the upstream server (libpq's `sslmode` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ValueEnum, Default)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamTlsMode {
    /// Never use TLS.
    Disable,
    /// Use TLS if the server offers it, without verifying the certificate.
    #[default]
    Prefer,
    /// Require TLS, without verifying the certificate.
    Require,
    /// Require TLS, verify the chain against the CA file (or the system roots)
    /// and the host name.
    VerifyFull,
}

impl UpstreamTlsMode {
    /// The name used in the config file and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            UpstreamTlsMode::Disable => "disable",
            UpstreamTlsMode::Prefer => "prefer",
            UpstreamTlsMode::Require => "require",
            UpstreamTlsMode::VerifyFull => "verify-full",
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The resolved settings the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: String,
    pub upstream: UpstreamConfig,
    pub client_tls: Option<ClientTlsConfig>,
    pub metrics_listen: Option<String>,
    pub max_client_connections: usize,
    pub startup_timeout: Duration,
    pub idle_timeout: Option<Duration>,
    pub shutdown_timeout: Duration,
    pub worker_threads: usize,
    pub log_format: LogFormat,
    pub log_level: String,
    pub enforcement: Option<EnforcementConfig>,
    /// The audit log (`audit:`); `None` when `audit.file` is not set.
    pub audit: Option<audit::AuditConfig>,
}

/// Policy enforcement settings (present when a policy is configured).
#[derive(Clone)]
pub struct EnforcementConfig {
    pub policy: PathBuf,
    pub keyring: PathBuf,
    pub catalog_user: String,
    /// From `catalog.password` or `PGVEIL_CATALOG_PASSWORD`; never from a flag.
    pub catalog_password: Option<String>,
    pub catalog_refresh: Duration,
    pub parse_cache_size: usize,
}

impl EnforcementConfig {
    /// How often the catalog is read again, unless configured.
    pub const DEFAULT_REFRESH: Duration = Duration::from_secs(60);
    /// Analyses the parse cache keeps, unless configured.
    pub const DEFAULT_PARSE_CACHE: usize = 10_000;

    /// Enforcement of `policy` with `keyring`, the catalog read as `catalog_user` (no
    /// password), and the defaults for the rest.
    pub fn new(policy: PathBuf, keyring: PathBuf, catalog_user: impl Into<String>) -> Self {
        EnforcementConfig {
            policy,
            keyring,
            catalog_user: catalog_user.into(),
            catalog_password: None,
            catalog_refresh: Self::DEFAULT_REFRESH,
            parse_cache_size: Self::DEFAULT_PARSE_CACHE,
        }
    }
}

impl std::fmt::Debug for EnforcementConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnforcementConfig")
            .field("policy", &self.policy)
            .field("keyring", &self.keyring)
            .field("catalog_user", &self.catalog_user)
            .field(
                "catalog_password",
                &self.catalog_password.as_ref().map(|_| "***"),
            )
            .field("catalog_refresh", &self.catalog_refresh)
            .field("parse_cache_size", &self.parse_cache_size)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub host: String,
    pub port: u16,
    pub tls_mode: UpstreamTlsMode,
    pub ca_file: Option<PathBuf>,
    pub connect_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct ClientTlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:6432".into(),
            upstream: UpstreamConfig {
                host: "127.0.0.1".into(),
                port: 5432,
                tls_mode: UpstreamTlsMode::Prefer,
                ca_file: None,
                connect_timeout: Duration::from_secs(10),
            },
            client_tls: None,
            metrics_listen: Some("127.0.0.1:9187".into()),
            max_client_connections: 1000,
            startup_timeout: Duration::from_secs(15),
            idle_timeout: None,
            shutdown_timeout: Duration::from_secs(30),
            worker_threads: default_worker_threads(),
            log_format: LogFormat::Text,
            log_level: "info".into(),
            enforcement: None,
            audit: None,
        }
    }
}

impl Config {
    /// Resolve defaults < file < environment < flags (clap already merged the
    /// last two), then validate.
    pub fn resolve(args: &ServeArgs) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(path) => load_file(path)?,
            None => FileConfig::default(),
        };
        let mut c = Config::default();
        let threads_set = args.worker_threads.is_some()
            || file
                .limits
                .as_ref()
                .is_some_and(|l| l.worker_threads.is_some());
        let pending = PendingEnforcement::from_file(&file);
        let audit = resolve_audit(file.audit)?;
        let file = FileConfig {
            audit: None,
            ..file
        };
        c.audit = audit;
        c.apply_file(file);
        c.apply_args(args);
        c.enforcement = pending.resolve(args)?;
        if c.enforcement.is_some() && !threads_set {
            c.worker_threads = policy_worker_threads();
        }
        c.validate()?;
        Ok(c)
    }

    fn apply_file(&mut self, f: FileConfig) {
        set(&mut self.listen, f.listen);
        if let Some(u) = f.upstream {
            set(&mut self.upstream.host, u.host);
            set(&mut self.upstream.port, u.port);
            set(&mut self.upstream.connect_timeout, u.connect_timeout);
            if let Some(t) = u.tls {
                set(&mut self.upstream.tls_mode, t.mode);
                self.upstream.ca_file = t.ca_file.or(self.upstream.ca_file.take());
            }
        }
        if let Some(t) = f.tls {
            self.set_client_tls(t.cert_file, t.key_file);
        }
        if let Some(m) = f.metrics {
            if let Some(listen) = m.listen {
                self.metrics_listen = metrics_listen(listen);
            }
        }
        if let Some(l) = f.limits {
            set(&mut self.max_client_connections, l.max_client_connections);
            set(&mut self.startup_timeout, l.startup_timeout);
            set(&mut self.shutdown_timeout, l.shutdown_timeout);
            set(&mut self.worker_threads, l.worker_threads);
            if let Some(idle) = l.idle_timeout {
                self.idle_timeout = (!idle.is_zero()).then_some(idle);
            }
        }
        if let Some(l) = f.log {
            set(&mut self.log_format, l.format);
            set(&mut self.log_level, l.level);
        }
    }

    fn apply_args(&mut self, a: &ServeArgs) {
        set(&mut self.listen, a.listen.clone());
        set(&mut self.upstream.host, a.upstream_host.clone());
        set(&mut self.upstream.port, a.upstream_port);
        set(&mut self.upstream.tls_mode, a.upstream_tls_mode);
        if a.upstream_tls_ca_file.is_some() {
            self.upstream.ca_file = a.upstream_tls_ca_file.clone();
        }
        if a.tls_cert_file.is_some() || a.tls_key_file.is_some() {
            self.set_client_tls(a.tls_cert_file.clone(), a.tls_key_file.clone());
        }
        if let Some(listen) = &a.metrics_listen {
            self.metrics_listen = metrics_listen(listen.clone());
        }
        set(&mut self.max_client_connections, a.max_client_connections);
        set(&mut self.startup_timeout, a.startup_timeout);
        set(&mut self.shutdown_timeout, a.shutdown_timeout);
        set(&mut self.worker_threads, a.worker_threads);
        if let Some(idle) = a.idle_timeout {
            self.idle_timeout = (!idle.is_zero()).then_some(idle);
        }
        set(&mut self.log_format, a.log_format);
        set(&mut self.log_level, a.log_level.clone());
    }

    /// Client TLS needs both files; a half-set pair is kept so `validate` can name it.
    fn set_client_tls(&mut self, cert: Option<PathBuf>, key: Option<PathBuf>) {
        let old = self.client_tls.take();
        let cert = cert.or_else(|| old.as_ref().map(|o| o.cert_file.clone()));
        let key = key.or_else(|| old.as_ref().map(|o| o.key_file.clone()));
        self.client_tls = Some(ClientTlsConfig {
            cert_file: cert.unwrap_or_default(),
            key_file: key.unwrap_or_default(),
        });
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(tls) = &self.client_tls {
            if tls.cert_file.as_os_str().is_empty() {
                return Err(ConfigError(
                    "tls.cert_file: missing (tls.key_file is set; client TLS needs both)".into(),
                ));
            }
            if tls.key_file.as_os_str().is_empty() {
                return Err(ConfigError(
                    "tls.key_file: missing (tls.cert_file is set; client TLS needs both)".into(),
                ));
            }
        }
        if self.max_client_connections == 0 {
            return Err(ConfigError(
                "limits.max_client_connections: must be at least 1".into(),
            ));
        }
        if self.worker_threads == 0 {
            return Err(ConfigError(
                "limits.worker_threads: must be at least 1".into(),
            ));
        }
        if self.startup_timeout.is_zero() {
            return Err(ConfigError(
                "limits.startup_timeout: must be greater than 0".into(),
            ));
        }
        if self.upstream.host.is_empty() {
            return Err(ConfigError("upstream.host: must not be empty".into()));
        }
        if self.upstream.port == 0 {
            return Err(ConfigError("upstream.port: must not be 0".into()));
        }
        if self.upstream.host.starts_with('/')
            && matches!(
                self.upstream.tls_mode,
                UpstreamTlsMode::Require | UpstreamTlsMode::VerifyFull
            )
        {
            return Err(ConfigError(format!(
                "upstream.tls.mode: {} needs a TCP host, but upstream.host {:?} is a Unix-domain \
                 socket directory, where TLS is not used; set it to prefer or disable",
                self.upstream.tls_mode.name(),
                self.upstream.host
            )));
        }
        if self.upstream.ca_file.is_some() && self.upstream.tls_mode == UpstreamTlsMode::Disable {
            return Err(ConfigError(
                "upstream.tls.ca_file: set, but upstream.tls.mode is disable".into(),
            ));
        }
        Ok(())
    }
}

/// One thread fewer than the CPUs, at least one: on small hosts pgveil then
/// runs single-threaded, which measured ~15% less CPU per round trip than
/// tokio's work-stealing scheduler on 2 cores (docs/benchmarks.md).
fn default_worker_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get().saturating_sub(1))
        .unwrap_or(1)
        .max(1)
}

/// With a policy, one thread per CPU: transforming rows is CPU work that a single thread does
/// for every session in turn (read-transform ran at 0.76–0.79× of pass-through on one thread
/// against 0.88–0.90× on two, on 2 CPUs; docs/benchmarks.md).
fn policy_worker_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Enforcement keys gathered from the file, before flags and environment override them.
#[derive(Default)]
struct PendingEnforcement {
    policy: Option<PathBuf>,
    keyring: Option<PathBuf>,
    user: Option<String>,
    password: Option<String>,
    refresh: Option<Duration>,
    cache: Option<usize>,
}

impl PendingEnforcement {
    fn from_file(f: &FileConfig) -> Self {
        let c = f.catalog.as_ref();
        PendingEnforcement {
            policy: f.policy.clone(),
            keyring: f.keyring.clone(),
            user: c.and_then(|c| c.user.clone()),
            password: c.and_then(|c| c.password.clone()),
            refresh: c.and_then(|c| c.refresh_interval),
            cache: c.and_then(|c| c.parse_cache_size),
        }
    }

    fn resolve(self, a: &ServeArgs) -> Result<Option<EnforcementConfig>, ConfigError> {
        let policy = a.policy.clone().or(self.policy);
        let keyring = a.keyring.clone().or(self.keyring);
        let Some(policy) = policy else {
            if keyring.is_some() {
                return Err(ConfigError(
                    "keyring: set, but no policy is; give --policy (or policy:) to enforce one"
                        .into(),
                ));
            }
            return Ok(None);
        };
        let keyring = keyring.ok_or_else(|| {
            ConfigError(
                "keyring: required with a policy (create one with `pgveil keys generate --out FILE`)"
                    .into(),
            )
        })?;
        let catalog_user = a.catalog_user.clone().or(self.user).ok_or_else(|| {
            ConfigError(
                "catalog.user: required with a policy: the login pgveil reads the catalog with \
                 (it needs only CONNECT; see docs/operations.md)"
                    .into(),
            )
        })?;
        let password = std::env::var("PGVEIL_CATALOG_PASSWORD")
            .ok()
            .or(self.password);
        let refresh = self.refresh.unwrap_or(EnforcementConfig::DEFAULT_REFRESH);
        if refresh.is_zero() {
            return Err(ConfigError(
                "catalog.refresh_interval: must be greater than 0".into(),
            ));
        }
        let cache = self.cache.unwrap_or(EnforcementConfig::DEFAULT_PARSE_CACHE);
        if cache == 0 {
            return Err(ConfigError(
                "catalog.parse_cache_size: must be at least 1".into(),
            ));
        }
        Ok(Some(EnforcementConfig {
            policy,
            keyring,
            catalog_user,
            catalog_password: password,
            catalog_refresh: refresh,
            parse_cache_size: cache,
        }))
    }
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

fn metrics_listen(value: String) -> Option<String> {
    (!matches!(value.as_str(), "off" | "" | "none")).then_some(value)
}

mod args;
pub mod audit;
mod file;

pub use args::ServeArgs;
pub use file::parse_duration;
use file::{load_file, resolve_audit, FileConfig};

#[cfg(test)]
mod tests;
