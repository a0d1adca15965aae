//! Refusals for a use of a protected or encrypted column.
use super::*;

impl Refusal {
    // ---- the policy's decision on a column --------------------------------

    /// A use of `column` its action forbids; `reason` is the policy's own explanation.
    pub fn column_use(
        column: &str,
        reason: String,
        hint: Option<String>,
        level: LevelId,
    ) -> Refusal {
        Refusal::new(Rule::ColumnUse, sqlstate::INSUFFICIENT_PRIVILEGE, reason)
            .of(column, level)
            .maybe_hint(hint)
    }

    /// Reading a column whose action is deny.
    pub fn column_denied(column: &str, source: &str, level: LevelId) -> Refusal {
        Refusal::new(
            Rule::ColumnDenied,
            sqlstate::INSUFFICIENT_PRIVILEGE,
            format!("permission denied for column {column}: reading it is not allowed (action deny; {source})"),
        )
        .of(column, level)
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
        .of(column, level)
    }

    // ---- encrypted columns ------------------------------------------------

    pub fn randomized_equality(column: &str, level: LevelId) -> Refusal {
        Refusal::new(
            Rule::RandomizedEquality,
            sqlstate::FEATURE_NOT_SUPPORTED,
            format!("column {column} is encrypted randomized: equal values have different ciphertexts, so the server cannot compare it"),
        )
        .hint("declare the column encrypt: deterministic in the policy to look it up by equality (and run pgveil rekey), or filter in the application")
        .of(column, level)
    }

    /// `what` (grouping, a pattern, a function, ...) on an encrypted column.
    pub fn on_ciphertext(column: &str, mode: &str, what: &str, level: LevelId) -> Refusal {
        Refusal::new(
            Rule::OnCiphertext,
            sqlstate::FEATURE_NOT_SUPPORTED,
            format!("column {column} is encrypted ({mode}): the server holds only ciphertext, so {what} cannot work"),
        )
        .hint("read the column and compute on it in the application; deterministic columns also allow = and IN lookups")
        .of(column, level)
    }

    pub fn computed_lookup(column: &str, mode: &str, level: LevelId) -> Refusal {
        Refusal::new(
            Rule::ComputedLookup,
            sqlstate::FEATURE_NOT_SUPPORTED,
            format!("column {column} is encrypted ({mode}): pgveil can only compare it with a literal, a parameter or a column of the same key domain"),
        )
        .hint("compare it with a plain value: col = 'value', col = $1, col IN ('a', 'b')")
        .of(column, level)
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
        .of(column, level)
    }

    /// `x IN (SELECT ...)` where the two sides are encrypted differently.
    pub fn in_subquery_mismatch(column: &str, mode: &str, domain: &str, level: LevelId) -> Refusal {
        Refusal::new(
            Rule::EncryptionMismatch,
            sqlstate::FEATURE_NOT_SUPPORTED,
            format!("column {column} is encrypted ({mode}, domain {domain}): IN (SELECT ...) must compare it with a column of the same key domain and mode"),
        )
        .hint("compare with literals or parameters, or select a column encrypted the same way")
        .of(column, level)
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
        .of(column, level)
    }

    pub fn ciphertext_moved(column: &str, mode: &str, domain: &str, level: LevelId) -> Refusal {
        Refusal::new(
            Rule::CiphertextMoved,
            sqlstate::FEATURE_NOT_SUPPORTED,
            format!("pgveil refuses to copy the ciphertext of encrypted column {column} into a column that is not encrypted in domain {domain} ({mode})"),
        )
        .hint("read the values through pgveil and write them back as values")
        .of(column, level)
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

    /// A parameter encrypted for `column` that the statement also uses where the server would
    /// see its envelope (a plain column, a function, an output).
    pub fn parameter_used_elsewhere(n: usize, column: &str, level: LevelId) -> Refusal {
        Refusal::new(
            Rule::MixedParameter,
            sqlstate::FEATURE_NOT_SUPPORTED,
            format!("parameter ${n} is encrypted for column {column} and also used elsewhere in the statement, where it would be its ciphertext"),
        )
        .hint("pass the value as two parameters, one for the encrypted column and one for the rest")
        .of(column, level)
    }

    pub fn no_key(domain: &str, column: &str, level: LevelId) -> Refusal {
        Refusal::new(
            Rule::NoKey,
            sqlstate::INTERNAL_ERROR,
            format!("pgveil has no key for domain {domain} of column {column}"),
        )
        .of(column, level)
    }
}
