//! What both relays (pass-through and enforced) need to run two directions over one session:
//! the streams split into halves, and the flags the directions share.
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use super::closing::Activity;

/// The read half of a client or server stream.
pub trait ReadHalf: AsyncRead + Unpin {}
impl<T: AsyncRead + Unpin> ReadHalf for T {}

/// The write half of a client or server stream.
pub trait WriteHalf: AsyncWrite + Unpin {}
impl<T: AsyncWrite + Unpin> WriteHalf for T {}

/// Starting size of each direction's buffer; idle sessions stay this small.
pub const INITIAL_BUF: usize = 8 * 1024;
/// Largest size a direction's buffer grows to by itself (a frame read whole may reserve more).
const MAX_BUF: usize = 64 * 1024;

/// Read into `buf` with bounded growth; returns the byte count (0 = EOF).
pub async fn fill<R: ReadHalf>(r: &mut R, buf: &mut BytesMut) -> std::io::Result<usize> {
    if buf.is_empty() && buf.capacity() > INITIAL_BUF * 2 {
        // Traffic went quiet after a burst: give the memory back.
        *buf = BytesMut::with_capacity(INITIAL_BUF);
    }
    if buf.capacity() - buf.len() < 1024 {
        let target = (buf.capacity() * 2)
            .clamp(INITIAL_BUF, MAX_BUF)
            .max(buf.len() + 1024);
        buf.reserve(target - buf.len());
    }
    r.read_buf(buf).await
}

/// Split the client and server streams into read and write halves and run `$body` with them
/// bound to `$client` and `$server` (each a `(read, write)` pair). Plain sockets split into
/// owned halves without a lock; TLS streams go through tokio's split.
macro_rules! with_halves {
    ($client_stream:expr, $server_stream:expr, |$client:ident, $server:ident| $body:expr) => {
        match ($client_stream, $server_stream) {
            ($crate::stream::MaybeTls::Plain(c), $crate::stream::MaybeTls::Plain(s)) => {
                let ($client, $server) = (c.into_split(), s.into_split());
                $body
            }
            ($crate::stream::MaybeTls::Plain(c), $crate::stream::MaybeTls::Unix(s)) => {
                let ($client, $server) = (c.into_split(), s.into_split());
                $body
            }
            (c, s) => {
                let ($client, $server) = (tokio::io::split(c), tokio::io::split(s));
                $body
            }
        }
    };
}
pub(crate) use with_halves;

/// Flags both directions of a session read and write. They run in one task, so relaxed
/// atomics suffice; they exist to satisfy `Send`.
pub struct Flags {
    pub activity: Activity,
    /// True while every byte written to the client ends on a frame boundary, so pgveil may
    /// append an ErrorResponse of its own.
    client_at_boundary: AtomicBool,
    /// The last frame the server sent was an ErrorResponse (a FATAL one, if the server then
    /// closes), so pgveil need not add its own.
    server_said_why: AtomicBool,
    /// The client sent Terminate: from now on it is owed nothing but a close.
    terminated: AtomicBool,
}

impl Flags {
    pub fn new(activity: Activity) -> Flags {
        Flags {
            activity,
            client_at_boundary: AtomicBool::new(true),
            server_said_why: AtomicBool::new(false),
            terminated: AtomicBool::new(false),
        }
    }

    pub fn client_at_boundary(&self) -> bool {
        self.client_at_boundary.load(Ordering::Relaxed)
    }

    pub fn set_client_at_boundary(&self, v: bool) {
        self.client_at_boundary.store(v, Ordering::Relaxed);
    }

    pub fn server_said_why(&self) -> bool {
        self.server_said_why.load(Ordering::Relaxed)
    }

    pub fn set_server_said_why(&self, v: bool) {
        self.server_said_why.store(v, Ordering::Relaxed);
    }

    pub fn terminated(&self) -> bool {
        self.terminated.load(Ordering::Relaxed)
    }

    pub fn set_terminated(&self) {
        self.terminated.store(true, Ordering::Relaxed);
    }
}
