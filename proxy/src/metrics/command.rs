//! The `command` label: which statement a completed or failed query was.
//! Successful statements are named by their CommandComplete tag; failed ones
//! by the first keyword of the SQL the client sent.

/// Command words that get their own `command` label value; anything else is "other".
pub const COMMANDS: &[&str] = &[
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "MERGE",
    "COPY",
    "BEGIN",
    "START",
    "COMMIT",
    "ROLLBACK",
    "SAVEPOINT",
    "RELEASE",
    "PREPARE",
    "SET",
    "RESET",
    "SHOW",
    "FETCH",
    "MOVE",
    "DECLARE",
    "CLOSE",
    "LISTEN",
    "UNLISTEN",
    "NOTIFY",
    "CREATE",
    "ALTER",
    "DROP",
    "TRUNCATE",
    "GRANT",
    "REVOKE",
    "VACUUM",
    "ANALYZE",
    "EXPLAIN",
    "DISCARD",
    "DEALLOCATE",
    "DO",
    "CALL",
    "LOCK",
    "COMMENT",
];

/// A `command` label value: an index into [`COMMANDS`], then "other", then "unknown".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Command(u8);

impl Command {
    /// A command word outside [`COMMANDS`].
    pub const OTHER: Command = Command(COMMANDS.len() as u8);
    /// No statement is known (an error outside any statement).
    pub const UNKNOWN: Command = Command(COMMANDS.len() as u8 + 1);
    /// Number of label values.
    pub const COUNT: usize = COMMANDS.len() + 2;

    /// The label for a command word as CommandComplete spells it.
    pub fn from_word(word: &[u8]) -> Command {
        match COMMANDS.iter().position(|c| c.as_bytes() == word) {
            Some(i) => Command(i as u8),
            None => Command::OTHER,
        }
    }

    /// The label for a statement's SQL text: its first keyword, mapped to the
    /// word PostgreSQL's CommandComplete would use.
    pub fn from_sql(sql: &[u8]) -> Command {
        let Some(word) = first_keyword(sql) else {
            return Command::UNKNOWN;
        };
        let mut upper = [0u8; 16];
        if word.len() > upper.len() {
            return Command::OTHER;
        }
        for (u, b) in upper.iter_mut().zip(word) {
            *u = b.to_ascii_uppercase();
        }
        let word = &upper[..word.len()];
        let alias: &[u8] = match word {
            b"END" => b"COMMIT",
            b"ABORT" => b"ROLLBACK",
            b"TABLE" | b"VALUES" => b"SELECT",
            other => other,
        };
        Command::from_word(alias)
    }

    pub fn index(self) -> usize {
        self.0 as usize
    }

    /// The label text.
    pub fn label(self) -> &'static str {
        Command::label_at(self.index())
    }

    /// The label text of the value at `index`.
    pub fn label_at(index: usize) -> &'static str {
        match COMMANDS.get(index) {
            Some(c) => c,
            None if index == Command::OTHER.index() => "other",
            None => "unknown",
        }
    }
}

/// The first keyword of `sql`, past whitespace, comments and opening parentheses.
fn first_keyword(mut sql: &[u8]) -> Option<&[u8]> {
    loop {
        match sql {
            [b, rest @ ..] if b.is_ascii_whitespace() || *b == b'(' => sql = rest,
            [b'-', b'-', rest @ ..] => {
                let end = rest.iter().position(|&b| b == b'\n')?;
                sql = &rest[end..];
            }
            [b'/', b'*', rest @ ..] => {
                let end = rest.windows(2).position(|w| w == b"*/")?;
                sql = &rest[end + 2..];
            }
            _ => break,
        }
    }
    let len = sql.iter().take_while(|b| b.is_ascii_alphabetic()).count();
    (len > 0).then(|| &sql[..len])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_sql_by_its_first_keyword() {
        for (sql, label) in [
            ("select 1", "SELECT"),
            ("  /* hi */ -- x\n insert into t values (1)", "INSERT"),
            ("(select 1) union (select 2)", "SELECT"),
            ("end", "COMMIT"),
            ("with x as (select 1) select * from x", "other"),
            ("", "unknown"),
            ("-- only a comment", "unknown"),
            ("create table t()", "CREATE"),
        ] {
            assert_eq!(Command::from_sql(sql.as_bytes()).label(), label, "{sql}");
        }
        assert_eq!(Command::from_word(b"WEIRD").label(), "other");
        assert_eq!(Command::UNKNOWN.label(), "unknown");
    }
}
