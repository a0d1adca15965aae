//! `pgveil policy ...`: check, matrix, schema, explain.
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use pgveil_policy::compile::Source;
use pgveil_policy::{Action, CompiledPolicy, Decision, Transform};

use crate::output::{out, outln};

/// Work with a policy file.
#[derive(Debug, clap::Args)]
pub struct PolicyArgs {
    #[command(subcommand)]
    pub command: PolicyCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum PolicyCommand {
    /// Validate policy files; print every problem as FILE:LINE:COL: message. Exit 1 on errors.
    Check {
        /// Policy files to check.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Output format: text (diagnostics on stderr) or json (one document on stdout).
        #[arg(long, value_enum, default_value_t = CheckFormat::Text)]
        format: CheckFormat,
        /// Also check the policy against a database's catalog (libpq connection string): every
        /// policy column whose table exists must exist in it (exit 1 otherwise: pgveil refuses
        /// statements on such tables).
        #[arg(long)]
        dsn: Option<String>,
        /// The same check against a schema file instead of a database: its CREATE TABLE and
        /// CREATE VIEW statements (`pg_dump -s` output as it is).
        #[arg(long, conflicts_with = "dsn")]
        schema: Option<PathBuf>,
    },
    /// Print the role x column table of actions, for permission reviews.
    Matrix {
        file: PathBuf,
        #[arg(long, value_enum, default_value_t = MatrixFormat::Table)]
        format: MatrixFormat,
    },
    /// Print the JSON Schema of the policy file.
    Schema,
    /// Show what a login gets for every classified column, or (with --sql) for one statement;
    /// exit 1 when the login would get an error for the statement.
    Explain {
        /// The policy file.
        #[arg(long)]
        policy: PathBuf,
        /// The Postgres login name.
        #[arg(long)]
        user: String,
        /// A Postgres role the login is a member of (repeatable).
        #[arg(long = "member-of", value_name = "ROLE")]
        member_of: Vec<String>,
        /// A statement: print each output column's decision, each protected column's use,
        /// or the exact error the login would get.
        #[arg(long)]
        sql: Option<String>,
        /// With --sql: a schema file to read the tables and views from (its CREATE TABLE and
        /// CREATE VIEW statements; `pg_dump -s` output as it is).
        #[arg(long, requires = "sql", conflicts_with = "dsn")]
        schema: Option<PathBuf>,
        /// With --sql: read the catalog (columns, views, functions, role memberships) from a database.
        #[arg(long, requires = "sql")]
        dsn: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CheckFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MatrixFormat {
    Table,
    Csv,
    Html,
}

pub fn run(args: PolicyArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        PolicyCommand::Check {
            files,
            format,
            dsn,
            schema,
        } => {
            let catalog = match (&dsn, &schema) {
                (Some(d), _) => Some(super::explain::catalog_from_dsn(d)?),
                (None, Some(s)) => Some(super::explain::catalog_from_schema(s)?),
                (None, None) => None,
            };
            Ok(check(&files, format, catalog.as_ref()))
        }
        PolicyCommand::Matrix { file, format } => {
            let Some(p) = load_or_report(&file) else {
                return Ok(ExitCode::from(1));
            };
            out!("{}", matrix(&p, format));
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Schema => {
            let s = serde_json::to_string_pretty(&pgveil_policy::schema::json_schema())
                .context("serialising the schema")?;
            outln!("{s}");
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Explain {
            policy,
            user,
            member_of,
            sql,
            schema,
            dsn,
        } => {
            let Some(p) = load_or_report(&policy) else {
                return Ok(ExitCode::from(1));
            };
            match sql {
                None => out!("{}", explain(&p, &user, &member_of)),
                Some(sql) => {
                    use super::explain::{explain_sql, CatalogFrom};
                    let from = match (&schema, &dsn) {
                        (Some(s), _) => CatalogFrom::Schema(s),
                        (None, Some(d)) => CatalogFrom::Dsn(d),
                        (None, None) => CatalogFrom::Policy,
                    };
                    let e = explain_sql(&p, &user, &member_of, &sql, from)?;
                    out!("{}", e.text);
                    if e.refused {
                        return Ok(ExitCode::from(1));
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn load_or_report(file: &std::path::Path) -> Option<Arc<CompiledPolicy>> {
    match CompiledPolicy::from_path(file) {
        Ok(p) => Some(p),
        Err(d) => {
            eprintln!("{d}");
            eprintln!(
                "{}: {} error(s); fix them first (pgveil policy check)",
                file.display(),
                d.items.len()
            );
            None
        }
    }
}

fn check(
    files: &[PathBuf],
    format: CheckFormat,
    catalog: Option<&crate::catalog::RawCatalog>,
) -> ExitCode {
    let mut failed = false;
    let mut reports = Vec::new();
    for f in files {
        let result = CompiledPolicy::from_path(f);
        failed |= result.is_err();
        let mismatches = match (&result, catalog) {
            (Ok(p), Some(raw)) => {
                crate::catalog::Snapshot::build(raw.clone(), p).policy_mismatches()
            }
            _ => Vec::new(),
        };
        failed |= !mismatches.is_empty();
        if format == CheckFormat::Text {
            for (table, cols) in &mismatches {
                eprintln!(
                    "{}: table {table} has no column {} (renamed or dropped): pgveil refuses every statement on {table} until the policy or the table is fixed",
                    f.display(),
                    cols.join(", ")
                );
            }
        }
        match format {
            CheckFormat::Text => match &result {
                Ok(p) => {
                    let pol = p.policy();
                    for w in pol.warnings() {
                        eprintln!(
                            "{}:{}:{}: warning: {}",
                            f.display(),
                            w.pos.line,
                            w.pos.col,
                            w.message
                        );
                    }
                    outln!(
                        "{}: ok ({} columns in {} tables, {} roles, {} rules; version {})",
                        f.display(),
                        pol.columns.len(),
                        count_tables(p),
                        pol.roles.len(),
                        pol.rules.len(),
                        p.version()
                    );
                }
                Err(d) => {
                    eprintln!("{d}");
                    eprintln!("{}: {} error(s)", f.display(), d.items.len());
                }
            },
            CheckFormat::Json => {
                let (ok, version, diags) = match &result {
                    Ok(p) => (
                        true,
                        Some(p.version().to_string()),
                        p.policy()
                            .warnings()
                            .iter()
                            .map(|w| {
                                serde_json::json!({
                                    "line": w.pos.line, "column": w.pos.col, "severity": "warning",
                                    "message": w.message, "hint": null,
                                })
                            })
                            .collect::<Vec<_>>(),
                    ),
                    Err(d) => (
                        false,
                        None,
                        d.items
                            .iter()
                            .map(|i| {
                                serde_json::json!({
                                    "line": i.line, "column": i.col, "severity": "error",
                                    "message": i.message, "hint": i.hint,
                                })
                            })
                            .collect(),
                    ),
                };
                let mismatches: Vec<serde_json::Value> = mismatches
                    .iter()
                    .map(|(t, c)| serde_json::json!({ "table": t, "missing_columns": c }))
                    .collect();
                reports.push(serde_json::json!({
                    "file": f.display().to_string(), "ok": ok && mismatches.is_empty(), "version": version,
                    "diagnostics": diags, "catalog_mismatches": mismatches,
                }));
            }
        }
    }
    if format == CheckFormat::Json {
        let doc = serde_json::json!({ "ok": !failed, "files": reports });
        outln!(
            "{}",
            serde_json::to_string_pretty(&doc).unwrap_or_else(|_| doc.to_string())
        );
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn count_tables(p: &CompiledPolicy) -> usize {
    let mut t: Vec<&str> = p
        .policy()
        .columns
        .iter()
        .map(|c| c.table.as_str())
        .collect();
    t.dedup();
    t.len()
}

/// `mask cn_mobile`, `mask keep(1,2) +lookup`, `deny`, ...
fn cell(d: &Decision<'_>) -> String {
    let mut s = d.action.name().to_string();
    if let (Action::Mask, Transform::Mask(m)) = (d.action, d.transform) {
        let _ = write!(s, " {m}");
    }
    if d.lookup {
        s.push_str(" +lookup");
    }
    s
}

fn matrix(p: &CompiledPolicy, format: MatrixFormat) -> String {
    let pol = p.policy();
    let mut header: Vec<String> = ["column", "level", "kind", "encrypt"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    header.extend(pol.roles.iter().map(|r| r.name.clone()));
    header.push("(no role)".to_string());
    let mut rows: Vec<Vec<String>> = Vec::new();
    for (ci, c) in pol.columns.iter().enumerate() {
        let mut row = vec![
            c.qualified(),
            pol.levels[c.level].clone(),
            c.kind.to_string(),
            c.encrypt.name().to_string(),
        ];
        for r in 0..pol.roles.len() {
            row.push(cell(&p.decide_role(Some(r), ci)));
        }
        row.push(cell(&p.decide_role(None, ci)));
        rows.push(row);
    }
    match format {
        MatrixFormat::Table => text_table(&header, &rows),
        MatrixFormat::Csv => {
            let mut out = String::new();
            for r in std::iter::once(&header).chain(rows.iter()) {
                out.push_str(&r.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(","));
                out.push('\n');
            }
            out
        }
        MatrixFormat::Html => {
            let mut out = String::from("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>pgveil policy matrix</title>\n<style>table{border-collapse:collapse;font-family:sans-serif}td,th{border:1px solid #999;padding:2px 6px}.allow{background:#dfd}.hash,.mask{background:#ffd}.null{background:#fdb}.deny{background:#fbb}</style></head><body>\n");
            let _ = writeln!(out, "<p>policy version {}</p>\n<table>", html(p.version()));
            out.push_str("<tr>");
            for h in &header {
                let _ = write!(out, "<th>{}</th>", html(h));
            }
            out.push_str("</tr>\n");
            for r in &rows {
                out.push_str("<tr>");
                for (i, f) in r.iter().enumerate() {
                    if i >= 4 {
                        let class = f.split(' ').next().unwrap_or("");
                        let _ = write!(out, "<td class=\"{class}\">{}</td>", html(f));
                    } else {
                        let _ = write!(out, "<td>{}</td>", html(f));
                    }
                }
                out.push_str("</tr>\n");
            }
            out.push_str("</table></body></html>\n");
            out
        }
    }
}

fn text_table(header: &[String], rows: &[Vec<String>]) -> String {
    let width = |i: usize| {
        std::iter::once(header)
            .chain(rows.iter().map(Vec::as_slice))
            .map(|r| r[i].chars().count())
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..header.len()).map(width).collect();
    let mut out = String::new();
    for r in std::iter::once(header).chain(rows.iter().map(Vec::as_slice)) {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(f, w)| format!("{f:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn csv_field(f: &str) -> String {
    if f.contains([',', '"', '\n']) {
        format!("\"{}\"", f.replace('"', "\"\""))
    } else {
        f.to_string()
    }
}

fn html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn explain(p: &CompiledPolicy, user: &str, member_of: &[String]) -> String {
    let roles = p.resolve_roles(user, member_of);
    let names = p.role_names(&roles);
    let mut out = String::new();
    let _ = writeln!(out, "policy version {}", p.version());
    if names.is_empty() {
        let _ = writeln!(
            out,
            "login {user}: no policy role; roles: [\"*\"] rules and defaults apply"
        );
    } else {
        let _ = writeln!(out, "login {user}: policy roles {}", names.join(", "));
    }
    let header: Vec<String> = [
        "column",
        "level",
        "action",
        "transform",
        "equality lookup",
        "decided by",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut rows = Vec::new();
    for (ci, c) in p.policy().columns.iter().enumerate() {
        let d = p.decide(&roles, ci);
        let transform = match d.transform {
            Transform::Plain => "plaintext".to_string(),
            Transform::Null => "NULL".to_string(),
            Transform::Mask(m) => m.to_string(),
            Transform::Deny => "statement refused (42501)".to_string(),
        };
        let lookup = match d.action {
            Action::Allow => "yes",
            _ if d.lookup => "yes",
            _ => "no",
        };
        let mut by = p.describe_source(d.source, c);
        if let (Some(r), Source::Rule(_) | Source::Wildcard(_)) = (d.role, d.source) {
            if let Some(role) = p.policy().roles.get(r) {
                let _ = write!(by, " via role {}", role.name);
            }
        }
        rows.push(vec![
            c.qualified(),
            p.policy().levels[c.level].clone(),
            d.action.to_string(),
            transform,
            lookup.to_string(),
            by,
        ]);
    }
    out.push_str(&text_table(&header, &rows));
    out
}
