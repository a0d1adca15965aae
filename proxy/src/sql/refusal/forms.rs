//! Refusals for what the analysis cannot read or pgveil cannot transform, and for
//! anomaly limits and the wire.
use super::*;

impl Refusal {
    // ---- what the analysis cannot read --------------------------------------

    /// A name that could be protected column `column`, in a scope pgveil cannot resolve.
    pub fn ambiguous_name(name: &str, column: &str, level: LevelId) -> Refusal {
        Refusal::new(
            Rule::AmbiguousName,
            sqlstate::FEATURE_NOT_SUPPORTED,
            format!("pgveil cannot tell which table \"{name}\" belongs to here, and it may be the protected column {column}"),
        )
        .hint("qualify the column with its table, and give table functions a column list")
        .of(column, level)
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

    /// A text with more operators than the analysis takes (`found`, `max`): expressions that
    /// deep would exhaust pgveil's stack.
    pub fn too_complex(found: usize, max: usize) -> Refusal {
        Refusal::new(
            Rule::Unanalysable,
            sqlstate::STATEMENT_TOO_COMPLEX,
            format!("statement too complex for pgveil's analysis: {found} operators (at most {max} in a statement that names protected data)"),
        )
        .unanalysable()
        .hint("split the condition, or pass the values as an array parameter")
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
        .of(column, level)
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

    /// An aggregate gathers values of a level whose rows a `then: deny` limit counts: one
    /// result row could carry any number of them, past the count.
    pub fn anomaly_packing(rule: &str, level_name: &str) -> Refusal {
        Refusal::new(
            Rule::Anomaly,
            sqlstate::INSUFFICIENT_PRIVILEGE,
            format!("permission denied by anomaly rule {rule}: this statement gathers values of level {level_name} from many rows into one (an aggregate such as string_agg, array_agg or json_agg, ARRAY(subquery), or a recursive query), which the rule cannot count"),
        )
        .hint("read the rows one by one (the rule counts them), or ask the policy owner for a role without this limit")
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

    /// SQL `FETCH` while a portal bound to a statement over protected data is open: the server
    /// would answer it from that portal, past pgveil's transforms, counts and audit.
    pub fn fetch_from_portal() -> Refusal {
        Refusal::new(
            Rule::Unsupported,
            sqlstate::INSUFFICIENT_PRIVILEGE,
            "pgveil refuses SQL FETCH while this session has a named portal open over protected data: the rows would bypass the policy".into(),
        )
        .hint("read the portal with Execute (your driver's cursor API), or close it first")
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
