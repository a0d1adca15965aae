//! Whether pgveil reads SQL text as the server does. The server lexes text by two settings:
//! `client_encoding` (a multibyte encoding can hide a quote or backslash byte inside a
//! character) and `standard_conforming_strings` (off: `\'` escapes a quote in an ordinary
//! literal). pgveil analyses text only in sessions where both are as it reads them (UTF8, on),
//! as the server last reported them (ParameterStatus, sent before ReadyForQuery).
//!
//! The policy applies to the current role (`current_user`), which `SET ROLE`, `SET SESSION
//! AUTHORIZATION`, `set_config('role', ...)`, `RESET`, `DISCARD ALL` and the end of a
//! transaction can change, and code in functions too.
//!
//! A statement that may change any of these is a barrier ([`changes_reading`]): the relay
//! judges nothing after it that needs the analysis until the server has answered it, then asks
//! the server who the current role is, or refuses what it cannot wait for
//! (session/enforced/client.rs).
use crate::catalog::words::words;

/// Whether a SQL text may change how the server reads the SQL after it, or who is asking:
/// `SET`, `RESET` or `set_config` of `client_encoding` or `standard_conforming_strings` (in any
/// form: the words anywhere in the text), any `set_config`, a `SET`/`RESET` of a role or of the
/// session authorization (`role` or `authorization` with `set` or `reset` anywhere in the text),
/// `RESET ALL`, `DISCARD ALL`, and, when such a change may be pending in the open transaction
/// (`in_changed_transaction`), `ROLLBACK`/`ABORT` (which undo it) and `COMMIT`/`END`/`PREPARE
/// TRANSACTION` (which end `SET LOCAL`).
pub fn changes_reading(sql: &[u8], in_changed_transaction: bool) -> bool {
    barrier(sql, in_changed_transaction) != Barrier::None
}

/// What a statement may change for the statements after it (see [`changes_reading`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Barrier {
    #[default]
    None,
    /// Only who is asking (`SET`/`RESET ROLE`, `SET SESSION AUTHORIZATION`): what is judged
    /// the same for every role may follow it before the server answers.
    Role,
    /// How SQL is read (or possibly so): nothing that needs the analysis may follow it
    /// before the server answers.
    Reading,
}

/// The barrier a SQL text is: [`Barrier::Reading`] for every case of [`changes_reading`] but
/// role switches, which are [`Barrier::Role`], as are texts that run server code that may
/// switch roles (`EXECUTE`, `CALL`, a `DO` block) and any mention of `session_authorization`.
pub fn barrier(sql: &[u8], in_changed_transaction: bool) -> Barrier {
    let (mut reset, mut set, mut all, mut role) = (false, false, false, false);
    let mut found = Barrier::None;
    for (i, w) in words(sql).enumerate() {
        // Code the server runs may switch roles: a prepared statement, a procedure, a DO block.
        if matches!(
            w.as_slice(),
            b"execute" | b"call" | b"session_authorization"
        ) || (i == 0 && w == b"do")
        {
            found = Barrier::Role;
        }
        match w.as_slice() {
            b"standard_conforming_strings" | b"client_encoding" | b"discard" | b"set_config" => {
                return Barrier::Reading
            }
            b"rollback" | b"abort" | b"commit" | b"end" | b"prepare" if in_changed_transaction => {
                return Barrier::Reading
            }
            // `SET NAMES` is `SET client_encoding`.
            b"names" if set => return Barrier::Reading,
            b"reset" => reset = true,
            b"set" => set = true,
            b"all" => all = true,
            b"role" | b"authorization" => role = true,
            _ => {}
        }
        if reset && all {
            return Barrier::Reading;
        }
        if role && (set || reset) {
            found = Barrier::Role;
        }
    }
    found
}

/// `SET standard_conforming_strings = on` and friends: the way out of an unreadable session,
/// so they pass even while other statements on protected data are refused.
pub fn restores_settings(sql: &[u8]) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_that_may_change_how_sql_reads_are_barriers() {
        for sql in [
            "SET standard_conforming_strings = off",
            "set local client_encoding to 'SJIS'",
            "RESET ALL",
            "DISCARD ALL",
            "reset standard_conforming_strings",
            "SELECT 1; SET client_encoding = 'GBK'",
            "select set_config('standard_conforming_strings', 'off', false)",
            "SET ROLE support_team",
            "set local role none",
            "RESET ROLE",
            "SET /* who */ role = 'x'",
            "SET SESSION AUTHORIZATION bob",
            "reset session authorization",
            "select set_config('role', 'x', true)",
            "select set_config($1, $2, true)",
        ] {
            assert!(changes_reading(sql.as_bytes(), false), "{sql}");
        }
        for sql in [
            "ROLLBACK",
            "abort",
            "COMMIT",
            "end",
            "ROLLBACK TO SAVEPOINT s",
            "prepare transaction 'x'",
        ] {
            assert!(changes_reading(sql.as_bytes(), true), "{sql}");
            assert!(!changes_reading(sql.as_bytes(), false), "{sql}");
        }
        for sql in [
            "SELECT name FROM customers",
            "SET search_path = public",
            "SELECT role FROM users",
            "ROLLBACK",
            "SELECT 'all' AS x",
        ] {
            assert!(!changes_reading(sql.as_bytes(), false), "{sql}");
        }
    }

    #[test]
    fn only_settings_that_make_sql_readable_again_restore_it() {
        assert!(restores_settings(b"SET standard_conforming_strings = on"));
        assert!(restores_settings(b"set client_encoding to 'UTF8';"));
        assert!(restores_settings(b"RESET standard_conforming_strings"));
        assert!(!restores_settings(b"SET standard_conforming_strings = off"));
        assert!(!restores_settings(
            b"SET standard_conforming_strings = on; SELECT 1"
        ));
    }
}
