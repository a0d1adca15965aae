//! A copy of the audit trail for a SIEM, over syslog (RFC 5424; UDP per RFC 5426, TCP with
//! octet-counting framing per RFC 6587), as CEF or as the JSON lines themselves.
//!
//! The file stays the record of truth: the writer hands each batch it has written to the
//! forwarder without waiting ([`Forwarder::offer`]), so a slow or absent SIEM never slows a
//! statement down. The forwarder's queue is bounded (`queue_bytes`, 16 MiB of lines by default);
//! when it is full, or a
//! message cannot be sent, the records are not forwarded and `pgveil_audit_forward_dropped_total`
//! counts them. Size alone never stops a record: a batch larger than the whole queue is taken
//! when the queue is empty, TCP frames any length, and over UDP a message larger than
//! `max_datagram` is sent shortened and marked ([`message`], `pgveil_audit_forward_truncated_total`). It gathers for 10 ms before each send, so a busy log costs one wake-up (and,
//! over TCP, one write) per gathering. Over TCP the forwarder holds the batch it could not send and reconnects with
//! backoff, so a receiver restart loses at most what the kernel had accepted for the dead
//! connection (and may repeat part of that batch). Each message carries the record's seq, so a
//! SIEM can see gaps and repeats, and `pgveil audit verify` on the files proves what was
//! recorded.
mod fit;
pub mod message;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prometheus::IntCounter;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;

use self::message::{render, Origin};
use super::AuditError;
use crate::metrics::audit::AuditMetrics;

/// Batches waiting for the forwarder (a second bound, for many tiny batches).
const QUEUE_BATCHES: usize = 8192;
/// The forwarder gathers what was written during this long before it renders and sends, so a
/// busy log costs one wake-up and (over TCP) one write per gathering, not per record.
const GATHER: Duration = Duration::from_millis(10);

pub use crate::config::audit::{Facility, SyslogAddress, SyslogConfig, SyslogFormat};

/// The writer's end: offers each written batch, never waits.
#[derive(Clone)]
pub struct Forwarder {
    tx: mpsc::Sender<Bytes>,
    shared: Arc<Shared>,
}

/// What the writer's end and the forwarder task share.
struct Shared {
    /// Bytes queued, and the bound ([`SyslogConfig::queue_bytes`]).
    queued: AtomicUsize,
    limit: usize,
    /// Set while records are being dropped, so the warning is logged once per episode.
    dropping: AtomicBool,
    /// `pgveil_audit_forwarded_total`, `pgveil_audit_forward_dropped_total`,
    /// `pgveil_audit_forward_truncated_total`.
    forwarded: IntCounter,
    dropped: IntCounter,
    truncated: IntCounter,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder").finish_non_exhaustive()
    }
}

impl Forwarder {
    /// Hands over whole lines just written to the file. When the queue is full they are not
    /// forwarded, and counted. A batch larger than the whole queue is taken when the queue is
    /// empty: otherwise one padded statement (a fingerprint of megabytes) would never be
    /// forwarded, whatever the receiver's speed.
    pub fn offer(&self, lines: &[u8]) {
        if lines.is_empty() {
            return;
        }
        // Counted before it is sent: the forwarder subtracts as soon as it receives.
        let q = &self.shared;
        let before = q.queued.fetch_add(lines.len(), Ordering::Relaxed);
        if (before == 0 || before + lines.len() <= q.limit)
            && self.tx.try_send(Bytes::copy_from_slice(lines)).is_ok()
        {
            return;
        }
        q.queued.fetch_sub(lines.len(), Ordering::Relaxed);
        let n = lines.iter().filter(|b| **b == b'\n').count() as u64;
        q.dropped.inc_by(n);
        if !q.dropping.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "audit syslog: the forwarder is behind (receiver slow or down); records are not \
                 forwarded until it catches up (the audit file keeps them all; see \
                 pgveil_audit_forward_dropped_total)"
            );
        }
    }
}

/// Resolves the address (UDP: once, here; TCP: at each connect) and starts the forwarder. Does
/// not wait for a TCP receiver: the first connection is made in the background. The task ends
/// when every [`Forwarder`] is dropped and what was queued is sent.
pub async fn spawn(
    cfg: &SyslogConfig,
    metrics: &AuditMetrics,
) -> Result<(Forwarder, tokio::task::JoinHandle<()>), AuditError> {
    let origin = Origin {
        facility: cfg.facility,
        hostname: hostname(),
        pid: std::process::id(),
    };
    let transport = match &cfg.address {
        SyslogAddress::Udp(a) => {
            let target = resolve(a).await.map_err(|e| {
                AuditError::Config(format!("audit.syslog.address: {}: {e}", cfg.address))
            })?;
            let bind: SocketAddr = if target.is_ipv4() {
                ([0, 0, 0, 0], 0).into()
            } else {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            };
            let socket = UdpSocket::bind(bind)
                .await
                .map_err(|e| AuditError::Config(format!("audit.syslog: udp socket: {e}")))?;
            Transport::Udp {
                socket,
                target,
                max_datagram: cfg.max_datagram,
            }
        }
        SyslogAddress::Tcp(a) => Transport::Tcp {
            address: a.clone(),
            stream: None,
        },
    };
    let (tx, rx) = mpsc::channel(QUEUE_BATCHES);
    let shared = Arc::new(Shared {
        queued: AtomicUsize::new(0),
        limit: cfg.queue_bytes,
        dropping: AtomicBool::new(false),
        forwarded: metrics.forwarded.clone(),
        dropped: metrics.forward_dropped.clone(),
        truncated: metrics.forward_truncated.clone(),
    });
    let forwarder = Forwarder {
        tx,
        shared: shared.clone(),
    };
    let task = tokio::spawn(run(
        rx,
        transport,
        cfg.format,
        origin,
        shared,
        cfg.address.to_string(),
    ));
    Ok((forwarder, task))
}

async fn resolve(address: &str) -> std::io::Result<SocketAddr> {
    tokio::net::lookup_host(address)
        .await?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "the name has no address"))
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it or
    // fails.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

enum Transport {
    Udp {
        socket: UdpSocket,
        target: SocketAddr,
        /// Messages are shortened to this ([`SyslogConfig::max_datagram`]).
        max_datagram: usize,
    },
    Tcp {
        address: String,
        stream: Option<TcpStream>,
    },
}

async fn run(
    mut rx: mpsc::Receiver<Bytes>,
    mut transport: Transport,
    format: SyslogFormat,
    origin: Origin,
    shared: Arc<Shared>,
    address: String,
) {
    let mut msgs = Vec::new();
    let mut open = true;
    while open {
        let Some(first) = rx.recv().await else { break };
        // Gather what else is written meanwhile (bounded by the queue), then send it at once.
        tokio::time::sleep(GATHER).await;
        let mut batches = vec![first];
        loop {
            match rx.try_recv() {
                Ok(b) => batches.push(b),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        msgs.clear();
        let max = transport.max_message();
        for batch in &batches {
            shared.queued.fetch_sub(batch.len(), Ordering::Relaxed);
            for line in batch.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                match render(line, format, &origin, max) {
                    Some(m) => {
                        if m.truncated {
                            shared.truncated.inc();
                        }
                        msgs.push(m.text);
                    }
                    None => {
                        tracing::error!(
                            "audit syslog: a written line is not an audit record; not forwarded"
                        );
                        shared.dropped.inc();
                    }
                }
            }
        }
        let sent = transport.send(&msgs, &address).await;
        shared.forwarded.inc_by(sent);
        shared.dropped.inc_by(msgs.len() as u64 - sent);
        if rx.is_empty() && shared.dropping.swap(false, Ordering::Relaxed) {
            tracing::info!("audit syslog: the forwarder has caught up");
        }
    }
}

impl Transport {
    /// The largest message the transport takes whole: UDP's datagram limit; TCP frames any
    /// length (RFC 6587 octet counting).
    fn max_message(&self) -> Option<usize> {
        match self {
            Transport::Udp { max_datagram, .. } => Some(*max_datagram),
            Transport::Tcp { .. } => None,
        }
    }

    /// Sends a batch of messages and says how many went out. UDP: one datagram each, no retry
    /// (a failed send is a drop). TCP: all frames in one write, retried over a new connection,
    /// with backoff, until it goes through (a batch cut by a broken connection is sent again
    /// whole, so a receiver may see a message twice: the seq tells).
    async fn send(&mut self, msgs: &[String], address: &str) -> u64 {
        match self {
            Transport::Udp { socket, target, .. } => {
                let mut sent = 0;
                for m in msgs {
                    match socket.send_to(m.as_bytes(), *target).await {
                        Ok(_) => sent += 1,
                        Err(e) => tracing::debug!(error = %e, "audit syslog: udp send failed"),
                    }
                }
                sent
            }
            Transport::Tcp { address: a, stream } => {
                // RFC 6587 octet counting: "LEN SP MSG" for each message.
                let mut frames = Vec::with_capacity(msgs.iter().map(|m| m.len() + 8).sum());
                for m in msgs {
                    frames.extend_from_slice(m.len().to_string().as_bytes());
                    frames.push(b' ');
                    frames.extend_from_slice(m.as_bytes());
                }
                let mut backoff = Duration::from_millis(50);
                loop {
                    if stream.is_none() {
                        match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(&*a))
                            .await
                        {
                            Ok(Ok(s)) => {
                                let _ = s.set_nodelay(true);
                                tracing::info!(address, "audit syslog: connected");
                                *stream = Some(s);
                            }
                            Ok(Err(e)) => {
                                tracing::warn!(address, error = %e, retry_in = ?backoff, "audit syslog: cannot connect");
                            }
                            Err(_) => {
                                tracing::warn!(address, retry_in = ?backoff, "audit syslog: connect timed out");
                            }
                        }
                    }
                    if stream.as_ref().is_some_and(|s| !alive(s)) {
                        tracing::warn!(
                            address,
                            "audit syslog: the receiver closed the connection; reconnecting"
                        );
                        *stream = None;
                        continue;
                    }
                    if let Some(s) = stream {
                        match s.write_all(&frames).await {
                            Ok(()) => return msgs.len() as u64,
                            Err(e) => {
                                tracing::warn!(address, error = %e, "audit syslog: connection lost; reconnecting");
                                *stream = None;
                                continue;
                            }
                        }
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

/// Whether a connection to a syslog receiver (which never sends anything) is still open: a
/// receiver that closed it has sent FIN or RST, which makes the socket readable. Checked before
/// each write, so a batch is not written into a connection the receiver already closed (its
/// kernel would accept the bytes and drop them).
fn alive(s: &TcpStream) -> bool {
    let mut probe = [0u8; 64];
    match s.try_read(&mut probe) {
        Ok(0) => false,
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_or_say_why_not() {
        assert_eq!(
            SyslogAddress::parse("udp://127.0.0.1:514"),
            Ok(SyslogAddress::Udp("127.0.0.1:514".into()))
        );
        assert_eq!(
            SyslogAddress::parse("tcp://siem.example:601"),
            Ok(SyslogAddress::Tcp("siem.example:601".into()))
        );
        assert_eq!(
            SyslogAddress::parse("tcp://[::1]:6514"),
            Ok(SyslogAddress::Tcp("[::1]:6514".into()))
        );
        for (bad, why) in [
            ("127.0.0.1:514", "expected udp://"),
            ("udp://127.0.0.1", "a port is required"),
            ("udp://:514", "host:port"),
            ("udp://h:0", "host:port"),
            ("udp://h:99999", "host:port"),
            ("tls://h:6514", "unknown scheme `tls`"),
        ] {
            let e = SyslogAddress::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn facilities_by_name() {
        assert_eq!(Facility::parse("local0"), Ok(Facility::LOCAL0));
        assert_eq!(Facility::parse("local7").map(Facility::code), Ok(23));
        assert_eq!(Facility::parse("authpriv").map(Facility::code), Ok(10));
        let e = Facility::parse("local8").unwrap_err();
        assert!(e.contains("unknown facility `local8`"), "{e}");
    }
}
