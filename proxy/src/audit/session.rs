//! One session's audit records: who they are about ([`SessionAudit`]), what a statement's record
//! says ([`AuditInfo`], decided when the statement was judged), and the records a session holds
//! until its relay writes them ([`Entry`]).
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use super::{AnomalyEvent, AuditSink, Outcome, SessionJson, StatementJson, StatementRecord};

/// What the audit record of a statement says, decided when it was judged.
#[derive(Debug)]
pub struct AuditInfo {
    /// (schema.table.column, level, action) of every classified column it touches.
    pub columns: Vec<(String, String, String)>,
    pub command: String,
    /// The login's policy roles.
    pub roles: Vec<String>,
    /// The statement text with its literals removed.
    pub fingerprint: String,
    /// The fields above as the audit record writes them, serialized once.
    pub json: Arc<StatementJson>,
}

impl AuditInfo {
    pub fn new(
        columns: Vec<(String, String, String)>,
        command: String,
        roles: Vec<String>,
        fingerprint: String,
    ) -> Self {
        let json = Arc::new(StatementJson::new(&roles, &command, &fingerprint, &columns));
        AuditInfo {
            columns,
            command,
            roles,
            fingerprint,
            json,
        }
    }
}

/// A record a session holds until its relay writes it.
#[derive(Debug)]
pub enum Entry {
    Statement(StatementRecord),
    Anomaly(AnomalyEvent),
}

/// Who a session's audit records are about.
pub struct SessionAudit {
    pub session: u64,
    pub login: String,
    pub client: String,
    pub application_name: String,
    /// The fields above as statement records write them, serialized once.
    json: Arc<SessionJson>,
}

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

impl SessionAudit {
    /// A new session's audit identity (session ids count up from 1 per process).
    pub fn new(login: String, client: String, application_name: String) -> Self {
        let session = NEXT_SESSION.fetch_add(1, Ordering::Relaxed);
        let json = Arc::new(SessionJson::new(
            session,
            &login,
            &client,
            &application_name,
        ));
        SessionAudit {
            session,
            login,
            client,
            application_name,
            json,
        }
    }

    /// The record of an anomaly rule crossed (`deny`: its `then: deny` refuses).
    pub fn anomaly(&self, roles: Vec<String>, rule: &str, deny: bool, reason: String) -> Entry {
        Entry::Anomaly(AnomalyEvent {
            session: self.session,
            login: self.login.clone(),
            roles,
            client: self.client.clone(),
            application_name: self.application_name.clone(),
            rule: rule.to_string(),
            outcome: if deny { Outcome::Denied } else { Outcome::Ok },
            reason: Some(reason),
        })
    }

    /// The record of a statement that ran (or failed) with `rows` rows.
    pub fn statement(
        &self,
        info: &AuditInfo,
        rows: u64,
        outcome: Outcome,
        reason: Option<String>,
    ) -> Entry {
        Entry::Statement(StatementRecord {
            time: SystemTime::now(),
            session: self.json.clone(),
            statement: info.json.clone(),
            rows,
            outcome,
            reason,
        })
    }

    /// The record of a statement pgveil refused (its text fingerprinted, never kept).
    /// The record of a refused statement; `columns`: the protected column that caused it
    /// (column, level, `refused`).
    pub fn denied(
        &self,
        command: String,
        sql: &str,
        (columns, roles): (Vec<(String, String, String)>, Vec<String>),
        sqlstate: &str,
        message: &str,
    ) -> Entry {
        let info = AuditInfo::new(columns, command, roles, super::fingerprint(sql));
        self.statement(
            &info,
            0,
            Outcome::Denied,
            Some(format!("{sqlstate} {message}")),
        )
    }
}

impl AuditSink {
    /// Write a session's held records, in order, waiting while the log's queue is full (never
    /// dropped); a writer that has stopped is logged.
    pub async fn write_entries(&self, entries: &mut Vec<Entry>) {
        for e in entries.drain(..) {
            let r = match e {
                Entry::Statement(s) => self.statement_record(s).await,
                Entry::Anomaly(a) => self.anomaly(a).await,
            };
            if let Err(e) = r {
                tracing::error!(error = %e, "audit log unavailable; a record was not written");
            }
        }
    }
}
