//! The untagged packets a client sends before the session starts: SSLRequest,
//! GSSENCRequest, CancelRequest and StartupMessage.
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::frame::{take_cstr, ProtocolError};

/// PostgreSQL's limit for a startup packet.
pub const MAX_STARTUP_PACKET_LEN: usize = 10_000;
const SSL_REQUEST_CODE: u32 = 80_877_103;
const GSSENC_REQUEST_CODE: u32 = 80_877_104;
const CANCEL_REQUEST_CODE: u32 = 80_877_102;

/// A session's cancel key, as issued by the server in BackendKeyData.
/// Protocol 3.2 allows keys of up to 256 bytes, so the secret is bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CancelKey {
    pub pid: i32,
    pub secret: Bytes,
}

impl CancelKey {
    /// The CancelRequest packet for this key.
    pub fn cancel_request(&self) -> Vec<u8> {
        let len = 12 + self.secret.len();
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(&(len as u32).to_be_bytes());
        out.extend_from_slice(&CANCEL_REQUEST_CODE.to_be_bytes());
        out.extend_from_slice(&self.pid.to_be_bytes());
        out.extend_from_slice(&self.secret);
        out
    }
}

/// The StartupMessage, kept as raw bytes so it is relayed unchanged.
#[derive(Debug, Clone)]
pub struct StartupMessage {
    pub raw: Bytes,
    pub major: u16,
    pub minor: u16,
    pub params: Vec<(String, String)>,
}

impl StartupMessage {
    /// The value of one startup parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn user(&self) -> &str {
        self.param("user").unwrap_or("")
    }

    pub fn database(&self) -> &str {
        self.param("database").unwrap_or_else(|| self.user())
    }

    pub fn application_name(&self) -> &str {
        self.param("application_name").unwrap_or("")
    }

    /// A replication connection speaks a different sub-protocol after startup.
    pub fn is_replication(&self) -> bool {
        matches!(
            self.param("replication"),
            Some(v) if !v.eq_ignore_ascii_case("false") && v != "0" && !v.eq_ignore_ascii_case("off")
        )
    }
}

/// One packet of the startup phase.
#[derive(Debug)]
pub enum StartupPacket {
    SslRequest,
    GssEncRequest,
    Cancel(CancelKey),
    Startup(StartupMessage),
    /// A Terminate message (`X`) where the startup packet should be: the
    /// client gave up before starting. PostgreSQL closes without a word.
    Terminate,
}

/// The first four bytes of a Terminate message (`X`, then the length 4).
const TERMINATE_PREFIX: [u8; 4] = [b'X', 0, 0, 0];

/// Read one startup-phase packet. `Ok(None)` if the client closed before sending anything.
pub async fn read_startup_packet<R: AsyncRead + Unpin>(
    reader: &mut R,
) -> Result<Option<StartupPacket>, ProtocolError> {
    let mut len_bytes = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = reader.read(&mut len_bytes[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(ProtocolError::Truncated)
            };
        }
        got += n;
    }
    if len_bytes == TERMINATE_PREFIX {
        return Ok(Some(StartupPacket::Terminate));
    }
    let len = i32::from_be_bytes(len_bytes);
    if !(8..=MAX_STARTUP_PACKET_LEN as i32).contains(&len) {
        return Err(ProtocolError::BadStartup(format!(
            "invalid length of startup packet ({len})"
        )));
    }
    let mut body = BytesMut::zeroed(len as usize - 4);
    reader.read_exact(&mut body).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            ProtocolError::Truncated
        } else {
            ProtocolError::Io(e)
        }
    })?;
    parse_packet(&len_bytes, body).map(Some)
}

fn parse_packet(len_bytes: &[u8; 4], body: BytesMut) -> Result<StartupPacket, ProtocolError> {
    let code = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
    match code {
        SSL_REQUEST_CODE if body.len() == 4 => Ok(StartupPacket::SslRequest),
        GSSENC_REQUEST_CODE if body.len() == 4 => Ok(StartupPacket::GssEncRequest),
        CANCEL_REQUEST_CODE => parse_cancel(&body[4..]),
        _ => parse_startup(len_bytes, body, code),
    }
}

fn parse_cancel(rest: &[u8]) -> Result<StartupPacket, ProtocolError> {
    if rest.len() < 8 || rest.len() > 4 + 256 {
        return Err(ProtocolError::BadStartup(
            "invalid length of cancel request".into(),
        ));
    }
    let pid = i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
    Ok(StartupPacket::Cancel(CancelKey {
        pid,
        secret: Bytes::copy_from_slice(&rest[4..]),
    }))
}

fn parse_startup(
    len_bytes: &[u8; 4],
    body: BytesMut,
    code: u32,
) -> Result<StartupPacket, ProtocolError> {
    let major = (code >> 16) as u16;
    let minor = (code & 0xffff) as u16;
    if major != 3 {
        return Err(ProtocolError::UnsupportedVersion { major, minor });
    }
    let mut rest: &[u8] = &body[4..];
    let mut params = Vec::new();
    loop {
        match rest.first() {
            Some(0) if rest.len() == 1 => break,
            None => return Err(ProtocolError::BadStartup("missing terminator".into())),
            _ => {}
        }
        let key = take_cstr(&mut rest)
            .ok_or_else(|| ProtocolError::BadStartup("unterminated parameter name".into()))?;
        let value = take_cstr(&mut rest).ok_or_else(|| {
            ProtocolError::BadStartup(format!("missing value for parameter \"{key}\""))
        })?;
        params.push((key, value));
    }
    if !params.iter().any(|(k, _)| k == "user") {
        return Err(ProtocolError::BadStartup(
            "no PostgreSQL user name specified in startup packet".into(),
        ));
    }
    let mut raw = BytesMut::with_capacity(4 + body.len());
    raw.extend_from_slice(len_bytes);
    raw.extend_from_slice(&body);
    Ok(StartupPacket::Startup(StartupMessage {
        raw: raw.freeze(),
        major,
        minor,
        params,
    }))
}

/// Build a StartupMessage from parameters (used by tests and by the demo client).
pub fn encode_startup(params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&196_608u32.to_be_bytes());
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut out = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(bytes: &[u8]) -> Result<Option<StartupPacket>, ProtocolError> {
        let mut r = bytes;
        read_startup_packet(&mut r).await
    }

    #[tokio::test]
    async fn parses_startup_message() {
        let raw = encode_startup(&[("user", "alice"), ("database", "shop")]);
        let Ok(Some(StartupPacket::Startup(m))) = read(&raw).await else {
            panic!("expected a startup message");
        };
        assert_eq!(m.user(), "alice");
        assert_eq!(m.database(), "shop");
        assert_eq!(&m.raw[..], &raw[..]);
    }

    #[tokio::test]
    async fn terminate_instead_of_startup() {
        assert!(matches!(
            read(&[b'X', 0, 0, 0, 4]).await,
            Ok(Some(StartupPacket::Terminate))
        ));
    }

    #[tokio::test]
    async fn parses_ssl_and_cancel() {
        let ssl = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
        assert!(matches!(
            read(&ssl).await,
            Ok(Some(StartupPacket::SslRequest))
        ));
        let key = CancelKey {
            pid: 42,
            secret: Bytes::from_static(&[1, 2, 3, 4]),
        };
        let Ok(Some(StartupPacket::Cancel(k))) = read(&key.cancel_request()).await else {
            panic!("expected a cancel request");
        };
        assert_eq!(k, key);
    }

    #[tokio::test]
    async fn rejects_garbage() {
        assert!(matches!(
            read(b"GET / HTTP/1.1\r\n\r\n").await,
            Err(ProtocolError::BadStartup(_))
        ));
        assert!(matches!(read(&[0, 0]).await, Err(ProtocolError::Truncated)));
        assert!(matches!(read(&[]).await, Ok(None)));
        let mut v2 = encode_startup(&[("user", "a")]);
        v2[4..8].copy_from_slice(&0x0002_0000u32.to_be_bytes());
        assert!(matches!(
            read(&v2).await,
            Err(ProtocolError::UnsupportedVersion { major: 2, .. })
        ));
    }

    #[tokio::test]
    async fn rejects_startup_without_user() {
        let raw = encode_startup(&[("database", "x")]);
        assert!(matches!(
            read(&raw).await,
            Err(ProtocolError::BadStartup(_))
        ));
    }
}
