//! Named portals bound to statements over protected data. A portal bound by Parse/Bind is a
//! cursor on the server, which SQL `FETCH` can read by name, past the relay's transforms,
//! counts and audit: while one is open, SQL `FETCH` is refused.
use std::collections::HashSet;

use bytes::Bytes;

/// Most portals tracked; past this, SQL `FETCH` is refused for the rest of the session (a
/// client would need thousands open at once).
const MAX_TRACKED: usize = 4096;

#[derive(Default)]
pub struct ProtectedPortals {
    open: HashSet<Bytes>,
    /// More were bound than are tracked.
    overflowed: bool,
}

impl ProtectedPortals {
    /// A Bind of portal `name` (unnamed ones cannot be fetched) to a statement over protected
    /// data (`protected`) or not.
    pub fn bound(&mut self, name: &[u8], protected: bool) {
        if name.is_empty() {
            return;
        }
        if !protected {
            self.open.remove(name);
        } else if self.open.len() < MAX_TRACKED {
            self.open.insert(Bytes::copy_from_slice(name));
        } else {
            self.overflowed = true;
        }
    }

    /// A Close of portal `name`.
    pub fn closed(&mut self, name: &[u8]) {
        if !self.open.is_empty() {
            self.open.remove(name);
        }
    }

    /// Whether `sql` must be refused: it has the word FETCH while such a portal is open.
    pub fn blocks(&self, sql: &[u8]) -> bool {
        (self.overflowed || !self.open.is_empty())
            && sql
                .split(|b| !b.is_ascii_alphabetic())
                .any(|w| w.eq_ignore_ascii_case(b"fetch"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetch_is_blocked_while_a_protected_portal_is_open() {
        let mut p = ProtectedPortals::default();
        assert!(!p.blocks(b"fetch all from c"));
        p.bound(b"", true);
        assert!(
            !p.blocks(b"fetch all from c"),
            "unnamed portals cannot be fetched"
        );
        p.bound(b"c", true);
        assert!(p.blocks(b"FETCH 10 c"));
        assert!(p.blocks(b"select 1;fetch next from c"));
        assert!(
            !p.blocks(b"select fetcher from t"),
            "a word, not a part of one"
        );
        p.bound(b"c", false);
        assert!(
            !p.blocks(b"fetch all from c"),
            "bound again to unprotected data"
        );
        p.bound(b"c", true);
        p.closed(b"c");
        assert!(!p.blocks(b"fetch all from c"));
    }
}
