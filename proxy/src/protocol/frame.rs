//! Framing of tagged messages: `tag: u8`, `len: i32` (counting itself), body.
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Bytes before the body: the tag and the length.
pub const HEADER_LEN: usize = 5;

/// The largest message length pgveil accepts: PostgreSQL's own limit for the
/// messages that may be long (1 GiB - 1).
pub const MAX_MESSAGE_LEN: usize = 0x3fff_ffff;

/// Message types a client may send once the session is established.
pub const FRONTEND_TAGS: &[u8] = b"BCdcfDEHFPpQSX";

/// Is `tag` a message type a client may send after authentication?
#[inline]
pub fn is_frontend_tag(tag: u8) -> bool {
    // 'p' is only valid during authentication; after it the server would reject it.
    tag != b'p' && FRONTEND_TAGS.contains(&tag)
}

/// What can be wrong with the bytes on the wire.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("invalid message length {len} for message type {tag:?}")]
    InvalidLength { tag: char, len: i64 },
    #[error("message type {tag:?} is {len} bytes, over the {max}-byte limit")]
    TooLarge { tag: char, len: usize, max: usize },
    #[error("invalid frontend message type {0}")]
    UnknownTag(u8),
    #[error("unexpected message type {tag:?} {during}")]
    Unexpected { tag: char, during: &'static str },
    #[error("connection closed in the middle of a message")]
    Truncated,
    #[error("invalid startup packet: {0}")]
    BadStartup(String),
    #[error("malformed {0} message")]
    Malformed(&'static str),
    #[error("unsupported frontend protocol {major}.{minor}: server supports 3.0 to 3.2")]
    UnsupportedVersion { major: u16, minor: u16 },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl ProtocolError {
    /// True when the peer simply went away (no error to report to anyone).
    pub fn is_disconnect(&self) -> bool {
        match self {
            ProtocolError::Truncated => true,
            ProtocolError::Io(e) => matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::ConnectionAborted
            ),
            _ => false,
        }
    }
}

/// A parsed message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub tag: u8,
    /// Total frame length including the tag byte.
    pub frame_len: usize,
}

impl Header {
    /// Parse a header from the first five bytes of `buf`. `Ok(None)` if fewer
    /// than five bytes are available.
    #[inline]
    pub fn parse(buf: &[u8], max: usize) -> Result<Option<Header>, ProtocolError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let tag = buf[0];
        let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
        if len < 4 {
            return Err(ProtocolError::InvalidLength {
                tag: tag as char,
                len: len as i64,
            });
        }
        let len = len as usize;
        if len > max {
            return Err(ProtocolError::TooLarge {
                tag: tag as char,
                len,
                max,
            });
        }
        Ok(Some(Header {
            tag,
            frame_len: len + 1,
        }))
    }

    /// Length of the body (after the 5 header bytes).
    #[inline]
    pub fn body_len(&self) -> usize {
        self.frame_len - HEADER_LEN
    }
}

/// One whole tagged message.
#[derive(Debug, Clone)]
pub struct Frame {
    pub tag: u8,
    /// The complete message, header included, exactly as on the wire.
    pub bytes: BytesMut,
}

impl Frame {
    /// The body, after the tag and length.
    pub fn body(&self) -> &[u8] {
        &self.bytes[HEADER_LEN..]
    }
}

/// Read one whole message during startup/authentication, where messages are
/// small and handled one at a time. `Ok(None)` on a clean EOF between messages.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Option<Frame>, ProtocolError> {
    loop {
        if let Some(header) = Header::parse(buf, max)? {
            if buf.len() >= header.frame_len {
                let bytes = buf.split_to(header.frame_len);
                return Ok(Some(Frame {
                    tag: header.tag,
                    bytes,
                }));
            }
            buf.reserve(header.frame_len - buf.len());
        }
        if reader.read_buf(buf).await? == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(ProtocolError::Truncated)
            };
        }
    }
}

/// The NUL-terminated string at the front of `b` (without its NUL), and what follows it.
#[inline]
pub fn cstr(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = b.iter().position(|&x| x == 0)?;
    Some((&b[..end], &b[end + 1..]))
}

/// Read a NUL-terminated string from the front of `buf`.
pub fn take_cstr(buf: &mut &[u8]) -> Option<String> {
    let (s, rest) = cstr(buf)?;
    let s = String::from_utf8_lossy(s).into_owned();
    *buf = rest;
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_rejects_short_and_negative_lengths() {
        assert!(matches!(
            Header::parse(&[b'Q', 0, 0, 0, 3], MAX_MESSAGE_LEN),
            Err(ProtocolError::InvalidLength { len: 3, .. })
        ));
        assert!(matches!(
            Header::parse(&[b'Q', 0xff, 0xff, 0xff, 0xff], MAX_MESSAGE_LEN),
            Err(ProtocolError::InvalidLength { len: -1, .. })
        ));
    }

    #[test]
    fn header_rejects_over_one_gib() {
        let len = (MAX_MESSAGE_LEN as u32 + 1).to_be_bytes();
        assert!(matches!(
            Header::parse(&[b'D', len[0], len[1], len[2], len[3]], MAX_MESSAGE_LEN),
            Err(ProtocolError::TooLarge { .. })
        ));
    }

    #[test]
    fn header_needs_five_bytes() {
        assert_eq!(Header::parse(&[b'Q', 0, 0], 100).ok().flatten(), None);
        assert_eq!(
            Header::parse(&[b'S', 0, 0, 0, 4], 100).ok().flatten(),
            Some(Header {
                tag: b'S',
                frame_len: 5
            })
        );
    }

    #[test]
    fn password_message_is_not_a_session_message() {
        assert!(!is_frontend_tag(b'p'));
        assert!(is_frontend_tag(b'Q'));
        assert!(!is_frontend_tag(b'Z'));
    }

    #[tokio::test]
    async fn read_frame_reports_truncation() {
        let mut input: &[u8] = &[b'Q', 0, 0, 0, 10, b'a'];
        let mut buf = BytesMut::new();
        let err = read_frame(&mut input, &mut buf, 100).await;
        assert!(matches!(err, Err(ProtocolError::Truncated)));
    }
}
