//! `pgveil serve`'s command-line flags and their environment variables.
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{parse_duration, LogFormat, UpstreamTlsMode};

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
