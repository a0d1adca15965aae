//! A YAML document as a tree of nodes that remember their line and column.
//!
//! Parsing into this tree first (instead of straight into typed structs) lets the loader report
//! every problem at once, each at its own position, and see duplicate keys, which YAML forbids
//! but many parsers silently collapse.
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

#[derive(Debug, Clone)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

/// A value with the 1-based line and column where it starts.
#[derive(Debug, Clone)]
pub struct Node {
    pub value: Value,
    pub line: u64,
    pub col: u64,
}

impl Node {
    pub fn type_name(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The key as written, for messages (scalars only).
    pub fn key_text(&self) -> String {
        match &self.value {
            Value::Str(s) => s.clone(),
            Value::Int(i) => i.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Null => "~".to_string(),
            Value::Seq(_) | Value::Map(_) => "<complex key>".to_string(),
        }
    }
}

struct Raw(Value);

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<Raw, E> {
        Ok(Raw(Value::Null))
    }
    fn visit_none<E>(self) -> Result<Raw, E> {
        Ok(Raw(Value::Null))
    }
    fn visit_bool<E>(self, v: bool) -> Result<Raw, E> {
        Ok(Raw(Value::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Raw, E> {
        Ok(Raw(Value::Int(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Raw, E> {
        Ok(Raw(i64::try_from(v)
            .map(Value::Int)
            .unwrap_or(Value::Float(v as f64))))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Raw, E> {
        Ok(Raw(Value::Float(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Raw, E> {
        Ok(Raw(Value::Str(v.to_string())))
    }
    fn visit_string<E>(self, v: String) -> Result<Raw, E> {
        Ok(Raw(Value::Str(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Raw, A::Error> {
        let mut v = Vec::new();
        while let Some(x) = a.next_element::<Spanned<Raw>>()? {
            v.push(node(x));
        }
        Ok(Raw(Value::Seq(v)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Raw, A::Error> {
        let mut v = Vec::new();
        while let Some((k, x)) = a.next_entry::<Spanned<Raw>, Spanned<Raw>>()? {
            v.push((node(k), node(x)));
        }
        Ok(Raw(Value::Map(v)))
    }
}

fn node(s: Spanned<Raw>) -> Node {
    Node {
        value: s.value.0,
        line: s.referenced.line(),
        col: s.referenced.column(),
    }
}

/// A YAML syntax error with its position.
#[derive(Debug, Clone)]
pub struct SyntaxError {
    pub line: u64,
    pub col: u64,
    pub message: String,
}

/// Parses one YAML document into a node tree.
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    let mut options = serde_saphyr::Options::default();
    options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::PassThrough;
    match serde_saphyr::from_str_with_options::<Spanned<Raw>>(text, options) {
        Ok(s) => Ok(node(s)),
        Err(e) => {
            let (line, col) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((1, 1));
            Err(SyntaxError {
                line: line.max(1),
                col: col.max(1),
                message: clean_message(&e),
            })
        }
    }
}

/// The parser's message without its own position prefix and source snippet.
fn clean_message(e: &serde_saphyr::Error) -> String {
    let full = e.without_snippet().to_string();
    let first = full.lines().next().unwrap_or("").trim();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    // Drop a leading "line N column M: " that repeats the position.
    let rest = match first.strip_prefix("line ") {
        Some(r) => match r.find(": ") {
            Some(i) if r[..i].contains("column") => &r[i + 2..],
            _ => first,
        },
        None => first,
    };
    format!("YAML syntax error: {rest}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_and_duplicates() {
        let n = parse("a: 1\nb:\n  c: x\n  c: y\n").expect("parses");
        let Value::Map(m) = &n.value else {
            panic!("map")
        };
        assert_eq!(m.len(), 2);
        let Value::Map(inner) = &m[1].1.value else {
            panic!("inner map")
        };
        assert_eq!(inner.len(), 2, "duplicates are kept");
        assert_eq!((inner[1].0.line, inner[1].0.col), (4, 3));
    }

    #[test]
    fn syntax_error_position() {
        let e = parse("a: [1, 2\nb: {").expect_err("bad yaml");
        assert_eq!((e.line, e.col), (2, 2));
        assert!(
            e.message.starts_with("YAML syntax error: "),
            "{}",
            e.message
        );
        assert!(!e.message.contains('\n'));
    }
}
