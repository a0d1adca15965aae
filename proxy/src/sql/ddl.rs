//! Relations declared in a schema file, for `pgveil policy explain --schema` and `pgveil policy
//! check --schema` when no database is at hand: a hand-written file of CREATE TABLE statements,
//! or the output of `pg_dump -s` as it is.
//!
//! What is read: CREATE TABLE (with INHERITS and PARTITION OF), CREATE [MATERIALIZED] VIEW and
//! `ALTER TABLE ... ATTACH PARTITION`. What is skipped: psql meta-commands (`\restrict`,
//! `\unrestrict`, `\connect`, ...: a backslash where a statement would start, to the end of its
//! line) and every other statement (SET, `SELECT pg_catalog.set_config(...)`, CREATE DATABASE,
//! SEQUENCE, FUNCTION or INDEX, `ALTER ... OWNER TO`, COMMENT ON, GRANT, ...), which are never
//! parsed. A statement that should be read but cannot be is reported in
//! [`Declared::skipped`] with its line, and the rest of the file is still read.
use std::ops::ControlFlow;

use sqlparser::ast::{
    visit_relations, Expr, ObjectName, ObjectNamePart, Query, SelectItem, SetExpr, Statement,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

/// A table or view from a schema file: schema (default `public`), name, columns in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredTable {
    pub schema: String,
    pub name: String,
    pub columns: Vec<String>,
    /// For a view: its query and the relations it reads.
    pub view: Option<DeclaredView>,
    /// Parents of an inheritance child or partition, as (schema, name).
    pub parents: Vec<(String, String)>,
}

/// The definition of a view, as read from its CREATE VIEW statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredView {
    /// The view's query, as SQL text.
    pub definition: String,
    /// Every relation its query names, as (schema, name).
    pub reads: Vec<(String, String)>,
}

/// What a schema file declares.
#[derive(Debug, Default)]
pub struct Declared {
    pub relations: Vec<DeclaredTable>,
    /// Statements that should have been read but could not be: `line N: what and why`.
    pub skipped: Vec<String>,
}

/// The tables and views of a SQL file; an error names the first statement that should have
/// been read but could not be.
pub fn tables(sql: &str) -> Result<Vec<DeclaredTable>, String> {
    let d = read(sql);
    match d.skipped.into_iter().next() {
        Some(s) => Err(s),
        None => Ok(d.relations),
    }
}

/// Read a SQL file: see the module documentation.
pub fn read(sql: &str) -> Declared {
    let mut d = Declared::default();
    let mut attach: Vec<((String, String), (String, String))> = Vec::new();
    for (line, text) in statements(sql) {
        let words = head(text, 10);
        let w: Vec<&str> = words.iter().map(String::as_str).collect();
        if let ["alter", "table", rest @ ..] = w.as_slice() {
            if let Some(pair) = attached(rest) {
                attach.push(pair);
            }
            continue;
        }
        let Some(kind) = created(&w) else { continue };
        match parse_one(without_data_clause(text)) {
            Ok(s) => match declared(&s) {
                Some(t) => d.relations.push(t),
                None => d
                    .skipped
                    .push(format!("line {line}: cannot read this CREATE {kind}")),
            },
            Err(e) => d
                .skipped
                .push(format!("line {line}: CREATE {kind} skipped: {e}")),
        }
    }
    for (parent, child) in attach {
        if let Some(t) = d
            .relations
            .iter_mut()
            .find(|t| (t.schema.as_str(), t.name.as_str()) == (&child.0, &child.1))
        {
            t.parents.push(parent);
        }
    }
    d
}

fn parse_one(text: &str) -> Result<Statement, String> {
    let mut s = Parser::parse_sql(&PostgreSqlDialect {}, text).map_err(|e| e.to_string())?;
    match (s.pop(), s.is_empty()) {
        (Some(st), true) => Ok(st),
        _ => Err("not a single statement".into()),
    }
}

/// A materialized view's `WITH [NO] DATA` (pg_dump writes it), which the parser does not take
/// and the columns do not depend on.
fn without_data_clause(text: &str) -> &str {
    let t = text.trim_end();
    let lower = t.to_ascii_lowercase();
    for clause in ["with no data", "with data"] {
        if let Some(rest) = lower.strip_suffix(clause) {
            if rest.ends_with(char::is_whitespace) {
                return &t[..rest.len()];
            }
        }
    }
    t
}

/// `TABLE`, `VIEW` or `FOREIGN TABLE` for the CREATE statements that are read.
fn created(w: &[&str]) -> Option<&'static str> {
    let ["create", rest @ ..] = w else {
        return None;
    };
    let modifiers = [
        "or",
        "replace",
        "global",
        "local",
        "temp",
        "temporary",
        "unlogged",
        "recursive",
        "materialized",
    ];
    match rest.iter().find(|x| !modifiers.contains(x)).copied() {
        Some("table") => Some("TABLE"),
        Some("view") => Some("VIEW"),
        Some("foreign") => Some("FOREIGN TABLE"),
        _ => None,
    }
}

/// `ONLY parent ATTACH PARTITION child ...` (after `ALTER TABLE`): (parent, child).
fn attached(rest: &[&str]) -> Option<((String, String), (String, String))> {
    let rest = match rest {
        ["if", "exists", r @ ..] => r,
        r => r,
    };
    let rest = rest.strip_prefix(&["only"]).unwrap_or(rest);
    match rest {
        [parent, "attach", "partition", child, ..] => Some((split(parent), split(child))),
        _ => None,
    }
}

/// `schema.name` (as [`head`] writes it) to (schema, name); `public` when unqualified.
fn split(q: &str) -> (String, String) {
    match q.rsplit_once('\u{1}') {
        Some((s, n)) => (s.to_string(), n.to_string()),
        None => ("public".to_string(), q.to_string()),
    }
}

fn fold(i: &sqlparser::ast::Ident) -> String {
    if i.quote_style.is_some() {
        i.value.clone()
    } else {
        i.value.to_ascii_lowercase()
    }
}

fn qualified(name: &ObjectName) -> Option<(String, String)> {
    let parts: Vec<String> = name
        .0
        .iter()
        .filter_map(|p| match p {
            ObjectNamePart::Identifier(i) => Some(fold(i)),
            _ => None,
        })
        .collect();
    match parts.as_slice() {
        [n] => Some(("public".to_string(), n.clone())),
        [.., s, n] => Some((s.clone(), n.clone())),
        [] => None,
    }
}

fn declared(s: &Statement) -> Option<DeclaredTable> {
    match s {
        Statement::CreateTable(t) => {
            let (schema, name) = qualified(&t.name)?;
            let parents = t
                .inherits
                .iter()
                .flatten()
                .chain(t.partition_of.iter())
                .filter_map(qualified)
                .collect();
            Some(DeclaredTable {
                schema,
                name,
                columns: t.columns.iter().map(|c| fold(&c.name)).collect(),
                view: None,
                parents,
            })
        }
        Statement::CreateView(v) => {
            let (schema, name) = qualified(&v.name)?;
            let columns = if v.columns.is_empty() {
                output_names(&v.query)
            } else {
                v.columns.iter().map(|c| fold(&c.name)).collect()
            };
            let mut reads = Vec::new();
            let _ = visit_relations(&v.query, |n| {
                if let Some(q) = qualified(n) {
                    if !reads.contains(&q) {
                        reads.push(q);
                    }
                }
                ControlFlow::<()>::Continue(())
            });
            Some(DeclaredTable {
                schema,
                name,
                columns,
                view: Some(DeclaredView {
                    definition: v.query.to_string(),
                    reads,
                }),
                parents: Vec::new(),
            })
        }
        _ => None,
    }
}

/// The names PostgreSQL gives a query's output columns, as far as the text says them (`*` is
/// not expanded: the view then has fewer columns than its query, and is judged as a whole).
fn output_names(q: &Query) -> Vec<String> {
    let mut body = q.body.as_ref();
    while let SetExpr::SetOperation { left, .. } = body {
        body = left;
    }
    let SetExpr::Select(sel) = body else {
        return Vec::new();
    };
    sel.projection
        .iter()
        .filter_map(|item| match item {
            SelectItem::ExprWithAlias { alias, .. } => Some(fold(alias)),
            SelectItem::UnnamedExpr(Expr::Identifier(i)) => Some(fold(i)),
            SelectItem::UnnamedExpr(Expr::CompoundIdentifier(p)) => p.last().map(fold),
            SelectItem::UnnamedExpr(Expr::Function(f)) => {
                f.name.0.last().and_then(|p| p.as_ident()).map(fold)
            }
            SelectItem::UnnamedExpr(_) => Some("?column?".to_string()),
            _ => None,
        })
        .collect()
}

/// The statements of a SQL file, each with the line it starts on, without their `;`. A
/// backslash where a statement would start begins a psql meta-command: the rest of its line
/// is skipped. Quotes, quoted identifiers, dollar quotes and comments are stepped over whole.
fn statements(sql: &str) -> Vec<(usize, &str)> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    let mut start: Option<(usize, usize)> = None;
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        let from = i;
        if c == b'-' && next == Some(b'-') || c == b'\\' && start.is_none() {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'/' && next == Some(b'*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i..].starts_with(b"/*") {
                    depth += 1;
                    i += 2;
                } else if b[i..].starts_with(b"*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == b';' {
            if let Some((s, l)) = start.take() {
                out.push((l, &sql[s..i]));
            }
            i += 1;
        } else if c.is_ascii_whitespace() {
            i += 1;
        } else {
            if start.is_none() {
                start = Some((i, line));
            }
            i += 1;
            if c == b'\'' || c == b'"' {
                let backslash = c == b'\''
                    && from > 0
                    && matches!(b[from - 1], b'e' | b'E')
                    && (from < 2 || !ident(b[from - 2]));
                while i < b.len() {
                    let doubled = b[i] == c && b.get(i + 1) == Some(&c);
                    if doubled || backslash && b[i] == b'\\' {
                        i += 2;
                    } else if b[i] == c {
                        i += 1;
                        break;
                    } else {
                        i += 1;
                    }
                }
            } else if c == b'$' && (from == 0 || !ident(b[from - 1])) {
                // `$tag$ ... $tag$` (`$$` too); `$1` is a parameter.
                let mut j = i;
                while j < b.len() && ident(b[j]) {
                    j += 1;
                }
                if b.get(j) == Some(&b'$') && (j == i || !b[i].is_ascii_digit()) {
                    let tag = &b[from..=j];
                    i = b[j + 1..]
                        .windows(tag.len())
                        .position(|w| w == tag)
                        .map_or(b.len(), |p| j + 1 + p + tag.len());
                }
            }
        }
        line += b[from..i.min(b.len())]
            .iter()
            .filter(|&&x| x == b'\n')
            .count();
    }
    if let Some((s, l)) = start {
        out.push((l, &sql[s..]));
    }
    out
}

/// The first `n` words of a statement, lower-cased unless quoted; a qualified name is one
/// word with its parts joined by U+0001.
fn head(text: &str, n: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut chars = text.chars().peekable();
    let mut joined = false;
    while out.len() < n || joined {
        let Some(c) = chars.next() else { break };
        let word = if c == '"' {
            let mut w = String::new();
            while let Some(x) = chars.next() {
                if x == '"' && chars.peek() != Some(&'"') {
                    break;
                } else if x == '"' {
                    chars.next();
                }
                w.push(x);
            }
            w
        } else if c.is_alphanumeric() || c == '_' {
            let mut w = c.to_lowercase().to_string();
            while let Some(&x) = chars.peek() {
                if !(x.is_alphanumeric() || x == '_' || x == '$') {
                    break;
                }
                w.extend(x.to_lowercase());
                chars.next();
            }
            w
        } else {
            if c == '.' && !out.is_empty() {
                joined = true;
            } else if !c.is_whitespace() {
                break;
            }
            continue;
        };
        match out.last_mut() {
            Some(last) if joined => {
                last.push('\u{1}');
                last.push_str(&word);
            }
            _ => out.push(word),
        }
        joined = false;
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_create_table_statements() {
        let t = super::tables(
            "CREATE TABLE IF NOT EXISTS public.customers (id bigserial PRIMARY KEY, name text);\n\
             CREATE INDEX x ON customers (name);\nCREATE TABLE orders (id int, \"Note\" text);",
        )
        .unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].name, "customers");
        assert_eq!(t[0].columns, vec!["id", "name"]);
        assert_eq!(t[1].schema, "public");
        assert_eq!(t[1].columns, vec!["id", "Note"]);
    }

    /// A real `pg_dump -s -C` of PostgreSQL 15.18: `\restrict`, `\connect`, CREATE DATABASE,
    /// sequences, a function with a `;` in its body, comments, a partition, a view and a
    /// materialized view.
    #[test]
    fn reads_a_pg_dump() {
        let d = super::read(include_str!("../../tests/data/pg15_dump_schema.sql"));
        assert!(d.skipped.is_empty(), "{:?}", d.skipped);
        let names: Vec<String> = d
            .relations
            .iter()
            .map(|t| format!("{}.{}", t.schema, t.name))
            .collect();
        assert_eq!(
            names,
            [
                "crm.Contacts",
                "public.customers",
                "public.customer_contacts",
                "public.events",
                "public.events_2024",
                "public.shipments",
                "public.shipment_counts",
                "public.waybills"
            ]
        );
        assert_eq!(d.relations[0].columns, ["id", "Note", "phone"]);
        let view = &d.relations[2];
        assert_eq!(view.columns, ["id", "name", "mobile", "email_upper"]);
        let def = view.view.as_ref().unwrap();
        assert_eq!(def.reads, [("public".into(), "customers".into())]);
        assert_eq!(d.relations[6].columns, ["customer_id", "n"]);
        assert_eq!(
            d.relations[4].parents,
            [("public".to_string(), "events".to_string())]
        );
    }

    #[test]
    fn splits_statements_around_quotes_comments_and_meta_commands() {
        let sql = "\\restrict abc\nSET a = 'x;y';\n-- c;\n/* d; /* e; */ */ CREATE FUNCTION f() AS $b$ ; $b$;\n\
                   SELECT E'\\';', \"q;\", $1;\n\\unrestrict abc\n";
        let s = super::statements(sql);
        let texts: Vec<&str> = s.iter().map(|(_, t)| *t).collect();
        assert_eq!(
            texts,
            [
                "SET a = 'x;y'",
                "CREATE FUNCTION f() AS $b$ ; $b$",
                "SELECT E'\\';', \"q;\", $1"
            ]
        );
        assert_eq!(s.iter().map(|(l, _)| *l).collect::<Vec<_>>(), [2, 4, 5]);
        let d = super::read("CREATE VIEW v AS SELECT 1 +;\nCREATE TABLE t (a int);");
        assert_eq!(d.relations.len(), 1);
        assert!(
            d.skipped[0].starts_with("line 1: CREATE VIEW skipped: "),
            "{:?}",
            d.skipped
        );
    }
}
