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
    /// The column that caused it (`schema.table.column`), when one did: the audit record of
    /// the refused statement names it.
    pub column: Option<String>,
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
    /// A relation whose policy columns no longer exist.
    PolicyMismatch,
    /// A write into a table of the policy the catalog does not know (read again once first).
    UnknownTable,
}

impl Rule {
    /// Every rule, in declaration order.
    pub const ALL: [Rule; 26] = [
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
        Rule::PolicyMismatch,
        Rule::UnknownTable,
    ];

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
            Rule::PolicyMismatch => "policy_mismatch",
            Rule::UnknownTable => "unknown_table",
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
            column: None,
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

    /// Caused by `column` (of level `level`).
    fn of(mut self, column: &str, level: LevelId) -> Refusal {
        self.column = Some(column.to_string());
        self.level(level)
    }

    fn unanalysable(mut self) -> Refusal {
        self.unanalysable = true;
        self
    }
}

mod columns;
mod forms;
mod objects;

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
            Rule::PolicyMismatch,
            Rule::UnknownTable,
        ];
        let mut names: Vec<&str> = rules.iter().map(|r| r.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), rules.len());
    }

    #[test]
    fn sqlstates_follow_the_kind_of_refusal() {
        assert_eq!(Refusal::column_denied("t.c", "rule 1", 0).sqlstate, "42501");
        assert_eq!(
            Refusal::runs_sql_text("ts_rewrite", "why").sqlstate,
            "42501"
        );
        assert_eq!(Refusal::unparsable("x").sqlstate, "0A000");
        assert!(Refusal::unparsable("x").unanalysable);
        assert_eq!(Refusal::unreadable_session().sqlstate, "22023");
        assert_eq!(Refusal::catalog_unavailable("db", "e").sqlstate, "57P03");
        assert_eq!(Refusal::no_key("d", "t.c", 0).sqlstate, "XX000");
    }
}
