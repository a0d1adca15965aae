//! The relay of a session under a policy.
//!
//! The client direction reads whole messages. Query and Parse go to the enforcer, which
//! passes them, passes them with result transforms, or refuses them; a refused statement is
//! replaced by one that fails at parse time, so the server's own error handling (skip to
//! Sync, abort the transaction) keeps the protocol in order, and the server's error is then
//! replaced by pgveil's. For every message that gets an answer, the client direction queues
//! what to expect, before the message leaves; the queue is bounded, and a full queue stops the
//! client direction (backpressure), never drops.
//!
//! The server direction walks the answers against that queue. Frames that need no change
//! stream through untouched; RowDescription and DataRow frames of results with transforms
//! are rewritten; the prepared statements and portals that need transforms are booked when
//! the server confirms them.
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::audit::{AuditSink, Outcome, SessionJson, StatementRecord};
use crate::context::ServerContext;
use crate::enforce::book::{Book, PortalPlan};
use crate::enforce::copy;
use crate::enforce::copy_in::CopyIn;
use crate::enforce::messages::{self, REFUSED_SQL};
use crate::enforce::rows::AnomalyLimit;
use crate::enforce::rows::{self, AuditInfo, CopyFormat, RowError, RowPlan, Scratch, Tally};
use crate::enforce::session::{anomaly_refusal, hours_refusal, Enforcer, Prepared, Verdict};
use crate::enforce::statements::{Outcomes, StatementParams, Statements};
use crate::enforce::write::{self, BindError, Sealer};
use crate::enforce::Enforcement;
use crate::metrics::Command;
use crate::protocol::backend::{
    command_rows, command_word, error_code, error_response, error_response_hint, parameter_status,
    Severity,
};
use crate::protocol::frame::{is_frontend_tag, Header, MAX_MESSAGE_LEN};
use crate::protocol::{sqlstate, ProtocolError};
use crate::session::auth::Established;
use crate::session::closing::{finish, idle_watch, log_end, Activity, End};
use crate::session::pending::Pending;
use crate::sql::Refusal;
use crate::stream::MaybeTls;
use pgveil_policy::hours::Hours;
use pgveil_policy::model::Limit;

/// Messages whose answers are still to come that the client direction may queue ahead of the
/// server direction (which holds at most as many again while it walks them).
const MAX_PENDING: usize = 1024;
const INITIAL_BUF: usize = 8 * 1024;

/// What the server's next answers belong to.
enum Expect {
    Query {
        command: Command,
        plans: Vec<Arc<RowPlan>>,
        replace: Option<BytesMut>,
        /// The SQL text, when it may DEALLOCATE or DISCARD.
        effects: Option<Bytes>,
    },
    FunctionCall {
        replace: Option<BytesMut>,
    },
    Parse {
        command: Command,
        name: Bytes,
        plan: Option<Arc<Prepared>>,
        replace: Option<BytesMut>,
        /// Reported back to the client direction's statement book when the Parse ends.
        seq: u64,
    },
    Bind {
        portal: Bytes,
        statement: Bytes,
        formats: Bytes,
        replace: Option<BytesMut>,
    },
    DescribeStatement {
        name: Bytes,
        /// Encrypted parameters: the ParameterDescription names their plaintext types.
        params: Option<Arc<StatementParams>>,
    },
    DescribePortal {
        name: Bytes,
    },
    Execute {
        portal: Bytes,
    },
    Close {
        kind: u8,
        name: Bytes,
    },
    Sync,
}

impl Expect {
    fn ends_cycle(&self) -> bool {
        matches!(
            self,
            Expect::Sync | Expect::Query { .. } | Expect::FunctionCall { .. }
        )
    }
}

/// Session settings the server reports, which decide whether pgveil can read SQL text.
struct Settings {
    utf8: AtomicBool,
    scs: AtomicBool,
    terminated: AtomicBool,
    /// Every byte written to the client so far ends on a message boundary.
    client_at_boundary: AtomicBool,
    /// The last frame from the server was an ErrorResponse.
    server_said_why: AtomicBool,
    activity: Activity,
    /// When each outstanding Query, Sync or FunctionCall was sent (end-to-end latency).
    pending: std::sync::Mutex<VecDeque<Instant>>,
}

impl Settings {
    fn apply(&self, name: &str, value: &str) {
        match name {
            "client_encoding" => self.utf8.store(
                value.eq_ignore_ascii_case("utf8") || value.eq_ignore_ascii_case("utf-8"),
                Ordering::Relaxed,
            ),
            "standard_conforming_strings" => self
                .scs
                .store(value.eq_ignore_ascii_case("on"), Ordering::Relaxed),
            _ => {}
        }
    }

    fn readable(&self) -> bool {
        self.utf8.load(Ordering::Relaxed) && self.scs.load(Ordering::Relaxed)
    }

    fn query_started(&self) {
        if let Ok(mut q) = self.pending.lock() {
            if q.len() < MAX_PENDING {
                q.push_back(Instant::now());
            }
        }
    }

    fn query_finished(&self, metrics: &crate::metrics::Metrics) {
        if let Some(t) = self.pending.lock().ok().and_then(|mut q| q.pop_front()) {
            metrics
                .query_duration_end_to_end
                .observe(t.elapsed().as_secs_f64());
        }
    }
}

pub async fn run(ctx: &ServerContext, est: Established, peer: SocketAddr, enf: Arc<Enforcement>) {
    let Established {
        client,
        server,
        client_buf,
        server_buf,
        user,
        database,
        server_params,
        application_name,
        ..
    } = est;
    let settings = Settings {
        utf8: AtomicBool::new(false),
        scs: AtomicBool::new(false),
        terminated: AtomicBool::new(false),
        client_at_boundary: AtomicBool::new(true),
        server_said_why: AtomicBool::new(false),
        activity: Activity::new(ctx.config.idle_timeout),
        pending: std::sync::Mutex::new(VecDeque::new()),
    };
    for (n, v) in &server_params {
        settings.apply(n, v);
    }
    let mut enforcer = Enforcer::new(enf.clone(), user, database);
    enforcer.audit = ctx.audit.is_some();
    enforcer.warm_up().await;
    let meta = Arc::new(AuditMeta::new(
        NEXT_SESSION.fetch_add(1, Ordering::Relaxed),
        enforcer.login.clone(),
        peer.to_string(),
        application_name,
    ));
    // Plain sockets split into owned halves without a lock; TLS goes through tokio's split.
    let end = match (client, server) {
        (MaybeTls::Plain(c), MaybeTls::Plain(s)) => {
            let halves = (c.into_split(), s.into_split());
            serve(
                ctx,
                &enf,
                &settings,
                enforcer,
                halves,
                (client_buf, server_buf),
                meta.clone(),
            )
            .await
        }
        (MaybeTls::Plain(c), MaybeTls::Unix(s)) => {
            let halves = (c.into_split(), s.into_split());
            serve(
                ctx,
                &enf,
                &settings,
                enforcer,
                halves,
                (client_buf, server_buf),
                meta.clone(),
            )
            .await
        }
        (c, s) => {
            let halves = (tokio::io::split(c), tokio::io::split(s));
            serve(
                ctx,
                &enf,
                &settings,
                enforcer,
                halves,
                (client_buf, server_buf),
                meta.clone(),
            )
            .await
        }
    };
    log_end(
        ctx,
        peer,
        &end,
        settings.server_said_why.load(Ordering::Relaxed),
    );
}

/// Run both directions over split halves until the session ends; then tell the client why.
async fn serve<CR, CW, SR, SW>(
    ctx: &ServerContext,
    enf: &Arc<Enforcement>,
    settings: &Settings,
    enforcer: Enforcer,
    ((cr, mut cw), (sr, sw)): ((CR, CW), (SR, SW)),
    (client_buf, server_buf): (BytesMut, BytesMut),
    meta: Arc<AuditMeta>,
) -> End
where
    CR: AsyncRead + Unpin,
    CW: AsyncWrite + Unpin,
    SR: AsyncRead + Unpin,
    SW: AsyncWrite + Unpin,
{
    let upstream_db = enforcer.database.clone();
    let pending = Pending::new(MAX_PENDING);
    let outcomes = Arc::new(Outcomes::default());
    let encrypted = enf
        .metrics
        .enforcement
        .crypto
        .with_label_values(&["encrypt"]);
    let mut upstream = Upstream {
        enforcer,
        settings,
        pending: &pending,
        sw,
        out: BytesMut::new(),
        statements: Statements::new(outcomes.clone()),
        sealer: Sealer::default(),
        copy_in: None,
        portals: std::collections::HashMap::new(),
        encrypted,
        audit: ctx.audit.clone(),
        meta: meta.clone(),
        anomaly_events: Vec::new(),
    };
    let mut downstream = Downstream {
        enf,
        ctx,
        settings,
        pending: &pending,
        queue: VecDeque::new(),
        skipping: false,
        book: Book::default(),
        query_index: 0,
        query_failed: false,
        rows: None,
        discard: false,
        ddl_pending: false,
        scratch: Scratch::default(),
        tally: Tally::default(),
        tally_roles: Arc::new(Vec::new()),
        tally_counters: TallyCounters::default(),
        resolved: false,
        state: None,
        snapshot: None,
        described: None,
        transform_time: Duration::ZERO,
        transformed: false,
        copy: None,
        database: upstream_db,
        batch_command: Command::UNKNOWN,
        outcomes,
        audit: ctx.audit.clone(),
        audit_pending: Vec::new(),
        anomaly_pending: Vec::new(),
        meta,
    };
    let end = tokio::select! {
        e = upstream.run(cr, client_buf) => e,
        e = downstream.run(sr, &mut cw, server_buf) => e,
        e = idle_watch(&settings.activity, ctx.config.idle_timeout) => e,
        _ = ctx.force_close.cancelled() => End::Shutdown,
    };
    let end = end.after_terminate(settings.terminated.load(Ordering::Relaxed));
    downstream.flush_tally();
    let at_boundary = settings.client_at_boundary.load(Ordering::Relaxed);
    finish(&mut cw, &end, at_boundary).await;
    end
}

fn refusal_frame(r: &Refusal) -> BytesMut {
    error_response_hint(Severity::Error, r.sqlstate, &r.message, r.hint.as_deref())
}

async fn read_more<R: AsyncRead + Unpin>(r: &mut R, buf: &mut BytesMut) -> std::io::Result<usize> {
    if buf.is_empty() && buf.capacity() > INITIAL_BUF * 8 {
        *buf = BytesMut::with_capacity(INITIAL_BUF);
    }
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(INITIAL_BUF);
    }
    r.read_buf(buf).await
}

// ---- client to server -----------------------------------------------------

struct Upstream<'a, SW> {
    enforcer: Enforcer,
    settings: &'a Settings,
    pending: &'a Pending<Expect>,
    sw: SW,
    /// Bytes for the server, written when the client's buffer holds no further message.
    out: BytesMut,
    /// Which prepared statements have parameters to encrypt.
    statements: Statements,
    sealer: Sealer,
    /// A COPY FROM STDIN into encrypted columns in progress.
    copy_in: Option<CopyState>,
    /// Portals bound to a COPY FROM STDIN into encrypted columns.
    portals: std::collections::HashMap<Bytes, Arc<crate::enforce::copy_in::CopyInPlan>>,
    /// `crypto_operations_total{op="encrypt"}`.
    encrypted: prometheus::IntCounter,
    audit: Option<AuditSink>,
    meta: Arc<AuditMeta>,
    /// Anomaly records raised by refusals, written before the next message.
    anomaly_events: Vec<crate::audit::AnomalyEvent>,
}

/// Who a session's audit records are about.
struct AuditMeta {
    session: u64,
    login: String,
    client: String,
    application_name: String,
    /// The fields above as statement records write them, serialized once.
    json: Arc<SessionJson>,
}

static NEXT_SESSION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl AuditMeta {
    fn new(session: u64, login: String, client: String, application_name: String) -> Self {
        let json = Arc::new(SessionJson::new(
            session,
            &login,
            &client,
            &application_name,
        ));
        AuditMeta {
            session,
            login,
            client,
            application_name,
            json,
        }
    }

    /// The audit record of an anomaly event.
    fn anomaly(
        &self,
        roles: Vec<String>,
        rule: &str,
        deny: bool,
        reason: String,
    ) -> crate::audit::AnomalyEvent {
        crate::audit::AnomalyEvent {
            session: self.session,
            login: self.login.clone(),
            roles,
            client: self.client.clone(),
            application_name: self.application_name.clone(),
            rule: rule.to_string(),
            outcome: if deny { Outcome::Denied } else { Outcome::Ok },
            reason: Some(reason),
        }
    }

    /// An anomaly limit crossed: counted, logged, and returned as its audit record.
    fn alert(
        &self,
        enf: &Enforcement,
        roles: Vec<String>,
        l: &AnomalyLimit,
        reason: String,
    ) -> crate::audit::AnomalyEvent {
        enf.metrics
            .enforcement
            .anomaly_alerts
            .with_label_values(&[&l.rule])
            .inc();
        tracing::warn!(rule = %l.rule, login = %self.login, %reason, "anomaly limit crossed");
        self.anomaly(roles, &l.rule, l.deny, reason)
    }

    fn event(
        &self,
        info: &AuditInfo,
        rows: u64,
        outcome: Outcome,
        reason: Option<String>,
    ) -> StatementRecord {
        StatementRecord {
            time: std::time::SystemTime::now(),
            session: self.json.clone(),
            statement: info.json.clone(),
            rows,
            outcome,
            reason,
        }
    }
}

/// The audit record of a statement, waiting while the log's queue is full (never dropped).
async fn audit_write(sink: &AuditSink, ev: StatementRecord) {
    if let Err(e) = sink.statement_record(ev).await {
        tracing::error!(error = %e, "audit log unavailable; a record was not written");
    }
}

struct CopyState {
    copy: CopyIn,
    /// A row could not be encrypted: the COPY was failed; the client's remaining data is
    /// dropped.
    failed: bool,
}

/// A Bind that fails at the server (no such statement), sent in place of a refused one so
/// the server skips to Sync as for any failed Bind; its error is replaced by pgveil's.
fn refused_bind(portal: &[u8]) -> BytesMut {
    const NAME: &[u8] = b"pgveil: refused bind";
    let mut out = BytesMut::with_capacity(portal.len() + NAME.len() + 13);
    out.put_u8(b'B');
    out.put_i32((4 + portal.len() + 1 + NAME.len() + 1 + 6) as i32);
    out.put_slice(portal);
    out.put_u8(0);
    out.put_slice(NAME);
    out.put_u8(0);
    out.put_i16(0);
    out.put_i16(0);
    out.put_i16(0);
    out
}

/// CopyFail, ending a COPY FROM STDIN at the server with `message`.
fn copy_fail(message: &str) -> BytesMut {
    let mut out = BytesMut::with_capacity(message.len() + 6);
    out.put_u8(b'f');
    out.put_i32((4 + message.len() + 1) as i32);
    out.put_slice(message.as_bytes());
    out.put_u8(0);
    out
}

impl<SW: AsyncWrite + Unpin> Upstream<'_, SW> {
    async fn run<R: AsyncRead + Unpin>(&mut self, mut cr: R, mut buf: BytesMut) -> End {
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
                    Ok(true) => {
                        if !self.anomaly_events.is_empty() {
                            self.flush_anomalies().await;
                        }
                    }
                    Ok(false) => {
                        // Terminate: forward it, then read and drop whatever the client still
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
                Ok(_) => self.settings.activity.touch(),
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

    /// Queue an expectation; when the queue is full, first let the server see what it must
    /// answer, and ask it to send its answers now (Flush: the server holds the answers to an
    /// extended-protocol pipeline until Sync or a full buffer), then wait.
    async fn expect(&mut self, e: Expect) -> Result<(), End> {
        match self.pending.try_push(e) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.out.extend_from_slice(&messages::FLUSH);
                self.flush()
                    .await
                    .map_err(|e| End::ServerError(ProtocolError::Io(e)))?;
                self.pending.push(e).await;
                Ok(())
            }
        }
    }

    /// Count the envelopes made since the last call.
    fn count_sealed(&mut self) {
        let n = std::mem::take(&mut self.sealer.sealed)
            + self
                .copy_in
                .as_mut()
                .map_or(0, |c| std::mem::take(&mut c.copy.sealer.sealed));
        if n > 0 {
            self.encrypted.inc_by(n);
        }
    }

    /// An anomaly rule with `then: deny` that this statement's rows count against and that is
    /// over its limit for this login, or whose allowed hours exclude now.
    fn anomaly_block(&mut self, p: &Prepared) -> Option<Refusal> {
        self.limits_block(&deny_limits(p))
    }

    fn limits_block(&mut self, limits: &[Arc<AnomalyLimit>]) -> Option<Refusal> {
        let enf = self.enforcer.enforcement();
        let login = &self.enforcer.login;
        for l in limits {
            let max = match &l.limit {
                Limit::Rows(max) | Limit::Denied(max) => *max,
                Limit::Hours(h) => {
                    let now = std::time::SystemTime::now();
                    if h.allows(now) {
                        continue;
                    }
                    if let Some(reason) = out_of_hours(enf, login, l, h, now) {
                        if self.audit.is_some() {
                            let ev = self.meta.alert(enf, self.enforcer.role_names(), l, reason);
                            self.anomaly_events.push(ev);
                        }
                    }
                    return Some(hours_refusal(l, h, now));
                }
            };
            if let Some(total) = enf.anomaly.over(login, &l.rule, max, l.per) {
                return Some(anomaly_refusal(l, login, total, max));
            }
        }
        None
    }

    /// Count a refusal (metrics, log, `max_denied` anomaly rules); anomalies it raises get an
    /// audit record, written before the next message is handled.
    fn note_refused(&mut self, r: &Refusal) {
        for c in self.enforcer.refused(r) {
            if self.audit.is_some() {
                let ev = self
                    .meta
                    .anomaly(self.enforcer.role_names(), &c.rule, c.deny, c.reason);
                self.anomaly_events.push(ev);
            }
        }
    }

    async fn flush_anomalies(&mut self) {
        let Some(sink) = &self.audit else {
            self.anomaly_events.clear();
            return;
        };
        for ev in self.anomaly_events.drain(..) {
            if let Err(e) = sink.anomaly(ev).await {
                tracing::error!(error = %e, "audit log unavailable; an anomaly record was not written");
            }
        }
    }

    /// The audit record of a refused statement (its text fingerprinted, never kept).
    async fn audit_denied(&self, sql: &[u8], r: &Refusal) {
        let Some(sink) = &self.audit else { return };
        let text = String::from_utf8_lossy(sql);
        let info = AuditInfo::new(
            Vec::new(),
            crate::sql::first_word(&text).to_ascii_uppercase(),
            self.enforcer.role_names(),
            crate::audit::fingerprint(&text),
        );
        let ev = self.meta.event(
            &info,
            0,
            Outcome::Denied,
            Some(format!("{} {}", r.sqlstate, r.message)),
        );
        audit_write(sink, ev).await;
    }

    /// Refuse a simple Query (after its analysis passed but a value could not be encrypted).
    async fn refuse_query(&mut self, command: Command, r: &Refusal) -> Result<bool, End> {
        self.note_refused(r);
        self.expect(Expect::Query {
            command,
            plans: Vec::new(),
            replace: Some(refusal_frame(r)),
            effects: None,
        })
        .await?;
        self.out
            .extend_from_slice(&messages::query_frame(REFUSED_SQL));
        Ok(true)
    }

    /// CopyData, CopyDone or CopyFail from the client during a COPY FROM STDIN that pgveil
    /// encrypts.
    fn on_copy(&mut self, tag: u8, frame: &Bytes) {
        let Some(state) = self.copy_in.as_mut() else {
            self.out.extend_from_slice(frame);
            return;
        };
        if state.failed {
            if tag != b'd' {
                self.copy_in = None;
            }
            return;
        }
        let r = match tag {
            b'd' => state.copy.feed(&frame[5..], &mut self.out),
            b'c' => state.copy.finish(&mut self.out),
            _ => Ok(()),
        };
        match r {
            Ok(()) => {
                if tag != b'd' {
                    self.out.extend_from_slice(frame);
                }
            }
            Err(e) => {
                let refusal = match &e {
                    crate::enforce::copy_in::CopyInError::Write(w) => w.refusal(),
                    other => Refusal::copy_in_unreadable(other.to_string()),
                };
                state.failed = true;
                self.note_refused(&refusal);
                self.out
                    .extend_from_slice(&copy_fail(&format!("pgveil: {}", refusal.message)));
            }
        }
        self.count_sealed();
        if tag != b'd' {
            self.copy_in = None;
        }
    }

    /// Returns `Ok(false)` after a Terminate.
    async fn on_message(&mut self, tag: u8, frame: Bytes) -> Result<bool, End> {
        let body = &frame[5..];
        let bad = |e: ProtocolError| End::ClientError(e);
        if self.copy_in.is_some() {
            match tag {
                b'd' | b'c' | b'f' => {
                    self.on_copy(tag, &frame);
                    return Ok(true);
                }
                // The server ignores Flush and Sync during COPY FROM STDIN.
                b'H' | b'S' => {}
                _ => self.copy_in = None,
            }
        }
        if matches!(tag, b'Q' | b'S' | b'F') {
            self.settings.query_started();
        }
        match tag {
            b'Q' => {
                let sql = messages::query_text(body).map_err(bad)?;
                let command = Command::from_sql(sql);
                let effects = may_deallocate(sql).then(|| frame.slice_ref(sql));
                let mut verdict = self.enforcer.judge(sql, self.settings.readable()).await;
                if let Verdict::Transform(p) = &verdict {
                    if let Some(r) = self.anomaly_block(p) {
                        verdict = Verdict::Refuse(r);
                    }
                }
                match verdict {
                    Verdict::Pass => {
                        self.expect(Expect::Query {
                            command,
                            plans: Vec::new(),
                            replace: None,
                            effects,
                        })
                        .await?;
                        self.out.extend_from_slice(&frame);
                    }
                    Verdict::Transform(p) => {
                        let rewritten = match &p.write {
                            Some(w) => match std::str::from_utf8(sql)
                                .ok()
                                .map(|t| self.sealer.rewrite_sql(t, w))
                            {
                                Some(Ok(t)) => Some(messages::query_frame(&t)),
                                Some(Err(e)) => {
                                    return self.refuse_query(command, &e.refusal()).await
                                }
                                None => None,
                            },
                            None => None,
                        };
                        self.count_sealed();
                        self.expect(Expect::Query {
                            command,
                            plans: p.rows.clone(),
                            replace: None,
                            effects,
                        })
                        .await?;
                        match rewritten {
                            Some(f) => self.out.extend_from_slice(&f),
                            None => self.out.extend_from_slice(&frame),
                        }
                        if let Some(c) = &p.copy_in {
                            self.copy_in = Some(CopyState {
                                copy: CopyIn::new(c.clone()),
                                failed: false,
                            });
                        }
                    }
                    Verdict::Refuse(r) => {
                        self.note_refused(&r);
                        self.audit_denied(sql, &r).await;
                        self.expect(Expect::Query {
                            command,
                            plans: Vec::new(),
                            replace: Some(refusal_frame(&r)),
                            effects: None,
                        })
                        .await?;
                        self.out
                            .extend_from_slice(&messages::query_frame(REFUSED_SQL));
                    }
                }
            }
            b'P' => {
                let (name, sql) = messages::parse(body).map_err(bad)?;
                let command = Command::from_sql(sql);
                let name = frame.slice_ref(name);
                let mut verdict = self.enforcer.judge(sql, self.settings.readable()).await;
                // The statement's text after encryption, and its encrypted parameters.
                let mut rewritten = None;
                let mut params = None;
                if let Verdict::Transform(p) = &verdict {
                    if let Some(r) = self.anomaly_block(p) {
                        verdict = Verdict::Refuse(r);
                    }
                }
                if let Verdict::Transform(p) = &verdict {
                    let deny_limits = deny_limits(p);
                    if p.copy_in.is_some() || !deny_limits.is_empty() {
                        params = Some(Arc::new(StatementParams {
                            plan: Arc::new(write::WritePlan::default()),
                            declared: Vec::new(),
                            copy_in: p.copy_in.clone(),
                            deny_limits: deny_limits.clone(),
                        }));
                    }
                    if let Some(w) = &p.write {
                        let declared = write::parse_param_types(body);
                        match std::str::from_utf8(sql)
                            .ok()
                            .map(|t| self.sealer.rewrite_sql(t, w))
                        {
                            Some(Ok(t)) => {
                                rewritten = Some(write::parse_frame(&name, &t, &declared, w));
                                if !w.params.is_empty() {
                                    params = Some(Arc::new(StatementParams {
                                        plan: w.clone(),
                                        declared,
                                        copy_in: p.copy_in.clone(),
                                        deny_limits,
                                    }));
                                }
                            }
                            Some(Err(e)) => verdict = Verdict::Refuse(e.refusal()),
                            None => {}
                        }
                        self.count_sealed();
                    }
                }
                let seq = self.statements.parsed(name.clone(), params);
                match verdict {
                    Verdict::Pass | Verdict::Transform(_) => {
                        let plan = match verdict {
                            Verdict::Transform(p) => Some(p),
                            _ => None,
                        };
                        self.expect(Expect::Parse {
                            command,
                            name,
                            plan,
                            replace: None,
                            seq,
                        })
                        .await?;
                        match rewritten {
                            Some(f) => self.out.extend_from_slice(&f),
                            None => self.out.extend_from_slice(&frame),
                        }
                    }
                    Verdict::Refuse(r) => {
                        self.note_refused(&r);
                        self.audit_denied(sql, &r).await;
                        let injected = messages::parse_frame(&name, REFUSED_SQL);
                        self.expect(Expect::Parse {
                            command,
                            name,
                            plan: None,
                            replace: Some(refusal_frame(&r)),
                            seq,
                        })
                        .await?;
                        self.out.extend_from_slice(&injected);
                    }
                }
            }
            b'B' => {
                let b = messages::bind(body).map_err(bad)?;
                let mut replace = None;
                let mut rewritten = None;
                let params = self.statements.params(b.statement);
                match params.as_ref().and_then(|p| p.copy_in.clone()) {
                    Some(c) => {
                        self.portals.insert(Bytes::copy_from_slice(b.portal), c);
                    }
                    None => {
                        if !self.portals.is_empty() {
                            self.portals.remove(b.portal);
                        }
                    }
                }
                if let Some(r) = params
                    .as_ref()
                    .and_then(|p| self.limits_block(&p.deny_limits))
                {
                    self.note_refused(&r);
                    self.audit_denied(b"", &r).await;
                    replace = Some(refusal_frame(&r));
                    rewritten = Some(refused_bind(b.portal));
                } else if let Some(p) = params {
                    match write::rewrite_bind(body, &p.plan, &p.declared, &mut self.sealer) {
                        Ok(r) => rewritten = r,
                        Err(BindError::Malformed(w)) => {
                            return Err(End::ClientError(ProtocolError::BadStartup(format!(
                                "malformed {w} message"
                            ))))
                        }
                        Err(BindError::Write(e)) => {
                            let r = e.refusal();
                            self.note_refused(&r);
                            replace = Some(refusal_frame(&r));
                            rewritten = Some(refused_bind(b.portal));
                        }
                    }
                    self.count_sealed();
                }
                let e = Expect::Bind {
                    portal: frame.slice_ref(b.portal),
                    statement: frame.slice_ref(b.statement),
                    formats: frame.slice_ref(b.result_formats),
                    replace,
                };
                self.expect(e).await?;
                match rewritten {
                    Some(f) => self.out.extend_from_slice(&f),
                    None => self.out.extend_from_slice(&frame),
                }
            }
            b'D' => {
                let (kind, name) = messages::target(body, "Describe").map_err(bad)?;
                let params = if kind == b'S' {
                    self.statements.params(name)
                } else {
                    None
                };
                let name = frame.slice_ref(name);
                let e = if kind == b'S' {
                    Expect::DescribeStatement { name, params }
                } else {
                    Expect::DescribePortal { name }
                };
                self.expect(e).await?;
                self.out.extend_from_slice(&frame);
            }
            b'E' => {
                let portal = frame.slice_ref(messages::execute(body).map_err(bad)?);
                if let Some(c) = self.portals.get(&portal[..]) {
                    self.copy_in = Some(CopyState {
                        copy: CopyIn::new(c.clone()),
                        failed: false,
                    });
                }
                self.expect(Expect::Execute { portal }).await?;
                self.out.extend_from_slice(&frame);
            }
            b'C' => {
                let (kind, name) = messages::target(body, "Close").map_err(bad)?;
                let e = Expect::Close {
                    kind,
                    name: frame.slice_ref(name),
                };
                self.expect(e).await?;
                self.out.extend_from_slice(&frame);
            }
            b'S' => {
                self.expect(Expect::Sync).await?;
                self.out.extend_from_slice(&frame);
            }
            b'F' => {
                // A call by function OID could reach any function; pgveil cannot tell which
                // protected columns it reads.
                let r = Refusal::fast_path_call();
                self.note_refused(&r);
                self.expect(Expect::FunctionCall {
                    replace: Some(refusal_frame(&r)),
                })
                .await?;
                self.out
                    .extend_from_slice(&messages::query_frame(REFUSED_SQL));
            }
            b'X' => {
                self.settings.terminated.store(true, Ordering::Relaxed);
                self.out.extend_from_slice(&frame);
                return Ok(false);
            }
            _ => self.out.extend_from_slice(&frame),
        }
        Ok(true)
    }
}

/// Whether a SQL text may drop prepared statements (DEALLOCATE, DISCARD): one pass over its
/// words, comparing only words of the right length.
fn may_deallocate(sql: &[u8]) -> bool {
    sql.split(|b| !b.is_ascii_alphabetic())
        .any(|w| w.eq_ignore_ascii_case(b"deallocate") || w.eq_ignore_ascii_case(b"discard"))
}

// ---- server to client -----------------------------------------------------

struct Downstream<'a> {
    enf: &'a Enforcement,
    ctx: &'a ServerContext,
    settings: &'a Settings,
    pending: &'a Pending<Expect>,
    queue: VecDeque<Expect>,
    /// After an error in an extended-protocol message: answers skip to the next Sync.
    skipping: bool,
    book: Book,
    /// Which statement of a simple Query the answers are at.
    query_index: usize,
    query_failed: bool,
    /// The transforms of the result being streamed, and its formats.
    rows: Option<(Arc<RowPlan>, Arc<[i16]>)>,
    /// A value could not be transformed: drop everything up to ReadyForQuery.
    discard: bool,
    ddl_pending: bool,
    scratch: Scratch,
    tally: Tally,
    /// The policy roles the tallied values were sent to.
    tally_roles: Arc<Vec<String>>,
    tally_counters: TallyCounters,
    /// The command of the batch's last Parse, for errors in its Bind or Execute.
    batch_command: Command,
    /// The transforms of a COPY TO STDOUT being streamed, and whether its first row is next.
    copy: Option<(Arc<RowPlan>, CopyFormat, bool)>,
    /// The policy state used for this cycle's transforms (refreshed at ReadyForQuery).
    state: Option<Arc<crate::enforce::PolicyState>>,
    /// The catalog snapshot for the RowDescription cross-check, with its epoch.
    snapshot: Option<(u64, Arc<crate::catalog::Snapshot>)>,
    /// The last RowDescription checked, and its answer.
    described: Option<Described>,
    /// A row was transformed while processing the current read.
    transformed: bool,
    /// Time spent transforming rows since the last ReadyForQuery.
    transform_time: Duration,
    /// The current Execute's portal has been looked up.
    resolved: bool,
    database: String,
    /// How Parses ended, for the client direction's statement book.
    outcomes: Arc<Outcomes>,
    audit: Option<AuditSink>,
    /// Records of statements that ended in this read, written before the answers go out.
    audit_pending: Vec<StatementRecord>,
    anomaly_pending: Vec<crate::audit::AnomalyEvent>,
    meta: Arc<AuditMeta>,
}

/// A RowDescription that passed the cross-check, with everything that decided its answer: a
/// prepared statement executed again (libpq describes the portal at every execution) gets the
/// same frame, and then the same answer without walking the catalog again.
struct Described {
    body: Vec<u8>,
    plan: Option<Arc<RowPlan>>,
    state: Arc<crate::enforce::PolicyState>,
    snapshot: Arc<crate::catalog::Snapshot>,
    /// The rewritten frame; `None`: the frame passes unchanged.
    answer: Option<Bytes>,
}

impl Described {
    fn answers(
        &self,
        body: &[u8],
        plan: &Option<Arc<RowPlan>>,
        state: &Arc<crate::enforce::PolicyState>,
        snapshot: &Arc<crate::catalog::Snapshot>,
    ) -> bool {
        let same_plan = match (&self.plan, plan) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        same_plan
            && Arc::ptr_eq(&self.state, state)
            && Arc::ptr_eq(&self.snapshot, snapshot)
            && self.body == body
    }
}

impl Downstream<'_> {
    async fn run<R, W>(&mut self, mut sr: R, cw: &mut W, mut buf: BytesMut) -> End
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut out = BytesMut::with_capacity(INITIAL_BUF);
        // Bytes of a frame passing through untouched that are still to come.
        let mut remaining = 0usize;
        let mut dropping = false;
        loop {
            // Transform time is measured per read, not per row.
            let started = Instant::now();
            loop {
                if remaining > 0 {
                    let n = remaining.min(buf.len());
                    if n == 0 {
                        break;
                    }
                    if !dropping {
                        out.extend_from_slice(&buf[..n]);
                    }
                    buf.advance(n);
                    remaining -= n;
                    continue;
                }
                let header = match Header::parse(&buf, i32::MAX as usize) {
                    Ok(Some(h)) => h,
                    Ok(None) => break,
                    Err(e) => return End::ServerError(e),
                };
                self.settings
                    .server_said_why
                    .store(header.tag == b'E', Ordering::Relaxed);
                if header.tag == b'D' && self.rows.is_none() && !self.resolved {
                    self.resolve_portal();
                }
                let stream = match header.tag {
                    b'd' => self.copy.is_none() || self.discard,
                    b'V' | b'A' | b'N' => true,
                    b'D' => self.rows.is_none() || self.discard,
                    _ => false,
                };
                if stream {
                    remaining = header.frame_len;
                    dropping = self.discard;
                    continue;
                }
                if buf.len() < header.frame_len {
                    buf.reserve(header.frame_len - buf.len());
                    break;
                }
                // Read in place: splitting the frame off would make the buffer shared and
                // cost a reference count per frame.
                if let Err(e) = self.on_frame(header.tag, &buf[..header.frame_len], &mut out) {
                    return End::ServerError(e);
                }
                buf.advance(header.frame_len);
                if out.len() >= 64 * 1024 {
                    if let Err(e) = self.write(cw, &mut out, remaining == 0).await {
                        return End::ClientError(ProtocolError::Io(e));
                    }
                }
            }
            if self.transformed {
                self.transformed = false;
                self.transform_time += started.elapsed();
            }
            if !self.audit_pending.is_empty() || !self.anomaly_pending.is_empty() {
                if let Some(sink) = &self.audit {
                    for ev in self.audit_pending.drain(..) {
                        audit_write(sink, ev).await;
                    }
                    for ev in self.anomaly_pending.drain(..) {
                        if let Err(e) = sink.anomaly(ev).await {
                            tracing::error!(error = %e, "audit log unavailable; an anomaly record was not written");
                        }
                    }
                }
            }
            if let Err(e) = self.write(cw, &mut out, remaining == 0).await {
                return End::ClientError(ProtocolError::Io(e));
            }
            // After an error the server skips everything up to Sync and answers none of it, so
            // a client direction waiting for room is given it here: what it queued is dropped
            // as skipped, up to the next Sync.
            let pending = self.pending;
            let read = tokio::select! {
                biased;
                r = read_more(&mut sr, &mut buf) => r,
                _ = pending.blocked(), if self.skipping => {
                    self.front();
                    continue;
                }
            };
            match read {
                Ok(0) if buf.is_empty() && remaining == 0 => return End::ServerClosed,
                Ok(0) => return End::ServerError(ProtocolError::Truncated),
                Ok(_) => self.settings.activity.touch(),
                Err(e) => return End::ServerError(ProtocolError::Io(e)),
            }
        }
    }

    async fn write<W: AsyncWrite + Unpin>(
        &mut self,
        cw: &mut W,
        out: &mut BytesMut,
        at_boundary: bool,
    ) -> std::io::Result<()> {
        if out.is_empty() {
            return Ok(());
        }
        if self.settings.terminated.load(Ordering::Relaxed) {
            out.clear();
            return Ok(());
        }
        self.settings
            .client_at_boundary
            .store(false, Ordering::Relaxed);
        cw.write_all(out).await?;
        cw.flush().await?;
        self.ctx.metrics.client_sent_bytes.inc_by(out.len() as u64);
        out.clear();
        self.settings
            .client_at_boundary
            .store(at_boundary, Ordering::Relaxed);
        Ok(())
    }

    /// The expectation the next answer belongs to.
    fn front(&mut self) -> Option<&mut Expect> {
        loop {
            if self.skipping {
                while self
                    .queue
                    .front()
                    .is_some_and(|e| !matches!(e, Expect::Sync))
                {
                    if let Some(Expect::Parse { seq, .. }) = self.queue.pop_front() {
                        // Skipped after an earlier error: the server never saw it.
                        self.outcomes.report(seq, false);
                    }
                }
                if !self.queue.is_empty() {
                    self.skipping = false;
                }
            }
            if !self.queue.is_empty() {
                return self.queue.front_mut();
            }
            if self.pending.take_all(&mut self.queue) == 0 {
                return None;
            }
        }
    }

    fn pop(&mut self) -> Option<Expect> {
        self.front()?;
        self.queue.pop_front()
    }

    fn on_frame(&mut self, tag: u8, frame: &[u8], out: &mut BytesMut) -> Result<(), ProtocolError> {
        let body = &frame[5..];
        let mut forward = !self.discard;
        match tag {
            b'S' => {
                if let Some((n, v)) = parameter_status(body) {
                    self.settings.apply(&n, &v);
                }
                forward = true;
            }
            b'T' => {
                let plan = self.result_plan();
                if forward {
                    match self.describe(body, plan.clone()) {
                        Ok(Some(rewritten)) => {
                            out.extend_from_slice(&rewritten);
                            forward = false;
                        }
                        Ok(None) => {}
                        Err(e) => {
                            self.fail(e, out);
                            forward = false;
                        }
                    }
                }
                if let Some(p) = plan.as_ref().filter(|p| !p.is_empty()) {
                    self.tally_roles = p.roles.clone();
                }
                if matches!(self.front(), Some(Expect::Query { .. })) && !self.discard {
                    self.rows = plan
                        .filter(|p| !p.is_empty())
                        .map(|p| (p, Arc::<[i16]>::from(Vec::new())));
                }
            }
            b'D' => {
                if let (Some((plan, formats)), true) = (self.rows.as_ref(), forward) {
                    self.transformed = true;
                    let enf = self.enf;
                    let state = self.state.get_or_insert_with(|| enf.current());
                    let r = rows::data_row(
                        body,
                        plan,
                        formats,
                        &state.pseudonym,
                        &mut self.scratch,
                        &mut self.tally,
                        out,
                    );
                    if let Err(e) = r {
                        self.fail(e, out);
                    }
                    forward = false;
                }
            }
            b'H' => {
                self.copy = self
                    .result_plan()
                    .filter(|p| !p.is_empty())
                    .and_then(|p| p.copy.map(|f| (p, f, true)));
                if let Some((p, _, _)) = &self.copy {
                    self.tally_roles = p.roles.clone();
                }
            }
            b'd' => {
                if let (Some((plan, format, first)), true) = (self.copy.as_mut(), forward) {
                    let is_first = std::mem::replace(first, false);
                    let enf = self.enf;
                    let state = self.state.get_or_insert_with(|| enf.current());
                    let r = copy::copy_data(
                        body,
                        plan,
                        *format,
                        is_first,
                        &state.pseudonym,
                        &mut self.scratch,
                        &mut self.tally,
                        out,
                    );
                    if let Err(e) = r {
                        self.fail(e, out);
                    }
                    forward = false;
                }
            }
            b'c' => self.copy = None,
            b'C' => {
                let word = command_word(body);
                self.ctx.metrics.query_completed(word);
                let plan = if self.audit.is_some() || self.tracks_anomalies() {
                    self.current_row_plan()
                } else {
                    None
                };
                if let Some(plan) = plan {
                    let rows = command_rows(body);
                    if let (Some(info), true) = (&plan.audit, self.audit.is_some()) {
                        let ev = self.meta.event(info, rows, Outcome::Ok, None);
                        self.audit_pending.push(ev);
                    }
                    for l in &plan.anomaly {
                        self.count_anomaly(l, rows, plan.audit.as_deref());
                    }
                }
                if crate::sql::is_ddl_word(&String::from_utf8_lossy(word)) {
                    self.enf.catalog.invalidate();
                    self.ddl_pending = true;
                }
                self.result_done();
            }
            b'I' => self.result_done(),
            b's' => {
                self.rows = None;
                self.resolved = false;
                if matches!(self.front(), Some(Expect::Execute { .. })) {
                    self.pop();
                }
            }
            b'1' => {
                if let Some(Expect::Parse {
                    name,
                    plan,
                    command,
                    seq,
                    ..
                }) = self.pop()
                {
                    self.outcomes.report(seq, true);
                    self.batch_command = command;
                    self.book.parsed(&name, plan);
                }
            }
            b't' => {
                if let Some(Expect::DescribeStatement {
                    params: Some(p), ..
                }) = self.front()
                {
                    let p = p.clone();
                    if let Some(f) = write::parameter_description(body, &p.plan, &p.declared) {
                        if forward {
                            out.extend_from_slice(&f);
                        }
                        forward = false;
                    }
                }
            }
            b'2' => {
                if let Some(Expect::Bind {
                    portal,
                    statement,
                    formats,
                    ..
                }) = self.pop()
                {
                    self.book.bound(&portal, &statement, &formats);
                }
            }
            b'3' => {
                if let Some(Expect::Close { kind, name }) = self.pop() {
                    self.book.closed(kind, &name);
                }
            }
            b'n' => {
                if matches!(
                    self.front(),
                    Some(Expect::DescribeStatement { .. } | Expect::DescribePortal { .. })
                ) {
                    self.pop();
                }
            }
            b'E' => {
                let command = match self.front() {
                    Some(Expect::Query { command, .. } | Expect::Parse { command, .. }) => *command,
                    _ => self.batch_command,
                };
                self.ctx.metrics.query_failed(command);
                self.rows = None;
                let audit_info = if self.audit.is_some() {
                    self.current_audit()
                } else {
                    None
                };
                let mut replacement = None;
                match self.front() {
                    Some(Expect::Query { replace, .. } | Expect::FunctionCall { replace }) => {
                        replacement = replace.take();
                        self.query_failed = true;
                    }
                    Some(Expect::Sync) | None => {}
                    Some(_) => {
                        if let Some(Expect::Parse { replace, .. } | Expect::Bind { replace, .. }) =
                            self.front()
                        {
                            replacement = replace.take();
                        }
                        if let Some(Expect::Parse { seq, .. }) = self.pop() {
                            self.outcomes.report(seq, false);
                        }
                        self.skipping = true;
                    }
                }
                if replacement.is_none() && self.audit.is_some() {
                    if let Some(info) = audit_info {
                        let ev = self.meta.event(
                            &info,
                            0,
                            Outcome::Error,
                            error_code(body).map(str::to_string),
                        );
                        self.audit_pending.push(ev);
                    }
                }
                if !self.discard {
                    match replacement {
                        Some(r) => {
                            out.extend_from_slice(&r);
                            forward = false;
                        }
                        None => forward = true,
                    }
                }
            }
            b'Z' => {
                let status = body.first().copied().unwrap_or(b'I');
                self.settings.query_finished(&self.ctx.metrics);
                while let Some(e) = self.pop() {
                    let done = e.ends_cycle();
                    if let Expect::Parse { seq, .. } = &e {
                        self.outcomes.report(*seq, false);
                    }
                    if let Expect::Query { effects, .. } = &e {
                        self.book.simple_query();
                        if let Some(sql) = effects {
                            self.book.sql_ran(sql);
                        }
                    }
                    if done {
                        break;
                    }
                }
                if status == b'I' {
                    self.book.transaction_ended();
                    if self.ddl_pending {
                        self.enf.catalog.invalidate();
                        self.ddl_pending = false;
                    }
                }
                self.query_index = 0;
                self.query_failed = false;
                self.rows = None;
                self.copy = None;
                self.resolved = false;
                self.discard = false;
                self.skipping = false;
                forward = true;
                self.state = None;
                if !self.transform_time.is_zero() {
                    self.enf
                        .metrics
                        .enforcement
                        .added
                        .observe(self.transform_time.as_secs_f64());
                    self.transform_time = Duration::ZERO;
                }
                self.flush_tally();
            }
            _ => {}
        }
        if forward {
            out.extend_from_slice(frame);
        }
        Ok(())
    }

    /// The row plan the current answer belongs to: the current statement of a simple Query,
    /// the portal being executed, or the statement or portal being described (which the
    /// RowDescription or NoData answering it completes).
    fn result_plan(&mut self) -> Option<Arc<RowPlan>> {
        let index = self.query_index;
        match self.front()? {
            Expect::Query { plans, .. } => plans.get(index).cloned(),
            Expect::Execute { portal } => {
                let portal = portal.clone();
                self.book.portal(&portal).map(|p| p.row)
            }
            Expect::DescribeStatement { name, .. } => {
                let name = name.clone();
                self.pop();
                self.book.statement_row(&name)
            }
            Expect::DescribePortal { name } => {
                let name = name.clone();
                self.pop();
                self.book.portal(&name).map(|p| p.row)
            }
            _ => None,
        }
    }

    /// The audit facts of the statement whose answer this is.
    fn current_audit(&mut self) -> Option<Arc<crate::enforce::rows::AuditInfo>> {
        self.current_row_plan().and_then(|p| p.audit.clone())
    }

    /// The plan of the statement whose answer this is.
    fn current_row_plan(&mut self) -> Option<Arc<RowPlan>> {
        let index = self.query_index;
        match self.front()? {
            Expect::Query { plans, .. } => plans.get(index).cloned(),
            Expect::Execute { portal } => {
                let portal = portal.clone();
                self.book.portal(&portal).map(|p| p.row)
            }
            _ => None,
        }
    }

    /// Whether the policy in force has anomaly limits (an atomic read, not the policy lock).
    fn tracks_anomalies(&self) -> bool {
        self.enf.has_anomaly_rules()
    }

    /// Count a statement's rows against an anomaly limit (or, for an hours rule, note a read
    /// outside the hours); alert when it crosses it.
    fn count_anomaly(
        &mut self,
        l: &AnomalyLimit,
        rows: u64,
        info: Option<&crate::enforce::rows::AuditInfo>,
    ) {
        use crate::enforce::anomaly::Crossing;
        let login = &self.meta.login;
        let reason = match &l.limit {
            Limit::Denied(_) => return,
            Limit::Rows(max) => match self.enf.anomaly.add(login, &l.rule, rows, *max, l.per) {
                Crossing::Crossed { total } => format!(
                    "rows {total} > {max} of level {} in {}{}",
                    l.level,
                    humantime::format_duration(l.per),
                    if l.deny { "; then deny" } else { "" }
                ),
                _ => return,
            },
            Limit::Hours(h) => {
                let now = std::time::SystemTime::now();
                if h.allows(now) {
                    return;
                }
                match out_of_hours(self.enf, login, l, h, now) {
                    Some(reason) => reason,
                    None => return,
                }
            }
        };
        let ev = self.meta.alert(
            self.enf,
            info.map(|i| i.roles.clone()).unwrap_or_default(),
            l,
            reason,
        );
        if self.audit.is_some() {
            self.anomaly_pending.push(ev);
        }
    }

    /// The first row of an Execute: look up the transforms of its portal.
    fn resolve_portal(&mut self) {
        self.resolved = true;
        if let Some(Expect::Execute { portal }) = self.front() {
            let portal = portal.clone();
            if let Some(PortalPlan { row, formats }) = self.book.portal(&portal) {
                if !row.is_empty() {
                    self.tally_roles = row.roles.clone();
                    self.rows = Some((row, formats));
                }
            }
        }
    }

    /// CommandComplete or EmptyQueryResponse: a result ended.
    fn result_done(&mut self) {
        self.rows = None;
        self.copy = None;
        self.resolved = false;
        match self.front() {
            Some(Expect::Query { .. }) => self.query_index += 1,
            Some(Expect::Execute { .. }) => {
                self.pop();
            }
            _ => {}
        }
    }

    /// Rewrite a RowDescription for `plan`, and cross-check every field against the
    /// catalog: a protected column the plan does not transform stops the statement.
    fn describe(
        &mut self,
        body: &[u8],
        plan: Option<Arc<RowPlan>>,
    ) -> Result<Option<Bytes>, RowError> {
        let state = self.state.get_or_insert_with(|| self.enf.current()).clone();
        let epoch = self.enf.catalog.epoch();
        let snapshot = match &self.snapshot {
            Some((e, s)) if *e == epoch => Some(s.clone()),
            _ => {
                let s = self.enf.catalog.peek(&self.database);
                self.snapshot = s.clone().map(|s| (epoch, s));
                s
            }
        };
        if let (Some(d), Some(snap)) = (&self.described, &snapshot) {
            if d.answers(body, &plan, &state, snap) {
                return Ok(d.answer.clone());
            }
        }
        let answer = self.check_and_rewrite(body, plan.as_deref(), &state, snapshot.as_ref())?;
        // Remembered only with a catalog to check against: without one, every field passes.
        if let Some(snap) = snapshot {
            let mut d = self.described.take().map_or_else(Vec::new, |d| d.body);
            d.clear();
            d.extend_from_slice(body);
            self.described = Some(Described {
                body: d,
                plan,
                state,
                snapshot: snap,
                answer: answer.clone(),
            });
        }
        Ok(answer)
    }

    fn check_and_rewrite(
        &self,
        body: &[u8],
        plan: Option<&RowPlan>,
        state: &crate::enforce::PolicyState,
        snapshot: Option<&Arc<crate::catalog::Snapshot>>,
    ) -> Result<Option<Bytes>, RowError> {
        let empty = RowPlan::default();
        let plan_ref = plan.unwrap_or(&empty);
        let check = |i: usize, f: &rows::Field| -> Result<(), RowError> {
            let (Some(snap), true) = (snapshot, f.table_oid != 0) else {
                return Ok(());
            };
            let Some(rel) = snap.by_oid(f.table_oid) else {
                return Ok(());
            };
            let Some(c) = rel
                .columns
                .iter()
                .find(|a| a.attnum == f.attnum)
                .and_then(|a| a.protected)
            else {
                return Ok(());
            };
            // The analysis must have seen this column here (transformed, or passed because
            // the login may read it in clear).
            let column = state.policy.column(c);
            match plan_ref.qualified.get(i) {
                Some(q) if column.is_named(q) => Ok(()),
                _ => Err(RowError::Unexpected {
                    index: i + 1,
                    column: column.qualified(),
                }),
            }
        };
        if plan_ref.is_empty() {
            rows::check_row_description(body, check)?;
            return Ok(None);
        }
        rows::row_description(body, plan_ref, check).map(|b| Some(b.freeze()))
    }

    /// A result could not be transformed: the client gets an error instead of the rest.
    fn fail(&mut self, e: RowError, out: &mut BytesMut) {
        tracing::error!(error = %e, "result transform failed; statement stopped");
        if matches!(e, RowError::Decrypt { .. }) {
            self.enf
                .metrics
                .enforcement
                .crypto
                .with_label_values(&["decrypt_failed"])
                .inc();
        }
        let code = match e {
            RowError::Unexpected { .. } => sqlstate::INSUFFICIENT_PRIVILEGE,
            _ => sqlstate::INTERNAL_ERROR,
        };
        out.extend_from_slice(&error_response(Severity::Error, code, &e.to_string()));
        self.discard = true;
        self.rows = None;
    }

    fn flush_tally(&mut self) {
        if self.tally.values.is_empty() && self.tally.decrypted == 0 {
            return;
        }
        let m = &self.enf.metrics.enforcement;
        let state = self.enf.current();
        let counters = &mut self.tally_counters;
        if !counters.is_for(&state, &self.tally_roles) {
            *counters = TallyCounters::new(state.clone(), self.tally_roles.clone());
        }
        for (key, n) in self.tally.values.drain(..) {
            let (values, by_role) = counters.get(key, m);
            values.inc_by(n);
            for c in by_role {
                c.inc_by(n);
            }
        }
        if self.tally.decrypted > 0 {
            counters.decrypted(m).inc_by(self.tally.decrypted);
            self.tally.decrypted = 0;
        }
    }
}

/// The counters a session's tally is flushed into, looked up once per (level, action) for a
/// policy version and role set instead of by label at every ReadyForQuery.
#[derive(Default)]
struct TallyCounters {
    state: Option<Arc<crate::enforce::PolicyState>>,
    roles: Arc<Vec<String>>,
    /// (level, action) → `sensitive_values_total` and `sensitive_values_by_role_total`.
    by_key: Vec<(TallyKey, IntCounter, Vec<IntCounter>)>,
    decrypted: Option<IntCounter>,
}

type TallyKey = (pgveil_policy::model::LevelId, pgveil_policy::model::Action);

impl TallyCounters {
    fn new(state: Arc<crate::enforce::PolicyState>, roles: Arc<Vec<String>>) -> Self {
        TallyCounters {
            state: Some(state),
            roles,
            by_key: Vec::new(),
            decrypted: None,
        }
    }

    fn is_for(&self, state: &Arc<crate::enforce::PolicyState>, roles: &Arc<Vec<String>>) -> bool {
        self.state.as_ref().is_some_and(|s| Arc::ptr_eq(s, state))
            && (Arc::ptr_eq(&self.roles, roles) || self.roles == *roles)
    }

    fn get(
        &mut self,
        key: TallyKey,
        m: &crate::metrics::enforcement::EnforcementMetrics,
    ) -> (&IntCounter, &[IntCounter]) {
        let i = match self.by_key.iter().position(|(k, _, _)| *k == key) {
            Some(i) => i,
            None => {
                let (level, action) = key;
                let level = self
                    .state
                    .as_ref()
                    .and_then(|s| s.policy.policy().levels.get(level).cloned())
                    .unwrap_or_else(|| "?".into());
                let values = m
                    .sensitive_values
                    .with_label_values(&[&level, action.name()]);
                let by_role = if self.roles.is_empty() {
                    vec![m
                        .sensitive_by_role
                        .with_label_values(&["none", action.name()])]
                } else {
                    self.roles
                        .iter()
                        .map(|r| m.sensitive_by_role.with_label_values(&[r, action.name()]))
                        .collect()
                };
                self.by_key.push((key, values, by_role));
                self.by_key.len() - 1
            }
        };
        let (_, values, by_role) = &self.by_key[i];
        (values, by_role)
    }

    fn decrypted(&mut self, m: &crate::metrics::enforcement::EnforcementMetrics) -> &IntCounter {
        self.decrypted
            .get_or_insert_with(|| m.crypto.with_label_values(&["decrypt"]))
    }
}

/// The anomaly limits with `then: deny` a prepared statement's rows count against.
/// A read of an hours rule's level outside its hours: the alert's reason, the first time in
/// the rule's window for this login (later reads in the window are refused or passed quietly).
fn out_of_hours(
    enf: &Enforcement,
    login: &str,
    l: &AnomalyLimit,
    h: &Hours,
    now: std::time::SystemTime,
) -> Option<String> {
    let first = matches!(
        enf.anomaly.add(login, &l.rule, 1, 0, l.per),
        crate::enforce::anomaly::Crossing::Crossed { .. }
    );
    first.then(|| {
        format!(
            "level {} read at {}, outside {h}{}",
            l.level,
            h.local_time(now),
            if l.deny { "; then deny" } else { "" }
        )
    })
}

fn deny_limits(p: &Prepared) -> Vec<Arc<AnomalyLimit>> {
    p.rows
        .iter()
        .flat_map(|r| r.anomaly.iter().filter(|l| l.deny).cloned())
        .collect()
}
