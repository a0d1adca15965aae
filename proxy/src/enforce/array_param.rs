//! Array parameters of `col = ANY($1)` lookups on encrypted columns: the elements read from
//! the client's array (text or binary format), and the array of envelopes sent in their place
//! (text format, `text[]`).
//!
//! Only one-dimensional arrays are read, as PostgreSQL writes and reads them: in text,
//! `{a,"b c",NULL}` with backslash escapes and optional whitespace around elements (a
//! dimension prefix such as `[0:1]=` is refused); in binary, `array_send`'s layout.
use super::binary;
use crate::protocol::encoding::ClientEncoding;

/// `text[]`.
pub const TEXT_ARRAY_OID: u32 = 1009;

/// The array type of element type `elem`, for the types pgveil reads; `text[]` otherwise.
pub fn array_type_of(elem: u32) -> u32 {
    match elem {
        16 => 1000,   // bool
        17 => 1001,   // bytea
        18 => 1002,   // char
        20 => 1016,   // int8
        21 => 1005,   // int2
        23 => 1007,   // int4
        25 => 1009,   // text
        700 => 1021,  // float4
        701 => 1022,  // float8
        1042 => 1014, // bpchar
        1043 => 1015, // varchar
        1082 => 1182, // date
        1083 => 1183, // time
        1114 => 1115, // timestamp
        1184 => 1185, // timestamptz
        1700 => 1231, // numeric
        2950 => 2951, // uuid
        _ => TEXT_ARRAY_OID,
    }
}

/// Whitespace as `array_in` reads it (`scanner_isspace`: space, tab, newline, carriage
/// return, vertical tab, form feed; no other).
fn pg_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
}

/// The elements of a text-format array (`None`: NULL).
pub fn parse_text(s: &str) -> Result<Vec<Option<String>>, String> {
    let s = s.trim_matches(pg_space);
    if s.starts_with('[') {
        return Err("arrays with explicit bounds are not supported here".into());
    }
    let inner = s
        .strip_prefix('{')
        .and_then(|r| r.strip_suffix('}'))
        .ok_or_else(|| format!("malformed array literal: {s:?}"))?;
    let mut out = Vec::new();
    if inner.trim().is_empty() {
        return Ok(out);
    }
    let mut chars = inner.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| pg_space(*c)) {
            chars.next();
        }
        let mut value = String::new();
        let mut quoted = false;
        let mut escaped_any = false;
        if chars.peek() == Some(&'"') {
            quoted = true;
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => value.push(chars.next().ok_or("unterminated escape")?),
                    Some('"') => break,
                    Some(c) => value.push(c),
                    None => return Err("unterminated quoted element".into()),
                }
            }
            while chars.peek().is_some_and(|c| pg_space(*c)) {
                chars.next();
            }
        } else {
            // Trailing whitespace is dropped, except what was escaped: the element ends at
            // its last character that is not unescaped whitespace.
            let mut keep = 0;
            while let Some(&c) = chars.peek() {
                match c {
                    ',' => break,
                    '{' | '}' | '"' => {
                        return Err(
                            "multi-dimensional or malformed arrays are not supported here".into(),
                        )
                    }
                    '\\' => {
                        chars.next();
                        value.push(chars.next().ok_or("unterminated escape")?);
                        escaped_any = true;
                        keep = value.len();
                    }
                    _ => {
                        value.push(c);
                        chars.next();
                        if !pg_space(c) {
                            keep = value.len();
                        }
                    }
                }
            }
            value.truncate(keep);
        }
        if !quoted && !escaped_any && value.eq_ignore_ascii_case("null") {
            out.push(None);
        } else if !quoted && value.is_empty() {
            return Err("empty array element".into());
        } else {
            out.push(Some(value));
        }
        match chars.next() {
            Some(',') => continue,
            None => return Ok(out),
            Some(c) => return Err(format!("unexpected {c:?} after an array element")),
        }
    }
}

/// The elements of a binary-format array as text (`None`: NULL), read through their type
/// (text elements in the client encoding `enc`).
pub fn parse_binary(v: &[u8], enc: ClientEncoding) -> Result<Vec<Option<String>>, String> {
    let mut r = Reader { v, at: 0 };
    let ndim = r.i32()?;
    let _flags = r.i32()?;
    let elem = r.i32()? as u32;
    if ndim == 0 {
        return Ok(Vec::new());
    }
    if ndim != 1 {
        return Err("multi-dimensional arrays are not supported here".into());
    }
    let n = r.i32()?;
    let _lower = r.i32()?;
    if n < 0 {
        return Err("negative array length".into());
    }
    let mut out = Vec::with_capacity(n.min(4096) as usize);
    for _ in 0..n {
        let len = r.i32()?;
        if len < 0 {
            out.push(None);
            continue;
        }
        let bytes = r.take(len as usize)?;
        let mut text = String::new();
        binary::to_text(elem, bytes, enc, &mut text)?;
        out.push(Some(text));
    }
    if r.at != v.len() {
        return Err("trailing bytes after the array".into());
    }
    Ok(out)
}

struct Reader<'a> {
    v: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.v.len());
        let end = end.ok_or("truncated binary array")?;
        let s = &self.v[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn i32(&mut self) -> Result<i32, String> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// Append one element to a text-format array being written (quoted: envelopes and any text).
pub fn push_element(out: &mut String, value: Option<&str>) {
    if out.len() > 1 {
        out.push(',');
    }
    match value {
        None => out.push_str("NULL"),
        Some(v) => {
            out.push('"');
            for c in v.chars() {
                if c == '"' || c == '\\' {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('"');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn some(v: &[&str]) -> Vec<Option<String>> {
        v.iter().map(|s| Some(s.to_string())).collect()
    }

    #[test]
    fn text_arrays_read_as_postgres_writes_them() {
        assert_eq!(parse_text("{}").unwrap(), Vec::<Option<String>>::new());
        assert_eq!(parse_text("{a,b}").unwrap(), some(&["a", "b"]));
        assert_eq!(parse_text(" { a , b } ").unwrap(), some(&["a", "b"]));
        assert_eq!(
            parse_text(r#"{"a b","c,d","e\"f","g\\h"}"#).unwrap(),
            some(&["a b", "c,d", "e\"f", "g\\h"])
        );
        assert_eq!(
            parse_text(r#"{NULL,"NULL",null}"#).unwrap(),
            vec![None, Some("NULL".into()), None]
        );
        assert_eq!(parse_text(r"{a\,b}").unwrap(), some(&["a,b"]));
        // array_in's whitespace: a vertical tab is space; trailing space after an escape is
        // dropped, an escaped space kept; a no-break space is no whitespace.
        assert_eq!(parse_text("{\x0ba\x0b}").unwrap(), some(&["a"]));
        assert_eq!(parse_text(r"{\a  }").unwrap(), some(&["a"]));
        assert_eq!(parse_text(r"{a\ }").unwrap(), some(&["a "]));
        assert!(parse_text("\u{a0}{a}").is_err());
        for bad in ["{{a},{b}}", "[1:2]={a,b}", "{a,}", "a,b", "{\"a}", "{a\"b}"] {
            assert!(parse_text(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn binary_arrays_read_through_their_element_type() {
        // int4[] {1, NULL, 3}
        let mut v = Vec::new();
        for x in [1i32, 1, 23, 3, 1] {
            v.extend_from_slice(&x.to_be_bytes());
        }
        v.extend_from_slice(&4i32.to_be_bytes());
        v.extend_from_slice(&1i32.to_be_bytes());
        v.extend_from_slice(&(-1i32).to_be_bytes());
        v.extend_from_slice(&4i32.to_be_bytes());
        v.extend_from_slice(&3i32.to_be_bytes());
        assert_eq!(
            parse_binary(&v, ClientEncoding::Utf8).unwrap(),
            vec![Some("1".into()), None, Some("3".into())]
        );
        assert!(parse_binary(&v[..v.len() - 1], ClientEncoding::Utf8).is_err());
        // An empty array has no dimensions.
        let empty: Vec<u8> = [0i32, 0, 25].iter().flat_map(|x| x.to_be_bytes()).collect();
        assert!(parse_binary(&empty, ClientEncoding::Utf8)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn written_arrays_read_back() {
        let mut out = String::from("{");
        for v in [Some("pgv1:a"), None, Some("x\"y\\z")] {
            push_element(&mut out, v);
        }
        out.push('}');
        assert_eq!(
            parse_text(&out).unwrap(),
            vec![Some("pgv1:a".into()), None, Some("x\"y\\z".into())]
        );
    }
}
