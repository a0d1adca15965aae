//! The YAML configuration file, read with every problem named by its key.
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{set, ConfigError, LogFormat, UpstreamTlsMode};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    pub(super) listen: Option<String>,
    pub(super) upstream: Option<FileUpstream>,
    pub(super) tls: Option<FileClientTls>,
    pub(super) metrics: Option<FileMetrics>,
    pub(super) limits: Option<FileLimits>,
    pub(super) log: Option<FileLog>,
    pub(super) policy: Option<PathBuf>,
    pub(super) keyring: Option<PathBuf>,
    pub(super) catalog: Option<FileCatalog>,
    pub(super) audit: Option<FileAudit>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileAudit {
    pub(super) file: Option<PathBuf>,
    pub(super) fsync: Option<super::audit::FsyncPolicy>,
    pub(super) queue_capacity: Option<usize>,
    pub(super) rotate: Option<FileAuditRotate>,
    pub(super) checkpoint: Option<FileAuditCheckpoint>,
    pub(super) syslog: Option<FileAuditSyslog>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileAuditSyslog {
    pub(super) address: Option<String>,
    pub(super) format: Option<super::audit::SyslogFormat>,
    pub(super) facility: Option<String>,
    pub(super) queue_bytes: Option<usize>,
    pub(super) max_datagram: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileAuditRotate {
    pub(super) max_bytes: Option<u64>,
    #[serde(default, deserialize_with = "de_duration")]
    pub(super) max_age: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileAuditCheckpoint {
    pub(super) every: Option<u64>,
    #[serde(default, deserialize_with = "de_duration")]
    pub(super) interval: Option<Duration>,
}

/// The `audit:` section, validated; `None` without `audit.file`.
pub(super) fn resolve_audit(
    f: Option<FileAudit>,
) -> Result<Option<super::audit::AuditConfig>, ConfigError> {
    let Some(f) = f else { return Ok(None) };
    let Some(file) = f.file else {
        return Err(ConfigError(
            "audit.file: required when an audit section is given".into(),
        ));
    };
    let mut c = super::audit::AuditConfig::new(file);
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
pub(super) fn resolve_audit_syslog(
    f: FileAuditSyslog,
) -> Result<super::audit::SyslogConfig, ConfigError> {
    use super::audit::{Facility, SyslogAddress, SyslogConfig};
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
    let max_datagram = f.max_datagram.unwrap_or(SyslogConfig::DEFAULT_MAX_DATAGRAM);
    if !(SyslogConfig::MIN_MAX_DATAGRAM..=SyslogConfig::MAX_MAX_DATAGRAM).contains(&max_datagram) {
        return Err(ConfigError(format!(
            "audit.syslog.max_datagram: must be between {} and {} (the largest UDP payload)",
            SyslogConfig::MIN_MAX_DATAGRAM,
            SyslogConfig::MAX_MAX_DATAGRAM
        )));
    }
    Ok(SyslogConfig {
        address,
        format: f.format.unwrap_or_default(),
        facility,
        queue_bytes,
        max_datagram,
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileCatalog {
    pub(super) user: Option<String>,
    pub(super) password: Option<String>,
    #[serde(default, deserialize_with = "de_duration")]
    pub(super) refresh_interval: Option<Duration>,
    pub(super) parse_cache_size: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileUpstream {
    pub(super) host: Option<String>,
    pub(super) port: Option<u16>,
    pub(super) tls: Option<FileUpstreamTls>,
    #[serde(default, deserialize_with = "de_duration")]
    pub(super) connect_timeout: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileUpstreamTls {
    pub(super) mode: Option<UpstreamTlsMode>,
    pub(super) ca_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileClientTls {
    pub(super) cert_file: Option<PathBuf>,
    pub(super) key_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileMetrics {
    pub(super) listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileLimits {
    pub(super) max_client_connections: Option<usize>,
    #[serde(default, deserialize_with = "de_duration")]
    pub(super) startup_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "de_duration")]
    pub(super) idle_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "de_duration")]
    pub(super) shutdown_timeout: Option<Duration>,
    pub(super) worker_threads: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileLog {
    pub(super) format: Option<LogFormat>,
    pub(super) level: Option<String>,
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

pub(super) fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("{}: cannot read config file: {e}", path.display())))?;
    parse_file(&path.display().to_string(), &text)
}

pub(super) fn parse_file(name: &str, text: &str) -> Result<FileConfig, ConfigError> {
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
