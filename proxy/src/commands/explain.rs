//! `pgveil policy explain --sql`: what a login would get for a statement: each output
//! column's decision, each protected column's use, or the exact error.
use std::fmt::Write as _;
use std::path::Path;
use std::str::FromStr;

use anyhow::Context as _;
use pgveil_policy::{CompiledPolicy, Transform};

use crate::catalog::snapshot::{Dependency, RawCatalog, RelKind};
use crate::catalog::Snapshot;
use crate::sql::{self, Env, Src};

/// Where the catalog comes from.
pub enum CatalogFrom<'a> {
    Schema(&'a Path),
    Dsn(&'a str),
    /// Only the policy's own columns (no `*` expansion).
    Policy,
}

/// Read the catalog of the database a connection string names.
pub fn catalog_from_dsn(dsn: &str) -> anyhow::Result<RawCatalog> {
    let cfg = tokio_postgres::Config::from_str(dsn).context("--dsn")?;
    let db = cfg
        .get_dbname()
        .or(cfg.get_user())
        .unwrap_or("postgres")
        .to_string();
    let login = cfg.get_user().unwrap_or("postgres").to_string();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(rt.block_on(crate::catalog::load::load_with(cfg, &db, &login))?)
}

/// What `explain --sql` found: the text to print, and whether the login would get an error.
pub struct Explained {
    pub text: String,
    pub refused: bool,
}

/// Read the tables and views a schema file declares (`pg_dump -s` output as it is); the
/// statements it should read but cannot are named on stderr. A view is taken to depend on
/// every column of the relations its query names (the database's `pg_depend` is exact).
pub fn catalog_from_schema(path: &Path) -> anyhow::Result<RawCatalog> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read schema file", path.display()))?;
    let declared = sql::ddl::read(&text);
    for s in &declared.skipped {
        eprintln!("{}: {s}", path.display());
    }
    let rels = &declared.relations;
    let mut raw = RawCatalog::from_tables(
        rels.iter()
            .map(|t| (t.schema.clone(), t.name.clone(), t.columns.clone())),
    );
    let oids: Vec<u32> = raw.relations.iter().map(|r| r.oid).collect();
    let oid = |i: usize| oids.get(i).copied().unwrap_or(0);
    let find = |(schema, name): &(String, String)| {
        rels.iter()
            .position(|t| &t.schema == schema && &t.name == name)
            .map(oid)
    };
    for (i, t) in rels.iter().enumerate() {
        raw.inherits
            .extend(t.parents.iter().filter_map(find).map(|p| (oid(i), p)));
        let Some(view) = &t.view else { continue };
        if let Some(r) = raw.relations.get_mut(i) {
            r.kind = RelKind::View;
        }
        raw.view_definitions.push((oid(i), view.definition.clone()));
        raw.dependencies
            .extend(view.reads.iter().filter_map(find).map(|on| Dependency {
                from: oid(i),
                on,
                attnum: 0,
            }));
    }
    Ok(raw)
}

pub fn explain_sql(
    p: &CompiledPolicy,
    user: &str,
    member_of: &[String],
    sql_text: &str,
    from: CatalogFrom<'_>,
) -> anyhow::Result<Explained> {
    let mut out = String::new();
    let raw = match from {
        CatalogFrom::Schema(path) => catalog_from_schema(path)?,
        CatalogFrom::Dsn(dsn) => catalog_from_dsn(dsn)?,
        CatalogFrom::Policy => {
            let _ = writeln!(
                out,
                "note: no --schema or --dsn: only the policy's columns are known, so * cannot be expanded"
            );
            let mut tables: Vec<(String, String, Vec<String>)> = Vec::new();
            for c in &p.policy().columns {
                let (s, t) = c.table.split_once('.').unwrap_or(("public", &c.table));
                match tables.iter_mut().find(|x| x.0 == s && x.1 == t) {
                    Some(x) => x.2.push(c.column.clone()),
                    None => tables.push((s.into(), t.into(), vec![c.column.clone()])),
                }
            }
            RawCatalog::from_tables(tables)
        }
    };
    let snapshot = Snapshot::build(raw, p);
    let mut groups: Vec<String> = member_of.to_vec();
    groups.extend(snapshot.member_of(user).iter().cloned());
    let roles = p.resolve_roles(user, &groups);
    let names = p.role_names(&roles);
    let _ = writeln!(
        out,
        "login {user}: {}",
        if names.is_empty() {
            "no policy role (roles: [\"*\"] rules and defaults apply)".to_string()
        } else {
            format!("policy roles {}", names.join(", "))
        }
    );
    let scanner = sql::Scanner::new(p, &snapshot);
    if !scanner.needs_analysis(sql_text.as_bytes()) {
        let _ = writeln!(
            out,
            "fast path: the statement names no protected table, column, view or function; forwarded untouched"
        );
        return Ok(Explained {
            text: out,
            refused: false,
        });
    }
    let env = Env {
        policy: p,
        snapshot: &snapshot,
        roles: &roles,
    };
    let refused = match sql::analyze(sql_text, &env) {
        Err(r) => {
            let _ = writeln!(out, "refused: ERROR {}: {}", r.sqlstate, r.message);
            if let Some(h) = &r.hint {
                let _ = writeln!(out, "HINT: {h}");
            }
            true
        }
        Ok(a) => {
            for (n, s) in a.statements.iter().enumerate() {
                let _ = writeln!(out, "statement {}:", n + 1);
                if s.outputs.is_empty() {
                    let _ = writeln!(out, "  no result columns");
                }
                for (i, src) in s.outputs.iter().enumerate() {
                    let what = match src {
                        Src::Pass => "not protected: passed untouched".to_string(),
                        Src::Opaque => "columns pgveil does not know (passed untouched)".into(),
                        Src::Col(c) => {
                            let d = p.decide(&roles, *c);
                            let col = p.column(*c);
                            let t = match d.transform {
                                Transform::Plain if col.encrypt.name() != "none" => {
                                    "decrypted, plaintext".to_string()
                                }
                                Transform::Plain => "plaintext".into(),
                                Transform::Null => "NULL".into(),
                                Transform::Mask(m) => format!("{m}"),
                                Transform::Deny => "refused".into(),
                            };
                            format!(
                                "{}: {} -> {t} ({})",
                                col.qualified(),
                                d.action,
                                p.describe_source(d.source, col)
                            )
                        }
                    };
                    let _ = writeln!(out, "  column {}: {what}", i + 1);
                }
                for (c, u) in &s.touched {
                    let _ = writeln!(out, "  uses {}: {u}", p.column(*c).qualified());
                }
            }
            let _ = writeln!(out, "allowed");
            false
        }
    };
    Ok(Explained { text: out, refused })
}
