//! Shortening a syslog message to the UDP datagram limit (`audit.syslog.max_datagram`).
//!
//! A record too large for one datagram is never dropped: a statement padded to 77 KB must not
//! vanish from the SIEM. Its free-text fields are cut first, so that what a SIEM alerts on
//! survives: login, the statement fingerprint (its beginning), the columns, rows, outcome, seq,
//! the chain's tag (which finds the whole record in the file) and a marker that says what was
//! cut and how large the record was. If that still does not fit (thousands of columns), the
//! columns list is cut too, and at last every text field, so that the message always goes out.
use super::super::record::Record;

/// A field that can be shortened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Field {
    Fingerprint,
    Reason,
    ApplicationName,
    Rule,
    Roles,
    Columns,
    Login,
    Client,
    Command,
}

/// First round: the long free text down to a readable floor (bytes for text, entries for
/// lists), then the columns list. The floors keep the statement's beginning (its tables and
/// columns) legible.
const FIRST_ROUND: [(Field, usize); 6] = [
    (Field::Fingerprint, 512),
    (Field::Reason, 256),
    (Field::ApplicationName, 64),
    (Field::Rule, 64),
    (Field::Roles, 4),
    (Field::Columns, 0),
];

/// Second round, reached only with a limit near its minimum: everything, so that the message
/// still goes out. What remains (header, numbers, outcome, tag, log id, marker) fits in
/// [`crate::config::audit::SyslogConfig::MIN_MAX_DATAGRAM`].
const LAST_ROUND: [(Field, usize); 9] = [
    (Field::Fingerprint, 0),
    (Field::Reason, 0),
    (Field::ApplicationName, 0),
    (Field::Rule, 0),
    (Field::Roles, 0),
    (Field::Columns, 0),
    (Field::Client, 0),
    (Field::Command, 0),
    (Field::Login, 0),
];

impl Field {
    fn name(self) -> &'static str {
        match self {
            Field::Fingerprint => "fingerprint",
            Field::Reason => "reason",
            Field::ApplicationName => "application_name",
            Field::Rule => "rule",
            Field::Roles => "roles",
            Field::Columns => "columns",
            Field::Login => "login",
            Field::Client => "client",
            Field::Command => "command",
        }
    }

    fn text(self, r: &mut Record) -> Option<&mut String> {
        match self {
            Field::Fingerprint => r.fingerprint.as_mut(),
            Field::Reason => r.reason.as_mut(),
            Field::ApplicationName => r.application_name.as_mut(),
            Field::Rule => r.rule.as_mut(),
            Field::Login => r.login.as_mut(),
            Field::Client => r.client.as_mut(),
            Field::Command => r.command.as_mut(),
            Field::Roles | Field::Columns => None,
        }
    }

    /// Its size: bytes of text, entries of a list (0 when absent).
    fn len(self, r: &mut Record) -> usize {
        match self {
            Field::Roles => r.roles.as_ref().map_or(0, Vec::len),
            Field::Columns => r.columns.as_ref().map_or(0, Vec::len),
            f => f.text(r).map_or(0, |s| s.len()),
        }
    }

    /// Cuts it to `n` bytes (at a character boundary) or entries.
    fn cut_to(self, r: &mut Record, n: usize) {
        match self {
            Field::Roles => r.roles.iter_mut().for_each(|v| v.truncate(n)),
            Field::Columns => r.columns.iter_mut().for_each(|v| v.truncate(n)),
            f => {
                if let Some(s) = f.text(r) {
                    cut_text(s, n);
                }
            }
        }
    }
}

/// What was cut: the marker a shortened message carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Marker {
    /// Bytes of the record's line in the audit file.
    pub original_bytes: usize,
    cut: Vec<Field>,
    columns_total: usize,
    roles_total: usize,
}

impl Marker {
    fn new(original_bytes: usize, r: &Record) -> Self {
        Marker {
            original_bytes,
            cut: Vec::new(),
            columns_total: r.columns.as_ref().map_or(0, Vec::len),
            roles_total: r.roles.as_ref().map_or(0, Vec::len),
        }
    }

    /// The fields cut, in the order they were cut: `fingerprint`, `columns 120 of 5000`.
    pub fn parts(&self, r: &Record) -> Vec<String> {
        self.cut
            .iter()
            .map(|f| match f {
                Field::Columns => format!(
                    "columns {} of {}",
                    r.columns.as_ref().map_or(0, Vec::len),
                    self.columns_total
                ),
                Field::Roles => format!(
                    "roles {} of {}",
                    r.roles.as_ref().map_or(0, Vec::len),
                    self.roles_total
                ),
                f => f.name().to_string(),
            })
            .collect()
    }

    fn noted(&mut self, f: Field) {
        if !self.cut.contains(&f) {
            self.cut.push(f);
        }
    }
}

/// `record` rendered by `compose` in at most `max` bytes, shortened field by field. `compose`
/// renders a record with its marker; `original_bytes` is the size of the record's line.
pub(super) fn shorten(
    mut record: Record,
    original_bytes: usize,
    max: usize,
    compose: impl Fn(&Record, &Marker) -> Option<String>,
) -> Option<String> {
    let mut marker = Marker::new(original_bytes, &record);
    for (field, keep) in FIRST_ROUND.iter().chain(LAST_ROUND.iter()) {
        let m = compose(&record, &marker)?;
        if m.len() <= max {
            return Some(m);
        }
        let len = field.len(&mut record);
        if len <= *keep {
            continue;
        }
        marker.noted(*field);
        let fits = |n: usize| -> Option<bool> {
            let mut probe = record.clone();
            field.cut_to(&mut probe, n);
            Some(compose(&probe, &marker)?.len() <= max)
        };
        let n = longest(*keep, len - 1, fits)?;
        field.cut_to(&mut record, n.unwrap_or(*keep));
    }
    // Reached only with a limit below the configured minimum: what is left goes out rather than
    // nothing.
    compose(&record, &marker)
}

/// The largest `n` in `lo..=hi` for which `fits(n)` (which grows false as `n` grows), if any:
/// a binary search, since a rendering costs as much as the field is long.
fn longest(lo: usize, hi: usize, fits: impl Fn(usize) -> Option<bool>) -> Option<Option<usize>> {
    let (mut lo, mut hi) = (lo, hi);
    let mut best = None;
    while lo <= hi {
        let mid = lo + (hi - lo) / 2;
        if fits(mid)? {
            best = Some(mid);
            lo = mid + 1;
        } else if mid == 0 {
            break;
        } else {
            hi = mid - 1;
        }
    }
    Some(best)
}

/// Cuts `s` to at most `n` bytes, at a character boundary.
fn cut_text(s: &mut String, n: usize) {
    let mut n = n.min(s.len());
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    s.truncate(n);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_cut_at_a_character_boundary() {
        let mut s = "ab€cd".to_string(); // € is 3 bytes: a b [€] c d = 7 bytes
        cut_text(&mut s, 3);
        assert_eq!(s, "ab", "3 bytes would split the euro sign");
        cut_text(&mut s, 10);
        assert_eq!(s, "ab");
    }

    #[test]
    fn the_search_finds_the_longest_that_fits() {
        let fits = |limit: usize| move |n: usize| Some(n <= limit);
        assert_eq!(longest(0, 100, fits(37)), Some(Some(37)));
        assert_eq!(longest(0, 100, fits(100)), Some(Some(100)));
        assert_eq!(longest(0, 100, fits(0)), Some(Some(0)));
        assert_eq!(
            longest(5, 100, fits(3)),
            Some(None),
            "nothing at or above the floor"
        );
        assert_eq!(
            longest(0, 100, |_| None),
            None,
            "a failed rendering is passed on"
        );
    }
}
