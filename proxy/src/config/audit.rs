//! Settings of the audit log (`audit:` in the config file) and of its syslog copy
//! (`audit.syslog:`).
use std::path::PathBuf;
use std::time::Duration;

/// When the writer calls fsync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// After every batch of queued records (group commit).
    Always,
    /// At least once a second while records are written: at most ~1 s of records is lost on
    /// power failure.
    #[default]
    Interval,
    /// Never (the OS decides).
    Never,
}

/// Settings of the audit log (`audit:` in the config file).
#[derive(Debug, Clone, PartialEq)]
pub struct AuditConfig {
    /// The active file; rotated files get a timestamp suffix next to it.
    pub file: PathBuf,
    pub fsync: FsyncPolicy,
    pub queue_capacity: usize,
    pub max_bytes: u64,
    pub max_age: Duration,
    pub checkpoint_every: u64,
    pub checkpoint_interval: Duration,
    /// A copy of each record for a SIEM (`audit.syslog`).
    pub syslog: Option<SyslogConfig>,
    /// Tests only: a pause before each record is written (a slow disk).
    #[doc(hidden)]
    pub write_delay: Option<Duration>,
}

impl AuditConfig {
    pub const DEFAULT_QUEUE: usize = 10_000;
    pub const DEFAULT_MAX_BYTES: u64 = 100 * 1024 * 1024;
    pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
    pub const DEFAULT_CHECKPOINT_EVERY: u64 = 1000;
    pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(60);

    /// `file` with the defaults for the rest.
    pub fn new(file: impl Into<PathBuf>) -> Self {
        AuditConfig {
            file: file.into(),
            fsync: FsyncPolicy::Interval,
            queue_capacity: Self::DEFAULT_QUEUE,
            max_bytes: Self::DEFAULT_MAX_BYTES,
            max_age: Self::DEFAULT_MAX_AGE,
            checkpoint_every: Self::DEFAULT_CHECKPOINT_EVERY,
            checkpoint_interval: Self::DEFAULT_CHECKPOINT_INTERVAL,
            syslog: None,
            write_delay: None,
        }
    }
}

/// One statement that touched classified columns. `sql` is fingerprinted on the caller's task
/// and dropped: only the fingerprint reaches the queue.
/// `audit.syslog:` in the config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogConfig {
    pub address: SyslogAddress,
    pub format: SyslogFormat,
    pub facility: Facility,
    /// Bytes of written lines the forwarder may hold; beyond this, batches are not forwarded.
    pub queue_bytes: usize,
    /// UDP only: the largest message sent in one datagram. A record whose message is larger is
    /// sent shortened, with a marker (see `audit::syslog::message`), never dropped.
    pub max_datagram: usize,
}

impl SyslogConfig {
    pub const DEFAULT_QUEUE_BYTES: usize = 16 * 1024 * 1024;
    pub const MIN_QUEUE_BYTES: usize = 4096;
    /// RFC 5424 (6.1) and RFC 5426 (3.2): every receiver SHOULD accept messages of 2048 octets.
    /// Larger datagrams are fragmented on Ethernet (above 1472 bytes already) and cut by
    /// receivers with a smaller limit, so a larger value suits only a receiver known to take it
    /// over a path known not to drop fragments.
    pub const DEFAULT_MAX_DATAGRAM: usize = 2048;
    /// Room for every field a shortened message keeps (header, seq, tag, log id, marker) with
    /// a 255-byte host name.
    pub const MIN_MAX_DATAGRAM: usize = 1024;
    /// The largest UDP payload over IPv4.
    pub const MAX_MAX_DATAGRAM: usize = 65_507;

    /// `address` with the defaults: CEF, facility local0, a 16 MiB queue, 2048-byte datagrams.
    pub fn new(address: SyslogAddress) -> Self {
        SyslogConfig {
            address,
            format: SyslogFormat::Cef,
            facility: Facility::LOCAL0,
            queue_bytes: Self::DEFAULT_QUEUE_BYTES,
            max_datagram: Self::DEFAULT_MAX_DATAGRAM,
        }
    }
}

/// Where messages go: `udp://host:port` or `tcp://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyslogAddress {
    Udp(String),
    Tcp(String),
}

impl SyslogAddress {
    pub fn parse(s: &str) -> Result<Self, String> {
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| format!("`{s}`: expected udp://host:port or tcp://host:port"))?;
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| format!("`{s}`: a port is required (514 is usual for UDP)"))?;
        if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!("`{s}`: expected host:port with a port of 1-65535"));
        }
        match scheme {
            "udp" => Ok(SyslogAddress::Udp(rest.to_string())),
            "tcp" => Ok(SyslogAddress::Tcp(rest.to_string())),
            other => Err(format!(
                "`{s}`: unknown scheme `{other}` (use udp:// or tcp://; for TLS, send to a local \
                 rsyslog or syslog-ng that forwards over TLS)"
            )),
        }
    }
}

impl std::fmt::Display for SyslogAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SyslogAddress::Udp(a) => write!(f, "udp://{a}"),
            SyslogAddress::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

/// The message text: CEF (the default), or the audit line itself, which stays verifiable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyslogFormat {
    #[default]
    Cef,
    Json,
}

/// A syslog facility (RFC 5424, 6.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facility(u8);

impl Facility {
    pub const LOCAL0: Facility = Facility(16);
    const NAMES: [&'static str; 24] = [
        "kern",
        "user",
        "mail",
        "daemon",
        "auth",
        "syslog",
        "lpr",
        "news",
        "uucp",
        "cron",
        "authpriv",
        "ftp",
        "ntp",
        "security",
        "console",
        "solaris-cron",
        "local0",
        "local1",
        "local2",
        "local3",
        "local4",
        "local5",
        "local6",
        "local7",
    ];

    pub fn parse(s: &str) -> Result<Self, String> {
        Self::NAMES
            .iter()
            .position(|n| *n == s)
            .map(|i| Facility(i as u8))
            .ok_or_else(|| {
                format!(
                    "unknown facility `{s}` (one of {}; local0 is the default)",
                    Self::NAMES.join(", ")
                )
            })
    }

    pub fn code(self) -> u8 {
        self.0
    }
}
