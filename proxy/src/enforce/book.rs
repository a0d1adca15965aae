//! The session's prepared statements and portals that need transforms, as the server knows
//! them. The book is kept by the server-to-client direction and changed only when the server
//! confirms (ParseComplete, BindComplete, CloseComplete, ReadyForQuery), so a Parse or Bind
//! the server refused never changes which transforms later results get.
use std::collections::HashMap;
use std::sync::Arc;

use super::plan::Prepared;
use super::rows::RowPlan;

#[derive(Debug, Clone)]
pub struct PortalPlan {
    pub row: Arc<RowPlan>,
    /// The result formats the client bound the portal with.
    pub formats: Arc<[i16]>,
}

#[derive(Default)]
pub struct Book {
    statements: HashMap<Vec<u8>, Arc<Prepared>>,
    /// Named portals. The unnamed one, which most clients bind at every execution, is kept
    /// apart: no key to copy, no hash to compute.
    portals: HashMap<Vec<u8>, PortalPlan>,
    unnamed_portal: Option<PortalPlan>,
    /// The last result-format codes decoded, as on the wire and decoded (clients bind the
    /// same formats again and again).
    last_formats: Option<(Vec<u8>, Arc<[i16]>)>,
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
    /// `replan`: the statement was judged again at Bind (the current role changed since its
    /// Parse), and this plan is the portal's.
    pub fn bound(
        &mut self,
        portal: &[u8],
        statement: &[u8],
        formats: &[u8],
        replan: Option<Option<Arc<Prepared>>>,
    ) {
        let row = match replan {
            Some(plan) => plan.and_then(|p| p.rows.first().cloned()),
            None => self
                .statements
                .get(statement)
                .and_then(|p| p.rows.first().cloned()),
        };
        let plan = row.map(|row| PortalPlan {
            row,
            formats: self.formats(formats),
        });
        match (portal.is_empty(), plan) {
            (true, plan) => self.unnamed_portal = plan,
            (false, Some(plan)) => {
                self.portals.insert(portal.to_vec(), plan);
            }
            (false, None) => {
                self.portals.remove(portal);
            }
        }
    }

    fn formats(&mut self, wire: &[u8]) -> Arc<[i16]> {
        match &self.last_formats {
            Some((w, decoded)) if w[..] == *wire => decoded.clone(),
            _ => {
                let decoded: Arc<[i16]> = crate::protocol::frontend::decode_formats(wire).into();
                self.last_formats = Some((wire.to_vec(), decoded.clone()));
                decoded
            }
        }
    }

    pub fn statement_row(&self, name: &[u8]) -> Option<Arc<RowPlan>> {
        self.statements
            .get(name)
            .and_then(|p| p.rows.first().cloned())
    }

    pub fn portal(&self, name: &[u8]) -> Option<PortalPlan> {
        if name.is_empty() {
            return self.unnamed_portal.clone();
        }
        self.portals.get(name).cloned()
    }

    /// CloseComplete for a statement (`S`) or portal (`P`).
    pub fn closed(&mut self, kind: u8, name: &[u8]) {
        if kind == b'S' {
            self.statements.remove(name);
        } else if name.is_empty() {
            self.unnamed_portal = None;
        } else {
            self.portals.remove(name);
        }
    }

    /// A simple Query destroys the unnamed statement and portal.
    pub fn simple_query(&mut self) {
        self.statements.remove(&b""[..]);
        self.unnamed_portal = None;
    }

    /// ReadyForQuery outside a transaction: every portal is gone.
    pub fn transaction_ended(&mut self) {
        self.portals.clear();
        self.unnamed_portal = None;
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
                    self.unnamed_portal = None;
                }
                _ => {}
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.statements.is_empty() && self.portals.is_empty() && self.unnamed_portal.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement() -> Arc<Prepared> {
        Arc::new(Prepared {
            rows: vec![Arc::new(RowPlan::default())],
            ..Prepared::default()
        })
    }

    const BINARY: &[u8] = &[0, 1];
    const TEXT: &[u8] = &[0, 0];

    #[test]
    fn unnamed_and_named_portals_live_and_die_as_the_server_says() {
        let mut book = Book::default();
        book.parsed(b"s1", Some(statement()));
        book.bound(b"", b"s1", BINARY, None);
        book.bound(b"p1", b"s1", TEXT, None);
        assert_eq!(&*book.portal(b"").expect("unnamed").formats, &[1]);
        assert_eq!(&*book.portal(b"p1").expect("named").formats, &[0]);

        // Binding the unnamed portal to a statement without transforms forgets the old plan.
        book.bound(b"", b"unknown", BINARY, None);
        assert!(book.portal(b"").is_none());
        assert!(book.portal(b"p1").is_some());

        book.bound(b"", b"s1", BINARY, None);
        book.closed(b'P', b"");
        assert!(book.portal(b"").is_none());
        assert!(book.portal(b"p1").is_some());

        book.bound(b"", b"s1", BINARY, None);
        book.simple_query();
        assert!(
            book.portal(b"").is_none(),
            "a simple Query destroys the unnamed portal"
        );
        assert!(book.portal(b"p1").is_some());

        book.bound(b"", b"s1", BINARY, None);
        book.transaction_ended();
        assert!(book.portal(b"").is_none());
        assert!(book.portal(b"p1").is_none());

        book.bound(b"", b"s1", BINARY, None);
        book.sql_ran(b"DISCARD ALL");
        assert!(book.portal(b"").is_none());
        assert!(book.is_empty());
    }

    #[test]
    fn result_formats_follow_each_bind() {
        let mut book = Book::default();
        book.parsed(b"", Some(statement()));
        for (wire, want) in [
            (BINARY, vec![1]),
            (BINARY, vec![1]),
            (TEXT, vec![0]),
            (&[0, 0, 0, 1][..], vec![0, 1]),
            (&[][..], vec![]),
            (BINARY, vec![1]),
        ] {
            book.bound(b"", b"", wire, None);
            assert_eq!(&*book.portal(b"").expect("bound").formats, &want[..]);
        }
    }
}
