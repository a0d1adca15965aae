//! The client direction: whole messages in, one short step per message type, what the server
//! gets out. For every message that gets an answer, what to expect is queued before the message
//! leaves.
use std::borrow::Cow;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::expect::{Expect, PROBE_SQL};
use super::queue::Queue;
use super::Shared;
use crate::audit::AuditSink;
use crate::enforce::frontend::{Frontend, Judged};
use crate::enforce::reading::Barrier;
use crate::metrics::Command;
use crate::protocol::encoding;
use crate::protocol::frame::{is_frontend_tag, Header, MAX_MESSAGE_LEN};
use crate::protocol::frontend as msg;
use crate::protocol::ProtocolError;
use crate::session::closing::End;
use crate::session::halves::fill as read_more;

pub struct ClientToServer<'a, SW> {
    frontend: Frontend,
    shared: &'a Shared,
    pending: &'a Queue<Expect>,
    sw: SW,
    /// Bytes for the server, written when the client's buffer holds no further message.
    out: BytesMut,
    audit: Option<AuditSink>,
    /// The last barrier sent (a statement that may change how SQL is read), until answered.
    barrier: Option<u64>,
    /// An extended-protocol barrier was sent and its batch has no Sync yet.
    barrier_unsynced: bool,
    /// A barrier not yet answered may change how SQL is read (not only who is asking).
    barrier_reading: bool,
    /// Extended-protocol messages were sent since the last Sync: pgveil cannot slip a query
    /// of its own in before the next one.
    unsynced: bool,
}

/// Whether a text that needs the analysis can be judged now.
enum Ready {
    Yes,
    /// A statement before it that may change how SQL is read or who is asking has not been
    /// answered, and cannot be waited for (its batch has no Sync yet).
    Unsettled,
    /// The server could not tell the current role (the SQLSTATE of its answer).
    RoleUnknown(String),
    /// The text is not valid in the session's client encoding (the server's answer to it).
    Invalid(encoding::Invalid),
    /// Refused before it could be judged.
    Refused(crate::sql::Refusal),
}

/// A statement's text as the server reads it.
type Text<'t> = Cow<'t, [u8]>;

/// What a message step tells the read loop.
enum Step {
    Next,
    /// The client sent Terminate.
    Terminated,
}

type Stepped = Result<Step, End>;

fn malformed(e: ProtocolError) -> End {
    End::ClientError(e)
}

impl<'a, SW: AsyncWrite + Unpin> ClientToServer<'a, SW> {
    pub fn new(
        frontend: Frontend,
        shared: &'a Shared,
        pending: &'a Queue<Expect>,
        sw: SW,
        audit: Option<AuditSink>,
    ) -> Self {
        ClientToServer {
            frontend,
            shared,
            pending,
            sw,
            out: BytesMut::new(),
            audit,
            barrier: None,
            barrier_unsynced: false,
            barrier_reading: false,
            unsynced: false,
        }
    }

    /// Before judging a text: the session's reading settled and, where the database protects
    /// anything, its current role known. After a statement that may have changed the role,
    /// the server is asked ([`PROBE_SQL`]) when pgveil can put a query of its own in
    /// (`boundary`: no extended-protocol batch is open); else the text is judged with the role
    /// last known, and refused if its judgement depends on the role.
    async fn ready(&mut self, sql: &[u8], boundary: bool) -> Result<Ready, End> {
        if !self.settled(sql).await? {
            return Ok(Ready::Unsettled);
        }
        self.frontend.role_known(true);
        if self.shared.take_role_reported() {
            self.frontend.role_may_change();
        }
        if !self.frontend.role_matters() || !self.frontend.needs_analysis(sql) {
            return Ok(Ready::Yes);
        }
        if !boundary {
            // Judged with the role last known: what depends on who is asking is refused.
            self.frontend.role_known(false);
            return Ok(Ready::Yes);
        }
        self.expect(Expect::Probe {
            role: None,
            error: None,
        })
        .await?;
        self.out.extend_from_slice(&msg::query_frame(PROBE_SQL));
        let id = self.shared.probe_sent();
        self.wait_for(id).await?;
        match self.shared.take_probed() {
            Some(Ok(role)) => {
                self.frontend.set_role(role);
                Ok(Ready::Yes)
            }
            Some(Err(code)) => Ok(Ready::RoleUnknown(code)),
            None => Ok(Ready::RoleUnknown("no answer".into())),
        }
    }

    /// Send what is buffered and wait until the server has answered barrier `id`.
    async fn wait_for(&mut self, id: u64) -> Result<(), End> {
        self.flush()
            .await
            .map_err(|e| End::ServerError(ProtocolError::Io(e)))?;
        loop {
            let settled = self.shared.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            if self.shared.barriers_done() >= id {
                return Ok(());
            }
            settled.await;
        }
    }

    /// Before judging a text that needs the analysis: whether the session's reading is
    /// settled. After a barrier, wait for the server's answer when it will come without the
    /// client (the barrier's Query, or its batch's Sync, was sent); `false` when it cannot
    /// come yet (the statement is then refused).
    async fn settled(&mut self, sql: &[u8]) -> Result<bool, End> {
        let Some(id) = self.barrier else {
            return Ok(true);
        };
        if self.shared.barriers_done() >= id {
            self.barrier = None;
            self.barrier_reading = false;
            return Ok(true);
        }
        // A text that needs no analysis passes without waiting, unless the pending barrier may
        // change the encoding and the text is not ASCII (which reads the same in every
        // encoding): read in the encoding about to change, its words may not be the server's.
        if !self.frontend.needs_analysis(sql) && (sql.is_ascii() || !self.barrier_reading) {
            return Ok(true);
        }
        if self.barrier_unsynced {
            // A role switch alone: the text is judged with the role last known, and refused
            // if its judgement depends on it (see `ready`).
            return Ok(!self.barrier_reading);
        }
        self.wait_for(id).await?;
        self.barrier = None;
        self.barrier_reading = false;
        Ok(true)
    }

    /// A message that may change how SQL is read was sent; `closed`: its cycle ends with it
    /// (a Query), else with the batch's Sync.
    fn barrier_sent(&mut self, closed: bool, barrier: Barrier) {
        self.barrier = Some(self.shared.barrier_sent());
        self.barrier_unsynced = !closed;
        self.barrier_reading |= barrier == Barrier::Reading;
        self.frontend.role_may_change();
    }

    pub async fn run<R: AsyncRead + Unpin>(&mut self, mut cr: R, mut buf: BytesMut) -> End {
        loop {
            loop {
                let header = match Header::parse(&buf, MAX_MESSAGE_LEN) {
                    Ok(Some(h)) => h,
                    Ok(None) => break,
                    Err(e) => return End::ClientError(e),
                };
                if !is_frontend_tag(header.tag) {
                    return End::ClientError(ProtocolError::UnknownTag(header.tag));
                }
                if buf.len() < header.frame_len {
                    buf.reserve(header.frame_len - buf.len());
                    break;
                }
                let frame = buf.split_to(header.frame_len).freeze();
                match self.on_message(header.tag, frame).await {
                    Ok(Step::Next) => self.write_audit().await,
                    Ok(Step::Terminated) => {
                        // Forward Terminate, then read and drop whatever the client still
                        // sends (so its close is never a reset) while the answers to what came
                        // before still reach it; the server's close ends the session.
                        let _ = self.flush().await;
                        let mut sink = [0u8; 4096];
                        while matches!(cr.read(&mut sink).await, Ok(n) if n > 0) {}
                        return std::future::pending().await;
                    }
                    Err(end) => return end,
                }
            }
            if let Err(e) = self.flush().await {
                return End::ServerError(ProtocolError::Io(e));
            }
            match read_more(&mut cr, &mut buf).await {
                Ok(0) if buf.is_empty() => return End::ClientClosed,
                Ok(0) => return End::ClientError(ProtocolError::Truncated),
                Ok(n) => {
                    let metrics = &self.frontend.enforcer.enforcement().metrics;
                    metrics.client_received_bytes.inc_by(n as u64);
                    self.shared.flags.activity.touch()
                }
                Err(e) => return End::ClientError(ProtocolError::Io(e)),
            }
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        self.sw.write_all(&self.out).await?;
        self.sw.flush().await?;
        self.out.clear();
        Ok(())
    }

    /// Write the audit records the last message raised (waiting while the log's queue is full).
    async fn write_audit(&mut self) {
        let entries = self.frontend.entries();
        if entries.is_empty() {
            return;
        }
        match &self.audit {
            Some(sink) => sink.write_entries(entries).await,
            None => entries.clear(),
        }
    }

    /// Queue an expectation; when the queue is full, first let the server see what it must
    /// answer, and ask it to send its answers now (Flush: the server holds the answers to an
    /// extended-protocol pipeline until Sync or a full buffer), then wait.
    async fn expect(&mut self, e: Expect) -> Result<(), End> {
        match self.pending.try_push(e) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.out.extend_from_slice(&msg::FLUSH);
                self.flush()
                    .await
                    .map_err(|e| End::ServerError(ProtocolError::Io(e)))?;
                self.pending.push(e).await;
                Ok(())
            }
        }
    }

    /// Queue `expect`, then the message the server gets: the client's, or its replacement.
    async fn forward(&mut self, expect: Expect, frame: &Bytes, send: Option<BytesMut>) -> Stepped {
        self.expect(expect).await?;
        match send {
            Some(f) => self.out.extend_from_slice(&f),
            None => self.out.extend_from_slice(frame),
        }
        Ok(Step::Next)
    }

    async fn on_message(&mut self, tag: u8, frame: Bytes) -> Stepped {
        if self.frontend.copy_message(tag, &frame, &mut self.out) {
            return Ok(Step::Next);
        }
        if matches!(tag, b'Q' | b'S' | b'F') {
            self.shared.query_started();
        }
        let boundary = !self.unsynced;
        match tag {
            b'P' | b'B' | b'D' | b'E' | b'C' => self.unsynced = true,
            b'S' => self.unsynced = false,
            _ => {}
        }
        match tag {
            b'Q' => self.query(frame, boundary).await,
            b'P' => self.parse(frame, boundary).await,
            b'B' => self.bind(frame, boundary).await,
            b'D' => self.describe(frame).await,
            b'E' => self.execute(frame).await,
            b'C' => self.close(frame).await,
            b'S' => {
                let barrier = std::mem::take(&mut self.barrier_unsynced);
                self.forward(Expect::Sync { barrier }, &frame, None).await
            }
            b'F' => {
                let j = self.frontend.fast_path_call(&frame[5..]).await;
                let e = Expect::FunctionCall { replace: j.refusal };
                self.forward(e, &frame, j.send).await
            }
            b'X' => {
                self.shared.flags.set_terminated();
                self.out.extend_from_slice(&frame);
                Ok(Step::Terminated)
            }
            _ => {
                self.out.extend_from_slice(&frame);
                Ok(Step::Next)
            }
        }
    }

    /// A statement's text as the server reads it (decoded from the session's client encoding
    /// when that is not UTF8), and whether it may be judged now. Decoded again if the encoding
    /// changed while an earlier statement was awaited.
    async fn read<'t>(&mut self, raw: &'t [u8], boundary: bool) -> Result<(Text<'t>, Ready), End> {
        for _ in 0..2 {
            let enc = self.shared.encoding();
            let text = match enc.filter(|e| !e.is_utf8()) {
                None => Cow::Borrowed(raw),
                Some(e) => match e.decode(raw) {
                    Ok(t) => Cow::Owned(t.into_owned().into_bytes()),
                    // Not text in this encoding: perhaps in the one a pending barrier sets.
                    Err(invalid) => match self.barrier {
                        Some(_) if self.barrier_reading => {
                            if !self.settled(raw).await? {
                                return Ok((Cow::Borrowed(raw), Ready::Unsettled));
                            }
                            continue;
                        }
                        _ => return Ok((Cow::Borrowed(raw), Ready::Invalid(invalid))),
                    },
                },
            };
            let ready = self.ready(&text, boundary).await?;
            if self.shared.encoding() == enc {
                self.frontend.set_encoding(enc.unwrap_or_default());
                return Ok((text, ready));
            }
        }
        Ok((Cow::Borrowed(raw), Ready::Unsettled))
    }

    /// What the frontend sends in place of a message, and pgveil's error, in the client
    /// encoding (the frontend works in UTF-8).
    fn encoded(&mut self, j: &mut Judged) {
        let Some(enc) = self.shared.encoding().filter(|e| !e.is_utf8()) else {
            return;
        };
        if let Some(send) = j.send.take() {
            match encoding::frame_in(&send, enc) {
                Ok(f) => j.send = Some(f),
                Err(e) => {
                    // Cannot happen for text decoded from this encoding; never sent altered.
                    let r = crate::sql::Refusal::invalid_text(
                        encoding::UNTRANSLATABLE_CHARACTER,
                        &e.to_string(),
                    );
                    let name = (send.first() == Some(&b'P'))
                        .then(|| msg::parse(&send[5..]).map(|p| p.name.to_vec()).ok())
                        .flatten();
                    *j = self.frontend.refused_unjudged(name.as_deref(), r);
                }
            }
        }
        if let Some(r) = j.refusal.take() {
            j.refusal = Some(encoding::notice_in(&r, enc));
        }
    }

    async fn query(&mut self, frame: Bytes, boundary: bool) -> Stepped {
        let raw = msg::query_text(&frame[5..]).map_err(malformed)?;
        let (sql, ready) = self.read(raw, boundary).await?;
        let command = Command::from_sql(&sql);
        let effects = may_deallocate(&sql).then(|| match &sql {
            Cow::Borrowed(s) => frame.slice_ref(s),
            Cow::Owned(s) => Bytes::copy_from_slice(s),
        });
        let mut judged = match ready {
            Ready::Yes => {
                let changed = self.shared.changed_transaction();
                self.frontend
                    .query(&sql, self.shared.readable(), changed)
                    .await
            }
            Ready::Unsettled => self.frontend.refused_unsettled(None),
            Ready::Refused(r) => self.frontend.refused_unjudged(None, r),
            Ready::RoleUnknown(code) => self.frontend.refused_role_unknown(None, &code),
            Ready::Invalid(reason) => self.frontend.refused_unjudged(None, invalid_text(&reason)),
        };
        self.encoded(&mut judged);
        let Judged {
            send,
            refusal,
            plan,
            barrier,
            ..
        } = judged;
        self.shared.set_scrub(self.frontend.scrubs());
        self.shared.note_ddl_matters(self.frontend.ddl_matters());
        let effects = if refusal.is_some() { None } else { effects };
        if barrier != Barrier::None {
            self.barrier_sent(true, barrier);
        }
        let e = Expect::Query {
            command,
            plans: plan.map(|p| p.rows.clone()).unwrap_or_default(),
            replace: refusal,
            effects,
            barrier: barrier != Barrier::None,
        };
        self.forward(e, &frame, send).await
    }

    async fn parse(&mut self, frame: Bytes, boundary: bool) -> Stepped {
        let raw = msg::parse(&frame[5..]).map_err(malformed)?;
        let (sql, mut ready) = self.read(raw.sql, boundary).await?;
        if let Some(r) = self.legacy_name(&[raw.name]) {
            ready = Ready::Refused(r);
        }
        let p = msg::Parse { sql: &sql, ..raw };
        let command = Command::from_sql(p.sql);
        let name = frame.slice_ref(p.name);
        let (mut j, seq) = match ready {
            Ready::Yes => {
                let changed = self.shared.changed_transaction();
                self.frontend
                    .parse(&name, &p, self.shared.readable(), changed)
                    .await
            }
            Ready::Invalid(reason) => {
                let r = invalid_text(&reason);
                let j = self.frontend.refused_unjudged(Some(&name), r);
                (j, self.frontend.parse_refused(&name))
            }
            Ready::Refused(r) => {
                let j = self.frontend.refused_unjudged(Some(&name), r);
                (j, self.frontend.parse_refused(&name))
            }
            Ready::Unsettled => {
                let j = self.frontend.refused_unsettled(Some(&name));
                (j, self.frontend.parse_refused(&name))
            }
            Ready::RoleUnknown(code) => {
                let j = self.frontend.refused_role_unknown(Some(&name), &code);
                (j, self.frontend.parse_refused(&name))
            }
        };
        self.encoded(&mut j);
        self.shared.set_scrub(self.frontend.scrubs());
        self.shared.note_ddl_matters(self.frontend.ddl_matters());
        if j.barrier != Barrier::None {
            self.barrier_sent(false, j.barrier);
        }
        let e = Expect::Parse {
            command,
            name,
            plan: j.plan,
            replace: j.refusal,
            seq,
        };
        self.forward(e, &frame, j.send).await
    }

    async fn bind(&mut self, frame: Bytes, boundary: bool) -> Stepped {
        let b = msg::bind(&frame[5..]).map_err(malformed)?;
        let ready = match self.frontend.statement_to_rejudge(b.statement) {
            Some(sql) => self.ready(&sql, boundary).await?,
            None => Ready::Yes,
        };
        self.frontend
            .set_encoding(self.shared.encoding().unwrap_or_default());
        let ready = match self.legacy_name(&[b.portal, b.statement]) {
            Some(r) => Ready::Refused(r),
            None => ready,
        };
        let mut j = match ready {
            Ready::Refused(r) => self.frontend.bind_refused(&b, &r),
            Ready::Yes => self.frontend.bind(&b, self.shared.readable()).await,
            Ready::Invalid(reason) => self.frontend.bind_refused(&b, &invalid_text(&reason)),
            Ready::Unsettled => self
                .frontend
                .bind_refused(&b, &crate::sql::Refusal::unsettled_reading()),
            Ready::RoleUnknown(code) => self
                .frontend
                .bind_refused(&b, &crate::sql::Refusal::role_unknown(&code)),
        };
        self.encoded(&mut j);
        if j.barrier != Barrier::None {
            self.barrier_sent(false, j.barrier);
        }
        let e = Expect::Bind {
            portal: frame.slice_ref(b.portal),
            statement: frame.slice_ref(b.statement),
            formats: frame.slice_ref(b.result_formats),
            replace: j.refusal,
            plan: j.replanned.then_some(j.plan),
        };
        self.forward(e, &frame, j.send).await
    }

    async fn describe(&mut self, frame: Bytes) -> Stepped {
        let (kind, name) = msg::target(&frame[5..], "Describe").map_err(malformed)?;
        let e = if kind == b'S' {
            Expect::DescribeStatement {
                params: self.frontend.statement_params(name),
                name: frame.slice_ref(name),
            }
        } else {
            Expect::DescribePortal {
                name: frame.slice_ref(name),
            }
        };
        self.forward(e, &frame, None).await
    }

    async fn execute(&mut self, frame: Bytes) -> Stepped {
        let portal = frame.slice_ref(msg::execute(&frame[5..]).map_err(malformed)?);
        self.frontend.execute(&portal);
        self.forward(Expect::Execute { portal }, &frame, None).await
    }

    async fn close(&mut self, frame: Bytes) -> Stepped {
        let (kind, name) = msg::target(&frame[5..], "Close").map_err(malformed)?;
        self.frontend.portal_closed(kind, name);
        let e = Expect::Close {
            kind,
            name: frame.slice_ref(name),
        };
        self.forward(e, &frame, None).await
    }
}

impl<SW> ClientToServer<'_, SW> {
    /// In a session whose client encoding is not UTF8, a statement or portal name that is not
    /// ASCII is refused ([`crate::sql::Refusal::legacy_name`]).
    fn legacy_name(&self, names: &[&[u8]]) -> Option<crate::sql::Refusal> {
        let enc = self.shared.encoding().filter(|e| !e.is_utf8())?;
        (!names.iter().all(|n| n.is_ascii())).then(|| crate::sql::Refusal::legacy_name(enc.name()))
    }
}

/// pgveil's refusal of a text the server would reject in the client encoding: the server's
/// own SQLSTATE and words.
fn invalid_text(e: &encoding::Invalid) -> crate::sql::Refusal {
    crate::sql::Refusal::invalid_text(e.sqlstate(), &e.to_string())
}

/// Whether a SQL text may drop prepared statements (DEALLOCATE, DISCARD): one pass over its
/// words, comparing only words of the right length.
fn may_deallocate(sql: &[u8]) -> bool {
    sql.split(|b| !b.is_ascii_alphabetic())
        .any(|w| w.eq_ignore_ascii_case(b"deallocate") || w.eq_ignore_ascii_case(b"discard"))
}
