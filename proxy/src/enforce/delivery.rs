//! Rows counted as they leave pgveil, for the anomaly limits and the audit record.
//!
//! A result whose rows count (its statement is audited, or its rows count against a rows
//! limit) gets a [`Delivery`] when its first row, RowDescription or CopyOutResponse comes. Each
//! row is offered to it before it is forwarded: a limit with `then: deny` that has no room
//! left stops the row (and the statement) there, so what a login receives never exceeds the
//! limit, however it asks (batches, pipelines, portals read in chunks, parallel sessions: the
//! window is shared and a row is added to it only while it fits). The count outlives the
//! result for a portal suspended by an Execute row limit, and ends in one audit record when
//! the statement completes, fails, its portal is closed or the session ends.
use std::sync::Arc;

use pgveil_policy::model::Limit;

use super::anomaly::{self, window_key, Alert, Take};
use super::rows::RowPlan;
use super::Enforcement;
use crate::sql::Refusal;

/// One statement's rows delivered so far.
pub struct Delivery {
    pub plan: Arc<RowPlan>,
    /// Rows forwarded to the client, over every Execute of its portal.
    pub rows: u64,
    /// The window key of each rows limit of the plan, by position in `plan.anomaly`.
    keys: Vec<Option<String>>,
    /// The next CopyData is a CSV header line, not a row.
    header: bool,
}

impl Delivery {
    /// Whether a result of `plan` is counted: it is audited (`auditing`), or its rows count
    /// against a rows limit or an hours rule.
    pub fn counts(plan: &RowPlan, auditing: bool) -> bool {
        (auditing && plan.audit.is_some())
            || plan
                .anomaly
                .iter()
                .any(|l| matches!(l.limit, Limit::Rows(_) | Limit::Hours(_)))
    }

    /// The count of a result of `plan` for `login`; `header`: a COPY TO in CSV with a header
    /// line, which is no row.
    pub fn new(plan: Arc<RowPlan>, login: &str, header: bool) -> Self {
        let keys = plan
            .anomaly
            .iter()
            .map(|l| matches!(l.limit, Limit::Rows(_)).then(|| window_key(login, &l.rule)))
            .collect();
        Delivery {
            plan,
            rows: 0,
            keys,
            header,
        }
    }

    /// One row (a DataRow, or a CopyData of COPY TO) is about to be forwarded: count it.
    /// `Err`: a limit with `then: deny` has no room for it; the row must not leave, and the
    /// statement stops with the refusal. Alerts raised are added to `alerts`.
    pub fn row(
        &mut self,
        enf: &Enforcement,
        login: &str,
        alerts: &mut Vec<Alert>,
    ) -> Result<(), Refusal> {
        if std::mem::take(&mut self.header) {
            return Ok(());
        }
        let limits = &self.plan.anomaly;
        // First the limits that refuse: all of them must have room, or none is charged.
        for (i, l) in limits.iter().enumerate() {
            let (Some(key), Limit::Rows(max), true) = (&self.keys[i], &l.limit, l.deny) else {
                continue;
            };
            if let Take::Refused { total, first } = enf.anomaly.take(key, l.weight, *max, l.per) {
                for (j, k) in limits.iter().enumerate().take(i) {
                    if let (Some(key), Limit::Rows(_), true) = (&self.keys[j], &k.limit, k.deny) {
                        enf.anomaly.give_back(key, k.weight);
                    }
                }
                if first {
                    let reason = anomaly::rows_reason(l, total + l.weight, *max);
                    alerts.push(anomaly::alert(enf, login, l, reason));
                }
                return Err(anomaly::anomaly_refusal(l, login, total, *max));
            }
        }
        for (i, l) in limits.iter().enumerate() {
            let (Some(key), Limit::Rows(max), false) = (&self.keys[i], &l.limit, l.deny) else {
                continue;
            };
            let max = *max;
            if let anomaly::Crossing::Crossed { total } =
                enf.anomaly.add_key(key, l.weight, max, l.per)
            {
                alerts.push(anomaly::alert(
                    enf,
                    login,
                    l,
                    anomaly::rows_reason(l, total, max),
                ));
            }
        }
        self.rows += 1;
        Ok(())
    }

    /// The statement ended with rows: the hours rules it read outside their hours.
    pub fn hours(&self, enf: &Enforcement, login: &str, alerts: &mut Vec<Alert>) {
        if self.rows == 0 {
            return;
        }
        for l in &self.plan.anomaly {
            if let Some(a) = anomaly::hours_read(enf, login, l) {
                alerts.push(a);
            }
        }
    }
}
