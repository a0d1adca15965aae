//! Whether pgveil reads SQL text as the server does. The server lexes text by two settings:
//! `client_encoding` (a multibyte encoding can hide a quote or backslash byte inside a
//! character) and `standard_conforming_strings` (off: `\'` escapes a quote in an ordinary
//! literal). pgveil analyses text only in sessions where both are as it reads them (UTF8, on),
//! as the server last reported them (ParameterStatus, sent before ReadyForQuery).
//!
//! A statement that may change them is a barrier ([`changes_reading`]): the relay judges
//! nothing after it that needs the analysis until the server has answered it, or refuses what
//! it cannot wait for (session/enforced/client.rs).
use crate::catalog::words::words;

/// Whether a SQL text may change how the server reads the SQL after it: `SET`, `RESET` or
/// `set_config` of `client_encoding` or `standard_conforming_strings` (in any form: the words
/// anywhere in the text), `RESET ALL`, `DISCARD ALL`, and, when such a change may be pending
/// in the open transaction (`in_changed_transaction`), `ROLLBACK`/`ABORT`, which undo it.
pub fn changes_reading(sql: &[u8], in_changed_transaction: bool) -> bool {
    let (mut reset, mut all) = (false, false);
    for w in words(sql) {
        match w.as_slice() {
            b"standard_conforming_strings" | b"client_encoding" | b"discard" => return true,
            b"rollback" | b"abort" if in_changed_transaction => return true,
            b"reset" => reset = true,
            b"all" => all = true,
            _ => {}
        }
        if reset && all {
            return true;
        }
    }
    false
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
        ] {
            assert!(changes_reading(sql.as_bytes(), false), "{sql}");
        }
        assert!(changes_reading(b"ROLLBACK", true));
        assert!(changes_reading(b"abort", true));
        for sql in [
            "SELECT name FROM customers",
            "SET search_path = public",
            "RESET ROLE",
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
