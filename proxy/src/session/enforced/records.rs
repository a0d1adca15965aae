//! The records a statement's answer leaves: its audit entry and its count against the
//! anomaly limits, taken when the server completes it or fails it.
use std::sync::Arc;

use super::server::ServerToClient;
use crate::audit::{AuditInfo, Outcome};
use crate::enforce::anomaly;
use crate::protocol::backend::{command_rows, error_code};

impl ServerToClient<'_> {
    /// A statement completed (`CommandComplete`): audit it and count its rows.
    pub(super) fn record_completion(&mut self, body: &[u8]) {
        let plan = if self.audit.is_some() || self.enf.has_anomaly_rules() {
            self.current_row_plan()
        } else {
            None
        };
        if let Some(plan) = plan {
            let rows = command_rows(body);
            if let (Some(info), Some((_, audit))) = (&plan.audit, &self.audit) {
                self.entries
                    .push(audit.statement(info, rows, Outcome::Ok, None));
            }
            for l in &plan.anomaly {
                if let Some(a) = anomaly::count(self.enf, &self.login, l, rows) {
                    if let Some((_, audit)) = &self.audit {
                        let roles = plan
                            .audit
                            .as_ref()
                            .map(|i| i.roles.clone())
                            .unwrap_or_default();
                        self.entries
                            .push(audit.anomaly(roles, &a.rule, a.deny, a.reason));
                    }
                }
            }
        }
    }

    /// What the audit records of the current statement, when this session audits.
    pub(super) fn audit_info(&mut self) -> Option<Arc<AuditInfo>> {
        if self.audit.is_some() {
            self.current_row_plan().and_then(|p| p.audit.clone())
        } else {
            None
        }
    }

    /// A statement failed (`ErrorResponse` from the server): audit it with its SQLSTATE.
    pub(super) fn record_error(&mut self, info: Option<Arc<AuditInfo>>, body: &[u8]) {
        if let (Some(info), Some((_, audit))) = (info, &self.audit) {
            let code = error_code(body).map(str::to_string);
            self.entries
                .push(audit.statement(&info, 0, Outcome::Error, code));
        }
    }
}
