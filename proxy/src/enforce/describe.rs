//! RowDescription under a policy: rewritten for the result's plan (masked and hashed columns
//! report `text`, decrypted ones their original type) and cross-checked against the catalog: a
//! result column that comes from a protected column the analysis did not plan there stops the
//! statement. The last description checked is remembered with everything that decided its
//! answer, so a prepared statement described again (libpq does so at every execution) gets the
//! same answer without walking the catalog.
use std::sync::Arc;

use bytes::Bytes;

use super::rows::{self, RowError, RowPlan};
use super::{Enforcement, PolicyState};
use crate::catalog::Snapshot;

/// A RowDescription that passed the cross-check, with everything that decided its answer.
struct Described {
    body: Vec<u8>,
    plan: Option<Arc<RowPlan>>,
    state: Arc<PolicyState>,
    snapshot: Arc<Snapshot>,
    /// The rewritten frame; `None`: the frame passes unchanged.
    answer: Option<Bytes>,
}

impl Described {
    fn answers(
        &self,
        body: &[u8],
        plan: &Option<Arc<RowPlan>>,
        state: &Arc<PolicyState>,
        snapshot: &Arc<Snapshot>,
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

/// One session's RowDescription checker.
#[derive(Default)]
pub struct Describer {
    /// The catalog snapshot for the cross-check, with its epoch.
    snapshot: Option<(u64, Arc<Snapshot>)>,
    /// The last RowDescription checked, and its answer.
    described: Option<Described>,
}

impl Describer {
    /// The frame to send for RowDescription `body` of a result planned by `plan` (`None`: the
    /// frame as it is), or why the statement must stop.
    pub fn answer(
        &mut self,
        enf: &Enforcement,
        database: &str,
        state: &Arc<PolicyState>,
        body: &[u8],
        plan: Option<Arc<RowPlan>>,
    ) -> Result<Option<Bytes>, RowError> {
        let epoch = enf.catalog.epoch();
        let snapshot = match &self.snapshot {
            Some((e, s)) if *e == epoch => Some(s.clone()),
            _ => {
                let s = enf.catalog.peek(database);
                self.snapshot = s.clone().map(|s| (epoch, s));
                s
            }
        };
        if let (Some(d), Some(snap)) = (&self.described, &snapshot) {
            if d.answers(body, &plan, state, snap) {
                return Ok(d.answer.clone());
            }
        }
        let answer = check_and_rewrite(body, plan.as_deref(), state, snapshot.as_ref())?;
        // Remembered only with a catalog to check against: without one, every field passes.
        if let Some(snap) = snapshot {
            let mut d = self.described.take().map_or_else(Vec::new, |d| d.body);
            d.clear();
            d.extend_from_slice(body);
            self.described = Some(Described {
                body: d,
                plan,
                state: state.clone(),
                snapshot: snap,
                answer: answer.clone(),
            });
        }
        Ok(answer)
    }
}

fn check_and_rewrite(
    body: &[u8],
    plan: Option<&RowPlan>,
    state: &PolicyState,
    snapshot: Option<&Arc<Snapshot>>,
) -> Result<Option<Bytes>, RowError> {
    let empty = RowPlan::default();
    let plan_ref = plan.unwrap_or(&empty);
    if let Some(planned) = plan_ref.width {
        let got = body
            .get(..2)
            .map_or(0, |n| i16::from_be_bytes([n[0], n[1]]).max(0) as usize);
        if got != planned {
            return Err(RowError::Width { got, planned });
        }
    }
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
        // The analysis must have seen this column here (transformed, or passed because the
        // login may read it in clear).
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
