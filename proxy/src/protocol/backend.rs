//! Server-side messages pgveil builds or reads, through pgwire's codec.
use bytes::{Bytes, BytesMut};
use pgwire::messages::response::ErrorResponse;
use pgwire::messages::startup::Authentication;
use pgwire::messages::{DecodeContext, Message, ProtocolVersion};

use super::frame::{Frame, HEADER_LEN};
use super::startup::CancelKey;

/// SASL mechanism that binds to the TLS channel; it cannot survive a proxy that
/// terminates TLS, so pgveil never offers it to clients.
pub const SCRAM_PLUS: &str = "SCRAM-SHA-256-PLUS";

/// Severity of an ErrorResponse pgveil sends.
#[derive(Debug, Clone, Copy)]
pub enum Severity {
    Error,
    Fatal,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        }
    }
}

/// Encode an ErrorResponse. The message must not contain sensitive values.
pub fn error_response(severity: Severity, code: &str, message: &str) -> BytesMut {
    error_response_hint(severity, code, message, None)
}

/// An ErrorResponse with an optional hint (`H` field).
pub fn error_response_hint(
    severity: Severity,
    code: &str,
    message: &str,
    hint: Option<&str>,
) -> BytesMut {
    let mut fields = vec![
        (b'S', severity.as_str().to_string()),
        (b'V', severity.as_str().to_string()),
        (b'C', code.to_string()),
        (b'M', message.to_string()),
    ];
    if let Some(h) = hint {
        fields.push((b'H', h.to_string()));
    }
    let mut buf = BytesMut::with_capacity(32 + message.len());
    // Encoding into a BytesMut cannot fail for these fields; if pgwire ever
    // reports an error, fall back to an empty buffer rather than panic.
    if ErrorResponse::new(fields).encode(&mut buf).is_err() {
        buf.clear();
    }
    buf
}

/// The fields of an ErrorResponse or NoticeResponse body, in order: (field type, value).
/// A field without its NUL ends the walk.
pub fn notice_fields(body: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    let mut rest = body;
    std::iter::from_fn(move || {
        let (&kind, tail) = rest.split_first()?;
        if kind == 0 {
            return None;
        }
        let (value, after) = super::frame::cstr(tail)?;
        rest = after;
        Some((kind, value))
    })
}

/// One field of an ErrorResponse or NoticeResponse body.
pub fn notice_field(body: &[u8], kind: u8) -> Option<&[u8]> {
    notice_fields(body)
        .find(|(k, _)| *k == kind)
        .map(|(_, v)| v)
}

/// The SQLSTATE of an ErrorResponse body.
pub fn error_code(body: &[u8]) -> Option<&str> {
    notice_field(body, b'C').and_then(|c| std::str::from_utf8(c).ok())
}

/// Read the SQLSTATE and message of an ErrorResponse (for logs).
pub fn error_fields(body: &[u8]) -> (String, String) {
    let text = |k| String::from_utf8_lossy(notice_field(body, k).unwrap_or_default()).into_owned();
    (text(b'C'), text(b'M'))
}

/// The name and value of a ParameterStatus body.
pub fn parameter_status(body: &[u8]) -> Option<(String, String)> {
    let (name, rest) = super::frame::cstr(body)?;
    let (value, _) = super::frame::cstr(rest)?;
    Some((
        String::from_utf8_lossy(name).into_owned(),
        String::from_utf8_lossy(value).into_owned(),
    ))
}

/// The authentication request code of an 'R' message.
pub fn auth_code(frame: &Frame) -> Option<i32> {
    let b = frame.body();
    (b.len() >= 4).then(|| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// If `frame` is AuthenticationSASL offering SCRAM-SHA-256-PLUS, return the
/// frame re-encoded without it. `None` means: forward unchanged.
pub fn strip_channel_binding(frame: &Frame) -> Option<BytesMut> {
    if frame.tag != b'R' || auth_code(frame) != Some(10) {
        return None;
    }
    let mut buf = frame.bytes.clone();
    let ctx = DecodeContext::new(ProtocolVersion::PROTOCOL3_0);
    let Ok(Some(Authentication::SASL(mechanisms))) = Authentication::decode(&mut buf, &ctx) else {
        return None;
    };
    if !mechanisms.iter().any(|m| m == SCRAM_PLUS) {
        return None;
    }
    let kept: Vec<String> = mechanisms.into_iter().filter(|m| m != SCRAM_PLUS).collect();
    let mut out = BytesMut::new();
    Authentication::SASL(kept).encode(&mut out).ok()?;
    Some(out)
}

/// The cancel key of a BackendKeyData message (any key length, for protocol 3.2).
pub fn backend_key(frame: &Frame) -> Option<CancelKey> {
    let b = frame.body();
    if frame.tag != b'K' || b.len() < 8 {
        return None;
    }
    Some(CancelKey {
        pid: i32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        secret: Bytes::copy_from_slice(&b[4..]),
    })
}

/// The command word of a CommandComplete body (`"INSERT 0 1\0"` gives `INSERT`).
#[inline]
pub fn command_word(body: &[u8]) -> &[u8] {
    let end = body
        .iter()
        .position(|&b| b == b' ' || b == 0)
        .unwrap_or(body.len());
    &body[..end]
}

/// The row count at the end of a CommandComplete tag (`SELECT 5`, `INSERT 0 3`, `COPY 10`).
pub fn command_rows(body: &[u8]) -> u64 {
    let tag = body.strip_suffix(&[0]).unwrap_or(body);
    tag.rsplit(|&b| b == b' ')
        .next()
        .and_then(|n| std::str::from_utf8(n).ok())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Total length of a frame with the given body length.
pub fn frame_len(body_len: usize) -> usize {
    HEADER_LEN + body_len
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(bytes: BytesMut) -> Frame {
        Frame {
            tag: bytes[0],
            bytes,
        }
    }

    #[test]
    fn error_response_round_trips() {
        let e = error_response(
            Severity::Fatal,
            "08P01",
            "invalid frontend message type 255",
        );
        assert_eq!(e[0], b'E');
        let (code, message) = error_fields(&e[HEADER_LEN..]);
        assert_eq!(code, "08P01");
        assert_eq!(message, "invalid frontend message type 255");
    }

    #[test]
    fn strips_scram_plus_only() {
        let mut buf = BytesMut::new();
        Authentication::SASL(vec![SCRAM_PLUS.into(), "SCRAM-SHA-256".into()])
            .encode(&mut buf)
            .unwrap();
        let stripped = strip_channel_binding(&frame(buf)).unwrap();
        let mut again = stripped.clone();
        let ctx = DecodeContext::new(ProtocolVersion::PROTOCOL3_0);
        let decoded = Authentication::decode(&mut again, &ctx).unwrap().unwrap();
        assert_eq!(decoded, Authentication::SASL(vec!["SCRAM-SHA-256".into()]));

        let mut plain = BytesMut::new();
        Authentication::SASL(vec!["SCRAM-SHA-256".into()])
            .encode(&mut plain)
            .unwrap();
        assert!(strip_channel_binding(&frame(plain)).is_none());
    }

    #[test]
    fn notice_fields_read_in_order_and_stop_at_a_broken_field() {
        let body = b"SERROR\0C23505\0Mduplicate\0Dsecret\0\0";
        let f: Vec<(u8, &[u8])> = notice_fields(body).collect();
        assert_eq!(f.len(), 4);
        assert_eq!(error_code(body), Some("23505"));
        assert_eq!(notice_field(body, b'D'), Some(&b"secret"[..]));
        assert_eq!(notice_fields(b"Cabc").count(), 0);
        assert_eq!(
            parameter_status(b"client_encoding\0UTF8\0"),
            Some(("client_encoding".into(), "UTF8".into()))
        );
        assert_eq!(command_rows(b"INSERT 0 3\0"), 3);
        assert_eq!(command_rows(b"SELECT 12\0"), 12);
        assert_eq!(command_rows(b"BEGIN\0"), 0);
    }

    #[test]
    fn command_word_takes_first_word() {
        assert_eq!(command_word(b"INSERT 0 1\0"), b"INSERT");
        assert_eq!(command_word(b"BEGIN\0"), b"BEGIN");
        assert_eq!(command_word(b""), b"");
    }
}
