//! `pgveil serve` settings: a YAML file, `PGVEIL_*` environment variables and
//! command-line flags. Flags beat environment variables, which beat the file,
//! which beats the defaults.
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, ValueEnum};
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

/// Flags of `pgveil serve`. Each one can also come from its `PGVEIL_*` variable.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// YAML configuration file.
    #[arg(short, long, env = "PGVEIL_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address clients connect to [default: 127.0.0.1:6432].
    #[arg(long, env = "PGVEIL_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    /// Upstream PostgreSQL host, or the directory of its Unix-domain socket
    /// when it starts with `/` [default: 127.0.0.1].
    #[arg(long, env = "PGVEIL_UPSTREAM_HOST", value_name = "HOST")]
    pub upstream_host: Option<String>,
    /// Upstream PostgreSQL port [default: 5432].
    #[arg(long, env = "PGVEIL_UPSTREAM_PORT", value_name = "PORT")]
    pub upstream_port: Option<u16>,
    /// TLS towards the upstream server [default: prefer].
    #[arg(long, env = "PGVEIL_UPSTREAM_TLS_MODE", value_name = "MODE")]
    pub upstream_tls_mode: Option<UpstreamTlsMode>,
    /// CA certificate (PEM) that signs the upstream server's certificate.
    #[arg(long, env = "PGVEIL_UPSTREAM_TLS_CA_FILE", value_name = "FILE")]
    pub upstream_tls_ca_file: Option<PathBuf>,
    /// Certificate chain (PEM) pgveil presents to clients; enables client TLS.
    #[arg(long, env = "PGVEIL_TLS_CERT_FILE", value_name = "FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// Private key (PEM) for --tls-cert-file.
    #[arg(long, env = "PGVEIL_TLS_KEY_FILE", value_name = "FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// Address of the HTTP endpoint for /metrics, /healthz and /readyz; "off" disables it [default: 127.0.0.1:9187].
    #[arg(long, env = "PGVEIL_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    /// Maximum concurrent client connections [default: 1000].
    #[arg(long, env = "PGVEIL_MAX_CLIENT_CONNECTIONS", value_name = "N")]
    pub max_client_connections: Option<usize>,
    /// Time a client has to finish TLS, startup and authentication [default: 15s].
    #[arg(long, env = "PGVEIL_STARTUP_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    pub startup_timeout: Option<Duration>,
    /// Close sessions idle for this long; 0 disables [default: 0].
    #[arg(long, env = "PGVEIL_IDLE_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    pub idle_timeout: Option<Duration>,
    /// On SIGTERM/SIGINT, how long sessions may drain before they are closed [default: 30s].
    #[arg(long, env = "PGVEIL_SHUTDOWN_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    pub shutdown_timeout: Option<Duration>,
    /// Threads that run sessions; 1 runs everything on one thread [default: CPUs - 1, at least 1].
    #[arg(long, env = "PGVEIL_WORKER_THREADS", value_name = "N")]
    pub worker_threads: Option<usize>,
    /// Log format [default: text].
    #[arg(long, env = "PGVEIL_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Policy file to enforce; without one pgveil is a pure pass-through.
    #[arg(long, env = "PGVEIL_POLICY", value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Keyring file (required with --policy).
    #[arg(long, env = "PGVEIL_KEYRING", value_name = "FILE")]
    pub keyring: Option<PathBuf>,
    /// Login pgveil reads the catalog with [default: the login named in the config file].
    #[arg(long, env = "PGVEIL_CATALOG_USER", value_name = "ROLE")]
    pub catalog_user: Option<String>,
    /// Log filter, e.g. "info" or "pgveil=debug" [default: info].
    #[arg(long, env = "PGVEIL_LOG_LEVEL", value_name = "FILTER")]
    pub log_level: Option<String>,
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
    pub audit: Option<crate::audit::AuditConfig>,
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

// ---- the YAML file -------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    upstream: Option<FileUpstream>,
    tls: Option<FileClientTls>,
    metrics: Option<FileMetrics>,
    limits: Option<FileLimits>,
    log: Option<FileLog>,
    policy: Option<PathBuf>,
    keyring: Option<PathBuf>,
    catalog: Option<FileCatalog>,
    audit: Option<FileAudit>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAudit {
    file: Option<PathBuf>,
    fsync: Option<crate::audit::FsyncPolicy>,
    queue_capacity: Option<usize>,
    rotate: Option<FileAuditRotate>,
    checkpoint: Option<FileAuditCheckpoint>,
    syslog: Option<FileAuditSyslog>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAuditSyslog {
    address: Option<String>,
    format: Option<crate::audit::syslog::SyslogFormat>,
    facility: Option<String>,
    queue_bytes: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAuditRotate {
    max_bytes: Option<u64>,
    #[serde(default, deserialize_with = "de_duration")]
    max_age: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAuditCheckpoint {
    every: Option<u64>,
    #[serde(default, deserialize_with = "de_duration")]
    interval: Option<Duration>,
}

/// The `audit:` section, validated; `None` without `audit.file`.
fn resolve_audit(f: Option<FileAudit>) -> Result<Option<crate::audit::AuditConfig>, ConfigError> {
    let Some(f) = f else { return Ok(None) };
    let Some(file) = f.file else {
        return Err(ConfigError(
            "audit.file: required when an audit section is given".into(),
        ));
    };
    let mut c = crate::audit::AuditConfig::new(file);
    set(&mut c.fsync, f.fsync);
    set(&mut c.queue_capacity, f.queue_capacity);
    if let Some(r) = f.rotate {
        set(&mut c.max_bytes, r.max_bytes);
        set(&mut c.max_age, r.max_age);
    }
    if let Some(k) = f.checkpoint {
        set(&mut c.checkpoint_every, k.every);
        set(&mut c.checkpoint_interval, k.interval);
    }
    if let Some(s) = f.syslog {
        c.syslog = Some(resolve_audit_syslog(s)?);
    }
    if c.queue_capacity == 0 {
        return Err(ConfigError(
            "audit.queue_capacity: must be at least 1".into(),
        ));
    }
    if c.max_bytes < 4096 {
        return Err(ConfigError(
            "audit.rotate.max_bytes: must be at least 4096".into(),
        ));
    }
    if c.max_age.is_zero() {
        return Err(ConfigError(
            "audit.rotate.max_age: must be greater than 0".into(),
        ));
    }
    if c.checkpoint_every == 0 {
        return Err(ConfigError(
            "audit.checkpoint.every: must be at least 1".into(),
        ));
    }
    if c.checkpoint_interval.is_zero() {
        return Err(ConfigError(
            "audit.checkpoint.interval: must be greater than 0".into(),
        ));
    }
    Ok(Some(c))
}

/// `audit.syslog:`, validated.
fn resolve_audit_syslog(
    f: FileAuditSyslog,
) -> Result<crate::audit::syslog::SyslogConfig, ConfigError> {
    use crate::audit::syslog::{Facility, SyslogAddress, SyslogConfig};
    let address = f.address.ok_or_else(|| {
        ConfigError("audit.syslog.address: required (udp://host:port or tcp://host:port)".into())
    })?;
    let address = SyslogAddress::parse(&address)
        .map_err(|e| ConfigError(format!("audit.syslog.address: {e}")))?;
    let facility = match f.facility {
        Some(name) => Facility::parse(&name)
            .map_err(|e| ConfigError(format!("audit.syslog.facility: {e}")))?,
        None => Facility::LOCAL0,
    };
    let queue_bytes = f.queue_bytes.unwrap_or(SyslogConfig::DEFAULT_QUEUE_BYTES);
    if queue_bytes < SyslogConfig::MIN_QUEUE_BYTES {
        return Err(ConfigError(format!(
            "audit.syslog.queue_bytes: must be at least {}",
            SyslogConfig::MIN_QUEUE_BYTES
        )));
    }
    Ok(SyslogConfig {
        address,
        format: f.format.unwrap_or_default(),
        facility,
        queue_bytes,
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCatalog {
    user: Option<String>,
    password: Option<String>,
    #[serde(default, deserialize_with = "de_duration")]
    refresh_interval: Option<Duration>,
    parse_cache_size: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileUpstream {
    host: Option<String>,
    port: Option<u16>,
    tls: Option<FileUpstreamTls>,
    #[serde(default, deserialize_with = "de_duration")]
    connect_timeout: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileUpstreamTls {
    mode: Option<UpstreamTlsMode>,
    ca_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileClientTls {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileMetrics {
    listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLimits {
    max_client_connections: Option<usize>,
    #[serde(default, deserialize_with = "de_duration")]
    startup_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "de_duration")]
    idle_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "de_duration")]
    shutdown_timeout: Option<Duration>,
    worker_threads: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLog {
    format: Option<LogFormat>,
    level: Option<String>,
}

fn de_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    parse_duration(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// Parse "15s", "500ms", "2m", or "0".
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("invalid duration {text:?} ({e}); use e.g. 15s, 500ms or 2m"))
}

fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("{}: cannot read config file: {e}", path.display())))?;
    parse_file(&path.display().to_string(), &text)
}

fn parse_file(name: &str, text: &str) -> Result<FileConfig, ConfigError> {
    if text.trim().is_empty() {
        return Ok(FileConfig::default());
    }
    let mut key_path = String::new();
    let result = serde_saphyr::with_deserializer_from_str(text, |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            key_path = e.path().to_string();
            e.into_inner()
        })
    });
    result.map_err(|e| {
        let at = e
            .location()
            .map(|l| format!("{name}:{}:{}", l.line(), l.column()))
            .unwrap_or_else(|| name.to_string());
        let message = first_line(&e.to_string());
        if key_path.is_empty() || key_path == "." {
            ConfigError(format!("{at}: {message}"))
        } else {
            ConfigError(format!("{at}: {key_path}: {message}"))
        }
    })
}

/// The first line of a YAML error, without the "error: line N column M:" prefix
/// (pgveil puts the position in front itself).
fn first_line(message: &str) -> String {
    let line = message.lines().next().unwrap_or("").trim();
    let line = line.strip_prefix("error: ").unwrap_or(line);
    match line
        .strip_prefix("line ")
        .and_then(|rest| rest.split_once(": "))
    {
        Some((_, tail)) => tail.to_string(),
        None => line.to_string(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_values_and_flag_override() {
        let file = parse_file(
            "c.yaml",
            "listen: 0.0.0.0:7000\nupstream:\n  host: db\n  port: 5433\n  tls: { mode: verify-full, ca_file: /ca.pem }\nlimits:\n  idle_timeout: 5m\n",
        )
        .unwrap();
        let mut c = Config::default();
        c.apply_file(file);
        assert_eq!(c.listen, "0.0.0.0:7000");
        assert_eq!(c.upstream.tls_mode, UpstreamTlsMode::VerifyFull);
        assert_eq!(c.idle_timeout, Some(Duration::from_secs(300)));
        let args = ServeArgs {
            upstream_port: Some(6000),
            ..Default::default()
        };
        c.apply_args(&args);
        assert_eq!(c.upstream.port, 6000);
        assert_eq!(c.upstream.host, "db");
        assert!(c.validate().is_ok());
    }

    #[test]
    fn unknown_key_is_named_with_position() {
        let err = parse_file("c.yaml", "upstream:\n  hots: db\n").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("c.yaml:2:"), "{text}");
        assert!(text.contains("hots"), "{text}");
        assert!(!text.contains('\n'), "{text}");
    }

    #[test]
    fn bad_enum_value_names_the_key() {
        let err = parse_file("c.yaml", "upstream:\n  tls:\n    mode: requier\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("upstream.tls.mode"), "{text}");
        assert!(text.contains("c.yaml:3:"), "{text}");
        assert!(!text.contains("error: line"), "{text}");
    }

    #[test]
    fn bad_duration_names_the_key() {
        let err = parse_file("c.yaml", "limits:\n  startup_timeout: soon\n").unwrap_err();
        assert!(err.to_string().contains("limits.startup_timeout"), "{err}");
    }

    #[test]
    fn half_configured_tls_is_rejected() {
        let mut c = Config::default();
        c.set_client_tls(Some("/cert.pem".into()), None);
        let err = c.validate().unwrap_err().to_string();
        assert!(err.starts_with("tls.key_file"), "{err}");
    }

    #[test]
    fn socket_directory_upstream_refuses_required_tls() {
        let mut c = Config::default();
        c.upstream.host = "/var/run/postgresql".into();
        assert!(c.validate().is_ok(), "prefer (the default) is fine");
        c.upstream.tls_mode = UpstreamTlsMode::Disable;
        assert!(c.validate().is_ok());
        for mode in [UpstreamTlsMode::Require, UpstreamTlsMode::VerifyFull] {
            c.upstream.tls_mode = mode;
            let err = c.validate().unwrap_err().to_string();
            assert!(err.starts_with("upstream.tls.mode:"), "{err}");
            assert!(err.contains(mode.name()), "{err}");
            assert!(err.contains("Unix-domain socket"), "{err}");
        }
    }
    #[test]
    fn audit_section() {
        let f = parse_file(
            "c.yaml",
            "audit:\n  file: /var/log/pgveil/audit.jsonl\n  fsync: always\n  queue_capacity: 50\n  rotate: { max_bytes: 1048576, max_age: 1h }\n  checkpoint: { every: 10, interval: 5s }\n",
        )
        .unwrap();
        let a = resolve_audit(f.audit).unwrap().unwrap();
        assert_eq!(a.fsync, crate::audit::FsyncPolicy::Always);
        assert_eq!((a.queue_capacity, a.max_bytes), (50, 1_048_576));
        assert_eq!(a.max_age, Duration::from_secs(3600));
        assert_eq!(
            (a.checkpoint_every, a.checkpoint_interval),
            (10, Duration::from_secs(5))
        );
        let f = parse_file("c.yaml", "audit:\n  fsync: never\n").unwrap();
        let e = resolve_audit(f.audit).unwrap_err().to_string();
        assert!(e.starts_with("audit.file: required"), "{e}");
        let e = parse_file("c.yaml", "audit:\n  file: a\n  fsync: sometimes\n").unwrap_err();
        assert!(e.to_string().contains("audit.fsync"), "{e}");
        assert!(resolve_audit(None).unwrap().is_none());
    }

    #[test]
    fn audit_syslog_section() {
        use crate::audit::syslog::{Facility, SyslogAddress, SyslogFormat};
        let f = parse_file(
            "c.yaml",
            "audit:\n  file: a.jsonl\n  syslog: { address: 'tcp://siem:601', format: json, facility: auth }\n",
        )
        .unwrap();
        let s = resolve_audit(f.audit).unwrap().unwrap().syslog.unwrap();
        assert_eq!(s.address, SyslogAddress::Tcp("siem:601".into()));
        assert_eq!(s.format, SyslogFormat::Json);
        assert_eq!(s.facility.code(), 4);
        let f = parse_file(
            "c.yaml",
            "audit:\n  file: a.jsonl\n  syslog: { address: 'udp://127.0.0.1:514' }\n",
        )
        .unwrap();
        let s = resolve_audit(f.audit).unwrap().unwrap().syslog.unwrap();
        assert_eq!(
            (s.format, s.facility),
            (SyslogFormat::Cef, Facility::LOCAL0),
            "CEF to local0 by default"
        );
        for (yaml, want) in [
            ("syslog: { format: cef }", "audit.syslog.address: required"),
            (
                "syslog: { address: '10.0.0.1:514' }",
                "audit.syslog.address: `10.0.0.1:514`: expected udp://",
            ),
            (
                "syslog: { address: 'udp://h:514', facility: local9 }",
                "audit.syslog.facility: unknown facility `local9`",
            ),
        ] {
            let f = parse_file("c.yaml", &format!("audit:\n  file: a.jsonl\n  {yaml}\n")).unwrap();
            let e = resolve_audit(f.audit).unwrap_err().to_string();
            assert!(e.starts_with(want), "{yaml}: {e}");
        }
        let e = parse_file(
            "c.yaml",
            "audit:\n  file: a\n  syslog: { address: 'udp://h:1', format: leef }\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("audit.syslog.format"), "{e}");
    }
}
