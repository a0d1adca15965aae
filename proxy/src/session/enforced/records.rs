//! The records a statement's answer leaves: its audit entry and its alerts, taken when the
//! statement completes, fails, is stopped by pgveil (a limit without room, a value that cannot
//! be transformed), or its suspended portal ends; and the rows it delivered, counted one by
//! one as they leave ([`Delivery`]), from the first row of a result (a portal's plan looked up).
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::expect::Expect;
use super::server::ServerToClient;
use crate::audit::Outcome;
use crate::enforce::anomaly::Alert;
use crate::enforce::book::PortalPlan;
use crate::enforce::delivery::Delivery;
use crate::enforce::frontend::refusal_frame;
use crate::enforce::rows::{RowError, RowPlan};
use crate::protocol::backend::{command_rows, error_code};
use crate::sql::Refusal;

/// Most suspended portals whose counts are kept; past this, one is recorded early.
const MAX_SUSPENDED: usize = 4096;

impl ServerToClient<'_> {
    /// A result of `plan` starts (`header`: a COPY TO in CSV with a header line): count its
    /// rows when it is audited or under a rows limit. An Execute continues its portal's count.
    pub(super) fn start_delivery(&mut self, plan: &Arc<RowPlan>, header: bool) {
        if self.result.delivery.is_some() {
            return;
        }
        if let Some(Expect::Execute { portal }) = self.answers.front() {
            if let Some(d) = self.suspended.remove(portal) {
                self.result.delivery = Some(d);
                return;
            }
        }
        if Delivery::counts(plan, self.audit.is_some()) {
            self.result.delivery = Some(Delivery::new(plan.clone(), &self.login, header));
        }
    }

    /// The first row of an Execute: look up the transforms of its portal.
    pub(super) fn resolve_portal(&mut self) {
        self.result.resolved = true;
        if let Some(Expect::Execute { portal }) = self.answers.front() {
            let portal = portal.clone();
            if let Some(PortalPlan { row, formats }) = self.book.portal(&portal) {
                self.start_delivery(&row, false);
                if !row.is_empty() {
                    self.transformer.result_of(&row);
                    self.result.rows = Some((row, formats));
                }
            }
        }
    }

    /// A row is about to leave: count it. `false`: a limit had no room; the row is withheld
    /// and the statement was stopped (the client got pgveil's ErrorResponse in `out`).
    pub(super) fn deliver(&mut self, out: &mut BytesMut) -> bool {
        let Some(d) = self.result.delivery.as_mut() else {
            return true;
        };
        let mut alerts = Vec::new();
        let counted = d.row(self.enf, &self.login, &mut alerts);
        let roles = d.plan.roles.clone();
        self.alerted(&roles, alerts);
        match counted {
            Ok(()) => true,
            Err(r) => {
                self.stop(&r, out);
                false
            }
        }
    }

    /// Stop the current statement with `r`: the client gets pgveil's ErrorResponse, nothing
    /// more of this cycle (the server's answers are read and dropped up to ReadyForQuery), and
    /// the statement's record says what it delivered.
    fn stop(&mut self, r: &Refusal, out: &mut BytesMut) {
        self.enf
            .metrics
            .enforcement
            .denied
            .with_label_values(&["none"])
            .inc();
        tracing::info!(login = %self.login, sqlstate = r.sqlstate, reason = %r.message, "statement stopped while streaming");
        out.extend_from_slice(&refusal_frame(r));
        if let Some(d) = self.result.delivery.take() {
            let why = format!("{} {}", r.sqlstate, r.message);
            self.record_delivery(&d, Outcome::Denied, Some(why));
        }
        self.result.recorded = true;
        self.result.discard = true;
        self.result.rows = None;
        self.result.copy = None;
    }

    /// A result could not be transformed: the client gets an error instead of the rest.
    pub(super) fn fail(&mut self, e: RowError, out: &mut BytesMut) {
        if matches!(e, RowError::Width { .. }) {
            // The catalog may have changed under the analysis (a column added directly in
            // PostgreSQL): read it again before the next statement.
            self.enf.catalog.invalidate_database(&self.database);
        }
        out.extend_from_slice(&self.transformer.failed(self.enf, &e));
        if let Some(d) = self.result.delivery.take() {
            let why = format!("XX000 {e}");
            self.record_delivery(&d, Outcome::Error, Some(why));
            self.result.recorded = true;
        }
        self.result.discard = true;
        self.result.rows = None;
    }

    /// The count of the statement whose answer this is: the current result's, or for an
    /// Execute the one its portal kept when it was suspended.
    fn take_delivery(&mut self) -> Option<Delivery> {
        if let Some(d) = self.result.delivery.take() {
            return Some(d);
        }
        match self.answers.front() {
            Some(Expect::Execute { portal }) => {
                let portal = portal.clone();
                self.suspended.remove(&portal)
            }
            _ => None,
        }
    }

    /// A statement completed (`CommandComplete`): audit it with the rows it delivered (for a
    /// statement whose rows were not counted, the server's count).
    pub(super) fn record_completion(&mut self, body: &[u8]) {
        if std::mem::take(&mut self.result.recorded) {
            return;
        }
        if let Some(d) = self.take_delivery() {
            self.record_delivery(&d, Outcome::Ok, None);
            return;
        }
        if self.audit.is_none() {
            return;
        }
        let Some(plan) = self.current_row_plan() else {
            return;
        };
        if let (Some(info), Some((_, audit))) = (&plan.audit, &self.audit) {
            // After pgveil stopped a statement of this cycle, the server's later answers are
            // withheld from the client: nothing of them was delivered.
            let (rows, reason) = if self.result.discard {
                let why = "ran, but its answer was withheld: pgveil stopped an earlier statement of the batch";
                (0, Some(why.to_string()))
            } else {
                (command_rows(body), None)
            };
            self.entries
                .push(audit.statement(info, rows, Outcome::Ok, reason));
        }
    }

    /// What a failing statement's record needs, taken before its expectation is dropped.
    pub(super) fn failing(&mut self) -> Failing {
        if self.result.recorded {
            return Failing::Recorded;
        }
        if let Some(d) = self.take_delivery() {
            return Failing::Delivered(d);
        }
        match self
            .audit
            .is_some()
            .then(|| self.current_row_plan())
            .flatten()
        {
            Some(plan) => Failing::Plan(plan),
            None => Failing::Nothing,
        }
    }

    /// A statement failed (`ErrorResponse` from the server): audit it with its SQLSTATE and
    /// the rows it delivered before the error.
    pub(super) fn record_error(&mut self, failing: Failing, body: &[u8]) {
        let code = error_code(body).map(str::to_string);
        match failing {
            Failing::Delivered(d) => self.record_delivery(&d, Outcome::Error, code),
            Failing::Plan(plan) => {
                if let (Some(info), Some((_, audit))) = (&plan.audit, &self.audit) {
                    self.entries
                        .push(audit.statement(info, 0, Outcome::Error, code));
                }
            }
            Failing::Recorded | Failing::Nothing => {}
        }
    }

    /// An Execute stopped at its row limit (`PortalSuspended`): the portal keeps its count
    /// for its next Execute, or for its record when it ends.
    pub(super) fn suspend_delivery(&mut self) {
        let Some(d) = self.result.delivery.take() else {
            return;
        };
        let Some(Expect::Execute { portal }) = self.answers.front() else {
            return;
        };
        let portal = portal.clone();
        if self.suspended.len() >= MAX_SUSPENDED {
            let any = self.suspended.keys().next().cloned();
            if let Some(k) = any {
                self.portal_ended(
                    &k,
                    "its count was recorded early (too many suspended portals)",
                );
            }
        }
        self.suspended.insert(portal, d);
    }

    /// Portal `name` ended (closed, bound again, or its transaction ended) before it
    /// completed: its record says what it delivered.
    pub(super) fn portal_ended(&mut self, name: &Bytes, why: &str) {
        if let Some(d) = self.suspended.remove(name) {
            self.record_delivery(&d, Outcome::Ok, Some(format!("suspended portal: {why}")));
        }
    }

    /// The transaction ended: every suspended portal with it.
    pub(super) fn portals_ended(&mut self, why: &str) {
        let names: Vec<Bytes> = self.suspended.keys().cloned().collect();
        for n in names {
            self.portal_ended(&n, why);
        }
    }

    /// The session ends: what is still counting is recorded, and the records are written.
    pub async fn finish(&mut self) {
        if let Some(d) = self.result.delivery.take() {
            let why = Some("the session ended while its rows were streaming".to_string());
            self.record_delivery(&d, Outcome::Error, why);
        }
        self.portals_ended("the session ended");
        if let Some((sink, _)) = &self.audit {
            sink.write_entries(&mut self.entries).await;
        }
    }

    /// The record of a statement whose rows were counted, and its hours alerts.
    pub(super) fn record_delivery(
        &mut self,
        d: &Delivery,
        outcome: Outcome,
        reason: Option<String>,
    ) {
        let mut alerts = Vec::new();
        d.hours(self.enf, &self.login, &mut alerts);
        if let (Some(info), Some((_, audit))) = (&d.plan.audit, &self.audit) {
            self.entries
                .push(audit.statement(info, d.rows, outcome, reason));
        }
        self.alerted(&d.plan.roles, alerts);
    }

    /// The audit records of alerts raised.
    fn alerted(&mut self, roles: &Arc<Vec<String>>, alerts: Vec<Alert>) {
        let Some((_, audit)) = &self.audit else {
            return;
        };
        for a in alerts {
            self.entries
                .push(audit.anomaly(roles.to_vec(), &a.rule, a.deny, a.reason));
        }
    }
}

/// What a failing statement's record is made from.
pub(super) enum Failing {
    /// pgveil stopped it and recorded it already.
    Recorded,
    /// Its rows were counted.
    Delivered(Delivery),
    /// Only its plan is known (it delivered no rows).
    Plan(Arc<RowPlan>),
    Nothing,
}
