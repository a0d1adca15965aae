//! SQL analysis: the fast-path word scan, the analysis proper (sqlparser, pinned, behind this
//! module), and the parse cache.
pub mod analyze;
pub mod cache;
pub mod ddl;
pub mod depth;
pub mod refusal;
pub mod scan;
pub mod sites;

pub use analyze::{analyze, Analysis, CopyIn, CopyOut, Env, Kind, Src, StatementPlan};
pub use cache::ParseCache;
pub use refusal::{Refusal, Rule};
pub use scan::Scanner;
pub use sites::{LookupForm, Purpose, Site, SiteValue};

/// The first word of a SQL text, skipping whitespace, comments and parentheses.
pub fn first_word(sql: &str) -> &str {
    let mut rest = sql;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == '(' || c == ';');
        if let Some(r) = rest.strip_prefix("--") {
            rest = r.split_once('\n').map_or("", |(_, t)| t);
        } else if let Some(r) = rest.strip_prefix("/*") {
            rest = r.split_once("*/").map_or("", |(_, t)| t);
        } else {
            break;
        }
    }
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    &rest[..end]
}

/// Whether a statement's first word makes it DDL (the catalog must be reloaded after it).
pub fn is_ddl_word(word: &str) -> bool {
    [
        "create", "alter", "drop", "comment", "grant", "revoke", "security", "refresh", "reindex",
        "import", // code that may have run DDL of its own
        "do", "call",
    ]
    .iter()
    .any(|w| word.eq_ignore_ascii_case(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_word_skips_comments() {
        assert_eq!(first_word("  /* x */ -- y\n  SELECT 1"), "SELECT");
        assert_eq!(first_word("(select 1)"), "select");
        assert_eq!(first_word(""), "");
        assert!(is_ddl_word("CREATE"));
        assert!(!is_ddl_word("select"));
    }
}
