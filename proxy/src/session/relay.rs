//! The established session: frames flow both ways.
//!
//! Each direction reads whatever the socket has (up to a bounded buffer),
//! walks the frame headers in it, and writes every complete or partial frame it
//! does not need to change in one write. Frames are never decoded unless
//! they must be; a frame longer than the buffer streams through in pieces, so
//! nothing ever holds a whole row or a whole result. The two directions run
//! concurrently in one task, so a client that is slow to read only stalls its
//! own session, and a pipelining client cannot deadlock against the server.
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::context::ServerContext;
use crate::metrics::{Command, Metrics};
use crate::protocol::backend::command_word;
use crate::protocol::frame::{is_frontend_tag, Header, HEADER_LEN, MAX_MESSAGE_LEN};
use crate::protocol::ProtocolError;
use crate::session::auth::Established;
use crate::session::closing::{finish, idle_watch, log_end, Activity, End};
use crate::session::commands::{self, PreparedCommands};
use crate::session::halves::{fill, with_halves, Flags, ReadHalf, WriteHalf};

/// Frames the relay reads whole must fit in this many bytes.
const MAX_INSPECTED_FRAME: usize = 4 * 1024;
/// Outstanding Query/Sync timestamps kept for the latency histogram.
const MAX_PENDING_TIMINGS: usize = 1024;
/// After a client's protocol violation, how long pgveil waits for the answers
/// to the valid messages before it (as PostgreSQL would do after them).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// State both directions share. They run in the same task, so the mutex is
/// never contended; it exists to satisfy `Send`.
struct Shared<'a> {
    metrics: &'a Metrics,
    flags: Flags,
    /// Outstanding Query/Sync/FunctionCall: when sent, and which command.
    pending: Mutex<VecDeque<(Instant, Command)>>,
    /// True while a write to the client is in progress.
    client_writing: AtomicBool,
    /// Set after a client protocol violation: stop once answers are delivered.
    draining: AtomicBool,
}

impl Shared<'_> {
    #[inline]
    fn query_started(&self, command: Command) {
        if let Ok(mut q) = self.pending.lock() {
            if q.len() < MAX_PENDING_TIMINGS {
                q.push_back((Instant::now(), command));
            }
        }
    }

    /// The command of the oldest outstanding request (the one an
    /// ErrorResponse answers).
    fn current_command(&self) -> Command {
        let front = self.pending.lock().ok().and_then(|q| q.front().copied());
        front.map_or(Command::UNKNOWN, |(_, c)| c)
    }

    fn has_pending(&self) -> bool {
        self.pending.lock().map(|q| !q.is_empty()).unwrap_or(false)
    }

    #[inline]
    fn query_finished(&self) {
        let started = self.pending.lock().ok().and_then(|mut q| q.pop_front());
        if let Some((t, _)) = started {
            self.metrics
                .query_duration_end_to_end
                .observe(t.elapsed().as_secs_f64());
        }
    }
}

/// Relay frames until either side closes, then close both.
pub async fn run(ctx: &ServerContext, est: Established, peer: SocketAddr) {
    let Established {
        client,
        server,
        client_buf,
        server_buf,
        ..
    } = est;
    let shared = Shared {
        metrics: &ctx.metrics,
        flags: Flags::new(Activity::new(ctx.config.idle_timeout)),
        pending: Mutex::new(VecDeque::new()),
        client_writing: AtomicBool::new(false),
        draining: AtomicBool::new(false),
    };
    let end = with_halves!(client, server, |c, s| {
        relay_halves(ctx, &shared, (c, client_buf), (s, server_buf)).await
    });
    log_end(ctx, peer, &end, shared.flags.server_said_why());
}

/// Run both directions plus the idle and shutdown watchers; the first to finish ends the
/// session; then tell the client why.
async fn relay_halves<CR: ReadHalf, CW: WriteHalf, SR: ReadHalf, SW: WriteHalf>(
    ctx: &ServerContext,
    shared: &Shared<'_>,
    ((mut cr, mut cw), mut cbuf): ((CR, CW), BytesMut),
    ((mut sr, mut sw), mut sbuf): ((SR, SW), BytesMut),
) -> End {
    let cw = &mut cw;
    let mut s_cursor = Cursor::default();
    let end = tokio::select! {
        end = client_to_server(shared, &mut cr, &mut sw, &mut cbuf) => end,
        end = server_to_client(shared, &mut sr, cw, &mut sbuf, &mut s_cursor) => end,
        end = idle_watch(&shared.flags.activity, ctx.config.idle_timeout) => end,
        _ = ctx.force_close.cancelled() => End::Shutdown,
    };
    let terminated = shared.flags.terminated();
    if let (End::ClientError(e), false) = (&end, terminated) {
        // Like PostgreSQL, answer what came before the bad message first.
        let consistent = !shared.client_writing.load(Ordering::Relaxed);
        if !e.is_disconnect() && consistent && shared.has_pending() {
            shared.draining.store(true, Ordering::Relaxed);
            let drain = server_to_client(shared, &mut sr, cw, &mut sbuf, &mut s_cursor);
            let _ = tokio::time::timeout(DRAIN_TIMEOUT, drain).await;
        }
    }
    let end = end.after_terminate(terminated);
    finish(cw, &end, shared.flags.client_at_boundary()).await;
    end
}

/// Progress through the frames of one direction, across reads.
#[derive(Default)]
struct Cursor {
    /// Bytes of the current frame that are still to come and pass untouched.
    remaining: usize,
}

/// What a direction wants to do with a frame whose header it has seen.
enum Inspect {
    /// Forward it untouched without looking at the body.
    Pass,
    /// Forward it, but let `on_frame` see the whole body first.
    Whole,
}

impl Cursor {
    /// Walk the frames in `buf`; return how many leading bytes may be forwarded.
    /// `classify` sees each header; `on_frame` sees whole frames it asked for.
    #[inline]
    fn scan(
        &mut self,
        buf: &[u8],
        max_len: usize,
        mut classify: impl FnMut(&Header) -> Result<Inspect, ProtocolError>,
        mut on_frame: impl FnMut(u8, &[u8]),
    ) -> (usize, Option<ProtocolError>) {
        let mut pos = self.remaining.min(buf.len());
        self.remaining -= pos;
        while pos < buf.len() {
            let header = match Header::parse(&buf[pos..], max_len) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => return (pos, Some(e)),
            };
            let available = buf.len() - pos;
            match classify(&header) {
                Err(e) => return (pos, Some(e)),
                Ok(Inspect::Whole) if header.frame_len <= MAX_INSPECTED_FRAME => {
                    if available < header.frame_len {
                        break; // wait for the rest of this small frame
                    }
                    on_frame(header.tag, &buf[pos + HEADER_LEN..pos + header.frame_len]);
                    pos += header.frame_len;
                }
                Ok(_) => {
                    if available < header.frame_len {
                        self.remaining = header.frame_len - available;
                        pos = buf.len();
                    } else {
                        pos += header.frame_len;
                    }
                }
            }
        }
        (pos, None)
    }
}

async fn write_out<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    w.write_all(bytes).await?;
    w.flush().await
}

/// Client to server: validate every header (tag and length), note the start
/// of each query for the latency histogram, forward everything untouched.
async fn client_to_server<R, W>(
    shared: &Shared<'_>,
    r: &mut R,
    w: &mut W,
    buf: &mut BytesMut,
) -> End
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut cursor = Cursor::default();
    let mut statements = PreparedCommands::default();
    loop {
        let (forward, error) = cursor.scan(
            buf,
            MAX_MESSAGE_LEN,
            |h| {
                if shared.flags.terminated() {
                    // PostgreSQL never reads past Terminate; neither does pgveil.
                    return Err(ProtocolError::Unexpected {
                        tag: h.tag as char,
                        during: "after Terminate",
                    });
                }
                if !is_frontend_tag(h.tag) {
                    return Err(ProtocolError::UnknownTag(h.tag));
                }
                Ok(match h.tag {
                    // Small enough to read whole (see `scan`): their command is noted below.
                    b'Q' | b'P' | b'B' | b'S' if h.frame_len <= MAX_INSPECTED_FRAME => {
                        Inspect::Whole
                    }
                    b'Q' | b'F' => {
                        shared.query_started(Command::UNKNOWN);
                        Inspect::Pass
                    }
                    b'X' => {
                        shared.flags.set_terminated();
                        Inspect::Pass
                    }
                    _ => Inspect::Pass,
                })
            },
            |tag, body| match tag {
                b'Q' => shared.query_started(commands::of_query(body)),
                b'P' => statements.on_parse(body),
                b'B' => statements.on_bind(body),
                b'S' => shared.query_started(statements.take_batch()),
                _ => {}
            },
        );
        if forward > 0 {
            if let Err(e) = write_out(w, &buf[..forward]).await {
                return End::ServerError(ProtocolError::Io(e));
            }
            buf.advance(forward);
        }
        if shared.flags.terminated() && cursor.remaining == 0 {
            return after_terminate(r, buf).await;
        }
        if let Some(e) = error {
            return End::ClientError(e);
        }
        match fill(r, buf).await {
            Ok(0) if buf.is_empty() && cursor.remaining == 0 => return End::ClientClosed,
            Ok(0) => return End::ClientError(ProtocolError::Truncated),
            Ok(n) => {
                shared.metrics.client_received_bytes.inc_by(n as u64);
                shared.flags.activity.touch();
            }
            Err(e) => return End::ClientError(ProtocolError::Io(e)),
        }
    }
}

/// After Terminate, the server closes on its own once it has answered what
/// came before; the session ends then (or when writing to the client fails).
/// Meanwhile read and drop whatever the client still sends until it closes,
/// so its close never turns into a reset. Only a broken client socket ends
/// the session from this side.
async fn after_terminate<R: AsyncRead + Unpin>(r: &mut R, buf: &mut BytesMut) -> End {
    loop {
        buf.clear();
        match fill(r, buf).await {
            Ok(0) => return std::future::pending().await,
            Ok(_) => {}
            Err(e) => return End::ClientError(ProtocolError::Io(e)),
        }
    }
}

/// Server to client: count completions and errors, time queries, forward
/// everything untouched.
async fn server_to_client<R, W>(
    shared: &Shared<'_>,
    r: &mut R,
    w: &mut W,
    buf: &mut BytesMut,
    cursor: &mut Cursor,
) -> End
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let metrics = shared.metrics;
    loop {
        let (forward, error) = cursor.scan(
            buf,
            i32::MAX as usize,
            |h| {
                shared.flags.set_server_said_why(h.tag == b'E');
                Ok(match h.tag {
                    b'C' => Inspect::Whole,
                    b'Z' => {
                        shared.query_finished();
                        Inspect::Pass
                    }
                    b'E' => {
                        metrics.query_failed(shared.current_command());
                        Inspect::Pass
                    }
                    _ => Inspect::Pass,
                })
            },
            |tag, body| {
                if tag == b'C' {
                    metrics.query_completed(command_word(body));
                }
            },
        );
        if forward > 0 {
            shared.flags.set_client_at_boundary(false);
            shared.client_writing.store(true, Ordering::Relaxed);
            if let Err(e) = write_out(w, &buf[..forward]).await {
                return End::ClientError(ProtocolError::Io(e));
            }
            shared.client_writing.store(false, Ordering::Relaxed);
            metrics.client_sent_bytes.inc_by(forward as u64);
            buf.advance(forward);
            shared.flags.set_client_at_boundary(cursor.remaining == 0);
        }
        if let Some(e) = error {
            return End::ServerError(e);
        }
        if shared.draining.load(Ordering::Relaxed) && cursor.remaining == 0 && !shared.has_pending()
        {
            return End::Drained;
        }
        match fill(r, buf).await {
            Ok(0) if buf.is_empty() && cursor.remaining == 0 => return End::ServerClosed,
            Ok(0) => return End::ServerError(ProtocolError::Truncated),
            Ok(_) => shared.flags.activity.touch(),
            Err(e) => return End::ServerError(ProtocolError::Io(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn scan_forwards_complete_frames_and_keeps_partial_headers() {
        let mut bytes = frame(b'Q', b"select 1\0");
        bytes.extend_from_slice(&[b'S', 0, 0]);
        let mut c = Cursor::default();
        let (fwd, err) = c.scan(&bytes, MAX_MESSAGE_LEN, |_| Ok(Inspect::Pass), |_, _| {});
        assert!(err.is_none());
        assert_eq!(fwd, bytes.len() - 3);
        assert_eq!(c.remaining, 0);
    }

    #[test]
    fn scan_streams_long_frames_in_pieces() {
        let big = frame(b'D', &vec![7u8; 1000]);
        let mut c = Cursor::default();
        let (fwd, _) = c.scan(
            &big[..100],
            MAX_MESSAGE_LEN,
            |_| Ok(Inspect::Pass),
            |_, _| {},
        );
        assert_eq!(fwd, 100);
        assert_eq!(c.remaining, big.len() - 100);
        let (fwd, _) = c.scan(
            &big[100..600],
            MAX_MESSAGE_LEN,
            |_| Ok(Inspect::Pass),
            |_, _| {},
        );
        assert_eq!(fwd, 500);
        let mut rest = big[600..].to_vec();
        rest.extend_from_slice(&frame(b'Z', b"I"));
        let mut seen = Vec::new();
        let (fwd, _) = c.scan(
            &rest,
            MAX_MESSAGE_LEN,
            |h| {
                seen.push(h.tag);
                Ok(Inspect::Pass)
            },
            |_, _| {},
        );
        assert_eq!(fwd, rest.len());
        assert_eq!(seen, vec![b'Z']);
    }

    #[test]
    fn scan_waits_for_whole_inspected_frames() {
        let c_frame = frame(b'C', b"SELECT 1\0");
        let mut c = Cursor::default();
        let (fwd, _) = c.scan(&c_frame[..8], 100, |_| Ok(Inspect::Whole), |_, _| {});
        assert_eq!(fwd, 0);
        let mut got = Vec::new();
        let (fwd, _) = c.scan(
            &c_frame,
            100,
            |_| Ok(Inspect::Whole),
            |_, b| got = b.to_vec(),
        );
        assert_eq!(fwd, c_frame.len());
        assert_eq!(got, b"SELECT 1\0");
    }

    #[test]
    fn scan_stops_at_a_bad_frame_after_forwarding_good_ones() {
        let mut bytes = frame(b'Q', b"x\0");
        let good = bytes.len();
        bytes.extend_from_slice(&[b'Q', 0xff, 0xff, 0xff, 0xf0]);
        let mut c = Cursor::default();
        let (fwd, err) = c.scan(&bytes, MAX_MESSAGE_LEN, |_| Ok(Inspect::Pass), |_, _| {});
        assert_eq!(fwd, good);
        assert!(matches!(err, Some(ProtocolError::InvalidLength { .. })));
    }
}
