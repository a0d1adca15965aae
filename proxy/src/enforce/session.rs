//! One session's enforcer: it decides, message by message, what the server gets and how the
//! answers must be transformed, and keeps the session state that changes those decisions
//! (named statements and portals, the login's policy roles).
use std::sync::Arc;
use std::time::Instant;

use pgveil_policy::hours::Hours;
use pgveil_policy::model::{ColumnId, EncryptMode, Limit};
use pgveil_policy::{RoleSet, Transform};

use super::copy_in::CopyInPlan;
use super::rows::{AnomalyLimit, AuditInfo, ColumnOp, CopyFormat, Op, RowPlan};
use super::write::{self, LiteralEdit, ParamEdit, Seal, WritePlan};
use super::{Enforcement, PolicyState};
use crate::catalog::{Bound, Snapshot};
use crate::sql::{self, Analysis, Env, Kind, Refusal, Src};

/// What a statement text needs, once analysed.
#[derive(Debug, Default)]
pub struct Prepared {
    /// One plan per statement in the text (a simple Query may hold several).
    pub rows: Vec<Arc<RowPlan>>,
    /// Values to encrypt on the way in (literals in the text, parameters at Bind).
    pub write: Option<Arc<WritePlan>>,
    /// Set for `COPY ... FROM STDIN` into encrypted columns.
    pub copy_in: Option<Arc<CopyInPlan>>,
}

impl Prepared {
    pub fn is_empty(&self) -> bool {
        self.rows.iter().all(|r| r.is_empty())
    }
}

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
        }
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
        let state = self.enf.current();
        if let Err(e) = self.enf.catalog.get(&self.database, &state.policy).await {
            tracing::warn!(database = %self.database, error = %e, "catalog not loaded yet; will retry at the first statement");
        }
    }

    /// Decide on one SQL text (a Query, or a Parse). `settings_ok` is false when the
    /// session's encoding or string settings make the text unreadable for pgveil.
    pub async fn judge(&mut self, sql: &[u8], settings_ok: bool) -> Verdict {
        let (state, bound) = match self.held() {
            Some(h) => h,
            None => match self.hold().await {
                Ok(h) => h,
                Err(v) => return v,
            },
        };
        if !bound.scanner.needs_analysis(sql) {
            return Verdict::Pass;
        }
        let started = Instant::now();
        let verdict = self.analyse(sql, settings_ok, &state, &bound);
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
        if !settings_ok && !restores_settings(sql) {
            return Verdict::Refuse(Refusal::unreadable_session());
        }
        let Ok(text) = std::str::from_utf8(sql) else {
            return Verdict::Refuse(Refusal::not_utf8());
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

/// One decision per protected output column of a judged statement.
fn count_decisions(
    p: &Prepared,
    state: &PolicyState,
    m: &crate::metrics::enforcement::EnforcementMetrics,
) {
    let levels = &state.policy.policy().levels;
    for row in &p.rows {
        for (i, q) in row.qualified.iter().enumerate() {
            if q.is_empty() {
                continue;
            }
            let (action, level) = match row.ops.get(i).and_then(Option::as_ref) {
                Some(op) => (op.action, op.level),
                None => {
                    let Some((t, c)) = q.rsplit_once('.') else {
                        continue;
                    };
                    let Some(id) = state.policy.column_id(t, c) else {
                        continue;
                    };
                    (
                        pgveil_policy::model::Action::Allow,
                        state.policy.column(id).level,
                    )
                }
            };
            let level = levels.get(level).map_or("?", |s| s.as_str());
            m.decisions.with_label_values(&[action.name(), level]).inc();
        }
    }
}

impl Enforcer {
    /// The login's policy roles, resolved once per catalog generation.
    fn roles(&mut self, state: &PolicyState, bound: &Bound) -> RoleSet {
        match &self.roles {
            Some(r) if r.generation == bound.generation => r.set.clone(),
            _ => {
                let set = state
                    .policy
                    .resolve_roles(&self.login, bound.snapshot.member_of(&self.login));
                self.roles = Some(Roles {
                    generation: bound.generation,
                    set: set.clone(),
                });
                set
            }
        }
    }

    /// Count a refusal and log it (never the SQL text: it may hold values).
    /// Count a refusal, log it, and count it against the policy's `max_denied` anomaly rules;
    /// returns the rules it took over their limit.
    pub fn refused(&self, r: &Refusal) -> Vec<DenialCrossing> {
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
                crossed.push(DenialCrossing {
                    rule: a.name.clone(),
                    reason,
                    deny: a.then == pgveil_policy::model::AnomalyAction::Deny,
                });
            }
        }
        crossed
    }
}

/// A `max_denied` anomaly rule that a refusal took over its limit.
#[derive(Debug)]
pub struct DenialCrossing {
    pub rule: String,
    pub reason: String,
    pub deny: bool,
}

/// `SET standard_conforming_strings = on` and friends: the way out of an unreadable session,
/// so they pass even while other statements on protected data are refused.
fn restores_settings(sql: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(sql) else {
        return false;
    };
    let text = text.trim().trim_end_matches(';').trim();
    if text.contains(';') {
        return false;
    }
    let lower = text.to_ascii_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| c.is_whitespace() || c == '=')
        .filter(|w| !w.is_empty())
        .collect();
    let (first, rest) = match words.split_first() {
        Some((f, r)) => (*f, r),
        None => return false,
    };
    let rest = match rest.first() {
        Some(&"session") | Some(&"local") => &rest[1..],
        _ => rest,
    };
    let var_ok = matches!(
        rest.first().copied(),
        Some("standard_conforming_strings") | Some("client_encoding")
    );
    match first {
        "reset" => var_ok && rest.len() == 1,
        "set" => {
            var_ok
                && rest.len() == 3 - usize::from(!lower.contains(" to "))
                && rest
                    .last()
                    .is_some_and(|v| matches!(v.trim_matches('\''), "on" | "utf8" | "default"))
        }
        _ => false,
    }
}

/// Turn an analysis into per-statement row plans.
fn plan(
    a: &Analysis,
    sql: &str,
    state: &PolicyState,
    roles: &RoleSet,
    snapshot: &Snapshot,
    audit: bool,
) -> Result<Prepared, Refusal> {
    let mut rows = Vec::with_capacity(a.statements.len());
    let mut fingerprint: Option<String> = None;
    let role_names: Arc<Vec<String>> = Arc::new(
        state
            .policy
            .role_names(roles)
            .into_iter()
            .map(str::to_string)
            .collect(),
    );
    let mut seals: Vec<Arc<Seal>> = Vec::new();
    let mut wp = WritePlan::default();
    let mut copy_in = None;
    for s in &a.statements {
        for site in &s.sites {
            let seal = seal_for(site.column, state, snapshot, &mut seals)?;
            let lookup = match site.purpose {
                sql::Purpose::Store => None,
                sql::Purpose::Lookup(f) => Some(f),
            };
            match &site.value {
                sql::SiteValue::Literal(v) => {
                    let plain = write::plaintext(&seal, v)
                        .map_err(|e| e.refusal())?
                        .into_owned();
                    wp.literals.push(LiteralEdit {
                        start: site.start,
                        end: site.end,
                        plaintext: plain,
                        seal,
                        lookup,
                    });
                }
                sql::SiteValue::Param(n) => {
                    let index = n - 1;
                    if crate::sql::sites::token_end(sql, site.start) != Some(site.end) {
                        wp.strips.push((site.start, site.end, *n));
                    }
                    match wp.param(index) {
                        // Two uses of one parameter must encrypt to the same ciphertext.
                        Some(p)
                            if p.seal.cipher.domain() == seal.cipher.domain()
                                && write_mode(&p.seal, p.lookup)
                                    == write_mode(&seal, lookup.is_some()) => {}
                        Some(p) => {
                            return Err(Refusal::mixed_parameter(
                                *n,
                                &p.seal.qualified,
                                &seal.qualified,
                                seal.level,
                            ))
                        }
                        None => wp.params.push(ParamEdit {
                            index,
                            seal,
                            lookup: lookup.is_some(),
                        }),
                    }
                }
            }
        }
        if let Some(ci) = &s.copy_in {
            if copy_in.is_some() {
                return Err(Refusal::one_copy_per_text());
            }
            let mut columns = Vec::with_capacity(ci.columns.len());
            for c in &ci.columns {
                columns.push(match c {
                    Some(c) => Some(seal_for(*c, state, snapshot, &mut seals)?),
                    None => None,
                });
            }
            copy_in = Some(Arc::new(CopyInPlan {
                columns,
                format: match ci.format {
                    sql::CopyOut::Text => CopyFormat::Text,
                    sql::CopyOut::Csv { header } => CopyFormat::Csv { header },
                },
            }));
        }
        let mut ops = Vec::new();
        let mut qualified = Vec::new();
        if s.kind == Kind::Rows {
            let mut after_opaque = false;
            for src in &s.outputs {
                match *src {
                    Src::Pass if !after_opaque => {
                        ops.push(None);
                        qualified.push(String::new());
                    }
                    Src::Pass => {}
                    Src::Opaque => after_opaque = true,
                    Src::Col(c) if after_opaque => {
                        return Err(Refusal::position_unknown(
                            &state.policy.column(c).qualified(),
                            state.policy.column(c).level,
                        ))
                    }
                    Src::Col(c) => {
                        ops.push(column_op(c, state, roles, snapshot)?);
                        qualified.push(state.policy.column(c).qualified());
                    }
                }
            }
        }
        let copy = s.copy.map(|c| match c {
            sql::CopyOut::Text => CopyFormat::Text,
            sql::CopyOut::Csv { header } => CopyFormat::Csv { header },
        });
        let audit = (audit
            && (!s.touched.is_empty() || !s.sites.is_empty() || s.copy_in.is_some()))
        .then(|| {
            let policy = &state.policy;
            let level = |l: usize| policy.policy().levels.get(l).cloned().unwrap_or_default();
            let mut columns: Vec<(String, String, String)> = s
                .touched
                .iter()
                .map(|(c, _)| {
                    let col = policy.column(*c);
                    let d = policy.decide(roles, *c);
                    (
                        col.qualified(),
                        level(col.level),
                        d.action.name().to_string(),
                    )
                })
                .collect();
            let written = s
                .sites
                .iter()
                .filter(|x| x.purpose == sql::Purpose::Store)
                .map(|x| x.column)
                .chain(
                    s.copy_in
                        .iter()
                        .flat_map(|c| c.columns.iter().flatten().copied()),
                );
            for c in written {
                let col = policy.column(c);
                let entry = (col.qualified(), level(col.level), "write".to_string());
                if !columns.contains(&entry) {
                    columns.push(entry);
                }
            }
            let fp = fingerprint
                .get_or_insert_with(|| crate::audit::fingerprint(sql))
                .clone();
            Arc::new(AuditInfo::new(
                columns,
                crate::sql::first_word(sql).to_ascii_uppercase(),
                policy
                    .role_names(roles)
                    .into_iter()
                    .map(str::to_string)
                    .collect(),
                fp,
            ))
        });
        let anomaly = anomaly_limits(&qualified, state, roles);
        rows.push(Arc::new(RowPlan {
            ops,
            qualified,
            copy,
            audit,
            anomaly,
            roles: role_names.clone(),
        }));
    }
    Ok(Prepared {
        rows,
        write: (!wp.is_empty()).then(|| Arc::new(wp)),
        copy_in,
    })
}

/// The anomaly rules whose rows a statement with these protected outputs counts against.
fn anomaly_limits(
    qualified: &[String],
    state: &PolicyState,
    roles: &RoleSet,
) -> Vec<Arc<AnomalyLimit>> {
    let policy = state.policy.policy();
    if policy.anomaly.is_empty() {
        return Vec::new();
    }
    let levels: Vec<usize> = qualified
        .iter()
        .filter(|q| !q.is_empty())
        .filter_map(|q| q.rsplit_once('.'))
        .filter_map(|(t, c)| state.policy.column_id(t, c))
        .map(|c| state.policy.column(c).level)
        .collect();
    if levels.is_empty() {
        return Vec::new();
    }
    policy
        .anomaly
        .iter()
        .filter(|a| a.roles.is_empty() || a.roles.iter().any(|r| roles.ids().contains(r)))
        .filter(|a| a.level.is_none_or(|l| levels.contains(&l)))
        .map(|a| {
            Arc::new(AnomalyLimit {
                rule: a.name.clone(),
                level: a
                    .level
                    .and_then(|l| policy.levels.get(l).cloned())
                    .unwrap_or_else(|| "any".into()),
                limit: a.limit.clone(),
                per: std::time::Duration::from_secs(a.per_seconds.max(1)),
                deny: a.then == pgveil_policy::model::AnomalyAction::Deny,
            })
        })
        .collect()
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

fn write_mode(seal: &Seal, lookup: bool) -> pgveil_policy::crypto::Mode {
    if lookup {
        pgveil_policy::crypto::Mode::Deterministic
    } else {
        seal.mode
    }
}

/// The seal of an encrypted column (one per column per plan).
fn seal_for(
    c: ColumnId,
    state: &PolicyState,
    snapshot: &Snapshot,
    seals: &mut Vec<Arc<Seal>>,
) -> Result<Arc<Seal>, Refusal> {
    if let Some(s) = seals.iter().find(|s| s.column == c) {
        return Ok(s.clone());
    }
    let col = state.policy.column(c);
    let cipher = state
        .ciphers
        .get(&col.domain)
        .cloned()
        .ok_or_else(|| Refusal::no_key(&col.domain, &col.qualified(), col.level))?;
    let (_, plain_type) = column_types(col, snapshot);
    let seal = Arc::new(Seal {
        column: c,
        level: col.level,
        qualified: col.qualified(),
        cipher,
        mode: match col.encrypt {
            EncryptMode::Deterministic => pgveil_policy::crypto::Mode::Deterministic,
            _ => pgveil_policy::crypto::Mode::Randomized,
        },
        plain_type,
    });
    seals.push(seal.clone());
    Ok(seal)
}

/// A column's type in the database, and the type clients see (its original type).
fn column_types(col: &pgveil_policy::model::Column, snapshot: &Snapshot) -> (u32, u32) {
    let (schema, table) = col.table.split_once('.').unwrap_or(("public", &col.table));
    let rel = snapshot.lookup(Some(schema), table).first().copied();
    let type_oid = rel
        .and_then(|r| r.columns.iter().find(|a| a.name == col.column))
        .map_or(super::rows::TEXT_OID, |a| a.type_oid);
    let plain_type = rel
        .and_then(|r| snapshot.original_type(r, &col.column))
        .unwrap_or(type_oid);
    (type_oid, plain_type)
}

/// The transform of one output column for a login; `None` when its values pass untouched.
fn column_op(
    c: ColumnId,
    state: &PolicyState,
    roles: &RoleSet,
    snapshot: &Snapshot,
) -> Result<Option<ColumnOp>, Refusal> {
    let policy = &state.policy;
    let d = policy.decide(roles, c);
    let col = policy.column(c);
    let cipher = match col.encrypt {
        EncryptMode::None => None,
        _ => Some(
            state
                .ciphers
                .get(&col.domain)
                .cloned()
                .ok_or_else(|| Refusal::no_key(&col.domain, &col.qualified(), col.level))?,
        ),
    };
    let op = match d.transform {
        Transform::Plain if cipher.is_none() => return Ok(None),
        Transform::Plain => Op::Plain,
        Transform::Mask(m) => Op::Mask(m.clone()),
        Transform::Null => Op::Null,
        Transform::Deny => {
            return Err(Refusal::column_denied(
                &col.qualified(),
                &policy.describe_source(d.source, col).to_string(),
                col.level,
            ))
        }
    };
    let (type_oid, plain_type) = column_types(col, snapshot);
    Ok(Some(ColumnOp {
        type_oid,
        plain_type,
        column: c,
        level: col.level,
        action: d.action,
        cipher,
        op,
    }))
}
