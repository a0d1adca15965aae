//! Refusals for code the server would run unseen, and for session state.
use super::*;

impl Refusal {
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

    /// A function that reaches data outside the analysis (`why` says how: SQL text, a
    /// relation named by argument, stored values, server files).
    /// A relation whose policy columns no longer exist (renamed or dropped directly in
    /// PostgreSQL): pgveil cannot tell where the protected values went.
    pub fn policy_mismatch(relation: &str, columns: &[String]) -> Refusal {
        Refusal::new(
            Rule::PolicyMismatch,
            sqlstate::INSUFFICIENT_PRIVILEGE,
            format!(
                "pgveil refuses statements on {relation}: the policy protects column(s) {} that it no longer has (renamed or dropped), so pgveil cannot tell where their values are",
                columns.join(", ")
            ),
        )
        .hint("fix the policy (or the table) and reload it; `pgveil policy check --dsn` lists every mismatch")
    }

    /// A write into a table the policy protects that the catalog does not know yet.
    pub fn unknown_protected_table(table: &str) -> Refusal {
        Refusal::new(
            Rule::UnknownTable,
            sqlstate::FEATURE_NOT_SUPPORTED,
            format!("pgveil refuses writes into {table} before it knows the table: the policy protects columns of it, and pgveil reads a new table's columns once the statement that creates it is committed"),
        )
        .hint("commit the CREATE TABLE first, then write into the table")
        .unanalysable()
    }

    /// A write into a relation with protected columns whose writes go elsewhere.
    pub fn redirected_write(relation: &str) -> Refusal {
        Refusal::new(
            Rule::OpaqueCode,
            sqlstate::INSUFFICIENT_PRIVILEGE,
            format!("pgveil refuses writes into {relation}: an INSTEAD OF trigger or a rule sends them where pgveil cannot follow the protected values"),
        )
        .hint("write into the table itself")
    }

    pub fn runs_sql_text(function: &str, why: &str) -> Refusal {
        Refusal::new(
            Rule::RunsSqlText,
            sqlstate::INSUFFICIENT_PRIVILEGE,
            format!("pgveil refuses {function}() for this login: {why}"),
        )
        .hint("send the query itself through pgveil")
    }

    /// A statistics view or table, whose rows hold stored values of protected columns.
    pub fn statistics(relation: &str) -> Refusal {
        Refusal::new(
            Rule::ExposingObject,
            sqlstate::INSUFFICIENT_PRIVILEGE,
            format!("pgveil refuses {relation} for this login: its rows hold stored values (most common values, histograms) of protected columns"),
        )
        .hint("read the statistics with a login that may read the protected columns in clear")
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

    /// A statement on protected data after one, in the same query text, that may change who
    /// is asking or how SQL is read: pgveil judges the whole text before the server runs any
    /// of it.
    pub fn after_session_change() -> Refusal {
        Refusal::new(
            Rule::SessionChange,
            sqlstate::FEATURE_NOT_SUPPORTED,
            "pgveil refuses statements on protected data that follow, in the same query text, a statement that may change who is asking or how SQL is read (SET ROLE, SET SESSION AUTHORIZATION, set_config, RESET, DISCARD, client_encoding, standard_conforming_strings)".into(),
        )
        .hint("send that statement as a query of its own; pgveil follows it before judging the next")
    }

    /// `set_config(name, ...)` with a name that changes how SQL is read, or one pgveil cannot
    /// see.
    pub fn set_config(name: &str) -> Refusal {
        Refusal::new(
            Rule::SessionChange,
            sqlstate::INSUFFICIENT_PRIVILEGE,
            format!("pgveil refuses set_config({name}): it may change how the server reads SQL, which pgveil follows only through SET"),
        )
        .hint("use SET client_encoding / SET standard_conforming_strings, or name the setting in a literal")
    }

    /// A statement pgveil would have to read before the server has answered an earlier one,
    /// in the same pipeline, that may change how SQL is read.
    pub fn unsettled_reading() -> Refusal {
        Refusal::new(
            Rule::UnreadableSession,
            sqlstate::INVALID_PARAMETER_VALUE,
            "pgveil refuses a statement on protected data sent before the server answered an earlier statement of the same pipeline that may change how SQL is read or who is asking (client_encoding, standard_conforming_strings, SET ROLE, SET SESSION AUTHORIZATION, set_config, RESET, DISCARD ALL, the end of a transaction that changed them)".into(),
        )
        .hint("send a Sync (or end the query) after such a statement, before statements on protected data")
        .unanalysable()
    }

    /// The server could not tell the current role when pgveil asked (`code`: its SQLSTATE).
    pub fn role_unknown(code: &str) -> Refusal {
        // In a failed transaction the server answers every statement but the ones that end it
        // with this error, so the client gets the server's own words.
        if code == sqlstate::IN_FAILED_SQL_TRANSACTION {
            return Refusal::new(
                Rule::SessionChange,
                sqlstate::IN_FAILED_SQL_TRANSACTION,
                "current transaction is aborted, commands ignored until end of transaction block"
                    .into(),
            );
        }
        Refusal::new(
            Rule::SessionChange,
            sqlstate::INVALID_PARAMETER_VALUE,
            format!("pgveil refuses statements on protected data until it knows the session's current role, which may have changed; asking the server failed ({code})"),
        )
        .hint("end a failed transaction with ROLLBACK, then send the statement again")
    }

    /// A function whose body may change `client_encoding` or `standard_conforming_strings`
    /// for the rest of the session, where pgveil cannot see when.
    pub fn reading_function(function: &str) -> Refusal {
        Refusal::new(
            Rule::SessionChange,
            sqlstate::INSUFFICIENT_PRIVILEGE,
            format!("pgveil refuses {function}() for this login: its body may change how the session's SQL is read (client_encoding, SET NAMES, standard_conforming_strings, set_config, or SQL run from text)"),
        )
        .hint("set these settings with SET statements, which pgveil follows")
    }

    /// A statement or portal name that is not ASCII, in a session whose client encoding is not
    /// UTF8: the server converts names (two BIG5 names can become one), pgveil keeps them as
    /// sent, so it could not follow which statement a Bind runs.
    pub fn legacy_name(encoding: &str) -> Refusal {
        Refusal::new(
            Rule::UnreadableSession,
            sqlstate::FEATURE_NOT_SUPPORTED,
            format!("pgveil refuses statement and portal names that are not ASCII in a {encoding} session"),
        )
        .hint("name prepared statements and portals in ASCII (drivers do)")
        .unanalysable()
    }

    pub fn unreadable_session() -> Refusal {
        Refusal::new(
            Rule::UnreadableSession,
            sqlstate::INVALID_PARAMETER_VALUE,
            "pgveil refuses statements on protected data in this session: client_encoding must be one pgveil reads as the server does (UTF8, GBK, GB18030, EUC_CN, BIG5) and standard_conforming_strings on, or pgveil would read the SQL differently from the server".into(),
        )
        .hint("SET client_encoding = 'UTF8'; SET standard_conforming_strings = on")
        .unanalysable()
    }

    /// A text that is not valid in the session's client encoding (`sqlstate` and `reason`:
    /// the server's own answer to it).
    pub fn invalid_text(sqlstate: &'static str, reason: &str) -> Refusal {
        Refusal::new(Rule::UnreadableSession, sqlstate, reason.to_string()).unanalysable()
    }

    pub fn catalog_unavailable(database: &str, error: &str) -> Refusal {
        Refusal::new(
            Rule::CatalogUnavailable,
            "57P03",
            format!("pgveil cannot read the catalog of database \"{database}\", so it cannot enforce the policy: {error}"),
        )
        .hint("check pgveil's catalog settings (catalog.user) and the server")
    }
}
