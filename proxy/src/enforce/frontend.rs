//! The client direction's enforcement, message by message: what the server gets in place of a
//! client's Query, Parse or Bind (the message as it is, a rewrite with encrypted values, or a
//! refused statement), and what the client then gets in place of the server's answer (pgveil's
//! ErrorResponse for a refused one). A refused statement is replaced by one that fails at parse
//! time, so the server's own error handling (skip to Sync, abort the transaction) keeps the
//! protocol in order. COPY FROM STDIN data into encrypted columns is encrypted row by row.
use std::collections::HashMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use prometheus::IntCounter;

use super::anomaly::{self, Alert};
use super::copy_in::{CopyIn, CopyInError, CopyInPlan};
use super::enforcer::{Enforcer, Verdict};
use super::plan::Prepared;
use super::portals::ProtectedPortals;
use super::reading;
use super::statements::{Outcomes, StatementParams, Statements};
use super::write::{self, Sealer};
use crate::audit::{Entry, SessionAudit};
use crate::protocol::backend::{error_response_hint, Severity};
use crate::protocol::encoding::{ClientEncoding, StreamDecoder};
use crate::protocol::frontend::{self as msg, Bind, Parse};
use crate::sql::Refusal;

/// SQL that fails at parse time; pgveil sends it in place of a refused statement and replaces
/// the server's syntax error with its own ErrorResponse.
pub const REFUSED_SQL: &str = "pgveil refused this statement";

/// A statement name no client can have prepared: a Bind to it fails at the server, which then
/// skips to Sync as for any failed Bind.
const REFUSED_STATEMENT: &[u8] = b"pgveil: refused bind";

/// pgveil's ErrorResponse for a refusal.
pub fn refusal_frame(r: &Refusal) -> BytesMut {
    error_response_hint(Severity::Error, r.sqlstate, &r.message, r.hint.as_deref())
}

/// What the relay does with one message.
#[derive(Default)]
pub struct Judged {
    /// The message the server gets in place of the client's (`None`: the client's, as it is).
    pub send: Option<BytesMut>,
    /// pgveil's ErrorResponse, which replaces the server's answer to the message sent.
    pub refusal: Option<BytesMut>,
    /// The plan of a statement that passed with transforms.
    pub plan: Option<Arc<Prepared>>,
    /// The message, once the server runs it, may change how the server reads SQL: nothing
    /// after it that needs the analysis is judged before the server has answered it.
    pub barrier: reading::Barrier,
    /// A Bind judged its statement again (the current role changed since its Parse): `plan`
    /// replaces the statement's for this portal.
    pub replanned: bool,
}

impl Judged {
    fn refused(send: BytesMut, r: &Refusal) -> Judged {
        Judged {
            send: Some(send),
            refusal: Some(refusal_frame(r)),
            plan: None,
            barrier: reading::Barrier::None,
            replanned: false,
        }
    }
}

struct CopyState {
    copy: CopyIn,
    /// The client encoding's stream decoder, when it is not UTF8: the data is read as UTF-8,
    /// and the rows pgveil writes are encoded again.
    decoder: Option<(ClientEncoding, StreamDecoder)>,
    /// A row could not be encrypted: the COPY was failed; the client's remaining data is
    /// dropped.
    failed: bool,
}

pub use crate::protocol::frontend::LARGE_OBJECT_FUNCTIONS;

pub struct Frontend {
    pub enforcer: Enforcer,
    /// Which prepared statements have parameters to encrypt.
    statements: Statements,
    sealer: Sealer,
    /// A COPY FROM STDIN into encrypted columns in progress.
    copy_in: Option<CopyState>,
    /// Portals bound to a COPY FROM STDIN into encrypted columns.
    portals: HashMap<Bytes, Arc<CopyInPlan>>,
    /// Named portals over protected data, which SQL `FETCH` could read past the relay.
    protected_portals: ProtectedPortals,
    /// `crypto_operations_total{op="encrypt"}`.
    encrypted: IntCounter,
    audit: Option<Arc<SessionAudit>>,
    /// Audit records raised by messages, for the relay to write.
    entries: Vec<Entry>,
    /// See [`Frontend::role_known`].
    role_known: bool,
}

impl Frontend {
    pub fn new(
        enforcer: Enforcer,
        outcomes: Arc<Outcomes>,
        audit: Option<Arc<SessionAudit>>,
    ) -> Frontend {
        let encrypted = enforcer
            .enforcement()
            .metrics
            .enforcement
            .crypto
            .with_label_values(&["encrypt"]);
        Frontend {
            enforcer,
            statements: Statements::new(outcomes),
            sealer: Sealer::default(),
            copy_in: None,
            portals: HashMap::new(),
            protected_portals: ProtectedPortals::default(),
            encrypted,
            audit,
            entries: Vec::new(),
            role_known: true,
        }
    }

    /// The session's client encoding (texts the frontend gets are already decoded from it;
    /// parameters and COPY data are read in it).
    pub fn set_encoding(&mut self, encoding: ClientEncoding) {
        self.sealer.encoding = encoding;
    }

    fn copy_state(&self, plan: Arc<CopyInPlan>) -> CopyState {
        let enc = self.sealer.encoding;
        let decoder = (!enc.is_utf8()).then(|| (enc, StreamDecoder::new(enc)));
        CopyState {
            copy: CopyIn::new(plan),
            decoder,
            failed: false,
        }
    }

    /// Whether the catalog must be read again after DDL: the database holds something
    /// protected, or the last text judged named a table of the policy (it may create one).
    pub fn ddl_matters(&self) -> bool {
        self.enforcer.protects() || self.enforcer.analysed()
    }

    /// Whether the server's error and notice texts must be scrubbed for this session.
    pub fn scrubs(&self) -> bool {
        self.enforcer.scrubs()
    }

    /// Audit records raised since the last call, in order.
    pub fn entries(&mut self) -> &mut Vec<Entry> {
        &mut self.entries
    }

    /// Whether `sql` needs the analysis (and so a settled reading of the session's settings).
    pub fn needs_analysis(&self, sql: &[u8]) -> bool {
        self.enforcer.needs_analysis(sql)
    }

    /// A statement that needs the analysis, refused because a statement before it that may
    /// change how SQL is read has not been answered yet, and cannot be waited for.
    pub fn refused_unsettled(&mut self, parse_name: Option<&[u8]>) -> Judged {
        self.refused_unjudged(parse_name, Refusal::unsettled_reading())
    }

    /// A statement refused before it could be judged (Query, or Parse of `parse_name`).
    pub fn refused_unjudged(&mut self, parse_name: Option<&[u8]>, r: Refusal) -> Judged {
        self.note_refused(&r);
        let send = match parse_name {
            Some(name) => msg::parse_frame(name, REFUSED_SQL, &[]),
            None => msg::query_frame(REFUSED_SQL),
        };
        Judged::refused(send, &r)
    }

    /// A statement that needs the analysis, refused because the server could not tell the
    /// current role (its answer to pgveil's question failed with `code`).
    pub fn refused_role_unknown(&mut self, parse_name: Option<&[u8]>, code: &str) -> Judged {
        self.refused_unjudged(parse_name, Refusal::role_unknown(code))
    }

    /// Whether the server must be asked who the current role is before the next statement
    /// that needs the analysis: a statement since may have changed it, and the database holds
    /// something protected.
    pub fn role_matters(&self) -> bool {
        self.enforcer.role_stale() && self.enforcer.protects()
    }

    /// A statement that may change the current role was sent.
    pub fn role_may_change(&mut self) {
        self.enforcer.role_may_change();
    }

    /// The server told the current role.
    pub fn set_role(&mut self, role: String) {
        self.enforcer.set_role(role);
    }

    /// Whether the current role is known for the next text judged: when not (it may have
    /// changed, and pgveil cannot ask the server before an open batch's Sync), texts judged
    /// according to who is asking are refused.
    pub fn role_known(&mut self, known: bool) {
        self.role_known = known;
    }

    /// A simple Query. `changed_transaction`: a statement of the open transaction may have
    /// changed how SQL is read, so that a ROLLBACK would undo it.
    pub async fn query(&mut self, sql: &[u8], readable: bool, changed_transaction: bool) -> Judged {
        let barrier = reading::barrier(sql, changed_transaction);
        let mut judged = self.query_judged(sql, readable).await;
        if judged.refusal.is_none() {
            judged.barrier = barrier;
        }
        judged
    }

    async fn query_judged(&mut self, sql: &[u8], readable: bool) -> Judged {
        let verdict = self.judge(sql, readable).await;
        match verdict {
            Verdict::Pass => Judged::default(),
            Verdict::Transform(p) => {
                let send = match &p.write {
                    Some(w) => match std::str::from_utf8(sql)
                        .ok()
                        .map(|t| self.sealer.rewrite_sql(t, w))
                    {
                        Some(Ok(t)) => Some(msg::query_frame(&t)),
                        Some(Err(e)) => {
                            self.count_sealed();
                            let r = e.refusal();
                            self.note_refused(&r);
                            return Judged::refused(msg::query_frame(REFUSED_SQL), &r);
                        }
                        None => None,
                    },
                    None => None,
                };
                self.count_sealed();
                if let Some(c) = &p.copy_in {
                    self.copy_in = Some(self.copy_state(c.clone()));
                }
                Judged {
                    send,
                    plan: Some(p),
                    ..Judged::default()
                }
            }
            Verdict::Refuse(r) => {
                self.note_refused(&r);
                self.denied(sql, &r);
                Judged::refused(msg::query_frame(REFUSED_SQL), &r)
            }
        }
    }

    /// A Parse; also returns the sequence number the server direction reports its outcome with.
    pub async fn parse(
        &mut self,
        name: &Bytes,
        p: &Parse<'_>,
        readable: bool,
        changed_transaction: bool,
    ) -> (Judged, u64) {
        let barrier = reading::barrier(p.sql, changed_transaction);
        let mut verdict = self.judge(p.sql, readable).await;
        let judged = self
            .enforcer
            .role_dependent()
            .then(|| (Bytes::copy_from_slice(p.sql), self.enforcer.role_epoch()));
        // The statement's text after encryption, and its encrypted parameters.
        let mut send = None;
        let mut params = None;
        if let Verdict::Transform(prepared) = &verdict {
            let deny_limits = anomaly::deny_limits(prepared);
            if prepared.copy_in.is_some() || !deny_limits.is_empty() {
                params = Some(Arc::new(StatementParams {
                    copy_in: prepared.copy_in.clone(),
                    deny_limits: deny_limits.clone(),
                    ..StatementParams::nothing(barrier, judged.clone())
                }));
            }
            if let Some(w) = &prepared.write {
                let declared = p.types();
                match std::str::from_utf8(p.sql)
                    .ok()
                    .map(|t| self.sealer.rewrite_sql(t, w))
                {
                    Some(Ok(t)) => {
                        send = Some(msg::parse_frame(
                            name,
                            &t,
                            &write::param_types(&declared, w),
                        ));
                        if !w.params.is_empty() {
                            params = Some(Arc::new(StatementParams {
                                plan: w.clone(),
                                declared,
                                copy_in: prepared.copy_in.clone(),
                                deny_limits,
                                barrier,
                                judged: judged.clone(),
                            }));
                        }
                    }
                    Some(Err(e)) => verdict = Verdict::Refuse(e.refusal()),
                    None => {}
                }
                self.count_sealed();
            }
        }
        if (barrier != reading::Barrier::None || judged.is_some())
            && params.is_none()
            && !matches!(verdict, Verdict::Refuse(_))
        {
            params = Some(Arc::new(StatementParams::nothing(barrier, judged)));
        }
        let seq = self.statements.parsed(name.clone(), params);
        let judged = match verdict {
            Verdict::Pass => Judged::default(),
            Verdict::Transform(plan) => Judged {
                send,
                plan: Some(plan),
                ..Judged::default()
            },
            Verdict::Refuse(r) => {
                self.note_refused(&r);
                self.denied(p.sql, &r);
                Judged::refused(msg::parse_frame(name, REFUSED_SQL, &[]), &r)
            }
        };
        (judged, seq)
    }

    /// A Parse refused without being judged: its name no longer means what it meant (the
    /// server fails the Parse); returns the sequence number of its outcome.
    pub fn parse_refused(&mut self, name: &Bytes) -> u64 {
        self.statements.parsed(name.clone(), None)
    }

    /// The text of statement `name`, when the analysis judged it and the current role changed
    /// since: a Bind to it is judged again (and needs the role settled first).
    pub fn statement_to_rejudge(&mut self, name: &[u8]) -> Option<Bytes> {
        let epoch = self.enforcer.role_epoch();
        let p = self.statements.params(name)?;
        let (sql, judged_in) = p.judged.as_ref()?;
        (*judged_in != epoch || self.enforcer.role_stale()).then(|| sql.clone())
    }

    /// A Bind refused before its statement could be judged again.
    pub fn bind_refused(&mut self, b: &Bind<'_>, r: &Refusal) -> Judged {
        self.note_refused(r);
        Judged::refused(msg::empty_bind_frame(b.portal, REFUSED_STATEMENT), r)
    }

    /// A Bind: encrypted parameters are encrypted; a statement whose rows count against an
    /// anomaly limit that is over is refused; a statement judged for another role than the
    /// current one is judged again.
    pub async fn bind(&mut self, b: &Bind<'_>, readable: bool) -> Judged {
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
        self.protected_portals.bound(b.portal, params.is_some());
        let Some(p) = params else {
            return Judged::default();
        };
        let mut replan = None;
        if let Some((sql, epoch)) = &p.judged {
            if *epoch != self.enforcer.role_epoch() || !self.role_known {
                match self.judge(sql, readable).await {
                    Verdict::Refuse(r) => {
                        self.denied(sql, &r);
                        return self.bind_refused(b, &r);
                    }
                    Verdict::Transform(plan) => replan = Some(Some(plan)),
                    Verdict::Pass => replan = Some(None),
                }
            }
        }
        let mut judged = self.bind_params(b, &p);
        if judged.refusal.is_none() {
            if let Some(plan) = replan {
                judged.plan = plan;
                judged.replanned = true;
            }
        }
        judged
    }

    /// A Bind's parameters encrypted, and the anomaly limits its statement counts against.
    fn bind_params(&mut self, b: &Bind<'_>, p: &StatementParams) -> Judged {
        let barrier = p.barrier;
        let refused = || msg::empty_bind_frame(b.portal, REFUSED_STATEMENT);
        let mut alerts = Vec::new();
        let enf = self.enforcer.enforcement();
        if let Some(r) = anomaly::gate(enf, &self.enforcer.login, &p.deny_limits, &mut alerts) {
            self.alerts(alerts);
            self.note_refused(&r);
            self.denied(b"", &r);
            return Judged::refused(refused(), &r);
        }
        self.alerts(alerts);
        let judged = match write::rewrite_bind(b, &p.plan, &p.declared, &mut self.sealer) {
            Ok(send) => Judged {
                send,
                barrier,
                ..Judged::default()
            },
            Err(e) => {
                let r = e.refusal();
                self.note_refused(&r);
                Judged::refused(refused(), &r)
            }
        };
        self.count_sealed();
        judged
    }

    /// A Close of a portal (`kind` `P`): SQL FETCH can no longer reach it.
    pub fn portal_closed(&mut self, kind: u8, name: &[u8]) {
        if kind == b'P' {
            self.protected_portals.closed(name);
        }
    }

    /// Describe of statement `name`: its encrypted parameters (the ParameterDescription names
    /// their plaintext types).
    pub fn statement_params(&mut self, name: &[u8]) -> Option<Arc<StatementParams>> {
        self.statements.params(name)
    }

    /// Execute: a portal bound to a COPY FROM STDIN into encrypted columns starts the COPY.
    pub fn execute(&mut self, portal: &[u8]) {
        if let Some(c) = self.portals.get(portal).cloned() {
            self.copy_in = Some(self.copy_state(c));
        }
    }

    /// The fast-path function call protocol (`body`: the FunctionCall message after its
    /// header). A call by function OID could reach any function, and pgveil cannot tell which
    /// protected columns it reads: it passes in a database that protects nothing, and, where
    /// something is protected, only for the large-object functions libpq's `lo_*` interface
    /// calls (large objects are outside any policy); anything else is refused.
    pub async fn fast_path_call(&mut self, body: &[u8]) -> Judged {
        // Learn whether the database protects anything (an empty text is judged to Pass).
        let _ = self.enforcer.judge(b"", true).await;
        let oid = body
            .get(0..4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes);
        if !self.enforcer.protects() || oid.is_some_and(|o| LARGE_OBJECT_FUNCTIONS.contains(&o)) {
            return Judged::default();
        }
        let r = Refusal::fast_path_call();
        self.note_refused(&r);
        Judged::refused(msg::query_frame(REFUSED_SQL), &r)
    }

    /// A message during a COPY FROM STDIN that pgveil encrypts: CopyData, CopyDone and
    /// CopyFail are handled here (what the server gets is written to `out`), and `true` is
    /// returned. Flush and Sync, which the server ignores during COPY, and any other message
    /// (which ends the COPY at the server) are left to the relay.
    pub fn copy_message(&mut self, tag: u8, frame: &[u8], out: &mut BytesMut) -> bool {
        let Some(state) = self.copy_in.as_mut() else {
            return false;
        };
        match tag {
            b'd' | b'c' | b'f' => {}
            b'H' | b'S' => return false,
            _ => {
                self.copy_in = None;
                return false;
            }
        }
        if state.failed {
            if tag != b'd' {
                self.copy_in = None;
            }
            return true;
        }
        let r = match (tag, &mut state.decoder) {
            (b'd', None) => state.copy.feed(&frame[5..], out),
            (b'c', None) => state.copy.finish(out),
            (b'd' | b'c', Some((enc, decoder))) => {
                state
                    .copy
                    .transcoded(*enc, decoder, tag == b'c', &frame[5..], out)
            }
            _ => Ok(()),
        };
        match r {
            Ok(()) => {
                if tag != b'd' {
                    out.extend_from_slice(frame);
                }
            }
            Err(e) => {
                let refusal = match &e {
                    CopyInError::Write(w) => w.refusal(),
                    other => Refusal::copy_in_unreadable(other.to_string()),
                };
                state.failed = true;
                self.note_refused(&refusal);
                out.extend_from_slice(&msg::copy_fail(&format!("pgveil: {}", refusal.message)));
            }
        }
        self.count_sealed();
        if tag != b'd' {
            self.copy_in = None;
        }
        true
    }

    /// Judge a SQL text, and refuse it when its rows count against an anomaly limit with
    /// `then: deny` that is over.
    async fn judge(&mut self, sql: &[u8], readable: bool) -> Verdict {
        if self.protected_portals.blocks(sql) {
            return Verdict::Refuse(Refusal::fetch_from_portal());
        }
        let verdict = self.enforcer.judge(sql, readable).await;
        // The current role may have changed and pgveil could not ask: only what is judged
        // the same for every role passes.
        if !self.role_known && self.enforcer.role_dependent() {
            return Verdict::Refuse(Refusal::unsettled_reading());
        }
        let Verdict::Transform(p) = &verdict else {
            return verdict;
        };
        let limits = anomaly::deny_limits(p);
        let mut alerts = Vec::new();
        let enf = self.enforcer.enforcement();
        let gated = anomaly::gate(enf, &self.enforcer.login, &limits, &mut alerts);
        self.alerts(alerts);
        match gated {
            Some(r) => Verdict::Refuse(r),
            None => verdict,
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

    /// Count a refusal (metrics, log, `max_denied` anomaly rules); the anomalies it raises get
    /// an audit record.
    fn note_refused(&mut self, r: &Refusal) {
        let alerts = self.enforcer.refused(r);
        self.alerts(alerts);
    }

    fn alerts(&mut self, alerts: Vec<Alert>) {
        let Some(audit) = &self.audit else { return };
        for a in alerts {
            let e = audit.anomaly(self.enforcer.role_names(), &a.rule, a.deny, a.reason);
            self.entries.push(e);
        }
    }

    /// The audit record of a refused statement.
    fn denied(&mut self, sql: &[u8], r: &Refusal) {
        let Some(audit) = &self.audit else { return };
        let text = String::from_utf8_lossy(sql);
        let command = crate::sql::first_word(&text).to_ascii_uppercase();
        let columns = match (&r.column, r.level) {
            (Some(c), Some(level)) => {
                let state = self.enforcer.enforcement().current();
                let name = state.policy.policy().levels.get(level).cloned();
                vec![(c.clone(), name.unwrap_or_default(), "refused".into())]
            }
            _ => Vec::new(),
        };
        let roles = self.enforcer.role_names();
        let e = audit.denied(command, &text, (columns, roles), r.sqlstate, &r.message);
        self.entries.push(e);
    }
}
