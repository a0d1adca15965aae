//! Where values meet encrypted columns in a SQL text: the literals pgveil replaces by
//! envelopes, and the parameters whose values it encrypts at Bind.
//!
//! sqlparser gives each literal and placeholder the line and column where it starts; the end
//! of the token, and of a cast written around it, is found here by reading the text with
//! PostgreSQL's lexical rules (`standard_conforming_strings` on, which pgveil requires).
use pgveil_policy::model::ColumnId;
use sqlparser::tokenizer::Location;

/// What a value at a site is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Written into the column: encrypted in the column's mode.
    Store,
    /// Compared with the column: encrypted deterministically, in this syntactic position.
    Lookup(LookupForm),
}

/// How a looked-up literal stands in the text, which decides how it is widened to match
/// values written under every key version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupForm {
    /// `col = 'x'`: becomes `col = ANY(ARRAY[...])`.
    Eq,
    /// `col <> 'x'`: becomes `col <> ALL(ARRAY[...])`.
    NotEq,
    /// An item of `col [NOT] IN (...)`: becomes several items.
    Item,
    /// Any other position (`'x' = col`): the active version only.
    Single,
    /// The array parameter of `col = ANY($1)`: each element encrypted, under every key
    /// version, into an array of envelopes.
    Array,
}

/// The value at a site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SiteValue {
    /// A literal, as the server would read it (quotes and escapes removed).
    Literal(String),
    /// A parameter `$n` (1-based).
    Param(usize),
}

/// One value that pgveil must encrypt before the server sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// Byte range in the SQL text that the envelope (or, for a parameter, the bare `$n`)
    /// replaces: the token, and any cast around it.
    pub start: usize,
    pub end: usize,
    pub value: SiteValue,
    pub column: ColumnId,
    pub purpose: Purpose,
}

/// Byte offsets of sqlparser's line/column locations (columns count characters).
pub struct Offsets<'a> {
    sql: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> Offsets<'a> {
    pub fn new(sql: &'a str) -> Offsets<'a> {
        let mut line_starts = vec![0];
        line_starts.extend(sql.match_indices('\n').map(|(i, _)| i + 1));
        Offsets { sql, line_starts }
    }

    pub fn sql(&self) -> &'a str {
        self.sql
    }

    /// The byte offset of a location; `None` for an empty or out-of-range one.
    pub fn of(&self, loc: Location) -> Option<usize> {
        let line = usize::try_from(loc.line).ok()?.checked_sub(1)?;
        let col = usize::try_from(loc.column).ok()?.checked_sub(1)?;
        let start = *self.line_starts.get(line)?;
        let rest = &self.sql[start..];
        let mut chars = rest.char_indices();
        let off = if col == 0 {
            0
        } else {
            chars.nth(col).map_or(rest.len(), |(i, _)| i)
        };
        (start + off <= self.sql.len()).then_some(start + off)
    }
}

/// The end of the literal or placeholder token that starts at byte `start`.
pub fn token_end(sql: &str, start: usize) -> Option<usize> {
    let b = sql.as_bytes();
    let at = |i: usize| b.get(i).copied();
    match at(start)? {
        b'\'' => quoted_end(b, start, false),
        b'E' | b'e' if at(start + 1) == Some(b'\'') => quoted_end(b, start + 1, true),
        b'N' | b'n' if at(start + 1) == Some(b'\'') => quoted_end(b, start + 1, false),
        b'$' => {
            // `$1` placeholder, or a `$tag$ ... $tag$` string.
            let mut i = start + 1;
            if at(i).is_some_and(|c| c.is_ascii_digit()) {
                while at(i).is_some_and(|c| c.is_ascii_digit()) {
                    i += 1;
                }
                return Some(i);
            }
            while at(i).is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_') {
                i += 1;
            }
            if at(i) != Some(b'$') {
                return None;
            }
            let tag = &sql[start..=i];
            let body = i + 1;
            sql[body..].find(tag).map(|p| body + p + tag.len())
        }
        c if c.is_ascii_digit() || c == b'.' => {
            let mut i = start;
            while at(i).is_some_and(|c| c.is_ascii_digit() || c == b'.' || c == b'_') {
                i += 1;
            }
            if matches!(at(i), Some(b'e' | b'E')) {
                let mut j = i + 1;
                if matches!(at(j), Some(b'+' | b'-')) {
                    j += 1;
                }
                if at(j).is_some_and(|c| c.is_ascii_digit()) {
                    i = j;
                    while at(i).is_some_and(|c| c.is_ascii_digit()) {
                        i += 1;
                    }
                }
            }
            Some(i)
        }
        c if c.is_ascii_alphabetic() => {
            // TRUE / FALSE
            let mut i = start;
            while at(i).is_some_and(|c| c.is_ascii_alphabetic()) {
                i += 1;
            }
            Some(i)
        }
        _ => None,
    }
}

/// The end of a quoted string whose opening quote is at `open`.
fn quoted_end(b: &[u8], open: usize, backslash: bool) -> Option<usize> {
    let mut i = open + 1;
    loop {
        match *b.get(i)? {
            b'\\' if backslash => i += 2,
            b'\'' if b.get(i + 1) == Some(&b'\'') => i += 2,
            b'\'' => {
                // Adjacent string constants separated by a newline continue the literal.
                let mut j = i + 1;
                let mut newline = false;
                while let Some(&c) = b.get(j) {
                    if c == b'\n' {
                        newline = true;
                    } else if !c.is_ascii_whitespace() {
                        break;
                    }
                    j += 1;
                }
                if newline && b.get(j) == Some(&b'\'') {
                    i = j + 1;
                    continue;
                }
                return Some(i + 1);
            }
            _ => i += 1,
        }
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(|c| c.is_ascii_whitespace()) {
        i += 1;
    }
    i
}

/// Words that continue a type name (`double precision`, `timestamp with time zone`, ...).
const TYPE_WORDS: &[&str] = &["precision", "varying", "with", "without", "time", "zone"];

/// If one or more `::type` casts follow byte `end` (after whitespace), the end of the last.
pub fn cast_suffix_end(sql: &str, end: usize) -> Option<usize> {
    let b = sql.as_bytes();
    let mut last = None;
    let mut i = end;
    loop {
        let j = skip_ws(b, i);
        if !sql[j..].starts_with("::") {
            return last;
        }
        let mut k = type_name_end(sql, j + 2)?;
        loop {
            let w = skip_ws(b, k);
            match b.get(w) {
                Some(b'(') => k = balanced_end(b, w, b'(', b')')?,
                Some(b'[') => k = balanced_end(b, w, b'[', b']')?,
                Some(c) if c.is_ascii_alphabetic() => {
                    let e = word_end(b, w);
                    if TYPE_WORDS
                        .iter()
                        .any(|t| t.eq_ignore_ascii_case(&sql[w..e]))
                    {
                        k = e;
                    } else {
                        break;
                    }
                }
                _ => break,
            }
        }
        last = Some(k);
        i = k;
    }
}

/// `CAST(<token> AS type)` around the token at `start..end`: the range of the whole call.
pub fn cast_call(sql: &str, start: usize, end: usize) -> Option<(usize, usize)> {
    let b = sql.as_bytes();
    let mut i = start;
    while i > 0 && b[i - 1].is_ascii_whitespace() {
        i -= 1;
    }
    if i == 0 || b[i - 1] != b'(' {
        return None;
    }
    let mut w = i - 1;
    while w > 0 && b[w - 1].is_ascii_whitespace() {
        w -= 1;
    }
    let mut from = w;
    while from > 0 && (b[from - 1].is_ascii_alphanumeric() || b[from - 1] == b'_') {
        from -= 1;
    }
    let word = &sql[from..w];
    if !(word.eq_ignore_ascii_case("cast") || word.eq_ignore_ascii_case("try_cast")) {
        return None;
    }
    let j = skip_ws(b, end);
    if !sql.get(j..j + 2)?.eq_ignore_ascii_case("as") {
        return None;
    }
    // The closing parenthesis of the call, at depth zero.
    let close = balanced_end(b, i - 1, b'(', b')')?;
    Some((from, close))
}

fn word_end(b: &[u8], mut i: usize) -> usize {
    while b
        .get(i)
        .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'.')
    {
        i += 1;
    }
    i
}

fn type_name_end(sql: &str, i: usize) -> Option<usize> {
    let b = sql.as_bytes();
    let i = skip_ws(b, i);
    match b.get(i)? {
        b'"' => {
            let close = sql[i + 1..].find('"')?;
            let e = i + 1 + close + 1;
            // schema-qualified: "s"."t" or "s".t
            if b.get(e) == Some(&b'.') {
                return type_name_end(sql, e + 1);
            }
            Some(e)
        }
        c if c.is_ascii_alphabetic() || *c == b'_' => {
            let e = word_end(b, i);
            if b.get(e) == Some(&b'"') {
                return None;
            }
            Some(e)
        }
        _ => None,
    }
}

/// The end (exclusive) of a bracketed group opening at `open`, skipping quoted strings.
fn balanced_end(b: &[u8], open: usize, l: u8, r: u8) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = open;
    while i < b.len() {
        let c = b[i];
        if c == b'\'' {
            i = quoted_end(b, i, false)?;
            continue;
        }
        if c == l {
            depth += 1;
        } else if c == r {
            depth -= 1;
            if depth == 0 {
                return Some(i + 1);
            }
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(sql: &str) -> &str {
        &sql[..token_end(sql, 0).unwrap_or(0)]
    }

    #[test]
    fn tokens_end_where_postgres_ends_them() {
        assert_eq!(tok("'it''s' x"), "'it''s'");
        assert_eq!(tok("E'a\\'b' x"), "E'a\\'b'");
        assert_eq!(tok("'a\\' x"), "'a\\'");
        assert_eq!(tok("$$a'b$$ x"), "$$a'b$$");
        assert_eq!(tok("$q$a$$b$q$, x"), "$q$a$$b$q$");
        assert_eq!(tok("$12, x"), "$12");
        assert_eq!(tok("12.5e-3)"), "12.5e-3");
        assert_eq!(tok("'a'\n  'b' x"), "'a'\n  'b'");
        assert_eq!(tok("'a' 'b'"), "'a'");
        assert_eq!(tok("true)"), "true");
        assert_eq!(token_end("'open", 0), None);
    }

    #[test]
    fn casts_are_found_whole() {
        let s = "'x'::date, 1";
        assert_eq!(cast_suffix_end(s, 3), Some(9));
        let s = "'x' :: timestamp with time zone)";
        assert_eq!(
            &s[..cast_suffix_end(s, 3).unwrap_or(0)],
            "'x' :: timestamp with time zone"
        );
        let s = "$1::numeric(10, 2)::text AND";
        assert_eq!(
            &s[..cast_suffix_end(s, 2).unwrap_or(0)],
            "$1::numeric(10, 2)::text"
        );
        let s = "$1::character varying[] x";
        assert_eq!(
            &s[..cast_suffix_end(s, 2).unwrap_or(0)],
            "$1::character varying[]"
        );
        assert_eq!(cast_suffix_end("'x' AND", 3), None);
        let s = "f(CAST ( 'a)' AS varchar(3)) , 1";
        let start = s.find('\'').unwrap_or(0);
        let (a, b) = cast_call(s, start, start + 4).unwrap_or((0, 0));
        assert_eq!(&s[a..b], "CAST ( 'a)' AS varchar(3))");
        assert_eq!(cast_call("f('a')", 2, 5), None);
    }

    #[test]
    fn offsets_count_characters() {
        let o = Offsets::new("é = 'x'\n  ü, 'y'");
        assert_eq!(o.of(Location::new(1, 5)), Some(5));
        assert_eq!(o.of(Location::new(2, 6)), Some(15));
        assert_eq!(o.of(Location::empty()), None);
    }
}
