//! Which statement a client's request runs, so a failed statement is counted
//! under its command like a successful one. Only Parse, Bind and small Query
//! bodies are looked at; nothing here ever changes what is relayed.
use std::collections::HashMap;

use crate::metrics::Command;
use crate::protocol::frame::cstr;

/// Prepared statements remembered per session; beyond this, new names count as unknown.
const MAX_NAMED: usize = 1024;

/// The command of each prepared statement, and of the current extended batch.
pub struct PreparedCommands {
    unnamed: Command,
    named: HashMap<Vec<u8>, Command>,
    /// The command of the statement last bound or parsed since the last Sync.
    batch: Command,
}

impl Default for PreparedCommands {
    fn default() -> Self {
        PreparedCommands {
            unnamed: Command::UNKNOWN,
            named: HashMap::new(),
            batch: Command::UNKNOWN,
        }
    }
}

/// The command of a Query message's body.
pub fn of_query(body: &[u8]) -> Command {
    Command::from_sql(body)
}

impl PreparedCommands {
    /// Parse: statement name, then the SQL.
    pub fn on_parse(&mut self, body: &[u8]) {
        let Some((name, rest)) = cstr(body) else {
            return;
        };
        let command = Command::from_sql(rest);
        self.batch = command;
        if name.is_empty() {
            self.unnamed = command;
        } else if self.named.len() < MAX_NAMED || self.named.contains_key(name) {
            self.named.insert(name.to_vec(), command);
        }
    }

    /// Bind: portal name, then the statement name.
    pub fn on_bind(&mut self, body: &[u8]) {
        let Some((_portal, rest)) = cstr(body) else {
            return;
        };
        let Some((name, _)) = cstr(rest) else {
            return;
        };
        self.batch = if name.is_empty() {
            self.unnamed
        } else {
            self.named.get(name).copied().unwrap_or(Command::UNKNOWN)
        };
    }

    /// Sync ends the batch: its command labels any error before ReadyForQuery.
    pub fn take_batch(&mut self) -> Command {
        std::mem::replace(&mut self.batch, Command::UNKNOWN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_and_unnamed_statements_keep_their_command() {
        let mut s = PreparedCommands::default();
        s.on_parse(b"ins\0insert into t values ($1)\0\0\0");
        assert_eq!(s.take_batch().label(), "INSERT");
        s.on_parse(b"\0update t set x = 1\0\0\0");
        s.on_bind(b"\0ins\0\0\0\0\0\0\0");
        assert_eq!(s.take_batch().label(), "INSERT");
        s.on_bind(b"\0\0\0\0\0\0\0\0");
        assert_eq!(s.take_batch().label(), "UPDATE");
        assert_eq!(s.take_batch().label(), "unknown");
        s.on_bind(b"p\0nope\0");
        assert_eq!(s.take_batch().label(), "unknown");
    }
}
