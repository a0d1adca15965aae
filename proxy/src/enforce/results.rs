//! Results under a policy, as the server direction streams them: DataRow and COPY TO STDOUT
//! rows transformed per column, the tally of transformed values flushed to the metrics, and the
//! time spent transforming.
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use pgveil_policy::mask::PseudonymKey;

use super::copy;
use super::rows::{self, CopyFormat, RowError, RowPlan, Scratch, Tally};
use super::{Enforcement, PolicyState};
use crate::metrics::values::ValueCounters;
use crate::protocol::backend::{error_response, Severity};
use crate::protocol::encoding::ClientEncoding;
use crate::protocol::sqlstate;

/// One session's result transforms.
#[derive(Default)]
pub struct Transformer {
    scratch: Scratch,
    tally: Tally,
    /// The policy roles the tallied values were sent to.
    tally_roles: Arc<Vec<String>>,
    counters: ValueCounters,
    /// The policy state the counters' level names come from.
    counters_state: Option<Arc<PolicyState>>,
    /// The policy state used for this cycle's transforms (taken anew after ReadyForQuery).
    state: Option<Arc<PolicyState>>,
    /// Time spent transforming since the last ReadyForQuery.
    time: Duration,
}

impl Transformer {
    /// The policy state of this cycle.
    pub fn state(&mut self, enf: &Enforcement) -> &Arc<PolicyState> {
        self.state.get_or_insert_with(|| enf.current())
    }

    /// Transforms for a session in client encoding `encoding`.
    pub fn new(encoding: ClientEncoding) -> Transformer {
        let mut t = Transformer::default();
        t.set_encoding(encoding);
        t
    }

    /// The session's client encoding (values arrive and leave in it).
    pub fn set_encoding(&mut self, encoding: ClientEncoding) {
        self.scratch.encoding = encoding;
    }

    /// Values of `plan`'s result are tallied under its roles.
    pub fn result_of(&mut self, plan: &RowPlan) {
        self.tally_roles = plan.roles.clone();
    }

    /// Rewrite one DataRow body into `out` as a whole frame; on error `out` is left as it was.
    pub fn data_row(
        &mut self,
        enf: &Enforcement,
        body: &[u8],
        plan: &RowPlan,
        formats: &[i16],
        out: &mut BytesMut,
    ) -> Result<(), RowError> {
        self.transform(enf, out, |key, scratch, tally, out| {
            rows::data_row(body, plan, formats, key, scratch, tally, out)
        })
    }

    /// Rewrite one CopyData body of a COPY TO STDOUT into `out`; on error `out` is left as it
    /// was.
    pub fn copy_row(
        &mut self,
        enf: &Enforcement,
        body: &[u8],
        plan: &RowPlan,
        format: CopyFormat,
        first: bool,
        out: &mut BytesMut,
    ) -> Result<(), RowError> {
        self.transform(enf, out, |key, scratch, tally, out| {
            copy::copy_data(body, plan, format, first, key, scratch, tally, out)
        })
    }

    fn transform(
        &mut self,
        enf: &Enforcement,
        out: &mut BytesMut,
        f: impl FnOnce(&PseudonymKey, &mut Scratch, &mut Tally, &mut BytesMut) -> Result<(), RowError>,
    ) -> Result<(), RowError> {
        let at = out.len();
        let state = self.state.get_or_insert_with(|| enf.current());
        let r = f(&state.pseudonym, &mut self.scratch, &mut self.tally, out);
        if r.is_err() {
            out.truncate(at);
        }
        r
    }

    /// Time the relay spent on a read that transformed rows (measured per read, not per row).
    pub fn spent(&mut self, started: Instant) {
        self.time += started.elapsed();
    }

    /// A result could not be transformed: count and log it, and return the ErrorResponse the
    /// client gets instead of the rest.
    pub fn failed(&self, enf: &Enforcement, e: &RowError) -> BytesMut {
        tracing::error!(error = %e, "result transform failed; statement stopped");
        if matches!(e, RowError::Decrypt { .. }) {
            enf.metrics
                .enforcement
                .crypto
                .with_label_values(&["decrypt_failed"])
                .inc();
        }
        let code = match e {
            RowError::Unexpected { .. } | RowError::Width { .. } => {
                sqlstate::INSUFFICIENT_PRIVILEGE
            }
            RowError::Untranslatable(_) => crate::protocol::encoding::UNTRANSLATABLE_CHARACTER,
            _ => sqlstate::INTERNAL_ERROR,
        };
        let frame = error_response(Severity::Error, code, &e.to_string());
        crate::protocol::encoding::notice_in(&frame, self.scratch.encoding)
    }

    /// ReadyForQuery: the time spent transforming is observed, the tally flushed, and the next
    /// cycle takes the policy in force then.
    pub fn cycle_ended(&mut self, enf: &Enforcement) {
        if !self.time.is_zero() {
            enf.metrics
                .enforcement
                .added
                .observe(self.time.as_secs_f64());
            self.time = Duration::ZERO;
        }
        self.flush(enf);
        self.state = None;
    }

    /// Add the tallied values to the metrics.
    pub fn flush(&mut self, enf: &Enforcement) {
        if self.tally.values.is_empty() && self.tally.decrypted == 0 {
            return;
        }
        let m = &enf.metrics.enforcement;
        let state = enf.current();
        if !self
            .counters_state
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(s, &state))
        {
            self.counters_state = Some(state.clone());
        }
        self.counters
            .use_for(Arc::as_ptr(&state) as usize as u64, &self.tally_roles);
        for ((level, action), n) in self.tally.values.drain(..) {
            let name = || {
                state
                    .policy
                    .policy()
                    .levels
                    .get(level)
                    .cloned()
                    .unwrap_or_else(|| "?".into())
            };
            let (values, by_role) = self.counters.get(m, (level, action.name()), name);
            values.inc_by(n);
            for c in by_role {
                c.inc_by(n);
            }
        }
        if self.tally.decrypted > 0 {
            self.counters.decrypted(m).inc_by(self.tally.decrypted);
            self.tally.decrypted = 0;
        }
    }
}
