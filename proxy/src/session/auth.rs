//! Authentication relay. The client keeps its own user and password: pgveil
//! forwards the StartupMessage and every Authentication exchange (trust,
//! cleartext, MD5, SCRAM-SHA-256) unchanged, except that it never offers
//! SCRAM-SHA-256-PLUS, whose channel binding cannot pass through a proxy.
use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use crate::context::ServerContext;
use crate::protocol::backend::{
    auth_code, backend_key, error_fields, parameter_status, strip_channel_binding,
};
use crate::protocol::frame::read_frame;
use crate::protocol::sqlstate;
use crate::protocol::startup::{CancelKey, StartupMessage};
use crate::protocol::{Frame, ProtocolError};
use crate::session::closing::send_fatal;
use crate::stream::{ClientStream, MaybeTls, ServerStream};

/// Largest message accepted during authentication (SASL exchanges are small;
/// ParameterStatus values are bounded by PostgreSQL's own limits).
const MAX_AUTH_MESSAGE: usize = 1 << 20;

/// A session that has passed authentication and is ready for queries.
pub struct Established {
    pub client: ClientStream,
    pub server: ServerStream,
    /// Bytes the client already sent past its last authentication message.
    pub client_buf: BytesMut,
    /// Bytes the server already sent past ReadyForQuery.
    pub server_buf: BytesMut,
    pub cancel_key: Option<CancelKey>,
    pub user: String,
    pub database: String,
    pub application_name: String,
    /// The ParameterStatus values the server reported during startup.
    pub server_params: Vec<(String, String)>,
}

/// Why a session ended during authentication.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("upstream unavailable: {0}")]
    Upstream(String),
    #[error("server refused the session: {code} {message}")]
    Refused { code: String, message: String },
    #[error("client: {0}")]
    Client(ProtocolError),
    #[error("server: {0}")]
    Server(ProtocolError),
}

/// Connect upstream, relay the StartupMessage and the authentication exchange,
/// and stop after the first ReadyForQuery.
pub async fn run(
    ctx: &ServerContext,
    mut client: ClientStream,
    startup: StartupMessage,
) -> Result<Established, AuthError> {
    let mut server = match ctx.upstream.connect().await {
        Ok(s) => s,
        Err(e) => {
            let message = format!("pgveil cannot reach the database server: {e}");
            send_fatal(
                &mut client,
                sqlstate::SQLCLIENT_UNABLE_TO_ESTABLISH,
                &message,
            )
            .await;
            ctx.metrics
                .session_errors
                .with_label_values(&["upstream_unavailable"])
                .inc();
            return Err(AuthError::Upstream(e.to_string()));
        }
    };
    if let Err(e) = write_flush(&mut server, &startup.raw).await {
        send_fatal(
            &mut client,
            sqlstate::CONNECTION_FAILURE,
            "pgveil lost the connection to the database server",
        )
        .await;
        return Err(AuthError::Server(ProtocolError::Io(e)));
    }
    let strip_plus = !channel_binding_passes_through(ctx, &client, &server);
    let server_binds = server.is_tls();
    let mut exchange = Exchange {
        strip_plus,
        server_binds,
        client,
        server,
        client_buf: BytesMut::with_capacity(1024),
        server_buf: BytesMut::with_capacity(4096),
        client_out: BytesMut::with_capacity(1024),
        cancel_key: None,
        server_params: Vec::new(),
    };
    exchange.relay_until_ready().await?;
    Ok(Established {
        client: exchange.client,
        server: exchange.server,
        client_buf: exchange.client_buf,
        server_buf: exchange.server_buf,
        cancel_key: exchange.cancel_key,
        user: startup.user().to_string(),
        database: startup.database().to_string(),
        application_name: startup.application_name().to_string(),
        server_params: exchange.server_params,
    })
}

struct Exchange {
    /// Remove SCRAM-SHA-256-PLUS from the server's offer.
    strip_plus: bool,
    /// The upstream leg is TLS, so the server supports channel binding.
    server_binds: bool,
    client: ClientStream,
    server: ServerStream,
    client_buf: BytesMut,
    server_buf: BytesMut,
    client_out: BytesMut,
    cancel_key: Option<CancelKey>,
    server_params: Vec<(String, String)>,
}

impl Exchange {
    async fn relay_until_ready(&mut self) -> Result<(), AuthError> {
        loop {
            let frame = self.server_frame().await?;
            match frame.tag {
                b'R' => self.on_auth_request(frame).await?,
                b'K' => {
                    self.cancel_key = backend_key(&frame);
                    self.send_client(&frame.bytes, false).await?;
                }
                b'S' => {
                    if let Some(p) = parameter_status(frame.body()) {
                        self.server_params.push(p);
                    }
                    self.send_client(&frame.bytes, false).await?
                }
                b'N' | b'v' => self.send_client(&frame.bytes, false).await?,
                b'Z' => {
                    self.send_client(&frame.bytes, true).await?;
                    return Ok(());
                }
                b'E' => {
                    self.send_client(&frame.bytes, true).await?;
                    let (code, message) = error_fields(frame.body());
                    return Err(AuthError::Refused { code, message });
                }
                other => {
                    return Err(AuthError::Server(ProtocolError::Unexpected {
                        tag: other as char,
                        during: "during authentication",
                    }))
                }
            }
        }
    }

    /// Forward an Authentication request; read and forward the client's answer
    /// when the request expects one.
    async fn on_auth_request(&mut self, frame: Frame) -> Result<(), AuthError> {
        let code = auth_code(&frame).unwrap_or(-1);
        let rewritten = if self.strip_plus {
            strip_channel_binding(&frame)
        } else {
            None
        };
        match rewritten {
            Some(rewritten) => self.send_client(&rewritten, true).await?,
            None => self.send_client(&frame.bytes, code != 0).await?,
        }
        // 0 = Ok, 12 = SASLFinal: nothing to answer. Everything else
        // (cleartext, MD5, SASL, SASLContinue, GSS, SSPI) expects a 'p'.
        if code == 0 || code == 12 {
            return Ok(());
        }
        let answer = read_frame(&mut self.client, &mut self.client_buf, MAX_AUTH_MESSAGE)
            .await
            .map_err(AuthError::Client)?
            .ok_or(AuthError::Client(ProtocolError::Truncated))?;
        if answer.tag != b'p' {
            let e = ProtocolError::Unexpected {
                tag: answer.tag as char,
                during: "while waiting for a password or SASL response",
            };
            let message = e.to_string();
            send_fatal(&mut self.client, sqlstate::PROTOCOL_VIOLATION, &message).await;
            return Err(AuthError::Client(e));
        }
        if code == 10 && self.server_binds && gs2_flag(answer.body()) == Some(b'y') {
            // The client supports channel binding but was not offered it; a
            // server on TLS treats that as a downgrade attack and refuses.
            send_fatal(
                &mut self.client,
                sqlstate::PROTOCOL_VIOLATION,
                CHANNEL_BINDING_HELP,
            )
            .await;
            return Err(AuthError::Client(ProtocolError::Unexpected {
                tag: 'p',
                during: "SCRAM with channel binding through a TLS-terminating proxy",
            }));
        }
        write_flush(&mut self.server, &answer.bytes)
            .await
            .map_err(|e| AuthError::Server(ProtocolError::Io(e)))
    }

    async fn server_frame(&mut self) -> Result<Frame, AuthError> {
        match read_frame(&mut self.server, &mut self.server_buf, MAX_AUTH_MESSAGE).await {
            Ok(Some(frame)) => Ok(frame),
            Ok(None) => Err(self.server_gone(ProtocolError::Truncated).await),
            Err(e) => Err(self.server_gone(e).await),
        }
    }

    async fn server_gone(&mut self, e: ProtocolError) -> AuthError {
        send_fatal(
            &mut self.client,
            sqlstate::CONNECTION_FAILURE,
            "pgveil lost the connection to the database server during authentication",
        )
        .await;
        AuthError::Server(e)
    }

    /// Queue bytes for the client; write them out when asked (before waiting
    /// on the client) or when the server has no further complete message
    /// buffered, so a burst of ParameterStatus messages leaves in one write.
    async fn send_client(&mut self, bytes: &[u8], flush: bool) -> Result<(), AuthError> {
        self.client_out.extend_from_slice(bytes);
        if flush || !has_complete_frame(&self.server_buf) {
            let r = write_flush(&mut self.client, &self.client_out).await;
            self.client_out.clear();
            r.map_err(|e| AuthError::Client(ProtocolError::Io(e)))?;
        }
        Ok(())
    }
}

const CHANNEL_BINDING_HELP: &str = "SCRAM channel binding cannot pass through pgveil: \
    your client supports it, but pgveil terminates TLS with a different certificate than the \
    database server's. Give pgveil the database server's certificate and key (tls.cert_file, \
    tls.key_file) so channel binding passes end to end, or connect with channel_binding=disable";

/// SCRAM-SHA-256-PLUS survives the proxy only when the client's TLS session is
/// with pgveil presenting the very certificate the upstream server presents:
/// `tls-server-end-point` binds to the hash of that certificate.
fn channel_binding_passes_through(
    ctx: &ServerContext,
    client: &ClientStream,
    server: &ServerStream,
) -> bool {
    let (MaybeTls::Tls(_), MaybeTls::Tls(upstream)) = (client, server) else {
        return false;
    };
    let Some(ours) = ctx.client_cert_der.as_deref() else {
        return false;
    };
    let (_, session) = upstream.get_ref();
    session
        .peer_certificates()
        .and_then(|chain| chain.first())
        .is_some_and(|theirs| theirs.as_ref() == ours)
}

/// The gs2 channel-binding flag ('n', 'y' or 'p') of a SASLInitialResponse body.
fn gs2_flag(body: &[u8]) -> Option<u8> {
    let mech_end = body.iter().position(|&b| b == 0)?;
    let rest = body.get(mech_end + 1..)?;
    let len = i32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
    if len <= 0 {
        return None;
    }
    rest.get(4).copied()
}

fn has_complete_frame(buf: &[u8]) -> bool {
    buf.len() >= 5 && {
        let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
        len >= 4 && buf.len() > len as usize
    }
}

async fn write_flush<W: AsyncWriteExt + Unpin>(w: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    w.write_all(bytes).await?;
    w.flush().await
}
