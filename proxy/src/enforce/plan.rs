//! From an analysis to what the relay does with a statement: the row plan of each result
//! (which columns to decrypt, mask, hash or null), the values to encrypt on the way in, the
//! COPY FROM STDIN plan, the audit facts and the anomaly limits the rows count against.
use std::sync::Arc;

use pgveil_policy::model::{ColumnId, EncryptMode, Limit};
use pgveil_policy::{RoleSet, Transform};

use super::copy_in::CopyInPlan;
use super::rows::{AnomalyLimit, ColumnOp, CopyFormat, Op, RowPlan};
use super::write::{self, LiteralEdit, ParamEdit, Seal, WritePlan};
use super::PolicyState;
use crate::audit::AuditInfo;
use crate::catalog::Snapshot;
use crate::sql::{self, Analysis, Kind, Refusal, Src};

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

/// One decision per protected output column of a judged statement.
pub(super) fn count_decisions(
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

/// Turn an analysis into per-statement row plans.
pub(super) fn plan(
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
    // Every use of an encrypted parameter: (start, end, number, lookup form).
    let mut param_uses: Vec<(usize, usize, usize, Option<sql::LookupForm>)> = Vec::new();
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
                    param_uses.push((site.start, site.end, *n, lookup));
                    let array = lookup == Some(sql::LookupForm::Array);
                    match wp.param(index) {
                        // Two uses of one parameter must encrypt to the same ciphertext.
                        Some(p)
                            if p.seal.cipher.domain() == seal.cipher.domain()
                                && p.array == array
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
                            array,
                            widened: false,
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
        let anomaly = anomaly_limits(&qualified, s, state, roles);
        if s.packs {
            if let Some(l) = anomaly
                .iter()
                .find(|l| l.deny && matches!(l.limit, Limit::Rows(_)))
            {
                return Err(Refusal::anomaly_packing(&l.rule, &l.level));
            }
        }
        let width = (s.kind == Kind::Rows
            && s.copy.is_none()
            && !s.touched.is_empty()
            && !s.outputs.is_empty()
            && !s.outputs.contains(&Src::Opaque))
        .then_some(s.outputs.len());
        rows.push(Arc::new(RowPlan {
            ops,
            qualified,
            copy,
            audit,
            anomaly,
            roles: role_names.clone(),
            width,
        }));
    }
    let counts = if param_uses.is_empty() {
        Vec::new()
    } else {
        crate::sql::depth::placeholder_counts(sql)
    };
    if !param_uses.is_empty() {
        // A parameter the server would also see elsewhere must not be encrypted for it all.
        for p in &wp.params {
            let n = p.index + 1;
            let sites = param_uses.iter().filter(|u| u.2 == n).count();
            if counts.get(n).map_or(0, |c| c.0) > sites {
                return Err(Refusal::parameter_used_elsewhere(
                    n,
                    &p.seal.qualified,
                    p.seal.level,
                ));
            }
        }
    }
    widen_lookups(&mut wp, &param_uses, &counts, sql);
    Ok(Prepared {
        rows,
        write: (!wp.is_empty()).then(|| Arc::new(wp)),
        copy_in,
    })
}

/// A parameter used only as `col = $n` or `col <> $n` lookups is widened like a literal:
/// the text says `col = ANY($n)` (`<> ALL($n)`) and the Bind sends the value's envelope under
/// every key version, so rows not yet re-encrypted after a rotation are found. Other uses
/// keep the parameter one value (the active version), with casts around it removed.
fn widen_lookups(
    wp: &mut WritePlan,
    uses: &[(usize, usize, usize, Option<sql::LookupForm>)],
    counts: &[(usize, usize)],
    sql: &str,
) {
    use sql::LookupForm::{Eq, NotEq};
    for p in wp.params.iter_mut() {
        let n = p.index + 1;
        let of_it: Vec<_> = uses.iter().filter(|u| u.2 == n).collect();
        // Every occurrence is such a lookup (a NULL test elsewhere would see an array).
        let everywhere = counts.get(n).map_or(0, |c| c.1) == of_it.len();
        p.widened = everywhere
            && !of_it.is_empty()
            && of_it.iter().all(|u| matches!(u.3, Some(Eq | NotEq)));
    }
    for &(start, end, n, form) in uses {
        let widened = wp.param(n - 1).is_some_and(|p| p.widened);
        match form {
            Some(f @ (Eq | NotEq)) if widened => wp.widen.push((start, end, n, f)),
            _ if crate::sql::sites::token_end(sql, start) != Some(end) => {
                wp.strips.push((start, end, n))
            }
            _ => {}
        }
    }
}

/// The anomaly rules whose rows a statement counts against: those of the levels of its
/// protected outputs (`qualified`, by position) and of the columns whose values reach its
/// result computed (`revealed`).
fn anomaly_limits(
    qualified: &[String],
    s: &sql::StatementPlan,
    state: &PolicyState,
    roles: &RoleSet,
) -> Vec<Arc<AnomalyLimit>> {
    let policy = state.policy.policy();
    if policy.anomaly.is_empty() {
        return Vec::new();
    }
    let outputs: Vec<ColumnId> = qualified
        .iter()
        .filter(|q| !q.is_empty())
        .filter_map(|q| q.rsplit_once('.'))
        .filter_map(|(t, c)| state.policy.column_id(t, c))
        .collect();
    let levels: Vec<usize> = outputs
        .iter()
        .chain(&s.revealed)
        .map(|&c| state.policy.column(c).level)
        .collect();
    if levels.is_empty() {
        return Vec::new();
    }
    // A row counts as many rows of a level as it carries values of one column of it.
    let weight = |level: Option<usize>| {
        let of_level = |c: &&ColumnId| level.is_none_or(|l| state.policy.column(**c).level == l);
        let bare = outputs
            .iter()
            .filter(of_level)
            .map(|c| outputs.iter().filter(|d| *d == c).count());
        let spread = s
            .spread
            .iter()
            .filter(|(c, _)| of_level(&c))
            .map(|(_, n)| *n);
        // Each scalar subquery in the result adds a stored row's values to every row.
        let subqueries = s.subquery_reveals.iter().filter(|c| of_level(c)).count();
        (bare.chain(spread).max().unwrap_or(0) + subqueries).max(1) as u64
    };
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
                weight: weight(a.level),
            })
        })
        .collect()
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
    let (_, (plain_type, _)) = column_types(col, snapshot);
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

/// A column's type in the database, and the type clients see (its original type, with the
/// original modifier).
fn column_types(col: &pgveil_policy::model::Column, snapshot: &Snapshot) -> (u32, (u32, i32)) {
    let (schema, table) = col.table.split_once('.').unwrap_or(("public", &col.table));
    let rel = snapshot.lookup(Some(schema), table).first().copied();
    let type_oid = rel
        .and_then(|r| r.columns.iter().find(|a| a.name == col.column))
        .map_or(super::rows::TEXT_OID, |a| a.type_oid);
    let plain_type = rel
        .and_then(|r| snapshot.original_type(r, &col.column))
        .unwrap_or((type_oid, -1));
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
    let (type_oid, (plain_type, plain_typmod)) = column_types(col, snapshot);
    Ok(Some(ColumnOp {
        type_oid,
        plain_type,
        plain_typmod,
        column: c,
        level: col.level,
        action: d.action,
        cipher,
        op,
    }))
}
