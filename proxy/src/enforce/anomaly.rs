//! Anomaly limits from the policy's `anomaly:` section: rows of a level returned per login in
//! a sliding window. Crossing a limit raises an alert (metric, log line, audit record); with
//! `then: deny`, statements that would return rows of that level are refused until the window
//! has let enough rows go.
//!
//! Windows live in memory, one per (login, rule), as a short ring of time buckets; the map is
//! bounded, and windows that emptied are evicted first.
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use dashmap::DashMap;
use pgveil_policy::hours::Hours;
use pgveil_policy::model::Limit;

use super::plan::Prepared;
use super::rows::AnomalyLimit;
use super::Enforcement;
use crate::sql::Refusal;

/// Most windows kept; past this, empty windows are evicted.
const MAX_WINDOWS: usize = 100_000;
/// Buckets per window: counts are kept at 1/60 of the window's length (at least 1 s).
const BUCKETS: u64 = 60;

struct Window {
    /// (bucket start, rows), oldest first.
    buckets: VecDeque<(Instant, u64)>,
    total: u64,
}

impl Window {
    fn prune(&mut self, now: Instant, per: Duration) {
        while let Some(&(t, n)) = self.buckets.front() {
            if now.duration_since(t) < per {
                break;
            }
            self.total -= n;
            self.buckets.pop_front();
        }
    }
}

/// What adding rows to a window did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crossing {
    Within,
    /// This addition took the window over its limit.
    Crossed {
        total: u64,
    },
    /// Already over the limit before.
    StillOver,
}

#[derive(Default)]
pub struct Windows {
    map: DashMap<(String, String), Window>,
}

impl Windows {
    /// Add `rows` for `login` under rule `rule` (limit `max` per `per`).
    pub fn add(&self, login: &str, rule: &str, rows: u64, max: u64, per: Duration) -> Crossing {
        self.add_at(Instant::now(), login, rule, rows, max, per)
    }

    fn add_at(
        &self,
        now: Instant,
        login: &str,
        rule: &str,
        rows: u64,
        max: u64,
        per: Duration,
    ) -> Crossing {
        if rows == 0 {
            return Crossing::Within;
        }
        if self.map.len() >= MAX_WINDOWS {
            self.evict(now, per);
        }
        let bucket = (per / BUCKETS as u32).max(Duration::from_secs(1));
        let mut w = self
            .map
            .entry((login.to_string(), rule.to_string()))
            .or_insert_with(|| Window {
                buckets: VecDeque::new(),
                total: 0,
            });
        w.prune(now, per);
        let before = w.total;
        match w.buckets.back_mut() {
            Some((t, n)) if now.duration_since(*t) < bucket => *n += rows,
            _ => w.buckets.push_back((now, rows)),
        }
        w.total += rows;
        match (before > max, w.total > max) {
            (true, _) => Crossing::StillOver,
            (false, true) => Crossing::Crossed { total: w.total },
            _ => Crossing::Within,
        }
    }

    /// Whether `login` is over the limit of `rule` now.
    pub fn over(&self, login: &str, rule: &str, max: u64, per: Duration) -> Option<u64> {
        self.over_at(Instant::now(), login, rule, max, per)
    }

    fn over_at(
        &self,
        now: Instant,
        login: &str,
        rule: &str,
        max: u64,
        per: Duration,
    ) -> Option<u64> {
        let mut w = self.map.get_mut(&(login.to_string(), rule.to_string()))?;
        w.prune(now, per);
        (w.total > max).then_some(w.total)
    }

    /// Drop windows that hold nothing any more; if the map is still full, drop the oldest.
    fn evict(&self, now: Instant, per: Duration) {
        self.map.retain(|_, w| {
            w.prune(now, per);
            w.total > 0
        });
        if self.map.len() >= MAX_WINDOWS {
            let mut ages: Vec<((String, String), Instant)> = self
                .map
                .iter()
                .filter_map(|e| e.value().buckets.back().map(|b| (e.key().clone(), b.0)))
                .collect();
            ages.sort_by_key(|(_, t)| *t);
            for (k, _) in ages.into_iter().take(MAX_WINDOWS / 10) {
                self.map.remove(&k);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// An anomaly rule crossed: counted in `anomaly_alerts_total` and logged when raised; the relay
/// writes its audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub rule: String,
    /// The rule refuses from now on (`then: deny`).
    pub deny: bool,
    /// What was crossed; never a value.
    pub reason: String,
}

/// Raise an alert for limit `l`: counted and logged.
pub fn alert(enf: &Enforcement, login: &str, l: &AnomalyLimit, reason: String) -> Alert {
    enf.metrics
        .enforcement
        .anomaly_alerts
        .with_label_values(&[&l.rule])
        .inc();
    tracing::warn!(rule = %l.rule, login, %reason, "anomaly limit crossed");
    Alert {
        rule: l.rule.clone(),
        deny: l.deny,
        reason,
    }
}

/// The anomaly limits with `then: deny` a prepared statement's rows count against.
pub fn deny_limits(p: &Prepared) -> Vec<Arc<AnomalyLimit>> {
    p.rows
        .iter()
        .flat_map(|r| r.anomaly.iter().filter(|l| l.deny).cloned())
        .collect()
}

/// A read of an hours rule's level outside its hours: the alert's reason, the first time in
/// the rule's window for this login (later reads in the window are refused or passed quietly).
fn out_of_hours(
    enf: &Enforcement,
    login: &str,
    l: &AnomalyLimit,
    h: &Hours,
    now: SystemTime,
) -> Option<String> {
    let first = matches!(
        enf.anomaly.add(login, &l.rule, 1, 0, l.per),
        Crossing::Crossed { .. }
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

/// The refusal of a statement whose rows count against `limits`, when one of them (all with
/// `then: deny`) is over its limit for `login` or forbids its level now. Alerts it raises are
/// added to `alerts`.
pub fn gate(
    enf: &Enforcement,
    login: &str,
    limits: &[Arc<AnomalyLimit>],
    alerts: &mut Vec<Alert>,
) -> Option<Refusal> {
    for l in limits {
        let max = match &l.limit {
            Limit::Rows(max) | Limit::Denied(max) => *max,
            Limit::Hours(h) => {
                let now = SystemTime::now();
                if h.allows(now) {
                    continue;
                }
                if let Some(reason) = out_of_hours(enf, login, l, h, now) {
                    alerts.push(alert(enf, login, l, reason));
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

/// Count `rows` of a statement against limit `l` (or, for an hours rule, note a read outside
/// the hours); the alert, when this crossed it.
pub fn count(enf: &Enforcement, login: &str, l: &AnomalyLimit, rows: u64) -> Option<Alert> {
    let reason = match &l.limit {
        Limit::Denied(_) => return None,
        Limit::Rows(max) => match enf.anomaly.add(login, &l.rule, rows, *max, l.per) {
            Crossing::Crossed { total } => format!(
                "rows {total} > {max} of level {} in {}{}",
                l.level,
                humantime::format_duration(l.per),
                if l.deny { "; then deny" } else { "" }
            ),
            _ => return None,
        },
        Limit::Hours(h) => {
            let now = SystemTime::now();
            if h.allows(now) {
                return None;
            }
            out_of_hours(enf, login, l, h, now)?
        }
    };
    Some(alert(enf, login, l, reason))
}

/// A statement refused because an anomaly rule with `then: deny` is over its limit (`total`
/// rows or refusals, `max` allowed).
pub fn anomaly_refusal(l: &AnomalyLimit, login: &str, total: u64, max: u64) -> Refusal {
    let what = match l.limit {
        Limit::Denied(_) => format!("had {total} statements refused"),
        _ => format!("received {total} rows of level {}", l.level),
    };
    Refusal::anomaly_limit(&l.rule, login, &what, l.per, max)
}

/// A statement refused because an hours rule with `then: deny` forbids its level now.
pub fn hours_refusal(l: &AnomalyLimit, hours: &Hours, now: std::time::SystemTime) -> Refusal {
    Refusal::anomaly_hours(
        &l.rule,
        &l.level,
        &hours.to_string(),
        &hours.local_time(now).to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_slides() {
        let w = Windows::default();
        let t0 = Instant::now();
        let per = Duration::from_secs(60);
        assert_eq!(w.add_at(t0, "a", "r", 600, 1000, per), Crossing::Within);
        assert_eq!(
            w.add_at(t0 + Duration::from_secs(30), "a", "r", 500, 1000, per),
            Crossing::Crossed { total: 1100 }
        );
        assert_eq!(
            w.add_at(t0 + Duration::from_secs(31), "a", "r", 1, 1000, per),
            Crossing::StillOver
        );
        assert_eq!(
            w.over_at(t0 + Duration::from_secs(59), "a", "r", 1000, per),
            Some(1101)
        );
        // The first 600 rows leave the window: under the limit again.
        assert_eq!(
            w.over_at(t0 + Duration::from_secs(61), "a", "r", 1000, per),
            None
        );
        // Other logins and rules have their own windows.
        assert_eq!(w.over_at(t0, "b", "r", 1000, per), None);
        assert_eq!(w.add_at(t0, "a", "other", 5, 1000, per), Crossing::Within);
    }

    #[test]
    fn the_map_stays_bounded() {
        let w = Windows::default();
        let t0 = Instant::now();
        let per = Duration::from_secs(1);
        for i in 0..(MAX_WINDOWS + 10) {
            w.add_at(t0, &format!("login{i}"), "r", 1, 10, per);
        }
        assert!(w.len() <= MAX_WINDOWS, "{}", w.len());
        // Windows that emptied are evicted.
        w.evict(t0 + Duration::from_secs(5), per);
        assert!(w.is_empty(), "{}", w.len());
    }
}
