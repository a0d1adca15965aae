//! One session's enforcer: it judges each SQL text (pass, transform, refuse) against the policy
//! and the catalog snapshot it holds, through the fast-path scan, the parse cache and the
//! analysis, and keeps what changes those judgements (the login's policy roles).
use std::sync::Arc;
use std::time::Instant;

use pgveil_policy::model::Limit;
use pgveil_policy::RoleSet;

use super::plan::{count_decisions, plan, Prepared};
use super::{Enforcement, PolicyState};
use crate::sql::Scanner;

/// A catalog snapshot with its fast-path scanner.
type Bound = crate::catalog::Bound<Scanner>;
use crate::sql::{self, Env, Refusal};

/// The enforcer's verdict on a statement text.
pub enum Verdict {
    /// Nothing protected: forward untouched, no transforms.
    Pass,
    /// Forward, and transform the results with these plans.
    Transform(Arc<Prepared>),
    /// Refuse with this error; the statement never reaches the server.
    Refuse(Refusal),
}

struct Roles {
    generation: u64,
    set: RoleSet,
    /// Error and notice texts are scrubbed for this login in this database.
    scrub: bool,
    /// The database holds something protected.
    protects: bool,
}

pub struct Enforcer {
    enf: Arc<Enforcement>,
    pub login: String,
    pub database: String,
    roles: Option<Roles>,
    /// The policy and catalog snapshot this session used last, with the epochs they were
    /// obtained at: while nothing changed, a statement costs no lock and no map lookup.
    held: Option<Held>,
    /// Statements touching classified columns get an audit record.
    pub audit: bool,
    /// The catalog generation read again because it did not know the login.
    refreshed_for: Option<u64>,
    /// The last text judged needed the analysis (it named a trigger word).
    analysed: bool,
    /// The last text judged was judged according to who is asking (see
    /// [`crate::sql::Analysis::role_dependent`]).
    role_dependent: bool,
    /// The current role (`current_user`) as the server last told it; `None`: the login.
    role: Option<String>,
    /// Bumped whenever the current role changes: statements prepared before are judged again.
    role_epoch: u64,
    /// A statement since the server last told the current role may have changed it.
    role_stale: bool,
}

struct Held {
    policy_epoch: u64,
    state: Arc<PolicyState>,
    catalog_epoch: u64,
    bound: Arc<Bound>,
}

impl Enforcer {
    pub fn new(enf: Arc<Enforcement>, login: String, database: String) -> Enforcer {
        Enforcer {
            enf,
            login,
            database,
            roles: None,
            held: None,
            audit: false,
            refreshed_for: None,
            analysed: false,
            role_dependent: false,
            role: None,
            role_epoch: 0,
            // A login's settings (ALTER ROLE ... SET role) may start it as another role.
            role_stale: true,
        }
    }

    /// The role the policy applies to: the current role, as the server last told it.
    pub fn current_role(&self) -> &str {
        self.role.as_deref().unwrap_or(&self.login)
    }

    /// Whether a statement since the server last told the current role may have changed it.
    pub fn role_stale(&self) -> bool {
        self.role_stale
    }

    /// A statement that may change the current role was sent.
    pub fn role_may_change(&mut self) {
        self.role_stale = true;
    }

    /// The server told the current role.
    pub fn set_role(&mut self, role: String) {
        self.role_stale = false;
        if role != self.current_role() {
            tracing::debug!(login = %self.login, role = %role, "current role changed");
            self.role = (role != self.login).then_some(role);
            self.role_epoch += 1;
            self.roles = None;
            self.refreshed_for = None;
        }
    }

    /// Bumped at every change of the current role.
    pub fn role_epoch(&self) -> u64 {
        self.role_epoch
    }

    /// The login's policy role names, once they have been resolved.
    pub fn role_names(&self) -> Vec<String> {
        match (&self.held, &self.roles) {
            (Some(h), Some(r)) => h
                .state
                .policy
                .role_names(&r.set)
                .into_iter()
                .map(str::to_string)
                .collect(),
            _ => Vec::new(),
        }
    }

    pub fn enforcement(&self) -> &Enforcement {
        &self.enf
    }

    /// Read the catalog ahead of the first statement (failures are retried then).
    pub async fn warm_up(&mut self) {
        match self.hold().await {
            Ok((state, bound)) => {
                self.roles(&state, &bound);
            }
            Err(_) => {
                tracing::warn!(database = %self.database, "catalog not loaded yet; will retry at the first statement");
            }
        }
    }

    /// Whether `sql` would need the analysis (the fast-path scan finds a trigger word); true
    /// while no catalog snapshot is held.
    pub fn needs_analysis(&self, sql: &[u8]) -> bool {
        self.held()
            .is_none_or(|(_, bound)| bound.derived.needs_analysis(sql))
    }

    /// Whether the last text judged needed the analysis.
    pub fn analysed(&self) -> bool {
        self.analysed
    }

    /// Whether the last text judged would be judged differently for another role.
    pub fn role_dependent(&self) -> bool {
        self.analysed && self.role_dependent
    }

    /// Whether the database holds anything protected (true until known).
    pub fn protects(&self) -> bool {
        self.roles.as_ref().is_none_or(|r| r.protects)
    }

    /// Whether error and notice texts must be scrubbed in this session: the database holds
    /// protected data and the login may not read all of it in clear (true until known).
    pub fn scrubs(&self) -> bool {
        self.roles.as_ref().is_none_or(|r| r.scrub)
    }

    /// Decide on one SQL text (a Query, or a Parse). `settings_ok` is false when the
    /// session's encoding or string settings make the text unreadable for pgveil.
    pub async fn judge(&mut self, sql: &[u8], settings_ok: bool) -> Verdict {
        let (mut state, mut bound) = match self.held() {
            Some(h) => h,
            None => match self.hold().await {
                Ok(h) => h,
                Err(v) => return v,
            },
        };
        // A role created (or granted) directly in PostgreSQL since the catalog was read: read
        // it again, once, rather than judge with the wrong policy roles.
        if !bound.snapshot.knows_role(self.current_role())
            && self.refreshed_for != Some(bound.generation)
        {
            self.enf.catalog.invalidate_database(&self.database);
            match self.hold().await {
                Ok((s, b)) => {
                    self.refreshed_for = Some(b.generation);
                    (state, bound) = (s, b);
                }
                Err(v) => return v,
            }
        }
        if self
            .roles
            .as_ref()
            .is_none_or(|r| r.generation != bound.generation)
        {
            self.roles(&state, &bound);
        }
        self.analysed = bound.derived.needs_analysis(sql);
        if !self.analysed {
            return Verdict::Pass;
        }
        let started = Instant::now();
        let mut verdict = self.analyse(sql, settings_ok, &state, &bound);
        // A table of the policy the catalog does not know (created by code the server ran,
        // or in another session since the last read): read the catalog again, once.
        if matches!(&verdict, Verdict::Refuse(r) if r.rule == crate::sql::Rule::UnknownTable)
            && self.refreshed_for != Some(bound.generation)
        {
            self.enf.catalog.invalidate_database(&self.database);
            match self.hold().await {
                Ok((s, b)) => {
                    self.refreshed_for = Some(b.generation);
                    verdict = self.analyse(sql, settings_ok, &s, &b);
                }
                Err(v) => return v,
            }
        }
        self.enf
            .metrics
            .enforcement
            .added
            .observe(started.elapsed().as_secs_f64());
        verdict
    }

    /// The policy and snapshot held, if nothing changed since they were obtained.
    fn held(&self) -> Option<(Arc<PolicyState>, Arc<Bound>)> {
        let h = self.held.as_ref()?;
        let fresh = h.policy_epoch == self.enf.policy_epoch()
            && self.enf.catalog.still_fresh(&h.bound, h.catalog_epoch);
        fresh.then(|| (h.state.clone(), h.bound.clone()))
    }

    /// Obtain the current policy and snapshot (loading the catalog if needed).
    async fn hold(&mut self) -> Result<(Arc<PolicyState>, Arc<Bound>), Verdict> {
        let policy_epoch = self.enf.policy_epoch();
        let catalog_epoch = self.enf.catalog.epoch();
        let state = self.enf.current();
        let bound = match self.enf.catalog.get(&self.database, &state.policy).await {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(database = %self.database, error = %e, "catalog unavailable; refusing statements");
                return Err(Verdict::Refuse(Refusal::catalog_unavailable(
                    &self.database,
                    &e.to_string(),
                )));
            }
        };
        // The epochs were read before `get`: a change during it makes the next statement ask
        // again.
        self.held = Some(Held {
            policy_epoch,
            state: state.clone(),
            catalog_epoch,
            bound: bound.clone(),
        });
        Ok((state, bound))
    }

    fn analyse(
        &mut self,
        sql: &[u8],
        settings_ok: bool,
        state: &PolicyState,
        bound: &Bound,
    ) -> Verdict {
        let enf = self.enf.clone();
        let m = &enf.metrics.enforcement;
        self.role_dependent = true;
        if !settings_ok && !super::reading::restores_settings(sql) {
            return Verdict::Refuse(Refusal::unreadable_session());
        }
        let Ok(text) = std::str::from_utf8(sql) else {
            let invalid = crate::protocol::encoding::ClientEncoding::Utf8
                .decode(sql)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            return Verdict::Refuse(Refusal::invalid_text("22021", &invalid));
        };
        let roles = self.roles(state, bound);
        let analysis = match self.enf.cache.get(text, bound.generation, &roles) {
            Some(a) => {
                m.cache_hits.inc();
                a
            }
            None => {
                m.cache_misses.inc();
                let env = Env {
                    policy: &state.policy,
                    snapshot: &bound.snapshot,
                    roles: &roles,
                };
                let a = Arc::new(sql::analyze(text, &env));
                self.enf
                    .cache
                    .insert(text, bound.generation, &roles, a.clone());
                a
            }
        };
        self.role_dependent = analysis
            .as_ref()
            .as_ref()
            .map_or(true, |a| a.role_dependent);
        match analysis.as_ref() {
            Ok(a) => match plan(a, text, state, &roles, &bound.snapshot, self.audit) {
                // Even a plan without transforms is kept: the RowDescription cross-check
                // needs to know which protected columns the analysis saw.
                Ok(p) => {
                    count_decisions(&p, state, m);
                    Verdict::Transform(Arc::new(p))
                }
                Err(r) => Verdict::Refuse(r),
            },
            Err(r) => Verdict::Refuse(r.clone()),
        }
    }
}

impl Enforcer {
    /// The current role's policy roles, resolved once per catalog generation and role.
    fn roles(&mut self, state: &PolicyState, bound: &Bound) -> RoleSet {
        match &self.roles {
            Some(r) if r.generation == bound.generation => r.set.clone(),
            _ => {
                let who = self.current_role();
                let set = state
                    .policy
                    .resolve_roles(who, bound.snapshot.member_of(who));
                let policy = &state.policy;
                let unrestricted = (0..policy.policy().columns.len())
                    .all(|c| policy.decide(&set, c).action == pgveil_policy::model::Action::Allow);
                let missing: usize = bound
                    .snapshot
                    .policy_mismatches()
                    .iter()
                    .map(|(_, c)| c.len())
                    .sum();
                self.enf
                    .metrics
                    .enforcement
                    .columns_missing
                    .with_label_values(&[&self.database])
                    .set(missing as i64);
                let protected_here = bound.snapshot.protects_anything();
                self.roles = Some(Roles {
                    generation: bound.generation,
                    set: set.clone(),
                    scrub: protected_here && !unrestricted,
                    protects: protected_here,
                });
                set
            }
        }
    }

    /// Count a refusal, log it (never the SQL text: it may hold values), and count it against
    /// the policy's `max_denied` anomaly rules; returns the rules it took over their limit.
    pub fn refused(&self, r: &Refusal) -> Vec<super::anomaly::Alert> {
        let m = &self.enf.metrics.enforcement;
        let state = self.enf.current();
        let level = r
            .level
            .and_then(|l| state.policy.policy().levels.get(l).cloned())
            .unwrap_or_else(|| "none".into());
        m.denied.with_label_values(&[&level]).inc();
        if r.unanalysable {
            m.parse_failures.inc();
        }
        tracing::info!(login = %self.login, database = %self.database, sqlstate = r.sqlstate, reason = %r.message, "statement refused");
        let mut crossed = Vec::new();
        let policy = state.policy.policy();
        for a in &policy.anomaly {
            let Limit::Denied(max) = a.limit else {
                continue;
            };
            let roles_ok = a.roles.is_empty()
                || self
                    .roles
                    .as_ref()
                    .is_some_and(|rs| a.roles.iter().any(|x| rs.set.ids().contains(x)));
            let level_ok = a.level.is_none() || a.level == r.level;
            if !(roles_ok && level_ok) {
                continue;
            }
            let per = std::time::Duration::from_secs(a.per_seconds.max(1));
            if let super::anomaly::Crossing::Crossed { total } =
                self.enf.anomaly.add(&self.login, &a.name, 1, max, per)
            {
                m.anomaly_alerts.with_label_values(&[&a.name]).inc();
                let reason = format!(
                    "{total} refused statements > {max} in {}{}",
                    humantime::format_duration(per),
                    if a.then == pgveil_policy::model::AnomalyAction::Deny {
                        "; then deny"
                    } else {
                        ""
                    }
                );
                tracing::warn!(rule = %a.name, login = %self.login, %reason, "anomaly limit crossed");
                crossed.push(super::anomaly::Alert {
                    rule: a.name.clone(),
                    reason,
                    deny: a.then == pgveil_policy::model::AnomalyAction::Deny,
                });
            }
        }
        crossed
    }
}
