//! The session's prepared statements and portals that need transforms, as the server knows
//! them. The book is kept by the server-to-client direction and changed only when the server
//! confirms (ParseComplete, BindComplete, CloseComplete, ReadyForQuery), so a Parse or Bind
//! the server refused never changes which transforms later results get.
use std::collections::HashMap;
use std::sync::Arc;

use super::rows::RowPlan;
use super::session::Prepared;

#[derive(Debug, Clone)]
pub struct PortalPlan {
    pub row: Arc<RowPlan>,
    /// The result formats the client bound the portal with.
    pub formats: Arc<[i16]>,
}

#[derive(Default)]
pub struct Book {
    statements: HashMap<Vec<u8>, Arc<Prepared>>,
    portals: HashMap<Vec<u8>, PortalPlan>,
}

impl Book {
    /// The server created statement `name` (ParseComplete).
    pub fn parsed(&mut self, name: &[u8], plan: Option<Arc<Prepared>>) {
        match plan {
            Some(p) => {
                self.statements.insert(name.to_vec(), p);
            }
            _ => {
                self.statements.remove(name);
            }
        }
    }

    /// The server bound `portal` to `statement` (BindComplete); `formats` are the Bind's
    /// result-format codes as on the wire, read only when the portal needs transforms.
    pub fn bound(&mut self, portal: &[u8], statement: &[u8], formats: &[u8]) {
        let row = self
            .statements
            .get(statement)
            .and_then(|p| p.rows.first().cloned());
        match row {
            Some(row) => {
                let formats = super::messages::decode_formats(formats).into();
                self.portals
                    .insert(portal.to_vec(), PortalPlan { row, formats });
            }
            None => {
                self.portals.remove(portal);
            }
        }
    }

    pub fn statement_row(&self, name: &[u8]) -> Option<Arc<RowPlan>> {
        self.statements
            .get(name)
            .and_then(|p| p.rows.first().cloned())
    }

    pub fn portal(&self, name: &[u8]) -> Option<PortalPlan> {
        self.portals.get(name).cloned()
    }

    /// CloseComplete for a statement (`S`) or portal (`P`).
    pub fn closed(&mut self, kind: u8, name: &[u8]) {
        if kind == b'S' {
            self.statements.remove(name);
        } else {
            self.portals.remove(name);
        }
    }

    /// A simple Query destroys the unnamed statement and portal.
    pub fn simple_query(&mut self) {
        self.statements.remove(&b""[..]);
        self.portals.remove(&b""[..]);
    }

    /// ReadyForQuery outside a transaction: every portal is gone.
    pub fn transaction_ended(&mut self) {
        self.portals.clear();
    }

    /// DEALLOCATE and DISCARD ALL in SQL text, once it has run.
    pub fn sql_ran(&mut self, sql: &[u8]) {
        let Ok(text) = std::str::from_utf8(sql) else {
            return;
        };
        for stmt in text.split(';') {
            let words: Vec<String> = stmt
                .split_whitespace()
                .map(|w| w.trim_matches('"').to_string())
                .collect();
            let lower: Vec<String> = words.iter().map(|w| w.to_ascii_lowercase()).collect();
            match lower.first().map(String::as_str) {
                Some("deallocate") => {
                    let at = usize::from(lower.get(1).is_some_and(|w| w == "prepare")) + 1;
                    match lower.get(at).map(String::as_str) {
                        Some("all") | None => self.statements.retain(|k, _| k.is_empty()),
                        Some(_) => {
                            // Unquoted names fold to lower case; quoted ones keep theirs.
                            let raw = stmt.split_whitespace().nth(at).unwrap_or("");
                            let name = if raw.starts_with('"') {
                                words[at].clone()
                            } else {
                                lower[at].clone()
                            };
                            self.statements.remove(name.as_bytes());
                        }
                    }
                }
                Some("discard") if lower.get(1).is_some_and(|w| w == "all") => {
                    self.statements.clear();
                    self.portals.clear();
                }
                _ => {}
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.statements.is_empty() && self.portals.is_empty()
    }
}
