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

#[derive(Default)]
struct Window {
    /// (bucket start, rows), oldest first.
    buckets: VecDeque<(Instant, u64)>,
    total: u64,
    /// A [`Windows::take`] was refused since the last one that succeeded: the alert of this
    /// episode has been raised.
    refusing: bool,
}

impl Window {
    /// Add `rows` now, to the newest bucket while it is younger than a bucket's length.
    fn push(&mut self, now: Instant, rows: u64, per: Duration) {
        let bucket = (per / BUCKETS as u32).max(Duration::from_secs(1));
        match self.buckets.back_mut() {
            Some((t, n)) if now.duration_since(*t) < bucket => *n += rows,
            _ => self.buckets.push_back((now, rows)),
        }
        self.total += rows;
    }

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

/// What [`Windows::take`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// The rows fit: they were added.
    Taken,
    /// They would take the window over its limit: nothing was added. `first`: the first
    /// refusal since rows last fitted (the episode's alert is due).
    Refused { total: u64, first: bool },
}

/// The key of the window of `login` under `rule` (a login never holds a NUL).
pub fn window_key(login: &str, rule: &str) -> String {
    format!("{login}\0{rule}")
}

#[derive(Default)]
pub struct Windows {
    map: DashMap<String, Window>,
}

impl Windows {
    /// Add `rows` for `login` under rule `rule` (limit `max` per `per`).
    pub fn add(&self, login: &str, rule: &str, rows: u64, max: u64, per: Duration) -> Crossing {
        self.add_at(Instant::now(), &window_key(login, rule), rows, max, per)
    }

    /// [`Windows::add`] by the window's key (see [`window_key`]).
    pub fn add_key(&self, key: &str, rows: u64, max: u64, per: Duration) -> Crossing {
        self.add_at(Instant::now(), key, rows, max, per)
    }

    fn add_at(&self, now: Instant, key: &str, rows: u64, max: u64, per: Duration) -> Crossing {
        if rows == 0 {
            return Crossing::Within;
        }
        let mut w = self.window(now, key, per);
        w.prune(now, per);
        let before = w.total;
        w.push(now, rows, per);
        match (before > max, w.total > max) {
            (true, _) => Crossing::StillOver,
            (false, true) => Crossing::Crossed { total: w.total },
            _ => Crossing::Within,
        }
    }

    /// The window under `key`, created empty when there is none.
    fn window(
        &self,
        now: Instant,
        key: &str,
        per: Duration,
    ) -> dashmap::mapref::one::RefMut<'_, String, Window> {
        if let Some(w) = self.map.get_mut(key) {
            return w;
        }
        if self.map.len() >= MAX_WINDOWS {
            self.evict(now, per);
        }
        self.map.entry(key.to_string()).or_default()
    }

    /// Add `rows` to the window under `key` (see [`window_key`]) only if that keeps it within
    /// `max` per `per`: the check and the addition are one step, so sessions of one login
    /// sharing the window never overshoot it together.
    pub fn take(&self, key: &str, rows: u64, max: u64, per: Duration) -> Take {
        self.take_at(Instant::now(), key, rows, max, per)
    }

    fn take_at(&self, now: Instant, key: &str, rows: u64, max: u64, per: Duration) -> Take {
        let mut w = self.window(now, key, per);
        w.prune(now, per);
        if w.total.saturating_add(rows) > max {
            let first = !std::mem::replace(&mut w.refusing, true);
            return Take::Refused {
                total: w.total,
                first,
            };
        }
        w.refusing = false;
        w.push(now, rows, per);
        Take::Taken
    }

    /// Take back `rows` added by [`Windows::take`] a moment ago (a later limit refused the
    /// same row, so it was never delivered).
    pub fn give_back(&self, key: &str, rows: u64) {
        if let Some(mut w) = self.map.get_mut(key) {
            let n = rows.min(w.total);
            w.total -= n;
            if let Some((_, b)) = w.buckets.back_mut() {
                *b = b.saturating_sub(n);
            }
        }
    }

    /// Whether the window of `login` under `rule` has no room left for one row: its total,
    /// when it is at `max` or over.
    pub fn full(&self, login: &str, rule: &str, max: u64, per: Duration) -> Option<u64> {
        let mut w = self.map.get_mut(window_key(login, rule).as_str())?;
        w.prune(Instant::now(), per);
        (w.total >= max).then_some(w.total)
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
        let mut w = self.map.get_mut(window_key(login, rule).as_str())?;
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
            let mut ages: Vec<(String, Instant)> = self
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
        // A rows limit is full when not one more row fits (rows are only ever added while
        // they fit); a refusals limit is over when more were refused than it allows.
        let over = match l.limit {
            Limit::Rows(_) => enf.anomaly.full(login, &l.rule, max, l.per),
            _ => enf.anomaly.over(login, &l.rule, max, l.per),
        };
        if let Some(total) = over {
            return Some(anomaly_refusal(l, login, total, max));
        }
    }
    None
}

/// A statement of an hours rule's level that returned rows: the alert, the first time in the
/// rule's window that this happens outside the hours (rows limits are counted row by row as
/// rows leave, see [`super::delivery`]).
pub fn hours_read(enf: &Enforcement, login: &str, l: &AnomalyLimit) -> Option<Alert> {
    let Limit::Hours(h) = &l.limit else {
        return None;
    };
    let now = SystemTime::now();
    if h.allows(now) {
        return None;
    }
    let reason = out_of_hours(enf, login, l, h, now)?;
    Some(alert(enf, login, l, reason))
}

/// The reason of the alert of a rows limit crossed at `total` rows.
pub fn rows_reason(l: &AnomalyLimit, total: u64, max: u64) -> String {
    format!(
        "rows {total} > {max} of level {} in {}{}",
        l.level,
        humantime::format_duration(l.per),
        if l.deny { "; then deny" } else { "" }
    )
}

/// A statement refused because an anomaly rule with `then: deny` is over its limit (`total`
/// rows or refusals so far, `max` allowed).
pub fn anomaly_refusal(l: &AnomalyLimit, login: &str, total: u64, max: u64) -> Refusal {
    let what = match l.limit {
        Limit::Denied(_) => format!("had {total} statements refused"),
        _ => format!("received {total} rows of level {} (the limit)", l.level),
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
        assert_eq!(
            w.add_at(t0, &window_key("a", "r"), 600, 1000, per),
            Crossing::Within
        );
        assert_eq!(
            w.add_at(
                t0 + Duration::from_secs(30),
                &window_key("a", "r"),
                500,
                1000,
                per
            ),
            Crossing::Crossed { total: 1100 }
        );
        assert_eq!(
            w.add_at(
                t0 + Duration::from_secs(31),
                &window_key("a", "r"),
                1,
                1000,
                per
            ),
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
        assert_eq!(
            w.add_at(t0, &window_key("a", "other"), 5, 1000, per),
            Crossing::Within
        );
    }

    #[test]
    fn a_take_adds_only_what_fits_and_alerts_once_per_episode() {
        let w = Windows::default();
        let t0 = Instant::now();
        let per = Duration::from_secs(60);
        let k = window_key("a", "r");
        for _ in 0..4 {
            assert_eq!(w.take_at(t0, &k, 2, 9, per), Take::Taken);
        }
        // 8 taken: one more of weight 2 would make 10 > 9; it is not added.
        assert_eq!(
            w.take_at(t0, &k, 2, 9, per),
            Take::Refused {
                total: 8,
                first: true
            }
        );
        assert_eq!(
            w.take_at(t0, &k, 2, 9, per),
            Take::Refused {
                total: 8,
                first: false
            }
        );
        // A single value still fits; then the window is full.
        assert_eq!(w.take_at(t0, &k, 1, 9, per), Take::Taken);
        assert_eq!(w.full("a", "r", 9, per), Some(9));
        // Given back (another limit refused the same row): room again.
        w.give_back(&k, 1);
        assert_eq!(w.full("a", "r", 9, per), None);
        // After the window, everything has left; the next refusal is a new episode.
        assert_eq!(w.take_at(t0 + per, &k, 9, 9, per), Take::Taken);
        assert_eq!(
            w.take_at(t0 + per, &k, 1, 9, per),
            Take::Refused {
                total: 9,
                first: true
            }
        );
    }

    #[test]
    fn the_map_stays_bounded() {
        let w = Windows::default();
        let t0 = Instant::now();
        let per = Duration::from_secs(1);
        for i in 0..(MAX_WINDOWS + 10) {
            w.add_at(t0, &window_key(&format!("login{i}"), "r"), 1, 10, per);
        }
        assert!(w.len() <= MAX_WINDOWS, "{}", w.len());
        // Windows that emptied are evicted.
        w.evict(t0 + Duration::from_secs(5), per);
        assert!(w.is_empty(), "{}", w.len());
    }
}
