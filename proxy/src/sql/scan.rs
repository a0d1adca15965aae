//! The fast path: a word scan that tells whether SQL text might reach protected data.
//!
//! It reads the whole text, string literals, comments and dollar-quoted bodies included (a name
//! inside `query_to_xml('select phone from customers', ...)` or a `DO` body counts), lower-cases
//! each word and looks it up in a set of trigger words: the paths to protected data (protected
//! relations, views and functions over them, functions that run SQL text or read relations by
//! name, statistics relations), the policy's table names, and the words of statements that
//! change who is asking, how SQL is read, or create code the server runs. A column name alone is
//! not a path: a protected column is reached only through its relation, or a view or function
//! over it, whose names are trigger words. Text with no trigger word is forwarded untouched and
//! never parsed. In a database that holds nothing protected, only the policy's table names are
//! trigger words (a statement that creates or writes such a table is judged).
use std::collections::HashSet;

use pgveil_policy::CompiledPolicy;

use crate::catalog::words::{is_word_byte, MAX_IDENT};
use crate::catalog::Snapshot;

/// Words that send a statement to the analysis in a database that holds protected data.
pub const ALWAYS: &[&str] = &[
    // who is asking
    "role",
    "authorization",
    "session_authorization",
    "set_config",
    // how SQL text is read
    "standard_conforming_strings",
    "client_encoding",
    // code the server runs that pgveil cannot read
    "do",
    "execute",
    "language",
];

/// The trigger words of one (policy, catalog snapshot) pair.
#[derive(Debug, Default)]
pub struct Scanner {
    words: HashSet<Box<[u8]>>,
    /// Whether text with `U&` escapes needs the analysis (only where something is protected).
    escapes: bool,
}

impl crate::catalog::Derived for Scanner {
    fn derive(policy: &CompiledPolicy, snapshot: &Snapshot) -> Scanner {
        Scanner::new(policy, snapshot)
    }
}

impl Scanner {
    pub fn new(policy: &CompiledPolicy, snapshot: &Snapshot) -> Scanner {
        let mut words: HashSet<Box<[u8]>> = HashSet::new();
        let escapes = snapshot.protects_anything();
        let mut add = |w: &str| {
            let w = w.to_ascii_lowercase();
            let b = w.as_bytes();
            words.insert(b[..b.len().min(MAX_IDENT)].into());
        };
        for c in &policy.policy().columns {
            add(c.table.rsplit('.').next().unwrap_or(&c.table));
        }
        if escapes {
            for w in ALWAYS {
                add(w);
            }
            for (w, _) in crate::catalog::functions::FUNCTIONS {
                add(w);
            }
            for w in crate::catalog::functions::STATISTICS {
                add(w);
            }
            for r in snapshot.protected_relation_names() {
                add(r);
            }
            for f in snapshot
                .exposing_functions()
                .chain(snapshot.reading_changers())
            {
                add(f);
            }
        }
        Scanner { words, escapes }
    }

    /// Whether `sql` names anything that needs the analysis. Text with `U&` escapes
    /// (which can spell a name without its letters) always does.
    pub fn needs_analysis(&self, sql: &[u8]) -> bool {
        if self.escapes && has_unicode_escape(sql) {
            return true;
        }
        let mut buf = [0u8; MAX_IDENT];
        let mut i = 0;
        while i < sql.len() {
            if !is_word_byte(sql[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < sql.len() && is_word_byte(sql[i]) {
                i += 1;
            }
            let word = &sql[start..i];
            let n = word.len().min(MAX_IDENT);
            for (d, s) in buf.iter_mut().zip(&word[..n]) {
                *d = s.to_ascii_lowercase();
            }
            if self.words.contains(&buf[..n]) {
                return true;
            }
        }
        false
    }
}

/// Whether text holds a `U&` string or identifier, which can spell a name without its letters.
pub fn has_unicode_escape(sql: &[u8]) -> bool {
    unicode_escape_opening(sql, b"'\"")
}

/// Whether text holds a `U&"` (a Unicode-escaped identifier), anywhere.
pub fn has_unicode_identifier(sql: &[u8]) -> bool {
    unicode_escape_opening(sql, b"\"")
}

/// `U&` (either case) followed by one of `quotes`.
fn unicode_escape_opening(sql: &[u8], quotes: &[u8]) -> bool {
    sql.windows(3)
        .any(|w| (w[0] == b'u' || w[0] == b'U') && w[1] == b'&' && quotes.contains(&w[2]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scanner(words: &[&str]) -> Scanner {
        Scanner {
            words: words.iter().map(|w| w.as_bytes().into()).collect(),
            escapes: true,
        }
    }

    #[test]
    fn finds_names_anywhere_case_insensitively() {
        let s = scanner(&["customers", "phone"]);
        assert!(s.needs_analysis(b"SELECT * FROM Customers"));
        assert!(s.needs_analysis(b"select \"PHONE\" from t"));
        assert!(s.needs_analysis(b"select query_to_xml('select phone from x', true, true, '')"));
        assert!(s.needs_analysis(b"select 1 -- customers"));
        assert!(!s.needs_analysis(b"SELECT abalance FROM pgbench_accounts WHERE aid = 1"));
        assert!(!s.needs_analysis(b"select phones from customers_archive"));
    }

    #[test]
    fn unicode_escapes_always_need_analysis() {
        let s = scanner(&["customers"]);
        assert!(s.needs_analysis(br#"select * from U&"\0063ustomers""#));
        assert!(s.needs_analysis(b"select u&'x'"));
    }

    #[test]
    fn long_words_are_truncated_like_postgres() {
        let long = "a".repeat(63);
        let s = scanner(&[long.as_str()]);
        let text = format!("select * from {}", "a".repeat(70));
        assert!(s.needs_analysis(text.as_bytes()));
    }
}
