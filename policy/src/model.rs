//! The policy model: what a loaded, validated policy file says.
//!
//! Every name here has already been checked by the loader; positions are kept so that
//! deny reasons and the matrix can point back at the rule that decided.
pub use crate::kind::Kind;
use crate::mask::Mask;
use std::fmt;

/// What a role gets for a column, from least to most restrictive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// Plaintext.
    Allow,
    /// A keyed, stable pseudonym (HMAC-SHA256, truncated).
    Hash,
    /// The column's masking function.
    Mask,
    /// SQL NULL.
    Null,
    /// The statement is refused (SQLSTATE 42501).
    Deny,
}

impl Action {
    pub const ALL: [Action; 5] = [
        Action::Allow,
        Action::Hash,
        Action::Mask,
        Action::Null,
        Action::Deny,
    ];
    pub const NAMES: [&'static str; 5] = ["allow", "hash", "mask", "null", "deny"];

    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    pub fn parse(s: &str) -> Option<Action> {
        Self::NAMES
            .iter()
            .position(|n| *n == s)
            .map(|i| Self::ALL[i])
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a column is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EncryptMode {
    None,
    Randomized,
    Deterministic,
}

impl EncryptMode {
    pub const NAMES: [&'static str; 3] = ["none", "randomized", "deterministic"];

    pub fn name(self) -> &'static str {
        match self {
            EncryptMode::None => "none",
            EncryptMode::Randomized => "randomized",
            EncryptMode::Deterministic => "deterministic",
        }
    }

    pub fn parse(s: &str) -> Option<EncryptMode> {
        match s {
            "none" => Some(EncryptMode::None),
            "randomized" => Some(EncryptMode::Randomized),
            "deterministic" => Some(EncryptMode::Deterministic),
            _ => None,
        }
    }
}

/// A position in the policy file (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Pos {
    pub line: u64,
    pub col: u64,
}

/// Index into [`Policy::levels`]; 0 is the most sensitive.
pub type LevelId = usize;
/// Index into [`Policy::roles`].
pub type RoleId = usize;
/// Index into [`Policy::columns`].
pub type ColumnId = usize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    pub name: String,
    /// Postgres login names, globs (`support_*`) or Postgres group role names.
    pub members: Vec<String>,
    pub pos: Pos,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// `schema.table`
    pub table: String,
    pub column: String,
    pub level: LevelId,
    pub kind: Kind,
    pub encrypt: EncryptMode,
    /// Key domain; equal domains share keys so that deterministic columns join.
    pub domain: String,
    /// The mask this column uses when the action is `mask` (the kind's default unless overridden).
    pub mask: Mask,
    pub pos: Pos,
}

impl Column {
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.table, self.column)
    }

    /// Whether `name` is this column's `schema.table.column` (without building that string).
    pub fn is_named(&self, name: &str) -> bool {
        name.strip_prefix(self.table.as_str())
            .and_then(|rest| rest.strip_prefix('.'))
            .is_some_and(|rest| rest == self.column)
    }
}

/// What a rule applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Levels(Vec<LevelId>),
    Kinds(Vec<Kind>),
    Columns(Vec<ColumnId>),
}

impl Selector {
    /// Column rules are the most specific, then kind rules, then level rules.
    pub fn specificity(&self) -> u8 {
        match self {
            Selector::Columns(_) => 3,
            Selector::Kinds(_) => 2,
            Selector::Levels(_) => 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// 0-based position in `rules:`.
    pub index: usize,
    pub name: Option<String>,
    /// Empty means the wildcard `"*"` (every login, including those without a policy role).
    pub roles: Vec<RoleId>,
    pub wildcard: bool,
    pub selector: Selector,
    pub action: Action,
    /// Allows equality predicates on deterministic columns when the action is `mask`.
    pub lookup: bool,
    /// Mask override for this rule (action `mask` only).
    pub mask: Option<Mask>,
    pub pos: Pos,
}

impl Rule {
    /// `rule 3 "name" (policy.yaml line 12)`-style label, without the file name.
    pub fn label(&self) -> String {
        match &self.name {
            Some(n) => format!("rule {} \"{}\" (line {})", self.index + 1, n, self.pos.line),
            None => format!("rule {} (line {})", self.index + 1, self.pos.line),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Anomaly {
    pub name: String,
    pub level: Option<LevelId>,
    pub limit: Limit,
    /// Window length in seconds (for `Hours`: alerts per login at most once per window).
    pub per_seconds: u64,
    /// `log` (record and alert) or `deny` (refuse until the window clears, or outside the hours).
    pub then: AnomalyAction,
    pub roles: Vec<RoleId>,
    pub pos: Pos,
}

/// What an anomaly rule limits.
#[derive(Debug, Clone, PartialEq)]
pub enum Limit {
    /// Rows of the level returned per window (`max_rows`).
    Rows(u64),
    /// Statements refused per window (`max_denied`).
    Denied(u64),
    /// Reads of the level only within these hours (`hours`, `days`, `timezone`).
    Hours(crate::hours::Hours),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnomalyAction {
    Log,
    Deny,
}

/// A validated policy file.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub version: u32,
    /// Most to least sensitive.
    pub levels: Vec<String>,
    pub roles: Vec<Role>,
    pub columns: Vec<Column>,
    pub rules: Vec<Rule>,
    /// One action per level, indexed by [`LevelId`].
    pub defaults: Vec<Action>,
    pub anomaly: Vec<Anomaly>,
}

/// Something a valid policy does that its author may not mean: `policy check` prints it, and
/// `serve` logs it at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub pos: Pos,
    pub message: String,
}

impl Policy {
    /// What a valid policy does that its author may not mean.
    pub fn warnings(&self) -> Vec<Warning> {
        self.anomaly
            .iter()
            .filter(|a| a.roles.is_empty())
            .map(|a| Warning {
                pos: a.pos,
                message: format!(
                    "anomaly rule \"{}\" has no roles: it limits every login, the application's \
                     own included (name the roles it is for with `roles:`)",
                    a.name
                ),
            })
            .collect()
    }

    pub fn level_id(&self, name: &str) -> Option<LevelId> {
        self.levels.iter().position(|l| l == name)
    }

    pub fn role_id(&self, name: &str) -> Option<RoleId> {
        self.roles.iter().position(|r| r.name == name)
    }

    pub fn column_id(&self, table: &str, column: &str) -> Option<ColumnId> {
        let table = normalize_table(table);
        self.columns
            .iter()
            .position(|c| c.table == table && c.column == column)
    }
}

/// `customers` means `public.customers`.
pub fn normalize_table(t: &str) -> String {
    if t.contains('.') {
        t.to_string()
    } else {
        format!("public.{t}")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn is_named_matches_only_the_whole_qualified_name() {
        let text = "version: 1\nlevels: [core]\ntables:\n  public.customers:\n    phone: { level: core, kind: cn_mobile }\ndefaults: { core: deny }\n";
        let policy = crate::load::load_str("p.yaml", text).expect("valid policy");
        let c = policy
            .columns
            .iter()
            .find(|c| c.column == "phone")
            .expect("the phone column");
        assert!(c.is_named("public.customers.phone"));
        assert_eq!(c.qualified(), "public.customers.phone");
        for other in [
            "public.customers.phon",
            "public.customers.phones",
            "public.customersphone",
            "public.customers_phone",
            "customers.phone",
            "public.customers.",
            "",
        ] {
            assert!(!c.is_named(other), "{other}");
        }
    }
}
