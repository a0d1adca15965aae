//! What pgveil itself tells a client whose session it ends: what PostgreSQL would say in the
//! same case, and nothing where PostgreSQL says nothing (see "How sessions end" in
//! docs/architecture.md). Both relays (pass-through and enforced) end through here.
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::protocol::backend::{error_response, Severity};
use crate::protocol::{sqlstate, ProtocolError};

/// Why pgveil closes a session, as far as the client is told.
pub enum Closing<'a> {
    /// The client broke the protocol.
    ProtocolViolation(&'a ProtocolError),
    IdleTimeout,
    Shutdown,
    /// Nothing to say: the client said goodbye or went away, or the server closed (whatever
    /// it said has been relayed already).
    Silent,
}

impl Closing<'_> {
    fn notice(&self) -> Option<(&'static str, String)> {
        match self {
            Closing::ProtocolViolation(e) if !e.is_disconnect() => {
                Some((sqlstate::PROTOCOL_VIOLATION, e.to_string()))
            }
            Closing::IdleTimeout => Some((
                sqlstate::IDLE_SESSION_TIMEOUT,
                "terminating connection due to idle timeout (pgveil idle_timeout)".to_string(),
            )),
            Closing::Shutdown => Some((
                sqlstate::ADMIN_SHUTDOWN,
                "terminating connection because pgveil is shutting down".to_string(),
            )),
            _ => None,
        }
    }
}

/// Send the FATAL that goes with `closing`, when the bytes written so far end on a message
/// boundary; then close the client's side.
pub async fn close_client<W: AsyncWrite + Unpin>(
    cw: &mut W,
    closing: Closing<'_>,
    at_boundary: bool,
) {
    if let (Some((code, message)), true) = (closing.notice(), at_boundary) {
        let frame = error_response(Severity::Fatal, code, &message);
        let _ = cw.write_all(&frame).await;
    }
    let _ = cw.flush().await;
    let _ = cw.shutdown().await;
}
