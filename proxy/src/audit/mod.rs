//! The audit trail (docs/operations.md, "Audit"; docs/security.md).
//!
//! - [`record`]: the JSON-lines record; [`fingerprint`]: statements without literals;
//! - [`chain`]: the HMAC chain with a ratcheted key, and signed checkpoints;
//! - [`writer`]: the bounded queue and the file writer (fsync, rotation); `marker`: the open
//!   marker that tells a crashed log from a cut one;
//! - [`verify`]: `pgveil audit verify`; [`report`]: `pgveil audit report`;
//! - [`syslog`]: a copy of the trail for a SIEM (CEF or JSON over syslog).
//!
//! Sessions hold their records as [`Entry`]s ([`session`]) and write them with
//! [`AuditSink::write_entries`]; the server starts the writer with [`start`] and closes it with
//! [`AuditHandle::close`].
pub mod chain;
pub mod fingerprint;
mod marker;
pub mod record;
pub mod report;
pub mod session;
pub mod statement;
pub mod syslog;
pub mod verify;
pub mod writer;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use pgveil_policy::crypto::KeySet;

pub use fingerprint::fingerprint;
pub use record::{ColumnUse, Kind, Outcome, PrevEnd, Record};
pub use session::{AuditInfo, Entry, SessionAudit};
pub use statement::{SessionJson, StatementJson, StatementRecord};
pub use verify::{verify, Broken, Summary};
pub use writer::{AuditHandle, AuditSink};

use crate::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot serialize an audit record: {0}")]
    Json(#[source] serde_json::Error),
    #[error("the keyring has no key version to derive the audit keys from")]
    NoKey,
    #[error("the audit writer has stopped")]
    Closed,
    #[error("{0}")]
    Config(String),
}

impl AuditError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        AuditError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

pub use crate::config::audit::{AuditConfig, FsyncPolicy};

#[derive(Debug, Clone)]
pub struct StatementEvent {
    pub session: u64,
    pub login: String,
    /// Policy role names.
    pub roles: Vec<String>,
    pub client: String,
    pub application_name: String,
    /// The command word, e.g. `SELECT`.
    pub command: String,
    pub sql: String,
    /// (qualified column `schema.table.column`, level, action).
    pub columns: Vec<(String, String, String)>,
    /// Rows returned or affected.
    pub rows: u64,
    pub outcome: Outcome,
    /// SQLSTATE and rule (e.g. `42501 rule 5 (line 23)`); never a value.
    pub reason: Option<String>,
}

/// An anomaly limit crossed.
#[derive(Debug, Clone)]
pub struct AnomalyEvent {
    pub session: u64,
    pub login: String,
    pub roles: Vec<String>,
    pub client: String,
    pub application_name: String,
    /// The anomaly rule's name.
    pub rule: String,
    /// `denied` when the rule's `then: deny` refuses, else `ok`.
    pub outcome: Outcome,
    /// What was crossed, e.g. `rows 5012 > 5000 in 10m`; never a value.
    pub reason: Option<String>,
}

impl StatementEvent {
    /// The hot-path form of this event, whose `sql` already holds the fingerprint.
    pub fn to_statement_record(&self) -> StatementRecord {
        StatementRecord {
            time: SystemTime::now(),
            session: std::sync::Arc::new(SessionJson::new(
                self.session,
                &self.login,
                &self.client,
                &self.application_name,
            )),
            statement: std::sync::Arc::new(StatementJson::new(
                &self.roles,
                &self.command,
                &self.sql,
                &self.columns,
            )),
            rows: self.rows,
            outcome: self.outcome,
            reason: self.reason.clone(),
        }
    }

    /// Like [`StatementEvent::into_record`], when `sql` already holds the fingerprint (the
    /// enforcer computes it once per statement text).
    pub fn into_record_fingerprinted(mut self) -> Record {
        let fp = std::mem::take(&mut self.sql);
        let mut r = self.into_record();
        r.fingerprint = Some(fp);
        r
    }

    pub fn into_record(self) -> Record {
        Record {
            time: record::format_time(SystemTime::now()),
            kind: Kind::Statement,
            session: Some(self.session),
            login: Some(self.login),
            roles: Some(self.roles),
            client: Some(self.client),
            application_name: Some(self.application_name),
            command: Some(self.command),
            fingerprint: Some(fingerprint(&self.sql)),
            columns: Some(
                self.columns
                    .into_iter()
                    .map(|(column, level, action)| ColumnUse {
                        column,
                        level,
                        action,
                    })
                    .collect(),
            ),
            rows: Some(self.rows),
            outcome: Some(self.outcome),
            reason: self.reason,
            ..Record::default()
        }
    }
}

impl AnomalyEvent {
    pub fn into_record(self) -> Record {
        Record {
            time: record::format_time(SystemTime::now()),
            kind: Kind::Anomaly,
            session: Some(self.session),
            login: Some(self.login),
            roles: Some(self.roles),
            client: Some(self.client),
            application_name: Some(self.application_name),
            rule: Some(self.rule),
            outcome: Some(self.outcome),
            reason: self.reason,
            ..Record::default()
        }
    }
}

impl AuditSink {
    /// Queues a statement record; waits while the queue is full.
    pub async fn statement(&self, ev: StatementEvent) -> Result<(), AuditError> {
        self.record(ev.into_record()).await
    }

    /// Queues an anomaly record; waits while the queue is full.
    pub async fn anomaly(&self, ev: AnomalyEvent) -> Result<(), AuditError> {
        self.record(ev.into_record()).await
    }
}

/// Opens the log and starts the writer (and the syslog forwarder, when configured). An
/// existing non-empty file is checked (the chain from its last signed record, and whether it
/// was closed or its writer crashed), moved aside (timestamp suffix), and the new log's `start`
/// record anchors its last record and says how it ended.
pub async fn start(
    cfg: &AuditConfig,
    keys: &KeySet,
    metrics: &Metrics,
) -> Result<(AuditSink, AuditHandle), AuditError> {
    let forward = match &cfg.syslog {
        Some(s) => Some(syslog::spawn(s, &metrics.audit).await?),
        None => None,
    };
    writer::spawn(
        cfg,
        keys,
        metrics.audit.records.clone(),
        metrics.audit.queue_depth.clone(),
        forward,
    )
    .await
}

#[cfg(test)]
mod tests;
