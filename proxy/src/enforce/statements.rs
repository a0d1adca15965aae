//! The client direction's view of the session's prepared statements: which parameters of
//! each must be encrypted at Bind.
//!
//! The client direction decides at send time, before the server has answered the Parse,
//! because a Bind may follow its Parse in the same pipeline. So every Parse is taken to
//! succeed when sent, with an undo record, and the server direction reports how each one
//! ended: a Parse that failed or was skipped after an earlier error is undone, restoring what
//! the name meant before. A Bind on a statement the server does not have fails there
//! whatever pgveil does to it, so a name that outlived its Close or DEALLOCATE here is
//! harmless; a name that the server still has is never lost here.
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::copy_in::CopyInPlan;
use super::write::WritePlan;

/// The parameters of one prepared statement that pgveil encrypts.
#[derive(Debug)]
pub struct StatementParams {
    pub plan: Arc<WritePlan>,
    /// The parameter types the client declared in its Parse.
    pub declared: Vec<u32>,
    /// Set for `COPY ... FROM STDIN` into encrypted columns, run through Execute.
    pub copy_in: Option<Arc<CopyInPlan>>,
    /// Anomaly limits with `then: deny` its rows count against (checked at each Bind).
    pub deny_limits: Vec<Arc<super::rows::AnomalyLimit>>,
    /// The statement may change how the server reads SQL (see [`super::reading`]).
    pub barrier: super::reading::Barrier,
    /// The text of a statement judged by the analysis, and the role epoch it was judged in:
    /// bound after the current role changed, it is judged again for the role asking then.
    pub judged: Option<(Bytes, u64)>,
}

impl StatementParams {
    /// Nothing to encrypt at Bind.
    pub fn nothing(
        barrier: super::reading::Barrier,
        judged: Option<(Bytes, u64)>,
    ) -> StatementParams {
        StatementParams {
            plan: Arc::new(WritePlan::default()),
            declared: Vec::new(),
            copy_in: None,
            deny_limits: Vec::new(),
            barrier,
            judged,
        }
    }
}

#[derive(Clone)]
struct Entry {
    seq: u64,
    params: Option<Arc<StatementParams>>,
}

struct Undo {
    seq: u64,
    name: Bytes,
    prev: Option<Entry>,
}

/// How Parses ended, reported by the server direction.
#[derive(Default)]
pub struct Outcomes {
    reports: Mutex<Vec<(u64, bool)>>,
    any: AtomicBool,
}

impl Outcomes {
    pub fn report(&self, seq: u64, ok: bool) {
        if let Ok(mut r) = self.reports.lock() {
            r.push((seq, ok));
            self.any.store(true, Ordering::Release);
        }
    }
}

pub struct Statements {
    map: HashMap<Bytes, Entry>,
    undo: Vec<Undo>,
    next: u64,
    outcomes: Arc<Outcomes>,
}

impl Statements {
    pub fn new(outcomes: Arc<Outcomes>) -> Statements {
        Statements {
            map: HashMap::new(),
            undo: Vec::new(),
            next: 1,
            outcomes,
        }
    }

    /// A Parse is being sent; returns its sequence number for the server direction.
    pub fn parsed(&mut self, name: Bytes, params: Option<Arc<StatementParams>>) -> u64 {
        self.settle();
        let seq = self.next;
        self.next += 1;
        let prev = self.map.insert(name.clone(), Entry { seq, params });
        self.undo.push(Undo { seq, name, prev });
        seq
    }

    /// What Bind must encrypt for statement `name`.
    pub fn params(&mut self, name: &[u8]) -> Option<Arc<StatementParams>> {
        self.settle();
        self.map.get(name).and_then(|e| e.params.clone())
    }

    /// Apply what the server direction reported.
    fn settle(&mut self) {
        if !self.outcomes.any.swap(false, Ordering::AcqRel) {
            return;
        }
        let reports = match self.outcomes.reports.lock() {
            Ok(mut r) => std::mem::take(&mut *r),
            Err(_) => return,
        };
        for (seq, ok) in reports {
            let Some(i) = self.undo.iter().position(|u| u.seq == seq) else {
                continue;
            };
            let u = self.undo.remove(i);
            if ok {
                // Statements without encrypted parameters need no entry once confirmed.
                if let Some(e) = self.map.get(&u.name) {
                    if e.seq == seq && e.params.is_none() {
                        self.map.remove(&u.name);
                    }
                }
                continue;
            }
            // Failed: take this Parse out of the name's history.
            for later in self.undo.iter_mut().filter(|l| l.name == u.name) {
                if later.prev.as_ref().is_some_and(|p| p.seq == seq) {
                    later.prev = u.prev.clone();
                }
            }
            if self.map.get(&u.name).is_some_and(|e| e.seq == seq) {
                match u.prev {
                    Some(p) => {
                        self.map.insert(u.name, p);
                    }
                    None => {
                        self.map.remove(&u.name);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> Option<Arc<StatementParams>> {
        Some(Arc::new(StatementParams {
            plan: Arc::new(WritePlan::default()),
            declared: vec![],
            copy_in: None,
            deny_limits: vec![],
            barrier: crate::enforce::reading::Barrier::None,
            judged: None,
        }))
    }

    #[test]
    fn failed_parses_restore_what_the_name_meant() {
        let o = Arc::new(Outcomes::default());
        let mut s = Statements::new(o.clone());
        let n = Bytes::from_static(b"s1");
        let a = s.parsed(n.clone(), params());
        o.report(a, true);
        assert!(s.params(b"s1").is_some());
        // The client parses s1 again without closing it: the server refuses (42P05), and s1
        // keeps its first meaning.
        let b = s.parsed(n.clone(), None);
        assert!(s.params(b"s1").is_none());
        o.report(b, false);
        assert!(s.params(b"s1").is_some());
        // Two Parses of one name in a batch that failed: both undone, in report order.
        let c = s.parsed(n.clone(), None);
        let d = s.parsed(n.clone(), None);
        o.report(c, false);
        o.report(d, false);
        assert!(s.params(b"s1").is_some());
        // A confirmed Parse without encrypted parameters replaces it and leaves no entry.
        let e = s.parsed(n, None);
        o.report(e, true);
        assert!(s.params(b"s1").is_none());
        assert!(s.map.is_empty() && s.undo.is_empty());
    }

    #[test]
    fn a_later_success_is_not_undone_by_an_earlier_failure() {
        let o = Arc::new(Outcomes::default());
        let mut s = Statements::new(o.clone());
        let n = Bytes::from_static(b"");
        let a = s.parsed(n.clone(), None);
        let b = s.parsed(n, params());
        o.report(a, false);
        o.report(b, true);
        assert!(s.params(b"").is_some());
    }
}
