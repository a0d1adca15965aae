//! How a session ends, for both relays (pass-through and enforced): why it ended ([`End`]),
//! what pgveil tells the client then ([`finish`]: what PostgreSQL would say in the same case,
//! and nothing where PostgreSQL says nothing; see "How sessions end" in
//! docs/architecture.md), how it is logged and counted ([`log_end`]), and the idle timer
//! ([`Activity`], [`idle_watch`]).
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::context::ServerContext;
use crate::protocol::backend::{error_response, Severity};
use crate::protocol::{sqlstate, ProtocolError};

/// Why a session's relay ended.
#[derive(Debug)]
pub enum End {
    ClientClosed,
    ServerClosed,
    ClientError(ProtocolError),
    ServerError(ProtocolError),
    Idle,
    Shutdown,
    /// Responses to what the client sent before a protocol violation have all
    /// reached it.
    Drained,
    /// The client sent Terminate: a clean close, whatever happened next
    /// (`first` is how the relay noticed the end).
    Terminated {
        first: Box<End>,
    },
}

/// The end in words, for the session log (`detail=`).
impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::ClientClosed => f.write_str("the client closed the connection"),
            End::ServerClosed => f.write_str("the server closed the connection"),
            End::ClientError(e) => write!(f, "client: {e}"),
            End::ServerError(e) => write!(f, "server: {e}"),
            End::Idle => f.write_str("idle for longer than limits.idle_timeout"),
            End::Shutdown => f.write_str("pgveil is shutting down"),
            End::Drained => f.write_str("answers drained after a protocol violation"),
            End::Terminated { first } => write!(f, "Terminate, then {first}"),
        }
    }
}

impl End {
    /// The end as the client's Terminate makes it, if the client sent one.
    pub fn after_terminate(self, terminated: bool) -> End {
        if terminated {
            End::Terminated {
                first: Box::new(self),
            }
        } else {
            self
        }
    }
}

/// Tell the client why pgveil is closing where PostgreSQL itself would say something, when
/// the bytes written so far end on a message boundary; then close the client's side.
pub async fn finish<W: AsyncWrite + Unpin>(cw: &mut W, end: &End, at_boundary: bool) {
    let notice = match end {
        // After Terminate the backend exits without a word (PostgresMain, 'X').
        End::Terminated { .. } => None,
        End::ClientError(e) if !e.is_disconnect() => {
            Some((sqlstate::PROTOCOL_VIOLATION, e.to_string()))
        }
        End::Idle => Some((
            sqlstate::IDLE_SESSION_TIMEOUT,
            "terminating connection due to idle timeout (pgveil idle_timeout)".to_string(),
        )),
        End::Shutdown => Some((
            sqlstate::ADMIN_SHUTDOWN,
            "terminating connection because pgveil is shutting down".to_string(),
        )),
        // The server closed or broke the connection: pass the close on as it came; whatever
        // the server said (a FATAL) has already been relayed.
        _ => None,
    };
    if let (Some((code, message)), true) = (notice, at_boundary) {
        let frame = error_response(Severity::Fatal, code, &message);
        let _ = cw.write_all(&frame).await;
    }
    let _ = cw.flush().await;
    let _ = cw.shutdown().await;
}

/// Log how the session ended; count it unless it was a clean close. A session whose client
/// sent Terminate is a clean close, whichever side's close reached pgveil first.
/// `server_said_why`: the last frame from the server was an ErrorResponse.
pub fn log_end(ctx: &ServerContext, peer: SocketAddr, end: &End, server_said_why: bool) {
    let kind = match end {
        End::Terminated { first } => {
            tracing::debug!(%peer, first = %first, "session closed after Terminate");
            return;
        }
        End::ClientClosed | End::Drained => {
            tracing::debug!(%peer, detail = %end, "session closed");
            return;
        }
        End::ServerClosed if server_said_why => {
            tracing::debug!(%peer, "session closed by the server after an ErrorResponse");
            return;
        }
        End::ServerClosed => "upstream_lost",
        End::ClientError(e) if e.is_disconnect() => "client_disconnect",
        End::ClientError(_) => "protocol_violation",
        End::ServerError(e) => {
            tracing::debug!(%peer, error = %e, "connection to the database server broke");
            "upstream_lost"
        }
        End::Idle => "idle_timeout",
        End::Shutdown => "shutdown",
    };
    ctx.metrics.session_errors.with_label_values(&[kind]).inc();
    tracing::info!(%peer, reason = kind, detail = %end, "session ended");
}

/// When the session last moved, for the idle timeout; free when no timeout is set.
pub struct Activity {
    started: Instant,
    last_ms: AtomicU64,
    track: bool,
}

impl Activity {
    pub fn new(idle_timeout: Option<Duration>) -> Activity {
        Activity {
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
            track: idle_timeout.is_some(),
        }
    }

    #[inline]
    pub fn touch(&self) {
        if self.track {
            let ms = self.started.elapsed().as_millis() as u64;
            self.last_ms.store(ms, Ordering::Relaxed);
        }
    }

    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }
}

/// Ends with [`End::Idle`] once the session has been idle for `timeout`; never without one.
pub async fn idle_watch(activity: &Activity, timeout: Option<Duration>) -> End {
    let Some(timeout) = timeout else {
        return std::future::pending().await;
    };
    loop {
        let idle = activity.idle_for();
        if idle >= timeout {
            return End::Idle;
        }
        tokio::time::sleep(timeout - idle).await;
    }
}

/// Best-effort FATAL ErrorResponse to a client that is being closed.
pub async fn send_fatal(client: &mut crate::stream::ClientStream, code: &str, message: &str) {
    let frame = error_response(Severity::Fatal, code, message);
    let _ = client.write_all(&frame).await;
    let _ = client.flush().await;
    let _ = client.shutdown().await;
}
