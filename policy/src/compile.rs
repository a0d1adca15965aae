//! The compiled policy and the decision API.
//!
//! # How a decision is made
//! For one policy role and one column:
//! 1. Rules that name the role: if any of them denies the column, the decision is `deny`.
//!    Otherwise the most specific matching rule wins: a `columns` rule over a `kinds` rule over a
//!    `level` rule; between equally specific rules, the earlier rule wins.
//! 2. If no rule names the role, the same procedure over the `roles: ["*"]` rules.
//! 3. If no rule matches at all, the default for the column's level.
//!
//! A login that holds several policy roles gets `deny` if any of its roles is denied by a rule
//! that names that role; otherwise the least restrictive of its roles' decisions. A login with
//! no policy role gets steps 2 and 3 only. docs/policy.md explains why.
//!
//! Decisions for every (role, column) pair are computed once, when the policy is compiled;
//! a lookup is an index plus a comparison per role, and applying a transform writes into a
//! caller-provided buffer.
use crate::load::build_selector_matches as selector_matches;
use crate::mask::{Mask, PseudonymKey};
use crate::model::{Action, Column, ColumnId, EncryptMode, Policy, RoleId, Rule};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// Where a decision came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A rule naming the role (index into `rules`).
    Rule(usize),
    /// A `roles: ["*"]` rule.
    Wildcard(usize),
    /// The default for the column's level.
    Default,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cell {
    action: Action,
    source: Source,
    lookup: bool,
}

/// The policy roles of one login, sorted and without repeats.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct RoleSet(Vec<RoleId>);

impl RoleSet {
    pub fn new(mut ids: Vec<RoleId>) -> Self {
        ids.sort_unstable();
        ids.dedup();
        RoleSet(ids)
    }

    pub fn ids(&self) -> &[RoleId] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Where a column is used in a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// In the select list (or RETURNING).
    Projection,
    /// In WHERE / HAVING. `equality` for `col = value` or `col IN (...)`.
    Predicate { equality: bool },
    /// In a JOIN condition. `equality` for an equi-join.
    JoinKey { equality: bool },
    /// In GROUP BY, ORDER BY or DISTINCT.
    GroupOrder,
    /// As an argument of a function or operator other than equality.
    FunctionArg,
}

impl Usage {
    fn describe(self) -> &'static str {
        match self {
            Usage::Projection => "reading it",
            Usage::Predicate { equality: true } => "an equality comparison on it",
            Usage::Predicate { equality: false } => "a condition on it",
            Usage::JoinKey { .. } => "joining on it",
            Usage::GroupOrder => "grouping or sorting by it",
            Usage::FunctionArg => "passing it to a function",
        }
    }
}

/// How `pgveil policy explain` names a use: `read`, `equality condition`, ...
impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Usage::Projection => "read (select list or RETURNING)",
            Usage::Predicate { equality: true } => "equality condition (= or IN)",
            Usage::Predicate { equality: false } => {
                "condition other than equality (range, pattern or function)"
            }
            Usage::JoinKey { equality: true } => "equality join key",
            Usage::JoinKey { equality: false } => "join condition other than equality",
            Usage::GroupOrder => "grouping or sorting (GROUP BY, ORDER BY, DISTINCT)",
            Usage::FunctionArg => "argument of a function or operator",
        })
    }
}

/// What happens to each value of a column for a login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transform<'p> {
    /// Plaintext (after decryption, if the column is encrypted).
    Plain,
    /// SQL NULL.
    Null,
    /// A mask (also used for `hash`).
    Mask(&'p Mask),
    /// The column may not be read; statements reading it are refused before any value flows.
    Deny,
}

static HASH_MASK: Mask = Mask::Hash;

impl Transform<'_> {
    /// Transforms one non-NULL value, appending to `out`. Returns `false` when the result is SQL
    /// NULL (for `Null`, and for `Deny` as a fail-safe).
    #[inline]
    pub fn apply(&self, value: &str, key: &PseudonymKey, out: &mut String) -> bool {
        match self {
            Transform::Plain => {
                out.push_str(value);
                true
            }
            Transform::Mask(m) => {
                m.apply(value, key, out);
                true
            }
            Transform::Null | Transform::Deny => false,
        }
    }
}

/// The decision for one login and one column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision<'p> {
    pub column: ColumnId,
    pub action: Action,
    pub transform: Transform<'p>,
    /// Equality lookups are allowed despite the mask (`lookup: true` on a deterministic column).
    pub lookup: bool,
    pub source: Source,
    /// The policy role whose decision this is (`None`: the login has no policy role).
    pub role: Option<RoleId>,
}

/// Why a use of a column is refused. `message()` is fit for a Postgres error (SQLSTATE 42501);
/// it names the column and the rule, never a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenyReason {
    pub column: String,
    pub level: String,
    pub action: Action,
    pub usage: Usage,
    /// e.g. `rule 5 (line 23)` or `default for level core`.
    pub decided_by: String,
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "permission denied for column {}: {} is not allowed (level {}, action {}; {})",
            self.column,
            self.usage.describe(),
            self.level,
            self.action,
            self.decided_by
        )
    }
}

/// An immutable, compiled policy. Share it as `Arc<CompiledPolicy>`; reloading builds a new one.
#[derive(Debug)]
pub struct CompiledPolicy {
    policy: Policy,
    version: String,
    index: HashMap<String, HashMap<String, ColumnId>>,
    /// `cells[slot * ncols + col]`; slot 0 is "no policy role", slot r + 1 is role r.
    cells: Vec<Cell>,
    /// The effective mask per (slot, column) for `mask` decisions.
    masks: Vec<Mask>,
}

impl CompiledPolicy {
    /// Compiles a validated policy. `source` is the file content; its SHA-256 is the version.
    pub fn compile(policy: Policy, source: &[u8]) -> Arc<CompiledPolicy> {
        let digest = ring::digest::digest(&ring::digest::SHA256, source);
        let version = format!("sha256:{}", hex::encode(&digest.as_ref()[..8]));
        let mut index: HashMap<String, HashMap<String, ColumnId>> = HashMap::new();
        for (i, c) in policy.columns.iter().enumerate() {
            index
                .entry(c.table.clone())
                .or_default()
                .insert(c.column.clone(), i);
        }
        let ncols = policy.columns.len();
        let slots = policy.roles.len() + 1;
        let mut cells = Vec::with_capacity(slots * ncols);
        let mut masks = Vec::with_capacity(slots * ncols);
        for slot in 0..slots {
            let role = slot.checked_sub(1);
            for (ci, c) in policy.columns.iter().enumerate() {
                let (cell, rule_mask) = decide_one(&policy, role, ci, c);
                cells.push(cell);
                masks.push(rule_mask.unwrap_or_else(|| c.mask.clone()));
            }
        }
        Arc::new(CompiledPolicy {
            policy,
            version,
            index,
            cells,
            masks,
        })
    }

    /// Loads, validates and compiles a policy file.
    pub fn from_path(path: &std::path::Path) -> Result<Arc<CompiledPolicy>, crate::Diagnostics> {
        let (p, bytes) = crate::load::load_path(path)?;
        Ok(Self::compile(p, &bytes))
    }

    /// Loads, validates and compiles policy text.
    pub fn from_str(file: &str, text: &str) -> Result<Arc<CompiledPolicy>, crate::Diagnostics> {
        let p = crate::load::load_str(file, text)?;
        Ok(Self::compile(p, text.as_bytes()))
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// `sha256:` + the first 16 hex digits of the file's SHA-256.
    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn column(&self, id: ColumnId) -> &Column {
        &self.policy.columns[id]
    }

    /// The classified column `table.column`; `table` may omit the `public.` schema.
    pub fn column_id(&self, table: &str, column: &str) -> Option<ColumnId> {
        let t = match self.index.get(table) {
            Some(t) => Some(t),
            None if !table.contains('.') => self.index.get(&format!("public.{table}")),
            None => None,
        };
        t.and_then(|t| t.get(column)).copied()
    }

    /// Whether a table has any classified column.
    pub fn is_protected_table(&self, table: &str) -> bool {
        self.index.contains_key(table)
            || (!table.contains('.') && self.index.contains_key(&format!("public.{table}")))
    }

    /// The policy roles of a login: a role matches when one of its members equals the login
    /// name, is a glob (`*`, `?`) matching it, or names a Postgres role that the login is a
    /// member of (directly or indirectly; the proxy resolves `pg_auth_members`).
    pub fn resolve_roles<S: AsRef<str>>(&self, login: &str, member_of: &[S]) -> RoleSet {
        let ids = self
            .policy
            .roles
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                r.members.iter().any(|m| {
                    glob_match(m, login) || member_of.iter().any(|g| glob_match(m, g.as_ref()))
                })
            })
            .map(|(i, _)| i)
            .collect();
        RoleSet::new(ids)
    }

    pub fn role_names(&self, roles: &RoleSet) -> Vec<&str> {
        roles
            .0
            .iter()
            .filter_map(|r| self.policy.roles.get(*r))
            .map(|r| r.name.as_str())
            .collect()
    }

    fn decision_for_slot(&self, slot: usize, col: ColumnId) -> Decision<'_> {
        let i = slot * self.policy.columns.len() + col;
        let cell = self.cells[i];
        let transform = match cell.action {
            Action::Allow => Transform::Plain,
            Action::Hash => Transform::Mask(&HASH_MASK),
            Action::Mask => Transform::Mask(&self.masks[i]),
            Action::Null => Transform::Null,
            Action::Deny => Transform::Deny,
        };
        Decision {
            column: col,
            action: cell.action,
            transform,
            lookup: cell.lookup,
            source: cell.source,
            role: slot.checked_sub(1),
        }
    }

    /// The decision for a single policy role (`None`: a login without policy roles).
    pub fn decide_role(&self, role: Option<RoleId>, col: ColumnId) -> Decision<'_> {
        let slot = role.map_or(0, |r| r + 1);
        self.decision_for_slot(slot.min(self.policy.roles.len()), col)
    }

    /// The decision for a login's policy roles and a column. Panics only if `col` did not come
    /// from this policy.
    pub fn decide(&self, roles: &RoleSet, col: ColumnId) -> Decision<'_> {
        let mut best: Option<Decision<'_>> = None;
        for &r in &roles.0 {
            if r >= self.policy.roles.len() {
                continue;
            }
            let d = self.decision_for_slot(r + 1, col);
            if d.action == Action::Deny && matches!(d.source, Source::Rule(_)) {
                return d;
            }
            best = Some(match best {
                None => d,
                Some(b)
                    if d.action < b.action || (d.action == b.action && d.lookup && !b.lookup) =>
                {
                    d
                }
                Some(b) => b,
            });
        }
        best.unwrap_or_else(|| self.decision_for_slot(0, col))
    }

    /// Whether a login may use a column in a given way, or why not.
    ///
    /// `allow` permits every use; `deny` none. `hash`, `mask` and `null` permit reading the
    /// transformed value only — except that a `mask` decision with `lookup: true` on a
    /// deterministically encrypted column also permits equality predicates and equi-joins.
    pub fn check_usage(
        &self,
        roles: &RoleSet,
        col: ColumnId,
        usage: Usage,
    ) -> Result<Decision<'_>, DenyReason> {
        let d = self.decide(roles, col);
        let ok = match d.action {
            Action::Allow => true,
            Action::Deny => false,
            Action::Hash | Action::Mask | Action::Null => match usage {
                Usage::Projection => true,
                Usage::Predicate { equality: true } | Usage::JoinKey { equality: true } => {
                    d.action == Action::Mask
                        && d.lookup
                        && self.column(col).encrypt == EncryptMode::Deterministic
                }
                _ => false,
            },
        };
        if ok {
            Ok(d)
        } else {
            let c = self.column(col);
            Err(DenyReason {
                column: c.qualified(),
                level: self.policy.levels.get(c.level).cloned().unwrap_or_default(),
                action: d.action,
                usage,
                decided_by: self.describe_source(d.source, c),
            })
        }
    }

    /// `rule 3 (line 21)`, `rule 5 "name" (line 23)` or `default for level core`.
    pub fn describe_source(&self, s: Source, c: &Column) -> String {
        match s {
            Source::Rule(i) | Source::Wildcard(i) => self
                .policy
                .rules
                .get(i)
                .map(Rule::label)
                .unwrap_or_default(),
            Source::Default => format!(
                "default for level {}",
                self.policy.levels.get(c.level).map_or("?", |s| s)
            ),
        }
    }
}

/// Decision of one policy role (or none) for one column, plus the rule's mask override.
fn decide_one(p: &Policy, role: Option<RoleId>, ci: ColumnId, c: &Column) -> (Cell, Option<Mask>) {
    let named = |r: &&Rule| !r.wildcard && role.is_some_and(|id| r.roles.contains(&id));
    let wild = |r: &&Rule| r.wildcard;
    for (tier, wildcard) in [(&named as &dyn Fn(&&Rule) -> bool, false), (&wild, true)] {
        let matching: Vec<&Rule> = p
            .rules
            .iter()
            .filter(|r| tier(r))
            .filter(|r| selector_matches(&r.selector, ci, c))
            .collect();
        if matching.is_empty() {
            continue;
        }
        let chosen = match matching.iter().find(|r| r.action == Action::Deny) {
            Some(d) => *d,
            None => {
                let top = matching
                    .iter()
                    .map(|r| r.selector.specificity())
                    .max()
                    .unwrap_or(0);
                match matching.iter().find(|r| r.selector.specificity() == top) {
                    Some(r) => *r,
                    None => continue,
                }
            }
        };
        let source = if wildcard {
            Source::Wildcard(chosen.index)
        } else {
            Source::Rule(chosen.index)
        };
        let lookup = chosen.lookup && c.encrypt == EncryptMode::Deterministic;
        return (
            Cell {
                action: chosen.action,
                source,
                lookup,
            },
            chosen.mask.clone(),
        );
    }
    let action = p.defaults.get(c.level).copied().unwrap_or(Action::Deny);
    (
        Cell {
            action,
            source: Source::Default,
            lookup: false,
        },
        None,
    )
}

/// Glob matching with `*` (any run) and `?` (one character); anything else matches itself.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        assert!(glob_match("support_*", "support_app"));
        assert!(glob_match("support_*", "support_"));
        assert!(!glob_match("support_*", "support"));
        assert!(glob_match("a?c", "abc"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("bi_reader", "bi_reader"));
        assert!(!glob_match("bi_reader", "bi_reader2"));
        assert!(glob_match("*_ro*", "app_ro_1"));
    }
}
