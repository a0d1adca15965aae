//! Relations declared in a schema file (CREATE TABLE statements), for `pgveil policy explain
//! --schema` when no database is at hand.
use sqlparser::ast::{ObjectNamePart, Statement};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

/// A table from a schema file: schema (default `public`), name, columns in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredTable {
    pub schema: String,
    pub name: String,
    pub columns: Vec<String>,
}

/// The CREATE TABLE statements of a SQL file; other statements are skipped.
pub fn tables(sql: &str) -> Result<Vec<DeclaredTable>, String> {
    let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).map_err(|e| e.to_string())?;
    let fold = |i: &sqlparser::ast::Ident| {
        if i.quote_style.is_some() {
            i.value.clone()
        } else {
            i.value.to_ascii_lowercase()
        }
    };
    Ok(statements
        .iter()
        .filter_map(|s| match s {
            Statement::CreateTable(t) => {
                let parts: Vec<String> = t
                    .name
                    .0
                    .iter()
                    .filter_map(|p| match p {
                        ObjectNamePart::Identifier(i) => Some(fold(i)),
                        _ => None,
                    })
                    .collect();
                let (schema, name) = match parts.as_slice() {
                    [n] => ("public".to_string(), n.clone()),
                    [.., s, n] => (s.clone(), n.clone()),
                    [] => return None,
                };
                Some(DeclaredTable {
                    schema,
                    name,
                    columns: t.columns.iter().map(|c| fold(&c.name)).collect(),
                })
            }
            _ => None,
        })
        .collect())
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
}
