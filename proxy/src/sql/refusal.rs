//! Every reason pgveil refuses a statement, one named constructor per rule.
//!
//! A refusal names columns, relations and rules, never a value. Each rule has a [`Rule`] so
//! that logs, tests and docs/security.md ("What pgveil refuses") can name it; the table-driven
//! tests in `analyze/tests.rs` show, for each rule the analysis applies, a statement it refuses
//! and a near neighbour it passes.
use pgveil_policy::model::LevelId;

use crate::protocol::sqlstate;

/// Why a statement is refused. The message names columns and rules, never a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub rule: Rule,
    pub sqlstate: &'static str,
    pub message: String,
    pub hint: Option<String>,
    /// The level of the column that caused it, when one did.
    pub level: Option<LevelId>,
    /// The text could not be parsed or contains a construct pgveil cannot analyse.
    pub unanalysable: bool,
}

/// The refusal rules, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    /// The policy's action for a column forbids this use of it (deny, or a mask/hash/null
    /// column filtered, sorted, grouped or computed on).
    ColumnUse,
    /// A denied column is read.
    ColumnDenied,
    /// Equality on a randomized column (the server cannot compare it).
    RandomizedEquality,
    /// A computation on an encrypted column (the server holds only ciphertext).
    OnCiphertext,
    /// An encrypted column compared with a value pgveil cannot encrypt.
    ComputedLookup,
    /// Two columns compared that are encrypted differently (or one in clear).
    EncryptionMismatch,
    /// A value computed inside the server written into an encrypted column.
    ComputedWrite,
    /// Ciphertext copied into a column that is not encrypted the same way.
    CiphertextMoved,
    /// A value for an encrypted column pgveil cannot locate or encrypt in the text.
    UnlocatableValue,
    /// A value for an encrypted column that is invalid, forged, or failed to encrypt.
    BadValue,
    /// A parameter used for two encrypted columns encrypted differently.
    MixedParameter,
    /// A view or function whose body reads protected columns the login may not read.
    ExposingObject,
    /// A function that runs SQL text or reads relations named by argument.
    RunsSqlText,
    /// Code (functions, views, triggers, DO) the server would run unseen by pgveil.
    OpaqueCode,
    /// A statement that changes who is asking, or how SQL is read, in a way pgveil refuses.
    SessionChange,
    /// A name that may be a protected column, but pgveil cannot tell which table it belongs to.
    AmbiguousName,
    /// Text pgveil cannot parse or a form it cannot analyse, naming protected data.
    Unanalysable,
    /// A form pgveil understands but cannot transform (COPY options, cursors, PREPARE, ...).
    Unsupported,
    /// A statement that needs every touched column readable in clear (EXPLAIN, INTO).
    NeedsClear,
    /// The session's settings make its SQL unreadable for pgveil.
    UnreadableSession,
    /// The catalog cannot be read, so the policy cannot be enforced.
    CatalogUnavailable,
    /// pgveil has no key for an encrypted column.
    NoKey,
    /// An anomaly rule with `then: deny` is over its limit, or outside its hours.
    Anomaly,
    /// The fast-path function call protocol.
    FastPathCall,
}

impl Rule {
    /// The rule's name, as docs/security.md and logs give it.
    pub fn name(self) -> &'static str {
        match self {
            Rule::ColumnUse => "column_use",
            Rule::ColumnDenied => "column_denied",
            Rule::RandomizedEquality => "randomized_equality",
            Rule::OnCiphertext => "on_ciphertext",
            Rule::ComputedLookup => "computed_lookup",
            Rule::EncryptionMismatch => "encryption_mismatch",
            Rule::ComputedWrite => "computed_write",
            Rule::CiphertextMoved => "ciphertext_moved",
            Rule::UnlocatableValue => "unlocatable_value",
            Rule::BadValue => "bad_value",
            Rule::MixedParameter => "mixed_parameter",
            Rule::ExposingObject => "exposing_object",
            Rule::RunsSqlText => "runs_sql_text",
            Rule::OpaqueCode => "opaque_code",
            Rule::SessionChange => "session_change",
            Rule::AmbiguousName => "ambiguous_name",
            Rule::Unanalysable => "unanalysable",
            Rule::Unsupported => "unsupported",
            Rule::NeedsClear => "needs_clear",
            Rule::UnreadableSession => "unreadable_session",
            Rule::CatalogUnavailable => "catalog_unavailable",
            Rule::NoKey => "no_key",
            Rule::Anomaly => "anomaly",
            Rule::FastPathCall => "fast_path_call",
        }
    }
}

/// A protected column an object (view, function) exposes, and the login's action on it.
pub struct Exposure {
    pub column: String,
    pub level_name: String,
    pub action: &'static str,
    pub level: LevelId,
}

impl Refusal {
    fn new(rule: Rule, sqlstate: &'static str, message: String) -> Refusal {
        Refusal {
            rule,
            sqlstate,
            message,
            hint: None,
            level: None,
            unanalysable: false,
        }
    }

    fn hint(mut self, hint: impl Into<String>) -> Refusal {
        self.hint = Some(hint.into());
        self
    }

    fn maybe_hint<H: Into<String>>(mut self, hint: Option<H>) -> Refusal {
        self.hint = hint.map(Into::into);
        self
    }

    fn level(mut self, level: LevelId) -> Refusal {
        self.level = Some(level);
        self
    }

    fn unanalysable(mut self) -> Refusal {
        self.unanalysable = true;
        self
    }

    // ---- the policy's decision on a column --------------------------------

    /// A use of a column its action forbids; `reason` is the policy's own explanation.
    pub fn column_use(reason: String, hint: Option<String>, level: LevelId) -> Refusal {
        Refusal::new(Rule::ColumnUse, sqlstate::INSUFFICIENT_PRIVILEGE, reason)
            .level(level)
            .maybe_hint(hint)
    }

    /// Reading a column whose action is deny.
    pub fn column_denied(column: &str, source: &str, level: LevelId) -> Refusal {
        Refusal::new(
            Rule::ColumnDenied,
            sqlstate::INSUFFICIENT_PRIVILEGE,
            format!("permission denied for column {column}: reading it is not allowed (action deny; {source})"),
        )
        .level(level)
    }

    /// `what` (EXPLAIN, SELECT INTO, ...) over a column the login may not read in clear.
    pub fn needs_clear(
        column: &str,
        what: &str,
        level_name: &str,
        action: &str,
        level: LevelId,
    ) -> Refusal {
        Refusal::new(
            Rule::NeedsClear,
            sqlstate::INSUFFICIENT_PRIVILEGE,
            format!("permission denied for column {column}: {what} over it is not allowed (level {level_name}, action {action})"),
        )
        .level(level)
    }

    // ---- encrypted columns ------------------------------------------------

    pub fn randomized_equality(column: &str, level: LevelId) -> Refusal {
        Refusal::new(
            Rule::RandomizedEquality,
            sqlstate::FEATURE_NOT_SUPPORTED,
            format!("column {column} is encrypted randomized: equal values have different ciphertexts, so the server cannot compare it"),
        )
        .hint("declare the column encrypt: deterministic in the policy to look it up by equality (and run pgveil rekey), or filter in the application")
        .level(level)
    }

    /// `what` (grouping, a pattern, a function, ...) on an encrypted column.
    pub fn on_ciphertext(column: &str, mode: &str, what: &str, level: LevelId) -> Refusal {
        Refusal::new(
            Rule::OnCiphertext,
            sqlstate::FEATURE_NOT_SUPPORTED,
            format!("column {column} is encrypted ({mode}): the server holds only ciphertext, so {what} cannot work"),
        )
        .hint("read the column and compute on it in the application; deterministic columns also allow = and IN lookups")
        .level(level)
    }

    pub fn computed_lookup(column: &str, mode: &str, level: LevelId) -> Refusal {
        Refusal::new(
            Rule::ComputedLookup,
            sqlstate::FEATURE_NOT_SUPPORTED,
            format!("column {column} is encrypted ({mode}): pgveil can only compare it with a literal, a parameter or a column of the same key domain"),
        )
        .hint("compare it with a plain value: col = 'value', col = $1, col IN ('a', 'b')")
        .level(level)
    }

    /// A comparison of an encrypted column with `with` (another column, or a clear value).
    pub fn encryption_mismatch(
        column: &str,
        mode: &str,
        domain: &str,
        with: &str,
        level: LevelId,
    ) -> Refusal {
        Refusal::new(
            Rule::EncryptionMismatch,
            sqlstate::FEATURE_NOT_SUPPORTED,
            format!("column {column} is encrypted ({mode}, domain {domain}): the server cannot compare its ciphertext with {with}"),
        )
        .hint("join encrypted columns only with columns of the same key domain and mode")
        .level(level)
    }

    /// `x IN (SELECT ...)` where the two sides are encrypted differently.
    pub fn in_subquery_mismatch(column: &str, mode: &str, domain: &str, level: LevelId) -> Refusal {
        Refusal::new(
            Rule::EncryptionMismatch,
            sqlstate::FEATURE_NOT_SUPPORTED,
            format!("column {column} is encrypted ({mode}, domain {domain}): IN (SELECT ...) must compare it with a column of the same key domain and mode"),
        )
        .hint("compare with literals or parameters, or select a column encrypted the same way")
        .level(level)
    }

    /// Two different encrypted columns in one output of a set operation.
    pub fn encrypted_set_merge(a: &str, b: &str) -> Refusal {
        Refusal::new(
            Rule::EncryptionMismatch,
            sqlstate::FEATURE_NOT_SUPPORTED,
            format!("pgveil cannot combine encrypted columns {a} and {b} in one result column"),
        )
        .unanalysable()
    }

    pub fn computed_write(column: &str, mode: &str, domain: &str, level: LevelId) -> Refusal {
        Refusal::new(
            Rule::ComputedWrite,
            sqlstate::FEATURE_NOT_SUPPORTED,
            format!("pgveil cannot encrypt a value computed inside the server for encrypted column {column} ({mode})"),
        )
        .hint(format!("send the value as a literal or a parameter, or copy it from another column encrypted in domain {domain} with the same mode"))
        .level(level)
    }

    pub fn ciphertext_moved(column: &str, mode: &str, domain: &str, level: LevelId) -> Refusal {
        Refusal::new(
            Rule::CiphertextMoved,
            sqlstate::FEATURE_NOT_SUPPORTED,
            format!("pgveil refuses to copy the ciphertext of encrypted column {column} into a column that is not encrypted in domain {domain} ({mode})"),
        )
        .hint("read the values through pgveil and write them back as values")
        .level(level)
    }

    /// A value for an encrypted column that pgveil cannot locate in the text, or a form of
    /// value it cannot encrypt.
    pub fn unlocatable_value(message: String, hint: Option<&str>) -> Refusal {
        Refusal::new(
            Rule::UnlocatableValue,
            sqlstate::FEATURE_NOT_SUPPORTED,
            message,
        )
        .unanalysable()
        .maybe_hint(hint)
    }

    /// A value for an encrypted column that cannot be written (`sqlstate` says why).
    pub fn bad_value(
        sqlstate: &'static str,
        message: String,
        hint: Option<String>,
        level: LevelId,
    ) -> Refusal {
        Refusal::new(Rule::BadValue, sqlstate, message)
            .level(level)
            .maybe_hint(hint)
    }

    pub fn mixed_parameter(n: usize, a: &str, b: &str, level: LevelId) -> Refusal {
        Refusal::new(
            Rule::MixedParameter,
            sqlstate::FEATURE_NOT_SUPPORTED,
            format!("parameter ${n} is used for encrypted columns {a} and {b}, which are encrypted differently"),
        )
        .hint("use a separate parameter for each")
        .level(level)
    }

    pub fn no_key(domain: &str, column: &str, level: LevelId) -> Refusal {
        Refusal::new(
            Rule::NoKey,
            sqlstate::INTERNAL_ERROR,
            format!("pgveil has no key for domain {domain} of column {column}"),
        )
        .level(level)
    }

    // ---- objects whose code pgveil cannot see ----------------------------

    /// A view over a protected column the login may not read in clear.
    pub fn view_over_protected(relation: &str, table: &str, e: Exposure) -> Refusal {
        Refusal::new(
            Rule::ExposingObject,
            sqlstate::INSUFFICIENT_PRIVILEGE,
            format!(
                "permission denied for relation {relation}: it is a view over protected column {} (level {}, action {} for this login)",
                e.column, e.level_name, e.action
            ),
        )
        .hint(format!("query {table} directly; pgveil transforms its columns"))
        .level(e.level)
    }

    /// A function whose body reads a protected column the login may not read in clear.
    pub fn function_over_protected(function: &str, e: Exposure) -> Refusal {
        Refusal::new(
            Rule::ExposingObject,
            sqlstate::INSUFFICIENT_PRIVILEGE,
            format!(
                "permission denied for function {function}: its body reads protected column {} (level {}, action {} for this login), which pgveil cannot transform inside the server",
                e.column, e.level_name, e.action
            ),
        )
        .level(e.level)
    }

    pub fn runs_sql_text(function: &str) -> Refusal {
        Refusal::new(
            Rule::RunsSqlText,
            sqlstate::INSUFFICIENT_PRIVILEGE,
            format!("pgveil refuses {function}(): it runs SQL text that pgveil cannot analyse"),
        )
        .hint("send the query itself through pgveil")
    }

    /// Creating `what` (views, functions, ...) whose code would run unseen.
    pub fn creates_code(what: &str) -> Refusal {
        Refusal::new(
            Rule::OpaqueCode,
            sqlstate::INSUFFICIENT_PRIVILEGE,
            format!("pgveil refuses to create {what} for this login: their code would run inside the server, where pgveil cannot see which protected columns it reads"),
        )
        .hint("have a login that may read all protected data in clear create them")
    }

    pub fn do_block() -> Refusal {
        Refusal::new(
            Rule::OpaqueCode,
            sqlstate::INSUFFICIENT_PRIVILEGE,
            "pgveil refuses DO blocks for this login: their code runs inside the server, where pgveil cannot see which protected columns it reads".into(),
        )
        .hint("run the statements one by one, or ask for a role that may read the data")
    }

    // ---- session state ----------------------------------------------------

    /// `what` (SET ROLE, SET SESSION AUTHORIZATION) changes who is asking.
    pub fn role_switch(what: &str) -> Refusal {
        Refusal::new(
            Rule::SessionChange,
            sqlstate::INSUFFICIENT_PRIVILEGE,
            format!("pgveil refuses {what}: the policy applies to the role that logged in"),
        )
        .hint("connect as the role whose access you need")
    }

    /// `set_config(name, ...)` with a name that changes who is asking or how SQL is read.
    pub fn set_config(name: &str) -> Refusal {
        Refusal::new(
            Rule::SessionChange,
            sqlstate::INSUFFICIENT_PRIVILEGE,
            format!("pgveil refuses set_config({name}) here: it changes who is asking or how SQL is read"),
        )
    }

    pub fn unreadable_session() -> Refusal {
        Refusal::new(
            Rule::UnreadableSession,
            sqlstate::INVALID_PARAMETER_VALUE,
            "pgveil refuses statements on protected data in this session: client_encoding must be UTF8 and standard_conforming_strings on, or pgveil would read the SQL differently from the server".into(),
        )
        .hint("SET client_encoding = 'UTF8'; SET standard_conforming_strings = on")
        .unanalysable()
    }

    pub fn not_utf8() -> Refusal {
        Refusal::new(
            Rule::UnreadableSession,
            sqlstate::INVALID_PARAMETER_VALUE,
            "pgveil refuses a statement on protected data that is not valid UTF-8".into(),
        )
        .unanalysable()
    }

    pub fn catalog_unavailable(database: &str, error: &str) -> Refusal {
        Refusal::new(
            Rule::CatalogUnavailable,
            "57P03",
            format!("pgveil cannot read the catalog of database \"{database}\", so it cannot enforce the policy: {error}"),
        )
        .hint("check pgveil's catalog settings (catalog.user) and the server")
    }

    // ---- what the analysis cannot read --------------------------------------

    /// A name that could be protected column `column`, in a scope pgveil cannot resolve.
    pub fn ambiguous_name(name: &str, column: &str, level: LevelId) -> Refusal {
        Refusal::new(
            Rule::AmbiguousName,
            sqlstate::FEATURE_NOT_SUPPORTED,
            format!("pgveil cannot tell which table \"{name}\" belongs to here, and it may be the protected column {column}"),
        )
        .hint("qualify the column with its table, and give table functions a column list")
        .level(level)
        .unanalysable()
    }

    /// Text the parser rejects, naming protected data.
    pub fn unparsable(error: &str) -> Refusal {
        Refusal::new(
            Rule::Unanalysable,
            sqlstate::FEATURE_NOT_SUPPORTED,
            format!("pgveil cannot analyse this statement, and it names protected data ({error})"),
        )
        .hint("rewrite the statement in plainer SQL; pgveil refuses what it cannot analyse")
        .unanalysable()
    }

    /// A form the analysis does not read (`message` says which), over protected data.
    pub fn unanalysable_form(message: String, hint: Option<&str>) -> Refusal {
        Refusal::new(Rule::Unanalysable, sqlstate::FEATURE_NOT_SUPPORTED, message)
            .unanalysable()
            .maybe_hint(hint)
    }

    /// A statement kind the analysis does not know, naming protected data.
    pub fn unknown_statement(word: &str) -> Refusal {
        Refusal::unanalysable_form(
            format!("pgveil cannot analyse {word} statements that name protected data"),
            Some("pgveil refuses what it cannot analyse"),
        )
    }

    /// A `*` over unknown columns before a protected output: its position is unknown.
    pub fn position_unknown(column: &str, level: LevelId) -> Refusal {
        Refusal::new(
            Rule::Unanalysable,
            sqlstate::FEATURE_NOT_SUPPORTED,
            format!("pgveil cannot tell the position of protected column {column} in this result: it follows a * over a relation or function whose columns pgveil does not know"),
        )
        .hint("list the columns explicitly")
        .level(level)
        .unanalysable()
    }

    /// A form pgveil reads but does not transform (cursors, SQL PREPARE, COPY options, ...);
    /// counted with the statements pgveil cannot analyse.
    pub fn unsupported(message: String, hint: Option<&str>) -> Refusal {
        Refusal::new(Rule::Unsupported, sqlstate::FEATURE_NOT_SUPPORTED, message)
            .unanalysable()
            .maybe_hint(hint)
    }

    /// More than one COPY FROM STDIN into encrypted columns in one query text.
    pub fn one_copy_per_text() -> Refusal {
        Refusal::new(
            Rule::Unsupported,
            sqlstate::FEATURE_NOT_SUPPORTED,
            "pgveil encrypts one COPY FROM STDIN per query text".into(),
        )
        .hint("send each COPY as its own query")
    }

    /// COPY FROM STDIN data pgveil could not read (`message` says why).
    pub fn copy_in_unreadable(message: String) -> Refusal {
        Refusal::new(Rule::Unsupported, sqlstate::FEATURE_NOT_SUPPORTED, message)
    }

    // ---- anomaly limits and the wire ----------------------------------------

    /// An anomaly rule with `then: deny` over its limit: `what` says what was counted.
    pub fn anomaly_limit(
        rule: &str,
        login: &str,
        what: &str,
        per: std::time::Duration,
        max: u64,
    ) -> Refusal {
        Refusal::new(
            Rule::Anomaly,
            sqlstate::INSUFFICIENT_PRIVILEGE,
            format!(
                "permission denied by anomaly rule {rule}: login {login} {what} within {} (limit {max}); refused until the window clears",
                humantime::format_duration(per)
            ),
        )
        .hint("wait for the window to pass, or ask the policy owner to raise the limit")
    }

    /// An hours rule with `then: deny` forbids its level now.
    pub fn anomaly_hours(rule: &str, level_name: &str, hours: &str, now: &str) -> Refusal {
        Refusal::new(
            Rule::Anomaly,
            sqlstate::INSUFFICIENT_PRIVILEGE,
            format!("permission denied by anomaly rule {rule}: level {level_name} may be read only {hours} (now {now})"),
        )
        .hint("try again within the allowed hours, or ask the policy owner for an exception")
    }

    pub fn fast_path_call() -> Refusal {
        Refusal::new(
            Rule::FastPathCall,
            sqlstate::FEATURE_NOT_SUPPORTED,
            "pgveil refuses the fast-path function call protocol while a policy is enforced".into(),
        )
        .hint("call the function with a SELECT statement")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_has_a_distinct_name() {
        let rules = [
            Rule::ColumnUse,
            Rule::ColumnDenied,
            Rule::RandomizedEquality,
            Rule::OnCiphertext,
            Rule::ComputedLookup,
            Rule::EncryptionMismatch,
            Rule::ComputedWrite,
            Rule::CiphertextMoved,
            Rule::UnlocatableValue,
            Rule::BadValue,
            Rule::MixedParameter,
            Rule::ExposingObject,
            Rule::RunsSqlText,
            Rule::OpaqueCode,
            Rule::SessionChange,
            Rule::AmbiguousName,
            Rule::Unanalysable,
            Rule::Unsupported,
            Rule::NeedsClear,
            Rule::UnreadableSession,
            Rule::CatalogUnavailable,
            Rule::NoKey,
            Rule::Anomaly,
            Rule::FastPathCall,
        ];
        let mut names: Vec<&str> = rules.iter().map(|r| r.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), rules.len());
    }

    #[test]
    fn sqlstates_follow_the_kind_of_refusal() {
        assert_eq!(Refusal::column_denied("t.c", "rule 1", 0).sqlstate, "42501");
        assert_eq!(Refusal::runs_sql_text("ts_rewrite").sqlstate, "42501");
        assert_eq!(Refusal::unparsable("x").sqlstate, "0A000");
        assert!(Refusal::unparsable("x").unanalysable);
        assert_eq!(Refusal::unreadable_session().sqlstate, "22023");
        assert_eq!(Refusal::catalog_unavailable("db", "e").sqlstate, "57P03");
        assert_eq!(Refusal::no_key("d", "t.c", 0).sqlstate, "XX000");
    }
}
