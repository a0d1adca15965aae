//! The client side of startup: TLS negotiation, GSSAPI refusal, cancel
//! requests, and reading the StartupMessage.
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::context::ServerContext;
use crate::protocol::sqlstate;
use crate::protocol::startup::{read_startup_packet, CancelKey, StartupMessage, StartupPacket};
use crate::protocol::ProtocolError;
use crate::stream::{ClientStream, MaybeTls};

/// How the handshake ended.
pub enum Handshake {
    /// A StartupMessage arrived; authentication comes next.
    Startup {
        client: ClientStream,
        startup: StartupMessage,
    },
    /// The connection carried a CancelRequest, now handled.
    Cancelled,
    /// The client closed before sending anything.
    Closed,
    /// The client sent Terminate instead of a StartupMessage; it is owed
    /// nothing but a quiet close.
    Terminated { client: ClientStream },
}

/// A failed handshake, with the stream when an ErrorResponse can still be sent.
pub struct HandshakeError {
    pub error: ProtocolError,
    pub client: Option<ClientStream>,
}

impl HandshakeError {
    pub fn is_disconnect(&self) -> bool {
        self.error.is_disconnect()
    }

    pub fn sqlstate(&self) -> &'static str {
        match self.error {
            ProtocolError::UnsupportedVersion { .. } => sqlstate::FEATURE_NOT_SUPPORTED,
            _ => sqlstate::PROTOCOL_VIOLATION,
        }
    }

    pub fn metric_kind(&self) -> &'static str {
        if self.is_disconnect() {
            "client_disconnect"
        } else {
            "protocol_violation"
        }
    }
}

fn fail(error: ProtocolError, client: Option<ClientStream>) -> HandshakeError {
    // After an I/O error or a mid-packet EOF there is nobody to tell.
    let client = if error.is_disconnect() || matches!(error, ProtocolError::Io(_)) {
        None
    } else {
        client
    };
    HandshakeError { error, client }
}

/// Run the client side of startup.
pub async fn run(ctx: &ServerContext, tcp: TcpStream) -> Result<Handshake, HandshakeError> {
    let mut client: ClientStream = MaybeTls::Plain(tcp);
    let mut refused_gss = false;
    loop {
        let packet = match read_startup_packet(&mut client).await {
            Ok(Some(p)) => p,
            Ok(None) => return Ok(Handshake::Closed),
            Err(e) => return Err(fail(e, Some(client))),
        };
        match packet {
            StartupPacket::SslRequest => client = negotiate_tls(ctx, client).await?,
            StartupPacket::GssEncRequest if !refused_gss && !client.is_tls() => {
                refused_gss = true;
                write_byte(&mut client, b'N').await?;
            }
            StartupPacket::GssEncRequest => {
                let e = ProtocolError::Unexpected {
                    tag: 'G',
                    during: "after encryption was already negotiated",
                };
                return Err(fail(e, Some(client)));
            }
            StartupPacket::Terminate => return Ok(Handshake::Terminated { client }),
            StartupPacket::Cancel(key) => {
                forward_cancel(ctx, key).await;
                return Ok(Handshake::Cancelled);
            }
            StartupPacket::Startup(startup) => {
                if startup.is_replication() {
                    let e = ProtocolError::BadStartup(
                        "replication connections are not supported through pgveil".into(),
                    );
                    return Err(fail(e, Some(client)));
                }
                return Ok(Handshake::Startup { client, startup });
            }
        }
    }
}

async fn negotiate_tls(
    ctx: &ServerContext,
    mut client: ClientStream,
) -> Result<ClientStream, HandshakeError> {
    let tcp = match client {
        MaybeTls::Plain(tcp) => tcp,
        MaybeTls::Tls(_) | MaybeTls::Unix(_) => {
            let e = ProtocolError::Unexpected {
                tag: 'S',
                during: "SSLRequest after TLS was established",
            };
            return Err(fail(e, Some(client)));
        }
    };
    let Some(acceptor) = &ctx.client_tls else {
        client = MaybeTls::Plain(tcp);
        write_byte(&mut client, b'N').await?;
        return Ok(client);
    };
    let mut tcp = tcp;
    if let Err(e) = tcp.write_all(b"S").await {
        return Err(fail(ProtocolError::Io(e), None));
    }
    match acceptor.accept(tcp).await {
        Ok(tls) => Ok(MaybeTls::Tls(Box::new(tls))),
        Err(e) => Err(fail(ProtocolError::Io(e), None)),
    }
}

async fn write_byte(client: &mut ClientStream, byte: u8) -> Result<(), HandshakeError> {
    let result = async {
        client.write_all(&[byte]).await?;
        client.flush().await
    }
    .await;
    result.map_err(|e| fail(ProtocolError::Io(e), None))
}

/// Forward a CancelRequest to the upstream that owns the key. Unknown keys are
/// ignored silently, as PostgreSQL does, so that keys cannot be probed.
async fn forward_cancel(ctx: &ServerContext, key: CancelKey) {
    if !ctx.cancels.contains(&key) {
        ctx.metrics
            .cancel_requests
            .with_label_values(&["unknown_key"])
            .inc();
        tracing::debug!(pid = key.pid, "cancel request for an unknown key ignored");
        return;
    }
    match ctx.upstream.cancel(&key).await {
        Ok(()) => {
            ctx.metrics
                .cancel_requests
                .with_label_values(&["forwarded"])
                .inc();
            tracing::debug!(pid = key.pid, "cancel request forwarded");
        }
        Err(e) => {
            ctx.metrics
                .cancel_requests
                .with_label_values(&["failed"])
                .inc();
            tracing::warn!(pid = key.pid, error = %e, "could not forward cancel request");
        }
    }
}
